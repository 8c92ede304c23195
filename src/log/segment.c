/* Segment files: creation, growth, mapping, discovery, and a cursor that walks records
 * across segment boundaries. The writer is the only one that creates or grows files;
 * readers (possibly in another process) open and map what they find. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "log/segment.h"

#define GROW_CHUNK (8u << 20) /* preallocate in steps of this many bytes */

/* Reserve [from, to) of fd and write zeros over it, durably. Zeros written now make
 * the extents "written", so the fdatasync of each later append has no metadata to
 * commit (fallocate alone leaves unwritten extents whose conversion costs a journal
 * commit on every flush). ENOSPC surfaces here, before any event is at stake. */
static int prealloc(const annal__io *io, int fd, uint64_t from, uint64_t to) {
    static const uint8_t zeros[1 << 16];
    int r = io->alloc(io->ctx, fd, from, to - from);
    for (uint64_t off = from; r == 0 && off < to; off += sizeof zeros)
        r = annal__io_write_all(io, fd, zeros,
                                (size_t)(to - off < sizeof zeros ? to - off : sizeof zeros), off);
    return r == 0 ? io->sync(io->ctx, fd) : r;
}

void annal__seg_path(const annal__log *log, uint64_t no, uint32_t gen, int tmp, char *out,
                     size_t len) {
    if (gen == 0)
        snprintf(out, len, "%s/%016" PRIx64 ".seg%s", log->dir, no, tmp ? ".tmp" : "");
    else
        snprintf(out, len, "%s/%016" PRIx64 ".%08" PRIx32 ".seg%s", log->dir, no, gen,
                 tmp ? ".tmp" : "");
}

static void seg_path(const annal__log *log, uint64_t no, char *out, size_t len) {
    annal__seg_path(log, no, 0, 0, out, len);
}

static void seg_free(annal__log *log, annal__seg *s) {
    while (s) {
        annal__seg *older = s->older;
        if (s->map) log->io->unmap(log->io->ctx, s->map, s->cap);
        if (s->fd >= 0) log->io->close(log->io->ctx, s->fd);
        free(s);
        s = older;
    }
}

/* A sealed segment never grows: its size is final, and its mapping outlives the file
 * descriptor, so let the descriptor go. A store of many segments then holds one
 * descriptor (the last segment's) instead of one per segment. Only for a segment not yet
 * shared with other threads. */
static void seal(annal__log *log, annal__seg *s) {
    uint64_t size = 0;
    if (s->fd < 0 || log->io->size(log->io->ctx, s->fd, &size) < 0) return;
    s->size = size < s->cap ? size : s->cap;
    log->io->close(log->io->ctx, s->fd);
    s->fd = -1;
}

/* Open segment file no, generation gen, and check its header. ANNAL_ENOTFOUND if there
 * is no file. */
static annal_err seg_load_gen(annal__log *log, uint64_t no, uint32_t gen, int tmp, annal__seg **out,
                              char *detail, size_t dlen) {
    char path[4096];
    annal__seg_path(log, no, gen, tmp, path, sizeof path);
    int fd = log->io->open(log->io->ctx, path, log->readonly ? O_RDONLY : O_RDWR, 0);
    if (fd < 0) {
        if (fd == -ENOENT) return ANNAL_ENOTFOUND;
        snprintf(detail, dlen, "cannot open %s: %s", path, strerror(-fd));
        return fd == -EACCES || fd == -EPERM ? ANNAL_EPERM : ANNAL_EIO;
    }
    uint8_t hb[ANNAL__SEG_HDR];
    annal__seg_hdr h;
    uint64_t size = 0;
    int r = log->io->size(log->io->ctx, fd, &size);
    annal_err rc = ANNAL_ECORRUPT;
    if (r < 0) {
        rc = ANNAL_EIO;
        snprintf(detail, dlen, "cannot stat %s: %s", path, strerror(-r));
        goto fail;
    }
    if (size < ANNAL__SEG_HDR || annal__io_read_all(log->io, fd, hb, sizeof hb, 0) < 0 ||
        (rc = annal__seg_hdr_decode(hb, sizeof hb, &h)) != ANNAL_OK) {
        snprintf(detail, dlen, "segment %s: bad header", path);
        goto fail;
    }
    if (h.segno != no || h.gen != gen) {
        rc = ANNAL_ECORRUPT;
        snprintf(detail, dlen, "segment %s: header says segment %" PRIu64 " generation %" PRIu32,
                 path, h.segno, h.gen);
        goto fail;
    }
    annal__seg *s = calloc(1, sizeof *s);
    if (!s) {
        rc = ANNAL_ENOMEM;
        goto fail;
    }
    s->no = no;
    s->gen = gen;
    s->first_pos = h.first_pos;
    s->cap = h.capacity;
    s->fd = fd;
    s->size = size;
    s->map = log->io->map(log->io->ctx, fd, h.capacity);
    if (!s->map) {
        free(s);
        rc = ANNAL_ENOMEM;
        snprintf(detail, dlen, "cannot map %s", path);
        goto fail;
    }
    *out = s;
    return ANNAL_OK;
fail:
    log->io->close(log->io->ctx, fd);
    return rc;
}

