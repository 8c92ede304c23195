/*
 * sys_annal.c -- annal through its public API only (include/annal.h).
 * Appends: annal_append with the exact expected revision (ANNAL_EXPECT_NO_STREAM for a
 * stream's first event). One handle shared by all threads. Reads: annal_read_stream /
 * annal_read_all forward from the start, no limit.
 */
#include "bench.h"

#include <annal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct an_db {
    annal_db *db;
    char dir[4096];
    char marker[4096];
    int auto_id;
} an_db;

static void an_log(void *ctx, annal_log_level level, const char *msg)
{
    (void)ctx;
    if (level <= ANNAL_LOG_WARN)
        fprintf(stderr, "annal[%s]: %s\n", level == ANNAL_LOG_ERROR ? "error" : "warn", msg);
}

static void *an_open(const bench_open *o)
{
    an_db *h = xcalloc(1, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s/store", o->dir);
    snprintf(h->marker, sizeof h->marker, "%s/complete", o->dir);
    h->auto_id = o->auto_id;
    if (o->fresh) {
        unlink(h->marker);
        rm_rf(h->dir);
    }
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE | (o->bulk ? ANNAL_OPEN_NOSYNC : 0);
    opts.log = an_log;
    annal_err e = annal_db_open(h->dir, &opts, &h->db);
    if (e != ANNAL_OK) {
        fprintf(stderr, "annal: open %s: %s (%s)\n", h->dir, annal_errname(e),
                h->db ? annal_db_errmsg(h->db) : "");
        free(h);
        return NULL;
    }
    return h;
}

static void *an_session_open(void *h) { return h; }
static void an_session_close(void *h, void *s)
{
    (void)h;
    (void)s;
}

static int an_append(void *s, const char *stream, int64_t expected, const bench_event *ev,
                     size_t n)
{
    an_db *h = s;
    enum { STACK = 64 };
    annal_event_data stack[STACK];
    annal_event_data *ed = n <= STACK ? stack : xmalloc(n * sizeof *ed);
    for (size_t i = 0; i < n; i++) {
        if (h->auto_id)
            memset(ed[i].id.bytes, 0, 16);
        else
            memcpy(ed[i].id.bytes, ev[i].id, 16);
        ed[i].type = ev[i].type;
        ed[i].data = ev[i].data;
        ed[i].data_len = ev[i].data_len;
        ed[i].metadata = NULL;
        ed[i].metadata_len = 0;
    }
    annal_append_result res;
    annal_err e = annal_append(h->db, stream, expected < 0 ? ANNAL_EXPECT_NO_STREAM : expected,
                               ed, n, &res);
    if (ed != stack)
        free(ed);
    if (e == ANNAL_OK)
        return res.idempotent ? BENCH_ERROR : BENCH_OK;
    if (e == ANNAL_ECONFLICT)
        return BENCH_CONFLICT;
    fprintf(stderr, "annal: append %s: %s (%s)\n", stream, annal_errname(e),
            annal_db_errmsg(h->db));
    return BENCH_ERROR;
}

static int an_drain(an_db *h, annal_iter *it, bench_sink *sink)
{
    const annal_event *ev;
    annal_err e;
    while ((e = annal_iter_next(it, &ev)) == ANNAL_OK)
        sink_event(sink, ev->stream, ev->stream_len, ev->type, ev->type_len, ev->data,
                   ev->data_len, ev->id.bytes, ev->revision, ev->position);
    annal_iter_close(it);
    if (e != ANNAL_END) {
        fprintf(stderr, "annal: iter_next: %s (%s)\n", annal_errname(e), annal_db_errmsg(h->db));
        return -1;
    }
    return 0;
}

static int an_read_stream(void *s, const char *stream, bench_sink *sink)
{
    an_db *h = s;
    annal_iter *it = NULL;
    annal_err e = annal_read_stream(h->db, stream, 0, 0, 0, &it);
    if (e != ANNAL_OK) {
        fprintf(stderr, "annal: read_stream: %s (%s)\n", annal_errname(e), annal_db_errmsg(h->db));
        return -1;
    }
    return an_drain(h, it, sink);
}

static int an_read_all(void *s, bench_sink *sink)
{
    an_db *h = s;
    annal_iter *it = NULL;
    annal_err e = annal_read_all(h->db, 0, 0, 0, &it);
    if (e != ANNAL_OK) {
        fprintf(stderr, "annal: read_all: %s (%s)\n", annal_errname(e), annal_db_errmsg(h->db));
        return -1;
    }
    return an_drain(h, it, sink);
}

static void an_close(void *p)
{
    an_db *h = p;
    if (!h)
        return;
    annal_db_close(h->db);
    free(h);
}

static int an_is_complete(void *p) { return file_exists(((an_db *)p)->marker); }
static void an_mark_complete(void *p) { touch_file(((an_db *)p)->marker); }

const bench_sys bench_sys_annal = {
    .name = "annal",
    .open = an_open,
    .session_open = an_session_open,
    .session_close = an_session_close,
    .append = an_append,
    .read_stream = an_read_stream,
    .read_all = an_read_all,
    .close = an_close,
    .is_complete = an_is_complete,
    .mark_complete = an_mark_complete,
};
