/* The event-id index as a small LSM tree: see ids.h. Run file layout (little-endian):
 *   0   "ANNALIDS"   8  version (1)   12 0
 *   16  count        24 from (first position covered)   32 to (first position not covered)
 *   40  Bloom blocks 48 seq          56 CRC32C of everything after the header
 *   60  CRC32C of bytes 0..60
 *   64  count entries of 24 bytes, sorted by id: id (16 bytes), position (8)
 *       then, at the next multiple of 64, the Bloom filter: blocks of 512 bits. */
#include "index/ids.h"
#include "index/index.h"

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

#define RUN_HDR      64u
#define ENT          24u
#define BLOCK        64u
#define BITS_PER_KEY 10u
#define BLOOM_K      7
#define META_KEY     "ids"
#define META_VERSION 1u

typedef struct run {
    uint64_t seq, count, from, to, blocks;
    uint8_t *map; /* the whole file, read-only */
    size_t len;
    int synced;
} run;

typedef struct ment { /* a memtable entry */
    uint8_t id[16];
    uint64_t pos, loc;
} ment;

struct annal__ids {
    char *dir;
    uint64_t next, next_seq, mem_max;
    uint64_t retry_at; /* after a failed flush, wait for this many entries before the next */
    run **runs;        /* oldest first */
    size_t nruns;
    ment *ent; /* insertion (= position) order */
    size_t n, cap;
    uint64_t *slot; /* open addressing, linear probing: 0 empty, else index + 1 into ent
                     * (low 32 bits) and the hash's high 32 bits, so that a probe
                     * touches an entry only when the hashes agree */
    size_t mask;
    /* A flush awaiting its transaction's outcome. */
    run **pend, **made; /* the new list; every file this flush wrote */
    size_t npend, nmade;
    uint64_t pend_next, pend_seq;
    /* The merger thread (annal__ids_start_merger). mu guards the run list and next_seq
     * between it and the leader; lock order: LMDB's writer lock, then mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int merger;               /* running */
    int deferred;             /* merges are the merger's, even while it is stopped (closing) */
    int locked;               /* a flush holds mu */
    int held;                 /* the leader holds mu for a batch of lookups (annal__ids_hold) */
    _Atomic int stop;         /* asks it to finish (a merge in progress is abandoned) */
    struct annal__index *idx; /* the merger's transactions */
    MDB_dbi meta;
    /* The memtable's memory as the merger found it at start, to fault in (below). */
    void *pf[2];
    size_t pf_len[2];
};

/* ---- hashing --------------------------------------------------------------------- */

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Both halves count: UUIDv7 ids share their leading (time) bytes. */
static inline uint64_t id_hash(const uint8_t *id) {
    return mix(annal__get64(id) ^ mix(annal__get64(id + 8) + 0x9e3779b97f4a7c15ull));
}

static inline const uint8_t *bloom_block(const uint8_t *bloom, uint64_t blocks, uint64_t h) {
    return bloom + ((h >> 32) * blocks >> 32) * BLOCK;
}

static void bloom_set(uint8_t *bloom, uint64_t blocks, uint64_t h) {
    uint8_t *b = (uint8_t *)bloom_block(bloom, blocks, h);
    uint64_t g = mix(h + 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < BLOOM_K; i++, g >>= 9) b[(g & 511) >> 3] |= (uint8_t)(1u << (g & 7));
}

static int bloom_may(const uint8_t *bloom, uint64_t blocks, uint64_t h) {
    const uint8_t *b = bloom_block(bloom, blocks, h);
    uint64_t g = mix(h + 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < BLOOM_K; i++, g >>= 9)
        if (!(b[(g & 511) >> 3] & (1u << (g & 7)))) return 0;
    return 1;
}

static uint64_t bloom_blocks(uint64_t count) {
    uint64_t b = (count * BITS_PER_KEY + BLOCK * 8 - 1) / (BLOCK * 8);
    return b ? b : 1;
}

/* ---- run files ------------------------------------------------------------------- */

static void run_path(const char *dir, uint64_t seq, char *out, size_t n) {
    snprintf(out, n, "%s/ids-%016" PRIx64 ".run", dir, seq);
}

static uint64_t bloom_off(uint64_t count) {
    return (RUN_HDR + count * ENT + BLOCK - 1) / BLOCK * BLOCK;
}

static void run_free(run *r, const char *dir, int unlink_it) {
    if (!r) return;
    if (r->map) munmap(r->map, r->len);
    if (unlink_it) {
        char path[4200];
        run_path(dir, r->seq, path, sizeof path);
        unlink(path);
    }
    free(r);
}

