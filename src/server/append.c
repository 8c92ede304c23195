/*
 * append.c -- Streams.Append (options first, then the proposed events, then half-close),
 * Streams.Delete and Streams.Tombstone. A wrong expected revision of an append is a
 * response field; of a delete, an error status with `wrong-expected-version` trailers.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

typedef EventStore__Client__Streams__AppendReq AppendReq;
typedef EventStore__Client__Streams__AppendReq__ProposedMessage Proposed;

/* The expected-revision oneof of Append, Delete and Tombstone options: the same field
 * numbers, so the same case values. */
enum { EXP_REVISION = 2, EXP_NO_STREAM = 3, EXP_ANY = 4, EXP_STREAM_EXISTS = 5 };

const char *srv_options_in(const EventStore__Client__StreamIdentifier *sid, int kase,
                           uint64_t revision, char *stream, int64_t *expected) {
    if (cv_stream_name(sid, stream) != 0) return "the options must name a stream of 1 to 255 bytes";
    switch (kase) {
    case EXP_REVISION:
        /* Beyond int64 it would read as one of annal's negative ANNAL_EXPECT_* values. */
        if (revision > (uint64_t)INT64_MAX) return "the expected revision is too large";
        *expected = (int64_t)revision;
        break;
    case EXP_NO_STREAM: *expected = ANNAL_EXPECT_NO_STREAM; break;
    case EXP_STREAM_EXISTS: *expected = ANNAL_EXPECT_STREAM_EXISTS; break;
    default: *expected = ANNAL_EXPECT_ANY;
    }
    return NULL;
}

typedef struct append_req {
    char stream[ANNAL_MAX_NAME + 1];
    int64_t expected;
    ProtobufCMessage **msgs; /* the proposed messages, owned */
    annal_event_data *events;
    size_t n, cap;
    uint64_t bytes;
} append_req;

static void append_req_free(append_req *a) {
    for (size_t i = 0; i < a->n; i++) protobuf_c_message_free_unpacked(a->msgs[i], NULL);
    free(a->msgs);
    free(a->events);
}

/* The oneof of an AppendReq: options and proposed message share storage, so each is
 * read only under its case (a second options message is not an event). */
static const EventStore__Client__Streams__AppendReq__Options *req_options(const AppendReq *r) {
    return r->content_case == EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS ? r->options
                                                                                        : NULL;
}

static const Proposed *req_proposed(const AppendReq *r) {
    return r->content_case == EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_PROPOSED_MESSAGE
               ? r->proposed_message
               : NULL;
}

static const char *md_get(const Proposed *p, const char *key) {
    for (size_t i = 0; i < p->n_metadata; i++)
        if (strcmp(p->metadata[i]->key, key) == 0) return p->metadata[i]->value;
    return NULL;
}

const char *srv_event_in(const EventStore__Client__UUID *id, const char *type,
                         ProtobufCBinaryData data, ProtobufCBinaryData meta, annal_event_data *ev) {
    memset(ev, 0, sizeof *ev);
    if (cv_uuid_in(id, &ev->id) != 0) return "an event id is not a UUID";
    if (!type || !*type) return "an event has no type";
    ev->type = type;
    ev->data = data.data;
    ev->data_len = data.len;
    ev->metadata = meta.data;
    ev->metadata_len = meta.len;
    return NULL;
}

/* Take one proposed message (owned by a on success). NULL or an error text; "" when the
 * append grew over max_bytes. */
static const char *add_event(append_req *a, ProtobufCMessage *msg, uint64_t max_bytes) {
    const Proposed *p = req_proposed((AppendReq *)msg);
    if (!p) return "an AppendReq after the options must be a proposed message";
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        ProtobufCMessage **m = realloc(a->msgs, cap * sizeof *m);
        if (!m) return "out of memory";
        a->msgs = m;
        annal_event_data *e = realloc(a->events, cap * sizeof *e);
        if (!e) return "out of memory";
        a->events = e;
        a->cap = cap;
    }
    const char *err =
        srv_event_in(p->id, md_get(p, "type"), p->data, p->custom_metadata, &a->events[a->n]);
    if (err) return err;
    a->bytes += p->data.len + p->custom_metadata.len;
    a->msgs[a->n++] = msg;
    if (a->bytes > max_bytes) return "";
    return NULL;
}

