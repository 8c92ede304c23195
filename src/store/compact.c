/* Compaction: rewrite a sealed segment without the events that stream metadata has made
 * invisible (deleted, truncated, expired), as its next generation. Surviving events keep
 * their bytes and positions; each run of erased events becomes one hole record, so every
 * position stays accounted for. Order of work, so that a crash anywhere leaves a store
 * that reopens whole (db.c: settle_compaction):
 *   1. write generation G+1 under a tmp name and flush it and the directory;
 *   2. record "compacting S to G+1" in the index, flushed;
 *   3. move the index entries of survivors to their new locations and drop those of
 *      erased events, in bounded transactions (appends run in between);
 *   4. record generation G+1 for S and clear the marker, flushed;
 *   5. rename the tmp file into place, delete generation G.
 * A crash after 2 and before 4 makes the next open finish the rename and rebuild the
 * index from the log; before 2 the tmp file is dropped; after 4 the rename is finished.
 * The active (last) segment is never compacted. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/base.h"
#include "store/db_int.h"

/* Events whose index entries are moved per transaction: the pages a transaction may
 * copy are allocated first (annal__index_need: 24 KiB an event), so not too many. */
#define TXN_EVENTS 2048
#define WBUF       (1u << 20)

typedef struct plan_ev {
    uint64_t pos, oldloc, newloc; /* newloc 0: erased */
    uint64_t sid;                 /* stream id */
} plan_ev;

typedef struct plan {
    plan_ev *ev;
    size_t n, cap;
    uint64_t erased, kept;
} plan;

static int plan_push(plan *p, plan_ev e) {
    if (p->n == p->cap) {
        size_t c = p->cap ? p->cap * 2 : 4096;
        plan_ev *q = realloc(p->ev, c * sizeof *q);
        if (!q) return -1;
        p->ev = q;
        p->cap = c;
    }
    p->ev[p->n++] = e;
    return 0;
}

/* May this event go? Invisible now, and not what keeps its stream's revision: a
 * stream's last event stays unless the stream is soft-deleted (its metadata then keeps
 * the revision) or it is the tombstone itself. */
static int erasable(const annal__stream_rec *sr, const annal_event *ev, int64_t now) {
    if (annal__event_visible(sr, ev->revision, ev->timestamp_ns, now)) return 0;
    if (ev->revision + 1 == sr->count && !(sr->flags & ANNAL__SR_DELETED)) return 0;
    return 1;
}

static void throttle(uint64_t bytes, uint64_t bytes_per_s, int64_t start_ns) {
    if (!bytes_per_s) return;
    int64_t due = start_ns + (int64_t)(bytes * 1000000000.0 / (double)bytes_per_s);
    int64_t now = annal__mono_ns();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000000000), (long)((due - now) % 1000000000)};
        nanosleep(&ts, NULL);
    }
}

typedef struct writer {
    annal_db *db;
    int fd;
    uint8_t *buf;
    size_t bl;
    uint64_t off;     /* file offset of buf[0] */
    uint64_t written; /* for the throttle */
    uint64_t bytes_per_s;
    int64_t start;
} writer;

static int w_flush(writer *w) {
    if (!w->bl) return 0;
    int r = annal__io_write_all(w->db->io, w->fd, w->buf, w->bl, w->off);
    w->off += w->bl;
    w->written += w->bl;
    w->bl = 0;
    throttle(w->written, w->bytes_per_s, w->start);
    return r;
}

/* Room for n more bytes in the buffer; returns where they go. */
static uint8_t *w_room(writer *w, size_t n, int *err) {
    if (w->bl + n > WBUF && (*err = w_flush(w)) < 0) return NULL;
    return w->buf + w->bl;
}

static int emit_hole(writer *w, uint64_t *hole_from, uint64_t hole_to) {
    if (*hole_from == hole_to) return 0;
    int err = 0;
    uint8_t *p = w_room(w, ANNAL__REC_HDR, &err);
    if (!p) return err;
    annal__hole_encode(*hole_from, hole_to - *hole_from, p);
    w->bl += ANNAL__REC_HDR;
    *hole_from = hole_to;
    return 0;
}

