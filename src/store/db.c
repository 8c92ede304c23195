/* Opening, recovering and closing a store; handle-level error detail; info. Recovery
 * is: take the writer lock, decide whether the index can be trusted, index whatever
 * whole batches the log holds beyond it, and cut a torn tail back to the last whole
 * batch, zeroing it so no stale bytes can later pass for records. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"

#define DEF_SEGMENT    (256ull << 20)
#define DEF_MAX_EVENT  (32ull << 20)
#define DEF_MAX_BATCH  (64ull << 20)
#define DEF_MAX_EVENTS 100000u
#define DEF_MAP        (1ull << 40)

static void opts_defaults(annal_db_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->segment_bytes = DEF_SEGMENT;
    o->max_event_bytes = DEF_MAX_EVENT;
    o->max_batch_bytes = DEF_MAX_BATCH;
    o->max_batch_events = DEF_MAX_EVENTS;
    o->index_map_bytes = DEF_MAP;
    o->id_cache_events = ANNAL__IDS_MEM_DEFAULT;
}

void annal_db_opts_init_sized(annal_db_opts *o, size_t size) {
    annal_db_opts d;
    opts_defaults(&d);
    annal__opts_out(o, size, &d, sizeof d);
}

annal_err annal__db_opts_in(const annal_db_opts *in, annal_db_opts *out) {
    opts_defaults(out);
    if (!in) return ANNAL_OK;
    return annal__opts_in(out, sizeof *out, in, offsetof(annal_db_opts, flags) + sizeof in->flags)
               ? ANNAL_OK
               : ANNAL_EINVAL;
}

/* ---- error detail ---------------------------------------------------------------- */

static annal__errslot *errslot(annal_db *db, int create) {
    pthread_t self = pthread_self();
    for (annal__errslot *s = db->errs; s; s = s->next)
        if (pthread_equal(s->thread, self)) return s;
    if (!create) return NULL;
    annal__errslot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->thread = self;
    s->next = db->errs;
    db->errs = s;
    return s;
}

annal_err annal__fail(annal_db *db, annal_err code, const char *fmt, ...) {
    pthread_mutex_lock(&db->errmu);
    annal__errslot *s = errslot(db, 1);
    if (s) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->msg, sizeof s->msg, fmt, ap);
        va_end(ap);
        s->code = code;
    }
    pthread_mutex_unlock(&db->errmu);
    return code;
}

const char *annal_db_errmsg(annal_db *db) {
    if (!db) return "no handle";
    pthread_mutex_lock(&db->errmu);
    annal__errslot *s = errslot(db, 0);
    const char *m = s && s->msg[0] ? s->msg : "no error";
    pthread_mutex_unlock(&db->errmu);
    return m; /* the slot belongs to this thread and lives until close */
}

void annal__log_msg(annal_db *db, annal_log_level lvl, const char *fmt, ...) {
    if (!db->opts.log) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    db->opts.log(db->opts.log_ctx, lvl, buf);
}

int annal__name_ok(const char *s, size_t *len) {
    if (!s) return 0;
    size_t n = strnlen(s, ANNAL_MAX_NAME + 1);
    if (n == 0 || n > ANNAL_MAX_NAME || !annal__utf8_valid(s, n)) return 0;
    *len = n;
    return 1;
}

/* A user stream a caller may write to: short enough for the system streams derived
 * from its name (annal.h, ANNAL_MAX_STREAM_NAME). */
int annal__stream_name_ok(const char *s, size_t *len) {
    size_t n;
    if (!annal__name_ok(s, &n) || s[0] == '$' || n > ANNAL_MAX_STREAM_NAME) return 0;
    *len = n;
    return 1;
}

annal_err annal__read_txn(annal_db *db, MDB_txn **t) {
    int rc = annal__txn_begin(&db->idx, MDB_RDONLY, t);
    if (rc) return annal__fail(db, annal__index_err(rc), "index: %s", mdb_strerror(rc));
    return ANNAL_OK;
}

uint64_t annal__visible(annal_db *db, MDB_txn *t) {
    if (!db->readonly) return __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE);
    annal__index_head h;
    return annal__index_head_get(t, &db->idx, &h) == ANNAL_OK ? h.next_pos : 0;
}

/* ---- recovery -------------------------------------------------------------------- */

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

/* Put c at the nearest position-table entry at or below pos (the start of the log if
 * compaction erased every entry below). */
static annal_err seek(annal_db *db, MDB_txn *t, uint64_t pos, annal__cursor *c) {
    uint64_t base, l;
    annal_err rc = annal__index_pos_floor(t, &db->idx, pos, &base, &l);
    if (rc == ANNAL_ENOTFOUND) {
        if (db->log.nsegs == 0) return ANNAL_ENOTFOUND;
        *c = (annal__cursor){&db->log, db->log.segs[0], ANNAL__SEG_HDR, db->log.segs[0]->first_pos};
        return ANNAL_OK;
    }
    if (rc != ANNAL_OK) return rc;
    annal__seg *s = annal__log_seg_at(&db->log, l);
    if (!s) return ANNAL_ECORRUPT;
    *c = (annal__cursor){&db->log, s, ANNAL__LOC_OFF(l), base};
    return ANNAL_OK;
}

annal_err annal__locate(annal_db *db, MDB_txn *t, uint64_t pos, uint64_t *loc) {
    annal__cursor c;
    annal_err rc = seek(db, t, pos, &c);
    while (rc == ANNAL_OK) {
        annal_event ev;
        annal__rec_info info;
        rc = annal__cursor_next(&c, &ev, &info, loc);
        if (rc == ANNAL_OK && ev.position >= pos) return ev.position == pos ? rc : ANNAL_ENOTFOUND;
    }
    return rc == ANNAL_END ? ANNAL_ENOTFOUND : rc;
}

