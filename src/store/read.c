/* Reads: iterators over a stream (through the revision index) and over $all (walking
 * the log itself), single events by position, stream heads and the stream list. An
 * iterator fetches locations in small chunks and releases its LMDB snapshot between
 * chunks, so a slow reader never pins old index pages. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

#define CHUNK 256
/* A location from the index names a segment generation that compaction has replaced
 * and deleted since: fetch again under a newer snapshot. Never returned to callers. */
#define STALE       ((annal_err)-1)
#define MAX_REFETCH 8

enum { IT_STREAM, IT_ALL, IT_TAG, IT_QUERY };

/* Stream records looked up by $all, category and type reads to apply stream metadata;
 * only used once the store has any metadata, delete or tombstone (head.restricted). */
#define VCACHE 64
typedef struct vcache_entry {
    uint64_t gen; /* 0: empty */
    int found;
    size_t len;
    annal__stream_rec rec;
    char name[ANNAL_MAX_NAME];
} vcache_entry;

struct annal_iter {
    annal_db *db;
    int live; /* txn is active (holds the map lock: annal__txn_begin) */
    int kind, backward, done;
    uint64_t remaining;
    MDB_txn *txn; /* reset between chunks */
    annal_event ev;
    /* locations fetched for the next events */
    uint64_t pos[CHUNK], loc[CHUNK], rev[CHUNK];
    size_t n, i;
    /* stream */
    char *stream;
    size_t stream_len;
    uint64_t stream_id;
    uint64_t next_rev;    /* next revision to fetch */
    uint64_t last_rev;    /* forward bound: the stream's last revision at open */
    uint64_t first;       /* backward bound: the first revision its metadata leaves visible */
    annal__stream_rec sr; /* the stream's record at open (limits) */
    /* $all */
    annal__cursor cur;
    uint64_t end;      /* forward bound: positions below this */
    uint64_t next_pos; /* backward: next position to fetch (also forward, for tags) */
    /* category or type */
    MDB_dbi tag_dbi;
    /* query (DCB): its own copy, or a subscription's (q_borrowed) */
    annal__query *q;
    int q_borrowed;
    /* visibility */
    int restricted; /* apply stream metadata to each event */
    int64_t now;    /* clock for $maxAge, read at open */
    uint64_t vgen, seen;
    vcache_entry *vc;
    int refetches; /* in a row, after stale locations */
};

static void txn_reset(annal_iter *it) {
    if (it->live) annal__txn_reset(&it->db->idx, it->txn);
    it->live = 0;
}

static annal_err txn_renew(annal_iter *it) {
    txn_reset(it); /* (after an error left it active) */
    int rc = annal__txn_renew(&it->db->idx, it->txn);
    if (rc) return annal__fail_index(it->db, rc);
    it->live = 1;
    return ANNAL_OK;
}

/* The iterator's snapshot, active (reset once its setup has read what it needs). */
static annal_err txn_begin(annal_iter *it) {
    annal_err rc = annal__read_txn(it->db, &it->txn);
    it->live = rc == ANNAL_OK;
    return rc;
}

/* Close a chunk fetched with walk w whose last LMDB result was mrc; with nothing
 * fetched the iterator is done. */
static annal_err chunk_end(annal_iter *it, annal__blocks *w, int mrc) {
    annal__blocks_close(w);
    txn_reset(it);
    if (mrc && mrc != MDB_NOTFOUND) return annal__fail_index(it->db, mrc);
    if (it->n == 0) it->done = 1;
    return ANNAL_OK;
}

/* Add the members of block b whose revision (streams: by_rev) or position lies in
 * [lo, hi] to the chunk, in reading order. */
static annal_err take_block(annal_iter *it, const annal__block *b, int by_rev, uint64_t lo,
                            uint64_t hi) {
    uint64_t pos[ANNAL__BLOCK], loc[ANNAL__BLOCK];
    size_t m;
    annal_err rc = annal__block_members(it->db, b, pos, loc, &m);
    if (rc == ANNAL_ENOTFOUND) return STALE;
    if (rc != ANNAL_OK)
        return annal__fail(it->db, rc, "damaged log in the index block at position %" PRIu64,
                           b->first_pos);
    for (size_t j = 0; j < m; j++) {
        size_t k = it->backward ? m - 1 - j : j;
        uint64_t r = b->first_rev + (pos[k] - b->first_pos), key = by_rev ? r : pos[k];
        if (key < lo || key > hi) continue;
        it->pos[it->n] = pos[k];
        it->loc[it->n] = loc[k];
        it->rev[it->n++] = r;
    }
    return ANNAL_OK;
}

