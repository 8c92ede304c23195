/* annal_verify: read every record of every segment and check it (checksum, position
 * sequence, batch framing), then check that the index agrees with the log. It opens
 * files read-only and takes no lock, so it can run beside a writer. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

typedef struct vctx {
    annal_damage_fn found;
    void *ctx;
    uint64_t problems;
    int canceled; /* the progress callback asked to stop */
} vctx;

static void report(vctx *v, uint64_t seg, uint64_t off, uint64_t pos, const char *stream,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void report(vctx *v, uint64_t seg, uint64_t off, uint64_t pos, const char *stream,
                   const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    v->problems++;
    if (v->found) {
        annal_damage d = {seg, off, pos, stream, what};
        v->found(v->ctx, &d);
    }
}

/* Are the bytes of seg from off to its known end all zero? */
static int zeros_from(annal__seg *s, uint64_t off) {
    uint64_t end = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
    for (; off < end; off++)
        if (s->map[off]) return 0;
    return 1;
}

/* Walk the log; returns the number of whole events found (the log's head). With a
 * writer at work, an unfinished append at or past `acked` is in flight, not torn. */
static uint64_t check_log(annal__log *log, vctx *v, const annal_db_opts *o, uint64_t acked,
                          int writer) {
    uint64_t pos = 0, events = 0;
    for (size_t i = 0; i < log->nsegs; i++) {
        annal__seg *s = log->segs[i];
        int last = i + 1 == log->nsegs;
        if (s->first_pos != pos)
            report(v, s->no, 0, pos, NULL,
                   "segment starts at position %" PRIu64 " but the previous one ended at %" PRIu64,
                   s->first_pos, pos);
        pos = s->first_pos;
        annal__cursor c = {log, s, ANNAL__SEG_HDR, pos};
        for (;;) {
            annal__cursor start = c;
            annal_event ev;
            annal__rec_info info;
            annal__cursor probe = c;
            annal__cursor_settle(&probe);
            if (probe.seg != s) break; /* clean end of this segment */
            annal_err rc = annal__cursor_next(&c, &ev, &info, NULL);
            if (rc == ANNAL_END) {
                events = c.pos; /* past a trailing hole, if any */
                if (c.seg != s) c.pos = log->segs[i + 1]->first_pos; /* as above */
                break;
            }
            if (rc == ANNAL_OK && c.seg != s) { /* s ended in a hole; this is a later one's */
                /* (the cursor may have crossed whole segments of holes: s ends where the
                 * next one starts, which the cursor checked) */
                c = start;
                c.pos = events = log->segs[i + 1]->first_pos;
                break;
            }
            int ok = rc == ANNAL_OK && info.batch_index == 0;
            uint32_t n = ok ? info.batch_count : 0;
            for (uint32_t k = 1; ok && k < n; k++) {
                rc = annal__cursor_next(&c, &ev, &info, NULL);
                ok = rc == ANNAL_OK && c.seg == s && info.batch_index == k && info.batch_count == n;
            }
            if (ok) {
                events = c.pos;
                if (o->progress && events % 100000 < n && o->progress(o->progress_ctx, events, 0)) {
                    v->canceled = 1;
                    return events;
                }
                continue;
            }
            c = start;
            if (last && writer && c.pos >= acked) break; /* being written right now */
            if (last && zeros_from(s, c.off + 8)) {
                report(v, s->no, c.off, c.pos, NULL,
                       "torn tail: an unfinished append left by a "
                       "crash (never acknowledged; the next writer open removes it)");
            } else {
                annal_event e2;
                annal__rec_info i2;
                uint64_t end = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE); /* never past EOF */
                if (end > s->cap) end = s->cap;
                int dec = c.off < end && annal__rec_decode(s->map + c.off, (size_t)(end - c.off),
                                                           &e2, &i2) == ANNAL_OK;
                report(v, s->no, c.off, c.pos, dec ? e2.stream : NULL,
                       dec ? "record out of sequence or part of an incomplete batch"
                           : "damaged record: checksum or framing is wrong");
            }
            break;
        }
        pos = c.pos;
    }
    return events;
}