/* Plan the compaction of s (whose successor starts at end_pos): what each of its events
 * becomes, in pl. */
static annal_err plan_segment(annal_db *db, annal__seg *s, uint64_t end_pos, plan *pl) {
    MDB_txn *t = NULL;
    annal_err rc = annal__read_txn(db, &t);
    if (rc != ANNAL_OK) return rc;
    int live = 1; /* t is active */
    int64_t now = annal__now_ns();
    annal__cursor c = {&db->log, s, ANNAL__SEG_HDR, s->first_pos};
    /* Plan: walk s with the cursor; it steps over holes already there. */
    char last_name[ANNAL_MAX_NAME + 1] = "";
    size_t last_len = SIZE_MAX;
    annal__stream_rec sr;
    while (c.pos < end_pos) {
        annal_event ev;
        annal__rec_info info;
        uint64_t loc;
        rc = annal__cursor_next(&c, &ev, &info, &loc);
        if (rc == ANNAL_END || (rc == ANNAL_OK && ev.position >= end_pos)) {
            rc = ANNAL_OK;
            break;
        }
        if (rc != ANNAL_OK) {
            rc = annal__fail(db, rc,
                             "damaged record in segment %016" PRIx64 " near position %" PRIu64,
                             s->no, c.pos);
            break;
        }
        if (ev.stream_len != last_len || memcmp(ev.stream, last_name, ev.stream_len) != 0) {
            annal__txn_reset(&db->idx, t); /* a fresh snapshot for each stream */
            live = 0;
            if (annal__txn_renew(&db->idx, t) != 0) {
                rc = ANNAL_EIO;
                break;
            }
            live = 1;
            rc = annal__index_stream_get(t, &db->idx, ev.stream, ev.stream_len, &sr);
            if (rc != ANNAL_OK) {
                rc = annal__fail(db, ANNAL_ECORRUPT,
                                 "stream %s of position %" PRIu64 " is not in the index", ev.stream,
                                 ev.position);
                break;
            }
            memcpy(last_name, ev.stream, ev.stream_len);
            last_len = ev.stream_len;
        }
        int go = erasable(&sr, &ev, now);
        if (plan_push(pl, (plan_ev){ev.position, loc, go ? 0 : 1, sr.id}) < 0) {
            rc = ANNAL_ENOMEM;
            break;
        }
        if (go)
            pl->erased++;
        else
            pl->kept++;
    }
    if (live)
        annal__txn_abort(&db->idx, t);
    else
        annal__txn_free(t);
    return rc;
}

/* Write the next generation of s to tmp as pl says: survivors re-encoded as batches of
 * one (their batches lost members), runs of erased positions (new or from earlier
 * compactions) as holes. Sets each survivor's new location. */
static annal_err write_survivors(annal_db *db, annal__seg *s, uint64_t end_pos, const char *tmp,
                                 uint64_t bytes_per_s, plan *pl) {
    writer w = {db, -1, malloc(WBUF), 0, 0, 0, bytes_per_s, annal__mono_ns()};
    if (!w.buf) return ANNAL_ENOMEM;
    int r = 0;
    w.fd = db->io->open(db->io->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (w.fd < 0) r = w.fd;
    annal__seg_hdr h = {ANNAL__FORMAT, s->no, s->first_pos, s->cap, annal__now_ns(), s->gen + 1};
    if (r == 0) {
        annal__seg_hdr_encode(&h, w.buf);
        w.bl = ANNAL__SEG_HDR;
    }
    uint64_t hole_from = s->first_pos;
    for (size_t i = 0; r == 0 && i < pl->n; i++) {
        plan_ev *pe = &pl->ev[i];
        if (!pe->newloc) continue; /* joins the hole */
        if ((r = emit_hole(&w, &hole_from, pe->pos)) < 0) break;
        annal_event ev;
        annal__rec_info info;
        if (annal__log_read_at(&db->log, pe->oldloc, pe->pos, &ev, &info) != ANNAL_OK) {
            r = -EIO;
            break;
        }
        uint8_t *p = w_room(&w, info.len, &r);
        if (!p) break;
        pe->newloc = ANNAL__LOCG(s->gen + 1, s->no, w.off + w.bl);
        w.bl += annal__rec_encode(&ev, 0, 1, ev.position, p);
        hole_from = pe->pos + 1;
    }
    if (r == 0) r = emit_hole(&w, &hole_from, end_pos);
    if (r == 0) r = w_flush(&w);
    if (r == 0) r = db->io->sync(db->io->ctx, w.fd);
    if (w.fd >= 0) db->io->close(db->io->ctx, w.fd);
    free(w.buf);
    if (r == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/log", db->dir);
        r = db->io->sync_dir(db->io->ctx, dir);
    }
    if (r < 0) {
        db->io->unlink(db->io->ctx, tmp);
        return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                           "compaction of segment %016" PRIx64 " failed: %s", s->no, strerror(-r));
    }
    return ANNAL_OK;
}

