/*
 * dcb_bench.c -- Dynamic Consistency Boundaries (issue 24). Prints one JSON line per
 * measurement.
 *
 *   annal_dcb_bench append --dir DIR [--writers 1,64] [--rounds 5] [--appends N]
 *       Single-event appends, durable, from W writers at once, in three modes run side by
 *       side (the modes alternate within each round, in a rotating order):
 *         plain   annal_append of one untagged event to the writer's stream;
 *         tagged  annal_append_if of one event with two tags, no condition;
 *         cond    the same with a condition of two items (the writer's course tag, and
 *                 one of its student tags) after the writer's last position: the DCB
 *                 append of a decision, which always holds here (each writer has its own
 *                 tags). N appends per writer per mode and round (default 2000 / W,
 *                 at least 50). Medians over the rounds; the target: cond >= 80%
 *                 of plain events/s.
 *
 *   annal_dcb_bench query --dir DIR [--events 10000000] [--batch 1000]
 *       Builds the store if it is empty (NOSYNC, $dcb, batches of B events with three tags
 *       each: region:r<0..9>, kind:k<0..1>, student:s<i mod events/12>), reopens it, and
 *       reads: the two-tag query {region:r3 AND kind:k1} forward (~1/20 of the store: time
 *       to the first event, events/s), and the dozen events of one student (latency, over
 *       1000 random students).
 *
 *   annal_dcb_bench index --dir DIR [--events 1000000] [--batch 1]
 *       Appends the same events (NOSYNC, batches of B) to DIR/tags with their three tags
 *       and to DIR/notags without them, and compares the index pages each uses (LMDB's
 *       last page): bytes per tag occurrence.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <annal.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, annal_db *db, annal_err rc) {
    fprintf(stderr, "annal_dcb_bench: %s: %s (%s)\n", what, annal_errname(rc),
            db ? annal_db_errmsg(db) : "");
    exit(1);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static annal_db *open_store(const char *dir, unsigned flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | flags;
    annal_db *db;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) die("open", NULL, rc);
    return db;
}

/* ---- append ------------------------------------------------------------------------ */

enum { M_PLAIN, M_TAGGED, M_COND, NMODES };
static const char *const MODE[NMODES] = {"plain", "tagged", "cond"};

typedef struct writer {
    annal_db *db;
    int id, mode;
    long n;
    uint64_t last; /* position of its last tagged event (ANNAL_AFTER_NONE: none) */
    pthread_barrier_t *start;
} writer;

static void *write_some(void *p) {
    writer *w = p;
    char stream[32], course[32], student[40];
    snprintf(stream, sizeof stream, "plain-%d", w->id);
    snprintf(course, sizeof course, "course:w%d", w->id);
    static const char data[] = "{\"student\":\"s\",\"course\":\"c\"}";
    pthread_barrier_wait(w->start);
    for (long i = 0; i < w->n; i++) {
        annal_event_data e;
        memset(&e, 0, sizeof e);
        e.type = "StudentSubscribedToCourse";
        e.data = data;
        e.data_len = sizeof data - 1;
        annal_err rc;
        if (w->mode == M_PLAIN) {
            rc = annal_append(w->db, stream, ANNAL_EXPECT_ANY, &e, 1, NULL);
        } else {
            snprintf(student, sizeof student, "student:w%d-%ld", w->id, i % 100);
            const char *tags[2] = {course, student};
            annal_tag_list tl = {tags, 2};
            const char *ct[1] = {course}, *st[1] = {student};
            annal_query_item items[2] = {{NULL, 0, ct, 1}, {NULL, 0, st, 1}};
            annal_query q = {items, 2};
            annal_condition c = {&q, w->last};
            annal_append_result r;
            rc = annal_append_if(w->db, &e, &tl, 1, w->mode == M_COND ? &c : NULL, &r, NULL);
            if (rc == ANNAL_OK) w->last = r.first_position;
        }
        if (rc != ANNAL_OK) die("append", w->db, rc);
    }
    return NULL;
}

/* One mode, all writers at once: events/s. */
static double run_mode(annal_db *db, writer *w, int nw, int mode, long n) {
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, (unsigned)nw + 1);
    pthread_t th[256];
    for (int i = 0; i < nw; i++) {
        w[i].db = db, w[i].mode = mode, w[i].n = n, w[i].start = &b;
        pthread_create(&th[i], NULL, write_some, &w[i]);
    }
    pthread_barrier_wait(&b);
    int64_t t0 = mono_ns();
    for (int i = 0; i < nw; i++) pthread_join(th[i], NULL);
    double s = (double)(mono_ns() - t0) / 1e9;
    pthread_barrier_destroy(&b);
    return (double)nw * (double)n / s;
}

static int g_only = -1; /* --only MODE: run that mode alone (profiling) */

