/* The store's top floor: opening (the directory, the writer lock, then recovery.c for a
 * writer), closing, info and rebuild-index. Everything it calls lies below it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"
#include "store/marker.h"
#include "store/notify.h"

/* ---- open / close ---------------------------------------------------------------- */

/* Take the writer lock of the store in dir. fd[1] holds a flock on the directory itself,
 * which deleting or replacing a file cannot take away; fd[0] one on DIR/lock, as older
 * versions take it, and our pid (a hint for the EBUSY message of the next would-be
 * writer). msg gets the reason of a failure; on failure both fds are closed. */
static annal_err lock_dir(const char *dir, int fd[2], char *msg, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    fd[1] = -1;
    fd[0] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd[0] < 0) {
        snprintf(msg, len, "cannot open %s: %s", path, strerror(errno));
        return errno == EACCES || errno == EPERM ? ANNAL_EPERM
               : errno == EROFS                  ? ANNAL_EREADONLY
                                                 : ANNAL_EIO;
    }
    fd[1] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd[1] < 0) {
        snprintf(msg, len, "cannot open %s: %s", dir, strerror(errno));
        close(fd[0]);
        fd[0] = -1;
        return ANNAL_EIO;
    }
    if (flock(fd[1], LOCK_EX | LOCK_NB) < 0 || flock(fd[0], LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = {0};
        ssize_t n = pread(fd[0], pid, sizeof pid - 1, 0);
        if (n > 0) pid[strcspn(pid, "\n")] = 0;
        snprintf(msg, len, "%s is open for writing by process %s", dir, n > 0 ? pid : "?");
        close(fd[0]);
        close(fd[1]);
        fd[0] = fd[1] = -1;
        return ANNAL_EBUSY;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd[0], 0) == 0 && pwrite(fd[0], pid, (size_t)n, 0) != n) {
        /* the pid is only a hint */
    }
    return ANNAL_OK;
}

static annal_err take_lock(annal_db *db) {
    char msg[4200];
    annal_err rc = lock_dir(db->dir, db->lock_fd, msg, sizeof msg);
    return rc == ANNAL_OK ? rc : annal__fail(db, rc, "%s", msg);
}

static annal_err check_opts(const annal_db_opts *o) {
    if (o->flags & ~(ANNAL_OPEN_CREATE | ANNAL_OPEN_READONLY | ANNAL_OPEN_NOSYNC))
        return ANNAL_EINVAL;
    if (o->segment_bytes < (64u << 10) || o->segment_bytes > (4ull << 30)) return ANNAL_EINVAL;
    if (o->max_event_bytes == 0 || o->max_event_bytes > (1ull << 30)) return ANNAL_EINVAL;
    if (o->max_batch_bytes == 0 || o->max_batch_events == 0) return ANNAL_EINVAL;
    if (o->index_map_bytes < (1u << 20)) return ANNAL_EINVAL;
    if (o->id_cache_events == 0 || o->id_cache_events > (1u << 28)) return ANNAL_EINVAL;
    return ANNAL_OK;
}

