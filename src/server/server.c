/*
 * server.c -- the gRPC server's lifecycle: channel settings, listening, one dispatcher
 * thread that accepts calls from the server's completion queue and a thread per call
 * that runs it (from a pool: a thread that ends a call waits a while for the next), and
 * a graceful stop.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "server_int.h"

#define CALL_STACK_BYTES (256u << 10)
#define POOL_IDLE_MAX    64   /* idle call threads kept at most */
#define POOL_IDLE_MS     2000 /* an idle thread exits after this long without a call */

void annal_server_opts_init(annal_server_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->listen = "127.0.0.1:2113";
    opts->max_append_bytes = 16u << 20;
    opts->log_level = ANNAL_LOG_INFO;
}

int annal_server_port(const annal_server *srv) { return srv->port; }

/* The status a BatchAppend call gets at stop: clients resend on UNAVAILABLE. */
static void end_batch_call(srv_call *c) {
    (void)grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "Server is shutting down.",
                                       NULL);
}

int srv_batch_begin(srv_call *c) {
    pthread_mutex_lock(&c->srv->mu);
    int ok = !c->srv->stopping;
    c->batches += ok;
    pthread_mutex_unlock(&c->srv->mu);
    return ok;
}

void srv_batch_end(srv_call *c) {
    pthread_mutex_lock(&c->srv->mu);
    if (--c->batches == 0 && c->srv->stopping && c->cancel_at_stop) end_batch_call(c);
    pthread_mutex_unlock(&c->srv->mu);
}

int srv_call_set_sub(srv_call *c, annal_sub *sub) {
    annal_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    int stopping = srv->stopping;
    c->sub = stopping ? NULL : sub;
    pthread_mutex_unlock(&srv->mu);
    return stopping && sub ? -1 : 0;
}

/* ---- Dispatch: method path -> handler. */
static const struct {
    const char *path;
    void (*fn)(srv_call *c);
} methods[] = {
    {"/event_store.client.streams.Streams/Read", rpc_streams_read},
    {"/event_store.client.streams.Streams/Append", rpc_streams_append},
    {"/event_store.client.streams.Streams/Delete", rpc_streams_delete},
    {"/event_store.client.streams.Streams/Tombstone", rpc_streams_tombstone},
    {"/event_store.client.streams.Streams/BatchAppend", rpc_streams_batch_append},
    {"/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
     rpc_features_methods},
    {"/event_store.client.gossip.Gossip/Read", rpc_gossip_read},
    /* security: the Users service (users_rpc.c) */
    {"/event_store.client.users.Users/Create", rpc_users_create},
    {"/event_store.client.users.Users/Update", rpc_users_update},
    {"/event_store.client.users.Users/Delete", rpc_users_delete},
    {"/event_store.client.users.Users/Disable", rpc_users_disable},
    {"/event_store.client.users.Users/Enable", rpc_users_enable},
    {"/event_store.client.users.Users/Details", rpc_users_details},
    {"/event_store.client.users.Users/ChangePassword", rpc_users_change_password},
    {"/event_store.client.users.Users/ResetPassword", rpc_users_reset_password},
    {"/event_store.client.operations.Operations/StartScavenge", rpc_ops_start_scavenge},
    {"/event_store.client.operations.Operations/StopScavenge", rpc_ops_stop_scavenge},
    {"/event_store.client.operations.Operations/Shutdown", rpc_ops_shutdown},
    {"/event_store.client.monitoring.Monitoring/Stats", rpc_monitoring_stats},
    {"/event_store.client.projections.Projections/Enable", rpc_projections_enable},
    {"/event_store.client.projections.Projections/Statistics", rpc_projections_statistics},
    {"/event_store.client.projections.Projections/State", rpc_projections_state},
    /* v2.c: atomic appends across streams (KurrentDB 25.1+) */
    {"/kurrentdb.protocol.v2.streams.StreamsService/AppendSession", rpc_v2_append_session},
    {"/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords", rpc_v2_append_records},
    {"/event_store.client.projections.Projections/Disable", rpc_projections_disable},
    /* annal's Dynamic Consistency Boundaries service (dcb.c) */
    {"/annal.dcb.v1.Dcb/Read", rpc_dcb_read},
    {"/annal.dcb.v1.Dcb/Subscribe", rpc_dcb_subscribe},
    {"/annal.dcb.v1.Dcb/Append", rpc_dcb_append},
};