/* The id runs as t names them, or, when a writer merged some away since t was taken,
 * as a newer snapshot names them: they cover every event of t and more. */
static annal_err load_ids(annal_db *db, MDB_txn *t, uint64_t upto, annal__ids **ids, char *detail,
                          size_t dlen) {
    annal_err rc = annal__ids_load(db, t, upto, ids, detail, dlen);
    /* (a writer merging constantly, with a tiny memtable, can win a few times in a row) */
    for (int tries = 0; rc == ANNAL_ENOTFOUND && tries < 100; tries++) {
        MDB_txn *t2;
        annal__index_head h2;
        if (annal__read_txn(db, &t2) != ANNAL_OK) break;
        if (annal__index_head_get(t2, &db->idx, &h2) == ANNAL_OK && h2.next_pos >= upto)
            rc = annal__ids_load(db, t2, h2.next_pos, ids, detail, dlen);
        annal__txn_abort(&db->idx, t2);
    }
    return rc;
}

/* Did the lookup of a block holding an event fail, or does the block not name the
 * event's location though it is its first member? */
static int block_bad(annal_err rc, const annal__block *b, uint64_t pos, uint64_t loc) {
    return rc != ANNAL_OK || (annal__block_first(b) == pos && b->loc != loc);
}

/* Compare the index snapshot t (head h, taken before the log was walked) with the log. */
static void check_index(annal_db *db, vctx *v, MDB_txn *t, annal__index_head h,
                        uint64_t log_events) {
    if (h.next_pos > log_events)
        report(v, 0, 0, log_events, NULL,
               "index covers %" PRIu64 " events but the log holds "
               "only %" PRIu64 " whole events",
               h.next_pos, log_events);
    annal__ids *ids = NULL;
    char detail[512] = "";
    if (h.version != ANNAL__INDEX_VERSION)
        report(v, 0, 0, UINT64_MAX, NULL,
               "index has an older layout (%" PRIu64 "): the next writer open rebuilds it",
               h.version);
    else if (load_ids(db, t, h.next_pos, &ids, detail, sizeof detail) != ANNAL_OK ||
             annal__ids_check(ids, detail, sizeof detail) != ANNAL_OK)
        report(v, 0, 0, UINT64_MAX, NULL, "index: %s (run `annal rebuild-index`)", detail);
    annal__seg *first = db->log.nsegs ? db->log.segs[0] : NULL;
    if (first && h.next_pos > 0) {
        annal__cursor c = {&db->log, first, ANNAL__SEG_HDR, first->first_pos};
        annal_event ev;
        annal__rec_info info;
        uint64_t loc;
        uint64_t bad = 0;
        while (c.pos < h.next_pos && annal__cursor_next(&c, &ev, &info, &loc) == ANNAL_OK) {
            annal__stream_rec sr;
            annal__block b;
            uint64_t p, l;
            const char *why = NULL;
            if (annal__index_stream_get(t, &db->idx, ev.stream, ev.stream_len, &sr) != ANNAL_OK)
                why = "stream missing from the index";
            else if (ev.revision >= sr.count)
                why = "revision beyond the stream's head in the index";
            else if (block_bad(annal__index_rev_block(t, &db->idx, sr.id, ev.revision, &b), &b,
                               ev.position, loc) ||
                     b.first_pos + (ev.revision - b.first_rev) != ev.position)
                why = "revision entry missing or wrong";
            else if (ids && (annal__ids_get(ids, &ev.id, &p, &l) != ANNAL_OK || p != ev.position))
                why = "event id entry missing or wrong";
            else if (ev.position % ANNAL__POS_STRIDE == 0 &&
                     (annal__index_pos_floor(t, &db->idx, ev.position, &p, &l) != ANNAL_OK ||
                      p != ev.position || l != loc))
                why = "position entry missing or wrong";
            else if (block_bad(annal__index_tag_block(t, db->idx.cats, ev.stream,
                                                      annal__category_len(ev.stream, ev.stream_len),
                                                      ev.position, &b),
                               &b, ev.position, loc))
                why = "category entry missing or wrong";
            else if (block_bad(annal__index_tag_block(t, db->idx.types, ev.type, ev.type_len,
                                                      ev.position, &b),
                               &b, ev.position, loc))
                why = "event type entry missing or wrong";
            for (const char *tg = NULL; !why && annal_event_tag_next(&ev, &tg);)
                if (block_bad(
                        annal__index_tag_block(t, db->idx.tags, tg, strlen(tg), ev.position, &b),
                        &b, ev.position, loc))
                    why = "tag entry missing or wrong";
            if (why && bad++ < 100)
                report(v, ANNAL__LOC_SEG(loc), ANNAL__LOC_OFF(loc), ev.position, ev.stream,
                       "index: %s (run `annal rebuild-index`)", why);
        }
        if (bad > 100)
            report(v, 0, 0, UINT64_MAX, NULL, "index: %" PRIu64 " more wrong entries", bad - 100);
    }
    annal__ids_close(ids);
}

