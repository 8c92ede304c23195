/* Unit tests of the LMDB index layer (src/index/index.c): head, stream records, event
 * entries with duplicate-id detection, revision and position lookups, the trust file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"
#include "testutil.h"

static annal__index idx;
static char *dir;

static int setup(void **state) {
    (void)state;
    dir = tu_tmpdir("index");
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
    for (uint64_t i = 0; i < 70; i++) {
        assert_int_equal(
            annal__index_event_put(t, &idx, sr.id, i, 1000 + i, (1ull << 32) | (64 + 8 * i)),
            ANNAL_OK);
        sr.count++;
        sr.last_pos = 1000 + i;
    }
    assert_int_equal(annal__index_stream_put(t, &idx, "acct-1", 6, &sr), ANNAL_OK);
    assert_int_equal(annal__index_stream_get(t, &idx, "acct-1", 6, &got), ANNAL_OK);
    assert_int_equal(got.count, 70);
    assert_int_equal(got.last_pos, 1069);
    assert_int_equal(got.created_ns, 42);
    /* a revision is indexed once */
    assert_int_equal(annal__index_event_put(t, &idx, sr.id, 5, 2000, 0), ANNAL_ECORRUPT);
    uint64_t pos, loc, base;
    assert_int_equal(annal__index_rev_get(t, &idx, 9, 69, &pos, &loc), ANNAL_OK);
    assert_int_equal(pos, 1069);
    assert_int_equal(loc, (1ull << 32) | (64 + 8 * 69));
    assert_int_equal(annal__index_rev_get(t, &idx, 9, 70, &pos, &loc), ANNAL_ENOTFOUND);
    assert_int_equal(annal__index_rev_get(t, &idx, 8, 0, &pos, &loc), ANNAL_ENOTFOUND);
    /* stride entries exist for positions that are multiples of the stride */
    assert_int_equal(annal__index_pos_floor(t, &idx, 1030, &base, &loc), ANNAL_OK);
    assert_int_equal(base, 1024);
    assert_int_equal(loc, (1ull << 32) | (64 + 8 * 24));
    assert_int_equal(annal__index_pos_floor(t, &idx, 999, &base, &loc), ANNAL_ENOTFOUND);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(head_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(events_and_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(trust_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
