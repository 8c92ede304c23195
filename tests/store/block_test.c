/* Index blocks (src/index/index.h): batches of 1..200 events, cut into blocks of 64,
 * read back through every stream, category and type, forward and backward, from every
 * starting point, and compared with a model of what was appended. Then again after
 * compaction erased the front of some blocks, after a reopen, and after a rebuild of the
 * index; annal_verify must find the index sound at each step. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "index/index.h"
#include "testutil.h"

#define NSTREAMS 5
#define NTYPES   3
#define MAXEV    6000

static const char *streams[NSTREAMS] = {"blk-0", "blk-1", "blk-2", "oth-0", "blk-3"};
static const char *types[NTYPES] = {"Alpha", "Beta", "Gamma"};

typedef struct mev {
    int stream, type;
    uint64_t pos, rev;
} mev;

typedef struct model {
    mev ev[MAXEV];
    size_t n;
    uint64_t count[NSTREAMS];
    uint64_t tb[NSTREAMS]; /* first visible revision */
} model;

static model M;
static uint64_t rng = 0x5eed;

static uint64_t rnd(uint64_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (rng >> 33) % n;
}

static annal_db *open_store(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = 64u << 10; /* several segments: compaction has sealed ones to work on */
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    return db;
}

/* Append a batch of n events to stream s; types all one (same) or mixed. */
static void append(annal_db *db, int s, size_t n, int same) {
    annal_event_data ev[200];
    char data[200][32];
    int ty[200];
    assert_true(n <= 200 && M.n + n <= MAXEV);
    int t0 = (int)rnd(NTYPES);
    for (size_t i = 0; i < n; i++) {
        memset(&ev[i], 0, sizeof ev[i]);
        ty[i] = same ? t0 : (int)rnd(NTYPES);
        snprintf(data[i], sizeof data[i], "{\"k\":%zu}", M.n + i);
        ev[i].type = types[ty[i]];
        ev[i].data = data[i];
        ev[i].data_len = strlen(data[i]);
        for (int b = 0; b < 16; b++) ev[i].id.bytes[b] = (uint8_t)rnd(256);
    }
    annal_append_result res;
    int64_t exp = M.count[s] ? (int64_t)M.count[s] - 1 : ANNAL_EXPECT_NO_STREAM;
    TU_OK(db, annal_append(db, streams[s], exp, ev, n, &res));
    assert_int_equal(res.first_revision, M.count[s]);
    for (size_t i = 0; i < n; i++)
        M.ev[M.n + i] = (mev){s, ty[i], res.first_position + i, M.count[s] + i};
    M.n += n;
    M.count[s] += n;
}

static int visible(const mev *e) { return e->rev >= M.tb[e->stream]; }

/* Does the event read match model event k? */
static void same(const annal_event *ev, const mev *e, size_t k) {
    char want[32];
    snprintf(want, sizeof want, "{\"k\":%zu}", k);
    assert_int_equal(ev->position, e->pos);
    assert_int_equal(ev->revision, e->rev);
    assert_string_equal(ev->stream, streams[e->stream]);
    assert_string_equal(ev->type, types[e->type]);
    assert_int_equal(ev->data_len, strlen(want));
    assert_memory_equal(ev->data, want, ev->data_len);
}

enum { BY_STREAM, BY_CAT, BY_TYPE };

static int member(const mev *e, int kind, int which) {
    if (kind == BY_STREAM) return e->stream == which;
    if (kind == BY_TYPE) return e->type == which;
    return strncmp(streams[e->stream], which ? "oth-" : "blk-", 4) == 0;
}

/* Read kind/which from `from` (a revision for streams, else a position) in one direction,
 * up to 150 events (or all of them once in a while), and compare with the model. */
static void check_read(annal_db *db, int kind, int which, uint64_t from, int backward) {
    annal_iter *it = NULL;
    unsigned fl = backward ? ANNAL_READ_BACKWARD : 0;
    uint64_t limit = rnd(10) == 0 ? 0 : 150, got = 0;
    annal_err rc = kind == BY_STREAM ? annal_read_stream(db, streams[which], from, fl, limit, &it)
                   : kind == BY_CAT
                       ? annal_read_category(db, which ? "oth" : "blk", from, fl, limit, &it)
                       : annal_read_type(db, types[which], from, fl, limit, &it);
    TU_OK(db, rc);
    const annal_event *ev;
    size_t k = backward ? M.n : 0;
    for (;; got++) {
        /* the next model event that this read must return */
        const mev *e = NULL;
        while (backward ? k > 0 : k < M.n) {
            const mev *c = &M.ev[backward ? k - 1 : k];
            uint64_t key = kind == BY_STREAM ? c->rev : c->pos;
            int in = member(c, kind, which) && visible(c) && (backward ? key <= from : key >= from);
            if (in) {
                e = c;
                break;
            }
            backward ? k-- : k++;
        }
        rc = annal_iter_next(it, &ev);
        if (!e || (limit && got == limit)) {
            TU_EXPECT(db, rc, ANNAL_END);
            break;
        }
        TU_OK(db, rc);
        same(ev, e, backward ? k - 1 : k);
        backward ? k-- : k++;
    }
    annal_iter_close(it);
}

