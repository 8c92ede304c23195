/*
 * bench_extras.c -- annal-only figures on a large store. Prints one JSON line per figure.
 *
 *   annal_extras --dir DIR [--events 10000000] [--batch 100] [--streams 10000]
 *                [--repeat 3] [--seed 42] [--cold] [--keep]
 *
 * 1. Creates a store of N events with ANNAL_OPEN_NOSYNC (batches of --batch events to
 *    random streams, exact expected revisions), sampling VmRSS/VmHWM/RssAnon/RssFile from
 *    /proc/self/status every 1M events ("extras-rss"); the load rate ("extras-load").
 * 2. Disk bytes per event: du of the store directory / N ("extras-disk").
 * 3. Open time: annal_db_open (default flags: a writer, so it runs recovery) + close of
 *    the closed store, --repeat times ("extras-open"); --cold drops the page cache
 *    before each (root only; affects the whole machine).
 * 4. annal_rebuild_index on the store, --repeat times ("extras-rebuild", events/s), then a
 *    reopen that checks the event count.
 */
#include "bench.h"

#include <annal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void status_kb(long *rss, long *hwm, long *anon, long *file)
{
    *rss = *hwm = *anon = *file = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld", rss);
        sscanf(line, "VmHWM: %ld", hwm);
        sscanf(line, "RssAnon: %ld", anon);
        sscanf(line, "RssFile: %ld", file);
    }
    fclose(f);
}

static void drop_caches(void)
{
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (!f)
        die("--cold needs root (cannot write /proc/sys/vm/drop_caches)");
    fputs("3\n", f);
    fclose(f);
}

