/* handler.c -- annal_handler: rebuilds a stream's state (newest snapshot + the events after
 * it, upcast), runs the decider on it, appends with the revision it read, and on a conflict
 * folds the newer events and decides again. Also the time-travel loads.
 *
 * No lock is taken anywhere here: each call works on its own state, the handler itself is
 * read-only after open, and optimistic concurrency (the expected revision) is what keeps
 * two deciders from acting on the same state. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "write.h"

struct annal_handler {
    annal_db *db;
    annal_decider d; /* copy; d.name points at name */
    char *name;
    void *ctx;
    unsigned max_retries;
    char *snapdir; /* NULL: no snapshots */
    uint64_t every;
    const annal_schema *schema;
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    /* Snapshot writes in progress, by stream hash: a thread that finds its slot taken skips
     * its write instead of flushing the same snapshot again. Never waited on. */
    atomic_flag writing[64];
};

/* A state being rebuilt, and where it stands in its stream. */
typedef struct load {
    void *state;
    int64_t revision; /* last folded; -1: none */
    uint64_t position;
    int64_t ts;
    annal_uuid id; /* of the event at revision */
    uint64_t folded;
    int64_t snap_rev; /* revision of the snapshot it started from; -1: none */
    int snap_stale;   /* a snapshot file exists that cannot be used: replace it */
    annal_buf bufs[2];
} load;

static void hlog(const annal_handler *h, annal_log_level lv, const char *fmt, ...) {
    if (!h->log) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->log(h->ctx, lv, msg);
}

static int stream_ok(const char *s) {
    if (!s) return 0;
    size_t n = strnlen(s, ANNAL_MAX_NAME + 1);
    /* '$' names are the store's ($all): their revisions are not a stream's. */
    return n >= 1 && n <= ANNAL_MAX_STREAM_NAME && s[0] != '$';
}

/* ------------------------------------------------------------------------------------
 * Opening */

static void opts_defaults(annal_handler_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    opts->max_retries = 10;
    opts->snapshot_every = 100;
}

void annal_handler_opts_init_sized(annal_handler_opts *opts, size_t size) {
    annal_handler_opts d;
    opts_defaults(&d);
    annal__opts_out(opts, size, &d, sizeof d);
}

static annal_err make_dir(const char *dir) {
    if (mkdir(dir, 0755) == 0) return ANNAL_OK;
    struct stat st;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return ANNAL_OK;
    return ANNAL_EIO;
}

annal_err annal_handler_open(annal_db *db, const annal_decider *decider,
                             const annal_handler_opts *opts, annal_handler **out) {
    if (!out) return ANNAL_EINVAL;
    *out = NULL;
    annal_handler_opts full; /* only the fields inside the caller's struct_size: see annal.h */
    opts_defaults(&full);
    if (opts && !annal__opts_in(&full, sizeof full, opts,
                                offsetof(annal_handler_opts, ctx) + sizeof opts->ctx))
        return ANNAL_EINVAL;
    opts = &full;
    if (!db || !decider || decider->version < 1 || decider->version > ANNAL_DECIDER_VERSION ||
        !decider->evolve || !decider->decide || decider->state_size == 0 || !decider->name ||
        !!decider->snapshot_encode != !!decider->snapshot_decode)
        return ANNAL_EINVAL;
    size_t nlen = strnlen(decider->name, ANNAL_MAX_NAME + 1);
    if (nlen == 0 || nlen > ANNAL_MAX_NAME) return ANNAL_EINVAL;
    annal_handler *h = calloc(1, sizeof *h);
    if (!h) return ANNAL_ENOMEM;
    for (int i = 0; i < 64; i++) atomic_flag_clear(&h->writing[i]);
    h->db = db;
    h->d = *decider;
    h->name = strdup(decider->name);
    h->d.name = h->name;
    h->ctx = opts->ctx;
    h->max_retries = opts->max_retries;
    h->every = opts->snapshot_every;
    h->schema = opts->schema;
    h->log = opts->log;
    annal_err rc = h->name ? ANNAL_OK : ANNAL_ENOMEM;
    if (rc == ANNAL_OK && opts->snapshot_dir && decider->snapshot_encode) {
        h->snapdir = strdup(opts->snapshot_dir);
        rc = !h->snapdir ? ANNAL_ENOMEM : make_dir(h->snapdir);
    }
    if (rc != ANNAL_OK) {
        annal_handler_close(h);
        return rc;
    }
    *out = h;
    return ANNAL_OK;
}

