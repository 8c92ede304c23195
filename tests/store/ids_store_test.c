/* The event-id index through the store, with a tiny memtable (id_cache_events 100) so
 * that ids live in old merged runs, newer runs and the memtable: idempotent resends and
 * duplicate detection from each, across reopen; duplicates inside one batch; a writer
 * killed at random moments; missing, short and damaged run files; ids of events that
 * compaction erased, appended again. Seed: ANNAL_TEST_SEED or the time (printed). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"
#include "testutil.h"

#define CACHE   100 /* id_cache_events in these tests */
#define STREAMS 50
#if defined(__SANITIZE_ADDRESS__)
#define SLOW 1 /* LMDB's large per-transaction allocations make appends ~15x slower */
#else
#define SLOW 0
#endif

static uint64_t g_seed, g_rng;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t rnd(void) { return splitmix(&g_rng); }

static void v4_from(uint64_t *s, annal_uuid *u) {
    uint64_t a = splitmix(s), b = splitmix(s);
    memcpy(u->bytes, &a, 8);
    memcpy(u->bytes + 8, &b, 8);
    u->bytes[6] = (uint8_t)((u->bytes[6] & 0x0f) | 0x40);
    u->bytes[8] = (uint8_t)((u->bytes[8] & 0x3f) | 0x80);
}
static void random_v4(annal_uuid *u) { v4_from(&g_rng, u); }

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- opening, with the store's log messages captured ---- */

typedef struct logbuf {
    char text[32768];
    size_t len;
} logbuf;

static void capture(void *ctx, annal_log_level lvl, const char *msg) {
    (void)lvl;
    logbuf *b = ctx;
    if (b->len < sizeof b->text)
        b->len += (size_t)snprintf(b->text + b->len, sizeof b->text - b->len, "%s\n", msg);
    if (b->len > sizeof b->text) b->len = sizeof b->text;
}

static void opts_for(annal_db_opts *o, uint64_t cache, uint64_t seg_bytes, logbuf *lb) {
    annal_db_opts_init(o);
    o->flags = ANNAL_OPEN_CREATE;
    o->id_cache_events = cache;
    if (seg_bytes) o->segment_bytes = seg_bytes;
    if (lb) {
        lb->len = 0;
        lb->text[0] = 0;
        o->log = capture;
        o->log_ctx = lb;
    }
}

static annal_db *open_store(const char *dir, uint64_t cache, uint64_t seg_bytes, logbuf *lb) {
    annal_db_opts o;
    opts_for(&o, cache, seg_bytes, lb);
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK)
        fail_msg("seed %" PRIu64 ": open %s: %s (%s)", g_seed, dir, annal_errname(rc),
                 lb ? lb->text : "");
    return db;
}

typedef struct found {
    char text[4096];
    size_t len;
    int n;
} found;

static void on_damage(void *ctx, const annal_damage *d) {
    found *f = ctx;
    f->n++;
    if (f->len < sizeof f->text)
        f->len += (size_t)snprintf(f->text + f->len, sizeof f->text - f->len, "%s\n", d->what);
    if (f->len > sizeof f->text) f->len = sizeof f->text;
}

/* annal_verify finds nothing (cache 0: default options). */
static void verify_ok(const char *dir, uint64_t cache) {
    annal_db_opts o;
    opts_for(&o, cache, 0, NULL);
    o.flags = 0;
    found f = {{0}, 0, 0};
    annal_err rc = annal_verify(dir, cache ? &o : NULL, on_damage, &f);
    if (rc != ANNAL_OK)
        fail_msg("seed %" PRIu64 ": verify: %s: %s", g_seed, annal_errname(rc), f.text);
}

/* ---- the model: every acknowledged batch ---- */

typedef struct batch {
    int stream;
    int64_t expected; /* as appended */
    uint32_t n;
    size_t first_id; /* into world.ids */
    uint64_t first_rev, first_pos;
} batch;

typedef struct world {
    annal_uuid *ids;
    size_t nids, capids;
    batch *b;
    size_t nb, capb;
    uint64_t count[STREAMS]; /* events per stream */
    uint64_t next_pos;
} world;

static void world_free(world *w) {
    free(w->ids);
    free(w->b);
}

static void stream_name(int s, char *out, size_t n) { snprintf(out, n, "acct-%d", s); }

static void fill_events(annal_event_data *ev, const annal_uuid *ids, uint32_t n) {
    static const char data[] = "{\"amount\":10}";
    for (uint32_t i = 0; i < n; i++) {
        memset(&ev[i], 0, sizeof ev[i]);
        ev[i].id = ids[i];
        ev[i].type = "Deposited";
        ev[i].data = data;
        ev[i].data_len = sizeof data - 1;
    }
}

/* Append ids (n <= 50) to stream s under expected, which must succeed; the model
 * follows. */
static void append_ids(annal_db *db, world *w, int s, const annal_uuid *ids, uint32_t n,
                       int64_t expected) {
    if (w->nids + n > w->capids) {
        w->capids = w->capids ? w->capids * 2 : 4096;
        w->ids = realloc(w->ids, w->capids * sizeof *w->ids);
        assert_non_null(w->ids);
    }
    if (w->nb == w->capb) {
        w->capb = w->capb ? w->capb * 2 : 512;
        w->b = realloc(w->b, w->capb * sizeof *w->b);
        assert_non_null(w->b);
    }
    char name[32];
    stream_name(s, name, sizeof name);
    annal_event_data ev[50];
    fill_events(ev, ids, n);
    annal_append_result res;
    TU_OK(db, annal_append(db, name, expected, ev, n, &res));
    assert_int_equal(res.idempotent, 0);
    assert_int_equal(res.first_position, w->next_pos);
    assert_int_equal(res.first_revision, w->count[s]);
    assert_int_equal(res.count, n);
    memcpy(w->ids + w->nids, ids, n * sizeof *ids);
    w->b[w->nb++] = (batch){s, expected, n, w->nids, w->count[s], w->next_pos};
    w->nids += n;
    w->count[s] += n;
    w->next_pos += n;
}

