/*
 * projections.c -- the Projections calls clients make to enable KurrentDB's system
 * projections and check on them: Enable, Statistics and State. annal keeps what those
 * projections produce ($ce-, $et- and stream indexes) natively and always, so the four
 * are reported running; user projections (JavaScript) are a later issue: other names
 * are NOT_FOUND.
 */
#include <stdio.h>
#include <string.h>

#include "projections.pb-c.h"
#include "server_int.h"

static const char *const system_projections[] = {"$by_category", "$by_event_type",
                                                 "$stream_by_category", "$streams"};
#define NSYSTEM (sizeof system_projections / sizeof system_projections[0])

static int is_system(const char *name) {
    for (size_t i = 0; name && i < NSYSTEM; i++)
        if (strcmp(name, system_projections[i]) == 0) return 1;
    return 0;
}

static void not_found(srv_call *c, const char *name) {
    srv_kv kv[] = {{"exception", "projection-not-found"}, {"projection-name", name ? name : ""}};
    call_finish(c, GRPC_STATUS_NOT_FOUND, "Projection not found.", kv, 2);
}

static int recv_req(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg) {
    int bad;
    if (call_recv(c, d, msg, &bad) == 1) return 0;
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, bad ? "undecodable request" : "no request", NULL,
                0);
    return -1;
}

void rpc_projections_enable(srv_call *c) {
    ProtobufCMessage *msg;
    if (recv_req(c, &event_store__client__projections__enable_req__descriptor, &msg) != 0) return;
    const EventStore__Client__Projections__EnableReq *req =
        (const EventStore__Client__Projections__EnableReq *)msg;
    const char *name = req->options ? req->options->name : NULL;
    if (is_system(name)) {
        EventStore__Client__Projections__EnableResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__ENABLE_RESP__INIT;
        call_reply(c, &resp.base); /* always on here */
    } else {
        not_found(c, name);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static int send_details(srv_call *c, const char *name) {
    EventStore__Client__Projections__StatisticsResp resp =
        EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__INIT;
    EventStore__Client__Projections__StatisticsResp__Details d =
        EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__DETAILS__INIT;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    (void)annal_db_info_get(c->srv->db, &info);
    char position[64];
    snprintf(position, sizeof position, "C:%llu/P:%llu", (unsigned long long)info.events,
             (unsigned long long)info.events);
    d.name = d.effectivename = (char *)name;
    d.status = "Running";
    d.statereason = "";
    d.mode = "Continuous";
    d.position = d.lastcheckpoint = position;
    d.progress = 100.0f; /* kept with every append */
    d.checkpointstatus = "";
    d.version = 1;
    d.epoch = -1;
    d.eventsprocessedafterrestart = (int64_t)info.events;
    resp.details = &d;
    return call_send(c, &resp.base);
}

void rpc_projections_statistics(srv_call *c) {
    ProtobufCMessage *msg;
    if (recv_req(c, &event_store__client__projections__statistics_req__descriptor, &msg) != 0)
        return;
    const EventStore__Client__Projections__StatisticsReq__Options *o =
        ((const EventStore__Client__Projections__StatisticsReq *)msg)->options;
    int mode = o ? (int)o->mode_case : 0;
    const char *name = mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_NAME
                           ? o->name
                           : NULL;
    int sent = 0;
    if (name) {
        if (!is_system(name)) {
            not_found(c, name);
            protobuf_c_message_free_unpacked(msg, NULL);
            return;
        }
        sent = send_details(c, name);
    } else if (mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_ALL ||
               mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_CONTINUOUS) {
        for (size_t i = 0; i < NSYSTEM && sent == 0; i++)
            sent = send_details(c, system_projections[i]);
    } /* transient and one-time: none here */
    protobuf_c_message_free_unpacked(msg, NULL);
    if (sent == 0)
        call_reply(c, NULL);
    else
        call_finish(c, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
}

void rpc_projections_state(srv_call *c) {
    ProtobufCMessage *msg;
    if (recv_req(c, &event_store__client__projections__state_req__descriptor, &msg) != 0) return;
    const EventStore__Client__Projections__StateReq *req =
        (const EventStore__Client__Projections__StateReq *)msg;
    const char *name = req->options ? req->options->name : NULL;
    if (is_system(name)) {
        /* The system projections keep no state of their own: an empty object. */
        Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
        Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
        v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v.struct_value = &st;
        EventStore__Client__Projections__StateResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__STATE_RESP__INIT;
        resp.state = &v;
        call_reply(c, &resp.base);
    } else {
        not_found(c, name);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}