static annal_err open_writer(annal_db *db) {
    annal_err rc = take_lock(db);
    if (rc != ANNAL_OK) return rc;
    uint64_t mark = 0;
    rc = annal__acked_open(&db->acked, db->dir, &mark);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc, "cannot open %s/acked: %s", db->dir, strerror(errno));
    int in_use = annal__index_in_use(db->index_dir);
    if (in_use == 1)
        return annal__fail(db, ANNAL_EBUSY,
                           "%s is open read-only in this process: close those "
                           "handles before opening it for writing",
                           db->dir);
    char boot[40];
    annal__boot_id(boot);
    annal__index_state st;
    int trusted = 1;
    annal_err src = annal__index_state_read(db->index_dir, &st);
    if (src != ANNAL_ENOTFOUND && !(src == ANNAL_OK && (st.clean || !strcmp(st.boot_id, boot)))) {
        /* The index ran without fsync and the machine restarted (or the state is
         * unreadable): its pages may be torn. The log is the durable copy. */
        if (in_use)
            return annal__fail(db, ANNAL_EBUSY,
                               "%s needs its index rebuilt: close its other "
                               "handles in this process first",
                               db->dir);
        annal__log_msg(db, ANNAL_LOG_WARN,
                       "index was not closed cleanly before a restart: "
                       "rebuilding it from the log");
        trusted = 0;
        if (annal__index_remove(db->index_dir) < 0)
            return annal__fail(db, ANNAL_EIO, "cannot remove the old index in %s", db->index_dir);
        annal__ids_remove_all(db->index_dir);
    }
    mkdir(db->index_dir, 0755);
    annal__index_state now = {0, {0}};
    memcpy(now.boot_id, boot, sizeof boot);
    int r = annal__index_state_write(db->index_dir, &now);
    if (r < 0)
        return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO, "cannot write %s/state: %s",
                           db->index_dir, strerror(-r));
    char detail[512] = "";
    rc = annal__index_open(&db->idx, db->index_dir, 0, 1, db->opts.index_map_bytes, detail,
                           sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    rc = annal__settle_compaction(db, trusted);
    if (rc != ANNAL_OK) return rc;
    rc = annal__log_open(&db->log, db->io, db->dir, 0, 1, detail, sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    rc = annal__check_acknowledged(db, mark);
    if (rc != ANNAL_OK) return rc;
    if (db->log.nsegs > 0) /* the segment size is fixed when the store is created */
        db->opts.segment_bytes = db->log.segs[db->log.nsegs - 1]->cap;
    if (db->log.nsegs == 0) {
        annal__seg *s;
        r = annal__log_add(&db->log, 0, 0, db->opts.segment_bytes, &s);
        if (r < 0)
            return annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                               "cannot create the first segment: %s", strerror(-r));
    }
    uint64_t seg = 0, off = 0;
    rc = annal__catch_up(db, &seg, &off);
    if (rc != ANNAL_OK) return rc;
    annal__index_headroom(&db->idx);
    db->wseg = annal__log_seg(&db->log, seg);
    db->woff = off;
    rc = annal__ids_start_merger(db->ids, &db->idx, db->idx.meta);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot start the id index's merger");
    /* Preallocation off the append path. Not with a replaced io table: tests that inject
     * faults count on seeing every operation from the writer, in order. */
    if (db->io == annal__io_posix() && annal__log_start_grower(&db->log) < 0)
        return annal__fail(db, ANNAL_ENOMEM, "cannot start the log's preallocation thread");
    annal__log_grow_hint(&db->log, db->wseg, db->woff);
    __atomic_store_n(&db->visible, db->head.next_pos, __ATOMIC_RELEASE);
    /* The log as recovered is durable (catch-up read it back; a torn tail was cut and
     * flushed): it is the mark to compare against from now on. */
    if (db->head.next_pos > mark && (r = annal__acked_write(&db->acked, db->head.next_pos)) < 0)
        return annal__fail(db, ANNAL_EIO, "cannot write %s/acked: %s", db->dir, strerror(-r));
    if (!(db->opts.flags & ANNAL_OPEN_NOSYNC) && annal__acked_start(db) < 0)
        return annal__fail(db, ANNAL_ENOMEM, "cannot start the acknowledged-mark thread");
    return ANNAL_OK;
}