/* A batch of n new random ids to stream s, under a random kind of expected revision. */
static void append_batch(annal_db *db, world *w, int s, uint32_t n) {
    annal_uuid ids[50];
    for (uint32_t i = 0; i < n; i++) random_v4(&ids[i]);
    uint64_t c = w->count[s];
    int64_t expected;
    switch (rnd() % 3) {
    case 0: expected = ANNAL_EXPECT_ANY; break;
    case 1: expected = c ? (int64_t)c - 1 : ANNAL_EXPECT_NO_STREAM; break;
    default: expected = c ? ANNAL_EXPECT_STREAM_EXISTS : ANNAL_EXPECT_NO_STREAM; break;
    }
    append_ids(db, w, s, ids, n, expected);
}

static void workload(annal_db *db, world *w, uint64_t events) {
    uint64_t end = w->next_pos + events;
    while (w->next_pos < end) append_batch(db, w, (int)(rnd() % STREAMS), 1 + rnd() % 50);
}

/* ---- the id index of a writer handle ---- */

typedef struct rlist {
    uint64_t next, n;
    uint64_t count[64], from[64], to[64];
} rlist;

static void read_list(annal_db *db, rlist *l) {
    memset(l, 0, sizeof *l);
    MDB_txn *t;
    assert_int_equal(annal__read_txn(db, &t), ANNAL_OK);
    MDB_val k = {3, (void *)"ids"}, v;
    if (mdb_get(t, db->idx.meta, &k, &v) == 0) {
        const uint8_t *p = v.mv_data;
        l->next = annal__get64(p + 8);
        l->n = annal__get64(p + 24);
        assert_true(l->n <= 64);
        for (uint64_t i = 0; i < l->n; i++) {
            l->count[i] = annal__get64(p + 32 + i * 32 + 8);
            l->from[i] = annal__get64(p + 32 + i * 32 + 16);
            l->to[i] = annal__get64(p + 32 + i * 32 + 24);
        }
    }
    mdb_txn_abort(t);
}

static int count_runs(const char *dir);

/* Wait until the writer's merger thread has done every merge the binary counter asks for
 * (it then sleeps until the next flush): run files and the list agree, and stay put while
 * nothing is appended. */
static void settle(annal_db *db) {
    for (int k = 0; k < 20000; k++) {
        rlist l;
        read_list(db, &l);
        int pending = 0;
        for (uint64_t i = 1; i < l.n && !pending; i++) pending = l.count[i - 1] <= l.count[i];
        if (!pending && count_runs(db->dir) == (int)l.n) return; /* replaced files gone too */
        usleep(1000);
    }
    fail_msg("the id merger did not finish its merges in 20 s");
}

enum { IN_MEM, IN_OLDEST_RUN, IN_NEWER_RUN, NWHERE };
static const char *where_name[NWHERE] = {"memtable", "oldest (merged) run", "newer run"};

static int where(annal_db *db, const rlist *l, uint64_t pos) {
    if (pos >= annal__ids_next(db->ids)) return IN_MEM;
    for (uint64_t i = 0; i < l->n; i++)
        if (pos >= l->from[i] && pos < l->to[i]) return i == 0 ? IN_OLDEST_RUN : IN_NEWER_RUN;
    fail_msg("position %" PRIu64 " is in no run and below next %" PRIu64, pos,
             annal__ids_next(db->ids));
    return -1;
}

/* Every acknowledged id is in the writer's index at its position. */
static void check_index(annal_db *db, const world *w) {
    for (size_t bi = 0; bi < w->nb; bi++) {
        const batch *b = &w->b[bi];
        for (uint32_t i = 0; i < b->n; i++) {
            uint64_t pos = 0, loc = 0;
            annal_err rc = annal__ids_get(db->ids, &w->ids[b->first_id + i], &pos, &loc);
            if (rc != ANNAL_OK || pos != b->first_pos + i)
                fail_msg("seed %" PRIu64 ": id of position %" PRIu64 ": %s, position %" PRIu64,
                         g_seed, b->first_pos + i, annal_errname(rc), pos);
        }
    }
}

static uint64_t db_events(annal_db *db) {
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    return info.events;
}

/* Resend batch b as it was appended: idempotent success with the original result. */
static void expect_idempotent(annal_db *db, const world *w, const batch *b, uint32_t from,
                              uint32_t n, int64_t expected) {
    char name[32];
    stream_name(b->stream, name, sizeof name);
    annal_event_data ev[50];
    fill_events(ev, w->ids + b->first_id + from, n);
    annal_append_result res;
    memset(&res, 0, sizeof res);
    annal_err rc = annal_append(db, name, expected, ev, n, &res);
    if (rc != ANNAL_OK || !res.idempotent || res.first_position != b->first_pos + from ||
        res.first_revision != b->first_rev + from || res.count != n)
        fail_msg("seed %" PRIu64 ": resend of %u events at position %" PRIu64 " to %s: %s (%s), "
                 "idempotent %d, first position %" PRIu64 ", first revision %" PRIu64,
                 g_seed, n, b->first_pos + from, name, annal_errname(rc), annal_db_errmsg(db),
                 res.idempotent, res.first_position, res.first_revision);
}