/* Receive the options and the events. 0, or -1 with the call finished. */
static int receive(srv_call *c, append_req *a) {
    ProtobufCMessage *msg;
    int bad;
    int got = call_recv(c, &event_store__client__streams__append_req__descriptor, &msg, &bad);
    if (got != 1) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, bad ? "undecodable AppendReq" : "no options",
                    NULL, 0);
        return -1;
    }
    const EventStore__Client__Streams__AppendReq__Options *o = req_options((AppendReq *)msg);
    const char *err =
        !o ? "the first AppendReq must be the options"
           : srv_options_in(o->stream_identifier, (int)o->expected_stream_revision_case,
                            o->revision, a->stream, &a->expected);
    if (err) {
        protobuf_c_message_free_unpacked(msg, NULL);
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err, NULL, 0);
        return -1;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    while ((got = call_recv(c, &event_store__client__streams__append_req__descriptor, &msg,
                            &bad)) == 1) {
        err = add_event(a, msg, c->srv->max_append_bytes);
        if (err && !*err) {
            rpc_fail_store(c, ANNAL_ETOOBIG, a->stream);
            return -1;
        }
        if (err) {
            if (a->n == 0 || a->msgs[a->n - 1] != msg) protobuf_c_message_free_unpacked(msg, NULL);
            call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err, NULL, 0);
            return -1;
        }
    }
    if (got < 0) {
        call_finish(c, bad ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED,
                    bad ? "undecodable AppendReq" : "the client went away", NULL, 0);
        return -1;
    }
    return 0;
}

static void reply_success(srv_call *c, int64_t revision, int has_position, uint64_t position) {
    EventStore__Client__Streams__AppendResp resp = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__INIT;
    EventStore__Client__Streams__AppendResp__Success ok =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__INIT;
    EventStore__Client__Streams__AppendResp__Position pos =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__POSITION__INIT;
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (revision >= 0) {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        ok.current_revision = (uint64_t)revision;
    } else {
        ok.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_NO_STREAM;
        ok.no_stream = &empty;
    }
    if (has_position) {
        pos.commit_position = pos.prepare_position = position;
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION;
        ok.position = &pos;
    } else {
        ok.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__POSITION_OPTION_NO_POSITION;
        ok.no_position = &empty;
    }
    resp.result_case = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_SUCCESS;
    resp.success = &ok;
    call_reply(c, &resp.base);
}

static void reply_wrong_expected(srv_call *c, int64_t expected, int64_t actual) {
    EventStore__Client__Streams__AppendResp resp = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__INIT;
    EventStore__Client__Streams__AppendResp__WrongExpectedVersion w =
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__INIT;
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (actual >= 0) {
        w.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_REVISION;
        w.current_revision = (uint64_t)actual;
    } else {
        w.current_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_NO_STREAM;
        w.current_no_stream = &empty;
    }
    if (expected >= 0) {
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_REVISION;
        w.expected_revision = (uint64_t)expected;
    } else if (expected == ANNAL_EXPECT_NO_STREAM) {
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_NO_STREAM;
        w.expected_no_stream = &empty;
    } else if (expected == ANNAL_EXPECT_STREAM_EXISTS) {
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_STREAM_EXISTS;
        w.expected_stream_exists = &empty;
    } else {
        w.expected_revision_option_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__EXPECTED_REVISION_OPTION_EXPECTED_ANY;
        w.expected_any = &empty;
    }
    resp.result_case = EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_WRONG_EXPECTED_VERSION;
    resp.wrong_expected_version = &w;
    call_reply(c, &resp.base);
}