void annal_handler_close(annal_handler *h) {
    if (!h) return;
    free(h->name);
    free(h->snapdir);
    free(h);
}

/* ------------------------------------------------------------------------------------
 * States */

static void state_drop(const annal_handler *h, void *state) {
    if (!state) return;
    if (h->d.release) h->d.release(h->ctx, state);
    free(state);
}

static annal_err state_new(const annal_handler *h, void **out) {
    *out = calloc(1, h->d.state_size);
    if (!*out) return ANNAL_ENOMEM;
    annal_err rc = h->d.init ? h->d.init(h->ctx, *out) : ANNAL_OK;
    if (rc != ANNAL_OK) {
        state_drop(h, *out); /* release copes with the zero-filled parts init left */
        *out = NULL;
    }
    return rc;
}

static void load_init(load *l) {
    memset(l, 0, sizeof *l);
    l->revision = -1;
    l->snap_rev = -1;
    annal__write_buf_init(&l->bufs[0]);
    annal__write_buf_init(&l->bufs[1]);
}

static void load_free(const annal_handler *h, load *l) {
    state_drop(h, l->state);
    l->state = NULL;
    annal__write_buf_free(&l->bufs[0]);
    annal__write_buf_free(&l->bufs[1]);
}

/* Back to the initial state at no revision. */
static annal_err load_restart(const annal_handler *h, load *l) {
    state_drop(h, l->state);
    l->state = NULL;
    l->revision = -1;
    l->position = 0;
    l->ts = 0;
    memset(&l->id, 0, sizeof l->id);
    l->snap_rev = -1;
    return state_new(h, &l->state);
}

/* Fold the events of stream after l->revision, up to max_rev and until_ns, into l.
 * With verify, l comes from a snapshot at l->revision: the event there must carry the
 * snapshot's id, or *mismatch is set and nothing is folded. */
static annal_err fold(const annal_handler *h, const char *stream, load *l, uint64_t max_rev,
                      int64_t until_ns, int verify, int *mismatch, char *err, size_t errlen) {
    uint64_t from = (uint64_t)(l->revision + (verify ? 0 : 1));
    if (max_rev != ANNAL_REVISION_LATEST && from > max_rev) return ANNAL_OK;
    uint64_t limit = max_rev == ANNAL_REVISION_LATEST ? 0 : max_rev - from + 1;
    annal_iter *it;
    annal_err rc = annal_read_stream(h->db, stream, from, 0, limit, &it);
    if (rc == ANNAL_ENOTFOUND) {
        if (verify) *mismatch = 1;
        return ANNAL_OK; /* no stream yet: the initial state */
    }
    if (rc != ANNAL_OK) {
        snprintf(err, errlen, "cannot read stream %s: %s", stream, annal_db_errmsg(h->db));
        return rc;
    }
    const annal_event *ev;
    annal_err urc = ANNAL_OK; /* an upcaster's or evolve's error */
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (verify) {
            verify = 0;
            if (ev->revision != (uint64_t)l->revision || memcmp(&ev->id, &l->id, sizeof l->id)) {
                *mismatch = 1;
                break;
            }
            continue;
        }
        if (ev->timestamp_ns > until_ns) break; /* timestamps never decrease in a stream */
        annal_event tmp;
        const annal_event *up;
        urc = annal__write_upcast(h->schema, ev, &tmp, l->bufs, &up);
        if (urc != ANNAL_OK) {
            snprintf(err, errlen, "cannot upcast %s at revision %llu of %s: %s", ev->type,
                     (unsigned long long)ev->revision, stream, annal_errname(urc));
            break;
        }
        urc = h->d.evolve(h->ctx, l->state, up);
        if (urc != ANNAL_OK) {
            snprintf(err, errlen, "evolve failed on %s at revision %llu of %s: %s", up->type,
                     (unsigned long long)ev->revision, stream, annal_errname(urc));
            break;
        }
        l->revision = (int64_t)ev->revision;
        l->position = ev->position;
        l->ts = ev->timestamp_ns;
        l->id = ev->id;
        l->folded++;
    }
    if (urc != ANNAL_OK) {
        rc = urc == ANNAL_END ? ANNAL_EINVAL : urc; /* END from a callback is no success */
    } else if (rc == ANNAL_END || rc == ANNAL_OK) {
        if (verify) *mismatch = 1; /* the snapshot's event is not there */
        rc = ANNAL_OK;
    } else {
        snprintf(err, errlen, "cannot read stream %s: %s", stream, annal_db_errmsg(h->db));
    }
    annal_iter_close(it);
    return rc;
}