static void expect_duplicate(annal_db *db, const char *stream, const annal_uuid *ids, uint32_t n,
                             uint64_t pos) {
    annal_event_data ev[50];
    fill_events(ev, ids, n);
    annal_append_result res;
    annal_err rc = annal_append(db, stream, ANNAL_EXPECT_ANY, ev, n, &res);
    if (rc != ANNAL_EDUPLICATE)
        fail_msg("seed %" PRIu64 ": id stored at position %" PRIu64 " appended to %s: %s", g_seed,
                 pos, stream, annal_errname(rc));
}

/* id is taken: appended to stream alone (the idempotence check finds it) and after a new
 * id (the claim of each event finds it) it is ANNAL_EDUPLICATE. */
static void expect_taken(annal_db *db, const char *stream, const annal_uuid *id, uint64_t pos) {
    expect_duplicate(db, stream, id, 1, pos);
    annal_uuid two[2];
    random_v4(&two[0]);
    two[1] = *id;
    expect_duplicate(db, stream, two, 2, pos);
}

/* For every batch: a resend under the same expectation is idempotent; a single event
 * of it resent under `any` too; its ids in another stream, alone or after a new id,
 * are duplicates. counts (may be NULL) gets where the ids checked were. Nothing is
 * added to the store or to the memtable. */
static void check_dups(annal_db *db, const world *w, int counts[NWHERE]) {
    rlist l;
    settle(db);
    read_list(db, &l);
    printf("  check_dups: %" PRIu64 " runs:", l.n);
    for (uint64_t i = 0; i < l.n; i++) printf(" [%" PRIu64 ", %" PRIu64 ")", l.from[i], l.to[i]);
    printf(", next %" PRIu64 "\n", annal__ids_next(db->ids));
    uint64_t events = db_events(db), mem = annal__ids_mem_count(db->ids);
    for (size_t bi = 0; bi < w->nb; bi++) {
        const batch *b = &w->b[bi];
        expect_idempotent(db, w, b, 0, b->n, b->expected);
        uint32_t j = (uint32_t)(rnd() % b->n);
        for (uint32_t q = 0; counts && q < b->n; q++) /* prefer a place not checked yet */
            if (counts[where(db, &l, b->first_pos + q)] == 0) {
                j = q;
                break;
            }
        expect_idempotent(db, w, b, j, 1, ANNAL_EXPECT_ANY);
        const annal_uuid *id = &w->ids[b->first_id + j];
        expect_taken(db, "elsewhere", id, b->first_pos + j);
        if (counts) counts[where(db, &l, b->first_pos + j)]++;
    }
    uint64_t head;
    TU_EXPECT(db, annal_stream_head(db, "elsewhere", &head), ANNAL_ENOTFOUND);
    assert_int_equal(db_events(db), events);
    assert_int_equal(annal__ids_mem_count(db->ids), mem);
}

static uint64_t seed_init(void) {
    const char *s = getenv("ANNAL_TEST_SEED");
    g_seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    g_rng = g_seed;
    printf("ids_store_test seed %" PRIu64 " (ANNAL_TEST_SEED)\n", g_seed);
    return g_seed;
}