/* Parse a name of DIR/log: "<16 hex>.seg" or "<16 hex>.<8 hex>.seg", either maybe with
 * ".tmp" after it. 1 if it is one. */
static int seg_name(const char *nm, annal__seg_file *f) {
    size_t nl = strlen(nm), base;
    char *end;
    f->tmp = nl > 4 && strcmp(nm + nl - 4, ".tmp") == 0;
    if (f->tmp) nl -= 4;
    if (nl == 20)
        base = 16;
    else if (nl == 29 && nm[16] == '.')
        base = 25;
    else
        return 0;
    if (strncmp(nm + base, ".seg", 4) != 0) return 0;
    f->no = strtoull(nm, &end, 16);
    if (end != nm + 16) return 0;
    f->gen = 0;
    if (base == 25) {
        unsigned long g = strtoul(nm + 17, &end, 16);
        if (end != nm + 25 || g == 0 || g > UINT32_MAX) return 0;
        f->gen = (uint32_t)g;
    }
    return 1;
}

static int cmp_file(const void *a, const void *b) {
    const annal__seg_file *x = a, *y = b;
    if (x->no != y->no) return x->no < y->no ? -1 : 1;
    if (x->tmp != y->tmp) return x->tmp - y->tmp;
    return x->gen < y->gen ? -1 : x->gen > y->gen;
}

int annal__seg_list(const char *dir, annal__seg_file **out, size_t *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return -errno;
    annal__seg_file *v = NULL, f;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    int r = 0;
    while ((e = readdir(d)) != NULL) {
        if (!seg_name(e->d_name, &f)) continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 64;
            annal__seg_file *p = realloc(v, cap * sizeof *p);
            if (!p) {
                r = -ENOMEM;
                break;
            }
            v = p;
        }
        v[cnt++] = f;
    }
    closedir(d);
    if (r < 0) {
        free(v);
        return r;
    }
    if (cnt) qsort(v, cnt, sizeof *v, cmp_file);
    *out = v;
    *n = cnt;
    return 0;
}

/* The newest generation of segment no on disk (0 if only the plain name exists). */
static uint32_t newest_gen(annal__log *log, uint64_t no, int *later) {
    annal__seg_file *v;
    size_t n;
    uint32_t best = 0;
    if (annal__seg_list(log->dir, &v, &n) < 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].no == no && !v[i].tmp && v[i].gen > best) best = v[i].gen;
        if (later && v[i].no > no && !v[i].tmp) *later = 1; /* no is sealed */
    }
    free(v);
    return best;
}

static annal_err seg_load(annal__log *log, uint64_t no, annal__seg **out, char *detail,
                          size_t dlen) {
    int later = 0;
    uint32_t gen = newest_gen(log, no, &later);
    annal_err rc = seg_load_gen(log, no, gen, 0, out, detail, dlen);
    if (rc == ANNAL_ENOTFOUND && gen > 0) rc = seg_load_gen(log, no, 0, 0, out, detail, dlen);
    if (rc == ANNAL_OK && later) seal(log, *out);
    return rc;
}

/* Append s (number base + nsegs) to the table; caller holds mu or is single-threaded. */
static int seg_push(annal__log *log, annal__seg *s) {
    if (log->nsegs == log->capsegs) {
        size_t n = log->capsegs ? log->capsegs * 2 : 16;
        annal__seg **p = realloc(log->segs, n * sizeof *p);
        if (!p) return -ENOMEM;
        log->segs = p;
        log->capsegs = n;
    }
    if (log->nsegs == 0) log->base = s->no;
    log->segs[log->nsegs++] = s;
    return 0;
}