annal_err annal__block_members(annal_db *db, const annal__block *b, uint64_t *pos, uint64_t *loc,
                               size_t *n) {
    *n = 0;
    if (!(b->mask & (b->mask - 1))) { /* one member: the block names it (single appends) */
        pos[0] = annal__block_first(b);
        loc[(*n)++] = b->loc;
        return ANNAL_OK;
    }
    annal__seg *s = annal__log_seg_at(&db->log, b->loc);
    if (!s) return ANNAL_ENOTFOUND;
    uint64_t end = annal__block_end(b), want = annal__block_first(b), off = ANNAL__LOC_OFF(b->loc);
    /* The batch's records follow the first member (with holes where compaction erased
     * some): their framing is enough to find the members. */
    while (want < end) {
        uint64_t p, span;
        uint32_t len;
        int event;
        if (annal__seg_peek(&db->log, s, off, &p, &span, &len, &event) != ANNAL_OK || p != want)
            return ANNAL_ECORRUPT;
        if (event && (b->mask >> (p - b->first_pos) & 1)) {
            pos[*n] = p;
            loc[(*n)++] = ANNAL__SEG_LOC(s, off);
        }
        want = p + span;
        off += len;
    }
    return ANNAL_OK;
}

annal_err annal__ids_load(annal_db *db, MDB_txn *t, uint64_t upto, annal__ids **out, char *detail,
                          size_t dlen) {
    annal_err rc = annal__ids_open(db->index_dir, t, db->idx.meta, db->opts.id_cache_events, out,
                                   detail, dlen);
    if (rc != ANNAL_OK) return rc;
    uint64_t from = annal__ids_next(*out), lost = 0;
    annal__cursor c = {0};
    if (from < upto) rc = seek(db, t, from, &c);
    while (rc == ANNAL_OK && from < upto && c.pos < upto) {
        annal_event ev;
        annal__rec_info info;
        uint64_t loc;
        rc = annal__cursor_next(&c, &ev, &info, &loc);
        if (rc == ANNAL_OK && ev.position >= from && ev.position < upto)
            rc = annal__ids_add(*out, &ev.id, ev.position, loc);
        if (rc == ANNAL_ECORRUPT) {
            /* Damage to acknowledged events is verify's to report: the writer still
             * opens. Go on from the next position-table entry; the ids in between are
             * unreadable anyway. */
            uint64_t next = (c.pos / ANNAL__POS_STRIDE + 1) * ANNAL__POS_STRIDE;
            lost += next - c.pos;
            rc = next < upto ? seek(db, t, next, &c) : ANNAL_END;
            if (rc == ANNAL_OK && c.pos < next) rc = ANNAL_END; /* no entry past the damage */
        }
    }
    if (rc == ANNAL_END) rc = ANNAL_OK;
    if (lost)
        annal__log_msg(db, ANNAL_LOG_WARN,
                       "damaged log records: up to %" PRIu64
                       " event ids not loaded (run `annal verify`)",
                       lost);
    if (rc != ANNAL_OK) {
        snprintf(detail, dlen, "cannot read the event ids from position %" PRIu64 " to %" PRIu64,
                 from, upto);
        annal__ids_close(*out);
        *out = NULL;
    }
    return rc;
}

/* Does the event at pos (with loc as recorded in the memtable, or UINT64_MAX) still
 * exist? A recorded location holds while its segment's generation is current;
 * otherwise compaction moved or erased the event: look it up again. */
static annal_err id_resolve(annal_db *db, MDB_txn *t, uint64_t pos, uint64_t *loc) {
    annal__seg *s = *loc == UINT64_MAX ? NULL : annal__log_seg(&db->log, ANNAL__LOC_SEG(*loc));
    if (s && s->gen == ANNAL__LOC_GEN(*loc)) return ANNAL_OK;
    return annal__locate(db, t, pos, loc);
}

annal_err annal__id_live(annal_db *db, MDB_txn *t, const annal_uuid *id, uint64_t *pos,
                         uint64_t *loc) {
    annal_err rc = annal__ids_get(db->ids, id, pos, loc);
    return rc == ANNAL_OK ? id_resolve(db, t, *pos, loc) : rc;
}

annal_err annal__id_claim(annal_db *db, MDB_txn *t, const annal_uuid *id, uint64_t pos,
                          uint64_t loc, uint64_t *dup_pos) {
    uint64_t op, ol;
    annal_err rc = annal__ids_claim(db->ids, id, pos, loc, &op, &ol);
    if (rc != ANNAL_EDUPLICATE) return rc;
    rc = id_resolve(db, t, op, &ol);
    if (rc == ANNAL_ENOTFOUND) return annal__ids_add(db->ids, id, pos, loc); /* erased */
    if (rc == ANNAL_OK) *dup_pos = op;
    return rc == ANNAL_OK ? ANNAL_EDUPLICATE : rc;
}

/* Index the n events at the cursor (already validated) into t. */
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
        annal__ids_prefetch(db->ids, (const annal_uuid *)(c->seg->map + off + 32));
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
        if (next_run) { /* close the previous run */
            rc = annal__batch_put(&db->batch, &db->idx, t, run_stream, run_len, sr.id, rev0);
            db->batch.n = 0;
            if (rc == ANNAL_OK) rc = annal__index_stream_put(t, &db->idx, run_stream, run_len, &sr);
            if (rc != ANNAL_OK) break;
        }
        if (i == 0 || next_run) {
            run_stream = ev.stream;
            run_len = ev.stream_len;
            run_first = i;
            rc = annal__index_stream_get(t, &db->idx, ev.stream, ev.stream_len, &sr);
            if (rc == ANNAL_ENOTFOUND) {
                sr = annal__stream_rec_new(db->head.next_stream_id++, ev.timestamp_ns);
                rc = ANNAL_OK;
            }
            if (rc != ANNAL_OK) break;
            if (sr.count == 0) {
                sr.created_ns = ev.timestamp_ns;
                db->head.streams++;
            }
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
            rc = annal__batch_add(&db->batch, ev.type, ev.type_len, ev.position, loc);
        if (rc == ANNAL_OK) rc = annal__index_event_effects(&db->idx, t, &db->head, &sr, &ev);
        sr.count = ev.revision + 1;
        sr.last_pos = ev.position;
        db->head.last_ns = ev.timestamp_ns;
        db->head.last_loc = loc;
        if (i == n - 1 && rc == ANNAL_OK)
            rc = annal__batch_put(&db->batch, &db->idx, t, ev.stream, ev.stream_len, sr.id, rev0);
        if (i == n - 1 && rc == ANNAL_OK)
            rc = annal__index_stream_put(t, &db->idx, ev.stream, ev.stream_len, &sr);
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
        uint32_t len = annal__get32(s->map + off + 4);
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

/* Does the index describe this log? Its head names the last indexed record and where
 * the next one goes. 1: yes. 0: no (restored from elsewhere, log replaced or truncated):
 * rebuild it. ANNAL_ECORRUPT (negative): the last acknowledged record is damaged. */
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
         annal__get64(s->map + off) == 0))
        s = n, off = ANNAL__SEG_HDR;
    if (off + ANNAL__REC_HDR > s->cap ||
        annal__seg_readable(&db->log, s, off + ANNAL__REC_HDR) != ANNAL_OK ||
        annal__rec_decode(s->map + off, ANNAL__REC_HDR, &ev, &info) != ANNAL_OK ||
        info.kind != ANNAL__REC_HOLE || ev.position != from ||
        ev.position + ev.revision != h->next_pos)
        return 0;
    return ends_at(db, s, off + info.len, h);
}

