/* Recovery, for a writer before it appends: settle what an interrupted compaction left,
 * check that the log still holds every acknowledged position, decide whether the index
 * can be trusted (its head against the log), index whatever whole batches the log holds
 * beyond it (catch-up), and cut a torn tail back to the last whole batch, zeroing it so
 * no stale bytes can later pass for records. Calls down into entries.c and handle.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"

/* Validate the batch starting at the cursor without indexing it. On ANNAL_OK the
 * cursor is past the batch and *n holds its size. */
static annal_err scan_batch(annal__cursor *c, uint32_t *n) {
    annal_event ev;
    annal__rec_info info;
    annal_err rc = annal__cursor_next(c, &ev, &info, NULL);
    if (rc != ANNAL_OK) return rc;
    if (info.batch_index != 0) return ANNAL_ECORRUPT;
    uint32_t count = info.batch_count;
    for (uint32_t i = 1; i < count; i++) {
        uint64_t seg = c->seg->no;
        rc = annal__cursor_next(c, &ev, &info, NULL);
        if (rc == ANNAL_END) return ANNAL_ECORRUPT; /* batch cut short */
        if (rc != ANNAL_OK) return rc;
        if (c->seg->no != seg || info.batch_index != i || info.batch_count != count)
            return ANNAL_ECORRUPT;
    }
    *n = count;
    return ANNAL_OK;
}

/* Step the cursor over hole records (erased or lost positions), so that a hole is
 * never taken for the start of a torn batch that follows it and cut away with it. */
static void skip_holes(annal__cursor *c) {
    for (;;) {
        annal__cursor_settle(c);
        annal_event ev;
        annal__rec_info info;
        const annal__seg *s = c->seg;
        if (c->off + ANNAL__REC_HDR > s->cap ||
            annal__seg_readable(c->log, c->seg, c->off + ANNAL__REC_HDR) != ANNAL_OK ||
            annal__rec_decode(s->map + c->off, ANNAL__REC_HDR, &ev, &info) != ANNAL_OK ||
            info.kind != ANNAL__REC_HOLE || ev.position > c->pos ||
            ev.position + ev.revision <= c->pos)
            return;
        c->pos = ev.position + ev.revision;
        c->off += info.len;
    }
}

/* Index the n events at the cursor (already validated) into t. */
/* The stream record of the run of a batch that starts with ev (a new one if none). */
static annal_err open_run(annal_db *db, MDB_txn *t, const annal_event *ev, annal__stream_rec *sr) {
    annal_err rc = annal__index_stream_get(t, &db->idx, ev->stream, ev->stream_len, sr);
    if (rc == ANNAL_ENOTFOUND) {
        *sr = annal__stream_rec_new(db->head.next_stream_id++, ev->timestamp_ns);
        rc = ANNAL_OK;
    }
    if (rc == ANNAL_OK && sr->count == 0) {
        sr->created_ns = ev->timestamp_ns;
        db->head.streams++;
    }
    return rc;
}

/* Put the blocks and the stream record of the run of stream just indexed. */
static annal_err close_run(annal_db *db, MDB_txn *t, const char *stream, size_t len,
                           const annal__stream_rec *sr, uint64_t rev0) {
    annal_err rc = annal__batch_put(&db->batch, &db->idx, t, stream, len, sr->id, rev0);
    db->batch.n = 0;
    return rc == ANNAL_OK ? annal__index_stream_put(t, &db->idx, stream, len, sr) : rc;
}

