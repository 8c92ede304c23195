/*
 * multi_bench.c -- atomic appends across streams beside single-stream appends of the
 * same size, in one run. Prints one JSON line per workload.
 *
 *   annal_multi_bench --dir DIR [--appends N] [--nosync]
 *
 * single: N appends of 100 events (~200 bytes each) to one of 100 streams, expected
 * revision any. multi: N calls of annal_append_multi with 10 parts x 10 events, each
 * part a different stream (of the same 100), each with its exact expected revision.
 * One thread each, durable unless --nosync; the two alternate in blocks of 10 appends so
 * that both see the same disk. The target: multi >= 80% of single events/s.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <annal.h>
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
    fprintf(stderr, "annal_multi_bench: %s: %s (%s)\n", what, annal_errname(rc),
            db ? annal_db_errmsg(db) : "");
    exit(1);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    long appends = 2000;
    unsigned flags = ANNAL_OPEN_CREATE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--appends") == 0 && i + 1 < argc)
            appends = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--nosync") == 0)
            flags |= ANNAL_OPEN_NOSYNC;
        else {
            fprintf(stderr, "usage: annal_multi_bench --dir DIR [--appends N] [--nosync]\n");
            return 2;
        }
    }
    if (!dir || appends <= 0) return 2;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = flags;
    annal_db *db;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) die("open", NULL, rc);
    static char payload[200];
    memset(payload, 'x', sizeof payload);
    payload[0] = '"';
    payload[sizeof payload - 1] = '"';
    annal_event_data ev[100];
    int64_t rev[100];
    char names[100][16];
    for (int s = 0; s < 100; s++) {
        rev[s] = -1;
        snprintf(names[s], sizeof names[s], "multi-%d", s);
    }
    int64_t t_single = 0, t_multi = 0;
    long done_single = 0, done_multi = 0;
    uint64_t rng = 42;
    while (done_single < appends || done_multi < appends) {
        for (int kind = 0; kind < 2; kind++) {
            for (int b = 0; b < 10; b++) {
                if ((kind ? done_multi : done_single) >= appends) break;
                memset(ev, 0, sizeof ev);
                for (int i = 0; i < 100; i++) {
                    ev[i].type = "Bench";
                    ev[i].data = payload;
                    ev[i].data_len = sizeof payload;
                }
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                int s0 = (int)(rng >> 33) % 100;
                int64_t t0 = mono_ns();
                if (!kind) {
                    annal_append_result r;
                    rc = annal_append(db, names[s0], ANNAL_EXPECT_ANY, ev, 100, &r);
                    if (rc != ANNAL_OK) die("append", db, rc);
                    rev[s0] = r.revision;
                    t_single += mono_ns() - t0;
                    done_single++;
                } else {
                    annal_stream_append parts[10];
                    annal_append_result pr[10];
                    for (int p = 0; p < 10; p++) {
                        int s = (s0 + p * 10) % 100;
                        parts[p] = (annal_stream_append){
                            names[s], rev[s] < 0 ? ANNAL_EXPECT_NO_STREAM : rev[s], &ev[p * 10],
                            10};
                    }
                    annal_multi_result res;
                    memset(&res, 0, sizeof res);
                    res.parts = pr;
                    rc = annal_append_multi(db, parts, 10, NULL, 0, &res);
                    if (rc != ANNAL_OK) die("append_multi", db, rc);
                    for (int p = 0; p < 10; p++) rev[(s0 + p * 10) % 100] = pr[p].revision;
                    t_multi += mono_ns() - t0;
                    done_multi++;
                }
            }
        }
    }
    double es = (double)done_single * 100 / ((double)t_single / 1e9);
    double em = (double)done_multi * 100 / ((double)t_multi / 1e9);
    printf("{\"workload\":\"append-b100\",\"appends\":%ld,\"events_per_s\":%.0f}\n", done_single,
           es);
    printf("{\"workload\":\"append-multi-10x10\",\"appends\":%ld,\"events_per_s\":%.0f,"
           "\"ratio\":%.3f}\n",
           done_multi, em, em / es);
    annal_db_close(db);
    return 0;
}
