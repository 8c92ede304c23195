/*
 * server_load.c -- a load generator for `annal serve` (or any KurrentDB server) on gRPC
 * core's client API, through annal's own client (src/remote, the same protos as the
 * server). One workload per process, one JSON line on stdout:
 *
 *   annal_server_load --target URL --workload W [--seconds S] [--clients C] [--batch B]
 *                     [--window N] [--events N] [--subs N] [--rate R] [--stream NAME]
 *
 * URL as annal_remote_open takes it: esdb://127.0.0.1:PORT?tls=false, or with
 * user:pass@ and tlsCAFile=PATH for TLS. Workloads:
 *   append       C clients (threads, each its own channel), one event per Append call, to
 *                streams of their own with the exact expected revision, for S seconds
 *   batch        one client, BatchAppend of B events per append to 100 streams in turn,
 *                N appends in flight (--window, default 1: send, wait, send), for S s
 *   fixture      load the read fixture with BatchAppend (not durable-fast, just fast):
 *                --events N, half to --stream (default stream-hot) interleaved in runs
 *                of B with the other half over 100 streams
 *   read-stream  one client reads --stream from revision 0 to the end, passes for S s
 *   read-all     one client reads $all from the start, --events per pass, for S s
 *   read-calls   C clients each read 10 events of --stream (within its first 1,000) per
 *                call, for S s (calls/s)
 *   subscribe    --subs live $all subscriptions, then C appenders paced to --rate
 *                single-event appends/s in total for S s (fewer if the server cannot
 *                keep up), then an end marker; latency = the subscriber's
 *                receipt minus the appender's ack of that event (0 when it arrives
 *                first, counted as "early"), per (event, subscriber)
 *   ping         C clients call ServerFeatures.GetSupportedMethods for S s: what a call
 *                costs with no store work in it
 * Fields: workload, clients, calls, events, seconds, events_per_s, calls_per_s, p50_ms,
 * p99_ms (per call; per delivery for subscribe), client_cpu_s (this process's CPU time in
 * the timed part), errors (failed calls: must be 0).
 * Events are ~200 bytes of JSON with ids made here (UUIDv4 with a counter).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "remote.h"

#define MAX_CLIENTS   1024
#define BATCH_STREAMS 100
#define SUB_MAX       1000

typedef struct opts {
    const char *target, *workload, *stream;
    double seconds;
    int clients, batch, window, subs;
    long events;
    double rate;
} opts;

static opts O = {NULL, NULL, "stream-hot", 5.0, 1, 100, 1, 100, 200000, 10000.0};
static uint64_t run_id; /* random: streams and ids of this run are its own */
static atomic_long errors;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
    int64_t d = t - now_ns();
    if (d <= 0) return;
    struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
    nanosleep(&ts, NULL);
}

static annal_remote *connect_or_die(void) {
    annal_remote *r;
    char err[256];
    if (annal_remote_open(O.target, &r, err, sizeof err) != ANNAL_OK) {
        fprintf(stderr, "annal_server_load: %s\n", err);
        exit(2);
    }
    return r;
}

static void fail(annal_remote *r, const char *what, annal_err rc) {
    if (atomic_fetch_add(&errors, 1) < 5)
        fprintf(stderr, "annal_server_load: %s: %s (%s)\n", what, annal_errname(rc),
                annal_remote_errmsg(r));
}

/* ---- Events: ~200 bytes of JSON, an id of run_id and a sequence number. */
static const char *const types[] = {"OrderPlaced", "OrderPaid", "OrderShipped", "ItemAdded"};

typedef struct ev_buf {
    char data[256];
    annal_event_data ev;
} ev_buf;

