/*
 * v2.c -- KurrentDB's v2 Streams service (kurrentdb.protocol.v2.streams.StreamsService):
 * AppendSession (a client stream of one AppendRequest per stream, committed as one set at
 * the half-close) and AppendRecords (one request of records in any order of streams, and
 * consistency checks on any streams). Each is one annal_append_multi: all or nothing, in
 * consecutive positions, idempotent by record ids across the whole set.
 *
 * A record's schema name is the event's type; its properties and schema become the
 * event's metadata as the JSON object KurrentDB stores and a v1 Read returns
 * ({"<key>": <value>, ..., "$schema.name": "...", "$schema.format": "Json"}).
 * Failures are a status with a google.rpc.Status in `grpc-status-details-bin` whose
 * detail the clients dispatch on by its type name (v2errors.proto).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "google/rpc/status.pb-c.h"
#include "server_int.h"
#include "v2errors.pb-c.h"
#include "v2streams.pb-c.h"

typedef Kurrentdb__Protocol__V2__Streams__AppendRecord Record;
typedef Kurrentdb__Protocol__V2__Streams__AppendRequest AppendRequest;
typedef Kurrentdb__Protocol__V2__Streams__AppendRecordsRequest RecordsRequest;

#define V2_MAX_DEPTH    32     /* nesting of a property value (structs and lists) */
#define V2_MAX_PARTS    100000 /* requests of a session (annal's default max_batch_events) */
#define V2_TOMBSTONED   (-100) /* a tombstoned stream's actual state, as KurrentDB reports it */
#define V2_SOFT_DELETED (-10)  /* ... and a soft-deleted one's, when it was expected to exist */
#define V2_DETAIL_URL   "type.googleapis.com/kurrentdb.protocol.v2.streams.errors."

/* A failure found while taking requests in, answered once the client half-closed. */
enum { F_NONE, F_BAD, F_NOMEM, F_RECORD_SIZE, F_TXN_SIZE };
typedef struct v2_fail {
    int kind;
    char msg[256];
    char stream[ANNAL_MAX_NAME + 1]; /* F_RECORD_SIZE: the record's */
    char record_id[64];
    uint64_t size;
} v2_fail;

/* The set being built: parts (runs of one stream) over one array of events. Strings and
 * data are borrowed from the received messages (msgs, owned); metadata texts are owned. */
typedef struct v2_set {
    ProtobufCMessage **msgs;
    size_t nmsgs, msgs_cap;
    annal_stream_append *parts;
    size_t *first; /* per part: its first event in events (events may move while growing) */
    size_t nparts, parts_cap, first_cap;
    annal_event_data *events;
    char **meta; /* per event: its metadata text (json_dumps, freed with free) */
    size_t nevents, events_cap, meta_cap;
    annal_stream_check *checks;
    size_t nchecks;
    uint64_t bytes;    /* data + metadata of every event */
    uint64_t received; /* bytes of the messages kept (names, ids, unknown fields too) */
    v2_fail fail;
} v2_set;

static void set_free(v2_set *s) {
    for (size_t i = 0; i < s->nevents; i++) free(s->meta[i]);
    for (size_t i = 0; i < s->nmsgs; i++) protobuf_c_message_free_unpacked(s->msgs[i], NULL);
    free(s->msgs);
    free(s->parts);
    free(s->first);
    free(s->events);
    free(s->meta);
    free(s->checks);
}

/* Make room for need elements of size bytes in *p (capacity *cap). 0 or -1. */
static int grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*(void **)p, n * size);
    if (!q) return -1;
    *(void **)p = q;
    *cap = n;
    return 0;
}

static void fail_bad(v2_set *s, const char *msg) {
    if (s->fail.kind != F_NONE) return;
    s->fail.kind = F_BAD;
    snprintf(s->fail.msg, sizeof s->fail.msg, "%s", msg);
}

static void fail_nomem(v2_set *s) {
    if (s->fail.kind == F_NONE) s->fail.kind = F_NOMEM;
}

/* An expected revision or state of the v2 protocol (the same numbers as annal's). */
static int expected_in(int64_t v, int64_t *out) {
    if (v >= 0 || v == ANNAL_EXPECT_NO_STREAM || v == ANNAL_EXPECT_ANY ||
        v == ANNAL_EXPECT_STREAM_EXISTS) {
        *out = v;
        return 0;
    }
    return -1;
}