static annal_err index_batch(annal_db *db, MDB_txn *t, annal__cursor *c, uint32_t n, int rebuild) {
    annal_event ev;
    annal__rec_info info;
    annal__stream_rec sr;
    uint64_t loc;
    annal_err rc = ANNAL_OK;
    uint64_t rev0 = 0;
    /* Each id claim is a random memory access: start them all first. (scan_batch checked
     * the batch: n consecutive records, but the cursor may first step over a hole, even
     * into the next segment, and a compacted file ends soon after its last record: stop
     * at anything that is not an event.) */
    uint64_t off = c->off, pp, span;
    uint32_t len;
    int event;
    for (uint32_t i = 0; i < n && n > 1; i++, off += len) {
        if (annal__seg_peek(&db->log, c->seg, off, &pp, &span, &len, &event) != ANNAL_OK || !event)
            break;
        annal__ids_prefetch(db->ids, annal__rec_id_at(c->seg->map + off));
    }
    /* A batch of annal_append_multi (its records flagged) holds runs of several
     * streams: each run is indexed as a batch of its own. */
    const char *run_stream = NULL;
    size_t run_len = 0;
    uint32_t run_first = 0;
    for (uint32_t i = 0; i < n && rc == ANNAL_OK; i++) {
        rc = annal__cursor_next2(c, &ev, &info, &loc, 0); /* scan_batch checked them */
        if (rc != ANNAL_OK) break;
        int next_run =
            i > 0 && (ev.stream_len != run_len || memcmp(ev.stream, run_stream, run_len));
        if (next_run && !info.multi) {
            rc = annal__fail(db, ANNAL_ECORRUPT,
                             "position %" PRIu64 " changes stream within a one-stream batch",
                             ev.position);
            break;
        }
        if (next_run) /* close the previous run */
            rc = close_run(db, t, run_stream, run_len, &sr, rev0);
        if (rc != ANNAL_OK) break;
        if (i == 0 || next_run) {
            run_stream = ev.stream;
            run_len = ev.stream_len;
            run_first = i;
            rc = open_run(db, t, &ev, &sr);
            if (rc != ANNAL_OK) break;
        }
        /* Compaction erases events: once it has run, revisions may skip. */
        if (ev.revision < sr.count || (ev.revision > sr.count && !db->log_compacted)) {
            rc = annal__fail(db, ANNAL_ECORRUPT,
                             "position %" PRIu64 " in stream %s has revision %" PRIu64
                             ", expected %" PRIu64,
                             ev.position, ev.stream, ev.revision, sr.count);
            break;
        }
        uint64_t dp;
        /* A rebuild checks ids against the memtable only: they were checked store-wide
         * when appended, and `annal verify` finds an id stored twice (the older one's
         * lookup names the newer position). */
        rc = rebuild ? annal__ids_claim_mem(db->ids, &ev.id, ev.position, loc, &dp)
                     : annal__id_claim(db, t, &ev.id, ev.position, loc, &dp);
        if (rc == ANNAL_EDUPLICATE)
            rc = annal__fail(db, ANNAL_ECORRUPT,
                             "event id at position %" PRIu64
                             " appears twice in the log (also at %" PRIu64 ")",
                             ev.position, dp);
        if (i == run_first) rev0 = ev.revision;
        if (rc == ANNAL_OK && ev.revision != rev0 + (i - run_first))
            rc = annal__fail(db, ANNAL_ECORRUPT,
                             "position %" PRIu64 " breaks the revisions of its batch", ev.position);
        if (rc == ANNAL_OK && ev.position % ANNAL__POS_STRIDE == 0)
            rc = annal__index_pos_put(t, &db->idx, ev.position, loc);
        if (rc == ANNAL_OK)
            rc = annal__batch_add(&db->batch, ev.type, ev.type_len, ev.tags, ev.tags_len,
                                  ev.position, loc);
        if (rc == ANNAL_OK) rc = annal__index_event_effects(&db->idx, t, &db->head, &sr, &ev);
        sr.count = ev.revision + 1;
        sr.last_pos = ev.position;
        db->head.last_ns = ev.timestamp_ns;
        db->head.last_loc = loc;
        if (i == n - 1 && rc == ANNAL_OK)
            rc = close_run(db, t, ev.stream, ev.stream_len, &sr, rev0);
    }
    db->batch.n = 0;
    return rc;
}

/* Is there, anywhere in [from, end of seg), a valid record written by a flush that
 * started after position pos? Flushes are sequential, so such a record proves that the
 * flush holding pos completed (and was acknowledged): the bad bytes at pos are damage,
 * not a torn tail, and must not be cut away. A valid record whose flush started at or
 * before pos belongs to the torn flush itself (sectors land in any order). */
static int later_flush_after(annal__seg *s, uint64_t from, uint64_t pos) {
    uint64_t to = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
    if (to > s->cap) to = s->cap;
    for (uint64_t off = (from + 7) & ~7ull; off + ANNAL__REC_HDR <= to; off += 8) {
        uint32_t len = annal__rec_len_at(s->map + off);
        if (len < ANNAL__REC_HDR || (len & 7) || off + len > to) continue;
        annal_event ev;
        annal__rec_info info;
        if (annal__rec_decode(s->map + off, (size_t)(to - off), &ev, &info) == ANNAL_OK &&
            info.group > pos)
            return 1;
    }
    return 0;
}

