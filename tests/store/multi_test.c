/* multi_test.c -- annal_append_multi: atomic appends across streams. Placement in $all,
 * per-part results, conflicts naming every failing stream, checks, tombstones, a stream
 * written by two parts, resends, rebuild/verify/reopen of multi-stream batches, and a
 * randomized run against an in-memory model while single appends race from threads
 * (MULTI_OPS appends, default 10000; ANNAL_LONG=1: 50000). Seed: argv[1] or the time. */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static annal_event_data ev_of(const char *type, const char *data) {
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.data = data;
    e.data_len = strlen(data);
    return e;
}

static uint64_t head_of(annal_db *db) {
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    return info.events;
}

static int64_t rev_of(annal_db *db, const char *stream) {
    uint64_t r;
    annal_err rc = annal_stream_head(db, stream, &r);
    return rc == ANNAL_ENOTFOUND ? -1 : (TU_OK(db, rc), (int64_t)r);
}

/* The event at position pos: its stream and revision. */
static void expect_at(annal_db *db, uint64_t pos, const char *stream, uint64_t rev,
                      const char *data) {
    annal_event *ev;
    TU_OK(db, annal_event_get(db, pos, &ev));
    assert_string_equal(ev->stream, stream);
    assert_int_equal(ev->revision, rev);
    if (data) {
        assert_int_equal(ev->data_len, strlen(data));
        assert_memory_equal(ev->data, data, ev->data_len);
    }
    annal_free(ev);
}

static void test_placement(void **state) {
    (void)state;
    char *dir = tu_tmpdir("multi-place");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "b", ANNAL_EXPECT_ANY, "T", "{\"b\":0}", NULL));
    annal_event_data a[2] = {ev_of("A1", "\"a0\""), ev_of("A2", "\"a1\"")};
    annal_event_data b[1] = {ev_of("B", "\"b1\"")};
    annal_event_data c[3] = {ev_of("C", "\"c0\""), ev_of("C", "\"c1\""), ev_of("C", "\"c2\"")};
    annal_stream_append parts[3] = {
        {"a", ANNAL_EXPECT_NO_STREAM, a, 2}, {"b", 0, b, 1}, {"c-1", ANNAL_EXPECT_ANY, c, 3}};
    annal_append_result pr[3];
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.parts = pr;
    TU_OK(db, annal_append_multi(db, parts, 3, NULL, 0, &res));
    assert_int_equal(res.first_position, 1);
    assert_int_equal(res.count, 6);
    assert_int_equal(res.nconflicts, 0);
    assert_int_equal(res.idempotent, 0);
    assert_int_equal(pr[0].first_position, 1);
    assert_int_equal(pr[0].first_revision, 0);
    assert_int_equal(pr[0].revision, 1);
    assert_int_equal(pr[1].first_position, 3);
    assert_int_equal(pr[1].first_revision, 1);
    assert_int_equal(pr[1].revision, 1);
    assert_int_equal(pr[2].first_position, 4);
    assert_int_equal(pr[2].revision, 2);
    expect_at(db, 1, "a", 0, "\"a0\"");
    expect_at(db, 2, "a", 1, "\"a1\"");
    expect_at(db, 3, "b", 1, "\"b1\"");
    expect_at(db, 4, "c-1", 0, "\"c0\"");
    expect_at(db, 6, "c-1", 2, "\"c2\"");
    /* ids were made and written back */
    static const annal_uuid nil;
    assert_memory_not_equal(&a[0].id, &nil, sizeof nil);
    /* the category index and type index see the runs */
    annal_iter *it;
    const annal_event *e;
    TU_OK(db, annal_read_category(db, "c", 0, 0, 0, &it));
    int n = 0;
    while (annal_iter_next(it, &e) == ANNAL_OK) n++;
    annal_iter_close(it);
    assert_int_equal(n, 3);
    TU_OK(db, annal_read_type(db, "A2", 0, 0, 0, &it));
    TU_OK(db, annal_iter_next(it, &e));
    assert_int_equal(e->position, 2);
    annal_iter_close(it);
    /* a stream in two parts: the second sees the first's revision */
    annal_event_data x1[1] = {ev_of("X", "1")}, x2[1] = {ev_of("X", "2")}, y[1] = {ev_of("Y", "3")};
    annal_stream_append twice[3] = {
        {"a", 1, x1, 1}, {"d", ANNAL_EXPECT_NO_STREAM, y, 1}, {"a", 2, x2, 1}};
    TU_OK(db, annal_append_multi(db, twice, 3, NULL, 0, &res));
    assert_int_equal(pr[2].first_revision, 3);
    expect_at(db, 7, "a", 2, "1");
    expect_at(db, 8, "d", 0, "3");
    expect_at(db, 9, "a", 3, "2");
    /* reopen, rebuild, verify: the batches that span streams index the same */
    annal_db_close(db);
    TU_OK(NULL, annal_rebuild_index(dir, NULL));
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    db = tu_open(dir, 0);
    assert_int_equal(head_of(db), 10);
    assert_int_equal(rev_of(db, "a"), 3);
    assert_int_equal(rev_of(db, "b"), 1);
    assert_int_equal(rev_of(db, "c-1"), 2);
    assert_int_equal(rev_of(db, "d"), 0);
    TU_OK(db, annal_read_stream(db, "a", 0, 0, 0, &it));
    uint64_t want[] = {1, 2, 7, 9};
    for (int i = 0; i < 4; i++) {
        TU_OK(db, annal_iter_next(it, &e));
        assert_int_equal(e->position, want[i]);
        assert_int_equal(e->revision, (uint64_t)i);
    }
    assert_int_equal(annal_iter_next(it, &e), ANNAL_END);
    annal_iter_close(it);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* Ten streams, one (then two) wrong: nothing written, every failing stream named. */
