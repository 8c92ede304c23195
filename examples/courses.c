/* courses.c -- the course subscriptions of the DCB specification (dcb.events) on annal,
 * using only annal.h: a course has a capacity, a student may join at most 10 courses. No
 * stream holds either rule: each decision reads the events of its own boundary (the
 * course's and the student's, by tags) with annal_handle_query, decides without a lock,
 * and appends on condition that nothing in that boundary changed since it read.
 *
 * usage: courses DIR [--rush R] [--threads T]
 * Tells a short story, then R times (default 1) lets T students (default 32) race for a
 * course of 5 seats; exits 1 if any run seated more or fewer than 5. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annal.h"

#define STUDENT_LIMIT 10

/* ------------------------------------------------------------------------------------
 * The domain. The state is folded from the events of the boundary only (the query below
 * returns nothing else): the capacity of the one course it defines, and the subscriptions
 * it holds, each with its course and student (their tags). decide() looks at those with
 * the command's course and student. */

#define MAX_SUBS 512 /* subscriptions a boundary may hold in this example */

typedef struct sub {
    char course[48], student[48];
} sub;

typedef struct course_state {
    int capacity; /* 0: the course is not defined */
    size_t nsubs;
    sub subs[MAX_SUBS];
} course_state;

typedef struct join_cmd {
    const char *course, *student; /* tags: "course:algebra", "student:ann" */
} join_cmd;

enum { E_NO_COURSE = 1, E_ALREADY, E_FULL, E_LIMIT };

/* The tag of ev that starts with prefix, or "". */
static const char *tag_with(const annal_event *ev, const char *prefix) {
    for (const char *t = NULL; annal_event_tag_next(ev, &t);)
        if (strncmp(t, prefix, strlen(prefix)) == 0) return t;
    return "";
}

static annal_err course_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    course_state *s = state;
    if (strcmp(ev->type, "CourseDefined") == 0 || strcmp(ev->type, "CourseCapacityChanged") == 0) {
        char buf[16];
        size_t n = ev->data_len < sizeof buf - 1 ? ev->data_len : sizeof buf - 1;
        memcpy(buf, ev->data, n);
        buf[n] = 0;
        s->capacity = (int)strtol(buf, NULL, 10);
    } else if (strcmp(ev->type, "StudentSubscribedToCourse") == 0) {
        if (s->nsubs == MAX_SUBS) return ANNAL_ETOOBIG;
        sub *b = &s->subs[s->nsubs++];
        snprintf(b->course, sizeof b->course, "%s", tag_with(ev, "course:"));
        snprintf(b->student, sizeof b->student, "%s", tag_with(ev, "student:"));
    }
    return ANNAL_OK;
}

static annal_err course_decide(void *ctx, const void *state, const void *command,
                               annal_decision *out) {
    (void)ctx;
    const course_state *s = state;
    const join_cmd *c = command;
    int taken = 0, courses = 0, already = 0;
    for (size_t i = 0; i < s->nsubs; i++) {
        int in_course = strcmp(s->subs[i].course, c->course) == 0;
        int of_student = strcmp(s->subs[i].student, c->student) == 0;
        taken += in_course;
        courses += of_student;
        already |= in_course && of_student;
    }
    char why[128];
    if (s->capacity == 0) return annal_decision_reject(out, E_NO_COURSE, "no such course");
    if (already) return annal_decision_reject(out, E_ALREADY, "already subscribed");
    if (taken >= s->capacity) {
        snprintf(why, sizeof why, "the course is full (%d of %d)", taken, s->capacity);
        return annal_decision_reject(out, E_FULL, why);
    }
    if (courses >= STUDENT_LIMIT) {
        snprintf(why, sizeof why, "the student has %d courses already", courses);
        return annal_decision_reject(out, E_LIMIT, why);
    }
    const char *tags[2] = {c->course, c->student};
    return annal_decision_emit_tagged(out, "StudentSubscribedToCourse", "{}", 2, NULL, 0, tags, 2);
}

static const annal_decider course_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "course-subscriptions",
    .state_size = sizeof(course_state),
    .evolve = course_evolve,
    .decide = course_decide,
};

/* "student joins course": the boundary is the course's definition and subscriptions, and
 * the student's subscriptions. */