static void make_event(ev_buf *b, uint64_t seq) {
    int n = snprintf(b->data, sizeof b->data,
                     "{\"order\":\"o-%012llu\",\"amount\":%llu,\"currency\":\"EUR\",\"note\":\"",
                     (unsigned long long)seq, (unsigned long long)(seq * 7919 % 100000));
    for (; n < 196; n++) b->data[n] = (char)('a' + (seq + (uint64_t)n) % 26);
    memcpy(b->data + n, "\"}", 3);
    memset(&b->ev, 0, sizeof b->ev);
    for (int i = 0; i < 8; i++) {
        b->ev.id.bytes[i] = (uint8_t)(run_id >> (56 - 8 * i));
        b->ev.id.bytes[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    b->ev.id.bytes[6] = (uint8_t)((b->ev.id.bytes[6] & 0x0f) | 0x40);
    b->ev.id.bytes[8] = (uint8_t)((b->ev.id.bytes[8] & 0x3f) | 0x80);
    b->ev.type = types[seq % 4];
    b->ev.data = b->data;
    b->ev.data_len = (size_t)n + 2;
}

/* The sequence number of an event of this run; -1 for others. */
static int64_t event_seq(const annal_uuid *id) {
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; i++) hi = hi << 8 | id->bytes[i], lo = lo << 8 | id->bytes[8 + i];
    uint64_t mask_hi = ~((uint64_t)0xf0 << 8), mask_lo = ~((uint64_t)0xc0 << 56);
    if ((hi & mask_hi) != (run_id & mask_hi)) return -1;
    return (int64_t)(lo & mask_lo);
}

/* ---- Latency samples (microseconds), per thread, merged at the end. */
typedef struct samples {
    uint32_t *v;
    size_t n, cap;
} samples;

static void sample_add(samples *s, int64_t ns) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) return;
        s->v = v, s->cap = cap;
    }
    s->v[s->n++] = ns <= 0 ? 0 : ns / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(ns / 1000);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(samples *s, double p) {
    if (!s->n) return 0;
    size_t k = (size_t)(p * (double)s->n + 0.5);
    if (k > 0) k--;
    if (k >= s->n) k = s->n - 1;
    return s->v[k] / 1000.0;
}

static void merge(samples *into, samples *from) {
    for (size_t i = 0; i < from->n; i++) sample_add(into, (int64_t)from->v[i] * 1000);
    free(from->v);
    memset(from, 0, sizeof *from);
}

typedef struct result {
    long calls, events;
    double seconds;
    samples lat;
    long early; /* subscribe: deliveries before the ack */
    double rate_done;
} result;

/* This process's CPU time, s; cpu_start: when the timed part began. */
static double cpu_start;
static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void report(result *res) {
    qsort(res->lat.v, res->lat.n, sizeof *res->lat.v, cmp_u32);
    double cpu = cpu_now() - cpu_start;
    printf("{\"workload\":\"%s\",\"clients\":%d,\"batch\":%d,\"window\":%d,\"subs\":%d,"
           "\"calls\":%ld,\"events\":%ld,\"seconds\":%.3f,\"events_per_s\":%.1f,"
           "\"calls_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"early\":%ld,\"client_cpu_s\":%.3f,\"errors\":%ld}\n",
           O.workload, O.clients, O.batch, O.window, O.subs, res->calls, res->events, res->seconds,
           res->seconds > 0 ? (double)res->events / res->seconds : 0,
           res->seconds > 0 ? (double)res->calls / res->seconds : 0, pct_ms(&res->lat, 0.50),
           pct_ms(&res->lat, 0.99), res->lat.n ? res->lat.v[res->lat.n - 1] / 1000.0 : 0,
           res->early, cpu, (long)atomic_load(&errors));
    free(res->lat.v);
}

/* ---- append / read-calls: C threads, each its own channel, calls until the deadline. */
typedef struct worker {
    int idx;
    int64_t start, until;
    long calls, events;
    samples lat;
    pthread_t t;
} worker;

static void *append_worker(void *arg) {
    worker *w = arg;
    annal_remote *r = connect_or_die();
    enum { OWN = 16 }; /* streams of this client, appended to in turn */
    int64_t rev[OWN];
    for (int i = 0; i < OWN; i++) rev[i] = ANNAL_EXPECT_NO_STREAM;
    char name[64];
    ev_buf b;
    sleep_until(w->start);
    for (uint64_t k = 0; now_ns() < w->until; k++) {
        int s = (int)(k % OWN);
        snprintf(name, sizeof name, "load-%016llx-%d-%d", (unsigned long long)run_id, w->idx, s);
        make_event(&b, ((uint64_t)w->idx << 32) | k);
        annal_append_result res;
        int64_t t0 = now_ns();
        annal_err rc = annal_remote_append(r, name, rev[s], &b.ev, 1, &res);
        sample_add(&w->lat, now_ns() - t0);
        if (rc != ANNAL_OK) {
            fail(r, "append", rc);
            rev[s] = ANNAL_EXPECT_ANY;
            continue;
        }
        rev[s] = res.revision;
        w->calls++;
        w->events++;
    }
    annal_remote_close(r);
    return NULL;
}