/* Map run seq and check it is the one the meta table describes. */
static annal_err run_open(const char *dir, uint64_t seq, uint64_t count, uint64_t from, uint64_t to,
                          run **out, char *detail, size_t dlen) {
    char path[4200];
    run_path(dir, seq, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(detail, dlen, "cannot open %s: %s", path, strerror(errno));
        return errno == ENOENT ? ANNAL_ENOTFOUND : ANNAL_EIO;
    }
    struct stat st;
    uint8_t h[RUN_HDR];
    uint64_t blocks = 0, want = 0;
    if (pread(fd, h, RUN_HDR, 0) == RUN_HDR) {
        blocks = annal__get64(h + 40);
        want = bloom_off(count) + blocks * BLOCK;
    }
    if (fstat(fd, &st) < 0 || blocks == 0 || blocks > count / 8 + 2 ||
        (uint64_t)st.st_size != want) {
        close(fd);
        snprintf(detail, dlen, "%s has the wrong size", path);
        return ANNAL_ECORRUPT;
    }
    uint8_t *m = mmap(NULL, (size_t)want, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(detail, dlen, "cannot map %s: %s", path, strerror(errno));
        return ANNAL_EIO;
    }
    if (memcmp(m, "ANNALIDS", 8) || annal__get32(m + 8) != 1 ||
        annal__get32(m + 60) != annal__crc32c(0, m, 60) || annal__get64(m + 16) != count ||
        annal__get64(m + 24) != from || annal__get64(m + 32) != to || annal__get64(m + 48) != seq) {
        munmap(m, (size_t)want);
        snprintf(detail, dlen, "%s is damaged or not the run the index names", path);
        return ANNAL_ECORRUPT;
    }
    run *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(m, (size_t)want);
        return ANNAL_ENOMEM;
    }
    *r = (run){seq, count, from, to, blocks, m, (size_t)want, 1};
    *out = r;
    return ANNAL_OK;
}

/* Writes a run: entries in id order, then the Bloom filter and the header. */
typedef struct writer {
    int fd;
    uint64_t seq, count, bound, from, to, blocks;
    uint8_t *bloom;
    uint8_t buf[1u << 16];
    size_t bl;
    uint64_t off;
    uint32_t crc;
    int err;
} writer;

static int w_out(writer *w, const void *p, size_t n) {
    w->crc = annal__crc32c(w->crc, p, n);
    while (n > 0 && !w->err) {
        ssize_t k = pwrite(w->fd, p, n, (off_t)w->off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            w->err = k < 0 ? errno : EIO;
            break;
        }
        p = (const uint8_t *)p + k;
        n -= (size_t)k;
        w->off += (uint64_t)k;
    }
    return w->err ? -w->err : 0;
}

/* bound: at most this many entries will be added (sizes the filter). */
static int w_begin(writer *w, const char *dir, uint64_t seq, uint64_t bound, uint64_t from,
                   uint64_t to) {
    char path[4200];
    run_path(dir, seq, path, sizeof path);
    memset(w, 0, offsetof(writer, buf)); /* not the 64 KiB buffer */
    w->bl = 0;
    w->crc = 0;
    w->err = 0;
    w->seq = seq, w->bound = bound, w->from = from, w->to = to;
    w->off = RUN_HDR;
    w->blocks = bloom_blocks(bound);
    w->bloom = calloc((size_t)w->blocks, BLOCK);
    if (!w->bloom) return -ENOMEM;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        free(w->bloom);
        return -errno;
    }
    return 0;
}

static void w_add(writer *w, const uint8_t *id, uint64_t pos) {
    if (w->bl + ENT > sizeof w->buf) {
        w_out(w, w->buf, w->bl);
        w->bl = 0;
    }
    memcpy(w->buf + w->bl, id, 16);
    annal__put64(w->buf + w->bl + 16, pos);
    w->bl += ENT;
    w->count++;
    bloom_set(w->bloom, w->blocks, id_hash(id));
}

/* Finish the file and map it: *out, or a negative errno (the file is removed). The
 * filter keeps the size the bound gave it (merged duplicates leave it a little sparse). */
static int w_end(writer *w, const char *dir, run **out) {
    static const uint8_t zeros[BLOCK];
    char path[4200];
    run_path(dir, w->seq, path, sizeof path);
    w_out(w, w->buf, w->bl);
    w_out(w, zeros, (size_t)(bloom_off(w->count) - (RUN_HDR + w->count * ENT)));
    w_out(w, w->bloom, (size_t)(w->blocks * BLOCK));
    free(w->bloom);
    w->bloom = NULL;
    uint8_t h[RUN_HDR] = {0};
    memcpy(h, "ANNALIDS", 8);
    annal__put32(h + 8, 1);
    annal__put64(h + 16, w->count);
    annal__put64(h + 24, w->from);
    annal__put64(h + 32, w->to);
    annal__put64(h + 40, w->blocks);
    annal__put64(h + 48, w->seq);
    annal__put32(h + 56, w->crc);
    annal__put32(h + 60, annal__crc32c(0, h, 60));
    if (!w->err && pwrite(w->fd, h, RUN_HDR, 0) != RUN_HDR) w->err = errno ? errno : EIO;
    close(w->fd);
    int err = w->err;
    if (!err) {
        char d[256];
        annal_err rc = run_open(dir, w->seq, w->count, w->from, w->to, out, d, sizeof d);
        if (rc != ANNAL_OK) err = rc == ANNAL_ENOMEM ? ENOMEM : EIO;
    }
    if (err) {
        unlink(path);
        return -err;
    }
    (*out)->synced = 0;
    return 0;
}