static annal_err open_reader(annal_db *db) {
    char boot[40], detail[512] = "";
    annal__boot_id(boot);
    annal__index_state st;
    annal_err rc = annal__index_state_read(db->index_dir, &st);
    if (rc == ANNAL_ENOTFOUND) return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
    if (rc != ANNAL_OK || (!st.clean && strcmp(st.boot_id, boot) != 0))
        return annal__fail(db, ANNAL_ECORRUPT,
                           "%s was not closed cleanly before a restart: "
                           "open it for writing once to recover it",
                           db->dir);
    rc = annal__index_open(&db->idx, db->index_dir, 1, 0, db->opts.index_map_bytes, detail,
                           sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    /* An index of another layout would be misread: only a writer rebuilds it. */
    MDB_txn *t = NULL;
    annal__index_head h;
    if ((rc = annal__read_txn(db, &t)) != ANNAL_OK) return rc;
    rc = annal__index_head_get(t, &db->idx, &h);
    annal__txn_abort(&db->idx, t);
    if (rc != ANNAL_OK && h.version != 0 && h.version != ANNAL__INDEX_VERSION)
        return annal__fail(db, ANNAL_EVERSION,
                           "the index of %s has layout %" PRIu64 " (this annal reads %d): open "
                           "the store for writing once, or run `annal rebuild-index`, to "
                           "rebuild it",
                           db->dir, h.version, ANNAL__INDEX_VERSION);
    if (rc != ANNAL_OK)
        return annal__fail(db, rc,
                           "the index head of %s is unreadable: open the store for "
                           "writing once to rebuild it",
                           db->dir);
    /* Never serve an index that is behind the log as if it were the whole store. */
    if ((rc = annal__read_txn(db, &t)) != ANNAL_OK) return rc;
    int behind = annal__index_behind(t, &db->idx);
    annal__txn_abort(&db->idx, t);
    if (behind)
        return annal__fail(db, ANNAL_EBUSY,
                           "the index of %s is being rebuilt from the log (or that was "
                           "interrupted): wait for the writer, or open the store for writing "
                           "once to finish it",
                           db->dir);
    rc = annal__log_open(&db->log, db->io, db->dir, 1, 0, detail, sizeof detail);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", detail);
    return ANNAL_OK;
}

/* A failed system call on the store's directory, with the code its errno deserves. */
static annal_err fail_errno(annal_db *db, int e, const char *what, const char *path) {
    annal_err code = e == EACCES || e == EPERM ? ANNAL_EPERM
                     : e == ENOTDIR            ? ANNAL_EINVAL
                     : e == ENOSPC             ? ANNAL_ENOSPC
                     : e == EROFS              ? ANNAL_EREADONLY
                     : e == ENOENT             ? ANNAL_ENOTFOUND
                                               : ANNAL_EIO;
    return annal__fail(db, code, "cannot %s %s: %s", what, path, strerror(e));
}

/* 1 if dir/name exists, 0 if not, else -errno. */
static int has_entry(const char *dir, const char *name) {
    char path[4096 + 16];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (stat(path, &st) == 0) return 1;
    return errno == ENOENT ? 0 : -errno;
}

/* May db->dir be opened as a store? A missing directory is made with ANNAL_OPEN_CREATE
 * (writers only). An existing one must hold a store (its log/ or index/: a writer
 * rebuilds a deleted index) or, to become one, be empty but for a lock file left by an
 * interrupted creation: pointed at a directory of other files (ANNAL_DATA=/), a writer
 * refuses rather than adding a store to it. */
static annal_err probe_dir(annal_db *db, unsigned flags) {
    int create = (flags & ANNAL_OPEN_CREATE) && !db->readonly;
    struct stat st;
    if (stat(db->dir, &st) < 0) {
        int e = errno;
        if (e == ENOENT && !create)
            return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
        if (e != ENOENT) return fail_errno(db, e, "access", db->dir);
        return mkdir(db->dir, 0755) == 0 ? ANNAL_OK : fail_errno(db, errno, "create", db->dir);
    }
    if (!S_ISDIR(st.st_mode))
        return annal__fail(db, ANNAL_EINVAL, "%s is not a directory", db->dir);
    int idx = has_entry(db->dir, "index"), log = idx < 0 ? 0 : has_entry(db->dir, "log");
    if (idx < 0 || log < 0) return fail_errno(db, idx < 0 ? -idx : -log, "access", db->dir);
    if (idx || (log && !db->readonly)) return ANNAL_OK;
    if (!create) return annal__fail(db, ANNAL_ENOTFOUND, "no store in %s", db->dir);
    DIR *d = opendir(db->dir);
    if (!d) return fail_errno(db, errno, "read", db->dir);
    const char *other = NULL;
    for (struct dirent *e; !other && (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock"))
            other = e->d_name;
    annal_err rc = ANNAL_OK;
    if (other)
        rc = annal__fail(db, ANNAL_EINVAL,
                         "%s is not empty (it holds %s) and is not a store: refusing to make it "
                         "one; use a new or empty directory",
                         db->dir, other);
    closedir(d);
    return rc;
}

/* Shared by annal_db_open, annal_recover_accept_loss and the tests, which pass a
 * fault-injecting io table. */
static annal_err db_open(const char *dir, const annal_db_opts *opts, const annal__io *io,
                         int accept_loss, annal_db **out) {
    if (!dir || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK || check_opts(&o) != ANNAL_OK) return ANNAL_EINVAL;
    annal_db *db = calloc(1, sizeof *db);
    if (!db) return ANNAL_ENOMEM;
    db->opts = o;
    db->io = io;
    db->lock_fd[0] = db->lock_fd[1] = -1;
    db->acked.fd = -1;
    db->accept_loss = accept_loss;
    db->readonly = (o.flags & ANNAL_OPEN_READONLY) != 0;
    db->rng = annal__rng_seed();
    pthread_mutex_init(&db->errmu, NULL);
    pthread_mutex_init(&db->wmu, NULL);
    pthread_mutex_init(&db->compact_mu, NULL);
    pthread_cond_init(&db->wcv, NULL);
    size_t n = strlen(dir) + 8;
    db->dir = strdup(dir);
    db->index_dir = malloc(n);
    if (!db->dir || !db->index_dir) {
        annal_db_close(db);
        return ANNAL_ENOMEM;
    }
    snprintf(db->index_dir, n, "%s/index", dir);
    annal_err rc = probe_dir(db, o.flags);
    if (rc != ANNAL_OK) goto fail;
    rc = db->readonly ? open_reader(db) : open_writer(db);
    if (rc != ANNAL_OK) goto fail;
    annal__notify_open(db); /* failure only degrades waits to short sleeps */
    *out = db;
    return ANNAL_OK;
fail:
    if (db->opts.log && rc != ANNAL_ENOTFOUND) {
        char generic[128];
        snprintf(generic, sizeof generic, "cannot open %s: %s", dir, annal_strerror(rc));
        annal__log_failure(db, generic);
    }
    annal_db_close(db);
    return rc;
}

annal_err annal__db_open_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            annal_db **out) {
    return db_open(dir, opts, io, 0, out);
}

annal_err annal_db_open(const char *dir, const annal_db_opts *opts, annal_db **out) {
    if (dir && out && annal__backup_incomplete(dir)) { /* a copy cut short (store/marker.h) */
        *out = NULL;
        if (opts && opts->struct_size >= offsetof(annal_db_opts, log_ctx) + sizeof(void *) &&
            opts->log) {
            char m[4200];
            snprintf(m, sizeof m, "%s is a backup or restore that did not finish: not a store",
                     dir);
            opts->log(opts->log_ctx, ANNAL_LOG_ERROR, m);
        }
        return ANNAL_ECORRUPT;
    }
    return db_open(dir, opts, annal__io_posix(), 0, out);
}

annal_err annal__recover_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            uint64_t *lost_from, uint64_t *lost_count) {
    if (!dir) return ANNAL_EINVAL;
    if (lost_from) *lost_from = 0;
    if (lost_count) *lost_count = 0;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK) return ANNAL_EINVAL;
    struct stat st;
    char logdir[4096];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    if (stat(logdir, &st) < 0 || !S_ISDIR(st.st_mode)) return ANNAL_ENOTFOUND;
    o.flags &= ~ANNAL_OPEN_READONLY;
    o.flags |= ANNAL_OPEN_CREATE; /* (of the index, when it was lost too) */
    annal_db *db = NULL;
    annal_err rc = db_open(dir, &o, io, 1, &db);
    if (rc == ANNAL_OK && lost_from) *lost_from = db->lost_from;
    if (rc == ANNAL_OK && lost_count) *lost_count = db->lost_to - db->lost_from;
    annal_db_close(db);
    return rc;
}