/* Fill the chunk from the blocks of walk w on (mrc: the status of getting the first),
 * in reading order, those in [lo, hi] only: until the name's last block, hi, or a full
 * chunk. On a revision walk lo/hi are revisions, else positions. */
static annal_err walk_blocks(annal_iter *it, annal__blocks *w, int mrc, uint64_t lo, uint64_t hi) {
    int by_rev = w->by_rev;
    uint64_t *next = by_rev ? &it->next_rev : &it->next_pos;
    annal_err rc = ANNAL_OK;
    int more = 0;
    it->n = it->i = 0;
    while (!mrc) {
        annal__block b;
        int other; /* the block is another stream's: below it (-1) or above (1) */
        if ((mrc = annal__blocks_get(w, &b, &other)) != 0) break;
        uint64_t start = by_rev ? b.first_rev : b.first_pos;
        uint64_t end = start + (annal__block_end(&b) - b.first_pos); /* past its last */
        if (!it->backward && (other < 0 || (!other && end <= lo))) {
            mrc = annal__blocks_step(w); /* below the range */
            continue;
        }
        if (other || start > hi || end <= lo) break; /* past it */
        if (it->n + ANNAL__BLOCK > CHUNK) {
            more = 1;
            break;
        }
        rc = take_block(it, &b, by_rev, lo, hi);
        if (rc != ANNAL_OK) break;
        if (it->backward) {
            if (start == 0) break;
            *next = hi = start - 1;
        } else {
            *next = lo = end;
        }
        mrc = annal__blocks_step(w);
    }
    if (rc != ANNAL_OK) {
        annal__blocks_close(w);
        txn_reset(it);
        return rc;
    }
    rc = chunk_end(it, w, mrc);
    if (rc == ANNAL_OK && !more) it->done = 1; /* after this chunk */
    return rc;
}

/* The next chunk of a stream: its revision blocks from the one holding next_rev on. */
static annal_err fetch_stream(annal_iter *it) {
    annal_err rc = txn_renew(it);
    if (rc != ANNAL_OK) return rc;
    annal__blocks w;
    int mrc =
        annal__blocks_rev(it->txn, &it->db->idx, it->stream_id, it->next_rev, it->backward, &w);
    return walk_blocks(it, &w, mrc, it->backward ? it->first : it->next_rev,
                       it->backward ? it->next_rev : it->last_rev);
}

/* Reverse entries [a, b) of the fetched positions and locations. */
static void reverse(annal_iter *it, size_t a, size_t b) {
    for (; a + 1 < b; a++, b--) {
        uint64_t tp = it->pos[a], tl = it->loc[a];
        it->pos[a] = it->pos[b - 1], it->loc[a] = it->loc[b - 1];
        it->pos[b - 1] = tp, it->loc[b - 1] = tl;
    }
}

/* A cursor at a record at or below pos, from which a walk reaches pos: the position-table
 * entry below pos when it lies in pos's segment, else the start of that segment (after
 * compaction the entries of erased events are gone, and the nearest one left may be
 * segments away, or missing when the log starts with erased events). it->txn is active.
 * STALE when the entry names a generation that is gone. */
static annal_err start_below(annal_iter *it, uint64_t pos, annal__cursor *c) {
    annal_db *db = it->db;
    uint64_t base, loc;
    annal__seg *seg = annal__log_seg_for(&db->log, pos);
    annal_err rc = annal__index_pos_floor(it->txn, &db->idx, pos, &base, &loc);
    if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND)
        return annal__fail(db, rc, "index: cannot look up position %" PRIu64, pos);
    if (rc == ANNAL_OK && (!seg || ANNAL__LOC_SEG(loc) >= seg->no)) {
        annal__seg *s = annal__log_seg_at(&db->log, loc);
        if (!s) return STALE;
        *c = (annal__cursor){&db->log, s, ANNAL__LOC_OFF(loc), base};
        return ANNAL_OK;
    }
    if (!seg) return annal__fail(db, ANNAL_ECORRUPT, "no log segment holds position %" PRIu64, pos);
    *c = (annal__cursor){&db->log, seg, ANNAL__SEG_HDR, seg->first_pos};
    return ANNAL_OK;
}

