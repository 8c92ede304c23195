/* Segment files as the store opens and walks them: a damaged header in a sealed
 * segment is damage, never a torn tail to delete; segments that do not follow each
 * other are damage to every read that crosses them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log/record.h"
#include "testutil.h"

#define SEG_BYTES (64u << 10)

/* A store of 64 KiB segments with at least four of them (closed). */
static char *make_store(void) {
    char *dir = tu_tmpdir("segment");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_db_info info;
    char data[512];
    snprintf(data, sizeof data, "{\"pad\":\"%0480d\"}", 0);
    do {
        annal_event_data ev[20];
        memset(ev, 0, sizeof ev);
        for (int i = 0; i < 20; i++)
            ev[i].type = "E", ev[i].data = data, ev[i].data_len = strlen(data);
        TU_OK(db, annal_append(db, "s-1", ANNAL_EXPECT_ANY, ev, 20, NULL));
        TU_OK(db, annal_db_info_get(db, &info));
    } while (info.segments < 4);
    annal_db_close(db);
    return dir;
}

static void seg_file(const char *dir, unsigned no, char *out, size_t len) {
    snprintf(out, len, "%s/log/%016x.seg", dir, no);
}

static void rw_header(const char *path, uint8_t hb[ANNAL__SEG_HDR], int write) {
    FILE *f = fopen(path, write ? "r+b" : "rb");
    assert_non_null(f);
    if (write)
        assert_int_equal(fwrite(hb, 1, ANNAL__SEG_HDR, f), ANNAL__SEG_HDR);
    else
        assert_int_equal(fread(hb, 1, ANNAL__SEG_HDR, f), ANNAL__SEG_HDR);
    fclose(f);
}

static annal_err open_rw(const char *dir, annal_db **db) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.segment_bytes = SEG_BYTES;
    *db = NULL;
    return annal_db_open(dir, &o, db);
}

/* A bit flip in the header of segment 1 (sealed, full of acknowledged events): the
 * writer must refuse to open and leave the file where it is. */
static void test_sealed_header_damage_is_kept(void **state) {
    (void)state;
    char *dir = make_store();
    char p[4096];
    seg_file(dir, 1, p, sizeof p);
    uint8_t hb[ANNAL__SEG_HDR];
    rw_header(p, hb, 0);
    hb[20] ^= 0x10; /* inside first_pos: the header's checksum no longer matches */
    rw_header(p, hb, 1);
    annal_db *db;
    annal_err rc = open_rw(dir, &db);
    annal_db_close(db);
    assert_int_equal(rc, ANNAL_ECORRUPT);
    struct stat st;
    assert_int_equal(stat(p, &st), 0); /* not removed as a torn tail */
    assert_true(st.st_size > (off_t)(SEG_BYTES / 2));
    assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_ECORRUPT);
    tu_rmrf(dir);
    free(dir);
}

/* Segment 2's header says it starts one position later than segment 1 ends (a valid
 * header, as a misplaced file would have): a read across the boundary must fail, not
 * skip or repeat events. */
static void test_segments_not_contiguous(void **state) {
    (void)state;
    for (int delta = -1; delta <= 1; delta += 2) {
        char *dir = make_store();
        char p[4096];
        seg_file(dir, 2, p, sizeof p);
        uint8_t hb[ANNAL__SEG_HDR];
        annal__seg_hdr h;
        rw_header(p, hb, 0);
        TU_OK(NULL, annal__seg_hdr_decode(hb, sizeof hb, &h));
        h.first_pos = (uint64_t)((int64_t)h.first_pos + delta);
        annal__seg_hdr_encode(&h, hb);
        rw_header(p, hb, 1);
        annal_db_opts o;
        annal_db_opts_init(&o);
        o.flags = ANNAL_OPEN_READONLY;
        annal_db *db = NULL;
        TU_OK(NULL, annal_db_open(dir, &o, &db));
        annal_iter *it;
        TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
        const annal_event *ev;
        annal_err rc;
        uint64_t want = 0;
        while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) assert_int_equal(ev->position, want++);
        annal_iter_close(it);
        annal_db_close(db);
        assert_int_equal(rc, ANNAL_ECORRUPT);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Read $all to its end in a fresh handle (flags: 0 or ANNAL_OPEN_READONLY); the events
 * read, or -1 with the error printed. */
static long read_everything(const char *dir, unsigned flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = flags;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    annal_iter *it = NULL;
    const annal_event *ev;
    long n = 0;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc == ANNAL_OK) rc = annal_read_all(db, 0, 0, 0, &it);
    while (rc == ANNAL_OK && (rc = annal_iter_next(it, &ev)) == ANNAL_OK) n++;
    if (rc == ANNAL_END && !(flags & ANNAL_OPEN_READONLY)) {
        annal_event_data e;
        memset(&e, 0, sizeof e);
        e.type = "After";
        rc = annal_append(db, "s-2", ANNAL_EXPECT_ANY, &e, 1, NULL);
        if (rc == ANNAL_OK) rc = ANNAL_END;
    }
    if (rc != ANNAL_END)
        fprintf(stderr, "%s: %s (%s)\n", flags ? "read-only" : "writer", annal_errname(rc),
                db ? annal_db_errmsg(db) : "open failed");
    annal_iter_close(it);
    annal_db_close(db);
    return rc == ANNAL_END ? n : -1;
}

/* 220 segments under `ulimit -n 64` (issue 14.11): sealed segments hold no descriptor. */
static void test_many_segments_few_fds(void **state) {
    (void)state;
    char *dir = tu_tmpdir("segment-fds");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    char data[512];
    snprintf(data, sizeof data, "{\"pad\":\"%0480d\"}", 0);
    annal_event_data ev[20];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 20; i++) ev[i].type = "E", ev[i].data = data, ev[i].data_len = strlen(data);
    annal_db_info info;
    long total = 0;
    do {
        for (int i = 0; i < 20; i++) memset(&ev[i].id, 0, sizeof ev[i].id); /* new ids */
        TU_OK(db, annal_append(db, "s-1", ANNAL_EXPECT_ANY, ev, 20, NULL));
        total += 20;
        TU_OK(db, annal_db_info_get(db, &info));
    } while (info.segments < 220);
    annal_db_close(db);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {64, 64};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(3);
        if (read_everything(dir, 0) != total) _exit(1);
        if (read_everything(dir, ANNAL_OPEN_READONLY) != total + 1) _exit(2);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sealed_header_damage_is_kept),
        cmocka_unit_test(test_segments_not_contiguous),
        cmocka_unit_test(test_many_segments_few_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