/* Steps 1 (write) for segment s: fills pl; *nothing = 1 when no event can go. */
static annal_err rewrite(annal_db *db, annal__seg *s, const char *tmp, uint64_t bytes_per_s,
                         plan *pl, int *nothing) {
    annal__seg *next = annal__log_seg(&db->log, s->no + 1);
    if (!next) return annal__fail(db, ANNAL_EINVAL, "segment %016" PRIx64 " is not sealed", s->no);
    uint64_t end_pos = next->first_pos; /* s holds positions [first_pos, end_pos) */
    annal_err rc = plan_segment(db, s, end_pos, pl);
    if (rc != ANNAL_OK) return rc;
    *nothing = pl->erased == 0;
    if (*nothing) return ANNAL_OK;
    return write_survivors(db, s, end_pos, tmp, bytes_per_s, pl);
}

/* Block b after this compaction: members that survive (pl->ev[i] is its first member),
 * loc moved to the first of them; mask 0 if none does. */
static annal__block survivors(const plan *pl, size_t i, const annal__block *b) {
    annal__block nb = *b;
    nb.mask = 0;
    uint64_t end = annal__block_end(b);
    for (size_t j = i; j < pl->n && pl->ev[j].pos < end; j++) {
        uint64_t bit = pl->ev[j].pos - b->first_pos;
        if (!(b->mask >> bit & 1) || !pl->ev[j].newloc) continue;
        if (!nb.mask) nb.loc = pl->ev[j].newloc;
        nb.mask |= 1ull << bit;
    }
    return nb;
}

/* Move or drop the index entries of pl->ev[from, to). A block's entry changes once, when
 * its first member (the event its location names) comes by. */