static int head_check(annal_db *db, const annal__index_head *h) {
    if (h->next_pos == 0) return h->next_loc == 0;
    if (ANNAL__LOC_OFF(h->last_loc) < ANNAL__SEG_HDR) /* no event: a hole from the start */
        return db->log.nsegs > 0 && hole_ends(db, db->log.segs[0], ANNAL__SEG_HDR, 0, h);
    annal__seg *s = annal__log_seg(&db->log, ANNAL__LOC_SEG(h->last_loc));
    if (!s) return 0;
    annal_event ev;
    annal__rec_info info;
    uint64_t off = ANNAL__LOC_OFF(h->last_loc);
    if (annal__seg_readable(&db->log, s, off + ANNAL__REC_HDR) != ANNAL_OK) return 0;
    annal_err rc = annal__log_read_at(&db->log, h->last_loc, UINT64_MAX, &ev, &info);
    if (rc != ANNAL_OK) {
        /* Bytes are there but do not decode: an acknowledged record was damaged. */
        uint32_t len = annal__get32(s->map + off + 4);
        return len == 0 && annal__get32(s->map + off) == 0 ? 0 : -1;
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
    int rc = 0;
    MDB_dbi dbis[] = {db->idx.meta, db->idx.streams, db->idx.revs,
                      db->idx.pos,  db->idx.cats,    db->idx.types};
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0] && rc == 0; i++)
        rc = mdb_drop(t, dbis[i], 0);
    MDB_dbi old; /* layout 2 kept event ids in LMDB */
    if (rc == 0 && mdb_dbi_open(t, "ids", 0, &old) == 0) rc = mdb_drop(t, old, 1);
    memset(&db->head, 0, sizeof db->head);
    return annal__index_err(rc);
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

