/* A log that lost its tail after the appends were acknowledged (the disk zeroed or
 * dropped its last blocks, a segment was truncated), with and without the index that
 * might have survived it: the writer refuses to open, naming the missing positions, and
 * nothing is changed; `annal recover --accept-loss` records them as a hole, so that no
 * acknowledged position is given to another event; verify and reads accept the hole. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/db_int.h"
#include "testutil.h"

#define N 300

static char lastmsg[1024];
static void grab(void *ctx, annal_log_level lvl, const char *msg) {
    (void)ctx;
    if (lvl == ANNAL_LOG_ERROR) snprintf(lastmsg, sizeof lastmsg, "%s", msg);
}

static annal_db_opts opts(unsigned flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = flags;
    o.log = grab;
    return o;
}

/* N events in three streams; seg and end: the last segment and where its data ends. */
static char *make_store(const char *tag, uint64_t *seg, uint64_t *end) {
    char *dir = tu_tmpdir(tag);
    annal_db *db = tu_open(dir, 0);
    for (int i = 0; i < N; i++) {
        char s[16], d[64];
        snprintf(s, sizeof s, "s-%d", i % 3);
        snprintf(d, sizeof d, "{\"i\":%d,\"pad\":\"%040d\"}", i, i);
        TU_OK(db, tu_append1(db, s, ANNAL_EXPECT_ANY, "T", d, NULL));
    }
    *seg = db->wseg->no;
    *end = db->woff;
    annal_db_close(db);
    return dir;
}

static void seg_path(const char *dir, uint64_t seg, char *out, size_t n) {
    snprintf(out, n, "%s/log/%016llx.seg", dir, (unsigned long long)seg);
}

static void rm_index(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/index", dir);
    tu_rmrf(p);
}

static void rm_acked(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/acked", dir);
    assert_int_equal(unlink(p), 0);
}

enum { ZERO = 1, TRUNC = 2, NO_INDEX = 4, NO_MARK = 8 };

static void lose_tail(const char *dir, uint64_t seg, uint64_t end, int how) {
    char p[4096];
    seg_path(dir, seg, p, sizeof p);
    if (how & ZERO) {
        static const uint8_t z[2048];
        int fd = open(p, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, z, sizeof z, (off_t)(end - sizeof z)), (ssize_t)sizeof z);
        close(fd);
    }
    if (how & TRUNC) assert_int_equal(truncate(p, (off_t)(end - 3000)), 0);
    if (how & NO_INDEX) rm_index(dir);
    if (how & NO_MARK) rm_acked(dir);
}

static void file_bytes(const char *path, uint8_t **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc(*n + 1);
    assert_int_equal(fread(*out, 1, *n, f), *n);
    fclose(f);
}

static void one_case(int how) {
    uint64_t seg, end;
    char *dir = make_store("losttail", &seg, &end);
    lose_tail(dir, seg, end, how);
    char p[4096];
    seg_path(dir, seg, p, sizeof p);
    uint8_t *before;
    size_t nbefore;
    file_bytes(p, &before, &nbefore);

    /* The writer refuses, names the range, and changes nothing in the log. */
    annal_db_opts o = opts(ANNAL_OPEN_CREATE);
    annal_db *db = NULL;
    lastmsg[0] = 0;
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);
    assert_null(db);
    char want[64];
    snprintf(want, sizeof want, "to %d were acknowledged but are missing", N - 1);
    if (!strstr(lastmsg, want)) fail_msg("case %d: message: %s", how, lastmsg);
    uint8_t *after;
    size_t nafter;
    file_bytes(p, &after, &nafter);
    assert_int_equal(nafter, nbefore);
    assert_memory_equal(after, before, nafter);
    free(before);
    free(after);
    /* Again: a failed open must not have weakened the evidence. */
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);

    /* Accepting the loss: the range becomes a hole. */
    uint64_t from = 0, count = 0;
    TU_OK(NULL, annal_recover_accept_loss(dir, &o, &from, &count));
    assert_true(count > 0);
    assert_int_equal(from + count, N);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    for (int round = 0; round < 2; round++) { /* reopen once more: the hole stays */
        TU_OK(NULL, annal_db_open(dir, &o, &db));
        annal_append_result r;
        TU_OK(db, tu_append1(db, "s-1", ANNAL_EXPECT_ANY, "After", "{}", &r));
        assert_int_equal(r.first_position, (uint64_t)N + (uint64_t)round);
        annal_iter *it;
        TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
        const annal_event *ev;
        uint64_t want_pos = 0, seen = 0;
        annal_err rc;
        while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
            if (want_pos == from) want_pos = N; /* the hole */
            assert_int_equal(ev->position, want_pos);
            want_pos++;
            seen++;
        }
        TU_EXPECT(db, rc, ANNAL_END);
        annal_iter_close(it);
        assert_int_equal(seen, from + (uint64_t)round + 1);
        annal_db_close(db);
        TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    }
    /* And after the index is rebuilt from the log alone. */
    TU_OK(NULL, annal_rebuild_index(dir, &o));
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_append_result r;
    TU_OK(db, tu_append1(db, "s-2", ANNAL_EXPECT_ANY, "After", "{}", &r));
    assert_int_equal(r.first_position, N + 2);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

