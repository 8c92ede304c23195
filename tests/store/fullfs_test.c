/* A real full disk: a store on a small tmpfs, appended to until the filesystem is full.
 * Unlike the fault-injection tests (which replace the I/O table and so run without the
 * log's grower thread), this goes through the real calls, the grower included. Every
 * append must either be acknowledged or fail with a clear error; after the filesystem is
 * given room again the store reopens with exactly the acknowledged events, verify finds
 * nothing, and appends work again. Once with appends small enough to go into space the
 * grower zeroed ahead, once with appends that extend the segment file themselves
 * (annal__seg_claim). And an index opened with no room to allocate its file. Needs root
 * to mount (exit 77: skipped otherwise). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index/index.h"
#include "testutil.h"

#define SKIP 77

static char g_mnt[4096];
static int g_mounted;

static void print_log(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx, (void)level;
    printf("  log: %s\n", msg);
}

static annal_db *open_store(const char *dir, uint64_t segment_bytes) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.log = print_log;
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = segment_bytes;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    return db;
}

static void count_damage(void *ctx, const annal_damage *d) {
    fprintf(stderr, "verify: %s at position %" PRIu64 "\n", d->what, d->position);
    (*(int *)ctx)++;
}

/* Fill a fresh 24 MiB filesystem with appends of batch events of ~1 KiB each. */
static void full_disk(const char *name, int batch, uint64_t segment_bytes) {
    char dir[4200], cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", g_mnt); /* an earlier test's store */
    assert_int_equal(system(cmd), 0);
    snprintf(dir, sizeof dir, "%s/%s", g_mnt, name);
    assert_int_equal(mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=24m"), 0);
    annal_db *db = open_store(dir, segment_bytes);
    static char data[1024];
    memset(data, 'x', sizeof data);
    data[0] = '"', data[sizeof data - 1] = '"'; /* a JSON string */
    annal_event_data ev[250];
    assert_true(batch <= 250);
    uint64_t acked = 0;
    annal_err rc = ANNAL_OK;
    for (int i = 0; i < 100000 && rc == ANNAL_OK; i++) {
        for (int j = 0; j < batch; j++) {
            memset(&ev[j], 0, sizeof ev[j]);
            ev[j].type = "Filled";
            ev[j].data = data;
            ev[j].data_len = sizeof data;
        }
        char stream[32];
        snprintf(stream, sizeof stream, "fill-%d", i % 10);
        rc = annal_append(db, stream, ANNAL_EXPECT_ANY, ev, (size_t)batch, NULL);
        if (rc == ANNAL_OK) acked += (uint64_t)batch;
    }
    printf("full after %" PRIu64 " acknowledged events: %s (%s)\n", acked, annal_errname(rc),
           annal_db_errmsg(db));
    assert_true(acked > 0);
    /* The disk is full, not the store broken: a clear error naming it, met before any
     * byte was written (the handle is still usable, not failed). */
    assert_int_equal(rc, ANNAL_ENOSPC);
    assert_non_null(strstr(annal_db_errmsg(db), "space"));
    rc = annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, (size_t)batch, NULL);
    assert_int_equal(rc, ANNAL_ENOSPC); /* still full, and still usable: */
    rc = annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, 1, NULL);
    assert_true(rc == ANNAL_ENOSPC || rc == ANNAL_OK); /* (it may fit in what is left) */
    if (rc == ANNAL_OK) acked++;
    annal_db_close(db);

    /* Reopened on the still full disk: it opens (its index file was allocated ahead)
     * with what was acknowledged, and an append fails as cleanly as before or fits. */
    for (int j = 0; j < batch; j++) memset(&ev[j].id, 0, sizeof ev[j].id); /* new ids */
    db = open_store(dir, segment_bytes);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.events, acked);
    rc = annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, (size_t)batch, NULL);
    printf("reopened full: %s (%s)\n", annal_errname(rc), annal_db_errmsg(db));
    assert_true(rc == ANNAL_ENOSPC || rc == ANNAL_OK); /* (the log keeps a margin free) */
    if (rc == ANNAL_OK) acked += (uint64_t)batch;
    annal_db_close(db);

    /* Room again: everything acknowledged is there, nothing else, and appends go on. */
    assert_int_equal(mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=96m"), 0);
    db = open_store(dir, segment_bytes);
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.events, acked);
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *e;
    uint64_t n = 0;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        assert_int_equal(e->position, n);
        assert_int_equal(e->data_len, sizeof data);
        n++;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    assert_int_equal(n, acked);
    for (int j = 0; j < batch; j++) memset(&ev[j].id, 0, sizeof ev[j].id); /* new ids */
    TU_OK(db, annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, (size_t)batch, NULL));
    annal_db_close(db);
    int found = 0;
    assert_int_equal(annal_verify(dir, NULL, count_damage, &found), ANNAL_OK);
    assert_int_equal(found, 0);
}

