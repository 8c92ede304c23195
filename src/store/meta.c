/* Stream metadata and deletion, the API. Metadata lives in the log as `$metadata` events
 * of the stream `$$<name>`; indexing such an event copies its limits into <name>'s
 * stream record, and a `$streamDeleted` event tombstones its own stream (entries.c:
 * annal__index_event_effects, for append and recovery alike). Visibility is decided at
 * read time from the stream record (handle.c): limits take effect at once, compaction
 * only reclaims space later. Built on append.c and read.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base.h"
#include "store/db_int.h"

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
    ev.type = ANNAL__META_TYPE;
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
    const char *bad = annal__meta_member(o, "$tb", &x)         ? "$tb"
                      : annal__meta_member(o, "$maxCount", &x) ? "$maxCount"
                      : annal__meta_member(o, "$maxAge", &x)   ? "$maxAge"
                                                               : NULL;
    if (!bad && json_object_get(o, ANNAL__DELETED_KEY)) bad = ANNAL__DELETED_KEY;
    if (bad) {
        json_decref(o);
        return annal__fail(db, ANNAL_EINVAL, "%s",
                           strcmp(bad, ANNAL__DELETED_KEY) == 0
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
    json_object_del(doc, ANNAL__DELETED_KEY); /* an implementation detail of soft delete */
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
        ev.type = ANNAL__TOMB_TYPE;
        return annal__append(db, stream, expected, &ev, 1, result, &g);
    }
    /* Soft: the leader writes the document, with "$tb" = the stream's next revision at the
     * commit, atomically with the check of expected. */
    annal__guard g = {stream, strlen(stream), expected, 1, 1};
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = ANNAL__META_TYPE;
    ev.data = "{}"; /* replaced by the leader; counted for the size checks */
    ev.data_len = 2;
    return annal__append(db, mname, ANNAL_EXPECT_ANY, &ev, 1, result, &g);
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
