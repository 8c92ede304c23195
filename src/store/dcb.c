/* Dynamic Consistency Boundaries (annal.h): queries over event types and tags, served
 * from the type and tag indexes; the condition check the group commit's leader runs in
 * the same step that writes an append (multi.c calls it; tagged.c, above multi.c, has
 * the appends with tags).
 *
 * How a query is evaluated from the index. Type and tag entries are blocks: the events
 * of one batch slice of 64 positions that have the type or carry the tag, as a mask.
 * Every table cuts a batch into the same slices, so the blocks of one slice start at the
 * same position everywhere and combine bit by bit. An item with tags walks the blocks of
 * its rarest tag (fewest blocks) and, per block, looks up the block that starts at the
 * same position under each other tag (AND) and each of its types (OR); an item with
 * types only walks its types' blocks merged. The query merges its items' slices in
 * position order (OR). So reading the dozen events tagged `student:s7` touches about a
 * dozen entries of that tag, whatever the store's size. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

/* ---- events and queries in memory ------------------------------------------------- */

int annal_event_tag_next(const annal_event *ev, const char **tag) {
    if (!ev || !tag || !ev->tags || ev->tags_len == 0) return 0;
    const char *end = ev->tags + ev->tags_len;
    const char *t = *tag ? *tag + strlen(*tag) + 1 : ev->tags;
    if (t >= end) return 0;
    *tag = t;
    return 1;
}

/* Does ev carry tag (len bytes)? */
static int has_tag(const annal_event *ev, const char *tag, size_t len) {
    for (const char *t = NULL; annal_event_tag_next(ev, &t);)
        if (strlen(t) == len && memcmp(t, tag, len) == 0) return 1;
    return 0;
}

static int item_match(const annal_query_item *it, const annal_event *ev) {
    int type_ok = it->ntypes == 0;
    for (size_t i = 0; !type_ok && i < it->ntypes; i++)
        type_ok = it->types[i] && strlen(it->types[i]) == ev->type_len &&
                  memcmp(it->types[i], ev->type, ev->type_len) == 0;
    if (!type_ok) return 0;
    for (size_t i = 0; i < it->ntags; i++)
        if (!it->tags[i] || !has_tag(ev, it->tags[i], strlen(it->tags[i]))) return 0;
    return 1;
}

int annal_query_match(const annal_query *q, const annal_event *ev) {
    if (!ev) return 0;
    if (!q || q->nitems == 0) return 1;
    for (size_t i = 0; i < q->nitems; i++)
        if (q->items && item_match(&q->items[i], ev)) return 1;
    return 0;
}

int annal__query_match(const annal__query *q, const annal_event *ev) {
    if (q->all) return 1;
    for (size_t i = 0; i < q->nitems; i++) {
        const annal__qitem *it = &q->items[i];
        int ok = it->ntypes == 0;
        for (size_t j = 0; !ok && j < it->ntypes; j++)
            ok = it->types[j].len == ev->type_len &&
                 memcmp(it->types[j].p, ev->type, ev->type_len) == 0;
        for (size_t j = 0; ok && j < it->ntags; j++)
            ok = has_tag(ev, it->tags[j].p, it->tags[j].len);
        if (ok) return 1;
    }
    return 0;
}

/* Check the names of one item (what: "type" or "tag") and add up their bytes. */
static annal_err names_ok(annal_db *db, size_t item, const char *what, const char *const *names,
                          size_t n, size_t max, size_t *bytes) {
    if (n > max)
        return annal__fail(db, ANNAL_EINVAL, "query item %zu: %zu %ss; the limit is %zu", item, n,
                           what, max);
    if (n && !names)
        return annal__fail(db, ANNAL_EINVAL, "query item %zu: %ss is NULL", item, what);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        if (!names[i] || !annal__name_ok(names[i], &len))
            return annal__fail(db, ANNAL_EINVAL,
                               "query item %zu: %s %zu is not 1..%d bytes of UTF-8", item, what, i,
                               ANNAL_MAX_NAME);
        *bytes += len + 1;
    }
    return ANNAL_OK;
}

