/*
 * bench_main.c -- one measurement of one system on one workload; prints one JSON line.
 *
 *   annal_bench --system S --workload W [--events N] [--streams 10000] [--threads T]
 *               --dir DIR [--pg CONNINFO] [--pg-schema NAME] [--label NAME]
 *               [--seed 42] [--run R] [--passes 5] [--keep] [--auto-id] [--no-sync]
 *
 * Workloads:
 *   append-bK   one writer, K events per append, N events in all, each append to a
 *               random stream of S (seeded), with the stream's exact expected revision.
 *   append-cT   T writer threads appending single events; stream i belongs to thread
 *               i % T (no conflicts by construction), N events in all.
 *   read-stream a fixture of N events, N/2 of them in "stream-hot" (interleaved at
 *               random with N/2 events over S other streams), read the hot stream fully.
 *   read-all    the same fixture, full forward scan of $all.
 * The fixture for reads is built once per DIR (non-durable bulk load, then reopened).
 * Latency: per append for append workloads; per full pass for reads (passes timed after
 * one warm-up pass; events_per_s uses the median pass).
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct plan_op {
    uint32_t stream;
    uint32_t first; /* index of the first event */
    uint32_t n;
    int64_t expected;
} plan_op;

typedef struct plan {
    bench_event *ev;
    char *payload;
    size_t nev;
    plan_op **ops; /* per thread */
    size_t *nops;
    unsigned threads;
} plan;

static char **stream_names;
static unsigned n_streams = 10000;

static void make_stream_names(void)
{
    stream_names = xmalloc(n_streams * sizeof *stream_names);
    for (unsigned i = 0; i < n_streams; i++) {
        char b[32];
        snprintf(b, sizeof b, "stream-%05u", i);
        stream_names[i] = xstrdup(b);
    }
}

static void gen_events(plan *p, bench_rng *r, size_t n)
{
    p->nev = n;
    p->ev = xcalloc(n, sizeof *p->ev);
    p->payload = xmalloc(n * 256);
    for (size_t i = 0; i < n; i++) {
        char *d = p->payload + i * 256;
        gen_uuid(r, p->ev[i].id);
        p->ev[i].type = gen_type(r);
        p->ev[i].data_len = gen_payload(r, d);
        p->ev[i].data = d;
    }
}

/* events in batches of `batch`, spread over `threads` writers. */
static void make_append_plan(plan *p, uint64_t seed, size_t events, unsigned batch,
                             unsigned threads)
{
    bench_rng r = {seed};
    size_t nops = events / batch;
    if (nops == 0)
        die("fewer events than one batch");
    p->threads = threads;
    p->ops = xcalloc(threads, sizeof *p->ops);
    p->nops = xcalloc(threads, sizeof *p->nops);
    int64_t *rev = xmalloc(n_streams * sizeof *rev);
    for (unsigned i = 0; i < n_streams; i++)
        rev[i] = -1;
    for (unsigned t = 0; t < threads; t++)
        p->ops[t] = xcalloc(nops / threads + 1, sizeof **p->ops);
    size_t ev = 0;
    for (size_t i = 0; i < nops; i++) {
        unsigned t = (unsigned)(i % threads);
        unsigned owned = (n_streams - t + threads - 1) / threads;
        unsigned s = t + threads * (unsigned)rng_below(&r, owned);
        plan_op *op = &p->ops[t][p->nops[t]++];
        op->stream = s;
        op->first = (uint32_t)ev;
        op->n = batch;
        op->expected = rev[s];
        rev[s] += batch;
        ev += batch;
    }
    free(rev);
    gen_events(p, &r, ev);
}

typedef struct worker {
    const bench_sys *sys;
    void *h;
    const plan *p;
    unsigned t;
    pthread_barrier_t *start;
    double *lat; /* ms per append */
    int failed;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    void *s = w->sys->session_open(w->h);
    if (!s)
        w->failed = 1;
    pthread_barrier_wait(w->start);
    if (!s)
        return NULL;
    const plan_op *ops = w->p->ops[w->t];
    for (size_t i = 0; i < w->p->nops[w->t]; i++) {
        const plan_op *op = &ops[i];
        double t0 = now_s();
        int rc = w->sys->append(s, stream_names[op->stream], op->expected, &w->p->ev[op->first],
                                op->n);
        w->lat[i] = (now_s() - t0) * 1e3;
        if (rc != BENCH_OK) {
            fprintf(stderr, "bench: append to %s (expected %lld) failed: %s\n",
                    stream_names[op->stream], (long long)op->expected,
                    rc == BENCH_CONFLICT ? "conflict" : "error");
            w->failed = 1;
            break;
        }
    }
    w->sys->session_close(w->h, s);
    return NULL;
}

typedef struct opts {
    const char *system, *label, *workload, *dir, *pg, *pg_schema;
    size_t events;
    unsigned threads;
    uint64_t seed;
    int run, passes, keep, auto_id, no_sync;
} opts;