static int count_event(void *ctx, const annal_sub_item *it) {
    if (it->kind == ANNAL_SUB_EVENT) ++*(long *)ctx;
    return 0;
}

static void *read_calls_worker(void *arg) {
    worker *w = arg;
    annal_remote *r = connect_or_die();
    sleep_until(w->start);
    for (uint64_t k = 0; now_ns() < w->until; k++) {
        long got = 0;
        int64_t t0 = now_ns();
        /* Within the first 1,000 revisions (the fixture has more). */
        annal_err rc =
            annal_remote_read_each(r, O.stream, (int64_t)((k * 97) % 990), 10, count_event, &got);
        sample_add(&w->lat, now_ns() - t0);
        if (rc != ANNAL_OK || got != 10) {
            fail(r, rc == ANNAL_OK ? "read: fewer than 10 events" : "read", rc);
            continue;
        }
        w->calls++;
        w->events += got;
    }
    annal_remote_close(r);
    return NULL;
}

/* ServerFeatures calls: a call's cost with no store work in it. */
static void *ping_worker(void *arg) {
    worker *w = arg;
    annal_remote *r = connect_or_die();
    sleep_until(w->start);
    while (now_ns() < w->until) {
        int64_t t0 = now_ns();
        annal_err rc = annal_remote_ping(r, 10000);
        sample_add(&w->lat, now_ns() - t0);
        if (rc != ANNAL_OK) {
            fail(r, "ping", rc);
            continue;
        }
        w->calls++;
        w->events++;
    }
    annal_remote_close(r);
    return NULL;
}

static void run_workers(void *(*fn)(void *), result *res) {
    static worker ws[MAX_CLIENTS];
    /* Threads connect first; the clock starts for all of them together. */
    int64_t start = now_ns() + 300000000LL;
    cpu_start = cpu_now(); /* connecting included: a channel each, made as the clock starts */
    for (int i = 0; i < O.clients; i++) {
        ws[i] = (worker){.idx = i, .start = start, .until = start + (int64_t)(O.seconds * 1e9)};
        if (pthread_create(&ws[i].t, NULL, fn, &ws[i]) != 0) {
            fprintf(stderr, "annal_server_load: cannot start thread %d\n", i);
            exit(2);
        }
    }
    for (int i = 0; i < O.clients; i++) {
        pthread_join(ws[i].t, NULL);
        res->calls += ws[i].calls;
        res->events += ws[i].events;
        merge(&res->lat, &ws[i].lat);
    }
    res->seconds = (double)(now_ns() - start) / 1e9;
}

/* ---- batch and fixture: one client, BatchAppend with a window of appends in flight. */
typedef struct batch_state {
    annal_remote *r;
    annal_remote_batch *b;
    int64_t rev[BATCH_STREAMS + 1];
    int64_t sent_ns[4096];
    int stream_of[4096];
    ev_buf *evs;
    annal_event_data *data;
    uint64_t seq;
} batch_state;

static void batch_name(char *name, size_t size, int s) {
    if (s == BATCH_STREAMS)
        snprintf(name, size, "%s", O.stream);
    else
        snprintf(name, size, "load-%016llx-b%d", (unsigned long long)run_id, s);
}

static int batch_send(batch_state *st, uint64_t tag, int s, int64_t expected) {
    for (int i = 0; i < O.batch; i++) {
        make_event(&st->evs[i], st->seq++);
        st->data[i] = st->evs[i].ev;
    }
    char name[64];
    batch_name(name, sizeof name, s);
    st->stream_of[tag % 4096] = s;
    st->sent_ns[tag % 4096] = now_ns();
    annal_err rc = annal_remote_batch_send(st->b, tag, name, expected, st->data, (size_t)O.batch);
    if (rc != ANNAL_OK) fail(st->r, "batch send", rc);
    return rc == ANNAL_OK ? 0 : -1;
}

