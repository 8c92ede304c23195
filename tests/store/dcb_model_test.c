/* dcb_model_test.c -- DCB against an in-memory model. Random tagged appends of one to
 * three parts across a few streams and the $dcb stream, with random expected revisions
 * and random conditions (queries of types and tags, `after` anywhere or at a random
 * position); resends of earlier appends; soft deletes (their events stop matching);
 * compactions, reopens and index rebuilds; and random reads by query (forward, backward,
 * from anywhere, with limits) and subscriptions by query. Every outcome — the code, the
 * condition's position, the events and tags read — must be what the model says. The
 * model knows only what annal.h promises.
 * ANNAL_MODEL_OPS: operations (default 3000; ANNAL_LONG=1: 30000). Seed: argv[1] or time. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#define NSTREAMS  4
#define NTYPES    3
#define NTAGS     6
#define SEG_BYTES (64u << 10)

static const char *const TYPES[NTYPES] = {"A", "B", "C"};
static const char *const TAGS[NTAGS] = {"t0", "t1", "t2", "course:c1", "student:s7", "x"};
static uint64_t g_seed;

typedef struct mev {
    int stream;    /* 0..NSTREAMS-1, NSTREAMS: $dcb, -1: the store's own (metadata, seal) */
    int type;      /* index into TYPES; -1: $metadata */
    unsigned tags; /* bit i: TAGS[i] */
    int visible;
    annal_uuid id;
} mev;

typedef struct model {
    mev *ev;
    size_t n, cap;
    uint64_t count[NSTREAMS]; /* events ever in the stream (= next revision) */
    int gone[NSTREAMS];       /* reads as absent (never written, or soft-deleted since) */
} model;

/* One earlier successful append, for resends. */
typedef struct sent {
    uint64_t first;
    size_t n;
    int stream[3];
    size_t cnt[3];
    size_t np;
} sent;

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void push(model *m, mev e) {
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 256;
        m->ev = realloc(m->ev, m->cap * sizeof *m->ev);
        assert_non_null(m->ev);
    }
    m->ev[m->n++] = e;
}

/* A random query in q (storage in the arrays given). */
typedef struct rquery {
    annal_query_item items[3];
    const char *types[3][2];
    const char *tags[3][2];
    annal_query q;
} rquery;

static void random_query(uint64_t *s, rquery *r) {
    size_t n = rnd(s) % 16 == 0 ? 0 : 1 + rnd(s) % 3;
    for (size_t i = 0; i < n; i++) {
        size_t nt = rnd(s) % 3, ng = rnd(s) % 3;
        if (nt == 0 && ng == 0 && rnd(s) % 4) ng = 1; /* an empty item only now and then */
        for (size_t j = 0; j < nt; j++) r->types[i][j] = TYPES[rnd(s) % NTYPES];
        for (size_t j = 0; j < ng; j++) r->tags[i][j] = TAGS[rnd(s) % NTAGS];
        if (ng == 2 && r->tags[i][0] == r->tags[i][1]) ng = 1;
        r->items[i] = (annal_query_item){r->types[i], nt, r->tags[i], ng};
    }
    r->q = (annal_query){r->items, n};
}

static int m_item(const annal_query_item *it, const mev *e) {
    int ok = it->ntypes == 0;
    for (size_t j = 0; j < it->ntypes && !ok; j++)
        ok = e->type >= 0 && strcmp(it->types[j], TYPES[e->type]) == 0;
    for (size_t j = 0; j < it->ntags && ok; j++) {
        int found = 0;
        for (int t = 0; t < NTAGS; t++)
            if ((e->tags >> t & 1) && strcmp(TAGS[t], it->tags[j]) == 0) found = 1;
        ok = found;
    }
    return ok;
}

static int m_match(const annal_query *q, const mev *e) {
    if (!e->visible) return 0;
    if (q->nitems == 0) return 1;
    for (size_t i = 0; i < q->nitems; i++)
        if (m_item(&q->items[i], e)) return 1;
    return 0;
}

static void stream_name(int s, char *buf, size_t len) {
    if (s == NSTREAMS)
        snprintf(buf, len, "%s", ANNAL_DCB_STREAM);
    else
        snprintf(buf, len, "m-%d", s);
}

/* The tags of event e as the store returns them, as a bit set; fails on a stranger. */
static unsigned tag_bits(const annal_event *e) {
    unsigned b = 0;
    for (const char *t = NULL; annal_event_tag_next(e, &t);) {
        int k = -1;
        for (int i = 0; i < NTAGS; i++)
            if (strcmp(TAGS[i], t) == 0) k = i;
        assert_true(k >= 0);
        b |= 1u << k;
    }
    return b;
}