/* Overwrite non-zero bytes in [from, to) of seg with zeros, then flush. */
static int zero_tail(annal_db *db, annal__seg *s, uint64_t from, uint64_t to) {
    static const uint8_t zeros[65536];
    uint64_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
    if (to > size) to = size;
    int dirty = 0;
    for (uint64_t off = from; off < to;) {
        size_t n = (size_t)(to - off < sizeof zeros ? to - off : sizeof zeros);
        if (memcmp(s->map + off, zeros, n) != 0) {
            int r = annal__io_write_all(db->io, s->fd, zeros, n, off);
            if (r < 0) return r;
            dirty = 1;
        }
        off += n;
    }
    return dirty ? db->io->sync(db->io->ctx, s->fd) : 0;
}

/* Does the log's next record go at h->next_loc, given that the last one ends at off of s? */
static int ends_at(annal_db *db, annal__seg *s, uint64_t off, const annal__index_head *h) {
    if (ANNAL__LOC(s->no, off) == h->next_loc) return 1;
    annal__seg *n = annal__log_seg(&db->log, s->no + 1); /* next record opens a segment */
    return n && ANNAL__LOC(n->no, ANNAL__SEG_HDR) == h->next_loc;
}

/* Is the record at off of s a hole from position from up to h->next_pos, the last
 * record of the log? (A lost tail the operator accepted: `annal recover`.) */
static int hole_ends(annal_db *db, annal__seg *s, uint64_t off, uint64_t from,
                     const annal__index_head *h) {
    annal_event ev;
    annal__rec_info info;
    annal__seg *n = annal__log_seg(&db->log, s->no + 1);
    if (n && n->first_pos == from && /* s ends here: the hole opens the next segment */
        (off + ANNAL__REC_HDR > s->cap || annal__seg_readable(&db->log, s, off + 8) != ANNAL_OK ||
         annal__rec_blank_at(s->map + off)))
        s = n, off = ANNAL__SEG_HDR;
    if (off + ANNAL__REC_HDR > s->cap ||
        annal__seg_readable(&db->log, s, off + ANNAL__REC_HDR) != ANNAL_OK ||
        annal__rec_decode(s->map + off, ANNAL__REC_HDR, &ev, &info) != ANNAL_OK ||
        info.kind != ANNAL__REC_HOLE || ev.position != from ||
        ev.position + ev.revision != h->next_pos)
        return 0;
    return ends_at(db, s, off + info.len, h);
}

/* What head_check finds. */
enum { HEAD_DAMAGED = -1, HEAD_STALE = 0, HEAD_TRUSTED = 1 };

/* Does the index describe this log? Its head names the last indexed record and where
 * the next one goes. HEAD_TRUSTED: yes. HEAD_STALE: no (restored from elsewhere, log
 * replaced or truncated): rebuild it. HEAD_DAMAGED: the last acknowledged record is. */
static int head_check(annal_db *db, const annal__index_head *h) {
    if (h->next_pos == 0) return h->next_loc == 0;
    if (ANNAL__LOC_OFF(h->last_loc) < ANNAL__SEG_HDR) /* no event: a hole from the start */
        return db->log.nsegs > 0 && hole_ends(db, db->log.segs[0], ANNAL__SEG_HDR, 0, h);
    annal__seg *s = annal__log_seg(&db->log, ANNAL__LOC_SEG(h->last_loc));
    if (!s) return HEAD_STALE;
    annal_event ev;
    annal__rec_info info;
    uint64_t off = ANNAL__LOC_OFF(h->last_loc);
    if (annal__seg_readable(&db->log, s, off + ANNAL__REC_HDR) != ANNAL_OK) return HEAD_STALE;
    annal_err rc = annal__log_read_at(&db->log, h->last_loc, UINT64_MAX, &ev, &info);
    if (rc != ANNAL_OK) {
        /* Bytes are there but do not decode: an acknowledged record was damaged. */
        return annal__rec_blank_at(s->map + off) ? HEAD_STALE : HEAD_DAMAGED;
    }
    if (ev.position != h->next_pos - 1) return hole_ends(db, s, off + info.len, ev.position + 1, h);
    return ends_at(db, s, off + info.len, h);
}

/* Record the generation of every compacted segment in t (a rebuilt index names them). */
static annal_err put_gens(annal_db *db, MDB_txn *t) {
    annal_err rc = ANNAL_OK;
    for (size_t i = 0; rc == ANNAL_OK && i < db->log.nsegs; i++)
        if (db->log.segs[i]->gen)
            rc = annal__index_gen_put(t, &db->idx, db->log.segs[i]->no, db->log.segs[i]->gen);
    return rc;
}

static annal_err reset_index(annal_db *db, MDB_txn *t) {
    memset(&db->head, 0, sizeof db->head);
    return annal__index_clear(t, &db->idx);
}

