/*
 * ops.c -- the Operations service (StartScavenge runs annal_compact, one at a time, on a
 * thread of its own, which StopScavenge stops; Shutdown stops the server process gracefully) and
 * Monitoring.Stats (the store's counts and group-commit figures from annal_db_stats_get,
 * the process's, and the server's calls), once or every refresh period.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitoring.pb-c.h"
#include "operations.pb-c.h"
#include "server_int.h"

typedef EventStore__Client__Operations__ScavengeResp ScavengeResp;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void reply_scavenge(srv_call *c, const char *id,
                           EventStore__Client__Operations__ScavengeResp__ScavengeResult result) {
    ScavengeResp resp = EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__INIT;
    resp.scavenge_id = (char *)id;
    resp.scavenge_result = result;
    call_reply(c, &resp.base);
}

/* The compaction's own progress callback: records how far it is, and stops it at its next
 * safe point once StopScavenge (or the server's stop) asked. */
static int scavenge_progress(void *ctx, uint64_t done, uint64_t total) {
    annal_server *srv = ctx;
    pthread_mutex_lock(&srv->mu);
    srv->scavenge.stats.segments_done = done;
    srv->scavenge.stats.segments_total = total;
    int stop = srv->scavenge.stop_asked;
    pthread_mutex_unlock(&srv->mu);
    return stop;
}

static void *scavenge_thread(void *arg) {
    annal_server *srv = arg;
    annal_compact_stats st;
    memset(&st, 0, sizeof st);
    annal_err r = annal_compact_cb(srv->db, 0, scavenge_progress, srv, &st);
    pthread_mutex_lock(&srv->mu);
    srv->scavenge.running = 0;
    srv->scavenge.result = r;
    srv->scavenge.stats = st;
    srv->scavenge.ended_ns = now_ns();
    char id[37];
    memcpy(id, srv->scavenge.id, sizeof id);
    pthread_mutex_unlock(&srv->mu);
    if (r == ANNAL_ECANCELED)
        srv_log(srv, ANNAL_LOG_INFO,
                "scavenge %s stopped: %" PRIu64 " of %" PRIu64 " segments done, %" PRIu64
                " events erased",
                id, st.segments_done, st.segments_total, st.events_erased);
    else if (r == ANNAL_OK)
        srv_log(srv, ANNAL_LOG_INFO,
                "scavenge %s done: %" PRIu64 " segments, %" PRIu64 " events erased, %" PRIu64
                " bytes reclaimed",
                id, st.segments_total, st.events_erased, st.bytes_reclaimed);
    else
        srv_log(srv, ANNAL_LOG_ERROR, "scavenge %s failed: %s: %s", id, annal_errname(r),
                annal_db_errmsg(srv->db));
    return NULL;
}

static int drain(srv_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg) {
    int bad;
    if (call_recv_one(c, d, msg, &bad) == 1) return 0;
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, bad ? "undecodable request" : "no request", NULL,
                0);
    return -1;
}

void rpc_ops_start_scavenge(srv_call *c) {
    ProtobufCMessage *msg;
    if (drain(c, &event_store__client__operations__start_scavenge_req__descriptor, &msg) != 0)
        return;
    protobuf_c_message_free_unpacked(msg, NULL); /* thread count, start chunk: not annal's */
    annal_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (srv->scavenge.running) {
        char id[37];
        memcpy(id, srv->scavenge.id, sizeof id);
        pthread_mutex_unlock(&srv->mu);
        return reply_scavenge(
            c, id, EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__InProgress);
    }
    if (srv->stopping) {
        pthread_mutex_unlock(&srv->mu);
        return call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
    }
    if (srv->scavenge.ever) pthread_join(srv->scavenge.thread, NULL); /* the finished one */
    srv->scavenge.ever = 0;
    annal_uuid u;
    memset(&u, 0, sizeof u);
    srv_random_id(&u);
    annal_uuid_format(&u, srv->scavenge.id);
    srv->scavenge.running = 1;
    srv->scavenge.stop_asked = 0;
    srv->scavenge.started_ns = now_ns();
    memset(&srv->scavenge.stats, 0, sizeof srv->scavenge.stats);
    if (pthread_create(&srv->scavenge.thread, NULL, scavenge_thread, srv) != 0) {
        srv->scavenge.running = 0;
        pthread_mutex_unlock(&srv->mu);
        return call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a thread", NULL, 0);
    }
    srv->scavenge.ever = 1;
    char id[37];
    memcpy(id, srv->scavenge.id, sizeof id);
    pthread_mutex_unlock(&srv->mu);
    srv_log(srv, ANNAL_LOG_INFO, "scavenge %s started", id);
    reply_scavenge(c, id, EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__Started);
}