/* Backward over $all: collect positions [base, next_pos] from the stride entry below. */
static annal_err fetch_all_back(annal_iter *it) {
    annal_db *db = it->db;
    annal_err rc = txn_renew(it);
    if (rc != ANNAL_OK) return rc;
    annal__cursor c;
    rc = start_below(it, it->next_pos, &c);
    txn_reset(it);
    if (rc != ANNAL_OK) return rc;
    uint64_t base = c.pos;
    /* Keep the newest CHUNK events of [base, next_pos] in a ring: after compaction the
     * entry below may be further away than one stride. */
    uint64_t total = 0;
    while (c.pos <= it->next_pos) {
        annal_event ev;
        annal__rec_info info;
        uint64_t l, p = c.pos;
        rc = annal__cursor_next(&c, &ev, &info, &l);
        if (rc == ANNAL_END || (rc == ANNAL_OK && ev.position > it->next_pos)) break;
        if (rc != ANNAL_OK)
            return annal__fail(db, ANNAL_ECORRUPT, "damaged log at position %" PRIu64, p);
        it->pos[total % CHUNK] = ev.position;
        it->loc[total % CHUNK] = l;
        total++;
    }
    it->n = total < CHUNK ? (size_t)total : CHUNK;
    it->i = 0;
    if (it->n == 0) {
        it->done = base == 0;
        if (base > 0) it->next_pos = base - 1;
        return ANNAL_OK;
    }
    /* Emit newest first. Chronologically the ring holds [s, n) then [0, s) (s = 0 unless it
     * wrapped); reversing each part in place reverses the whole sequence. */
    size_t split = total > CHUNK ? (size_t)(total % CHUNK) : 0;
    reverse(it, 0, split);
    reverse(it, split, it->n);
    uint64_t oldest = it->pos[it->n - 1];
    if (total <= CHUNK && base == 0)
        it->done = 1; /* after this chunk */
    else if (total <= CHUNK)
        it->next_pos = base - 1;
    else
        it->next_pos = oldest - 1;
    return ANNAL_OK;
}

/* Category or type: the next chunk of events under it->stream, from its blocks. */
static annal_err fetch_tag(annal_iter *it) {
    annal_err rc = txn_renew(it);
    if (rc != ANNAL_OK) return rc;
    annal__blocks w;
    int mrc = annal__blocks_tag(it->txn, it->tag_dbi, it->stream, it->stream_len, it->next_pos,
                                it->backward, &w);
    return walk_blocks(it, &w, mrc, it->backward ? 0 : it->next_pos,
                       it->backward ? it->next_pos : it->end - 1);
}

/* Query: the next chunk of matching events, from the type and tag indexes (dcb.c). */
static annal_err fetch_query(annal_iter *it) {
    annal_err rc = txn_renew(it);
    if (rc != ANNAL_OK) return rc;
    uint64_t lo = it->backward ? 0 : it->next_pos, hi = it->backward ? it->next_pos : it->end - 1;
    int done = 0;
    it->i = 0;
    rc = annal__query_fetch(it->db, it->txn, it->q, it->backward, &lo, &hi, it->pos, it->loc, CHUNK,
                            &it->n, &done);
    txn_reset(it);
    if (rc == ANNAL_ENOTFOUND) return STALE; /* its place is kept: fetch again */
    if (rc != ANNAL_OK) return rc;
    it->next_pos = it->backward ? hi : lo;
    if (done) it->done = 1; /* after this chunk */
    return ANNAL_OK;
}

