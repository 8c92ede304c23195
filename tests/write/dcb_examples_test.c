/* dcb_examples_test.c -- the examples of the DCB specification (dcb.events) as deciders
 * whose state is folded from a query (annal_handle_query), each also raced from threads:
 *   - course subscriptions: a course's capacity and a student's limit of 10 courses;
 *   - a unique username, re-usable once its account is closed;
 *   - gap-less invoice numbers;
 *   - a one-time opt-in token.
 * The deciders' states come from events only (their tags say whom they concern), so the
 * same decider serves every command. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAGS(...) ((const char *const[]){__VA_ARGS__})

/* ---- a small map from tag to count, the deciders' states -------------------------- */

typedef struct kv {
    char key[48];
    int val;
} kv;
#define KV_MAX 64

static int *kv_at(kv *a, const char *key) {
    for (int i = 0; i < KV_MAX; i++) {
        if (strcmp(a[i].key, key) == 0) return &a[i].val;
        if (a[i].key[0] == 0) {
            snprintf(a[i].key, sizeof a[i].key, "%s", key);
            return &a[i].val;
        }
    }
    fail_msg("state map full");
    return NULL;
}

/* The value under key, 0 when absent. */
static int kv_val(const kv *a, const char *key) {
    for (int i = 0; i < KV_MAX && a[i].key[0]; i++)
        if (strcmp(a[i].key, key) == 0) return a[i].val;
    return 0;
}

/* The tag of ev that starts with prefix ("course:"), or "". */
static const char *tag_with(const annal_event *ev, const char *prefix) {
    for (const char *t = NULL; annal_event_tag_next(ev, &t);)
        if (strncmp(t, prefix, strlen(prefix)) == 0) return t;
    return "";
}

static int data_int(const annal_event *ev) {
    char b[32];
    size_t n = ev->data_len < sizeof b - 1 ? ev->data_len : sizeof b - 1;
    memcpy(b, ev->data, n);
    b[n] = 0;
    return (int)strtol(b, NULL, 10);
}

static annal_handler *open_handler(annal_db *db, const annal_decider *d) {
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.max_retries = 1000; /* the races below retry often */
    annal_handler *h;
    TU_OK(db, annal_handler_open(db, d, &o, &h));
    return h;
}

/* ---- course subscriptions --------------------------------------------------------- */

enum { E_NO_COURSE = 1, E_ALREADY, E_FULL, E_STUDENT_LIMIT };
#define STUDENT_LIMIT 10

typedef struct course_state {
    kv capacity[KV_MAX]; /* course tag -> capacity (0: not defined) */
    kv taken[KV_MAX];    /* course tag -> subscriptions */
    kv courses[KV_MAX];  /* student tag -> subscriptions */
    kv pairs[KV_MAX];    /* "course|student" -> subscribed */
} course_state;

typedef struct subscribe_cmd {
    char course[32], student[32]; /* tags */
} subscribe_cmd;

static annal_err course_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    course_state *s = state;
    const char *c = tag_with(ev, "course:"), *st = tag_with(ev, "student:");
    if (strcmp(ev->type, "CourseDefined") == 0 || strcmp(ev->type, "CourseCapacityChanged") == 0) {
        *kv_at(s->capacity, c) = data_int(ev);
    } else if (strcmp(ev->type, "StudentSubscribedToCourse") == 0) {
        char pair[96];
        snprintf(pair, sizeof pair, "%s|%s", c, st);
        (*kv_at(s->taken, c))++;
        (*kv_at(s->courses, st))++;
        *kv_at(s->pairs, pair) = 1;
    }
    return ANNAL_OK;
}

static annal_err course_decide(void *ctx, const void *state, const void *command,
                               annal_decision *out) {
    (void)ctx;
    const course_state *s = state;
    const subscribe_cmd *c = command;
    char pair[96];
    snprintf(pair, sizeof pair, "%s|%s", c->course, c->student);
    int cap = kv_val(s->capacity, c->course);
    if (cap == 0) return annal_decision_reject(out, E_NO_COURSE, "no such course");
    if (kv_val(s->pairs, pair)) return annal_decision_reject(out, E_ALREADY, "already subscribed");
    if (kv_val(s->taken, c->course) >= cap)
        return annal_decision_reject(out, E_FULL, "the course is full");
    if (kv_val(s->courses, c->student) >= STUDENT_LIMIT)
        return annal_decision_reject(out, E_STUDENT_LIMIT, "the student has enough courses");
    return annal_decision_emit_tagged(out, "StudentSubscribedToCourse", "{}", 2, NULL, 0,
                                      TAGS(c->course, c->student), 2);
}

