/* LMDB-backed indexes. Keys and values are fixed little structs encoded by hand;
 * revision, category and type entries are blocks of up to 64 events (index.h). */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "index/index.h"

annal_err annal__index_err(int rc) {
    switch (rc) {
    case MDB_SUCCESS: return ANNAL_OK;
    case MDB_NOTFOUND: return ANNAL_ENOTFOUND;
    case MDB_KEYEXIST: return ANNAL_EDUPLICATE;
    case MDB_MAP_FULL: return ANNAL_ENOSPC;
    case ENOSPC: return ANNAL_ENOSPC;
    case ENOMEM: return ANNAL_ENOMEM;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_BAD_TXN: return ANNAL_ECORRUPT;
    case MDB_VERSION_MISMATCH: return ANNAL_EVERSION;
    case EACCES:
    case EPERM: return ANNAL_EPERM;
    case EROFS: return ANNAL_EREADONLY;
    default: return ANNAL_EIO;
    }
}

void annal__boot_id(char out[40]) {
    memset(out, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(out, 40, f)) out[0] = 0;
        fclose(f);
    }
    out[strcspn(out, "\n")] = 0;
}

annal_err annal__index_state_read(const char *dir, annal__index_state *st) {
    char path[4096], buf[256];
    snprintf(path, sizeof path, "%s/state", dir);
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? ANNAL_ENOTFOUND : ANNAL_EIO;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return ANNAL_ECORRUPT;
    buf[n] = 0;
    char boot[40] = {0};
    int clean = 0;
    if (sscanf(buf, "annal-index 1\nclean %d\nboot %39s", &clean, boot) != 2) return ANNAL_ECORRUPT;
    st->clean = clean == 1;
    memcpy(st->boot_id, boot, sizeof boot);
    return ANNAL_OK;
}

int annal__index_state_write(const char *dir, const annal__index_state *st) {
    char path[4096], tmp[4100], buf[256];
    snprintf(path, sizeof path, "%s/state", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(buf, sizeof buf, "annal-index 1\nclean %d\nboot %s\n", st->clean ? 1 : 0,
                     st->boot_id[0] ? st->boot_id : "-");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int r = 0;
    if (write(fd, buf, (size_t)n) != n || fsync(fd) < 0) r = errno ? -errno : -EIO;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0) r = -errno;
    if (r == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) < 0) r = -errno;
            close(dfd);
        }
    }
    return r;
}

int annal__index_remove(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
    return 0;
}

/* The one piece of process-wide state in annal, forced by LMDB (as SQLite keeps a
 * process-wide inode list for POSIX locks): environments open in this process. */
typedef struct shared_env {
    dev_t dev;
    ino_t ino;
    int readonly, refs;
    MDB_env *env;
    MDB_dbi meta, streams, revs, pos, cats, types, tags;
    struct shared_env *next;
    /* A writer maps the file writable (MDB_WRITEMAP): see annal__index_grow. Every
     * active transaction of the process holds maplock shared. */
    pthread_rwlock_t maplock;
    int writemap;
    uint64_t cap; /* the most the map may grow to (index_map_bytes) */
    /* Under grow_mu: the file's first alloc bytes are allocated; beyond them (after
     * catch-up, when headroom is set) the map is sparse and never written. */
    pthread_mutex_t grow_mu;
    uint64_t alloc;
    int headroom;
} shared_env;
static pthread_mutex_t g_envs_mu = PTHREAD_MUTEX_INITIALIZER;
static shared_env *g_envs;

static shared_env *find_env(const struct stat *st) {
    for (shared_env *e = g_envs; e; e = e->next)
        if (e->dev == st->st_dev && e->ino == st->st_ino) return e;
    return NULL;
}

int annal__index_in_use(const char *dir) {
    struct stat st;
    if (stat(dir, &st) < 0) return 0;
    pthread_mutex_lock(&g_envs_mu);
    shared_env *e = find_env(&st);
    int used = e ? (e->readonly ? 1 : 2) : 0;
    pthread_mutex_unlock(&g_envs_mu);
    return used;
}

#define MIB           (1ull << 20)
#define MAP_MIN       (1 * MIB) /* the least a writer allocates */
#define MAP_SLACK_MIN (1 * MIB) /* allocated beyond a transaction's need: */
#define MAP_SLACK_MAX (64 * MIB)
#define MAP_HEAD      (256 * MIB) /* the least map beyond the allocation, after catch-up */

static uint64_t round_mib(uint64_t n) { return (n + MIB - 1) & ~(MIB - 1); }

/* Kept allocated beyond a transaction's need: a quarter of what is used, 1 to 64 MiB. */
static uint64_t slack_of(uint64_t used) {
    uint64_t s = used / 4;
    return s < MAP_SLACK_MIN ? MAP_SLACK_MIN : s > MAP_SLACK_MAX ? MAP_SLACK_MAX : s;
}

/* Bytes of the data file a writer has used (its last page and all below it). */
static uint64_t used_of(MDB_env *env) {
    MDB_envinfo in;
    MDB_stat st;
    if (mdb_env_info(env, &in) != 0 || mdb_env_stat(env, &st) != 0) return UINT64_MAX;
    return ((uint64_t)in.me_last_pgno + 1) * st.ms_psize;
}

/* The map a writer opens with: the data file's size (as the last writer left it), at
 * least MAP_MIN, at most cap. 0: the file is larger than cap (then no MDB_WRITEMAP). */