annal_err annal__log_open(annal__log *log, const annal__io *io, const char *dir, int readonly,
                          int create, char *detail, size_t dlen) {
    memset(log, 0, sizeof *log);
    log->io = io;
    log->readonly = readonly;
    pthread_mutex_init(&log->mu, NULL);
    pthread_mutex_init(&log->grow_mu, NULL);
    pthread_mutex_init(&log->gmu, NULL);
    pthread_cond_init(&log->gcv, NULL);
    size_t n = strlen(dir) + 5;
    log->dir = malloc(n);
    if (!log->dir) return ANNAL_ENOMEM;
    snprintf(log->dir, n, "%s/log", dir);
    if (create && mkdir(log->dir, 0755) == 0) io->sync_dir(io->ctx, dir);

    annal__seg_file *files;
    size_t nfiles;
    int lr = annal__seg_list(log->dir, &files, &nfiles);
    if (lr < 0) {
        snprintf(detail, dlen, "cannot open %s: %s", log->dir, strerror(-lr));
        return lr == -ENOENT                   ? ANNAL_ENOTFOUND
               : lr == -ENOMEM                 ? ANNAL_ENOMEM
               : lr == -EACCES || lr == -EPERM ? ANNAL_EPERM
                                               : ANNAL_EIO;
    }
    /* One entry per number: its newest generation (the list is sorted, tmp names last). */
    size_t cnt = 0;
    for (size_t i = 0; i < nfiles; i++) {
        if (files[i].tmp) continue;
        if (cnt && files[cnt - 1].no == files[i].no)
            files[cnt - 1] = files[i];
        else
            files[cnt++] = files[i];
    }
    annal_err rc = ANNAL_OK;
    for (size_t i = 0; i < cnt; i++) {
        if (i > 0 && files[i].no != files[i - 1].no + 1) {
            rc = ANNAL_ECORRUPT;
            snprintf(detail, dlen, "segment %016" PRIx64 ".seg is missing", files[i - 1].no + 1);
            goto done;
        }
        annal__seg *s = NULL;
        rc = seg_load_gen(log, files[i].no, files[i].gen, 0, &s, detail, dlen);
        /* Gone since the listing: a compaction (of another process) put a newer
         * generation in its place and deleted it. Open the newest there is now. */
        for (int tries = 0; rc == ANNAL_ENOTFOUND && tries < 8; tries++)
            rc = seg_load_gen(log, files[i].no, newest_gen(log, files[i].no, NULL), 0, &s, detail,
                              dlen);
        if (rc == ANNAL_ECORRUPT && i == cnt - 1 && !readonly) {
            /* A torn header can only come from a crash while the segment was being
             * created, before anything in it was acknowledged. */
            char path[4096];
            annal__seg_path(log, files[i].no, files[i].gen, 0, path, sizeof path);
            io->unlink(io->ctx, path);
            io->sync_dir(io->ctx, log->dir);
            rc = ANNAL_OK;
            break;
        }
        if (rc == ANNAL_ECORRUPT && i == cnt - 1 && readonly) {
            rc = ANNAL_OK; /* being created by the writer right now, or torn: not ours */
            break;
        }
        if (rc != ANNAL_OK) goto done;
        if (seg_push(log, s) < 0) {
            seg_free(log, s);
            rc = ANNAL_ENOMEM;
            goto done;
        }
        /* The one before is sealed now that a whole segment follows it (a torn last
         * one, removed above, leaves the one before it open for the writer). */
        if (log->nsegs > 1) seal(log, log->segs[log->nsegs - 2]);
    }
done:
    free(files);
    return rc;
}

void annal__log_close(annal__log *log) {
    annal__log_stop_grower(log);
    for (size_t i = 0; i < log->nsegs; i++) seg_free(log, log->segs[i]);
    free(log->segs);
    free(log->dir);
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->grow_mu);
    pthread_mutex_destroy(&log->gmu);
    pthread_cond_destroy(&log->gcv);
    memset(log, 0, sizeof *log);
}