/* Newest entry for id in r (runs hold one entry per id). */
static int run_get(const run *r, const uint8_t *id, uint64_t h, uint64_t *pos) {
    if (r->count == 0 || !bloom_may(r->map + bloom_off(r->count), r->blocks, h)) return 0;
    const uint8_t *e = r->map + RUN_HDR;
    uint64_t lo = 0, hi = r->count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = memcmp(e + mid * ENT, id, 16);
        if (c == 0) {
            *pos = annal__get64(e + mid * ENT + 16);
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* ---- memtable -------------------------------------------------------------------- */

#define SLOT(j, h)  (((uint64_t)(j) + 1) | ((h)&0xffffffff00000000ull))
#define SLOT_ENT(v) ((size_t)((v)&0xffffffffu) - 1)

/* Slot tables are mapped, not malloc'd: a big one asks for huge pages, since every
 * probe lands on a random page and a TLB miss (a nested page walk in a VM) cost more
 * than the probe itself (~45% of a batched append with 4 KiB pages). */
static uint64_t *slots_alloc(size_t n) {
    size_t bytes = n * sizeof(uint64_t);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (bytes >= (2u << 20)) madvise(p, bytes, MADV_HUGEPAGE); /* a hint: fine if refused */
    return p;
}

static void slots_free(uint64_t *s, size_t n) {
    if (s) munmap(s, n * sizeof *s);
}

/* Rehash into a slot table big enough for want entries at half load. */
static int mem_grow_slots(annal__ids *ids, size_t want) {
    size_t ns = ids->mask ? (ids->mask + 1) * 2 : 1024;
    while (ns < want * 2) ns *= 2;
    uint64_t *s = slots_alloc(ns);
    if (!s) return -1;
    for (size_t j = 0; j < ids->n; j++) {
        uint64_t h = id_hash(ids->ent[j].id);
        size_t i = h & (ns - 1);
        while (s[i]) i = (i + 1) & (ns - 1);
        s[i] = SLOT(j, h);
    }
    slots_free(ids->slot, ids->slot ? ids->mask + 1 : 0);
    ids->slot = s;
    ids->mask = ns - 1;
    return 0;
}

/* The newest memtable entry for id (hash h), or NULL; *empty gets the slot where a new
 * entry would go. */
static const ment *mem_find(const annal__ids *ids, const uint8_t *id, uint64_t h, size_t *empty) {
    const ment *best = NULL; /* an id erased by compaction may have been appended again */
    size_t i = h & ids->mask;
    if (ids->slot)
        for (; ids->slot[i]; i = (i + 1) & ids->mask) {
            uint64_t v = ids->slot[i];
            if ((v ^ h) >> 32) continue;
            const ment *m = &ids->ent[SLOT_ENT(v)];
            if (memcmp(m->id, id, 16) == 0 && (!best || m->pos > best->pos)) best = m;
        }
    *empty = i;
    return best;
}

static annal_err mem_insert(annal__ids *ids, const uint8_t *id, uint64_t h, size_t i, uint64_t pos,
                            uint64_t loc) {
    if ((ids->n + 1) * 2 > ids->mask + 1) { /* grow, then find the slot again */
        if (mem_grow_slots(ids, ids->n + 1) < 0) return ANNAL_ENOMEM;
        for (i = h & ids->mask; ids->slot[i];) i = (i + 1) & ids->mask;
    }
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 512;
        ment *e = realloc(ids->ent, cap * sizeof *e);
        if (!e) return ANNAL_ENOMEM;
        ids->ent = e;
        ids->cap = cap;
    }
    ids->slot[i] = SLOT(ids->n, h);
    ment *m = &ids->ent[ids->n++];
    memcpy(m->id, id, 16);
    m->pos = pos;
    m->loc = loc;
    return ANNAL_OK;
}

annal_err annal__ids_reserve(annal__ids *ids) {
    if ((ids->mem_max + 1) * 2 > ids->mask + 1 && mem_grow_slots(ids, ids->mem_max + 1) < 0)
        return ANNAL_ENOMEM; /* one table of the final size, not eleven doublings */
    if (ids->cap < ids->mem_max) {
        ment *e = realloc(ids->ent, ids->mem_max * sizeof *e);
        if (!e) return ANNAL_ENOMEM;
        ids->ent = e;
        ids->cap = ids->mem_max;
    }
    return ANNAL_OK;
}

annal_err annal__ids_add(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc) {
    uint64_t h = id_hash(id->bytes);
    size_t i;
    mem_find(ids, id->bytes, h, &i);
    return mem_insert(ids, id->bytes, h, i, pos, loc);
}

/* Newest run entry for id, newest run first. Under mu while a merger may swap runs. */
static int runs_find(annal__ids *ids, const uint8_t *id, uint64_t h, uint64_t *pos) {
    int lock = ids->merger && !ids->held;
    if (lock) pthread_mutex_lock(&ids->mu);
    int found = 0;
    for (size_t r = ids->nruns; r-- > 0 && !found;) found = run_get(ids->runs[r], id, h, pos);
    if (lock) pthread_mutex_unlock(&ids->mu);
    return found;
}

void annal__ids_hold(annal__ids *ids) {
    if (ids->merger && !ids->held) pthread_mutex_lock(&ids->mu);
    ids->held = 1;
}

void annal__ids_release(annal__ids *ids) {
    if (ids->merger && ids->held) pthread_mutex_unlock(&ids->mu);
    ids->held = 0;
}

void annal__ids_prefetch(const annal__ids *ids, const annal_uuid *id) {
    uint64_t h = id_hash(id->bytes);
    if (ids->slot) __builtin_prefetch(&ids->slot[h & ids->mask]);
    if (ids->merger && !ids->held) return;  /* the run list may change under us */
    for (size_t r = 0; r < ids->nruns; r++) /* each run's Bloom block: one cache line */
        if (ids->runs[r]->count)
            __builtin_prefetch(bloom_block(ids->runs[r]->map + bloom_off(ids->runs[r]->count),
                                           ids->runs[r]->blocks, h));
}

/* Claim id against the memtable, and against the runs too if `runs`. */
static annal_err claim(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc, int runs,
                       uint64_t *old_pos, uint64_t *old_loc) {
    uint64_t h = id_hash(id->bytes);
    size_t i;
    const ment *m = mem_find(ids, id->bytes, h, &i);
    if (m) {
        *old_pos = m->pos;
        *old_loc = m->loc;
        return ANNAL_EDUPLICATE;
    }
    if (runs && runs_find(ids, id->bytes, h, old_pos)) {
        *old_loc = UINT64_MAX;
        return ANNAL_EDUPLICATE;
    }
    return mem_insert(ids, id->bytes, h, i, pos, loc);
}

annal_err annal__ids_claim(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc,
                           uint64_t *old_pos, uint64_t *old_loc) {
    return claim(ids, id, pos, loc, 1, old_pos, old_loc);
}

annal_err annal__ids_claim_mem(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc,
                               uint64_t *old_pos) {
    uint64_t old_loc;
    return claim(ids, id, pos, loc, 0, old_pos, &old_loc);
}

/* Removing the newest entries first needs no tombstones: no probe sequence of an older
 * entry ever crossed a newer one's slot. */
void annal__ids_truncate(annal__ids *ids, uint64_t pos) {
    while (ids->n > 0 && ids->ent[ids->n - 1].pos >= pos) {
        size_t i = id_hash(ids->ent[ids->n - 1].id) & ids->mask;
        while (SLOT_ENT(ids->slot[i]) != ids->n - 1) i = (i + 1) & ids->mask;
        ids->slot[i] = 0;
        ids->n--;
    }
}

annal_err annal__ids_get(const annal__ids *ids, const annal_uuid *id, uint64_t *pos,
                         uint64_t *loc) {
    uint64_t h = id_hash(id->bytes);
    size_t i;
    const ment *best = mem_find(ids, id->bytes, h, &i);
    if (best) {
        *pos = best->pos;
        *loc = best->loc;
        return ANNAL_OK;
    }
    if (runs_find((annal__ids *)ids, id->bytes, h, pos)) {
        *loc = UINT64_MAX;
        return ANNAL_OK;
    }
    return ANNAL_ENOTFOUND;
}

int annal__ids_full(const annal__ids *ids) {
    return ids->n >= ids->mem_max && ids->n >= ids->retry_at;
}
uint64_t annal__ids_mem_count(const annal__ids *ids) { return ids->n; }
uint64_t annal__ids_next(const annal__ids *ids) { return ids->next; }

/* ---- open / flush / merge -------------------------------------------------------- */

static void drop_list(annal__ids *ids, run **list, size_t n, int unlink_them) {
    for (size_t i = 0; i < n; i++) run_free(list[i], ids->dir, unlink_them);
}

annal_err annal__ids_open(const char *dir, MDB_txn *t, MDB_dbi meta, uint64_t mem_max,
                          annal__ids **out, char *detail, size_t dlen) {
    annal__ids *ids = calloc(1, sizeof *ids);
    if (!ids || !(ids->dir = strdup(dir))) {
        free(ids);
        return ANNAL_ENOMEM;
    }
    ids->mem_max = mem_max ? mem_max : ANNAL__IDS_MEM_DEFAULT;
    pthread_mutex_init(&ids->mu, NULL);
    pthread_cond_init(&ids->cv, NULL);
    MDB_val k = {3, (void *)META_KEY}, v;
    int mrc = mdb_get(t, meta, &k, &v);
    annal_err rc = ANNAL_OK;
    if (mrc == 0) {
        const uint8_t *p = v.mv_data;
        uint64_t n = v.mv_size >= 32 ? annal__get64(p + 24) : 0;
        if (v.mv_size < 32 || annal__get64(p) != META_VERSION || v.mv_size != 32 + n * 32) {
            snprintf(detail, dlen, "the id index's run list is damaged");
            rc = ANNAL_ECORRUPT;
        } else {
            ids->next = annal__get64(p + 8);
            ids->next_seq = annal__get64(p + 16);
            ids->runs = calloc(n ? n : 1, sizeof *ids->runs);
            if (!ids->runs) rc = ANNAL_ENOMEM;
            for (uint64_t i = 0; i < n && rc == ANNAL_OK; i++, ids->nruns++) {
                const uint8_t *q = p + 32 + i * 32;
                rc = run_open(dir, annal__get64(q), annal__get64(q + 8), annal__get64(q + 16),
                              annal__get64(q + 24), &ids->runs[i], detail, dlen);
                if (rc != ANNAL_OK) break;
            }
        }
    } else if (mrc != MDB_NOTFOUND) {
        snprintf(detail, dlen, "index: %s", mdb_strerror(mrc));
        rc = ANNAL_EIO;
    }
    if (rc != ANNAL_OK) {
        annal__ids_close(ids);
        return rc;
    }
    *out = ids;
    return ANNAL_OK;
}

void annal__ids_close(annal__ids *ids) {
    if (!ids) return;
    annal__ids_stop_merger(ids);
    if (ids->pend) annal__ids_flush_end(ids, 0);
    drop_list(ids, ids->runs, ids->nruns, 0);
    free(ids->runs);
    free(ids->ent);
    slots_free(ids->slot, ids->slot ? ids->mask + 1 : 0);
    free(ids->dir);
    pthread_mutex_destroy(&ids->mu);
    pthread_cond_destroy(&ids->cv);
    free(ids);
}

typedef struct sorted {
    uint8_t id[16];
    uint64_t pos;
} sorted;

static int cmp_sorted(const void *a, const void *b) {
    const sorted *x = a, *y = b;
    int c = memcmp(x->id, y->id, 16);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* The memtable's entries sorted by (id, position): a counting sort on the first two
 * bytes of the id, then each bucket on its own (a few entries each for random ids; one
 * bucket of already ordered ids for time-ordered ones). */
static sorted *sort_mem(const annal__ids *ids) {
    size_t n = ids->n;
    sorted *s = malloc((n ? n : 1) * sizeof *s);
    size_t *at = calloc(65537, sizeof *at);
    if (!s || !at) {
        free(s);
        free(at);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) at[((size_t)ids->ent[i].id[0] << 8 | ids->ent[i].id[1]) + 1]++;
    for (size_t b = 1; b <= 65536; b++) at[b] += at[b - 1];
    for (size_t i = 0; i < n; i++) { /* stable: positions stay in order within a bucket */
        const ment *m = &ids->ent[i];
        sorted *d = &s[at[(size_t)m->id[0] << 8 | m->id[1]]++];
        memcpy(d->id, m->id, 16);
        d->pos = m->pos;
    }
    /* at[b] is now the end of bucket b */
    for (size_t b = 0, lo = 0; b < 65536; lo = at[b++]) {
        size_t k = at[b] - lo;
        if (k > 16) {
            qsort(s + lo, k, sizeof *s, cmp_sorted);
            continue;
        }
        for (size_t i = lo + 1; i < at[b]; i++) { /* insertion sort */
            sorted x = s[i];
            size_t j = i;
            for (; j > lo && cmp_sorted(&s[j - 1], &x) > 0; j--) s[j] = s[j - 1];
            s[j] = x;
        }
    }
    free(at);
    return s;
}

/* Write the memtable as run seq covering [from, to). */
static int write_mem(annal__ids *ids, uint64_t seq, uint64_t from, uint64_t to, run **out) {
    sorted *s = sort_mem(ids);
    if (!s) return -ENOMEM;
    size_t distinct = 0; /* an id erased and appended again is in the memtable twice */
    for (size_t i = 0; i < ids->n; i++)
        distinct += i + 1 == ids->n || memcmp(s[i].id, s[i + 1].id, 16) != 0;
    writer *w = malloc(sizeof *w);
    int r = w ? w_begin(w, ids->dir, seq, distinct, from, to) : -ENOMEM;
    for (size_t i = 0; r == 0 && i < ids->n; i++)
        if (i + 1 == ids->n || memcmp(s[i].id, s[i + 1].id, 16) != 0) /* newest per id */
            w_add(w, s[i].id, s[i].pos);
    if (r == 0) r = w_end(w, ids->dir, out);
    free(w);
    free(s);
    return r;
}

/* Put the run list into t's meta table. */
static annal_err put_list(MDB_txn *t, MDB_dbi meta, run **list, size_t n, uint64_t next,
                          uint64_t next_seq) {
    size_t vl = 32 + n * 32;
    uint8_t *v = malloc(vl);
    if (!v) return ANNAL_ENOMEM;
    annal__put64(v, META_VERSION);
    annal__put64(v + 8, next);
    annal__put64(v + 16, next_seq);
    annal__put64(v + 24, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *q = v + 32 + i * 32;
        annal__put64(q, list[i]->seq);
        annal__put64(q + 8, list[i]->count);
        annal__put64(q + 16, list[i]->from);
        annal__put64(q + 24, list[i]->to);
    }
    MDB_val k = {3, (void *)META_KEY}, mv = {vl, v};
    int mrc = mdb_put(t, meta, &k, &mv, 0);
    free(v);
    return mrc == 0 ? ANNAL_OK : mrc == MDB_MAP_FULL ? ANNAL_ENOSPC : ANNAL_EIO;
}

/* Merge a (older) and b (newer) into run seq; for an id in both, b's entry wins.
 * Abandoned (-ECANCELED, no file left) when the merger is asked to stop. */
static int merge(annal__ids *ids, const run *a, const run *b, uint64_t seq, run **out) {
    writer *w = malloc(sizeof *w);
    int r = w ? w_begin(w, ids->dir, seq, a->count + b->count, a->from, b->to) : -ENOMEM;
    int began = r == 0;
    const uint8_t *pa = a->map + RUN_HDR, *ea = pa + a->count * ENT;
    const uint8_t *pb = b->map + RUN_HDR, *eb = pb + b->count * ENT;
    for (uint64_t k = 1; r == 0 && (pa < ea || pb < eb); k++) {
        int c = pa == ea ? 1 : pb == eb ? -1 : memcmp(pa, pb, 16);
        if (c < 0) {
            w_add(w, pa, annal__get64(pa + 16));
            pa += ENT;
        } else {
            w_add(w, pb, annal__get64(pb + 16));
            pb += ENT;
            if (c == 0) pa += ENT;
        }
        if (w->err) r = -w->err;
        if ((k & 0xffff) == 0 && ids->stop) r = -ECANCELED; /* closing */
    }
    if (r == 0) {
        r = w_end(w, ids->dir, out); /* removes the file itself on failure */
    } else if (began) {
        char path[4200];
        run_path(ids->dir, seq, path, sizeof path);
        free(w->bloom);
        close(w->fd);
        unlink(path);
    }
    free(w);
    return r;
}

/* One merge the binary counter asks for (the newest adjacent pair whose older run is no
 * bigger), by the merger thread: 1 done, 0 nothing to do, -1 failed. Called, and
 * returns, with mu held; merges without it (only this thread removes runs, and a flush
 * only appends one). */
static int merge_step(annal__ids *ids) {
    size_t i = 0;
    for (size_t k = ids->nruns; k-- > 1 && !i;)
        if (ids->runs[k - 1]->count <= ids->runs[k]->count) i = k;
    if (!i) return 0;
    run *a = ids->runs[i - 1], *b = ids->runs[i], *m = NULL;
    uint64_t seq = ids->next_seq++;
    pthread_mutex_unlock(&ids->mu);
    int r = merge(ids, a, b, seq, &m);
    MDB_txn *t = NULL;
    if (r == 0 && annal__txn_begin(ids->idx, 0, &t) != 0) t = NULL, r = -EIO;
    pthread_mutex_lock(&ids->mu); /* after LMDB's writer lock, as every flush takes them */
    run **list = r == 0 ? calloc(ids->nruns, sizeof *list) : NULL;
    if (r == 0 && list) {
        size_t n = 0;
        for (size_t k = 0; k < ids->nruns; k++)
            if (ids->runs[k] == a)
                list[n++] = m;
            else if (ids->runs[k] != b)
                list[n++] = ids->runs[k];
        int put = put_list(t, ids->meta, list, n, ids->next, ids->next_seq) == ANNAL_OK;
        int committed = put && annal__txn_commit(ids->idx, t) == 0;
        if (put) t = NULL; /* committed, or failed and gone */
        if (committed) {
            free(ids->runs);
            ids->runs = list;
            ids->nruns = n;
            run_free(a, ids->dir, 1);
            run_free(b, ids->dir, 1);
            return 1;
        }
    }
    free(list);
    if (t) annal__txn_abort(ids->idx, t);
    if (m) run_free(m, ids->dir, 1);
    return -1;
}

/* Fault in [p, p + len) without changing it: the kernel allocates (and zeroes) the
 * pages here instead of on the appender's first touch. A page fault costs microseconds
 * in a VM, and the first appends after open touched ~8,000 of them (about a sixth of a
 * batched append's time). Safe while another thread writes there. Best effort. */
static void prefault(annal__ids *ids, void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
    uintptr_t pg = 4096, a = ((uintptr_t)p + pg - 1) & ~(pg - 1),
              b = ((uintptr_t)p + len) & ~(pg - 1), step = 2u << 20;
    if (b <= a) return;
    if (b - a >= step) madvise((void *)a, b - a, MADV_HUGEPAGE);
    /* 2 MiB at a time: a handle closed soon after opening need not wait for it all */
    for (uintptr_t c = a; c < b && !ids->stop; c += step)
        madvise((void *)c, b - c < step ? b - c : step, MADV_POPULATE_WRITE);
#else
    (void)ids, (void)p, (void)len;
#endif
}

static void *merger_main(void *arg) {
    annal__ids *ids = arg;
    for (int i = 0; i < 2; i++) prefault(ids, ids->pf[i], ids->pf_len[i]);
    pthread_mutex_lock(&ids->mu);
    while (!ids->stop) {
        if (merge_step(ids) != 1 && !ids->stop) /* done, or failed: until the next flush */
            pthread_cond_wait(&ids->cv, &ids->mu);
    }
    pthread_mutex_unlock(&ids->mu);
    return NULL;
}

annal_err annal__ids_start_merger(annal__ids *ids, annal__index *idx, MDB_dbi meta) {
    if (ids->merger) return ANNAL_OK;
    ids->idx = idx;
    ids->meta = meta;
    ids->stop = 0;
    ids->merger = 1;
    ids->deferred = 0;
    ids->pf[0] = ids->slot, ids->pf_len[0] = ids->slot ? (ids->mask + 1) * sizeof *ids->slot : 0;
    ids->pf[1] = ids->ent, ids->pf_len[1] = ids->cap * sizeof *ids->ent;
    if (pthread_create(&ids->th, NULL, merger_main, ids) != 0) {
        ids->merger = 0;
        return ANNAL_ENOMEM;
    }
    return ANNAL_OK;
}

void annal__ids_stop_merger(annal__ids *ids) {
    if (!ids->merger) return;
    pthread_mutex_lock(&ids->mu);
    ids->stop = 1;
    pthread_cond_signal(&ids->cv);
    pthread_mutex_unlock(&ids->mu);
    pthread_join(ids->th, NULL);
    ids->merger = 0;
    ids->stop = 0;
    ids->deferred = 1; /* the next open's merger catches up */
}

/* The end of a flush: release mu if it took it, and wake the merger. */
static void flush_unlock(annal__ids *ids) {
    if (!ids->locked) return;
    ids->locked = 0;
    pthread_cond_signal(&ids->cv);
    pthread_mutex_unlock(&ids->mu);
}

static int note_made(annal__ids *ids, run *r) {
    run **m = realloc(ids->made, (ids->nmade + 1) * sizeof *m);
    if (!m) return -ENOMEM;
    ids->made = m;
    ids->made[ids->nmade++] = r;
    return 0;
}

annal_err annal__ids_flush(annal__ids *ids, MDB_txn *t, MDB_dbi meta, uint64_t upto) {
    if (ids->pend) annal__ids_flush_end(ids, 0);
    if (ids->n == 0) return ANNAL_OK; /* nothing to write; no run list change */
    if (ids->merger) {                /* held until annal__ids_flush_end */
        pthread_mutex_lock(&ids->mu);
        ids->locked = 1;
    }
    ids->pend = calloc(ids->nruns + 1, sizeof *ids->pend);
    if (!ids->pend) {
        flush_unlock(ids);
        return ANNAL_ENOMEM;
    }
    if (ids->nruns) memcpy(ids->pend, ids->runs, ids->nruns * sizeof *ids->runs);
    ids->npend = ids->nruns;
    ids->pend_seq = ids->next_seq;
    ids->pend_next = upto;
    run *nr = NULL;
    int r = write_mem(ids, ids->pend_seq++, ids->next, upto, &nr);
    if (r == 0) r = note_made(ids, nr);
    if (r == 0) ids->pend[ids->npend++] = nr;
    /* Binary counter: merge while the older neighbour is no bigger, so sizes at least
     * double towards the oldest and a lookup probes about log2(N / memtable) runs. */
    while (r == 0 && !ids->merger && !ids->deferred && ids->npend >= 2 &&
           ids->pend[ids->npend - 2]->count <= ids->pend[ids->npend - 1]->count) {
        run *a = ids->pend[ids->npend - 2], *b = ids->pend[ids->npend - 1], *m = NULL;
        r = merge(ids, a, b, ids->pend_seq++, &m);
        if (r == 0) r = note_made(ids, m);
        if (r == 0) ids->pend[--ids->npend - 1] = m;
    }
    if (r < 0) {
        annal__ids_flush_end(ids, 0);
        return r == -ENOSPC || r == -EDQUOT ? ANNAL_ENOSPC
               : r == -ENOMEM               ? ANNAL_ENOMEM
                                            : ANNAL_EIO;
    }
    annal_err rc = put_list(t, meta, ids->pend, ids->npend, ids->pend_next, ids->pend_seq);
    if (rc != ANNAL_OK) annal__ids_flush_end(ids, 0);
    return rc;
}

static int in_list(run **list, size_t n, const run *r) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == r) return 1;
    return 0;
}