void rpc_ops_stop_scavenge(srv_call *c) {
    ProtobufCMessage *msg;
    if (drain(c, &event_store__client__operations__stop_scavenge_req__descriptor, &msg) != 0)
        return;
    const EventStore__Client__Operations__StopScavengeReq *req =
        (const EventStore__Client__Operations__StopScavengeReq *)msg;
    char want[37] = "";
    if (req->options && req->options->scavenge_id)
        snprintf(want, sizeof want, "%s", req->options->scavenge_id);
    protobuf_c_message_free_unpacked(msg, NULL);
    annal_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    int known = srv->scavenge.id[0] && strcmp(want, srv->scavenge.id) == 0;
    int running = known && srv->scavenge.running;
    if (running) srv->scavenge.stop_asked = 1;
    pthread_mutex_unlock(&srv->mu);
    if (!known) {
        srv_kv kv[] = {{"exception", "scavenge-not-found"}};
        return call_finish(c, GRPC_STATUS_NOT_FOUND, "Scavenge not found.", kv, 1);
    }
    /* A running one stops at its next safe point (scavenge_progress: between segments or
     * within a MiB of a rewrite); the reply does not wait for it, as KurrentDB's does not. */
    reply_scavenge(c, want,
                   EVENT_STORE__CLIENT__OPERATIONS__SCAVENGE_RESP__SCAVENGE_RESULT__Stopped);
}

void ops_join(annal_server *srv) {
    pthread_mutex_lock(&srv->mu);
    if (srv->scavenge.running) srv->scavenge.stop_asked = 1; /* it stops at a safe point */
    int ever = srv->scavenge.ever;
    srv->scavenge.ever = 0;
    pthread_mutex_unlock(&srv->mu);
    if (ever) pthread_join(srv->scavenge.thread, NULL);
}

void rpc_ops_shutdown(srv_call *c) {
    ProtobufCMessage *msg;
    if (drain(c, &event_store__client__empty__descriptor, &msg) != 0) return;
    protobuf_c_message_free_unpacked(msg, NULL);
    EventStore__Client__Empty empty = EVENT_STORE__CLIENT__EMPTY__INIT;
    call_reply(c, &empty.base);
    srv_log(c->srv, ANNAL_LOG_INFO, "shutdown asked by a client");
    /* The embedder decides; `annal serve` (no callback) stops as on SIGTERM. */
    if (c->srv->on_shutdown)
        c->srv->on_shutdown(c->srv->shutdown_ctx);
    else
        (void)kill(getpid(), SIGTERM);
}

