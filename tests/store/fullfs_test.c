/* A real full disk: a store on a small tmpfs, appended to until the filesystem is full.
 * Unlike the fault-injection tests (which replace the I/O table and so run without the
 * log's grower thread), this goes through the real calls, the grower included. Every
 * append must either be acknowledged or fail with a clear error; after the filesystem is
 * given room again the store reopens with exactly the acknowledged events, verify finds
 * nothing, and appends work again. Needs root to mount (exit 77: skipped otherwise). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define SKIP 77

static char g_mnt[4096];
static int g_mounted;

static annal_db *open_store(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = 8u << 20;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    return db;
}

static void count_damage(void *ctx, const annal_damage *d) {
    fprintf(stderr, "verify: %s at position %" PRIu64 "\n", d->what, d->position);
    (*(int *)ctx)++;
}

static void test_full_disk(void **state) {
    (void)state;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/store", g_mnt);
    annal_db *db = open_store(dir);
    static char data[1024];
    memset(data, 'x', sizeof data);
    data[0] = '"', data[sizeof data - 1] = '"'; /* a JSON string */
    annal_event_data ev[50];
    uint64_t acked = 0;
    annal_err rc = ANNAL_OK;
    for (int i = 0; i < 100000 && rc == ANNAL_OK; i++) {
        for (int j = 0; j < 50; j++) {
            memset(&ev[j], 0, sizeof ev[j]);
            ev[j].type = "Filled";
            ev[j].data = data;
            ev[j].data_len = sizeof data;
        }
        char stream[32];
        snprintf(stream, sizeof stream, "fill-%d", i % 10);
        rc = annal_append(db, stream, ANNAL_EXPECT_ANY, ev, 50, NULL);
        if (rc == ANNAL_OK) acked += 50;
    }
    printf("full after %" PRIu64 " acknowledged events: %s (%s)\n", acked, annal_errname(rc),
           annal_db_errmsg(db));
    assert_true(acked > 0);
    /* The disk is full, not the store broken: a clear error naming it. */
    assert_true(rc == ANNAL_ENOSPC || rc == ANNAL_EFAILED);
    assert_non_null(strstr(annal_db_errmsg(db), "space"));
    rc = annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, 50, NULL);
    assert_int_not_equal(rc, ANNAL_OK); /* still full */
    annal_db_close(db);

    /* Room again: everything acknowledged is there, nothing else, and appends go on. */
    assert_int_equal(mount("tmpfs", g_mnt, "tmpfs", MS_REMOUNT, "size=96m"), 0);
    db = open_store(dir);
    annal_db_info info;
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
    TU_OK(db, annal_append(db, "fill-0", ANNAL_EXPECT_ANY, ev, 50, NULL));
    annal_db_close(db);
    int found = 0;
    assert_int_equal(annal_verify(dir, NULL, count_damage, &found), ANNAL_OK);
    assert_int_equal(found, 0);
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
        cmocka_unit_test(test_full_disk),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    umount2(g_mnt, MNT_DETACH);
    rmdir(g_mnt);
    return r;
}