static void check_all(annal_db *db) {
    for (int s = 0; s < NSTREAMS; s++) {
        for (uint64_t r = 0; r <= M.count[s]; r += 1 + rnd(4)) {
            if (r < M.tb[s]) continue;
            check_read(db, BY_STREAM, s, r, 0);
            if (r < M.count[s]) check_read(db, BY_STREAM, s, r, 1);
        }
        check_read(db, BY_STREAM, s, ANNAL_FROM_END, 1);
    }
    uint64_t end = M.n ? M.ev[M.n - 1].pos + 1 : 0;
    for (uint64_t p = 0; p <= end; p += 1 + rnd(12)) {
        for (int c = 0; c < 2; c++) {
            check_read(db, BY_CAT, c, p, 0);
            if (p < end) check_read(db, BY_CAT, c, p, 1);
        }
        for (int t = 0; t < NTYPES; t++) {
            check_read(db, BY_TYPE, t, p, 0);
            if (p < end) check_read(db, BY_TYPE, t, p, 1);
        }
    }
}

static void count_damage(void *ctx, const annal_damage *d) {
    fprintf(stderr, "verify: %s at position %" PRIu64 "\n", d->what, d->position);
    (*(int *)ctx)++;
}

static void verify_clean(const char *dir) {
    int found = 0;
    annal_db_opts o;
    annal_db_opts_init(&o);
    assert_int_equal(annal_verify(dir, &o, count_damage, &found), ANNAL_OK);
    assert_int_equal(found, 0);
}

static void fill(annal_db *db, size_t rounds) {
    static const size_t sizes[] = {1, 63, 64, 65, 128, 129, 200, 2, 7, 100, 64, 130};
    for (size_t r = 0; r < rounds; r++) {
        size_t n = sizes[rnd(sizeof sizes / sizeof sizes[0])];
        append(db, (int)rnd(NSTREAMS), n, rnd(3) == 0);
    }
}

/* A new store in a new directory (*dir, caller frees) with `rounds` random batches. */
static annal_db *new_store(const char *tag, size_t rounds, char **dir) {
    *dir = tu_tmpdir(tag);
    memset(&M, 0, sizeof M);
    annal_db *db = open_store(*dir);
    fill(db, rounds);
    return db;
}

static void test_blocks(void **state) {
    (void)state;
    char *dir;
    annal_db *db = new_store("blocks", 40, &dir);
    check_all(db);
    verify_clean(dir);

    /* Truncate two streams inside blocks, compact: blocks lose their front members. */
    for (int s = 0; s < 2; s++) {
        M.tb[s] = M.count[s] / 2 + 3;
        char js[64];
        snprintf(js, sizeof js, "{\"$tb\":%" PRIu64 "}", M.tb[s]);
        TU_OK(db, annal_stream_meta_set(db, streams[s], ANNAL_EXPECT_ANY, js, strlen(js), NULL));
    }
    fill(db, 8); /* seal the segments holding them */
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 0);
    check_all(db);
    fill(db, 6);
    check_all(db);
    annal_db_close(db);
    verify_clean(dir);

    db = open_store(dir);
    check_all(db);
    annal_db_close(db);
    annal_db_opts o;
    annal_db_opts_init(&o);
    TU_OK(NULL, annal_rebuild_index(dir, &o)); /* compacted batches come back as blocks of one */
    verify_clean(dir);
    db = open_store(dir);
    check_all(db);
    fill(db, 5);
    check_all(db);
    annal_db_close(db);
    verify_clean(dir);
    tu_rmrf(dir);
    free(dir);
}

/* An index written by an older layout (3: an entry per event) is rebuilt by the next
 * writer; a read-only opener refuses it until then. */
static void test_older_layout(void **state) {
    (void)state;
    char *dir;
    annal_db_close(new_store("blocks-old", 10, &dir));
    char idir[4096];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index idx;
    char detail[256];
    TU_OK(NULL, annal__index_open(&idx, idir, 0, 0, 1ull << 30, detail, sizeof detail));
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(idx.env, NULL, 0, &t), 0);
    MDB_val k = {4, "head"}, v;
    assert_int_equal(mdb_get(t, idx.meta, &k, &v), 0);
    uint8_t head[64];
    assert_int_equal(v.mv_size, sizeof head);
    memcpy(head, v.mv_data, sizeof head);
    annal__put64(head + 56, 3);
    v = (MDB_val){sizeof head, head};
    assert_int_equal(mdb_put(t, idx.meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    annal__index_close(&idx);

    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *ro = NULL;
    assert_int_equal(annal_db_open(dir, &o, &ro), ANNAL_EVERSION);
    annal_db *db = open_store(dir); /* the writer rebuilds it */
    check_all(db);
    annal_db_close(db);
    TU_OK(NULL, annal_db_open(dir, &o, &ro)); /* and readers read it again */
    annal_db_close(ro);
    verify_clean(dir);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_older_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
