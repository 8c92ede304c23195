/* Category and event-type reads, stream metadata, soft and hard deletes: checked against
 * what a scan of $all says, through reopen and index rebuild. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/db_int.h"
#include "testutil.h"

#define NSTREAMS 40

typedef struct fixture {
    char *dir;
    annal_db *db;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tmpdir("meta");
    f->db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    annal_db_close(f->db);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f) {
    annal_db_close(f->db);
    f->db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
}

/* Positions an iterator yields (at most cap), or -1 on an error. */
static long collect(annal_db *db, annal_iter *it, uint64_t *out, size_t cap) {
    const annal_event *ev;
    size_t n = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (n < cap) out[n] = ev->position;
        n++;
    }
    annal_iter_close(it);
    if (rc != ANNAL_END) {
        fprintf(stderr, "iteration: %s: %s\n", annal_errname(rc), annal_db_errmsg(db));
        return -1;
    }
    return (long)n;
}

static size_t cat_len(const char *s) {
    const char *d = strchr(s, '-');
    return d ? (size_t)(d - s) : strlen(s);
}

/* What a category or type read must return: $all filtered, in the requested order. */
static long expected_tag(annal_db *db, int by_type, const char *name, uint64_t from, int backward,
                         uint64_t limit, uint64_t *out, size_t cap) {
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    size_t n = 0;
    uint64_t *all = malloc(sizeof *all * cap);
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        int match = by_type ? strcmp(ev->type, name) == 0
                            : cat_len(ev->stream) == strlen(name) &&
                                  memcmp(ev->stream, name, strlen(name)) == 0;
        if (match && n < cap) all[n++] = ev->position;
    }
    annal_iter_close(it);
    size_t m = 0;
    if (!backward) {
        for (size_t i = 0; i < n && (!limit || m < limit); i++)
            if (all[i] >= from) out[m++] = all[i];
    } else {
        for (size_t i = n; i-- > 0 && (!limit || m < limit);)
            if (all[i] <= from) out[m++] = all[i];
    }
    free(all);
    return (long)m;
}

static void check_tags(annal_db *db, unsigned seed) {
    static const char *cats[] = {"order", "payment", "cust", "solo", "ünï"};
    static const char *types[] = {"Created", "Paid", "Shipped", "Noted"};
    enum { CAP = 4096 };
    uint64_t *got = malloc(sizeof *got * CAP), *want = malloc(sizeof *want * CAP);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    for (int round = 0; round < 60; round++) {
        int by_type = rand_r(&seed) % 2;
        const char *name = by_type ? types[rand_r(&seed) % 4] : cats[rand_r(&seed) % 5];
        int backward = rand_r(&seed) % 2;
        uint64_t from = rand_r(&seed) % 4 == 0 ? (backward ? ANNAL_FROM_END : 0)
                                               : (uint64_t)rand_r(&seed) % (info.events + 5);
        uint64_t limit = rand_r(&seed) % 3 == 0 ? (uint64_t)rand_r(&seed) % 300 : 0;
        long w = expected_tag(db, by_type, name, from, backward, limit, want, CAP);
        annal_iter *it;
        char prefixed[64];
        snprintf(prefixed, sizeof prefixed, "%s%s", by_type ? "$et-" : "$ce-", name);
        /* both spellings: the function and the $ce-/$et- stream name */
        if (round % 2)
            TU_OK(db, annal_read_stream(db, prefixed, from, backward ? ANNAL_READ_BACKWARD : 0,
                                        limit, &it));
        else if (by_type)
            TU_OK(db,
                  annal_read_type(db, name, from, backward ? ANNAL_READ_BACKWARD : 0, limit, &it));
        else
            TU_OK(db, annal_read_category(db, name, from, backward ? ANNAL_READ_BACKWARD : 0, limit,
                                          &it));
        long g = collect(db, it, got, CAP);
        if (g != w || memcmp(got, want, sizeof *got * (size_t)(g < CAP ? g : CAP)) != 0) {
            fprintf(stderr, "%s from %llu %s limit %llu: got %ld events, want %ld\n", prefixed,
                    (unsigned long long)from, backward ? "backward" : "forward",
                    (unsigned long long)limit, g, w);
            fail();
        }
    }
    free(got);
    free(want);
}

