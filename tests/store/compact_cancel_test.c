/* Canceling a compaction (annal_compact_cb): a callback that returns nonzero stops it
 * with ANNAL_ECANCELED at a safe point, before a segment or in the middle of a segment's
 * rewrite; every stop leaves a store that verifies clean with the same visible events,
 * no partial generation behind, and exactly the segments reported done compacted; the
 * next compaction goes on from there until done. Another thread can cancel a throttled
 * compaction (what the server's StopScavenge does). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "log/segment.h"
#include "testutil.h"

#define SEG_BYTES (4u << 20) /* more than the rewrite's 1 MiB buffer: stops inside one */

static annal_db *open_store(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) fail_msg("open %s: %s", dir, annal_errname(rc));
    return db;
}

/* ~20 MiB: in every segment, kept events (~2/3) between events of streams deleted. */
static void fill(annal_db *db) {
    static char data[1024];
    memset(data, 'k', sizeof data);
    data[0] = '"', data[sizeof data - 1] = '"';
    for (int i = 0; i < 20000; i++) {
        char stream[32];
        if (i % 3 == 2)
            snprintf(stream, sizeof stream, "gone-%d", i / 300);
        else
            snprintf(stream, sizeof stream, "keep-%d", i % 7);
        annal_event_data ev = {.type = "T", .data = data, .data_len = sizeof data};
        TU_OK(db, annal_append(db, stream, ANNAL_EXPECT_ANY, &ev, 1, NULL));
    }
    for (int k = 0; k <= 20000 / 300; k++) {
        char stream[32];
        snprintf(stream, sizeof stream, "gone-%d", k);
        TU_OK(db, annal_stream_delete(db, stream, ANNAL_EXPECT_ANY, 0, NULL));
    }
    TU_OK(db, annal_seal(db));
}

/* crc of every visible event (position, stream, revision, data), and their count */
static uint32_t visible(annal_db *db, uint64_t *n) {
    annal_iter *it;
    const annal_event *e;
    uint32_t c = 0;
    *n = 0;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    annal_err rc;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        c = annal__crc32c(c, &e->position, sizeof e->position);
        c = annal__crc32c(c, &e->revision, sizeof e->revision);
        c = annal__crc32c(c, e->stream, e->stream_len);
        c = annal__crc32c(c, e->data, e->data_len);
        (*n)++;
    }
    assert_int_equal(rc, ANNAL_END);
    annal_iter_close(it);
    return c;
}

/* Segment files in dir/log: how many are compacted (generation > 0), and partial (tmp). */
static void generations(const char *dir, size_t *compacted, size_t *tmp) {
    char logdir[4200];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    annal__seg_file *f = NULL;
    size_t n = 0;
    assert_int_equal(annal__seg_list(logdir, &f, &n), 0);
    *compacted = *tmp = 0;
    for (size_t i = 0; i < n; i++) {
        if (f[i].tmp)
            (*tmp)++;
        else if (f[i].gen > 0)
            (*compacted)++;
    }
    free(f);
}

typedef struct stop_at {
    unsigned calls, at; /* stop at call number at */
    int mid;            /* the last call came inside a rewrite: done unchanged since the one
                         * before (a call before a segment counts one more done) */
    uint64_t last_done;
} stop_at;

static int stop_cb(void *ctx, uint64_t done, uint64_t total) {
    stop_at *s = ctx;
    assert_true(done <= total);
    s->mid = s->calls > 0 && done == s->last_done;
    s->last_done = done;
    return ++s->calls == s->at;
}

static void test_cancel_at_every_safe_point(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-cancel");
    annal_db *db = open_store(dir);
    fill(db);
    uint64_t n0, n;
    uint32_t v0 = visible(db, &n0);
    size_t compacted, tmp;
    unsigned stops = 0, mid_stops = 0;
    /* Stop at the 1st call, then the 2nd, ... of each new compaction, until one ends. */
    annal_err rc = ANNAL_ECANCELED;
    for (unsigned at = 1; rc == ANNAL_ECANCELED; at++) {
        stop_at s = {0, at, 0, 0};
        annal_compact_stats st;
        rc = annal_compact_cb(db, 0, stop_cb, &s, &st);
        if (rc == ANNAL_ECANCELED) {
            stops++;
            mid_stops += s.mid;
            assert_int_equal(s.calls, at); /* stopped when asked, not later */
            assert_int_equal(st.segments_done, s.last_done);
            assert_true(st.segments_done < st.segments_total);
        } else {
            TU_OK(db, rc);
        }
        generations(dir, &compacted, &tmp);
        assert_int_equal(tmp, 0); /* no partial generation behind */
        /* Exactly the segments reported done have their next generation (each had events
         * to erase; one compacted before is skipped, not rewritten again). */
        assert_int_equal(compacted, st.segments_done);
        assert_int_equal(visible(db, &n), v0);
        assert_int_equal(n, n0);
        annal_db_close(db);
        assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_OK);
        db = open_store(dir);
        assert_int_equal(visible(db, &n), v0);
    }
    printf("%u stops (%u inside a rewrite), then done; %zu segments compacted\n", stops, mid_stops,
           compacted);
    assert_true(stops >= 3);
    assert_true(mid_stops >= 1);
    assert_true(compacted >= 3);
    /* All done: nothing more to erase. */
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_int_equal(st.events_erased, 0);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- from another thread ---- */

typedef struct job {
    annal_db *db;
    atomic_int stop;
    annal_err rc;
    annal_compact_stats st;
} job;

static int flag_cb(void *ctx, uint64_t done, uint64_t total) {
    (void)done, (void)total;
    return atomic_load(&((job *)ctx)->stop);
}

static void *compactor(void *arg) {
    job *j = arg;
    /* 4 MiB/s: about 4 s for this store, far longer than the wait below */
    j->rc = annal_compact_cb(j->db, 4u << 20, flag_cb, j, &j->st);
    return NULL;
}

static void test_cancel_from_another_thread(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-cancel-thread");
    annal_db *db = open_store(dir);
    fill(db);
    uint64_t n0, n;
    uint32_t v0 = visible(db, &n0);
    job j = {.db = db};
    pthread_t th;
    pthread_create(&th, NULL, compactor, &j);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    int64_t t0 = annal__mono_ns();
    atomic_store(&j.stop, 1);
    pthread_join(th, NULL);
    double ms = (double)(annal__mono_ns() - t0) / 1e6;
    printf("stopped %.0f ms after being asked, %" PRIu64 " of %" PRIu64 " segments done\n", ms,
           j.st.segments_done, j.st.segments_total);
    assert_int_equal(j.rc, ANNAL_ECANCELED);
    assert_true(j.st.segments_done < j.st.segments_total);
    assert_true(ms < 1500); /* a safe point comes at least every MiB written (~0.25 s) */
    assert_int_equal(visible(db, &n), v0);
    annal_db_close(db);
    assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_OK);
    db = open_store(dir);
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st)); /* and the rest, later */
    assert_true(st.events_erased > 0);
    assert_int_equal(visible(db, &n), v0);
    annal_db_close(db);
    assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_OK);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_at_every_safe_point),
        cmocka_unit_test(test_cancel_from_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