/* ---- Properties and schema as the event's JSON metadata */
static json_t *value_json(const Google__Protobuf__Value *v, int depth);

static json_t *struct_json(const Google__Protobuf__Struct *st, int depth) {
    json_t *o = json_object();
    for (size_t i = 0; o && st && i < st->n_fields; i++) {
        json_t *v = value_json(st->fields[i]->value, depth + 1);
        if (!v || !st->fields[i]->key || json_object_set_new(o, st->fields[i]->key, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* NULL when not expressible: nested too deep, not UTF-8, not a finite number. */
static json_t *value_json(const Google__Protobuf__Value *v, int depth) {
    if (depth > V2_MAX_DEPTH) return NULL;
    if (!v) return json_null();
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        double d = v->number_value;
        if (!isfinite(d)) return NULL;
        /* Integers print as integers: 42, not 42.0 (within 2^53, where doubles are exact). */
        if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(json_int_t)d)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return json_string(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE: return struct_json(v->struct_value, depth);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        json_t *a = json_array();
        const Google__Protobuf__ListValue *l = v->list_value;
        for (size_t i = 0; a && l && i < l->n_values; i++) {
            json_t *e = value_json(l->values[i], depth + 1);
            if (!e || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    default: return json_null(); /* null, or a value with no kind set */
    }
}

static const char *format_name(Kurrentdb__Protocol__V2__Streams__SchemaFormat f) {
    switch (f) {
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_JSON: return "Json";
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_PROTOBUF: return "Protobuf";
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_AVRO: return "Avro";
    case KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_FORMAT__SCHEMA_FORMAT_BYTES: return "Bytes";
    default: return "Unspecified";
    }
}

/* The metadata text of r (caller frees), or NULL with *err set. */
static char *record_meta(const Record *r, const char **err) {
    json_t *o = json_object();
    int bad = !o;
    for (size_t i = 0; !bad && i < r->n_properties; i++) {
        const Kurrentdb__Protocol__V2__Streams__AppendRecord__PropertiesEntry *p = r->properties[i];
        json_t *v = value_json(p->value, 0);
        bad = !v || !p->key || json_object_set_new(o, p->key, v) != 0;
    }
    /* The schema last: a property cannot pass for it. */
    const Kurrentdb__Protocol__V2__Streams__SchemaInfo *sc = r->schema;
    bad = bad || json_object_set_new(o, "$schema.name", json_string(sc->name)) != 0 ||
          json_object_set_new(o, "$schema.format", json_string(format_name(sc->format))) != 0;
    if (!bad && sc->_id_case == KURRENTDB__PROTOCOL__V2__STREAMS__SCHEMA_INFO___ID_ID)
        bad = json_object_set_new(o, "$schema.id", json_string(sc->id)) != 0;
    char *text = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        *err = "a record's properties or schema cannot be stored as JSON (a value nested deeper "
               "than 32, not UTF-8, or not a finite number)";
    return text;
}

/* ---- Taking requests in */
/* Start a part of stream (borrowed) under expected. 0 or -1 (failure recorded). */
static int part_begin(v2_set *s, const char *stream, int64_t expected) {
    if (grow(&s->parts, &s->parts_cap, s->nparts + 1, sizeof *s->parts) != 0 ||
        grow(&s->first, &s->first_cap, s->nparts + 1, sizeof *s->first) != 0) {
        fail_nomem(s);
        return -1;
    }
    s->parts[s->nparts] = (annal_stream_append){stream, expected, NULL, 0};
    s->first[s->nparts++] = s->nevents;
    return 0;
}

static void fail_size(v2_set *s, int kind, const char *stream, const Record *r, uint64_t size) {
    if (s->fail.kind != F_NONE) return;
    s->fail.kind = kind;
    s->fail.size = size;
    snprintf(s->fail.stream, sizeof s->fail.stream, "%s", stream);
    snprintf(s->fail.record_id, sizeof s->fail.record_id, "%s",
             r && r->_record_id_case ? r->record_id : "");
}

/* Add record r to the last part (of stream). 0 or -1 (failure recorded). */
static int record_add(v2_set *s, const Record *r, const char *stream, uint64_t max_bytes) {
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    if (r->_record_id_case ==
            KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORD___RECORD_ID_RECORD_ID &&
        *r->record_id && annal_uuid_parse(r->record_id, &ev.id) != ANNAL_OK) {
        fail_bad(s, "a record id is not a UUID");
        return -1;
    }
    if (!r->schema || !*r->schema->name) {
        fail_bad(s, "a record has no schema name (its event type)");
        return -1;
    }
    const char *err = NULL;
    char *meta = record_meta(r, &err);
    if (!meta) {
        fail_bad(s, err);
        return -1;
    }
    uint64_t size = r->data.len + strlen(meta);
    if (size > max_bytes || s->bytes + size > max_bytes) {
        fail_size(s, size > max_bytes ? F_RECORD_SIZE : F_TXN_SIZE, stream, r,
                  size > max_bytes ? size : s->bytes + size);
        free(meta);
        return -1;
    }
    if (grow(&s->events, &s->events_cap, s->nevents + 1, sizeof *s->events) != 0 ||
        grow(&s->meta, &s->meta_cap, s->nevents + 1, sizeof *s->meta) != 0) {
        free(meta);
        fail_nomem(s);
        return -1;
    }
    ev.type = r->schema->name;
    ev.data = r->data.data;
    ev.data_len = r->data.len;
    ev.metadata = meta;
    ev.metadata_len = strlen(meta);
    s->meta[s->nevents] = meta;
    s->events[s->nevents++] = ev;
    s->parts[s->nparts - 1].n++;
    s->bytes += size;
    return 0;
}

static int keep_msg(v2_set *s, ProtobufCMessage *msg) {
    if (grow(&s->msgs, &s->msgs_cap, s->nmsgs + 1, sizeof *s->msgs) != 0) return -1;
    s->msgs[s->nmsgs++] = msg;
    return 0;
}

/* One AppendRequest of a session: a part of its own (borrowing from q). */
static void session_take(v2_set *s, const AppendRequest *q, uint64_t max_bytes) {
    int64_t expected = ANNAL_EXPECT_ANY;
    if (!*q->stream) return fail_bad(s, "an AppendRequest names no stream");
    if (q->stream[0] == '$') return fail_bad(s, "v2 appends write user streams (not '$' ones)");
    if (q->_expected_revision_case && expected_in(q->expected_revision, &expected) != 0)
        return fail_bad(s, "an expected revision is not a revision, -1, -2 or -4");
    if (part_begin(s, q->stream, expected) != 0) return;
    for (size_t i = 0; i < q->n_records; i++)
        if (record_add(s, q->records[i], q->stream, max_bytes) != 0) return;
}

/* ... and msg owned by s on return. What is kept is bounded: the messages' bytes (twice
 * max_bytes: the records' own count once) and their number. */
static void session_add(v2_set *s, ProtobufCMessage *msg, uint64_t max_bytes) {
    if (s->fail.kind == F_NONE) {
        s->received += protobuf_c_message_get_packed_size(msg);
        if (s->received > 2 * max_bytes) {
            s->fail.kind = F_TXN_SIZE;
            s->fail.size = s->received;
        } else if (s->nparts >= V2_MAX_PARTS) {
            fail_bad(s, "an append session of over 100,000 requests");
        }
    }
    if (s->fail.kind != F_NONE || keep_msg(s, msg) != 0) {
        if (s->fail.kind == F_NONE) fail_nomem(s);
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    session_take(s, (const AppendRequest *)msg, max_bytes);
}

/* ---- Answers */
/* Finish c with code, msg and detail (a message of v2errors.proto named type). */
static void fail_detail(srv_call *c, grpc_status_code code, const char *msg, const char *type,
                        const ProtobufCMessage *detail) {
    size_t dlen = protobuf_c_message_get_packed_size(detail);
    uint8_t *packed = malloc(dlen ? dlen : 1);
    char url[160];
    snprintf(url, sizeof url, "%s%s", V2_DETAIL_URL, type);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    uint8_t *status = NULL;
    size_t slen = 0;
    if (packed) {
        protobuf_c_message_pack(detail, packed);
        any.type_url = url;
        any.value.data = packed;
        any.value.len = dlen;
        st.code = (int32_t)code;
        st.message = (char *)msg;
        st.details = &any;
        slen = protobuf_c_message_get_packed_size(&st.base);
        status = malloc(slen ? slen : 1);
    }
    if (status) {
        protobuf_c_message_pack(&st.base, status);
        call_finish_details(c, code, msg, status, slen);
    } else {
        call_finish(c, code, msg, NULL, 0); /* out of memory: at least the code */
    }
    free(status);
    free(packed);
}

static int32_t clamp32(uint64_t v) { return v > INT32_MAX ? INT32_MAX : (int32_t)v; }

static void send_fail(srv_call *c, const v2_fail *f) {
    uint64_t max = c->srv->max_append_bytes;
    if (f->kind == F_RECORD_SIZE) {
        Kurrentdb__Protocol__V2__Streams__Errors__AppendRecordSizeExceededErrorDetails d =
            KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_RECORD_SIZE_EXCEEDED_ERROR_DETAILS__INIT;
        d.stream = (char *)f->stream;
        d.record_id = (char *)f->record_id;
        d.size = clamp32(f->size);
        d.max_size = clamp32(max);
        char msg[ANNAL_MAX_NAME + 160];
        snprintf(msg, sizeof msg, "A record of stream %s is %" PRIu64 " bytes; at most %" PRIu64,
                 f->stream, f->size, max);
        fail_detail(c, GRPC_STATUS_INVALID_ARGUMENT, msg, "AppendRecordSizeExceededErrorDetails",
                    &d.base);
    } else if (f->kind == F_TXN_SIZE) {
        Kurrentdb__Protocol__V2__Streams__Errors__AppendTransactionSizeExceededErrorDetails d =
            KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_TRANSACTION_SIZE_EXCEEDED_ERROR_DETAILS__INIT;
        d.size = clamp32(f->size);
        d.max_size = clamp32(max);
        fail_detail(c, GRPC_STATUS_ABORTED, "The append is larger than the maximum append size.",
                    "AppendTransactionSizeExceededErrorDetails", &d.base);
    } else if (f->kind == F_NOMEM) {
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, f->msg, NULL, 0);
    }
}

/* A part's place among the parts sorted by stream (then by index): the first and the
 * last part of each stream are found without comparing every pair. */
typedef struct v2_ord {
    const char *stream;
    size_t part;
} v2_ord;

/* The outcome of one annal_append_multi. */
typedef struct v2_out {
    annal_multi_result res;
    annal_append_result *pres;   /* per part */
    annal_stream_conflict *conf; /* up to nparts + nchecks */
    v2_ord *order;               /* parts sorted by stream */
    size_t *rank;                /* per part: its place in order */
} v2_out;

static void out_free(v2_out *o) {
    free(o->pres);
    free(o->conf);
    free(o->order);
    free(o->rank);
}

static int by_stream(const void *a, const void *b) {
    const v2_ord *x = a, *y = b;
    int r = strcmp(x->stream, y->stream);
    return r ? r : (x->part > y->part) - (x->part < y->part);
}

/* Append the set for c (whose rights were checked). ANNAL_ENOMEM, or the store's. */
static annal_err commit(srv_call *c, v2_set *s, v2_out *o) {
    memset(o, 0, sizeof *o);
    size_t nconf = s->nparts + s->nchecks;
    o->pres = calloc(s->nparts, sizeof *o->pres);
    o->conf = calloc(nconf, sizeof *o->conf);
    o->order = calloc(s->nparts, sizeof *o->order);
    o->rank = calloc(s->nparts, sizeof *o->rank);
    if (!o->pres || !o->conf || !o->order || !o->rank) return ANNAL_ENOMEM;
    for (size_t i = 0; i < s->nparts; i++) {
        s->parts[i].events = s->events + s->first[i];
        o->order[i] = (v2_ord){s->parts[i].stream, i};
    }
    qsort(o->order, s->nparts, sizeof *o->order, by_stream);
    for (size_t k = 0; k < s->nparts; k++) o->rank[o->order[k].part] = k;
    o->res.parts = o->pres;
    o->res.conflicts = o->conf;
    o->res.max_conflicts = nconf;
    return annal_append_multi(c->srv->db, s->parts, s->nparts, s->checks, s->nchecks, &o->res);
}

/* Is part i the first of its stream in the set? The last? */
static int first_of_stream(const v2_out *o, size_t i) {
    size_t k = o->rank[i];
    return k == 0 || strcmp(o->order[k - 1].stream, o->order[k].stream) != 0;
}

static int last_of_stream(const v2_set *s, const v2_out *o, size_t i) {
    size_t k = o->rank[i];
    return k + 1 == s->nparts || strcmp(o->order[k + 1].stream, o->order[k].stream) != 0;
}

static int64_t last_position(const v2_out *o) {
    return o->res.count ? (int64_t)(o->res.first_position + o->res.count - 1) : -1;
}

/* A session's conflict: a tombstoned stream if any, else the first stream in conflict. */
static void session_conflict(srv_call *c, const v2_out *o) {
    const char *msg = annal_db_errmsg(c->srv->db); /* names every stream that failed */
    size_t n = o->res.nconflicts < o->res.max_conflicts ? o->res.nconflicts : o->res.max_conflicts;
    for (size_t i = 0; i < n; i++) {
        if (o->conf[i].reason != ANNAL_EDELETED) continue;
        Kurrentdb__Protocol__V2__Streams__Errors__StreamTombstonedErrorDetails d =
            KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__STREAM_TOMBSTONED_ERROR_DETAILS__INIT;
        d.stream = (char *)o->conf[i].stream;
        return fail_detail(c, GRPC_STATUS_FAILED_PRECONDITION, msg, "StreamTombstonedErrorDetails",
                           &d.base);
    }
    Kurrentdb__Protocol__V2__Streams__Errors__StreamRevisionConflictErrorDetails d =
        KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__STREAM_REVISION_CONFLICT_ERROR_DETAILS__INIT;
    d.stream = n ? (char *)o->conf[0].stream : "";
    d.expected_revision = n ? o->conf[0].expected : ANNAL_EXPECT_ANY;
    d.actual_revision = n ? o->conf[0].actual : -1;
    fail_detail(c, GRPC_STATUS_FAILED_PRECONDITION, msg, "StreamRevisionConflictErrorDetails",
                &d.base);
}

static void session_reply(srv_call *c, const v2_set *s, const v2_out *o) {
    Kurrentdb__Protocol__V2__Streams__AppendSessionResponse resp =
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_SESSION_RESPONSE__INIT;
    Kurrentdb__Protocol__V2__Streams__AppendResponse *out = calloc(s->nparts, sizeof *out);
    Kurrentdb__Protocol__V2__Streams__AppendResponse **outp = calloc(s->nparts, sizeof *outp);
    if (!out || !outp) {
        free(out);
        free(outp);
        return call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    }
    for (size_t i = 0; i < s->nparts; i++) {
        kurrentdb__protocol__v2__streams__append_response__init(&out[i]);
        out[i].stream = (char *)s->parts[i].stream;
        out[i].stream_revision = o->pres[i].revision;
        if (s->parts[i].n) {
            out[i]._position_case =
                KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RESPONSE___POSITION_POSITION;
            out[i].position = (int64_t)(o->pres[i].first_position + o->pres[i].count - 1);
        }
        outp[i] = &out[i];
    }
    resp.n_output = s->nparts;
    resp.output = outp;
    resp.position = last_position(o);
    call_reply(c, &resp.base);
    free(out);
    free(outp);
}

/* Check c's right to write every part's stream. 0, or -1 with the call refused. */
static int may_write(srv_call *c, const v2_set *s) {
    for (size_t i = 0; i < s->nparts; i++)
        if (sec_check(c, s->parts[i].stream, SEC_WRITE) != 0) return -1; /* security */
    return 0;
}

static void session_commit(srv_call *c, v2_set *s) {
    if (s->nparts == 0)
        return call_finish(c, GRPC_STATUS_FAILED_PRECONDITION,
                           "the append session had no append requests", NULL, 0);
    if (may_write(c, s) != 0) return;
    v2_out o;
    annal_err r = commit(c, s, &o);
    if (r == ANNAL_OK)
        session_reply(c, s, &o);
    else if (r == ANNAL_ECONFLICT || r == ANNAL_EDELETED)
        session_conflict(c, &o);
    else
        rpc_fail_store(c, r, NULL);
    out_free(&o);
}

void rpc_v2_append_session(srv_call *c) {
    v2_set s;
    memset(&s, 0, sizeof s);
    ProtobufCMessage *msg;
    int bad, got;
    /* Every request is taken in, even after a failure: the client learns it from the
     * status at the end, which its callback decodes (not from a write that failed). */
    while ((got = call_recv(c, &kurrentdb__protocol__v2__streams__append_request__descriptor, &msg,
                            &bad)) == 1)
        session_add(&s, msg, c->srv->max_append_bytes);
    if (got < 0)
        call_finish(c, bad ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED,
                    bad ? "undecodable AppendRequest" : "the client went away", NULL, 0);
    else if (s.fail.kind != F_NONE)
        send_fail(c, &s.fail);
    else
        session_commit(c, &s);
    set_free(&s);
}

/* All the server checks of one request before touching the store, without a live call
 * (the fuzz target's entry): an AppendRequest of a session (records 0) or an
 * AppendRecordsRequest (records 1). NULL, or what is wrong. */
static int records_in(v2_set *s, const RecordsRequest *req, uint64_t max_bytes);

const char *srv_v2_check(const ProtobufCMessage *msg, int records, uint64_t max_bytes) {
    v2_set s;
    memset(&s, 0, sizeof s);
    static const char *const why[] = {NULL, "bad request", "out of memory",
                                      "a record over the size limit", "over the size limit"};
    if (records)
        (void)records_in(&s, (const RecordsRequest *)msg, max_bytes);
    else
        session_take(&s, (const AppendRequest *)msg, max_bytes);
    const char *r = why[s.fail.kind];
    set_free(&s);
    return r;
}

/* ---- AppendRecords */
/* Take req in: runs of records of one stream become parts (written under any), checks
 * become annal's checks. 0 or -1 (failure recorded). */
static int records_in(v2_set *s, const RecordsRequest *req, uint64_t max_bytes) {
    if (req->n_records == 0) {
        fail_bad(s, "an AppendRecordsRequest needs records");
        return -1;
    }
    for (size_t i = 0; i < req->n_records; i++) {
        const Record *r = req->records[i];
        if (!*r->stream) {
            fail_bad(s, "a record names no stream");
            return -1;
        }
        if (r->stream[0] == '$') {
            fail_bad(s, "v2 appends write user streams (not '$' ones)");
            return -1;
        }
        int same = s->nparts && strcmp(s->parts[s->nparts - 1].stream, r->stream) == 0;
        if (!same && part_begin(s, r->stream, ANNAL_EXPECT_ANY) != 0) return -1;
        if (record_add(s, r, r->stream, max_bytes) != 0) return -1;
    }
    s->checks = calloc(req->n_checks ? req->n_checks : 1, sizeof *s->checks);
    if (!s->checks) {
        fail_nomem(s);
        return -1;
    }
    for (size_t i = 0; i < req->n_checks; i++) {
        const Kurrentdb__Protocol__V2__Streams__ConsistencyCheck__StreamStateCheck *k =
            req->checks[i]->type_case ==
                    KURRENTDB__PROTOCOL__V2__STREAMS__CONSISTENCY_CHECK__TYPE_STREAM_STATE
                ? req->checks[i]->stream_state
                : NULL;
        int64_t expected;
        if (!k || !*k->stream || expected_in(k->expected_state, &expected) != 0) {
            fail_bad(s, "a consistency check needs a stream state check: a stream, and a "
                        "revision, -1, -2 or -4");
            return -1;
        }
        s->checks[s->nchecks++] = (annal_stream_check){k->stream, expected};
    }
    return 0;
}

/* A check's actual state as KurrentDB reports it. annal says -1 for a stream that does not
 * exist and for a soft-deleted one alike; the latter (its metadata's "$tb" is the next
 * revision it had, and it reads as not found) is -10 against stream_exists, and its last
 * revision against a revision. */
static int64_t actual_state(annal_db *db, const annal_stream_conflict *k) {
    if (k->reason == ANNAL_EDELETED) return V2_TOMBSTONED;
    if (k->actual != -1 || k->expected == ANNAL_EXPECT_NO_STREAM) return k->actual;
    char *text = NULL;
    uint64_t head;
    if (annal_stream_head(db, k->stream, &head) != ANNAL_ENOTFOUND ||
        annal_stream_meta_get(db, k->stream, &text, NULL) != ANNAL_OK)
        return k->actual;
    json_t *o = json_loads(text, 0, NULL);
    annal_free(text);
    json_t *tb = json_object_get(o, "$tb");
    int64_t actual = k->actual;
    if (json_is_integer(tb) && json_integer_value(tb) > 0)
        actual = k->expected == ANNAL_EXPECT_STREAM_EXISTS ? V2_SOFT_DELETED
                                                           : (int64_t)json_integer_value(tb) - 1;
    json_decref(o);
    return actual;
}

/* The violations of a refused AppendRecords: every failed check (by its index), and every
 * stream written that is tombstoned (once, with index -1: it is no check of the request). */
static void records_conflict(srv_call *c, const v2_set *s, const v2_out *o) {
    size_t n = o->res.nconflicts < o->res.max_conflicts ? o->res.nconflicts : o->res.max_conflicts;
    Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation *v = calloc(n, sizeof *v);
    Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation **vp = calloc(n, sizeof *vp);
    Kurrentdb__Protocol__V2__Streams__Errors__ConsistencyViolation__StreamStateViolation *st =
        calloc(n, sizeof *st);
    if (!v || !vp || !st) {
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const annal_stream_conflict *k = &o->conf[i];
            int is_check = k->index >= s->nparts;
            /* A written stream is reported once: at its first part. */
            if (!is_check && !first_of_stream(o, k->index)) continue;
            kurrentdb__protocol__v2__streams__errors__consistency_violation__init(&v[m]);
            kurrentdb__protocol__v2__streams__errors__consistency_violation__stream_state_violation__init(
                &st[m]);
            st[m].stream = (char *)k->stream;
            st[m].expected_state = k->expected;
            st[m].actual_state = actual_state(c->srv->db, k);
            v[m].check_index = is_check ? (int32_t)(k->index - s->nparts) : -1;
            v[m].type_case =
                KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__CONSISTENCY_VIOLATION__TYPE_STREAM_STATE;
            v[m].stream_state = &st[m];
            vp[m] = &v[m];
            m++;
        }
        Kurrentdb__Protocol__V2__Streams__Errors__AppendConsistencyViolationErrorDetails d =
            KURRENTDB__PROTOCOL__V2__STREAMS__ERRORS__APPEND_CONSISTENCY_VIOLATION_ERROR_DETAILS__INIT;
        d.n_violations = m;
        d.violations = vp;
        fail_detail(c, GRPC_STATUS_FAILED_PRECONDITION, annal_db_errmsg(c->srv->db),
                    "AppendConsistencyViolationErrorDetails", &d.base);
    }
    free(v);
    free(vp);
    free(st);
}

/* One revision per stream written (its last part's), and the last position. */
static void records_reply(srv_call *c, const v2_set *s, const v2_out *o) {
    Kurrentdb__Protocol__V2__Streams__AppendRecordsResponse resp =
        KURRENTDB__PROTOCOL__V2__STREAMS__APPEND_RECORDS_RESPONSE__INIT;
    Kurrentdb__Protocol__V2__Streams__StreamRevision *rev = calloc(s->nparts, sizeof *rev);
    Kurrentdb__Protocol__V2__Streams__StreamRevision **revp = calloc(s->nparts, sizeof *revp);
    if (!rev || !revp) {
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        size_t m = 0;
        for (size_t i = 0; i < s->nparts; i++) {
            if (!last_of_stream(s, o, i)) continue;
            kurrentdb__protocol__v2__streams__stream_revision__init(&rev[m]);
            rev[m].stream = (char *)s->parts[i].stream;
            rev[m].revision = o->pres[i].revision;
            revp[m] = &rev[m];
            m++;
        }
        resp.n_revisions = m;
        resp.revisions = revp;
        resp.position = last_position(o);
        call_reply(c, &resp.base);
    }
    free(rev);
    free(revp);
}

/* Rights: write every stream written, read every stream checked (a check tells its state). */
static int may_write_check(srv_call *c, const v2_set *s) {
    if (may_write(c, s) != 0) return -1;
    for (size_t i = 0; i < s->nchecks; i++)
        if (sec_check(c, s->checks[i].stream, SEC_READ) != 0) return -1; /* security */
    return 0;
}

void rpc_v2_append_records(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv(c, &kurrentdb__protocol__v2__streams__append_records_request__descriptor, &msg,
                  &bad) != 1)
        return call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                           bad ? "undecodable AppendRecordsRequest" : "no AppendRecordsRequest",
                           NULL, 0);
    v2_set s;
    memset(&s, 0, sizeof s);
    if (keep_msg(&s, msg) != 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        fail_nomem(&s);
    } else {
        (void)records_in(&s, (const RecordsRequest *)msg, c->srv->max_append_bytes);
    }
    if (s.fail.kind != F_NONE) {
        send_fail(c, &s.fail);
    } else if (may_write_check(c, &s) == 0) {
        v2_out o;
        annal_err r = commit(c, &s, &o);
        if (r == ANNAL_OK)
            records_reply(c, &s, &o);
        else if (r == ANNAL_ECONFLICT || r == ANNAL_EDELETED)
            records_conflict(c, &s, &o);
        else
            rpc_fail_store(c, r, NULL);
        out_free(&o);
    }
    set_free(&s);
}
