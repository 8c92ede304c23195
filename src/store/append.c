/* Appends with group commit. Callers queue their request; one of them becomes the
 * leader, takes every queued request, checks each against the index (expected revision,
 * idempotence), encodes them into one buffer, writes it with one pwrite and one
 * fdatasync, commits the index, and only then wakes everyone with their own result. */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"
#include "store/notify.h"

#define GROUP_BYTES (4u << 20)  /* stop taking requests into a group past this */
#define LEAD_ROUNDS 4           /* groups one leader commits before handing over */
#define BIG_FLUSH   (64u << 10) /* a flush this large extends the file itself (see flush) */

static annal_err io_err(int r) { return r == -ENOSPC || r == -EDQUOT ? ANNAL_ENOSPC : ANNAL_EIO; }

static const char *expected_str(int64_t e, char *buf, size_t n) {
    if (e == ANNAL_EXPECT_ANY) return "any";
    if (e == ANNAL_EXPECT_NO_STREAM) return "no_stream";
    if (e == ANNAL_EXPECT_STREAM_EXISTS) return "stream_exists";
    snprintf(buf, n, "%" PRId64, e);
    return buf;
}

typedef annal__group group; /* db_int.h: multi.c shares it */

static int buf_reserve(annal_db *db, uint64_t need) {
    if (need <= db->bufcap) return 0;
    size_t cap = db->bufcap ? db->bufcap : (1u << 20);
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(db->buf, cap);
    if (!p) return -ENOMEM;
    db->buf = p;
    db->bufcap = cap;
    return 0;
}

/* Write the encoded buffer at the tail of the segment and make it durable. A small
 * flush goes into space zeroed ahead of it (by the grower), so that its fdatasync has
 * no file metadata to write; a large one extends the file itself: zeroing first would
 * make the disk write each of its bytes twice, a cost the single metadata update it
 * saves does not repay (docs/architecture.md, "Why segments are zero-filled"). */
static int flush(annal_db *db, group *g) {
    if (g->bl == 0) return 0;
    int big = g->bl >= BIG_FLUSH;
    uint64_t end = db->woff + g->bl;
    int r = big ? annal__seg_claim(&db->log, db->wseg, end)
                : annal__seg_reserve(&db->log, db->wseg, end);
    if (r < 0) return r;
    g->written = 1;
    r = annal__io_write_all(db->io, db->wseg->fd, db->buf, (size_t)g->bl, db->woff);
    if (r == 0 && !(db->opts.flags & ANNAL_OPEN_NOSYNC)) {
        int64_t t0 = annal__now_ns();
        r = db->io->sync(db->io->ctx, db->wseg->fd);
        annal__counters_flush(&db->ctr, annal__now_ns() - t0);
    }
    if (r < 0) return r;
    db->woff += g->bl;
    g->bl = 0;
    if (big)
        annal__seg_wrote(db->wseg, end);
    else
        annal__log_grow_hint(&db->log, db->wseg, db->woff);
    return 0;
}

/* Decode the record at loc, which may still be in this group's unwritten buffer; *len
 * (may be NULL) gets its length. */
static annal_err read_any(annal_db *db, group *g, uint64_t loc, annal_event *ev, uint32_t *len) {
    annal__rec_info info;
    uint64_t off = ANNAL__LOC_OFF(loc);
    annal_err rc;
    if (ANNAL__LOC_SEG(loc) == db->wseg->no && off >= db->woff && off < db->woff + g->bl)
        rc = annal__rec_decode(db->buf + (off - db->woff), (size_t)(db->woff + g->bl - off), ev,
                               &info);
    else
        rc = annal__log_read_at(&db->log, loc, UINT64_MAX, ev, &info);
    if (len) *len = rc == ANNAL_OK ? info.len : 0;
    return rc;
}

/* The event at revision rev of stream sid: its block, then the batch's records from the
 * block's first member on (the newest may still be in this group's buffer). */
static annal_err read_rev(annal_db *db, group *g, MDB_txn *t, uint64_t sid, uint64_t rev,
                          annal_event *ev) {
    annal__block b;
    annal_err rc = annal__index_rev_block(t, &db->idx, sid, rev, &b);
    if (rc != ANNAL_OK) return rc;
    uint64_t pos = b.first_pos + (rev - b.first_rev), loc = b.loc;
    for (uint32_t len = 0; rc == ANNAL_OK; loc += len) {
        rc = read_any(db, g, loc, ev, &len);
        if (rc == ANNAL_OK && ev->position >= pos)
            return ev->position == pos ? ANNAL_OK : ANNAL_ECORRUPT;
    }
    return rc;
}

