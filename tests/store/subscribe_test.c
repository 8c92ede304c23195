/* subscribe_test.c -- subscriptions (catch-up then live) and annal_wait_position, as
 * documented in include/annal.h: no gap and no duplicate across the switch to live under
 * concurrent appends, caught-up and fell-behind signals, filters, checkpoints, cancel,
 * waiting for a stream that does not exist yet, and a subscriber in another process.
 * Threads never call cmocka assertions: they record what they saw and the main thread
 * checks it. No assertion depends on timing except generous upper bounds. ANNAL_LONG=1
 * (scripts/test.sh --long) runs 40 random interleavings instead of 5. */
#include "testutil.h"

#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state) {
    *state = tu_tmpdir("sub");
    return 0;
}
static int teardown(void **state) {
    tu_rmrf(*state);
    free(*state);
    return 0;
}

static void append_n(annal_db *db, const char *stream, const char *type, int n) {
    for (int i = 0; i < n; i++)
        TU_OK(db, tu_append1(db, stream, ANNAL_EXPECT_ANY, type, "{}", NULL));
}

static annal_sub *sub_open(annal_db *db, const char *stream, int start, uint64_t from,
                           const annal_filter *f, uint32_t ckpt, uint64_t behind) {
    annal_sub_opts o;
    annal_sub_opts_init(&o);
    o.stream = stream;
    o.start = start;
    o.from = from;
    o.filter = f;
    o.checkpoint_every = ckpt;
    o.behind_threshold = behind;
    annal_sub *s = NULL;
    TU_OK(db, annal_sub_open(db, &o, &s));
    assert_non_null(s);
    return s;
}

/* The next item, which must be of kind want; returns its position. */
#define expect_item(db, s, want) expect_item_at((db), (s), (want), __LINE__)
static uint64_t expect_item_at(annal_db *db, annal_sub *s, annal_sub_kind want, int line) {
    annal_sub_item it;
    annal_err rc = annal_sub_next(s, 2000, &it);
    if (rc != ANNAL_OK) print_error("line %d:\n", line);
    TU_OK(db, rc);
    if (it.kind != want) {
        print_error("item kind %d at %" PRIu64 ", want %d\n", (int)it.kind, it.position, (int)want);
        fail();
    }
    return it.position;
}

/* ------------------------------------------------------------------------------------
 * No gap, no duplicate across catch-up and live, under concurrent appends. */

typedef struct shared {
    annal_db *db;
    uint64_t seed;
    int batches;
    volatile int done;       /* appenders finished; final is set */
    volatile uint64_t final; /* head after the appenders */
} shared;

typedef struct subscriber {
    shared *sh;
    annal_db *db; /* writer or read-only handle */
    int start;
    uint64_t from;
    uint64_t seed;
    uint64_t *pos; /* positions delivered */
    size_t n, cap;
    uint64_t first_expected; /* START: 0, AFTER: from + 1, END: head at open (lower bound) */
    annal_err err;
    int bad_kind;
    int checkpoints_bad; /* a checkpoint past an undelivered event */
} subscriber;

static void *appender(void *arg) {
    shared *sh = arg;
    uint64_t rs = __atomic_fetch_add(&sh->seed, 1, __ATOMIC_SEQ_CST) * 7919 + 1;
    for (int b = 0; b < sh->batches; b++) {
        annal_event_data ev[8];
        size_t n = 1 + splitmix(&rs) % 8;
        memset(ev, 0, sizeof ev);
        for (size_t i = 0; i < n; i++) {
            ev[i].type = "T";
            ev[i].data = "{}";
            ev[i].data_len = 2;
        }
        char stream[32];
        snprintf(stream, sizeof stream, "s-%u", (unsigned)(splitmix(&rs) % 5));
        if (annal_append(sh->db, stream, ANNAL_EXPECT_ANY, ev, n, NULL) != ANNAL_OK) return arg;
        if (splitmix(&rs) % 4 == 0) sleep_ms((int)(splitmix(&rs) % 3));
    }
    return NULL;
}

