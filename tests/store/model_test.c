/* model_test.c -- randomized model-based test of the public API.
 *
 * An in-memory model (streams -> events; $all) follows the rules of include/annal.h.
 * Thousands of random operations run against a store with small segments and against
 * the model, and every result is compared: error codes, result fields and every field
 * of every event read. A second phase appends from several threads with exact expected
 * revisions and checks what was acknowledged.
 *
 * Usage: model_test [seed]     (or env ANNAL_MODEL_SEED; default: time-based)
 * env:   ANNAL_MODEL_OPS       number of sequential operations (default 5000; 2000 under
 *                              AddressSanitizer)
 *        ANNAL_MODEL_CONC_OPS  appends per thread in the concurrent phase (default 60)
 *        ANNAL_MODEL_SYNC=1    durable appends in the sequential phase too
 * The seed is printed first; the sequential phase is reproducible from it. */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NSTREAMS         50 /* streams of the sequential phase */
#define NCONC            6  /* extra streams only the concurrent phase uses */
#define NNAMES           (NSTREAMS + NCONC)
#define NTYPES           8
#define MAXB             151 /* events in a batch record (150 allowed + 1 over) */
#define MAX_BATCH_EVENTS 150
#define MAX_EVENT_BYTES  (150u * 1024u)
#define SEGMENT_BYTES    (256u * 1024u)
#define HISTORY          1024
#define TS_SLACK_NS      (100 * 1000 * 1000LL)

static uint64_t g_seed;
static long g_op = -1;
static const char *g_via = "writer handle";
/* Known disagreement, counted instead of stopping the run so the rest of it is still
 * checked; the test fails at its end if any was seen. The header says an idempotent
 * result's fields "describe the original" append, whose `revision` was first + n - 1. */
static long g_idem_revision_current;
static char g_idem_example[256];
static const char *g_phase = "setup";

#define MCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("\nMODEL MISMATCH seed=%" PRIu64 " phase=%s op=%ld (reads via %s): ",      \
                        g_seed, g_phase, g_op, g_via);                                             \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n  failed check: %s (%s:%d)\n", #cond, __FILE__, __LINE__);              \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

#define MRC(got, want, what)                                                                       \
    MCHECK((got) == (want), "%s: got %s, model says %s (%s)", what, annal_errname(got),            \
           annal_errname(want), annal_db_errmsg(R->db))

/* ------------------------------------------------------------------------------------
 * Randomness and payloads */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t rbelow(uint64_t *s, uint64_t n) { return n ? splitmix(s) % n : 0; }
static int chance(uint64_t *s, unsigned pct) { return rbelow(s, 1000) < pct; } /* per mille */

/* payload bytes are a function of (seed, length): the model keeps 12 bytes per payload */
static void gen_bytes(uint64_t seed, size_t len, uint8_t *out) {
    uint64_t s = seed;
    size_t i = 0;
    while (i + 8 <= len) {
        uint64_t x = splitmix(&s);
        memcpy(out + i, &x, 8);
        i += 8;
    }
    if (i < len) {
        uint64_t x = splitmix(&s);
        memcpy(out + i, &x, len - i);
    }
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int uuid_zero(const annal_uuid *u) {
    static const annal_uuid z;
    return memcmp(u, &z, sizeof z) == 0;
}
static int uuid_eq(const annal_uuid *a, const annal_uuid *b) {
    return memcmp(a->bytes, b->bytes, 16) == 0;
}
static void uuid_rand(uint64_t *s, annal_uuid *u) {
    uint64_t a = splitmix(s), b = splitmix(s);
    memcpy(u->bytes, &a, 8);
    memcpy(u->bytes + 8, &b, 8);
    u->bytes[6] = (uint8_t)((u->bytes[6] & 0x0f) | 0x40);
    u->bytes[8] = (uint8_t)((u->bytes[8] & 0x3f) | 0x80);
}
static int uuid_v7(const annal_uuid *u) {
    return (u->bytes[6] >> 4) == 7 && (u->bytes[8] >> 6) == 2;
}

static char names[NNAMES][32];
static char types[NTYPES][ANNAL_MAX_NAME + 1];

static void init_names(void) {
    for (int i = 0; i < NNAMES; i++) {
        if (i >= NSTREAMS)
            snprintf(names[i], sizeof names[i], "conc-%d", i - NSTREAMS);
        else if (i % 10 == 7)
            snprintf(names[i], sizeof names[i],
                     "\xc3\xa7"
                     "a-%02d",
                     i); /* "ça-NN" */
        else if (i % 10 == 3)
            snprintf(names[i], sizeof names[i], "Upper-%02d", i);
        else
            snprintf(names[i], sizeof names[i], "s-%02d", i);
    }
    static const char *const t[NTYPES - 1] = {
        "Created", "Updated", "Deleted", "Renamed", "\xc3\x9cml\xc3\xa4ut", "t", "$meta.type"};
    for (int i = 0; i < NTYPES - 1; i++) snprintf(types[i], sizeof types[i], "%s", t[i]);
    memset(types[NTYPES - 1], 'L', ANNAL_MAX_NAME); /* longest legal type */
    types[NTYPES - 1][ANNAL_MAX_NAME] = 0;
}

/* ------------------------------------------------------------------------------------
 * The model */

typedef struct mevent {
    annal_uuid id;
    uint32_t stream, type;
    uint64_t dseed, mseed;
    uint32_t dlen, mlen;
    uint64_t revision, position;
    int64_t t_lo, t_hi; /* wall clock around the append call */
    int64_t ts;         /* timestamp first read back (0: not yet) */
} mevent;

typedef struct mstream {
    uint64_t *pos; /* positions by revision */
    size_t n, cap;
} mstream;

typedef struct model {
    mevent *ev;
    size_t n, cap;
    mstream st[NNAMES];
    uint64_t *slots; /* id hash: position + 1, 0 empty */
    size_t nslots;
} model;

static uint64_t uuid_hash(const annal_uuid *u) {
    uint64_t a, b;
    memcpy(&a, u->bytes, 8);
    memcpy(&b, u->bytes + 8, 8);
    uint64_t s = a ^ (b * 0x9e3779b97f4a7c15ull);
    return splitmix(&s);
}

static void id_insert(model *m, uint64_t pos);
static void id_grow(model *m) {
    size_t old = m->nslots;
    uint64_t *os = m->slots;
    m->nslots = old ? old * 2 : 1024;
    m->slots = calloc(m->nslots, sizeof *m->slots);
    assert_non_null(m->slots);
    for (size_t i = 0; i < old; i++)
        if (os[i]) id_insert(m, os[i] - 1);
    free(os);
}
static void id_insert(model *m, uint64_t pos) {
    size_t mask = m->nslots - 1;
    size_t i = (size_t)uuid_hash(&m->ev[pos].id) & mask;
    while (m->slots[i]) i = (i + 1) & mask;
    m->slots[i] = pos + 1;
}
static int64_t id_find(const model *m, const annal_uuid *id) {
    if (uuid_zero(id) || !m->nslots) return -1;
    size_t mask = m->nslots - 1;
    size_t i = (size_t)uuid_hash(id) & mask;
    while (m->slots[i]) {
        if (uuid_eq(&m->ev[m->slots[i] - 1].id, id)) return (int64_t)(m->slots[i] - 1);
        i = (i + 1) & mask;
    }
    return -1;
}

static mevent *model_push(model *m, uint32_t stream) {
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->ev = realloc(m->ev, m->cap * sizeof *m->ev);
        assert_non_null(m->ev);
    }
    mstream *st = &m->st[stream];
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 16;
        st->pos = realloc(st->pos, st->cap * sizeof *st->pos);
        assert_non_null(st->pos);
    }
    mevent *e = &m->ev[m->n];
    memset(e, 0, sizeof *e);
    e->stream = stream;
    e->revision = st->n;
    e->position = m->n;
    st->pos[st->n++] = m->n;
    m->n++;
    return e;
}
static void model_index_id(model *m, uint64_t pos) {
    if ((m->n + 1) * 2 > m->nslots) id_grow(m);
    MCHECK(id_find(m, &m->ev[pos].id) < 0, "id stored twice at position %" PRIu64, pos);
    id_insert(m, pos);
}