static void zeroed_tail(void **state) {
    (void)state;
    one_case(ZERO);
}
static void zeroed_tail_no_index(void **state) {
    (void)state;
    one_case(ZERO | NO_INDEX);
}
static void zeroed_tail_no_mark(void **state) { /* the index head alone is evidence */
    (void)state;
    one_case(ZERO | NO_MARK);
}
static void truncated_segment(void **state) {
    (void)state;
    one_case(TRUNC);
}
static void truncated_segment_no_index(void **state) {
    (void)state;
    one_case(TRUNC | NO_INDEX);
}
static void zeroed_and_truncated_no_index(void **state) {
    (void)state;
    one_case(ZERO | TRUNC | NO_INDEX);
}

/* A store made before DIR/acked existed (or that lost it) opens, and gets the file. */
static void missing_mark_is_created(void **state) {
    (void)state;
    uint64_t seg, end;
    char *dir = make_store("nomark", &seg, &end);
    rm_acked(dir);
    annal_db_opts o = opts(ANNAL_OPEN_CREATE);
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    TU_OK(db, tu_append1(db, "s-0", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    annal_db_close(db);
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/acked", dir);
    assert_int_equal(stat(p, &st), 0);
    /* ... and it is evidence from then on */
    lose_tail(dir, seg, end, ZERO | NO_INDEX);
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);
    tu_rmrf(dir);
    free(dir);
}

/* accept-loss on a store that lost nothing records nothing. */
static void accept_loss_on_sound_store(void **state) {
    (void)state;
    uint64_t seg, end, from = 1, count = 1;
    char *dir = make_store("sound", &seg, &end);
    annal_db_opts o = opts(ANNAL_OPEN_CREATE);
    TU_OK(NULL, annal_recover_accept_loss(dir, &o, &from, &count));
    assert_int_equal(count, 0);
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_append_result r;
    TU_OK(db, tu_append1(db, "s-0", ANNAL_EXPECT_ANY, "T", "{}", &r));
    assert_int_equal(r.first_position, N);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* The mark never claims what was not flushed: a NOSYNC handle whose flush failed writes
 * no mark for its unflushed appends at close (a reboot could drop them, and the next
 * open would then refuse a sound log). */
static int fail_sync(void *ctx, int fd) {
    (void)ctx, (void)fd;
    return -EIO;
}

static void mark_is_never_ahead_of_flushes(void **state) {
    (void)state;
    char *dir = tu_tmpdir("marknosync");
    static annal__io io;
    io = *annal__io_posix();
    annal_db_opts o = opts(ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC);
    annal_db *db = NULL;
    TU_OK(NULL, annal__db_open_io(dir, &o, &io, &db));
    for (int i = 0; i < 5; i++) TU_OK(db, tu_append1(db, "s", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    TU_OK(db, annal_db_sync(db)); /* 5 flushed */
    io.sync = fail_sync;
    for (int i = 0; i < 7; i++) TU_OK(db, tu_append1(db, "s", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    TU_EXPECT(db, annal_db_sync(db), ANNAL_EIO);
    annal_db_close(db);
    annal__acked a;
    uint64_t mark = 99;
    TU_OK(NULL, annal__acked_open(&a, dir, &mark));
    annal__acked_release(&a);
    assert_int_equal(mark, 5);
    tu_rmrf(dir);
    free(dir);
}

/* The lost positions were a whole segment and the one before is full to the last byte:
 * the hole opens a segment of its own; later opens trust the index that ends in it
 * (no rebuild on every open until the next append). */
static int rebuilds;
static void count_rebuilds(void *ctx, annal_log_level lvl, const char *msg) {
    (void)ctx, (void)lvl;
    if (strstr(msg, "rebuilding it")) rebuilds++;
}

static void lost_segment_after_a_full_one(void **state) {
    (void)state;
    char *dir = tu_tmpdir("lostseg");
    annal_db_opts o = opts(ANNAL_OPEN_CREATE);
    o.segment_bytes = 64 << 10;
    o.log = count_rebuilds;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    /* 96-byte records: 682 fill the 65,472 bytes after the header exactly */
    for (int i = 0; i < 700; i++) {
        char d[16];
        snprintf(d, sizeof d, "{\"k\":%06d}", i);
        TU_OK(db, tu_append1(db, "a", ANNAL_EXPECT_ANY, "T", d, NULL));
    }
    assert_int_equal(db->wseg->no, 1);
    annal_db_close(db);
    char p[4096];
    snprintf(p, sizeof p, "%s/log/%016llx.seg", dir, 1ull);
    assert_int_equal(unlink(p), 0);
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);
    uint64_t from, count;
    TU_OK(NULL, annal_recover_accept_loss(dir, &o, &from, &count));
    assert_int_equal(from, 682);
    assert_int_equal(count, 18);
    rebuilds = 0;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_db_close(db);
    assert_int_equal(rebuilds, 0);
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_append_result r;
    TU_OK(db, tu_append1(db, "a", ANNAL_EXPECT_ANY, "After", "{}", &r));
    assert_int_equal(r.first_position, 700);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zeroed_tail),
        cmocka_unit_test(zeroed_tail_no_index),
        cmocka_unit_test(zeroed_tail_no_mark),
        cmocka_unit_test(truncated_segment),
        cmocka_unit_test(truncated_segment_no_index),
        cmocka_unit_test(zeroed_and_truncated_no_index),
        cmocka_unit_test(missing_mark_is_created),
        cmocka_unit_test(accept_loss_on_sound_store),
        cmocka_unit_test(mark_is_never_ahead_of_flushes),
        cmocka_unit_test(lost_segment_after_a_full_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
