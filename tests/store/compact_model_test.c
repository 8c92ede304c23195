/* Compaction against a model: random appends to a few streams, random soft deletes,
 * tombstones and metadata ($maxCount, $tb, $maxAge), and compactions of small segments.
 * After every compaction every read path — $all forward and backward from many
 * positions, categories, types, streams, subscriptions with and without filters,
 * annal_event_get — must return exactly what the model says is visible; annal_verify must
 * find nothing, and a rebuilt index must read the same. The model knows only what the
 * API promises (annal.h): it never asks the store which events are visible.
 * Seed: argv[1] or the time. ANNAL_LONG=1: more rounds. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "index/index.h"
#include "store/db_int.h"
#include "testutil.h"

#define NSTREAMS  10
#define NTYPES    3
#define SEG_BYTES (64u << 10)

typedef struct mev {
    int stream;   /* index into streams, or -1 - i for the metadata stream of stream i */
    int type;     /* index into types; -1 for $metadata, -2 for a tombstone */
    uint64_t rev; /* revision in its stream */
    int erased;   /* compaction removed it (it was invisible in a sealed segment) */
} mev;

typedef struct mstream {
    char name[16], meta_name[24];
    uint64_t count, meta_count;
    int64_t tb, max_count, max_age; /* -1: unset */
    int deleted, tomb;
} mstream;

static const char *g_types[NTYPES] = {"Alpha", "Beta", "Gamma"};
static mstream g_st[NSTREAMS];
static mev *g_ev;
static size_t g_n, g_cap;
static unsigned g_seed, g_seed0; /* rand_r state; the seed it started from */

static unsigned rnd(unsigned n) { return (unsigned)(rand_r(&g_seed) % n); }

static void push(mev e) {
    if (g_n == g_cap) {
        g_cap = g_cap ? g_cap * 2 : 4096;
        g_ev = realloc(g_ev, g_cap * sizeof *g_ev);
        assert_non_null(g_ev);
    }
    g_ev[g_n++] = e;
}

static const char *ev_stream(const mev *e) {
    return e->stream >= 0 ? g_st[e->stream].name : g_st[-1 - e->stream].meta_name;
}

static const char *ev_type(const mev *e) {
    return e->type >= 0 ? g_types[e->type] : e->type == -1 ? "$metadata" : "$streamDeleted";
}

/* The promise of annal.h, applied to one event. */
static int visible(const mev *e) {
    if (e->erased) return 0;
    if (e->stream < 0) return 1; /* metadata streams have no limits */
    const mstream *s = &g_st[e->stream];
    if (s->tomb) return e->rev + 1 == s->count; /* only the tombstone */
    if (s->deleted) return 0;
    if (s->tb >= 0 && e->rev < (uint64_t)s->tb) return 0;
    if (s->max_count >= 0 && e->rev + (uint64_t)s->max_count < s->count) return 0;
    if (s->max_age == 0) return 0; /* (the other $maxAge used is far longer than the test) */
    return 1;
}

static size_t cat_len(const char *name) { return annal__category_len(name, strlen(name)); }

/* ---- operations ---- */

static void op_append(annal_db *db) {
    int s = (int)rnd(NSTREAMS);
    if (g_st[s].tomb) return;
    size_t n = 1 + (rnd(4) ? rnd(6) : rnd(90));
    annal_event_data ev[100];
    int types[100];
    char data[100][48];
    memset(ev, 0, sizeof ev);
    for (size_t i = 0; i < n; i++) {
        types[i] = (int)rnd(NTYPES);
        ev[i].type = g_types[types[i]];
        snprintf(data[i], sizeof data[i], "{\"n\":%zu,\"pad\":\"%0*u\"}", g_n + i, (int)rnd(20),
                 0u);
        ev[i].data = data[i];
        ev[i].data_len = strlen(data[i]);
    }
    annal_append_result res;
    TU_OK(db, annal_append(db, g_st[s].name, ANNAL_EXPECT_ANY, ev, n, &res));
    assert_int_equal(res.first_position, g_n);
    assert_int_equal(res.first_revision, g_st[s].count);
    for (size_t i = 0; i < n; i++) push((mev){s, types[i], g_st[s].count + i, 0});
    g_st[s].count += n;
    g_st[s].deleted = 0; /* an append re-creates a soft-deleted stream */
}

static void meta_event(int s, annal_append_result *res) {
    assert_int_equal(res->first_position, g_n);
    push((mev){-1 - s, -1, g_st[s].meta_count++, 0});
}