/* Events indexed per transaction: at most this many (fewer transactions copy fewer
 * pages), and no more than the map has room for at this many bytes each (a guess: a
 * transaction that finds the map full is redone after it grows). */
#define CATCH_UP_CHUNK 200000
#define CATCH_UP_BYTES 16
#define CATCH_UP_REDO  4 /* times one transaction is redone after growing the map */

/* (Only a writer catches up.) */
static uint64_t catch_up_chunk(annal_db *db) {
    (void)annal__index_grow(&db->idx, 0, 1); /* (the map is all allocated: see index.h) */
    uint64_t n = annal__index_room(&db->idx) / CATCH_UP_BYTES;
    return n < 1000 ? 1000 : n > CATCH_UP_CHUNK ? CATCH_UP_CHUNK : n;
}

/* One catch-up: a transaction at a time, each redone from where it began when the map
 * fills up. */
typedef struct catchup {
    MDB_txn *t;
    annal__cursor c;      /* the next batch to index */
    annal__cursor c0;     /* where the transaction began, to redo it */
    annal__index_head h0; /* db->head then */
    uint64_t chunk;       /* events per transaction */
    uint64_t total, since;
    int rebuild;       /* from position 0, into an empty index */
    int regrown;       /* times this transaction was redone */
    int map_full;      /* the last failure was the map filling up */
    int reset_pending; /* the transaction holds the index reset: a redo resets again */
} catchup;

/* Read the index head into db->head and decide whether to trust it (*trusted), loading
 * the id index if so: its runs named by the meta table, the rest from the log. */
static annal_err trust_head(annal_db *db, MDB_txn *t, int *trusted) {
    annal_err rc = annal__index_head_get(t, &db->idx, &db->head);
    int hc = rc == ANNAL_OK         ? head_check(db, &db->head)
             : rc == ANNAL_ECORRUPT ? HEAD_STALE
                                    : HEAD_TRUSTED;
    if (db->rebuild_index ||
        (rc == ANNAL_OK && db->head.next_pos > 0 && db->head.version != ANNAL__INDEX_VERSION))
        hc = HEAD_STALE;                     /* an older layout: rebuilt */
    if (rc == ANNAL_ECORRUPT) rc = ANNAL_OK; /* an unreadable head: rebuild */
    *trusted = 0;
    if (rc != ANNAL_OK) return rc;
    if (hc == HEAD_DAMAGED)
        return annal__fail(db, ANNAL_ECORRUPT,
                           "the last acknowledged event (position %" PRIu64 ", segment %016" PRIx64
                           ", offset %" PRIu64 ") is damaged; run `annal verify`",
                           db->head.next_pos - 1, ANNAL__LOC_SEG(db->head.last_loc),
                           ANNAL__LOC_OFF(db->head.last_loc));
    if (hc == HEAD_STALE) return ANNAL_OK;
    char detail[512] = "";
    annal_err ir = annal__ids_load(db, t, db->head.next_pos, &db->ids, detail, sizeof detail);
    if (ir == ANNAL_OK && annal__ids_next(db->ids) > db->head.next_pos) {
        snprintf(detail, sizeof detail, "the id index is ahead of the index head");
        ir = ANNAL_ECORRUPT;
    }
    if (ir == ANNAL_ENOMEM) rc = annal__fail(db, ir, "out of memory loading the id index");
    if (ir != ANNAL_OK) {
        annal__log_msg(db, ANNAL_LOG_WARN, "%s", detail);
        annal__ids_close(db->ids);
        db->ids = NULL;
        return rc;
    }
    annal__ids_clean(db->ids);
    *trusted = 1;
    return ANNAL_OK;
}

/* Empty the index in t and remove the id runs: the whole log is indexed again. */
static annal_err reset_for_rebuild(annal_db *db, MDB_txn *t) {
    annal__log_msg(db, ANNAL_LOG_WARN, "index does not match the log: rebuilding it");
    annal_err rc = reset_index(db, t);
    if (rc == ANNAL_OK) {
        char detail[512] = "";
        annal__ids_remove_all(db->index_dir);
        rc = annal__ids_open(db->index_dir, t, db->idx.meta, db->opts.id_cache_events, &db->ids,
                             detail, sizeof detail);
        if (rc != ANNAL_OK) rc = annal__fail(db, rc, "%s", detail);
    }
    if (rc == ANNAL_OK) rc = put_gens(db, t);
    return rc;
}

/* Put the cursor where the index head says the next record goes (the first segment for
 * an empty index) and mark the index as catching up. */