static void *subscriber_run(void *arg) {
    subscriber *su = arg;
    annal_sub *s = NULL;
    annal_sub_opts o;
    annal_sub_opts_init(&o);
    o.start = su->start;
    o.from = su->from;
    o.checkpoint_every = 1 + (uint32_t)(su->seed % 50);
    if ((su->err = annal_sub_open(su->db, &o, &s)) != ANNAL_OK) return NULL;
    static const int timeouts[] = {0, 1, 5, 20, 100};
    uint64_t reached = 0; /* everything below was delivered */
    for (;;) {
        if (__atomic_load_n(&su->sh->done, __ATOMIC_SEQ_CST) && reached >= su->sh->final) break;
        annal_sub_item it;
        annal_err rc = annal_sub_next(s, timeouts[splitmix(&su->seed) % ARRAY_LEN(timeouts)], &it);
        if (rc == ANNAL_ETIMEDOUT) continue;
        if (rc != ANNAL_OK) {
            su->err = rc;
            break;
        }
        if (it.kind == ANNAL_SUB_EVENT) {
            if (it.event->position != it.position) su->bad_kind = 1;
            if (su->n == su->cap) {
                su->cap = su->cap ? su->cap * 2 : 1024;
                su->pos = realloc(su->pos, su->cap * sizeof *su->pos);
            }
            su->pos[su->n++] = it.position;
            reached = it.position + 1;
        } else if (it.kind == ANNAL_SUB_CHECKPOINT || it.kind == ANNAL_SUB_CAUGHT_UP) {
            if (it.position > reached && su->n > 0) su->checkpoints_bad = 1;
            if (it.position > reached) reached = it.position; /* END start: nothing before */
        }
    }
    annal_sub_close(s);
    return NULL;
}

static void run_interleaving(const char *dir, uint64_t seed) {
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    annal_db_opts ro;
    annal_db_opts_init(&ro);
    ro.flags = ANNAL_OPEN_READONLY;
    annal_db *rdb = NULL;
    TU_OK(NULL, annal_db_open(dir, &ro, &rdb));
    uint64_t rs = seed;
    /* some history before anyone subscribes */
    int pre = (int)(splitmix(&rs) % 300);
    for (int i = 0; i < pre; i++)
        TU_OK(db, tu_append1(db, "pre", ANNAL_EXPECT_ANY, "P", "{}", NULL));

    shared sh = {.db = db, .seed = seed, .batches = 150};
    enum { NA = 3, NS = 4 };
    pthread_t at[NA], st[NS];
    subscriber subs[NS];
    memset(subs, 0, sizeof subs);
    for (int i = 0; i < NA; i++) assert_int_equal(pthread_create(&at[i], NULL, appender, &sh), 0);
    for (int i = 0; i < NS; i++) {
        sleep_ms((int)(splitmix(&rs) % 15)); /* start at random points of the load */
        subscriber *su = &subs[i];
        su->sh = &sh;
        su->db = splitmix(&rs) % 2 ? rdb : db;
        su->seed = splitmix(&rs);
        su->start = (int)(splitmix(&rs) % 3);
        annal_db_info info;
        TU_OK(db, annal_db_info_get(db, &info));
        uint64_t head = info.events;
        if (su->start == ANNAL_SUB_AFTER && head == 0) su->start = ANNAL_SUB_START;
        su->from = su->start == ANNAL_SUB_AFTER ? splitmix(&rs) % head : 0;
        su->first_expected = su->start == ANNAL_SUB_START   ? 0
                             : su->start == ANNAL_SUB_AFTER ? su->from + 1
                                                            : head;
        assert_int_equal(pthread_create(&st[i], NULL, subscriber_run, su), 0);
    }
    for (int i = 0; i < NA; i++) {
        void *r;
        pthread_join(at[i], &r);
        assert_null(r);
    }
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    sh.final = info.events;
    __atomic_store_n(&sh.done, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < NS; i++) pthread_join(st[i], NULL);

    /* What annal_read_all says is there: every position, dense. */
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    uint64_t expect = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) assert_int_equal(ev->position, expect++);
    assert_int_equal(rc, ANNAL_END);
    annal_iter_close(it);
    assert_int_equal(expect, sh.final);

    for (int i = 0; i < NS; i++) {
        subscriber *su = &subs[i];
        TU_OK(su->db, su->err);
        assert_int_equal(su->bad_kind, 0);
        assert_int_equal(su->checkpoints_bad, 0);
        assert_true(su->n > 0 || su->first_expected >= sh.final);
        uint64_t first = su->n ? su->pos[0] : sh.final;
        if (su->start == ANNAL_SUB_END)
            assert_true(first >= su->first_expected); /* events during the open may count */
        else
            assert_int_equal(first, su->first_expected);
        for (size_t k = 1; k < su->n; k++) {
            if (su->pos[k] != su->pos[k - 1] + 1) {
                print_error("subscriber %d (start %d): position %" PRIu64 " after %" PRIu64 "\n", i,
                            su->start, su->pos[k], su->pos[k - 1]);
                fail();
            }
        }
        if (su->n) assert_int_equal(su->pos[su->n - 1], sh.final - 1);
        free(su->pos);
    }
    annal_db_close(rdb);
    annal_db_close(db);
}