static void op_meta(annal_db *db) {
    int s = (int)rnd(NSTREAMS);
    if (g_st[s].tomb || g_st[s].deleted) return;
    char doc[128];
    int64_t tb = -1, mc = -1, ma = -1;
    switch (rnd(5)) {
    case 0: mc = rnd(4) ? 20 + rnd(300) : rnd(8); break;
    case 1: tb = (int64_t)g_st[s].count - (int64_t)rnd(200); break; /* (< 0: unset) */
    case 2: ma = rnd(10) ? 1000000 : 0; break;
    case 3: mc = 1 + rnd(100), tb = (int64_t)g_st[s].count - (int64_t)rnd(100); break;
    default: break; /* limits removed */
    }
    int l = snprintf(doc, sizeof doc, "{\"x\":1");
    if (tb >= 0) l += snprintf(doc + l, sizeof doc - (size_t)l, ",\"$tb\":%" PRId64, tb);
    if (mc >= 0) l += snprintf(doc + l, sizeof doc - (size_t)l, ",\"$maxCount\":%" PRId64, mc);
    if (ma >= 0) l += snprintf(doc + l, sizeof doc - (size_t)l, ",\"$maxAge\":%" PRId64, ma);
    snprintf(doc + l, sizeof doc - (size_t)l, "}");
    annal_append_result res;
    TU_OK(db, annal_stream_meta_set(db, g_st[s].name, ANNAL_EXPECT_ANY, doc, strlen(doc), &res));
    meta_event(s, &res);
    g_st[s].tb = tb, g_st[s].max_count = mc, g_st[s].max_age = ma;
}

static void op_delete(annal_db *db, int hard) {
    int s = hard ? NSTREAMS - 1 - (int)rnd(3) : (int)rnd(NSTREAMS); /* leave some alive */
    mstream *m = &g_st[s];
    if (m->tomb || m->deleted || m->count == 0) return;
    annal_append_result res;
    TU_OK(db,
          annal_stream_delete(db, m->name, ANNAL_EXPECT_ANY, hard ? ANNAL_DELETE_HARD : 0, &res));
    if (hard) {
        assert_int_equal(res.first_position, g_n);
        push((mev){s, -2, m->count++, 0});
        m->tomb = 1;
    } else { /* metadata: the old document, deleted, truncated before the next revision */
        meta_event(s, &res);
        m->deleted = 1;
        m->tb = (int64_t)m->count;
    }
}

/* What compaction erases (src/store/compact.c, as annal.h promises for what stays
 * visible): in sealed segments, each event invisible now, except a stream's last event
 * while the stream is not deleted (it carries the revision). Limits relaxed later bring
 * back only what was not erased. */
static void model_compact(annal_db *db) {
    uint64_t sealed = db->log.segs[db->log.nsegs - 1]->first_pos;
    for (uint64_t p = 0; p < sealed && p < g_n; p++) {
        mev *e = &g_ev[p];
        if (e->erased || visible(e)) continue;
        const mstream *s = &g_st[e->stream]; /* (metadata streams: always visible) */
        if (e->rev + 1 == s->count && !s->deleted) continue;
        e->erased = 1;
    }
}

/* ---- checks ---- */

typedef struct want {
    uint64_t *pos;
    size_t n, cap;
} want;

static void want_add(want *w, uint64_t p) {
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        w->pos = realloc(w->pos, w->cap * sizeof *w->pos);
        assert_non_null(w->pos);
    }
    w->pos[w->n++] = p;
}

/* Does ev match the model's event at its position? */
static void check_event(const annal_event *ev, const char *what) {
    if (ev->position >= g_n)
        fail_msg("%s: position %" PRIu64 " beyond the model", what, ev->position);
    const mev *m = &g_ev[ev->position];
    if (strcmp(ev->stream, ev_stream(m)) != 0 || strcmp(ev->type, ev_type(m)) != 0 ||
        ev->revision != m->rev)
        fail_msg("%s: position %" PRIu64 " is %s@%" PRIu64 " (%s), model says %s@%" PRIu64 " (%s)",
                 what, ev->position, ev->stream, ev->revision, ev->type, ev_stream(m), m->rev,
                 ev_type(m));
    if (!visible(m)) fail_msg("%s: position %" PRIu64 " is not visible", what, ev->position);
}

