/* Unit tests of the LMDB index layer (src/index/index.c): head, stream records, event
 * entries with duplicate-id detection, revision and position lookups, the trust file. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/index.h"
#include "testutil.h"

static annal__index idx;
static char *dir;
static char data_mdb[4200]; /* dir's LMDB data file */

static int setup(void **state) {
    (void)state;
    dir = tu_tmpdir("index");
    snprintf(data_mdb, sizeof data_mdb, "%s/data.mdb", dir);
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

static void head_round_trip(void **state) {
    (void)state;
    MDB_txn *t = wtxn();
    annal__index_head h, g;
    assert_int_equal(annal__index_head_get(t, &idx, &g), ANNAL_OK); /* empty: zeros */
    assert_int_equal(g.next_pos, 0);
    h = (annal__index_head){123, 0x500000040ull,      0x5000000a0ull, 7, 6, 1700000000000000001LL,
                            3,   ANNAL__INDEX_VERSION};
    assert_int_equal(annal__index_head_put(t, &idx, &h), ANNAL_OK);
    assert_int_equal(annal__index_head_get(t, &idx, &g), ANNAL_OK);
    assert_memory_equal(&g, &h, sizeof h);
    mdb_txn_abort(t);
}

static void events_and_lookups(void **state) {
    (void)state;
    MDB_txn *t = wtxn();
    annal__stream_rec sr = annal__stream_rec_new(9, 42), got;
    assert_int_equal(annal__index_stream_get(t, &idx, "acct-1", 6, &got), ANNAL_ENOTFOUND);
    /* revisions 0..69 at positions 1000..1069: a block of 64 and one of 6 */
    annal__block b0 = {1000, (1ull << 32) | 64, ~0ull, 0},
                 b1 = {1064, (1ull << 32) | 4096, 0x3f, 64};
    assert_int_equal(annal__index_rev_put(t, &idx, sr.id, &b0), ANNAL_OK);
    assert_int_equal(annal__index_rev_put(t, &idx, sr.id, &b1), ANNAL_OK);
    for (uint64_t p = 1024; p < 1070; p += ANNAL__POS_STRIDE)
        assert_int_equal(annal__index_pos_put(t, &idx, p, (1ull << 32) | (64 + 8 * (p - 1000))),
                         ANNAL_OK);
    sr.count = 70;
    sr.last_pos = 1069;
    assert_int_equal(annal__index_stream_put(t, &idx, "acct-1", 6, &sr), ANNAL_OK);
    assert_int_equal(annal__index_stream_get(t, &idx, "acct-1", 6, &got), ANNAL_OK);
    assert_int_equal(got.count, 70);
    assert_int_equal(got.last_pos, 1069);
    assert_int_equal(got.created_ns, 42);
    annal__block b;
    assert_int_equal(annal__index_rev_block(t, &idx, 9, 63, &b), ANNAL_OK);
    assert_int_equal(b.first_rev, 0);
    assert_int_equal(b.first_pos, 1000);
    assert_int_equal(annal__index_rev_block(t, &idx, 9, 69, &b), ANNAL_OK);
    assert_int_equal(b.first_rev, 64);
    assert_int_equal(b.loc, (1ull << 32) | 4096);
    assert_int_equal(annal__block_end(&b), 1070);
    assert_int_equal(annal__index_rev_block(t, &idx, 9, 70, &b), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_rev_block(t, &idx, 8, 0, &b), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_rev_block(t, &idx, 10, 0, &b), ANNAL_ENOTFOUND);
    /* a cleared bit (an erased event) is not found; the others are */
    b1.mask = 0x3b;
    assert_int_equal(annal__index_rev_put(t, &idx, sr.id, &b1), ANNAL_OK);
    assert_int_equal(annal__index_rev_block(t, &idx, 9, 66, &b), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_rev_block(t, &idx, 9, 67, &b), ANNAL_OK);
    /* stride entries exist for positions that are multiples of the stride */
    uint64_t base, loc;
    assert_int_equal(annal__index_pos_floor(t, &idx, 1030, &base, &loc), ANNAL_OK);
    assert_int_equal(base, 1024);
    assert_int_equal(loc, (1ull << 32) | (64 + 8 * 24));
    assert_int_equal(annal__index_pos_floor(t, &idx, 999, &base, &loc), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_pos_put(t, &idx, 1024, 0), ANNAL_ECORRUPT); /* not above */
    mdb_txn_abort(t);
}

static void tag_blocks(void **state) {
    (void)state;
    MDB_txn *t = wtxn();
    annal__block bl[3] = {{100, 1, 0x5, 0}, {164, 2, 0x8, 0}, {300, 3, 1ull << 63, 0}};
    uint8_t vals[3 * ANNAL__BLOCK_VAL];
    for (int i = 0; i < 3; i++) annal__block_encode(&bl[i], vals + i * ANNAL__BLOCK_VAL);
    assert_int_equal(annal__index_tag_put_many(t, idx.types, "Paid", 4, vals, 2), ANNAL_OK);
    assert_int_equal(
        annal__index_tag_put_many(t, idx.types, "Paid", 4, vals + 2 * ANNAL__BLOCK_VAL, 1),
        ANNAL_OK);
    /* out of order: falls back to single puts; a repeated block is a no-op */
    assert_int_equal(annal__index_tag_put_many(t, idx.types, "Paid", 4, vals, 1), ANNAL_OK);
    annal__block b;
    uint64_t members[] = {100, 102, 167, 363},
             others[] = {99, 101, 103, 164, 166, 168, 300, 362, 364};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, members[i], &b), ANNAL_OK);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, others[i], &b),
                         ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_tag_block(t, idx.types, "Pai", 3, 100, &b), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, 167, &b), ANNAL_OK);
    assert_int_equal(b.first_pos, 164);
    assert_int_equal(b.loc, 2);
    /* replace: move a block, then drop one */
    annal__block moved = bl[0];
    moved.mask = 0x4, moved.loc = 7;
    assert_int_equal(annal__index_tag_replace(t, idx.types, "Paid", 4, &bl[0], &moved), ANNAL_OK);
    assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, 100, &b), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, 102, &b), ANNAL_OK);
    assert_int_equal(b.loc, 7);
    annal__block none = bl[1];
    none.mask = 0;
    assert_int_equal(annal__index_tag_replace(t, idx.types, "Paid", 4, &bl[1], &none), ANNAL_OK);
    assert_int_equal(annal__index_tag_block(t, idx.types, "Paid", 4, 167, &b), ANNAL_ENOTFOUND);
    /* replacing a block that is not there is an error */
    assert_int_equal(annal__index_tag_replace(t, idx.types, "Paid", 4, &bl[1], &none),
                     ANNAL_ENOTFOUND);
    mdb_txn_abort(t);
}