/* Clients set stream metadata by appending one `$metadata` event to `$$<stream>`. */
static int is_metadata(const char *stream, const annal_event_data *ev, size_t n) {
    return strncmp(stream, "$$", 2) == 0 && stream[2] && n == 1 &&
           strcmp(ev[0].type, "$metadata") == 0;
}

annal_err srv_append(srv_call *c, const char *stream, int64_t expected, annal_event_data *ev,
                     size_t n, srv_append_out *out) {
    memset(out, 0, sizeof *out);
    out->revision = -1;
    annal_append_result res;
    memset(&res, 0, sizeof res);
    res.revision = -1;
    annal_err r;
    if (n == 0) {
        /* An append of no events checks the expected revision and writes nothing. */
        uint64_t head;
        r = annal_stream_head(c->srv->db, stream, &head);
        if (r != ANNAL_OK && r != ANNAL_ENOTFOUND) return r;
        int64_t actual = r == ANNAL_OK ? (int64_t)head : -1;
        out->revision = actual;
        int ok = expected == ANNAL_EXPECT_ANY ||
                 (expected == ANNAL_EXPECT_NO_STREAM && actual < 0) ||
                 (expected == ANNAL_EXPECT_STREAM_EXISTS && actual >= 0) || expected == actual;
        return ok ? ANNAL_OK : ANNAL_ECONFLICT;
    }
    if (is_metadata(stream, ev, n))
        r = annal_stream_meta_set(c->srv->db, stream + 2, expected, (const char *)ev[0].data,
                                  ev[0].data_len, &res);
    else
        r = sec_append(c, stream, expected, ev, n, &res); /* security: `$` streams, ACL changes */
    if (r == ANNAL_OK && is_metadata(stream, ev, n))
        sec_written(c, stream); /* security: ACLs may have changed */
    if (r == ANNAL_OK || r == ANNAL_ECONFLICT) out->revision = res.revision;
    if (r == ANNAL_OK) {
        out->has_position = 1;
        out->position = res.first_position + res.count - 1;
    }
    return r;
}

void rpc_streams_append(srv_call *c) {
    append_req a;
    memset(&a, 0, sizeof a);
    if (receive(c, &a) == 0 && sec_check(c, a.stream, SEC_WRITE) == 0) { /* security */
        srv_append_out out;
        annal_err r = srv_append(c, a.stream, a.expected, a.events, a.n, &out);
        if (r == ANNAL_OK)
            reply_success(c, out.revision, out.has_position, out.position);
        else if (r == ANNAL_ECONFLICT)
            reply_wrong_expected(c, a.expected, out.revision);
        else
            rpc_fail_store(c, r, is_metadata(a.stream, a.events, a.n) ? a.stream + 2 : a.stream);
    }
    append_req_free(&a);
}

/* ---- Delete and Tombstone */
static void fail_wrong_expected(srv_call *c, const char *stream, int64_t expected, int64_t actual) {
    char exp[24], act[24];
    cv_expected_text(expected, exp, sizeof exp);
    snprintf(act, sizeof act, "%" PRId64, actual);
    srv_kv kv[] = {{"exception", "wrong-expected-version"},
                   {"stream-name", stream},
                   {"expected-version", exp},
                   {"actual-version", act}};
    /* No actual version means the stream does not exist. */
    call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "Wrong expected version.", kv,
                actual >= 0 ? 4 : 3);
}