void annal__ids_flush_end(annal__ids *ids, int committed) {
    if (!ids->pend) return;
    if (committed) {
        for (size_t i = 0; i < ids->nruns; i++) /* replaced by merges */
            if (!in_list(ids->pend, ids->npend, ids->runs[i])) run_free(ids->runs[i], ids->dir, 1);
        for (size_t i = 0; i < ids->nmade; i++) /* intermediate merge results */
            if (!in_list(ids->pend, ids->npend, ids->made[i])) run_free(ids->made[i], ids->dir, 1);
        free(ids->runs);
        ids->runs = ids->pend;
        ids->nruns = ids->npend;
        ids->next = ids->pend_next;
        ids->next_seq = ids->pend_seq;
        ids->n = 0;
        if (ids->slot) memset(ids->slot, 0, (ids->mask + 1) * sizeof *ids->slot);
        ids->retry_at = 0;
    } else {
        drop_list(ids, ids->made, ids->nmade, 1);
        free(ids->pend);
        ids->retry_at = ids->n + ids->mem_max / 4; /* e.g. a full disk: not every append */
    }
    free(ids->made);
    ids->pend = ids->made = NULL;
    ids->npend = ids->nmade = 0;
    flush_unlock(ids);
}

void annal__ids_reset(annal__ids *ids) {
    if (ids->pend) annal__ids_flush_end(ids, 0);
    drop_list(ids, ids->runs, ids->nruns, 1);
    ids->nruns = 0;
    ids->next = 0;
    ids->n = 0;
    if (ids->slot) memset(ids->slot, 0, (ids->mask + 1) * sizeof *ids->slot);
    annal__ids_remove_all(ids->dir);
}