annal_err annal__catch_up(annal_db *db, uint64_t *end_seg, uint64_t *end_off) {
    MDB_txn *t = NULL;
    uint64_t chunk = catch_up_chunk(db);
    int mrc = annal__txn_begin(&db->idx, 0, &t);
    if (mrc) return annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
    annal_err rc = annal__index_head_get(t, &db->idx, &db->head);
    int hc = rc == ANNAL_OK ? head_check(db, &db->head) : rc == ANNAL_ECORRUPT ? 0 : 1;
    if (db->rebuild_index ||
        (rc == ANNAL_OK && db->head.next_pos > 0 && db->head.version != ANNAL__INDEX_VERSION))
        hc = 0;                              /* an older layout: rebuilt */
    if (rc == ANNAL_ECORRUPT) rc = ANNAL_OK; /* an unreadable head: rebuild, below */
    if (hc < 0) {
        rc = annal__fail(db, ANNAL_ECORRUPT,
                         "the last acknowledged event (position %" PRIu64 ", segment %016" PRIx64
                         ", offset %" PRIu64 ") is damaged; run `annal verify`",
                         db->head.next_pos - 1, ANNAL__LOC_SEG(db->head.last_loc),
                         ANNAL__LOC_OFF(db->head.last_loc));
    }
    if (hc > 0) { /* the id index: runs named by the meta table, the rest from the log */
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
            hc = 0;
        } else {
            annal__ids_clean(db->ids);
        }
    }
    /* The reset lives in the transaction until its first commit: a redo of that
     * transaction (the map filled up) must reset again, or it would index the log from
     * position 0 over the old entries (the id runs are gone already). */
    int reset_pending = 0;
    if (rc == ANNAL_OK && hc == 0) {
        annal__log_msg(db, ANNAL_LOG_WARN, "index does not match the log: rebuilding it");
        rc = reset_index(db, t);
        if (rc == ANNAL_OK) {
            char detail[512] = "";
            annal__ids_remove_all(db->index_dir);
            rc = annal__ids_open(db->index_dir, t, db->idx.meta, db->opts.id_cache_events, &db->ids,
                                 detail, sizeof detail);
            if (rc != ANNAL_OK) rc = annal__fail(db, rc, "%s", detail);
        }
        if (rc == ANNAL_OK) rc = put_gens(db, t);
        reset_pending = 1;
    }
    /* The memtable at its full size from the start: growing it rehashes and copies on
     * the append path. Untouched pages cost nothing (calloc'd and malloc'd maps). */
    if (rc == ANNAL_OK) annal__ids_reserve(db->ids);
    /* Merges of id runs go on beside the indexing below (on another core for a rebuild). */
    if (rc == ANNAL_OK && !db->readonly)
        rc = annal__ids_start_merger(db->ids, &db->idx, db->idx.meta);
    for (size_t i = 0; i < db->log.nsegs; i++) db->log_compacted |= db->log.segs[i]->gen > 0;
    annal__seg *first = db->log.nsegs ? db->log.segs[0] : NULL;
    if (rc != ANNAL_OK || !first) goto out;

    annal__cursor c = {&db->log, first, ANNAL__SEG_HDR, first->first_pos};
    if (db->head.next_pos == 0 && first->first_pos != 0) {
        rc = annal__fail(db, ANNAL_ECORRUPT, "the first segment starts at position %" PRIu64,
                         first->first_pos);
        goto out;
    }
    if (db->head.next_pos > 0) {
        c.seg = annal__log_seg(&db->log, ANNAL__LOC_SEG(db->head.next_loc));
        c.off = ANNAL__LOC_OFF(db->head.next_loc);
        c.pos = db->head.next_pos;
    }
    /* Until the last transaction, what is committed is behind the log: say so, for
     * read-only handles (in every transaction, so that an interruption leaves it). */
    rc = annal__index_behind_put(t, &db->idx, 1);
    if (rc != ANNAL_OK) {
        rc = annal__fail(db, rc, "cannot mark the index as catching up");
        goto out;
    }
    uint64_t total = 0, since = 0;
    int rebuild = db->head.next_pos == 0; /* from position 0, into an empty index */
    annal__cursor c0 = c;                 /* where the transaction began, to redo it */
    annal__index_head h0 = db->head;
    int regrown = 0;
    for (;;) {
        skip_holes(&c);                  /* and a batch that opens a segment starts there */
        if (c.pos > db->head.next_pos) { /* the log may end in a hole */
            db->head.next_pos = c.pos;
            db->head.next_loc = ANNAL__LOC(c.seg->no, c.off);
        }
        annal__cursor start = c;
        uint32_t n = 0;
        annal_err s = scan_batch(&c, &n);
        if (s != ANNAL_OK) {
            /* At a clean end the cursor has moved on to the last (empty) segment it
             * found; anywhere else, back to the start of the bad batch. */
            if (s != ANNAL_END) c = start;
            if (s != ANNAL_END && s != ANNAL_ECORRUPT) rc = s;
            break;
        }
        c = start;
        rc = index_batch(db, t, &c, n, rebuild);
        if (rc == ANNAL_ENOSPC && regrown < CATCH_UP_REDO) goto map_full;
        if (rc != ANNAL_OK) goto out;
        db->head.next_pos = c.pos;
        db->head.next_loc = ANNAL__LOC(c.seg->no, c.off);
        total += n;
        since += n;
        int full = annal__ids_full(db->ids);
        if (since >= chunk || full) { /* bound the transaction's dirty pages */
            rc = annal__index_head_put(t, &db->idx, &db->head);
            if (rc == ANNAL_ENOSPC && regrown < CATCH_UP_REDO) goto map_full;
            if (rc != ANNAL_OK) goto out;
            if (full &&
                (rc = annal__ids_flush(db->ids, t, db->idx.meta, db->head.next_pos)) != ANNAL_OK) {
                rc = annal__fail(db, rc, "cannot write an id index run in %s", db->index_dir);
                goto out;
            }
            mrc = annal__txn_commit(&db->idx, t);
            if (full) annal__ids_flush_end(db->ids, mrc == 0);
            if (mrc == MDB_MAP_FULL && regrown < CATCH_UP_REDO) {
                t = NULL;
                goto map_full;
            }
            if (mrc != 0) {
                t = NULL;
                rc = annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
                goto out;
            }
            since = 0;
            reset_pending = 0;
            c0 = c, h0 = db->head, regrown = 0;
            chunk = catch_up_chunk(db);
            if ((mrc = annal__txn_begin(&db->idx, 0, &t)) != 0) {
                t = NULL;
                rc = annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
                goto out;
            }
            if (db->io->fault(db->io->ctx, "catch-up-commit") != 0) { /* tests */
                rc = annal__fail(db, ANNAL_EIO, "catch-up stopped by a fault");
                goto out;
            }
            if (db->opts.progress && db->opts.progress(db->opts.progress_ctx, total, 0)) {
                rc = ANNAL_ECANCELED;
                goto out;
            }
        }
        continue;
    map_full: /* the guess of the room it needed was short: grow, redo the transaction */
        if (t) annal__txn_abort(&db->idx, t);
        t = NULL;
        annal__ids_truncate(db->ids, h0.next_pos);
        c = c0, db->head = h0, total -= since, since = 0;
        regrown++;
        annal__log_msg(db, ANNAL_LOG_INFO,
                       "the index map filled up while indexing the log: growing it, again");
        (void)annal__index_grow(&db->idx, (uint64_t)(16u << 20) << (2 * regrown), 1);
        chunk = catch_up_chunk(db) / 2 + 1;
        if ((mrc = annal__txn_begin(&db->idx, 0, &t)) != 0) {
            t = NULL;
            rc = annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
            goto out;
        }
        rc = ANNAL_OK;       /* (the map-full failure being redone) */
        if (reset_pending) { /* the aborted transaction held the reset: again */
            rc = reset_index(db, t);
            if (rc == ANNAL_OK) rc = put_gens(db, t);
            db->head = h0;
        }
        if (rc == ANNAL_OK) rc = annal__index_behind_put(t, &db->idx, 1);
        if (rc != ANNAL_OK) goto out;
    }
    if (rc != ANNAL_OK) goto out;
    /* The cursor stops at the end of whole batches. What follows in the last segment
     * is a torn tail of a flush that never completed, unless a later flush is found
     * after it: then it is damage to acknowledged events, and nothing may be cut. */
    annal__seg *last = annal__log_last(&db->log);
    if (c.seg != last || (!db->readonly && later_flush_after(last, c.off, c.pos))) {
        rc = annal__fail(db, ANNAL_ECORRUPT,
                         "damaged record in segment %016" PRIx64 " at offset %" PRIu64
                         " (position %" PRIu64 ") with events after it; run `annal verify`",
                         c.seg->no, c.off, c.pos);
        goto out;
    }
    if (!db->readonly) {
        int r = zero_tail(db, last, c.off, last->cap);
        if (r < 0) {
            rc = annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                             "cannot clear the torn tail of segment %016" PRIx64 ": %s", last->no,
                             strerror(-r));
            goto out;
        }
    }
    *end_seg = c.seg->no;
    *end_off = c.off;
    rc = annal__index_behind_put(t, &db->idx, 0); /* caught up, in the same commit */
    if (rc == ANNAL_OK) rc = annal__index_head_put(t, &db->idx, &db->head);
    if (rc == ANNAL_OK) {
        mrc = annal__txn_commit(&db->idx, t);
        t = NULL;
        if (mrc) rc = annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
    }
    if (total && db->opts.progress) db->opts.progress(db->opts.progress_ctx, total, total);
