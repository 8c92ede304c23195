/* Unit tests of the event-id LSM (src/index/ids.c) with a real LMDB env: lookups against
 * an in-test model after every flush (random and time-ordered ids), the binary-counter
 * shape of the run list, reopen, ids added again at a higher position, truncation of
 * the memtable, aborted flushes, damaged or missing runs, clean and reset.
 * Seed: ANNAL_TEST_SEED or the time (printed). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "index/ids.h"
#include "index/index.h"
#include "testutil.h"

static annal__index idx;
static char *dir;
static uint64_t g_rng;

/* ---- randomness ---- */

static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void random_id(annal_uuid *u) {
    uint64_t a = rnd(), b = rnd();
    memcpy(u->bytes, &a, 8);
    memcpy(u->bytes + 8, &b, 8);
    u->bytes[6] = (uint8_t)((u->bytes[6] & 0x0f) | 0x40); /* v4 */
    u->bytes[8] = (uint8_t)((u->bytes[8] & 0x3f) | 0x80);
}

/* A UUIDv7: 48-bit big-endian milliseconds, then random bits. */
static void time_id(annal_uuid *u, uint64_t ms) {
    random_id(u);
    for (int i = 0; i < 6; i++) u->bytes[i] = (uint8_t)(ms >> (40 - 8 * i));
    u->bytes[6] = (uint8_t)((u->bytes[6] & 0x0f) | 0x70);
}

static uint64_t loc_of(uint64_t pos) { return pos * 7 + 1; } /* what the tests record */

/* ---- the model: id -> newest position, plus every entry in order ---- */

#define MAP_BITS 17
#define MAP_CAP  (1u << MAP_BITS)

typedef struct entry {
    annal_uuid id;
    uint64_t pos;
} entry;

typedef struct model {
    entry *e; /* every add, in position order */
    size_t n;
    annal_uuid *key; /* map: MAP_CAP slots */
    uint64_t *val;
    uint8_t *used;
    size_t keys;
} model;

static void model_init(model *m) {
    memset(m, 0, sizeof *m);
    m->e = calloc(MAP_CAP, sizeof *m->e);
    m->key = calloc(MAP_CAP, sizeof *m->key);
    m->val = calloc(MAP_CAP, sizeof *m->val);
    m->used = calloc(MAP_CAP, 1);
    assert_true(m->e && m->key && m->val && m->used);
}

static void model_free(model *m) {
    free(m->e);
    free(m->key);
    free(m->val);
    free(m->used);
}

static size_t map_slot(const model *m, const annal_uuid *id) {
    uint64_t h = annal__get64(id->bytes) * 0x9E3779B97F4A7C15ull ^ annal__get64(id->bytes + 8);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    size_t i = (size_t)(h >> (64 - MAP_BITS));
    while (m->used[i] && memcmp(&m->key[i], id, 16) != 0) i = (i + 1) & (MAP_CAP - 1);
    return i;
}

/* Newest position of id in the model, or UINT64_MAX. */
static uint64_t model_get(const model *m, const annal_uuid *id) {
    size_t i = map_slot(m, id);
    return m->used[i] ? m->val[i] : UINT64_MAX;
}

static void model_put(model *m, const annal_uuid *id, uint64_t pos) {
    size_t i = map_slot(m, id);
    if (!m->used[i]) {
        assert_true(m->keys < MAP_CAP / 2);
        m->used[i] = 1;
        m->key[i] = *id;
        m->keys++;
    }
    m->val[i] = pos;
}

static void model_add(model *m, const annal_uuid *id, uint64_t pos) {
    assert_true(m->n < MAP_CAP);
    assert_true(m->n == 0 || pos > m->e[m->n - 1].pos);
    m->e[m->n++] = (entry){*id, pos};
    model_put(m, id, pos);
}

/* Forget the entries at positions >= pos, as annal__ids_truncate does. */
static void model_truncate(model *m, uint64_t pos) {
    while (m->n > 0 && m->e[m->n - 1].pos >= pos) m->n--;
    memset(m->used, 0, MAP_CAP);
    m->keys = 0;
    for (size_t i = 0; i < m->n; i++) model_put(m, &m->e[i].id, m->e[i].pos);
}

/* ---- LMDB and run-list helpers ---- */

static int setup(void **state) {
    (void)state;
    dir = tu_tmpdir("ids");
    char detail[256];
    return annal__index_open(&idx, dir, 0, 1, 64 << 20, detail, sizeof detail) == ANNAL_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    annal__index_close(&idx);
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static MDB_txn *wtxn(void) {
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(idx.env, NULL, 0, &t), 0);
    return t;
}