annal__seg *annal__log_seg(annal__log *log, uint64_t no) {
    annal__seg *s = NULL;
    pthread_mutex_lock(&log->mu);
    if (log->nsegs && no >= log->base && no < log->base + log->nsegs) {
        s = log->segs[no - log->base];
    } else if (log->readonly && (log->nsegs == 0 || no >= log->base + log->nsegs)) {
        /* Another process may have created it (and others before it) since we looked:
         * open them in order so the table stays dense. */
        char detail[256];
        uint64_t next = log->nsegs ? log->base + log->nsegs : no;
        for (; next <= no; next++) {
            s = NULL;
            if (seg_load(log, next, &s, detail, sizeof detail) != ANNAL_OK) break;
            if (seg_push(log, s) < 0) {
                seg_free(log, s);
                s = NULL;
                break;
            }
        }
        if (next <= no) s = NULL;
    }
    pthread_mutex_unlock(&log->mu);
    return s;
}

annal_err annal__log_install(annal__log *log, uint64_t no, uint32_t gen, int tmp) {
    char detail[256];
    annal__seg *s = NULL;
    annal_err rc = seg_load_gen(log, no, gen, tmp, &s, detail, sizeof detail);
    if (rc != ANNAL_OK) return rc;
    seal(log, s); /* a compacted generation: only sealed segments are compacted */
    pthread_mutex_lock(&log->mu);
    if (log->nsegs && no >= log->base && no < log->base + log->nsegs &&
        log->segs[no - log->base]->gen < gen) {
        s->older = log->segs[no - log->base];
        log->segs[no - log->base] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&log->mu);
    seg_free(log, s); /* already current (another thread installed it), or unknown */
    return ANNAL_OK;
}

annal__seg *annal__log_seg_at(annal__log *log, uint64_t loc) {
    uint64_t no = ANNAL__LOC_SEG(loc);
    uint32_t g8 = ANNAL__LOC_GEN(loc);
    for (int attempt = 0; attempt < 2; attempt++) {
        annal__seg *cur = annal__log_seg(log, no), *s = NULL;
        if (!cur) return NULL;
        pthread_mutex_lock(&log->mu);
        for (s = log->segs[no - log->base]; s && (s->gen & 0xffu) != g8; s = s->older) {}
        uint32_t newer = cur->gen + ((g8 - cur->gen) & 0xffu); /* the only candidate */
        pthread_mutex_unlock(&log->mu);
        if (s || attempt) return s;
        /* Compacted by the writer since: its new file (or, for a moment, its tmp name;
         * renamed between the two tries, it is under the new name again). */
        if (annal__log_install(log, no, newer, 0) != ANNAL_OK &&
            annal__log_install(log, no, newer, 1) != ANNAL_OK &&
            annal__log_install(log, no, newer, 0) != ANNAL_OK)
            return NULL;
    }
    return NULL;
}