/* Try the newest snapshot: on success l holds its state at its revision. Failures are
 * never errors: the caller replays from the start instead. */
static annal_err from_snapshot(const annal_handler *h, const char *stream, load *l,
                               uint64_t max_rev, int64_t until_ns, int *done, char *err,
                               size_t errlen) {
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    annal_err rc = annal__write_snap_read(h->snapdir, h->name, stream, &sn);
    if (rc == ANNAL_ENOTFOUND) goto none;
    if (rc == ANNAL_ECORRUPT) {
        hlog(h, ANNAL_LOG_WARN, "snapshot of %s for %s is damaged; replaying", stream, h->name);
        l->snap_stale = 1;
        goto none;
    }
    if (rc != ANNAL_OK) {
        hlog(h, ANNAL_LOG_WARN, "cannot read snapshot of %s for %s: %s", stream, h->name,
             annal_errname(rc));
        goto none;
    }
    if (sn.state_version != h->d.state_version || sn.revision > (uint64_t)INT64_MAX) {
        l->snap_stale = 1; /* older (or newer) encoding: ignored, and replaced */
        goto none;
    }
    if (sn.revision > max_rev || sn.timestamp_ns > until_ns) goto none; /* too new for now */
    rc = h->d.snapshot_decode(h->ctx, l->state, sn.state.p, sn.state.len);
    if (rc != ANNAL_OK) {
        hlog(h, ANNAL_LOG_WARN, "snapshot of %s for %s does not decode (%s); replaying", stream,
             h->name, annal_errname(rc));
        l->snap_stale = 1;
        rc = load_restart(h, l);
        goto out;
    }
    l->revision = (int64_t)sn.revision;
    l->id = sn.id;
    l->position = sn.position;
    l->ts = sn.timestamp_ns;
    int mismatch = 0;
    rc = fold(h, stream, l, max_rev, until_ns, 1, &mismatch, err, errlen);
    if (rc == ANNAL_OK && mismatch) {
        /* Not this log's event at that revision (the store was replaced): start over. */
        hlog(h, ANNAL_LOG_WARN, "snapshot of %s for %s does not match the log; replaying", stream,
             h->name);
        l->snap_stale = 1;
        rc = load_restart(h, l);
    } else if (rc == ANNAL_OK) {
        l->snap_rev = (int64_t)sn.revision;
        *done = 1; /* the verifying read went on to the bounds */
    }
    goto out;
none:
    rc = ANNAL_OK;
out:
    annal__write_buf_free(&sn.state);
    return rc;
}

static annal_err load_state(const annal_handler *h, const char *stream, uint64_t max_rev,
                            int64_t until_ns, load *l, char *err, size_t errlen) {
    annal_err rc = state_new(h, &l->state);
    if (rc != ANNAL_OK) {
        snprintf(err, errlen, "init failed: %s", annal_errname(rc));
        return rc;
    }
    int done = 0;
    if (h->snapdir) {
        rc = from_snapshot(h, stream, l, max_rev, until_ns, &done, err, errlen);
        if (rc != ANNAL_OK || done) return rc;
    }
    return fold(h, stream, l, max_rev, until_ns, 0, NULL, err, errlen);
}