static annal_err start_at_head(annal_db *db, catchup *k) {
    annal__seg *first = db->log.segs[0];
    k->c = (annal__cursor){&db->log, first, ANNAL__SEG_HDR, first->first_pos};
    if (db->head.next_pos == 0 && first->first_pos != 0)
        return annal__fail(db, ANNAL_ECORRUPT, "the first segment starts at position %" PRIu64,
                           first->first_pos);
    if (db->head.next_pos > 0) {
        k->c.seg = annal__log_seg(&db->log, ANNAL__LOC_SEG(db->head.next_loc));
        k->c.off = ANNAL__LOC_OFF(db->head.next_loc);
        k->c.pos = db->head.next_pos;
    }
    /* Until the last transaction, what is committed is behind the log: say so, for
     * read-only handles (in every transaction, so that an interruption leaves it). */
    annal_err rc = annal__index_behind_put(k->t, &db->idx, 1);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot mark the index as catching up");
    k->rebuild = db->head.next_pos == 0;
    k->c0 = k->c;
    k->h0 = db->head;
    return ANNAL_OK;
}

/* Step over holes (the log may end in one: the head moves past it) to the next batch
 * and validate it, leaving the cursor at its start: ANNAL_OK with its size in *n;
 * ANNAL_END at a clean end, the cursor on the last (empty) segment it found; else
 * what stops the walk, the cursor at the bad batch. */
static annal_err next_batch(annal_db *db, annal__cursor *c, uint32_t *n) {
    skip_holes(c); /* and a batch that opens a segment starts there */
    if (c->pos > db->head.next_pos) {
        db->head.next_pos = c->pos;
        db->head.next_loc = ANNAL__LOC(c->seg->no, c->off);
    }
    annal__cursor start = *c;
    annal_err s = scan_batch(c, n);
    if (s != ANNAL_END) *c = start;
    return s;
}

/* Commit the transaction (bounding its dirty pages; an id run too when the memtable is
 * full) and begin the next. */
static annal_err commit_chunk(annal_db *db, catchup *k, int full) {
    annal_err rc = annal__index_head_put(k->t, &db->idx, &db->head);
    k->map_full = rc == ANNAL_ENOSPC;
    if (rc != ANNAL_OK) return rc;
    if (full && (rc = annal__ids_flush(db->ids, k->t, db->idx.meta, db->head.next_pos)) != ANNAL_OK)
        return annal__fail(db, rc, "cannot write an id index run in %s", db->index_dir);
    int mrc = annal__txn_commit(&db->idx, k->t);
    k->t = NULL;
    if (full) annal__ids_flush_end(db->ids, mrc == 0);
    k->map_full = mrc == MDB_MAP_FULL;
    if (mrc)
        return k->map_full && k->regrown < CATCH_UP_REDO ? ANNAL_ENOSPC
                                                         : annal__fail_index(db, mrc);
    k->since = 0;
    k->reset_pending = 0;
    k->c0 = k->c, k->h0 = db->head, k->regrown = 0;
    k->chunk = catch_up_chunk(db);
    if ((mrc = annal__txn_begin(&db->idx, 0, &k->t)) != 0) {
        k->t = NULL;
        return annal__fail_index(db, mrc);
    }
    if (db->io->fault(db->io->ctx, "catch-up-commit") != 0) /* tests */
        return annal__fail(db, ANNAL_EIO, "catch-up stopped by a fault");
    if (db->opts.progress && db->opts.progress(db->opts.progress_ctx, k->total, 0))
        return ANNAL_ECANCELED;
    return ANNAL_OK;
}

/* The guess of the room a transaction needed was short: grow the map, redo it. */
static annal_err redo(annal_db *db, catchup *k) {
    if (k->t) annal__txn_abort(&db->idx, k->t);
    k->t = NULL;
    k->map_full = 0;
    annal__ids_truncate(db->ids, k->h0.next_pos);
    k->c = k->c0, db->head = k->h0, k->total -= k->since, k->since = 0;
    k->regrown++;
    annal__log_msg(db, ANNAL_LOG_INFO,
                   "the index map filled up while indexing the log: growing it, again");
    (void)annal__index_grow(&db->idx, (uint64_t)(16u << 20) << (2 * k->regrown), 1);
    k->chunk = catch_up_chunk(db) / 2 + 1;
    int mrc = annal__txn_begin(&db->idx, 0, &k->t);
    if (mrc) {
        k->t = NULL;
        return annal__fail_index(db, mrc);
    }
    annal_err rc = ANNAL_OK;
    if (k->reset_pending) { /* the aborted transaction held the reset: again */
        rc = reset_index(db, k->t);
        if (rc == ANNAL_OK) rc = put_gens(db, k->t);
        db->head = k->h0;
    }
    if (rc == ANNAL_OK) rc = annal__index_behind_put(k->t, &db->idx, 1);
    return rc;
}