/* Does the metadata of ev's stream leave it visible? */
static annal_err visible(annal_iter *it, const annal_event *ev, int *ok) {
    *ok = 1;
    if (!it->restricted) return ANNAL_OK;
    if (it->kind == IT_STREAM) {
        *ok = annal__event_visible(&it->sr, ev->revision, ev->timestamp_ns, it->now);
        return ANNAL_OK;
    }
    if (!it->vc && !(it->vc = calloc(VCACHE, sizeof *it->vc))) return ANNAL_ENOMEM;
    if (++it->seen % 4096 == 0) it->vgen++; /* a long read sees metadata changes */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < ev->stream_len; i++) h = (h ^ (uint8_t)ev->stream[i]) * 16777619u;
    vcache_entry *e = &it->vc[h % VCACHE];
    if (e->gen != it->vgen || e->len != ev->stream_len ||
        memcmp(e->name, ev->stream, ev->stream_len) != 0) {
        annal_err rc = txn_renew(it);
        if (rc != ANNAL_OK) return rc;
        rc = annal__index_stream_get(it->txn, &it->db->idx, ev->stream, ev->stream_len, &e->rec);
        txn_reset(it);
        if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND)
            return annal__fail(it->db, rc, "cannot read stream %s from the index", ev->stream);
        e->found = rc == ANNAL_OK;
        e->gen = it->vgen;
        e->len = ev->stream_len;
        memcpy(e->name, ev->stream, ev->stream_len);
    }
    if (e->found) *ok = annal__event_visible(&e->rec, ev->revision, ev->timestamp_ns, it->now);
    return ANNAL_OK;
}

static annal_err next_any(annal_iter *it, const annal_event **out);

annal_err annal_iter_next(annal_iter *it, const annal_event **out) {
    if (!it || !out) return ANNAL_EINVAL;
    *out = NULL;
    if (it->remaining == 0) return ANNAL_END;
    for (;;) {
        annal_err rc = next_any(it, out);
        int ok = 1;
        if (rc == ANNAL_OK) rc = visible(it, *out, &ok);
        if (rc != ANNAL_OK) {
            *out = NULL;
            if (rc != ANNAL_END) it->remaining = 0;
            return rc;
        }
        if (ok) break;
    }
    it->remaining--;
    return ANNAL_OK;
}

/* The next event, visible or not. */
static annal_err next_any(annal_iter *it, const annal_event **out) {
    annal_db *db = it->db;
    annal_err rc;
    annal__rec_info info;
    if (it->kind == IT_ALL && !it->backward) {
        if (it->cur.pos >= it->end) return ANNAL_END;
        uint64_t p = it->cur.pos;
        rc = annal__cursor_next(&it->cur, &it->ev, &info, NULL);
        if (rc != ANNAL_OK) {
            it->remaining = 0;
            return annal__fail(db, ANNAL_ECORRUPT,
                               "damaged log at position %" PRIu64 " (segment %016" PRIx64
                               ", offset %" PRIu64 ")",
                               p, it->cur.seg->no, it->cur.off);
        }
        *out = &it->ev;
        return ANNAL_OK;
    }
    while (it->i == it->n) {
        if (it->done) return ANNAL_END;
        rc = it->kind == IT_STREAM  ? fetch_stream(it)
             : it->kind == IT_TAG   ? fetch_tag(it)
             : it->kind == IT_QUERY ? fetch_query(it)
                                    : fetch_all_back(it);
        if (rc == STALE && it->refetches++ < MAX_REFETCH) continue; /* kept its place */
        if (rc == STALE)
            rc = annal__fail(db, ANNAL_ECORRUPT, "log segment missing for position %" PRIu64,
                             it->next_pos);
        if (rc != ANNAL_OK) return rc;
        /* a chunk may come back empty (all erased) with more below: loop */
    }
    size_t i = it->i++;
    rc = annal__log_read_at(&db->log, it->loc[i], it->pos[i], &it->ev, &info);
    if (rc == ANNAL_ECORRUPT && it->refetches < MAX_REFETCH &&
        !annal__log_has(&db->log, it->loc[i])) {
        /* Compaction moved or erased it after this chunk was fetched: fetch again from
         * this item under a fresh snapshot. */
        it->refetches++;
        if (it->kind == IT_STREAM)
            it->next_rev = it->rev[i];
        else
            it->next_pos = it->pos[i];
        it->done = 0;
        it->n = it->i = 0;
        return next_any(it, out);
    }
    if (rc == ANNAL_OK) it->refetches = 0;
    if (rc == ANNAL_OK && it->kind == IT_STREAM &&
        (it->ev.revision != it->rev[i] || it->ev.stream_len != it->stream_len ||
         memcmp(it->ev.stream, it->stream, it->stream_len) != 0))
        rc = ANNAL_ECORRUPT;
    if (rc == ANNAL_OK && it->kind == IT_TAG) {
        int is_cat = it->tag_dbi == db->idx.cats;
        size_t n = is_cat ? annal__category_len(it->ev.stream, it->ev.stream_len) : it->ev.type_len;
        const char *name = is_cat ? it->ev.stream : it->ev.type;
        if (n != it->stream_len || memcmp(name, it->stream, n) != 0) rc = ANNAL_ECORRUPT;
    }
    if (rc == ANNAL_OK && it->kind == IT_QUERY && !annal__query_match(it->q, &it->ev))
        rc = ANNAL_ECORRUPT; /* the index and the log disagree */
    if (rc != ANNAL_OK)
        return annal__fail(db, rc,
                           "damaged event at position %" PRIu64 " (segment %016" PRIx64
                           ", offset %" PRIu64 ")",
                           it->pos[i], ANNAL__LOC_SEG(it->loc[i]), ANNAL__LOC_OFF(it->loc[i]));
    *out = &it->ev;
    return ANNAL_OK;
}