static uint64_t first_map(const char *dir, uint64_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    uint64_t size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (size > cap) return 0;
    size = round_mib(size);
    if (size < MAP_MIN) size = MAP_MIN;
    return size < cap ? size : cap;
}

static annal_err open_env(annal__index *idx, const char *dir, int readonly, uint64_t mapsize,
                          int try_writemap, int *writemap, uint64_t *alloc, char *detail,
                          size_t dlen) {
    /* A writer maps the file writable where it can allocate what it writes: a write
     * through the map into a hole of a full filesystem would be a SIGBUS, not an error.
     * Elsewhere (no fallocate, no room) it maps it as a reader does. */
    uint64_t start = try_writemap && !readonly ? first_map(dir, mapsize) : 0;
    *writemap = start > 0;
    /* A reader maps the file as it is (LMDB takes at least what its data needs), not
     * the most it may grow to: address space is a resource too (ulimit -v). It maps
     * more when the writer has grown the file beyond (annal__txn_begin). */
    uint64_t ro_map = readonly ? first_map(dir, UINT64_MAX) : 0;
    uint64_t map = *writemap ? start : ro_map ? ro_map : mapsize;
    int rc = mdb_env_create(&idx->env);
    if (rc == 0) rc = mdb_env_set_maxdbs(idx->env, 8);
    if (rc == 0) rc = mdb_env_set_mapsize(idx->env, (size_t)map);
    /* Every subscription keeps a read transaction (reset between looks), and a server
     * holds thousands of them: 8192 slots cost 512 KiB of lock file. */
    if (rc == 0) rc = mdb_env_set_maxreaders(idx->env, 8192);
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD |
                     (readonly ? MDB_RDONLY : MDB_NOSYNC | (*writemap ? MDB_WRITEMAP : 0));
    if (rc == 0) rc = mdb_env_open(idx->env, dir, flags, 0644);
    if (rc == 0 && *writemap) {
        /* Allocate what is used and some slack, and map just that until catch-up is
         * done (annal__index_headroom): the file may be larger, sparse beyond. */
        uint64_t used = used_of(idx->env);
        uint64_t a = used == UINT64_MAX ? 0 : round_mib(used + slack_of(used));
        if (a < MAP_MIN) a = MAP_MIN;
        if (a > mapsize) a = mapsize;
        int fd = -1;
        if (a < used || mdb_env_get_fd(idx->env, &fd) != 0 ||
            posix_fallocate(fd, 0, (off_t)a) != 0 ||
            mdb_env_set_mapsize(idx->env, (size_t)a) != 0) {
            mdb_env_close(idx->env); /* (nothing was written through the map) */
            idx->env = NULL;
            return open_env(idx, dir, readonly, mapsize, 0, writemap, alloc, detail, dlen);
        }
        *alloc = a;
    }
    if (rc != 0) {
        snprintf(detail, dlen, "cannot open index %s: %s", dir, mdb_strerror(rc));
        return rc == ENOENT ? ANNAL_ENOTFOUND : annal__index_err(rc);
    }
    int dead = 0;
    mdb_reader_check(idx->env, &dead);
    MDB_txn *t = NULL;
    rc = mdb_txn_begin(idx->env, NULL, readonly ? MDB_RDONLY : 0, &t);
    unsigned c = readonly ? 0 : MDB_CREATE;
    if (rc == 0) rc = mdb_dbi_open(t, "meta", c, &idx->meta);
    if (rc == 0) rc = mdb_dbi_open(t, "streams", c, &idx->streams);
    if (rc == 0) rc = mdb_dbi_open(t, "revs", c, &idx->revs);
    if (rc == 0) rc = mdb_dbi_open(t, "pos", c | MDB_INTEGERKEY, &idx->pos);
    int older = 0; /* tables added by index layout 2 are missing: written by 0.1 */
    if (rc == 0) rc = mdb_dbi_open(t, "cats", c | MDB_DUPSORT | MDB_DUPFIXED, &idx->cats);
    if (rc == MDB_NOTFOUND) older = 1;
    if (rc == 0) rc = mdb_dbi_open(t, "types", c | MDB_DUPSORT | MDB_DUPFIXED, &idx->types);
    /* Layout 5 added the tag table: a read-only opener of an older index refuses it as
     * above until a writer has rebuilt it. */
    if (rc == 0) rc = mdb_dbi_open(t, "tags", c | MDB_DUPSORT | MDB_DUPFIXED, &idx->tags);
    if (rc == MDB_NOTFOUND) older = 1;
    if (older) {
        mdb_txn_abort(t);
        snprintf(detail, dlen,
                 "the index in %s was written by an older annal: open the store for writing "
                 "once (or run `annal rebuild-index`) to rebuild it",
                 dir);
        return ANNAL_EVERSION;
    }
    if (rc == 0)
        rc = mdb_txn_commit(t); /* even read-only: abort would close the handles */
    else if (t)
        mdb_txn_abort(t);
    if (rc != 0) {
        snprintf(detail, dlen, "cannot open index tables in %s: %s", dir, mdb_strerror(rc));
        return rc == MDB_NOTFOUND ? ANNAL_ENOTFOUND : annal__index_err(rc);
    }
    return ANNAL_OK;
}

/* Map just the allocation again, as at open (read-only handles of this process kept
 * the environment of a closed writer, and a writer catches up first). 0, or -1 when
 * neither that nor allocating all of the map could be done. */
