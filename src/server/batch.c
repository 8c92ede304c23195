/*
 * batch.c -- Streams.BatchAppend: one bidirectional call carries many appends, each a run
 * of requests under one correlation id (options with the first, `is_final` on the last).
 * The call's thread reads and gathers; a finished batch is appended on a worker thread of
 * the call (at most BATCH_INFLIGHT at once, so concurrent appends of one client share the
 * store's group commit), and its answer is sent under the call's send lock. Errors travel
 * in-band as a google.rpc.Status whose one detail is the typed message the clients unpack
 * (WrongExpectedVersion, StreamDeleted, MaximumAppendSizeExceeded, Timeout, BadRequest,
 * AccessDenied).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/rpc/status.pb-c.h"
#include "server_int.h"

typedef EventStore__Client__Streams__BatchAppendReq BatchReq;
typedef EventStore__Client__Streams__BatchAppendReq__Options BatchOptions;
typedef EventStore__Client__Streams__BatchAppendReq__ProposedMessage BatchProposed;
typedef EventStore__Client__Streams__BatchAppendResp BatchResp;

#define BATCH_INFLIGHT 16          /* appends of one call running at once */
#define BATCH_OPEN_MAX (64u << 20) /* bytes of unfinished batches one call may hold */
#define BATCH_STACK    (256u << 10)

/* gRPC status codes inside the in-band Status (google.rpc.Code). */
enum {
    CODE_INVALID_ARGUMENT = 3,
    CODE_DEADLINE_EXCEEDED = 4,
    CODE_PERMISSION_DENIED = 7,
    CODE_FAILED_PRECONDITION = 9,
    CODE_UNAVAILABLE = 14
};

typedef struct batch {
    struct batch *next;
    struct batch_call *bc;
    annal_uuid corr;
    int corr_string; /* echo the correlation id as text */
    int has_options; /* options seen (the first request of the id) */
    int failed;      /* answered with an error: swallow the rest until is_final */
    char stream[ANNAL_MAX_NAME + 1];
    int64_t expected;
    int64_t deadline_ns; /* CLOCK_REALTIME; 0: none */
    BatchReq **reqs;     /* owned: the events point into them */
    size_t nreqs, capreqs;
    annal_event_data *events;
    size_t n, cap;
    uint64_t bytes;
} batch;

typedef struct batch_call {
    srv_call *c;
    pthread_mutex_t mu; /* guards inflight, open, open_bytes */
    pthread_cond_t cv;
    pthread_mutex_t send_mu; /* one send at a time */
    unsigned inflight;
    batch *open; /* batches still receiving */
    uint64_t open_bytes;
} batch_call;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void batch_free(batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->nreqs; i++) protobuf_c_message_free_unpacked(&b->reqs[i]->base, NULL);
    free(b->reqs);
    free(b->events);
    free(b);
}

/* ---- Decoding, without a live call (the fuzz target calls these too). */
const char *srv_batch_options(const BatchOptions *o, int64_t received_ns, char *stream,
                              int64_t *expected, int64_t *deadline_ns) {
    if (cv_stream_name(o->stream_identifier, stream) != 0)
        return "the options must name a stream of 1 to 255 bytes";
    switch (o->expected_stream_position_case) {
    case EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_STREAM_POSITION:
        if (o->stream_position > (uint64_t)INT64_MAX) return "the expected position is too large";
        *expected = (int64_t)o->stream_position;
        break;
    case EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_NO_STREAM:
        *expected = ANNAL_EXPECT_NO_STREAM;
        break;
    case EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__EXPECTED_STREAM_POSITION_STREAM_EXISTS:
        *expected = ANNAL_EXPECT_STREAM_EXISTS;
        break;
    default: *expected = ANNAL_EXPECT_ANY;
    }
    *deadline_ns = 0;
    const int64_t cap_s = INT64_MAX / 1000000000 - 1;
    if (o->deadline_option_case ==
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__DEADLINE_OPTION_DEADLINE_21_10_0 &&
        o->deadline_21_10_0) {
        /* An absolute time (what the Node.js clients send). */
        int64_t s = o->deadline_21_10_0->seconds;
        if (s > 0 && s < cap_s) *deadline_ns = s * 1000000000 + o->deadline_21_10_0->nanos;
    } else if (
        o->deadline_option_case ==
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__DEADLINE_OPTION_DEADLINE &&
        o->deadline) {
        /* A duration from when the options arrived. */
        int64_t s = o->deadline->seconds;
        if (s >= 0 && s < cap_s - received_ns / 1000000000)
            *deadline_ns = received_ns + s * 1000000000 + o->deadline->nanos;
    }
    return NULL;
}

