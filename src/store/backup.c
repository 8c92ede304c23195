/* Online backup and point-in-time restore of a store (docs/operations.md). A backup is
 * the log as of one position P — sealed segments whole, the active one up to P — copied
 * while writers, readers and compaction go on, with an index; a marker names P and is
 * written last, so a backup killed at any moment never looks complete.
 *
 * Why it is consistent: the log is append-only and a committed index head names where
 * its last record ends (every byte before it was written before the head committed).
 * Segments are read through this handle's descriptors, which keep a generation readable
 * after compaction unlinks it; any generation of a sealed segment holds the same visible
 * events. The index of a first backup into DEST is LMDB's copy of a snapshot taken
 * before P is read (on a second thread, while the sealed segments are copied), so its
 * head is at most P and the copy's first open indexes the rest from the copied log; it
 * is used only when it names the generations copied (no compaction meanwhile), else the
 * index is built in the copy from the copied log, as an incremental backup brings DEST's
 * own index up to date. Copying is faster than rebuilding (bench/RESULTS.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"
#include "store/marker.h"

#define COPY_CHUNK            (1u << 20)
#define ANNAL_EAGAIN_INTERNAL ((annal_err)-1) /* backup(): start over from a new head */
#define BACKUP_TRIES          8

/* Detail for a caller's buffer (cut short when it does not fit). */
__attribute__((format(printf, 3, 4))) static void say(char *msg, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
}

annal_err annal_backup_check(const char *dir, uint64_t *next_position) {
    if (!dir) return ANNAL_EINVAL;
    annal__manifest m;
    int r = annal__manifest_read(dir, &m);
    if (r == -ENOENT || r == -ENOTDIR) return ANNAL_ENOTFOUND;
    if (r < 0 || annal__backup_incomplete(dir)) return ANNAL_ECORRUPT;
    if (next_position) *next_position = m.next_pos;
    return ANNAL_OK;
}

/* ---- copying ------------------------------------------------------------------------ */

static annal_err err_of(int r) {
    return r == -ENOSPC || r == -EDQUOT  ? ANNAL_ENOSPC
           : r == -EACCES || r == -EPERM ? ANNAL_EPERM
           : r == -EROFS                 ? ANNAL_EREADONLY
                                         : ANNAL_EIO;
}

/* Bytes [off, off + n) of segment s into buf: from its file, or, for a sealed segment
 * whose descriptor was let go once it was mapped (compaction may since have replaced its
 * file), from its mapping, which stays valid until the log closes. */
static int seg_read(const annal__seg *s, uint8_t *buf, size_t n, uint64_t off) {
    if (s->fd >= 0) return annal__io_read_all(annal__io_posix(), s->fd, buf, n, off);
    memcpy(buf, s->map + off, n);
    return 0;
}

/* Write-behind: once the bytes before at + n of dst are written, start the writeback of
 * each whole WB_CHUNK and wait for the one before it. The copy then holds at most two
 * chunks dirty (not gigabytes of page cache) and its final fdatasync has little left to
 * do. (Measured: it neither spares nor slows appenders on the same disk.) */
#define WB_CHUNK (8u << 20)
static void write_behind(int dst, uint64_t start, uint64_t at, uint64_t n, uint64_t *mark) {
    uint64_t end = at + n;
    while (end - *mark >= WB_CHUNK) {
        (void)sync_file_range(dst, (off64_t)*mark, WB_CHUNK, SYNC_FILE_RANGE_WRITE);
        if (*mark >= start + WB_CHUNK)
            (void)sync_file_range(dst, (off64_t)(*mark - WB_CHUNK), WB_CHUNK,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER);
        *mark += WB_CHUNK;
    }
}

/* A backup's rate limit (annal_backup_opts.bytes_per_s): bytes copied since start. */
typedef struct pace {
    uint64_t bytes_per_s; /* 0: none */
    int64_t start;
    uint64_t bytes;
} pace;

static void pace_add(pace *p, uint64_t n) {
    if (!p || !p->bytes_per_s) return;
    p->bytes += n;
    int64_t due = p->start + (int64_t)((double)p->bytes * 1e9 / (double)p->bytes_per_s);
    int64_t now = annal__mono_ns();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000000000), (long)((due - now) % 1000000000)};
        nanosleep(&ts, NULL);
    }
}

/* Copy [from, to) of segment s into dst at the same offsets: in the kernel
 * (copy_file_range, which reflinks where the filesystem can), from its mapping when it
 * has no descriptor, or through a buffer. 0 or -errno. */