static void copy_names(annal__qname *out, const char *const *names, size_t n, char **text) {
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        memcpy(*text, names[i], len + 1);
        out[i] = (annal__qname){*text, len};
        *text += len + 1;
    }
}

annal_err annal__query_compile(annal_db *db, const annal_query *q, annal__query **out) {
    *out = NULL;
    size_t nitems = q ? q->nitems : 0, nnames = 0, bytes = 0;
    if (nitems > ANNAL_MAX_QUERY_ITEMS)
        return annal__fail(db, ANNAL_EINVAL, "query of %zu items; the limit is %d", nitems,
                           ANNAL_MAX_QUERY_ITEMS);
    if (nitems && !q->items) return annal__fail(db, ANNAL_EINVAL, "query items is NULL");
    for (size_t i = 0; i < nitems; i++) {
        const annal_query_item *it = &q->items[i];
        annal_err rc =
            names_ok(db, i, "type", it->types, it->ntypes, ANNAL_MAX_QUERY_TYPES, &bytes);
        if (rc == ANNAL_OK)
            rc = names_ok(db, i, "tag", it->tags, it->ntags, ANNAL_MAX_TAGS, &bytes);
        if (rc != ANNAL_OK) return rc;
        nnames += it->ntypes + it->ntags;
    }
    size_t head = sizeof(annal__query) + nitems * sizeof(annal__qitem);
    annal__query *cq = calloc(1, head + nnames * sizeof(annal__qname) + bytes);
    if (!cq) return annal__fail(db, ANNAL_ENOMEM, "out of memory");
    cq->items = (annal__qitem *)(cq + 1);
    cq->nitems = nitems;
    cq->all = nitems == 0;
    annal__qname *names = (annal__qname *)((char *)cq + head);
    char *text = (char *)(names + nnames);
    for (size_t i = 0; i < nitems; i++) {
        const annal_query_item *it = &q->items[i];
        annal__qitem *ci = &cq->items[i];
        ci->types = names;
        ci->ntypes = it->ntypes;
        copy_names(names, it->types, it->ntypes, &text);
        names += it->ntypes;
        ci->tags = names;
        ci->ntags = it->ntags;
        copy_names(names, it->tags, it->ntags, &text);
        names += it->ntags;
        if (it->ntypes == 0 && it->ntags == 0) cq->all = 1;
    }
    *out = cq;
    return ANNAL_OK;
}

/* ---- walking the index ----------------------------------------------------------- */

/* A walk over the blocks of one name (a tag or a type). */
typedef struct qwalk {
    annal__blocks w;
    annal__block b; /* the block it is on, while live */
    int live;
} qwalk;

/* A slice of the query's result: the matching members of one batch slice of 64. The
 * record at loc (position lpos, a member of some block of the slice at or below its
 * lowest match) starts the walk that finds their locations. */
typedef struct qslice {
    uint64_t fp, mask, loc, lpos;
} qslice;

/* One item being evaluated. */
typedef struct qitem {
    const annal__qitem *item;
    qwalk *walks; /* the driver: its rarest tag, or each of its types */
    size_t nwalks;
    MDB_cursor **tagc;  /* per tag (the driver's NULL): for the blocks of its slices */
    MDB_cursor **typec; /* per type when the item has tags: the same */
    int done, has;
    qslice cur; /* the next slice, when has */
} qitem;

typedef struct qrun {
    annal_db *db;
    MDB_txn *t;
    int backward;
    uint64_t lo, hi; /* positions in range */
    qitem *items;
    size_t nitems;
    qwalk *walks;      /* storage of the items' walks */
    MDB_cursor **curs; /* storage of their cursors */
    size_t nwalks, ncurs;
} qrun;

/* Bits of mask (slice at fp) whose positions are in [lo, hi]. */
static uint64_t clip(uint64_t fp, uint64_t mask, uint64_t lo, uint64_t hi) {
    if (lo > fp) mask = lo - fp >= 64 ? 0 : mask & (~0ull << (lo - fp));
    if (hi < fp) return 0;
    if (hi - fp < 63) mask &= (2ull << (hi - fp)) - 1;
    return mask;
}

