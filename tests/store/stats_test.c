/* annal_db_stats_get: counts agree with annal_db_info_get, and the group-commit counters
 * add up to the appends and events made (from 8 threads at once, so groups hold several);
 * a caller compiled with a shorter struct gets no byte past it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define THREADS 8
#define PER     50

typedef struct worker {
    annal_db *db;
    int id;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    char stream[32];
    snprintf(stream, sizeof stream, "s-%d", w->id);
    for (int i = 0; i < PER; i++) {
        annal_event_data ev[2];
        memset(ev, 0, sizeof ev);
        ev[0].type = ev[1].type = "T";
        ev[0].data = ev[1].data = "{}";
        ev[0].data_len = ev[1].data_len = 2;
        if (annal_append(w->db, stream, ANNAL_EXPECT_ANY, ev, 2, NULL) != ANNAL_OK) abort();
    }
    return NULL;
}

static void test_counts_and_groups(void **state) {
    (void)state;
    char *dir = tu_tmpdir("stats");
    annal_db *db = tu_open(dir, 0); /* with fdatasync: flushes are counted */
    annal_db_stats s;
    assert_int_equal(annal_db_stats_get(db, &s), ANNAL_OK);
    assert_int_equal(s.groups, 0);
    assert_int_equal(s.flushes, 0);
    pthread_t t[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){db, i};
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    assert_int_equal(annal_db_stats_get(db, &s), ANNAL_OK);
    annal_db_info info;
    assert_int_equal(annal_db_info_get(db, &info), ANNAL_OK);
    assert_int_equal(s.info.events, info.events);
    assert_int_equal(s.info.streams, THREADS);
    assert_int_equal(s.group_appends, THREADS * PER);
    assert_int_equal(s.group_events, THREADS * PER * 2);
    assert_true(s.groups >= 1 && s.groups <= THREADS * PER);
    assert_true(s.group_appends_max >= 1 && s.group_appends_max <= THREADS);
    assert_true(s.group_events_max == 2 * s.group_appends_max);
    assert_int_equal(s.flushes, s.groups); /* one flush a group */
    assert_true(s.flush_ns_max > 0 && s.flush_ns_last <= s.flush_ns_max);
    assert_true(s.flush_ns_total >= s.flush_ns_max);
    /* An older caller's shorter struct: nothing written past it. */
    unsigned char buf[sizeof(annal_db_stats) + 8];
    memset(buf, 0xAB, sizeof buf);
    size_t old = offsetof(annal_db_stats, group_events);
    assert_int_equal(annal_db_stats_get_sized(db, (annal_db_stats *)(void *)buf, old), ANNAL_OK);
    for (size_t i = old; i < sizeof buf; i++) assert_int_equal(buf[i], 0xAB);
    assert_int_equal(((annal_db_stats *)(void *)buf)->group_appends, THREADS * PER);
    assert_int_equal(annal_db_stats_get(NULL, &s), ANNAL_EINVAL);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_counts_and_groups)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