out:
    if (t) annal__txn_abort(&db->idx, t);
    return rc;
}

/* ---- the acknowledged mark ------------------------------------------------------- */

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
static annal_err check_acknowledged(annal_db *db, uint64_t mark) {
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
        if (hc < 0) { /* the last acknowledged event is damaged: catch-up says so */
            annal__txn_abort(&db->idx, t);
            return ANNAL_OK;
        }
        annal__seg *hs = hc ? annal__log_seg(&db->log, ANNAL__LOC_SEG(h.next_loc)) : NULL;
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

/* ---- open / close ---------------------------------------------------------------- */

/* Take the writer lock of the store in dir. fd[1] holds a flock on the directory itself,
 * which deleting or replacing a file cannot take away; fd[0] one on DIR/lock, as older
 * versions take it, and our pid (a hint for the EBUSY message of the next would-be
 * writer). msg gets the reason of a failure; on failure both fds are closed. */
static annal_err lock_dir(const char *dir, int fd[2], char *msg, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    fd[1] = -1;
    fd[0] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd[0] < 0) {
        snprintf(msg, len, "cannot open %s: %s", path, strerror(errno));
        return errno == EACCES || errno == EPERM ? ANNAL_EPERM
               : errno == EROFS                  ? ANNAL_EREADONLY
                                                 : ANNAL_EIO;
    }
    fd[1] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd[1] < 0) {
        snprintf(msg, len, "cannot open %s: %s", dir, strerror(errno));
        close(fd[0]);
        fd[0] = -1;
        return ANNAL_EIO;
    }
    if (flock(fd[1], LOCK_EX | LOCK_NB) < 0 || flock(fd[0], LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = {0};
        ssize_t n = pread(fd[0], pid, sizeof pid - 1, 0);
        if (n > 0) pid[strcspn(pid, "\n")] = 0;
        snprintf(msg, len, "%s is open for writing by process %s", dir, n > 0 ? pid : "?");
        close(fd[0]);
        close(fd[1]);
        fd[0] = fd[1] = -1;
        return ANNAL_EBUSY;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd[0], 0) == 0 && pwrite(fd[0], pid, (size_t)n, 0) != n) {
        /* the pid is only a hint */
    }
    return ANNAL_OK;
}

static annal_err take_lock(annal_db *db) {
    char msg[4200];
    annal_err rc = lock_dir(db->dir, db->lock_fd, msg, sizeof msg);
    return rc == ANNAL_OK ? rc : annal__fail(db, rc, "%s", msg);
}

static annal_err check_opts(const annal_db_opts *o) {
    if (o->flags & ~(ANNAL_OPEN_CREATE | ANNAL_OPEN_READONLY | ANNAL_OPEN_NOSYNC))
        return ANNAL_EINVAL;
    if (o->segment_bytes < (64u << 10) || o->segment_bytes > (4ull << 30)) return ANNAL_EINVAL;
    if (o->max_event_bytes == 0 || o->max_event_bytes > (1ull << 30)) return ANNAL_EINVAL;
    if (o->max_batch_bytes == 0 || o->max_batch_events == 0) return ANNAL_EINVAL;
    if (o->index_map_bytes < (1u << 20)) return ANNAL_EINVAL;
    if (o->id_cache_events == 0 || o->id_cache_events > (1u << 28)) return ANNAL_EINVAL;
    return ANNAL_OK;
}

/* Settle what an interrupted compaction left in DIR/log before the log is opened.
 * Compaction writes generation G of segment S under a tmp name, flushes it, records G in
 * the index (flushed), renames the file into place, then deletes generation G-1. So: a
 * tmp file the index names is complete (finish the rename); any other tmp is dropped;
 * of several generations of a segment, the newest in place is current. An index about
 * to be rebuilt (trusted = 0) names nothing: the log alone decides. */
