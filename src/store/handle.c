/* The handle's ground floor, used by every other file of the store: option defaults,
 * per-thread error detail and log messages, name checks, read transactions and what a
 * handle may see (the committed head, the revisions a stream's metadata leaves
 * visible). It calls nothing else in store/. */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

#define DEF_SEGMENT    (256ull << 20)
#define DEF_MAX_EVENT  (32ull << 20)
#define DEF_MAX_BATCH  (64ull << 20)
#define DEF_MAX_EVENTS 100000u
#define DEF_MAP        (1ull << 40)

static void opts_defaults(annal_db_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->segment_bytes = DEF_SEGMENT;
    o->max_event_bytes = DEF_MAX_EVENT;
    o->max_batch_bytes = DEF_MAX_BATCH;
    o->max_batch_events = DEF_MAX_EVENTS;
    o->index_map_bytes = DEF_MAP;
    o->id_cache_events = ANNAL__IDS_MEM_DEFAULT;
}

void annal_db_opts_init_sized(annal_db_opts *o, size_t size) {
    annal_db_opts d;
    opts_defaults(&d);
    annal__opts_out(o, size, &d, sizeof d);
}

annal_err annal__db_opts_in(const annal_db_opts *in, annal_db_opts *out) {
    opts_defaults(out);
    if (!in) return ANNAL_OK;
    return annal__opts_in(out, sizeof *out, in, offsetof(annal_db_opts, flags) + sizeof in->flags)
               ? ANNAL_OK
               : ANNAL_EINVAL;
}

static annal__errslot *errslot(annal_db *db, int create) {
    pthread_t self = pthread_self();
    for (annal__errslot *s = db->errs; s; s = s->next)
        if (pthread_equal(s->thread, self)) return s;
    if (!create) return NULL;
    annal__errslot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->thread = self;
    s->next = db->errs;
    db->errs = s;
    return s;
}

annal_err annal__fail(annal_db *db, annal_err code, const char *fmt, ...) {
    pthread_mutex_lock(&db->errmu);
    annal__errslot *s = errslot(db, 1);
    if (s) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->msg, sizeof s->msg, fmt, ap);
        va_end(ap);
        s->code = code;
    }
    pthread_mutex_unlock(&db->errmu);
    return code;
}

annal_err annal__fail_index(annal_db *db, int mrc) {
    return annal__fail(db, annal__index_err(mrc), "index: %s", mdb_strerror(mrc));
}

void annal__log_failure(annal_db *db, const char *generic) {
    if (!db->opts.log) return;
    pthread_mutex_lock(&db->errmu);
    annal__errslot *s = errslot(db, 0);
    db->opts.log(db->opts.log_ctx, ANNAL_LOG_ERROR, s && s->msg[0] ? s->msg : generic);
    pthread_mutex_unlock(&db->errmu);
}

void annal__errs_free(annal_db *db) {
    while (db->errs) {
        annal__errslot *s = db->errs;
        db->errs = s->next;
        free(s);
    }
}

const char *annal_db_errmsg(annal_db *db) {
    if (!db) return "no handle";
    pthread_mutex_lock(&db->errmu);
    annal__errslot *s = errslot(db, 0);
    const char *m = s && s->msg[0] ? s->msg : "no error";
    pthread_mutex_unlock(&db->errmu);
    return m; /* the slot belongs to this thread and lives until close */
}

void annal__log_msg(annal_db *db, annal_log_level lvl, const char *fmt, ...) {
    if (!db->opts.log) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    db->opts.log(db->opts.log_ctx, lvl, buf);
}

int annal__name_ok(const char *s, size_t *len) {
    if (!s) return 0;
    size_t n = strnlen(s, ANNAL_MAX_NAME + 1);
    if (n == 0 || n > ANNAL_MAX_NAME || !annal__utf8_valid(s, n)) return 0;
    *len = n;
    return 1;
}

/* A user stream a caller may write to: short enough for the system streams derived
 * from its name (annal.h, ANNAL_MAX_STREAM_NAME). */
int annal__stream_name_ok(const char *s, size_t *len) {
    size_t n;
    if (!annal__name_ok(s, &n) || s[0] == '$' || n > ANNAL_MAX_STREAM_NAME) return 0;
    *len = n;
    return 1;
}

annal_err annal__read_txn(annal_db *db, MDB_txn **t) {
    int rc = annal__txn_begin(&db->idx, MDB_RDONLY, t);
    if (rc) return annal__fail_index(db, rc);
    return ANNAL_OK;
}

uint64_t annal__visible(annal_db *db, MDB_txn *t) {
    if (!db->readonly) return __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE);
    annal__index_head h;
    return annal__index_head_get(t, &db->idx, &h) == ANNAL_OK ? h.next_pos : 0;
}

uint64_t annal__first_visible(const annal__stream_rec *sr) {
    if (sr->flags & ANNAL__SR_TOMBSTONE) return sr->count ? sr->count - 1 : 0;
    uint64_t first = sr->tb == ANNAL__UNSET ? 0 : sr->tb;
    if (sr->max_count != ANNAL__UNSET && sr->count > sr->max_count &&
        sr->count - sr->max_count > first)
        first = sr->count - sr->max_count;
    return first;
}

int annal__event_visible(const annal__stream_rec *sr, uint64_t rev, int64_t ts, int64_t now_ns) {
    if (rev < annal__first_visible(sr)) return 0;
    if (sr->flags & ANNAL__SR_DELETED) return 0;
    if (sr->max_age != ANNAL__UNSET && !(sr->flags & ANNAL__SR_TOMBSTONE)) {
        int64_t age = sr->max_age > (uint64_t)(INT64_MAX / 1000000000)
                          ? INT64_MAX
                          : (int64_t)sr->max_age * 1000000000;
        if (now_ns - ts > age) return 0;
    }
    return 1;
}