/* For a failure message: the model's view of positions [p - 2, p + 2]. */
static void dump(uint64_t p) {
    for (uint64_t q = p > 2 ? p - 2 : 0; q < g_n && q <= p + 2; q++) {
        const mev *m = &g_ev[q];
        const mstream *s = m->stream >= 0 ? &g_st[m->stream] : NULL;
        fprintf(stderr,
                "  model %" PRIu64 ": %s@%" PRIu64 " %s visible %d (stream: count %" PRIu64
                " tb %" PRId64 " maxCount %" PRId64 " maxAge %" PRId64 " deleted %d tomb %d)\n",
                q, ev_stream(m), m->rev, ev_type(m), visible(m), s ? s->count : 0, s ? s->tb : -1,
                s ? s->max_count : -1, s ? s->max_age : -1, s ? s->deleted : 0, s ? s->tomb : 0);
    }
}

/* Read it to its end (at most limit events) and compare the positions with w. */
static void expect_iter(annal_db *db, annal_iter *it, const want *w, uint64_t limit,
                        const char *what) {
    const annal_event *ev;
    annal_err rc;
    size_t i = 0;
    size_t n = limit && limit < w->n ? (size_t)limit : w->n;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        check_event(ev, what);
        if (i >= n || ev->position != w->pos[i]) dump(ev->position);
        if (i >= n || ev->position != w->pos[i])
            fail_msg("%s: event %zu is at %" PRIu64 ", want %" PRIu64 " (seed %u)", what, i,
                     ev->position, i < n ? w->pos[i] : UINT64_MAX, g_seed0);
        i++;
    }
    if (rc != ANNAL_END) TU_OK(db, rc);
    if (i != n)
        fail_msg("%s: %zu events, want %zu (next %" PRIu64 ")", what, i, n,
                 i < n ? w->pos[i] : UINT64_MAX);
    annal_iter_close(it);
}

enum { SEL_ALL, SEL_CAT, SEL_TYPE };

static int selected(const mev *m, int sel, const char *name) {
    if (sel == SEL_ALL) return 1;
    if (sel == SEL_TYPE) return strcmp(ev_type(m), name) == 0;
    const char *s = ev_stream(m);
    size_t l = cat_len(s);
    return l == strlen(name) && memcmp(s, name, l) == 0;
}

/* Visible events of sel/name from `from` on (forward) or at and below it (backward). */
static void expected(want *w, int sel, const char *name, uint64_t from, int back) {
    w->n = 0;
    if (back) {
        for (uint64_t p = from < g_n ? from + 1 : g_n; p-- > 0;)
            if (visible(&g_ev[p]) && selected(&g_ev[p], sel, name)) want_add(w, p);
    } else {
        for (uint64_t p = from; p < g_n; p++)
            if (visible(&g_ev[p]) && selected(&g_ev[p], sel, name)) want_add(w, p);
    }
}

static void check_positional(annal_db *db, int sel, const char *name, uint64_t from, int back,
                             uint64_t limit) {
    want w = {0};
    expected(&w, sel, name, from, back);
    annal_iter *it;
    unsigned fl = back ? ANNAL_READ_BACKWARD : 0;
    annal_err rc = sel == SEL_ALL   ? annal_read_all(db, from, fl, limit, &it)
                   : sel == SEL_CAT ? annal_read_category(db, name, from, fl, limit, &it)
                                    : annal_read_type(db, name, from, fl, limit, &it);
    char what[160];
    snprintf(what, sizeof what, "%s %s from %" PRIu64 " %s limit %" PRIu64,
             sel == SEL_ALL   ? "$all"
             : sel == SEL_CAT ? "category"
                              : "type",
             name, from == ANNAL_FROM_END ? UINT64_MAX : from, back ? "backward" : "forward",
             limit);
    if (rc != ANNAL_OK) fail_msg("%s: %s (%s)", what, annal_errname(rc), annal_db_errmsg(db));
    expect_iter(db, it, &w, limit, what);
    free(w.pos);
}

