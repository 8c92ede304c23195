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

annal_err annal_state_load_sized(annal_handler *h, const char *stream, uint64_t revision,
                                 int64_t until_ns, void **state, annal_state_info *info,
                                 size_t info_size) {
    annal_state_info i = {0};
    annal_err rc = state_load(h, stream, revision, until_ns, state, info ? &i : NULL);
    annal__out_copy(info, info_size, &i, sizeof i);
    return rc;
}
