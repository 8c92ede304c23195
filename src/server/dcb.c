/*
 * dcb.c -- annal's Dynamic Consistency Boundaries service (proto/dcb.proto, package
 * annal.dcb.v1): Read and Subscribe by a query of event types and tags, and a conditional
 * Append, over annal.h's annal_read_query, annal_sub_open (opts.query) and
 * annal_append_tagged. Security as for the rest: reading needs what reading `$all` needs
 * and each event is filtered by its own stream's `$r` (sec_readable), so a DCB read never
 * returns an event its caller may not read; an append needs `$w` on its stream, or on
 * `$dcb` for events with tags alone (acl.c governs `$dcb` as a user stream).
 */
#include <stdlib.h>
#include <string.h>

#include "dcb.pb-c.h"
#include "server_int.h"

typedef Annal__Dcb__V1__Event DcbEvent;

/* A query of the wire as annal's: items borrow the request's strings. NULL q: every
 * event. *items is freed by the caller. 0, or -1 (out of memory). */
static int query_in(const Annal__Dcb__V1__Query *q, annal_query *out, annal_query_item **items) {
    *items = NULL;
    memset(out, 0, sizeof *out);
    if (!q || q->n_items == 0) return 0;
    *items = calloc(q->n_items, sizeof **items);
    if (!*items) return -1;
    for (size_t i = 0; i < q->n_items; i++) {
        const Annal__Dcb__V1__QueryItem *it = q->items[i];
        (*items)[i] = (annal_query_item){(const char *const *)it->types, it->n_types,
                                         (const char *const *)it->tags, it->n_tags};
    }
    out->items = *items;
    out->nitems = q->n_items;
    return 0;
}

/* Storage for one Event message borrowing ev (valid until ev is). */
typedef struct dcb_ev {
    DcbEvent msg;
    char id[37];
    char *tags[ANNAL_MAX_TAGS];
} dcb_ev;

static void event_out(const annal_event *ev, dcb_ev *m) {
    annal__dcb__v1__event__init(&m->msg);
    annal_uuid_format(&ev->id, m->id);
    m->msg.id = m->id;
    m->msg.stream = (char *)ev->stream;
    m->msg.type = (char *)ev->type;
    m->msg.revision = ev->revision;
    m->msg.position = ev->position;
    m->msg.timestamp_ns = ev->timestamp_ns;
    m->msg.data.data = (uint8_t *)ev->data;
    m->msg.data.len = ev->data_len;
    m->msg.metadata.data = (uint8_t *)ev->metadata;
    m->msg.metadata.len = ev->metadata_len;
    size_t n = 0;
    for (const char *t = NULL; n < ANNAL_MAX_TAGS && annal_event_tag_next(ev, &t);)
        m->tags[n++] = (char *)t;
    m->msg.n_tags = n;
    m->msg.tags = m->tags;
}

/* Receive the one request of a unary or server-streaming call. NULL with the call
 * finished when there is none. */
static ProtobufCMessage *recv_one(srv_call *c, const ProtobufCMessageDescriptor *d) {
    ProtobufCMessage *msg = NULL;
    int bad;
    if (call_recv_one(c, d, &msg, &bad) != 1) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, bad ? "undecodable request" : "no request",
                    NULL, 0);
        return NULL;
    }
    return msg;
}

/* ---- Read */

/* Events go out in batches (a message per event costs the client more than the event):
 * copies, since a read's events are borrowed only until its next one. */
#define READ_BATCH_EVENTS 128
#define READ_BATCH_BYTES  (1u << 20)

typedef struct read_batch {
    dcb_ev m[READ_BATCH_EVENTS];
    DcbEvent *p[READ_BATCH_EVENTS];
    annal_event copy[READ_BATCH_EVENTS];
    char *own[READ_BATCH_EVENTS]; /* each copy's bytes */
    size_t n;
    uint64_t bytes;
} read_batch;

/* Copy ev into the batch (its strings, data, metadata and tags in one block). 0, or -1
 * out of memory. */