static const char *md_type(const BatchProposed *p) {
    for (size_t i = 0; i < p->n_metadata; i++)
        if (p->metadata[i]->key && strcmp(p->metadata[i]->key, "type") == 0)
            return p->metadata[i]->value;
    return NULL;
}

/* Add the events of req to b (which then owns req). NULL, an error, or "" when the batch
 * grew over max_bytes. */
static const char *batch_add(batch *b, BatchReq *req, uint64_t max_bytes) {
    if (b->nreqs == b->capreqs) {
        size_t cap = b->capreqs ? b->capreqs * 2 : 4;
        BatchReq **r = realloc(b->reqs, cap * sizeof *r);
        if (!r) return "out of memory";
        b->reqs = r;
        b->capreqs = cap;
    }
    b->reqs[b->nreqs++] = req;
    if (b->n + req->n_proposed_messages > b->cap) {
        size_t cap = b->cap ? b->cap : 16;
        while (cap < b->n + req->n_proposed_messages) cap *= 2;
        annal_event_data *e = realloc(b->events, cap * sizeof *e);
        if (!e) return "out of memory";
        b->events = e;
        b->cap = cap;
    }
    for (size_t i = 0; i < req->n_proposed_messages; i++) {
        const BatchProposed *p = req->proposed_messages[i];
        const char *err =
            srv_event_in(p->id, md_type(p), p->data, p->custom_metadata, &b->events[b->n]);
        if (err) return err;
        b->n++;
        b->bytes += p->data.len + p->custom_metadata.len;
    }
    return b->bytes > max_bytes ? "" : NULL;
}

const char *srv_batch_check(const BatchReq *req, uint64_t max_bytes) {
    batch b;
    memset(&b, 0, sizeof b);
    const char *err = NULL;
    if (req->options) {
        int64_t deadline;
        err = srv_batch_options(req->options, now_ns(), b.stream, &b.expected, &deadline);
    }
    if (!err) err = batch_add(&b, (BatchReq *)req, max_bytes);
    b.nreqs = 0; /* req is the caller's */
    free(b.reqs);
    free(b.events);
    return err;
}

/* ---- Answers */
typedef struct detail {
    const char *type;
    const ProtobufCMessage *msg;
} detail;

static void send_resp(batch_call *bc, const batch *b, const BatchResp *result) {
    BatchResp r = *result; /* the result, plus what every answer carries */
    BatchResp *resp = &r;
    cv_uuid_buf corr;
    cv_uuid_out(&b->corr, b->corr_string, &corr);
    resp->correlation_id = &corr.msg;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)b->stream;
    sid.stream_name.len = strlen(b->stream);
    resp->stream_identifier = &sid; /* always: clients read it on errors */
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    if (b->expected >= 0) {
        resp->expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_STREAM_POSITION;
        resp->stream_position = (uint64_t)b->expected;
    } else if (b->expected == ANNAL_EXPECT_NO_STREAM) {
        resp->expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_NO_STREAM;
        resp->no_stream = &empty;
    } else if (b->expected == ANNAL_EXPECT_STREAM_EXISTS) {
        resp->expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_STREAM_EXISTS;
        resp->stream_exists = &empty;
    } else {
        resp->expected_stream_position_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__EXPECTED_STREAM_POSITION_ANY;
        resp->any = &empty;
    }
    pthread_mutex_lock(&bc->send_mu);
    (void)call_send(bc->c, &resp->base); /* a client gone shows on the reader's receive */
    pthread_mutex_unlock(&bc->send_mu);
}