/* Wait for one answer; -1 when the call has ended. */
static int batch_recv(batch_state *st, result *res) {
    uint64_t tag;
    annal_append_result ar;
    annal_err rc = annal_remote_batch_recv(st->b, &tag, &ar);
    if (tag == UINT64_MAX) {
        fail(st->r, "batch receive", rc);
        return -1;
    }
    sample_add(&res->lat, now_ns() - st->sent_ns[tag % 4096]);
    if (rc != ANNAL_OK) {
        fail(st->r, "batch append", rc);
        return 0;
    }
    st->rev[st->stream_of[tag % 4096]] = ar.revision;
    res->calls++;
    res->events += O.batch;
    return 0;
}

static void run_batch(result *res, int fixture) {
    batch_state *st = calloc(1, sizeof *st);
    st->evs = calloc((size_t)O.batch, sizeof *st->evs);
    st->data = calloc((size_t)O.batch, sizeof *st->data);
    st->r = connect_or_die();
    if (annal_remote_batch_open(st->r, &st->b) != ANNAL_OK) {
        fprintf(stderr, "annal_server_load: %s\n", annal_remote_errmsg(st->r));
        exit(2);
    }
    if (O.window < 1 || O.window > BATCH_STREAMS) O.window = 1; /* no two in flight to one stream */
    long appends = fixture ? O.events / O.batch : -1;
    cpu_start = cpu_now();
    int64_t start = now_ns(), until = start + (int64_t)(O.seconds * 1e9);
    long inflight = 0;
    for (int i = 0; i <= BATCH_STREAMS; i++) st->rev[i] = ANNAL_EXPECT_NO_STREAM;
    for (uint64_t tag = 0;; tag++) {
        int more = fixture ? (long)tag < appends : now_ns() < until;
        if (!more && inflight == 0) break;
        if (more && inflight < O.window) {
            /* In turn over the streams, so that no two appends in flight share one and the
             * expected revisions stay exact; the fixture alternates with the hot stream. */
            int s = fixture && tag % 2 == 0 ? BATCH_STREAMS : (int)(tag % BATCH_STREAMS);
            int64_t exp = fixture ? ANNAL_EXPECT_ANY : st->rev[s];
            if (batch_send(st, tag, s, exp) != 0) break;
            inflight++;
            continue;
        }
        tag--; /* nothing sent this turn */
        if (batch_recv(st, res) != 0) break;
        inflight--;
    }
    res->seconds = (double)(now_ns() - start) / 1e9;
    annal_remote_batch_close(st->b);
    annal_remote_close(st->r);
    free(st->evs), free(st->data), free(st);
}

/* ---- read-stream / read-all: one client, whole passes until the time is up. */
typedef struct read_check {
    long n;
    uint64_t last;
    int by_revision;
    long bad;
} read_check;

static int check_event(void *ctx, const annal_sub_item *it) {
    read_check *c = ctx;
    if (it->kind != ANNAL_SUB_EVENT) return 0;
    uint64_t key = c->by_revision ? it->event->revision : it->event->position;
    if (c->n > 0 && (c->by_revision ? key != c->last + 1 : key <= c->last)) c->bad++;
    c->last = key;
    c->n++;
    return 0;
}

static void run_read(result *res, int all) {
    annal_remote *r = connect_or_die();
    read_check warm = {0, 0, !all, 0};
    (void)annal_remote_read_each(r, all ? NULL : O.stream, 0, all ? (size_t)O.events : SIZE_MAX,
                                 check_event, &warm); /* warm-up pass, not timed */
    cpu_start = cpu_now();
    int64_t start = now_ns(), until = start + (int64_t)(O.seconds * 1e9);
    do {
        read_check c = {0, 0, !all, 0};
        int64_t t0 = now_ns();
        annal_err rc = annal_remote_read_each(r, all ? NULL : O.stream, 0,
                                              all ? (size_t)O.events : SIZE_MAX, check_event, &c);
        sample_add(&res->lat, now_ns() - t0);
        if (rc != ANNAL_OK || c.bad || c.n == 0) {
            fail(r, c.bad ? "read: events out of order" : "read", rc == ANNAL_OK ? ANNAL_EIO : rc);
            break;
        }
        res->calls++;
        res->events += c.n;
    } while (now_ns() < until);
    res->seconds = (double)(now_ns() - start) / 1e9;
    annal_remote_close(r);
}

