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
    char shutdown_tag; /* its address is the tag */
    sec_state *sec;    /* security: users, credentials, ACL state (auth.c, acl.c) */
    sec_tls *tls;      /* security: reloadable certificates (tls.c); NULL if insecure */
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
    sec_who who;                       /* security: who the call acts for (auth.c) */
    char tag_op, tag_close, tag_drain; /* addresses are the tags */
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

/* ---- call.c: synchronous operations on the calling thread. */
/* Start watching for the call's close (cancellation) from the first moment. */
int call_watch_close(srv_call *c);
/* 1 if the client went away or cancelled (checked without waiting). */
int call_gone(srv_call *c);
/* Receive one message into *out (free with protobuf_c_message_free_unpacked).
 * 1: a message; 0: the client half-closed; -1: failed or undecodable (*bad set to 1 when
 * the bytes were not a valid message). */
int call_recv(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out, int *bad);
/* Send one message (with the initial metadata, the first time). 0 or -1 (client gone). */
int call_send(srv_call *c, const ProtobufCMessage *m);
/* Send m (may be NULL) and an OK status in one batch. */
int call_reply(srv_call *c, const ProtobufCMessage *m);
/* End the call with status code, message and trailing metadata. */
void call_finish(srv_call *c, grpc_status_code code, const char *msg, const srv_kv *trailers,
                 size_t ntrailers);
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

/* Storage for one ReadResp carrying an event, filled by cv_read_event. */
typedef struct cv_event_msg {
    EventStore__Client__Streams__ReadResp resp;
    EventStore__Client__Streams__ReadResp__ReadEvent read;
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent rec;
    EventStore__Client__StreamIdentifier sid;
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent__MetadataEntry md[3];
    EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent__MetadataEntry *mdp[3];
    cv_uuid_buf id;
    char created[24];
    char type[ANNAL_MAX_NAME + 1];
    char stream[ANNAL_MAX_NAME + 1];
} cv_event_msg;
/* Make m a ReadResp for ev (borrowed: m points into it until sent). */
void cv_read_event(const annal_event *ev, int uuid_string, cv_event_msg *m);

/* ---- handlers: each ends its call (call_finish or call_reply). */
void rpc_streams_read(srv_call *c);
void rpc_streams_append(srv_call *c);
void rpc_streams_delete(srv_call *c);
void rpc_streams_tombstone(srv_call *c);
void rpc_features_methods(srv_call *c);
void rpc_gossip_read(srv_call *c);
/* subscribe.c: Read with subscription options. */
void rpc_subscribe(srv_call *c, const EventStore__Client__Streams__ReadReq__Options *o);
/* A request's filter as annal's (prefixes as one regex in buf, REGEX_MAX bytes), and the
 * checkpoint interval it asks for. 0, or -1 if it cannot be expressed. */
#define REGEX_MAX 4096
int sub_make_filter(const EventStore__Client__Streams__ReadReq__Options__FilterOptions *f,
                    annal_filter *out, char *buf, uint32_t *every);

/* Errors of the store as the clients dispatch on them. */
void rpc_fail_store(srv_call *c, annal_err e, const char *stream);

#endif /* ANNAL_SERVER_INT_H */