annal__seg *annal__log_seg_for(annal__log *log, uint64_t pos) {
    pthread_mutex_lock(&log->mu);
    size_t lo = 0, hi = log->nsegs; /* lo: the first segment starting above pos */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (log->segs[mid]->first_pos <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    annal__seg *s = lo ? log->segs[lo - 1] : NULL;
    int last = lo == log->nsegs;
    pthread_mutex_unlock(&log->mu);
    /* A reader in another process may not know the writer's newest segments yet. */
    for (annal__seg *n; s && last && log->readonly; s = n)
        if (!(n = annal__log_seg(log, s->no + 1)) || n->first_pos > pos) break;
    return s;
}

annal__seg *annal__log_last(annal__log *log) {
    pthread_mutex_lock(&log->mu);
    annal__seg *s = log->nsegs ? log->segs[log->nsegs - 1] : NULL;
    pthread_mutex_unlock(&log->mu);
    return s;
}

int annal__log_add(annal__log *log, uint64_t no, uint64_t first_pos, uint64_t cap,
                   annal__seg **out) {
    const annal__io *io = log->io;
    char path[4096];
    seg_path(log, no, path, sizeof path);
    int fd = io->open(io->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fd;
    annal__seg_hdr h = {ANNAL__FORMAT, no, first_pos, cap, annal__now_ns(), 0};
    uint8_t hb[ANNAL__SEG_HDR];
    annal__seg_hdr_encode(&h, hb);
    uint64_t first = cap < GROW_CHUNK ? cap : GROW_CHUNK;
    int r = prealloc(io, fd, 0, first);
    if (r == 0) r = annal__io_write_all(io, fd, hb, sizeof hb, 0);
    if (r == 0) r = io->sync(io->ctx, fd);
    if (r == 0) r = io->sync_dir(io->ctx, log->dir);
    annal__seg *s = NULL;
    if (r == 0) {
        s = calloc(1, sizeof *s);
        if (!s) r = -ENOMEM;
    }
    if (r == 0) {
        s->no = no;
        s->first_pos = first_pos;
        s->cap = cap;
        s->fd = fd;
        s->size = first;
        s->map = io->map(io->ctx, fd, cap);
        if (!s->map) r = -ENOMEM;
    }
    if (r == 0) {
        pthread_mutex_lock(&log->mu);
        r = seg_push(log, s);
        pthread_mutex_unlock(&log->mu);
    }
    if (r < 0) {
        if (s) {
            if (s->map) io->unmap(io->ctx, s->map, cap);
            free(s);
        }
        io->close(io->ctx, fd);
        io->unlink(io->ctx, path); /* nothing in it was ever acknowledged */
        return r;
    }
    *out = s;
    return 0;
}

/* Raise seg->size to at least v (readers, the grower and the writer all move it). */
static void raise_size(annal__seg *seg, uint64_t v) {
    uint64_t cur = __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE);
    while (v > cur && !__atomic_compare_exchange_n(&seg->size, &cur, v, 0, __ATOMIC_ACQ_REL,
                                                   __ATOMIC_ACQUIRE)) {}
}

/* Extend seg to at least end, by step bytes or more: zeros from the end of what exists
 * or was claimed for a write. */
static int seg_extend(annal__log *log, annal__seg *seg, uint64_t end, uint64_t step) {
    if (end <= __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE)) return 0;
    pthread_mutex_lock(&log->grow_mu); /* the writer and the grower */
    uint64_t size = __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE);
    if (size < seg->claim) size = seg->claim;
    uint64_t want = size + step;
    if (want < end) want = end;
    if (want > seg->cap) want = seg->cap;
    int r = end <= size ? 0 : end > want ? -EFBIG : prealloc(log->io, seg->fd, size, want);
    if (r == 0 && end > size) raise_size(seg, want);
    pthread_mutex_unlock(&log->grow_mu);
    return r;
}

int annal__seg_reserve(annal__log *log, annal__seg *seg, uint64_t end) {
    return seg_extend(log, seg, end, GROW_CHUNK);
}

#define SPACE_MARGIN (8u << 20) /* left free for the filesystem's own blocks and the index */

int annal__seg_claim(annal__log *log, annal__seg *seg, uint64_t end) {
    if (end > seg->cap) return -EFBIG;
    uint64_t size = __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE), avail = 0;
    if (end <= size) return 0;
    int r = log->io->space(log->io->ctx, seg->fd, &avail);
    if (r < 0) return r;
    if (avail < end - size + SPACE_MARGIN) return -ENOSPC;
    pthread_mutex_lock(&log->grow_mu); /* the grower may be zeroing: wait for its step */
    if (end > seg->claim) seg->claim = end;
    pthread_mutex_unlock(&log->grow_mu);
    return 0;
}

void annal__seg_wrote(annal__seg *seg, uint64_t end) { raise_size(seg, end); }

#define GROW_STEP  (1u << 20) /* the grower extends by this much at a time */
#define GROW_AHEAD (4u << 20) /* and keeps this far ahead of the writer */

static void *grower_main(void *arg) {
    annal__log *log = arg;
    pthread_mutex_lock(&log->gmu);
    while (!log->grow_stop) {
        annal__seg *seg = log->grow_seg;
        uint64_t to = log->grow_to;
        if (!seg || to <= __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE)) {
            pthread_cond_wait(&log->gcv, &log->gmu);
            continue;
        }
        pthread_mutex_unlock(&log->gmu);
        /* Small steps, each flushed, so an append's fdatasync (the same file) never
         * waits behind many megabytes of zeros. */
        uint64_t size = __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE);
        int r = seg_extend(log, seg, size + 1, GROW_STEP);
        pthread_mutex_lock(&log->gmu);
        if (r < 0 && log->grow_seg == seg) log->grow_seg = NULL; /* the writer will see it */
    }
    pthread_mutex_unlock(&log->gmu);
    return NULL;
}

int annal__log_start_grower(annal__log *log) {
    if (log->has_grower) return 0;
    log->grow_stop = 0;
    int r = pthread_create(&log->grower, NULL, grower_main, log);
    if (r) return -r;
    log->has_grower = 1;
    return 0;
}