/* Read q from `from`, both ways, with a limit, and compare with the model. */
static void check_read(annal_db *db, const model *m, uint64_t *s) {
    rquery rq;
    random_query(s, &rq);
    int back = (int)(rnd(s) % 2);
    uint64_t from = rnd(s) % 8 == 0 ? ANNAL_FROM_END : rnd(s) % (m->n + 2);
    uint64_t limit = rnd(s) % 3 == 0 ? 1 + rnd(s) % 5 : 0;
    annal_iter *it;
    TU_OK(db, annal_read_query(db, &rq.q, from, back ? ANNAL_READ_BACKWARD : 0, limit, &it));
    uint64_t taken = 0;
    for (size_t k = 0; k < m->n; k++) {
        size_t i = back ? m->n - 1 - k : k;
        if (back ? (from != ANNAL_FROM_END && i > from) : i < from) continue;
        if (!m_match(&rq.q, &m->ev[i])) continue;
        if (limit && taken == limit) break;
        const annal_event *e;
        annal_err rc = annal_iter_next(it, &e);
        if (rc != ANNAL_OK || e->position != i)
            fail_msg("seed %llu: read (from %llu, %s) gave %s at %llu where %zu is expected",
                     (unsigned long long)g_seed, (unsigned long long)from,
                     back ? "backward" : "forward", annal_errname(rc),
                     rc == ANNAL_OK ? (unsigned long long)e->position : 0ull, i);
        assert_int_equal(tag_bits(e), m->ev[i].tags);
        if (m->ev[i].stream >= 0) assert_memory_equal(e->id.bytes, m->ev[i].id.bytes, 16);
        taken++;
    }
    const annal_event *e;
    annal_err rc = annal_iter_next(it, &e);
    if (rc != ANNAL_END)
        fail_msg("seed %llu: read (from %llu) gave an extra event (%s, at %llu)",
                 (unsigned long long)g_seed, (unsigned long long)from, annal_errname(rc),
                 rc == ANNAL_OK ? (unsigned long long)e->position : 0ull);
    annal_iter_close(it);
}

/* A subscription by query from the start delivers what a forward read would. */
static void check_sub(annal_db *db, const model *m, uint64_t *s) {
    rquery rq;
    random_query(s, &rq);
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.query = &rq.q;
    annal_sub *sub;
    TU_OK(db, annal_sub_open(db, &so, &sub));
    size_t i = 0;
    for (;;) {
        annal_sub_item item;
        TU_OK(db, annal_sub_next(sub, 5000, &item));
        if (item.kind == ANNAL_SUB_CAUGHT_UP) break;
        if (item.kind != ANNAL_SUB_EVENT) continue;
        while (i < m->n && !m_match(&rq.q, &m->ev[i])) i++;
        if (i == m->n || item.event->position != i)
            fail_msg("seed %llu: subscription delivered %llu, the model %zu",
                     (unsigned long long)g_seed, (unsigned long long)item.event->position, i);
        i++;
    }
    while (i < m->n && !m_match(&rq.q, &m->ev[i])) i++;
    if (i != m->n) fail_msg("seed %llu: subscription missed %zu", (unsigned long long)g_seed, i);
    annal_sub_close(sub);
}

/* What the model expects of an append: ANNAL_ECONDITION (*cpos), ANNAL_ECONFLICT, OK. */
static annal_err m_expect(const model *m, const annal_condition *c, const int *st,
                          const int64_t *exp, size_t np, uint64_t *cpos) {
    *cpos = UINT64_MAX;
    if (c) {
        uint64_t lo = c->after == ANNAL_AFTER_NONE ? 0 : c->after + 1;
        annal_query all = {NULL, 0};
        for (uint64_t i = lo; i < m->n && *cpos == UINT64_MAX; i++)
            if (m_match(c->query ? c->query : &all, &m->ev[i])) *cpos = i;
        if (*cpos != UINT64_MAX) return ANNAL_ECONDITION;
    }
    for (size_t p = 0; p < np; p++) {
        if (st[p] == NSTREAMS || exp[p] == ANNAL_EXPECT_ANY) continue;
        int ok = exp[p] == ANNAL_EXPECT_NO_STREAM ? m->gone[st[p]]
                                                  : exp[p] == (int64_t)m->count[st[p]] - 1;
        if (!ok) return ANNAL_ECONFLICT;
    }
    return ANNAL_OK;
}