static int cmd_append(const char *dir, const char *writers, int rounds, long appends,
                      unsigned flags) {
    annal_db *db = open_store(dir, flags);
    for (const char *p = writers; *p;) {
        char *end;
        int nw = (int)strtol(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
        if (nw <= 0 || nw > 256) return 2;
        long n = appends > 0 ? appends : 2000 / nw < 50 ? 50 : 2000 / nw;
        writer w[256];
        for (int i = 0; i < nw; i++) w[i] = (writer){.id = i, .last = ANNAL_AFTER_NONE};
        double v[NMODES][64];
        for (int r = 0; r < rounds && r < 64; r++)
            for (int k = 0; k < NMODES; k++) {
                int mode = (k + r) % NMODES; /* rotate who goes first */
                v[mode][r] = g_only < 0 || g_only == mode ? run_mode(db, w, nw, mode, n) : 1;
            }
        double med[NMODES];
        for (int m = 0; m < NMODES; m++) med[m] = median(v[m], rounds);
        for (int m = 0; m < NMODES; m++)
            printf("{\"bench\":\"dcb-append\",\"mode\":\"%s\",\"writers\":%d,\"appends\":%ld,"
                   "\"rounds\":%d,\"events_per_s\":%.0f,\"vs_plain\":%.3f}\n",
                   MODE[m], nw, n * nw, rounds, med[m], med[m] / med[M_PLAIN]);
        fflush(stdout);
        for (int i = 0; i < nw; i++) w[i].id += 1000; /* fresh tags for the next count */
    }
    annal_db_close(db);
    return 0;
}

/* ---- query ------------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Append events [0, n) with their three tags, in batches of b (to $dcb). */
static void load(annal_db *db, uint64_t n, uint64_t b, int tagged) {
    annal_event_data *ev = calloc(b, sizeof *ev);
    annal_tag_list *tl = calloc(b, sizeof *tl);
    char(*tagtext)[3][32] = calloc(b, sizeof *tagtext);
    const char *(*tv)[3] = calloc(b, sizeof *tv);
    if (!ev || !tl || !tagtext || !tv) die("load", NULL, ANNAL_ENOMEM);
    static const char data[] = "{\"student\":\"s\",\"course\":\"c\",\"x\":12345}";
    uint64_t students = n / 12 ? n / 12 : 1, s = 7;
    int64_t t0 = mono_ns();
    for (uint64_t i = 0; i < n; i += b) {
        uint64_t m = n - i < b ? n - i : b;
        for (uint64_t k = 0; k < m; k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].type = rnd(&s) % 4 ? "Enrolled" : "Left";
            ev[k].data = data;
            ev[k].data_len = sizeof data - 1;
            snprintf(tagtext[k][0], 32, "region:r%" PRIu64, rnd(&s) % 10);
            snprintf(tagtext[k][1], 32, "kind:k%" PRIu64, rnd(&s) % 2);
            snprintf(tagtext[k][2], 32, "student:s%" PRIu64, (i + k) % students);
            for (int j = 0; j < 3; j++) tv[k][j] = tagtext[k][j];
            tl[k] = (annal_tag_list){tv[k], 3};
        }
        annal_err rc = annal_append_if(db, ev, tagged ? tl : NULL, m, NULL, NULL, NULL);
        if (rc != ANNAL_OK) die("load", db, rc);
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    printf("{\"bench\":\"dcb-load\",\"events\":%" PRIu64 ",\"batch\":%" PRIu64
           ",\"tags\":%d,\"seconds\":%.2f,\"events_per_s\":%.0f}\n",
           n, b, tagged ? 3 : 0, secs, (double)n / secs);
    fflush(stdout);
    free(ev);
    free(tl);
    free(tagtext);
    free(tv);
}

/* Read q forward: time to the first event (ms) and events/s over all; the count. */
static uint64_t read_all(annal_db *db, const annal_query *q, double *first_ms, double *eps) {
    int64_t t0 = mono_ns(), t1 = 0;
    annal_iter *it;
    annal_err rc = annal_read_query(db, q, 0, 0, 0, &it);
    if (rc != ANNAL_OK) die("read", db, rc);
    const annal_event *ev;
    uint64_t n = 0;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK)
        if (n++ == 0) t1 = mono_ns();
    if (rc != ANNAL_END) die("read", db, rc);
    annal_iter_close(it);
    int64_t t2 = mono_ns();
    *first_ms = (double)(t1 - t0) / 1e6;
    *eps = n > 1 ? (double)(n - 1) / ((double)(t2 - t1) / 1e9) : 0;
    return n;
}