annal_err annal_recover_accept_loss(const char *dir, const annal_db_opts *opts, uint64_t *lost_from,
                                    uint64_t *lost_count) {
    return annal__recover_io(dir, opts, annal__io_posix(), lost_from, lost_count);
}

void annal_db_close(annal_db *db) {
    if (!db) return;
    if (!db->readonly && db->wseg && (db->opts.flags & ANNAL_OPEN_NOSYNC))
        annal_db_sync(db); /* a non-durable handle becomes durable at close */
    if (db->ids) annal__ids_stop_merger(db->ids); /* before the run list is touched */
    /* The thread stops first: the last mark is ours. (A NOSYNC handle's visible events
     * are durable only if annal_db_sync, above, succeeded: it wrote the mark then.) */
    annal__acked_close(&db->acked);
    if (!db->readonly && db->wseg && !(db->opts.flags & ANNAL_OPEN_NOSYNC))
        (void)annal__acked_write(&db->acked, __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE));
    annal__acked_release(&db->acked);
    int clean = !db->readonly && db->idx.env && db->failed == ANNAL_OK;
    /* A big memtable is written out so that the next open need not reread its events
     * from the log; a small one is cheaper to reread than a run per open/close cycle. */
    if (clean && db->ids && annal__ids_mem_count(db->ids) >= db->opts.id_cache_events / 16)
        annal__flush_ids(db);
    if (clean && db->ids && annal__ids_sync(db->ids) < 0) clean = 0;
    if (clean && annal__index_sync(&db->idx) == 0) {
        annal__index_state st = {1, {0}};
        annal__boot_id(st.boot_id);
        annal__index_state_write(db->index_dir, &st);
    }
    annal__notify_close(db);
    annal__ids_close(db->ids);
    annal__batch_free(&db->batch);
    if (db->idx.env) annal__index_close(&db->idx);
    if (db->log.dir) annal__log_close(&db->log);
    for (int i = 0; i < 2; i++)
        if (db->lock_fd[i] >= 0) close(db->lock_fd[i]); /* releases the flocks */
    annal__errs_free(db);
    free(db->buf);
    free(db->dir);
    free(db->index_dir);
    pthread_mutex_destroy(&db->errmu);
    pthread_mutex_destroy(&db->wmu);
    pthread_mutex_destroy(&db->compact_mu);
    pthread_cond_destroy(&db->wcv);
    free(db);
}