static void fill(annal_db *db, unsigned *seed, int appends) {
    static const char *cats[] = {"order", "payment", "cust", "ünï"};
    static const char *types[] = {"Created", "Paid", "Shipped", "Noted"};
    for (int i = 0; i < appends; i++) {
        char stream[64];
        int c = rand_r(seed) % 5;
        if (c == 4)
            snprintf(stream, sizeof stream, "solo");
        else
            snprintf(stream, sizeof stream, "%s-%d-x", cats[c], rand_r(seed) % NSTREAMS);
        annal_event_data ev[5];
        int n = 1 + rand_r(seed) % 5;
        for (int k = 0; k < n; k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].type = types[rand_r(seed) % 4];
            ev[k].data = "{}";
            ev[k].data_len = 2;
        }
        TU_OK(db, annal_append(db, stream, ANNAL_EXPECT_ANY, ev, (size_t)n, NULL));
    }
}

static void test_category_and_type_reads(void **state) {
    fixture *f = *state;
    unsigned seed = (unsigned)getpid();
    printf("seed %u\n", seed);
    annal_iter *it;
    uint64_t got[4];
    TU_OK(f->db, annal_read_category(f->db, "order", 0, 0, 0, &it)); /* empty store */
    assert_int_equal(collect(f->db, it, got, 4), 0);
    fill(f->db, &seed, 700);
    check_tags(f->db, seed);
    TU_OK(f->db, annal_read_type(f->db, "NoSuchType", 0, 0, 0, &it));
    assert_int_equal(collect(f->db, it, got, 4), 0);
    TU_EXPECT(f->db, annal_read_category(f->db, "", 0, 0, 0, &it), ANNAL_EINVAL);
    /* kept through reopen, and rebuilt from the log with the rest of the index */
    reopen(f);
    check_tags(f->db, seed + 1);
    annal_db_close(f->db);
    f->db = NULL;
    TU_OK(NULL, annal_rebuild_index(f->dir, NULL));
    TU_OK(NULL, annal_verify(f->dir, NULL, NULL, NULL));
    f->db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
    check_tags(f->db, seed + 2);
    /* and readable through a read-only handle */
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *ro;
    TU_OK(NULL, annal_db_open(f->dir, &o, &ro));
    check_tags(ro, seed + 3);
    annal_db_close(ro);
}

/* Revisions a stream read yields, as a string like "3,4,5" (or the error name). */
static void stream_revs(annal_db *db, const char *stream, unsigned flags, char *out, size_t len) {
    annal_iter *it;
    annal_err rc = annal_read_stream(db, stream, flags ? ANNAL_FROM_END : 0, flags, 0, &it);
    out[0] = 0;
    if (rc != ANNAL_OK) {
        snprintf(out, len, "%s", annal_errname(rc));
        return;
    }
    const annal_event *ev;
    size_t o = 0;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK)
        o += (size_t)snprintf(out + o, len - o, "%s%llu", o ? "," : "",
                              (unsigned long long)ev->revision);
    annal_iter_close(it);
    if (rc != ANNAL_END) snprintf(out, len, "%s", annal_errname(rc));
}

/* How many events of stream a $all scan and a category scan show. */
static void scan_counts(annal_db *db, const char *stream, long *in_all, long *in_cat) {
    annal_iter *it;
    const annal_event *ev;
    *in_all = *in_cat = 0;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    while (annal_iter_next(it, &ev) == ANNAL_OK) *in_all += strcmp(ev->stream, stream) == 0;
    annal_iter_close(it);
    char cat[64];
    snprintf(cat, sizeof cat, "%.*s", (int)cat_len(stream), stream);
    TU_OK(db, annal_read_category(db, cat, 0, 0, 0, &it));
    while (annal_iter_next(it, &ev) == ANNAL_OK) *in_cat += strcmp(ev->stream, stream) == 0;
    annal_iter_close(it);
}

static annal_err mset(annal_db *db, const char *stream, int64_t expected, const char *json,
                      annal_append_result *res) {
    return annal_stream_meta_set(db, stream, expected, json, strlen(json), res);
}

