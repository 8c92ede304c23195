/* Stream metadata and deletion. Metadata lives in the log as `$metadata` events of the
 * stream `$$<name>`; indexing such an event copies its limits into <name>'s stream record,
 * and a `$streamDeleted` event tombstones its own stream. Append and recovery both index
 * through annal__index_event_effects, so a rebuilt index holds the same limits.
 * Visibility is decided at read time from the stream record: limits take effect at once,
 * compaction only reclaims space later. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base.h"
#include "store/db_int.h"

#define META_TYPE   "$metadata"
#define TOMB_TYPE   "$streamDeleted"
#define DELETED_KEY "$deleted" /* written by soft delete only */

static int is_meta_event(const annal_event *ev) {
    return ev->stream_len > 2 && ev->stream[0] == '$' && ev->stream[1] == '$' &&
           strcmp(ev->type, META_TYPE) == 0;
}

/* A recognized member as a count: absent -> UNSET; 1 if malformed. */
static int member_u64(json_t *o, const char *key, uint64_t *out) {
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
    if (json_is_object(o) && (member_u64(o, "$tb", &tb) | member_u64(o, "$maxCount", &mc) |
                              member_u64(o, "$maxAge", &ma)))
        tb = mc = ma = ANNAL__UNSET;
    if (json_is_object(o) && json_is_true(json_object_get(o, DELETED_KEY))) {
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

annal_err annal__batch_add(annal__batch *a, const char *type, size_t tlen, uint64_t pos,
                           uint64_t loc) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint64_t *l = realloc(a->loc, cap * sizeof *l);
        if (l) a->loc = l;
        const char **ty = l ? realloc(a->type, cap * sizeof *ty) : NULL;
        if (ty) a->type = ty;
        uint64_t *tl = ty ? realloc(a->tkey, cap * sizeof *tl) : NULL;
        if (tl) a->tkey = tl;
        uint8_t *o = tl ? realloc(a->out, cap * ANNAL__BLOCK_VAL) : NULL;
        if (!o) return ANNAL_ENOMEM;
        a->out = o;
        a->cap = cap;
    }
    if (a->n == 0) a->first_pos = pos;
    if (pos != a->first_pos + a->n) return ANNAL_ECORRUPT; /* a batch is consecutive */
    a->loc[a->n] = loc;
    a->type[a->n] = type;
    uint32_t h = 2166136261u; /* FNV-1a: types are grouped by comparing keys first */
    for (size_t i = 0; i < tlen; i++) h = (h ^ (uint8_t)type[i]) * 16777619u;
    a->tkey[a->n] = (uint64_t)h << 32 | (uint32_t)tlen;
    a->n++;
    return ANNAL_OK;
}