/* Read the walk's block; a walk past the range ends. 0 or an LMDB code. */
static int walk_load(qrun *r, qwalk *w, int mrc) {
    int other;
    if (!mrc) mrc = annal__blocks_get(&w->w, &w->b, &other);
    w->live = mrc == 0;
    if (mrc == MDB_NOTFOUND) return 0;
    if (mrc) return mrc;
    /* Forward: past hi, every later block is too. Backward: below lo, the same. */
    if (!r->backward && w->b.first_pos > r->hi) w->live = 0;
    if (r->backward && annal__block_end(&w->b) <= r->lo) w->live = 0;
    return 0;
}

static int walk_open(qrun *r, qwalk *w, MDB_dbi dbi, const annal__qname *name) {
    int mrc = r->backward ? annal__blocks_tag(r->t, dbi, name->p, name->len, r->hi, 1, &w->w)
                          : annal__blocks_tag_fwd(r->t, dbi, name->p, name->len, r->lo, &w->w);
    return walk_load(r, w, mrc);
}

/* Filter mask (slice fp) through the item's other tags (all) and types (any). */
static int filter(qitem *q, uint64_t fp, uint64_t *mask) {
    const annal__qitem *it = q->item;
    annal__block b;
    for (size_t j = 0; *mask && j < it->ntags; j++) {
        if (!q->tagc[j]) continue; /* the driver */
        int mrc = annal__index_tag_at(q->tagc[j], it->tags[j].p, it->tags[j].len, fp, &b);
        if (mrc && mrc != MDB_NOTFOUND) return mrc;
        *mask &= mrc ? 0 : b.mask;
    }
    if (!*mask || !q->typec) return 0;
    uint64_t any = 0;
    for (size_t j = 0; j < it->ntypes && (any & *mask) != *mask; j++) {
        int mrc = annal__index_tag_at(q->typec[j], it->types[j].p, it->types[j].len, fp, &b);
        if (mrc && mrc != MDB_NOTFOUND) return mrc;
        any |= mrc ? 0 : b.mask;
    }
    *mask &= any;
    return 0;
}

/* Is slice position a before b in reading order? */
static int before(const qrun *r, uint64_t a, uint64_t b) { return r->backward ? a > b : a < b; }

/* The item's next slice with a match into q->cur (q->has), or q->done. */
static int item_peek(qrun *r, qitem *q) {
    q->has = 0;
    while (!q->done) {
        qwalk *best = NULL;
        for (size_t i = 0; i < q->nwalks; i++)
            if (q->walks[i].live &&
                (!best || before(r, q->walks[i].b.first_pos, best->b.first_pos)))
                best = &q->walks[i];
        if (!best) {
            q->done = 1;
            break;
        }
        qslice s = {best->b.first_pos, 0, best->b.loc, annal__block_first(&best->b)};
        for (size_t i = 0; i < q->nwalks; i++) { /* the types of a types-only item: OR */
            qwalk *w = &q->walks[i];
            if (!w->live || w->b.first_pos != s.fp) continue;
            s.mask |= w->b.mask;
            if (annal__block_first(&w->b) < s.lpos)
                s.lpos = annal__block_first(&w->b), s.loc = w->b.loc;
            int mrc = walk_load(r, w, annal__blocks_step(&w->w));
            if (mrc) return mrc;
        }
        s.mask = clip(s.fp, s.mask, r->lo, r->hi);
        int mrc = s.mask ? filter(q, s.fp, &s.mask) : 0;
        if (mrc) return mrc;
        if (s.mask) {
            q->cur = s;
            q->has = 1;
            break;
        }
    }
    return 0;
}

/* The number of blocks under name in dbi (its cost as a driver). */
static int name_cost(MDB_cursor *c, const annal__qname *name, uint64_t *n) {
    return annal__index_tag_count(c, name->p, name->len, n);
}