static void model_free(model *m) {
    for (int i = 0; i < NNAMES; i++) free(m->st[i].pos);
    free(m->ev);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int64_t model_rev(const model *m, uint32_t s) { return (int64_t)m->st[s].n - 1; }

static int expected_ok(int64_t expected, int64_t cur) {
    if (expected == ANNAL_EXPECT_ANY) return 1;
    if (expected == ANNAL_EXPECT_NO_STREAM) return cur == -1;
    if (expected == ANNAL_EXPECT_STREAM_EXISTS) return cur >= 0;
    return expected >= 0 && expected == cur;
}

/* The header's append rules for a batch whose ids (zero: store-made) are given and whose
 * contents are valid. *also_conflict: a reuse of stored ids that is not idempotent while
 * the expected revision does not match either -- both errors describe it. */
static annal_err model_predict(const model *m, uint32_t s, int64_t expected, const annal_uuid *ids,
                               size_t n, annal_append_result *pr, int *also_conflict) {
    const mstream *st = &m->st[s];
    int64_t cur = (int64_t)st->n - 1;
    memset(pr, 0, sizeof *pr);
    *also_conflict = 0;
    int stored = 0;
    for (size_t i = 0; i < n; i++)
        if (id_find(m, &ids[i]) >= 0) stored = 1;
    if (stored) {
        int64_t p0 = id_find(m, &ids[0]);
        if (p0 >= 0 && m->ev[p0].stream == s) {
            uint64_t r = m->ev[p0].revision;
            int match = r + n <= st->n;
            for (size_t i = 0; match && i < n; i++)
                match = uuid_eq(&m->ev[st->pos[r + i]].id, &ids[i]);
            int fits = expected == ANNAL_EXPECT_ANY ||
                       (expected == ANNAL_EXPECT_NO_STREAM && r == 0) ||
                       (expected == ANNAL_EXPECT_STREAM_EXISTS && r > 0) ||
                       (expected >= 0 && (uint64_t)expected + 1 == r);
            if (match && fits) {
                pr->idempotent = 1;
                pr->first_revision = r;
                pr->first_position = st->pos[r];
                pr->count = n;
                pr->revision = (int64_t)(r + n - 1);
                return ANNAL_OK;
            }
        }
        *also_conflict = !expected_ok(expected, cur);
        pr->revision = cur;
        return ANNAL_EDUPLICATE;
    }
    if (!expected_ok(expected, cur)) {
        pr->revision = cur;
        return ANNAL_ECONFLICT;
    }
    pr->first_revision = st->n;
    pr->first_position = m->n;
    pr->count = n;
    pr->revision = cur + (int64_t)n;
    return ANNAL_OK;
}

/* ------------------------------------------------------------------------------------
 * A run: store + model + history of batches */

typedef struct mbatch {
    uint32_t stream;
    int64_t expected; /* of the call that stored it (or of the last attempt) */
    uint32_t n;
    annal_uuid id[MAXB];
    uint32_t type[MAXB];
    uint64_t dseed[MAXB], mseed[MAXB];
    uint32_t dlen[MAXB], mlen[MAXB];
} mbatch;

typedef struct run {
    const char *dir;
    annal_db_opts opts;
    annal_db *db; /* writer */
    annal_db *ro; /* optional read-only handle beside it */
    model m;
    mbatch *hist;
    size_t nhist;
    uint64_t rng;
    uint8_t *buf; /* payload scratch */
    int use_ro;
    /* statistics */
    long n_ok, n_idem, n_conflict, n_dup, n_inval, n_big, n_reads, n_reopen;
} run;

static annal_db *reader(run *R) {
    if (R->ro && chance(&R->rng, 500)) {
        g_via = "read-only handle";
        return R->ro;
    }
    g_via = "writer handle";
    return R->db;
}

static void open_store(run *R) {
    annal_err rc = annal_db_open(R->dir, &R->opts, &R->db);
    MCHECK(rc == ANNAL_OK, "open: %s", annal_errname(rc));
    R->ro = NULL;
    if (R->use_ro) {
        annal_db_opts o = R->opts;
        o.flags = ANNAL_OPEN_READONLY;
        rc = annal_db_open(R->dir, &o, &R->ro);
        MCHECK(rc == ANNAL_OK, "read-only open: %s", annal_errname(rc));
    }
}
static void close_store(run *R) {
    annal_db_close(R->ro);
    annal_db_close(R->db);
    R->ro = NULL;
    R->db = NULL;
}

/* compare one event read from the store with model event at position pos */
static void check_event(run *R, const annal_event *e, uint64_t pos, const char *what) {
    MCHECK(pos < R->m.n, "%s: model has no position %" PRIu64, what, pos);
    mevent *me = &R->m.ev[pos];
    MCHECK(e != NULL, "%s: NULL event", what);
    MCHECK(e->position == pos, "%s: position %" PRIu64 ", model %" PRIu64, what, e->position, pos);
    MCHECK(e->revision == me->revision, "%s @%" PRIu64 ": revision %" PRIu64 ", model %" PRIu64,
           what, pos, e->revision, me->revision);
    MCHECK(uuid_eq(&e->id, &me->id), "%s @%" PRIu64 ": id differs", what, pos);
    MCHECK(e->stream && e->stream_len == strlen(names[me->stream]) &&
               strlen(e->stream) == e->stream_len && strcmp(e->stream, names[me->stream]) == 0,
           "%s @%" PRIu64 ": stream '%s', model '%s'", what, pos, e->stream ? e->stream : "(null)",
           names[me->stream]);
    MCHECK(e->type && e->type_len == strlen(types[me->type]) && strlen(e->type) == e->type_len &&
               strcmp(e->type, types[me->type]) == 0,
           "%s @%" PRIu64 ": type differs", what, pos);
    MCHECK(e->data_len == me->dlen, "%s @%" PRIu64 ": data_len %zu, model %u", what, pos,
           e->data_len, me->dlen);
    if (me->dlen) {
        MCHECK(e->data != NULL, "%s @%" PRIu64 ": data NULL", what, pos);
        gen_bytes(me->dseed, me->dlen, R->buf);
        MCHECK(memcmp(e->data, R->buf, me->dlen) == 0, "%s @%" PRIu64 ": data bytes differ", what,
               pos);
    }
    MCHECK(e->metadata_len == me->mlen, "%s @%" PRIu64 ": metadata_len %zu, model %u", what, pos,
           e->metadata_len, me->mlen);
    if (me->mlen) {
        MCHECK(e->metadata != NULL, "%s @%" PRIu64 ": metadata NULL", what, pos);
        gen_bytes(me->mseed, me->mlen, R->buf);
        MCHECK(memcmp(e->metadata, R->buf, me->mlen) == 0, "%s @%" PRIu64 ": metadata differs",
               what, pos);
    }
    MCHECK(e->timestamp_ns >= me->t_lo - TS_SLACK_NS && e->timestamp_ns <= me->t_hi + TS_SLACK_NS,
           "%s @%" PRIu64 ": timestamp %" PRId64 " outside the append call [%" PRId64 ", %" PRId64
           "]",
           what, pos, e->timestamp_ns, me->t_lo, me->t_hi);
    if (me->ts)
        MCHECK(e->timestamp_ns == me->ts, "%s @%" PRIu64 ": timestamp changed", what, pos);
    else
        me->ts = e->timestamp_ns;
    if (pos > 0 && R->m.ev[pos - 1].ts)
        MCHECK(R->m.ev[pos - 1].ts <= me->ts, "%s @%" PRIu64 ": timestamp before its predecessor's",
               what, pos);
    if (pos + 1 < R->m.n && R->m.ev[pos + 1].ts)
        MCHECK(me->ts <= R->m.ev[pos + 1].ts, "%s @%" PRIu64 ": timestamp after its successor's",
               what, pos);
}

/* After a failed read through the read-only handle: does the writer handle, or a freshly
 * opened read-only handle, read the same event? (diagnosis for the report) */
static void diagnose_ro(run *R, annal_db *db, uint64_t pos) {
    if (!R->ro || db != R->ro) return;
    annal_event *e = NULL;
    annal_err w = annal_event_get(R->db, pos, &e);
    annal_free(e);
    e = NULL;
    annal_db *fresh = NULL;
    annal_db_opts o = R->opts;
    o.flags = ANNAL_OPEN_READONLY;
    annal_err f = annal_db_open(R->dir, &o, &fresh);
    if (f == ANNAL_OK) f = annal_event_get(fresh, pos, &e);
    annal_free(e);
    e = NULL;
    annal_err again = annal_event_get(R->ro, pos, &e);
    annal_free(e);
    print_error("diagnosis: event_get(%" PRIu64 ") via the writer handle: %s; via a new read-only "
                "handle: %s; via the old read-only handle again: %s\n",
                pos, annal_errname(w), annal_errname(f), annal_errname(again));
    annal_db_close(fresh);
}

/* drain an iterator expecting exactly the positions want[0..k) */
static void drain(run *R, annal_db *db, annal_iter *it, const uint64_t *want, size_t k,
                  const char *what) {
    const annal_event *e = NULL;
    for (size_t i = 0; i < k; i++) {
        annal_err rc = annal_iter_next(it, &e);
        if (rc != ANNAL_OK) diagnose_ro(R, db, want[i]);
        MCHECK(rc == ANNAL_OK, "%s: item %zu of %zu (position %" PRIu64 "): %s (%s)", what, i, k,
               want[i], annal_errname(rc), annal_db_errmsg(db));
        check_event(R, e, want[i], what);
    }
    annal_err rc = annal_iter_next(it, &e);
    MCHECK(rc == ANNAL_END, "%s: after %zu items: %s, model has no more", what, k,
           annal_errname(rc));
    annal_iter_close(it);
}

static uint64_t *g_want;
static size_t g_want_cap;
static uint64_t *want_buf(size_t n) {
    if (n + 1 > g_want_cap) {
        g_want_cap = (n + 1) * 2;
        g_want = realloc(g_want, g_want_cap * sizeof *g_want);
        assert_non_null(g_want);
    }
    return g_want;
}

static void check_read_all(run *R, annal_db *db, uint64_t from, unsigned flags, uint64_t limit) {
    char what[128];
    snprintf(what, sizeof what, "read_all(from=%" PRIu64 ", %s, limit=%" PRIu64 ")", from,
             flags & ANNAL_READ_BACKWARD ? "backward" : "forward", limit);
    uint64_t *want = want_buf(R->m.n);
    size_t k = 0;
    if (R->m.n) {
        if (flags & ANNAL_READ_BACKWARD) {
            for (uint64_t p = from >= R->m.n ? R->m.n - 1 : from;; p--) {
                if (limit && k == limit) break;
                want[k++] = p;
                if (p == 0) break;
            }
        } else {
            for (uint64_t p = from; p < R->m.n && !(limit && k == limit); p++) want[k++] = p;
        }
    }
    annal_iter *it = NULL;
    annal_err rc = annal_read_all(db, from, flags, limit, &it);
    MCHECK(rc == ANNAL_OK, "%s: %s", what, annal_errname(rc));
    drain(R, db, it, want, k, what);
    R->n_reads++;
}

static void check_read_stream(run *R, annal_db *db, uint32_t s, uint64_t from, unsigned flags,
                              uint64_t limit) {
    char what[160];
    snprintf(what, sizeof what, "read_stream(%s, from=%" PRIu64 ", %s, limit=%" PRIu64 ")",
             names[s], from, flags & ANNAL_READ_BACKWARD ? "backward" : "forward", limit);
    mstream *st = &R->m.st[s];
    annal_iter *it = NULL;
    annal_err rc = annal_read_stream(db, names[s], from, flags, limit, &it);
    if (st->n == 0) {
        MCHECK(rc == ANNAL_ENOTFOUND, "%s: %s, model: no such stream", what, annal_errname(rc));
        return;
    }
    MCHECK(rc == ANNAL_OK, "%s: %s", what, annal_errname(rc));
    uint64_t *want = want_buf(st->n);
    size_t k = 0;
    if (flags & ANNAL_READ_BACKWARD) {
        for (uint64_t r = from >= st->n ? st->n - 1 : from;; r--) {
            if (limit && k == limit) break;
            want[k++] = st->pos[r];
            if (r == 0) break;
        }
    } else {
        for (uint64_t r = from; r < st->n && !(limit && k == limit); r++) want[k++] = st->pos[r];
    }
    drain(R, db, it, want, k, what);
    R->n_reads++;
}

static void check_event_get(run *R, annal_db *db, uint64_t pos) {
    annal_event *e = NULL;
    annal_err rc = annal_event_get(db, pos, &e);
    if (pos >= R->m.n) {
        MCHECK(rc == ANNAL_ENOTFOUND, "event_get(%" PRIu64 ") past head %zu: %s", pos, R->m.n,
               annal_errname(rc));
        return;
    }
    if (rc != ANNAL_OK) diagnose_ro(R, db, pos);
    MCHECK(rc == ANNAL_OK, "event_get(%" PRIu64 "): %s (%s)", pos, annal_errname(rc),
           annal_db_errmsg(db));
    check_event(R, e, pos, "event_get");
    annal_free(e);
}

static void check_head(run *R, annal_db *db, uint32_t s) {
    uint64_t head = UINT64_MAX;
    annal_err rc = annal_stream_head(db, names[s], &head);
    if (R->m.st[s].n == 0) {
        MCHECK(rc == ANNAL_ENOTFOUND, "stream_head(%s): %s, model: no stream", names[s],
               annal_errname(rc));
        return;
    }
    MCHECK(rc == ANNAL_OK, "stream_head(%s): %s", names[s], annal_errname(rc));
    MCHECK(head == R->m.st[s].n - 1, "stream_head(%s) = %" PRIu64 ", model %zu", names[s], head,
           R->m.st[s].n - 1);
}

static int cmp_idx(const void *a, const void *b) {
    return strcmp(names[*(const uint32_t *)a], names[*(const uint32_t *)b]);
}

static void check_streams(run *R, annal_db *db, const char *after) {
    uint32_t order[NNAMES];
    size_t k = 0;
    for (uint32_t s = 0; s < NNAMES; s++)
        if (R->m.st[s].n && (!after || strcmp(names[s], after) > 0)) order[k++] = s;
    qsort(order, k, sizeof *order, cmp_idx);
    annal_stream_iter *it = NULL;
    annal_err rc = annal_streams_open(db, after, &it);
    MCHECK(rc == ANNAL_OK, "streams_open(%s): %s", after ? after : "NULL", annal_errname(rc));
    for (size_t i = 0; i < k; i++) {
        const annal_stream_info *si = NULL;
        rc = annal_streams_next(it, &si);
        MCHECK(rc == ANNAL_OK, "streams_next #%zu after '%s': %s", i, after ? after : "NULL",
               annal_errname(rc));
        const mstream *st = &R->m.st[order[i]];
        MCHECK(si && si->name && strcmp(si->name, names[order[i]]) == 0,
               "streams #%zu after '%s': '%s', model '%s'", i, after ? after : "NULL",
               si && si->name ? si->name : "(null)", names[order[i]]);
        MCHECK(si->last_revision == st->n - 1, "stream %s last_revision %" PRIu64 ", model %zu",
               si->name, si->last_revision, st->n - 1);
        MCHECK(si->last_position == st->pos[st->n - 1],
               "stream %s last_position %" PRIu64 ", model %" PRIu64, si->name, si->last_position,
               st->pos[st->n - 1]);
        const mevent *first = &R->m.ev[st->pos[0]];
        if (first->ts)
            MCHECK(si->created_ns == first->ts,
                   "stream %s created_ns %" PRId64 ", first event %" PRId64, si->name,
                   si->created_ns, first->ts);
        else
            MCHECK(si->created_ns >= first->t_lo - TS_SLACK_NS &&
                       si->created_ns <= first->t_hi + TS_SLACK_NS,
                   "stream %s created_ns outside its first append", si->name);
    }
    const annal_stream_info *si = NULL;
    rc = annal_streams_next(it, &si);
    MCHECK(rc == ANNAL_END, "streams after '%s': %s after %zu, model has no more",
           after ? after : "NULL", annal_errname(rc), k);
    annal_streams_close(it);
    R->n_reads++;
}

static void check_info(run *R, annal_db *db) {
    annal_db_info info;
    annal_err rc = annal_db_info_get(db, &info);
    MCHECK(rc == ANNAL_OK, "db_info_get: %s", annal_errname(rc));
    MCHECK(info.events == R->m.n, "db_info.events %" PRIu64 ", model %zu", info.events, R->m.n);
    uint64_t streams = 0;
    for (int s = 0; s < NNAMES; s++) streams += R->m.st[s].n != 0;
    MCHECK(info.streams == streams, "db_info.streams %" PRIu64 ", model %" PRIu64, info.streams,
           streams);
    MCHECK(info.readonly == (db == R->ro), "db_info.readonly %d", info.readonly);
    MCHECK(info.segments >= 1 || R->m.n == 0, "db_info.segments 0");
    if (R->m.n) {
        const mevent *last = &R->m.ev[R->m.n - 1];
        if (last->ts)
            MCHECK(info.last_ns == last->ts, "db_info.last_ns %" PRId64 ", last event %" PRId64,
                   info.last_ns, last->ts);
        MCHECK(info.segments >= info.log_bytes / SEGMENT_BYTES,
               "%" PRIu64 " log bytes in %" PRIu64 " segments of %u", info.log_bytes, info.segments,
               SEGMENT_BYTES);
    } else {
        MCHECK(info.last_ns == 0, "db_info.last_ns of an empty store");
    }
}

/* Compare everything: $all both ways, every stream, heads, listing, info. */
static void check_all(run *R, annal_db *db) {
    check_read_all(R, db, 0, 0, 0);
    check_read_all(R, db, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 0);
    for (uint32_t s = 0; s < NNAMES; s++) {
        check_read_stream(R, db, s, 0, 0, 0);
        check_head(R, db, s);
    }
    check_streams(R, db, NULL);
    check_info(R, db);
    check_event_get(R, db, R->m.n);
}

/* ------------------------------------------------------------------------------------
 * Appends */

static void batch_events(run *R, const mbatch *b, annal_event_data *ev, uint8_t **bufs) {
    for (uint32_t i = 0; i < b->n; i++) {
        memset(&ev[i], 0, sizeof ev[i]);
        ev[i].id = b->id[i];
        ev[i].type = types[b->type[i]];
        size_t len = (size_t)b->dlen[i] + b->mlen[i];
        bufs[i] = malloc(len ? len : 1);
        assert_non_null(bufs[i]);
        gen_bytes(b->dseed[i], b->dlen[i], bufs[i]);
        gen_bytes(b->mseed[i], b->mlen[i], bufs[i] + b->dlen[i]);
        ev[i].data = b->dlen[i] ? bufs[i] : NULL;
        ev[i].data_len = b->dlen[i];
        ev[i].metadata = b->mlen[i] ? bufs[i] + b->dlen[i] : NULL;
        ev[i].metadata_len = b->mlen[i];
    }
    (void)R;
}

/* run one append of batch b to stream s and compare with the model */
static void do_append(run *R, mbatch *b, uint32_t s, int64_t expected) {
    annal_event_data ev[MAXB];
    uint8_t *bufs[MAXB];
    batch_events(R, b, ev, bufs);
    int also_conflict = 0;
    annal_append_result pr, res;
    annal_err want = model_predict(&R->m, s, expected, b->id, b->n, &pr, &also_conflict);
    memset(&res, 0x5c, sizeof res);
    int64_t t0 = now_ns();
    annal_err rc = annal_append(R->db, names[s], expected, ev, b->n, &res);
    int64_t t1 = now_ns();
    char what[128];
    snprintf(what, sizeof what, "append(%s, expected=%" PRId64 ", n=%u)", names[s], expected, b->n);
    if (!(also_conflict && rc == ANNAL_ECONFLICT)) MRC(rc, want, what);
    if (rc == ANNAL_OK && pr.idempotent) {
        R->n_idem++;
        MCHECK(res.idempotent == 1, "%s: idempotent=%d, model: idempotent", what, res.idempotent);
        if (res.revision != pr.revision && res.revision == model_rev(&R->m, s)) {
            if (!g_idem_revision_current++)
                snprintf(g_idem_example, sizeof g_idem_example,
                         "op %ld: %s: result->revision %" PRId64 " (the stream now), the original "
                         "append's was %" PRId64,
                         g_op, what, res.revision, pr.revision);
            res.revision = pr.revision;
        }
        MCHECK(res.first_revision == pr.first_revision && res.first_position == pr.first_position &&
                   res.count == pr.count && res.revision == pr.revision,
               "%s idempotent: result {rev %" PRIu64 ", pos %" PRIu64 ", count %" PRIu64
               ", last %" PRId64 "}, model {%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRId64 "}",
               what, res.first_revision, res.first_position, res.count, res.revision,
               pr.first_revision, pr.first_position, pr.count, pr.revision);
        for (uint32_t i = 0; i < b->n; i++)
            MCHECK(uuid_eq(&ev[i].id, &b->id[i]), "%s: an id was rewritten", what);
    } else if (rc == ANNAL_OK) {
        R->n_ok++;
        MCHECK(res.idempotent == 0 && res.first_revision == pr.first_revision &&
                   res.first_position == pr.first_position && res.count == pr.count &&
                   res.revision == pr.revision,
               "%s: result {idem %d, rev %" PRIu64 ", pos %" PRIu64 ", count %" PRIu64
               ", last %" PRId64 "}, model {0, %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRId64 "}",
               what, res.idempotent, res.first_revision, res.first_position, res.count,
               res.revision, pr.first_revision, pr.first_position, pr.count, pr.revision);
        for (uint32_t i = 0; i < b->n; i++) {
            MCHECK(!uuid_zero(&ev[i].id), "%s: id %u not written back", what, i);
            if (uuid_zero(&b->id[i]))
                MCHECK(uuid_v7(&ev[i].id), "%s: store-made id %u is not a UUIDv7", what, i);
            else
                MCHECK(uuid_eq(&ev[i].id, &b->id[i]), "%s: caller id %u was changed", what, i);
            mevent *me = model_push(&R->m, s);
            me->id = ev[i].id;
            me->type = b->type[i];
            me->dseed = b->dseed[i];
            me->dlen = b->dlen[i];
            me->mseed = b->mseed[i];
            me->mlen = b->mlen[i];
            me->t_lo = t0;
            me->t_hi = t1;
            model_index_id(&R->m, me->position);
        }
        b->stream = s;
        b->expected = expected;
    } else if (rc == ANNAL_ECONFLICT) {
        R->n_conflict++;
        MCHECK(res.revision == pr.revision, "%s: ECONFLICT revision %" PRId64 ", model %" PRId64,
               what, res.revision, pr.revision);
    } else if (rc == ANNAL_EDUPLICATE) {
        R->n_dup++;
    }
    /* keep whatever ids the call left in the array (written back or not) */
    for (uint32_t i = 0; i < b->n; i++) b->id[i] = ev[i].id;
    for (uint32_t i = 0; i < b->n; i++) free(bufs[i]);
}