static const annal_decider course_decider = {ANNAL_DECIDER_VERSION,
                                             "courses",
                                             sizeof(course_state),
                                             NULL,
                                             NULL,
                                             course_evolve,
                                             course_decide,
                                             0,
                                             NULL,
                                             NULL};

/* The boundary of a subscription: the course's definition and subscriptions, and the
 * student's subscriptions. */
static annal_err subscribe(annal_handler *h, const char *course, const char *student,
                           annal_command_result *res) {
    subscribe_cmd c;
    snprintf(c.course, sizeof c.course, "%s", course);
    snprintf(c.student, sizeof c.student, "%s", student);
    const char *ct[1] = {c.course}, *st[1] = {c.student};
    annal_query_item items[2] = {
        {TAGS("CourseDefined", "CourseCapacityChanged", "StudentSubscribedToCourse"), 3, ct, 1},
        {TAGS("StudentSubscribedToCourse"), 1, st, 1}};
    annal_query q = {items, 2};
    return annal_handle_query(h, &q, &c, NULL, res);
}

static void define_course(annal_db *db, const char *course, int capacity) {
    char cap[16];
    snprintf(cap, sizeof cap, "%d", capacity);
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = "CourseDefined";
    e.data = cap;
    e.data_len = strlen(cap);
    annal_tag_list tl = {TAGS(course), 1};
    TU_OK(db, annal_append_if(db, &e, &tl, 1, NULL, NULL, NULL));
}

typedef struct racer {
    annal_handler *h;
    char course[32], student[32];
    int ok, rejected;
    pthread_barrier_t *start;
} racer;

static void *race_subscribe(void *p) {
    racer *r = p;
    annal_command_result res;
    pthread_barrier_wait(r->start);
    annal_err rc = subscribe(r->h, r->course, r->student, &res);
    if (rc != ANNAL_OK) fail_msg("subscribe: %s (%s)", annal_errname(rc), res.message);
    r->ok = res.rejected == 0;
    r->rejected = res.rejected;
    return NULL;
}