/* Index whole batches until the log's end (or damage: finish_tail decides). */
static annal_err index_log(annal_db *db, catchup *k) {
    for (;;) {
        uint32_t n = 0;
        annal_err rc = next_batch(db, &k->c, &n);
        if (rc == ANNAL_END || rc == ANNAL_ECORRUPT) return ANNAL_OK;
        if (rc != ANNAL_OK) return rc;
        rc = index_batch(db, k->t, &k->c, n, k->rebuild);
        k->map_full = rc == ANNAL_ENOSPC;
        if (rc == ANNAL_OK) {
            db->head.next_pos = k->c.pos;
            db->head.next_loc = ANNAL__LOC(k->c.seg->no, k->c.off);
            k->total += n;
            k->since += n;
            int full = annal__ids_full(db->ids);
            if (k->since >= k->chunk || full) rc = commit_chunk(db, k, full);
        }
        if (rc != ANNAL_OK && k->map_full && k->regrown < CATCH_UP_REDO) rc = redo(db, k);
        if (rc != ANNAL_OK) return rc;
    }
}

/* The cursor stops at the end of whole batches. What follows in the last segment is a
 * torn tail of a flush that never completed, unless a later flush is found after it:
 * then it is damage to acknowledged events, and nothing may be cut. Cut the tail and
 * commit the caught-up index. */
static annal_err finish_tail(annal_db *db, catchup *k, uint64_t *end_seg, uint64_t *end_off) {
    annal__cursor c = k->c;
    annal__seg *last = annal__log_last(&db->log);
    if (c.seg != last || (!db->readonly && later_flush_after(last, c.off, c.pos))) {
        return annal__fail(db, ANNAL_ECORRUPT,
                           "damaged record in segment %016" PRIx64 " at offset %" PRIu64
                           " (position %" PRIu64 ") with events after it; run `annal verify`",
                           c.seg->no, c.off, c.pos);
    }
    if (!db->readonly) {
        int r = zero_tail(db, last, c.off, last->cap);
        if (r < 0)
            return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                               "cannot clear the torn tail of segment %016" PRIx64 ": %s", last->no,
                               strerror(-r));
    }
    *end_seg = c.seg->no;
    *end_off = c.off;
    annal_err rc = annal__index_behind_put(k->t, &db->idx, 0); /* caught up, in one commit */
    if (rc == ANNAL_OK) rc = annal__index_head_put(k->t, &db->idx, &db->head);
    k->map_full = rc == ANNAL_ENOSPC;
    if (rc == ANNAL_OK) {
        int mrc = annal__txn_commit(&db->idx, k->t);
        k->t = NULL;
        /* The commit itself may need pages the puts did not (LMDB's free list): the
         * last transaction is redone after growing the map, like the others. */
        k->map_full = mrc == MDB_MAP_FULL;
        if (mrc)
            rc = k->map_full && k->regrown < CATCH_UP_REDO ? ANNAL_ENOSPC
                                                           : annal__fail_index(db, mrc);
    }
    if (k->total && db->opts.progress) db->opts.progress(db->opts.progress_ctx, k->total, k->total);
    return rc;
}

annal_err annal__catch_up(annal_db *db, uint64_t *end_seg, uint64_t *end_off) {
    catchup k = {.chunk = catch_up_chunk(db)};
    int mrc = annal__txn_begin(&db->idx, 0, &k.t);
    if (mrc) return annal__fail_index(db, mrc);
    int trusted;
    annal_err rc = trust_head(db, k.t, &trusted);
    /* The reset lives in the transaction until its first commit: a redo of that
     * transaction (the map filled up) must reset again, or it would index the log from
     * position 0 over the old entries (the id runs are gone already). */
    if (rc == ANNAL_OK && !trusted) {
        rc = reset_for_rebuild(db, k.t);
        k.reset_pending = 1;
    }
    /* The memtable at its full size from the start: growing it rehashes and copies on
     * the append path. Untouched pages cost nothing (calloc'd and malloc'd maps). */
    if (rc == ANNAL_OK) annal__ids_reserve(db->ids);
    /* Merges of id runs go on beside the indexing below (on another core for a rebuild). */
    if (rc == ANNAL_OK && !db->readonly)
        rc = annal__ids_start_merger(db->ids, &db->idx, db->idx.meta);
    for (size_t i = 0; i < db->log.nsegs; i++) db->log_compacted |= db->log.segs[i]->gen > 0;
    if (rc == ANNAL_OK && db->log.nsegs) rc = start_at_head(db, &k);
    if (rc == ANNAL_OK && db->log.nsegs) rc = index_log(db, &k);
    while (rc == ANNAL_OK && db->log.nsegs) {
        rc = finish_tail(db, &k, end_seg, end_off);
        if (rc == ANNAL_OK || !k.map_full || k.regrown >= CATCH_UP_REDO) break;
        rc = redo(db, &k); /* the map filled up in the last transaction: again, grown */
        if (rc == ANNAL_OK) rc = index_log(db, &k);
    }
    if (k.t) annal__txn_abort(&db->idx, k.t);
    return rc;
}