annal_err annal__ids_check(const annal__ids *ids, char *detail, size_t dlen) {
    for (size_t i = 0; i < ids->nruns; i++) {
        const run *r = ids->runs[i];
        const uint8_t *e = r->map + RUN_HDR;
        int ok = annal__crc32c(0, e, r->len - RUN_HDR) == annal__get32(r->map + 56) &&
                 (i == 0 ? r->from == 0 : r->from == ids->runs[i - 1]->to);
        for (uint64_t j = 1; ok && j < r->count; j++)
            ok = memcmp(e + (j - 1) * ENT, e + j * ENT, 16) < 0;
        for (uint64_t j = 0; ok && j < r->count; j++) {
            uint64_t p = annal__get64(e + j * ENT + 16);
            ok = p >= r->from && p < r->to &&
                 bloom_may(r->map + bloom_off(r->count), r->blocks, id_hash(e + j * ENT));
        }
        if (!ok) {
            snprintf(detail, dlen, "event id run %s/ids-%016" PRIx64 ".run is damaged", ids->dir,
                     r->seq);
            return ANNAL_ECORRUPT;
        }
    }
    return ANNAL_OK;
}

int annal__ids_sync(annal__ids *ids) {
    int any = 0;
    for (size_t i = 0; i < ids->nruns; i++) {
        run *r = ids->runs[i];
        if (r->synced) continue;
        if (msync(r->map, r->len, MS_SYNC) < 0) return -errno; /* a shared map of the file */
        char path[4200];
        run_path(ids->dir, r->seq, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -errno;
        int s = fdatasync(fd);
        close(fd);
        if (s < 0) return -errno;
        r->synced = any = 1;
    }
    if (any) {
        int fd = open(ids->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
    }
    return 0;
}

/* seq of a run file's name, or UINT64_MAX for any other name. */
static uint64_t name_seq(const char *name) {
    size_t l = strlen(name);
    if (l != 4 + 16 + 4 || strncmp(name, "ids-", 4) || strcmp(name + 20, ".run")) return UINT64_MAX;
    char hex[17];
    memcpy(hex, name + 4, 16);
    hex[16] = 0;
    char *end;
    uint64_t v = strtoull(hex, &end, 16);
    return *end ? UINT64_MAX : v;
}

static void remove_files(const char *dir, const annal__ids *keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq = name_seq(e->d_name);
        if (seq == UINT64_MAX) continue;
        int listed = 0;
        for (size_t i = 0; keep && i < keep->nruns && !listed; i++)
            listed = keep->runs[i]->seq == seq;
        if (listed) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

void annal__ids_clean(const annal__ids *ids) { remove_files(ids->dir, ids); }

void annal__ids_remove_all(const char *dir) { remove_files(dir, NULL); }
