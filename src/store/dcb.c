/* Dynamic Consistency Boundaries (annal.h): queries over event types and tags, reads by
 * query, and appends with a condition. This file holds what needs no index; the engine
 * (tag index, query cursors, the leader's condition check) comes in the next commits. */
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

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

annal_err annal_read_query(annal_db *db, const annal_query *q, uint64_t from, unsigned flags,
                           uint64_t limit, annal_iter **out) {
    (void)q, (void)from, (void)flags, (void)limit;
    if (out) *out = NULL;
    if (!db) return ANNAL_EINVAL;
    return annal__fail(db, ANNAL_ENOTSUP, "annal_read_query is not implemented yet");
}

annal_err annal_append_tagged_sized(annal_db *db, const annal_tagged_append *parts, size_t nparts,
                                    const annal_stream_check *checks, size_t nchecks,
                                    const annal_condition *cond, annal_multi_result *res,
                                    size_t res_size) {
    (void)parts, (void)nparts, (void)checks, (void)nchecks, (void)cond, (void)res, (void)res_size;
    if (!db) return ANNAL_EINVAL;
    return annal__fail(db, ANNAL_ENOTSUP, "annal_append_tagged is not implemented yet");
}

annal_err annal_append_if_sized(annal_db *db, annal_event_data *events, const annal_tag_list *tags,
                                size_t n, const annal_condition *cond, annal_append_result *result,
                                uint64_t *condition_position, size_t result_size) {
    (void)events, (void)tags, (void)n, (void)cond, (void)result, (void)result_size;
    if (condition_position) *condition_position = UINT64_MAX;
    if (!db) return ANNAL_EINVAL;
    return annal__fail(db, ANNAL_ENOTSUP, "annal_append_if is not implemented yet");
}