/* Walk whole batches from c to where they end. 1 if what stops the walk is damage with
 * later flushes after it (catch-up reports that), 0 at a clean end or a torn tail. */
static int walk_batches(annal_db *db, annal__cursor *c) {
    for (;;) {
        skip_holes(c);
        annal__cursor start = *c;
        uint32_t n;
        annal_err s = scan_batch(c, &n);
        if (s == ANNAL_OK) continue;
        if (s != ANNAL_END) *c = start;
        annal__seg *last = annal__log_last(&db->log);
        return c->seg != last || later_flush_after(last, c->off, c->pos);
    }
}

/* Write a hole for positions [from, to) at the cursor (the end of the log), so that
 * they are never given to other events; the index is then rebuilt over it. */
static annal_err write_loss(annal_db *db, annal__cursor *c, uint64_t from, uint64_t to) {
    annal__seg *s = c->seg;
    uint64_t off = c->off;
    int r = zero_tail(db, s, off, s->cap);         /* the torn rest of the last flush, if any */
    if (r == 0 && off + ANNAL__REC_HDR > s->cap) { /* no room: a segment of its own */
        r = annal__log_add(&db->log, s->no + 1, from, s->cap, &s);
        off = ANNAL__SEG_HDR;
    }
    uint8_t rec[ANNAL__REC_HDR];
    annal__hole_encode(from, to - from, rec);
    if (r == 0) r = annal__seg_reserve(&db->log, s, off + ANNAL__REC_HDR);
    if (r == 0) r = annal__io_write_all(db->io, s->fd, rec, sizeof rec, off);
    if (r == 0) r = db->io->sync(db->io->ctx, s->fd);
    if (r < 0)
        return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                           "cannot record the lost positions: %s", strerror(-r));
    annal__log_msg(db, ANNAL_LOG_WARN,
                   "positions %" PRIu64 " to %" PRIu64 " recorded as lost (a hole in $all)", from,
                   to - 1);
    db->lost_from = from;
    db->lost_to = to;
    db->rebuild_index = 1;
    return ANNAL_OK;
}

/* Before anything is indexed or cut: does the log still hold every position that was
 * acknowledged? The evidence is DIR/acked (mark) and a trusted index's head; a log that
 * ends below either lost its tail (the disk dropped or zeroed blocks, a segment was
 * truncated). Refuse to open, so that no lost position is given to a new event; with
 * accept_loss, record the lost range as a hole instead. */
annal_err annal__check_acknowledged(annal_db *db, uint64_t mark) {
    annal__seg *last = annal__log_last(&db->log);
    if (!last) return ANNAL_OK;
    uint64_t claim = mark;
    annal__cursor c = {&db->log, last, ANNAL__SEG_HDR, last->first_pos};
    MDB_txn *t = NULL;
    annal__index_head h;
    if (annal__txn_begin(&db->idx, MDB_RDONLY, &t) == 0 &&
        annal__index_head_get(t, &db->idx, &h) == ANNAL_OK && h.next_pos > 0 &&
        h.version == ANNAL__INDEX_VERSION) {
        int hc = head_check(db, &h);
        if (hc == HEAD_DAMAGED) { /* catch-up says so */
            annal__txn_abort(&db->idx, t);
            return ANNAL_OK;
        }
        annal__seg *hs =
            hc == HEAD_TRUSTED ? annal__log_seg(&db->log, ANNAL__LOC_SEG(h.next_loc)) : NULL;
        if (hs) /* the log holds the index's head: walk on from there */
            c = (annal__cursor){&db->log, hs, ANNAL__LOC_OFF(h.next_loc), h.next_pos};
        else if (h.next_pos > claim)
            claim = h.next_pos;
    }
    if (t) annal__txn_abort(&db->idx, t);
    if (c.pos >= claim) return ANNAL_OK;       /* no need to walk */
    if (walk_batches(db, &c)) return ANNAL_OK; /* damage, not a lost tail: catch-up's */
    if (c.pos >= claim) return ANNAL_OK;
    if (db->accept_loss) return write_loss(db, &c, c.pos, claim);
    return annal__fail(db, ANNAL_ECORRUPT,
                       "positions %" PRIu64 " to %" PRIu64
                       " were acknowledged but are missing from the log (its tail was lost "
                       "or cut short, segment %016" PRIx64 " from offset %" PRIu64
                       "); nothing was changed. Restore the log from a backup, or run "
                       "`annal recover --accept-loss` to record them as lost",
                       c.pos, claim - 1, c.seg->no, c.off);
}