static void test_conflicts(void **state) {
    (void)state;
    char *dir = tu_tmpdir("multi-conflict");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    char names[10][16];
    annal_event_data evs[10][2];
    annal_stream_append parts[10];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "acct-%d", i);
        TU_OK(db, tu_append1(db, names[i], ANNAL_EXPECT_NO_STREAM, "Opened", "{}", NULL));
        evs[i][0] = ev_of("Moved", "{}");
        evs[i][1] = ev_of("Moved", "{}");
        parts[i] = (annal_stream_append){names[i], 0, evs[i], 2};
    }
    TU_OK(db, tu_append1(db, names[6], 0, "Other", "{}", NULL)); /* acct-6 moves on to 1 */
    annal_stream_conflict conf[4];
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.conflicts = conf;
    res.max_conflicts = 4;
    uint64_t before = head_of(db);
    TU_EXPECT(db, annal_append_multi(db, parts, 10, NULL, 0, &res), ANNAL_ECONFLICT);
    assert_int_equal(res.nconflicts, 1);
    assert_string_equal(conf[0].stream, "acct-6");
    assert_int_equal(conf[0].index, 6);
    assert_int_equal(conf[0].expected, 0);
    assert_int_equal(conf[0].actual, 1);
    assert_int_equal(conf[0].reason, ANNAL_ECONFLICT);
    assert_non_null(strstr(annal_db_errmsg(db), "acct-6"));
    assert_int_equal(head_of(db), before);
    /* two wrong, plus a failing check on a stream written nothing */
    parts[2].expected = ANNAL_EXPECT_NO_STREAM;
    annal_stream_check checks[2] = {{"acct-6", 1}, {"ledger", ANNAL_EXPECT_STREAM_EXISTS}};
    TU_EXPECT(db, annal_append_multi(db, parts, 10, checks, 2, &res), ANNAL_ECONFLICT);
    assert_int_equal(res.nconflicts, 3);
    assert_string_equal(conf[0].stream, "acct-2");
    assert_int_equal(conf[0].actual, 0);
    assert_string_equal(conf[1].stream, "acct-6");
    assert_string_equal(conf[2].stream, "ledger");
    assert_int_equal(conf[2].index, 11);
    assert_int_equal(conf[2].actual, -1);
    /* max_conflicts bounds what is filled, not the count */
    res.max_conflicts = 1;
    TU_EXPECT(db, annal_append_multi(db, parts, 10, checks, 2, &res), ANNAL_ECONFLICT);
    assert_int_equal(res.nconflicts, 3);
    assert_int_equal(head_of(db), before);
    res.max_conflicts = 4;
    /* fixed, with the check passing: all 20 written in order */
    parts[2].expected = 0;
    parts[6].expected = 1;
    checks[1].expected = ANNAL_EXPECT_NO_STREAM;
    TU_OK(db, annal_append_multi(db, parts, 10, checks, 2, &res));
    assert_int_equal(res.first_position, before);
    for (int i = 0; i < 10; i++)
        expect_at(db, before + 2 * (uint64_t)i, names[i], i == 6 ? 2 : 1, NULL);
    /* a tombstoned stream among the checks */
    TU_OK(db, annal_stream_delete(db, "acct-9", ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, NULL));
    annal_stream_check tomb[1] = {{"acct-9", ANNAL_EXPECT_ANY}};
    annal_event_data one[1] = {ev_of("E", "{}")};
    annal_stream_append p1[1] = {{"fresh", ANNAL_EXPECT_ANY, one, 1}};
    TU_EXPECT(db, annal_append_multi(db, p1, 1, tomb, 1, &res), ANNAL_EDELETED);
    assert_int_equal(res.nconflicts, 1);
    assert_int_equal(conf[0].reason, ANNAL_EDELETED);
    assert_int_equal(rev_of(db, "fresh"), -1);
    /* bad input */
    TU_EXPECT(db, annal_append_multi(db, p1, 0, NULL, 0, &res), ANNAL_EINVAL);
    annal_stream_append bad[2] = {{"ok", ANNAL_EXPECT_ANY, one, 1},
                                  {"$sys", ANNAL_EXPECT_ANY, one, 1}};
    TU_EXPECT(db, annal_append_multi(db, bad, 2, NULL, 0, &res), ANNAL_EINVAL);
    assert_non_null(strstr(annal_db_errmsg(db), "part 1"));
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* A resend of the whole set returns the original result; any other reuse of its ids
 * fails with ANNAL_EDUPLICATE. */