static annal_err try_open(uint64_t mem_max, annal__ids **out, char *detail, size_t dlen) {
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(idx.env, NULL, MDB_RDONLY, &t), 0);
    detail[0] = 0;
    annal_err rc = annal__ids_open(dir, t, idx.meta, mem_max, out, detail, dlen);
    mdb_txn_abort(t);
    return rc;
}

static annal__ids *open_ids(uint64_t mem_max) {
    char detail[512];
    annal__ids *ids = NULL;
    annal_err rc = try_open(mem_max, &ids, detail, sizeof detail);
    if (rc != ANNAL_OK) fail_msg("annal__ids_open: %s (%s)", annal_errname(rc), detail);
    assert_non_null(ids);
    return ids;
}

static void flush_commit(annal__ids *ids, uint64_t upto) {
    MDB_txn *t = wtxn();
    assert_int_equal(annal__ids_flush(ids, t, idx.meta, upto), ANNAL_OK);
    assert_int_equal(mdb_txn_commit(t), 0);
    annal__ids_flush_end(ids, 1);
}

typedef struct rinfo {
    uint64_t seq, count, from, to;
} rinfo;

typedef struct rlist {
    int present;
    uint64_t next, next_seq, n;
    rinfo r[64];
} rlist;

/* The run list as the meta table holds it (the layout ids.c writes). */
static void read_list(rlist *l) {
    memset(l, 0, sizeof *l);
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(idx.env, NULL, MDB_RDONLY, &t), 0);
    MDB_val k = {3, (void *)"ids"}, v;
    int rc = mdb_get(t, idx.meta, &k, &v);
    if (rc == 0) {
        const uint8_t *p = v.mv_data;
        assert_true(v.mv_size >= 32);
        assert_int_equal(annal__get64(p), 1);
        l->present = 1;
        l->next = annal__get64(p + 8);
        l->next_seq = annal__get64(p + 16);
        l->n = annal__get64(p + 24);
        assert_true(l->n <= 64);
        assert_int_equal(v.mv_size, 32 + l->n * 32);
        for (uint64_t i = 0; i < l->n; i++) {
            const uint8_t *q = p + 32 + i * 32;
            l->r[i] = (rinfo){annal__get64(q), annal__get64(q + 8), annal__get64(q + 16),
                              annal__get64(q + 24)};
        }
    } else {
        assert_int_equal(rc, MDB_NOTFOUND);
    }
    mdb_txn_abort(t);
}

