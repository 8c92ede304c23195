/*
 * subscribe.c -- catch-up subscriptions through Streams.Read: confirmation, history, then
 * CaughtUp and live events, with $all filters and checkpoints. The subscription is a
 * cursor over the log (annal_sub), so a slow subscriber holds one event in memory at a
 * time and never slows appenders: its backlog stays in the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_int.h"

typedef EventStore__Client__Streams__ReadReq__Options ReadOptions;
typedef EventStore__Client__Streams__ReadReq__Options__FilterOptions FilterOptions;

/* Prefixes as one POSIX extended regex `^(p1|p2|...)`, special characters escaped. */
static int prefixes_regex(char *const *prefixes, size_t n, char *out, size_t size) {
    size_t len = 0;
    out[len++] = '^';
    out[len++] = '(';
    for (size_t i = 0; i < n; i++) {
        if (i) out[len++] = '|';
        for (const char *p = prefixes[i]; *p; p++) {
            if (len + 4 >= size) return -1;
            if (strchr(".[]{}()\\*+?|^$", *p)) out[len++] = '\\';
            out[len++] = *p;
        }
        if (len + 4 >= size) return -1;
    }
    out[len++] = ')';
    out[len] = '\0';
    return 0;
}

/* One expression into a filter's prefix or regex. */
static int
set_expression(const EventStore__Client__Streams__ReadReq__Options__FilterOptions__Expression *e,
               const char **prefix, const char **regex, char *buf) {
    if (!e) return -1;
    if (e->regex && *e->regex) {
        *regex = e->regex;
        return 0;
    }
    if (e->n_prefix == 1) {
        *prefix = e->prefix[0];
        return 0;
    }
    if (e->n_prefix == 0) return 0;
    if (prefixes_regex(e->prefix, e->n_prefix, buf, REGEX_MAX) != 0) return -1;
    *regex = buf;
    return 0;
}

int sub_make_filter(const FilterOptions *f, annal_filter *out, char *buf, uint32_t *every) {
    memset(out, 0, sizeof *out);
    int r = 0;
    if (f->filter_case ==
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__FILTER_STREAM_IDENTIFIER)
        r = set_expression(f->stream_identifier, &out->stream_prefix, &out->stream_regex, buf);
    else if (f->filter_case ==
             EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__FILTER_EVENT_TYPE)
        r = set_expression(f->event_type, &out->type_prefix, &out->type_regex, buf);
    /* A checkpoint every `window × multiplier` events passed over, as KurrentDB counts. */
    uint32_t window =
        f->window_case ==
                    EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTIONS__WINDOW_MAX &&
                f->max
            ? f->max
            : 32;
    uint32_t mult = f->checkpointintervalmultiplier ? f->checkpointintervalmultiplier : 1;
    *every = window * mult;
    return r;
}

static void set_timestamp(Google__Protobuf__Timestamp *ts) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    google__protobuf__timestamp__init(ts);
    ts->seconds = now.tv_sec;
    ts->nanos = (int32_t)now.tv_nsec;
}

static int send_confirmation(srv_call *c) {
    EventStore__Client__Streams__ReadResp resp = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    EventStore__Client__Streams__ReadResp__SubscriptionConfirmation conf =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__SUBSCRIPTION_CONFIRMATION__INIT;
    char id[40];
    snprintf(id, sizeof id, "%p", (void *)c);
    conf.subscription_id = id;
    resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CONFIRMATION;
    resp.confirmation = &conf;
    return call_send(c, &resp.base);
}

/* CaughtUp or FellBehind (same fields), at the last event delivered. */
static int send_state(srv_call *c, int caught_up, int is_all, int has_last, uint64_t last) {
    EventStore__Client__Streams__ReadResp resp = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    EventStore__Client__Streams__ReadResp__CaughtUp cu =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__CAUGHT_UP__INIT;
    EventStore__Client__Streams__ReadResp__Position pos =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__POSITION__INIT;
    Google__Protobuf__Timestamp ts;
    set_timestamp(&ts);
    cu.timestamp = &ts;
    if (has_last && is_all) {
        pos.commit_position = pos.prepare_position = last;
        cu.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__READ_RESP__CAUGHT_UP__POSITION_OPTION_POSITION;
        cu.position = &pos;
    } else if (has_last) {
        cu.stream_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__READ_RESP__CAUGHT_UP__STREAM_REVISION_OPTION_STREAM_REVISION;
        cu.stream_revision = (int64_t)last;
    }
    if (caught_up) {
        resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CAUGHT_UP;
        resp.caught_up = &cu;
    } else {
        /* FellBehind has CaughtUp's fields and numbers: same bytes, other descriptor. */
        EventStore__Client__Streams__ReadResp__FellBehind fb =
            EVENT_STORE__CLIENT__STREAMS__READ_RESP__FELL_BEHIND__INIT;
        fb.timestamp = cu.timestamp;
        fb.stream_revision_option_case =
            (EventStore__Client__Streams__ReadResp__FellBehind__StreamRevisionOptionCase)
                cu.stream_revision_option_case;
        fb.stream_revision = cu.stream_revision;
        fb.position_option_case =
            (EventStore__Client__Streams__ReadResp__FellBehind__PositionOptionCase)
                cu.position_option_case;
        fb.position = cu.position;
        resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_FELL_BEHIND;
        resp.fell_behind = &fb;
        return call_send(c, &resp.base);
    }
    return call_send(c, &resp.base);
}