static const bench_sys *find_sys(const char *name)
{
    static const bench_sys *const all[] = {
        &bench_sys_raw, &bench_sys_raw_prealloc, &bench_sys_sqlite, &bench_sys_postgres,
#ifdef BENCH_WITH_ANNAL
        &bench_sys_annal,
#endif
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    die("unknown system %s%s", name,
        strcmp(name, "annal") == 0 ? " (this binary was built without annal)" : "");
}

static void print_json(const opts *o, size_t events, size_t appends, unsigned batch,
                       unsigned threads, double secs, double eps, double p50, double p99,
                       double maxv, uint64_t disk, const char *extra)
{
    printf("{\"system\":\"%s\",\"workload\":\"%s\",\"run\":%d,\"events\":%zu,\"appends\":%zu,"
           "\"batch\":%u,\"threads\":%u,\"seconds\":%.6f,\"events_per_s\":%.1f,"
           "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,\"disk_bytes\":%llu%s}\n",
           o->label, o->workload, o->run, events, appends, batch, threads, secs, eps, p50, p99,
           maxv, (unsigned long long)disk, extra ? extra : "");
    fflush(stdout);
}

static int run_append(const opts *o, const bench_sys *sys, unsigned batch, unsigned threads)
{
    plan p = {0};
    make_append_plan(&p, o->seed, o->events, batch, threads);
    if (mkdir_p(o->dir) != 0)
        die("mkdir %s: %s", o->dir, strerror(errno));
    bench_open bo = {.dir = o->dir, .pg = o->pg, .pg_schema = o->pg_schema, .fresh = 1,
                     .auto_id = o->auto_id, .bulk = o->no_sync};
    void *h = sys->open(&bo);
    if (!h)
        die("%s: open failed", sys->name);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads + 1);
    worker *w = xcalloc(threads, sizeof *w);
    pthread_t *tid = xcalloc(threads, sizeof *tid);
    for (unsigned t = 0; t < threads; t++) {
        w[t] = (worker){.sys = sys, .h = h, .p = &p, .t = t, .start = &start,
                        .lat = xcalloc(p.nops[t] + 1, sizeof(double))};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1u << 20);
        if (pthread_create(&tid[t], &attr, worker_main, &w[t]) != 0)
            die("pthread_create failed");
        pthread_attr_destroy(&attr);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (unsigned t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    double secs = now_s() - t0;

    size_t nall = 0, k = 0;
    int failed = 0;
    for (unsigned t = 0; t < threads; t++) {
        nall += p.nops[t];
        failed |= w[t].failed;
    }
    if (failed)
        die("%s %s: appends failed", sys->name, o->workload);
    double *lat = xmalloc(nall * sizeof *lat);
    for (unsigned t = 0; t < threads; t++)
        for (size_t i = 0; i < p.nops[t]; i++)
            lat[k++] = w[t].lat[i];
    double p50 = percentile(lat, nall, 50), p99 = percentile(lat, nall, 99);
    double maxv = lat[nall - 1];
    sys->close(h);
    uint64_t disk = du_bytes(o->dir);
    print_json(o, p.nev, nall, batch, threads, secs, (double)p.nev / secs, p50, p99, maxv, disk,
               NULL);
    if (!o->keep)
        rm_rf(o->dir);
    return 0;
}

static void load_fixture(const opts *o, const bench_sys *sys)
{
    bench_open bo = {.dir = o->dir, .pg = o->pg, .pg_schema = o->pg_schema, .fresh = 1,
                     .bulk = 1};
    void *h = sys->open(&bo);
    if (!h)
        die("%s: open for load failed", sys->name);
    void *s = sys->session_open(h);
    bench_rng r = {o->seed ^ 0x5eedf1c5u};
    size_t n = o->events, hot = n / 2;
    unsigned char *is_hot = xcalloc(n, 1);
    memset(is_hot, 1, hot);
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)rng_below(&r, i + 1);
        unsigned char t = is_hot[i];
        is_hot[i] = is_hot[j];
        is_hot[j] = t;
    }
    int64_t *rev = xmalloc(n_streams * sizeof *rev);
    for (unsigned i = 0; i < n_streams; i++)
        rev[i] = -1;
    int64_t hot_rev = -1;
    char payload[256];
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        bench_event ev;
        gen_uuid(&r, ev.id);
        ev.type = gen_type(&r);
        ev.data_len = gen_payload(&r, payload);
        ev.data = payload;
        int rc;
        if (is_hot[i]) {
            rc = sys->append(s, "stream-hot", hot_rev, &ev, 1);
            hot_rev++;
        } else {
            unsigned st = (unsigned)rng_below(&r, n_streams);
            rc = sys->append(s, stream_names[st], rev[st], &ev, 1);
            rev[st]++;
        }
        if (rc != BENCH_OK)
            die("%s: fixture load failed at event %zu", sys->name, i);
    }
    sys->session_close(h, s);
    sys->mark_complete(h);
    sys->close(h);
    fprintf(stderr, "bench: %s read fixture of %zu events loaded in %.1f s\n", sys->name, n,
            now_s() - t0);
    free(rev);
    free(is_hot);
}