/* Is a writer holding the store? (Its flock on DIR/lock.) */
static int writer_active(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    int busy = flock(fd, LOCK_SH | LOCK_NB) < 0;
    close(fd);
    return busy;
}

annal_err annal_verify(const char *dir, const annal_db_opts *opts, annal_damage_fn found,
                       void *ctx) {
    if (!dir) return ANNAL_EINVAL;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK) return ANNAL_EINVAL;
    vctx v = {found, ctx, 0, 0};
    annal__log log;
    char detail[512] = "";
    annal_err rc = annal__log_open(&log, annal__io_posix(), dir, 1, 0, detail, sizeof detail);
    if (rc == ANNAL_ENOTFOUND) {
        annal__log_close(&log);
        return ANNAL_ENOTFOUND;
    }
    if (rc != ANNAL_OK) {
        /* Only what the files say is damage; a file we may not open says nothing. */
        if (rc == ANNAL_ECORRUPT || rc == ANNAL_EVERSION)
            report(&v, 0, 0, UINT64_MAX, NULL, "%s", detail);
        else if (o.log)
            o.log(o.log_ctx, ANNAL_LOG_ERROR, detail);
        annal__log_close(&log);
        return rc == ANNAL_ECORRUPT || rc == ANNAL_EVERSION ? ANNAL_ECORRUPT : rc;
    }
    /* The index snapshot comes first: everything it covers was flushed to the log
     * before it was committed, so the walk that follows must find at least that much. */
    annal_db_opts ro = o;
    ro.flags = ANNAL_OPEN_READONLY;
    ro.progress = NULL;
    annal_db *db = NULL;
    MDB_txn *t = NULL;
    annal__index_head h;
    memset(&h, 0, sizeof h);
    int writer = writer_active(dir);
    rc = annal_db_open(dir, &ro, &db);
    if (rc == ANNAL_EPERM) { /* not damage: this user cannot open the index (its detail
                              * went to o.log) */
        annal__log_close(&log);
        return rc;
    }
    if (rc == ANNAL_OK && annal__read_txn(db, &t) != ANNAL_OK) t = NULL;
    if (t && annal__index_head_get(t, &db->idx, &h) != ANNAL_OK) {
        report(&v, 0, 0, UINT64_MAX, NULL, "index head is damaged: run `annal rebuild-index`");
        annal__txn_abort(&db->idx, t);
        t = NULL;
    }
    uint64_t events = check_log(&log, &v, &o, t ? h.next_pos : 0, writer);
    annal__log_close(&log);
    if (v.canceled) {
        if (t) annal__txn_abort(&db->idx, t);
        annal_db_close(db);
        return ANNAL_ECANCELED;
    }
    if (t) {
        check_index(db, &v, t, h, events);
        annal__txn_abort(&db->idx, t);
    } else if (rc != ANNAL_OK) {
        report(&v, 0, 0, UINT64_MAX, NULL,
               "index cannot be opened (%s): the next writer open or "
               "`annal rebuild-index` rebuilds it",
               annal_strerror(rc));
    }
    annal_db_close(db);
    if (o.progress) o.progress(o.progress_ctx, events, events);
    return v.problems ? ANNAL_ECORRUPT : ANNAL_OK;
}