/* Set up item i: cursors for its lookups, and its driver walks. */
static int item_open(qrun *r, qitem *q, const annal__qitem *it) {
    annal__index *idx = &r->db->idx;
    q->item = it;
    int mrc = 0;
    if (it->ntags) {
        q->tagc = r->curs + r->ncurs;
        r->ncurs += it->ntags;
        uint64_t least = UINT64_MAX;
        size_t driver = 0;
        /* The rarest tag drives (one tag alone needs no counting: the common condition). */
        for (size_t j = 0; j < it->ntags && it->ntags > 1 && !mrc; j++) {
            uint64_t n = 0;
            mrc = mdb_cursor_open(r->t, idx->tags, &q->tagc[j]);
            if (!mrc) mrc = name_cost(q->tagc[j], &it->tags[j], &n);
            if (!mrc && n < least) least = n, driver = j;
        }
        if (it->ntypes) {
            q->typec = r->curs + r->ncurs;
            r->ncurs += it->ntypes;
            for (size_t j = 0; j < it->ntypes && !mrc; j++)
                mrc = mdb_cursor_open(r->t, idx->types, &q->typec[j]);
        }
        if (mrc) return mrc;
        if (q->tagc[driver]) mdb_cursor_close(q->tagc[driver]);
        q->tagc[driver] = NULL;
        q->walks = r->walks + r->nwalks;
        q->nwalks = 1;
        r->nwalks++;
        if (least == 0) return 0; /* a tag no event carries: nothing matches */
        mrc = walk_open(r, &q->walks[0], idx->tags, &it->tags[driver]);
    } else {
        q->walks = r->walks + r->nwalks;
        q->nwalks = it->ntypes;
        r->nwalks += it->ntypes;
        for (size_t j = 0; j < it->ntypes && !mrc; j++)
            mrc = walk_open(r, &q->walks[j], idx->types, &it->types[j]);
    }
    return mrc ? mrc : item_peek(r, q);
}

static void qrun_close(qrun *r) {
    for (size_t i = 0; i < r->nwalks; i++) annal__blocks_close(&r->walks[i].w);
    for (size_t i = 0; i < r->ncurs; i++)
        if (r->curs[i]) mdb_cursor_close(r->curs[i]);
    free(r->items); /* (the one allocation) */
}

/* Evaluate q (not q->all) over positions [lo, hi] in t. 0 or an LMDB code (ENOMEM). */
static int qrun_open(qrun *r, annal_db *db, MDB_txn *t, const annal__query *q, int backward,
                     uint64_t lo, uint64_t hi) {
    *r = (qrun){db, t, backward, lo, hi, NULL, q->nitems, NULL, NULL, 0, 0};
    size_t nw = 0, nc = 0;
    for (size_t i = 0; i < q->nitems; i++) {
        const annal__qitem *it = &q->items[i];
        nw += it->ntags ? 1 : it->ntypes;
        nc += it->ntags ? it->ntags + it->ntypes : 0;
    }
    /* one allocation: items, then walks, then cursors (each array suitably aligned) */
    size_t a = q->nitems * sizeof *r->items, b = nw * sizeof *r->walks;
    char *mem = calloc(1, a + b + nc * sizeof *r->curs + 1);
    r->items = (qitem *)(void *)mem;
    r->walks = (qwalk *)(void *)(mem + a);
    r->curs = (MDB_cursor **)(void *)(mem + a + b);
    int mrc = mem ? 0 : ENOMEM;
    for (size_t i = 0; i < q->nitems && !mrc; i++) mrc = item_open(r, &r->items[i], &q->items[i]);
    return mrc;
}

/* The query's next slice in reading order: the items' slices that start at the same
 * position, ORed. MDB_NOTFOUND when none is left. */
static int qrun_next(qrun *r, qslice *out) {
    qitem *best = NULL;
    for (size_t i = 0; i < r->nitems; i++)
        if (r->items[i].has && (!best || before(r, r->items[i].cur.fp, best->cur.fp)))
            best = &r->items[i];
    if (!best) return MDB_NOTFOUND;
    *out = best->cur;
    out->mask = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        qitem *q = &r->items[i];
        if (!q->has || q->cur.fp != out->fp) continue;
        out->mask |= q->cur.mask;
        if (q->cur.lpos < out->lpos) out->lpos = q->cur.lpos, out->loc = q->cur.loc;
        int mrc = item_peek(r, q);
        if (mrc) return mrc;
    }
    return 0;
}