static void run_call(srv_call *c) {
    char path[256];
    call_method(c, path, sizeof path);
    if (call_watch_close(c) != 0) {
        call_finish(c, GRPC_STATUS_INTERNAL, "cannot watch the call", NULL, 0);
        return;
    }
    if (sec_authenticate(c, path) != 0) return; /* security: refused and finished */
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        if (strcmp(methods[i].path, path) == 0) {
            srv_log(c->srv, ANNAL_SERVER_LOG_DEBUG, "call %s", path);
            methods[i].fn(c);
            if (!c->finished) call_finish(c, GRPC_STATUS_INTERNAL, "no reply", NULL, 0);
            return;
        }
    }
    srv_log(c->srv, ANNAL_LOG_WARN, "unimplemented method %s", path);
    call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "method not implemented by annal", NULL, 0);
}

/* Release a call's resources; its queue must have nothing pending but the close. */
static void call_free(srv_call *c) {
    if (c->call) {
        if (!c->closed)
            (void)grpc_completion_queue_pluck(c->cq, &c->tag_close,
                                              gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_call_unref(c->call);
    }
    grpc_completion_queue_shutdown(c->cq);
    (void)grpc_completion_queue_pluck(c->cq, &c->tag_drain, gpr_inf_future(GPR_CLOCK_REALTIME),
                                      NULL);
    grpc_completion_queue_destroy(c->cq);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->request_md);
    free(c);
}

/* A call's end: unlinked, freed, counted out. */
static void end_call(srv_call *c) {
    annal_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->mu);
    sec_call_end(c); /* security */
    call_free(c);
    pthread_mutex_lock(&srv->mu);
    srv->active--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* The next call for an idle thread, or NULL when it should exit: the pool is stopping, it
 * has enough idle threads, or none came for POOL_IDLE_MS. Called with srv->mu held. */
static srv_call *next_call(annal_server *srv) {
    if (!srv->runq && srv->idle >= POOL_IDLE_MAX) return NULL;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += POOL_IDLE_MS / 1000;
    srv->idle++;
    int timed_out = 0;
    while (!srv->runq && !srv->pool_stop && !timed_out)
        timed_out = pthread_cond_timedwait(&srv->pool_cv, &srv->mu, &until) == ETIMEDOUT;
    srv->idle--;
    srv_call *c = srv->runq;
    if (c) {
        srv->runq = c->runq_next;
        if (!srv->runq) srv->runq_tail = NULL;
    }
    return c;
}

static void *call_thread(void *arg) {
    srv_call *c = arg;
    annal_server *srv = c->srv;
    while (c) {
        (void)pthread_setname_np(pthread_self(), "annal-call"); /* tests count these */
        run_call(c);
        end_call(c);
        (void)pthread_setname_np(pthread_self(), "annal-idle");
        pthread_mutex_lock(&srv->mu);
        c = next_call(srv);
        if (!c) {
            srv->threads--;
            pthread_cond_broadcast(&srv->cv);
        }
        pthread_mutex_unlock(&srv->mu);
    }
    return NULL;
}

/* Offer one slot for the next incoming call. Called with srv->mu held. */
static void request_call(annal_server *srv) {
    srv_call *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = srv;
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->request_md);
    if (grpc_server_request_call(srv->server, &c->call, &c->details, &c->request_md, c->cq, srv->cq,
                                 c) != GRPC_CALL_OK) {
        c->call = NULL;
        call_free(c);
        return;
    }
    srv->pending++;
}

static void start_call(annal_server *srv, srv_call *c) {
    pthread_mutex_lock(&srv->mu);
    c->next = srv->calls;
    if (c->next) c->next->prev = c;
    srv->calls = c;
    srv->active++;
    /* An idle thread takes it if one is free of the calls queued already. */
    unsigned queued = 0;
    for (srv_call *q = srv->runq; q; q = q->runq_next) queued++;
    int pooled = srv->idle > queued;
    if (pooled) {
        c->runq_next = NULL;
        if (srv->runq_tail)
            srv->runq_tail->runq_next = c;
        else
            srv->runq = c;
        srv->runq_tail = c;
        pthread_cond_signal(&srv->pool_cv);
    } else {
        srv->threads++;
    }
    pthread_mutex_unlock(&srv->mu);
    if (pooled) return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CALL_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (pthread_create(&t, &attr, call_thread, c) != 0) {
        srv_log(srv, ANNAL_LOG_ERROR, "cannot start a thread for a call");
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of threads", NULL, 0);
        c->finished = 1;
        end_call(c);
        pthread_mutex_lock(&srv->mu);
        srv->threads--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
    }
    pthread_attr_destroy(&attr);
}

