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

void rpc_fail_store(srv_call *c, annal_err e, const char *stream) {
    const char *detail = annal_db_errmsg(c->srv->db);
    switch (e) {
    case ANNAL_EDELETED: {
        srv_kv kv[] = {{"exception", "stream-deleted"}, {"stream-name", stream ? stream : ""}};
        call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "Event stream is deleted.", kv, 2);
        return;
    }
    case ANNAL_ETOOBIG: {
        char max[24];
        snprintf(max, sizeof max, "%" PRIu64, c->srv->max_append_bytes);
        srv_kv kv[] = {{"exception", "maximum-append-size-exceeded"}, {"maximum-append-size", max}};
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "Maximum append size exceeded.", kv, 2);
        return;
    }
    case ANNAL_EINVAL:
    case ANNAL_EDUPLICATE: call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, detail, NULL, 0); return;
    case ANNAL_EREADONLY:
        call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "the store is read-only", NULL, 0);
        return;
    case ANNAL_ENOMEM:
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    default:
        srv_log(c->srv, ANNAL_LOG_ERROR, "%s: %s", annal_errname(e), detail);
        call_finish(c, GRPC_STATUS_UNAVAILABLE, detail, NULL, 0);
        return;
    }
}

static void bad_request(srv_call *c, const char *msg) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, 0);
}

/* ---- Read */
static int uuid_as_string(const ReadOptions *o) {
    return o->uuid_option &&
           o->uuid_option->content_case ==
               EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__UUIDOPTION__CONTENT_STRING;
}

/* A filter of a $all read (subscriptions filter in the store instead). */
typedef struct read_filter {
    int on; /* 0: none; 1: on event types; 2: on stream names */
    const char *prefix;
    regex_t re;
    int has_re;
} read_filter;

static int filter_init(read_filter *f, const ReadOptions *o, char *buf) {
    memset(f, 0, sizeof *f);
    if (o->filter_option_case !=
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_FILTER ||
        !o->filter)
        return 0;
    annal_filter af;
    uint32_t every;
    if (sub_make_filter(o->filter, &af, buf, &every) != 0) return -1;
    f->on = af.type_prefix || af.type_regex ? 1 : 2;
    f->prefix = f->on == 1 ? af.type_prefix : af.stream_prefix;
    const char *re = f->on == 1 ? af.type_regex : af.stream_regex;
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

/* Send at most count events of it that pass filter (NULL: all; it is closed here), then
 * OK. */
static void send_events(srv_call *c, annal_iter *it, int uuid_string, const char *stream,
                        const read_filter *filter, uint64_t count) {
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
        if (!sec_readable(c, ev)) continue; /* security: each event's stream ACL */
        sent++;
        cv_read_event(ev, uuid_string, m);
        if ((gone = call_send(c, &m->resp.base) != 0)) break;
    }
    free(m);
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

static void read_stream(srv_call *c, const ReadOptions *o, uint64_t count, unsigned flags) {
    const EventStore__Client__Streams__ReadReq__Options__StreamOptions *so = o->stream;
    char name[ANNAL_MAX_NAME + 1];
    if (!so || cv_stream_name(so->stream_identifier, name) != 0)
        return bad_request(c, "a stream name of 1 to 255 bytes is required");
    if (sec_check(c, name, SEC_READ) != 0) return; /* security */
    uint64_t from = 0;
    int backward = flags & ANNAL_READ_BACKWARD;
    int at_end = 0;
    switch (so->revision_option_case) {
    case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_REVISION:
        from = so->revision;
        break;
    case EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_END:
        from = ANNAL_FROM_END;
        at_end = !backward; /* forwards from the end: nothing yet */
        break;
    default: from = 0;
    }
    annal_iter *it = NULL;
    annal_err r = annal_read_stream(c->srv->db, name, at_end ? 0 : from, flags, count, &it);
    if (r == ANNAL_ENOTFOUND) return stream_not_found(c, so->stream_identifier);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, name);
    if (at_end || count == 0) {
        annal_iter_close(it);
        call_reply(c, NULL);
        return;
    }
    send_events(c, it, uuid_as_string(o), name, NULL, count);
}

static void read_all(srv_call *c, const ReadOptions *o, uint64_t count, unsigned flags) {
    const EventStore__Client__Streams__ReadReq__Options__AllOptions *ao = o->all;
    int backward = flags & ANNAL_READ_BACKWARD;
    uint64_t from = backward ? ANNAL_FROM_END : 0;
    int nothing = count == 0;
    if (sec_check(c, "$all", SEC_READ) != 0) return; /* security */
    if (ao &&
        ao->all_option_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_POSITION) {
        if (!ao->position) return bad_request(c, "a position is required");
        from = ao->position->commit_position;
        /* Backwards from a position reads the events before it. */
        if (backward) {
            if (from == 0)
                nothing = 1;
            else
                from--;
        }
    } else if (ao &&
               ao->all_option_case ==
                   EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END) {
        if (!backward) nothing = 1;
    } else if (backward) {
        /* Backwards from the start: the first event at most. */
        from = 0;
    }
    if (nothing) {
        call_reply(c, NULL);
        return;
    }
    char *buf = malloc(REGEX_MAX);
    read_filter filter;
    if (!buf || filter_init(&filter, o, buf) != 0) {
        free(buf);
        return bad_request(c, "a filter needs a valid POSIX extended regex or prefixes");
    }
    annal_iter *it = NULL;
    /* A filtered read counts the events it returns, not those it passes over. */
    annal_err r = annal_read_all(c->srv->db, from, flags, filter.on ? 0 : count, &it);
    if (r == ANNAL_OK)
        send_events(c, it, uuid_as_string(o), "$all", &filter, count);
    else
        rpc_fail_store(c, r, "$all");
    filter_free(&filter);
    free(buf);
}

void rpc_streams_read(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv(c, &event_store__client__streams__read_req__descriptor, &msg, &bad) != 1)
        return bad_request(c, bad ? "undecodable ReadReq" : "no ReadReq");
    EventStore__Client__Streams__ReadReq *req = (EventStore__Client__Streams__ReadReq *)msg;
    const ReadOptions *o = req->options;
    if (!o)
        bad_request(c, "ReadReq without options");
    else if (o->count_option_case ==
             EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_SUBSCRIPTION)
        rpc_subscribe(c, o);
    else {
        unsigned flags =
            o->read_direction ==
                    EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Backwards
                ? ANNAL_READ_BACKWARD
                : 0;
        uint64_t count = o->count_option_case ==
                                 EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT
                             ? o->count
                             : UINT64_MAX;
        if (o->stream_option_case ==
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL)
            read_all(c, o, count, flags);
        else if (o->stream_option_case ==
                 EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM)
            read_stream(c, o, count, flags);
        else
            bad_request(c, "ReadReq names neither a stream nor $all");
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}