static void run_path(uint64_t seq, char *out, size_t n) {
    snprintf(out, n, "%s/ids-%016" PRIx64 ".run", dir, seq);
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* Names of the run files in dir, sorted, as one string (for before/after comparisons). */
static void run_files(char *out, size_t n, int *count) {
    char names[256][64];
    int k = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, "ids-", 4) == 0 && k < 256 && strlen(e->d_name) < sizeof names[0])
            memcpy(names[k++], e->d_name, strlen(e->d_name) + 1);
    closedir(d);
    qsort(names, (size_t)k, sizeof names[0], cmp_name);
    out[0] = 0;
    size_t len = 0;
    for (int i = 0; i < k && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s ", names[i]);
    if (count) *count = k;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0) fail_msg("stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

/* The run list is well formed: runs chain from position 0 to next, sizes strictly
 * decrease towards the newest (the binary counter merged everything else), every listed
 * file exists with a plausible size and no other run file is left. */
static void check_list(const rlist *l, uint64_t next) {
    assert_true(l->present);
    assert_int_equal(l->next, next);
    uint64_t from = 0;
    for (uint64_t i = 0; i < l->n; i++) {
        const rinfo *r = &l->r[i];
        if (r->from != from || r->to <= r->from || r->count == 0 ||
            (i > 0 && r->count >= l->r[i - 1].count) || r->seq >= l->next_seq)
            fail_msg("run %" PRIu64 " of %" PRIu64 ": seq %" PRIu64 " count %" PRIu64 " [%" PRIu64
                     ", %" PRIu64 ") after [.., %" PRIu64 ")",
                     i, l->n, r->seq, r->count, r->from, r->to, from);
        from = r->to;
        char path[4300];
        run_path(r->seq, path, sizeof path);
        uint64_t sz = file_size(path);
        assert_true(sz >= 64 + r->count * 24 + 64);
        assert_int_equal(sz % 64, 0);
    }
    assert_int_equal(from, next);
    int files;
    char names[16384];
    run_files(names, sizeof names, &files);
    if ((uint64_t)files != l->n) fail_msg("%" PRIu64 " runs listed, files: %s", l->n, names);
}

/* Every id of the model is found with its newest position; the location is the recorded
 * one while it is in the memtable and UINT64_MAX once it is in a run. */
static void check_all(const annal__ids *ids, const model *m) {
    uint64_t next = annal__ids_next(ids);
    for (size_t i = 0; i < MAP_CAP; i++) {
        if (!m->used[i]) continue;
        uint64_t pos = 0, loc = 0;
        annal_err rc = annal__ids_get(ids, &m->key[i], &pos, &loc);
        if (rc != ANNAL_OK || pos != m->val[i])
            fail_msg("id with newest position %" PRIu64 ": %s, position %" PRIu64, m->val[i],
                     annal_errname(rc), pos);
        uint64_t want_loc = m->val[i] >= next ? loc_of(m->val[i]) : UINT64_MAX;
        if (loc != want_loc)
            fail_msg("id at %" PRIu64 " (next %" PRIu64 "): location %" PRIu64 ", want %" PRIu64,
                     pos, next, loc, want_loc);
    }
}

/* n ids never added are not found: random ones, and time-ordered ones next to the
 * model's (same milliseconds, other random bits) when ms_hi > 0. */
static void check_absent(const annal__ids *ids, const model *m, int n, uint64_t ms_lo,
                         uint64_t ms_hi) {
    for (int i = 0; i < n; i++) {
        annal_uuid u;
        if (ms_hi > ms_lo && (i & 1))
            time_id(&u, ms_lo + rnd() % (ms_hi - ms_lo));
        else
            random_id(&u);
        if (model_get(m, &u) != UINT64_MAX) continue; /* (never happens) */
        uint64_t pos = 12345, loc = 678;
        annal_err rc = annal__ids_get(ids, &u, &pos, &loc);
        if (rc != ANNAL_ENOTFOUND)
            fail_msg("an id never added: %s at position %" PRIu64, annal_errname(rc), pos);
    }
}

static uint64_t seed_from_env(void) {
    const char *s = getenv("ANNAL_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    print_message("ids_test seed %" PRIu64 " (ANNAL_TEST_SEED)\n", seed);
    return seed;
}

static int popcount64(uint64_t x) {
    int c = 0;
    for (; x; x &= x - 1) c++;
    return c;
}

/* ---- tests ---- */

/* Random ids, a flush whenever the memtable is full (every 100): after k flushes the
 * runs are the binary digits of k, each 100 * 2^d entries, oldest (largest) first. */
static void test_random_ids(void **state) {
    (void)state;
    const uint64_t mem = 100, total = 6400;
    model m;
    model_init(&m);
    annal__ids *ids = open_ids(mem);
    assert_int_equal(annal__ids_next(ids), 0);
    rlist l;
    read_list(&l);
    assert_false(l.present);
    uint64_t flushes = 0;
    for (uint64_t p = 0; p < total; p++) {
        assert_false(annal__ids_full(ids));
        annal_uuid u;
        random_id(&u);
        if (p % 3 == 0) {
            uint64_t op = 0, ol = 0;
            assert_int_equal(annal__ids_claim(ids, &u, p, loc_of(p), &op, &ol), ANNAL_OK);
        } else {
            assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        }
        model_add(&m, &u, p);
        assert_int_equal(annal__ids_mem_count(ids), p + 1 - flushes * mem);
        if (p % 41 == 0) { /* claiming a stored id: the newest entry, nothing added */
            const entry *e = &m.e[rnd() % m.n];
            uint64_t op = 0, ol = 0, before = annal__ids_mem_count(ids);
            assert_int_equal(annal__ids_claim(ids, &e->id, p + 1, 0, &op, &ol), ANNAL_EDUPLICATE);
            assert_int_equal(op, e->pos);
            assert_int_equal(ol, e->pos >= annal__ids_next(ids) ? loc_of(e->pos) : UINT64_MAX);
            assert_int_equal(annal__ids_mem_count(ids), before);
        }
        if (annal__ids_mem_count(ids) < mem) continue;
        assert_true(annal__ids_full(ids));
        flush_commit(ids, p + 1);
        flushes++;
        assert_int_equal(annal__ids_mem_count(ids), 0);
        assert_false(annal__ids_full(ids));
        assert_int_equal(annal__ids_next(ids), p + 1);
        read_list(&l);
        check_list(&l, p + 1);
        assert_int_equal(l.n, popcount64(flushes));
        for (uint64_t i = 0, bit = 63;; bit--) { /* sizes: the set bits, high to low */
            if (flushes >> bit & 1) {
                assert_true(i < l.n);
                assert_int_equal(l.r[i].count, mem << bit);
                i++;
            }
            if (bit == 0) break;
        }
        check_all(ids, &m);
        check_absent(ids, &m, 1500, 0, 0);
        assert_int_equal(annal__ids_check(ids, (char[256]){0}, 256), ANNAL_OK);
    }
    assert_int_equal(flushes, total / mem);
    read_list(&l);
    assert_int_equal(l.n, 1); /* 64 flushes: one run of 6400 */
    assert_int_equal(l.r[0].count, total);

    /* Ids added since the last flush live only in memory: a reopen finds the same runs
     * and `next`, and leaves the newer ids to be reread from the log. */
    uint64_t last_flush = total;
    annal_uuid late[50];
    for (uint64_t i = 0; i < 50; i++) {
        random_id(&late[i]);
        assert_int_equal(annal__ids_add(ids, &late[i], total + i, loc_of(total + i)), ANNAL_OK);
    }
    uint64_t pos, loc;
    assert_int_equal(annal__ids_get(ids, &late[7], &pos, &loc), ANNAL_OK);
    assert_int_equal(annal__ids_sync(ids), 0);
    annal__ids_close(ids);
    ids = open_ids(mem);
    assert_int_equal(annal__ids_next(ids), last_flush);
    assert_int_equal(annal__ids_mem_count(ids), 0);
    rlist again;
    read_list(&again);
    assert_memory_equal(&again, &l, sizeof l);
    check_all(ids, &m);
    for (int i = 0; i < 50; i++)
        assert_int_equal(annal__ids_get(ids, &late[i], &pos, &loc), ANNAL_ENOTFOUND);
    check_absent(ids, &m, 3000, 0, 0);
    assert_int_equal(annal__ids_check(ids, (char[256]){0}, 256), ANNAL_OK);
    annal__ids_close(ids);
    model_free(&m);
}

/* Time-ordered ids (UUIDv7, many per millisecond) flushed at random sizes, including an
 * empty flush; the never-added probes share the stored ids' milliseconds. */
static void test_time_ordered_ids(void **state) {
    (void)state;
    model m;
    model_init(&m);
    annal__ids *ids = open_ids(64);
    const uint64_t ms0 = 1700000000000ull, total = 8000;
    uint64_t next_flush = 1 + rnd() % 300, flushes = 0;
    rlist l;
    for (uint64_t p = 0; p < total; p++) {
        annal_uuid u;
        time_id(&u, ms0 + p / 8);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
        if (p + 1 < next_flush) continue;
        flush_commit(ids, p + 1);
        flushes++;
        next_flush = p + 1 + 1 + rnd() % 300;
        read_list(&l);
        check_list(&l, p + 1);
        uint64_t sum = 0;
        for (uint64_t i = 0; i < l.n; i++) sum += l.r[i].count;
        assert_int_equal(sum, p + 1); /* every id distinct: merges lose none */
        check_all(ids, &m);
        check_absent(ids, &m, 1000, ms0, ms0 + p / 8 + 1);
    }
    /* the tail in the memtable, then an empty flush: no new run, no change */
    check_all(ids, &m);
    uint64_t tail_end = total;
    flush_commit(ids, tail_end);
    read_list(&l);
    check_list(&l, tail_end);
    char before[16384], after[16384];
    run_files(before, sizeof before, NULL);
    flush_commit(ids, tail_end);
    run_files(after, sizeof after, NULL);
    assert_string_equal(before, after);
    rlist l2;
    read_list(&l2);
    assert_memory_equal(&l, &l2, sizeof l);
    check_all(ids, &m);
    check_absent(ids, &m, 4000, ms0, ms0 + total / 8);
    assert_int_equal(annal__ids_check(ids, (char[256]){0}, 256), ANNAL_OK);
    annal__ids_close(ids);
    /* reopen: the same answers from the runs alone */
    ids = open_ids(64);
    assert_int_equal(annal__ids_next(ids), tail_end);
    check_all(ids, &m);
    check_absent(ids, &m, 2000, ms0, ms0 + total / 8);
    annal__ids_close(ids);
    model_free(&m);
}

static uint64_t get_pos(const annal__ids *ids, const annal_uuid *id, uint64_t *loc) {
    uint64_t pos = UINT64_MAX, l = 0;
    annal_err rc = annal__ids_get(ids, id, &pos, &l);
    if (loc) *loc = l;
    return rc == ANNAL_OK ? pos : rc == ANNAL_ENOTFOUND ? UINT64_MAX : (fail(), 0);
}

/* An id added again at a higher position (its first event was erased by compaction):
 * the newest entry wins in the memtable, in a run, across runs and through merges. */
static void test_readd(void **state) {
    (void)state;
    model m;
    model_init(&m);
    annal__ids *ids = open_ids(50);
    annal_uuid x, u;
    uint64_t p = 0, loc;
    random_id(&x);
    assert_int_equal(annal__ids_add(ids, &x, p, loc_of(p)), ANNAL_OK);
    model_add(&m, &x, p++);
    for (int i = 0; i < 10; i++, p++) {
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    /* both entries in the memtable */
    assert_int_equal(annal__ids_add(ids, &x, 11, loc_of(11)), ANNAL_OK);
    assert_int_equal(get_pos(ids, &x, &loc), 11);
    assert_int_equal(loc, loc_of(11));
    uint64_t op, ol;
    assert_int_equal(annal__ids_claim(ids, &x, 12, 0, &op, &ol), ANNAL_EDUPLICATE);
    assert_int_equal(op, 11);
    assert_int_equal(ol, loc_of(11));
    annal__ids_truncate(ids, 11); /* the newer one gone: the older one shows again */
    assert_int_equal(get_pos(ids, &x, &loc), 0);
    assert_int_equal(loc, loc_of(0));
    assert_int_equal(annal__ids_add(ids, &x, 11, loc_of(11)), ANNAL_OK);
    model_add(&m, &x, 11);
    /* one run: the newest entry per id only */
    flush_commit(ids, 12);
    assert_int_equal(get_pos(ids, &x, &loc), 11);
    assert_int_equal(loc, UINT64_MAX);
    rlist l;
    read_list(&l);
    check_list(&l, 12);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].count, 11); /* x once */
    /* the memtable over a run */
    assert_int_equal(annal__ids_add(ids, &x, 12, loc_of(12)), ANNAL_OK);
    model_add(&m, &x, 12);
    assert_int_equal(get_pos(ids, &x, &loc), 12);
    assert_int_equal(loc, loc_of(12));
    /* a newer run over an older one: [11 ids, x] */
    flush_commit(ids, 13);
    read_list(&l);
    check_list(&l, 13);
    assert_int_equal(l.n, 2);
    assert_int_equal(get_pos(ids, &x, &loc), 12);
    assert_int_equal(loc, UINT64_MAX);
    /* 10 more: [11, 1, 10] merges to [11, 11] and then to one run of 21 (x once) */
    p = 13;
    for (int i = 0; i < 10; i++, p++) {
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    flush_commit(ids, p);
    read_list(&l);
    check_list(&l, p);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].count, 21);
    assert_int_equal(get_pos(ids, &x, NULL), 12);
    check_all(ids, &m);

    /* Then at random: a fifth of the adds reuse an earlier id, flushes when full; in the
     * second half the ids are time-ordered (one sort bucket) and reused ones recent, so
     * that a memtable holds an id more than once. */
    for (int i = 0; i < 4000; i++, p++) {
        if (rnd() % 5 == 0)
            u = m.e[i < 2000 ? rnd() % m.n : m.n - 1 - rnd() % 40].id;
        else if (i < 2000)
            random_id(&u);
        else
            time_id(&u, 1700000000000ull + (uint64_t)i / 4);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
        if (i % 97 == 0) check_all(ids, &m);
        if (annal__ids_full(ids)) {
            flush_commit(ids, p + 1);
            read_list(&l);
            check_list(&l, p + 1);
            check_all(ids, &m);
            check_absent(ids, &m, 300, 0, 0);
        }
    }
    check_all(ids, &m);
    assert_int_equal(annal__ids_check(ids, (char[256]){0}, 256), ANNAL_OK);
    uint64_t upto = annal__ids_next(ids);
    annal__ids_close(ids);
    /* after a reopen, the runs alone answer for what they cover */
    ids = open_ids(50);
    model_truncate(&m, upto);
    check_all(ids, &m);
    annal__ids_close(ids);
    model_free(&m);
}