static int copy_range(const annal__seg *s, int dst, uint64_t from, uint64_t to, uint64_t *copied,
                      pace *pc) {
    int kernel = s->fd >= 0;
    uint8_t *buf = NULL;
    int r = 0;
    uint64_t start = from, mark = from;
    while (from < to && r == 0) {
        write_behind(dst, start, from, 0, &mark);
        size_t want = to - from > WB_CHUNK ? WB_CHUNK : (size_t)(to - from);
        if (kernel) {
            loff_t in = (loff_t)from, out = (loff_t)from;
            ssize_t n = copy_file_range(s->fd, &in, dst, &out, want, 0);
            if (n > 0) {
                from += (uint64_t)n;
                *copied += (uint64_t)n;
                pace_add(pc, (uint64_t)n);
                continue;
            }
            /* 0: some filesystems copy nothing rather than fail; the buffered copy
             * below tells a short file from that. */
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno != EXDEV && errno != EINVAL && errno != ENOSYS &&
                errno != EOPNOTSUPP) {
                r = -errno;
                break;
            }
            kernel = 0;
        }
        size_t n = want > COPY_CHUNK ? COPY_CHUNK : want;
        if (s->fd < 0) {
            r = annal__io_write_all(annal__io_posix(), dst, s->map + from, n, from);
        } else {
            if (!buf && !(buf = malloc(COPY_CHUNK))) return -ENOMEM;
            r = seg_read(s, buf, n, from);
            if (r == 0) r = annal__io_write_all(annal__io_posix(), dst, buf, n, from);
        }
        from += n;
        *copied += n;
        pace_add(pc, n);
    }
    free(buf);
    return r;
}

/* ---- the tar stream (POSIX ustar) --------------------------------------------------- */

typedef struct tar {
    int (*write)(void *ctx, const void *buf, size_t len);
    void *ctx;
} tar;

static int tar_put(tar *t, const void *p, size_t n) {
    return t->write(t->ctx, p, n) < 0 ? -EIO : 0;
}

/* n as width octal digits and a NUL (ustar numbers; ours fit: segments < 8 GiB). */
static void octal(uint8_t *p, int width, uint64_t n) {
    p[width] = 0;
    for (int i = width - 1; i >= 0; i--, n >>= 3) p[i] = (uint8_t)('0' + (n & 7));
}

static int tar_header(tar *t, const char *name, uint64_t size, int dir, int64_t mtime) {
    uint8_t h[512] = {0};
    snprintf((char *)h, 100, "%s", name);
    octal(h + 100, 7, dir ? 0755 : 0644);
    octal(h + 108, 7, 0);
    octal(h + 116, 7, 0);
    octal(h + 124, 11, size);
    octal(h + 136, 11, (uint64_t)(mtime > 0 ? mtime : 0));
    memset(h + 148, ' ', 8); /* the checksum counts its own field as spaces */
    h[156] = dir ? '5' : '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof h; i++) sum += h[i];
    octal(h + 148, 6, sum);
    h[155] = ' ';
    return tar_put(t, h, sizeof h);
}

static int tar_pad(tar *t, uint64_t size) {
    static const uint8_t zeros[512];
    return size % 512 ? tar_put(t, zeros, 512 - size % 512) : 0;
}

static int tar_text(tar *t, const char *name, const char *text, int64_t mtime) {
    size_t n = strlen(text);
    int r = tar_header(t, name, n, 0, mtime);
    if (r == 0) r = tar_put(t, text, n);
    return r == 0 ? tar_pad(t, n) : r;
}

static int tar_file(tar *t, const char *name, const annal__seg *seg, uint64_t size, int64_t mtime,
                    uint64_t *copied, pace *pc) {
    int r = tar_header(t, name, size, 0, mtime);
    uint8_t *buf = r == 0 ? malloc(COPY_CHUNK) : NULL;
    if (r == 0 && !buf) r = -ENOMEM;
    for (uint64_t off = 0; r == 0 && off < size;) {
        size_t n = size - off > COPY_CHUNK ? COPY_CHUNK : (size_t)(size - off);
        r = seg_read(seg, buf, n, off);
        if (r == 0) r = tar_put(t, buf, n);
        off += n;
        *copied += n;
        pace_add(pc, n);
    }
    free(buf);
    return r == 0 ? tar_pad(t, size) : r;
}

/* ---- the backup --------------------------------------------------------------------- */