static annal_err settle_compaction(annal_db *db, int trusted) {
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
        char path[4096 + 64], to[4096 + 64];
        annal__seg_path(&names, f[i].no, f[i].gen, f[i].tmp, path, sizeof path);
        if (f[i].tmp) { /* roll forward if the index points into it, else drop it */
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

static annal_err open_writer(annal_db *db) {
    annal_err rc = take_lock(db);
    if (rc != ANNAL_OK) return rc;
    uint64_t mark = 0;
    rc = annal__acked_open(&db->acked, db->dir, &mark);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc, "cannot open %s/acked: %s", db->dir, strerror(errno));
    int in_use = annal__index_in_use(db->index_dir);
    if (in_use == 1)
        return annal__fail(db, ANNAL_EBUSY,
                           "%s is open read-only in this process: close those "
                           "handles before opening it for writing",
                           db->dir);
    char boot[40];
    annal__boot_id(boot);
    annal__index_state st;
    int trusted = 1;
    annal_err src = annal__index_state_read(db->index_dir, &st);
    if (src != ANNAL_ENOTFOUND && !(src == ANNAL_OK && (st.clean || !strcmp(st.boot_id, boot)))) {
        /* The index ran without fsync and the machine restarted (or the state is
         * unreadable): its pages may be torn. The log is the durable copy. */
        if (in_use)
            return annal__fail(db, ANNAL_EBUSY,
                               "%s needs its index rebuilt: close its other "
                               "handles in this process first",
                               db->dir);
        annal__log_msg(db, ANNAL_LOG_WARN,
                       "index was not closed cleanly before a restart: "
                       "rebuilding it from the log");
        trusted = 0;
        if (annal__index_remove(db->index_dir) < 0)
            return annal__fail(db, ANNAL_EIO, "cannot remove the old index in %s", db->index_dir);
    }
    mkdir(db->index_dir, 0755);
    annal__index_state now = {0, {0}};
    memcpy(now.boot_id, boot, sizeof boot);
    int r = annal__index_state_write(db->index_dir, &now);
    if (r < 0)
        return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO, "cannot write %s/state: %s",
                           db->index_dir, strerror(-r));
    char detail[512] = "";
    rc = annal__index_open(&db->idx, db->index_dir, 0, 1, db->opts.index_map_bytes, detail,
                           sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    rc = settle_compaction(db, trusted);
    if (rc != ANNAL_OK) return rc;
    rc = annal__log_open(&db->log, db->io, db->dir, 0, 1, detail, sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    rc = check_acknowledged(db, mark);
    if (rc != ANNAL_OK) return rc;
    if (db->log.nsegs > 0) /* the segment size is fixed when the store is created */
        db->opts.segment_bytes = db->log.segs[db->log.nsegs - 1]->cap;
    if (db->log.nsegs == 0) {
        annal__seg *s;
        r = annal__log_add(&db->log, 0, 0, db->opts.segment_bytes, &s);
        if (r < 0)
            return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                               "cannot create the first segment: %s", strerror(-r));
    }
    uint64_t seg = 0, off = 0;
    rc = annal__catch_up(db, &seg, &off);
    if (rc != ANNAL_OK) return rc;
    annal__index_headroom(&db->idx);
    db->wseg = annal__log_seg(&db->log, seg);
    db->woff = off;
    rc = annal__ids_start_merger(db->ids, &db->idx, db->idx.meta);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot start the id index's merger");
    /* Preallocation off the append path. Not with a replaced io table: tests that inject
     * faults count on seeing every operation from the writer, in order. */
    if (db->io == annal__io_posix() && annal__log_start_grower(&db->log) < 0)
        return annal__fail(db, ANNAL_ENOMEM, "cannot start the log's preallocation thread");
    annal__log_grow_hint(&db->log, db->wseg, db->woff);
    __atomic_store_n(&db->visible, db->head.next_pos, __ATOMIC_RELEASE);
    /* The log as recovered is durable (catch-up read it back; a torn tail was cut and
     * flushed): it is the mark to compare against from now on. */
    if (db->head.next_pos > mark && (r = annal__acked_write(&db->acked, db->head.next_pos)) < 0)
        return annal__fail(db, ANNAL_EIO, "cannot write %s/acked: %s", db->dir, strerror(-r));
    if (!(db->opts.flags & ANNAL_OPEN_NOSYNC) && annal__acked_start(db) < 0)
        return annal__fail(db, ANNAL_ENOMEM, "cannot start the acknowledged-mark thread");
    return ANNAL_OK;
}

static annal_err open_reader(annal_db *db) {
    char boot[40], detail[512] = "";
    annal__boot_id(boot);
    annal__index_state st;
    annal_err rc = annal__index_state_read(db->index_dir, &st);
    if (rc == ANNAL_ENOTFOUND) return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
    if (rc != ANNAL_OK || (!st.clean && strcmp(st.boot_id, boot) != 0))
        return annal__fail(db, ANNAL_ECORRUPT,
                           "%s was not closed cleanly before a restart: "
                           "open it for writing once to recover it",
                           db->dir);
    rc = annal__index_open(&db->idx, db->index_dir, 1, 0, db->opts.index_map_bytes, detail,
                           sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    /* An index of another layout would be misread: only a writer rebuilds it. */
    MDB_txn *t = NULL;
    annal__index_head h;
    if ((rc = annal__read_txn(db, &t)) != ANNAL_OK) return rc;
    rc = annal__index_head_get(t, &db->idx, &h);
    annal__txn_abort(&db->idx, t);
    if (rc != ANNAL_OK && h.version != 0 && h.version != ANNAL__INDEX_VERSION)
        return annal__fail(db, ANNAL_EVERSION,
                           "the index of %s has layout %" PRIu64 " (this annal reads %d): open "
                           "the store for writing once, or run `annal rebuild-index`, to "
                           "rebuild it",
                           db->dir, h.version, ANNAL__INDEX_VERSION);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc,
                           "the index head of %s is unreadable: open the store for "
                           "writing once to rebuild it",
                           db->dir);
    /* Never serve an index that is behind the log as if it were the whole store. */
    if ((rc = annal__read_txn(db, &t)) != ANNAL_OK) return rc;
    int behind = annal__index_behind(t, &db->idx);
    annal__txn_abort(&db->idx, t);
    if (behind)
        return annal__fail(db, ANNAL_EBUSY,
                           "the index of %s is being rebuilt from the log (or that was "
                           "interrupted): wait for the writer, or open the store for writing "
                           "once to finish it",
                           db->dir);
    rc = annal__log_open(&db->log, db->io, db->dir, 1, 0, detail, sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    return ANNAL_OK;
}

/* A failed system call on the store's directory, with the code its errno deserves. */
static annal_err fail_errno(annal_db *db, int e, const char *what, const char *path) {
    annal_err code = e == EACCES || e == EPERM ? ANNAL_EPERM
                     : e == ENOTDIR            ? ANNAL_EINVAL
                     : e == ENOSPC             ? ANNAL_ENOSPC
                     : e == EROFS              ? ANNAL_EREADONLY
                     : e == ENOENT             ? ANNAL_ENOTFOUND
                                               : ANNAL_EIO;
    return annal__fail(db, code, "cannot %s %s: %s", what, path, strerror(e));
}

/* 1 if dir/name exists, 0 if not, else -errno. */
static int has_entry(const char *dir, const char *name) {
    char path[4096 + 16];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (stat(path, &st) == 0) return 1;
    return errno == ENOENT ? 0 : -errno;
}

/* May db->dir be opened as a store? A missing directory is made with ANNAL_OPEN_CREATE
 * (writers only). An existing one must hold a store (its log/ or index/: a writer
 * rebuilds a deleted index) or, to become one, be empty but for a lock file left by an
 * interrupted creation: pointed at a directory of other files (ANNAL_DATA=/), a writer
 * refuses rather than adding a store to it. */
static annal_err probe_dir(annal_db *db, unsigned flags) {
    int create = (flags & ANNAL_OPEN_CREATE) && !db->readonly;
    struct stat st;
    if (stat(db->dir, &st) < 0) {
        int e = errno;
        if (e == ENOENT && !create)
            return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
        if (e != ENOENT) return fail_errno(db, e, "access", db->dir);
        return mkdir(db->dir, 0755) == 0 ? ANNAL_OK : fail_errno(db, errno, "create", db->dir);
    }
    if (!S_ISDIR(st.st_mode))
        return annal__fail(db, ANNAL_EINVAL, "%s is not a directory", db->dir);
    int idx = has_entry(db->dir, "index"), log = idx < 0 ? 0 : has_entry(db->dir, "log");
    if (idx < 0 || log < 0) return fail_errno(db, idx < 0 ? -idx : -log, "access", db->dir);
    if (idx || (log && !db->readonly)) return ANNAL_OK;
    if (!create) return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
    DIR *d = opendir(db->dir);
    if (!d) return fail_errno(db, errno, "read", db->dir);
    const char *other = NULL;
    for (struct dirent *e; !other && (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock"))
            other = e->d_name;
    annal_err rc = ANNAL_OK;
    if (other)
        rc = annal__fail(db, ANNAL_EINVAL,
                         "%s is not empty (it holds %s) and is not a store: refusing to make it "
                         "one; use a new or empty directory",
                         db->dir, other);
    closedir(d);
    return rc;
}

/* Shared by annal_db_open, annal_recover_accept_loss and the tests, which pass a
 * fault-injecting io table. */
static annal_err db_open(const char *dir, const annal_db_opts *opts, const annal__io *io,
                         int accept_loss, annal_db **out) {
    if (!dir || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK || check_opts(&o) != ANNAL_OK) return ANNAL_EINVAL;
    annal_db *db = calloc(1, sizeof *db);
    if (!db) return ANNAL_ENOMEM;
    db->opts = o;
    db->io = io;
    db->lock_fd[0] = db->lock_fd[1] = -1;
    db->acked.fd = -1;
    db->accept_loss = accept_loss;
    db->readonly = (o.flags & ANNAL_OPEN_READONLY) != 0;
    db->rng = annal__rng_seed();
    pthread_mutex_init(&db->errmu, NULL);
    pthread_mutex_init(&db->wmu, NULL);
    pthread_mutex_init(&db->compact_mu, NULL);
    pthread_cond_init(&db->wcv, NULL);
    size_t n = strlen(dir) + 8;
    db->dir = strdup(dir);
    db->index_dir = malloc(n);
    if (!db->dir || !db->index_dir) {
        annal_db_close(db);
        return ANNAL_ENOMEM;
    }
    snprintf(db->index_dir, n, "%s/index", dir);
    annal_err rc = probe_dir(db, o.flags);
    if (rc != ANNAL_OK) goto fail;
    rc = db->readonly ? open_reader(db) : open_writer(db);
    if (rc != ANNAL_OK) goto fail;
    annal__notify_open(db); /* failure only degrades waits to short sleeps */
    *out = db;
    return ANNAL_OK;
fail:
    if (db->opts.log && rc != ANNAL_ENOTFOUND) {
        pthread_mutex_lock(&db->errmu);
        annal__errslot *s = errslot(db, 0);
        char generic[128];
        snprintf(generic, sizeof generic, "cannot open %s: %s", dir, annal_strerror(rc));
        db->opts.log(db->opts.log_ctx, ANNAL_LOG_ERROR, s && s->msg[0] ? s->msg : generic);
        pthread_mutex_unlock(&db->errmu);
    }
    annal_db_close(db);
    return rc;
}

annal_err annal__db_open_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            annal_db **out) {
    return db_open(dir, opts, io, 0, out);
}

annal_err annal_db_open(const char *dir, const annal_db_opts *opts, annal_db **out) {
    if (dir && out && annal__backup_incomplete(dir)) { /* a copy cut short (store/backup.c) */
        *out = NULL;
        if (opts && opts->struct_size >= offsetof(annal_db_opts, log_ctx) + sizeof(void *) &&
            opts->log) {
            char m[4200];
            snprintf(m, sizeof m, "%s is a backup or restore that did not finish: not a store",
                     dir);
            opts->log(opts->log_ctx, ANNAL_LOG_ERROR, m);
        }
        return ANNAL_ECORRUPT;
    }
    return db_open(dir, opts, annal__io_posix(), 0, out);
}

annal_err annal__recover_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            uint64_t *lost_from, uint64_t *lost_count) {
    if (!dir) return ANNAL_EINVAL;
    if (lost_from) *lost_from = 0;
    if (lost_count) *lost_count = 0;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK) return ANNAL_EINVAL;
    struct stat st;
    char logdir[4096];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    if (stat(logdir, &st) < 0 || !S_ISDIR(st.st_mode)) return ANNAL_ENOTFOUND;
    o.flags &= ~ANNAL_OPEN_READONLY;
    o.flags |= ANNAL_OPEN_CREATE; /* (of the index, when it was lost too) */
    annal_db *db = NULL;
    annal_err rc = db_open(dir, &o, io, 1, &db);
    if (rc == ANNAL_OK && lost_from) *lost_from = db->lost_from;
    if (rc == ANNAL_OK && lost_count) *lost_count = db->lost_to - db->lost_from;
    annal_db_close(db);
    return rc;
}

annal_err annal_recover_accept_loss(const char *dir, const annal_db_opts *opts, uint64_t *lost_from,
                                    uint64_t *lost_count) {
    return annal__recover_io(dir, opts, annal__io_posix(), lost_from, lost_count);
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

void annal_db_close(annal_db *db) {
    if (!db) return;
    if (!db->readonly && db->wseg && (db->opts.flags & ANNAL_OPEN_NOSYNC))
        annal_db_sync(db); /* a non-durable handle becomes durable at close */
    if (db->ids) annal__ids_stop_merger(db->ids); /* before the run list is touched */
    /* The thread stops first: the last mark is ours. (A NOSYNC handle's visible events
     * are durable only if annal_db_sync, above, succeeded: it wrote the mark then.) */
    annal__acked_close(&db->acked);
    if (!db->readonly && db->wseg && !(db->opts.flags & ANNAL_OPEN_NOSYNC))
        (void)annal__acked_write(&db->acked, __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE));
    annal__acked_release(&db->acked);
    int clean = !db->readonly && db->idx.env && db->failed == ANNAL_OK;
    /* A big memtable is written out so that the next open need not reread its events
     * from the log; a small one is cheaper to reread than a run per open/close cycle. */
    if (clean && db->ids && annal__ids_mem_count(db->ids) >= db->opts.id_cache_events / 16)
        annal__flush_ids(db);
    if (clean && db->ids && annal__ids_sync(db->ids) < 0) clean = 0;
    if (clean && annal__index_sync(&db->idx) == 0) {
        annal__index_state st = {1, {0}};
        annal__boot_id(st.boot_id);
        annal__index_state_write(db->index_dir, &st);
    }
    annal__notify_close(db);
    annal__ids_close(db->ids);
    annal__batch_free(&db->batch);
    if (db->idx.env) annal__index_close(&db->idx);
    if (db->log.dir) annal__log_close(&db->log);
    for (int i = 0; i < 2; i++)
        if (db->lock_fd[i] >= 0) close(db->lock_fd[i]); /* releases the flocks */
    while (db->errs) {
        annal__errslot *s = db->errs;
        db->errs = s->next;
        free(s);
    }
    free(db->buf);
    free(db->dir);
    free(db->index_dir);
    pthread_mutex_destroy(&db->errmu);
    pthread_mutex_destroy(&db->wmu);
    pthread_mutex_destroy(&db->compact_mu);
    pthread_cond_destroy(&db->wcv);
    free(db);
}

annal_err annal_rebuild_index(const char *dir, const annal_db_opts *opts) {
    if (!dir) return ANNAL_EINVAL;
    struct stat st;
    char logdir[4096];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    if (stat(logdir, &st) < 0 || !S_ISDIR(st.st_mode)) return ANNAL_ENOTFOUND;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK) return ANNAL_EINVAL;
    o.flags &= ~(ANNAL_OPEN_READONLY | ANNAL_OPEN_CREATE);
    /* Hold the writer lock while the index files are removed, then let a normal open
     * index the whole log. */
    int fd[2] = {-1, -1};
    char msg[4200];
    annal_err rc = lock_dir(dir, fd, msg, sizeof msg);
    char idir[4096];
    snprintf(idir, sizeof idir, "%s/index", dir);
    if (rc == ANNAL_OK && annal__index_in_use(idir)) rc = ANNAL_EBUSY; /* a handle here */
    if (rc == ANNAL_OK && annal__index_remove(idir) < 0) rc = ANNAL_EIO;
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0) close(fd[i]);
    if (rc != ANNAL_OK) return rc;
    /* A race with another writer opening between the two steps is harmless: it would
     * rebuild the index itself, and our open then waits for nothing but fails EBUSY. */
    annal_db *db = NULL;
    rc = annal_db_open(dir, &o, &db);
    annal_db_close(db);
    return rc;
}