static void random_batch(run *R, mbatch *b) {
    uint64_t *g = &R->rng;
    b->n = chance(g, 700) ? 1 + (uint32_t)rbelow(g, 4) : 1 + (uint32_t)rbelow(g, 20);
    int large = chance(g, 40); /* spans index blocks (64 events): small payloads */
    if (large) b->n = 30 + (uint32_t)rbelow(g, MAX_BATCH_EVENTS - 29);
    int big = !large && chance(g, 15); /* one ~100 KiB event */
    uint32_t big_at = (uint32_t)rbelow(g, b->n);
    if (big && b->n > 10) b->n = 10;
    for (uint32_t i = 0; i < b->n; i++) {
        if (chance(g, 200))
            memset(&b->id[i], 0, sizeof b->id[i]); /* the store makes it */
        else
            uuid_rand(g, &b->id[i]);
        b->type[i] = (uint32_t)rbelow(g, NTYPES);
        b->dseed[i] = splitmix(g);
        b->mseed[i] = splitmix(g);
        b->dlen[i] = chance(g, 50) ? 0 : (uint32_t)rbelow(g, large ? 257 : 4097);
        if (big && i == big_at) b->dlen[i] = 100 * 1024 + (uint32_t)rbelow(g, 2048);
        b->mlen[i] = chance(g, 500) ? 0 : (uint32_t)rbelow(g, 257);
    }
}