annal_err annal_rebuild_index(const char *dir, const annal_db_opts *opts) {
    if (!dir) return ANNAL_EINVAL;
    struct stat st;
    char logdir[4096];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    if (stat(logdir, &st) < 0 || !S_ISDIR(st.st_mode)) return ANNAL_ENOTFOUND;
    annal_db_opts o;
    if (annal__db_opts_in(opts, &o) != ANNAL_OK) return ANNAL_EINVAL;
    o.flags &= ~(ANNAL_OPEN_READONLY | ANNAL_OPEN_CREATE);
    /* Hold the writer lock while the index files are removed, then let a normal open
     * index the whole log. */
    int fd[2] = {-1, -1};
    char msg[4200];
    annal_err rc = lock_dir(dir, fd, msg, sizeof msg);
    char idir[4096];
    snprintf(idir, sizeof idir, "%s/index", dir);
    if (rc == ANNAL_OK && annal__index_in_use(idir)) rc = ANNAL_EBUSY; /* a handle here */
    if (rc == ANNAL_OK && annal__index_remove(idir) < 0) rc = ANNAL_EIO;
    if (rc == ANNAL_OK) annal__ids_remove_all(idir);
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0) close(fd[i]);
    if (rc != ANNAL_OK) return rc;
    /* A race with another writer opening between the two steps is harmless: it would
     * rebuild the index itself, and our open then waits for nothing but fails EBUSY. */
    annal_db *db = NULL;
    rc = annal_db_open(dir, &o, &db);
    annal_db_close(db);
    return rc;
}

static annal_err info_get(annal_db *db, annal_db_info *out) {
    memset(out, 0, sizeof *out);
    MDB_txn *t;
    annal_err rc = annal__read_txn(db, &t);
    if (rc != ANNAL_OK) return rc;
    annal__index_head h;
    rc = annal__index_head_get(t, &db->idx, &h);
    if (rc == ANNAL_OK)
        rc = annal__index_system_streams(t, &db->idx, &out->system_streams, &out->system_events);
    annal__txn_abort(&db->idx, t);
    if (rc != ANNAL_OK) return annal__fail(db, rc, "cannot read the index head");
    out->events = db->readonly ? h.next_pos : annal__visible(db, NULL);
    out->streams = h.streams;
    out->last_ns = h.last_ns;
    out->readonly = db->readonly;
    if (h.next_pos > 0) {
        /* Used bytes: the tail offset of the last segment plus the sizes of the ones
         * before it (an upper bound for those: they end in zeros when sealed early). */
        uint64_t seg = ANNAL__LOC_SEG(h.next_loc);
        out->log_bytes = ANNAL__LOC_OFF(h.next_loc);
        for (uint64_t s = db->log.base; s < seg; s++) {
            annal__seg *sp = annal__log_seg(&db->log, s);
            if (sp) out->log_bytes += __atomic_load_n(&sp->size, __ATOMIC_ACQUIRE);
        }
        annal__log_seg(&db->log, seg); /* a read-only handle learns of new segments */
    }
    pthread_mutex_lock(&db->log.mu);
    out->segments = db->log.nsegs;
    for (size_t i = 0; i < db->log.nsegs; i++) {
        annal__seg *sp = db->log.segs[i];
        uint64_t sz = __atomic_load_n(&sp->size, __ATOMIC_ACQUIRE); /* sealed: final */
        if (sp->fd >= 0) db->io->size(db->io->ctx, sp->fd, &sz);
        out->disk_bytes += sz;
    }
    pthread_mutex_unlock(&db->log.mu);
    struct stat st;
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", db->index_dir);
    if (stat(path, &st) == 0) out->index_bytes = (uint64_t)st.st_blocks * 512;
    DIR *d = opendir(db->index_dir); /* and the event-id runs beside it */
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "ids-", 4) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", db->index_dir, e->d_name);
        if (stat(path, &st) == 0) out->index_bytes += (uint64_t)st.st_blocks * 512;
    }
    if (d) closedir(d);
    out->disk_bytes += out->index_bytes;
    return ANNAL_OK;
}

annal_err annal_db_info_get_sized(annal_db *db, annal_db_info *out, size_t out_size) {
    if (!db || !out) return ANNAL_EINVAL;
    annal_db_info full;
    annal_err rc = info_get(db, &full);
    if (rc == ANNAL_OK) annal__out_copy(out, out_size, &full, sizeof full);
    return rc;
}