static int unsparse(shared_env *e) {
    int rc = 0;
    pthread_mutex_lock(&e->grow_mu);
    e->headroom = 0;
    pthread_rwlock_wrlock(&e->maplock); /* (their transactions are short) */
    if (mdb_env_set_mapsize(e->env, (size_t)e->alloc) != 0) {
        MDB_envinfo in;
        int fd = -1;
        rc = -1;
        if (mdb_env_info(e->env, &in) == 0 && mdb_env_get_fd(e->env, &fd) == 0 &&
            posix_fallocate(fd, 0, (off_t)in.me_mapsize) == 0)
            e->alloc = in.me_mapsize, rc = 0;
    }
    pthread_rwlock_unlock(&e->maplock);
    pthread_mutex_unlock(&e->grow_mu);
    return rc;
}

annal_err annal__index_open(annal__index *idx, const char *dir, int readonly, int create,
                            uint64_t mapsize, char *detail, size_t dlen) {
    memset(idx, 0, sizeof *idx);
    if (create) mkdir(dir, 0755);
    struct stat st;
    if (stat(dir, &st) < 0) {
        snprintf(detail, dlen, "cannot open index %s: %s", dir, strerror(errno));
        return errno == ENOENT ? ANNAL_ENOTFOUND : ANNAL_EIO;
    }
    idx->dir = strdup(dir);
    if (!idx->dir) return ANNAL_ENOMEM;
    annal_err rc = ANNAL_OK;
    pthread_mutex_lock(&g_envs_mu);
    shared_env *e = find_env(&st);
    if (e && !readonly && e->readonly) {
        snprintf(detail, dlen,
                 "the store is open read-only in this process: close those "
                 "handles before opening it for writing");
        rc = ANNAL_EBUSY;
    } else if (e) {
        e->refs++;
        if (!readonly && e->writemap && unsparse(e) != 0) {
            e->refs--;
            snprintf(detail, dlen, "cannot allocate the index map in %s", dir);
            rc = ANNAL_ENOSPC;
        }
    } else {
        int wm = 0;
        uint64_t alloc = 0;
        rc = open_env(idx, dir, readonly, mapsize, 1, &wm, &alloc, detail, dlen);
        e = rc == ANNAL_OK ? calloc(1, sizeof *e) : NULL;
        if (rc == ANNAL_OK && !e) rc = ANNAL_ENOMEM;
        if (rc == ANNAL_OK) {
            e->dev = st.st_dev, e->ino = st.st_ino, e->readonly = readonly, e->refs = 1;
            e->env = idx->env, e->meta = idx->meta, e->streams = idx->streams;
            e->revs = idx->revs, e->pos = idx->pos, e->cats = idx->cats, e->types = idx->types;
            e->tags = idx->tags;
            e->next = g_envs;
            /* A grower waiting blocks new transactions: readers cannot starve it. */
            pthread_rwlockattr_t ra;
            pthread_rwlockattr_init(&ra);
            pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
            pthread_rwlock_init(&e->maplock, &ra);
            pthread_rwlockattr_destroy(&ra);
            e->writemap = wm;
            e->cap = mapsize;
            pthread_mutex_init(&e->grow_mu, NULL);
            e->alloc = alloc;
            g_envs = e;
        } else if (idx->env) {
            mdb_env_close(idx->env);
            idx->env = NULL;
        }
    }
    if (rc == ANNAL_OK) {
        idx->shared = e;
        idx->env = e->env;
        idx->meta = e->meta, idx->streams = e->streams, idx->revs = e->revs;
        idx->pos = e->pos, idx->cats = e->cats, idx->types = e->types, idx->tags = e->tags;
    }
    pthread_mutex_unlock(&g_envs_mu);
    if (rc != ANNAL_OK) {
        free(idx->dir);
        idx->dir = NULL;
    }
    return rc;
}

void annal__index_close(annal__index *idx) {
    shared_env *e = idx->shared;
    if (e) {
        pthread_mutex_lock(&g_envs_mu);
        if (--e->refs == 0) {
            for (shared_env **p = &g_envs; *p; p = &(*p)->next)
                if (*p == e) {
                    *p = e->next;
                    break;
                }
            mdb_env_close(e->env);
            pthread_rwlock_destroy(&e->maplock);
            pthread_mutex_destroy(&e->grow_mu);
            free(e);
        }
        pthread_mutex_unlock(&g_envs_mu);
    }
    free(idx->dir);
    memset(idx, 0, sizeof *idx);
}

int annal__index_sync(annal__index *idx) { return mdb_env_sync(idx->env, 1); }

/* ---- transactions and the map ----------------------------------------------------- */

static pthread_rwlock_t *maplock(annal__index *idx) {
    return &((shared_env *)idx->shared)->maplock;
}

/* Another process's writer grew the data beyond this environment's map: LMDB refuses
 * new snapshots (MDB_MAP_RESIZED) until the map takes up the size the writer recorded,
 * which may be done only while no transaction of this process is active (maplock,
 * waited for 200 ms at most, as the grower does: a thread that holds a transaction
 * itself gets MDB_MAP_RESIZED back). */
static int adopt_map(annal__index *idx) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    if (pthread_rwlock_timedwrlock(maplock(idx), &ts) != 0) return MDB_MAP_RESIZED;
    int rc = mdb_env_set_mapsize(idx->env, 0);
    pthread_rwlock_unlock(maplock(idx));
    return rc;
}

int annal__txn_begin(annal__index *idx, unsigned flags, MDB_txn **t) {
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(maplock(idx));
        int rc = mdb_txn_begin(idx->env, NULL, flags, t);
        if (!rc) return 0;
        *t = NULL;
        pthread_rwlock_unlock(maplock(idx));
        if (rc != MDB_MAP_RESIZED || tries == 2 || (rc = adopt_map(idx)) != 0) return rc;
    }
}