void annal_iter_close(annal_iter *it) {
    if (!it) return;
    if (it->txn && it->live)
        annal__txn_abort(&it->db->idx, it->txn);
    else if (it->txn)
        annal__txn_free(it->txn);
    free(it->stream);
    free(it->vc);
    if (!it->q_borrowed) free(it->q);
    free(it);
}

static annal_iter *iter_new(annal_db *db, int kind, unsigned flags, uint64_t limit) {
    annal_iter *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->db = db;
    it->kind = kind;
    it->backward = (flags & ANNAL_READ_BACKWARD) != 0;
    it->remaining = limit ? limit : UINT64_MAX;
    return it;
}

/* Will events need the metadata check? Reads the index head in it->txn (active). */
static annal_err restrictions(annal_iter *it) {
    annal__index_head h;
    annal_err rc = annal__index_head_get(it->txn, &it->db->idx, &h);
    if (rc != ANNAL_OK) return annal__fail(it->db, rc, "cannot read the index head");
    it->restricted = h.restricted > 0;
    it->now = annal__now_ns();
    it->vgen = 1;
    return ANNAL_OK;
}

annal_err annal_read_all(annal_db *db, uint64_t from, unsigned flags, uint64_t limit,
                         annal_iter **out) {
    if (!db || !out || (flags & ~ANNAL_READ_BACKWARD)) return ANNAL_EINVAL;
    *out = NULL;
    annal_iter *it = iter_new(db, IT_ALL, flags, limit);
    if (!it) return ANNAL_ENOMEM;
    /* Load the visible head before the snapshot, so the snapshot covers it. */
    uint64_t vis = db->readonly ? 0 : annal__visible(db, NULL);
    annal_err rc = txn_begin(it);
    if (rc != ANNAL_OK) goto fail;
    if (db->readonly) vis = annal__visible(db, it->txn);
    it->end = vis;
    if ((rc = restrictions(it)) != ANNAL_OK) goto fail;
    if (vis == 0 || (!it->backward && from >= vis)) {
        it->done = 1;
        it->remaining = 0;
    } else if (it->backward) {
        it->next_pos = from < vis ? from : vis - 1;
    } else {
        /* A compaction in another process may have replaced the generation the snapshot
         * names and deleted it since: look again under a newer snapshot. */
        rc = STALE;
        for (int tries = 0; rc == STALE && tries < MAX_REFETCH; tries++) {
            if (tries && ((rc = txn_renew(it)) != ANNAL_OK)) goto fail;
            rc = start_below(it, from, &it->cur);
        }
        if (rc == STALE)
            rc = annal__fail(db, ANNAL_ECORRUPT, "missing segment for position %" PRIu64, from);
        if (rc != ANNAL_OK) goto fail;
        /* Up to from, consuming nothing at or after it: from may lie in a run of erased
         * events, and the first survivor after it is the first event to return. */
        rc = annal__cursor_seek(&it->cur, from);
        if (rc != ANNAL_OK) {
            rc = annal__fail(db, ANNAL_ECORRUPT, "damaged log before position %" PRIu64, from);
            goto fail;
        }
    }
    txn_reset(it);
    *out = it;
    return ANNAL_OK;
fail:
    annal_iter_close(it);
    return rc;
}