/* Is req a resend of events already stored? ANNAL_ENOTFOUND: no, go on. */
static annal_err check_idempotent(annal_db *db, group *g, MDB_txn *t, annal__req *req,
                                  const annal__stream_rec *sr, int exists) {
    const annal_uuid *id0 = &req->ev[0].id;
    uint64_t pos0, loc0;
    if (annal__uuid_is_nil(id0)) return ANNAL_ENOTFOUND;
    annal_err rc = annal__id_live(db, t, id0, &pos0, &loc0);
    if (rc != ANNAL_OK) return rc;
    annal_event ev;
    uint32_t len;
    rc = read_any(db, g, loc0, &ev, &len);
    if (rc != ANNAL_OK) {
        snprintf(req->msg, sizeof req->msg, "cannot read the event at position %" PRIu64, pos0);
        return rc;
    }
    uint64_t r0 = ev.revision;
    int same_stream = exists && ev.stream_len == req->stream_len &&
                      memcmp(ev.stream, req->stream, req->stream_len) == 0;
    int place_ok = req->expected == ANNAL_EXPECT_ANY ||
                   (req->expected == ANNAL_EXPECT_NO_STREAM && r0 == 0) ||
                   (req->expected == ANNAL_EXPECT_STREAM_EXISTS && r0 > 0) ||
                   (req->expected >= 0 && r0 == (uint64_t)req->expected + 1);
    int all = same_stream && place_ok && r0 + req->n <= sr->count;
    /* The original append's events follow the first in the log (a hole, where
     * compaction erased some, makes it not the same append). */
    for (size_t i = 1; all && i < req->n; i++) {
        loc0 += len;
        all = read_any(db, g, loc0, &ev, &len) == ANNAL_OK && ev.position == pos0 + i &&
              ev.revision == r0 + i && memcmp(ev.id.bytes, req->ev[i].id.bytes, 16) == 0;
    }
    if (!all) {
        char ids[37];
        annal_uuid_format(id0, ids);
        snprintf(req->msg, sizeof req->msg,
                 "event id %s is already stored at position %" PRIu64 " by a different append", ids,
                 pos0);
        return ANNAL_EDUPLICATE;
    }
    req->res.first_revision = r0;
    req->res.first_position = pos0;
    req->res.count = req->n;
    req->res.revision = (int64_t)(r0 + req->n) - 1; /* as the original append reported */
    req->res.idempotent = 1;
    return ANNAL_OK;
}

/* The condition on another stream that req carries. */
static annal_err check_guard(annal_db *db, MDB_txn *t, annal__req *req) {
    const annal__guard *gd = req->guard;
    annal__stream_rec gr;
    annal_err rc = annal__index_stream_get(t, &db->idx, gd->stream, gd->len, &gr);
    if (rc == ANNAL_ENOTFOUND)
        gr = annal__stream_rec_new(0, 0);
    else if (rc != ANNAL_OK)
        return rc;
    if (gr.flags & ANNAL__SR_TOMBSTONE) {
        snprintf(req->msg, sizeof req->msg, "stream %.*s is deleted (tombstoned)", (int)gd->len,
                 gd->stream);
        return ANNAL_EDELETED;
    }
    int64_t cur = (int64_t)gr.count - 1;
    int gone = cur < 0 || (gr.flags & ANNAL__SR_DELETED);
    if (gd->must_exist && gone) {
        snprintf(req->msg, sizeof req->msg, "stream %.*s not found", (int)gd->len, gd->stream);
        return ANNAL_ENOTFOUND;
    }
    int ok = gd->expected == ANNAL_EXPECT_ANY || (gd->expected == ANNAL_EXPECT_NO_STREAM && gone) ||
             (gd->expected == ANNAL_EXPECT_STREAM_EXISTS && !gone) || gd->expected == cur;
    if (!ok) {
        char eb[32];
        req->res.revision = cur;
        snprintf(req->msg, sizeof req->msg, "expected revision %s but stream %.*s is at %" PRId64,
                 expected_str(gd->expected, eb, sizeof eb), (int)gd->len, gd->stream, cur);
        return ANNAL_ECONFLICT;
    }
    return ANNAL_OK;
}

/* A soft delete's document, made now so that "$tb" is the stream's next revision at the
 * commit (a delete with a loose expectation never races the stream's appenders). msr is
 * the record of the metadata stream being appended to, NULL if it has none. */
