/* decision.c -- annal_decision, what a decider's decide() fills: events to append (copied,
 * so the decider may emit from its stack) or a domain rejection with a reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "write.h"

void annal__write_decision_init(annal_decision *d) { memset(d, 0, sizeof *d); }

void annal__write_decision_reset(annal_decision *d) {
    for (size_t i = 0; i < d->n; i++) {
        free((void *)d->ev[i].type);
        free(d->merged[i]);
        free(d->tagblk[i]);
    }
    d->n = 0;
    d->err = ANNAL_OK;
    d->code = 0;
    d->reason[0] = '\0';
}

void annal__write_decision_free(annal_decision *d) {
    annal__write_decision_reset(d);
    free(d->ev);
    free(d->merged);
    free(d->tl);
    free(d->tagblk);
    annal__write_decision_init(d);
}

static annal_err fail(annal_decision *d, annal_err rc) {
    if (d->err == ANNAL_OK) d->err = rc;
    return rc;
}

annal_err annal_decision_emit(annal_decision *d, const char *type, const void *data,
                              size_t data_len, const void *metadata, size_t metadata_len) {
    if (!d) return ANNAL_EINVAL;
    size_t tlen = type ? strnlen(type, ANNAL_MAX_NAME + 1) : 0;
    if (tlen == 0 || tlen > ANNAL_MAX_NAME || (!data && data_len) || (!metadata && metadata_len))
        return fail(d, ANNAL_EINVAL);
    if (data_len > SIZE_MAX / 4 || metadata_len > SIZE_MAX / 4) return fail(d, ANNAL_ETOOBIG);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        annal_event_data *ev = realloc(d->ev, cap * sizeof *ev);
        if (!ev) return fail(d, ANNAL_ENOMEM);
        d->ev = ev;
        char **m = realloc(d->merged, cap * sizeof *m);
        if (!m) return fail(d, ANNAL_ENOMEM);
        d->merged = m;
        annal_tag_list *tl = realloc(d->tl, cap * sizeof *tl);
        if (!tl) return fail(d, ANNAL_ENOMEM);
        d->tl = tl;
        char **tb = realloc(d->tagblk, cap * sizeof *tb);
        if (!tb) return fail(d, ANNAL_ENOMEM);
        d->tagblk = tb;
        d->cap = cap;
    }
    char *blk = malloc(tlen + 1 + data_len + metadata_len);
    if (!blk) return fail(d, ANNAL_ENOMEM);
    memcpy(blk, type, tlen + 1);
    if (data_len) memcpy(blk + tlen + 1, data, data_len);
    if (metadata_len) memcpy(blk + tlen + 1 + data_len, metadata, metadata_len);
    annal_event_data *e = &d->ev[d->n];
    memset(e, 0, sizeof *e); /* zero id: the store assigns a UUIDv7 */
    e->type = blk;
    e->data = data_len ? blk + tlen + 1 : NULL;
    e->data_len = data_len;
    e->metadata = metadata_len ? blk + tlen + 1 + data_len : NULL;
    e->metadata_len = metadata_len;
    d->merged[d->n] = NULL;
    d->tl[d->n] = (annal_tag_list){NULL, 0};
    d->tagblk[d->n] = NULL;
    d->n++;
    return ANNAL_OK;
}

annal_err annal_decision_emit_tagged(annal_decision *d, const char *type, const void *data,
                                     size_t data_len, const void *metadata, size_t metadata_len,
                                     const char *const *tags, size_t ntags) {
    if (!d) return ANNAL_EINVAL;
    if (ntags && !tags) return fail(d, ANNAL_EINVAL);
    if (ntags > ANNAL_MAX_TAGS) return fail(d, ANNAL_ETOOBIG);
    size_t bytes = ntags * sizeof(char *);
    for (size_t i = 0; i < ntags; i++) {
        size_t len = tags[i] ? strnlen(tags[i], ANNAL_MAX_TAG_BYTES + 1) : 0;
        if (len == 0) return fail(d, ANNAL_EINVAL);
        if (len > ANNAL_MAX_TAG_BYTES) return fail(d, ANNAL_ETOOBIG);
        bytes += len + 1;
    } /* (UTF-8 and repeats are the store's to check, when the command appends) */
    annal_err rc = annal_decision_emit(d, type, data, data_len, metadata, metadata_len);
    if (rc != ANNAL_OK || ntags == 0) return rc;
    char *blk = malloc(bytes);
    if (!blk) return fail(d, ANNAL_ENOMEM);
    const char **ptrs = (const char **)(void *)blk;
    char *text = blk + ntags * sizeof(char *);
    for (size_t i = 0; i < ntags; i++) {
        size_t len = strlen(tags[i]) + 1;
        memcpy(text, tags[i], len);
        ptrs[i] = text;
        text += len;
    }
    d->tagblk[d->n - 1] = blk;
    d->tl[d->n - 1] = (annal_tag_list){ptrs, ntags};
    return ANNAL_OK;
}

annal_err annal_decision_reject(annal_decision *d, int code, const char *reason) {
    if (!d || code == 0) return ANNAL_EINVAL;
    d->code = code;
    snprintf(d->reason, sizeof d->reason, "%s", reason ? reason : "");
    return ANNAL_OK;
}
