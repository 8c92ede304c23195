/* Subscriptions: a cursor over the log that reads history and then follows the head.
 * Each batch is an ordinary read iterator opened where the previous one stopped; when
 * one ends with nothing new committed, the subscription reports that it caught up and
 * sleeps in store/notify.c until the head moves. Nothing is queued per subscriber, so a
 * slow one costs the store no memory and never slows appenders. */
#include <inttypes.h>
#include <regex.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "store/db_int.h"
#include "store/notify.h"

/* Events per iterator: bounds the time between head checks (fell-behind, cancel) and
 * how long one iterator lives, while amortising its open (a snapshot and a seek). */
#define BATCH                    512
#define DEFAULT_CHECKPOINT_EVERY 1000
#define DEFAULT_BEHIND           10000

enum { SUB_ALL, SUB_STREAM, SUB_CATEGORY, SUB_TYPE, SUB_QUERY };

struct annal_sub {
    annal_db *db;
    int kind;
    char *name; /* stream, category or type */
    size_t name_len;
    /* filter (positional kinds only) */
    char *type_prefix, *stream_prefix;
    regex_t type_re, stream_re;
    int has_type_re, has_stream_re, exclude_system;
    annal__query *q; /* SUB_QUERY: the events it delivers (DCB) */
    uint32_t checkpoint_every;
    uint64_t behind_threshold;
    int cancel;   /* atomic */
    MDB_txn *txn; /* for head checks; reset while not in use */
    /* Where the subscriber is. Positional kinds: every event below `scanned` was
     * delivered, filtered out or invisible. One stream: the same for revisions below
     * next_rev. */
    uint64_t scanned, next_rev;
    annal_iter *it;
    uint64_t it_events;    /* events the current iterator returned */
    uint64_t pass_bound;   /* positional: head read before the iterator opened */
    uint64_t pass_count;   /* stream: its event count read before the iterator opened */
    uint64_t passed;       /* filtered out since the last delivery or checkpoint */
    int caught_up;         /* CAUGHT_UP reported and not followed by FELL_BEHIND */
    int pending_caught_up; /* CHECKPOINT returned; CAUGHT_UP comes next */
};

static void opts_defaults(annal_sub_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    opts->start = ANNAL_SUB_START;
    opts->checkpoint_every = DEFAULT_CHECKPOINT_EVERY;
    opts->behind_threshold = DEFAULT_BEHIND;
}

void annal_sub_opts_init_sized(annal_sub_opts *opts, size_t size) {
    annal_sub_opts d;
    opts_defaults(&d);
    annal__opts_out(opts, size, &d, sizeof d);
}

void annal_sub_close(annal_sub *s) {
    if (!s) return;
    annal_iter_close(s->it);
    if (s->txn) annal__txn_free(s->txn); /* reset */
    if (s->has_type_re) regfree(&s->type_re);
    if (s->has_stream_re) regfree(&s->stream_re);
    free(s->type_prefix);
    free(s->stream_prefix);
    free(s->name);
    free(s->q);
    free(s);
}

static annal_err compile(annal_db *db, regex_t *re, int *has, const char *pattern,
                         const char *what) {
    if (!pattern) return ANNAL_OK;
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[160];
        regerror(rc, re, msg, sizeof msg);
        return annal__fail(db, ANNAL_EINVAL, "bad %s regex '%s': %s", what, pattern, msg);
    }
    *has = 1;
    return ANNAL_OK;
}

/* What the index says now: the head, and for a one-stream subscription its record
 * (*found 0 when it has none). The snapshot is released before returning. */
static annal_err look(annal_sub *s, uint64_t *head, annal__stream_rec *sr, int *found) {
    annal_db *db = s->db;
    *found = 0;
    if (!db->readonly && s->kind != SUB_STREAM) { /* no snapshot needed */
        *head = annal__visible(db, NULL);
        return ANNAL_OK;
    }
    uint64_t vis = db->readonly ? 0 : annal__visible(db, NULL);
    int mrc = annal__txn_renew(&db->idx, s->txn);
    if (mrc) return annal__fail_index(db, mrc);
    *head = db->readonly ? annal__visible(db, s->txn) : vis;
    annal_err rc = ANNAL_OK;
    if (s->kind == SUB_STREAM) {
        rc = annal__index_stream_get(s->txn, &db->idx, s->name, s->name_len, sr);
        *found = rc == ANNAL_OK;
        if (rc == ANNAL_ENOTFOUND) rc = ANNAL_OK;
        if (rc != ANNAL_OK)
            rc = annal__fail(db, rc, "cannot read stream %s from the index", s->name);
    }
    annal__txn_reset(&db->idx, s->txn);
    return rc;
}