void annal__log_grow_hint(annal__log *log, annal__seg *seg, uint64_t end) {
    if (!log->has_grower) return;
    end = end + GROW_AHEAD < seg->cap ? end + GROW_AHEAD : seg->cap;
    if (end <= __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&log->gmu);
    log->grow_seg = seg;
    log->grow_to = end;
    pthread_cond_signal(&log->gcv);
    pthread_mutex_unlock(&log->gmu);
}

void annal__log_stop_grower(annal__log *log) {
    if (!log->has_grower) return;
    pthread_mutex_lock(&log->gmu);
    log->grow_stop = 1;
    pthread_cond_signal(&log->gcv);
    pthread_mutex_unlock(&log->gmu);
    pthread_join(log->grower, NULL);
    log->has_grower = 0;
}

annal_err annal__seg_readable(annal__log *log, annal__seg *seg, uint64_t end) {
    if (end > seg->cap) return ANNAL_ECORRUPT;
    if (end <= __atomic_load_n(&seg->size, __ATOMIC_ACQUIRE)) return ANNAL_OK;
    if (seg->fd < 0) return ANNAL_ECORRUPT; /* sealed: its size is final */
    uint64_t size = 0;
    if (log->io->size(log->io->ctx, seg->fd, &size) < 0) return ANNAL_EIO;
    if (size > seg->cap) size = seg->cap;
    raise_size(seg, size);
    return end <= size ? ANNAL_OK : ANNAL_ECORRUPT;
}

/* Decode the record at off of seg, touching only bytes known to exist. */
static annal_err read_rec(annal__log *log, annal__seg *seg, uint64_t off, annal_event *ev,
                          annal__rec_info *info, int check) {
    if (off + 8 > seg->cap) return ANNAL_END;
    annal_err rc = annal__seg_readable(log, seg, off + 8);
    if (rc == ANNAL_ECORRUPT) return ANNAL_END; /* past the end of the file: no record */
    if (rc != ANNAL_OK) return rc;
    uint32_t len = annal__get32(seg->map + off + 4);
    if (len == 0 && annal__get32(seg->map + off) == 0) return ANNAL_END;
    if (len < ANNAL__REC_HDR || off + len > seg->cap) return ANNAL_ECORRUPT;
    rc = annal__seg_readable(log, seg, off + len);
    if (rc != ANNAL_OK) return rc;
    return annal__rec_decode2(seg->map + off, (size_t)(seg->cap - off), ev, info, check);
}

annal_err annal__seg_peek(annal__log *log, annal__seg *seg, uint64_t off, uint64_t *pos,
                          uint64_t *span, uint32_t *len, int *event) {
    if (off + ANNAL__REC_HDR > seg->cap ||
        annal__seg_readable(log, seg, off + ANNAL__REC_HDR) != ANNAL_OK)
        return ANNAL_ECORRUPT;
    const uint8_t *p = seg->map + off;
    /* (the kind without the multi flag and the length of the tags section) */
    uint32_t kind = annal__get32(p + 60) & ((1u << ANNAL__REC_TAGS_SHIFT) - 1) & ~ANNAL__REC_MULTI;
    *len = annal__get32(p + 4);
    *pos = annal__get64(p + 8);
    *event = kind == ANNAL__REC_EVENT;
    *span = *event ? 1 : annal__get64(p + 16);
    if (*len < ANNAL__REC_HDR || (*len & 7) || off + *len > seg->cap || *span == 0 ||
        (!*event && kind != ANNAL__REC_HOLE))
        return ANNAL_ECORRUPT;
    return ANNAL_OK;
}

annal_err annal__cursor_next(annal__cursor *c, annal_event *ev, annal__rec_info *info,
                             uint64_t *loc_out) {
    return annal__cursor_next2(c, ev, info, loc_out, 1);
}