static annal_err soft_delete_data(annal_db *db, group *g, MDB_txn *t, annal__req *req,
                                  const annal__stream_rec *msr) {
    annal__stream_rec gr;
    annal_err rc = annal__index_stream_get(t, &db->idx, req->guard->stream, req->guard->len, &gr);
    if (rc != ANNAL_OK) return rc; /* the guard found it */
    annal_event prev;
    const void *pd = NULL;
    size_t pl = 0;
    if (msr && msr->count > 0) {
        rc = read_rev(db, g, t, msr->id, msr->count - 1, &prev);
        if (rc != ANNAL_OK) return rc;
        pd = prev.data;
        pl = prev.data_len;
    }
    free(req->owned);
    req->owned = annal__soft_delete_doc(pd, pl, gr.count);
    if (!req->owned) return ANNAL_ENOMEM;
    req->ev[0].data = req->owned;
    req->ev[0].data_len = strlen(req->owned);
    req->bytes = annal__rec_size(req->stream_len, strlen(req->ev[0].type), req->ev[0].data_len,
                                 req->ev[0].metadata_len);
    return ANNAL_OK;
}

/* The refusal of an append whose expected revision does not hold. */
static annal_err conflict(annal__req *req, int64_t cur, int gone) {
    char eb[32];
    req->res.revision = cur;
    if (gone)
        snprintf(req->msg, sizeof req->msg, "expected revision %s but stream %s does not exist",
                 expected_str(req->expected, eb, sizeof eb), req->stream);
    else
        snprintf(req->msg, sizeof req->msg,
                 "expected revision %s but stream %s is at revision %" PRId64,
                 expected_str(req->expected, eb, sizeof eb), req->stream, cur);
    return ANNAL_ECONFLICT;
}

/* What may refuse req before anything of it is written: a tombstone, its guard, its
 * expected revision; an idempotent resend is answered here too (*done). On ANNAL_OK,
 * req->res holds its result, *sr its stream's record and *exists whether it has one. */
static annal_err admit(annal_db *db, group *g, MDB_txn *t, annal__req *req, annal__stream_rec *sr,
                       int *exists, int *done) {
    *done = 1;
    *sr = annal__stream_rec_new(0, 0);
    annal_err rc = annal__index_stream_get(t, &db->idx, req->stream, req->stream_len, sr);
    *exists = rc == ANNAL_OK; /* a record; it may hold only metadata (count 0) */
    if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND) return rc;
    if (sr->flags & ANNAL__SR_TOMBSTONE) {
        req->res.revision = (int64_t)sr->count - 1;
        snprintf(req->msg, sizeof req->msg, "stream %s is deleted (tombstoned)", req->stream);
        return ANNAL_EDELETED;
    }
    if (req->guard && (rc = check_guard(db, t, req)) != ANNAL_OK) return rc;
    if (req->guard && req->guard->soft_delete) {
        rc = soft_delete_data(db, g, t, req, *exists ? sr : NULL);
        if (rc != ANNAL_OK) return rc;
    }
    int64_t cur = (int64_t)sr->count - 1;
    int gone = cur < 0 || (sr->flags & ANNAL__SR_DELETED); /* reads as not found */
    if (req->n > 0) {
        rc = check_idempotent(db, g, t, req, sr, *exists);
        if (rc != ANNAL_ENOTFOUND) return rc;
    }
    /* A soft-deleted stream is re-created by appending to it as if it did not exist, or
     * at its actual revision; its revisions continue. */
    int ok = req->expected == ANNAL_EXPECT_ANY ||
             (req->expected == ANNAL_EXPECT_NO_STREAM && gone) ||
             (req->expected == ANNAL_EXPECT_STREAM_EXISTS && !gone) || req->expected == cur;
    if (!ok) return conflict(req, cur, gone);
    req->res.first_revision = (uint64_t)(cur + 1);
    req->res.first_position = db->head.next_pos;
    req->res.count = req->n;
    req->res.revision = cur + (int64_t)req->n;
    *done = req->n == 0;
    return ANNAL_OK;
}

/* The event i of req as it is appended: at revision rev0 + i, position pos0 + i. */
static annal_event req_event(const annal__req *req, size_t i, uint64_t rev0, uint64_t pos0,
                             int64_t now) {
    const annal_event_data *in = &req->ev[i];
    return (annal_event){.id = in->id,
                         .stream = req->stream,
                         .stream_len = req->stream_len,
                         .type = in->type,
                         .type_len = strlen(in->type),
                         .data = in->data,
                         .data_len = in->data_len,
                         .metadata = in->metadata,
                         .metadata_len = in->metadata_len,
                         .revision = rev0 + i,
                         .position = pos0 + i,
                         .timestamp_ns = now};
}

/* Encode req's records at *bl of the buffer and claim their ids; first what may refuse
 * the request (an id already stored), with no index write: a refused request leaves the
 * group's transaction as it was, so requests need no nested transaction each (LMDB
 * copies every page a nested one touches). */
