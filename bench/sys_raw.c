/*
 * sys_raw.c -- the physical ceiling: one plain file, write() + fdatasync() per append.
 *
 * Records are length-prefixed (header below, then stream name, type, data, padded to 8
 * bytes). Expected revisions are checked in an in-memory hash map under one mutex.
 * Concurrent appenders share fdatasync calls (group commit: whoever finds no sync in
 * flight syncs everything written so far; the others wait for it), which is what any
 * log-structured store can at best do.
 *
 * Two flavours:
 *   raw          -- the file grows with every append (every fdatasync also has to
 *                   commit the new file size to the filesystem journal).
 *   raw-prealloc -- the file is pre-filled with zeros in 64 MiB chunks, so an append's
 *                   fdatasync only flushes data blocks (a record of length 0 ends it).
 * No checksums, no index, no event-id uniqueness: nothing but the bytes and the check.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RAW_HDR 56u
#define PREALLOC_CHUNK (64u << 20)

typedef struct raw_hdr {
    uint32_t rec_len; /* whole record incl. header and padding; 0 = end of log */
    uint16_t stream_len;
    uint16_t type_len;
    uint32_t data_len;
    uint32_t reserved;
    uint64_t revision;
    uint64_t position;
    int64_t timestamp_ns;
    uint8_t id[16];
} raw_hdr;
_Static_assert(sizeof(raw_hdr) == RAW_HDR, "header layout");

typedef struct map_ent {
    char *name; /* NULL: empty slot */
    uint64_t hash;
    int64_t rev;
} map_ent;

typedef struct raw_db {
    int fd;
    int prealloc;
    int bulk;
    char path[4096];
    char marker[4096];
    pthread_mutex_t mu; /* map, end, position, buf */
    map_ent *map;
    size_t map_cap, map_len;
    uint64_t end;       /* bytes written */
    uint64_t allocated; /* bytes pre-filled (prealloc) */
    uint64_t position;  /* next position */
    char *buf;
    size_t buf_cap;
    /* group commit */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t synced; /* bytes known durable */
    int syncing;
} raw_db;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static map_ent *map_find(raw_db *db, const char *name, size_t len, uint64_t h)
{
    size_t mask = db->map_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        map_ent *e = &db->map[i];
        if (!e->name || (e->hash == h && strncmp(e->name, name, len) == 0 && e->name[len] == '\0'))
            return e;
    }
}

static void map_grow(raw_db *db)
{
    map_ent *old = db->map;
    size_t oldcap = db->map_cap;
    db->map_cap = oldcap ? oldcap * 2 : 1024;
    db->map = xcalloc(db->map_cap, sizeof *db->map);
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].name) {
            map_ent *e = map_find(db, old[i].name, strlen(old[i].name), old[i].hash);
            *e = old[i];
        }
    }
    free(old);
}

static map_ent *map_get(raw_db *db, const char *name, size_t len, int create)
{
    uint64_t h = fnv1a(name, len);
    if (create && (db->map_len + 1) * 2 > db->map_cap)
        map_grow(db);
    map_ent *e = map_find(db, name, len, h);
    if (!e->name && create) {
        e->name = xmalloc(len + 1);
        memcpy(e->name, name, len);
        e->name[len] = '\0';
        e->hash = h;
        e->rev = -1;
        db->map_len++;
    }
    return e->name ? e : NULL;
}

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Pre-fill [allocated, want) with zeros, in whole chunks, and make it durable. */
static int prealloc_to(raw_db *db, uint64_t want)
{
    static char zeros[1 << 20];
    while (db->allocated < want) {
        for (uint64_t o = 0; o < PREALLOC_CHUNK; o += sizeof zeros)
            if (write_all(db->fd, zeros, sizeof zeros, db->allocated + o) != 0)
                return -1;
        db->allocated += PREALLOC_CHUNK;
        if (!db->bulk && fsync(db->fd) != 0)
            return -1;
    }
    return 0;
}