static int count_runs(const char *dir) {
    char idir[4200];
    snprintf(idir, sizeof idir, "%s/index", dir);
    DIR *d = opendir(idir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strncmp(e->d_name, "ids-", 4) == 0;
    closedir(d);
    return n;
}

/* ---- tests ---- */

static void test_duplicates(void **state) {
    (void)state;
    char *dir = tu_tmpdir("ids-dups");
    logbuf lb;
    annal_db *db = open_store(dir, CACHE, 0, NULL);
    world w;
    memset(&w, 0, sizeof w);
    workload(db, &w, 5000);
    /* at least two runs and a memtable that is not empty */
    rlist l;
    settle(db);
    read_list(db, &l);
    for (int k = 0; k < 500 && (l.n < 2 || annal__ids_mem_count(db->ids) == 0); k++) {
        append_batch(db, &w, (int)(rnd() % STREAMS), 1 + rnd() % 10);
        settle(db);
        read_list(db, &l);
    }
    assert_true(l.n >= 2);
    assert_true(l.count[0] > CACHE); /* the oldest run is a merge */
    assert_true(annal__ids_mem_count(db->ids) > 0);
    assert_true(annal__ids_mem_count(db->ids) < CACHE); /* written after the group */
    check_index(db, &w);
    int counts[NWHERE] = {0};
    check_dups(db, &w, counts);
    for (int i = 0; i < NWHERE; i++) {
        printf("  %d batches checked with an id in the %s\n", counts[i], where_name[i]);
        assert_true(counts[i] > 0);
    }

    /* reopen: the runs come back, the memtable is refilled or was written at close */
    annal_db_close(db);
    db = open_store(dir, CACHE, 0, &lb);
    if (strstr(lb.text, "rebuild")) fail_msg("a clean reopen rebuilt the index: %s", lb.text);
    check_index(db, &w);
    check_dups(db, &w, NULL);
    workload(db, &w, 400);
    for (int k = 0; k < 500 && annal__ids_mem_count(db->ids) == 0; k++)
        append_batch(db, &w, (int)(rnd() % STREAMS), 1 + rnd() % 10);
    check_index(db, &w);
    memset(counts, 0, sizeof counts);
    check_dups(db, &w, counts);
    assert_true(counts[IN_MEM] > 0);

    /* duplicates inside one batch: ANNAL_EDUPLICATE and nothing of it stored */
    int s = w.b[w.nb - 1].stream;
    char name[32];
    stream_name(s, name, sizeof name);
    uint64_t events = db_events(db), mem = annal__ids_mem_count(db->ids);
    annal_uuid a, b, c, ids[4];
    random_v4(&a);
    random_v4(&b);
    random_v4(&c);
    annal_event_data ev[4];
    ids[0] = a, ids[1] = b, ids[2] = a;
    fill_events(ev, ids, 3);
    TU_EXPECT(db, annal_append(db, name, (int64_t)w.count[s] - 1, ev, 3, NULL), ANNAL_EDUPLICATE);
    ids[0] = c, ids[1] = w.ids[0], ids[2] = b; /* an id from the oldest run */
    fill_events(ev, ids, 3);
    TU_EXPECT(db, annal_append(db, name, ANNAL_EXPECT_ANY, ev, 3, NULL), ANNAL_EDUPLICATE);
    ids[0] = b, ids[1] = c, ids[2] = a, ids[3] = w.ids[w.nids - 1]; /* one from the memtable */
    fill_events(ev, ids, 4);
    TU_EXPECT(db, annal_append(db, name, ANNAL_EXPECT_ANY, ev, 4, NULL), ANNAL_EDUPLICATE);
    assert_int_equal(db_events(db), events);
    assert_int_equal(annal__ids_mem_count(db->ids), mem);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, name, &head));
    assert_int_equal(head, w.count[s] - 1);
    annal_iter *it;
    const annal_event *e;
    TU_OK(db, annal_read_stream(db, name, 0, 0, 0, &it));
    uint64_t n = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        assert_false(memcmp(&e->id, &a, 16) == 0 || memcmp(&e->id, &b, 16) == 0 ||
                     memcmp(&e->id, &c, 16) == 0);
        n++;
    }
    annal_iter_close(it);
    assert_int_equal(rc, ANNAL_END);
    assert_int_equal(n, w.count[s]);
    const annal_uuid *fresh[3] = {&a, &b, &c}; /* all three are still free */
    for (int i = 0; i < 3; i++) {
        uint64_t pos, loc;
        assert_int_equal(annal__ids_get(db->ids, fresh[i], &pos, &loc), ANNAL_ENOTFOUND);
    }
    ids[0] = a, ids[1] = b, ids[2] = c;
    append_ids(db, &w, s, ids, 3, (int64_t)w.count[s] - 1);
    expect_taken(db, "elsewhere", &a, w.next_pos - 3);
    expect_idempotent(db, &w, &w.b[w.nb - 1], 0, 3, w.b[w.nb - 1].expected);
    check_index(db, &w);
    annal_db_close(db);
    verify_ok(dir, CACHE);
    verify_ok(dir, 0);
    world_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a writer killed at random moments ---- */

#define KTHREADS 2
#define KSTREAMS 8

typedef struct kack {
    uint32_t cycle, thread, counter, n;
    uint32_t stream, ok; /* ok 0: the batch reused an acknowledged id and failed */
    uint64_t first_pos;
} kack;

static char *g_kdir;

static void kid(annal_uuid *u, uint32_t cycle, uint32_t thread, uint32_t counter, uint32_t i) {
    uint64_t s =
        g_seed ^
        ((((uint64_t)cycle << 48) | ((uint64_t)thread << 40) | ((uint64_t)counter << 8) | i) *
         0xD6E8FEB86659FD93ull);
    v4_from(&s, u);
}

typedef struct karg {
    annal_db *db;
    int fd;
    uint32_t cycle, thread;
} karg;

static void *kchild_thread(void *p) {
    karg *a = p;
    uint64_t s = g_seed ^ ((uint64_t)a->cycle << 32) ^ a->thread ^ 0x5bd1e995ull;
    static const char data[] = "{\"k\":1}";
    uint32_t last = 0;
    int have_last = 0;
    for (uint32_t counter = 0;; counter++) {
        uint32_t n = 1 + (uint32_t)(splitmix(&s) % 20), st = (uint32_t)(splitmix(&s) % KSTREAMS);
        int reuse = have_last && splitmix(&s) % 8 == 0;
        if (reuse && n < 2) n = 2; /* a new id first: alone, a resend may be idempotent */
        annal_event_data ev[20];
        for (uint32_t i = 0; i < n; i++) {
            memset(&ev[i], 0, sizeof ev[i]);
            kid(&ev[i].id, a->cycle, a->thread, counter, i);
            ev[i].type = "Killed";
            ev[i].data = data;
            ev[i].data_len = sizeof data - 1;
        }
        if (reuse) kid(&ev[n - 1].id, a->cycle, a->thread, last, 0); /* acknowledged */
        char name[32];
        snprintf(name, sizeof name, "k-%u", st);
        annal_append_result r;
        annal_err rc = annal_append(a->db, name, ANNAL_EXPECT_ANY, ev, n, &r);
        if (reuse ? rc != ANNAL_EDUPLICATE : rc != ANNAL_OK) {
            fprintf(stderr, "child: append (reuse %d) = %s (%s)\n", reuse, annal_errname(rc),
                    annal_db_errmsg(a->db));
            _exit(4);
        }
        kack k = {a->cycle, a->thread, counter, n, st, !reuse, reuse ? 0 : r.first_position};
        if (write(a->fd, &k, sizeof k) != (ssize_t)sizeof k) _exit(3);
        if (!reuse) last = counter, have_last = 1;
    }
    return NULL;
}