/* Settle what an interrupted compaction left in DIR/log before the log is opened.
 * Compaction writes generation G of segment S under a tmp name, flushes it, records G in
 * the index (flushed), renames the file into place, then deletes generation G-1. So: a
 * tmp file the index names is complete (finish the rename); any other tmp is dropped;
 * of several generations of a segment, the newest in place is current. An index about
 * to be rebuilt (trusted = 0) names nothing: the log alone decides. */
annal_err annal__settle_compaction(annal_db *db, int trusted) {
    char logdir[4096];
    snprintf(logdir, sizeof logdir, "%s/log", db->dir);
    annal__seg_file *f;
    size_t n;
    if (annal__seg_list(logdir, &f, &n) < 0) return ANNAL_OK; /* a new store */
    MDB_txn *t = NULL;
    if (trusted && annal__txn_begin(&db->idx, MDB_RDONLY, &t) != 0) t = NULL;
    uint64_t mark_no = UINT64_MAX;
    uint32_t mark_gen = 0;
    if (t && annal__index_compacting_get(t, &db->idx, &mark_no, &mark_gen) == ANNAL_OK) {
        /* Killed while moving index entries: finish the file swap, rebuild the index. */
        annal__log_msg(db, ANNAL_LOG_WARN,
                       "a compaction was interrupted: rebuilding the index from the log");
        db->rebuild_index = 1;
    } else {
        mark_no = UINT64_MAX;
    }
    annal__log names = {.dir = logdir}; /* for annal__seg_path */
    annal_err rc = ANNAL_OK;
    int changed = 0;
    for (size_t i = 0; i < n && rc == ANNAL_OK; i++) {
        char path[4096 + 64];
        annal__seg_path(&names, f[i].no, f[i].gen, f[i].tmp, path, sizeof path);
        if (f[i].tmp) { /* roll forward if the index points into it, else drop it */
            char to[4096 + 64];
            uint32_t want = 0;
            if (t && annal__index_gen_get(t, &db->idx, f[i].no, &want) != ANNAL_OK) want = 0;
            int keep = (t && want == f[i].gen && f[i].gen > 0) ||
                       (f[i].no == mark_no && f[i].gen == mark_gen);
            annal__seg_path(&names, f[i].no, f[i].gen, 0, to, sizeof to);
            if (keep)
                annal__log_msg(db, ANNAL_LOG_INFO,
                               "finishing the compaction of segment %016" PRIx64, f[i].no);
            if (keep ? rename(path, to) < 0 : unlink(path) < 0)
                rc = annal__fail(db, ANNAL_EIO, "cannot %s %s: %s", keep ? "rename" : "remove",
                                 path, strerror(errno));
            if (keep) f[i].tmp = 0; /* now in place, for the check below */
            changed = 1;
        }
    }
    /* Of a segment's generations in place, the newest is current: the others are
     * garbage (the list is sorted by number, then generation). */
    for (size_t i = 0; i + 1 < n && rc == ANNAL_OK; i++) {
        if (f[i].tmp) continue;
        size_t k = i + 1;
        while (k < n && f[k].no == f[i].no && f[k].tmp) k++;
        if (k == n || f[k].no != f[i].no) continue;
        char path[4096 + 64];
        annal__seg_path(&names, f[i].no, f[i].gen, 0, path, sizeof path);
        if (unlink(path) < 0)
            rc = annal__fail(db, ANNAL_EIO, "cannot remove %s: %s", path, strerror(errno));
        changed = 1;
    }
    if (t) annal__txn_abort(&db->idx, t);
    free(f);
    if (changed) db->io->sync_dir(db->io->ctx, logdir);
    return rc;
}