static void maybe_snapshot(annal_handler *h, const char *stream, const load *l) {
    if (!h->snapdir || l->revision < 0 || h->every == 0) return;
    if (!l->snap_stale && (uint64_t)(l->revision - l->snap_rev) < h->every) return;
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    /* Threads that loaded the same stream at once all cross the threshold together; a read
     * costs far less than the flush of a write, so the later ones see the first one's
     * snapshot and leave it. Not when this load found the file unusable: then it is
     * replaced whatever revision it claims. */
    if (!l->snap_stale && annal__write_snap_read(h->snapdir, h->name, stream, &sn) == ANNAL_OK &&
        sn.state_version == h->d.state_version && sn.revision <= (uint64_t)INT64_MAX &&
        (int64_t)sn.revision > l->revision - (int64_t)h->every) {
        annal__write_buf_free(&sn.state);
        return;
    }
    annal__write_buf_clear(&sn.state);
    sn.state_version = h->d.state_version;
    sn.revision = (uint64_t)l->revision;
    sn.position = l->position;
    sn.timestamp_ns = l->ts;
    sn.id = l->id;
    annal_err rc = h->d.snapshot_encode(h->ctx, l->state, &sn.state);
    if (rc != ANNAL_OK) {
        hlog(h, ANNAL_LOG_WARN, "snapshot_encode of %s for %s failed: %s", stream, h->name,
             annal_errname(rc));
    } else {
        uint32_t hash = 2166136261u;
        for (const unsigned char *c = (const unsigned char *)stream; *c; c++)
            hash = (hash ^ *c) * 16777619u;
        atomic_flag *slot = &h->writing[hash % 64];
        if (!atomic_flag_test_and_set_explicit(slot, memory_order_acquire)) {
            rc = annal__write_snap_write(h->snapdir, h->name, stream, &sn);
            atomic_flag_clear_explicit(slot, memory_order_release);
            if (rc != ANNAL_OK)
                hlog(h, ANNAL_LOG_WARN, "cannot write snapshot of %s for %s in %s: %s", stream,
                     h->name, h->snapdir, annal_errname(rc));
        }
    }
    annal__write_buf_free(&sn.state);
}

/* ------------------------------------------------------------------------------------
 * Commands */

void annal__write_handler_view(const annal_handler *h, annal__write_hview *out) {
    *out = (annal__write_hview){h->db, &h->d, h->ctx, h->max_retries, h->schema};
}

annal_err annal__write_prepare(const annal_schema *schema, const annal__write_cmeta *cm,
                               annal_decision *d, char *err, size_t errlen) {
    for (size_t i = 0; i < d->n; i++) {
        annal_event_data *e = &d->ev[i];
        uint32_t v = annal_schema_version(schema, e->type);
        size_t len;
        annal_err rc = annal__write_meta_merge(cm, v, e->metadata, e->metadata_len, &d->merged[i],
                                               &len, err, errlen);
        if (rc != ANNAL_OK) return rc;
        if (d->merged[i]) {
            e->metadata = d->merged[i];
            e->metadata_len = len;
        }
    }
    return ANNAL_OK;
}

static annal_err handle(annal_handler *h, const char *stream, const void *command,
                        const annal_command_meta *meta, annal_command_result *result) {
    annal_command_result local = {.rejected = 0};
    annal_command_result *res = result ? result : &local;
    memset(res, 0, sizeof *res);
    res->state_revision = -1;
    res->append.revision = -1;
    char *msg = res->message;
    const size_t mlen = sizeof res->message;
    if (!h || !stream_ok(stream)) {
        snprintf(msg, mlen, "invalid handler or stream name");
        return ANNAL_EINVAL;
    }
    annal__write_cmeta cm;
    annal_err rc = annal__write_cmeta_init(&cm, meta, msg, mlen);
    if (rc != ANNAL_OK) return rc;
    load l;
    load_init(&l);
    annal_decision d;
    annal__write_decision_init(&d);
    int loaded = 0; /* l holds a whole state at l.revision */
    rc = load_state(h, stream, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &l, msg, mlen);
    loaded = rc == ANNAL_OK;
    while (rc == ANNAL_OK) {
        res->attempts++;
        res->state_revision = l.revision;
        annal__write_decision_reset(&d);
        d.states = &l.state;
        d.nstates = 1;
        rc = h->d.decide(h->ctx, l.state, command, &d);
        if (rc == ANNAL_OK) rc = d.err;
        if (rc != ANNAL_OK) {
            snprintf(msg, mlen, "decide failed: %s", annal_errname(rc));
            break;
        }
        if (d.code) {
            res->rejected = d.code;
            snprintf(msg, mlen, "%s", d.reason);
            break;
        }
        if (d.n == 0) {
            res->append.revision = l.revision;
            break;
        }
        rc = annal__write_prepare(h->schema, &cm, &d, msg, mlen);
        if (rc != ANNAL_OK) break;
        int64_t expect = l.revision < 0 ? ANNAL_EXPECT_NO_STREAM : l.revision;
        rc = annal_append(h->db, stream, expect, d.ev, d.n, &res->append);
        if (rc == ANNAL_OK) {
            res->first_id = d.ev[0].id;
            break;
        }
        if (rc != ANNAL_ECONFLICT || res->attempts > h->max_retries) {
            snprintf(msg, mlen, "%s", annal_db_errmsg(h->db));
            break;
        }
        /* Someone appended since we read: catch up from where we are, and decide again. */
        rc = fold(h, stream, &l, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, 0, NULL, msg, mlen);
        loaded = rc == ANNAL_OK;
    }
    res->folded = l.folded;
    if (loaded) maybe_snapshot(h, stream, &l);
    annal__write_decision_free(&d);
    load_free(h, &l);
    annal__write_cmeta_free(&cm);
    return rc;
}