static int batch_add(read_batch *b, const annal_event *ev) {
    size_t size =
        ev->stream_len + ev->type_len + 2 + ev->data_len + ev->metadata_len + ev->tags_len;
    char *p = malloc(size); /* >= 2: the two NULs */
    if (!p) return -1;
    annal_event *c = &b->copy[b->n];
    *c = *ev;
    char *at = p;
    c->stream = memcpy(at, ev->stream, ev->stream_len + 1), at += ev->stream_len + 1;
    c->type = memcpy(at, ev->type, ev->type_len + 1), at += ev->type_len + 1;
    if (ev->data_len) c->data = memcpy(at, ev->data, ev->data_len), at += ev->data_len;
    if (ev->metadata_len)
        c->metadata = memcpy(at, ev->metadata, ev->metadata_len), at += ev->metadata_len;
    if (ev->tags_len) c->tags = memcpy(at, ev->tags, ev->tags_len);
    event_out(c, &b->m[b->n]);
    b->p[b->n] = &b->m[b->n].msg;
    b->own[b->n++] = p;
    b->bytes += size;
    return 0;
}

static void batch_drop(read_batch *b) {
    for (size_t i = 0; i < b->n; i++) free(b->own[i]);
    b->n = 0;
    b->bytes = 0;
}

/* Send what the batch holds (if anything) and empty it. 0, or -1 when the client left. */
static int batch_flush(srv_call *c, read_batch *b) {
    int r = 0;
    if (b->n) {
        Annal__Dcb__V1__ReadResp resp = ANNAL__DCB__V1__READ_RESP__INIT;
        resp.n_events = b->n;
        resp.events = b->p;
        r = call_send(c, &resp.base);
    }
    batch_drop(b);
    return r;
}