static int64_t random_expected(run *R, uint32_t s) {
    uint64_t *g = &R->rng;
    int64_t cur = model_rev(&R->m, s);
    switch (rbelow(g, 10)) {
    case 0:
    case 1:
    case 2: /* right */ return cur >= 0 ? cur : ANNAL_EXPECT_NO_STREAM;
    case 3: { /* wrong exact */
        int64_t e = (int64_t)rbelow(g, (uint64_t)(cur + 3));
        if (e == cur) e = cur + 1 + (int64_t)rbelow(g, 3);
        return e;
    }
    case 4:
    case 5: return ANNAL_EXPECT_ANY;
    case 6:
    case 7: return ANNAL_EXPECT_NO_STREAM;
    default: return ANNAL_EXPECT_STREAM_EXISTS;
    }
}

static mbatch *hist_slot(run *R) {
    mbatch *b = &R->hist[R->nhist % HISTORY];
    R->nhist++;
    return b;
}

static void op_append(run *R) {
    mbatch *b = hist_slot(R);
    memset(b, 0, sizeof *b);
    random_batch(R, b);
    uint32_t s = (uint32_t)rbelow(&R->rng, NSTREAMS);
    int64_t expected = random_expected(R, s);
    b->stream = s;
    b->expected = expected;
    do_append(R, b, s, expected);
}