static void append_n(annal_db *db, const char *stream, int n) {
    for (int i = 0; i < n; i++)
        TU_OK(db, tu_append1(db, stream, ANNAL_EXPECT_ANY, "E", "{}", NULL));
}

static void test_metadata_limits(void **state) {
    fixture *f = *state;
    annal_db *db = f->db;
    char revs[512];
    append_n(db, "acct-1", 10);
    append_n(db, "acct-2", 3);
    char *json;
    int64_t mrev;
    TU_OK(db, annal_stream_meta_get(db, "acct-1", &json, &mrev));
    assert_string_equal(json, "{}");
    assert_int_equal(mrev, -1);
    annal_free(json);

    /* $maxCount: only the newest 4, everywhere, at once */
    annal_append_result res;
    TU_OK(db,
          mset(db, "acct-1", ANNAL_EXPECT_NO_STREAM, "{\"$maxCount\":4,\"owner\":\"ops\"}", &res));
    stream_revs(db, "acct-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "6,7,8,9");
    stream_revs(db, "acct-1", ANNAL_READ_BACKWARD, revs, sizeof revs);
    assert_string_equal(revs, "9,8,7,6");
    long in_all, in_cat;
    scan_counts(db, "acct-1", &in_all, &in_cat);
    assert_int_equal(in_all, 4);
    assert_int_equal(in_cat, 4);
    annal_event *e;
    TU_EXPECT(db, annal_event_get(db, 0, &e), ANNAL_ENOTFOUND); /* revision 0 of acct-1 */
    append_n(db, "acct-1", 2);
    stream_revs(db, "acct-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "8,9,10,11");
    TU_OK(db, annal_stream_meta_get(db, "acct-1", &json, &mrev));
    assert_string_equal(json, "{\"$maxCount\":4,\"owner\":\"ops\"}");
    assert_int_equal(mrev, 0);
    annal_free(json);
    /* the metadata stream itself is readable, and its writes are optimistic */
    stream_revs(db, "$$acct-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "0");
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_NO_STREAM, "{}", &res), ANNAL_ECONFLICT);
    assert_int_equal(res.revision, 0);

    /* $tb, replacing $maxCount */
    TU_OK(db, mset(db, "acct-1", 0, "{\"$tb\":10}", NULL));
    stream_revs(db, "acct-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "10,11");
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "acct-1", &head));
    assert_int_equal(head, 11);
    /* lifting the limits brings the events back: nothing was compacted yet */
    TU_OK(db, mset(db, "acct-1", 1, "{}", NULL));
    stream_revs(db, "acct-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "0,1,2,3,4,5,6,7,8,9,10,11");

    /* bad documents */
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_ANY, "[1]", NULL), ANNAL_EINVAL);
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_ANY, "{\"$maxCount\":-1}", NULL), ANNAL_EINVAL);
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_ANY, "{\"$tb\":\"x\"}", NULL), ANNAL_EINVAL);
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_ANY, "{\"$deleted\":true}", NULL), ANNAL_EINVAL);
    TU_EXPECT(db, mset(db, "acct-1", ANNAL_EXPECT_ANY, "{", NULL), ANNAL_EINVAL);
    TU_EXPECT(db, mset(db, "$all", ANNAL_EXPECT_ANY, "{}", NULL), ANNAL_EINVAL);
    annal_event_data ev = {.type = "$streamDeleted"};
    TU_EXPECT(db, annal_append(db, "acct-2", ANNAL_EXPECT_ANY, &ev, 1, NULL), ANNAL_EINVAL);
    ev.type = "$metadata";
    TU_EXPECT(db, annal_append(db, "acct-2", ANNAL_EXPECT_ANY, &ev, 1, NULL), ANNAL_EINVAL);

    /* metadata before the stream exists applies once it does */
    TU_OK(db, mset(db, "later-1", ANNAL_EXPECT_ANY, "{\"$maxCount\":1}", NULL));
    TU_EXPECT(db, annal_stream_head(db, "later-1", &head), ANNAL_ENOTFOUND);
    append_n(db, "later-1", 3);
    stream_revs(db, "later-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "2");

    /* $maxAge: age only grows, so this cannot flake */
    TU_OK(db, mset(db, "acct-2", ANNAL_EXPECT_ANY, "{\"$maxAge\":1}", NULL));
    stream_revs(db, "acct-2", 0, revs, sizeof revs);
    assert_string_equal(revs, "0,1,2"); /* appended well under a second ago... */
    usleep(1200 * 1000);
    stream_revs(db, "acct-2", 0, revs, sizeof revs);
    assert_string_equal(revs, ""); /* ...and now older */
    append_n(db, "acct-2", 1);
    stream_revs(db, "acct-2", 0, revs, sizeof revs);
    assert_string_equal(revs, "3");

    /* all of it survives a reopen and a rebuild of the index from the log */
    for (int pass = 0; pass < 2; pass++) {
        annal_db_close(f->db);
        f->db = NULL;
        if (pass == 1) TU_OK(NULL, annal_rebuild_index(f->dir, NULL));
        f->db = db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
        stream_revs(db, "acct-1", 0, revs, sizeof revs);
        assert_string_equal(revs, "0,1,2,3,4,5,6,7,8,9,10,11");
        stream_revs(db, "later-1", 0, revs, sizeof revs);
        assert_string_equal(revs, "2");
        stream_revs(db, "acct-2", 0, revs, sizeof revs);
        assert_true(strcmp(revs, "3") == 0 || strcmp(revs, "") == 0); /* 3 may have aged too */
    }
    TU_OK(NULL, annal_verify(f->dir, NULL, NULL, NULL));
}