/* n threads at once; returns how many succeeded. */
static int race(racer *r, int n) {
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, (unsigned)n);
    pthread_t th[64];
    for (int i = 0; i < n; i++) {
        r[i].start = &b;
        assert_int_equal(pthread_create(&th[i], NULL, race_subscribe, &r[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ok += r[i].ok;
    }
    pthread_barrier_destroy(&b);
    return ok;
}

static void test_course_subscriptions(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-course");
    annal_db *db = tu_open(dir, 0); /* durable: slower appends, wider races */
    annal_handler *h = open_handler(db, &course_decider);
    annal_command_result res;
    TU_OK(db, subscribe(h, "course:c0", "student:s1", &res));
    assert_int_equal(res.rejected, E_NO_COURSE);
    define_course(db, "course:c1", 2);
    TU_OK(db, subscribe(h, "course:c1", "student:s1", &res));
    assert_int_equal(res.rejected, 0);
    assert_int_equal(res.append.count, 1);
    TU_OK(db, subscribe(h, "course:c1", "student:s1", &res));
    assert_int_equal(res.rejected, E_ALREADY);
    TU_OK(db, subscribe(h, "course:c1", "student:s2", &res));
    assert_int_equal(res.rejected, 0);
    TU_OK(db, subscribe(h, "course:c1", "student:s3", &res));
    assert_int_equal(res.rejected, E_FULL);
    /* 32 students race for a course of 5 seats: exactly 5 get one */
    define_course(db, "course:c2", 5);
    racer r[32];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 32; i++) {
        r[i].h = h;
        snprintf(r[i].course, sizeof r[i].course, "course:c2");
        snprintf(r[i].student, sizeof r[i].student, "student:r%d", i);
    }
    assert_int_equal(race(r, 32), 5);
    for (int i = 0; i < 32; i++) assert_true(r[i].ok || r[i].rejected == E_FULL);
    /* one student races into 14 courses at once: exactly 10 take */
    memset(r, 0, sizeof r);
    for (int i = 0; i < 14; i++) {
        snprintf(r[i].course, sizeof r[i].course, "course:m%d", i);
        define_course(db, r[i].course, 3);
        r[i].h = h;
        snprintf(r[i].student, sizeof r[i].student, "student:busy");
    }
    assert_int_equal(race(r, 14), STUDENT_LIMIT);
    for (int i = 0; i < 14; i++) assert_true(r[i].ok || r[i].rejected == E_STUDENT_LIMIT);
    annal_handler_close(h);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- unique username -------------------------------------------------------------- */

enum { E_TAKEN = 1 };

typedef struct name_state {
    kv claimed[KV_MAX]; /* username tag -> 1 while an open account holds it */
} name_state;

typedef struct name_cmd {
    char tag[48];
    int close; /* close the account (release the name) instead of registering */
} name_cmd;

static annal_err name_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    name_state *s = state;
    const char *t = tag_with(ev, "username:");
    if (strcmp(ev->type, "AccountRegistered") == 0) *kv_at(s->claimed, t) = 1;
    if (strcmp(ev->type, "AccountClosed") == 0) *kv_at(s->claimed, t) = 0;
    return ANNAL_OK;
}

static annal_err name_decide(void *ctx, const void *state, const void *command,
                             annal_decision *out) {
    (void)ctx;
    const name_state *s = state;
    const name_cmd *c = command;
    int claimed = kv_val(s->claimed, c->tag);
    if (c->close)
        return claimed ? annal_decision_emit_tagged(out, "AccountClosed", "{}", 2, NULL, 0,
                                                    TAGS(c->tag), 1)
                       : ANNAL_OK;
    if (claimed) return annal_decision_reject(out, E_TAKEN, "the username is taken");
    return annal_decision_emit_tagged(out, "AccountRegistered", "{}", 2, NULL, 0, TAGS(c->tag), 1);
}

static const annal_decider name_decider = {ANNAL_DECIDER_VERSION,
                                           "usernames",
                                           sizeof(name_state),
                                           NULL,
                                           NULL,
                                           name_evolve,
                                           name_decide,
                                           0,
                                           NULL,
                                           NULL};

static annal_err username(annal_handler *h, const char *name, int close,
                          annal_command_result *res) {
    name_cmd c = {.close = close};
    snprintf(c.tag, sizeof c.tag, "username:%s", name);
    const char *t[1] = {c.tag};
    annal_query_item item = {TAGS("AccountRegistered", "AccountClosed"), 2, t, 1};
    annal_query q = {&item, 1};
    return annal_handle_query(h, &q, &c, NULL, res);
}

typedef struct name_racer {
    annal_handler *h;
    pthread_barrier_t *b;
    int ok;
} name_racer;

static void *race_name(void *p) {
    name_racer *r = p;
    annal_command_result res;
    pthread_barrier_wait(r->b);
    annal_err rc = username(r->h, "zoe", 0, &res);
    if (rc != ANNAL_OK) fail_msg("register: %s (%s)", annal_errname(rc), res.message);
    r->ok = res.rejected == 0;
    return NULL;
}

static void test_unique_username(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-name");
    annal_db *db = tu_open(dir, 0); /* durable: slower appends, wider races */
    annal_handler *h = open_handler(db, &name_decider);
    annal_command_result res;
    TU_OK(db, username(h, "ann", 0, &res));
    assert_int_equal(res.rejected, 0);
    TU_OK(db, username(h, "bob", 0, &res));
    assert_int_equal(res.rejected, 0);
    TU_OK(db, username(h, "ann", 0, &res));
    assert_int_equal(res.rejected, E_TAKEN);
    TU_OK(db, username(h, "ann", 1, &res)); /* closed: the name is released */
    assert_int_equal(res.append.count, 1);
    TU_OK(db, username(h, "ann", 0, &res));
    assert_int_equal(res.rejected, 0);
    assert_int_equal(res.folded, 2); /* ann's registration and closing, not bob's */
    TU_OK(db, username(h, "ann", 0, &res));
    assert_int_equal(res.rejected, E_TAKEN);
    /* 16 threads register one new name at once: one succeeds */
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 16);
    name_racer r[16];
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        r[i] = (name_racer){h, &b, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_name, &r[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        ok += r[i].ok;
    }
    pthread_barrier_destroy(&b);
    assert_int_equal(ok, 1);
    annal_handler_close(h);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- gap-less invoice numbers ----------------------------------------------------- */

typedef struct invoice_state {
    int last; /* number of the last invoice */
} invoice_state;

static annal_err invoice_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    ((invoice_state *)state)->last = data_int(ev);
    return ANNAL_OK;
}

static annal_err invoice_decide(void *ctx, const void *state, const void *command,
                                annal_decision *out) {
    (void)ctx, (void)command;
    char num[16];
    snprintf(num, sizeof num, "%d", ((const invoice_state *)state)->last + 1);
    return annal_decision_emit(out, "InvoiceCreated", num, strlen(num), NULL, 0);
}

static const annal_decider invoice_decider = {ANNAL_DECIDER_VERSION,
                                              "invoices",
                                              sizeof(invoice_state),
                                              NULL,
                                              NULL,
                                              invoice_evolve,
                                              invoice_decide,
                                              0,
                                              NULL,
                                              NULL};

static void *race_invoices(void *p) {
    annal_handler *h = p;
    annal_query_item item = {TAGS("InvoiceCreated"), 1, NULL, 0};
    annal_query q = {&item, 1};
    for (int i = 0; i < 15; i++) {
        annal_command_result res;
        annal_err rc = annal_handle_query(h, &q, "create", NULL, &res);
        if (rc != ANNAL_OK) fail_msg("invoice: %s (%s)", annal_errname(rc), res.message);
    }
    return NULL;
}

static void test_invoice_numbers(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-invoice");
    annal_db *db = tu_open(dir, 0); /* durable: slower appends, wider races */
    annal_handler *h = open_handler(db, &invoice_decider);
    TU_OK(db, tu_append1(db, "noise", ANNAL_EXPECT_ANY, "Other", "7", NULL));
    pthread_t th[12];
    for (int i = 0; i < 12; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_invoices, h), 0);
    for (int i = 0; i < 12; i++) pthread_join(th[i], NULL);
    /* 1..180, each once, in order */
    annal_iter *it;
    TU_OK(db, annal_read_type(db, "InvoiceCreated", 0, 0, 0, &it));
    const annal_event *ev;
    int want = 1;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) assert_int_equal(data_int(ev), want++);
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    assert_int_equal(want - 1, 12 * 15);
    annal_handler_close(h);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a one-time opt-in token ------------------------------------------------------ */