static void test_no_gap_no_dup(void **state) {
    const char *base = *state;
    int rounds = getenv("ANNAL_LONG") ? 40 : 5;
    for (int r = 0; r < rounds; r++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/r%d", base, r);
        run_interleaving(dir, 1000 + (uint64_t)r * 31);
        tu_rmrf(dir);
    }
}

/* ------------------------------------------------------------------------------------
 * Caught-up and fell-behind. */

static void test_caught_up_fell_behind(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    append_n(db, "a-1", "E", 10);
    annal_sub *s = sub_open(db, NULL, ANNAL_SUB_START, 0, NULL, 0, 5);
    for (uint64_t i = 0; i < 10; i++) assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), i);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 10);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CAUGHT_UP), 10);
    annal_sub_item it;
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    TU_EXPECT(db, annal_sub_next(s, 10, &it), ANNAL_ETIMEDOUT);
    /* fewer than the threshold: plain live events, caught up again */
    append_n(db, "a-1", "E", 3);
    for (uint64_t i = 10; i < 13; i++) assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), i);
    /* still caught up: no second CAUGHT_UP, and nothing was passed over to checkpoint */
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    /* the threshold or more: FELL_BEHIND once, then the events, then CAUGHT_UP */
    append_n(db, "a-2", "E", 20);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_FELL_BEHIND), 13);
    for (uint64_t i = 13; i < 33; i++) assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), i);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 33);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CAUGHT_UP), 33);
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    annal_sub_close(s);

    /* END: only what comes after the open */
    s = sub_open(db, NULL, ANNAL_SUB_END, 0, NULL, 0, 0);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 33);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CAUGHT_UP), 33);
    append_n(db, "a-3", "E", 1);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), 33);
    annal_sub_close(s);
    /* AFTER a position; a stream subscription's positions are revisions */
    s = sub_open(db, NULL, ANNAL_SUB_AFTER, 30, NULL, 0, 0);
    for (uint64_t i = 31; i < 34; i++) assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), i);
    annal_sub_close(s);
    s = sub_open(db, "a-1", ANNAL_SUB_AFTER, 11, NULL, 0, 0);
    annal_sub_item item;
    TU_OK(db, annal_sub_next(s, 0, &item));
    assert_int_equal(item.kind, ANNAL_SUB_EVENT);
    assert_int_equal(item.event->revision, 12);
    assert_int_equal(item.position, 12);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 13); /* a revision */
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CAUGHT_UP), 13);
    annal_sub_close(s);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * Filters. */

static size_t collect(annal_db *db, annal_sub *s, uint64_t *pos, size_t max) {
    size_t n = 0;
    for (;;) {
        annal_sub_item it;
        TU_OK(db, annal_sub_next(s, 2000, &it));
        if (it.kind == ANNAL_SUB_CAUGHT_UP) return n;
        if (it.kind == ANNAL_SUB_EVENT) {
            assert_true(n < max);
            pos[n++] = it.position;
        }
    }
}