/* ---- Monitoring */
static long proc_field(const char *name) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0) {
            v = strtol(line + n, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

size_t ops_stats(annal_server *srv, const char **keys, char (*vals)[40], size_t max) {
    annal_db_stats st;
    memset(&st, 0, sizeof st);
    (void)annal_db_stats_get(srv->db, &st);
    unsigned calls = 0, subs = 0;
    pthread_mutex_lock(&srv->mu);
    for (srv_call *c = srv->calls; c; c = c->next) {
        calls++;
        subs += c->sub != NULL;
    }
    int scav_running = srv->scavenge.running;
    annal_compact_stats cs = srv->scavenge.stats;
    annal_err scav_result = srv->scavenge.result;
    int scav_any = srv->scavenge.id[0] != 0;
    char scav_id[37];
    memcpy(scav_id, srv->scavenge.id, sizeof scav_id);
    pthread_mutex_unlock(&srv->mu);
    size_t n = 0;
#define PUT(k, ...)                                                                                \
    do {                                                                                           \
        if (n < max) {                                                                             \
            keys[n] = (k);                                                                         \
            snprintf(vals[n], sizeof vals[n], __VA_ARGS__);                                        \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    /* Names KurrentDB uses where the meaning is the same; annal's own under annal-. */
    PUT("proc-id", "%ld", (long)getpid());
    PUT("proc-startTime", "%" PRId64, srv->started_ns / 1000000000);
    PUT("proc-mem", "%ld", proc_field("VmRSS:") * 1024);
    PUT("proc-threadsCount", "%ld", proc_field("Threads:"));
    PUT("sys-loadavg-1m", "%.2f", 0.0);
    double load[1];
    if (getloadavg(load, 1) == 1) snprintf(vals[n - 1], sizeof vals[n - 1], "%.2f", load[0]);
    PUT("es-writer-lastFlushDelayMs", "%.3f", st.flush_ns_last / 1e6);
    PUT("es-writer-meanFlushDelayMs", "%.3f",
        st.flushes ? (double)st.flush_ns_total / (double)st.flushes / 1e6 : 0.0);
    PUT("es-writer-maxFlushDelayMs", "%.3f", st.flush_ns_max / 1e6);
    PUT("annal-flushes", "%" PRIu64, st.flushes);
    PUT("annal-groups", "%" PRIu64, st.groups);
    PUT("annal-group-meanAppends", "%.2f",
        st.groups ? (double)st.group_appends / (double)st.groups : 0.0);
    PUT("annal-group-maxAppends", "%" PRIu64, st.group_appends_max);
    PUT("annal-group-meanEvents", "%.2f",
        st.groups ? (double)st.group_events / (double)st.groups : 0.0);
    PUT("annal-group-maxEvents", "%" PRIu64, st.group_events_max);
    PUT("annal-events", "%" PRIu64, st.info.events);
    PUT("annal-streams", "%" PRIu64, st.info.streams);
    PUT("annal-segments", "%" PRIu64, st.info.segments);
    PUT("annal-logBytes", "%" PRIu64, st.info.log_bytes);
    PUT("annal-diskBytes", "%" PRIu64, st.info.disk_bytes);
    PUT("annal-calls", "%u", calls);
    PUT("annal-subscriptions", "%u", subs);
    PUT("annal-scavenge-state", "%s",
        scav_running                     ? "running"
        : !scav_any                      ? "none"
        : scav_result == ANNAL_OK        ? "done"
        : scav_result == ANNAL_ECANCELED ? "stopped"
                                         : "failed");
    PUT("annal-scavenge-id", "%s", scav_id);
    PUT("annal-scavenge-segmentsDone", "%" PRIu64, cs.segments_done);
    PUT("annal-scavenge-segmentsTotal", "%" PRIu64, cs.segments_total);
    PUT("annal-scavenge-eventsErased", "%" PRIu64, cs.events_erased);
    PUT("annal-scavenge-bytesReclaimed", "%" PRIu64, cs.bytes_reclaimed);
#undef PUT
    return n;
}

#define NSTATS 32

static int send_stats(srv_call *c) {
    const char *keys[NSTATS];
    char vals[NSTATS][40];
    size_t n = ops_stats(c->srv, keys, vals, NSTATS);
    EventStore__Client__Monitoring__StatsResp resp =
        EVENT_STORE__CLIENT__MONITORING__STATS_RESP__INIT;
    EventStore__Client__Monitoring__StatsResp__StatsEntry e[NSTATS], *ep[NSTATS];
    for (size_t i = 0; i < n; i++) {
        event_store__client__monitoring__stats_resp__stats_entry__init(&e[i]);
        e[i].key = (char *)keys[i];
        e[i].value = vals[i];
        ep[i] = &e[i];
    }
    resp.n_stats = n;
    resp.stats = ep;
    return call_send(c, &resp.base);
}

void rpc_monitoring_stats(srv_call *c) {
    ProtobufCMessage *msg;
    if (drain(c, &event_store__client__monitoring__stats_req__descriptor, &msg) != 0) return;
    uint64_t every = ((EventStore__Client__Monitoring__StatsReq *)msg)->refresh_time_period_in_ms;
    protobuf_c_message_free_unpacked(msg, NULL);
    if (every == 0) { /* once */
        if (send_stats(c) == 0) call_reply(c, NULL);
        return;
    }
    if (every < 100) every = 100;
    while (send_stats(c) == 0) {
        /* Sleep in slices, watching for the client leaving and the server stopping. */
        for (uint64_t slept = 0; slept < every; slept += 50) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
            if (call_gone(c)) return call_finish(c, GRPC_STATUS_CANCELLED, "gone", NULL, 0);
            if (srv_stopping(c->srv))
                return call_finish(c, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.", NULL, 0);
        }
    }
    call_finish(c, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
}