/* ---- subscribe: subscribers on $all, paced appenders, ack-to-delivery latency. */
typedef struct sub_state {
    long total;              /* events the appenders will append */
    _Atomic int64_t *ack_ns; /* [total] */
    _Atomic int ready, done; /* subscribers caught up / finished */
    _Atomic long appended;   /* events acked */
} sub_state;

static sub_state SS;

typedef struct subscriber {
    annal_remote *r;
    int64_t *recv_ns; /* [total] */
    long got;
    int caught_up;
    pthread_t t;
} subscriber;

static int on_sub(void *ctx, const annal_sub_item *it) {
    subscriber *s = ctx;
    if (it->kind == ANNAL_SUB_CAUGHT_UP && !s->caught_up) {
        s->caught_up = 1;
        atomic_fetch_add(&SS.ready, 1);
    }
    if (it->kind != ANNAL_SUB_EVENT) return 0;
    int64_t seq = event_seq(&it->event->id);
    if (seq == SS.total) return 1; /* the end marker: everything before it came */
    if (seq < 0 || seq > SS.total) return 0;
    if (!s->recv_ns[seq]) s->got++;
    s->recv_ns[seq] = now_ns();
    return 0;
}

static void *sub_thread(void *arg) {
    subscriber *s = arg;
    annal_err rc = annal_remote_subscribe(s->r, NULL, -1, on_sub, s);
    if (rc != ANNAL_OK) fail(s->r, "subscribe", rc);
    if (!s->caught_up) atomic_fetch_add(&SS.ready, 1);
    atomic_fetch_add(&SS.done, 1);
    return NULL;
}

typedef struct pacer {
    int idx;
    int64_t start;
    pthread_t t;
} pacer;

static void *paced_appender(void *arg) {
    pacer *p = arg;
    annal_remote *r = connect_or_die();
    char name[64];
    ev_buf b;
    double gap = 1e9 / O.rate; /* between this run's events; appender idx takes every C-th */
    int64_t until = p->start + (int64_t)(O.seconds * 1e9);
    for (long seq = p->idx; seq < SS.total && now_ns() < until; seq += O.clients) {
        sleep_until(p->start + (int64_t)((double)seq * gap));
        snprintf(name, sizeof name, "load-%016llx-s%ld", (unsigned long long)run_id, seq % 100);
        make_event(&b, (uint64_t)seq);
        annal_append_result res;
        annal_err rc = annal_remote_append(r, name, ANNAL_EXPECT_ANY, &b.ev, 1, &res);
        if (rc != ANNAL_OK) fail(r, "append", rc);
        atomic_store(&SS.ack_ns[seq], now_ns());
        atomic_fetch_add(&SS.appended, 1);
    }
    annal_remote_close(r);
    return NULL;
}