int annal__txn_renew(annal__index *idx, MDB_txn *t) {
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(maplock(idx));
        int rc = mdb_txn_renew(t);
        if (!rc) return 0;
        pthread_rwlock_unlock(maplock(idx));
        if (rc != MDB_MAP_RESIZED || tries == 2 || (rc = adopt_map(idx)) != 0) return rc;
    }
}

void annal__txn_reset(annal__index *idx, MDB_txn *t) {
    mdb_txn_reset(t);
    pthread_rwlock_unlock(maplock(idx));
}

void annal__txn_abort(annal__index *idx, MDB_txn *t) {
    mdb_txn_abort(t);
    pthread_rwlock_unlock(maplock(idx));
}

int annal__txn_commit(annal__index *idx, MDB_txn *t) {
    int rc = mdb_txn_commit(t);
    pthread_rwlock_unlock(maplock(idx));
    return rc;
}

void annal__txn_free(MDB_txn *t) { mdb_txn_abort(t); }

uint64_t annal__index_room(annal__index *idx) {
    shared_env *e = idx->shared;
    if (!e->writemap) return UINT64_MAX;
    pthread_mutex_lock(&e->grow_mu);
    uint64_t used = used_of(idx->env), a = e->alloc;
    pthread_mutex_unlock(&e->grow_mu);
    return a > used ? a - used : 0;
}

int annal__index_writemap(const annal__index *idx) {
    return ((const shared_env *)idx->shared)->writemap;
}

uint64_t annal__index_need(annal__index *idx, uint64_t events, uint64_t bytes) {
    /* Per event, at worst a leaf copied in each table it has entries of (those of
     * streams and revisions are random), one of them split: 6 pages. But no transaction
     * copies more pages than there are, and it adds no more than its entries. */
    uint64_t used = idx->shared && ((shared_env *)idx->shared)->writemap ? used_of(idx->env) : 0;
    uint64_t copied = events * 6 * 4096, all = used + events * 256 + 2 * bytes;
    return (256u << 10) + 2 * bytes + (copied < all ? copied : all);
}

annal_err annal__index_grow(annal__index *idx, uint64_t need, int wait) {
    shared_env *e = idx->shared;
    if (!e->writemap) return ANNAL_OK;
    pthread_mutex_lock(&e->grow_mu);
    MDB_envinfo in;
    uint64_t used = used_of(idx->env);
    if (used == UINT64_MAX || mdb_env_info(idx->env, &in) != 0) {
        pthread_mutex_unlock(&e->grow_mu);
        return ANNAL_EIO;
    }
    uint64_t map = in.me_mapsize, slack = slack_of(used), must = used + need;
    /* The allocation first (no transaction need stop for it): need and the slack
     * beyond, growing by twice the slack so that this is rare. */
    int fd = -1;
    if (e->alloc < must + slack) {
        uint64_t want = round_mib(must + 2 * slack);
        if (want > e->cap) want = e->cap;
        if (want > e->alloc && mdb_env_get_fd(idx->env, &fd) == 0 &&
            posix_fallocate(fd, (off_t)e->alloc, (off_t)(want - e->alloc)) == 0)
            e->alloc = want;
    }
    /* Then the map: the allocation while catching up (a transaction that outgrows its
     * guess fails with MDB_MAP_FULL and is redone); after, a sparse headroom as large
     * as the allocation (256 MiB at least), so that a long read in this process, which
     * stops the map from moving, rarely keeps it from growing. */
    uint64_t head = !e->headroom ? 0 : e->alloc > MAP_HEAD ? e->alloc : MAP_HEAD;
    uint64_t target = round_mib(e->alloc + head), low = e->alloc + head / 2;
    if (target > e->cap) target = e->cap;
    if (map < low && target > map) {
        /* No transaction of this process may be active while LMDB remaps: wait for those
         * running to end (200 ms at most) if the map is nearly full or `wait`. */
        int tight = map < must + slack / 4;
        int r = pthread_rwlock_trywrlock(maplock(idx));
        if (r == EBUSY && (tight || wait)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200000000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            r = pthread_rwlock_timedwrlock(maplock(idx), &ts);
        }
        if (r == 0) {
            if (mdb_env_set_mapsize(idx->env, (size_t)target) == 0) map = target;
            pthread_rwlock_unlock(maplock(idx));
        }
    }
    /* A transaction may write up to need past what is used: that must be allocated,
     * unless all of the map is (then LMDB stops it with MDB_MAP_FULL). */
    annal_err rc = e->alloc >= must || e->alloc >= map ? ANNAL_OK : ANNAL_ENOSPC;
    pthread_mutex_unlock(&e->grow_mu);
    return rc;
}

void annal__index_headroom(annal__index *idx) {
    shared_env *e = idx->shared;
    pthread_mutex_lock(&e->grow_mu);
    e->headroom = 1;
    pthread_mutex_unlock(&e->grow_mu);
    (void)annal__index_grow(idx, 0, 1);
}

static MDB_val val(const void *p, size_t n) {
    MDB_val v = {n, (void *)p};
    return v;
}