/* The positions and locations of the slice's matches, in position order. ANNAL_ENOTFOUND
 * when its location names a generation compaction deleted. */
static annal_err slice_members(annal_db *db, const qslice *s, uint64_t *pos, uint64_t *loc,
                               size_t *n) {
    /* The walk starts at the record of lpos (a member of some block of the slice). */
    annal__block b = {s->fp, s->loc, s->mask | 1ull << (s->lpos - s->fp), 0};
    size_t m = 0;
    annal_err rc = annal__block_members(db, &b, pos, loc, &m);
    *n = 0;
    for (size_t i = 0; rc == ANNAL_OK && i < m; i++)
        if (s->mask >> (pos[i] - s->fp) & 1) pos[*n] = pos[i], loc[(*n)++] = loc[i];
    return rc;
}

static annal_err mdb_fail(annal_db *db, int mrc) {
    return mrc == ENOMEM ? annal__fail(db, ANNAL_ENOMEM, "out of memory")
                         : annal__fail_index(db, mrc);
}

annal_err annal__query_fetch(annal_db *db, MDB_txn *t, const annal__query *q, int backward,
                             uint64_t *lo, uint64_t *hi, uint64_t *pos, uint64_t *loc, size_t cap,
                             size_t *n, int *done) {
    qrun r;
    *n = 0;
    *done = 0;
    int mrc = qrun_open(&r, db, t, q, backward, *lo, *hi);
    annal_err rc = ANNAL_OK;
    qslice s;
    while (!mrc && rc == ANNAL_OK) {
        if (*n + ANNAL__BLOCK > cap) break; /* the rest next time, from the bound */
        if ((mrc = qrun_next(&r, &s)) != 0) break;
        uint64_t p[ANNAL__BLOCK], l[ANNAL__BLOCK];
        size_t m;
        rc = slice_members(db, &s, p, l, &m);
        for (size_t i = 0; rc == ANNAL_OK && i < m; i++) {
            size_t k = backward ? m - 1 - i : i;
            pos[*n] = p[k];
            loc[(*n)++] = l[k];
        }
        if (rc != ANNAL_OK) break;
        /* Past this slice: its matches are taken (another slice may start right after
         * its last match: a batch of its own). */
        if (backward && s.fp == 0) {
            *done = 1;
            break;
        }
        if (backward)
            *hi = s.fp - 1;
        else
            *lo = s.fp + 64 - (uint64_t)__builtin_clzll(s.mask);
    }
    qrun_close(&r);
    if (mrc == MDB_NOTFOUND) *done = 1, mrc = 0;
    if (mrc) return mdb_fail(db, mrc);
    if (rc == ANNAL_ECORRUPT)
        return annal__fail(db, rc, "damaged log in a slice at position %" PRIu64, s.fp);
    return rc;
}

/* ---- the condition check (the group commit's leader) ------------------------------ */

/* Would a read return the committed event at loc (position p)? Its stream's metadata as
 * the group's transaction has it. */
static annal_err readable(annal_db *db, MDB_txn *t, uint64_t loc, uint64_t p, int64_t now,
                          int *ok) {
    annal_event ev;
    annal__rec_info info;
    annal_err rc = annal__log_read_at(&db->log, loc, p, &ev, &info);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc, "condition: cannot read the event at position %" PRIu64, p);
    annal__stream_rec sr;
    rc = annal__index_stream_get(t, &db->idx, ev.stream, ev.stream_len, &sr);
    *ok = rc == ANNAL_ENOTFOUND ||
          (rc == ANNAL_OK && annal__event_visible(&sr, ev.revision, ev.timestamp_ns, now));
    return rc == ANNAL_ENOTFOUND ? ANNAL_OK : rc;
}