/* Truncating the memtable removes exactly the entries at positions >= pos, also after
 * the hash table grew several times and with ids present more than once. */
static void test_truncate(void **state) {
    (void)state;
    for (int reserve = 0; reserve < 2; reserve++) {
        model m;
        model_init(&m);
        annal__ids *ids = open_ids(reserve ? 6000 : 1000000);
        if (reserve) assert_int_equal(annal__ids_reserve(ids), ANNAL_OK);
        uint64_t p = 0;
        annal_uuid u;
        for (; p < 5000; p++) { /* grows 1024 -> 16384 slots unless reserved */
            if (p % 10 == 9)
                u = m.e[rnd() % m.n].id;
            else
                random_id(&u);
            assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
            model_add(&m, &u, p);
        }
        check_all(ids, &m);
        entry *all = malloc(m.n * sizeof *all); /* every entry, to probe the removed ones */
        assert_non_null(all);
        memcpy(all, m.e, m.n * sizeof *all);
        size_t nall = m.n;

        uint64_t cuts[] = {6000, 3000, 2999, 1500, 511, 512};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            uint64_t cut = cuts[c];
            annal__ids_truncate(ids, cut);
            model_truncate(&m, cut);
            assert_int_equal(annal__ids_mem_count(ids), m.n);
            check_all(ids, &m);
            for (size_t i = 0; i < nall; i++) {
                uint64_t want = model_get(&m, &all[i].id);
                uint64_t got = get_pos(ids, &all[i].id, NULL);
                if (got != want)
                    fail_msg("cut %" PRIu64 ": entry at %" PRIu64 " reads %" PRIu64
                             ", want %" PRIu64,
                             cut, all[i].pos, got, want);
            }
            /* adding goes on from the cut: new ids and ids that were cut off */
            if (c == 2) {
                for (p = cut; p < cut + 1200; p++) {
                    if (p % 3 == 0)
                        u = all[p % nall].id;
                    else
                        random_id(&u);
                    assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
                    model_add(&m, &u, p);
                }
                check_all(ids, &m);
            }
        }
        annal__ids_truncate(ids, 0);
        assert_int_equal(annal__ids_mem_count(ids), 0);
        for (size_t i = 0; i < nall; i++)
            assert_int_equal(get_pos(ids, &all[i].id, NULL), UINT64_MAX);
        /* and it fills again */
        model_truncate(&m, 0);
        for (p = 0; p < 2000; p++) {
            random_id(&u);
            assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
            model_add(&m, &u, p);
        }
        check_all(ids, &m);
        check_absent(ids, &m, 2000, 0, 0);

        /* with runs below: only the memtable is cut */
        flush_commit(ids, 2000);
        for (p = 2000; p < 2300; p++) {
            random_id(&u);
            assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
            model_add(&m, &u, p);
        }
        annal__ids_truncate(ids, 2100);
        model_truncate(&m, 2100);
        assert_int_equal(annal__ids_mem_count(ids), 100);
        check_all(ids, &m);
        assert_int_equal(get_pos(ids, &all[5].id, NULL), UINT64_MAX);
        annal__ids_close(ids);
        free(all);
        model_free(&m);
        /* the next round starts with no runs */
        annal__ids_remove_all(dir);
        MDB_txn *t = wtxn();
        MDB_val k = {3, (void *)"ids"};
        assert_int_equal(mdb_del(t, idx.meta, &k, NULL), 0);
        assert_int_equal(mdb_txn_commit(t), 0);
    }
}