/* ------------------------------------------------------------------------------------
 * Commands across streams: the states of n streams, one decision, one atomic append */

typedef struct mcmd {
    const char *const *streams;
    size_t n;
    load *l;                     /* per stream */
    void **states;               /* per stream: l[i].state, for annal_decision_state */
    annal_append_result *sres;   /* per stream: its part of the outcome */
    annal_stream_append *parts;  /* the decision's runs of one stream, in emitted order */
    size_t *part_stream;         /* per part: its stream's index */
    annal_append_result *pres;   /* per part */
    annal_stream_check *checks;  /* the streams written nothing */
    size_t *check_stream;        /* per check: its stream's index */
    annal_stream_conflict *conf; /* per part and check */
    size_t nparts, nchecks;
} mcmd;

static void mcmd_set_free(mcmd *m) {
    free(m->parts);
    free(m->part_stream);
    free(m->pres);
    free(m->checks);
    free(m->check_stream);
    free(m->conf);
    m->parts = NULL;
    m->part_stream = m->check_stream = NULL;
    m->pres = NULL;
    m->checks = NULL;
    m->conf = NULL;
}

static void mcmd_free(const annal_handler *h, mcmd *m) {
    for (size_t i = 0; m->l && i < m->n; i++) load_free(h, &m->l[i]);
    free(m->l);
    free(m->states);
    free(m->sres);
    mcmd_set_free(m);
}

/* Names valid, none twice (n is a command's handful of streams: pairs are compared). */
static int streams_ok(const char *const *streams, size_t n) {
    if (!streams || n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!stream_ok(streams[i])) return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(streams[i], streams[j]) == 0) return 0;
    }
    return 1;
}

static annal_err mcmd_load(const annal_handler *h, mcmd *m, char *err, size_t errlen) {
    m->l = calloc(m->n, sizeof *m->l);
    m->states = calloc(m->n, sizeof *m->states);
    m->sres = calloc(m->n, sizeof *m->sres);
    if (!m->l || !m->states || !m->sres) return ANNAL_ENOMEM;
    for (size_t i = 0; i < m->n; i++) load_init(&m->l[i]);
    for (size_t i = 0; i < m->n; i++) {
        annal_err rc = load_state(h, m->streams[i], ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST,
                                  &m->l[i], err, errlen);
        if (rc != ANNAL_OK) return rc;
    }
    return ANNAL_OK;
}

static int64_t expect_at(int64_t revision) {
    return revision < 0 ? ANNAL_EXPECT_NO_STREAM : revision;
}

/* The set for d: a part per run of events to one stream, each expecting what the state's
 * revision and the runs before it leave; a check per stream written nothing. */
static annal_err mcmd_build(mcmd *m, annal_decision *d) {
    mcmd_set_free(m);
    m->nparts = m->nchecks = 0;
    m->parts = calloc(d->n, sizeof *m->parts);
    m->part_stream = calloc(d->n, sizeof *m->part_stream);
    m->pres = calloc(d->n, sizeof *m->pres);
    m->checks = calloc(m->n, sizeof *m->checks);
    m->check_stream = calloc(m->n, sizeof *m->check_stream);
    m->conf = calloc(d->n + m->n, sizeof *m->conf);
    if (!m->parts || !m->part_stream || !m->pres || !m->checks || !m->check_stream || !m->conf)
        return ANNAL_ENOMEM;
    for (size_t s = 0; s < m->n; s++) m->sres[s].count = 0;
    for (size_t i = 0, j; i < d->n; i = j) {
        size_t s = d->to[i];
        for (j = i; j < d->n && d->to[j] == s;) j++;
        int64_t at = m->l[s].revision + (int64_t)m->sres[s].count;
        m->parts[m->nparts] = (annal_stream_append){m->streams[s], expect_at(at), &d->ev[i], j - i};
        m->part_stream[m->nparts++] = s;
        m->sres[s].count += j - i;
    }
    for (size_t s = 0; s < m->n; s++) {
        if (m->sres[s].count) continue;
        m->checks[m->nchecks] = (annal_stream_check){m->streams[s], expect_at(m->l[s].revision)};
        m->check_stream[m->nchecks++] = s;
    }
    return ANNAL_OK;
}