annal_err annal__batch_put(annal__batch *a, annal__index *idx, MDB_txn *t, const char *stream,
                           size_t slen, uint64_t sid, uint64_t first_rev) {
    size_t n = a->n, nb = 0;
    a->n = 0;
    annal_err rc = ANNAL_OK;
    /* Revision and category blocks: every 64 events of the batch. */
    for (size_t i = 0; i < n && rc == ANNAL_OK; i += ANNAL__BLOCK) {
        size_t m = n - i < ANNAL__BLOCK ? n - i : ANNAL__BLOCK;
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
    return rc;
}

void annal__batch_free(annal__batch *a) {
    free(a->loc);
    free(a->out);
    free(a->type);
    free(a->tkey);
    memset(a, 0, sizeof *a);
}

annal_err annal__index_event_effects(annal__index *idx, MDB_txn *t, annal__index_head *h,
                                     annal__stream_rec *sr, const annal_event *ev) {
    if (sr->flags & ANNAL__SR_DELETED) sr->flags &= ~(uint64_t)ANNAL__SR_DELETED; /* re-created */
    if (strcmp(ev->type, TOMB_TYPE) == 0 && ev->stream[0] != '$') {
        sr->flags |= ANNAL__SR_TOMBSTONE;
        h->restricted++;
    }
    if (is_meta_event(ev)) return apply_meta(idx, t, h, ev);
    return ANNAL_OK;
}

uint64_t annal__first_visible(const annal__stream_rec *sr) {
    if (sr->flags & ANNAL__SR_TOMBSTONE) return sr->count ? sr->count - 1 : 0;
    uint64_t first = sr->tb == ANNAL__UNSET ? 0 : sr->tb;
    if (sr->max_count != ANNAL__UNSET && sr->count > sr->max_count &&
        sr->count - sr->max_count > first)
        first = sr->count - sr->max_count;
    return first;
}

int annal__event_visible(const annal__stream_rec *sr, uint64_t rev, int64_t ts, int64_t now_ns) {
    if (rev < annal__first_visible(sr)) return 0;
    if (sr->flags & ANNAL__SR_DELETED) return 0;
    if (sr->max_age != ANNAL__UNSET && !(sr->flags & ANNAL__SR_TOMBSTONE)) {
        int64_t age = sr->max_age > (uint64_t)(INT64_MAX / 1000000000)
                          ? INT64_MAX
                          : (int64_t)sr->max_age * 1000000000;
        if (now_ns - ts > age) return 0;
    }
    return 1;
}

/* ---- API ---- */

static annal_err meta_name(annal_db *db, const char *stream, char *out, size_t *len) {
    size_t n;
    if (!annal__stream_name_ok(stream, &n))
        return annal__fail(db, ANNAL_EINVAL,
                           "invalid stream name: must be 1..%d bytes of UTF-8, not starting "
                           "with '$'",
                           ANNAL_MAX_STREAM_NAME);
    out[0] = out[1] = '$';
    memcpy(out + 2, stream, n + 1);
    *len = n + 2;
    return ANNAL_OK;
}

/* Append a document to $$stream, guarded by stream's state. */
static annal_err meta_write(annal_db *db, const char *mname, int64_t expected, json_t *doc,
                            const annal__guard *g, annal_append_result *result) {
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) return ANNAL_ENOMEM;
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = META_TYPE;
    ev.data = text;
    ev.data_len = strlen(text);
    annal_err rc = annal__append(db, mname, expected, &ev, 1, result, g);
    free(text);
    return rc;
}

static annal_err meta_set(annal_db *db, const char *stream, int64_t expected, const char *json,
                          size_t json_len, annal_append_result *result) {
    if (!db || !stream || (!json && json_len)) return ANNAL_EINVAL;
    char mname[ANNAL_MAX_NAME + 3];
    size_t mlen;
    annal_err rc = meta_name(db, stream, mname, &mlen);
    if (rc != ANNAL_OK) return rc;
    json_error_t je;
    json_t *o = json_loadb(json ? json : "", json_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return annal__fail(db, ANNAL_EINVAL, "stream metadata must be a JSON object%s%s",
                           o ? "" : ": ", o ? "" : je.text);
    }
    uint64_t x;
    const char *bad = member_u64(o, "$tb", &x)         ? "$tb"
                      : member_u64(o, "$maxCount", &x) ? "$maxCount"
                      : member_u64(o, "$maxAge", &x)   ? "$maxAge"
                                                       : NULL;
    if (!bad && json_object_get(o, DELETED_KEY)) bad = DELETED_KEY;
    if (bad) {
        json_decref(o);
        return annal__fail(db, ANNAL_EINVAL, "%s",
                           strcmp(bad, DELETED_KEY) == 0
                               ? "\"$deleted\" is set by annal_stream_delete, not by metadata"
                               : "metadata limits ($tb, $maxCount, $maxAge) must be "
                                 "non-negative integers");
    }
    annal__guard g = {stream, strlen(stream), ANNAL_EXPECT_ANY, 0, 0};
    rc = meta_write(db, mname, expected, o, &g, result);
    json_decref(o);
    return rc;
}