static void trust_file(void **state) {
    (void)state;
    annal__index_state st = {1, "boot-a"}, got;
    assert_int_equal(annal__index_state_write(dir, &st), 0);
    assert_int_equal(annal__index_state_read(dir, &got), ANNAL_OK);
    assert_int_equal(got.clean, 1);
    assert_string_equal(got.boot_id, "boot-a");
    char path[4096];
    snprintf(path, sizeof path, "%s/state", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("something else\n", f);
    fclose(f);
    assert_int_equal(annal__index_state_read(dir, &got), ANNAL_ECORRUPT);
    unlink(path);
    assert_int_equal(annal__index_state_read(dir, &got), ANNAL_ENOTFOUND);
    char boot[40];
    annal__boot_id(boot);
    assert_true(strlen(boot) > 8); /* this machine has a boot id */
}

/* A read transaction of this process held for long (verify walks the whole log inside
 * one) keeps LMDB from moving the map. The writer must go on regardless, and whatever
 * a transaction may write must be allocated before it begins. */
static atomic_int reader_state; /* 1: holding its transaction; 2: told to end it */

static void *long_reader(void *p) {
    (void)p;
    MDB_txn *t;
    assert_int_equal(annal__txn_begin(&idx, MDB_RDONLY, &t), 0);
    reader_state = 1;
    while (reader_state == 1) usleep(1000);
    annal__txn_abort(&idx, t);
    return NULL;
}

static uint64_t used_bytes(void) {
    MDB_envinfo in;
    MDB_stat st;
    assert_int_equal(mdb_env_info(idx.env, &in), 0);
    assert_int_equal(mdb_env_stat(idx.env, &st), 0);
    return ((uint64_t)in.me_last_pgno + 1) * st.ms_psize;
}

/* A writer maps the index writable wherever the filesystem can allocate (else these
 * tests have nothing to check). */
static int writable_map(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/probe", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    int ok = posix_fallocate(fd, 0, 1 << 20) == 0;
    close(fd);
    unlink(path);
    if (!ok)
        printf("skipped: this filesystem cannot allocate (no MDB_WRITEMAP)\n");
    else
        assert_true(annal__index_writemap(&idx));
    return ok;
}

static void grows_beside_long_read(void **state) {
    (void)state;
    if (!writable_map()) return;
    annal__index_headroom(&idx);
    pthread_t th;
    reader_state = 0;
    assert_int_equal(pthread_create(&th, NULL, long_reader, NULL), 0);
    while (reader_state != 1) usleep(1000);
    /* The reader pins every page: each transaction adds its copies to the file. */
    uint64_t start = used_bytes(), n = 0, txns = 0, most = 0;
    while (used_bytes() < start + (24u << 20)) {
        uint64_t need = annal__index_need(&idx, 500, 500 * 40);
        assert_int_equal(annal__index_grow(&idx, need, 0), ANNAL_OK);
        struct stat st;
        assert_int_equal(stat(data_mdb, &st), 0);
        uint64_t before = used_bytes();
        assert_true((uint64_t)st.st_blocks * 512 >= before + need); /* allocated */
        MDB_txn *t;
        assert_int_equal(annal__txn_begin(&idx, 0, &t), 0);
        for (int i = 0; i < 500; i++, n++) {
            char name[32];
            int len = snprintf(name, sizeof name, "s-%016llx",
                               (unsigned long long)(n * 0x9e3779b97f4a7c15ull));
            annal__stream_rec sr = annal__stream_rec_new(n, 1);
            assert_int_equal(annal__index_stream_put(t, &idx, name, (size_t)len, &sr), ANNAL_OK);
        }
        assert_int_equal(annal__txn_commit(&idx, t), 0);
        /* the bound held: every page copied is new here, as the reader keeps the old */
        uint64_t grew = used_bytes() - before;
        assert_true(grew <= need);
        if (grew > most) most = grew;
        txns++;
    }
    reader_state = 2;
    pthread_join(th, NULL);
    printf("beside a long read: %llu transactions (at most %llu KiB each, bound %llu KiB), "
           "index %llu -> %llu MiB\n",
           (unsigned long long)txns, (unsigned long long)(most >> 10),
           (unsigned long long)(annal__index_need(&idx, 500, 500 * 40) >> 10),
           (unsigned long long)(start >> 20), (unsigned long long)(used_bytes() >> 20));
    MDB_txn *t; /* what was written is there */
    assert_int_equal(annal__txn_begin(&idx, MDB_RDONLY, &t), 0);
    annal__stream_rec got;
    char name[32];
    int len = snprintf(name, sizeof name, "s-%016llx",
                       (unsigned long long)((n - 1) * 0x9e3779b97f4a7c15ull));
    assert_int_equal(annal__index_stream_get(t, &idx, name, (size_t)len, &got), ANNAL_OK);
    annal__txn_abort(&idx, t);
}

/* A writer that opens an environment kept by read-only handles of the process (its
 * writer closed) catches up with all of its map allocated, as at a first open. */
static void writer_again_unsparse(void **state) {
    (void)state;
    if (!writable_map()) return;
    annal__index_headroom(&idx);
    struct stat st;
    assert_int_equal(stat(data_mdb, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size); /* sparse beyond */
    annal__index ro, w2;
    char detail[256];
    assert_int_equal(annal__index_open(&ro, dir, 1, 0, 64 << 20, detail, sizeof detail), ANNAL_OK);
    annal__index_close(&idx);
    assert_int_equal(annal__index_open(&w2, dir, 0, 0, 64 << 20, detail, sizeof detail), ANNAL_OK);
    assert_int_equal(stat(data_mdb, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size); /* all allocated */
    annal__index_close(&ro);
    idx = w2; /* (teardown closes it) */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(head_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(events_and_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(tag_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(trust_file, setup, teardown),
        cmocka_unit_test_setup_teardown(grows_beside_long_read, setup, teardown),
        cmocka_unit_test_setup_teardown(writer_again_unsparse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
