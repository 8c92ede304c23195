/* bench_command.c -- command handling throughput (load + decide + append) on streams of
 * 10, 1,000 and 100,000 events, with and without snapshots, through the public API only.
 * With snapshots the cost per command should not grow with the stream.
 *
 * usage: bench_command DIR [--sync] [--commands N] [--seconds S]
 * DIR must not hold a store yet (it is created). Appends are not flushed unless --sync:
 * the point is the load cost; --sync adds one fdatasync per command. Each cell runs N
 * commands (default 300) or S seconds (default 3), whichever ends first, after one
 * warm-up command (which, with snapshots, writes the first one). Every command appends,
 * so a stream grows by one event per command: the table shows both ends. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "annal.h"

/* A counter: "Added" events hold a decimal amount; the command adds 1. */
typedef struct counter {
    long long value, events;
} counter;

static annal_err evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    counter *c = state;
    char buf[24];
    if (ev->data_len >= sizeof buf) return ANNAL_ECORRUPT;
    memcpy(buf, ev->data, ev->data_len);
    buf[ev->data_len] = '\0';
    c->value += strtoll(buf, NULL, 10);
    c->events++;
    return ANNAL_OK;
}

static annal_err decide(void *ctx, const void *state, const void *command, annal_decision *out) {
    (void)ctx;
    (void)state;
    (void)command;
    return annal_decision_emit(out, "Added", "1", 1, NULL, 0);
}

static annal_err encode(void *ctx, const void *state, annal_buf *out) {
    (void)ctx;
    return annal_buf_append(out, state, sizeof(counter));
}

static annal_err decode(void *ctx, void *state, const void *data, size_t len) {
    (void)ctx;
    if (len != sizeof(counter)) return ANNAL_ECORRUPT;
    memcpy(state, data, len);
    return ANNAL_OK;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int prefill(annal_db *db, const char *stream, uint64_t n) {
    enum { BATCH = 10000 };
    annal_event_data *ev = calloc(BATCH, sizeof *ev);
    if (!ev) return -1;
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done < BATCH ? (size_t)(n - done) : BATCH;
        for (size_t i = 0; i < k; i++) {
            memset(&ev[i].id, 0, sizeof ev[i].id);
            ev[i].type = "Added";
            ev[i].data = "1";
            ev[i].data_len = 1;
        }
        annal_err rc = annal_append(db, stream, ANNAL_EXPECT_ANY, ev, k, NULL);
        if (rc != ANNAL_OK) {
            fprintf(stderr, "bench_command: prefill: %s\n", annal_db_errmsg(db));
            free(ev);
            return -1;
        }
        done += k;
    }
    free(ev);
    return 0;
}

int main(int argc, char **argv) {
    int sync = 0, bad = argc < 2;
    long commands = 300;
    double seconds = 3;
    for (int i = 2; i < argc && !bad; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--sync") == 0)
            sync = 1;
        else if (strcmp(argv[i], "--commands") == 0 && i + 1 < argc)
            commands = strtol(argv[++i], &end, 10);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = strtod(argv[++i], &end);
        else
            bad = 1;
        if (end && (*end || commands < 1 || seconds <= 0)) bad = 1;
    }
    if (bad) {
        fprintf(stderr, "usage: bench_command DIR [--sync] [--commands N] [--seconds S]\n");
        return 1;
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | (sync ? 0 : ANNAL_OPEN_NOSYNC);
    annal_db *db;
    annal_err rc = annal_db_open(argv[1], &o, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "bench_command: cannot open %s: %s\n", argv[1], annal_errname(rc));
        return 2;
    }
    size_t sl = strlen(argv[1]) + 16;
    char *snapdir = malloc(sl);
    double *lat = malloc((size_t)commands * sizeof *lat);
    if (!snapdir || !lat) return 2;
    snprintf(snapdir, sl, "%s/snapshots", argv[1]);
    annal_decider d = {.version = ANNAL_DECIDER_VERSION,
                       .name = "counter",
                       .state_size = sizeof(counter),
                       .evolve = evolve,
                       .decide = decide,
                       .state_version = 1,
                       .snapshot_encode = encode,
                       .snapshot_decode = decode};

    printf("command handling: load + decide + append one event (appends %s)\n",
           sync ? "durable: one fdatasync each" : "not flushed: ANNAL_OPEN_NOSYNC");
    printf("%18s  %-10s %8s %12s %9s %9s %11s %8s\n", "events (start-end)", "snapshots", "commands",
           "us/cmd mean", "p50", "p99", "folded/cmd", "cmd/s");
    static const uint64_t sizes[] = {10, 1000, 100000};
    int status = 0;
    for (size_t si = 0; si < 3 && !status; si++) {
        for (int snap = 0; snap < 2 && !status; snap++) {
            char stream[48];
            snprintf(stream, sizeof stream, "bench-%" PRIu64 "-%s", sizes[si],
                     snap ? "snap" : "plain");
            if (prefill(db, stream, sizes[si]) != 0) {
                status = 2;
                break;
            }
            annal_handler_opts ho;
            annal_handler_opts_init(&ho);
            ho.snapshot_dir = snap ? snapdir : NULL;
            ho.snapshot_every = 100;
            annal_handler *h;
            rc = annal_handler_open(db, &d, &ho, &h);
            annal_command_result r;
            if (rc == ANNAL_OK) rc = annal_handle(h, stream, NULL, NULL, &r); /* warm-up */
            long n = 0;
            uint64_t folded = 0;
            double t0 = now_us();
            while (rc == ANNAL_OK && n < commands && now_us() - t0 < seconds * 1e6) {
                double a = now_us();
                rc = annal_handle(h, stream, NULL, NULL, &r);
                lat[n++] = now_us() - a;
                folded += r.folded;
            }
            double total = now_us() - t0;
            annal_handler_close(h);
            if (rc != ANNAL_OK) {
                fprintf(stderr, "bench_command: %s: %s\n", annal_errname(rc), r.message);
                status = 2;
                break;
            }
            double sum = 0;
            for (long i = 0; i < n; i++) sum += lat[i];
            qsort(lat, (size_t)n, sizeof *lat, cmp_double);
            char range[40];
            snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, sizes[si],
                     sizes[si] + 1 + (uint64_t)n);
            printf("%18s  %-10s %8ld %12.1f %9.1f %9.1f %11.1f %8.0f\n", range,
                   snap ? "every 100" : "none", n, sum / (double)n, lat[n / 2],
                   lat[(size_t)((double)n * 0.99)], (double)folded / (double)n,
                   (double)n / (total / 1e6));
            fflush(stdout);
        }
    }
    free(lat);
    free(snapdir);
    annal_db_close(db);
    return status;
}
