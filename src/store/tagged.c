/* Appends with tags and a condition (annal.h: annal_append_tagged, annal_append_if):
 * tags validated and packed for the record, the condition compiled (dcb.c), and the
 * whole set handed to multi.c's atomic appends, whose group-commit leader checks the
 * condition (dcb.c's annal__dcb_check). Above multi.c; dcb.c is below it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

/* Check the tags of one event (limits, UTF-8, no repeats); *bytes gets their section's
 * length. */
static annal_err tags_ok(annal_db *db, size_t part, size_t e, const annal_tag_list *tl,
                         size_t *bytes) {
    *bytes = 0;
    if (tl->n > ANNAL_MAX_TAGS)
        return annal__fail(db, ANNAL_ETOOBIG, "part %zu, event %zu: %zu tags; the limit is %d",
                           part, e, tl->n, ANNAL_MAX_TAGS);
    if (tl->n && !tl->tags)
        return annal__fail(db, ANNAL_EINVAL, "part %zu, event %zu: tags is NULL", part, e);
    for (size_t i = 0; i < tl->n; i++) {
        const char *tg = tl->tags[i];
        size_t len = tg ? strnlen(tg, ANNAL_MAX_TAG_BYTES + 1) : 0;
        if (len > ANNAL_MAX_TAG_BYTES)
            return annal__fail(db, ANNAL_ETOOBIG,
                               "part %zu, event %zu: tag %zu is longer than %d bytes", part, e, i,
                               ANNAL_MAX_TAG_BYTES);
        if (!tg || !annal__name_ok(tg, &len))
            return annal__fail(db, ANNAL_EINVAL,
                               "part %zu, event %zu: tag %zu is not 1..%d bytes of UTF-8", part, e,
                               i, ANNAL_MAX_TAG_BYTES);
        for (size_t j = 0; j < i; j++)
            if (strcmp(tl->tags[j], tg) == 0)
                return annal__fail(db, ANNAL_EINVAL, "part %zu, event %zu: tag %s appears twice",
                                   part, e, tg);
        *bytes += len + 1;
    }
    return ANNAL_OK;
}

/* The tags of every event of the parts, checked and packed as records hold them: one
 * allocation (*buf, caller frees) and per event its section in tags[]. *extra: bytes
 * they add to the records. */
static annal_err pack_tags(annal_db *db, const annal_tagged_append *parts, size_t nparts,
                           const size_t *slen, annal__evtags **tags, uint64_t *extra) {
    size_t total = 0, bytes = 0, len;
    *tags = NULL;
    *extra = 0;
    for (size_t i = 0; i < nparts; i++) {
        for (size_t e = 0; parts[i].tags && e < parts[i].n; e++) {
            annal_err rc = tags_ok(db, i, e, &parts[i].tags[e], &len);
            if (rc != ANNAL_OK) return rc;
            bytes += len;
        }
        total += parts[i].n;
    }
    if (bytes == 0) return ANNAL_OK;
    annal__evtags *t = calloc(1, total * sizeof *t + bytes);
    if (!t) return annal__fail(db, ANNAL_ENOMEM, "out of memory");
    char *text = (char *)(t + total);
    size_t k = 0;
    for (size_t i = 0; i < nparts; i++) {
        for (size_t e = 0; e < parts[i].n; e++, k++) {
            const annal_tag_list *tl = parts[i].tags ? &parts[i].tags[e] : NULL;
            if (!tl || tl->n == 0) continue;
            t[k].p = text;
            for (size_t j = 0; j < tl->n; j++) {
                size_t l = strlen(tl->tags[j]) + 1;
                memcpy(text, tl->tags[j], l);
                text += l;
            }
            t[k].len = (size_t)(text - t[k].p);
            const annal_event_data *ev = &parts[i].events[e];
            size_t tl_ = strlen(ev->type);
            *extra += annal__rec_size_tags(slen[i], tl_, ev->data_len, ev->metadata_len, t[k].len) -
                      annal__rec_size(slen[i], tl_, ev->data_len, ev->metadata_len);
        }
    }
    *tags = t;
    return ANNAL_OK;
}