/* resend an earlier batch: same stream with its expected or any; another stream; or
 * mixed with a new id (partial overlap) */
static void op_resend(run *R) {
    if (R->nhist == 0) return;
    size_t have = R->nhist < HISTORY ? R->nhist : HISTORY;
    uint64_t *g = &R->rng;
    mbatch *orig = &R->hist[rbelow(g, have)];
    mbatch tmp = *orig;
    unsigned k = (unsigned)rbelow(g, 10);
    if (k < 4) {
        do_append(R, orig, orig->stream, orig->expected);
    } else if (k < 5) {
        /* same ids, other types and payloads: matching is by id only, so when the ids are
         * stored this is idempotent and the stored events stay as they were */
        for (uint32_t i = 0; i < tmp.n; i++) {
            tmp.type[i] = (tmp.type[i] + 1) % NTYPES;
            tmp.dseed[i] = splitmix(g);
            tmp.dlen[i] = (uint32_t)rbelow(g, 300);
            tmp.mlen[i] = 0;
        }
        do_append(R, &tmp, orig->stream, chance(g, 500) ? ANNAL_EXPECT_ANY : orig->expected);
    } else if (k < 8) {
        do_append(R, orig, orig->stream, ANNAL_EXPECT_ANY);
    } else if (k < 9) {
        uint32_t s = (uint32_t)rbelow(g, NSTREAMS);
        do_append(R, &tmp, s, chance(g, 500) ? ANNAL_EXPECT_ANY : random_expected(R, s));
    } else if (tmp.n < MAX_BATCH_EVENTS) {
        /* one new event before or after the old ones */
        uint32_t at = chance(g, 500) ? 0 : tmp.n;
        memmove(&tmp.id[at + 1], &tmp.id[at], (tmp.n - at) * sizeof tmp.id[0]);
        memmove(&tmp.type[at + 1], &tmp.type[at], (tmp.n - at) * sizeof tmp.type[0]);
        memmove(&tmp.dseed[at + 1], &tmp.dseed[at], (tmp.n - at) * sizeof tmp.dseed[0]);
        memmove(&tmp.mseed[at + 1], &tmp.mseed[at], (tmp.n - at) * sizeof tmp.mseed[0]);
        memmove(&tmp.dlen[at + 1], &tmp.dlen[at], (tmp.n - at) * sizeof tmp.dlen[0]);
        memmove(&tmp.mlen[at + 1], &tmp.mlen[at], (tmp.n - at) * sizeof tmp.mlen[0]);
        uuid_rand(g, &tmp.id[at]);
        tmp.type[at] = 0;
        tmp.dseed[at] = splitmix(g);
        tmp.dlen[at] = 10;
        tmp.mseed[at] = 0;
        tmp.mlen[at] = 0;
        tmp.n++;
        mbatch *slot = hist_slot(R);
        *slot = tmp;
        do_append(R, slot, tmp.stream, ANNAL_EXPECT_ANY);
    }
}

