/*
 * server_int.h -- what the files of the gRPC server share: the server and per-call state,
 * the synchronous call helpers (call.c), conversions (convert.c) and the RPC handlers.
 * Each call runs on a thread of its own, so blocking store calls never stall gRPC.
 */
#ifndef ANNAL_SERVER_INT_H
#define ANNAL_SERVER_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "annal.h"
#include "annal_server.h"

#include "shared.pb-c.h"
#include "streams.pb-c.h"

#include "sec.h" /* security: users, ACLs, TLS reload (docs/security.md) */

#define SRV_MAX_MESSAGE   (17u << 20) /* largest message in either direction, as clients do */
#define SRV_PENDING_CALLS 8           /* grpc_server_request_call slots kept outstanding */
#define SRV_POLL_MS       500         /* how often a waiting subscription checks its call */

typedef struct srv_call srv_call;
typedef struct srv_runner srv_runner;

struct annal_server {
    annal_db *db;
    grpc_server *server;
    grpc_completion_queue *cq; /* new-call and shutdown notifications only */
    pthread_t dispatcher;
    int port;
    char host[256];
    annal_uuid instance_id; /* this run's identity in Gossip */
    uint64_t max_append_bytes;
    annal_log_level log_level;
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int stopping;
    int shutdown_done; /* the server's shutdown tag arrived */
    unsigned pending;  /* request_call slots outstanding */
    unsigned active;   /* call threads running */
    srv_call *calls;   /* running calls, for cancelling subscriptions at stop */
    /* The call threads' pool (server.c): a thread that ends a call waits a while for the
     * next instead of exiting, so a call costs a wake-up rather than a thread. */
    srv_call *runq, *runq_tail; /* calls handed to the pool, not yet taken (runq_next) */
    unsigned threads;           /* call threads alive, running or idle */
    unsigned idle;              /* ... of them waiting on pool_cv */
    int pool_stop;              /* idle threads exit */
    pthread_cond_t pool_cv;
    char shutdown_tag; /* its address is the tag */
    sec_state *sec;    /* security: users, credentials, ACL state (auth.c, acl.c) */
    sec_tls *tls;      /* security: reloadable certificates (tls.c); NULL if insecure */

    /* Operations (ops.c): one scavenge (annal_compact) at a time, on its own thread. */
    void (*on_shutdown)(void *ctx);
    void *shutdown_ctx;
    int64_t started_ns;
    struct {
        int running, ever; /* running now; a thread to join */
        pthread_t thread;
        char id[37];      /* of the latest scavenge */
        int stop_asked;   /* StopScavenge came while it ran */
        annal_err result; /* of the latest finished one */
        annal_compact_stats stats;
        int64_t started_ns, ended_ns;
    } scavenge;         /* guarded by mu */
    srv_runner *runner; /* the store's registered projections (runner.c); NULL: none run */
};

/* One call, from the slot that waits for it to its thread's end. */
struct srv_call {
    annal_server *srv;
    grpc_call *call;
    grpc_completion_queue *cq; /* pluck queue of this call's operations only */
    grpc_call_details details;
    grpc_metadata_array request_md;
    int md_sent;    /* initial metadata sent */
    int finished;   /* status sent */
    int closed;     /* the close-on-server operation completed */
    int cancelled;  /* ... and said the call was cancelled */
    annal_sub *sub; /* a subscription to cancel at stop (guarded by srv->mu) */
    srv_call *prev, *next;
    srv_call *runq_next;
    sec_who who;        /* security: who the call acts for (auth.c) */
    int cancel_at_stop; /* a long-lived call (BatchAppend) to end at stop (srv->mu) */
    unsigned batches;   /* its appends under way (srv->mu): stop ends the call after them */
    char tag_op, tag_send, tag_close, tag_drain; /* addresses are the tags */
};

/* One trailing metadata pair of an error status. */
typedef struct srv_kv {
    const char *key;
    const char *value;
} srv_kv;

