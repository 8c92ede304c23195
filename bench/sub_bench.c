/*
 * sub_bench.c -- subscription delivery latency and fan-out cost. Prints one JSON line.
 *
 *   annal_sub_bench --dir DIR [--subs N] [--events N] [--nosync] [--run R]
 *
 * One appender thread appends --events single events (~200 bytes) to 100 streams, as
 * fast as the store allows (durable unless --nosync), while N live subscribers (threads,
 * each its own $all subscription opened at the end of the empty store, on the writer
 * handle, waiting with timeout -1) receive every event. N = 0 measures the appender
 * alone, the baseline for the fan-out cost.
 *
 * Latency of one delivery = the CLOCK_MONOTONIC time at which annal_sub_next returned the
 * event in the subscriber's thread minus the time at which annal_append of that event
 * returned in the appender's thread. The group-commit leader publishes the new head
 * before annal_append returns, so a subscriber can receive an event before its append
 * returns: such deliveries count as 0 and their share is reported as "early". Every
 * (event, subscriber) pair is one sample; p50/p99/max are nearest-rank over all of them.
 * The run ends when every subscriber has received every event.
 */
#include <annal.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, annal_db *db, annal_err rc) {
    fprintf(stderr, "annal_sub_bench: %s: %s (%s)\n", what, annal_errname(rc),
            db ? annal_db_errmsg(db) : "");
    exit(1);
}

typedef struct sub_thread {
    annal_sub *s;
    uint64_t events;
    int64_t *recv_ns; /* [events]: when each position was received */
    annal_err rc;
} sub_thread;

static void *subscriber(void *arg) {
    sub_thread *t = arg;
    uint64_t got = 0;
    while (got < t->events) {
        annal_sub_item it;
        annal_err rc = annal_sub_next(t->s, -1, &it);
        if (rc != ANNAL_OK) {
            t->rc = rc;
            return NULL;
        }
        if (it.kind != ANNAL_SUB_EVENT) continue;
        int64_t now = mono_ns();
        if (it.position != got) {
            t->rc = ANNAL_ECORRUPT; /* a gap or a duplicate */
            return NULL;
        }
        t->recv_ns[got++] = now;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    unsigned subs = 1;
    uint64_t events = 2000;
    int nosync = 0, run = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--subs") && i + 1 < argc)
            subs = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--events") && i + 1 < argc)
            events = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--run") && i + 1 < argc)
            run = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--nosync"))
            nosync = 1;
        else {
            fprintf(stderr, "usage: annal_sub_bench --dir DIR [--subs N] [--events N] "
                            "[--nosync] [--run R]\n");
            return 2;
        }
    }
    if (!dir || events == 0) {
        fprintf(stderr, "annal_sub_bench: --dir and --events > 0 are required\n");
        return 2;
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | (nosync ? ANNAL_OPEN_NOSYNC : 0);
    annal_db *db;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) die("open", NULL, rc);

    sub_thread *st = calloc(subs ? subs : 1, sizeof *st);
    pthread_t *th = calloc(subs ? subs : 1, sizeof *th);
    int64_t *ret_ns = calloc(events, sizeof *ret_ns); /* when append of a position returned */
    if (!st || !th || !ret_ns) die("memory", NULL, ANNAL_ENOMEM);
    for (unsigned i = 0; i < subs; i++) {
        annal_sub_opts so;
        annal_sub_opts_init(&so);
        so.start = ANNAL_SUB_END;
        st[i].events = events;
        st[i].recv_ns = calloc(events, sizeof(int64_t));
        if (!st[i].recv_ns) die("memory", NULL, ANNAL_ENOMEM);
        if ((rc = annal_sub_open(db, &so, &st[i].s)) != ANNAL_OK) die("sub_open", db, rc);
        pthread_create(&th[i], NULL, subscriber, &st[i]);
    }

    char data[256];
    uint64_t rs = 42;
    int64_t t0 = mono_ns();
    for (uint64_t i = 0; i < events; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        int n = snprintf(data, sizeof data,
                         "{\"order\":\"o-%llu\",\"amount\":%llu,\"currency\":\"EUR\","
                         "\"note\":\"%0120llu\"}",
                         (unsigned long long)i, (unsigned long long)(rs >> 40),
                         (unsigned long long)(rs >> 3));
        char stream[32];
        snprintf(stream, sizeof stream, "order-%llu", (unsigned long long)((rs >> 20) % 100));
        annal_event_data ev = {.type = "OrderPlaced", .data = data, .data_len = (size_t)n};
        annal_append_result res;
        rc = annal_append(db, stream, ANNAL_EXPECT_ANY, &ev, 1, &res);
        int64_t now = mono_ns();
        if (rc != ANNAL_OK) die("append", db, rc);
        if (res.first_position < events) ret_ns[res.first_position] = now;
    }
    int64_t t1 = mono_ns();
    for (unsigned i = 0; i < subs; i++) pthread_join(th[i], NULL);
    int64_t t2 = mono_ns();

    size_t ns = (size_t)subs * events, k = 0;
    uint64_t early = 0;
    int64_t *lat = malloc((ns ? ns : 1) * sizeof *lat);
    if (!lat) die("memory", NULL, ANNAL_ENOMEM);
    for (unsigned i = 0; i < subs; i++) {
        if (st[i].rc != ANNAL_OK) die("subscriber", db, st[i].rc);
        for (uint64_t p = 0; p < events; p++) {
            int64_t d = st[i].recv_ns[p] - ret_ns[p];
            if (d < 0) early++, d = 0;
            lat[k++] = d;
        }
        annal_sub_close(st[i].s);
        free(st[i].recv_ns);
    }
    qsort(lat, k, sizeof *lat, cmp_i64);
    double secs = (double)(t1 - t0) / 1e9;
    double p50 = k ? (double)lat[(k - 1) / 2] / 1e6 : 0;
    double p99 = k ? (double)lat[(k * 99 + 99) / 100 - 1] / 1e6 : 0;
    double mx = k ? (double)lat[k - 1] / 1e6 : 0;
    printf("{\"system\":\"annal\",\"workload\":\"%s\",\"run\":%d,\"subs\":%u,\"events\":%llu,"
           "\"seconds\":%.6f,\"appends_per_s\":%.1f,\"drain_ms\":%.3f,\"samples\":%zu,"
           "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,\"early\":%.4f,"
           "\"latency\":\"annal_sub_next return minus annal_append return\"}\n",
           nosync ? "sub-fanout-nosync" : "sub-fanout", run, subs, (unsigned long long)events, secs,
           (double)events / secs, (double)(t2 - t1) / 1e6, k, p50, p99, mx,
           k ? (double)early / (double)k : 0.0);
    free(lat);
    free(ret_ns);
    free(st);
    free(th);
    annal_db_close(db);
    return 0;
}