static void *dispatcher(void *arg) {
    annal_server *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        pthread_mutex_lock(&srv->mu);
        if (ev.tag == &srv->shutdown_tag) {
            srv->shutdown_done = 1;
            pthread_cond_broadcast(&srv->cv);
            int done = srv->pending == 0;
            pthread_mutex_unlock(&srv->mu);
            if (done) break;
            continue;
        }
        srv_call *c = ev.tag;
        srv->pending--;
        if (!srv->stopping) request_call(srv);
        int done = srv->shutdown_done && srv->pending == 0;
        pthread_mutex_unlock(&srv->mu);
        if (ev.success)
            start_call(srv, c);
        else {
            if (c->call) {
                grpc_call_unref(c->call);
                c->call = NULL;
            }
            call_free(c);
        }
        if (done) break;
    }
    return NULL;
}

/* ---- Start */
static annal_err make_creds(annal_server *srv, const annal_server_opts *o,
                            grpc_server_credentials **out) {
    if (o->insecure) {
        *out = grpc_insecure_server_credentials_create();
        return *out ? ANNAL_OK : ANNAL_ENOMEM;
    }
    /* security: certificates that reload on annal_server_reload_tls (tls.c) */
    annal_err r = tls_open(srv, o, &srv->tls);
    if (r != ANNAL_OK) return r;
    *out = tls_credentials(srv->tls);
    return *out ? ANNAL_OK : ANNAL_EINVAL;
}

static int split_listen(annal_server *srv, const char *listen) {
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof srv->host) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || end == colon + 1) return -1;
    memcpy(srv->host, listen, (size_t)(colon - listen));
    srv->host[colon - listen] = '\0';
    srv->port = (int)port;
    return 0;
}

static grpc_server *make_server(void) {
    grpc_arg args[6];
    memset(args, 0, sizeof args);
    const struct {
        const char *key;
        int value;
    } ints[] = {
        {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)SRV_MAX_MESSAGE},
        {GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)SRV_MAX_MESSAGE},
        /* Clients ping every 10 s, with or without calls: never answer with GOAWAY. */
        {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000},
        {GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1},
        {GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0},
        {GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0},
    };
    for (size_t i = 0; i < 6; i++) {
        args[i].type = GRPC_ARG_INTEGER;
        args[i].key = (char *)ints[i].key;
        args[i].value.integer = ints[i].value;
    }
    grpc_channel_args ca = {6, args};
    return grpc_server_create(&ca, NULL);
}

static annal_err bind_and_start(annal_server *srv, const annal_server_opts *o) {
    grpc_server_credentials *creds = NULL;
    annal_err r = make_creds(srv, o, &creds);
    if (r != ANNAL_OK) return r;
    srv->server = make_server();
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    int port = grpc_server_add_http2_port(srv->server, o->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        srv_log(srv, ANNAL_LOG_ERROR, "cannot listen on %s (in use, or not an address here)",
                o->listen);
        return ANNAL_EINVAL;
    }
    srv->port = port;
    if (o->local_socket) {
        char addr[4096 + 8];
        snprintf(addr, sizeof addr, "unix:%s", o->local_socket);
        grpc_server_credentials *local = grpc_insecure_server_credentials_create();
        int ok = grpc_server_add_http2_port(srv->server, addr, local) > 0;
        grpc_server_credentials_release(local);
        if (!ok) {
            srv_log(srv, ANNAL_LOG_ERROR, "cannot listen on %s", addr);
            return ANNAL_EINVAL;
        }
    }
    grpc_server_start(srv->server);
    pthread_mutex_lock(&srv->mu);
    for (int i = 0; i < SRV_PENDING_CALLS; i++) request_call(srv);
    pthread_mutex_unlock(&srv->mu);
    if (pthread_create(&srv->dispatcher, NULL, dispatcher, srv) != 0) return ANNAL_ENOMEM;
    return ANNAL_OK;
}

static void destroy(annal_server *srv) {
    if (srv->server) grpc_server_destroy(srv->server);
    tls_close(srv->tls); /* security */
    sec_stop(srv);
    if (srv->cq) {
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {}
        grpc_completion_queue_destroy(srv->cq);
    }
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    pthread_cond_destroy(&srv->pool_cv);
    free(srv);
    grpc_shutdown();
}