static int cmd_query(const char *dir, uint64_t events, uint64_t batch) {
    annal_db *db = open_store(dir, ANNAL_OPEN_NOSYNC);
    annal_db_info info;
    annal_err rc = annal_db_info_get(db, &info);
    if (rc != ANNAL_OK) die("info", db, rc);
    if (info.events == 0) load(db, events, batch, 1);
    annal_db_close(db);
    db = open_store(dir, 0);
    if ((rc = annal_db_info_get(db, &info)) != ANNAL_OK) die("info", db, rc);
    events = info.events;
    const char *two[2] = {"region:r3", "kind:k1"};
    annal_query_item item = {NULL, 0, two, 2};
    annal_query q = {&item, 1};
    double first[5], eps[5];
    uint64_t n = 0;
    for (int r = 0; r < 5; r++) n = read_all(db, &q, &first[r], &eps[r]);
    printf("{\"bench\":\"dcb-query-two-tags\",\"store_events\":%" PRIu64 ",\"matches\":%" PRIu64
           ",\"first_event_ms\":%.3f,\"events_per_s\":%.0f,\"index_bytes\":%" PRIu64 "}\n",
           events, n, median(first, 5), median(eps, 5), info.index_bytes);
    fflush(stdout);
    /* one student's dozen events */
    uint64_t s = 99, students = events / 12 ? events / 12 : 1, total = 0;
    static double lat[1000];
    for (int i = 0; i < 1000; i++) {
        char st[32];
        snprintf(st, sizeof st, "student:s%" PRIu64, rnd(&s) % students);
        const char *tv[1] = {st};
        annal_query_item it1 = {NULL, 0, tv, 1};
        annal_query q1 = {&it1, 1};
        double f, e;
        int64_t t0 = mono_ns();
        total += read_all(db, &q1, &f, &e);
        lat[i] = (double)(mono_ns() - t0) / 1e3;
    }
    double p50 = median(lat, 1000), p99 = lat[989];
    printf("{\"bench\":\"dcb-query-one-student\",\"store_events\":%" PRIu64
           ",\"events_per_query\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           events, (double)total / 1000, p50, p99);
    annal_db_close(db);
    return 0;
}

/* ---- index ------------------------------------------------------------------------- */

/* Bytes of DIR/index the LMDB environment uses: its pages up to the last one written (the
 * sub-databases of duplicates included, which mdb_stat of a table does not count). */
static uint64_t index_used(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/index", dir);
    MDB_env *env;
    MDB_envinfo in;
    MDB_stat st;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_open(env, path, MDB_RDONLY, 0644) || mdb_env_info(env, &in) ||
        mdb_env_stat(env, &st)) {
        fprintf(stderr, "annal_dcb_bench: cannot open %s\n", path);
        exit(1);
    }
    mdb_env_close(env);
    return (uint64_t)(in.me_last_pgno + 1) * st.ms_psize;
}

/* The same events with and without their tags, in two stores: what the tags add. */
static int cmd_index(const char *dir, uint64_t events, uint64_t batch) {
    char with[4096], without[4096];
    snprintf(with, sizeof with, "%s/tags", dir);
    snprintf(without, sizeof without, "%s/notags", dir);
    mkdir(dir, 0755);
    annal_db *db = open_store(with, ANNAL_OPEN_NOSYNC);
    load(db, events, batch, 1);
    annal_db_close(db);
    db = open_store(without, ANNAL_OPEN_NOSYNC);
    load(db, events, batch, 0);
    annal_db_close(db);
    uint64_t a = index_used(with), b = index_used(without);
    uint64_t students = events / 12 ? events / 12 : 1;
    printf("{\"bench\":\"dcb-index\",\"events\":%" PRIu64 ",\"batch\":%" PRIu64
           ",\"tag_occurrences\":%" PRIu64 ",\"distinct_tags\":%" PRIu64
           ",\"index_used_bytes_tags\":%" PRIu64 ",\"index_used_bytes_no_tags\":%" PRIu64
           ",\"bytes_per_tag_occurrence\":%.1f}\n",
           events, batch, 3 * events, 12 + students, a, b,
           ((double)a - (double)b) / (3.0 * (double)events));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) goto usage;
    const char *cmd = argv[1], *dir = NULL, *writers = "1,64";
    int rounds = 5;
    long appends = 0;
    uint64_t events = 0, batch = 0;
    unsigned flags = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--writers") == 0 && i + 1 < argc)
            writers = argv[++i];
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--appends") == 0 && i + 1 < argc)
            appends = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
            events = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--nosync") == 0)
            flags |= ANNAL_OPEN_NOSYNC;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            const char *m = argv[++i];
            for (int k = 0; k < NMODES; k++)
                if (strcmp(m, MODE[k]) == 0) g_only = k;
        }
        else
            goto usage;
    }
    if (!dir || rounds < 1 || rounds > 64) goto usage;
    if (strcmp(cmd, "append") == 0) return cmd_append(dir, writers, rounds, appends, flags);
    if (strcmp(cmd, "query") == 0)
        return cmd_query(dir, events ? events : 10000000, batch ? batch : 1000);
    if (strcmp(cmd, "index") == 0)
        return cmd_index(dir, events ? events : 1000000, batch ? batch : 1);
usage:
    fprintf(stderr, "usage: annal_dcb_bench append|query|index --dir DIR [--writers 1,64] "
                    "[--rounds R] [--appends N] [--events N] [--batch B] [--nosync]\n");
    return 2;
}