static void backup_opts_defaults(annal_backup_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

void annal_backup_opts_init_sized(annal_backup_opts *o, size_t size) {
    annal_backup_opts d;
    backup_opts_defaults(&d);
    annal__opts_out(o, size, &d, sizeof d);
}

static void restore_opts_defaults(annal_restore_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->to_position = UINT64_MAX;
    o->to_time_ns = INT64_MAX;
}

void annal_restore_opts_init_sized(annal_restore_opts *o, size_t size) {
    annal_restore_opts d;
    restore_opts_defaults(&d);
    annal__opts_out(o, size, &d, sizeof d);
}

/* The file-operation table of the copies: POSIX, but not the same pointer, so a writer
 * opened on a copy to index it runs no preallocation thread (a backup ends where its
 * data ends, and the next incremental copy appends there). */
static annal__io g_copy_io; /* a constant once made: a copy of the POSIX table */
static pthread_once_t g_copy_once = PTHREAD_ONCE_INIT;
static void copy_io_init(void) { g_copy_io = *annal__io_posix(); }
static const annal__io *copy_io(void) {
    pthread_once(&g_copy_once, copy_io_init);
    return &g_copy_io;
}

/* Index the log in dir (a copy), so that it opens as a store, read-only too: a writer
 * open indexes what the index lacks (all of it when rm_index) and, as it finds the log
 * ends at next_pos, writes DIR/acked for it, then closes cleanly. */
static annal_err index_copy(const char *dir, int rm_index, char *msg, size_t len) {
    char path[4200];
    snprintf(path, sizeof path, "%s/acked", dir);
    unlink(path); /* a mark of an earlier copy is not evidence about this one */
    snprintf(path, sizeof path, "%s/index/data.mdb.tmp", dir);
    unlink(path); /* an index copy cut short (index_copy_lmdb) */
    snprintf(path, sizeof path, "%s/index", dir);
    if (rm_index) { /* the whole index: LMDB's files and the id runs beside them */
        annal__index_remove(path);
        annal__ids_remove_all(path);
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    annal_db *db = NULL;
    annal_err rc = annal__db_open_io(dir, &o, copy_io(), &db);
    if (rc != ANNAL_OK)
        say(msg, len, "cannot index the copy in %s: %s", dir,
            db ? annal_db_errmsg(db) : annal_strerror(rc));
    annal_db_close(db);
    return rc;
}

typedef struct bk {
    annal_db *db;
    const char *dest;
    char logdir[4200];
    annal_backup_opts o;
    annal_backup_result res;
    annal__seg_file *have; /* segment files in DEST/log */
    size_t nhave;
    int rm_index;       /* a file of DEST changed other than by growing: index it anew */
    int index_copied;   /* DEST/index is a copy of the source's (head_with_index) */
    int index_tried;    /* a try made one (kept across tries) */
    uint32_t *gen;      /* then: the generation of each segment as of that copy */
    uint32_t *cgen;     /* the generation copied of each segment before P was read */
    uint64_t done_upto; /* segments below it copied before P was read */
    uint64_t pre_no;    /* the last segment this handle knew before reading P, */
    uint32_t pre_gen;   /* and its generation (head_read) */
    tar t;
    int64_t now;
    pace pace;
} bk;

/* Copy segment s, bytes [0, end), into DEST (or the tar stream). */
static annal_err copy_seg(bk *b, annal__seg *s, uint64_t end, int sealed) {
    char dst[4200], name[64];
    annal__log names = {.dir = b->logdir};
    annal__seg_path(&names, s->no, s->gen, 0, dst, sizeof dst);
    snprintf(name, sizeof name, "log/%s", strrchr(dst, '/') + 1);
    b->res.segments++;
    if (b->t.write) {
        int r = tar_file(&b->t, name, s, end, b->now / 1000000000, &b->res.bytes_copied, &b->pace);
        if (r < 0)
            return annal__fail(b->db, err_of(r), "cannot write the tar stream: %s", strerror(-r));
        b->res.segments_copied++;
        return ANNAL_OK;
    }
    uint64_t have = 0; /* bytes DEST already holds of this generation */
    int found = 0;
    for (size_t i = 0; i < b->nhave; i++) {
        if (b->have[i].no != s->no || b->have[i].tmp) continue;
        if (b->have[i].gen == s->gen) {
            struct stat st;
            int ok = stat(dst, &st) == 0;
            have = ok ? (uint64_t)st.st_size : 0;
            found = 1;
            b->have[i].tmp = 2; /* kept */
            /* A hard link (--link) is never written through: it may be another store's
             * segment (DEST of an interrupted backup of that store). Copied anew. */
            if (ok && st.st_nlink > 1 && have != end) {
                if (unlink(dst) < 0)
                    return annal__fail(b->db, err_of(-errno), "cannot remove %s: %s", dst,
                                       strerror(errno));
                have = 0, found = 0;
                b->rm_index = 1;
            }
        } else {
            b->rm_index = 1; /* compaction made another generation since */
        }
    }
    if (found && have == end) return ANNAL_OK; /* a sealed segment copied before */
    if (found && have > end) { /* more than P: a copy interrupted later than this one ends */
        if (truncate(dst, (off_t)end) < 0)
            return annal__fail(b->db, err_of(-errno), "cannot truncate %s: %s", dst,
                               strerror(errno));
        b->rm_index = 1;
        return ANNAL_OK;
    }
    if (!found && sealed && (b->o.flags & ANNAL_BACKUP_LINK)) {
        char src[4200];
        annal__seg_path(&b->db->log, s->no, s->gen, 0, src, sizeof src);
        if (link(src, dst) == 0) {
            b->res.segments_copied++;
            b->res.bytes_linked += end;
            return ANNAL_OK;
        } /* another filesystem, or the generation was replaced meanwhile: copy it */
    }
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return annal__fail(b->db, err_of(-errno), "cannot create %s: %s", dst, strerror(errno));
    uint64_t from = have;
    int r = copy_range(s, fd, from, end, &b->res.bytes_copied, &b->pace);
    if (r == 0 && fdatasync(fd) < 0) r = -errno;
    close(fd);
    if (r < 0) return annal__fail(b->db, err_of(r), "cannot copy %s: %s", dst, strerror(-r));
    b->res.segments_copied++;
    return ANNAL_OK;
}

/* ---- the index, copied --------------------------------------------------------------- */

/* The compaction marker and the generations of segments [base, last] in t: 0, or 1 when a
 * compaction was under way (its index entries may point into a file not copied). */
static int gens_get(annal_db *db, MDB_txn *t, uint64_t base, uint64_t last, uint32_t *gen) {
    uint64_t no;
    uint32_t g;
    if (annal__index_compacting_get(t, &db->idx, &no, &g) == ANNAL_OK) return 1;
    for (uint64_t i = base; i <= last; i++)
        if (annal__index_gen_get(t, &db->idx, i, &gen[i - base]) != ANNAL_OK) gen[i - base] = 0;
    return 0;
}

/* Copy file from (whole) to to, flushed. 0 or -errno. */
static int copy_file(const char *from, const char *to, uint64_t *copied) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -errno;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct stat st;
    int r = out < 0 || fstat(in, &st) < 0 ? -errno : 0;
    annal__seg file = {.fd = in};
    if (r == 0) r = copy_range(&file, out, 0, (uint64_t)st.st_size, copied, NULL);
    if (r == 0 && fdatasync(out) < 0) r = -errno;
    if (out >= 0) close(out);
    close(in);
    return r;
}

/* The index into DEST/index as of one LMDB snapshot: LMDB's own copy of its pages, then
 * the id runs (immutable files; one merged away meanwhile makes the copy's first open
 * rebuild its id index), and a state that says clean. The snapshot is taken while t1 is
 * open and before the head is read, so its head is at most P: the copy's first open
 * indexes the rest from the copied log. 0 or -errno. */
static int index_copy_lmdb(bk *b, uint64_t *copied) {
    char dir[4200], path[4500], tmp[4500];
    snprintf(dir, sizeof dir, "%s/index", b->dest);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return -errno;
    annal__index_remove(dir);
    annal__ids_remove_all(dir);
    snprintf(path, sizeof path, "%s/state", dir);
    unlink(path); /* vouches for nothing copied now */
    /* LMDB's pages under a tmp name, renamed last: a copy cut short (killed, full disk)
     * is never taken for an index (LMDB writes its meta pages first). */
    snprintf(tmp, sizeof tmp, "%s/data.mdb.tmp", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    /* Under a transaction of ours: the map is adopted first if another process's writer
     * grew it, and a writer of this process cannot resize it under the copy. */
    MDB_txn *hold = NULL;
    int mrc = annal__txn_begin(&b->db->idx, MDB_RDONLY, &hold);
    if (!mrc) mrc = mdb_env_copyfd2(b->db->idx.env, fd, 0 /* (MDB_CP_COMPACT: no faster here) */);
    if (hold) annal__txn_abort(&b->db->idx, hold);
    int r = mrc ? (mrc > 0 ? -mrc : -EIO) : 0;
    struct stat st;
    if (r == 0 && fstat(fd, &st) == 0) *copied += (uint64_t)st.st_size;
    if (r == 0 && fdatasync(fd) < 0) r = -errno;
    close(fd);
    DIR *d = r == 0 ? opendir(b->db->index_dir) : NULL;
    for (struct dirent *e; d && r == 0 && (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "ids-", 4) != 0 || n < 8 || strcmp(e->d_name + n - 4, ".run") != 0)
            continue;
        char from[4300];
        snprintf(from, sizeof from, "%s/%s", b->db->index_dir, e->d_name);
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        r = copy_file(from, path, copied);
        if (r == -ENOENT) r = 0; /* merged away since: see above */
    }
    if (d) closedir(d);
    annal__index_state clean = {1, {0}};
    if (r == 0) r = annal__index_state_write(dir, &clean);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (r == 0 && rename(tmp, path) < 0) r = -errno;
    if (r == 0) r = annal__io_posix()->sync_dir(NULL, dir);
    if (r < 0) unlink(tmp);
    return r;
}

/* Remove the segment files of DEST that are not part of this backup. */
static annal_err drop_others(bk *b) {
    annal__log names = {.dir = b->logdir};
    for (size_t i = 0; i < b->nhave; i++) {
        if (b->have[i].tmp == 2) continue;
        char path[4200];
        annal__seg_path(&names, b->have[i].no, b->have[i].gen, b->have[i].tmp, path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            return annal__fail(b->db, ANNAL_EIO, "cannot remove %s: %s", path, strerror(errno));
        b->rm_index = 1;
    }
    return ANNAL_OK;
}

/* The marker last, once everything it vouches for is durable (a tar stream: its last
 * member; a cut stream has none). */
static annal_err finish(bk *b, const annal__manifest *m) {
    annal_db *db = b->db;
    char text[512];
    annal__manifest_text(m, text, sizeof text);
    if (b->t.write) {
        static const uint8_t zeros[1024];
        int r = tar_text(&b->t, ANNAL__BACKUP_MANIFEST, text, b->now / 1000000000);
        if (r == 0) r = tar_put(&b->t, zeros, sizeof zeros);
        return r == 0 ? ANNAL_OK : annal__fail(db, ANNAL_EIO, "cannot write the tar stream");
    }
    annal_err rc = drop_others(b);
    if (rc != ANNAL_OK) return rc;
    int r = annal__io_posix()->sync_dir(NULL, b->logdir);
    if (r < 0) return annal__fail(db, err_of(r), "cannot flush %s: %s", b->logdir, strerror(-r));
    if (!(b->o.flags & ANNAL_BACKUP_NO_INDEX)) {
        char msg[600];
        b->res.index_copied = b->index_copied && !b->rm_index;
        rc = index_copy(b->dest, b->rm_index, msg, sizeof msg);
        if (rc != ANNAL_OK) return annal__fail(db, rc, "%s", msg);
    }
    r = annal__small_write(b->dest, ANNAL__BACKUP_MANIFEST, text);
    if (r == 0) r = annal__backup_flag_remove(b->dest);
    if (r < 0)
        return annal__fail(db, err_of(r), "cannot finish the backup in %s: %s", b->dest,
                           strerror(-r));
    return ANNAL_OK;
}

/* The committed index head as of t (a fresh read transaction when t is NULL), and the
 * generation of the head's segment as this handle knew it just before: the head's
 * offset is in that generation's layout. The head's segment is active when the head is
 * read, so it is the one known before (or, if it is newer, generation 0); compaction may
 * rewrite it once sealed, before it is copied: this handle keeps that generation
 * readable. */
static void note_pre(bk *b) {
    annal__seg *pre = annal__log_last(&b->db->log);
    b->pre_no = pre ? pre->no : UINT64_MAX;
    b->pre_gen = pre ? pre->gen : 0;
}

/* (With t, the caller noted the last segment before t began.) */
static annal_err head_read(bk *b, MDB_txn *t, annal__index_head *h) {
    annal_db *db = b->db;
    MDB_txn *own = NULL;
    if (!t) {
        note_pre(b);
        annal_err rc = annal__read_txn(db, &own);
        if (rc != ANNAL_OK) return rc;
    }
    annal_err rc = annal__index_head_get(t ? t : own, &db->idx, h);
    if (own) annal__txn_abort(&db->idx, own);
    return rc == ANNAL_OK ? rc : annal__fail(db, rc, "cannot read the index head");
}

/* DEST marked unfinished (first: from here on it is), its old manifest gone, its
 * segment files listed. */
static annal_err dest_prepare(bk *b, uint64_t token, uint64_t head) {
    annal_db *db = b->db;
    annal__manifest old;
    if (annal__manifest_read(b->dest, &old) == 0 && old.next_pos > head)
        return annal__fail(db, ANNAL_EINVAL,
                           "%s holds a backup at a later position (%" PRIu64
                           ") than this store's head (%" PRIu64 "): another store's?",
                           b->dest, old.next_pos, head);
    int r = annal__backup_flag_write(b->dest, token);
    if (r < 0)
        return annal__fail(db, err_of(r), "cannot write %s/%s: %s", b->dest, ANNAL__BACKUP_FLAG,
                           strerror(-r));
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/%s", b->dest, ANNAL__BACKUP_MANIFEST);
    unlink(mpath);
    if (mkdir(b->logdir, 0755) < 0 && errno != EEXIST)
        return annal__fail(db, err_of(-errno), "cannot create %s: %s", b->logdir, strerror(errno));
    if (annal__seg_list(b->logdir, &b->have, &b->nhave) < 0) b->nhave = 0;
    b->res.incremental = b->nhave > 0;
    return ANNAL_OK;
}

/* Copy segments [from, to) of the log: sealed ones whole, P's segment (last) up to
 * last_off. b->cgen, when set, gets the generation copied of each. total: for progress. */
static annal_err copy_segs(bk *b, uint64_t from, uint64_t to, uint64_t last, uint64_t last_off,
                           uint64_t total) {
    annal_db *db = b->db;
    uint64_t base = db->log.base;
    for (uint64_t no = from; no < to; no++) {
        annal__seg *s = annal__log_seg(&db->log, no);
        if (s && no == last && s->gen != (no == b->pre_no ? b->pre_gen : 0))
            s = annal__log_seg_at(&db->log, ANNAL__LOCG(no == b->pre_no ? b->pre_gen : 0, no, 0));
        if (!s && no == last) /* compacted and gone before this handle saw it: again */
            return ANNAL_EAGAIN_INTERNAL;
        if (!s) return annal__fail(db, ANNAL_ECORRUPT, "segment %016" PRIx64 " is missing", no);
        if (b->cgen) b->cgen[no] = s->gen;
        if (b->index_copied && b->gen[no] != s->gen) b->rm_index = 1; /* see head_with_index */
        uint64_t end = last_off;
        if (no < last) {                                               /* sealed: the whole file */
            uint64_t sz = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE); /* final once sealed */
            if (s->fd >= 0 && db->io->size(db->io->ctx, s->fd, &sz) < 0)
                return annal__fail(db, ANNAL_EIO, "cannot stat segment %016" PRIx64, no);
            end = sz;
        }
        annal_err rc = copy_seg(b, s, end, no < last);
        if (rc != ANNAL_OK) return rc;
        if (db->opts.progress && db->opts.progress(db->opts.progress_ctx, no - base + 1, total))
            return annal__fail(db, ANNAL_ECANCELED, "backup canceled");
    }
    return ANNAL_OK;
}

typedef struct index_job {
    bk *b;
    int r;
    uint64_t copied;
} index_job;

static void *index_thread(void *arg) {
    index_job *j = arg;
    j->r = index_copy_lmdb(j->b, &j->copied);
    return NULL;
}

/* P, with the index copied as of a snapshot no later than P when DEST has none yet (a
 * full backup). t1 begins before LMDB's copy and the head is read after it (t2), so the
 * copy's snapshot lies between them (generations only grow); when both agree that no compaction was
 * under way and on the generation of every segment up to P, so does the copy, and b->gen holds them
 * (checked against the generations copied). Otherwise (or when the copy fails) the index is left
 * out and rebuilt from the copied log. Meanwhile the segments sealed before the head h0 (read
 * earlier) are copied on this thread: b->done_upto. */
static annal_err head_with_index(bk *b, const annal__index_head *h0, annal__index_head *h) {
    annal_db *db = b->db;
    if ((b->o.flags & ANNAL_BACKUP_NO_INDEX) || b->t.write || b->nhave > 0 || db->log.base != 0 ||
        (b->o.flags & ANNAL_BACKUP_REBUILD_INDEX))
        return head_read(b, NULL, h);
    uint64_t k0 = h0->next_pos ? ANNAL__LOC_SEG(h0->next_loc) : 0; /* [0, k0): sealed */
    /* t1, before the copy: its generations (those of segments past its head's are 0: not
     * sealed then, so never compacted) and whether a compaction was under way. No
     * transaction of this thread stays open meanwhile (a map grown by another process is
     * adopted only when none is). */
    MDB_txn *t1 = NULL, *t2 = NULL;
    annal__index_head h1;
    annal_err rc = annal__read_txn(db, &t1);
    if (rc != ANNAL_OK) return rc;
    rc = annal__index_head_get(t1, &db->idx, &h1);
    uint64_t k1 = rc == ANNAL_OK && h1.next_pos ? ANNAL__LOC_SEG(h1.next_loc) : 0;
    uint32_t *g1 = calloc(k1 + 1, sizeof *g1);
    int busy1 = rc != ANNAL_OK || !g1 || gens_get(db, t1, 0, k1, g1);
    annal__txn_abort(&db->idx, t1);
    b->index_tried = 1;
    index_job job = {b, 0, 0};
    pthread_t th;
    int threaded = pthread_create(&th, NULL, index_thread, &job) == 0;
    b->cgen = calloc(k0 + 1, sizeof *b->cgen);
    rc = b->cgen ? copy_segs(b, 0, k0, UINT64_MAX, 0, k0 + 1) : ANNAL_ENOMEM;
    if (threaded)
        pthread_join(th, NULL);
    else
        job.r = index_copy_lmdb(b, &job.copied);
    b->done_upto = k0;
    if (rc == ANNAL_OK && job.r < 0 && err_of(job.r) == ANNAL_ENOSPC)
        rc = annal__fail(db, ANNAL_ENOSPC, "cannot copy the index: %s", strerror(-job.r));
    if (rc == ANNAL_OK) {
        note_pre(b); /* before t2 begins: see head_read */
        rc = annal__read_txn(db, &t2);
    }
    if (rc == ANNAL_OK) rc = head_read(b, t2, h);
    if (rc == ANNAL_OK) {
        uint64_t last = h->next_pos ? ANNAL__LOC_SEG(h->next_loc) : 0;
        b->gen = calloc(last + 1, sizeof *b->gen);
        b->rm_index |= job.r < 0 || busy1 || !b->gen || gens_get(db, t2, 0, last, b->gen);
        for (uint64_t no = 0; !b->rm_index && no <= last; no++)
            b->rm_index =
                b->gen[no] != (no <= k1 ? g1[no] : 0) || (no < k0 && b->gen[no] != b->cgen[no]);
        b->index_copied = !b->rm_index;
        if (b->rm_index)
            annal__log_msg(db, ANNAL_LOG_INFO,
                           "backup: the index copy is not used (a compaction ran meanwhile): "
                           "rebuilt from the copied log");
    }
    free(g1);
    if (t2) annal__txn_abort(&db->idx, t2);
    return rc;
}

static annal_err backup(bk *b) {
    annal_db *db = b->db;
    annal__index_head h0, h;
    annal_err rc = head_read(b, NULL, &h0);
    if (rc != ANNAL_OK) return rc;
    h = h0;
    uint64_t token = annal__rng_seed();
    if (token == 0) token = 1;
    b->done_upto = db->log.base;
    if (!b->t.write) {
        rc = dest_prepare(b, token, h0.next_pos);
        if (rc == ANNAL_OK) rc = head_with_index(b, &h0, &h); /* P, read again */
        if (rc != ANNAL_OK) return rc;
    } else {
        char text[64];
        snprintf(text, sizeof text, "annal-backup-incomplete %016" PRIx64 "\n", token);
        int r = tar_text(&b->t, ANNAL__BACKUP_FLAG, text, b->now / 1000000000);
        if (r == 0) r = tar_header(&b->t, "log/", 0, 1, b->now / 1000000000);
        if (r < 0) return annal__fail(db, ANNAL_EIO, "cannot write the tar stream");
    }
    /* P: the committed index head. Its bytes are in the log (written before it was
     * committed); segments after its segment are not copied. (A writer's head may be a
     * group ahead of what it has acknowledged: that group's bytes were written before
     * its commit, and the copy flushes its own.) */
    uint64_t base = db->log.base;
    uint64_t last = h.next_pos ? ANNAL__LOC_SEG(h.next_loc) : base;
    uint64_t last_off = h.next_pos ? ANNAL__LOC_OFF(h.next_loc) : ANNAL__SEG_HDR;
    b->res.next_position = h.next_pos;
    annal__manifest m = {token, h.next_pos, last, last_off, b->now};
    free(b->cgen);
    b->cgen = NULL;
    rc = copy_segs(b, b->done_upto, last + 1, last, last_off, last - base + 1);
    return rc == ANNAL_OK ? finish(b, &m) : rc;
}

annal_err annal_backup_sized(annal_db *db, const char *dest, const annal_backup_opts *opts,
                             annal_backup_result *res, size_t res_size) {
    if (!db) return ANNAL_EINVAL;
    bk b;
    memset(&b, 0, sizeof b);
    b.db = db;
    b.dest = dest;
    backup_opts_defaults(&b.o);
    if (opts && !annal__opts_in(&b.o, sizeof b.o, opts,
                                offsetof(annal_backup_opts, flags) + sizeof opts->flags))
        return ANNAL_EINVAL;
    if (b.o.flags & ~(ANNAL_BACKUP_LINK | ANNAL_BACKUP_NO_INDEX | ANNAL_BACKUP_REBUILD_INDEX))
        return ANNAL_EINVAL;
    if (!dest == !b.o.write) return annal__fail(db, ANNAL_EINVAL, "give either DEST or a stream");
    b.t.write = b.o.write;
    b.pace = (pace){b.o.bytes_per_s, annal__mono_ns(), 0};
    b.t.ctx = b.o.write_ctx;
    b.now = annal__now_ns();
    if (dest) {
        if (mkdir(dest, 0755) < 0 && errno != EEXIST)
            return annal__fail(db, err_of(-errno), "cannot create %s: %s", dest, strerror(errno));
        snprintf(b.logdir, sizeof b.logdir, "%s/log", dest);
        struct stat a, c;
        if (stat(dest, &a) == 0 && stat(db->dir, &c) == 0 && a.st_ino == c.st_ino &&
            a.st_dev == c.st_dev)
            return annal__fail(db, ANNAL_EINVAL, "the backup cannot go into the store itself");
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/lock", dest);
        struct stat ls;
        annal__manifest old;
        if (stat(probe, &ls) == 0 && annal__manifest_read(dest, &old) < 0 &&
            annal__backup_flag_read(dest, &old.token) == 0)
            return annal__fail(db, ANNAL_EINVAL, "%s is a store, not a backup", dest);
    } else {
        snprintf(b.logdir, sizeof b.logdir, "log");
    }
    annal_err rc = ANNAL_EAGAIN_INTERNAL;
    for (int i = 0; i < BACKUP_TRIES && rc == ANNAL_EAGAIN_INTERNAL; i++) {
        free(b.have);
        free(b.gen);
        free(b.cgen);
        b.have = NULL;
        b.gen = NULL;
        b.cgen = NULL;
        b.nhave = 0;
        /* An index copied by an earlier try names that try's generations: not kept. */
        b.rm_index = i > 0 && b.index_tried;
        b.index_copied = 0;
        memset(&b.res, 0, sizeof b.res);
        rc = backup(&b);
    }
    if (rc == ANNAL_EAGAIN_INTERNAL)
        rc = annal__fail(db, ANNAL_EBUSY, "compaction kept replacing the last segment: try again");
    free(b.have);
    free(b.gen);
    free(b.cgen);
    annal__out_copy(res, res_size, &b.res, sizeof b.res);
    return rc;
}

/* ---- restore ------------------------------------------------------------------------ */

/* Where the restored log ends: the first batch past the point asked for. */
typedef struct cut {
    uint64_t seg, off, next_pos;
} cut;

/* Walk the records of the backup's segments from the start for the first batch that
 * begins after to_pos or after to_ns (records in log order; timestamps never go back). */
static annal_err find_cut(const char *logdir, const annal__seg_file *f, size_t n,
                          const annal__manifest *m, uint64_t to_pos, int64_t to_ns, cut *c,
                          char *msg, size_t len) {
    annal__log names = {.dir = (char *)logdir};
    *c = (cut){m->last_seg, m->last_off, m->next_pos};
    for (size_t i = 0; i < n; i++) {
        if (f[i].tmp || f[i].no > m->last_seg) continue;
        char path[4200];
        annal__seg_path(&names, f[i].no, f[i].gen, 0, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            say(msg, len, "cannot open %s: %s", path, strerror(errno));
            if (fd >= 0) close(fd);
            return ANNAL_EIO;
        }
        uint64_t size = (uint64_t)st.st_size;
        if (f[i].no == m->last_seg && size > m->last_off) size = m->last_off;
        const uint8_t *p = size ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : NULL;
        close(fd);
        if (size && p == MAP_FAILED) {
            say(msg, len, "cannot map %s", path);
            return ANNAL_EIO;
        }
        annal_err rc = ANNAL_OK;
        uint64_t off = ANNAL__SEG_HDR, batch_off = off;
        while (off + ANNAL__REC_HDR <= size && annal__get64(p + off) != 0) {
            annal_event ev;
            annal__rec_info info;
            if (annal__rec_decode(p + off, (size_t)(size - off), &ev, &info) != ANNAL_OK) {
                say(msg, len, "damaged record in %s at offset %" PRIu64, path, off);
                rc = ANNAL_ECORRUPT;
                break;
            }
            int event = info.kind != ANNAL__REC_HOLE;
            if (!event || info.batch_index == 0) batch_off = off;
            if (event && (ev.position > to_pos || ev.timestamp_ns > to_ns)) {
                /* This batch goes, and everything after it. */
                annal_event first;
                annal__rec_info fi;
                (void)annal__rec_decode(p + batch_off, (size_t)(size - batch_off), &first, &fi);
                *c = (cut){f[i].no, batch_off, first.position};
                munmap((void *)p, size);
                return ANNAL_OK;
            }
            off += info.len;
        }
        if (size) munmap((void *)p, size);
        if (rc != ANNAL_OK) return rc;
    }
    return ANNAL_OK;
}

static annal_err restore(const char *src, const char *dir, const annal_restore_opts *o,
                         annal_restore_result *res) {
    char *msg = res->message;
    size_t mlen = sizeof res->message;
    annal__manifest m;
    int r = annal__manifest_read(src, &m);
    if (r == -ENOENT || r == -ENOTDIR) {
        say(msg, mlen, "%s is not a backup (no %s file)", src, ANNAL__BACKUP_MANIFEST);
        return ANNAL_ENOTFOUND;
    }
    if (r < 0 || annal__backup_incomplete(src)) {
        say(msg, mlen, "%s is an incomplete backup (it was interrupted): not restored", src);
        return ANNAL_ECORRUPT;
    }
    res->backup_next_position = m.next_pos;
    if (mkdir(dir, 0755) < 0) {
        DIR *d = errno == EEXIST ? opendir(dir) : NULL;
        int other = 0;
        for (struct dirent *e; d && (e = readdir(d)) != NULL;)
            other |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        if (d) closedir(d);
        if (!d || other) {
            say(msg, mlen, "%s exists and is not empty: restore into a new directory", dir);
            return ANNAL_EINVAL;
        }
    }
    char slog[4200], dlog[4200];
    snprintf(slog, sizeof slog, "%s/log", src);
    snprintf(dlog, sizeof dlog, "%s/log", dir);
    annal__seg_file *f = NULL;
    size_t n = 0;
    if (annal__seg_list(slog, &f, &n) < 0) {
        say(msg, mlen, "cannot list %s", slog);
        return ANNAL_ECORRUPT;
    }
    cut c;
    annal_err rc = find_cut(slog, f, n, &m, o->to_position, o->to_time_ns, &c, msg, mlen);
    uint64_t token = annal__rng_seed() | 1;
    if (rc == ANNAL_OK &&
        (r = annal__backup_flag_write(dir, token)) < 0) { /* a killed restore never opens */
        say(msg, mlen, "cannot write in %s: %s", dir, strerror(-r));
        rc = err_of(r);
    }
    if (rc == ANNAL_OK && mkdir(dlog, 0755) < 0) {
        say(msg, mlen, "cannot create %s: %s", dlog, strerror(errno));
        rc = err_of(-errno);
    }
    annal__log sn = {.dir = slog}, dn = {.dir = dlog};
    for (size_t i = 0; rc == ANNAL_OK && i < n; i++) {
        if (f[i].tmp || f[i].no > c.seg) continue;
        char sp[4200], dp[4200];
        annal__seg_path(&sn, f[i].no, f[i].gen, 0, sp, sizeof sp);
        annal__seg_path(&dn, f[i].no, f[i].gen, 0, dp, sizeof dp);
        int in = open(sp, O_RDONLY | O_CLOEXEC);
        int out = in < 0 ? -1 : open(dp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        struct stat st;
        r = in < 0 || out < 0 || fstat(in, &st) < 0 ? -errno : 0;
        uint64_t end = (uint64_t)st.st_size, copied = 0;
        if (f[i].no == c.seg && end > c.off) end = c.off;
        annal__seg file = {.fd = in}; /* a file of a backup: copied through its descriptor */
        if (r == 0) r = copy_range(&file, out, 0, end, &copied, NULL);
        if (r == 0 && fdatasync(out) < 0) r = -errno;
        if (in >= 0) close(in);
        if (out >= 0) close(out);
        if (r < 0) {
            say(msg, mlen, "cannot copy %s to %s: %s", sp, dp, strerror(-r));
            rc = err_of(r);
        }
    }
    free(f);
    if (rc == ANNAL_OK && (r = annal__io_posix()->sync_dir(NULL, dlog)) < 0) {
        say(msg, mlen, "cannot flush %s: %s", dlog, strerror(-r));
        rc = err_of(r);
    }
    if (rc == ANNAL_OK) rc = index_copy(dir, 1, msg, mlen);
    if (rc == ANNAL_OK && (r = annal__backup_flag_remove(dir)) < 0) {
        say(msg, mlen, "cannot finish %s: %s", dir, strerror(-r));
        rc = err_of(r);
    }
    res->next_position = c.next_pos;
    return rc;
}

annal_err annal_restore_sized(const char *src, const char *dir, const annal_restore_opts *opts,
                              annal_restore_result *res, size_t res_size) {
    annal_restore_result full;
    memset(&full, 0, sizeof full);
    annal_restore_opts o;
    restore_opts_defaults(&o);
    annal_err rc = ANNAL_OK;
    if (!src || !dir) rc = ANNAL_EINVAL;
    if (rc == ANNAL_OK && opts &&
        !annal__opts_in(&o, sizeof o, opts,
                        offsetof(annal_restore_opts, to_position) + sizeof o.to_position))
        rc = ANNAL_EINVAL;
    if (rc == ANNAL_OK) rc = restore(src, dir, &o, &full);
    annal__out_copy(res, res_size, &full, sizeof full);
    return rc;
}