static void test_filters(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "order-1", ANNAL_EXPECT_ANY, "OrderPlaced", "{}", NULL));      /* 0 */
    TU_OK(db, tu_append1(db, "order-1", ANNAL_EXPECT_ANY, "OrderPaid", "{}", NULL));        /* 1 */
    TU_OK(db, tu_append1(db, "cart-1", ANNAL_EXPECT_ANY, "ItemAdded", "{}", NULL));         /* 2 */
    TU_OK(db, annal_stream_meta_set(db, "cart-1", ANNAL_EXPECT_ANY, "{\"x\":1}", 7, NULL)); /* 3 */
    TU_OK(db, tu_append1(db, "order-2", ANNAL_EXPECT_ANY, "OrderPlaced", "{}", NULL));      /* 4 */
    uint64_t p[16];
    size_t n;

    annal_filter f = {.type_prefix = "Order"};
    annal_sub *s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 3);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1], 1);
    assert_int_equal(p[2], 4);
    annal_sub_close(s);

    f = (annal_filter){.type_regex = "^(Item|Order)Pa"};
    s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 1);
    annal_sub_close(s);

    f = (annal_filter){.stream_prefix = "cart"};
    s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 1); /* $$cart-1 does not start with "cart" */
    assert_int_equal(p[0], 2);
    annal_sub_close(s);

    f = (annal_filter){.stream_regex = "-2$"};
    s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 4);
    annal_sub_close(s);

    s = sub_open(db, NULL, ANNAL_SUB_START, 0, NULL, 0, 0);
    assert_int_equal(collect(db, s, p, 16), 5); /* the metadata event is in $all */
    annal_sub_close(s);
    f = (annal_filter){.exclude_system = 1};
    s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 4);
    assert_int_equal(p[3], 4);
    annal_sub_close(s);

    /* a category or type subscription filters too */
    f = (annal_filter){.type_regex = "Paid"};
    s = sub_open(db, "$ce-order", ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 1);
    annal_sub_close(s);
    s = sub_open(db, "$et-OrderPlaced", ANNAL_SUB_START, 0, NULL, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 2);
    assert_int_equal(p[1], 4);
    /* live: another type passes unseen, the next OrderPlaced comes through */
    TU_OK(db, tu_append1(db, "order-3", ANNAL_EXPECT_ANY, "OrderPaid", "{}", NULL));   /* 5 */
    TU_OK(db, tu_append1(db, "order-3", ANNAL_EXPECT_ANY, "OrderPlaced", "{}", NULL)); /* 6 */
    assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), 6);
    annal_sub_close(s);

    /* live and filtered: going idle after passing events over moves the checkpoint */
    f = (annal_filter){.type_prefix = "Order"};
    s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 0, 0);
    n = collect(db, s, p, 16);
    assert_int_equal(n, 5);
    annal_sub_item it;
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    TU_OK(db, tu_append1(db, "cart-2", ANNAL_EXPECT_ANY, "ItemAdded", "{}", NULL)); /* 7 */
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 8);
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    annal_sub_close(s);

    /* refused at open */
    annal_sub_opts o;
    annal_sub_opts_init(&o);
    annal_sub *bad = NULL;
    f = (annal_filter){.type_regex = "(unclosed"};
    o.filter = &f;
    TU_EXPECT(db, annal_sub_open(db, &o, &bad), ANNAL_EINVAL);
    assert_null(bad);
    assert_non_null(strstr(annal_db_errmsg(db), "regex"));
    f = (annal_filter){.type_prefix = "Order"};
    o.stream = "order-1";
    TU_EXPECT(db, annal_sub_open(db, &o, &bad), ANNAL_EINVAL);
    assert_non_null(strstr(annal_db_errmsg(db), "filter"));
    o.filter = NULL;
    o.stream = "";
    TU_EXPECT(db, annal_sub_open(db, &o, &bad), ANNAL_EINVAL);
    o.stream = NULL;
    o.start = 7;
    TU_EXPECT(db, annal_sub_open(db, &o, &bad), ANNAL_EINVAL);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * Checkpoints: never past an undelivered matching event; resuming from one gives
 * exactly the rest. */