annal_err annal__index_head_get(MDB_txn *t, const annal__index *idx, annal__index_head *h) {
    MDB_val k = val("head", 4), v;
    memset(h, 0, sizeof *h);
    int rc = mdb_get(t, idx->meta, &k, &v);
    if (rc == MDB_NOTFOUND) return ANNAL_OK; /* empty index */
    if (rc) return annal__index_err(rc);
    if (v.mv_size != 64) return ANNAL_ECORRUPT; /* an older layout too: rebuilt */
    const uint8_t *p = v.mv_data;
    h->version = annal__get64(p + 56);
    if (h->version != ANNAL__INDEX_VERSION) return ANNAL_ECORRUPT; /* a writer rebuilds it */
    h->restricted = annal__get64(p + 48);
    h->next_pos = annal__get64(p);
    h->next_loc = annal__get64(p + 8);
    h->next_stream_id = annal__get64(p + 16);
    h->streams = annal__get64(p + 24);
    h->last_ns = (int64_t)annal__get64(p + 32);
    h->last_loc = annal__get64(p + 40);
    return ANNAL_OK;
}

annal_err annal__index_head_put(MDB_txn *t, const annal__index *idx, const annal__index_head *h) {
    uint8_t b[64];
    annal__put64(b, h->next_pos);
    annal__put64(b + 8, h->next_loc);
    annal__put64(b + 16, h->next_stream_id);
    annal__put64(b + 24, h->streams);
    annal__put64(b + 32, (uint64_t)h->last_ns);
    annal__put64(b + 40, h->last_loc);
    annal__put64(b + 48, h->restricted);
    annal__put64(b + 56, ANNAL__INDEX_VERSION);
    MDB_val k = val("head", 4), v = val(b, sizeof b);
    return annal__index_err(mdb_put(t, idx->meta, &k, &v, 0));
}

annal_err annal__index_stream_get(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  annal__stream_rec *rec) {
    MDB_val k = val(name, len), v;
    int rc = mdb_get(t, idx->streams, &k, &v);
    if (rc) return annal__index_err(rc);
    return annal__stream_rec_decode(v.mv_data, v.mv_size, rec);
}

annal__stream_rec annal__stream_rec_new(uint64_t id, int64_t created_ns) {
    annal__stream_rec r = {id, 0, 0, created_ns, ANNAL__UNSET, ANNAL__UNSET, ANNAL__UNSET, 0};
    return r;
}

annal_err annal__stream_rec_decode(const void *data, size_t len, annal__stream_rec *rec) {
    if (len != ANNAL__STREAM_REC) return ANNAL_ECORRUPT;
    const uint8_t *p = data;
    rec->id = annal__get64(p);
    rec->count = annal__get64(p + 8);
    rec->last_pos = annal__get64(p + 16);
    rec->created_ns = (int64_t)annal__get64(p + 24);
    rec->tb = annal__get64(p + 32);
    rec->max_count = annal__get64(p + 40);
    rec->max_age = annal__get64(p + 48);
    rec->flags = annal__get64(p + 56);
    return ANNAL_OK;
}

annal_err annal__index_stream_put(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  const annal__stream_rec *rec) {
    uint8_t b[ANNAL__STREAM_REC];
    annal__put64(b, rec->id);
    annal__put64(b + 8, rec->count);
    annal__put64(b + 16, rec->last_pos);
    annal__put64(b + 24, (uint64_t)rec->created_ns);
    annal__put64(b + 32, rec->tb);
    annal__put64(b + 40, rec->max_count);
    annal__put64(b + 48, rec->max_age);
    annal__put64(b + 56, rec->flags);
    MDB_val k = val(name, len), v = val(b, sizeof b);
    return annal__index_err(mdb_put(t, idx->streams, &k, &v, 0));
}

void annal__rev_key(uint8_t out[ANNAL__REV_KEY], uint64_t stream_id, uint64_t rev) {
    annal__put64be(out, stream_id);
    annal__put64be(out + 8, rev);
}

void annal__block_encode(const annal__block *b, uint8_t out[ANNAL__BLOCK_VAL]) {
    annal__put64be(out, b->first_pos); /* big-endian: duplicates sort by position */
    annal__put64(out + 8, b->loc);
    annal__put64(out + 16, b->mask);
}

annal_err annal__block_decode(const void *p, size_t len, annal__block *b) {
    if (len != ANNAL__BLOCK_VAL) return ANNAL_ECORRUPT;
    b->first_pos = annal__get64be(p);
    b->loc = annal__get64((const uint8_t *)p + 8);
    b->mask = annal__get64((const uint8_t *)p + 16);
    return b->mask ? ANNAL_OK : ANNAL_ECORRUPT;
}

annal_err annal__index_rev_put(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                               const annal__block *b) {
    uint8_t vb[ANNAL__BLOCK_VAL], rk[ANNAL__REV_KEY];
    annal__block_encode(b, vb);
    annal__rev_key(rk, stream_id, b->first_rev);
    MDB_val k = val(rk, sizeof rk), v = val(vb, sizeof vb);
    return annal__index_err(mdb_put(t, idx->revs, &k, &v, 0));
}