static void kchild(int fd, uint32_t cycle) {
    annal_db_opts o;
    opts_for(&o, CACHE, 256u << 10, NULL);
    annal_db *db;
    if (annal_db_open(g_kdir, &o, &db) != ANNAL_OK) _exit(2);
    if (write(fd, "R", 1) != 1) _exit(3);
    pthread_t th[KTHREADS];
    karg args[KTHREADS];
    for (uint32_t t = 0; t < KTHREADS; t++) {
        args[t] = (karg){db, fd, cycle, t};
        pthread_create(&th[t], NULL, kchild_thread, &args[t]);
    }
    for (;;) pause();
}

typedef struct kacks {
    kack *v;
    size_t n, cap;
    uint8_t part[sizeof(kack)];
    size_t plen;
    int ready;
} kacks;

/* Read what the child wrote so far ('R', then whole records); 0 at EOF. */
static int pump(int fd, kacks *a, int timeout_ms) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) <= 0) return 1;
    uint8_t buf[8192];
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0) return 0;
    for (ssize_t i = 0; i < r; i++) {
        if (!a->ready) {
            assert_int_equal(buf[i], 'R');
            a->ready = 1;
            continue;
        }
        a->part[a->plen++] = buf[i];
        if (a->plen < sizeof(kack)) continue;
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 1024;
            a->v = realloc(a->v, a->cap * sizeof *a->v);
            assert_non_null(a->v);
        }
        memcpy(&a->v[a->n++], a->part, sizeof(kack));
        a->plen = 0;
    }
    return 1;
}

static void kcheck(const kacks *a, uint32_t cycle, size_t *oks) {
    logbuf lb;
    annal_db *db = open_store(g_kdir, CACHE, 256u << 10, &lb);
    rlist l; /* runs a killed flush left behind are gone */
    settle(db);
    read_list(db, &l);
    if ((uint64_t)count_runs(g_kdir) != l.n)
        fail_msg("seed %" PRIu64 " cycle %u: %d run files, %" PRIu64 " listed", g_seed, cycle,
                 count_runs(g_kdir), l.n);
    *oks = 0;
    for (size_t i = 0; i < a->n; i++) {
        const kack *k = &a->v[i];
        for (uint32_t j = 0; j < k->n; j++) {
            if (!k->ok && j == k->n - 1) break; /* the reused id */
            annal_uuid u;
            kid(&u, k->cycle, k->thread, k->counter, j);
            uint64_t pos = 0, loc;
            annal_err rc = annal__ids_get(db->ids, &u, &pos, &loc);
            if (k->ok && (rc != ANNAL_OK || pos != k->first_pos + j))
                fail_msg("seed %" PRIu64 " cycle %u: acknowledged id (cycle %u thread %u batch %u "
                         "#%u) at %" PRIu64 ": %s, position %" PRIu64,
                         g_seed, cycle, k->cycle, k->thread, k->counter, j, k->first_pos + j,
                         annal_errname(rc), pos);
            if (!k->ok && rc != ANNAL_ENOTFOUND)
                fail_msg("seed %" PRIu64 " cycle %u: an id of a failed batch is indexed (%s)",
                         g_seed, cycle, annal_errname(rc));
        }
        *oks += k->ok;
    }
    /* through the API: a sample of acknowledged batches is detected both ways */
    for (int t = 0; t < 20 && *oks; t++) {
        const kack *k = &a->v[rnd() % a->n];
        if (!k->ok) continue;
        annal_uuid ids[20];
        for (uint32_t j = 0; j < k->n; j++) kid(&ids[j], k->cycle, k->thread, k->counter, j);
        expect_taken(db, "k-dup", &ids[rnd() % k->n], k->first_pos);
        annal_event_data ev[20];
        fill_events(ev, ids, k->n);
        char name[32];
        snprintf(name, sizeof name, "k-%u", k->stream);
        annal_append_result res;
        TU_OK(db, annal_append(db, name, ANNAL_EXPECT_ANY, ev, k->n, &res));
        assert_int_equal(res.idempotent, 1);
        assert_int_equal(res.first_position, k->first_pos);
    }
    uint64_t head;
    TU_EXPECT(db, annal_stream_head(db, "k-dup", &head), ANNAL_ENOTFOUND);
    annal_db_close(db);
    verify_ok(g_kdir, CACHE);
}

