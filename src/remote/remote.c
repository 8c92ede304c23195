/*
 * remote.c -- annal's gRPC client (remote.h): each call runs synchronously on the caller's
 * thread over a pluck completion queue of its own, one batch at a time, so a CLI command
 * is a straight line of code. Messages are the protobuf-c types generated from the
 * server's protos; errors are read from the status and the `exception` trailer as the
 * official clients read them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "jsonfast.h"
#include "remote.h"
#include "serverfeatures.pb-c.h"
#include "shared.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "streams.pb-c.h"

#define MAX_MESSAGE (17u << 20) /* as the server and the official clients */
#define CALL_MS     60000       /* a call's deadline: an append waits for the disk */

struct annal_remote {
    grpc_channel *channel;
    char *auth; /* "Basic ..." or NULL */
    char errmsg[512];
};

/* The status of one call, with the trailers the clients dispatch on. */
typedef struct rpc_status {
    grpc_status_code code;
    char details[256];
    char exception[64];
    char actual[32]; /* actual-version: "" when absent (no stream) */
    int has_actual;
} rpc_status;

static void set_err(annal_remote *r, const char *fmt, const char *a, const char *b) {
    snprintf(r->errmsg, sizeof r->errmsg, fmt, a, b);
}

const char *annal_remote_errmsg(const annal_remote *r) { return r ? r->errmsg : ""; }

/* ---- Connecting */

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = cap < (4u << 20) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf) buf[len] = '\0';
    fclose(f);
    return buf;
}