static void run_subscribe(result *res) {
    SS.total = (long)(O.rate * O.seconds);
    SS.ack_ns = calloc((size_t)SS.total, sizeof *SS.ack_ns);
    int nsub = O.subs > SUB_MAX ? SUB_MAX : O.subs;
    subscriber *subs = calloc((size_t)nsub, sizeof *subs);
    for (int i = 0; i < nsub; i++) {
        subs[i].r = connect_or_die();
        subs[i].recv_ns = calloc((size_t)SS.total, sizeof(int64_t));
        if (pthread_create(&subs[i].t, NULL, sub_thread, &subs[i]) != 0) exit(2);
    }
    int64_t wait_until = now_ns() + 30000000000LL;
    while (atomic_load(&SS.ready) < nsub && now_ns() < wait_until) usleep(10000);
    static pacer ps[MAX_CLIENTS];
    int64_t start = now_ns() + 100000000LL;
    cpu_start = cpu_now(); /* subscribers receiving and appenders, not the set-up */
    for (int i = 0; i < O.clients; i++) {
        ps[i] = (pacer){.idx = i, .start = start};
        if (pthread_create(&ps[i].t, NULL, paced_appender, &ps[i]) != 0) exit(2);
    }
    for (int i = 0; i < O.clients; i++) pthread_join(ps[i].t, NULL);
    res->seconds = (double)(now_ns() - start) / 1e9;
    res->calls = res->events = atomic_load(&SS.appended);
    /* An end marker after the last append: a subscriber that has it has had the rest. */
    annal_remote *r = connect_or_die();
    ev_buf b;
    make_event(&b, (uint64_t)SS.total);
    annal_append_result ar;
    annal_err rc = annal_remote_append(r, "load-end", ANNAL_EXPECT_ANY, &b.ev, 1, &ar);
    if (rc != ANNAL_OK) fail(r, "append the end marker", rc);
    annal_remote_close(r);
    /* Every subscriber should have every event within seconds: then they stop. */
    wait_until = now_ns() + 30000000000LL;
    while (atomic_load(&SS.done) < nsub && now_ns() < wait_until) usleep(10000);
    if (atomic_load(&SS.done) < nsub) {
        atomic_fetch_add(&errors, nsub - atomic_load(&SS.done));
        fprintf(stderr, "annal_server_load: %d subscribers missed events\n",
                nsub - atomic_load(&SS.done));
    }
    for (int i = 0; i < nsub; i++) {
        if (subs[i].got != res->events && atomic_fetch_add(&errors, 1) < 5)
            fprintf(stderr, "annal_server_load: a subscriber got %ld of %ld events\n", subs[i].got,
                    res->events);
        for (long k = 0; k < SS.total; k++) {
            int64_t ack = atomic_load(&SS.ack_ns[k]), got = subs[i].recv_ns[k];
            if (!ack || !got) continue;
            res->early += got < ack;
            sample_add(&res->lat, got - ack);
        }
    }
    /* Threads still waiting are abandoned: the process ends here. */
}

static void usage(void) {
    fprintf(stderr, "usage: annal_server_load --target URL --workload "
                    "append|batch|fixture|read-stream|read-all|read-calls|subscribe|ping\n"
                    "  [--seconds S] [--clients C] [--batch B] [--window N] [--events N]\n"
                    "  [--subs N] [--rate R] [--stream NAME]\n");
    exit(2);
}

static void parse(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--target"))
            O.target = v;
        else if (!strcmp(a, "--workload"))
            O.workload = v;
        else if (!strcmp(a, "--stream"))
            O.stream = v;
        else if (!strcmp(a, "--seconds"))
            O.seconds = atof(v);
        else if (!strcmp(a, "--clients"))
            O.clients = atoi(v);
        else if (!strcmp(a, "--batch"))
            O.batch = atoi(v);
        else if (!strcmp(a, "--window"))
            O.window = atoi(v);
        else if (!strcmp(a, "--subs"))
            O.subs = atoi(v);
        else if (!strcmp(a, "--events"))
            O.events = atol(v);
        else if (!strcmp(a, "--rate"))
            O.rate = atof(v);
        else
            usage();
    }
    if (!O.target || !O.workload || O.clients < 1 || O.clients > MAX_CLIENTS || O.batch < 1 ||
        O.seconds <= 0 || O.rate <= 0 || O.events < 1)
        usage();
}

int main(int argc, char **argv) {
    parse(argc, argv);
    if (getrandom(&run_id, sizeof run_id, 0) != (ssize_t)sizeof run_id) run_id = (uint64_t)now_ns();
    result res;
    memset(&res, 0, sizeof res);
    const char *w = O.workload;
    if (!strcmp(w, "append"))
        run_workers(append_worker, &res);
    else if (!strcmp(w, "read-calls"))
        run_workers(read_calls_worker, &res);
    else if (!strcmp(w, "ping"))
        run_workers(ping_worker, &res);
    else if (!strcmp(w, "batch"))
        run_batch(&res, 0);
    else if (!strcmp(w, "fixture"))
        run_batch(&res, 1);
    else if (!strcmp(w, "read-stream"))
        run_read(&res, 0);
    else if (!strcmp(w, "read-all"))
        run_read(&res, 1);
    else if (!strcmp(w, "subscribe"))
        run_subscribe(&res);
    else
        usage();
    report(&res);
    fflush(stdout);
    _exit(atomic_load(&errors) ? 1 : 0); /* subscribers may still be blocked in calls */
}