/* A subscription by query (DCB): $all only; served by query reads from the indexes,
 * unless the query matches every event. */
static annal_err sub_query(annal_sub *s, const annal_query *q) {
    if (s->kind != SUB_ALL)
        return annal__fail(s->db, ANNAL_EINVAL, "a query needs $all, not %s", s->name);
    annal_err rc = annal__query_compile(s->db, q, &s->q);
    if (rc == ANNAL_OK && !s->q->all) s->kind = SUB_QUERY;
    return rc;
}

annal_err annal_sub_open(annal_db *db, const annal_sub_opts *caller, annal_sub **out) {
    if (!db || !caller || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_sub_opts full; /* only the fields inside the caller's struct_size: see annal.h */
    opts_defaults(&full);
    if (!annal__opts_in(&full, sizeof full, caller,
                        offsetof(annal_sub_opts, stream) + sizeof caller->stream))
        return annal__fail(db, ANNAL_EINVAL, "subscription options not initialized");
    const annal_sub_opts *opts = &full;
    if (opts->start != ANNAL_SUB_START && opts->start != ANNAL_SUB_AFTER &&
        opts->start != ANNAL_SUB_END)
        return annal__fail(db, ANNAL_EINVAL, "unknown subscription start %d", opts->start);
    if (opts->start == ANNAL_SUB_AFTER && opts->from == UINT64_MAX)
        return annal__fail(db, ANNAL_EINVAL, "nothing comes after position %" PRIu64, opts->from);
    const char *name = opts->stream ? opts->stream : "$all";
    size_t len;
    if (!annal__name_ok(name, &len))
        return annal__fail(db, ANNAL_EINVAL, "invalid stream name for a subscription");
    annal_sub *s = calloc(1, sizeof *s);
    if (!s) return ANNAL_ENOMEM;
    s->db = db;
    annal_err rc = ANNAL_OK;
    if (strcmp(name, "$all") == 0) {
        s->kind = SUB_ALL;
    } else if (len > 4 && (strncmp(name, "$ce-", 4) == 0 || strncmp(name, "$et-", 4) == 0)) {
        s->kind = name[1] == 'c' ? SUB_CATEGORY : SUB_TYPE;
        name += 4;
        len -= 4;
    } else {
        s->kind = SUB_STREAM;
    }
    s->name = strndup(name, len);
    s->name_len = len;
    s->checkpoint_every =
        opts->checkpoint_every ? opts->checkpoint_every : DEFAULT_CHECKPOINT_EVERY;
    s->behind_threshold = opts->behind_threshold ? opts->behind_threshold : DEFAULT_BEHIND;
    if (!s->name) rc = ANNAL_ENOMEM;
    const annal_filter *f = opts->filter;
    if (rc == ANNAL_OK && f && s->kind == SUB_STREAM &&
        (f->type_prefix || f->type_regex || f->stream_prefix || f->stream_regex ||
         f->exclude_system))
        rc = annal__fail(db, ANNAL_EINVAL,
                         "a filter needs $all, a category or a type, not one stream (%s)", s->name);
    if (rc == ANNAL_OK && f) {
        s->exclude_system = f->exclude_system != 0;
        if (f->type_prefix && !(s->type_prefix = strdup(f->type_prefix))) rc = ANNAL_ENOMEM;
        if (f->stream_prefix && !(s->stream_prefix = strdup(f->stream_prefix))) rc = ANNAL_ENOMEM;
        if (rc == ANNAL_OK) rc = compile(db, &s->type_re, &s->has_type_re, f->type_regex, "type");
        if (rc == ANNAL_OK)
            rc = compile(db, &s->stream_re, &s->has_stream_re, f->stream_regex, "stream");
    }
    if (rc == ANNAL_OK && opts->query) rc = sub_query(s, opts->query);
    if (rc == ANNAL_OK) rc = annal__read_txn(db, &s->txn);
    if (rc == ANNAL_OK) annal__txn_reset(&db->idx, s->txn);
    if (rc == ANNAL_OK && opts->start == ANNAL_SUB_AFTER) {
        s->scanned = s->kind == SUB_STREAM ? 0 : opts->from + 1;
        s->next_rev = s->kind == SUB_STREAM ? opts->from + 1 : 0;
    } else if (rc == ANNAL_OK && opts->start == ANNAL_SUB_END) {
        uint64_t head;
        annal__stream_rec sr;
        int found;
        rc = look(s, &head, &sr, &found);
        s->scanned = head;
        s->next_rev = found ? sr.count : 0;
    }
    if (rc != ANNAL_OK) {
        annal_sub_close(s);
        return rc;
    }
    *out = s;
    return ANNAL_OK;
}

static int prefixed(const char *s, const char *prefix) {
    return !prefix || strncmp(s, prefix, strlen(prefix)) == 0;
}

static int wanted(const annal_sub *s, const annal_event *ev) {
    if (s->exclude_system && (ev->type[0] == '$' || ev->stream[0] == '$')) return 0;
    if (!prefixed(ev->type, s->type_prefix) || !prefixed(ev->stream, s->stream_prefix)) return 0;
    if (s->has_type_re && regexec(&s->type_re, ev->type, 0, NULL, 0) != 0) return 0;
    if (s->has_stream_re && regexec(&s->stream_re, ev->stream, 0, NULL, 0) != 0) return 0;
    return 1;
}

/* The place a checkpoint names: everything below it was delivered or passed over. */
static uint64_t checkpoint(const annal_sub *s) {
    return s->kind == SUB_STREAM ? s->next_rev : s->scanned;
}

static annal_err open_iter(annal_sub *s) {
    annal_db *db = s->db;
    switch (s->kind) {
    case SUB_ALL: return annal_read_all(db, s->scanned, 0, BATCH, &s->it);
    case SUB_CATEGORY: return annal_read_category(db, s->name, s->scanned, 0, BATCH, &s->it);
    case SUB_TYPE: return annal_read_type(db, s->name, s->scanned, 0, BATCH, &s->it);
    case SUB_QUERY: return annal__read_query(db, s->q, 1, s->scanned, 0, BATCH, &s->it);
    default: return annal_read_stream(db, s->name, s->next_rev, 0, BATCH, &s->it);
    }
}

/* The current iterator is done: what it covered is behind us. */
static void end_pass(annal_sub *s) {
    int complete = s->it_events < BATCH; /* else the limit ended it: the bound may be further */
    annal_iter_close(s->it);
    s->it = NULL;
    if (!complete) return;
    if (s->kind == SUB_STREAM && s->pass_count > s->next_rev) s->next_rev = s->pass_count;
    if (s->kind != SUB_STREAM && s->pass_bound > s->scanned) {
        /* A query's reads skip what does not match without showing it: count it as
         * passed over, so that checkpoints move over it, live too, as a filter's do. */
        if (s->kind == SUB_QUERY) s->passed += s->pass_bound - s->scanned;
        s->scanned = s->pass_bound;
    }
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Between passes: the committed head, and how many events (stream: revisions) the
 * subscription has still to read; sets the bounds of the next pass. */
static annal_err how_far(annal_sub *s, uint64_t *head, uint64_t *ahead) {
    annal__stream_rec sr;
    int found;
    annal_err rc = look(s, head, &sr, &found);
    if (rc != ANNAL_OK) return rc;
    if (s->kind != SUB_STREAM) {
        *ahead = *head > s->scanned ? *head - s->scanned : 0;
        s->pass_bound = *head;
        return ANNAL_OK;
    }
    if (found && (sr.flags & ANNAL__SR_TOMBSTONE))
        return annal__fail(s->db, ANNAL_EDELETED, "stream %s is deleted (tombstoned)", s->name);
    uint64_t count = found ? sr.count : 0;
    *ahead = count > s->next_rev ? count - s->next_rev : 0;
    /* Soft-deleted: what it held stays invisible; wait for the next append. */
    if (found && (sr.flags & ANNAL__SR_DELETED)) {
        s->next_rev = count;
        *ahead = 0;
    }
    s->pass_count = count;
    return ANNAL_OK;
}

static annal_err sub_next(annal_sub *s, int timeout_ms, annal_sub_item *item) {
    memset(item, 0, sizeof *item);
    annal_db *db = s->db;
    int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    for (;;) {
        if (__atomic_load_n(&s->cancel, __ATOMIC_SEQ_CST)) return ANNAL_ECANCELED;
        if (s->pending_caught_up) {
            s->pending_caught_up = 0;
            item->kind = ANNAL_SUB_CAUGHT_UP;
            item->position = checkpoint(s);
            return ANNAL_OK;
        }
        if (s->it) {
            const annal_event *ev;
            annal_err rc = annal_iter_next(s->it, &ev);
            if (rc == ANNAL_END) {
                end_pass(s);
                if (s->passed >= s->checkpoint_every) {
                    s->passed = 0;
                    item->kind = ANNAL_SUB_CHECKPOINT;
                    item->position = checkpoint(s);
                    return ANNAL_OK;
                }
                continue;
            }
            if (rc != ANNAL_OK) { /* the place is kept: a later call retries from it */
                annal_iter_close(s->it);
                s->it = NULL;
                return rc;
            }
            s->it_events++;
            if (s->kind == SUB_STREAM) {
                s->next_rev = ev->revision + 1;
            } else {
                s->scanned = ev->position + 1;
                if (!wanted(s, ev)) {
                    if (++s->passed < s->checkpoint_every) continue;
                    s->passed = 0;
                    item->kind = ANNAL_SUB_CHECKPOINT;
                    item->position = s->scanned;
                    return ANNAL_OK;
                }
            }
            s->passed = 0;
            item->kind = ANNAL_SUB_EVENT;
            item->event = ev;
            item->position = ev->position;
            return ANNAL_OK;
        }
        /* Between batches: is there more, and how far behind are we? */
        uint64_t head = 0, ahead = 0;
        annal_err rc = how_far(s, &head, &ahead);
        if (rc != ANNAL_OK) return rc;
        if (ahead > 0) {
            if (s->caught_up && ahead >= s->behind_threshold) {
                s->caught_up = 0;
                item->kind = ANNAL_SUB_FELL_BEHIND;
                item->position = checkpoint(s);
                return ANNAL_OK;
            }
            s->it_events = 0;
            rc = open_iter(s);
            if (rc == ANNAL_ENOTFOUND && s->kind == SUB_STREAM) {
                s->next_rev = s->pass_count; /* deleted meanwhile: nothing visible below */
                continue;
            }
            if (rc != ANNAL_OK) return rc;
            continue;
        }
        if (!s->caught_up) {
            /* A checkpoint first, so a consumer stopping at CAUGHT_UP has its place. */
            s->caught_up = 1;
            s->pending_caught_up = 1;
            s->passed = 0;
            item->kind = ANNAL_SUB_CHECKPOINT;
            item->position = checkpoint(s);
            return ANNAL_OK;
        }
        if (s->passed > 0) { /* live, idle, events filtered out since the last item */
            s->passed = 0;
            item->kind = ANNAL_SUB_CHECKPOINT;
            item->position = checkpoint(s);
            return ANNAL_OK;
        }
        int64_t left = deadline < 0 ? -1 : deadline - mono_ms();
        if (deadline >= 0 && left <= 0) return ANNAL_ETIMEDOUT;
        rc = annal__notify_wait(db, head, (int)(left > INT32_MAX ? INT32_MAX : left), &s->cancel);
        if (rc != ANNAL_OK) return rc;
    }
}

void annal_sub_cancel(annal_sub *s) {
    if (!s) return;
    __atomic_store_n(&s->cancel, 1, __ATOMIC_SEQ_CST);
    annal__notify_kick(s->db);
}

annal_err annal_sub_next_sized(annal_sub *s, int timeout_ms, annal_sub_item *item,
                               size_t item_size) {
    if (!s || !item) return ANNAL_EINVAL;
    annal_sub_item it;
    annal_err rc = sub_next(s, timeout_ms, &it);
    annal__out_copy(item, item_size, &it, sizeof it); /* never past the caller's size */
    return rc;
}