static void send_error(batch_call *bc, const batch *b, int code, const char *msg, detail d) {
    size_t len = protobuf_c_message_get_packed_size(d.msg);
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed) return;
    protobuf_c_message_pack(d.msg, packed);
    char url[128];
    snprintf(url, sizeof url, "type.googleapis.com/%s", d.type);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = url;
    any.value.data = packed;
    any.value.len = len;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = code;
    st.message = (char *)msg;
    st.details = &any;
    BatchResp resp = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__INIT;
    resp.result_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_ERROR;
    resp.error = &st;
    send_resp(bc, b, &resp);
    free(packed);
}

static void send_bad(batch_call *bc, const batch *b, const char *why) {
    EventStore__Client__BadRequest m = EVENT_STORE__CLIENT__BAD_REQUEST__INIT;
    m.message = (char *)why;
    send_error(bc, b, CODE_INVALID_ARGUMENT, why,
               (detail){"event_store.client.BadRequest", &m.base});
}

static void send_wrong_expected(batch_call *bc, const batch *b, int64_t actual) {
    EventStore__Client__WrongExpectedVersion w = EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__INIT;
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    if (actual >= 0) {
        w.current_stream_revision_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__CURRENT_STREAM_REVISION_OPTION_CURRENT_STREAM_REVISION;
        w.current_stream_revision = (uint64_t)actual;
    } else {
        w.current_stream_revision_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__CURRENT_STREAM_REVISION_OPTION_CURRENT_NO_STREAM;
        w.current_no_stream = &empty;
    }
    if (b->expected >= 0) {
        w.expected_stream_position_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_STREAM_POSITION;
        w.expected_stream_position = (uint64_t)b->expected;
    } else if (b->expected == ANNAL_EXPECT_NO_STREAM) {
        w.expected_stream_position_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_NO_STREAM;
        w.expected_no_stream = &empty;
    } else if (b->expected == ANNAL_EXPECT_STREAM_EXISTS) {
        w.expected_stream_position_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_STREAM_EXISTS;
        w.expected_stream_exists = &empty;
    } else {
        w.expected_stream_position_option_case =
            EVENT_STORE__CLIENT__WRONG_EXPECTED_VERSION__EXPECTED_STREAM_POSITION_OPTION_EXPECTED_ANY;
        w.expected_any = &empty;
    }
    send_error(bc, b, CODE_FAILED_PRECONDITION, "Wrong expected version.",
               (detail){"event_store.client.WrongExpectedVersion", &w.base});
}

static void send_store_error(batch_call *bc, const batch *b, annal_err r) {
    const char *stream = b->stream;
    if (strncmp(stream, "$$", 2) == 0 && stream[2]) stream += 2;
    if (r == ANNAL_EDELETED) {
        EventStore__Client__StreamDeleted m = EVENT_STORE__CLIENT__STREAM_DELETED__INIT;
        EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
        sid.stream_name.data = (uint8_t *)stream;
        sid.stream_name.len = strlen(stream);
        m.stream_identifier = &sid;
        send_error(bc, b, CODE_FAILED_PRECONDITION, "Event stream is deleted.",
                   (detail){"event_store.client.StreamDeleted", &m.base});
    } else if (r == ANNAL_ETOOBIG) {
        EventStore__Client__MaximumAppendSizeExceeded m =
            EVENT_STORE__CLIENT__MAXIMUM_APPEND_SIZE_EXCEEDED__INIT;
        m.maxappendsize = (uint32_t)bc->c->srv->max_append_bytes;
        send_error(bc, b, CODE_INVALID_ARGUMENT, "Maximum append size exceeded.",
                   (detail){"event_store.client.MaximumAppendSizeExceeded", &m.base});
    } else if (r == ANNAL_EINVAL || r == ANNAL_EDUPLICATE) {
        send_bad(bc, b, annal_errname(r));
    } else {
        srv_log(bc->c->srv, ANNAL_LOG_ERROR, "batch append to %s: %s", b->stream, annal_errname(r));
        EventStore__Client__Unknown m = EVENT_STORE__CLIENT__UNKNOWN__INIT;
        send_error(bc, b, CODE_UNAVAILABLE, annal_errname(r),
                   (detail){"event_store.client.Unknown", &m.base});
    }
}

