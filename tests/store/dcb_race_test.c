/* dcb_race_test.c -- 64 threads compete for the last 10 seats of a course, round after
 * round: each reads the course's events by query, decides, and appends its enrolment on
 * condition that nothing matching the query came after what it read (retrying on
 * ANNAL_ECONDITION). Exactly the capacity must succeed, never more: the condition is
 * checked in the same step of the group commit as the write. Rounds: DCB_RACE_ROUNDS
 * (default 12; ANNAL_LONG=1: 100). Half the rounds run durable (fdatasync per group),
 * half with ANNAL_OPEN_NOSYNC (more appends per group). */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS  64
#define CAPACITY 30
#define TAKEN    20 /* seats taken before the race: 10 are left */

typedef struct race {
    annal_db *db;
    pthread_barrier_t start;
    char course[32];
    int successes, rejections, conflicts;
    pthread_mutex_t mu;
} race;

typedef struct worker {
    race *r;
    int id;
} worker;

#define TAGS(...) ((const char *const[]){__VA_ARGS__})

/* The course's seats taken as a query read sees them, and the position of its last
 * event (ANNAL_AFTER_NONE when none). */
static int seats(annal_db *db, const annal_query *q, uint64_t *last) {
    annal_iter *it;
    TU_OK(db, annal_read_query(db, q, 0, 0, 0, &it));
    const annal_event *ev;
    int n = 0;
    annal_err rc;
    *last = ANNAL_AFTER_NONE;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (strcmp(ev->type, "Enrolled") == 0) n++;
        *last = ev->position;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    return n;
}

static void *enrol(void *arg) {
    worker *w = arg;
    race *r = w->r;
    char student[32];
    snprintf(student, sizeof student, "student:%d", w->id);
    const char *tags[2] = {r->course, student};
    annal_query_item item = {TAGS("Enrolled", "CourseOpened"), 2, tags, 1};
    annal_query q = {&item, 1};
    pthread_barrier_wait(&r->start);
    int conflicts = 0, ok = 0;
    for (;;) {
        uint64_t last;
        if (seats(r->db, &q, &last) >= CAPACITY) break; /* full: the decision says no */
        annal_event_data e;
        memset(&e, 0, sizeof e);
        e.type = "Enrolled";
        e.data = student;
        e.data_len = strlen(student);
        annal_tag_list tl = {tags, 2};
        annal_condition c = {&q, last};
        annal_err rc = annal_append_if(r->db, &e, &tl, 1, &c, NULL, NULL);
        if (rc == ANNAL_OK) {
            ok = 1;
            break;
        }
        TU_EXPECT(r->db, rc, ANNAL_ECONDITION);
        conflicts++;
    }
    pthread_mutex_lock(&r->mu);
    r->successes += ok;
    r->rejections += !ok;
    r->conflicts += conflicts;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void round_once(annal_db *db, int round) {
    race r = {.db = db};
    pthread_mutex_init(&r.mu, NULL);
    pthread_barrier_init(&r.start, NULL, THREADS);
    snprintf(r.course, sizeof r.course, "course:r%d", round);
    /* the course and the seats taken before */
    annal_event_data e[TAKEN + 1];
    annal_tag_list tl[TAKEN + 1];
    const char *tags[1] = {r.course};
    for (int i = 0; i <= TAKEN; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].type = i == 0 ? "CourseOpened" : "Enrolled";
        tl[i] = (annal_tag_list){tags, 1};
    }
    TU_OK(db, annal_append_if(db, e, tl, TAKEN + 1, NULL, NULL, NULL));
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){&r, i};
        assert_int_equal(pthread_create(&th[i], NULL, enrol, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    annal_query_item item = {TAGS("Enrolled"), 1, tags, 1};
    annal_query q = {&item, 1};
    uint64_t last;
    if (r.successes != CAPACITY - TAKEN || seats(db, &q, &last) != CAPACITY)
        fail_msg("round %d: %d enrolments succeeded for %d seats (%d seats taken in all)", round,
                 r.successes, CAPACITY - TAKEN, seats(db, &q, &last));
    assert_int_equal(r.rejections, THREADS - (CAPACITY - TAKEN));
    if (round == 0) printf("round 0: %d conflicts retried\n", r.conflicts);
    pthread_barrier_destroy(&r.start);
    pthread_mutex_destroy(&r.mu);
}

static void test_last_seats(void **state) {
    (void)state;
    const char *env = getenv("DCB_RACE_ROUNDS");
    const char *lng = getenv("ANNAL_LONG");
    int rounds = env ? (int)strtol(env, NULL, 10) : lng && *lng == '1' ? 100 : 12;
    char *dir = tu_tmpdir("dcb-race");
    for (int half = 0; half < 2; half++) {
        annal_db *db = tu_open(dir, half ? ANNAL_OPEN_NOSYNC : 0);
        for (int i = half * rounds / 2; i < (half + 1) * rounds / 2; i++) round_once(db, i);
        annal_db_close(db);
    }
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_seats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