/* Per stream, what the set did to it (or, after a conflict, where each stream is). */
static void mcmd_results(mcmd *m, const annal_multi_result *mr, annal_err rc,
                         annal_command_result *res) {
    for (size_t s = 0; s < m->n; s++)
        m->sres[s] = (annal_append_result){0, 0, 0, m->l[s].revision, 0};
    for (size_t p = 0; rc == ANNAL_OK && p < m->nparts; p++) {
        annal_append_result *r = &m->sres[m->part_stream[p]];
        if (r->count == 0) {
            r->first_revision = m->pres[p].first_revision;
            r->first_position = m->pres[p].first_position;
        }
        r->count += m->pres[p].count;
        r->revision = m->pres[p].revision;
        r->idempotent = m->pres[p].idempotent;
    }
    size_t nconf = mr->nconflicts < mr->max_conflicts ? mr->nconflicts : mr->max_conflicts;
    for (size_t i = 0; rc != ANNAL_OK && i < nconf; i++) {
        size_t k = m->conf[i].index;
        size_t s = k < m->nparts ? m->part_stream[k] : m->check_stream[k - m->nparts];
        m->sres[s].revision = m->conf[i].actual;
    }
    res->append = m->sres[0];
    if (rc == ANNAL_OK) {
        res->append.first_position = mr->first_position;
        res->append.count = mr->count;
        res->append.idempotent = mr->idempotent;
    }
}

/* Append d's events as one set. ANNAL_OK, ANNAL_ECONFLICT (retry), or a failure. */
static annal_err mcmd_append(annal_handler *h, mcmd *m, annal_decision *d,
                             annal_command_result *res) {
    annal_err rc = mcmd_build(m, d);
    if (rc != ANNAL_OK) return rc;
    annal_multi_result mr;
    memset(&mr, 0, sizeof mr);
    mr.parts = m->pres;
    mr.conflicts = m->conf;
    mr.max_conflicts = m->nparts + m->nchecks;
    rc = annal_append_multi(h->db, m->parts, m->nparts, m->checks, m->nchecks, &mr);
    mcmd_results(m, &mr, rc, res);
    if (rc == ANNAL_OK) res->first_id = d->ev[0].id;
    return rc;
}

/* One decision on the states in m (decide, then append). 1: done (rc says how);
 * 0: a conflict to retry after folding. */
static int mcmd_decide(annal_handler *h, mcmd *m, const annal__write_cmeta *cm, const void *command,
                       annal_decision *d, annal_command_result *res, annal_err *rc) {
    char *msg = res->message;
    const size_t mlen = sizeof res->message;
    res->attempts++;
    res->state_revision = m->l[0].revision;
    for (size_t i = 0; i < m->n; i++) m->states[i] = m->l[i].state;
    annal__write_decision_reset(d);
    d->states = m->states;
    d->nstates = m->n;
    *rc = h->d.decide(h->ctx, m->l[0].state, command, d);
    if (*rc == ANNAL_OK) *rc = d->err;
    if (*rc != ANNAL_OK) {
        snprintf(msg, mlen, "decide failed: %s", annal_errname(*rc));
        return 1;
    }
    if (d->code) {
        res->rejected = d->code;
        snprintf(msg, mlen, "%s", d->reason);
        return 1;
    }
    if (d->n == 0) {
        res->append.revision = m->l[0].revision;
        for (size_t s = 0; s < m->n; s++)
            m->sres[s] = (annal_append_result){0, 0, 0, m->l[s].revision, 0};
        return 1;
    }
    *rc = annal__write_prepare(h->schema, cm, d, msg, mlen);
    if (*rc == ANNAL_OK) *rc = mcmd_append(h, m, d, res);
    if (*rc == ANNAL_OK) return 1;
    if (*rc != ANNAL_ECONFLICT || res->attempts > h->max_retries) {
        snprintf(msg, mlen, "%s", *rc == ANNAL_ENOMEM ? "out of memory" : annal_db_errmsg(h->db));
        return 1;
    }
    return 0;
}