static annal_err encode_claims(annal_db *db, group *g, MDB_txn *t, annal__req *req,
                               const annal__stream_rec *sr, annal__index_head *h, uint64_t *bl) {
    annal_err rc = ANNAL_OK;
    annal__ids_hold(db->ids);
    for (size_t i = 0; i < req->n && req->n > 1; i++) /* a few random memory accesses each */
        annal__ids_prefetch(db->ids, &req->ev[i].id);
    for (size_t i = 0; i < req->n && rc == ANNAL_OK; i++) {
        annal_event_data *in = &req->ev[i];
        if (annal__uuid_is_nil(&in->id)) annal__uuid_v7(&in->id, g->now / 1000000, &db->rng);
        annal_event ev = req_event(req, i, sr->count, h->next_pos, g->now);
        uint64_t loc = ANNAL__LOC(db->wseg->no, db->woff + *bl);
        if (*bl == 0) g->first = ev.position;
        *bl += annal__rec_encode(&ev, (uint32_t)i, (uint32_t)req->n, g->first, db->buf + *bl);
        h->last_loc = loc;
        uint64_t dp;
        rc = annal__id_claim(db, t, &in->id, ev.position, loc, &dp);
        if (rc == ANNAL_EDUPLICATE) {
            char ids[37];
            annal_uuid_format(&in->id, ids);
            snprintf(req->msg, sizeof req->msg, "event id %s is already stored%s", ids,
                     dp >= db->head.next_pos ? " (repeated within the append)" : "");
        }
        if (rc == ANNAL_OK)
            rc = annal__batch_add(&db->batch, ev.type, ev.type_len, NULL, 0, ev.position, loc);
    }
    annal__ids_release(db->ids);
    if (rc != ANNAL_OK) db->batch.n = 0;
    return rc;
}

/* Then req's index entries and its stream's record. A failure now is LMDB's and ends
 * the group. */
static annal_err put_entries(annal_db *db, group *g, MDB_txn *t, const annal__req *req,
                             annal__stream_rec *sr, annal__index_head *h) {
    annal_err rc = ANNAL_OK;
    for (size_t i = 0; i < req->n && rc == ANNAL_OK; i++) {
        annal_event ev = req_event(req, i, sr->count, h->next_pos, g->now);
        if (ev.position % ANNAL__POS_STRIDE == 0)
            rc = annal__index_pos_put(t, &db->idx, ev.position, db->batch.loc[i]);
        if (rc == ANNAL_OK) rc = annal__index_event_effects(&db->idx, t, h, sr, &ev);
    }
    if (rc == ANNAL_OK)
        rc = annal__batch_put(&db->batch, &db->idx, t, req->stream, req->stream_len, sr->id,
                              sr->count);
    db->batch.n = 0;
    sr->count += req->n;
    sr->last_pos = h->next_pos + req->n - 1;
    if (rc == ANNAL_OK) rc = annal__index_stream_put(t, &db->idx, req->stream, req->stream_len, sr);
    return rc;
}

/* Check and encode one request into the group, its index entries into t (the group's
 * transaction). Returns the request's result code; g->ioerr marks a log write failure
 * that ends the whole group, g->broken an index failure that does. */
static annal_err add_req(annal_db *db, group *g, MDB_txn *t, annal__req *req) {
    if (req->multi) { /* multi.c keeps the older convention: a log failure is -errno */
        int r = req->multi_add(db, g, t, req);
        if (r >= 0) return (annal_err)r;
        g->ioerr = r;
        return io_err(r);
    }
    annal__stream_rec sr;
    int exists, done;
    annal_err rc = admit(db, g, t, req, &sr, &exists, &done);
    if (rc != ANNAL_OK || done) return rc;
    annal__index_head h = db->head;
    /* A batch never spans segments: roll first if it does not fit. */
    int r = annal__group_room(db, g, req->bytes, h.next_pos);
    if (r < 0) {
        g->ioerr = r;
        return io_err(r);
    }
    if (buf_reserve(db, g->bl + req->bytes) < 0) return ANNAL_ENOMEM;
    if (!exists) sr = annal__stream_rec_new(h.next_stream_id++, g->now);
    if (sr.count == 0) {
        sr.created_ns = g->now;
        h.streams++;
    }
    uint64_t bl = g->bl;
    rc = encode_claims(db, g, t, req, &sr, &h, &bl);
    if (rc != ANNAL_OK) return rc;
    rc = put_entries(db, g, t, req, &sr, &h);
    if (rc != ANNAL_OK) {
        g->broken = 1;
        return rc;
    }
    h.next_pos += req->n;
    h.last_ns = g->now;
    db->head = h;
    g->bl = bl;
    return ANNAL_OK;
}