static annal_err read_tag(annal_db *db, MDB_dbi dbi, const char *what, const char *name,
                          uint64_t from, unsigned flags, uint64_t limit, annal_iter **out) {
    if (!db || !out || (flags & ~ANNAL_READ_BACKWARD)) return ANNAL_EINVAL;
    *out = NULL;
    size_t len;
    if (!annal__name_ok(name, &len)) return annal__fail(db, ANNAL_EINVAL, "invalid %s name", what);
    annal_iter *it = iter_new(db, IT_TAG, flags, limit);
    if (!it) return ANNAL_ENOMEM;
    it->tag_dbi = dbi;
    it->stream = strdup(name);
    it->stream_len = len;
    uint64_t vis = db->readonly ? 0 : annal__visible(db, NULL);
    annal_err rc = it->stream ? txn_begin(it) : ANNAL_ENOMEM;
    if (rc != ANNAL_OK) goto fail;
    if (db->readonly) vis = annal__visible(db, it->txn);
    rc = restrictions(it);
    txn_reset(it);
    if (rc != ANNAL_OK) goto fail;
    it->end = vis;
    if (vis == 0 || (!it->backward && from >= vis)) {
        it->done = 1;
        it->remaining = 0;
    } else {
        it->next_pos = it->backward && from >= vis ? vis - 1 : from;
    }
    *out = it;
    return ANNAL_OK;
fail:
    annal_iter_close(it);
    return rc;
}

annal_err annal_read_category(annal_db *db, const char *category, uint64_t from, unsigned flags,
                              uint64_t limit, annal_iter **out) {
    return read_tag(db, db ? db->idx.cats : 0, "category", category, from, flags, limit, out);
}

annal_err annal_read_type(annal_db *db, const char *type, uint64_t from, unsigned flags,
                          uint64_t limit, annal_iter **out) {
    return read_tag(db, db ? db->idx.types : 0, "event type", type, from, flags, limit, out);
}

annal_err annal_read_query(annal_db *db, const annal_query *q, uint64_t from, unsigned flags,
                           uint64_t limit, annal_iter **out) {
    if (!db || !out || (flags & ~ANNAL_READ_BACKWARD)) return ANNAL_EINVAL;
    *out = NULL;
    annal__query *cq;
    annal_err rc = annal__query_compile(db, q, &cq);
    if (rc != ANNAL_OK) return rc;
    rc = annal__read_query(db, cq, 0, from, flags, limit, out);
    if (rc != ANNAL_OK || cq->all) free(cq);
    return rc;
}

annal_err annal__read_query(annal_db *db, annal__query *cq, int borrowed, uint64_t from,
                            unsigned flags, uint64_t limit, annal_iter **out) {
    if (cq->all) return annal_read_all(db, from, flags, limit, out); /* walking the log */
    annal_iter *it = iter_new(db, IT_QUERY, flags, limit);
    if (!it) return ANNAL_ENOMEM;
    it->q = cq;
    it->q_borrowed = 1; /* until it is set up */
    uint64_t vis = db->readonly ? 0 : annal__visible(db, NULL);
    annal_err rc = txn_begin(it);
    if (rc != ANNAL_OK) goto fail;
    if (db->readonly) vis = annal__visible(db, it->txn);
    rc = restrictions(it);
    txn_reset(it);
    if (rc != ANNAL_OK) goto fail;
    it->end = vis;
    if (vis == 0 || (!it->backward && from >= vis)) {
        it->done = 1;
        it->remaining = 0;
    } else {
        it->next_pos = it->backward && from >= vis ? vis - 1 : from;
    }
    it->q_borrowed = borrowed;
    *out = it;
    return ANNAL_OK;
fail:
    annal_iter_close(it); /* (the caller still owns cq) */
    return rc;
}