typedef struct item_log {
    annal_sub_kind kind[4096];
    uint64_t pos[4096];
    size_t n;
} item_log;

static void log_until_caught_up(annal_db *db, annal_sub *s, item_log *l) {
    for (;;) {
        annal_sub_item it;
        TU_OK(db, annal_sub_next(s, 2000, &it));
        assert_true(l->n < ARRAY_LEN(l->pos));
        l->kind[l->n] = it.kind;
        l->pos[l->n++] = it.position;
        if (it.kind == ANNAL_SUB_CAUGHT_UP) return;
    }
}

static void test_checkpoints(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    enum { N = 2000 };
    static int match[N];
    uint64_t rs = 5;
    for (int i = 0; i < N; i++) {
        match[i] = splitmix(&rs) % 97 == 0;
        TU_OK(db, tu_append1(db, "c-1", ANNAL_EXPECT_ANY, match[i] ? "Hit" : "Miss", "{}", NULL));
    }
    annal_filter f = {.type_prefix = "Hit"};
    annal_sub *s = sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 100, 0);
    static item_log l;
    memset(&l, 0, sizeof l);
    log_until_caught_up(db, s, &l);
    annal_sub_close(s);

    size_t nck = 0;
    uint64_t delivered_below = 0; /* matching events delivered so far, in order */
    for (size_t k = 0; k < l.n; k++) {
        if (l.kind[k] == ANNAL_SUB_EVENT) {
            assert_true(match[l.pos[k]]);
            delivered_below = l.pos[k] + 1;
            continue;
        }
        if (l.kind[k] != ANNAL_SUB_CHECKPOINT) continue;
        nck++;
        uint64_t c = l.pos[k];
        assert_true(c <= N);
        /* every matching event below c was delivered before this item */
        for (uint64_t q = delivered_below; q < c; q++) assert_false(match[q]);
        /* resume from it: exactly the events delivered after it */
        annal_sub *r = c == 0 ? sub_open(db, NULL, ANNAL_SUB_START, 0, &f, 100, 0)
                              : sub_open(db, NULL, ANNAL_SUB_AFTER, c - 1, &f, 100, 0);
        static item_log rl;
        memset(&rl, 0, sizeof rl);
        log_until_caught_up(db, r, &rl);
        annal_sub_close(r);
        size_t a = k + 1, b = 0;
        for (;;) {
            while (a < l.n && l.kind[a] != ANNAL_SUB_EVENT) a++;
            while (b < rl.n && rl.kind[b] != ANNAL_SUB_EVENT) b++;
            if (a == l.n || b == rl.n) break;
            assert_int_equal(l.pos[a], rl.pos[b]);
            a++, b++;
        }
        assert_int_equal(a, l.n);
        assert_int_equal(b, rl.n);
    }
    /* 2000 events with ~1 in 97 matching: runs of 100 misses happen; plus catching up */
    assert_true(nck >= 2);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * A slow subscriber under load holds nothing: the heap does not grow with the backlog,
 * and it still gets every event afterwards. */

static void test_slow_subscriber(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    append_n(db, "warm", "W", 10);
    annal_sub *s = sub_open(db, NULL, ANNAL_SUB_START, 0, NULL, 0, 0);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_EVENT), 0); /* then it stalls */
    static char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[0] = '"';
    big[sizeof big - 2] = '"';
    struct mallinfo2 before = mallinfo2();
    enum { N = 4000 }; /* 16 MiB of data behind the stalled subscriber */
    int64_t t0 = mono_ns();
    for (int i = 0; i < N; i++) TU_OK(db, tu_append1(db, "load", ANNAL_EXPECT_ANY, "L", big, NULL));
    int64_t t1 = mono_ns();
    struct mallinfo2 after = mallinfo2();
    size_t grew = after.uordblks > before.uordblks ? after.uordblks - before.uordblks : 0;
    print_message("slow subscriber: %d appends in %.1f ms beside it, heap +%zu bytes\n", N,
                  (double)(t1 - t0) / 1e6, grew);
    /* far below the 16 MiB of backlog (under ASan mallinfo2 reports 0: vacuous there) */
    assert_true(grew < 4u * 1024 * 1024);
    uint64_t next = 1;
    for (;;) {
        annal_sub_item it;
        TU_OK(db, annal_sub_next(s, 2000, &it));
        if (it.kind == ANNAL_SUB_CAUGHT_UP) break;
        if (it.kind == ANNAL_SUB_EVENT) assert_int_equal(it.position, next++);
    }
    assert_int_equal(next, 10 + N);
    annal_sub_close(s);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * Cancel from another thread, on a writer and on a read-only handle. */