annal_err annal_server_start(annal_db *db, const annal_server_opts *opts, annal_server **out) {
    annal_server_opts defaults;
    if (!opts) {
        annal_server_opts_init(&defaults);
        opts = &defaults;
    }
    *out = NULL;
    if (!db || !opts->listen) return ANNAL_EINVAL;
    annal_server *srv = calloc(1, sizeof *srv);
    if (!srv) return ANNAL_ENOMEM;
    srv->db = db;
    srv->log = opts->log;
    srv->log_ctx = opts->log_ctx;
    srv->log_level = opts->log_level;
    srv->max_append_bytes = opts->max_append_bytes ? opts->max_append_bytes : (16u << 20);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    pthread_cond_init(&srv->pool_cv, NULL);
    srv_random_id(&srv->instance_id);
    srv->started_ns = (int64_t)time(NULL) * 1000000000;
    srv->on_shutdown = opts->on_shutdown;
    srv->shutdown_ctx = opts->shutdown_ctx;
    if (!opts->insecure && (!opts->cert_file || !opts->key_file)) {
        srv_log(srv, ANNAL_LOG_ERROR, "neither TLS (certificate and key) nor insecure chosen");
        pthread_mutex_destroy(&srv->mu);
        pthread_cond_destroy(&srv->cv);
        pthread_cond_destroy(&srv->pool_cv);
        free(srv);
        return ANNAL_EINVAL;
    }
    if (split_listen(srv, opts->listen) != 0) {
        srv_log(srv, ANNAL_LOG_ERROR, "listen address '%s' is not HOST:PORT", opts->listen);
        pthread_mutex_destroy(&srv->mu);
        pthread_cond_destroy(&srv->cv);
        pthread_cond_destroy(&srv->pool_cv);
        free(srv);
        return ANNAL_EINVAL;
    }
    grpc_init();
    annal_err r = sec_start(srv, opts); /* security: users, built-ins (auth.c) */
    if (r == ANNAL_OK) r = bind_and_start(srv, opts);
    if (r == ANNAL_OK) r = runner_start(srv, opts); /* projections (runner.c) */
    if (r != ANNAL_OK) {
        if (srv->server) {
            grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
            grpc_server_cancel_all_calls(srv->server);
            grpc_event ev;
            do {
                ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (ev.type == GRPC_OP_COMPLETE && ev.tag != &srv->shutdown_tag) call_free(ev.tag);
            } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &srv->shutdown_tag);
        }
        destroy(srv);
        return r;
    }
    srv_log(srv, ANNAL_LOG_INFO, "listening on %s:%d (%s)", srv->host, srv->port,
            opts->insecure ? "insecure, no TLS" : "TLS");
    *out = srv;
    return ANNAL_OK;
}

/* ---- Stop */
static int wait_until(annal_server *srv, const int *flag, int grace_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    int timed_out = 0;
    while (!*flag && !timed_out)
        timed_out = pthread_cond_timedwait(&srv->cv, &srv->mu, &until) == ETIMEDOUT;
    return *flag;
}

void annal_server_stop(annal_server *srv, int grace_ms) {
    if (!srv) return;
    runner_stop(srv); /* projections first: between batches, before the calls end */
    srv_log(srv, ANNAL_LOG_INFO, "stopping: no new calls; ending subscriptions");
    pthread_mutex_lock(&srv->mu);
    srv->stopping = 1;
    for (srv_call *c = srv->calls; c; c = c->next) {
        if (c->sub) annal_sub_cancel(c->sub);
        /* Clients keep a BatchAppend call open for good: end it with UNAVAILABLE (the
         * client resends with the same ids), but only once the appends under way have
         * been answered, or their clients would count stored events as failed. */
        if (c->cancel_at_stop && c->batches == 0) end_batch_call(c);
    }
    pthread_mutex_unlock(&srv->mu);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    pthread_mutex_lock(&srv->mu);
    int done = wait_until(srv, &srv->shutdown_done, grace_ms < 0 ? 0 : grace_ms);
    pthread_mutex_unlock(&srv->mu);
    if (!done) {
        srv_log(srv, ANNAL_LOG_WARN, "cancelling calls still running after %d ms", grace_ms);
        grpc_server_cancel_all_calls(srv->server);
    }
    pthread_join(srv->dispatcher, NULL);
    pthread_mutex_lock(&srv->mu);
    while (srv->active > 0) pthread_cond_wait(&srv->cv, &srv->mu);
    srv->pool_stop = 1; /* and the idle threads go: destroy frees what they wait on */
    pthread_cond_broadcast(&srv->pool_cv);
    while (srv->threads > 0) pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    ops_join(srv); /* a scavenge under way stops at its next safe point */
    runner_free(srv);
    srv_log(srv, ANNAL_LOG_INFO, "stopped");
    destroy(srv);
}