static void base64(const char *s, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)s[i] << 16;
        if (i + 1 < n) v |= (unsigned)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)s[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* %XX escapes of a connection string's parts. */
static void unescape(char *s) {
    char *o = s;
    for (; *s; s++) {
        unsigned v;
        if (*s == '%' && sscanf(s + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Copy src into dst (size bytes); -1 if it does not fit. */
static int copy_str(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size) return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

typedef struct conn_str {
    char host[256];
    int port;
    int tls;
    char ca_file[1024];
    char user[128], pass[128];
} conn_str;

static int parse_conn(const char *s, conn_str *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->port = 2113;
    c->tls = 1; /* KurrentDB's clients default to TLS too */
    const char *rest;
    if (strncmp(s, "kurrentdb://", 12) == 0)
        rest = s + 12;
    else if (strncmp(s, "esdb://", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "kurrentdb+discover://", 21) == 0 ||
             strncmp(s, "esdb+discover://", 16) == 0) {
        snprintf(err, errlen, "cluster discovery (+discover) is not supported: name one node");
        return -1;
    } else {
        snprintf(err, errlen, "'%s' is not kurrentdb://HOST:PORT, esdb://HOST:PORT or unix:PATH",
                 s);
        return -1;
    }
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", rest);
    char *query = strchr(buf, '?');
    if (query) *query++ = '\0';
    char *path = strchr(buf, '/');
    if (path) *path = '\0'; /* "kurrentdb://host:2113/?tls=false" */
    char *hostport = buf, *at = strrchr(buf, '@');
    if (at) {
        *at = '\0';
        hostport = at + 1;
        char *colon = strchr(buf, ':');
        if (colon) *colon = '\0';
        if (copy_str(c->user, sizeof c->user, buf) != 0 ||
            copy_str(c->pass, sizeof c->pass, colon ? colon + 1 : "") != 0) {
            snprintf(err, errlen, "user name or password too long");
            return -1;
        }
        unescape(c->user);
        unescape(c->pass);
    }
    if (strchr(hostport, ',')) {
        snprintf(err, errlen, "several nodes in one connection string are not supported");
        return -1;
    }
    char *colon = strrchr(hostport, ':');
    if (colon && !strchr(colon, ']')) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535) {
            snprintf(err, errlen, "bad port in '%s'", s);
            return -1;
        }
        c->port = (int)p;
        *colon = '\0';
    }
    if (!*hostport) {
        snprintf(err, errlen, "no host in '%s'", s);
        return -1;
    }
    if (copy_str(c->host, sizeof c->host, hostport) != 0) {
        snprintf(err, errlen, "host name too long");
        return -1;
    }
    for (char *kv = query ? strtok(query, "&") : NULL; kv; kv = strtok(NULL, "&")) {
        char *eq = strchr(kv, '=');
        if (!eq) continue;
        *eq++ = '\0';
        unescape(eq);
        if (strcasecmp(kv, "tls") == 0) {
            c->tls = strcasecmp(eq, "false") != 0;
        } else if (strcasecmp(kv, "tlsCAFile") == 0) {
            if (copy_str(c->ca_file, sizeof c->ca_file, eq) != 0) {
                snprintf(err, errlen, "tlsCAFile path too long");
                return -1;
            }
        } else if (strcasecmp(kv, "tlsVerifyCert") == 0 && strcasecmp(eq, "false") == 0) {
            snprintf(err, errlen, "tlsVerifyCert=false is not supported: pass tlsCAFile=PATH");
            return -1;
        }
        /* Other settings (keepAliveInterval, defaultDeadline, ...) tune clients with
         * connection pools; one short command has no use for them. */
    }
    return 0;
}

static grpc_channel_args *channel_args(void) {
    static grpc_arg args[3];
    static grpc_channel_args ca = {3, args};
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)MAX_MESSAGE;
    /* A connection of its own per channel: gRPC core otherwise shares one TCP connection
     * among channels of equal arguments (insecure ones, not TLS ones, whose credentials
     * differ), so 16 load-generator clients measured one connection insecure against 16
     * with TLS. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[2].value.integer = 1;
    return &ca;
}

/* gRPC core's own log lines (a failed handshake, retries) would interleave with a
 * command's one-line errors, which already carry the status details. */
static void quiet(gpr_log_func_args *args) { (void)args; }

static annal_err open_locked(const char *target, annal_remote **out, char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    char dummy[8];
    if (!err) err = dummy, errlen = sizeof dummy;
    annal_remote *r = calloc(1, sizeof *r);
    if (!r) return ANNAL_ENOMEM;
    gpr_set_log_function(quiet);
    grpc_init();
    grpc_channel_credentials *creds = NULL;
    char addr[512];
    /* cppcheck-suppress unreadVariable ; every path sets it: kept for the next one */
    annal_err rc = ANNAL_OK;
    if (strncmp(target, "unix:", 5) == 0) {
        /* The local socket of `annal serve`: trusted by its file permissions. */
        snprintf(addr, sizeof addr, "%s", target);
        creds = grpc_insecure_credentials_create();
    } else {
        conn_str c;
        if (parse_conn(target, &c, err, errlen) != 0) {
            rc = ANNAL_EINVAL;
            goto fail;
        }
        snprintf(addr, sizeof addr, strchr(c.host, ':') && c.host[0] != '[' ? "[%s]:%d" : "%s:%d",
                 c.host, c.port);
        if (c.tls) {
            char *ca = NULL;
            if (c.ca_file[0] && !(ca = read_all(c.ca_file))) {
                snprintf(err, errlen, "cannot read tlsCAFile %s: %s", c.ca_file, strerror(errno));
                rc = ANNAL_EIO;
                goto fail;
            }
            creds = grpc_ssl_credentials_create(ca, NULL, NULL, NULL);
            free(ca);
        } else {
            creds = grpc_insecure_credentials_create();
        }
        if (c.user[0]) {
            char up[260], b64[360];
            int n = snprintf(up, sizeof up, "%s:%s", c.user, c.pass);
            base64(up, (size_t)n, b64);
            size_t len = strlen(b64) + 7;
            r->auth = malloc(len);
            if (r->auth) snprintf(r->auth, len, "Basic %s", b64);
        }
    }
    if (!creds) {
        snprintf(err, errlen, "cannot make the channel's credentials");
        rc = ANNAL_ENOMEM;
        goto fail;
    }
    r->channel = grpc_channel_create(addr, creds, channel_args());
    grpc_channel_credentials_release(creds);
    if (!r->channel) {
        rc = ANNAL_ENOMEM;
        goto fail;
    }
    *out = r;
    return ANNAL_OK;
fail:
    free(r->auth);
    free(r);
    grpc_shutdown();
    return rc;
}

/* Channels are made one at a time: made by several threads at once, gRPC 1.51's TLS
 * channels sometimes failed their first handshake ("certificate verify failed": 5 runs
 * in 30 of 16 load-generator threads opening together, none with the opens serialized).
 * Opening is rare next to calls. */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;

annal_err annal_remote_open(const char *target, annal_remote **out, char *err, size_t errlen) {
    pthread_mutex_lock(&open_mu);
    annal_err rc = open_locked(target, out, err, errlen);
    pthread_mutex_unlock(&open_mu);
    return rc;
}

void annal_remote_close(annal_remote *r) {
    if (!r) return;
    grpc_channel_destroy(r->channel);
    free(r->auth);
    free(r);
    grpc_shutdown();
}

/* ---- One call */

typedef int (*msg_fn)(void *ctx, const uint8_t *p, size_t n); /* 0 goes on, -1 stops */

static grpc_byte_buffer *pack(const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static int batch(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n) {
    char tag;
    if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) return -1;
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -1;
}

static void copy_slice(grpc_slice s, char *buf, size_t size) {
    size_t n = GRPC_SLICE_LENGTH(s);
    if (n >= size) n = size - 1;
    memcpy(buf, GRPC_SLICE_START_PTR(s), n);
    buf[n] = '\0';
}

/* Call method: send the nreq messages (a client stream when more than one), then hand
 * every reply to on_msg, then read the status. 0 when the call ran (whatever its status,
 * in *st); -1 when it could not start. */
static int rpc(annal_remote *r, const char *method, const ProtobufCMessage *const *reqs,
               size_t nreq, msg_fn on_msg, void *ctx, int timeout_ms, rpc_status *st) {
    memset(st, 0, sizeof *st);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice path = grpc_slice_from_static_string(method);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(r->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, deadline, NULL);
    if (!call) {
        grpc_completion_queue_destroy(cq);
        return -1;
    }
    grpc_metadata md;
    memset(&md, 0, sizeof md);
    if (r->auth) {
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_copied_string(r->auth);
    }
    grpc_metadata_array init_md, trailers;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trailers);
    /* As few batches as gRPC allows, each a wait: the metadata with the first message,
     * the half-close with the last. One message a batch (one send outstanding). A failed
     * batch means the server already ended the call: its status says why. */
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t nops = 0, next = 0;
    ops[nops].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[nops].data.send_initial_metadata.count = r->auth ? 1 : 0;
    ops[nops++].data.send_initial_metadata.metadata = r->auth ? &md : NULL;
    int ok, last;
    do {
        grpc_byte_buffer *bb = next < nreq ? pack(reqs[next++]) : NULL;
        if (bb) {
            ops[nops].op = GRPC_OP_SEND_MESSAGE;
            ops[nops++].data.send_message.send_message = bb;
        }
        last = next >= nreq;
        if (last) {
            ops[nops++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
            ops[nops].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[nops++].data.recv_initial_metadata.recv_initial_metadata = &init_md;
        }
        ok = batch(call, cq, ops, nops) == 0;
        if (bb) grpc_byte_buffer_destroy(bb);
        memset(ops, 0, sizeof ops);
        nops = 0;
    } while (ok && !last);
    if (!last) { /* a send failed: the initial metadata is still to take */
        ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[0].data.recv_initial_metadata.recv_initial_metadata = &init_md;
        (void)batch(call, cq, ops, 1);
    }
    for (int stop = 0; !stop;) {
        grpc_byte_buffer *msg = NULL;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &msg;
        /* cppcheck-suppress knownConditionTrueFalse ; the batch fills msg through ops */
        if (batch(call, cq, ops, 1) != 0 || !msg) break;
        grpc_byte_buffer_reader rd;
        if (grpc_byte_buffer_reader_init(&rd, msg)) {
            grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
            stop = on_msg && on_msg(ctx, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s)) != 0;
            grpc_slice_unref(s);
            grpc_byte_buffer_reader_destroy(&rd);
        }
        grpc_byte_buffer_destroy(msg);
        if (stop) grpc_call_cancel(call, NULL);
    }
    grpc_slice details = grpc_empty_slice();
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailers;
    ops[0].data.recv_status_on_client.status = &st->code;
    ops[0].data.recv_status_on_client.status_details = &details;
    if (batch(call, cq, ops, 1) != 0) st->code = GRPC_STATUS_UNKNOWN;
    copy_slice(details, st->details, sizeof st->details);
    for (size_t i = 0; i < trailers.count; i++) {
        char key[64];
        copy_slice(trailers.metadata[i].key, key, sizeof key);
        if (strcmp(key, "exception") == 0)
            copy_slice(trailers.metadata[i].value, st->exception, sizeof st->exception);
        else if (strcmp(key, "actual-version") == 0) {
            copy_slice(trailers.metadata[i].value, st->actual, sizeof st->actual);
            st->has_actual = 1;
        }
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trailers);
    if (r->auth) grpc_slice_unref(md.value);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_past(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    return 0;
}

/* A failed status as annal_err, the detail in r->errmsg. */
static annal_err status_err(annal_remote *r, const rpc_status *st, const char *stream) {
    if (strcmp(st->exception, "wrong-expected-version") == 0) {
        set_err(r, "wrong expected revision on %s%s", stream, "");
        return ANNAL_ECONFLICT;
    }
    if (strcmp(st->exception, "stream-deleted") == 0) {
        set_err(r, "stream %s is tombstoned%s", stream, "");
        return ANNAL_EDELETED;
    }
    if (strcmp(st->exception, "maximum-append-size-exceeded") == 0) {
        set_err(r, "the server refused the append as too big: %s%s", st->details, "");
        return ANNAL_ETOOBIG;
    }
    const char *what = st->details[0] ? st->details : "no detail";
    switch (st->code) {
    case GRPC_STATUS_INVALID_ARGUMENT: set_err(r, "%s%s", what, ""); return ANNAL_EINVAL;
    case GRPC_STATUS_NOT_FOUND: set_err(r, "%s%s", what, ""); return ANNAL_ENOTFOUND;
    case GRPC_STATUS_UNAUTHENTICATED:
    case GRPC_STATUS_PERMISSION_DENIED:
        set_err(r, "access denied by the server: %s%s", what, "");
        return ANNAL_EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        set_err(r, "the server did not answer in time%s%s", "", "");
        return ANNAL_EIO;
    case GRPC_STATUS_UNAVAILABLE:
        set_err(r, "server unavailable: %s%s", what, "");
        return ANNAL_EIO;
    default: set_err(r, "server error: %s%s", what, ""); return ANNAL_EIO;
    }
}

annal_err annal_remote_ping(annal_remote *r, int timeout_ms) {
    EventStore__Client__Empty req = EVENT_STORE__CLIENT__EMPTY__INIT;
    const ProtobufCMessage *reqs[] = {&req.base};
    rpc_status st;
    if (rpc(r, "/event_store.client.server_features.ServerFeatures/GetSupportedMethods", reqs, 1,
            NULL, NULL, timeout_ms, &st) != 0)
        return ANNAL_ENOMEM;
    return st.code == GRPC_STATUS_OK ? ANNAL_OK : status_err(r, &st, "");
}

/* ---- Append */

static void uuid_v7(annal_uuid *id) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (getrandom(id->bytes, sizeof id->bytes, 0) != (ssize_t)sizeof id->bytes) {
        /* No entropy source: time and address still differ between calls. */
        uint64_t x = (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)id;
        for (int i = 0; i < 16; i++) id->bytes[i] = (uint8_t)(x >>= 3, x * 2654435761u);
    }
    for (int i = 0; i < 6; i++) id->bytes[i] = (uint8_t)(ms >> (40 - 8 * i));
    id->bytes[6] = (uint8_t)((id->bytes[6] & 0x0f) | 0x70);
    id->bytes[8] = (uint8_t)((id->bytes[8] & 0x3f) | 0x80);
}

static int is_json(const void *data, size_t len) {
    if (!len) return 0;
    if (jsonfast_plain(data, len) == 1) return 1; /* most events: no parse tree built */
    json_t *j = json_loadb(data, len, JSON_DECODE_ANY, NULL);
    json_decref(j);
    return j != NULL;
}

static int zero_id(const annal_uuid *id) {
    for (int i = 0; i < 16; i++)
        if (id->bytes[i]) return 0;
    return 1;
}

typedef struct append_ctx {
    EventStore__Client__Streams__AppendResp *resp;
} append_ctx;

static int on_append(void *ctx, const uint8_t *p, size_t n) {
    append_ctx *a = ctx;
    if (!a->resp) a->resp = event_store__client__streams__append_resp__unpack(NULL, n, p);
    return 0;
}

static int64_t expected_case(int64_t expected, uint64_t *rev) {
    if (expected >= 0) {
        *rev = (uint64_t)expected;
        return 2;
    }
    return expected == ANNAL_EXPECT_NO_STREAM ? 3 : expected == ANNAL_EXPECT_STREAM_EXISTS ? 5 : 4;
}

/* The outcome of an append as the server's response says. */
static annal_err append_result(annal_remote *r, const EventStore__Client__Streams__AppendResp *resp,
                               const char *stream, size_t n, annal_append_result *res) {
    if (resp->result_case ==
        EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_WRONG_EXPECTED_VERSION) {
        const EventStore__Client__Streams__AppendResp__WrongExpectedVersion *w =
            resp->wrong_expected_version;
        res->revision =
            w->current_revision_option_case ==
                    EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__WRONG_EXPECTED_VERSION__CURRENT_REVISION_OPTION_CURRENT_REVISION
                ? (int64_t)w->current_revision
                : -1;
        set_err(r, "wrong expected revision on %s%s", stream, "");
        return ANNAL_ECONFLICT;
    } else if (resp->result_case == EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__RESULT_SUCCESS) {
        const EventStore__Client__Streams__AppendResp__Success *s = resp->success;
        res->revision =
            s->current_revision_option_case ==
                    EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION
                ? (int64_t)s->current_revision
                : -1;
        if (s->position_option_case ==
            EVENT_STORE__CLIENT__STREAMS__APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION) {
            /* The last event's position; earlier events of one append precede it. */
            res->first_position = s->position->commit_position - (n ? n - 1 : 0);
        }
        res->count = n;
        return ANNAL_OK;
    }
    set_err(r, "the server sent an empty append result%s%s", "", "");
    return ANNAL_EIO;
}

annal_err annal_remote_append(annal_remote *r, const char *stream, int64_t expected,
                              annal_event_data *evs, size_t n, annal_append_result *res) {
    memset(res, 0, sizeof *res);
    r->errmsg[0] = '\0';
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    EventStore__Client__Streams__AppendReq__Options opt =
        EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__OPTIONS__INIT;
    opt.stream_identifier = &sid;
    opt.expected_stream_revision_case =
        (EventStore__Client__Streams__AppendReq__Options__ExpectedStreamRevisionCase)expected_case(
            expected, &opt.revision);
    if (expected < 0) opt.any = &empty; /* no_stream, any, stream_exists share the slot */
    size_t nmsg = n + 1;
    EventStore__Client__Streams__AppendReq *reqs = calloc(nmsg, sizeof *reqs);
    EventStore__Client__Streams__AppendReq__ProposedMessage *pm = calloc(n ? n : 1, sizeof *pm);
    EventStore__Client__UUID *ids = calloc(n ? n : 1, sizeof *ids);
    char(*idtext)[37] = calloc(n ? n : 1, 37);
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry(*md)[2] =
        calloc(n ? n : 1, sizeof *md);
    EventStore__Client__Streams__AppendReq__ProposedMessage__MetadataEntry *(*mdp)[2] =
        calloc(n ? n : 1, sizeof *mdp);
    const ProtobufCMessage **ptrs = calloc(nmsg, sizeof *ptrs);
    if (!reqs || !pm || !ids || !idtext || !md || !mdp || !ptrs) {
        free(reqs), free(pm), free(ids), free(idtext), free(md), free(mdp), free(ptrs);
        return ANNAL_ENOMEM;
    }
    event_store__client__streams__append_req__init(&reqs[0]);
    reqs[0].content_case = EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_OPTIONS;
    reqs[0].options = &opt;
    ptrs[0] = &reqs[0].base;
    for (size_t i = 0; i < n; i++) {
        if (zero_id(&evs[i].id)) uuid_v7(&evs[i].id);
        annal_uuid_format(&evs[i].id, idtext[i]);
        event_store__client__uuid__init(&ids[i]);
        ids[i].value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        ids[i].string = idtext[i];
        event_store__client__streams__append_req__proposed_message__init(&pm[i]);
        pm[i].id = &ids[i];
        for (int k = 0; k < 2; k++) {
            event_store__client__streams__append_req__proposed_message__metadata_entry__init(
                &md[i][k]);
            mdp[i][k] = &md[i][k];
        }
        md[i][0].key = "type";
        md[i][0].value = (char *)evs[i].type;
        md[i][1].key = "content-type";
        /* annal reads data back as JSON when it parses as JSON; say the same to KurrentDB,
         * whose projections (and $metadata events) need JSON marked as JSON. */
        md[i][1].value =
            is_json(evs[i].data, evs[i].data_len) ? "application/json" : "application/octet-stream";
        pm[i].n_metadata = 2;
        pm[i].metadata = mdp[i];
        pm[i].data.data = (uint8_t *)evs[i].data;
        pm[i].data.len = evs[i].data_len;
        pm[i].custom_metadata.data = (uint8_t *)evs[i].metadata;
        pm[i].custom_metadata.len = evs[i].metadata_len;
        event_store__client__streams__append_req__init(&reqs[i + 1]);
        reqs[i + 1].content_case =
            EVENT_STORE__CLIENT__STREAMS__APPEND_REQ__CONTENT_PROPOSED_MESSAGE;
        reqs[i + 1].proposed_message = &pm[i];
        ptrs[i + 1] = &reqs[i + 1].base;
    }
    append_ctx a = {NULL};
    rpc_status st;
    annal_err rc = ANNAL_OK;
    if (rpc(r, "/event_store.client.streams.Streams/Append", ptrs, nmsg, on_append, &a, CALL_MS,
            &st) != 0)
        rc = ANNAL_ENOMEM;
    else if (st.code != GRPC_STATUS_OK)
        rc = status_err(r, &st, stream);
    else if (!a.resp) {
        set_err(r, "the server sent no append result%s%s", "", "");
        rc = ANNAL_EIO;
    } else {
        rc = append_result(r, a.resp, stream, n, res);
    }
    if (a.resp) event_store__client__streams__append_resp__free_unpacked(a.resp, NULL);
    free(reqs), free(pm), free(ids), free(idtext), free(md), free(mdp), free(ptrs);
    return rc;
}

/* ---- BatchAppend: one bidirectional call, many appends under correlation ids */

struct annal_remote_batch {
    annal_remote *r;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata md;
    grpc_metadata_array init_md;
    int got_init_md;
};

/* Run one batch of ops on b's call and wait for it. */
static int bcall(annal_remote_batch *b, const grpc_op *ops, size_t n) {
    return batch(b->call, b->cq, ops, n);
}

annal_err annal_remote_batch_open(annal_remote *r, annal_remote_batch **out) {
    *out = NULL;
    r->errmsg[0] = '\0';
    annal_remote_batch *b = calloc(1, sizeof *b);
    if (!b) return ANNAL_ENOMEM;
    b->r = r;
    b->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&b->init_md);
    b->call = grpc_channel_create_call(
        r->channel, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
        grpc_slice_from_static_string("/event_store.client.streams.Streams/BatchAppend"), NULL,
        gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!b->call) {
        annal_remote_batch_close(b);
        return ANNAL_ENOMEM;
    }
    if (r->auth) {
        b->md.key = grpc_slice_from_static_string("authorization");
        b->md.value = grpc_slice_from_copied_string(r->auth);
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = r->auth ? 1 : 0;
    op.data.send_initial_metadata.metadata = r->auth ? &b->md : NULL;
    if (bcall(b, &op, 1) != 0) {
        set_err(r, "cannot start a BatchAppend call%s%s", "", "");
        annal_remote_batch_close(b);
        return ANNAL_EIO;
    }
    *out = b;
    return ANNAL_OK;
}

/* The correlation id of tag: a version-4 UUID whose last 8 bytes are the tag. */
static void tag_uuid(uint64_t tag, char text[37]) {
    annal_uuid id;
    memset(id.bytes, 0, 8);
    id.bytes[6] = 0x40;
    for (int i = 0; i < 8; i++) id.bytes[8 + i] = (uint8_t)(tag >> (56 - 8 * i));
    id.bytes[8] = (uint8_t)((id.bytes[8] & 0x3f) | 0x80);
    annal_uuid_format(&id, text);
}

static uint64_t uuid_tag(const EventStore__Client__UUID *u) {
    annal_uuid id;
    if (!u || u->value_case != EVENT_STORE__CLIENT__UUID__VALUE_STRING ||
        annal_uuid_parse(u->string, &id) != ANNAL_OK)
        return UINT64_MAX;
    uint64_t tag = 0;
    for (int i = 0; i < 8; i++) tag = tag << 8 | id.bytes[8 + i];
    return tag & ~((uint64_t)0xc0 << 56);
}

annal_err annal_remote_batch_send(annal_remote_batch *b, uint64_t tag, const char *stream,
                                  int64_t expected, annal_event_data *evs, size_t n) {
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    EventStore__Client__Streams__BatchAppendReq__Options opt =
        EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__OPTIONS__INIT;
    opt.stream_identifier = &sid;
    uint64_t rev = 0;
    opt.expected_stream_position_case =
        (EventStore__Client__Streams__BatchAppendReq__Options__ExpectedStreamPositionCase)
            expected_case(expected, &rev);
    if (expected >= 0)
        opt.stream_position = rev; /* the oneof's members share a union */
    else
        opt.any = &empty;
    char corr_text[37];
    tag_uuid(tag, corr_text);
    EventStore__Client__UUID corr = EVENT_STORE__CLIENT__UUID__INIT;
    corr.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
    corr.string = corr_text;
    EventStore__Client__Streams__BatchAppendReq__ProposedMessage *pm =
        calloc(n ? n : 1, sizeof *pm);
    EventStore__Client__Streams__BatchAppendReq__ProposedMessage **pmp =
        calloc(n ? n : 1, sizeof *pmp);
    EventStore__Client__UUID *ids = calloc(n ? n : 1, sizeof *ids);
    char(*idtext)[37] = calloc(n ? n : 1, 37);
    EventStore__Client__Streams__BatchAppendReq__ProposedMessage__MetadataEntry(*md)[2] =
        calloc(n ? n : 1, sizeof *md);
    EventStore__Client__Streams__BatchAppendReq__ProposedMessage__MetadataEntry *(*mdp)[2] =
        calloc(n ? n : 1, sizeof *mdp);
    annal_err rc = ANNAL_OK;
    if (!pm || !pmp || !ids || !idtext || !md || !mdp) rc = ANNAL_ENOMEM;
    for (size_t i = 0; rc == ANNAL_OK && i < n; i++) {
        if (zero_id(&evs[i].id)) uuid_v7(&evs[i].id);
        annal_uuid_format(&evs[i].id, idtext[i]);
        event_store__client__uuid__init(&ids[i]);
        ids[i].value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        ids[i].string = idtext[i];
        event_store__client__streams__batch_append_req__proposed_message__init(&pm[i]);
        pm[i].id = &ids[i];
        for (int k = 0; k < 2; k++) {
            event_store__client__streams__batch_append_req__proposed_message__metadata_entry__init(
                &md[i][k]);
            mdp[i][k] = &md[i][k];
        }
        md[i][0].key = "type";
        md[i][0].value = (char *)evs[i].type;
        md[i][1].key = "content-type";
        md[i][1].value =
            is_json(evs[i].data, evs[i].data_len) ? "application/json" : "application/octet-stream";
        pm[i].n_metadata = 2;
        pm[i].metadata = mdp[i];
        pm[i].data.data = (uint8_t *)evs[i].data;
        pm[i].data.len = evs[i].data_len;
        pm[i].custom_metadata.data = (uint8_t *)evs[i].metadata;
        pm[i].custom_metadata.len = evs[i].metadata_len;
        pmp[i] = &pm[i];
    }
    if (rc == ANNAL_OK) {
        /* The whole batch in one request: options, events and is_final together. */
        EventStore__Client__Streams__BatchAppendReq req =
            EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_REQ__INIT;
        EventStore__Client__Streams__BatchAppendReq *q = &req; /* packed through &req.base */
        q->correlation_id = &corr;
        q->options = &opt;
        q->n_proposed_messages = n;
        q->proposed_messages = pmp;
        q->is_final = 1;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = pack(&req.base);
        if (bcall(b, &op, 1) != 0) {
            set_err(b->r, "the server ended the BatchAppend call%s%s", "", "");
            rc = ANNAL_EIO;
        }
        grpc_byte_buffer_destroy(op.data.send_message.send_message);
    }
    free(pm), free(pmp), free(ids), free(idtext), free(md), free(mdp);
    return rc;
}

/* One BatchAppendResp as annal_err and result. */
static annal_err batch_result(annal_remote *r,
                              const EventStore__Client__Streams__BatchAppendResp *m,
                              annal_append_result *res) {
    if (m->result_case == EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__RESULT_SUCCESS &&
        m->success) {
        const EventStore__Client__Streams__BatchAppendResp__Success *s = m->success;
        res->revision =
            s->current_revision_option_case ==
                    EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__CURRENT_REVISION_OPTION_CURRENT_REVISION
                ? (int64_t)s->current_revision
                : -1;
        if (s->position_option_case ==
                EVENT_STORE__CLIENT__STREAMS__BATCH_APPEND_RESP__SUCCESS__POSITION_OPTION_POSITION &&
            s->position)
            res->first_position = s->position->commit_position; /* the last event's */
        return ANNAL_OK;
    }
    const char *msg = m->error && m->error->message ? m->error->message : "no detail";
    set_err(r, "the server refused the batch: %s%s", msg, "");
    /* google.rpc.Code: 9 FAILED_PRECONDITION carries WrongExpectedVersion or StreamDeleted. */
    return m->error && m->error->code == 9 ? ANNAL_ECONFLICT : ANNAL_EIO;
}

annal_err annal_remote_batch_recv(annal_remote_batch *b, uint64_t *tag, annal_append_result *res) {
    memset(res, 0, sizeof *res);
    *tag = UINT64_MAX;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t nops = 0;
    grpc_byte_buffer *msg = NULL;
    if (!b->got_init_md) {
        ops[nops].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[nops++].data.recv_initial_metadata.recv_initial_metadata = &b->init_md;
        b->got_init_md = 1;
    }
    ops[nops].op = GRPC_OP_RECV_MESSAGE;
    ops[nops++].data.recv_message.recv_message = &msg;
    /* cppcheck-suppress knownConditionTrueFalse ; the batch fills msg through ops */
    if (bcall(b, ops, nops) != 0 || !msg) {
        set_err(b->r, "the server ended the BatchAppend call%s%s", "", "");
        return ANNAL_EIO;
    }
    annal_err rc = ANNAL_EIO;
    grpc_byte_buffer_reader rd;
    if (grpc_byte_buffer_reader_init(&rd, msg)) {
        grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
        EventStore__Client__Streams__BatchAppendResp *m =
            event_store__client__streams__batch_append_resp__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                                    GRPC_SLICE_START_PTR(s));
        if (m) {
            *tag = uuid_tag(m->correlation_id);
            rc = batch_result(b->r, m, res);
            event_store__client__streams__batch_append_resp__free_unpacked(m, NULL);
        } else {
            set_err(b->r, "the server sent a reply that cannot be read%s%s", "", "");
        }
        grpc_slice_unref(s);
        grpc_byte_buffer_reader_destroy(&rd);
    }
    grpc_byte_buffer_destroy(msg);
    return rc;
}

void annal_remote_batch_close(annal_remote_batch *b) {
    if (!b) return;
    if (b->call) {
        grpc_call_cancel(b->call, NULL);
        grpc_call_unref(b->call);
    }
    grpc_slice_unref(b->md.value); /* a zeroed slice when there was none */
    grpc_metadata_array_destroy(&b->init_md);
    grpc_completion_queue_shutdown(b->cq);
    while (grpc_completion_queue_pluck(b->cq, NULL, gpr_inf_past(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(b->cq);
    free(b);
}

/* ---- Delete */

annal_err annal_remote_delete(annal_remote *r, const char *stream, int64_t expected, int hard) {
    r->errmsg[0] = '\0';
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    sid.stream_name.data = (uint8_t *)stream;
    sid.stream_name.len = strlen(stream);
    /* DeleteReq and TombstoneReq are the same shape on the wire. */
    EventStore__Client__Streams__DeleteReq__Options opt =
        EVENT_STORE__CLIENT__STREAMS__DELETE_REQ__OPTIONS__INIT;
    opt.stream_identifier = &sid;
    opt.expected_stream_revision_case =
        (EventStore__Client__Streams__DeleteReq__Options__ExpectedStreamRevisionCase)expected_case(
            expected, &opt.revision);
    if (expected < 0) opt.any = &empty;
    EventStore__Client__Streams__DeleteReq req = EVENT_STORE__CLIENT__STREAMS__DELETE_REQ__INIT;
    /* cppcheck-suppress unreadVariable ; protobuf-c packs req through &req.base */
    req.options = &opt;
    const ProtobufCMessage *reqs[] = {&req.base};
    rpc_status st;
    if (rpc(r,
            hard ? "/event_store.client.streams.Streams/Tombstone"
                 : "/event_store.client.streams.Streams/Delete",
            reqs, 1, NULL, NULL, CALL_MS, &st) != 0)
        return ANNAL_ENOMEM;
    return st.code == GRPC_STATUS_OK ? ANNAL_OK : status_err(r, &st, stream);
}

/* ---- Read */

typedef struct read_spec {
    const char *stream; /* NULL: $all */
    int64_t from;       /* revision or position; -1: the start (the end if backwards or live) */
    int backwards;
    size_t max;    /* events; ignored when live */
    int subscribe; /* a catch-up subscription: live until on_item stops it */
} read_spec;

typedef struct each_ctx {
    annal_remote_item_fn fn;
    void *ctx;
    int not_found;
    int failed;  /* a reply that cannot be decoded */
    int stopped; /* fn asked to stop */
} each_ctx;

static int64_t ticks_to_ns(const char *s) {
    char *end;
    long long t = s ? strtoll(s, &end, 10) : 0;
    return s && *end == '\0' ? (int64_t)t * 100 : 0;
}

/* A recorded event as an annal_event pointing into the message (valid while it lives). */
static void borrow_event(const EventStore__Client__Streams__ReadResp__ReadEvent__RecordedEvent *e,
                         annal_event *ev) {
    memset(ev, 0, sizeof *ev);
    if (e->id && e->id->value_case == EVENT_STORE__CLIENT__UUID__VALUE_STRING)
        (void)annal_uuid_parse(e->id->string, &ev->id);
    const char *type = "", *created = NULL;
    for (size_t i = 0; i < e->n_metadata; i++) {
        if (strcmp(e->metadata[i]->key, "type") == 0) type = e->metadata[i]->value;
        if (strcmp(e->metadata[i]->key, "created") == 0) created = e->metadata[i]->value;
    }
    ev->stream = e->stream_identifier ? (const char *)e->stream_identifier->stream_name.data : "";
    ev->stream_len = e->stream_identifier ? e->stream_identifier->stream_name.len : 0;
    if (!ev->stream) ev->stream = "";
    ev->type = type;
    ev->type_len = strlen(type);
    ev->data = e->data.data;
    ev->data_len = e->data.len;
    ev->metadata = e->custom_metadata.data;
    ev->metadata_len = e->custom_metadata.len;
    ev->revision = e->stream_revision;
    ev->position = e->commit_position;
    ev->timestamp_ns = ticks_to_ns(created);
}

static int on_read_msg(void *ctx, const uint8_t *p, size_t n) {
    each_ctx *c = ctx;
    EventStore__Client__Streams__ReadResp *m =
        event_store__client__streams__read_resp__unpack(NULL, n, p);
    if (!m) {
        c->failed = 1;
        return -1;
    }
    annal_sub_item it;
    memset(&it, 0, sizeof it);
    annal_event ev;
    int deliver = 1;
    switch (m->content_case) {
    case EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_STREAM_NOT_FOUND:
        c->not_found = 1;
        deliver = 0;
        break;
    case EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_EVENT:
        if (!m->event || !m->event->event) {
            deliver = 0;
            break;
        }
        /* The stream name is bytes on the wire: NUL-terminate it for the callback. */
        borrow_event(m->event->event, &ev);
        it.kind = ANNAL_SUB_EVENT;
        it.event = &ev;
        it.position = ev.position;
        break;
    case EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CAUGHT_UP:
        it.kind = ANNAL_SUB_CAUGHT_UP;
        break;
    case EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_FELL_BEHIND:
        it.kind = ANNAL_SUB_FELL_BEHIND;
        break;
    case EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_CHECKPOINT:
        it.kind = ANNAL_SUB_CHECKPOINT;
        it.position = m->checkpoint ? m->checkpoint->commit_position : 0;
        break;
    default: deliver = 0; break; /* confirmation, first/last positions */
    }
    char name[ANNAL_MAX_NAME + 1];
    if (deliver && it.kind == ANNAL_SUB_EVENT) {
        size_t len = ev.stream_len < sizeof name - 1 ? ev.stream_len : sizeof name - 1;
        memcpy(name, ev.stream, len);
        name[len] = '\0';
        ev.stream = name;
    }
    if (deliver && c->fn && c->fn(c->ctx, &it) != 0) c->stopped = 1;
    event_store__client__streams__read_resp__free_unpacked(m, NULL);
    return c->stopped ? -1 : 0;
}

/* Call Streams.Read as spec says, every item to c->fn. */
static annal_err read_call(annal_remote *r, const read_spec *spec, each_ctx *c) {
    r->errmsg[0] = '\0';
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    EventStore__Client__StreamIdentifier sid = EVENT_STORE__CLIENT__STREAM_IDENTIFIER__INIT;
    EventStore__Client__Streams__ReadReq__Options__StreamOptions so =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options__AllOptions ao =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options__Position pos =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__POSITION__INIT;
    EventStore__Client__Streams__ReadReq__Options__SubscriptionOptions sub =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__SUBSCRIPTION_OPTIONS__INIT;
    EventStore__Client__Streams__ReadReq__Options o =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__INIT;
    int at_end = spec->from < 0 && (spec->backwards || spec->subscribe);
    if (spec->stream) {
        sid.stream_name.data = (uint8_t *)spec->stream;
        sid.stream_name.len = strlen(spec->stream);
        so.stream_identifier = &sid;
        so.revision_option_case =
            spec->from >= 0
                ? EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_REVISION
            : at_end
                ? EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_END
                : EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTIONS__REVISION_OPTION_START;
        /* The oneof's members share a union: set only the chosen one. */
        if (spec->from >= 0)
            so.revision = (uint64_t)spec->from;
        else
            so.start = &empty; /* also end: the same pointer */
        o.stream_option_case =
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_STREAM;
        o.stream = &so;
    } else {
        pos.commit_position = pos.prepare_position = spec->from >= 0 ? (uint64_t)spec->from : 0;
        ao.all_option_case =
            spec->from >= 0
                ? EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_POSITION
            : at_end
                ? EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_END
                : EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__ALL_OPTIONS__ALL_OPTION_START;
        if (spec->from >= 0)
            ao.position = &pos;
        else
            ao.start = &empty;
        o.stream_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__STREAM_OPTION_ALL;
        o.all = &ao;
    }
    EventStore__Client__Streams__ReadReq__Options__UUIDOption uo =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__UUIDOPTION__INIT;
    uo.content_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__UUIDOPTION__CONTENT_STRING;
    uo.string = &empty;
    EventStore__Client__Streams__ReadReq__Options__ControlOption co =
        EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__CONTROL_OPTION__INIT;
    co.compatibility = 1;
    o.read_direction =
        spec->backwards ? EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Backwards
                        : EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__READ_DIRECTION__Forwards;
    o.uuid_option = &uo;
    o.control_option = &co;
    if (spec->subscribe) {
        o.count_option_case =
            EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_SUBSCRIPTION;
        o.subscription = &sub;
    } else {
        o.count_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__COUNT_OPTION_COUNT;
        o.count = spec->max;
    }
    o.filter_option_case = EVENT_STORE__CLIENT__STREAMS__READ_REQ__OPTIONS__FILTER_OPTION_NO_FILTER;
    o.no_filter = &empty;
    EventStore__Client__Streams__ReadReq req = EVENT_STORE__CLIENT__STREAMS__READ_REQ__INIT;
    /* cppcheck-suppress unreadVariable ; protobuf-c packs req through &req.base */
    req.options = &o;
    const ProtobufCMessage *reqs[] = {&req.base};
    rpc_status st;
    /* A subscription lasts until its caller stops it: a deadline of a day. */
    int timeout = spec->subscribe ? 86400000 : CALL_MS;
    if (rpc(r, "/event_store.client.streams.Streams/Read", reqs, 1, on_read_msg, c, timeout, &st) !=
        0)
        return ANNAL_ENOMEM;
    if (c->failed) {
        set_err(r, "the server sent a reply that cannot be read%s%s", "", "");
        return ANNAL_EIO;
    }
    if (c->stopped) return ANNAL_OK; /* cancelled here: the status says CANCELLED */
    if (st.code != GRPC_STATUS_OK) return status_err(r, &st, spec->stream ? spec->stream : "$all");
    return c->not_found ? ANNAL_ENOTFOUND : ANNAL_OK;
}

annal_err annal_remote_read_each(annal_remote *r, const char *stream, int64_t from, size_t max,
                                 annal_remote_item_fn fn, void *ctx) {
    read_spec spec = {stream, from, 0, max, 0};
    each_ctx c = {fn, ctx, 0, 0, 0};
    return read_call(r, &spec, &c);
}

annal_err annal_remote_subscribe(annal_remote *r, const char *stream, int64_t from,
                                 annal_remote_item_fn fn, void *ctx) {
    read_spec spec = {stream, from, 0, 0, 1};
    each_ctx c = {fn, ctx, 0, 0, 0};
    return read_call(r, &spec, &c);
}

/* annal_remote_read keeps copies of the events. */
typedef struct copy_ctx {
    annal_event *evs;
    size_t n, max;
} copy_ctx;

static char *dup_bytes(const void *p, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        if (n) memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static int on_copy(void *ctx, const annal_sub_item *it) {
    copy_ctx *c = ctx;
    if (it->kind != ANNAL_SUB_EVENT || c->n >= c->max) return 0;
    const annal_event *e = it->event;
    annal_event *ev = &c->evs[c->n++];
    *ev = *e;
    ev->stream = dup_bytes(e->stream, e->stream_len);
    ev->type = dup_bytes(e->type, e->type_len);
    ev->data = dup_bytes(e->data, e->data_len);
    ev->metadata = dup_bytes(e->metadata, e->metadata_len);
    return ev->stream && ev->type && ev->data && ev->metadata ? 0 : -1;
}

void annal_remote_events_free(annal_event *evs, size_t n) {
    for (size_t i = 0; evs && i < n; i++) {
        free((void *)evs[i].stream);
        free((void *)evs[i].type);
        free((void *)evs[i].data);
        free((void *)evs[i].metadata);
    }
    free(evs);
}

annal_err annal_remote_read(annal_remote *r, const char *stream, int64_t from, int backwards,
                            size_t max, annal_event **out, size_t *n) {
    *out = NULL;
    *n = 0;
    copy_ctx cc = {calloc(max ? max : 1, sizeof(annal_event)), 0, max};
    if (!cc.evs) return ANNAL_ENOMEM;
    read_spec spec = {stream, from, backwards, max, 0};
    each_ctx c = {on_copy, &cc, 0, 0, 0};
    annal_err rc = read_call(r, &spec, &c);
    if (rc == ANNAL_OK && c.stopped) {
        set_err(r, "out of memory copying the events read%s%s", "", "");
        rc = ANNAL_ENOMEM;
    }
    if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND) {
        annal_remote_events_free(cc.evs, cc.n);
        return rc;
    }
    *out = cc.evs;
    *n = cc.n;
    return rc;
}

/* ---- Any unary or server-streaming method (the Users service: src/cli/user.c) */
annal_err annal_remote_call(annal_remote *r, const char *method, const ProtobufCMessage *req,
                            int (*on_msg)(void *ctx, const uint8_t *p, size_t n), void *ctx) {
    const ProtobufCMessage *reqs[] = {req};
    rpc_status st;
    if (rpc(r, method, reqs, 1, on_msg, ctx, 30000, &st) != 0) return ANNAL_ENOMEM;
    if (st.code == GRPC_STATUS_OK) return ANNAL_OK;
    if (strcmp(st.exception, "user-not-found") == 0) {
        set_err(r, "no such user%s%s", "", "");
        return ANNAL_ENOTFOUND;
    }
    if (strcmp(st.exception, "user-conflict") == 0) {
        set_err(r, "the user exists already%s%s", "", "");
        return ANNAL_ECONFLICT;
    }
    return status_err(r, &st, "");
}