/* invalid appends: the model predicts the error and that nothing changes */
static void op_invalid(run *R) {
    uint64_t *g = &R->rng;
    mbatch b;
    memset(&b, 0, sizeof b);
    random_batch(R, &b);
    uint32_t s = (uint32_t)rbelow(g, NSTREAMS);
    const char *stream = names[s];
    annal_err want;
    annal_event_data ev[MAXB];
    uint8_t *bufs[MAXB];
    unsigned k = (unsigned)rbelow(g, 6);
    if (k == 0) { /* too many events */
        b.n = MAX_BATCH_EVENTS + 1;
        for (uint32_t i = 0; i < b.n; i++) {
            uuid_rand(g, &b.id[i]);
            b.type[i] = 1;
            b.dlen[i] = 3;
            b.mlen[i] = 0;
            b.dseed[i] = i;
        }
        want = ANNAL_ETOOBIG;
    } else if (k == 1) { /* one event over max_event_bytes (data + metadata) */
        b.n = 1;
        b.dlen[0] = MAX_EVENT_BYTES - 10;
        b.mlen[0] = 11;
        want = ANNAL_ETOOBIG;
    } else if (k == 2) {
        stream = "$reserved";
        want = ANNAL_EINVAL;
    } else if (k == 3) {
        stream = "";
        want = ANNAL_EINVAL;
    } else if (k == 4) {
        stream = "bad\xc3";
        want = ANNAL_EINVAL;
    } else {
        want = ANNAL_EINVAL; /* bad type below */
    }
    batch_events(R, &b, ev, bufs);
    if (k == 5) ev[rbelow(g, b.n)].type = chance(g, 500) ? "" : "\xff\xfe";
    annal_append_result res;
    uint64_t before = R->m.n;
    annal_err rc = annal_append(R->db, stream, ANNAL_EXPECT_ANY, ev, b.n, &res);
    char what[64];
    snprintf(what, sizeof what, "invalid append kind %u", k);
    MRC(rc, want, what);
    if (want == ANNAL_ETOOBIG)
        R->n_big++;
    else
        R->n_inval++;
    for (uint32_t i = 0; i < b.n; i++) free(bufs[i]);
    /* nothing became visible: the next position is unchanged */
    annal_event *e = NULL;
    rc = annal_event_get(R->db, before, &e);
    MCHECK(rc == ANNAL_ENOTFOUND, "after a failed append, event_get(head) = %s", annal_errname(rc));
}

static void op_read(run *R) {
    uint64_t *g = &R->rng;
    annal_db *db = reader(R);
    unsigned k = (unsigned)rbelow(g, 100);
    if (k < 35) {
        uint32_t s = (uint32_t)rbelow(g, NNAMES);
        size_t n = R->m.st[s].n;
        unsigned flags = chance(g, 500) ? ANNAL_READ_BACKWARD : 0;
        uint64_t from = (flags && chance(g, 300)) ? ANNAL_FROM_END : rbelow(g, n + 3);
        uint64_t limit = chance(g, 300) ? 0 : 1 + rbelow(g, 30);
        check_read_stream(R, db, s, from, flags, limit);
    } else if (k < 60) {
        unsigned flags = chance(g, 500) ? ANNAL_READ_BACKWARD : 0;
        uint64_t from = (flags && chance(g, 300)) ? ANNAL_FROM_END : rbelow(g, R->m.n + 3);
        uint64_t limit = chance(g, 30) ? 0 : 1 + rbelow(g, 50);
        check_read_all(R, db, from, flags, limit);
    } else if (k < 75) {
        for (int i = 0; i < 4; i++) check_event_get(R, db, rbelow(g, R->m.n + 3));
    } else if (k < 88) {
        check_head(R, db, (uint32_t)rbelow(g, NNAMES));
    } else if (k < 95) {
        const char *after = NULL;
        char tmp[32];
        unsigned a = (unsigned)rbelow(g, 4);
        if (a == 1) after = names[rbelow(g, NNAMES)];
        if (a == 2) {
            snprintf(tmp, sizeof tmp, "%s", names[rbelow(g, NSTREAMS)]);
            tmp[1 + rbelow(g, strlen(tmp) - 1)] = 0; /* a prefix: usually not a stream */
            after = tmp;
        }
        if (a == 3) after = "zzz";
        check_streams(R, db, after);
    } else {
        check_info(R, db);
    }
}