enum { E_NO_TOKEN = 1, E_USED };

typedef struct token_state {
    int issued, used;
} token_state;

static annal_err token_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    token_state *s = state;
    if (strcmp(ev->type, "SignUpInitiated") == 0) s->issued = 1;
    if (strcmp(ev->type, "SignUpConfirmed") == 0) s->used = 1;
    return ANNAL_OK;
}

static annal_err token_decide(void *ctx, const void *state, const void *command,
                              annal_decision *out) {
    (void)ctx;
    const token_state *s = state;
    if (!s->issued) return annal_decision_reject(out, E_NO_TOKEN, "no such token");
    if (s->used) return annal_decision_reject(out, E_USED, "the token was used");
    return annal_decision_emit_tagged(out, "SignUpConfirmed", "{}", 2, NULL, 0,
                                      (const char *const *)&command, 1);
}

static const annal_decider token_decider = {ANNAL_DECIDER_VERSION,
                                            "tokens",
                                            sizeof(token_state),
                                            NULL,
                                            NULL,
                                            token_evolve,
                                            token_decide,
                                            0,
                                            NULL,
                                            NULL};

static annal_err confirm(annal_handler *h, const char *tag, annal_command_result *res) {
    const char *t[1] = {tag};
    annal_query_item item = {NULL, 0, t, 1};
    annal_query q = {&item, 1};
    return annal_handle_query(h, &q, tag, NULL, res);
}

typedef struct token_racer {
    annal_handler *h;
    pthread_barrier_t *b;
    int ok;
} token_racer;

static void *race_token(void *p) {
    token_racer *r = p;
    annal_command_result res;
    pthread_barrier_wait(r->b);
    annal_err rc = confirm(r->h, "token:t2", &res);
    if (rc != ANNAL_OK) fail_msg("confirm: %s (%s)", annal_errname(rc), res.message);
    r->ok = res.rejected == 0;
    return NULL;
}

static void test_opt_in_token(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-token");
    annal_db *db = tu_open(dir, 0); /* durable: slower appends, wider races */
    annal_handler *h = open_handler(db, &token_decider);
    annal_command_result res;
    TU_OK(db, confirm(h, "token:t1", &res));
    assert_int_equal(res.rejected, E_NO_TOKEN);
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = "SignUpInitiated";
    annal_tag_list tl[2] = {{TAGS("token:t1", "email:a@x"), 2}, {TAGS("token:t2", "email:b@x"), 2}};
    annal_event_data two[2] = {e, e};
    TU_OK(db, annal_append_if(db, two, tl, 2, NULL, NULL, NULL));
    TU_OK(db, confirm(h, "token:t1", &res));
    assert_int_equal(res.rejected, 0);
    assert_int_equal(res.state_position, 0); /* decided on the initiation */
    TU_OK(db, confirm(h, "token:t1", &res));
    assert_int_equal(res.rejected, E_USED);
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 16);
    token_racer r[16];
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        r[i] = (token_racer){h, &b, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_token, &r[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        ok += r[i].ok;
    }
    pthread_barrier_destroy(&b);
    assert_int_equal(ok, 1);
    annal_handler_close(h);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_course_subscriptions),
        cmocka_unit_test(test_unique_username),
        cmocka_unit_test(test_invoice_numbers),
        cmocka_unit_test(test_opt_in_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
