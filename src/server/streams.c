/*
 * streams.c -- the Streams service: Read (one stream or $all; subscriptions are in
 * subscribe.c), Append, Delete and Tombstone, with errors in the trailers and status
 * codes the official clients dispatch on.
 */
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

typedef EventStore__Client__Streams__ReadReq__Options ReadOptions;

static void bad_request(srv_call *c, const char *msg) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, 0);
}

/* ---- Read */
/* A filter of a $all read (subscriptions filter in the store instead). */
typedef struct read_filter {
    int on; /* 0: none; 1: on event types; 2: on stream names */
    const char *prefix;
    regex_t re;
    int has_re;
} read_filter;

static int filter_init(read_filter *f, const srv_read_plan *p) {
    memset(f, 0, sizeof *f);
    if (!p->has_filter) return 0;
    const annal_filter *af = &p->filter;
    f->on = af->type_prefix || af->type_regex ? 1 : 2;
    f->prefix = f->on == 1 ? af->type_prefix : af->stream_prefix;
    const char *re = f->on == 1 ? af->type_regex : af->stream_regex;
    if (re) {
        if (regcomp(&f->re, re, REG_EXTENDED | REG_NOSUB) != 0) return -1;
        f->has_re = 1;
    }
    return 0;
}

static int filter_match(const read_filter *f, const annal_event *ev) {
    if (!f->on) return 1;
    const char *s = f->on == 1 ? ev->type : ev->stream;
    if (f->prefix && strncmp(s, f->prefix, strlen(f->prefix)) != 0) return 0;
    return !f->has_re || regexec(&f->re, s, 0, NULL, 0) == 0;
}

static void filter_free(read_filter *f) {
    if (f->has_re) regfree(&f->re);
}

const char *srv_read_parse(const ReadOptions *o, srv_read_plan *p) {
    memset(p, 0, sizeof *p);
    p->uuid_string =
        o->uuid_option &&
        o->uuid_option->content_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__UUIDOPTION__CONTENT_STRING;
    p->resolve = o->resolve_links;
    p->subscribe = o->count_option_case ==
                   EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_SUBSCRIPTION;
    p->flags = o->read_direction ==
                       EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Backwards
                   ? ANNAL_READ_BACKWARD
                   : 0;
    p->count =
        o->count_option_case == EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT
            ? o->count
            : UINT64_MAX;
    int backward = p->flags & ANNAL_READ_BACKWARD;
    if (o->stream_option_case ==
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL) {
        p->is_all = 1;
        snprintf(p->name, sizeof p->name, "$all");
        const EventStore__Client__Streams__ReadReq__Options__AllOptions *ao = o->all;
        p->from = backward ? ANNAL_FROM_END : 0;
        p->nothing = p->count == 0;
        if (ao &&
            ao->all_option_case ==
                EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_POSITION) {
            if (!ao->position) return "a position is required";
            p->from = ao->position->commit_position;
            /* Backwards from a position reads the events before it. */
            if (backward) {
                if (p->from == 0)
                    p->nothing = 1;
                else
                    p->from--;
            }
        } else if (
            ao &&
            ao->all_option_case ==
                EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END) {
            if (!backward) p->nothing = 1;
        } else if (backward) {
            p->from = 0; /* backwards from the start: the first event at most */
        }
    } else if (o->stream_option_case ==
               EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM) {
        const EventStore__Client__Streams__ReadReq__Options__StreamOptions *so = o->stream;
        if (!so || cv_stream_name(so->stream_identifier, p->name) != 0)
            return "a stream name of 1 to 255 bytes is required";
        switch (so->revision_option_case) {
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_REVISION:
            p->from = so->revision;
            break;
        case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_END:
            p->from = ANNAL_FROM_END;
            p->at_end = !backward; /* forwards from the end: nothing yet */
            break;
        default: p->from = 0;
        }
    } else {
        return "ReadReq names neither a stream nor $all";
    }
    if (p->subscribe) sub_set_start(o, &p->start, &p->start_from);
    if (o->filter_option_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_FILTER &&
        o->filter) {
        if (!p->is_all) return "filters apply to $all only";
        if (sub_make_filter(o->filter, &p->filter, p->regex, &p->every) != 0)
            return "a filter needs a valid POSIX extended regex or prefixes";
        p->has_filter = 1;
    }
    return NULL;
}

const char *srv_read_check(const EventStore__Client__Streams__ReadReq *req) {
    if (!req->options) return "ReadReq without options";
    srv_read_plan *p = malloc(sizeof *p);
    if (!p) return "out of memory";
    const char *err = srv_read_parse(req->options, p);
    read_filter f;
    if (!err && !p->subscribe) {
        if (filter_init(&f, p) != 0)
            err = "a filter needs a valid POSIX extended regex or prefixes";
        else
            filter_free(&f);
    }
    free(p);
    return err;
}

/* Send at most count events of it that pass filter (NULL: all; it is closed here), then
 * OK. */