/* A random tagged append of 1..3 parts to distinct streams, maybe with a condition. */
static void op_append(annal_db *db, model *m, uint64_t *s, sent *log, size_t *nlog) {
    annal_event_data ev[9];
    annal_tag_list tl[9];
    const char *tv[9][NTAGS];
    char names[3][16];
    annal_tagged_append parts[3];
    int st[3];
    int64_t exp[3];
    size_t np = 1 + rnd(s) % 3, k = 0;
    unsigned used = 0;
    for (size_t p = 0; p < np; p++) {
        do st[p] = (int)(rnd(s) % (NSTREAMS + 1));
        while (used >> st[p] & 1);
        used |= 1u << st[p];
        int pick = (int)(rnd(s) % 4);
        int64_t cur = (int64_t)(st[p] < NSTREAMS ? m->count[st[p]] : 0) - 1;
        exp[p] = pick == 0   ? ANNAL_EXPECT_NO_STREAM
                 : pick == 1 ? cur
                 : pick == 2 ? cur - 1
                             : ANNAL_EXPECT_ANY;
        if (st[p] == NSTREAMS) exp[p] = ANNAL_EXPECT_ANY; /* ignored */
        stream_name(st[p], names[p], sizeof names[p]);
        size_t n = 1 + rnd(s) % 3;
        parts[p] =
            (annal_tagged_append){st[p] == NSTREAMS ? NULL : names[p], exp[p], &ev[k], &tl[k], n};
        for (size_t i = 0; i < n; i++, k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].type = TYPES[rnd(s) % NTYPES];
            unsigned bits = (unsigned)(rnd(s) % (1u << NTAGS)) & (unsigned)rnd(s);
            size_t nt = 0;
            for (int t = 0; t < NTAGS; t++)
                if (bits >> t & 1) tv[k][nt++] = TAGS[t];
            tl[k] = (annal_tag_list){tv[k], nt};
        }
    }
    rquery rq;
    annal_condition c, *cp = NULL;
    if (rnd(s) % 3) {
        random_query(s, &rq);
        c = (annal_condition){&rq.q,
                              rnd(s) % 3 == 0 || m->n == 0 ? ANNAL_AFTER_NONE : rnd(s) % m->n};
        cp = &c;
    }
    uint64_t want_pos;
    annal_err want = m_expect(m, cp, st, exp, np, &want_pos);
    annal_multi_result r = {0};
    annal_err rc = annal_append_tagged(db, parts, np, NULL, 0, cp, &r);
    if (rc != want || r.condition_position != want_pos)
        fail_msg("seed %llu: append gave %s (condition at %llu), the model %s (at %llu): %s",
                 (unsigned long long)g_seed, annal_errname(rc),
                 (unsigned long long)r.condition_position, annal_errname(want),
                 (unsigned long long)want_pos, annal_db_errmsg(db));
    if (rc != ANNAL_OK) return;
    assert_int_equal(r.first_position, m->n);
    sent snt = {m->n, k, {0}, {0}, np};
    k = 0;
    for (size_t p = 0; p < np; p++) {
        snt.stream[p] = st[p];
        snt.cnt[p] = parts[p].n;
        for (size_t i = 0; i < parts[p].n; i++, k++) {
            unsigned bits = 0;
            for (size_t t = 0; t < tl[k].n; t++)
                for (int j = 0; j < NTAGS; j++)
                    if (tl[k].tags[t] == TAGS[j]) bits |= 1u << j;
            push(m, (mev){st[p], (int)(strchr("ABC", ev[k].type[0]) - "ABC"), bits, 1, ev[k].id});
        }
        if (st[p] < NSTREAMS) m->count[st[p]] += parts[p].n, m->gone[st[p]] = 0;
    }
    if (*nlog < 64) log[(*nlog)++] = snt;
}

/* A large batch (several slices of 64) with many tags: reads span chunks. */
static void op_bulk(annal_db *db, model *m, uint64_t *s) {
    enum { MAX = 200 };
    static annal_event_data ev[MAX];
    static annal_tag_list tl[MAX];
    static const char *tv[MAX][NTAGS];
    size_t n = 65 + rnd(s) % (MAX - 65);
    int st = (int)(rnd(s) % (NSTREAMS + 1));
    char name[16];
    stream_name(st, name, sizeof name);
    for (size_t k = 0; k < n; k++) {
        memset(&ev[k], 0, sizeof ev[k]);
        ev[k].type = TYPES[rnd(s) % NTYPES];
        unsigned bits = (unsigned)(rnd(s) % (1u << NTAGS)) | 1u << (NTAGS - 1);
        size_t nt = 0;
        for (int t = 0; t < NTAGS; t++)
            if (bits >> t & 1) tv[k][nt++] = TAGS[t];
        tl[k] = (annal_tag_list){tv[k], nt};
    }
    annal_tagged_append part = {st == NSTREAMS ? NULL : name, ANNAL_EXPECT_ANY, ev, tl, n};
    annal_multi_result r = {0};
    TU_OK(db, annal_append_tagged(db, &part, 1, NULL, 0, NULL, &r));
    assert_int_equal(r.first_position, m->n);
    for (size_t k = 0; k < n; k++) {
        unsigned bits = 0;
        for (size_t t = 0; t < tl[k].n; t++)
            for (int j = 0; j < NTAGS; j++)
                if (tl[k].tags[t] == TAGS[j]) bits |= 1u << j;
        push(m, (mev){st, (int)(strchr("ABC", ev[k].type[0]) - "ABC"), bits, 1, ev[k].id});
    }
    if (st < NSTREAMS) m->count[st] += n, m->gone[st] = 0;
}