/* A query that matches every event: the first readable event from lo on. */
static annal_err check_any(annal_db *db, MDB_txn *t, uint64_t lo, uint64_t committed,
                           int restricted, uint64_t *found) {
    annal__cursor c;
    uint64_t base, l;
    annal_err rc = lo < committed ? annal__index_pos_floor(t, &db->idx, lo, &base, &l) : ANNAL_END;
    if (rc == ANNAL_ENOTFOUND && db->log.nsegs) {
        c = (annal__cursor){&db->log, db->log.segs[0], ANNAL__SEG_HDR, db->log.segs[0]->first_pos};
        rc = ANNAL_OK;
    } else if (rc == ANNAL_OK) {
        annal__seg *s = annal__log_seg_at(&db->log, l);
        c = (annal__cursor){&db->log, s, ANNAL__LOC_OFF(l), base};
        rc = s ? ANNAL_OK : ANNAL_ECORRUPT;
    }
    if (rc == ANNAL_OK) rc = annal__cursor_seek(&c, lo);
    int64_t now = annal__now_ns();
    while (rc == ANNAL_OK) {
        annal_event ev;
        annal__rec_info info;
        rc = annal__cursor_next(&c, &ev, &info, &l);
        if (rc != ANNAL_OK || ev.position >= committed) break;
        int ok = 1;
        if (restricted) rc = readable(db, t, l, ev.position, now, &ok);
        if (rc == ANNAL_OK && ok) {
            *found = ev.position;
            return ANNAL_ECONDITION;
        }
    }
    if (rc != ANNAL_OK && rc != ANNAL_END)
        return annal__fail(db, rc, "condition: cannot read the log from position %" PRIu64, lo);
    uint64_t ahead = lo > committed ? lo : committed; /* the group's, ahead of this one */
    if (db->head.next_pos > ahead) {
        *found = ahead;
        return ANNAL_ECONDITION;
    }
    return ANNAL_OK;
}

/* In the slice s: the first match a read would return; ANNAL_ECONDITION and *found. */
static annal_err check_slice(annal_db *db, MDB_txn *t, const qslice *s, uint64_t committed,
                             int restricted, uint64_t *found) {
    if (!restricted || s->fp >= committed) { /* a batch is committed whole or not at all */
        *found = s->fp + (uint64_t)__builtin_ctzll(s->mask);
        return ANNAL_ECONDITION;
    }
    uint64_t pos[ANNAL__BLOCK], loc[ANNAL__BLOCK];
    size_t n;
    annal_err rc = slice_members(db, s, pos, loc, &n);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc == ANNAL_ENOTFOUND ? ANNAL_ECORRUPT : rc,
                           "condition: cannot find the events of the slice at %" PRIu64, s->fp);
    int64_t now = annal__now_ns();
    for (size_t i = 0; i < n; i++) {
        int ok;
        rc = readable(db, t, loc[i], pos[i], now, &ok);
        if (rc != ANNAL_OK) return rc;
        if (ok) {
            *found = pos[i];
            return ANNAL_ECONDITION;
        }
    }
    return ANNAL_OK;
}

annal_err annal__dcb_check(annal_db *db, MDB_txn *t, const annal__query *q, uint64_t after,
                           uint64_t *found) {
    uint64_t lo = after == ANNAL_AFTER_NONE ? 0 : after + 1;
    uint64_t committed = __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE);
    int restricted = db->head.restricted > 0; /* the group's, this request's head */
    if (lo >= db->head.next_pos) return ANNAL_OK;
    if (q->all) return check_any(db, t, lo, committed, restricted, found);
    qrun r;
    int mrc = qrun_open(&r, db, t, q, 0, lo, UINT64_MAX);
    annal_err rc = ANNAL_OK;
    qslice s;
    while (!mrc && rc == ANNAL_OK && (mrc = qrun_next(&r, &s)) == 0)
        rc = check_slice(db, t, &s, committed, restricted, found);
    qrun_close(&r);
    if (mrc && mrc != MDB_NOTFOUND) return mdb_fail(db, mrc);
    return rc;
}
