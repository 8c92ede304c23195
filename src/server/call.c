/*
 * call.c -- one gRPC call driven synchronously from its own thread: every operation is a
 * batch on the call's private pluck queue, waited for before the next, so a call has at
 * most one send outstanding and a slow client holds back only its own thread.
 */
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>

#include "server_int.h"

static int wait_tag(srv_call *c, void *tag) {
    grpc_event ev =
        grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static int run_batch_tag(srv_call *c, const grpc_op *ops, size_t n, void *tag) {
    if (grpc_call_start_batch(c->call, ops, n, tag, NULL) != GRPC_CALL_OK) return 0;
    return wait_tag(c, tag);
}

static int run_batch(srv_call *c, const grpc_op *ops, size_t n) {
    return run_batch_tag(c, ops, n, &c->tag_op);
}

int call_watch_close(srv_call *c) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    return grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) == GRPC_CALL_OK ? 0 : -1;
}

int call_gone(srv_call *c) {
    if (!c->closed) {
        grpc_event ev =
            grpc_completion_queue_pluck(c->cq, &c->tag_close, gpr_time_0(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE) c->closed = 1;
    }
    /* Closed before we sent a status means the client cancelled or vanished. */
    return c->closed && (c->cancelled || !c->finished);
}

static size_t add_initial_md(srv_call *c, grpc_op *ops);

/* 1 if an operation on the call now fails, as it does on a cancelled call (the notice of
 * the close may not be queued yet). Sends the initial metadata as the probe: harmless on
 * a live call, whose reply would send it. */
static int probe_cancelled(srv_call *c) {
    grpc_op op;
    if (add_initial_md(c, &op) == 0) return 0; /* sent before: only the close can tell */
    return !run_batch(c, &op, 1);
}

int call_recv(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out, int *bad) {
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    *out = NULL;
    *bad = 0;
    if (!run_batch(c, &op, 1)) return -1;
    /* No message: a half-close, or a call cancelled or cut off (gRPC ends its receives
     * the same way). A cut-off append must not be taken for a finished one. */
    if (!bb) return call_gone(c) || probe_cancelled(c) ? -1 : 0;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        grpc_byte_buffer_destroy(bb);
        *bad = 1;
        return -1;
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(bb);
    *out = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!*out) {
        *bad = 1;
        return -1;
    }
    return 1;
}

static grpc_byte_buffer *pack(const ProtobufCMessage *m) {
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Add the initial metadata op to ops (once per call). */
static size_t add_initial_md(srv_call *c, grpc_op *ops) {
    if (c->md_sent) return 0;
    c->md_sent = 1;
    memset(ops, 0, sizeof *ops);
    ops->op = GRPC_OP_SEND_INITIAL_METADATA;
    return 1;
}

int call_send(srv_call *c, const ProtobufCMessage *m) {
    grpc_op ops[2];
    size_t n = add_initial_md(c, ops);
    grpc_byte_buffer *bb = pack(m);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    /* Its own tag: a BatchAppend sends from workers while its reader waits on a receive. */
    int ok = run_batch_tag(c, ops, n + 1, &c->tag_send);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : -1;
}

static void send_status(srv_call *c, const ProtobufCMessage *m, grpc_status_code code,
                        const char *msg, const srv_kv *trailers, size_t ntrailers) {
    if (c->finished) return;
    c->finished = 1;
    grpc_op ops[3];
    size_t n = add_initial_md(c, ops);
    grpc_byte_buffer *bb = NULL;
    if (m) {
        bb = pack(m);
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    grpc_metadata md[8];
    if (ntrailers > 8) ntrailers = 8;
    for (size_t i = 0; i < ntrailers; i++) {
        memset(&md[i], 0, sizeof md[i]);
        md[i].key = grpc_slice_from_static_string(trailers[i].key);
        md[i].value = grpc_slice_from_copied_string(trailers[i].value);
    }
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &details;
    ops[n].data.send_status_from_server.trailing_metadata_count = ntrailers;
    ops[n++].data.send_status_from_server.trailing_metadata = ntrailers ? md : NULL;
    (void)run_batch(c, ops, n);
    grpc_slice_unref(details);
    for (size_t i = 0; i < ntrailers; i++) grpc_slice_unref(md[i].value);
    if (bb) grpc_byte_buffer_destroy(bb);
}

int call_reply(srv_call *c, const ProtobufCMessage *m) {
    send_status(c, m, GRPC_STATUS_OK, NULL, NULL, 0);
    return 0;
}

void call_finish(srv_call *c, grpc_status_code code, const char *msg, const srv_kv *trailers,
                 size_t ntrailers) {
    send_status(c, NULL, code, msg, trailers, ntrailers);
}

void call_finish_details(srv_call *c, grpc_status_code code, const char *msg, const void *status,
                         size_t len) {
    if (c->finished) return;
    c->finished = 1;
    grpc_op ops[2];
    size_t n = add_initial_md(c, ops);
    /* A `-bin` key's value is raw bytes; the transport encodes them (base64). */
    grpc_metadata md;
    memset(&md, 0, sizeof md);
    md.key = grpc_slice_from_static_string("grpc-status-details-bin");
    md.value = grpc_slice_from_copied_buffer(status, len);
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &details;
    ops[n].data.send_status_from_server.trailing_metadata_count = 1;
    ops[n++].data.send_status_from_server.trailing_metadata = &md;
    (void)run_batch(c, ops, n);
    grpc_slice_unref(details);
    grpc_slice_unref(md.value);
}

void call_method(srv_call *c, char *buf, size_t size) {
    size_t len = GRPC_SLICE_LENGTH(c->details.method);
    if (len >= size) len = size - 1;
    memcpy(buf, GRPC_SLICE_START_PTR(c->details.method), len);
    buf[len] = '\0';
}