static void sequential_phase(run *R, long ops) {
    g_phase = "sequential";
    for (g_op = 0; g_op < ops; g_op++) {
        unsigned k = (unsigned)rbelow(&R->rng, 1000);
        if (k < 420)
            op_append(R);
        else if (k < 520)
            op_resend(R);
        else if (k < 535)
            op_invalid(R);
        else if (k < 990)
            op_read(R);
        else {
            close_store(R);
            open_store(R);
            R->n_reopen++;
            if (chance(&R->rng, 300)) check_all(R, reader(R));
        }
    }
    g_op = -1;
}

/* ------------------------------------------------------------------------------------
 * Concurrent phase: threads append with exact expected revisions to overlapping streams,
 * retrying on conflict after reading the head, and record what was acknowledged. */

#define CONC_MAXB 5
typedef struct cack {
    uint32_t stream, n;
    annal_uuid id[CONC_MAXB];
    int zero[CONC_MAXB];
    uint32_t type[CONC_MAXB], dlen[CONC_MAXB], mlen[CONC_MAXB];
    uint64_t dseed[CONC_MAXB], mseed[CONC_MAXB];
    annal_append_result res;
    int64_t expected, t0, t1;
} cack;

typedef struct cthread {
    run *R;
    int idx, ops;
    uint64_t rng;
    cack *acks;
    size_t nacks;
    long conflicts;
    char err[512];
} cthread;

static const uint32_t conc_streams[] = {
    NSTREAMS + 0, NSTREAMS + 1, NSTREAMS + 2, NSTREAMS + 3, NSTREAMS + 4, NSTREAMS + 5, 0, 1, 7};
#define NCONC_STREAMS (sizeof conc_streams / sizeof conc_streams[0])

static void *conc_main(void *arg) {
    cthread *t = arg;
    annal_db *db = t->R->db;
    t->acks = calloc((size_t)t->ops, sizeof *t->acks);
    if (!t->acks) {
        snprintf(t->err, sizeof t->err, "out of memory");
        return NULL;
    }
    uint8_t *buf = malloc(CONC_MAXB * 8192);
    if (!buf) {
        snprintf(t->err, sizeof t->err, "out of memory");
        return NULL;
    }
    for (int op = 0; op < t->ops && !t->err[0]; op++) {
        cack a;
        memset(&a, 0, sizeof a);
        a.stream = conc_streams[rbelow(&t->rng, NCONC_STREAMS)];
        a.n = 1 + (uint32_t)rbelow(&t->rng, CONC_MAXB);
        annal_event_data ev[CONC_MAXB];
        for (uint32_t i = 0; i < a.n; i++) {
            a.zero[i] = rbelow(&t->rng, 5) == 0;
            if (!a.zero[i]) uuid_rand(&t->rng, &a.id[i]);
            a.type[i] = (uint32_t)rbelow(&t->rng, NTYPES);
            a.dseed[i] = splitmix(&t->rng);
            a.mseed[i] = splitmix(&t->rng);
            a.dlen[i] = (uint32_t)rbelow(&t->rng, 4097);
            a.mlen[i] = (uint32_t)rbelow(&t->rng, 257);
            gen_bytes(a.dseed[i], a.dlen[i], buf + i * 8192);
            gen_bytes(a.mseed[i], a.mlen[i], buf + i * 8192 + 4200);
            memset(&ev[i], 0, sizeof ev[i]);
            ev[i].id = a.id[i];
            ev[i].type = types[a.type[i]];
            ev[i].data = buf + i * 8192;
            ev[i].data_len = a.dlen[i];
            ev[i].metadata = buf + i * 8192 + 4200;
            ev[i].metadata_len = a.mlen[i];
        }
        for (int attempt = 0;; attempt++) {
            if (attempt > 100000) {
                snprintf(t->err, sizeof t->err, "no progress on %s", names[a.stream]);
                break;
            }
            uint64_t head = 0;
            annal_err rc = annal_stream_head(db, names[a.stream], &head);
            if (rc == ANNAL_ENOTFOUND)
                a.expected = ANNAL_EXPECT_NO_STREAM;
            else if (rc == ANNAL_OK)
                a.expected = (int64_t)head;
            else {
                snprintf(t->err, sizeof t->err, "stream_head(%s): %s", names[a.stream],
                         annal_errname(rc));
                break;
            }
            a.t0 = now_ns();
            rc = annal_append(db, names[a.stream], a.expected, ev, a.n, &a.res);
            a.t1 = now_ns();
            if (rc == ANNAL_ECONFLICT) {
                t->conflicts++;
                /* streams only grow: the actual revision is past what we read */
                if (a.res.revision <= a.expected)
                    snprintf(t->err, sizeof t->err,
                             "ECONFLICT on %s with expected %" PRId64 " reports revision %" PRId64,
                             names[a.stream], a.expected, a.res.revision);
                continue;
            }
            if (rc != ANNAL_OK) {
                snprintf(t->err, sizeof t->err, "append(%s, %" PRId64 "): %s: %s", names[a.stream],
                         a.expected, annal_errname(rc), annal_db_errmsg(db));
                break;
            }
            if (a.res.idempotent || a.res.count != a.n ||
                a.res.first_revision != (uint64_t)(a.expected + 1) ||
                a.res.revision != a.expected + (int64_t)a.n) {
                snprintf(t->err, sizeof t->err,
                         "append(%s, %" PRId64 ", n=%u): result idem=%d count=%" PRIu64
                         " first_revision=%" PRIu64 " revision=%" PRId64,
                         names[a.stream], a.expected, a.n, a.res.idempotent, a.res.count,
                         a.res.first_revision, a.res.revision);
                break;
            }
            for (uint32_t i = 0; i < a.n; i++) a.id[i] = ev[i].id;
            t->acks[t->nacks++] = a;
            break;
        }
    }
    free(buf);
    return NULL;
}

static int cmp_ack(const void *a, const void *b) {
    const cack *x = *(const cack *const *)a, *y = *(const cack *const *)b;
    return x->res.first_position < y->res.first_position   ? -1
           : x->res.first_position > y->res.first_position ? 1
                                                           : 0;
}