static annal_err info_get(annal_db *db, annal_db_info *out) {
    memset(out, 0, sizeof *out);
    MDB_txn *t;
    annal_err rc = annal__read_txn(db, &t);
    if (rc != ANNAL_OK) return rc;
    annal__index_head h;
    rc = annal__index_head_get(t, &db->idx, &h);
    if (rc == ANNAL_OK)
        rc = annal__index_system_streams(t, &db->idx, &out->system_streams, &out->system_events);
    MDB_stat ms;
    mdb_env_stat(db->idx.env, &ms);
    annal__txn_abort(&db->idx, t);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot read the index head");
    out->events = db->readonly ? h.next_pos : annal__visible(db, NULL);
    out->streams = h.streams;
    out->last_ns = h.last_ns;
    out->readonly = db->readonly;
    if (h.next_pos > 0) {
        /* Used bytes: the tail offset of the last segment plus the sizes of the ones
         * before it (an upper bound for those: they end in zeros when sealed early). */
        uint64_t seg = ANNAL__LOC_SEG(h.next_loc);
        out->log_bytes = ANNAL__LOC_OFF(h.next_loc);
        for (uint64_t s = db->log.base; s < seg; s++) {
            annal__seg *sp = annal__log_seg(&db->log, s);
            if (sp) out->log_bytes += __atomic_load_n(&sp->size, __ATOMIC_ACQUIRE);
        }
        annal__log_seg(&db->log, seg); /* a read-only handle learns of new segments */
    }
    pthread_mutex_lock(&db->log.mu);
    out->segments = db->log.nsegs;
    for (size_t i = 0; i < db->log.nsegs; i++) {
        annal__seg *sp = db->log.segs[i];
        uint64_t sz = __atomic_load_n(&sp->size, __ATOMIC_ACQUIRE); /* sealed: final */
        if (sp->fd >= 0) db->io->size(db->io->ctx, sp->fd, &sz);
        out->disk_bytes += sz;
    }
    pthread_mutex_unlock(&db->log.mu);
    struct stat st;
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", db->index_dir);
    if (stat(path, &st) == 0) out->index_bytes = (uint64_t)st.st_blocks * 512;
    DIR *d = opendir(db->index_dir); /* and the event-id runs beside it */
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "ids-", 4) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", db->index_dir, e->d_name);
        if (stat(path, &st) == 0) out->index_bytes += (uint64_t)st.st_blocks * 512;
    }
    if (d) closedir(d);
    out->disk_bytes += out->index_bytes;
    return ANNAL_OK;
}

annal_err annal_db_info_get_sized(annal_db *db, annal_db_info *out, size_t out_size) {
    if (!db || !out) return ANNAL_EINVAL;
    annal_db_info full;
    annal_err rc = info_get(db, &full);
    if (rc == ANNAL_OK) annal__out_copy(out, out_size, &full, sizeof full);
    return rc;
}