static void test_killed_writer(void **state) {
    (void)state;
    g_kdir = tu_tmpdir("ids-kill");
    kacks a;
    memset(&a, 0, sizeof a);
    int cycles = getenv("ANNAL_LONG") ? 100 : SLOW ? 14 : 24, runs_seen = 0;
    int64_t t0 = now_ms();
    size_t oks = 0;
    for (uint32_t cycle = 0; cycle < (uint32_t)cycles; cycle++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            kchild(fds[1], cycle);
        }
        close(fds[1]);
        a.ready = 0;
        a.plen = 0;
        int early = cycle % 4 == 3; /* sometimes while it opens (and catches up) */
        int64_t start = now_ms();
        while (!early && !a.ready && now_ms() - start < 20000) pump(fds[0], &a, 100);
        if (!early && !a.ready) fail_msg("cycle %u: the child did not open the store", cycle);
        int64_t until = now_ms() + (int64_t)(early  ? rnd() % 30
                                             : SLOW ? 100 + rnd() % 400
                                                    : 20 + rnd() % 250);
        while (now_ms() < until) pump(fds[0], &a, (int)(until - now_ms()));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
            fail_msg("seed %" PRIu64 " cycle %u: the child exited (status %d)", g_seed, cycle,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        while (pump(fds[0], &a, 1000)) {}
        close(fds[0]);
        assert_int_equal(a.plen, 0);
        kcheck(&a, cycle, &oks);
        runs_seen += count_runs(g_kdir) > 0;
    }
    printf("  %d cycles in %.1f s: %zu acknowledged batches, %zu acknowledgements in all; "
           "id run files on disk after %d of the cycles\n",
           cycles, (double)(now_ms() - t0) / 1000, oks, a.n, runs_seen);
    assert_true(oks > (SLOW ? 60 : 200));
    assert_true(runs_seen > 0);
    free(a.v);
    tu_rmrf(g_kdir);
    free(g_kdir);
}

/* ---- missing and damaged runs ---- */

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* The names of the run files of dir's index, sorted. */
static int run_files(const char *dir, char names[][256], int max) {
    char idir[4200];
    snprintf(idir, sizeof idir, "%s/index", dir);
    DIR *d = opendir(idir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL && n < max;)
        if (strncmp(e->d_name, "ids-", 4) == 0 && strlen(e->d_name) < 256)
            memcpy(names[n++], e->d_name, strlen(e->d_name) + 1);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_name);
    return n;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static void test_damaged_runs(void **state) {
    (void)state;
    char *dir = tu_tmpdir("ids-damage");
    logbuf lb;
    world w;
    memset(&w, 0, sizeof w);
    annal_db *db = open_store(dir, CACHE, 0, NULL);
    workload(db, &w, 3000);
    annal_db_close(db);
    /* runs the list does not name (a crash between writing and committing them) go at
     * the next open, which needs no rebuild */
    char names[64][256], victim[4600], orphan[4600];
    int n0 = run_files(dir, names, 64);
    assert_true(n0 >= 1);
    snprintf(victim, sizeof victim, "%s/index/%s", dir, names[0]);
    snprintf(orphan, sizeof orphan, "%s/index/ids-00000000000000ff.run", dir);
    assert_int_equal(link(victim, orphan), 0);
    snprintf(orphan, sizeof orphan, "%s/index/ids-00000000000000fe.run", dir);
    FILE *part = fopen(orphan, "w");
    assert_non_null(part);
    fputs("half a run", part);
    fclose(part);
    assert_int_equal(count_runs(dir), n0 + 2);
    db = open_store(dir, CACHE, 0, &lb);
    if (strstr(lb.text, "rebuild")) fail_msg("an undamaged store was rebuilt: %s", lb.text);
    settle(db); /* merges left to the next open may now change the files */
    rlist sl;
    read_list(db, &sl);
    assert_int_equal(count_runs(dir), (int)sl.n);
    assert_true(count_runs(dir) <= n0);
    check_index(db, &w);
    annal_db_close(db);
    for (int how = 0; how < 3; how++) {
        int n = run_files(dir, names, 64);
        assert_true(n >= 1);
        snprintf(victim, sizeof victim, "%s/index/%s", dir, names[how == 1 ? n - 1 : 0]);
        uint64_t size = file_size(victim);
        if (how == 0) {
            assert_int_equal(unlink(victim), 0);
        } else if (how == 1) {
            assert_int_equal(truncate(victim, (off_t)(size - 64)), 0);
        } else { /* header intact: the writer does not notice; verify does */
            int fd = open(victim, O_RDWR);
            assert_true(fd >= 0);
            uint8_t byte;
            assert_int_equal(pread(fd, &byte, 1, (off_t)(size / 2)), 1);
            byte ^= 0x01;
            assert_int_equal(pwrite(fd, &byte, 1, (off_t)(size / 2)), 1);
            close(fd);
            annal_db_opts o;
            opts_for(&o, CACHE, 0, NULL);
            o.flags = 0;
            found f = {{0}, 0, 0};
            assert_int_equal(annal_verify(dir, &o, on_damage, &f), ANNAL_ECORRUPT);
            printf("  verify: %s", f.text);
            assert_non_null(strstr(f.text, "event id run"));
            TU_OK(NULL, annal_rebuild_index(dir, &o));
            verify_ok(dir, CACHE);
        }
        db = open_store(dir, CACHE, 0, &lb);
        if (how < 2 && !strstr(lb.text, "rebuilding"))
            fail_msg("damage %d: the open did not rebuild the index: %s", how, lb.text);
        check_index(db, &w);
        int sampled = 0;
        for (size_t bi = 0; bi < w.nb; bi += 7, sampled++) { /* a sample through the API */
            const batch *b = &w.b[bi];
            expect_idempotent(db, &w, b, 0, b->n, b->expected);
            expect_taken(db, "elsewhere", &w.ids[b->first_id], b->first_pos);
        }
        assert_true(sampled > 10);
        workload(db, &w, 300);
        check_index(db, &w);
        annal_db_close(db);
        assert_true(count_runs(dir) >= 1);
        verify_ok(dir, CACHE);
    }
    world_free(&w);
    tu_rmrf(dir);
    free(dir);
}