static void check_stream(annal_db *db, int s, uint64_t from, int back) {
    const mstream *m = &g_st[s];
    annal_iter *it;
    annal_err rc = annal_read_stream(db, m->name, from, back ? ANNAL_READ_BACKWARD : 0, 0, &it);
    annal_err want_rc = m->tomb                         ? ANNAL_EDELETED
                        : (m->deleted || m->count == 0) ? ANNAL_ENOTFOUND
                                                        : ANNAL_OK;
    char what[120];
    snprintf(what, sizeof what, "stream %s from %" PRIu64 " %s", m->name, from,
             back ? "backward" : "forward");
    if (rc != want_rc) fail_msg("%s: %s, want %s", what, annal_errname(rc), annal_errname(want_rc));
    if (rc != ANNAL_OK) return;
    want w = {0};
    for (size_t i = 0; i < g_n; i++) {
        size_t p = back ? g_n - 1 - i : i;
        const mev *e = &g_ev[p];
        if (e->stream == s && visible(e) && (back ? e->rev <= from : e->rev >= from))
            want_add(&w, p);
    }
    expect_iter(db, it, &w, 0, what);
    free(w.pos);
}

/* A subscription after `after` (UINT64_MAX: from the start) until it has caught up. */
static void check_sub(annal_db *db, int sel, const char *name, const annal_filter *f,
                      uint64_t after) {
    char full[64];
    snprintf(full, sizeof full, "%s%s", sel == SEL_CAT ? "$ce-" : "$et-", name);
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.stream = sel == SEL_ALL ? NULL : full;
    so.filter = f;
    if (after != UINT64_MAX) so.start = ANNAL_SUB_AFTER, so.from = after;
    annal_sub *sub;
    TU_OK(db, annal_sub_open(db, &so, &sub));
    want w = {0};
    expected(&w, sel, name, after == UINT64_MAX ? 0 : after + 1, 0);
    size_t i = 0;
    for (;;) {
        annal_sub_item item;
        TU_OK(db, annal_sub_next(sub, 1000, &item));
        if (item.kind == ANNAL_SUB_CAUGHT_UP) break;
        if (item.kind != ANNAL_SUB_EVENT) continue;
        const annal_event *ev = item.event;
        check_event(ev, "subscription");
        while (i < w.n && f && f->type_prefix &&
               strncmp(ev_type(&g_ev[w.pos[i]]), f->type_prefix, strlen(f->type_prefix)) != 0)
            i++;
        while (i < w.n && f && f->stream_prefix &&
               strncmp(ev_stream(&g_ev[w.pos[i]]), f->stream_prefix, strlen(f->stream_prefix)))
            i++;
        if (i >= w.n || ev->position != w.pos[i])
            fail_msg("subscription to %s after %" PRIu64 " (filter %s): delivered %" PRIu64
                     ", want %" PRIu64 " (seed %u)",
                     sel == SEL_ALL ? "$all" : full, after, f ? "yes" : "no", ev->position,
                     i < w.n ? w.pos[i] : UINT64_MAX, g_seed0);
        i++;
    }
    /* nothing wanted was left undelivered */
    for (; i < w.n; i++) {
        const mev *m = &g_ev[w.pos[i]];
        if ((!f || !f->type_prefix ||
             !strncmp(ev_type(m), f->type_prefix, strlen(f->type_prefix))) &&
            (!f || !f->stream_prefix ||
             !strncmp(ev_stream(m), f->stream_prefix, strlen(f->stream_prefix))))
            fail_msg("subscription after %" PRIu64 " missed %" PRIu64 " (seed %u)", after, w.pos[i],
                     g_seed0);
    }
    annal_sub_close(sub);
    free(w.pos);
}

static uint64_t rnd_pos(void) { return g_n ? rnd((unsigned)g_n + 2) : 0; }