typedef struct waiter {
    annal_sub *s;
    annal_err rc;
    int kinds_ok;
} waiter;

static void *wait_forever(void *arg) {
    waiter *w = arg;
    annal_sub_item it;
    for (;;) {
        w->rc = annal_sub_next(w->s, -1, &it);
        if (w->rc != ANNAL_OK) return NULL;
        if (it.kind == ANNAL_SUB_EVENT) w->kinds_ok = 0;
    }
}

static void test_cancel(void **state) {
    annal_db *db = tu_open(*state, 0);
    annal_db_opts ro;
    annal_db_opts_init(&ro);
    ro.flags = ANNAL_OPEN_READONLY;
    annal_db *rdb = NULL;
    TU_OK(NULL, annal_db_open(*state, &ro, &rdb));
    annal_db *handles[] = {db, rdb};
    for (int h = 0; h < 2; h++) {
        waiter w = {.s = sub_open(handles[h], NULL, ANNAL_SUB_START, 0, NULL, 0, 0), .kinds_ok = 1};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, wait_forever, &w), 0);
        sleep_ms(50); /* most likely asleep by now; either way it must end */
        int64_t t0 = mono_ns();
        annal_sub_cancel(w.s);
        pthread_join(t, NULL);
        double ms = (double)(mono_ns() - t0) / 1e6;
        print_message("cancel (%s handle) returned after %.2f ms\n", h ? "read-only" : "writer",
                      ms);
        assert_int_equal(w.rc, ANNAL_ECANCELED);
        assert_int_equal(w.kinds_ok, 1);
        assert_true(ms < 5000);
        annal_sub_item it;
        TU_EXPECT(handles[h], annal_sub_next(w.s, 0, &it), ANNAL_ECANCELED); /* and stays so */
        annal_sub_close(w.s);
    }
    annal_db_close(rdb);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * annal_wait_position. */

typedef struct pos_waiter {
    annal_db *db;
    uint64_t pos;
    annal_err rc;
    uint64_t head_after;
} pos_waiter;

static void *wait_pos(void *arg) {
    pos_waiter *w = arg;
    w->rc = annal_wait_position(w->db, w->pos, -1);
    annal_db_info info;
    if (annal_db_info_get(w->db, &info) == ANNAL_OK) w->head_after = info.events;
    return NULL;
}