/* The record of a stream for reading: ANNAL_ENOTFOUND unless it has events and is not
 * soft-deleted; ANNAL_EDELETED if tombstoned. */
static annal_err stream_for_read(annal_db *db, MDB_txn *t, const char *stream, size_t len,
                                 annal__stream_rec *sr) {
    annal_err rc = annal__index_stream_get(t, &db->idx, stream, len, sr);
    if (rc == ANNAL_OK && (sr->count == 0 || (sr->flags & ANNAL__SR_DELETED))) rc = ANNAL_ENOTFOUND;
    if (rc == ANNAL_ENOTFOUND) return annal__fail(db, rc, "stream %s not found", stream);
    if (rc == ANNAL_OK && (sr->flags & ANNAL__SR_TOMBSTONE))
        return annal__fail(db, ANNAL_EDELETED, "stream %s is deleted (tombstoned)", stream);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot read stream %s from the index", stream);
    return ANNAL_OK;
}

annal_err annal_read_stream(annal_db *db, const char *stream, uint64_t from, unsigned flags,
                            uint64_t limit, annal_iter **out) {
    if (!db || !out || (flags & ~ANNAL_READ_BACKWARD)) return ANNAL_EINVAL;
    *out = NULL;
    size_t len;
    if (!annal__name_ok(stream, &len)) return annal__fail(db, ANNAL_EINVAL, "invalid stream name");
    if (strcmp(stream, "$all") == 0) return annal_read_all(db, from, flags, limit, out);
    if (strncmp(stream, "$ce-", 4) == 0 && len > 4)
        return annal_read_category(db, stream + 4, from, flags, limit, out);
    if (strncmp(stream, "$et-", 4) == 0 && len > 4)
        return annal_read_type(db, stream + 4, from, flags, limit, out);
    annal_iter *it = iter_new(db, IT_STREAM, flags, limit);
    if (!it) return ANNAL_ENOMEM;
    it->stream = strdup(stream);
    it->stream_len = len;
    annal_err rc = it->stream ? txn_begin(it) : ANNAL_ENOMEM;
    if (rc != ANNAL_OK) goto fail;
    rc = stream_for_read(db, it->txn, stream, len, &it->sr);
    txn_reset(it);
    if (rc != ANNAL_OK) goto fail;
    it->stream_id = it->sr.id;
    it->last_rev = it->sr.count - 1;
    it->restricted = 1;
    it->now = annal__now_ns();
    uint64_t first = annal__first_visible(&it->sr); /* metadata hides what is below */
    it->first = first;
    if (it->backward) {
        it->next_rev = from < it->last_rev ? from : it->last_rev;
        if (it->next_rev < first) it->done = 1, it->remaining = 0;
    } else if (from > it->last_rev || first > it->last_rev) {
        it->done = 1;
        it->remaining = 0;
    } else {
        it->next_rev = from > first ? from : first;
    }
    *out = it;
    return ANNAL_OK;
fail:
    annal_iter_close(it);
    return rc;
}