/* ---- ids of events that compaction erased ---- */

/* n events with ids to stream, with data pad (NULL: small). */
static void append_padded(annal_db *db, const char *stream, const annal_uuid *ids, uint32_t n,
                          const char *pad, annal_append_result *res) {
    annal_event_data ev[20];
    fill_events(ev, ids, n);
    for (uint32_t i = 0; pad && i < n; i++) {
        ev[i].data = pad;
        ev[i].data_len = strlen(pad);
    }
    TU_OK(db, annal_append(db, stream, ANNAL_EXPECT_ANY, ev, n, res));
}

static void append_keep(annal_db *db, const char *pad, uint32_t n) {
    annal_uuid ids[20];
    for (uint32_t i = 0; i < n; i++) random_v4(&ids[i]);
    append_padded(db, "keep", ids, n, pad, NULL);
}

static void test_compaction_readd(void **state) {
    (void)state;
    static char pad[300];
    memset(pad, 'x', sizeof pad - 1);
    for (int pass = 0; pass < 2; pass++) {
        uint64_t cache = pass ? (1u << 20) : CACHE; /* erased ids in runs, then in memory */
        char *dir = tu_tmpdir("ids-compact");
        annal_db *db = open_store(dir, cache, 64u << 10, NULL);
        enum { NG = 400, GB = 4 };
        annal_uuid gone[NG];
        uint64_t old_pos[NG], new_pos[NG];
        int erased[NG];
        annal_event_data ev;
        annal_append_result res;
        for (int i = 0; i < NG; i += GB) { /* in batches of 4, between events of "keep" */
            if (i == NG - 2 * GB)
                for (int k = 0; k < 20; k++) append_keep(db, pad, 20); /* seal most of them */
            for (int j = 0; j < GB; j++) random_v4(&gone[i + j]);
            append_padded(db, "gone", gone + i, GB, pad, &res);
            for (int j = 0; j < GB; j++) old_pos[i + j] = res.first_position + (uint64_t)j;
            if (i / GB % 2) append_keep(db, NULL, 1);
        }
        TU_OK(db, annal_stream_delete(db, "gone", ANNAL_EXPECT_ANY, 0, NULL));
        /* before compaction every one of them is still a duplicate */
        for (int i = 0; i < NG; i += 37) expect_taken(db, "reborn", &gone[i], old_pos[i]);
        annal_compact_stats st;
        TU_OK(db, annal_compact(db, 0, &st));
        assert_true(st.events_erased >= 100);
        MDB_txn *t;
        assert_int_equal(annal__read_txn(db, &t), ANNAL_OK);
        int nerased = 0;
        for (int i = 0; i < NG; i++) {
            uint64_t pos, loc;
            annal_err rc = annal__id_live(db, t, &gone[i], &pos, &loc);
            assert_true(rc == ANNAL_OK || rc == ANNAL_ENOTFOUND);
            erased[i] = rc == ANNAL_ENOTFOUND;
            if (!erased[i]) assert_int_equal(pos, old_pos[i]);
            nerased += erased[i];
        }
        mdb_txn_abort(t);
        printf("  pass %d: %d of %d ids erased by compaction\n", pass, nerased, NG);
        assert_true(nerased >= 100);
        assert_true(nerased <= NG - 2 * GB); /* the last ones are in the active segment */
        /* erased: free to append again, then taken; not erased: still taken */
        for (int i = 0; i < NG; i++) {
            fill_events(&ev, &gone[i], 1);
            annal_err rc = annal_append(db, "reborn", ANNAL_EXPECT_ANY, &ev, 1, &res);
            if (!erased[i]) {
                if (rc != ANNAL_EDUPLICATE)
                    fail_msg("seed %" PRIu64 ": an id whose event still exists: %s", g_seed,
                             annal_errname(rc));
                continue;
            }
            if (rc != ANNAL_OK || res.idempotent)
                fail_msg("seed %" PRIu64 ": an erased id appended again: %s (idempotent %d)",
                         g_seed, annal_errname(rc), rc == ANNAL_OK ? res.idempotent : -1);
            new_pos[i] = res.first_position;
            if (i % 3 == 0) expect_taken(db, "third", &gone[i], new_pos[i]);
        }
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < NG; i++) {
                if (!erased[i]) continue;
                uint64_t pos, loc;
                assert_int_equal(annal__ids_get(db->ids, &gone[i], &pos, &loc), ANNAL_OK);
                assert_int_equal(pos, new_pos[i]);
                if (i % 5 == round) {
                    expect_taken(db, "third", &gone[i], new_pos[i]);
                    fill_events(&ev, &gone[i], 1);
                    TU_OK(db, annal_append(db, "reborn", ANNAL_EXPECT_ANY, &ev, 1, &res));
                    assert_int_equal(res.idempotent, 1);
                    assert_int_equal(res.first_position, new_pos[i]);
                }
            }
            uint64_t head;
            TU_EXPECT(db, annal_stream_head(db, "third", &head), ANNAL_ENOTFOUND);
            if (round == 0) /* flushes and merges over runs with the old entries */
                for (int i = 0; i < 30; i++) append_keep(db, NULL, 20);
            annal_db_close(db);
            verify_ok(dir, cache);
            if (round == 1) TU_OK(NULL, annal_rebuild_index(dir, NULL));
            db = open_store(dir, cache, 64u << 10, NULL);
        }
        annal_db_close(db);
        tu_rmrf(dir);
        free(dir);
    }
}