static int run_read(const opts *o, const bench_sys *sys, int stream)
{
    if (mkdir_p(o->dir) != 0)
        die("mkdir %s: %s", o->dir, strerror(errno));
    bench_open bo = {.dir = o->dir, .pg = o->pg, .pg_schema = o->pg_schema};
    void *h = sys->open(&bo);
    if (!h)
        die("%s: open failed", sys->name);
    if (!sys->is_complete(h)) {
        sys->close(h);
        load_fixture(o, sys);
        h = sys->open(&bo);
        if (!h || !sys->is_complete(h))
            die("%s: fixture missing after load", sys->name);
    }
    void *s = sys->session_open(h);
    if (!s)
        die("%s: session failed", sys->name);
    size_t want = stream ? o->events / 2 : o->events;
    int passes = o->passes;
    double *t = xcalloc((size_t)passes, sizeof *t);
    for (int i = -1; i < passes; i++) { /* pass -1: warm-up */
        bench_sink sink;
        sink_init(&sink, stream);
        double t0 = now_s();
        int rc = stream ? sys->read_stream(s, "stream-hot", &sink) : sys->read_all(s, &sink);
        double dt = now_s() - t0;
        if (rc != 0)
            die("%s %s: read failed", sys->name, o->workload);
        if (sink.count != want || sink.errors)
            die("%s %s: read %llu events (want %zu), %d ordering errors", sys->name, o->workload,
                (unsigned long long)sink.count, want, sink.errors);
        if (i >= 0)
            t[i] = dt * 1e3;
    }
    sys->session_close(h, s);
    sys->close(h);
    double p50 = percentile(t, (size_t)passes, 50), p99 = percentile(t, (size_t)passes, 99);
    char extra[64];
    snprintf(extra, sizeof extra, ",\"passes\":%d", passes);
    print_json(o, want, (size_t)passes, 0, 1, p50 / 1e3, (double)want / (p50 / 1e3), p50, p99,
               t[passes - 1], du_bytes(o->dir), extra);
    return 0;
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr,
            "usage: annal_bench --system S --workload W --dir DIR [--events N] [--streams N]\n"
            "       [--threads T] [--pg CONNINFO] [--pg-schema NAME] [--label NAME] [--seed N]\n"
            "       [--run R] [--passes P] [--keep] [--auto-id] [--no-sync]\n"
            "--auto-id: annal only, appends all-zero ids so annal generates UUIDv7s\n"
            "--no-sync: appends are not durable (each system's bulk-load mode): what the\n"
            "           rest of the work costs without the disk, never a headline figure\n"
            "systems: raw raw-prealloc sqlite postgres"
#ifdef BENCH_WITH_ANNAL
            " annal"
#endif
            "\nworkloads: append-bK append-cT read-stream read-all\n");
    exit(2);
}

int main(int argc, char **argv)
{
    opts o = {.seed = 42, .run = 1, .passes = 5};
    long streams = 10000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--system"))
            o.system = v;
        else if (ARG("--label"))
            o.label = v;
        else if (ARG("--workload"))
            o.workload = v;
        else if (ARG("--dir"))
            o.dir = v;
        else if (ARG("--pg"))
            o.pg = v;
        else if (ARG("--pg-schema"))
            o.pg_schema = v;
        else if (ARG("--events"))
            o.events = strtoull(v, NULL, 10);
        else if (ARG("--streams"))
            streams = strtol(v, NULL, 10);
        else if (ARG("--threads"))
            o.threads = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--seed"))
            o.seed = strtoull(v, NULL, 10);
        else if (ARG("--run"))
            o.run = atoi(v);
        else if (ARG("--passes"))
            o.passes = atoi(v);
        else if (strcmp(a, "--keep") == 0)
            o.keep = 1;
        else if (strcmp(a, "--auto-id") == 0)
            o.auto_id = 1;
        else if (strcmp(a, "--no-sync") == 0)
            o.no_sync = 1;
        else
            usage();
#undef ARG
    }
    if (!o.system || !o.workload || !o.dir || streams < 1 || o.passes < 1)
        usage();
    n_streams = (unsigned)streams;
    if (!o.label)
        o.label = o.system;
    const bench_sys *sys = find_sys(o.system);
    make_stream_names();

    unsigned k;
    if (sscanf(o.workload, "append-b%u", &k) == 1 && k > 0) {
        if (!o.events)
            o.events = 200000;
        if (!o.pg_schema)
            o.pg_schema = "bench_w";
        return run_append(&o, sys, k, 1);
    }
    if (sscanf(o.workload, "append-c%u", &k) == 1 && k > 0) {
        if (!o.events)
            o.events = 20000;
        if (!o.pg_schema)
            o.pg_schema = "bench_w";
        return run_append(&o, sys, 1, o.threads ? o.threads : k);
    }
    int rs = strcmp(o.workload, "read-stream") == 0;
    if (rs || strcmp(o.workload, "read-all") == 0) {
        if (!o.events)
            o.events = 200000;
        if (!o.pg_schema)
            o.pg_schema = "bench_r";
        return run_read(&o, sys, rs);
    }
    usage();
}