annal_err annal_append_tagged_sized(annal_db *db, const annal_tagged_append *parts, size_t nparts,
                                    const annal_stream_check *checks, size_t nchecks,
                                    const annal_condition *cond, annal_multi_result *res,
                                    size_t res_size) {
    if (!db) return ANNAL_EINVAL;
    if (db->readonly) return annal__fail(db, ANNAL_EREADONLY, "the store is open read-only");
    if (nparts == 0 || !parts)
        return annal__fail(db, ANNAL_EINVAL, "annal_append_tagged needs at least one part");
    if (nparts > db->opts.max_batch_events)
        return annal__fail(db, ANNAL_ETOOBIG, "%zu parts; the limit is %u", nparts,
                           db->opts.max_batch_events);
    annal_multi_result r = {0};
    if (res) memcpy(&r, res, res_size < sizeof r ? res_size : sizeof r); /* the in-fields */
    annal__dcb d = {.after = cond ? cond->after : 0, .cond_pos = UINT64_MAX};
    annal_stream_append *sp = malloc(nparts * sizeof *sp);
    unsigned char *sys = malloc(nparts);
    size_t *slen = malloc(nparts * sizeof *slen);
    annal__evtags *tags = NULL;
    annal__query *cq = NULL;
    uint64_t extra = 0;
    annal_err rc = sp && sys && slen ? ANNAL_OK : annal__fail(db, ANNAL_ENOMEM, "out of memory");
    for (size_t i = 0; rc == ANNAL_OK && i < nparts; i++) {
        sys[i] = parts[i].stream == NULL;
        sp[i] = (annal_stream_append){sys[i] ? ANNAL_DCB_STREAM : parts[i].stream,
                                      sys[i] ? ANNAL_EXPECT_ANY : parts[i].expected,
                                      parts[i].events, parts[i].n};
        slen[i] = sp[i].stream ? strnlen(sp[i].stream, ANNAL_MAX_NAME + 1) : 0;
        if (parts[i].n && !parts[i].events)
            rc = annal__fail(db, ANNAL_EINVAL, "part %zu: events is NULL", i);
        for (size_t e = 0; rc == ANNAL_OK && e < parts[i].n; e++)
            if (!parts[i].events[e].type)
                rc = annal__fail(db, ANNAL_EINVAL, "part %zu, event %zu: type is NULL", i, e);
    }
    if (rc == ANNAL_OK) rc = pack_tags(db, parts, nparts, slen, &tags, &extra);
    if (rc == ANNAL_OK && cond) rc = annal__query_compile(db, cond->query, &cq);
    if (rc == ANNAL_OK) {
        d.tags = tags;
        d.sys = sys;
        d.cond = cq;
        d.cond_pos = UINT64_MAX;
        /* The tags' bytes are added to the records' by annal__append_parts's checks. */
        r.condition_position = UINT64_MAX;
        d.extra = extra;
        rc = annal__append_parts(db, sp, nparts, checks, nchecks, &d, &r);
    }
    r.condition_position = d.cond_pos;
    if (res) annal__out_copy(res, res_size, &r, sizeof r);
    free(sp);
    free(sys);
    free(slen);
    free(tags);
    free(cq);
    return rc;
}

annal_err annal_append_if_sized(annal_db *db, annal_event_data *events, const annal_tag_list *tags,
                                size_t n, const annal_condition *cond, annal_append_result *result,
                                uint64_t *condition_position, size_t result_size) {
    annal_tagged_append part = {NULL, ANNAL_EXPECT_ANY, events, tags, n};
    annal_append_result pr = {0};
    annal_multi_result r = {.parts = &pr};
    annal_err rc = annal_append_tagged(db, &part, 1, NULL, 0, cond, &r);
    if (condition_position) *condition_position = r.condition_position;
    annal__out_copy(result, result_size, &pr, sizeof pr);
    return rc;
}
