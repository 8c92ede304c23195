/*
 * projections.c -- the Projections calls: Enable, Disable, Statistics and State. annal
 * keeps what KurrentDB's system projections produce ($ce-, $et- and stream indexes)
 * natively and always, so those four are reported running. The store's registered SQL/Lua
 * projections the server runs (runner.c) are reported too, from their state rows, and
 * Disable/Enable pause and resume them (retry a failed one) as `annal projection
 * pause|resume|retry` do. JavaScript projections are a later issue: other names are
 * NOT_FOUND.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annal_project.h"
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

/* Enable (resume a paused projection, retry a failed one) or disable (pause a running
 * one) registered projection name; what it already is succeeds. 0, or -1 with the call
 * finished (NOT_FOUND, or the target's error). */
static int control(srv_call *c, const char *name, int enable) {
    char *t = runner_target(c->srv, name);
    if (!t) {
        not_found(c, name);
        return -1;
    }
    annal_proj_status s;
    char err[512];
    annal_err rc = annal_proj_status_get(t, name, &s, err, sizeof err);
    if (rc == ANNAL_OK) {
        /* status_get says stopped for a row that is running but has no live projector */
        int running = s.state == ANNAL_PROJ_RUNNING || s.state == ANNAL_PROJ_STOPPED;
        if (enable && s.state == ANNAL_PROJ_PAUSED)
            rc = annal_proj_control(t, name, ANNAL_PROJ_RESUME, err, sizeof err);
        else if (enable && s.state == ANNAL_PROJ_FAILED)
            rc = annal_proj_control(t, name, ANNAL_PROJ_RETRY, err, sizeof err);
        else if (!enable && running)
            rc = annal_proj_control(t, name, ANNAL_PROJ_PAUSE, err, sizeof err);
    }
    free(t);
    if (rc == ANNAL_ENOTFOUND && enable) rc = ANNAL_OK; /* never run yet: it is starting */
    if (rc == ANNAL_OK) {
        srv_log(c->srv, ANNAL_LOG_INFO, "projection %s: %s by a client", name,
                enable ? "enabled" : "disabled");
        return 0;
    }
    if (rc == ANNAL_ENOTFOUND) { /* registered, never run: nothing to change yet */
        call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "the projection has not run yet", NULL, 0);
        return -1;
    }
    call_finish(c, GRPC_STATUS_INTERNAL, err, NULL, 0);
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
    } else if (control(c, name, 1) == 0) {
        EventStore__Client__Projections__EnableResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__ENABLE_RESP__INIT;
        call_reply(c, &resp.base);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

void rpc_projections_disable(srv_call *c) {
    ProtobufCMessage *msg;
    if (recv_req(c, &event_store__client__projections__disable_req__descriptor, &msg) != 0) return;
    const EventStore__Client__Projections__DisableReq *req =
        (const EventStore__Client__Projections__DisableReq *)msg;
    const char *name = req->options ? req->options->name : NULL;
    /* Disabling changes the node: operators too, as Enable (auth.c checks that one). */
    if (sec_require_role(c, 1, "/event_store.client.projections.Projections/Disable") != 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    if (is_system(name)) {
        call_finish(c, GRPC_STATUS_FAILED_PRECONDITION,
                    "annal's system projections are native indexes, always on", NULL, 0);
    } else if (control(c, name, 0) == 0) {
        EventStore__Client__Projections__DisableResp resp =
            EVENT_STORE__CLIENT__PROJECTIONS__DISABLE_RESP__INIT;
        call_reply(c, &resp.base);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* One Details message: status is KurrentDB's word, position the $all position reached. */
static int send_stats(srv_call *c, const char *name, const char *status, const char *reason,
                      uint64_t position, uint64_t events) {
    EventStore__Client__Projections__StatisticsResp resp =
        EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__INIT;
    EventStore__Client__Projections__StatisticsResp__Details d =
        EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_RESP__DETAILS__INIT;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    (void)annal_db_info_get(c->srv->db, &info);
    char pos[64];
    snprintf(pos, sizeof pos, "C:%llu/P:%llu", (unsigned long long)position,
             (unsigned long long)position);
    d.name = d.effectivename = (char *)name;
    d.status = (char *)status;
    d.statereason = (char *)reason;
    d.mode = "Continuous";
    d.position = d.lastcheckpoint = pos;
    d.progress = info.events && position < info.events
                     ? 100.0f * (float)position / (float)info.events
                     : 100.0f;
    d.checkpointstatus = "";
    d.version = 1;
    d.epoch = -1;
    d.eventsprocessedafterrestart = (int64_t)events;
    resp.details = &d;
    return call_send(c, &resp.base);
}

/* A system projection: kept with every append, so always at the head. */
static int send_details(srv_call *c, const char *name) {
    annal_db_info info;
    memset(&info, 0, sizeof info);
    (void)annal_db_info_get(c->srv->db, &info);
    return send_stats(c, name, "Running", "", info.events, info.events);
}

/* KurrentDB's status words for annal's states: paused and not running are Stopped. */
static const char *status_word(annal_proj_state st) {
    switch (st) {
    case ANNAL_PROJ_RUNNING:
    case ANNAL_PROJ_REPLACED: return "Running";
    case ANNAL_PROJ_FAILED: return "Faulted";
    default: return "Stopped";
    }
}

/* A registered projection, from its state row (one never run yet: Stopped at 0). */
static int send_registered(srv_call *c, const char *name, const char *target) {
    annal_proj_status s;
    char err[256];
    annal_err rc = annal_proj_status_get(target, name, &s, err, sizeof err);
    if (rc != ANNAL_OK) {
        memset(&s, 0, sizeof s);
        s.state = ANNAL_PROJ_STOPPED;
        if (rc != ANNAL_ENOTFOUND) snprintf(s.error, sizeof s.error, "%s", err);
    }
    return send_stats(c, name, status_word(s.state), s.error, s.position, s.events);
}

/* Every system projection, then every registered one. 0, or -1 when the client went. */
static int send_all(srv_call *c) {
    int sent = 0;
    for (size_t i = 0; i < NSYSTEM && sent == 0; i++) sent = send_details(c, system_projections[i]);
    size_t n = 0;
    char **names = runner_names(c->srv, &n);
    for (size_t i = 0; i < n; i++) {
        char *t = sent == 0 ? runner_target(c->srv, names[i]) : NULL;
        if (t) sent = send_registered(c, names[i], t);
        free(t);
        free(names[i]);
    }
    free(names);
    return sent;
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
        char *t = is_system(name) ? NULL : runner_target(c->srv, name);
        if (!is_system(name) && !t) {
            not_found(c, name);
            protobuf_c_message_free_unpacked(msg, NULL);
            return;
        }
        sent = t ? send_registered(c, name, t) : send_details(c, name);
        free(t);
    } else if (mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_ALL ||
               mode == EVENT_STORE__CLIENT__PROJECTIONS__STATISTICS_REQ__OPTIONS__MODE_CONTINUOUS) {
        sent = send_all(c);
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
    char *t = is_system(name) ? NULL : runner_target(c->srv, name);
    if (is_system(name) || t) {
        /* The system projections keep no state of their own, and the registered ones keep
         * theirs in their read models' tables (annal query): an empty object. */
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
    free(t);
    protobuf_c_message_free_unpacked(msg, NULL);
}
