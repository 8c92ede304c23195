/*
 * features.c -- ServerFeatures.GetSupportedMethods (exactly the methods server.c
 * dispatches, so clients fall back to Append where BatchAppend is missing) and
 * Gossip.Read (this server as the one alive leader, so clients that discover find it).
 */
#include <string.h>
#include <time.h>

#include "gossip.pb-c.h"
#include "serverfeatures.pb-c.h"
#include "server_int.h"

/* The KurrentDB version whose protocol this server speaks; clients branch on it. */
#define SRV_PROTOCOL_VERSION "24.10.0"

static const struct {
    const char *service, *method;
} supported[] = {
    {"event_store.client.streams.streams", "read"},
    {"event_store.client.streams.streams", "append"},
    {"event_store.client.streams.streams", "delete"},
    {"event_store.client.streams.streams", "tombstone"},
    {"event_store.client.streams.streams", "batchappend"},
    {"event_store.client.server_features.serverfeatures", "getsupportedmethods"},
    {"event_store.client.gossip.gossip", "read"},
    /* security: the Users service (users_rpc.c) */
    {"event_store.client.users.users", "create"},
    {"event_store.client.users.users", "update"},
    {"event_store.client.users.users", "delete"},
    {"event_store.client.users.users", "disable"},
    {"event_store.client.users.users", "enable"},
    {"event_store.client.users.users", "details"},
    {"event_store.client.users.users", "changepassword"},
    {"event_store.client.users.users", "resetpassword"},
    {"event_store.client.operations.operations", "startscavenge"},
    {"event_store.client.operations.operations", "stopscavenge"},
    {"event_store.client.operations.operations", "shutdown"},
    {"event_store.client.monitoring.monitoring", "stats"},
    {"event_store.client.projections.projections", "enable"},
    {"event_store.client.projections.projections", "statistics"},
    {"event_store.client.projections.projections", "state"},
    /* v2.c */
    {"kurrentdb.protocol.v2.streams.streamsservice", "appendsession"},
    {"kurrentdb.protocol.v2.streams.streamsservice", "appendrecords"},
    {"event_store.client.projections.projections", "disable"},
    /* annal's Dynamic Consistency Boundaries service (dcb.c, proto/dcb.proto) */
    {"annal.dcb.v1.dcb", "read"},
    {"annal.dcb.v1.dcb", "subscribe"},
    {"annal.dcb.v1.dcb", "append"},
};
#define NSUPPORTED (sizeof supported / sizeof supported[0])

static void drain_request(srv_call *c) {
    ProtobufCMessage *msg;
    int bad;
    if (call_recv_one(c, &event_store__client__empty__descriptor, &msg, &bad) == 1)
        protobuf_c_message_free_unpacked(msg, NULL);
}

void rpc_features_methods(srv_call *c) {
    drain_request(c);
    EventStore__Client__ServerFeatures__SupportedMethods resp =
        EVENT_STORE__CLIENT__SERVER_FEATURES__SUPPORTED_METHODS__INIT;
    EventStore__Client__ServerFeatures__SupportedMethod m[NSUPPORTED], *mp[NSUPPORTED];
    for (size_t i = 0; i < NSUPPORTED; i++) {
        event_store__client__server_features__supported_method__init(&m[i]);
        m[i].service_name = (char *)supported[i].service;
        m[i].method_name = (char *)supported[i].method;
        mp[i] = &m[i];
    }
    resp.n_methods = NSUPPORTED;
    resp.methods = mp;
    resp.event_store_server_version = SRV_PROTOCOL_VERSION;
    call_reply(c, &resp.base);
}

void rpc_gossip_read(srv_call *c) {
    drain_request(c);
    EventStore__Client__Gossip__ClusterInfo info = EVENT_STORE__CLIENT__GOSSIP__CLUSTER_INFO__INIT;
    EventStore__Client__Gossip__MemberInfo me = EVENT_STORE__CLIENT__GOSSIP__MEMBER_INFO__INIT;
    EventStore__Client__Gossip__MemberInfo *members[1] = {&me};
    EventStore__Client__Gossip__EndPoint ep = EVENT_STORE__CLIENT__GOSSIP__END_POINT__INIT;
    cv_uuid_buf id;
    cv_uuid_out(&c->srv->instance_id, 0, &id);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    me.instance_id = &id.msg;
    me.time_stamp = (int64_t)now.tv_sec * 10000000 + now.tv_nsec / 100;
    me.state = EVENT_STORE__CLIENT__GOSSIP__MEMBER_INFO__VNODE_STATE__Leader;
    me.is_alive = 1;
    ep.address = c->srv->host;
    ep.port = (uint32_t)c->srv->port;
    me.http_end_point = &ep;
    info.n_members = 1;
    info.members = members;
    call_reply(c, &info.base);
}