annal_err annal__index_rev_block(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                                 uint64_t rev, annal__block *b) {
    uint8_t rk[ANNAL__REV_KEY];
    annal__rev_key(rk, stream_id, rev);
    MDB_val k = val(rk, sizeof rk), v;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, idx->revs, &c);
    if (rc) return annal__index_err(rc);
    /* the entry at or below (stream, rev) */
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    else if (rc == 0 && (k.mv_size != sizeof rk || memcmp(k.mv_data, rk, sizeof rk) != 0))
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    annal_err e = annal__index_err(rc);
    if (rc == 0 && k.mv_size != ANNAL__REV_KEY) e = ANNAL_ECORRUPT;
    if (e == ANNAL_OK) e = annal__block_decode(v.mv_data, v.mv_size, b);
    mdb_cursor_close(c);
    if (e != ANNAL_OK) return e;
    b->first_rev = annal__get64be((const uint8_t *)k.mv_data + 8);
    if (annal__get64be(k.mv_data) != stream_id || rev - b->first_rev >= 64 ||
        !(b->mask >> (rev - b->first_rev) & 1))
        return ANNAL_ENOTFOUND;
    return ANNAL_OK;
}

annal_err annal__index_pos_put(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t loc) {
    MDB_val k = val(&pos, 8), v = val(&loc, 8);
    int rc = mdb_put(t, idx->pos, &k, &v, MDB_APPEND);
    return annal__index_err(rc == MDB_KEYEXIST ? MDB_CORRUPTED : rc);
}

annal_err annal__index_rev_del(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                               uint64_t first_rev) {
    uint8_t rk[ANNAL__REV_KEY];
    annal__rev_key(rk, stream_id, first_rev);
    MDB_val k = val(rk, sizeof rk);
    return annal__index_err(mdb_del(t, idx->revs, &k, NULL));
}

annal_err annal__index_pos_move(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t loc) {
    MDB_val k = val(&pos, 8), v = val(&loc, 8);
    int r = loc ? mdb_put(t, idx->pos, &k, &v, 0) : mdb_del(t, idx->pos, &k, NULL);
    return r == MDB_NOTFOUND ? ANNAL_OK : annal__index_err(r);
}

annal_err annal__index_clear(MDB_txn *t, const annal__index *idx) {
    int rc = 0;
    MDB_dbi dbis[] = {idx->meta, idx->streams, idx->revs, idx->pos,
                      idx->cats, idx->types,   idx->tags};
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0] && rc == 0; i++)
        rc = mdb_drop(t, dbis[i], 0);
    MDB_dbi old; /* layout 2 kept event ids in LMDB */
    if (rc == 0 && mdb_dbi_open(t, "ids", 0, &old) == 0) rc = mdb_drop(t, old, 1);
    return annal__index_err(rc);
}

int annal__blocks_rev(MDB_txn *t, const annal__index *idx, uint64_t stream_id, uint64_t rev,
                      int backward, annal__blocks *w) {
    *w = (annal__blocks){.by_rev = 1, .backward = backward, .stream_id = stream_id};
    int mrc = mdb_cursor_open(t, idx->revs, &w->c);
    if (mrc) w->c = NULL;
    uint8_t *key = w->key;
    annal__rev_key(key, stream_id, rev);
    w->k = val(key, ANNAL__REV_KEY);
    if (!mrc) mrc = mdb_cursor_get(w->c, &w->k, &w->v, MDB_SET_RANGE);
    if (mrc == MDB_NOTFOUND) {
        mrc = mdb_cursor_get(w->c, &w->k, &w->v, MDB_LAST);
    } else if (!mrc &&
               (w->k.mv_size != ANNAL__REV_KEY || memcmp(w->k.mv_data, key, ANNAL__REV_KEY))) {
        mrc = mdb_cursor_get(w->c, &w->k, &w->v, MDB_PREV);
        if (mrc == MDB_NOTFOUND) mrc = mdb_cursor_get(w->c, &w->k, &w->v, MDB_FIRST);
    }
    return mrc;
}

int annal__blocks_tag(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                      int backward, annal__blocks *w) {
    *w = (annal__blocks){.backward = backward};
    int mrc = mdb_cursor_open(t, dbi, &w->c);
    if (mrc) w->c = NULL;
    if (!mrc) mrc = annal__index_tag_seek(w->c, name, len, pos, &w->v);
    return mrc;
}

int annal__blocks_tag_fwd(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                          annal__blocks *w) {
    *w = (annal__blocks){.backward = 0};
    int mrc = mdb_cursor_open(t, dbi, &w->c);
    if (mrc) {
        w->c = NULL;
        return mrc;
    }
    /* The name's newest block first: when it ends at or below pos, so do all the others
     * (the common case of a condition that holds: one lookup instead of a seek). */
    MDB_val k = val(name, len);
    mrc = mdb_cursor_get(w->c, &k, &w->v, MDB_SET_KEY);
    if (!mrc) mrc = mdb_cursor_get(w->c, &k, &w->v, MDB_LAST_DUP);
    annal__block b;
    if (!mrc && annal__block_decode(w->v.mv_data, w->v.mv_size, &b) != ANNAL_OK)
        mrc = MDB_CORRUPTED;
    if (!mrc && annal__block_end(&b) <= pos) mrc = MDB_NOTFOUND;
    if (!mrc) mrc = annal__index_tag_seek(w->c, name, len, pos, &w->v);
    return mrc;
}

int annal__blocks_get(const annal__blocks *w, annal__block *b, int *other) {
    *other = 0;
    if (annal__block_decode(w->v.mv_data, w->v.mv_size, b) ||
        (w->by_rev && w->k.mv_size != ANNAL__REV_KEY))
        return MDB_CORRUPTED;
    b->first_rev = 0;
    if (w->by_rev) {
        uint64_t sid = annal__get64be(w->k.mv_data);
        *other = sid < w->stream_id ? -1 : sid > w->stream_id;
        b->first_rev = annal__get64be((const uint8_t *)w->k.mv_data + 8);
    }
    return 0;
}