static void logger(void *ctx, annal_log_level level, const char *msg)
{
    (void)ctx;
    if (level <= ANNAL_LOG_WARN)
        fprintf(stderr, "annal: %s\n", msg);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t events = 10000000, seed = 42;
    unsigned batch = 100, streams = 10000;
    int repeat = 3, cold = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--dir") == 0 && v)
            dir = argv[++i];
        else if (strcmp(a, "--events") == 0 && v)
            events = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--batch") == 0 && v)
            batch = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--streams") == 0 && v)
            streams = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--repeat") == 0 && v)
            repeat = atoi(argv[++i]);
        else if (strcmp(a, "--seed") == 0 && v)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--cold") == 0)
            cold = 1;
        else if (strcmp(a, "--keep") == 0)
            keep = 1;
        else
            die("usage: annal_extras --dir DIR [--events N] [--batch N] [--streams N] "
                "[--repeat N] [--seed N] [--cold] [--keep]");
    }
    if (!dir || batch == 0 || streams == 0 || repeat < 1 || events < batch)
        die("usage: annal_extras --dir DIR [--events N] ...");
    rm_rf(dir);
    if (mkdir_p(dir) != 0)
        die("mkdir %s failed", dir);
    char store[4096];
    snprintf(store, sizeof store, "%s/store", dir);

    char **names = xmalloc(streams * sizeof *names);
    int64_t *rev = xmalloc(streams * sizeof *rev);
    for (unsigned i = 0; i < streams; i++) {
        char b[32];
        snprintf(b, sizeof b, "stream-%05u", i);
        names[i] = xstrdup(b);
        rev[i] = -1;
    }
    annal_event_data *ed = xcalloc(batch, sizeof *ed);
    char *payload = xmalloc((size_t)batch * 256);

    /* 1. load */
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    opts.log = logger;
    annal_db *db = NULL;
    annal_err e = annal_db_open(store, &opts, &db);
    if (e != ANNAL_OK)
        die("open %s: %s", store, annal_errname(e));
    bench_rng r = {seed};
    long rss, hwm, anon, file;
    status_kb(&rss, &hwm, &anon, &file);
    printf("{\"system\":\"annal\",\"workload\":\"extras-rss\",\"run\":1,\"events\":0,"
           "\"vmrss_kb\":%ld,\"vmhwm_kb\":%ld,\"rssanon_kb\":%ld,\"rssfile_kb\":%ld}\n",
           rss, hwm, anon, file);
    fflush(stdout);
    double t0 = now_s();
    uint64_t done = 0, next_sample = 1000000;
    while (done + batch <= events) {
        unsigned s = (unsigned)rng_below(&r, streams);
        for (unsigned i = 0; i < batch; i++) {
            gen_uuid(&r, ed[i].id.bytes);
            ed[i].type = gen_type(&r);
            ed[i].data = payload + (size_t)i * 256;
            ed[i].data_len = gen_payload(&r, payload + (size_t)i * 256);
            ed[i].metadata = NULL;
            ed[i].metadata_len = 0;
        }
        annal_append_result res;
        e = annal_append(db, names[s], rev[s] < 0 ? ANNAL_EXPECT_NO_STREAM : rev[s], ed, batch,
                         &res);
        if (e != ANNAL_OK)
            die("append: %s (%s)", annal_errname(e), annal_db_errmsg(db));
        rev[s] += batch;
        done += batch;
        if (done >= next_sample) {
            status_kb(&rss, &hwm, &anon, &file);
            printf("{\"system\":\"annal\",\"workload\":\"extras-rss\",\"run\":1,\"events\":%llu,"
                   "\"vmrss_kb\":%ld,\"vmhwm_kb\":%ld,\"rssanon_kb\":%ld,\"rssfile_kb\":%ld}\n",
                   (unsigned long long)done, rss, hwm, anon, file);
            fflush(stdout);
            next_sample += 1000000;
        }
    }
    double load_s = now_s() - t0;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    annal_db_info_get(db, &info);
    t0 = now_s();
    annal_db_close(db);
    double close_s = now_s() - t0;
    printf("{\"system\":\"annal\",\"workload\":\"extras-load\",\"run\":1,\"events\":%llu,"
           "\"batch\":%u,\"seconds\":%.3f,\"events_per_s\":%.1f,\"close_s\":%.3f,"
           "\"log_bytes\":%llu,\"index_bytes\":%llu,\"info_disk_bytes\":%llu,\"segments\":%llu}\n",
           (unsigned long long)done, batch, load_s, (double)done / load_s, close_s,
           (unsigned long long)info.log_bytes, (unsigned long long)info.index_bytes,
           (unsigned long long)info.disk_bytes, (unsigned long long)info.segments);
    fflush(stdout);
    if (info.events != done)
        die("store says %llu events, appended %llu", (unsigned long long)info.events,
            (unsigned long long)done);

    /* 2. disk */
    uint64_t du = du_bytes(store);
    printf("{\"system\":\"annal\",\"workload\":\"extras-disk\",\"run\":1,\"events\":%llu,"
           "\"disk_bytes\":%llu,\"bytes_per_event\":%.1f}\n",
           (unsigned long long)done, (unsigned long long)du, (double)du / (double)done);
    fflush(stdout);

    /* 3. open */
    annal_db_opts_init(&opts);
    opts.log = logger;
    for (int i = 0; i < repeat; i++) {
        if (cold)
            drop_caches();
        t0 = now_s();
        e = annal_db_open(store, &opts, &db);
        double t_open = now_s() - t0;
        if (e != ANNAL_OK)
            die("reopen: %s", annal_errname(e));
        annal_db_close(db);
        double t = now_s() - t0;
        printf("{\"system\":\"annal\",\"workload\":\"extras-open\",\"run\":%d,\"events\":%llu,"
               "\"seconds\":%.6f,\"open_s\":%.6f,\"cold\":%d,\"events_per_s\":0,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f}\n",
               i + 1, (unsigned long long)done, t, t_open, cold, t * 1e3, t * 1e3);
        fflush(stdout);
    }

    /* 4. rebuild */
    for (int i = 0; i < repeat; i++) {
        if (cold)
            drop_caches();
        t0 = now_s();
        e = annal_rebuild_index(store, &opts);
        double t = now_s() - t0;
        if (e != ANNAL_OK)
            die("rebuild: %s", annal_errname(e));
        printf("{\"system\":\"annal\",\"workload\":\"extras-rebuild\",\"run\":%d,\"events\":%llu,"
               "\"seconds\":%.3f,\"events_per_s\":%.1f,\"cold\":%d}\n",
               i + 1, (unsigned long long)done, t, (double)done / t, cold);
        fflush(stdout);
    }
    e = annal_db_open(store, &opts, &db);
    if (e != ANNAL_OK)
        die("open after rebuild: %s", annal_errname(e));
    memset(&info, 0, sizeof info);
    annal_db_info_get(db, &info);
    annal_db_close(db);
    if (info.events != done)
        fprintf(stderr, "extras: after rebuild the store has %llu events / %llu streams "
                        "(want %llu / %u)\n",
                (unsigned long long)info.events, (unsigned long long)info.streams,
                (unsigned long long)done, streams);
    if (!keep)
        rm_rf(dir);
    return 0;
}