/* The newest metadata document of stream (a new empty object if none) and its revision. */
static annal_err meta_load(annal_db *db, const char *mname, json_t **doc, int64_t *rev) {
    annal_iter *it = NULL;
    *doc = NULL;
    *rev = -1;
    annal_err rc = annal_read_stream(db, mname, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 1, &it);
    const annal_event *ev = NULL;
    if (rc == ANNAL_OK) rc = annal_iter_next(it, &ev);
    if (rc == ANNAL_OK) {
        *doc = json_loadb(ev->data, ev->data_len, 0, NULL);
        *rev = (int64_t)ev->revision;
        if (!json_is_object(*doc)) {
            json_decref(*doc);
            *doc = NULL;
        }
    }
    annal_iter_close(it);
    if (rc == ANNAL_ENOTFOUND || rc == ANNAL_END) rc = ANNAL_OK;
    if (rc == ANNAL_OK && !*doc && !(*doc = json_object())) rc = ANNAL_ENOMEM;
    return rc;
}

annal_err annal_stream_meta_get(annal_db *db, const char *stream, char **json, int64_t *revision) {
    if (!db || !stream || !json) return ANNAL_EINVAL;
    *json = NULL;
    char mname[ANNAL_MAX_NAME + 3];
    size_t mlen;
    annal_err rc = meta_name(db, stream, mname, &mlen);
    if (rc != ANNAL_OK) return rc;
    json_t *doc;
    int64_t rev;
    rc = meta_load(db, mname, &doc, &rev);
    if (rc != ANNAL_OK) return rc;
    json_object_del(doc, DELETED_KEY); /* an implementation detail of soft delete */
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text) return ANNAL_ENOMEM;
    size_t n = strlen(text) + 1;
    *json = malloc(n); /* released with annal_free, not jansson's free */
    if (*json) memcpy(*json, text, n);
    free(text);
    if (!*json) return ANNAL_ENOMEM;
    if (revision) *revision = rev;
    return ANNAL_OK;
}

static annal_err stream_delete(annal_db *db, const char *stream, int64_t expected, unsigned flags,
                               annal_append_result *result) {
    if (!db || !stream || (flags & ~ANNAL_DELETE_HARD)) return ANNAL_EINVAL;
    char mname[ANNAL_MAX_NAME + 3];
    size_t mlen;
    annal_err rc = meta_name(db, stream, mname, &mlen);
    if (rc != ANNAL_OK) return rc;
    if (flags & ANNAL_DELETE_HARD) {
        annal__guard g = {stream, strlen(stream), expected, 1, 0};
        annal_event_data ev;
        memset(&ev, 0, sizeof ev);
        ev.type = TOMB_TYPE;
        return annal__append(db, stream, expected, &ev, 1, result, &g);
    }
    /* Soft: the leader writes the document, with "$tb" = the stream's next revision at the
     * commit, atomically with the check of expected. */
    annal__guard g = {stream, strlen(stream), expected, 1, 1};
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = META_TYPE;
    ev.data = "{}"; /* replaced by the leader; counted for the size checks */
    ev.data_len = 2;
    return annal__append(db, mname, ANNAL_EXPECT_ANY, &ev, 1, result, &g);
}

char *annal__soft_delete_doc(const void *prev, size_t prev_len, uint64_t tb) {
    json_t *doc = prev ? json_loadb(prev, prev_len, 0, NULL) : NULL;
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    char *text = NULL;
    if (doc && !json_object_set_new(doc, "$tb", json_integer((json_int_t)tb)) &&
        !json_object_set_new(doc, DELETED_KEY, json_true())) {
        char *j = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        if (j && (text = malloc(strlen(j) + 1)) != NULL) memcpy(text, j, strlen(j) + 1);
        free(j);
    }
    json_decref(doc);
    return text;
}

/* The public entry points write at most the caller's sizeof(annal_append_result). */
annal_err annal_stream_meta_set_sized(annal_db *db, const char *stream, int64_t expected,
                                      const char *json, size_t json_len,
                                      annal_append_result *result, size_t result_size) {
    annal_append_result r = {0};
    annal_err rc = meta_set(db, stream, expected, json, json_len, result ? &r : NULL);
    annal__out_copy(result, result_size, &r, sizeof r);
    return rc;
}

annal_err annal_stream_delete_sized(annal_db *db, const char *stream, int64_t expected,
                                    unsigned flags, annal_append_result *result,
                                    size_t result_size) {
    annal_append_result r = {0};
    annal_err rc = stream_delete(db, stream, expected, flags, result ? &r : NULL);
    annal__out_copy(result, result_size, &r, sizeof r);
    return rc;
}