static annal_err handle_streams(annal_handler *h, const char *const *streams, size_t n,
                                const void *command, const annal_command_meta *meta,
                                annal_command_result *res, mcmd *m) {
    memset(res, 0, sizeof *res);
    res->state_revision = -1;
    res->append.revision = -1;
    char *msg = res->message;
    const size_t mlen = sizeof res->message;
    if (!h || !streams_ok(streams, n)) {
        snprintf(msg, mlen, "invalid handler or stream names (none may appear twice)");
        return ANNAL_EINVAL;
    }
    m->streams = streams;
    m->n = n;
    annal__write_cmeta cm;
    annal_err rc = annal__write_cmeta_init(&cm, meta, msg, mlen);
    if (rc != ANNAL_OK) return rc;
    annal_decision d;
    annal__write_decision_init(&d);
    rc = mcmd_load(h, m, msg, mlen);
    int loaded = rc == ANNAL_OK;
    while (rc == ANNAL_OK && !mcmd_decide(h, m, &cm, command, &d, res, &rc)) {
        /* Someone appended to one of them since we read: catch every stream up. */
        rc = ANNAL_OK;
        for (size_t i = 0; rc == ANNAL_OK && i < n; i++)
            rc = fold(h, streams[i], &m->l[i], ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, 0, NULL,
                      msg, mlen);
        loaded = rc == ANNAL_OK;
    }
    for (size_t i = 0; m->l && i < n; i++) {
        res->folded += m->l[i].folded;
        if (loaded) maybe_snapshot(h, streams[i], &m->l[i]);
    }
    annal__write_decision_free(&d);
    annal__write_cmeta_free(&cm);
    return rc;
}

/* ------------------------------------------------------------------------------------
 * Time travel */

static annal_err state_load(annal_handler *h, const char *stream, uint64_t revision,
                            int64_t until_ns, void **state, annal_state_info *info) {
    if (!state) return ANNAL_EINVAL;
    *state = NULL;
    if (!h || !stream_ok(stream)) return ANNAL_EINVAL;
    load l;
    load_init(&l);
    char err[256] = "";
    annal_err rc = load_state(h, stream, revision, until_ns, &l, err, sizeof err);
    if (rc != ANNAL_OK) {
        hlog(h, ANNAL_LOG_ERROR, "%s", err);
        load_free(h, &l);
        return rc;
    }
    if (info) {
        info->revision = l.revision;
        info->position = l.position;
        info->timestamp_ns = l.ts;
        info->folded = l.folded;
        info->snapshot_revision = l.snap_rev;
    }
    *state = l.state;
    l.state = NULL;
    load_free(h, &l);
    return ANNAL_OK;
}

void annal_state_free(annal_handler *h, void *state) {
    if (h) state_drop(h, state);
}

/* The public entry points write at most the caller's sizeof of their result. */
annal_err annal_handle_sized(annal_handler *h, const char *stream, const void *command,
                             const annal_command_meta *meta, annal_command_result *result,
                             size_t result_size) {
    annal_command_result r;
    annal_err rc = handle(h, stream, command, meta, &r);
    annal__out_copy(result, result_size, &r, sizeof r);
    return rc;
}

annal_err annal_handle_streams_sized(annal_handler *h, const char *const *streams, size_t n,
                                     const void *command, const annal_command_meta *meta,
                                     annal_command_result *result, annal_append_result *parts,
                                     size_t result_size) {
    annal_command_result r;
    mcmd m;
    memset(&m, 0, sizeof m);
    annal_err rc = handle_streams(h, streams, n, command, meta, &r, &m);
    if (parts && m.sres) memcpy(parts, m.sres, n * sizeof *parts);
    mcmd_free(h, &m);
    annal__out_copy(result, result_size, &r, sizeof r);
    return rc;
}

annal_err annal_state_load_sized(annal_handler *h, const char *stream, uint64_t revision,
                                 int64_t until_ns, void **state, annal_state_info *info,
                                 size_t info_size) {
    annal_state_info i = {0};
    annal_err rc = state_load(h, stream, revision, until_ns, state, info ? &i : NULL);
    annal__out_copy(info, info_size, &i, sizeof i);
    return rc;
}