/* ---- server.c */
void srv_log(annal_server *srv, annal_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Register or unregister the subscription of c (so stop can cancel it). Returns -1 if the
 * server is stopping (nothing registered). */
int srv_call_set_sub(srv_call *c, annal_sub *sub);
int srv_stopping(annal_server *srv);
/* A BatchAppend append of c begins (0: the server is stopping, do not start it) or ends
 * (the last one at stop ends the call with UNAVAILABLE, after its answer was sent). */
int srv_batch_begin(srv_call *c);
void srv_batch_end(srv_call *c);
void srv_random_id(annal_uuid *id); /* a version-4 UUID, not for secrets */

/* ---- call.c: synchronous operations on the calling thread. */
/* Start watching for the call's close (cancellation) from the first moment. */
int call_watch_close(srv_call *c);
/* 1 if the client went away or cancelled (checked without waiting). */
int call_gone(srv_call *c);
/* Receive one message into *out (free with protobuf_c_message_free_unpacked).
 * 1: a message; 0: the client half-closed; -1: failed, cancelled or undecodable (*bad set to 1 when
 * the bytes were not a valid message). */
int call_recv(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out, int *bad);
/* The one request of a unary or server-streaming call, and then the client's half-close:
 * 1 with *out, or -1 (*bad set when undecodable or followed by a second message). Waiting
 * for the half-close before answering matters: a status sent while the request side is
 * still open makes gRPC core reset the stream (RST_STREAM NO_ERROR), which the Rust-based
 * reader of @kurrent/kurrentdb-client now and then reports as UnavailableError. */
int call_recv_one(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                  int *bad);
/* Send one message (with the initial metadata, the first time). 0 or -1 (client gone). */
int call_send(srv_call *c, const ProtobufCMessage *m);
/* Send m (may be NULL) and an OK status in one batch. */
int call_reply(srv_call *c, const ProtobufCMessage *m);
/* End the call with status code, message and trailing metadata. */
void call_finish(srv_call *c, grpc_status_code code, const char *msg, const srv_kv *trailers,
                 size_t ntrailers);
/* End the call with status code and message, and status (a packed google.rpc.Status,
 * len bytes, copied) as the `grpc-status-details-bin` trailer clients decode. */
void call_finish_details(srv_call *c, grpc_status_code code, const char *msg, const void *status,
                         size_t len);
/* The path of the method called, NUL-terminated into buf. */
void call_method(srv_call *c, char *buf, size_t size);

/* ---- convert.c */
/* stream_name bytes as a NUL-terminated name in buf (ANNAL_MAX_NAME + 1 bytes); -1 if
 * missing, empty, too long or holding a NUL. */
int cv_stream_name(const EventStore__Client__StreamIdentifier *id, char *buf);
int cv_uuid_in(const EventStore__Client__UUID *u, annal_uuid *out);
/* Fill the UUID message u (with storage in s and text) from id, as text or structured. */
typedef struct cv_uuid_buf {
    EventStore__Client__UUID msg;
    EventStore__Client__UUID__Structured structured;
    char text[37];
} cv_uuid_buf;
void cv_uuid_out(const annal_uuid *id, int as_string, cv_uuid_buf *s);
/* .NET ticks (100 ns) since the Unix epoch, as decimal text (>= 24 bytes). */
void cv_ticks(int64_t ns, char *buf, size_t size);
/* 1 if data is a JSON text (read back with content-type application/json). */
int cv_is_json(const void *data, size_t len);
/* The expected revision text KurrentDB writes in error trailers. */
void cv_expected_text(int64_t expected, char *buf, size_t size);

/* Storage for one RecordedEvent (borrowing the event's data until sent). */
typedef struct cv_rec {
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent rec;
    EventStore__Client__StreamIdentifier sid;
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent__MetadataEntry md[3];
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent__MetadataEntry *mdp[3];
    cv_uuid_buf id;
    char created[24];
    char type[ANNAL_MAX_NAME + 1];
} cv_rec;

/* Storage for one ReadResp carrying an event, and maybe the link it was reached by. */
typedef struct cv_event_msg {
    EventStore__Client__Streams__ReadResp resp;
    EventStore__Client__Streams__ReadResp__ReadEvent read;
    cv_rec event, link;
} cv_event_msg;
/* Make m a ReadResp for ev (borrowed: m points into it until sent). */
void cv_read_event(const annal_event *ev, int uuid_string, cv_event_msg *m);
/* ... for ev reached through the link event link: the client gets both (resolveLinkTos). */
void cv_read_resolved(const annal_event *ev, const annal_event *link, int uuid_string,
                      cv_event_msg *m);

/* ---- links.c: `$ce-<category>` and `$et-<type>` as KurrentDB's link streams (events of
 * type `$>` whose data is `revision@stream`, numbered 0, 1, ... in the link stream), and
 * links resolved when the client asks (resolveLinkTos), its own appended links too. */
#define SRV_LINK_TYPE "$>"
typedef struct srv_links {
    annal_db *db;
    srv_call *c;      /* security: resolved events must be readable by it (NULL: no check) */
    int numbered;     /* events of a $ce-/$et- read become links numbered from next */
    int resolve;      /* resolveLinkTos */
    int backward;     /* numbers go down */
    uint64_t next;    /* link revision of the next event */
    const char *name; /* the link stream (borrowed) */
    annal_iter *held; /* a resolved event's read, open until the next one */
    annal_event link; /* a made link */
    char data[24 + ANNAL_MAX_NAME + 2];
} srv_links;
/* 1 if name is `$ce-<x>` or `$et-<x>`. */
int links_is_stream(const char *name);
/* Fill m for ev as the client asked (a made link, a resolved link, or ev itself). */
void links_emit(srv_links *l, const annal_event *ev, int uuid_string, cv_event_msg *m);
void links_done(srv_links *l);
/* Position in $all of the link stream's event number idx (forward scan), and how many it
 * has (all of them when idx is UINT64_MAX). ANNAL_ENOTFOUND when idx is past the end. */
annal_err links_seek(annal_db *db, const char *name, uint64_t idx, uint64_t *pos, uint64_t *count);

/* ---- handlers: each ends its call (call_finish or call_reply). */
void rpc_streams_read(srv_call *c);
void rpc_streams_append(srv_call *c);
void rpc_streams_delete(srv_call *c);
void rpc_streams_tombstone(srv_call *c);
void rpc_features_methods(srv_call *c);
void rpc_gossip_read(srv_call *c);
/* ops.c: Operations and Monitoring. */
void rpc_ops_start_scavenge(srv_call *c);
void rpc_ops_stop_scavenge(srv_call *c);
void rpc_ops_shutdown(srv_call *c);
void rpc_monitoring_stats(srv_call *c);
/* projections.c: the system projections, reported running. */
void rpc_projections_enable(srv_call *c);
void rpc_projections_statistics(srv_call *c);
void rpc_projections_state(srv_call *c);
void rpc_projections_disable(srv_call *c);
/* Wait for a scavenge still running (at stop). */
void ops_join(annal_server *srv);
/* The Monitoring figures as key/value text pairs (at most max; returns how many), without
 * a live call. vals holds max buffers of 40 bytes. */
size_t ops_stats(annal_server *srv, const char **keys, char (*vals)[40], size_t max);
/* A Read request decoded (streams.c), without a live call. */
#define REGEX_MAX 4096
typedef struct srv_read_plan {
    int subscribe, is_all, uuid_string, resolve;
    char name[ANNAL_MAX_NAME + 1]; /* the stream, or "$all" */
    unsigned flags;                /* ANNAL_READ_BACKWARD */
    uint64_t count;                /* UINT64_MAX: no limit */
    uint64_t from;                 /* reads: where to start */
    int nothing, at_end;           /* reads that return nothing */
    int start;                     /* subscriptions: ANNAL_SUB_* and from */
    uint64_t start_from;
    int has_filter; /* $all only; prefixes become one regex in regex */
    annal_filter filter;
    uint32_t every; /* checkpoint interval */
    char regex[REGEX_MAX];
} srv_read_plan;
/* NULL, or why the request is invalid (INVALID_ARGUMENT). */
const char *srv_read_parse(const EventStore__Client__Streams__ReadReq__Options *o,
                           srv_read_plan *p);
/* All a Read handler checks before touching the store (the fuzz target's entry). */
const char *srv_read_check(const EventStore__Client__Streams__ReadReq *req);
/* subscribe.c: Read with subscription options. */
void rpc_subscribe(srv_call *c, const srv_read_plan *p);
void sub_set_start(const EventStore__Client__Streams__ReadReq__Options *o, int *start,
                   uint64_t *from);
/* A request's filter as annal's (prefixes as one regex in buf, REGEX_MAX bytes), and the
 * checkpoint interval it asks for. 0, or -1 if it cannot be expressed. */
int sub_make_filter(const EventStore__Client__Streams__ReadReq__Options__FilterOptions *f,
                    annal_filter *out, char *buf, uint32_t *every);

/* ---- append.c, shared by Append and BatchAppend */
/* A proposed event as annal's (borrowing type, data and metadata). NULL or an error. */
const char *srv_event_in(const EventStore__Client__UUID *id, const char *type,
                         ProtobufCBinaryData data, ProtobufCBinaryData meta, annal_event_data *ev);
typedef struct srv_append_out {
    int64_t revision; /* ANNAL_OK: the stream's revision (-1: none); ECONFLICT: the actual one */
    int has_position;
    uint64_t position; /* of the last event written */
} srv_append_out;
/* Append ev[0..n) (none: check expected only; one `$metadata` event to `$$s`: set s's
 * metadata) for c, whose sec_check(SEC_WRITE) of stream passed: `$` streams through
 * sec_append, ACL changes told to security. ANNAL_OK, ANNAL_ECONFLICT or the store's error. */
annal_err srv_append(srv_call *c, const char *stream, int64_t expected, annal_event_data *ev,
                     size_t n, srv_append_out *out);
void rpc_streams_batch_append(srv_call *c);
/* Request decoding without a live call (the fuzz targets' entries). NULL or an error. */
const char *srv_options_in(const EventStore__Client__StreamIdentifier *sid, int kase,
                           uint64_t revision, char *stream, int64_t *expected);
const char *srv_append_check(const EventStore__Client__Streams__AppendReq *req, int first);
const char *srv_delete_parse(const EventStore__Client__Streams__DeleteReq *req, char *stream,
                             int64_t *expected);
const char *srv_tombstone_parse(const EventStore__Client__Streams__TombstoneReq *req, char *stream,
                                int64_t *expected);
/* batch.c: a BatchAppendReq's options as annal's (received_ns: when they arrived, for a
 * relative deadline), and a whole request's validation as the server does it (the fuzz
 * target's entry). NULL or an error ("" for over max_bytes). */
const char *srv_batch_options(const EventStore__Client__Streams__BatchAppendReq__Options *o,
                              int64_t received_ns, char *stream, int64_t *expected,
                              int64_t *deadline_ns);
const char *srv_batch_check(const EventStore__Client__Streams__BatchAppendReq *req,
                            uint64_t max_bytes);

/* v2.c: kurrentdb.protocol.v2.streams.StreamsService (atomic appends across streams). */
void rpc_v2_append_session(srv_call *c);
void rpc_v2_append_records(srv_call *c);
/* A v2 request checked as the server does, without a live call (the fuzz target's entry):
 * an AppendRequest (records 0) or an AppendRecordsRequest (1). NULL, or what is wrong. */
const char *srv_v2_check(const ProtobufCMessage *msg, int records, uint64_t max_bytes);
/* dcb.c: annal's own DCB service (proto/dcb.proto, annal.dcb.v1.Dcb). */
void rpc_dcb_read(srv_call *c);
void rpc_dcb_subscribe(srv_call *c);
void rpc_dcb_append(srv_call *c);
/* Request decoding without a live call (the fuzz target's entries): NULL or an error ("" for
 * over max_bytes). */
struct Annal__Dcb__V1__AppendReq;
struct Annal__Dcb__V1__Query;
const char *srv_dcb_append_check(const struct Annal__Dcb__V1__AppendReq *req, uint64_t max_bytes);
const char *srv_dcb_query_check(const struct Annal__Dcb__V1__Query *q);

/* Errors of the store as the clients dispatch on them. */
void rpc_fail_store(srv_call *c, annal_err e, const char *stream);

/* ---- runner.c: the store's registered projections, each on a thread of its own. */
/* Start them when opts asks (projections_data_dir): sets srv->runner. ANNAL_ENOMEM. */
annal_err runner_start(annal_server *srv, const annal_server_opts *opts);
/* Stop them between batches (Lua under way is interrupted); again is a no-op. */
void runner_stop(annal_server *srv);
/* Free srv->runner once no call can ask it (runner_target, runner_names) any more. */
void runner_free(annal_server *srv);
/* The target of registered projection name (caller frees), or NULL when the server runs
 * no projections or none is registered by that name. */
char *runner_target(annal_server *srv, const char *name);
/* The registered names (caller frees each and the array): *n of them. */
char **runner_names(annal_server *srv, size_t *n);

#endif /* ANNAL_SERVER_INT_H */