static void concurrent_phase(run *R, int nthreads, int ops) {
    g_phase = "concurrent";
    cthread th[8];
    pthread_t tid[8];
    uint64_t base = R->m.n;
    for (int i = 0; i < nthreads; i++) {
        memset(&th[i], 0, sizeof th[i]);
        th[i].R = R;
        th[i].idx = i;
        th[i].ops = ops;
        th[i].rng = splitmix(&R->rng) ^ (uint64_t)i;
        assert_int_equal(pthread_create(&tid[i], NULL, conc_main, &th[i]), 0);
    }
    size_t total = 0;
    long conflicts = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(tid[i], NULL);
        MCHECK(th[i].err[0] == 0, "thread %d: %s", i, th[i].err);
        total += th[i].nacks;
        conflicts += th[i].conflicts;
    }
    print_message("concurrent phase: %d threads, %zu acknowledged appends, %ld conflicts\n",
                  nthreads, total, conflicts);
    /* fold the acknowledged appends into the model in $all order */
    cack **all = malloc((total + 1) * sizeof *all);
    assert_non_null(all);
    size_t k = 0;
    for (int i = 0; i < nthreads; i++)
        for (size_t j = 0; j < th[i].nacks; j++) all[k++] = &th[i].acks[j];
    qsort(all, k, sizeof *all, cmp_ack);
    for (size_t i = 0; i < k; i++) {
        cack *a = all[i];
        MCHECK(a->res.first_position == R->m.n,
               "ack on %s at position %" PRIu64 ": $all should continue at %zu (gap or overlap)",
               names[a->stream], a->res.first_position, R->m.n);
        MCHECK(a->res.first_revision == R->m.st[a->stream].n,
               "ack on %s at revision %" PRIu64 ", position %" PRIu64
               ": in $all order the stream is at %zu",
               names[a->stream], a->res.first_revision, a->res.first_position,
               R->m.st[a->stream].n);
        for (uint32_t j = 0; j < a->n; j++) {
            if (a->zero[j]) MCHECK(uuid_v7(&a->id[j]), "store-made id is not a UUIDv7");
            mevent *me = model_push(&R->m, a->stream);
            me->id = a->id[j];
            me->type = a->type[j];
            me->dseed = a->dseed[j];
            me->dlen = a->dlen[j];
            me->mseed = a->mseed[j];
            me->mlen = a->mlen[j];
            me->t_lo = a->t0;
            me->t_hi = a->t1;
            model_index_id(&R->m, me->position);
        }
    }
    MCHECK(R->m.n - base >= total, "fewer events than acknowledged appends");
    free(all);
    for (int i = 0; i < nthreads; i++) free(th[i].acks);
    /* every acknowledged event present exactly once, nothing else: */
    check_all(R, R->db);
    g_phase = "after-concurrent";
}

/* ------------------------------------------------------------------------------------ */

/* default operation count: AddressSanitizer makes every append (LMDB's large
 * per-transaction allocations) far slower, so fewer there */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_OPS 2000
#else
#define DEFAULT_OPS 5000
#endif

static long env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 0) : dflt;
}

static void run_model(void **state, uint64_t seed, long ops, int use_ro, int conc) {
    run R;
    memset(&R, 0, sizeof R);
    R.dir = *state;
    R.rng = seed;
    R.use_ro = use_ro;
    R.hist = calloc(HISTORY, sizeof *R.hist);
    R.buf = malloc(MAX_EVENT_BYTES + 4096);
    assert_non_null(R.hist);
    assert_non_null(R.buf);
    annal_db_opts_init(&R.opts);
    R.opts.flags = ANNAL_OPEN_CREATE;
    if (!env_long("ANNAL_MODEL_SYNC", 0)) R.opts.flags |= ANNAL_OPEN_NOSYNC;
    R.opts.segment_bytes = SEGMENT_BYTES;
    R.opts.max_event_bytes = MAX_EVENT_BYTES;
    R.opts.max_batch_events = MAX_BATCH_EVENTS;
    open_store(&R);
    check_all(&R, R.db);
    sequential_phase(&R, ops);
    g_phase = "sequential-final";
    check_all(&R, R.db);
    if (R.ro) check_all(&R, R.ro);
    print_message("sequential phase: %ld ops: %ld appended, %ld idempotent, %ld conflicts, "
                  "%ld duplicates, %ld invalid, %ld too big, %ld reads, %ld reopens; %zu events\n",
                  ops, R.n_ok, R.n_idem, R.n_conflict, R.n_dup, R.n_inval, R.n_big, R.n_reads,
                  R.n_reopen, R.m.n);
    if (conc) {
        /* durable appends for the concurrent phase (group commit under contention) */
        close_store(&R);
        R.opts.flags &= ~ANNAL_OPEN_NOSYNC;
        open_store(&R);
        int nthreads = 4 + (int)(seed % 5);
        concurrent_phase(&R, nthreads, (int)env_long("ANNAL_MODEL_CONC_OPS", 60));
    }
    close_store(&R);
    g_phase = "reopened";
    open_store(&R);
    check_all(&R, R.db);
    if (R.ro) check_all(&R, R.ro);
    close_store(&R);
    annal_err rc = annal_verify(R.dir, NULL, NULL, NULL);
    MCHECK(rc == ANNAL_OK, "annal_verify: %s", annal_errname(rc));
    model_free(&R.m);
    free(R.hist);
    free(R.buf);
    free(g_want);
    g_want = NULL;
    g_want_cap = 0;
}

static int setup(void **state) {
    *state = tu_tmpdir("model");
    return 0;
}
static int teardown(void **state) {
    tu_rmrf(*state);
    free(*state);
    return 0;
}

static void idem_verdict(void) {
    if (g_idem_revision_current) {
        print_error("idempotent resends reported the stream's current revision instead of the "
                    "original append's %ld times; first: %s\n",
                    g_idem_revision_current, g_idem_example);
        g_idem_revision_current = 0;
        fail();
    }
}

static void test_model(void **state) {
    run_model(state, g_seed, env_long("ANNAL_MODEL_OPS", DEFAULT_OPS), 0, 1);
    idem_verdict();
}

/* the same rules seen through a read-only handle opened beside the writer */
static void test_model_readonly_handle(void **state) {
    run_model(state, g_seed ^ 0x5eed, env_long("ANNAL_MODEL_OPS", DEFAULT_OPS) / 2, 1, 0);
    idem_verdict();
}

int main(int argc, char **argv) {
    const char *env = getenv("ANNAL_MODEL_SEED");
    if (argc > 1)
        g_seed = strtoull(argv[1], NULL, 0);
    else if (env && *env)
        g_seed = strtoull(env, NULL, 0);
    else
        g_seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    printf("model_test seed: %" PRIu64 "  (rerun: model_test %" PRIu64 ")\n", g_seed, g_seed);
    fflush(stdout);
    init_names();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_readonly_handle, setup, teardown),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