static annal_err join(annal_handler *h, const char *course, const char *student,
                      annal_command_result *res) {
    join_cmd c = {course, student};
    static const char *const course_types[] = {"CourseDefined", "CourseCapacityChanged",
                                               "StudentSubscribedToCourse"};
    static const char *const sub_type[] = {"StudentSubscribedToCourse"};
    const char *ct[1] = {course}, *st[1] = {student};
    annal_query_item items[2] = {{course_types, 3, ct, 1}, {sub_type, 1, st, 1}};
    annal_query q = {items, 2};
    return annal_handle_query(h, &q, &c, NULL, res);
}

static void say(annal_handler *h, const char *course, const char *student) {
    annal_command_result res;
    annal_err rc = join(h, course, student, &res);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "courses: %s: %s\n", annal_errname(rc), res.message);
        exit(1);
    }
    if (res.rejected)
        printf("%s joins %s: rejected: %s\n", student, course, res.message);
    else
        printf("%s joins %s: ok, position %llu\n", student, course,
               (unsigned long long)res.append.first_position);
}

/* An event about a course: its definition or a new capacity. */
static void course_event(annal_db *db, const char *type, const char *course, int capacity) {
    char cap[16];
    snprintf(cap, sizeof cap, "%d", capacity);
    annal_event_data e = {.type = type, .data = cap, .data_len = strlen(cap)};
    const char *tags[1] = {course};
    annal_tag_list tl = {tags, 1};
    annal_err rc = annal_append_if(db, &e, &tl, 1, NULL, NULL, NULL);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "courses: %s: %s\n", annal_errname(rc), annal_db_errmsg(db));
        exit(1);
    }
}

/* ------------------------------------------------------------------------------------
 * The rush: T students at once for a course of 5. */

typedef struct racer {
    annal_handler *h;
    const char *course;
    char student[48];
    int seated;
} racer;

static void *race(void *p) {
    racer *r = p;
    annal_command_result res;
    annal_err rc = join(r->h, r->course, r->student, &res);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "courses: rush: %s: %s\n", annal_errname(rc), res.message);
        exit(1);
    }
    r->seated = res.rejected == 0;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: courses DIR [--rush R] [--threads T]\n");
        return 2;
    }
    long rushes = 1, threads = 32;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rush") == 0) rushes = strtol(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--threads") == 0) threads = strtol(argv[i + 1], NULL, 10);
    }
    if (threads < 1 || threads > 256 || rushes < 0) return 2;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    if (annal_db_open(argv[1], &o, &db) != ANNAL_OK) return 1;
    annal_handler_opts ho;
    annal_handler_opts_init(&ho);
    ho.max_retries = 1000; /* the rush retries often */
    annal_handler *h;
    if (annal_handler_open(db, &course_decider, &ho, &h) != ANNAL_OK) return 1;

    course_event(db, "CourseDefined", "course:algebra", 2);
    say(h, "course:algebra", "student:ann");
    say(h, "course:algebra", "student:ann");
    say(h, "course:algebra", "student:bob");
    say(h, "course:algebra", "student:cid");
    course_event(db, "CourseCapacityChanged", "course:algebra", 3);
    say(h, "course:algebra", "student:cid");
    say(h, "course:poetry", "student:cid");
    for (int i = 0; i < STUDENT_LIMIT + 1; i++) {
        char course[32];
        snprintf(course, sizeof course, "course:c%d", i);
        course_event(db, "CourseDefined", course, 5);
        if (i >= STUDENT_LIMIT - 1)
            say(h, course, "student:dan");
        else {
            annal_command_result res;
            if (join(h, course, "student:dan", &res) != ANNAL_OK || res.rejected) return 1;
        }
    }

    long exact = 0;
    racer *r = calloc((size_t)threads, sizeof *r);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!r || !th) return 1;
    for (long k = 0; k < rushes; k++) {
        char course[32];
        snprintf(course, sizeof course, "course:rush%ld", k);
        course_event(db, "CourseDefined", course, 5);
        for (long i = 0; i < threads; i++) {
            r[i] = (racer){h, course, "", 0};
            snprintf(r[i].student, sizeof r[i].student, "student:r%ld-%ld", k, i);
            pthread_create(&th[i], NULL, race, &r[i]);
        }
        long seated = 0;
        for (long i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            seated += r[i].seated;
        }
        if (seated == 5)
            exact++;
        else
            printf("rush %ld: %ld seated for 5 seats\n", k, seated);
    }
    printf("rush: %ld of %ld runs with %ld students seated exactly 5, never more\n", exact, rushes,
           threads);
    free(r);
    free(th);
    annal_handler_close(h);
    annal_db_close(db);
    return exact == rushes ? 0 : 1;
}
