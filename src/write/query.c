/* query.c -- annal_handle_query: a decider whose state is folded from the events that
 * match a query (Dynamic Consistency Boundaries) instead of one stream's. As the stream
 * handler: load, decide without any lock, append; the append's condition is "nothing
 * matching the query after the last event folded", so a concurrent decision on an
 * overlapping boundary makes it fail with ANNAL_ECONDITION, and the handler folds the new
 * events and decides again. Built on annal.h only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annal.h"
#include "base/base.h"
#include "write.h"

/* A state being folded and the position of its last event. */
typedef struct qload {
    void *state;
    uint64_t last; /* ANNAL_AFTER_NONE: nothing folded yet */
    uint64_t folded;
    annal_buf bufs[2];
} qload;

static void qload_free(const annal__write_hview *v, qload *l) {
    if (l->state) {
        if (v->d->release) v->d->release(v->ctx, l->state);
        free(l->state);
    }
    annal__write_buf_free(&l->bufs[0]);
    annal__write_buf_free(&l->bufs[1]);
}

static annal_err qload_init(const annal__write_hview *v, qload *l) {
    memset(l, 0, sizeof *l);
    l->last = ANNAL_AFTER_NONE;
    annal__write_buf_init(&l->bufs[0]);
    annal__write_buf_init(&l->bufs[1]);
    l->state = calloc(1, v->d->state_size);
    if (!l->state) return ANNAL_ENOMEM;
    annal_err rc = v->d->init ? v->d->init(v->ctx, l->state) : ANNAL_OK;
    return rc;
}

/* Fold the events matching q after l->last into l (upcast first). */
static annal_err fold(const annal__write_hview *v, const annal_query *q, qload *l, char *err,
                      size_t errlen) {
    annal_iter *it;
    uint64_t from = l->last == ANNAL_AFTER_NONE ? 0 : l->last + 1;
    annal_err rc = annal_read_query(v->db, q, from, 0, 0, &it);
    if (rc != ANNAL_OK) {
        snprintf(err, errlen, "cannot read the query: %s", annal_db_errmsg(v->db));
        return rc;
    }
    const annal_event *ev;
    annal_err urc = ANNAL_OK; /* an upcaster's or evolve's error */
    while (urc == ANNAL_OK && (rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        annal_event tmp;
        const annal_event *up;
        urc = annal__write_upcast(v->schema, ev, &tmp, l->bufs, &up);
        if (urc == ANNAL_OK) urc = v->d->evolve(v->ctx, l->state, up);
        if (urc != ANNAL_OK) {
            snprintf(err, errlen, "cannot fold %s at position %llu: %s", ev->type,
                     (unsigned long long)ev->position, annal_errname(urc));
            break;
        }
        l->last = ev->position;
        l->folded++;
    }
    annal_iter_close(it);
    if (urc != ANNAL_OK) return urc == ANNAL_END ? ANNAL_EINVAL : urc;
    if (rc != ANNAL_END) {
        snprintf(err, errlen, "cannot read the query: %s", annal_db_errmsg(v->db));
        return rc;
    }
    return ANNAL_OK;
}

/* Decide on l's state and append what was decided on condition; ANNAL_ECONDITION when
 * something matching came after l->last. *done: the command is settled. */
static annal_err attempt(const annal__write_hview *v, const annal_query *q, const void *command,
                         const annal__write_cmeta *cm, qload *l, annal_decision *d,
                         annal_command_result *res, int *done) {
    char *msg = res->message;
    const size_t mlen = sizeof res->message;
    *done = 1;
    res->attempts++;
    res->state_position = l->last;
    annal__write_decision_reset(d);
    annal_err rc = v->d->decide(v->ctx, l->state, command, d);
    if (rc == ANNAL_OK) rc = d->err;
    if (rc != ANNAL_OK) {
        snprintf(msg, mlen, "decide failed: %s", annal_errname(rc));
        return rc;
    }
    if (d->code) {
        res->rejected = d->code;
        snprintf(msg, mlen, "%s", d->reason);
        return ANNAL_OK;
    }
    if (d->n == 0) return ANNAL_OK;
    rc = annal__write_prepare(v->schema, cm, d, msg, mlen);
    if (rc != ANNAL_OK) return rc;
    annal_condition c = {q, l->last};
    uint64_t cpos;
    rc = annal_append_if(v->db, d->ev, d->tl, d->n, &c, &res->append, &cpos);
    if (rc == ANNAL_OK) {
        res->first_id = d->ev[0].id;
        return rc;
    }
    snprintf(msg, mlen, "%s", annal_db_errmsg(v->db));
    *done = rc != ANNAL_ECONDITION;
    return rc;
}

annal_err annal_handle_query_sized(annal_handler *h, const annal_query *query, const void *command,
                                   const annal_command_meta *meta, annal_command_result *result,
                                   size_t result_size) {
    annal_command_result res;
    memset(&res, 0, sizeof res);
    res.state_revision = -1;
    res.append.revision = -1;
    res.state_position = ANNAL_AFTER_NONE;
    if (!h) {
        snprintf(res.message, sizeof res.message, "invalid handler");
        annal__out_copy(result, result_size, &res, sizeof res);
        return ANNAL_EINVAL;
    }
    annal__write_hview v;
    annal__write_handler_view(h, &v);
    annal__write_cmeta cm;
    annal_err rc = annal__write_cmeta_init(&cm, meta, res.message, sizeof res.message);
    if (rc != ANNAL_OK) {
        annal__out_copy(result, result_size, &res, sizeof res);
        return rc;
    }
    qload l;
    annal_decision d;
    annal__write_decision_init(&d);
    rc = qload_init(&v, &l);
    if (rc == ANNAL_OK) rc = fold(&v, query, &l, res.message, sizeof res.message);
    for (int done = 0; rc == ANNAL_OK || (rc == ANNAL_ECONDITION && !done);) {
        rc = attempt(&v, query, command, &cm, &l, &d, &res, &done);
        if (done || res.attempts > v.max_retries) break;
        /* Someone appended inside the boundary since we read: fold it, decide again. */
        rc = fold(&v, query, &l, res.message, sizeof res.message);
    }
    res.folded = l.folded;
    annal__write_decision_free(&d);
    qload_free(&v, &l);
    annal__write_cmeta_free(&cm);
    annal__out_copy(result, result_size, &res, sizeof res);
    return rc;
}