/* The matching events it may read, until limit; ANNAL_END when all were sent. */
static annal_err read_loop(srv_call *c, const Annal__Dcb__V1__ReadReq *req, annal_iter *it,
                           uint64_t after, read_batch *b) {
    uint64_t sent = 0;
    const annal_event *ev;
    annal_err r = ANNAL_END;
    while ((!req->limit || sent < req->limit) && (r = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (req->backwards && after != ANNAL_AFTER_NONE && ev->position <= after) return ANNAL_END;
        if (!sec_readable(c, ev)) continue; /* security: its own stream's $r */
        uint64_t size = ev->data_len + ev->metadata_len;
        if (b->n && (b->n == READ_BATCH_EVENTS || b->bytes + size > READ_BATCH_BYTES) &&
            batch_flush(c, b) != 0)
            return ANNAL_ECANCELED; /* the client went away */
        if (batch_add(b, ev) != 0) return ANNAL_ENOMEM;
        sent++;
    }
    return r == ANNAL_OK ? ANNAL_END : r; /* ANNAL_OK: the limit was reached */
}

static void read_events(srv_call *c, const Annal__Dcb__V1__ReadReq *req, const annal_query *q) {
    uint64_t after = (req->after_option_case == ANNAL__DCB__V1__READ_REQ__AFTER_OPTION_AFTER)
                         ? req->after
                         : ANNAL_AFTER_NONE;
    uint64_t from = req->backwards ? ANNAL_FROM_END : after == ANNAL_AFTER_NONE ? 0 : after + 1;
    if (!req->backwards && after == ANNAL_AFTER_NONE - 1) /* after the last position there is */
        return (void)call_reply(c, NULL);
    read_batch *b = calloc(1, sizeof *b);
    if (!b) return call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    annal_iter *it = NULL;
    annal_err r =
        annal_read_query(c->srv->db, q, from, req->backwards ? ANNAL_READ_BACKWARD : 0, 0, &it);
    if (r == ANNAL_OK) r = read_loop(c, req, it, after, b);
    annal_iter_close(it);
    if (r == ANNAL_END && batch_flush(c, b) == 0)
        call_reply(c, NULL);
    else if (r != ANNAL_END && r != ANNAL_ECANCELED)
        rpc_fail_store(c, r, NULL);
    batch_drop(b);
    free(b);
}

void rpc_dcb_read(srv_call *c) {
    Annal__Dcb__V1__ReadReq *req =
        (Annal__Dcb__V1__ReadReq *)recv_one(c, &annal__dcb__v1__read_req__descriptor);
    if (!req) return;
    annal_query q;
    annal_query_item *items;
    if (sec_check(c, "$all", SEC_READ) != 0) { /* security: as a read of $all */
    } else if (query_in(req->query, &q, &items) != 0) {
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        read_events(c, req, &q);
        free(items);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ---- Subscribe */

static int send_sub(srv_call *c, Annal__Dcb__V1__SubscribeResp *resp) {
    return call_send(c, &resp->base);
}

/* Deliver items until the client leaves, the store fails or the server stops. The store
 * delivers only the events matching the query; the caller's ACLs are applied here. */
static void pump(srv_call *c, annal_sub *sub) {
    dcb_ev m;
    Annal__Dcb__V1__SubscribeResp resp;
    Annal__Dcb__V1__SubscribeResp__CaughtUp cu = ANNAL__DCB__V1__SUBSCRIBE_RESP__CAUGHT_UP__INIT;
    Annal__Dcb__V1__SubscribeResp__Checkpoint cp = ANNAL__DCB__V1__SUBSCRIBE_RESP__CHECKPOINT__INIT;
    for (;;) {
        annal_sub_item item;
        annal_err r = annal_sub_next(sub, SRV_POLL_MS, &item);
        if (r == ANNAL_ETIMEDOUT) {
            if (call_gone(c)) break;
            continue;
        }
        if (r == ANNAL_ECANCELED && srv_stopping(c->srv)) {
            call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
            break;
        }
        if (r != ANNAL_OK) {
            rpc_fail_store(c, r, NULL);
            break;
        }
        annal__dcb__v1__subscribe_resp__init(&resp);
        if (item.kind == ANNAL_SUB_EVENT) {
            if (!sec_readable(c, item.event)) continue; /* security: its own stream's $r */
            event_out(item.event, &m);
            resp.content_case = ANNAL__DCB__V1__SUBSCRIBE_RESP__CONTENT_EVENT;
            resp.event = &m.msg;
        } else if (item.kind == ANNAL_SUB_CAUGHT_UP) {
            resp.content_case = ANNAL__DCB__V1__SUBSCRIBE_RESP__CONTENT_CAUGHT_UP;
            resp.caught_up = &cu;
        } else if (item.kind == ANNAL_SUB_CHECKPOINT && item.position > 0) {
            cp.after = item.position - 1; /* all before item.position passed */
            resp.content_case = ANNAL__DCB__V1__SUBSCRIBE_RESP__CONTENT_CHECKPOINT;
            resp.checkpoint = &cp;
        } else {
            continue;
        }
        if (send_sub(c, &resp) != 0) break; /* the client went away */
    }
}

static void subscribe(srv_call *c, const Annal__Dcb__V1__SubscribeReq *req, const annal_query *q) {
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.query = q;
    if (req->from_end)
        so.start = ANNAL_SUB_END;
    else if (req->after_option_case == ANNAL__DCB__V1__SUBSCRIBE_REQ__AFTER_OPTION_AFTER)
        so.start = ANNAL_SUB_AFTER, so.from = req->after;
    annal_sub *sub = NULL;
    annal_err r = annal_sub_open(c->srv->db, &so, &sub);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, NULL);
    if (srv_call_set_sub(c, sub) != 0)
        call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
    else
        pump(c, sub);
    (void)srv_call_set_sub(c, NULL);
    annal_sub_close(sub);
    if (!c->finished) call_finish(c, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
}

void rpc_dcb_subscribe(srv_call *c) {
    Annal__Dcb__V1__SubscribeReq *req =
        (Annal__Dcb__V1__SubscribeReq *)recv_one(c, &annal__dcb__v1__subscribe_req__descriptor);
    if (!req) return;
    annal_query q;
    annal_query_item *items;
    if (sec_check(c, "$all", SEC_READ) != 0) { /* security: as a subscription to $all */
    } else if (query_in(req->query, &q, &items) != 0) {
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        subscribe(c, req, &q);
        free(items);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ---- Append */

typedef Annal__Dcb__V1__AppendReq AppendReq;
typedef Annal__Dcb__V1__AppendResp AppendResp;

/* The request's events and tags as annal's (borrowing the request). NULL or an error. */
static const char *events_in(const AppendReq *req, annal_event_data *evs, annal_tag_list *tags,
                             uint64_t max_bytes) {
    uint64_t bytes = 0;
    for (size_t i = 0; i < req->n_events; i++) {
        const Annal__Dcb__V1__AppendEvent *e = req->events[i];
        memset(&evs[i], 0, sizeof evs[i]);
        if (e->id && *e->id && annal_uuid_parse(e->id, &evs[i].id) != ANNAL_OK)
            return "an event id is not a UUID";
        if (!e->type || !*e->type) return "an event has no type";
        evs[i].type = e->type;
        evs[i].data = e->data.data;
        evs[i].data_len = e->data.len;
        evs[i].metadata = e->metadata.data;
        evs[i].metadata_len = e->metadata.len;
        tags[i] = (annal_tag_list){(const char *const *)e->tags, e->n_tags};
        bytes += e->data.len + e->metadata.len;
    }
    return bytes > max_bytes ? "" : NULL;
}

static int64_t expected_in(const AppendReq *req) {
    if (req->expected_case == ANNAL__DCB__V1__APPEND_REQ__EXPECTED_EXPECTED_REVISION)
        return req->expected_revision > (uint64_t)INT64_MAX ? ANNAL_EXPECT_ANY
                                                            : (int64_t)req->expected_revision;
    if (req->expected_case == ANNAL__DCB__V1__APPEND_REQ__EXPECTED_EXPECTED_STATE) {
        if (req->expected_state == ANNAL__DCB__V1__APPEND_REQ__EXPECTED_STATE__NO_STREAM)
            return ANNAL_EXPECT_NO_STREAM;
        if (req->expected_state == ANNAL__DCB__V1__APPEND_REQ__EXPECTED_STATE__STREAM_EXISTS)
            return ANNAL_EXPECT_STREAM_EXISTS;
    }
    return ANNAL_EXPECT_ANY;
}

/* Answer the outcome r of an append of part. */
static void append_reply(srv_call *c, annal_err r, const annal_tagged_append *part,
                         const annal_multi_result *res, const annal_stream_conflict *conf) {
    AppendResp resp = ANNAL__DCB__V1__APPEND_RESP__INIT;
    Annal__Dcb__V1__AppendResp__Success ok = ANNAL__DCB__V1__APPEND_RESP__SUCCESS__INIT;
    Annal__Dcb__V1__AppendResp__ConditionFailed cf =
        ANNAL__DCB__V1__APPEND_RESP__CONDITION_FAILED__INIT;
    Annal__Dcb__V1__AppendResp__WrongExpectedRevision wr =
        ANNAL__DCB__V1__APPEND_RESP__WRONG_EXPECTED_REVISION__INIT;
    wr.actual_revision = res->nconflicts ? conf->actual : -1;
    if (r == ANNAL_OK) {
        ok.stream = (char *)(part->stream ? part->stream : ANNAL_DCB_STREAM);
        ok.first_position = res->parts[0].first_position;
        ok.first_revision = res->parts[0].first_revision;
        ok.count = res->parts[0].count;
        ok.revision = res->parts[0].revision;
        ok.idempotent = res->idempotent != 0;
        resp.result_case = ANNAL__DCB__V1__APPEND_RESP__RESULT_SUCCESS;
        resp.success = &ok;
    } else if (r == ANNAL_ECONDITION) {
        cf.position = res->condition_position;
        if (res->nconflicts) cf.wrong_expected_revision = &wr;
        resp.result_case = ANNAL__DCB__V1__APPEND_RESP__RESULT_CONDITION_FAILED;
        resp.condition_failed = &cf;
    } else if (r == ANNAL_ECONFLICT) {
        resp.result_case = ANNAL__DCB__V1__APPEND_RESP__RESULT_WRONG_EXPECTED_REVISION;
        resp.wrong_expected_revision = &wr;
    } else {
        return rpc_fail_store(c, r, part->stream ? part->stream : ANNAL_DCB_STREAM);
    }
    call_reply(c, &resp.base);
}

/* The request as annal's: *stream (NULL: the DCB stream), events and tags. NULL, an
 * error, or "" when over max_bytes. */
static const char *append_in(const AppendReq *req, annal_event_data *evs, annal_tag_list *tags,
                             uint64_t max_bytes, const char **stream) {
    *stream = req->target_case == ANNAL__DCB__V1__APPEND_REQ__TARGET_STREAM ? req->stream : NULL;
    const char *err = events_in(req, evs, tags, max_bytes);
    if (err) return err;
    if (*stream && (!**stream || (*stream)[0] == '$'))
        return "a DCB append goes to a user stream or, without one, to $dcb";
    return NULL;
}

const char *srv_dcb_append_check(const struct Annal__Dcb__V1__AppendReq *req, uint64_t max_bytes) {
    size_t n = req->n_events ? req->n_events : 1;
    annal_event_data *evs = calloc(n, sizeof *evs);
    annal_tag_list *tags = calloc(n, sizeof *tags);
    const char *stream, *err = !evs || !tags ? "out of memory" : NULL;
    if (!err) err = append_in(req, evs, tags, max_bytes, &stream);
    (void)expected_in(req);
    if (!err && req->condition) err = srv_dcb_query_check(req->condition->query);
    free(evs);
    free(tags);
    return err;
}

const char *srv_dcb_query_check(const struct Annal__Dcb__V1__Query *wire) {
    annal_query q;
    annal_query_item *items;
    if (query_in(wire, &q, &items) != 0) return "out of memory";
    /* Matched against an event with a tag, as the store and the server's filters do. */
    static const char tags[] = "course:c1\0student:s7\0";
    annal_event ev = {.stream = "s", .stream_len = 1, .type = "SeatBooked", .type_len = 10};
    ev.tags = tags;
    ev.tags_len = sizeof tags - 1;
    ev.ntags = 2;
    (void)annal_query_match(&q, &ev);
    free(items);
    return NULL;
}

static void append(srv_call *c, const AppendReq *req, annal_event_data *evs, annal_tag_list *tags) {
    const char *stream;
    const char *err = append_in(req, evs, tags, c->srv->max_append_bytes, &stream);
    if (err && !*err) return rpc_fail_store(c, ANNAL_ETOOBIG, stream);
    if (err) return call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err, NULL, 0);
    if (sec_check(c, stream ? stream : ANNAL_DCB_STREAM, SEC_WRITE) != 0) return; /* security */
    annal_query q;
    annal_query_item *items = NULL;
    annal_condition cond = {NULL, ANNAL_AFTER_NONE};
    if (req->condition) {
        if (query_in(req->condition->query, &q, &items) != 0)
            return call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        cond.query = &q;
        if (req->condition->after_option_case == ANNAL__DCB__V1__CONDITION__AFTER_OPTION_AFTER)
            cond.after = req->condition->after;
    }
    annal_tagged_append part = {stream, expected_in(req), evs, tags, req->n_events};
    annal_append_result pr;
    annal_stream_conflict conf;
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.parts = &pr;
    res.conflicts = &conf;
    res.max_conflicts = 1;
    annal_err r =
        annal_append_tagged(c->srv->db, &part, 1, NULL, 0, req->condition ? &cond : NULL, &res);
    free(items);
    append_reply(c, r, &part, &res, &conf);
}

void rpc_dcb_append(srv_call *c) {
    AppendReq *req = (AppendReq *)recv_one(c, &annal__dcb__v1__append_req__descriptor);
    if (!req) return;
    size_t n = req->n_events ? req->n_events : 1;
    annal_event_data *evs = calloc(n, sizeof *evs);
    annal_tag_list *tags = calloc(n, sizeof *tags);
    if (!evs || !tags)
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    else
        append(c, req, evs, tags);
    free(evs);
    free(tags);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}