/* Resend an earlier append whose events are all still visible: the first result. */
static void op_resend(annal_db *db, const model *m, uint64_t *s, const sent *log, size_t nlog) {
    if (!nlog) return;
    const sent *o = &log[rnd(s) % nlog];
    for (size_t i = 0; i < o->n; i++)
        if (!m->ev[o->first + i].visible) return; /* deleted since: not the same any more */
    annal_event_data ev[9];
    annal_tagged_append parts[3];
    char names[3][16];
    size_t k = 0;
    for (size_t p = 0; p < o->np; p++) {
        stream_name(o->stream[p], names[p], sizeof names[p]);
        parts[p] = (annal_tagged_append){o->stream[p] == NSTREAMS ? NULL : names[p],
                                         ANNAL_EXPECT_ANY, &ev[k], NULL, o->cnt[p]};
        for (size_t i = 0; i < o->cnt[p]; i++, k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].id = m->ev[o->first + k].id;
            ev[k].type = TYPES[m->ev[o->first + k].type];
        }
    }
    annal_multi_result r = {0};
    TU_OK(db, annal_append_tagged(db, parts, o->np, NULL, 0, NULL, &r));
    assert_int_equal(r.idempotent, 1);
    assert_int_equal(r.first_position, o->first);
}

/* Soft-delete a stream: its events stop matching; a metadata event is appended. */
static void op_delete(annal_db *db, model *m, uint64_t *s) {
    int st = (int)(rnd(s) % NSTREAMS);
    char name[16];
    stream_name(st, name, sizeof name);
    annal_err rc = annal_stream_delete(db, name, ANNAL_EXPECT_ANY, 0, NULL);
    if (m->gone[st]) {
        TU_EXPECT(db, rc, ANNAL_ENOTFOUND);
        return;
    }
    TU_OK(db, rc);
    for (size_t i = 0; i < m->n; i++)
        if (m->ev[i].stream == st) m->ev[i].visible = 0;
    m->gone[st] = 1;
    push(m, (mev){-1, -1, 0, 1, {{0}}});
}

static annal_db *reopen(annal_db *db, const char *dir, int rebuild) {
    annal_db_close(db);
    if (rebuild) TU_OK(NULL, annal_rebuild_index(dir, NULL));
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.segment_bytes = SEG_BYTES;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    return db;
}

static void model_run(void **state) {
    (void)state;
    const char *env = getenv("ANNAL_MODEL_OPS"), *lng = getenv("ANNAL_LONG");
    long ops = env ? strtol(env, NULL, 10) : lng && *lng == '1' ? 30000 : 3000;
    print_message("dcb_model_test: seed %llu, %ld operations\n", (unsigned long long)g_seed, ops);
    uint64_t s = g_seed;
    char *dir = tu_tmpdir("dcb-model");
    model m = {0};
    for (int i = 0; i < NSTREAMS; i++) m.gone[i] = 1;
    sent log[64];
    size_t nlog = 0;
    annal_db *db = reopen(NULL, dir, 0);
    for (long op = 0; op < ops; op++) {
        uint64_t r = rnd(&s) % 1000;
        if (r < 450)
            op_append(db, &m, &s, log, &nlog);
        else if (r < 800)
            check_read(db, &m, &s);
        else if (r < 850)
            op_resend(db, &m, &s, log, nlog);
        else if (r < 880)
            op_delete(db, &m, &s);
        else if (r < 900)
            check_sub(db, &m, &s);
        else if (r < 910) { /* a seal may append its marker event */
            annal_db_info info;
            TU_OK(db, annal_seal(db));
            TU_OK(db, annal_db_info_get(db, &info));
            if (info.events > m.n) push(&m, (mev){-1, -1, 0, 1, {{0}}});
            assert_int_equal(info.events, m.n);
            TU_OK(db, annal_compact(db, 0, NULL));
        } else if (r < 915) {
            db = reopen(db, dir, rnd(&s) % 2);
        } else if (r < 925) {
            op_bulk(db, &m, &s);
        }
    }
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    print_message("dcb_model_test: %zu events\n", m.n);
    free(m.ev);
    tu_rmrf(dir);
    free(dir);
}

int main(int argc, char **argv) {
    g_seed = argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    const struct CMUnitTest tests[] = {cmocka_unit_test(model_run)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