static int listed(annal_db *db, const char *name) {
    annal_stream_iter *it;
    const annal_stream_info *si;
    int found = 0;
    TU_OK(db, annal_streams_open(db, NULL, &it));
    while (annal_streams_next(it, &si) == ANNAL_OK) found |= strcmp(si->name, name) == 0;
    annal_streams_close(it);
    return found;
}

static void check_deleted(fixture *f) {
    annal_db *db = f->db;
    char revs[256];
    uint64_t head;
    /* soft-deleted, then re-created: revisions continue, old events stay hidden */
    stream_revs(db, "cart-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "5,6");
    assert_true(listed(db, "cart-1"));
    /* soft-deleted and left so */
    stream_revs(db, "cart-2", 0, revs, sizeof revs);
    assert_string_equal(revs, "ANNAL_ENOTFOUND");
    TU_EXPECT(db, annal_stream_head(db, "cart-2", &head), ANNAL_ENOTFOUND);
    assert_false(listed(db, "cart-2"));
    long in_all, in_cat;
    scan_counts(db, "cart-2", &in_all, &in_cat);
    assert_int_equal(in_all + in_cat, 0);
    /* tombstoned: only the tombstone is left in $all */
    stream_revs(db, "cart-3", 0, revs, sizeof revs);
    assert_string_equal(revs, "ANNAL_EDELETED");
    TU_EXPECT(db, annal_stream_head(db, "cart-3", &head), ANNAL_EDELETED);
    TU_EXPECT(db, tu_append1(db, "cart-3", ANNAL_EXPECT_ANY, "E", "{}", NULL), ANNAL_EDELETED);
    TU_EXPECT(db, mset(db, "cart-3", ANNAL_EXPECT_ANY, "{}", NULL), ANNAL_EDELETED);
    TU_EXPECT(db, annal_stream_delete(db, "cart-3", ANNAL_EXPECT_ANY, 0, NULL), ANNAL_EDELETED);
    scan_counts(db, "cart-3", &in_all, &in_cat);
    assert_int_equal(in_all, 1);
    assert_int_equal(in_cat, 1);
    annal_iter *it;
    const annal_event *ev;
    TU_OK(db, annal_read_type(db, "$streamDeleted", 0, 0, 0, &it));
    TU_OK(db, annal_iter_next(it, &ev));
    assert_string_equal(ev->stream, "cart-3");
    assert_int_equal(ev->revision, 2);
    assert_int_equal(annal_iter_next(it, &ev), ANNAL_END);
    annal_iter_close(it);
    assert_false(listed(db, "cart-3"));
}

static void test_delete(void **state) {
    fixture *f = *state;
    annal_db *db = f->db;
    annal_append_result res;
    append_n(db, "cart-1", 3);
    append_n(db, "cart-2", 2);
    append_n(db, "cart-3", 2);
    TU_EXPECT(db, annal_stream_delete(db, "cart-9", ANNAL_EXPECT_ANY, 0, NULL), ANNAL_ENOTFOUND);
    TU_EXPECT(db, annal_stream_delete(db, "cart-1", 1, 0, &res), ANNAL_ECONFLICT);
    assert_int_equal(res.revision, 2);
    TU_OK(db, annal_stream_delete(db, "cart-1", 2, 0, NULL));
    TU_EXPECT(db, annal_stream_delete(db, "cart-1", ANNAL_EXPECT_ANY, 0, NULL), ANNAL_ENOTFOUND);
    /* re-create: as if it did not exist, revisions continue */
    TU_EXPECT(db, tu_append1(db, "cart-1", ANNAL_EXPECT_STREAM_EXISTS, "E", "{}", NULL),
              ANNAL_ECONFLICT);
    TU_OK(db, tu_append1(db, "cart-1", ANNAL_EXPECT_NO_STREAM, "E", "{}", &res));
    assert_int_equal(res.first_revision, 3);
    append_n(db, "cart-1", 1);
    TU_OK(db, annal_stream_delete(db, "cart-1", ANNAL_EXPECT_ANY, 0, NULL));
    append_n(db, "cart-1", 2); /* revisions 5 and 6 */
    TU_OK(db, annal_stream_delete(db, "cart-2", ANNAL_EXPECT_STREAM_EXISTS, 0, NULL));
    TU_EXPECT(db, annal_stream_delete(db, "cart-3", 0, ANNAL_DELETE_HARD, &res), ANNAL_ECONFLICT);
    TU_OK(db, annal_stream_delete(db, "cart-3", 1, ANNAL_DELETE_HARD, &res));
    assert_int_equal(res.first_revision, 2);
    TU_EXPECT(db, annal_stream_delete(db, "cart-3", ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, NULL),
              ANNAL_EDELETED);
    check_deleted(f);
    reopen(f);
    check_deleted(f);
    annal_db_close(f->db);
    f->db = NULL;
    TU_OK(NULL, annal_rebuild_index(f->dir, NULL));
    f->db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
    check_deleted(f);
    TU_OK(NULL, annal_verify(f->dir, NULL, NULL, NULL));
}

/* ---- deletes racing appends ---- */
typedef struct race {
    annal_db *db;
    int stop;
    uint64_t max_rev;  /* highest revision an appender got */
    uint64_t appended; /* successful appends */
    annal_err unexpected;
} race;

static void *race_appender(void *arg) {
    race *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        annal_append_result res;
        annal_err rc = tu_append1(r->db, "hot-1", ANNAL_EXPECT_ANY, "E", "{}", &res);
        if (rc == ANNAL_OK) {
            __atomic_fetch_add(&r->appended, 1, __ATOMIC_RELAXED);
            uint64_t m = __atomic_load_n(&r->max_rev, __ATOMIC_RELAXED);
            while (res.first_revision > m &&
                   !__atomic_compare_exchange_n(&r->max_rev, &m, res.first_revision, 0,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
        } else if (rc == ANNAL_EDELETED) {
            break; /* tombstoned: every later append must fail the same way */
        } else {
            r->unexpected = rc;
            break;
        }
    }
    return NULL;
}

static void test_deletes_race_appends(void **state) {
    fixture *f = *state;
    race r = {f->db, 0, 0, 0, ANNAL_OK};
    pthread_t th[4];
    TU_OK(f->db, tu_append1(f->db, "hot-1", ANNAL_EXPECT_NO_STREAM, "E", "{}", NULL));
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, race_appender, &r);
    int deletes = 0;
    char bad[300] = "";
    for (int i = 0;
         i < 20000 && (deletes < 50 || __atomic_load_n(&r.appended, __ATOMIC_RELAXED) < 2000);
         i++) {
        usleep(200); /* let the appenders in */
        annal_err rc = annal_stream_delete(f->db, "hot-1", ANNAL_EXPECT_ANY, 0, NULL);
        if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND) { /* not found: just deleted */
            snprintf(bad, sizeof bad, "delete: %s: %s", annal_errname(rc), annal_db_errmsg(f->db));
            break;
        }
        deletes += rc == ANNAL_OK;
        /* whatever is visible is a dense run ending at the head */
        annal_iter *it;
        rc = annal_read_stream(f->db, "hot-1", 0, 0, 0, &it);
        if (rc == ANNAL_ENOTFOUND) continue;
        if (rc != ANNAL_OK) {
            snprintf(bad, sizeof bad, "read: %s", annal_errname(rc));
            break;
        }
        const annal_event *ev;
        uint64_t prev = UINT64_MAX;
        while (!bad[0] && annal_iter_next(it, &ev) == ANNAL_OK) {
            if (prev != UINT64_MAX && ev->revision != prev + 1)
                snprintf(bad, sizeof bad, "revision %llu after %llu",
                         (unsigned long long)ev->revision, (unsigned long long)prev);
            prev = ev->revision;
        }
        annal_iter_close(it);
        if (bad[0]) break;
    }
    /* (no assertion while the appenders run: a failing one would unwind their stack) */
    /* a tombstone while they append: no append gets past it */
    annal_append_result tomb;
    annal_err rc;
    while ((rc = annal_stream_delete(f->db, "hot-1", ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, &tomb)) ==
           ANNAL_ENOTFOUND)
        usleep(100); /* soft-deleted and not re-created yet */
    if (rc != ANNAL_OK || bad[0]) __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    if (bad[0]) fail_msg("%s", bad);
    TU_OK(f->db, rc);
    assert_int_equal(r.unexpected, ANNAL_OK);
    printf("%llu appends, %d soft deletes, tombstone at revision %llu\n",
           (unsigned long long)r.appended, deletes, (unsigned long long)tomb.first_revision);
    assert_true(deletes > 0);
    assert_true(r.max_rev < tomb.first_revision);
    uint64_t head;
    TU_EXPECT(f->db, annal_stream_head(f->db, "hot-1", &head), ANNAL_EDELETED);
    reopen(f);
    TU_EXPECT(f->db, tu_append1(f->db, "hot-1", ANNAL_EXPECT_ANY, "E", "{}", NULL), ANNAL_EDELETED);
    TU_OK(NULL, annal_verify(f->dir, NULL, NULL, NULL));
}