static void check_all(annal_db *db, int samples) {
    static const char *cats[] = {"a", "b", "$$a", "$$b"};
    /* whole reads */
    check_positional(db, SEL_ALL, "", 0, 0, 0);
    check_positional(db, SEL_ALL, "", ANNAL_FROM_END, 1, 0);
    for (int c = 0; c < 4; c++) {
        check_positional(db, SEL_CAT, cats[c], 0, 0, 0);
        check_positional(db, SEL_CAT, cats[c], ANNAL_FROM_END, 1, 0);
    }
    for (int t = 0; t < NTYPES; t++) check_positional(db, SEL_TYPE, g_types[t], 0, 0, 0);
    check_positional(db, SEL_TYPE, "$metadata", 0, 0, 0);
    check_positional(db, SEL_TYPE, "$streamDeleted", ANNAL_FROM_END, 1, 0);
    /* from positions: short reads from many places */
    for (int k = 0; k < samples; k++) {
        uint64_t p = rnd_pos(), lim = 1 + rnd(4);
        check_positional(db, SEL_ALL, "", p, (int)rnd(2), lim);
        check_positional(db, SEL_CAT, cats[rnd(4)], p, (int)rnd(2), lim);
        check_positional(db, SEL_TYPE, g_types[rnd(NTYPES)], p, (int)rnd(2), lim);
        /* a single event */
        annal_event *e = NULL;
        annal_err rc = annal_event_get(db, p, &e);
        int vis = p < g_n && visible(&g_ev[p]);
        if (rc != (vis ? ANNAL_OK : ANNAL_ENOTFOUND))
            fail_msg("annal_event_get(%" PRIu64 "): %s (seed %u)", p, annal_errname(rc), g_seed0);
        if (e) {
            assert_int_equal(e->position, p);
            check_event(e, "annal_event_get");
        }
        free(e);
    }
    for (int s = 0; s < NSTREAMS; s++) {
        uint64_t c = g_st[s].count;
        check_stream(db, s, c ? rnd((unsigned)c + 1) : 0, 0);
        check_stream(db, s, c ? rnd((unsigned)c + 1) : 0, 1);
    }
    /* subscriptions from random places, some filtered */
    annal_filter fs = {0}, ft = {0};
    fs.stream_prefix = "b-";
    ft.type_prefix = "Ga";
    for (int k = 0; k < samples / 8 + 2; k++) {
        uint64_t after = k == 0 ? UINT64_MAX : rnd_pos();
        check_sub(db, SEL_ALL, "", NULL, after);
        check_sub(db, SEL_ALL, "", rnd(2) ? &fs : &ft, after);
        check_sub(db, SEL_CAT, cats[rnd(2)], NULL, after);
        check_sub(db, SEL_TYPE, g_types[rnd(NTYPES)], NULL, after);
    }
}

static void damage(void *ctx, const annal_damage *d) {
    (void)ctx;
    fprintf(stderr, "verify: segment %" PRIu64 " offset %" PRIu64 " position %" PRIu64 ": %s\n",
            d->segment, d->offset, d->position, d->what);
}

static annal_db *open_store(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    return db;
}

static void test_compaction_model(void **state) {
    (void)state;
    int rounds = getenv("ANNAL_LONG") ? 150 : 30;
    int samples = getenv("ANNAL_LONG") ? 600 : 200;
    printf("seed %u, %d rounds\n", g_seed0, rounds);
    for (int s = 0; s < NSTREAMS; s++) {
        snprintf(g_st[s].name, sizeof g_st[s].name, "%c-%d", s % 2 ? 'b' : 'a', s);
        snprintf(g_st[s].meta_name, sizeof g_st[s].meta_name, "$$%c-%d", s % 2 ? 'b' : 'a', s);
        g_st[s].tb = g_st[s].max_count = g_st[s].max_age = -1;
    }
    char *dir = tu_tmpdir("compact-model");
    annal_db *db = open_store(dir);
    uint64_t erased = 0;
    for (int r = 0; r < rounds; r++) {
        int ops = 20 + (int)rnd(60);
        for (int k = 0; k < ops; k++) {
            unsigned x = rnd(1000);
            if (x < 880)
                op_append(db);
            else if (x < 970)
                op_meta(db);
            else if (x < 995)
                op_delete(db, 0);
            else
                op_delete(db, 1);
        }
        annal_compact_stats st;
        TU_OK(db, annal_compact(db, 0, &st));
        model_compact(db);
        erased += st.events_erased;
        check_all(db, samples);
        if (annal_verify(dir, NULL, damage, NULL) != ANNAL_OK)
            fail_msg("verify found damage after compaction %d (seed %u)", r, g_seed0);
        if (r % 4 == 3 || r == rounds - 1) { /* reopen on a rebuilt index: the same reads */
            annal_db_close(db);
            TU_OK(NULL, annal_rebuild_index(dir, NULL));
            if (annal_verify(dir, NULL, damage, NULL) != ANNAL_OK)
                fail_msg("verify found damage after rebuild %d (seed %u)", r, g_seed0);
            db = open_store(dir);
            check_all(db, samples);
        }
    }
    size_t merased = 0;
    for (size_t i = 0; i < g_n; i++) merased += g_ev[i].erased;
    printf("%zu events, %" PRIu64 " erased by compaction\n", g_n, erased);
    assert_int_equal(merased, erased);
    assert_true(erased > 0);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
    free(g_ev);
}

int main(int argc, char **argv) {
    g_seed0 = g_seed = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : (unsigned)time(NULL);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_compaction_model)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