static annal_err move_entries(annal_db *db, plan *pl, size_t from, size_t to) {
    MDB_txn *t;
    annal_err grc = annal__index_grow(&db->idx, annal__index_need(&db->idx, to - from, 0), 1);
    if (grc != ANNAL_OK)
        return annal__fail(db, grc, "no room for the index: %s", annal_strerror(grc));
    int mrc = annal__txn_begin(&db->idx, 0, &t);
    if (mrc) return annal__fail_index(db, mrc);
    annal__index *idx = &db->idx;
    annal_err rc = ANNAL_OK;
    for (size_t i = from; i < to && rc == ANNAL_OK; i++) {
        plan_ev *pe = &pl->ev[i];
        annal_event ev;
        annal__rec_info info;
        if (annal__log_read_at(&db->log, pe->oldloc, pe->pos, &ev, &info) != ANNAL_OK) {
            rc = ANNAL_ECORRUPT;
            break;
        }
        annal__block b, nb;
        rc = annal__index_rev_block(t, idx, pe->sid, ev.revision, &b);
        if (rc == ANNAL_OK && b.loc == pe->oldloc) {
            nb = survivors(pl, i, &b);
            if (nb.mask) {
                rc = annal__index_rev_put(t, idx, pe->sid, &nb);
            } else { /* the id index keeps the ids: their lookups find the positions erased */
                rc = annal__index_rev_del(t, idx, pe->sid, b.first_rev);
            }
        }
        const char *names[2] = {ev.stream, ev.type};
        size_t lens[2] = {annal__category_len(ev.stream, ev.stream_len), ev.type_len};
        MDB_dbi dbis[2] = {idx->cats, idx->types};
        for (int j = 0; j < 2 && (rc == ANNAL_OK || rc == ANNAL_ENOTFOUND); j++) {
            rc = annal__index_tag_block(t, dbis[j], names[j], lens[j], pe->pos, &b);
            if (rc == ANNAL_OK && b.loc == pe->oldloc) {
                nb = survivors(pl, i, &b);
                rc = annal__index_tag_replace(t, dbis[j], names[j], lens[j], &b, &nb);
            }
        }
        /* Its tags' blocks (DCB), the same way: erased events leave the tag index. */
        for (const char *tg = NULL;
             (rc == ANNAL_OK || rc == ANNAL_ENOTFOUND) && annal_event_tag_next(&ev, &tg);) {
            rc = annal__index_tag_block(t, idx->tags, tg, strlen(tg), pe->pos, &b);
            if (rc == ANNAL_OK && b.loc == pe->oldloc) {
                nb = survivors(pl, i, &b);
                rc = annal__index_tag_replace(t, idx->tags, tg, strlen(tg), &b, &nb);
            }
        }
        if (rc == ANNAL_ENOTFOUND) rc = ANNAL_OK; /* (a missing entry stays missing) */
        if (rc != ANNAL_OK || pe->pos % ANNAL__POS_STRIDE != 0) continue;
        rc = annal__index_pos_move(t, idx, pe->pos, pe->newloc);
    }
    if (rc != ANNAL_OK) {
        annal__txn_abort(&db->idx, t);
        return annal__fail(db, rc, "index: cannot move the entries of compacted events");
    }
    mrc = annal__txn_commit(&db->idx, t);
    return mrc ? annal__fail_index(db, mrc) : ANNAL_OK;
}

/* The marker of step 2 (gen != 0) or its removal with the generation of step 4. */
static annal_err mark(annal_db *db, uint64_t no, uint32_t gen, int done) {
    MDB_txn *t;
    int mrc = annal__txn_begin(&db->idx, 0, &t);
    if (mrc) return annal__fail_index(db, mrc);
    annal_err rc = done ? annal__index_gen_put(t, &db->idx, no, gen) : ANNAL_OK;
    if (rc == ANNAL_OK) rc = annal__index_compacting_put(t, &db->idx, done ? UINT64_MAX : no, gen);
    if (rc != ANNAL_OK) {
        annal__txn_abort(&db->idx, t);
        return annal__fail(db, rc, "index: cannot record the compaction");
    }
    mrc = annal__txn_commit(&db->idx, t);
    if (!mrc) mrc = annal__index_sync(&db->idx);
    return mrc ? annal__fail_index(db, mrc) : ANNAL_OK;
}

/* Points where tests stop a compaction (tests/store/compact_test.c). */
static annal_err fault(annal_db *db, const char *where) {
    int f = db->io->fault(db->io->ctx, where);
    return f < 0 ? annal__fail(db, ANNAL_EIO, "compaction stopped at %s (injected)", where)
                 : ANNAL_OK;
}