/* Scan an existing log to find its end, head position and stream revisions. */
static int raw_scan(raw_db *db)
{
    size_t cap = 1 << 20, have = 0, at = 0;
    char *b = xmalloc(cap);
    uint64_t off = 0;
    for (;;) {
        if (have - at < RAW_HDR || have - at < ((raw_hdr *)(b + at))->rec_len) {
            memmove(b, b + at, have - at);
            have -= at;
            at = 0;
            ssize_t r = pread(db->fd, b + have, cap - have, (off_t)(off + have));
            if (r < 0) {
                free(b);
                return -1;
            }
            if (r == 0)
                break;
            have += (size_t)r;
            continue;
        }
        raw_hdr h;
        memcpy(&h, b + at, RAW_HDR);
        if (h.rec_len == 0)
            break;
        map_ent *e = map_get(db, b + at + RAW_HDR, h.stream_len, 1);
        e->rev = (int64_t)h.revision;
        db->position = h.position + 1;
        at += h.rec_len;
        off += h.rec_len;
    }
    free(b);
    db->end = off;
    return 0;
}

static void *raw_open_common(const bench_open *o, int prealloc)
{
    raw_db *db = xcalloc(1, sizeof *db);
    db->prealloc = prealloc;
    db->bulk = o->bulk;
    snprintf(db->path, sizeof db->path, "%s/raw.log", o->dir);
    snprintf(db->marker, sizeof db->marker, "%s/complete", o->dir);
    if (o->fresh) {
        unlink(db->marker);
        unlink(db->path);
    }
    db->fd = open(db->path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (db->fd < 0) {
        fprintf(stderr, "raw: open %s: %s\n", db->path, strerror(errno));
        free(db);
        return NULL;
    }
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->sync_mu, NULL);
    pthread_cond_init(&db->sync_cv, NULL);
    map_grow(db);
    if (raw_scan(db) != 0) {
        fprintf(stderr, "raw: scan: %s\n", strerror(errno));
        return NULL;
    }
    if (prealloc) {
        off_t sz = lseek(db->fd, 0, SEEK_END);
        db->allocated = sz > 0 ? (uint64_t)sz : 0;
        if (prealloc_to(db, db->end + 1) != 0) {
            fprintf(stderr, "raw: prealloc: %s\n", strerror(errno));
            return NULL;
        }
    }
    if (fsync(db->fd) != 0)
        return NULL;
    db->synced = db->end;
    /* make the directory entry durable too, outside the timed part */
    int dfd = open(o->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return db;
}

static void *raw_open(const bench_open *o) { return raw_open_common(o, 0); }
static void *rawp_open(const bench_open *o) { return raw_open_common(o, 1); }

static void *raw_session_open(void *h) { return h; }
static void raw_session_close(void *h, void *s)
{
    (void)h;
    (void)s;
}

/* Wait until [0, upto) is durable, syncing ourselves if nobody else is. */
static int raw_sync_to(raw_db *db, uint64_t upto)
{
    int rc = 0;
    pthread_mutex_lock(&db->sync_mu);
    while (db->synced < upto) {
        if (db->syncing) {
            pthread_cond_wait(&db->sync_cv, &db->sync_mu);
            continue;
        }
        db->syncing = 1;
        pthread_mutex_unlock(&db->sync_mu);
        pthread_mutex_lock(&db->mu);
        uint64_t target = db->end;
        pthread_mutex_unlock(&db->mu);
        if (fdatasync(db->fd) != 0)
            rc = -1;
        pthread_mutex_lock(&db->sync_mu);
        db->syncing = 0;
        if (target > db->synced)
            db->synced = target;
        pthread_cond_broadcast(&db->sync_cv);
        if (rc)
            break;
    }
    pthread_mutex_unlock(&db->sync_mu);
    return rc;
}

static int raw_append(void *s, const char *stream, int64_t expected, const bench_event *ev,
                      size_t n)
{
    raw_db *db = s;
    size_t slen = strlen(stream);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;

    pthread_mutex_lock(&db->mu);
    map_ent *e = map_get(db, stream, slen, 0);
    int64_t cur = e ? e->rev : -1;
    if (cur != expected) {
        pthread_mutex_unlock(&db->mu);
        return BENCH_CONFLICT;
    }
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += (RAW_HDR + slen + strlen(ev[i].type) + ev[i].data_len + 7) & ~(size_t)7;
    if (need + 8 > db->buf_cap) {
        free(db->buf);
        db->buf_cap = (need + 8) * 2;
        db->buf = xmalloc(db->buf_cap);
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tlen = strlen(ev[i].type);
        size_t len = (RAW_HDR + slen + tlen + ev[i].data_len + 7) & ~(size_t)7;
        raw_hdr h = {
            .rec_len = (uint32_t)len,
            .stream_len = (uint16_t)slen,
            .type_len = (uint16_t)tlen,
            .data_len = ev[i].data_len,
            .revision = (uint64_t)(cur + 1 + (int64_t)i),
            .position = db->position + i,
            .timestamp_ns = now,
        };
        memcpy(h.id, ev[i].id, 16);
        char *p = db->buf + at;
        memcpy(p, &h, RAW_HDR);
        memcpy(p + RAW_HDR, stream, slen);
        memcpy(p + RAW_HDR + slen, ev[i].type, tlen);
        memcpy(p + RAW_HDR + slen + tlen, ev[i].data, ev[i].data_len);
        memset(p + RAW_HDR + slen + tlen + ev[i].data_len, 0,
               len - (RAW_HDR + slen + tlen + ev[i].data_len));
        at += len;
    }
    if (db->prealloc && prealloc_to(db, db->end + at + 8) != 0) {
        pthread_mutex_unlock(&db->mu);
        return BENCH_ERROR;
    }
    if (write_all(db->fd, db->buf, at, db->end) != 0) {
        pthread_mutex_unlock(&db->mu);
        fprintf(stderr, "raw: write: %s\n", strerror(errno));
        return BENCH_ERROR;
    }
    db->end += at;
    db->position += n;
    if (!e)
        e = map_get(db, stream, slen, 1);
    e->rev = cur + (int64_t)n;
    uint64_t mine = db->end;
    pthread_mutex_unlock(&db->mu);

    if (!db->bulk && raw_sync_to(db, mine) != 0) {
        fprintf(stderr, "raw: fdatasync: %s\n", strerror(errno));
        return BENCH_ERROR;
    }
    return BENCH_OK;
}

/* Sequential scan of the whole file with 1 MiB reads; every record (or only those of
 * `stream`) goes to the sink. */
static int raw_scan_read(raw_db *db, const char *stream, bench_sink *sink)
{
    int fd = open(db->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t slen = stream ? strlen(stream) : 0;
    size_t cap = 1 << 20, have = 0, at = 0;
    char *b = xmalloc(cap);
    int rc = 0;
    for (;;) {
        if (have - at < RAW_HDR || have - at < ((const raw_hdr *)(b + at))->rec_len) {
            memmove(b, b + at, have - at);
            have -= at;
            at = 0;
            ssize_t r = read(fd, b + have, cap - have);
            if (r < 0) {
                rc = -1;
                break;
            }
            if (r == 0)
                break;
            have += (size_t)r;
            continue;
        }
        const raw_hdr *h = (const raw_hdr *)(b + at);
        if (h->rec_len == 0)
            break;
        const char *name = b + at + RAW_HDR;
        if (!stream || (h->stream_len == slen && memcmp(name, stream, slen) == 0)) {
            sink_event(sink, name, h->stream_len, name + h->stream_len, h->type_len,
                       name + h->stream_len + h->type_len, h->data_len, h->id, h->revision,
                       h->position);
        }
        at += h->rec_len;
    }
    free(b);
    close(fd);
    return rc;
}

static int raw_read_stream(void *s, const char *stream, bench_sink *sink)
{
    return raw_scan_read(s, stream, sink);
}

static int raw_read_all(void *s, bench_sink *sink) { return raw_scan_read(s, NULL, sink); }

static void raw_close(void *h)
{
    raw_db *db = h;
    if (!db)
        return;
    fsync(db->fd);
    close(db->fd);
    for (size_t i = 0; i < db->map_cap; i++)
        free(db->map[i].name);
    free(db->map);
    free(db->buf);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->sync_mu);
    pthread_cond_destroy(&db->sync_cv);
    free(db);
}

static int raw_is_complete(void *h) { return file_exists(((raw_db *)h)->marker); }
static void raw_mark_complete(void *h) { touch_file(((raw_db *)h)->marker); }

const bench_sys bench_sys_raw = {
    .name = "raw",
    .open = raw_open,
    .session_open = raw_session_open,
    .session_close = raw_session_close,
    .append = raw_append,
    .read_stream = raw_read_stream,
    .read_all = raw_read_all,
    .close = raw_close,
    .is_complete = raw_is_complete,
    .mark_complete = raw_mark_complete,
};

const bench_sys bench_sys_raw_prealloc = {
    .name = "raw-prealloc",
    .open = rawp_open,
    .session_open = raw_session_open,
    .session_close = raw_session_close,
    .append = raw_append,
    .read_stream = raw_read_stream,
    .read_all = raw_read_all,
    .close = raw_close,
    .is_complete = raw_is_complete,
    .mark_complete = raw_mark_complete,
};