/* security: the caller may not write the batch's stream (audited by sec_allowed). */
static void send_denied(batch_call *bc, const batch *b) {
    EventStore__Client__AccessDenied m = EVENT_STORE__CLIENT__ACCESS_DENIED__INIT;
    send_error(bc, b, CODE_PERMISSION_DENIED, "Access denied.",
               (detail){"event_store.client.AccessDenied", &m.base});
}

static void send_timeout(batch_call *bc, const batch *b) {
    EventStore__Client__Timeout m = EVENT_STORE__CLIENT__TIMEOUT__INIT;
    send_error(bc, b, CODE_DEADLINE_EXCEEDED, "Timeout",
               (detail){"event_store.client.Timeout", &m.base});
}

/* Append a finished batch and answer it (on a worker thread, or the reader's). */
static void batch_run(batch *b) {
    batch_call *bc = b->bc;
    if (b->deadline_ns && now_ns() > b->deadline_ns) {
        send_timeout(bc, b);
        return;
    }
    srv_append_out out;
    annal_err r = srv_append(bc->c, b->stream, b->expected, b->events, b->n, &out);
    if (r == ANNAL_ECONFLICT) return send_wrong_expected(bc, b, out.revision);
    if (r != ANNAL_OK) return send_store_error(bc, b, r);
    EventStore__Client__Streams__BatchAppendResp__Success ok =
        EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__INIT;
    EventStore__Client__AllStreamPosition pos = EVENT_STORE__CLIENT__ALL_STREAM_POSITION__INIT;
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    if (out.revision >= 0) {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        ok.current_revision = (uint64_t)out.revision;
    } else {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_NO_STREAM;
        ok.no_stream = &empty;
    }
    if (out.has_position) {
        pos.commit_position = pos.prepare_position = out.position;
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION;
        ok.position = &pos;
    } else {
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__POSITION_OPTION_NO_POSITION;
        ok.no_position = &empty;
    }
    BatchResp resp = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__INIT;
    resp.result_case = EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_SUCCESS;
    resp.success = &ok;
    send_resp(bc, b, &resp);
}

static void *batch_worker(void *arg) {
    batch *b = arg;
    batch_call *bc = b->bc;
    srv_call *c = bc->c;
    batch_run(b);
    batch_free(b);
    srv_batch_end(c);
    pthread_mutex_lock(&bc->mu);
    bc->inflight--;
    pthread_cond_broadcast(&bc->cv);
    pthread_mutex_unlock(&bc->mu);
    return NULL;
}