/* Write the id memtable as a run, between groups. A failure only leaves the memtable
 * larger: the next group tries again. */
void annal__flush_ids(annal_db *db) {
    MDB_txn *t;
    if (annal__txn_begin(&db->idx, 0, &t) != 0) return;
    annal_err rc = annal__ids_flush(db->ids, t, db->idx.meta, db->head.next_pos);
    int mrc = rc == ANNAL_OK ? annal__txn_commit(&db->idx, t) : (annal__txn_abort(&db->idx, t), -1);
    annal__ids_flush_end(db->ids, mrc == 0);
    if (rc != ANNAL_OK || mrc != 0)
        annal__log_msg(db, ANNAL_LOG_WARN, "cannot write an id index run: %s",
                       rc != ANNAL_OK ? annal_strerror(rc) : mdb_strerror(mrc));
}

/* Commit reqs as one group. Leader only. */
static void commit_group(annal_db *db, annal__req *reqs) {
    group g = {.now = annal__now_ns()};
    if (g.now < db->head.last_ns) g.now = db->head.last_ns; /* timestamps never go back */
    annal__index_head saved = db->head;
    int ioerr = 0;
    const char *what = "index";
    /* Room for the group's pages first: a transaction cannot grow the map. Its entries
     * hold names and numbers, not the events' data. */
    uint64_t events = 0, bytes = 0;
    for (annal__req *r = reqs; r; r = r->next)
        events += r->n, bytes += r->n * (r->stream_len + ANNAL_MAX_NAME + 64);
    annal_err grc = annal__index_grow(&db->idx, annal__index_need(&db->idx, events, bytes), 0);
    int mrc = grc == ANNAL_OK ? annal__txn_begin(&db->idx, 0, &g.txn) : 0;
    if (mrc) grc = annal__index_err(mrc);
    for (annal__req *r = reqs; r && grc == ANNAL_OK; r = r->next) {
        annal_err rc = add_req(db, &g, g.txn, r);
        if (g.ioerr) {
            annal__ids_truncate(db->ids, db->head.next_pos);
            ioerr = g.ioerr;
            what = "log";
            grc = rc;
            break;
        }
        if (g.broken) {
            grc = rc;
            break;
        }
        r->rc = rc;
        if (rc != ANNAL_OK) annal__ids_truncate(db->ids, db->head.next_pos); /* its ids */
    }
    if (grc == ANNAL_OK) {
        ioerr = flush(db, &g);
        if (ioerr < 0) {
            grc = io_err(ioerr);
            what = "log";
        }
    }
    if (grc == ANNAL_OK) {
        db->head.next_loc = ANNAL__LOC(db->wseg->no, db->woff);
        grc = annal__index_head_put(g.txn, &db->idx, &db->head);
    }
    if (grc == ANNAL_OK) {
        int f = db->io->fault(db->io->ctx, "index-commit");
        if (f < 0) annal__txn_abort(&db->idx, g.txn); /* an injected failure of the commit */
        mrc = f < 0 ? -f : annal__txn_commit(&db->idx, g.txn);
        g.txn = NULL;
        if (mrc) {
            grc = annal__index_err(mrc);
            ioerr = -(mrc > 0 && mrc < 4096 ? mrc : EIO);
            g.written = 1; /* the log has events the index lacks: reopen to catch up */
        }
    }
    if (g.txn) annal__txn_abort(&db->idx, g.txn);
    if (grc == ANNAL_OK) {
        __atomic_store_n(&db->visible, db->head.next_pos, __ATOMIC_RELEASE);
        annal__notify_publish(db, db->head.next_pos);
        uint64_t nreqs = 0;
        for (annal__req *r = reqs; r; r = r->next) nreqs++;
        annal__counters_group(&db->ctr, nreqs, db->head.next_pos - saved.next_pos);
    } else {
        db->head = saved;
        annal__ids_truncate(db->ids, saved.next_pos);
        char msg[256];
        snprintf(msg, sizeof msg, "%s write failed: %s", what,
                 ioerr ? strerror(-ioerr) : annal_strerror(grc));
        if (g.written) {
            /* Part of the group may be on disk and the page cache may have dropped a
             * failed flush: nothing can be trusted until recovery rereads the log. */
            db->failed = grc;
            snprintf(db->failed_msg, sizeof db->failed_msg, "%s; reopen the store to recover", msg);
        }
        /* Otherwise nothing reached the file; a segment rolled to stays in use (it is
         * empty and starts at the restored head). */
        for (annal__req *r = reqs; r; r = r->next) {
            r->rc = grc;
            snprintf(r->msg, sizeof r->msg, "%s", msg);
        }
    }
    if (db->bufcap > (16u << 20)) { /* don't keep a huge batch's buffer forever */
        free(db->buf);
        db->buf = NULL;
        db->bufcap = 0;
    }
}