static void test_full_disk_small_appends(void **state) {
    (void)state;
    full_disk("small", 50, 8u << 20); /* ~55 KB a flush: into zeroed space */
}

static void test_full_disk_large_appends(void **state) {
    (void)state;
    /* ~280 KB a flush: the file grows with it. (A segment's first 8 MiB are zeroed when
     * it is made: this one is larger than the filesystem.) */
    full_disk("large", 250, 64u << 20);
}

/* No room to allocate the index's file when a writer opens it: it maps the file as
 * readers do (LMDB then writes pages with pwrite) and works; with room again, the next
 * open maps it writable. */
static void test_index_open_without_room(void **state) {
    (void)state;
    char dir[4200], cmd[4300], detail[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", g_mnt);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=512k"), 0);
    snprintf(dir, sizeof dir, "%s/index", g_mnt);
    annal__index idx;
    assert_int_equal(annal__index_open(&idx, dir, 0, 1, 64u << 20, detail, sizeof detail),
                     ANNAL_OK);
    assert_false(annal__index_writemap(&idx)); /* 1 MiB could not be allocated */
    MDB_txn *t;
    assert_int_equal(annal__index_grow(&idx, 1u << 20, 1), ANNAL_OK); /* (nothing to do) */
    assert_int_equal(annal__txn_begin(&idx, 0, &t), 0);
    annal__stream_rec sr = annal__stream_rec_new(7, 1), got;
    assert_int_equal(annal__index_stream_put(t, &idx, "s-1", 3, &sr), ANNAL_OK);
    assert_int_equal(annal__txn_commit(&idx, t), 0);
    annal__index_close(&idx);
    assert_int_equal(mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=96m"), 0);
    assert_int_equal(annal__index_open(&idx, dir, 0, 0, 64u << 20, detail, sizeof detail),
                     ANNAL_OK);
    assert_true(annal__index_writemap(&idx));
    assert_int_equal(annal__txn_begin(&idx, MDB_RDONLY, &t), 0);
    assert_int_equal(annal__index_stream_get(t, &idx, "s-1", 3, &got), ANNAL_OK);
    annal__txn_abort(&idx, t);
    annal__index_close(&idx);
}

int main(void) {
    const char *base = getenv("ANNAL_TEST_TMP");
    snprintf(g_mnt, sizeof g_mnt, "%s/fullfs-XXXXXX", base && *base ? base : "/tmp");
    char *slash = strrchr(g_mnt, '/');
    *slash = 0;
    mkdir(g_mnt, 0755); /* $ANNAL_TEST_TMP may not exist yet */
    *slash = '/';
    if (!mkdtemp(g_mnt)) {
        perror("mkdtemp");
        return 1;
    }
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=24m") != 0) {
        int e = errno;
        rmdir(g_mnt);
        if (e == EPERM) {
            printf("skipped: mounting a tmpfs needs root (%s)\n", strerror(e));
            return SKIP;
        }
        fprintf(stderr, "mount tmpfs on %s: %s\n", g_mnt, strerror(e));
        return 1;
    }
    g_mounted = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_disk_small_appends),
        cmocka_unit_test(test_full_disk_large_appends),
        cmocka_unit_test(test_index_open_without_room),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    umount2(g_mnt, MNT_DETACH);
    rmdir(g_mnt);
    return r;
}