/* Hand a finished batch to a worker (waiting while BATCH_INFLIGHT run). */
static void batch_start(batch_call *bc, batch *b) {
    /* Stopping: nothing new is appended, and no answer is given: the call ends with
     * UNAVAILABLE (at once, or after the batches under way), which clients retry on. */
    if (!srv_batch_begin(bc->c)) {
        batch_free(b);
        return;
    }
    pthread_mutex_lock(&bc->mu);
    while (bc->inflight >= BATCH_INFLIGHT) pthread_cond_wait(&bc->cv, &bc->mu);
    bc->inflight++;
    pthread_mutex_unlock(&bc->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, BATCH_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int started = pthread_create(&t, &attr, batch_worker, b) == 0;
    pthread_attr_destroy(&attr);
    if (!started) (void)batch_worker(b); /* no thread to spare: do it here */
}

/* The open batch of a correlation id, unlinked from the list; NULL if none. */
static batch *batch_take(batch_call *bc, const annal_uuid *id) {
    for (batch **p = &bc->open; *p; p = &(*p)->next) {
        if (memcmp((*p)->corr.bytes, id->bytes, 16) == 0) {
            batch *b = *p;
            *p = b->next;
            b->next = NULL;
            bc->open_bytes -= b->bytes;
            return b;
        }
    }
    return NULL;
}

/* One request: start or continue its batch, run it when final. */
static void batch_request(batch_call *bc, BatchReq *req) {
    annal_server *srv = bc->c->srv;
    annal_uuid corr;
    int corr_ok = cv_uuid_in(req->correlation_id, &corr) == 0;
    batch *b = corr_ok ? batch_take(bc, &corr) : NULL;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) {
            protobuf_c_message_free_unpacked(&req->base, NULL);
            return;
        }
        b->bc = bc;
        b->corr = corr;
        b->corr_string = req->correlation_id &&
                         req->correlation_id->value_case == EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        b->expected = ANNAL_EXPECT_ANY;
    }
    const char *err = NULL;
    int denied = 0;
    if (!corr_ok)
        err = "the correlation id is not a UUID";
    else if (!b->has_options && !req->options)
        err = "the first request of a correlation id must carry the options";
    else if (!b->has_options) {
        b->has_options = 1;
        err = srv_batch_options(req->options, now_ns(), b->stream, &b->expected, &b->deadline_ns);
        /* security: checked once per batch, before any of its events is kept. */
        if (!err && !sec_allowed(bc->c, b->stream, SEC_WRITE)) denied = 1;
    }
    int final = req->is_final;
    if (b->failed) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
    } else if (err || denied) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
        if (denied)
            send_denied(bc, b);
        else
            send_bad(bc, b, err);
        b->failed = 1;
    } else {
        const char *e = batch_add(b, req, srv->max_append_bytes);
        if (e && !*e)
            send_store_error(bc, b, ANNAL_ETOOBIG);
        else if (e)
            send_bad(bc, b, e);
        else if (b->deadline_ns && now_ns() > b->deadline_ns)
            send_timeout(bc, b);
        else if (bc->open_bytes + b->bytes > BATCH_OPEN_MAX && !final) {
            /* Unfinished batches of one call may not hold memory without bound. */
            send_store_error(bc, b, ANNAL_ETOOBIG);
        } else {
            if (final) return batch_start(bc, b);
            b->next = bc->open;
            bc->open = b;
            bc->open_bytes += b->bytes;
            return;
        }
        b->failed = 1;
        /* Its events are not needed any more: keep only the mark. */
        for (size_t i = 0; i < b->nreqs; i++)
            protobuf_c_message_free_unpacked(&b->reqs[i]->base, NULL);
        b->nreqs = b->n = 0;
        b->bytes = 0;
    }
    if (final || !corr_ok) {
        batch_free(b);
        return;
    }
    b->next = bc->open;
    bc->open = b;
}

void rpc_streams_batch_append(srv_call *c) {
    batch_call bc;
    memset(&bc, 0, sizeof bc);
    bc.c = c;
    pthread_mutex_init(&bc.mu, NULL);
    pthread_cond_init(&bc.cv, NULL);
    pthread_mutex_init(&bc.send_mu, NULL);
    pthread_mutex_lock(&c->srv->mu);
    c->cancel_at_stop = !c->srv->stopping;
    pthread_mutex_unlock(&c->srv->mu);
    ProtobufCMessage *msg;
    int bad = 0, got;
    while ((got = call_recv(c, &event_store__client__streams__batch_append_req__descriptor, &msg,
                            &bad)) == 1)
        batch_request(&bc, (BatchReq *)msg);
    /* Let the appends under way finish (and answer) before the status. */
    pthread_mutex_lock(&bc.mu);
    while (bc.inflight > 0) pthread_cond_wait(&bc.cv, &bc.mu);
    pthread_mutex_unlock(&bc.mu);
    while (bc.open) {
        batch *b = bc.open;
        bc.open = b->next;
        batch_free(b); /* never finished: nothing written */
    }
    if (got == 0)
        call_reply(c, NULL);
    else if (bad)
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "undecodable BatchAppendReq", NULL, 0);
    else
        call_finish(c, srv_stopping(c->srv) ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_CANCELLED,
                    "the call ended", NULL, 0);
    pthread_mutex_destroy(&bc.mu);
    pthread_cond_destroy(&bc.cv);
    pthread_mutex_destroy(&bc.send_mu);
}