/* annal_verify beside a writer whose memtable flushes and merges runs all the time:
 * runs its snapshot names may be merged away before it opens them (it must then use a
 * newer snapshot, not report damage). */
static _Atomic int vr_stop;

static void *vr_writer(void *p) {
    annal_db *db = p;
    uint64_t s = g_seed ^ 0x5eed;
    while (!vr_stop) {
        annal_event_data ev[50];
        memset(ev, 0, sizeof ev);
        for (int i = 0; i < 50; i++) {
            v4_from(&s, &ev[i].id);
            ev[i].type = "T";
            ev[i].data = "{}";
            ev[i].data_len = 2;
        }
        annal_err rc = annal_append(db, "s", ANNAL_EXPECT_ANY, ev, 50, NULL);
        if (rc != ANNAL_OK) {
            fprintf(stderr, "append beside verify: %s: %s\n", annal_errname(rc),
                    annal_db_errmsg(db));
            return (void *)1;
        }
    }
    return NULL;
}

static void vr_damage(void *ctx, const annal_damage *d) {
    (void)ctx;
    fprintf(stderr, "verify beside a writer: %s\n", d->what);
}

static void test_verify_beside_writer(void **state) {
    (void)state;
    char *dir = tu_tmpdir("ids-verify");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.id_cache_events = 100;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    vr_stop = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, vr_writer, db), 0);
    annal_db_info info;
    do { /* some runs first */
        usleep(10000);
        TU_OK(db, annal_db_info_get(db, &info));
    } while (info.events < 1000);
    uint64_t start = info.events;
    int bad = 0, rounds = 0;
    /* at least 12 verifies, and until 3000 more events (30 flushes) were appended */
    while (rounds < 12 || (info.events - start < 3000 && rounds < 2000)) {
        bad += annal_verify(dir, NULL, vr_damage, NULL) != ANNAL_OK;
        rounds++;
        TU_OK(db, annal_db_info_get(db, &info));
    }
    vr_stop = 1;
    void *wr;
    pthread_join(th, &wr);
    assert_null(wr);
    printf("verify beside a writer: %d of %d not OK, %" PRIu64 " events appended meanwhile\n", bad,
           rounds, info.events - start);
    assert_true(info.events - start >= 3000); /* runs were flushed and merged meanwhile */
    annal_db_close(db);
    assert_int_equal(bad, 0);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

/* ---- an id stored twice in the log (damage) ---- */

/* Overwrite the id of the record holding id `from` in segment 0 of dir with `to`, and
 * fix the record's checksum: the log then holds `to` twice, as no writer would. */
static void forge_id(const char *dir, const annal_uuid *from, const annal_uuid *to) {
    char path[4096];
    snprintf(path, sizeof path, "%s/log/0000000000000000.seg", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    size_t at = 0;
    for (size_t o = ANNAL__SEG_HDR; o + 16 <= (size_t)st.st_size && !at; o += 8)
        if (memcmp(buf + o + 32, from->bytes, 16) == 0) at = o; /* the id is at +32 */
    assert_true(at > 0);
    uint32_t len = annal__get32(buf + at + 4);
    memcpy(buf + at + 32, to->bytes, 16);
    annal__put32(buf + at, annal__crc32c(0, buf + at + 4, len - 4));
    assert_int_equal(pwrite(fd, buf + at, len, (off_t)at), (ssize_t)len);
    close(fd);
    free(buf);
}

static void test_id_twice_in_log(void **state) {
    (void)state;
    for (int across_runs = 0; across_runs < 2; across_runs++) {
        char *dir = tu_tmpdir("ids-twice");
        uint64_t cache = across_runs ? CACHE : ANNAL__IDS_MEM_DEFAULT; /* else: one memtable */
        world w = {0};
        annal_db *db = open_store(dir, cache, 0, NULL);
        annal_uuid first, last;
        random_v4(&first);
        append_ids(db, &w, 0, &first, 1, ANNAL_EXPECT_ANY);
        for (int i = 0; i < 10; i++) append_batch(db, &w, 1 + i % 5, 40); /* past the memtable */
        random_v4(&last);
        append_ids(db, &w, 0, &last, 1, ANNAL_EXPECT_ANY);
        annal_db_close(db);
        forge_id(dir, &last, &first);

        annal_db_opts o;
        opts_for(&o, cache, 0, NULL);
        o.flags = 0;
        annal_err rc = annal_rebuild_index(dir, &o);
        found f = {{0}, 0, 0};
        if (!across_runs) {
            /* In one memtable the rebuild sees it: the store does not open. */
            assert_int_equal(rc, ANNAL_ECORRUPT);
        } else {
            /* Ids in runs the rebuild wrote are not probed again: it opens, and verify
             * reports the id stored twice. */
            assert_int_equal(rc, ANNAL_OK);
            assert_int_equal(annal_verify(dir, &o, on_damage, &f), ANNAL_ECORRUPT);
            assert_non_null(strstr(f.text, "event id entry missing or wrong"));
        }
        world_free(&w);
        tu_rmrf(dir);
        free(dir);
    }
}

int main(void) {
    seed_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicates),           cmocka_unit_test(test_killed_writer),
        cmocka_unit_test(test_damaged_runs),         cmocka_unit_test(test_compaction_readd),
        cmocka_unit_test(test_verify_beside_writer), cmocka_unit_test(test_id_twice_in_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