/* ---- waiting and leading ----------------------------------------------------------- */

#define GROUP_BIT (1u << 31)

/* Until req is done or made the leader; returns which. It sleeps on its group's word,
 * rechecking its state whenever the word moves. */
static uint32_t req_wait(annal__req *req) {
    for (;;) {
        uint32_t v = atomic_load_explicit(req->word, memory_order_acquire);
        uint32_t s = atomic_load_explicit(&req->state, memory_order_acquire);
        if (s != REQ_QUEUED) return s;
        syscall(SYS_futex, req->word, FUTEX_WAIT_BITSET_PRIVATE, v, NULL, NULL,
                GROUP_BIT | 1u << req->bit);
    }
}

/* Move word w and wake its sleepers with any of these bits. */
static void word_wake(_Atomic uint32_t *w, uint32_t bits) {
    atomic_fetch_add_explicit(w, 1, memory_order_release);
    syscall(SYS_futex, w, FUTEX_WAKE_BITSET_PRIVATE, INT32_MAX, NULL, NULL, bits);
}

/* Mark every request of a committed group done, then wake them all with one call per
 * word (one, or two when a group spans an epoch): a wake-up call each cost several
 * microseconds of the leader's time, 64 of them more than the flush itself. Each
 * request's frame may be gone once it is marked done, so read it before. */
static void wake_group(annal__req *first) {
    _Atomic uint32_t *w[2] = {NULL, NULL};
    for (annal__req *r = first, *nx; r; r = nx) {
        nx = r->next;
        if (r->word != w[0] && r->word != w[1]) w[w[0] != NULL] = r->word;
        atomic_store_explicit(&r->state, REQ_DONE, memory_order_release);
    }
    for (int i = 0; i < 2 && w[i]; i++) word_wake(w[i], GROUP_BIT);
}

/* Set one request's state and wake it alone (those sharing its bit wake too, and
 * sleep again). */
static void req_wake(annal__req *req, uint32_t state) {
    _Atomic uint32_t *w = req->word;
    uint32_t bit = 1u << req->bit;
    atomic_store_explicit(&req->state, state, memory_order_release);
    word_wake(w, bit);
}

/* Under wmu, when leading ends: hand over to the head of the queue (woken by the
 * caller after unlocking), or let go if it is empty or annal_db_sync waits for the
 * store. Returns the request to wake, or NULL. */
annal__req *annal__hand_over(annal_db *db) {
    annal__req *next = NULL;
    if (db->qhead && !db->sync_waiting)
        next = db->qhead; /* db->leader stays set: it is next's now */
    else
        db->leader = 0;
    pthread_cond_broadcast(&db->wcv); /* annal_db_sync */
    return next;
}

void annal__lead_wake(annal__req *next) {
    if (next) req_wake(next, REQ_LEAD);
}

/* The leader: commit the queue in groups. While requests keep queueing up during a
 * flush, go on leading (a few rounds, so that no caller waits long): handing over to
 * a sleeping waiter would cost a wake-up before every flush. */
static void lead_groups(annal_db *db) {
    pthread_mutex_lock(&db->wmu);
    for (int round = 0; db->qhead && db->failed == ANNAL_OK && round < LEAD_ROUNDS; round++) {
        annal__req *first = db->qhead, *last = first;
        uint64_t bytes = first->bytes; /* take requests up to the group size */
        while (last->next && bytes + last->next->bytes <= GROUP_BYTES) {
            last = last->next;
            bytes += last->bytes;
        }
        db->qhead = last->next;
        if (!db->qhead) db->qtail = NULL;
        last->next = NULL;
        db->epoch++; /* who queues from now on is in a later group */
        pthread_mutex_unlock(&db->wmu);
        commit_group(db, first);
        wake_group(first);
        /* after waking the group, still leading: no group commits meanwhile */
        if (annal__ids_full(db->ids) && db->failed == ANNAL_OK) annal__flush_ids(db);
        pthread_mutex_lock(&db->wmu);
    }
    if (db->failed != ANNAL_OK) { /* this or an earlier group failed: refuse the rest */
        for (annal__req *r = db->qhead, *nx; r; r = nx) {
            nx = r->next;
            r->rc = ANNAL_EFAILED;
            snprintf(r->msg, sizeof r->msg, "%s", db->failed_msg);
            req_wake(r, REQ_DONE);
        }
        db->qhead = db->qtail = NULL;
    }
    annal__req *next = annal__hand_over(db);
    pthread_mutex_unlock(&db->wmu);
    annal__lead_wake(next);
}