static void test_wait_position(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    TU_EXPECT(db, annal_wait_position(db, 0, 0), ANNAL_ETIMEDOUT);
    TU_EXPECT(db, annal_wait_position(db, 0, 20), ANNAL_ETIMEDOUT);
    annal_db_opts ro;
    annal_db_opts_init(&ro);
    ro.flags = ANNAL_OPEN_READONLY;
    annal_db *rdb = NULL;
    TU_OK(NULL, annal_db_open(*state, &ro, &rdb));
    pos_waiter w = {.db = db, .pos = 4}, rw = {.db = rdb, .pos = 4};
    pthread_t t, rt;
    assert_int_equal(pthread_create(&t, NULL, wait_pos, &w), 0);
    assert_int_equal(pthread_create(&rt, NULL, wait_pos, &rw), 0);
    for (int i = 0; i < 5; i++) {
        sleep_ms(5);
        TU_OK(db, tu_append1(db, "w-1", ANNAL_EXPECT_ANY, "E", "{}", NULL));
    }
    pthread_join(t, NULL);
    pthread_join(rt, NULL);
    TU_OK(db, w.rc);
    TU_OK(rdb, rw.rc);
    assert_true(w.head_after > 4);
    assert_true(rw.head_after > 4);
    TU_OK(db, annal_wait_position(db, 4, 0)); /* already there */
    TU_OK(rdb, annal_wait_position(rdb, 3, 0));
    TU_EXPECT(rdb, annal_wait_position(rdb, 5, 10), ANNAL_ETIMEDOUT);
    annal_db_close(rdb);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * One stream: waited for before it exists; soft delete; tombstone. */

typedef struct later {
    annal_db *db;
} later;

static void *append_later(void *arg) {
    later *l = arg;
    sleep_ms(30);
    tu_append1(l->db, "other-1", ANNAL_EXPECT_ANY, "O", "{}", NULL);
    sleep_ms(30);
    tu_append1(l->db, "late-1", ANNAL_EXPECT_ANY, "Born", "{}", NULL);
    return NULL;
}

static void test_stream_not_yet(void **state) {
    annal_db *db = tu_open(*state, ANNAL_OPEN_NOSYNC);
    annal_sub *s = sub_open(db, "late-1", ANNAL_SUB_START, 0, NULL, 0, 0);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CHECKPOINT), 0);
    assert_int_equal(expect_item(db, s, ANNAL_SUB_CAUGHT_UP), 0);
    annal_sub_item it;
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    later l = {db};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, append_later, &l), 0);
    TU_OK(db, annal_sub_next(s, 10000, &it)); /* the other stream's event is not for us */
    pthread_join(t, NULL);
    assert_int_equal(it.kind, ANNAL_SUB_EVENT);
    assert_string_equal(it.event->stream, "late-1");
    assert_int_equal(it.event->revision, 0);
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);

    /* soft delete: the old events stay behind; the next append comes through */
    TU_OK(db, annal_stream_delete(db, "late-1", ANNAL_EXPECT_ANY, 0, NULL));
    TU_EXPECT(db, annal_sub_next(s, 0, &it), ANNAL_ETIMEDOUT);
    TU_OK(db, tu_append1(db, "late-1", ANNAL_EXPECT_ANY, "Again", "{}", NULL));
    TU_OK(db, annal_sub_next(s, 2000, &it));
    assert_int_equal(it.kind, ANNAL_SUB_EVENT);
    assert_string_equal(it.event->type, "Again");
    assert_int_equal(it.event->revision, 1);
    annal_sub_close(s);
    /* a new subscriber from the start sees only what is visible */
    s = sub_open(db, "late-1", ANNAL_SUB_START, 0, NULL, 0, 0);
    TU_OK(db, annal_sub_next(s, 0, &it));
    assert_int_equal(it.kind, ANNAL_SUB_EVENT);
    assert_string_equal(it.event->type, "Again");

    /* tombstone */
    TU_OK(db, annal_stream_delete(db, "late-1", ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, NULL));
    annal_err rc;
    do rc = annal_sub_next(s, 2000, &it);
    while (rc == ANNAL_OK && it.kind != ANNAL_SUB_EVENT);
    TU_EXPECT(db, rc, ANNAL_EDELETED);
    annal_sub_close(s);
    annal_db_close(db);
}

/* ------------------------------------------------------------------------------------
 * A subscriber in another process, on a read-only handle, woken by the writer. */

enum { CHILD_EVENTS = 200 };

