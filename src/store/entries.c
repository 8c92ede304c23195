/* Entries: finding events in the log from the index (seek, locate, the members of an
 * index block), the event-id index as the store uses it (load, live lookups, claims),
 * and encoding an event's index entries (the batch encoder; what a `$metadata` or
 * `$streamDeleted` event implies). Append and recovery index through the same code,
 * so a rebuilt index holds what appends wrote. Calls down into handle.c only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base.h"
#include "store/db_int.h"

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

static int is_meta_event(const annal_event *ev) {
    return ev->stream_len > 2 && ev->stream[0] == '$' && ev->stream[1] == '$' &&
           strcmp(ev->type, ANNAL__META_TYPE) == 0;
}

/* A recognized member as a count: absent -> UNSET; 1 if malformed. */
int annal__meta_member(json_t *o, const char *key, uint64_t *out) {
    json_t *v = json_object_get(o, key);
    *out = ANNAL__UNSET;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Apply a `$metadata` event to the record of the stream it describes. A malformed
 * document (impossible through the API, which checks it) sets no limits, the same way
 * on append and on rebuild. */
static annal_err apply_meta(annal__index *idx, MDB_txn *t, annal__index_head *h,
                            const annal_event *ev) {
    const char *name = ev->stream + 2;
    size_t len = ev->stream_len - 2;
    annal__stream_rec r;
    annal_err rc = annal__index_stream_get(t, idx, name, len, &r);
    if (rc == ANNAL_ENOTFOUND) {
        r = annal__stream_rec_new(h->next_stream_id++, ev->timestamp_ns);
        rc = ANNAL_OK;
    }
    if (rc != ANNAL_OK) return rc;
    json_t *o = json_loadb(ev->data, ev->data_len, JSON_REJECT_DUPLICATES, NULL);
    uint64_t tb = ANNAL__UNSET, mc = ANNAL__UNSET, ma = ANNAL__UNSET;
    if (json_is_object(o) &&
        (annal__meta_member(o, "$tb", &tb) | annal__meta_member(o, "$maxCount", &mc) |
         annal__meta_member(o, "$maxAge", &ma)))
        tb = mc = ma = ANNAL__UNSET;
    if (json_is_object(o) && json_is_true(json_object_get(o, ANNAL__DELETED_KEY))) {
        r.flags |= ANNAL__SR_DELETED;
        /* The deleted events may have been compacted away: the delete's "$tb" (the
         * next revision when it was written) keeps the revisions going on rebuild. */
        if (tb != ANNAL__UNSET && tb > r.count) {
            if (r.count == 0) h->streams++;
            r.count = tb;
        }
    }
    json_decref(o);
    r.tb = tb, r.max_count = mc, r.max_age = ma;
    h->restricted++;
    return annal__index_stream_put(t, idx, name, len, &r);
}

annal_err annal__batch_add(annal__batch *a, const char *type, size_t tlen, const char *tags,
                           size_t tags_len, uint64_t pos, uint64_t loc) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint64_t *l = realloc(a->loc, cap * sizeof *l);
        if (l) a->loc = l;
        const char **ty = l ? realloc(a->type, cap * sizeof *ty) : NULL;
        if (ty) a->type = ty;
        uint64_t *tl = ty ? realloc(a->tkey, cap * sizeof *tl) : NULL;
        if (tl) a->tkey = tl;
        const char **tg = tl ? realloc(a->tags, cap * sizeof *tg) : NULL;
        if (tg) a->tags = tg;
        size_t *tgl = tg ? realloc(a->tags_len, cap * sizeof *tgl) : NULL;
        if (tgl) a->tags_len = tgl;
        uint8_t *o = tgl ? realloc(a->out, cap * ANNAL__BLOCK_VAL) : NULL;
        if (!o) return ANNAL_ENOMEM;
        a->out = o;
        a->cap = cap;
    }
    if (a->n == 0) a->first_pos = pos, a->ntags = 0;
    if (pos != a->first_pos + a->n) return ANNAL_ECORRUPT; /* a batch is consecutive */
    a->loc[a->n] = loc;
    a->type[a->n] = type;
    a->tags[a->n] = tags_len ? tags : NULL;
    a->tags_len[a->n] = tags_len;
    for (size_t i = 0; i < tags_len; i++) a->ntags += tags[i] == 0;
    uint32_t h = 2166136261u; /* FNV-1a: types are grouped by comparing keys first */
    for (size_t i = 0; i < tlen; i++) h = (h ^ (uint8_t)type[i]) * 16777619u;
    a->tkey[a->n] = (uint64_t)h << 32 | (uint32_t)tlen;
    a->n++;
    return ANNAL_OK;
}

/* One tag of one event of a batch, for grouping the batch's tags. */
typedef struct annal__tag_ent {
    uint64_t key; /* hash << 32 | length */
    const char *tag;
    size_t ev; /* index of the event in the batch */
} annal__tag_ent;

static int tag_ent_cmp(const void *x, const void *y) {
    const annal__tag_ent *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    int c = memcmp(a->tag, b->tag, (uint32_t)a->key);
    if (c) return c;
    return a->ev < b->ev ? -1 : a->ev > b->ev;
}

/* Tag blocks of the n gathered events: per distinct tag, the batch's slices of 64 with
 * the bits of its events (as type blocks). Sorting groups a tag's events in order. */