/* internal: the store's own append (any '$' stream, reserved types); dcb: the stream may
 * be ANNAL_DCB_STREAM (annal_append_tagged's parts without a stream). */
static annal_err validate(annal_db *db, const char *stream, size_t *slen, int64_t expected,
                          annal_event_data *ev, size_t n, uint64_t *bytes, int internal, int dcb) {
    if (!annal__name_ok(stream, slen))
        return annal__fail(db, ANNAL_EINVAL, "invalid stream name: must be 1..%d bytes of UTF-8",
                           ANNAL_MAX_NAME);
    int dcb_ok = dcb && strcmp(stream, ANNAL_DCB_STREAM) == 0; /* the name only */
    if (stream[0] == '$' && !internal && !dcb_ok)
        return annal__fail(db, ANNAL_EINVAL, "stream names starting with '$' are reserved");
    if (!internal && !dcb_ok && !annal__stream_name_ok(stream, slen))
        return annal__fail(db, ANNAL_EINVAL, "invalid stream name: %zu bytes; the limit is %d",
                           *slen, ANNAL_MAX_STREAM_NAME);
    if (expected < 0 && expected != ANNAL_EXPECT_ANY && expected != ANNAL_EXPECT_NO_STREAM &&
        expected != ANNAL_EXPECT_STREAM_EXISTS)
        return annal__fail(db, ANNAL_EINVAL, "invalid expected revision %" PRId64, expected);
    if (n > 0 && !ev) return annal__fail(db, ANNAL_EINVAL, "events is NULL");
    if (n > db->opts.max_batch_events)
        return annal__fail(db, ANNAL_ETOOBIG, "%zu events in one append; the limit is %u", n,
                           db->opts.max_batch_events);
    uint64_t payload = 0, enc = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tl;
        if (!annal__name_ok(ev[i].type, &tl))
            return annal__fail(db, ANNAL_EINVAL,
                               "event %zu: invalid type: must be 1..%d bytes "
                               "of UTF-8",
                               i, ANNAL_MAX_NAME);
        if (!internal &&
            (strcmp(ev[i].type, "$streamDeleted") == 0 || strcmp(ev[i].type, "$metadata") == 0))
            return annal__fail(db, ANNAL_EINVAL,
                               "event %zu: type %s is reserved for the store (use "
                               "annal_stream_delete / annal_stream_meta_set)",
                               i, ev[i].type);
        if ((ev[i].data_len && !ev[i].data) || (ev[i].metadata_len && !ev[i].metadata))
            return annal__fail(db, ANNAL_EINVAL, "event %zu: NULL data with a length", i);
        uint64_t sz = (uint64_t)ev[i].data_len + ev[i].metadata_len;
        if (sz > db->opts.max_event_bytes)
            return annal__fail(db, ANNAL_ETOOBIG,
                               "event %zu has %" PRIu64 " bytes of data and "
                               "metadata; the limit is %" PRIu64,
                               i, sz, db->opts.max_event_bytes);
        payload += sz;
        enc += annal__rec_size(*slen, tl, ev[i].data_len, ev[i].metadata_len);
    }
    if (payload > db->opts.max_batch_bytes)
        return annal__fail(db, ANNAL_ETOOBIG, "append of %" PRIu64 " bytes; the limit is %" PRIu64,
                           payload, db->opts.max_batch_bytes);
    if (enc > db->opts.segment_bytes - ANNAL__SEG_HDR)
        return annal__fail(db, ANNAL_ETOOBIG,
                           "append of %" PRIu64 " bytes does not fit in a "
                           "segment of %" PRIu64,
                           enc, db->opts.segment_bytes);
    *bytes = enc;
    return ANNAL_OK;
}

annal_err annal_append_sized(annal_db *db, const char *stream, int64_t expected,
                             annal_event_data *events, size_t n, annal_append_result *result,
                             size_t result_size) {
    annal_append_result r = {0};
    annal_err rc = annal__append(db, stream, expected, events, n, result ? &r : NULL, NULL);
    annal__out_copy(result, result_size, &r, sizeof r); /* never past the caller's size */
    return rc;
}