static void send_events(srv_call *c, annal_iter *it, int uuid_string, const char *stream,
                        const read_filter *filter, uint64_t count, srv_links *links) {
    cv_event_msg *m = malloc(sizeof *m);
    if (!m) {
        annal_iter_close(it);
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    const annal_event *ev;
    annal_err r = ANNAL_END;
    uint64_t sent = 0;
    int gone = 0;
    while (sent < count && (r = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (filter && !filter_match(filter, ev)) continue;
        /* security: each event's stream ACL (a link stream's own was checked; the events
         * its links resolve to are checked in links_emit, so numbering stays whole). */
        if (!(links && links->numbered) && !sec_readable(c, ev)) continue;
        sent++;
        links_emit(links, ev, uuid_string, m);
        if ((gone = call_send(c, &m->resp.base) != 0)) break;
    }
    free(m);
    if (links) links_done(links);
    annal_iter_close(it);
    if (gone)
        call_finish(c, GRPC_STATUS_CANCELLED, "client went away", NULL, 0);
    else if (r == ANNAL_OK || r == ANNAL_END) /* OK: count reached */
        call_reply(c, NULL);
    else
        rpc_fail_store(c, r, stream);
}

static void stream_not_found(srv_call *c, const EventStore__Client__StreamIdentifier *sid) {
    EventStore__Client__Streams__ReadResp resp = EVENT_STORE__CLIENT__STREAMS__READ_RESP__INIT;
    EventStore__Client__Streams__ReadResp__StreamNotFound nf =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__STREAM_NOT_FOUND__INIT;
    EventStore__Client__StreamIdentifier id = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    id.stream_name = sid->stream_name;
    nf.stream_identifier = &id;
    resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_STREAM_NOT_FOUND;
    resp.stream_not_found = &nf;
    call_reply(c, &resp.base);
}

/* A read of `$ce-x` or `$et-x` as a link stream: link numbers are found by counting. */
static void read_links(srv_call *c, const srv_read_plan *p,
                       const EventStore__Client__StreamIdentifier *sid) {
    srv_links l = {.db = c->srv->db, .c = c, .numbered = 1, .resolve = p->resolve, .name = p->name};
    l.backward = (p->flags & ANNAL_READ_BACKWARD) != 0;
    uint64_t pos, n;
    annal_err r = links_seek(c->srv->db, p->name, UINT64_MAX, &pos, &n);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, p->name);
    if (n == 0) return stream_not_found(c, sid); /* as a link stream never written */
    uint64_t from = p->from;
    if (from == ANNAL_FROM_END || (l.backward && from >= n)) from = n - 1;
    if (p->at_end || from >= n || p->count == 0) {
        call_reply(c, NULL);
        return;
    }
    r = links_seek(c->srv->db, p->name, from, &pos, &n);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, p->name);
    l.next = from;
    annal_iter *it = NULL;
    r = annal_read_stream(c->srv->db, p->name, pos, p->flags, p->count, &it);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, p->name);
    send_events(c, it, p->uuid_string, p->name, NULL, p->count, &l);
}

static void read_stream(srv_call *c, const srv_read_plan *p,
                        const EventStore__Client__StreamIdentifier *sid) {
    if (sec_check(c, p->name, SEC_READ) != 0) return; /* security */
    if (links_is_stream(p->name)) return read_links(c, p, sid);
    annal_iter *it = NULL;
    annal_err r =
        annal_read_stream(c->srv->db, p->name, p->at_end ? 0 : p->from, p->flags, p->count, &it);
    if (r == ANNAL_ENOTFOUND) return stream_not_found(c, sid);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, p->name);
    if (p->at_end || p->count == 0) {
        annal_iter_close(it);
        call_reply(c, NULL);
        return;
    }
    srv_links l = {.db = c->srv->db, .c = c, .resolve = p->resolve};
    send_events(c, it, p->uuid_string, p->name, NULL, p->count, &l);
}

static void read_all(srv_call *c, const srv_read_plan *p) {
    if (sec_check(c, "$all", SEC_READ) != 0) return; /* security */
    if (p->nothing) {
        call_reply(c, NULL);
        return;
    }
    read_filter filter;
    if (filter_init(&filter, p) != 0)
        return bad_request(c, "a filter needs a valid POSIX extended regex or prefixes");
    annal_iter *it = NULL;
    /* A filtered read counts the events it returns, not those it passes over. */
    annal_err r = annal_read_all(c->srv->db, p->from, p->flags, filter.on ? 0 : p->count, &it);
    srv_links l = {.db = c->srv->db, .c = c, .resolve = p->resolve};
    if (r == ANNAL_OK)
        send_events(c, it, p->uuid_string, "$all", &filter, p->count, &l);
    else
        rpc_fail_store(c, r, "$all");
    filter_free(&filter);
}

void rpc_streams_read(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv_one(c, &event_store__client__streams__read_req__descriptor, &msg, &bad) != 1)
        return bad_request(c, bad ? "undecodable ReadReq" : "no ReadReq");
    EventStore__Client__Streams__ReadReq *req = (EventStore__Client__Streams__ReadReq *)msg;
    const ReadOptions *o = req->options;
    srv_read_plan *p = malloc(sizeof *p);
    const char *err = !o ? "ReadReq without options" : !p ? "out of memory" : srv_read_parse(o, p);
    if (err)
        bad_request(c, err);
    else if (p->subscribe)
        rpc_subscribe(c, p);
    else if (p->is_all)
        read_all(c, p);
    else
        read_stream(c, p, o->stream->stream_identifier);
    free(p);
    protobuf_c_message_free_unpacked(msg, NULL);
}