int annal__blocks_step(annal__blocks *w) {
    MDB_cursor_op step = w->by_rev ? (w->backward ? MDB_PREV : MDB_NEXT)
                                   : (w->backward ? MDB_PREV_DUP : MDB_NEXT_DUP);
    return mdb_cursor_get(w->c, &w->k, &w->v, step);
}

void annal__blocks_close(annal__blocks *w) {
    if (w->c) mdb_cursor_close(w->c);
    w->c = NULL;
}

int annal__index_stream_next(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                             int first, int (*skip)(const annal__stream_rec *),
                             char out[ANNAL_MAX_NAME + 1], size_t *out_len, annal__stream_rec *sr) {
    MDB_cursor *c = NULL;
    MDB_val k = val(name, len), v;
    int mrc = mdb_cursor_open(t, idx->streams, &c);
    if (mrc) return mrc;
    if (first || len == 0) {
        mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    } else {
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (!mrc && k.mv_size == len && !memcmp(k.mv_data, name, len))
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    while (!mrc && k.mv_size <= ANNAL_MAX_NAME &&
           annal__stream_rec_decode(v.mv_data, v.mv_size, sr) == ANNAL_OK && skip(sr))
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    if (!mrc && (k.mv_size > ANNAL_MAX_NAME || annal__stream_rec_decode(v.mv_data, v.mv_size, sr)))
        mrc = MDB_CORRUPTED;
    if (!mrc) {
        memcpy(out, k.mv_data, k.mv_size);
        out[k.mv_size] = 0;
        *out_len = k.mv_size;
    }
    mdb_cursor_close(c);
    return mrc;
}

size_t annal__category_len(const char *name, size_t len) {
    const char *dash = memchr(name, '-', len);
    return dash ? (size_t)(dash - name) : len;
}

annal_err annal__index_tag_put_many(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                    const uint8_t *vals, size_t n) {
    if (n == 0) return ANNAL_OK;
    /* New events have the highest positions: appending skips the search of the
     * duplicates. One block (a single-event append's) needs no cursor of its own (an
     * allocation per call): mdb_put keeps its cursor on the stack. */
    MDB_val k = val(name, len), d[2] = {{ANNAL__BLOCK_VAL, (void *)vals}, {n, NULL}};
    int rc;
    if (n == 1) {
        rc = mdb_put(t, dbi, &k, d, MDB_APPENDDUP);
    } else {
        MDB_cursor *c;
        rc = mdb_cursor_open(t, dbi, &c);
        if (rc) return annal__index_err(rc);
        rc = mdb_cursor_put(c, &k, d, MDB_MULTIPLE | MDB_APPENDDUP);
        mdb_cursor_close(c);
    }
    /* Not all above the existing entries: one by one (a repeated block is a no-op). */
    for (size_t i = 0; rc == MDB_KEYEXIST && i < n; i++) {
        MDB_val v = val(vals + i * ANNAL__BLOCK_VAL, ANNAL__BLOCK_VAL);
        rc = mdb_put(t, dbi, &k, &v, 0);
        if (rc == 0 && i + 1 < n) rc = MDB_KEYEXIST;
    }
    return annal__index_err(rc);
}

int annal__index_tag_seek(MDB_cursor *c, const char *name, size_t len, uint64_t pos, MDB_val *v) {
    uint8_t want[ANNAL__BLOCK_VAL] = {0};
    annal__put64be(want, pos);
    MDB_val k = val(name, len);
    *v = val(want, sizeof want);
    int rc = mdb_cursor_get(c, &k, v, MDB_GET_BOTH_RANGE); /* first block at or after pos */
    if (rc == MDB_NOTFOUND) {                              /* all below pos, or no such name */
        k = val(name, len);
        rc = mdb_cursor_get(c, &k, v, MDB_SET_KEY);
        if (rc == 0) rc = mdb_cursor_get(c, &k, v, MDB_LAST_DUP);
    } else if (rc == 0 && (v->mv_size != ANNAL__BLOCK_VAL || annal__get64be(v->mv_data) != pos)) {
        rc = mdb_cursor_get(c, &k, v, MDB_PREV_DUP);
        if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(c, &k, v, MDB_FIRST_DUP); /* none below */
    }
    return rc;
}

annal_err annal__index_tag_block(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                 uint64_t pos, annal__block *b) {
    MDB_cursor *c;
    MDB_val v;
    int rc = mdb_cursor_open(t, dbi, &c);
    if (rc) return annal__index_err(rc);
    rc = annal__index_tag_seek(c, name, len, pos, &v);
    annal_err e = rc ? annal__index_err(rc) : annal__block_decode(v.mv_data, v.mv_size, b);
    mdb_cursor_close(c);
    if (e == ANNAL_OK && !annal__block_has(b, pos)) e = ANNAL_ENOTFOUND;
    return e;
}

int annal__index_tag_count(MDB_cursor *c, const char *name, size_t len, uint64_t *n) {
    MDB_val k = val(name, len), v;
    size_t cnt = 0;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    if (rc == 0) rc = mdb_cursor_count(c, &cnt);
    *n = rc == 0 ? cnt : 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int annal__index_tag_at(MDB_cursor *c, const char *name, size_t len, uint64_t first_pos,
                        annal__block *b) {
    uint8_t want[ANNAL__BLOCK_VAL] = {0};
    annal__put64be(want, first_pos);
    MDB_val k = val(name, len), v = val(want, sizeof want);
    int rc = mdb_cursor_get(c, &k, &v, MDB_GET_BOTH_RANGE); /* first block at or after */
    if (rc == 0 && annal__block_decode(v.mv_data, v.mv_size, b) != ANNAL_OK) rc = MDB_CORRUPTED;
    if (rc == 0 && b->first_pos != first_pos) rc = MDB_NOTFOUND;
    return rc;
}

annal_err annal__index_tag_replace(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                   const annal__block *old, const annal__block *nb) {
    uint8_t ob[ANNAL__BLOCK_VAL];
    annal__block_encode(old, ob);
    MDB_val k = val(name, len), v = val(ob, sizeof ob);
    int rc = mdb_del(t, dbi, &k, &v);
    if (rc == 0 && nb->mask) {
        uint8_t vb[ANNAL__BLOCK_VAL];
        annal__block_encode(nb, vb);
        v = val(vb, sizeof vb);
        rc = mdb_put(t, dbi, &k, &v, 0);
    }
    return annal__index_err(rc);
}

static void gen_key(uint8_t k[9], uint64_t no) {
    k[0] = 'g';
    annal__put64be(k + 1, no);
}

annal_err annal__index_gen_get(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t *gen) {
    uint8_t kb[9];
    gen_key(kb, no);
    MDB_val k = val(kb, sizeof kb), v;
    int rc = mdb_get(t, idx->meta, &k, &v);
    *gen = 0;
    if (rc == MDB_NOTFOUND) return ANNAL_OK;
    if (rc) return annal__index_err(rc);
    if (v.mv_size != 4) return ANNAL_ECORRUPT;
    *gen = annal__get32(v.mv_data);
    return ANNAL_OK;
}

annal_err annal__index_gen_put(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t gen) {
    uint8_t kb[9], vb[4];
    gen_key(kb, no);
    annal__put32(vb, gen);
    MDB_val k = val(kb, sizeof kb), v = val(vb, sizeof vb);
    return annal__index_err(mdb_put(t, idx->meta, &k, &v, 0));
}

annal_err annal__index_compacting_get(MDB_txn *t, const annal__index *idx, uint64_t *no,
                                      uint32_t *gen) {
    MDB_val k = val("compacting", 10), v;
    int rc = mdb_get(t, idx->meta, &k, &v);
    if (rc) return annal__index_err(rc);
    if (v.mv_size != 12) return ANNAL_ECORRUPT;
    *no = annal__get64(v.mv_data);
    *gen = annal__get32((const uint8_t *)v.mv_data + 8);
    return ANNAL_OK;
}

annal_err annal__index_compacting_put(MDB_txn *t, const annal__index *idx, uint64_t no,
                                      uint32_t gen) {
    MDB_val k = val("compacting", 10);
    if (no == UINT64_MAX) {
        int rc = mdb_del(t, idx->meta, &k, NULL);
        return rc == MDB_NOTFOUND ? ANNAL_OK : annal__index_err(rc);
    }
    uint8_t b[12];
    annal__put64(b, no);
    annal__put32(b + 8, gen);
    MDB_val v = val(b, sizeof b);
    return annal__index_err(mdb_put(t, idx->meta, &k, &v, 0));
}

annal_err annal__index_pos_floor(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t *base,
                                 uint64_t *loc) {
    uint64_t b = pos - pos % ANNAL__POS_STRIDE;
    MDB_val k = val(&b, 8), v;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, idx->pos, &c);
    if (rc) return annal__index_err(rc);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    else if (rc == 0 && (k.mv_size != 8 || *(const uint64_t *)k.mv_data != b))
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    if (rc == 0 && (k.mv_size != 8 || v.mv_size != 8)) rc = MDB_CORRUPTED;
    if (rc == 0) {
        memcpy(base, k.mv_data, 8);
        *loc = annal__get64(v.mv_data);
    }
    mdb_cursor_close(c);
    return annal__index_err(rc);
}

/* Streams whose names start with '$' (the store's own, such as the metadata streams
 * `$$<stream>`) that have events, and those events: names sort bytewise, so they are
 * one range of the streams table. */
annal_err annal__index_system_streams(MDB_txn *t, const annal__index *idx, uint64_t *streams,
                                      uint64_t *events) {
    *streams = *events = 0;
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t, idx->streams, &c);
    if (rc) return annal__index_err(rc);
    static const char dollar = '$';
    MDB_val k = val(&dollar, 1), v;
    annal_err err = ANNAL_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         !rc && k.mv_size > 0 && *(const char *)k.mv_data == '$';
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        annal__stream_rec r;
        err = annal__stream_rec_decode(v.mv_data, v.mv_size, &r);
        if (err != ANNAL_OK) break;
        *streams += r.count > 0;
        *events += r.count;
    }
    mdb_cursor_close(c);
    if (err == ANNAL_OK && rc && rc != MDB_NOTFOUND) err = annal__index_err(rc);
    return err;
}

int annal__index_behind(MDB_txn *t, const annal__index *idx) {
    MDB_val k = val("behind", 6), v;
    return mdb_get(t, idx->meta, &k, &v) == 0;
}

annal_err annal__index_behind_put(MDB_txn *t, const annal__index *idx, int on) {
    MDB_val k = val("behind", 6);
    if (!on) {
        int rc = mdb_del(t, idx->meta, &k, NULL);
        return rc == MDB_NOTFOUND ? ANNAL_OK : annal__index_err(rc);
    }
    uint8_t b = 1;
    MDB_val v = val(&b, 1);
    return annal__index_err(mdb_put(t, idx->meta, &k, &v, 0));
}