static int child_main(const char *dir, int rfd, int wfd) {
    annal_db_opts ro;
    annal_db_opts_init(&ro);
    ro.flags = ANNAL_OPEN_READONLY;
    annal_db *db = NULL;
    if (annal_db_open(dir, &ro, &db) != ANNAL_OK) return 10;
    annal_sub_opts o;
    annal_sub_opts_init(&o);
    annal_sub *s;
    if (annal_sub_open(db, &o, &s) != ANNAL_OK) return 11;
    annal_sub_item it;
    /* caught up on the empty store, then tell the parent to start */
    do
        if (annal_sub_next(s, 5000, &it) != ANNAL_OK) return 12;
    while (it.kind != ANNAL_SUB_CAUGHT_UP);
    char go = 'g';
    if (write(wfd, &go, 1) != 1) return 13;
    static int64_t lat[CHILD_EVENTS];
    uint64_t next = 0;
    while (next < CHILD_EVENTS) {
        annal_err rc = annal_sub_next(s, 10000, &it);
        if (rc != ANNAL_OK) return 14;
        if (it.kind != ANNAL_SUB_EVENT) continue;
        if (it.position != next) return 15;
        int64_t sent = 0;
        char buf[32];
        size_t n = it.event->data_len < sizeof buf - 1 ? it.event->data_len : sizeof buf - 1;
        memcpy(buf, it.event->data, n);
        buf[n] = 0;
        sent = strtoll(buf, NULL, 10);
        lat[next++] = mono_ns() - sent;
    }
    /* median of the latencies (sorted by insertion) */
    for (int i = 1; i < CHILD_EVENTS; i++)
        for (int j = i; j > 0 && lat[j - 1] > lat[j]; j--) {
            int64_t x = lat[j];
            lat[j] = lat[j - 1];
            lat[j - 1] = x;
        }
    int64_t res[2] = {lat[CHILD_EVENTS / 2], lat[CHILD_EVENTS * 99 / 100]};
    if (write(wfd, res, sizeof res) != (ssize_t)sizeof res) return 16;
    (void)rfd;
    annal_sub_close(s);
    annal_db_close(db);
    return 0;
}

static void test_other_process(void **state) {
    const char *dir = *state;
    annal_db_close(tu_open(dir, 0)); /* the store and its notify file exist */
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* Fork while no store is open in this process: the child starts clean. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child_main(dir, p[0], p[1]));
    annal_db *db = tu_open(dir, 0);
    char go;
    assert_int_equal(read(p[0], &go, 1), 1);
    for (int i = 0; i < CHILD_EVENTS; i++) {
        if (i % 10 == 0) sleep_ms(2); /* some appends find the child asleep */
        char data[32];
        snprintf(data, sizeof data, "%" PRId64, mono_ns());
        TU_OK(db, tu_append1(db, "x-1", ANNAL_EXPECT_ANY, "E", data, NULL));
    }
    int64_t res[2] = {0, 0};
    assert_int_equal(read(p[0], res, sizeof res), (ssize_t)sizeof res);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    print_message("other process: commit-to-delivery p50 %.3f ms, p99 %.3f ms\n",
                  (double)res[0] / 1e6, (double)res[1] / 1e6);
    /* Generous: a futex wake takes microseconds; polling would take 5-50 ms */
    assert_true(res[0] < 1000000000LL);
    close(p[0]);
    close(p[1]);
    annal_db_close(db);
}

/* A read-only handle without the notify file still follows the writer (by short sleeps). */
static void test_readonly_without_file(void **state) {
    const char *dir = *state;
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    char path[4096];
    snprintf(path, sizeof path, "%s/index/notify", dir);
    assert_int_equal(unlink(path), 0);
    annal_db_opts ro;
    annal_db_opts_init(&ro);
    ro.flags = ANNAL_OPEN_READONLY;
    annal_db *rdb = NULL;
    TU_OK(NULL, annal_db_open(dir, &ro, &rdb));
    annal_sub *s = sub_open(rdb, NULL, ANNAL_SUB_START, 0, NULL, 0, 0);
    assert_int_equal(expect_item(rdb, s, ANNAL_SUB_CHECKPOINT), 0);
    assert_int_equal(expect_item(rdb, s, ANNAL_SUB_CAUGHT_UP), 0);
    waiter w = {.s = s, .kinds_ok = 1};
    append_n(db, "n-1", "E", 1);
    assert_int_equal(expect_item(rdb, s, ANNAL_SUB_EVENT), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_forever, &w), 0);
    sleep_ms(20);
    annal_sub_cancel(s);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, ANNAL_ECANCELED);
    annal_sub_close(s);
    annal_db_close(rdb);
    annal_db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_caught_up_fell_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_not_yet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_subscriber, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_without_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_gap_no_dup, setup, teardown),
    };
    return cmocka_run_group_tests_name("subscribe", tests, NULL, NULL);
}