/* Delete stream; reply with the fields of msg (DeleteResp and TombstoneResp are alike). */
static void delete_stream(srv_call *c, const char *stream, int64_t expected, unsigned flags) {
    if (sec_check(c, stream, SEC_DELETE) != 0) return; /* security */
    annal_append_result res;
    memset(&res, 0, sizeof res);
    res.revision = -1;
    annal_err r = annal_stream_delete(c->srv->db, stream, expected, flags, &res);
    /* KurrentDB deletes a stream that is not there when nothing else was expected. */
    if (r == ANNAL_ENOTFOUND &&
        (expected == ANNAL_EXPECT_ANY || expected == ANNAL_EXPECT_NO_STREAM) &&
        !(flags & ANNAL_DELETE_HARD)) {
        r = ANNAL_OK;
        res.count = 0;
    }
    if (r == ANNAL_ENOTFOUND) return fail_wrong_expected(c, stream, expected, -1);
    if (r == ANNAL_ECONFLICT) return fail_wrong_expected(c, stream, expected, res.revision);
    if (r != ANNAL_OK) return rpc_fail_store(c, r, stream);
    /* Both responses: field 1 a position, field 2 no position. */
    EventStore__Client__Streams__DeleteResp resp = EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__INIT;
    EventStore__Client__Streams__DeleteResp__Position pos =
        EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__POSITION__INIT;
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    if (res.count > 0) {
        pos.commit_position = pos.prepare_position = res.first_position;
        resp.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__POSITION_OPTION_POSITION;
        resp.position = &pos;
    } else {
        resp.position_option_case =
            EVENT_STORE__CLIENT__STREAMS__DELETE_RESP__POSITION_OPTION_NO_POSITION;
        resp.no_position = &empty;
    }
    call_reply(c, &resp.base);
}

const char *srv_delete_parse(const EventStore__Client__Streams__DeleteReq *req, char *stream,
                             int64_t *expected) {
    const EventStore__Client__Streams__DeleteReq__Options *o = req->options;
    if (!o) return "a stream name is required";
    return srv_options_in(o->stream_identifier, (int)o->expected_stream_revision_case, o->revision,
                          stream, expected);
}

void rpc_streams_delete(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv_one(c, &event_store__client__streams__delete_req__descriptor, &msg, &bad) != 1)
        return call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no DeleteReq", NULL, 0);
    char name[ANNAL_MAX_NAME + 1];
    int64_t expected;
    const char *err =
        srv_delete_parse((EventStore__Client__Streams__DeleteReq *)msg, name, &expected);
    if (err)
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err, NULL, 0);
    else
        delete_stream(c, name, expected, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

const char *srv_tombstone_parse(const EventStore__Client__Streams__TombstoneReq *req, char *stream,
                                int64_t *expected) {
    const EventStore__Client__Streams__TombstoneReq__Options *o = req->options;
    if (!o) return "a stream name is required";
    return srv_options_in(o->stream_identifier, (int)o->expected_stream_revision_case, o->revision,
                          stream, expected);
}

void rpc_streams_tombstone(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv_one(c, &event_store__client__streams__tombstone_req__descriptor, &msg, &bad) != 1)
        return call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no TombstoneReq", NULL, 0);
    char name[ANNAL_MAX_NAME + 1];
    int64_t expected;
    const char *err =
        srv_tombstone_parse((EventStore__Client__Streams__TombstoneReq *)msg, name, &expected);
    if (err)
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err, NULL, 0);
    else
        delete_stream(c, name, expected, ANNAL_DELETE_HARD);
    protobuf_c_message_free_unpacked(msg, NULL);
}

const char *srv_append_check(const EventStore__Client__Streams__AppendReq *req, int first) {
    if (first) {
        const EventStore__Client__Streams__AppendReq__Options *o = req_options(req);
        if (!o) return "the first AppendReq must be the options";
        char stream[ANNAL_MAX_NAME + 1];
        int64_t expected;
        return srv_options_in(o->stream_identifier, (int)o->expected_stream_revision_case,
                              o->revision, stream, &expected);
    }
    const Proposed *p = req_proposed(req);
    if (!p) return "an AppendReq after the options must be a proposed message";
    annal_event_data ev;
    return srv_event_in(p->id, md_get(p, "type"), p->data, p->custom_metadata, &ev);
}