static void test_resend(void **state) {
    (void)state;
    char *dir = tu_tmpdir("multi-resend");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    annal_event_data a[2] = {ev_of("A", "1"), ev_of("A", "2")}, b[1] = {ev_of("B", "3")};
    annal_stream_append parts[2] = {{"from", ANNAL_EXPECT_NO_STREAM, a, 2},
                                    {"to", ANNAL_EXPECT_NO_STREAM, b, 1}};
    annal_append_result pr[2], pr2[2];
    annal_multi_result res, res2;
    memset(&res, 0, sizeof res);
    res.parts = pr;
    TU_OK(db, annal_append_multi(db, parts, 2, NULL, 0, &res));
    TU_OK(db, tu_append1(db, "to", ANNAL_EXPECT_ANY, "later", "{}", NULL));
    memset(&res2, 0, sizeof res2);
    res2.parts = pr2;
    TU_OK(db, annal_append_multi(db, parts, 2, NULL, 0, &res2));
    assert_int_equal(res2.idempotent, 1);
    assert_int_equal(res2.first_position, res.first_position);
    assert_int_equal(res2.count, 3);
    assert_memory_equal(&pr2[0], &pr[0], offsetof(annal_append_result, idempotent));
    assert_memory_equal(&pr2[1], &pr[1], offsetof(annal_append_result, idempotent));
    assert_int_equal(head_of(db), 4);
    /* the same ids in another shape */
    annal_stream_append swapped[2] = {{"to", ANNAL_EXPECT_ANY, b, 1},
                                      {"from", ANNAL_EXPECT_ANY, a, 2}};
    TU_EXPECT(db, annal_append_multi(db, swapped, 2, NULL, 0, &res2), ANNAL_EDUPLICATE);
    annal_stream_append part[1] = {{"from", ANNAL_EXPECT_ANY, a, 1}};
    annal_stream_append other[2] = {{"from", ANNAL_EXPECT_ANY, a, 1},
                                    {"x", ANNAL_EXPECT_ANY, b, 1}};
    TU_EXPECT(db, annal_append_multi(db, other, 2, NULL, 0, &res2), ANNAL_EDUPLICATE);
    /* a prefix of the set, as a single append, is the same events in place */
    (void)part;
    /* an id repeated within the set */
    annal_event_data d[2] = {ev_of("D", "1"), ev_of("D", "2")};
    memset(&d[0].id, 0, sizeof d[0].id);
    TU_OK(NULL, annal_uuid_parse("0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77", &d[0].id));
    d[1].id = d[0].id;
    annal_stream_append rep[2] = {{"p", ANNAL_EXPECT_ANY, &d[0], 1},
                                  {"q", ANNAL_EXPECT_ANY, &d[1], 1}};
    TU_EXPECT(db, annal_append_multi(db, rep, 2, NULL, 0, &res2), ANNAL_EDUPLICATE);
    assert_int_equal(head_of(db), 4);
    assert_int_equal(rev_of(db, "p"), -1);
    /* after a reopen (ids from the log) the resend is still recognized */
    annal_db_close(db);
    db = tu_open(dir, 0);
    memset(&res2, 0, sizeof res2);
    TU_OK(db, annal_append_multi(db, parts, 2, NULL, 0, &res2));
    assert_int_equal(res2.idempotent, 1);
    assert_int_equal(res2.first_position, res.first_position);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* A subscriber to $all receives a set's events in consecutive positions, none missing. */
static void test_subscription(void **state) {
    (void)state;
    char *dir = tu_tmpdir("multi-sub");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.start = ANNAL_SUB_END;
    annal_sub *sub;
    TU_OK(db, annal_sub_open(db, &so, &sub));
    annal_event_data a[3] = {ev_of("A", "1"), ev_of("A", "2"), ev_of("A", "3")};
    annal_event_data b[2] = {ev_of("B", "1"), ev_of("B", "2")};
    annal_stream_append parts[2] = {{"s1", ANNAL_EXPECT_ANY, a, 3}, {"s2", ANNAL_EXPECT_ANY, b, 2}};
    TU_OK(db, annal_append_multi(db, parts, 2, NULL, 0, NULL));
    const char *want[] = {"s1", "s1", "s1", "s2", "s2"};
    for (int i = 0; i < 5;) {
        annal_sub_item item;
        TU_OK(db, annal_sub_next(sub, 5000, &item));
        if (item.kind != ANNAL_SUB_EVENT) continue;
        assert_string_equal(item.event->stream, want[i]);
        assert_int_equal(item.position, (uint64_t)i);
        i++;
    }
    annal_sub_close(sub);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- randomized, against a model, with single appends racing on other streams ---- */

#define MS 12 /* model streams */

typedef struct racer {
    annal_db *db;
    int idx;
    volatile int *stop;
    uint64_t n; /* events it appended (its stream's revisions 0..n-1) */
} racer;

static void *race(void *arg) {
    racer *r = arg;
    char name[32];
    snprintf(name, sizeof name, "race-%d", r->idx);
    while (!*r->stop) {
        annal_event_data e = ev_of("R", "{}");
        annal_append_result res;
        int64_t exp = r->n == 0 ? ANNAL_EXPECT_NO_STREAM : (int64_t)r->n - 1;
        if (annal_append(r->db, name, exp, &e, 1, &res) != ANNAL_OK) break;
        r->n++;
    }
    return NULL;
}

static void test_model(void **state) {
    (void)state;
    uint64_t seed = (uint64_t)time(NULL);
    const char *s = getenv("MULTI_SEED");
    if (s) seed = strtoull(s, NULL, 10);
    long ops = getenv("ANNAL_LONG") ? 50000 : 10000;
    if (getenv("MULTI_OPS")) ops = strtol(getenv("MULTI_OPS"), NULL, 10);
    printf("multi model: seed %" PRIu64 ", %ld appends\n", seed, ops);
    srand((unsigned)seed);
    char *dir = tu_tmpdir("multi-model");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    int64_t model[MS]; /* last revision per model stream, -1 none */
    char names[MS][16];
    for (int i = 0; i < MS; i++) {
        model[i] = -1;
        snprintf(names[i], sizeof names[i], "m%d-x", i % 4 ? i : i + 100);
    }
    volatile int stop = 0;
    racer rs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        rs[i] = (racer){db, i, &stop, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    uint64_t ok_sets = 0, conflict_sets = 0, events = 0;
    annal_event_data evs[64];
    annal_stream_append parts[8];
    annal_stream_check checks[3];
    annal_append_result pr[8];
    annal_stream_conflict conf[16];
    int pst[8], cst[3];
    for (long op = 0; op < ops; op++) {
        int np = 1 + rand() % 6, nc = rand() % 3, ne = 0;
        int64_t sim[MS];
        memcpy(sim, model, sizeof sim);
        int want_conf[11], nwant = 0;
        for (int p = 0; p < np; p++) {
            int st = rand() % MS, n = rand() % 5;
            pst[p] = st;
            int64_t cur = sim[st], exp;
            int kind = rand() % 10;
            exp = kind < 3   ? ANNAL_EXPECT_ANY
                  : kind < 5 ? (cur < 0 ? ANNAL_EXPECT_NO_STREAM : ANNAL_EXPECT_STREAM_EXISTS)
                  : kind < 9 ? (cur < 0 ? ANNAL_EXPECT_NO_STREAM : cur)
                             : (cur < 0 ? 5 : ANNAL_EXPECT_NO_STREAM); /* wrong */
            if (kind == 9) want_conf[nwant++] = p;
            parts[p] = (annal_stream_append){names[st], exp, &evs[ne], (size_t)n};
            for (int e = 0; e < n; e++) evs[ne++] = ev_of("E", "{}");
            sim[st] += n;
        }
        for (int c = 0; c < nc; c++) {
            int st = rand() % MS;
            cst[c] = st;
            int wrong = rand() % 8 == 0;
            int64_t cur = model[st];
            checks[c] = (annal_stream_check){names[st], wrong     ? cur + 7
                                                        : cur < 0 ? ANNAL_EXPECT_NO_STREAM
                                                                  : cur};
            if (wrong) want_conf[nwant++] = np + c;
        }
        annal_multi_result res;
        memset(&res, 0, sizeof res);
        res.parts = pr;
        res.conflicts = conf;
        res.max_conflicts = 16;
        annal_err rc = annal_append_multi(db, parts, (size_t)np, checks, (size_t)nc, &res);
        if (nwant) {
            TU_EXPECT(db, rc, ANNAL_ECONFLICT);
            assert_int_equal(res.nconflicts, (size_t)nwant);
            for (int i = 0; i < nwant; i++) {
                assert_int_equal(conf[i].index, (size_t)want_conf[i]);
                int st = want_conf[i] < np ? pst[want_conf[i]] : cst[want_conf[i] - np];
                assert_string_equal(conf[i].stream, names[st]);
            }
            conflict_sets++;
            continue;
        }
        TU_OK(db, rc);
        /* the set is consecutive, in the order of parts, each stream as the model says */
        uint64_t pos = res.first_position;
        for (int p = 0; p < np; p++) {
            assert_int_equal(pr[p].first_position, pos);
            assert_int_equal(pr[p].first_revision, (uint64_t)(model[pst[p]] + 1));
            model[pst[p]] += (int64_t)parts[p].n;
            assert_int_equal(pr[p].revision, model[pst[p]]);
            for (size_t e = 0; e < parts[p].n; e++, pos++)
                if (rand() % 16 == 0)
                    expect_at(db, pos, names[pst[p]], pr[p].first_revision + e, NULL);
        }
        events += (uint64_t)ne;
        ok_sets++;
        if (op % 2000 == 1999) { /* a resend of this set is recognized */
            annal_multi_result again;
            memset(&again, 0, sizeof again);
            TU_OK(db, annal_append_multi(db, parts, (size_t)np, NULL, 0, &again));
            assert_int_equal(again.idempotent, ne > 0);
            if (ne) assert_int_equal(again.first_position, res.first_position);
        }
    }
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    printf("multi model: %" PRIu64 " sets (%" PRIu64 " events), %" PRIu64
           " refused; racers %" PRIu64 " + %" PRIu64 "\n",
           ok_sets, events, conflict_sets, rs[0].n, rs[1].n);
    for (int i = 0; i < MS; i++) assert_int_equal(rev_of(db, names[i]), model[i]);
    assert_int_equal(head_of(db), events + rs[0].n + rs[1].n);
    /* a rebuilt index agrees */
    annal_db_close(db);
    TU_OK(NULL, annal_rebuild_index(dir, NULL));
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    db = tu_open(dir, 0);
    for (int i = 0; i < MS; i++) assert_int_equal(rev_of(db, names[i]), model[i]);
    assert_int_equal(rev_of(db, "race-0"), (int64_t)rs[0].n - 1);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement), cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_resend),    cmocka_unit_test(test_subscription),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