static uint64_t disk_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static annal_err compact_segment(annal_db *db, annal__seg *s, uint64_t bytes_per_s,
                                 annal_compact_stats *st) {
    char tmp[4096], fin[4096], old[4096], dir[4096];
    annal__seg_path(&db->log, s->no, s->gen + 1, 1, tmp, sizeof tmp);
    annal__seg_path(&db->log, s->no, s->gen + 1, 0, fin, sizeof fin);
    annal__seg_path(&db->log, s->no, s->gen, 0, old, sizeof old);
    snprintf(dir, sizeof dir, "%s/log", db->dir);
    plan pl = {0};
    int nothing = 0;
    annal_err rc = rewrite(db, s, tmp, bytes_per_s, &pl, &nothing);
    if (rc != ANNAL_OK || nothing) {
        free(pl.ev);
        return rc;
    }
    uint32_t gen = s->gen + 1;
    rc = fault(db, "compact-written");
    if (rc == ANNAL_OK) rc = mark(db, s->no, gen, 0);
    if (rc == ANNAL_OK) rc = fault(db, "compact-marked");
    for (size_t i = 0; rc == ANNAL_OK && i < pl.n; i += TXN_EVENTS) {
        rc = move_entries(db, &pl, i, i + TXN_EVENTS < pl.n ? i + TXN_EVENTS : pl.n);
        if (rc == ANNAL_OK) rc = fault(db, "compact-moved");
    }
    if (rc == ANNAL_OK) rc = mark(db, s->no, gen, 1);
    if (rc == ANNAL_OK) rc = fault(db, "compact-indexed");
    if (rc != ANNAL_OK) {
        /* The index may point into the tmp file: keep it; the next open settles it. */
        free(pl.ev);
        return rc;
    }
    uint64_t before = disk_bytes(old);
    if (annal__log_install(&db->log, s->no, gen, 1) != ANNAL_OK || rename(tmp, fin) < 0 ||
        db->io->sync_dir(db->io->ctx, dir) < 0) {
        free(pl.ev);
        return annal__fail(db, ANNAL_EIO, "cannot put %s in place: %s", fin, strerror(errno));
    }
    rc = fault(db, "compact-renamed");
    if (rc != ANNAL_OK) {
        free(pl.ev);
        return rc;
    }
    db->io->unlink(db->io->ctx, old); /* readers of this process keep their mapping */
    db->io->sync_dir(db->io->ctx, dir);
    uint64_t after = disk_bytes(fin);
    if (st) {
        st->events_erased += pl.erased;
        st->bytes_reclaimed += before > after ? before - after : 0;
    }
    annal__log_msg(db, ANNAL_LOG_INFO,
                   "compacted segment %016" PRIx64 ": %" PRIu64 " events erased, %" PRIu64
                   " kept, %" PRIu64 " KiB freed",
                   s->no, pl.erased, pl.kept, before > after ? (before - after) >> 10 : 0);
    free(pl.ev);
    return ANNAL_OK;
}

static annal_err compact(annal_db *db, uint64_t bytes_per_s, annal_compact_stats *stats) {
    if (!db) return ANNAL_EINVAL;
    if (db->readonly) return annal__fail(db, ANNAL_EREADONLY, "the store is open read-only");
    if (stats) memset(stats, 0, sizeof *stats);
    if (pthread_mutex_trylock(&db->compact_mu) != 0)
        return annal__fail(db, ANNAL_EBUSY, "a compaction of this store is already running");
    annal_err rc = ANNAL_OK;
    pthread_mutex_lock(&db->wmu);
    if (db->failed != ANNAL_OK) rc = annal__fail(db, ANNAL_EFAILED, "%s", db->failed_msg);
    pthread_mutex_unlock(&db->wmu);
    annal__seg *last = annal__log_last(&db->log);
    uint64_t first_no = db->log.base, end_no = last ? last->no : first_no; /* sealed: below */
    if (stats) stats->segments_total = end_no - first_no;
    for (uint64_t no = first_no; rc == ANNAL_OK && no < end_no; no++) {
        annal__seg *s = annal__log_seg(&db->log, no);
        if (!s) {
            rc = annal__fail(db, ANNAL_ECORRUPT, "segment %016" PRIx64 " is missing", no);
            break;
        }
        rc = compact_segment(db, s, bytes_per_s, stats);
        if (stats && rc == ANNAL_OK) stats->segments_done++;
        if (rc == ANNAL_OK && db->opts.progress &&
            db->opts.progress(db->opts.progress_ctx, no - first_no + 1, end_no - first_no))
            rc = annal__fail(db, ANNAL_ECANCELED, "compaction canceled");
    }
    pthread_mutex_unlock(&db->compact_mu);
    return rc;
}

annal_err annal_compact_sized(annal_db *db, uint64_t bytes_per_s, annal_compact_stats *stats,
                              size_t stats_size) {
    annal_compact_stats st = {0};
    annal_err rc = compact(db, bytes_per_s, stats ? &st : NULL);
    annal__out_copy(stats, stats_size, &st, sizeof st); /* never past the caller's size */
    return rc;
}