static annal_err put_tag_blocks(annal__batch *a, annal__index *idx, MDB_txn *t, size_t n) {
    if (a->ntags > a->tent_cap) {
        annal__tag_ent *e = realloc(a->tent, a->ntags * sizeof *e);
        if (!e) return ANNAL_ENOMEM;
        a->tent = e;
        a->tent_cap = a->ntags;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t off = 0; a->tags[i] && off < a->tags_len[i] && m < a->ntags;) {
            const char *tg = a->tags[i] + off;
            size_t len = strlen(tg);
            uint32_t h = 2166136261u;
            for (size_t j = 0; j < len; j++) h = (h ^ (uint8_t)tg[j]) * 16777619u;
            a->tent[m++] = (annal__tag_ent){(uint64_t)h << 32 | (uint32_t)len, tg, i};
            off += len + 1;
        }
    }
    if (m > 1) qsort(a->tent, m, sizeof *a->tent, tag_ent_cmp);
    annal_err rc = ANNAL_OK;
    for (size_t i = 0; i < m && rc == ANNAL_OK;) {
        const annal__tag_ent *g = &a->tent[i];
        size_t nb = 0, j = i;
        annal__block b = {0};
        for (; j < m && a->tent[j].key == g->key &&
               memcmp(a->tent[j].tag, g->tag, (uint32_t)g->key) == 0;
             j++) {
            size_t e = a->tent[j].ev;
            uint64_t start = a->first_pos + e / ANNAL__BLOCK * ANNAL__BLOCK;
            if (b.mask && b.first_pos != start) {
                annal__block_encode(&b, a->out + nb++ * ANNAL__BLOCK_VAL);
                b.mask = 0;
            }
            if (!b.mask) b.first_pos = start, b.loc = a->loc[e];
            b.mask |= 1ull << (e % ANNAL__BLOCK);
        }
        annal__block_encode(&b, a->out + nb++ * ANNAL__BLOCK_VAL);
        rc = annal__index_tag_put_many(t, idx->tags, g->tag, (uint32_t)g->key, a->out, nb);
        i = j;
    }
    return rc;
}

annal_err annal__batch_put(annal__batch *a, annal__index *idx, MDB_txn *t, const char *stream,
                           size_t slen, uint64_t sid, uint64_t first_rev) {
    size_t n = a->n, nb = 0;
    a->n = 0;
    annal_err rc = ANNAL_OK;
    /* Revision and category blocks: every 64 events of the batch. */
    for (size_t i = 0; i < n && rc == ANNAL_OK; i += ANNAL__BLOCK) {
        size_t m = n - i < ANNAL__BLOCK ? n - i : ANNAL__BLOCK;
        /* cppcheck-suppress knownConditionTrueFalse ; m is 64 for a whole block */
        annal__block b = {a->first_pos + i, a->loc[i], m == 64 ? ~0ull : (1ull << m) - 1,
                          first_rev + i};
        rc = annal__index_rev_put(t, idx, sid, &b);
        annal__block_encode(&b, a->out + nb++ * ANNAL__BLOCK_VAL);
    }
    if (rc == ANNAL_OK)
        rc = annal__index_tag_put_many(t, idx->cats, stream, annal__category_len(stream, slen),
                                       a->out, nb);
    /* Type blocks: per distinct type, the same slices with only its events' bits;
     * type[i] = NULL marks an event done. */
    for (size_t i = 0; i < n && rc == ANNAL_OK; i++) {
        if (!a->type[i]) continue;
        const char *ty = a->type[i];
        uint64_t key = a->tkey[i];
        size_t tl = (uint32_t)key;
        annal__block b = {0};
        nb = 0;
        for (size_t j = i; j < n; j++) {
            if (a->type[j] != ty &&
                (!a->type[j] || a->tkey[j] != key || memcmp(a->type[j], ty, tl)))
                continue; /* (callers often pass the same string for one type) */
            uint64_t start = a->first_pos + j / ANNAL__BLOCK * ANNAL__BLOCK;
            if (b.mask && b.first_pos != start) {
                annal__block_encode(&b, a->out + nb++ * ANNAL__BLOCK_VAL);
                b.mask = 0;
            }
            if (!b.mask) b.first_pos = start, b.loc = a->loc[j];
            b.mask |= 1ull << (j % ANNAL__BLOCK);
            a->type[j] = NULL;
        }
        annal__block_encode(&b, a->out + nb++ * ANNAL__BLOCK_VAL);
        rc = annal__index_tag_put_many(t, idx->types, ty, tl, a->out, nb);
    }
    if (rc == ANNAL_OK && a->ntags) rc = put_tag_blocks(a, idx, t, n);
    return rc;
}

void annal__batch_free(annal__batch *a) {
    free(a->loc);
    free(a->out);
    free(a->type);
    free(a->tkey);
    free(a->tags);
    free(a->tags_len);
    free(a->tent);
    memset(a, 0, sizeof *a);
}

annal_err annal__index_event_effects(annal__index *idx, MDB_txn *t, annal__index_head *h,
                                     annal__stream_rec *sr, const annal_event *ev) {
    if (sr->flags & ANNAL__SR_DELETED) sr->flags &= ~(uint64_t)ANNAL__SR_DELETED; /* re-created */
    if (strcmp(ev->type, ANNAL__TOMB_TYPE) == 0 && ev->stream[0] != '$') {
        sr->flags |= ANNAL__SR_TOMBSTONE;
        h->restricted++;
    }
    if (is_meta_event(ev)) return apply_meta(idx, t, h, ev);
    return ANNAL_OK;
}

char *annal__soft_delete_doc(const void *prev, size_t prev_len, uint64_t tb) {
    json_t *doc = prev ? json_loadb(prev, prev_len, 0, NULL) : NULL;
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    char *text = NULL;
    if (doc && !json_object_set_new(doc, "$tb", json_integer((json_int_t)tb)) &&
        !json_object_set_new(doc, ANNAL__DELETED_KEY, json_true())) {
        char *j = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        if (j && (text = malloc(strlen(j) + 1)) != NULL) memcpy(text, j, strlen(j) + 1);
        free(j);
    }
    json_decref(doc);
    return text;
}