/* $maxAge is in seconds: an event 1.5 s old is visible under $maxAge 5 and hidden under
 * $maxAge 1 (read as milliseconds, both would hide it); and the rule itself at exact ages. */
static void test_max_age_seconds(void **state) {
    fixture *f = *state;
    annal_db *db = f->db;
    append_n(db, "aged-1", 2);
    usleep(1500 * 1000);
    char revs[64];
    TU_OK(db, mset(db, "aged-1", ANNAL_EXPECT_ANY, "{\"$maxAge\":5}", NULL));
    stream_revs(db, "aged-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "0,1");
    TU_OK(db, mset(db, "aged-1", ANNAL_EXPECT_ANY, "{\"$maxAge\":1}", NULL));
    stream_revs(db, "aged-1", 0, revs, sizeof revs);
    assert_string_equal(revs, "");

    annal__stream_rec sr = annal__stream_rec_new(1, 0);
    sr.count = 1;
    int64_t now = 1000000000000000000LL, s = 1000000000LL;
    sr.max_age = 5;
    assert_true(annal__event_visible(&sr, 0, now - 2 * s, now));
    assert_true(annal__event_visible(&sr, 0, now - 5 * s, now)); /* exactly the age: kept */
    assert_false(annal__event_visible(&sr, 0, now - 5 * s - 1, now));
    sr.max_age = 1;
    assert_false(annal__event_visible(&sr, 0, now - 2 * s, now));
    assert_true(annal__event_visible(&sr, 0, now - s / 2, now));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_category_and_type_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deletes_race_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_age_seconds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