annal_err annal__append(annal_db *db, const char *stream, int64_t expected,
                        annal_event_data *events, size_t n, annal_append_result *result,
                        const annal__guard *guard) {
    if (!db) return ANNAL_EINVAL;
    if (db->readonly) return annal__fail(db, ANNAL_EREADONLY, "the store is open read-only");
    annal__req req;
    memset(&req, 0, sizeof req);
    /* Only the store's own calls (metadata, deletes) carry a guard. */
    annal_err rc =
        validate(db, stream, &req.stream_len, expected, events, n, &req.bytes, guard != NULL, 0);
    if (rc != ANNAL_OK) return rc;
    req.guard = guard;
    req.stream = stream;
    req.expected = expected;
    req.ev = events;
    req.n = n;

    annal__submit(db, &req);
    free(req.owned);
    if (result) *result = req.res;
    if (req.rc != ANNAL_OK)
        return annal__fail(db, req.rc, "%s", req.msg[0] ? req.msg : annal_strerror(req.rc));
    return ANNAL_OK;
}

void annal__submit(annal_db *db, annal__req *req) {
    pthread_mutex_lock(&db->wmu);
    if (db->failed != ANNAL_OK) {
        pthread_mutex_unlock(&db->wmu);
        req->rc = ANNAL_EFAILED;
        snprintf(req->msg, sizeof req->msg, "%s", db->failed_msg);
        return;
    }
    /* req lives on its caller's stack frame; it leaves the queue before that ends. */
    if (db->qtail)
        db->qtail->next = req;
    else
        db->qhead = req;
    db->qtail = req;
    req->word = &db->wake[db->epoch & 1];
    req->bit = db->nqueued++ % 31;
    int lead = !db->leader; /* then the queue was empty: req is its head */
    db->leader = 1;
    pthread_mutex_unlock(&db->wmu);
    /* A waiter sleeps until it is done or made the leader, and returns without taking
     * the mutex again: the 64 members of a group do not line up for it after each
     * flush. */
    if (!lead) lead = req_wait(req) == REQ_LEAD;
    if (lead) lead_groups(db);
}

/* ---- for multi.c ------------------------------------------------------------------- */

annal_err annal__append_validate(annal_db *db, const char *stream, size_t *slen, int64_t expected,
                                 annal_event_data *ev, size_t n, uint64_t *bytes, int dcb) {
    return validate(db, stream, slen, expected, ev, n, bytes, 0, dcb);
}

int annal__group_reserve(annal_db *db, uint64_t need) { return buf_reserve(db, need); }

int annal__group_flush(annal_db *db, annal__group *g) { return flush(db, g); }

annal_err annal__group_read(annal_db *db, annal__group *g, uint64_t loc, annal_event *ev,
                            uint32_t *len) {
    return read_any(db, g, loc, ev, len);
}

/* A batch never spans segments: flush the group and roll to the next segment when
 * bytes more do not fit. 0 or -errno. */
int annal__group_room(annal_db *db, annal__group *g, uint64_t bytes, uint64_t next_pos) {
    if (db->woff + g->bl + bytes <= db->wseg->cap) return 0;
    int r = flush(db, g);
    annal__seg *ns = NULL;
    if (r == 0)
        r = annal__log_add(&db->log, db->wseg->no + 1, next_pos, db->opts.segment_bytes, &ns);
    if (r < 0) return r;
    db->wseg = ns;
    db->woff = ANNAL__SEG_HDR;
    return 0;
}

annal_err annal_db_sync(annal_db *db) {
    if (!db) return ANNAL_EINVAL;
    if (db->readonly) return ANNAL_OK;
    pthread_mutex_lock(&db->wmu);
    db->sync_waiting++; /* the leader lets go instead of handing over */
    while (db->leader) pthread_cond_wait(&db->wcv, &db->wmu);
    db->sync_waiting--;
    db->leader = 1; /* no group may write while we flush */
    pthread_mutex_unlock(&db->wmu);
    annal_err rc = db->failed;
    if (rc == ANNAL_OK) {
        /* Segments before the active one were flushed when they were sealed. */
        int r = db->io->sync(db->io->ctx, db->wseg->fd);
        if (r < 0) {
            rc = annal__fail(db, ANNAL_EIO, "flush failed: %s", strerror(-r));
            db->failed = ANNAL_EIO;
            snprintf(db->failed_msg, sizeof db->failed_msg, "flush failed: %s; reopen the store",
                     strerror(-r));
        } else if (annal__index_sync(&db->idx) != 0) {
            rc = annal__fail(db, ANNAL_EIO, "index flush failed");
        }
        if (r == 0) /* what a NOSYNC handle appended is acknowledged now */
            (void)annal__acked_write(&db->acked, __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE));
    } else {
        rc = annal__fail(db, ANNAL_EFAILED, "%s", db->failed_msg);
    }
    pthread_mutex_lock(&db->wmu);
    annal__req *next = annal__hand_over(db); /* appends queued meanwhile */
    pthread_mutex_unlock(&db->wmu);
    annal__lead_wake(next);
    return rc;
}