annal_err annal__cursor_next2(annal__cursor *c, annal_event *ev, annal__rec_info *info,
                              uint64_t *loc_out, int check) {
    for (;;) {
        annal_err rc = read_rec(c->log, c->seg, c->off, ev, info, check);
        if (rc == ANNAL_END) {
            annal__seg *next = annal__log_seg(c->log, c->seg->no + 1);
            if (!next) return ANNAL_END;
            if (next->first_pos != c->pos) return ANNAL_ECORRUPT;
            c->seg = next;
            c->off = ANNAL__SEG_HDR;
            continue;
        }
        if (rc != ANNAL_OK) return rc;
        if (info->kind == ANNAL__REC_HOLE) {
            /* Erased events: step over them. A cursor may start inside one (a position
             * lookup lands on the nearest entry at or below). */
            /* (Compaction writes holes, and `annal recover --accept-loss` one over a lost
             * tail, in a segment of any generation.) */
            if (ev->position > c->pos || ev->position + ev->revision <= c->pos)
                return ANNAL_ECORRUPT;
            c->pos = ev->position + ev->revision;
            c->off += info->len;
            continue;
        }
        if (ev->position != c->pos) return ANNAL_ECORRUPT;
        if (loc_out) *loc_out = ANNAL__SEG_LOC(c->seg, c->off);
        c->off += info->len;
        c->pos++;
        return ANNAL_OK;
    }
}

annal_err annal__cursor_seek(annal__cursor *c, uint64_t pos) {
    while (c->pos < pos) {
        annal_event ev;
        annal__rec_info info;
        annal_err rc = read_rec(c->log, c->seg, c->off, &ev, &info, 1);
        if (rc == ANNAL_END) {
            annal__seg *next = annal__log_seg(c->log, c->seg->no + 1);
            if (!next) return ANNAL_END;
            if (next->first_pos != c->pos) return ANNAL_ECORRUPT;
            c->seg = next;
            c->off = ANNAL__SEG_HDR;
            continue;
        }
        if (rc == ANNAL_OK && info.kind == ANNAL__REC_HOLE) {
            if (c->seg->gen == 0 || ev.position > c->pos || ev.position + ev.revision <= c->pos)
                return ANNAL_ECORRUPT;
            if (ev.position + ev.revision > pos) { /* pos was erased: stand on the hole */
                c->pos = pos;
                return ANNAL_OK;
            }
            c->pos = ev.position + ev.revision;
            c->off += info.len;
            continue;
        }
        if (rc == ANNAL_OK && ev.position != c->pos) rc = ANNAL_ECORRUPT;
        if (rc == ANNAL_OK) {
            c->off += info.len;
            c->pos++;
        } else if (rc != ANNAL_ECORRUPT || annal__cursor_skip(c) != ANNAL_OK) {
            return rc; /* (a damaged record below pos is passed over when framing allows) */
        }
    }
    return ANNAL_OK;
}

void annal__cursor_settle(annal__cursor *c) {
    annal_event ev;
    annal__rec_info info;
    while (read_rec(c->log, c->seg, c->off, &ev, &info, 1) == ANNAL_END) {
        annal__seg *next = annal__log_seg(c->log, c->seg->no + 1);
        if (!next || next->first_pos != c->pos) return;
        c->seg = next;
        c->off = ANNAL__SEG_HDR;
    }
}

annal_err annal__cursor_skip(annal__cursor *c) {
    if (annal__seg_readable(c->log, c->seg, c->off + 8) != ANNAL_OK) return ANNAL_ECORRUPT;
    uint32_t len = annal__get32(c->seg->map + c->off + 4);
    if (len < ANNAL__REC_HDR || (len & 7) || c->off + len + 8 > c->seg->cap) return ANNAL_ECORRUPT;
    annal__cursor n = {c->log, c->seg, c->off + len, c->pos + 1};
    annal__cursor probe = n;
    annal_event ev;
    annal__rec_info info;
    if (annal__cursor_next(&probe, &ev, &info, NULL) != ANNAL_OK) return ANNAL_ECORRUPT;
    *c = n;
    return ANNAL_OK;
}

annal_err annal__log_read_at(annal__log *log, uint64_t loc, uint64_t pos, annal_event *ev,
                             annal__rec_info *info) {
    annal__seg *s = annal__log_seg_at(log, loc);
    if (!s) return ANNAL_ECORRUPT;
    annal_err rc = read_rec(log, s, ANNAL__LOC_OFF(loc), ev, info, 1);
    if (rc == ANNAL_END || (rc == ANNAL_OK && info->kind != ANNAL__REC_EVENT))
        return ANNAL_ECORRUPT;
    if (rc == ANNAL_OK && pos != UINT64_MAX && ev->position != pos) return ANNAL_ECORRUPT;
    return rc;
}
