/* The index head against the log at a writer's open (store/recovery.c, head_check): a
 * head is trusted only when the log's last acknowledged record is where it says, and is
 * the event it says; damage to that record is reported, never cut as a torn tail. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"
#include "log/record.h"
#include "store/db_int.h"
#include "testutil.h"

static void append_marked(annal_db *db, int n) {
    for (int i = 0; i < n; i++) {
        char d[64];
        snprintf(d, sizeof d, "{\"mark\":\"MARK%d\"}", i);
        TU_OK(db, tu_append1(db, "s", ANNAL_EXPECT_ANY, "T", d, NULL));
    }
}

/* Read the index head of the closed store in dir; with put, write *h back instead. */
static void head_io(const char *dir, annal__index_head *h, int put) {
    char idir[4096], detail[256];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index idx;
    TU_OK(NULL, annal__index_open(&idx, idir, 0, 0, 1 << 26, detail, sizeof detail));
    MDB_txn *t;
    assert_int_equal(annal__txn_begin(&idx, 0, &t), 0);
    TU_OK(NULL, put ? annal__index_head_put(t, &idx, h) : annal__index_head_get(t, &idx, h));
    assert_int_equal(annal__txn_commit(&idx, t), 0);
    annal__index_close(&idx);
}

static void seg_path(const char *dir, uint64_t seg, char *path, size_t len) {
    snprintf(path, len, "%s/log/%016llx.seg", dir, (unsigned long long)seg);
}

static int log_has(const char *dir, uint64_t seg, const char *text) {
    char path[4096];
    seg_path(dir, seg, path, sizeof path);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return memmem(buf, n, text, strlen(text)) != NULL;
}

static char logged[1024];
static void capture(void *ctx, annal_log_level lvl, const char *msg) {
    (void)ctx;
    if (lvl == ANNAL_LOG_ERROR) snprintf(logged, sizeof logged, "%s", msg);
}

/* A bit flip in the last acknowledged record is damage: the writer refuses to open and
 * says so, and `annal recover --accept-loss` does not record the damaged (acknowledged,
 * still present) event as a lost tail and erase it. */
static void damaged_last_record_is_not_cut(void **state) {
    (void)state;
    char *dir = tu_tmpdir("headdmg");
    annal_db *db = tu_open(dir, ANNAL_OPEN_CREATE);
    append_marked(db, 4);
    annal_db_close(db);
    annal__index_head h;
    head_io(dir, &h, 0);
    assert_int_equal(h.next_pos, 4);
    char path[4096];
    seg_path(dir, ANNAL__LOC_SEG(h.last_loc), path, sizeof path);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    uint8_t x = 'Z'; /* inside the data of position 3: its checksum fails */
    assert_int_equal(pwrite(fd, &x, 1, (off_t)(ANNAL__LOC_OFF(h.last_loc) + ANNAL__REC_HDR + 6)),
                     1);
    close(fd);

    annal_db_opts o;
    annal_db_opts_init(&o);
    o.log = capture;
    logged[0] = 0;
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);
    assert_non_null(strstr(logged, "last acknowledged event (position 3"));
    assert_non_null(strstr(logged, "damaged"));
    uint64_t from = 9, count = 9;
    TU_EXPECT(NULL, annal_recover_accept_loss(dir, &o, &from, &count), ANNAL_ECORRUPT);
    assert_int_equal(count, 0);
    assert_true(log_has(dir, ANNAL__LOC_SEG(h.last_loc), "MARK2"));
    assert_true(log_has(dir, ANNAL__LOC_SEG(h.last_loc), "ARK3")); /* "MZRK3": kept */
    tu_rmrf(dir);
    free(dir);
}

/* A head whose locations fit this log but whose position does not (an index from
 * elsewhere, or a damaged one) is not trusted: the index is rebuilt, and the next event
 * gets the next position of the log, never one that an event already holds. With the
 * acknowledged mark lost too (a store from before it existed), the log alone decides. */
static void head_position_must_match(void **state) {
    (void)state;
    for (int lose_mark = 0; lose_mark < 2; lose_mark++) {
        char *dir = tu_tmpdir("headpos");
        annal_db *db = tu_open(dir, ANNAL_OPEN_CREATE);
        append_marked(db, 5);
        annal_db_close(db);
        annal__index_head h;
        head_io(dir, &h, 0);
        assert_int_equal(h.next_pos, 5);
        h.next_pos = 3; /* next_loc and last_loc still name the log's end */
        head_io(dir, &h, 1);
        if (lose_mark) {
            char path[4096];
            snprintf(path, sizeof path, "%s/acked", dir);
            assert_int_equal(unlink(path), 0);
        }
        db = tu_open(dir, 0);
        annal_append_result r;
        annal_event_data ev = {.type = "After", .data = "{}", .data_len = 2};
        TU_OK(db, annal_append(db, "s", ANNAL_EXPECT_ANY, &ev, 1, &r));
        assert_int_equal(r.first_position, 5);
        assert_int_equal(r.first_revision, 5);
        annal_iter *it;
        TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
        const annal_event *e;
        uint64_t n = 0;
        annal_err rc;
        while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) assert_int_equal(e->position, n++);
        TU_EXPECT(db, rc, ANNAL_END);
        annal_iter_close(it);
        assert_int_equal(n, 6);
        annal_db_close(db);
        TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
        tu_rmrf(dir);
        free(dir);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(damaged_last_record_is_not_cut),
        cmocka_unit_test(head_position_must_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