static int send_checkpoint(srv_call *c, uint64_t position) {
    EventStore__Client__Streams__ReadResp resp = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    EventStore__Client__Streams__ReadResp__Checkpoint cp =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__CHECKPOINT__INIT;
    Google__Protobuf__Timestamp ts;
    set_timestamp(&ts);
    cp.commit_position = cp.prepare_position = position;
    cp.timestamp = &ts;
    resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CHECKPOINT;
    resp.checkpoint = &cp;
    return call_send(c, &resp.base);
}

void sub_set_start(const ReadOptions *o, int *start, uint64_t *from) {
    *start = ANNAL_SUB_START;
    *from = 0;
    if (o->stream_option_case ==
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL) {
        const EventStore__Client__Streams__ReadReq__Options__AllOptions *a = o->all;
        if (a && a->all_option_case ==
                     EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END)
            *start = ANNAL_SUB_END;
        else if (
            a &&
            a->all_option_case ==
                EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_POSITION &&
            a->position) {
            *start = ANNAL_SUB_AFTER;
            *from = a->position->commit_position;
        }
        return;
    }
    const EventStore__Client__Streams__ReadReq__Options__StreamOptions *s = o->stream;
    if (s &&
        s->revision_option_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_END)
        *start = ANNAL_SUB_END;
    else if (
        s &&
        s->revision_option_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_REVISION) {
        *start = ANNAL_SUB_AFTER;
        *from = s->revision;
    }
}

/* Deliver items until the client leaves, the store fails or the server stops. */
static void pump(srv_call *c, annal_sub *sub, int is_all, int uuid_string, const char *name,
                 srv_links *links, uint64_t min_next) {
    cv_event_msg *m = malloc(sizeof *m);
    if (!m) return call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    int has_last = 0;
    uint64_t last = 0;
    for (;;) {
        annal_sub_item item;
        annal_err r = annal_sub_next(sub, SRV_POLL_MS, &item);
        int sent = 0;
        if (r == ANNAL_ETIMEDOUT) {
            if (call_gone(c)) break;
            continue;
        }
        if (r == ANNAL_ECANCELED && srv_stopping(c->srv)) {
            call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
            break;
        }
        if (r != ANNAL_OK) {
            rpc_fail_store(c, r, name);
            break;
        }
        switch (item.kind) {
        case ANNAL_SUB_EVENT:
            if (links->numbered && links->next < min_next) { /* at or before the start */
                links->next++;
                break;
            }
            /* security: each event's stream ACL (a link stream's own ACL was checked at the
             * start; its resolved events are checked in links_emit). */
            if (!links->numbered && !sec_readable(c, item.event)) {
                if (!is_all) sec_deny(c, "read", name), sent = -1;
                break;
            }
            has_last = 1;
            last = is_all            ? item.event->position
                   : links->numbered ? links->next
                                     : item.event->revision;
            links_emit(links, item.event, uuid_string, m);
            sent = call_send(c, &m->resp.base);
            break;
        case ANNAL_SUB_CAUGHT_UP:
        case ANNAL_SUB_FELL_BEHIND:
            sent = send_state(c, item.kind == ANNAL_SUB_CAUGHT_UP, is_all, has_last, last);
            break;
        case ANNAL_SUB_CHECKPOINT:
            /* item.position: all before it passed; the protocol's checkpoint is the last
             * position passed (resume after it). */
            if (is_all && item.position > 0) sent = send_checkpoint(c, item.position - 1);
            break;
        }
        if (sent != 0) break; /* the client went away */
    }
    free(m);
}

void rpc_subscribe(srv_call *c, const srv_read_plan *p) {
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    if (sec_check(c, p->name, SEC_READ) != 0) return; /* security */
    so.stream = p->name;
    so.start = p->start;
    so.from = p->start_from;
    if (p->has_filter) {
        so.filter = &p->filter;
        so.checkpoint_every = p->every;
    }
    srv_links links = {.db = c->srv->db, .c = c, .resolve = p->resolve, .name = p->name};
    uint64_t min_next = 0;
    if (links_is_stream(p->name)) {
        /* Link numbers count the category's events: find where the client starts. */
        links.numbered = 1;
        uint64_t pos, n;
        annal_err lr = links_seek(c->srv->db, p->name, UINT64_MAX, &pos, &n);
        if (lr != ANNAL_OK) return rpc_fail_store(c, lr, p->name);
        if (p->start == ANNAL_SUB_AFTER && p->start_from + 1 < n) {
            /* History from link number start_from + 1 on. */
            lr = links_seek(c->srv->db, p->name, p->start_from, &pos, &n);
            if (lr != ANNAL_OK) return rpc_fail_store(c, lr, p->name);
            so.from = pos; /* ANNAL_SUB_AFTER already; a position for $ce-/$et- */
            links.next = p->start_from + 1;
        } else if (p->start != ANNAL_SUB_START && n > 0) {
            so.start = ANNAL_SUB_AFTER;
            so.from = pos; /* after the last event there is now */
            links.next = n;
            if (p->start == ANNAL_SUB_AFTER) min_next = p->start_from + 1;
        } else if (p->start == ANNAL_SUB_AFTER) {
            so.start = ANNAL_SUB_START; /* none yet: number them from 0, skip to the start */
            min_next = p->start_from + 1;
        }
    }
    annal_sub *sub = NULL;
    annal_err r = annal_sub_open(c->srv->db, &so, &sub);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, p->name);
    if (srv_call_set_sub(c, sub) != 0)
        call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
    else if (send_confirmation(c) == 0)
        pump(c, sub, p->is_all, p->uuid_string, p->name, &links, min_next);
    (void)srv_call_set_sub(c, NULL);
    annal_sub_close(sub);
    if (!c->finished) call_finish(c, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
}