/* A flush whose transaction does not commit leaves the files, the list, the memtable
 * and every answer as they were; so does closing the handle with a flush pending. */
static void test_flush_aborted(void **state) {
    (void)state;
    model m;
    model_init(&m);
    annal__ids *ids = open_ids(100);
    uint64_t p = 0;
    annal_uuid u;
    for (; p < 100; p++) {
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    flush_commit(ids, p);
    for (; p < 200; p++) {
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    assert_true(annal__ids_full(ids));
    rlist l0, l1;
    read_list(&l0);
    char before[16384], during[16384], after[16384];
    int nb, nd, na;
    run_files(before, sizeof before, &nb);
    assert_int_equal(nb, 1);

    for (int how = 1; how >= 0; how--) { /* the abort last: it delays the next flush */
        MDB_txn *t = wtxn();
        assert_int_equal(annal__ids_flush(ids, t, idx.meta, p), ANNAL_OK);
        run_files(during, sizeof during, &nd);
        assert_int_equal(nd, 3); /* the new run and its merge with the old one */
        if (how == 0) {
            mdb_txn_abort(t);
            annal__ids_flush_end(ids, 0);
        } else { /* the handle closed before the outcome is known */
            annal__ids_close(ids);
            mdb_txn_abort(t);
            ids = open_ids(100);
            for (size_t i = 100; i < m.n; i++)
                assert_int_equal(annal__ids_add(ids, &m.e[i].id, m.e[i].pos, loc_of(m.e[i].pos)),
                                 ANNAL_OK);
        }
        run_files(after, sizeof after, &na);
        assert_string_equal(before, after);
        read_list(&l1);
        assert_memory_equal(&l0, &l1, sizeof l0);
        assert_int_equal(annal__ids_mem_count(ids), 100);
        assert_int_equal(annal__ids_next(ids), 100);
        check_all(ids, &m);
        check_absent(ids, &m, 1000, 0, 0);
    }
    /* after a failed flush the next waits for a quarter more entries */
    assert_false(annal__ids_full(ids));
    for (; p < 225; p++) {
        assert_false(annal__ids_full(ids));
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    assert_true(annal__ids_full(ids));
    flush_commit(ids, p);
    read_list(&l1);
    check_list(&l1, p);
    assert_int_equal(l1.n, 1);
    assert_int_equal(l1.r[0].count, 225);
    check_all(ids, &m);
    annal__ids_close(ids);
    ids = open_ids(100);
    check_all(ids, &m);
    assert_int_equal(annal__ids_check(ids, (char[256]){0}, 256), ANNAL_OK);
    annal__ids_close(ids);
    model_free(&m);
}

static void flip_byte(const char *path, uint64_t off) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spill(const char *path, const uint8_t *b, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

static void expect_open_fails(annal_err want, const char *what) {
    annal__ids *ids = NULL;
    char detail[512];
    annal_err rc = try_open(100, &ids, detail, sizeof detail);
    if (rc != want)
        fail_msg("%s: open returned %s (%s), want %s", what, annal_errname(rc), detail,
                 annal_errname(want));
    assert_true(strlen(detail) > 0);
    print_message("%s: %s\n", what, detail);
}

/* Damaged, short, long, foreign and missing runs; a damaged run list; clean and reset. */
static void test_damage(void **state) {
    (void)state;
    model m;
    model_init(&m);
    annal__ids *ids = open_ids(100);
    uint64_t p = 0;
    annal_uuid u;
    for (; p < 700; p++) { /* 7 flushes: runs of 400, 200, 100 */
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
        if (annal__ids_full(ids)) flush_commit(ids, p + 1);
    }
    annal__ids_close(ids);
    rlist l;
    read_list(&l);
    check_list(&l, 700);
    assert_int_equal(l.n, 3);
    char path[4300], other[4300], detail[512];
    run_path(l.r[1].seq, path, sizeof path);
    run_path(l.r[2].seq, other, sizeof other);
    uint64_t size = file_size(path);

    /* a flipped byte in the entries or in the filter: the open (header only) succeeds,
     * the check finds it; flipped back, the check passes again */
    uint64_t offs[] = {64 + 100 * 24 + 3, 64 + 150 * 24 + 18, size - 100};
    for (size_t i = 0; i < 3; i++) {
        ids = open_ids(100);
        assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_OK);
        flip_byte(path, offs[i]);
        detail[0] = 0;
        assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_ECORRUPT);
        assert_non_null(strstr(detail, "ids-"));
        annal__ids_close(ids);
        ids = open_ids(100); /* also as a fresh open sees it */
        assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_ECORRUPT);
        flip_byte(path, offs[i]);
        assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_OK);
        annal__ids_close(ids);
    }
    /* a damaged header: the open refuses the run */
    flip_byte(path, 20);
    expect_open_fails(ANNAL_ECORRUPT, "damaged header");
    flip_byte(path, 20);
    /* short, long */
    size_t len;
    uint8_t *copy = slurp(path, &len);
    assert_int_equal(len, size);
    assert_int_equal(truncate(path, (off_t)(size - 64)), 0);
    expect_open_fails(ANNAL_ECORRUPT, "truncated run");
    assert_int_equal(truncate(path, 40), 0);
    expect_open_fails(ANNAL_ECORRUPT, "run shorter than its header");
    spill(path, copy, len);
    assert_int_equal(truncate(path, (off_t)(size + 64)), 0);
    expect_open_fails(ANNAL_ECORRUPT, "run with bytes after its end");
    spill(path, copy, len);
    /* another run's file under this name */
    size_t olen;
    uint8_t *ocopy = slurp(other, &olen);
    spill(path, ocopy, olen);
    expect_open_fails(ANNAL_ECORRUPT, "another run's file");
    spill(path, copy, len);
    /* missing */
    assert_int_equal(unlink(path), 0);
    expect_open_fails(ANNAL_ENOTFOUND, "missing run");
    spill(path, copy, len);
    free(ocopy);
    free(copy);
    /* a damaged run list */
    MDB_txn *t = wtxn();
    MDB_val k = {3, (void *)"ids"}, v;
    assert_int_equal(mdb_get(t, idx.meta, &k, &v), 0);
    uint8_t *saved = malloc(v.mv_size);
    assert_non_null(saved);
    size_t saved_len = v.mv_size;
    memcpy(saved, v.mv_data, saved_len);
    MDB_val bad = {saved_len - 8, saved};
    assert_int_equal(mdb_put(t, idx.meta, &k, &bad, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    expect_open_fails(ANNAL_ECORRUPT, "short run list");
    t = wtxn();
    MDB_val good = {saved_len, saved};
    assert_int_equal(mdb_put(t, idx.meta, &k, &good, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    free(saved);

    /* whole again */
    ids = open_ids(100);
    assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_OK);
    check_all(ids, &m);

    /* clean: an orphan run goes, listed runs and other names stay */
    char orphan[4300], odd[4300], odd2[4300], names[16384];
    snprintf(orphan, sizeof orphan, "%s/ids-00000000000000ff.run", dir);
    snprintf(odd, sizeof odd, "%s/ids-0000000000000zzz.run", dir);
    snprintf(odd2, sizeof odd2, "%s/ids-notes.txt", dir);
    for (uint64_t i = 0; i < l.n; i++) assert_true(l.r[i].seq != 0xff);
    spill(orphan, (const uint8_t *)"orphan", 6);
    spill(odd, (const uint8_t *)"odd", 3);
    spill(odd2, (const uint8_t *)"odd", 3);
    annal__ids_clean(ids);
    assert_int_equal(access(orphan, F_OK), -1);
    assert_int_equal(access(odd, F_OK), 0);
    assert_int_equal(access(odd2, F_OK), 0);
    for (uint64_t i = 0; i < l.n; i++) {
        run_path(l.r[i].seq, path, sizeof path);
        assert_int_equal(access(path, F_OK), 0);
    }
    check_all(ids, &m);
    unlink(odd);
    unlink(odd2);
    run_files(names, sizeof names, NULL);
    check_list(&l, 700);

    /* reset: every run file gone, nothing found, the next flush starts at 0 */
    spill(orphan, (const uint8_t *)"orphan", 6);
    annal__ids_reset(ids);
    int files;
    run_files(names, sizeof names, &files);
    assert_int_equal(files, 0);
    assert_int_equal(annal__ids_next(ids), 0);
    assert_int_equal(annal__ids_mem_count(ids), 0);
    for (size_t i = 0; i < m.n; i++) assert_int_equal(get_pos(ids, &m.e[i].id, NULL), UINT64_MAX);
    assert_int_equal(access(orphan, F_OK), -1);
    char mdb[4300];
    snprintf(mdb, sizeof mdb, "%s/data.mdb", dir);
    assert_int_equal(access(mdb, F_OK), 0); /* only run files go */
    model_truncate(&m, 0);
    for (p = 0; p < 150; p++) {
        random_id(&u);
        assert_int_equal(annal__ids_add(ids, &u, p, loc_of(p)), ANNAL_OK);
        model_add(&m, &u, p);
    }
    flush_commit(ids, 150);
    read_list(&l);
    check_list(&l, 150);
    assert_int_equal(l.n, 1);
    assert_int_equal(annal__ids_check(ids, detail, sizeof detail), ANNAL_OK);
    check_all(ids, &m);
    annal__ids_close(ids);
    annal__ids_remove_all(dir);
    run_files(names, sizeof names, &files);
    assert_int_equal(files, 0);
    expect_open_fails(ANNAL_ENOTFOUND, "every run removed");
    model_free(&m);
}

int main(void) {
    g_rng = seed_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_random_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_ordered_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_aborted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