annal_err annal_event_get(annal_db *db, uint64_t position, annal_event **out) {
    if (!db || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_iter *it;
    annal_err rc = annal_read_all(db, position, 0, 1, &it);
    if (rc != ANNAL_OK) return rc;
    const annal_event *ev;
    rc = annal_iter_next(it, &ev);
    if (rc == ANNAL_END || (rc == ANNAL_OK && ev->position != position)) { /* or invisible */
        rc = annal__fail(db, ANNAL_ENOTFOUND, "no event at position %" PRIu64, position);
    } else if (rc == ANNAL_OK) {
        size_t sz = sizeof *ev + ev->stream_len + 1 + ev->type_len + 1 + ev->data_len +
                    ev->metadata_len + ev->tags_len;
        annal_event *e = malloc(sz);
        if (!e) {
            rc = ANNAL_ENOMEM;
        } else {
            *e = *ev;
            char *p = (char *)(e + 1);
            memcpy(p, ev->stream, ev->stream_len + 1);
            e->stream = p;
            p += ev->stream_len + 1;
            memcpy(p, ev->type, ev->type_len + 1);
            e->type = p;
            p += ev->type_len + 1;
            if (ev->data_len) memcpy(p, ev->data, ev->data_len);
            e->data = p;
            p += ev->data_len;
            if (ev->metadata_len) memcpy(p, ev->metadata, ev->metadata_len);
            e->metadata = p;
            p += ev->metadata_len;
            if (ev->tags_len) memcpy(p, ev->tags, ev->tags_len);
            e->tags = ev->tags_len ? p : NULL;
            *out = e;
        }
    }
    annal_iter_close(it);
    return rc;
}

annal_err annal_stream_head(annal_db *db, const char *stream, uint64_t *revision) {
    if (!db || !revision) return ANNAL_EINVAL;
    size_t len;
    if (!annal__name_ok(stream, &len)) return annal__fail(db, ANNAL_EINVAL, "invalid stream name");
    MDB_txn *t;
    annal_err rc = annal__read_txn(db, &t);
    if (rc != ANNAL_OK) return rc;
    annal__stream_rec sr;
    rc = stream_for_read(db, t, stream, len, &sr);
    annal__txn_abort(&db->idx, t);
    if (rc != ANNAL_OK) return rc;
    *revision = sr.count - 1;
    return ANNAL_OK;
}

struct annal_stream_iter {
    annal_db *db;
    MDB_txn *txn;
    char name[ANNAL_MAX_NAME + 1];
    size_t name_len;
    int started;
    annal_stream_info info;
};

annal_err annal_streams_open(annal_db *db, const char *after, annal_stream_iter **out) {
    if (!db || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_stream_iter *it = calloc(1, sizeof *it);
    if (!it) return ANNAL_ENOMEM;
    it->db = db;
    if (after) {
        size_t n = strnlen(after, ANNAL_MAX_NAME + 1);
        if (n > ANNAL_MAX_NAME) {
            free(it);
            return annal__fail(db, ANNAL_EINVAL, "invalid stream name");
        }
        memcpy(it->name, after, n);
        it->name_len = n;
        it->started = 1;
    }
    annal_err rc = annal__read_txn(db, &it->txn);
    if (rc != ANNAL_OK) {
        free(it);
        return rc;
    }
    annal__txn_reset(&db->idx, it->txn);
    *out = it;
    return ANNAL_OK;
}

/* Streams with only metadata, or deleted ones, read as absent: listings skip them. */
static int absent(const annal__stream_rec *sr) {
    return sr->count == 0 || (sr->flags & (ANNAL__SR_DELETED | ANNAL__SR_TOMBSTONE));
}

annal_err annal_streams_next(annal_stream_iter *it, const annal_stream_info **info) {
    if (!it || !info) return ANNAL_EINVAL;
    *info = NULL;
    annal_db *db = it->db;
    int mrc = annal__txn_renew(&db->idx, it->txn);
    if (mrc) return annal__fail_index(db, mrc);
    annal__stream_rec sr;
    mrc = annal__index_stream_next(it->txn, &db->idx, it->name, it->name_len, !it->started, absent,
                                   it->name, &it->name_len, &sr);
    annal_err rc = ANNAL_OK;
    if (!mrc) {
        it->started = 1;
        it->info.name = it->name;
        it->info.last_revision = sr.count - 1;
        it->info.last_position = sr.last_pos;
        it->info.created_ns = sr.created_ns;
        *info = &it->info;
    } else if (mrc == MDB_NOTFOUND) {
        rc = ANNAL_END;
    } else if (mrc == MDB_CORRUPTED) {
        rc = ANNAL_ECORRUPT;
    } else {
        rc = annal__fail_index(db, mrc);
    }
    annal__txn_reset(&db->idx, it->txn);
    return rc;
}

void annal_streams_close(annal_stream_iter *it) {
    if (!it) return;
    if (it->txn) annal__txn_free(it->txn);
    free(it);
}
