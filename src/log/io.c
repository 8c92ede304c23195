/* POSIX implementation of the file-operation table, and the loops that turn short
 * writes into whole ones. Nothing here retries a failed fdatasync: after one, the page
 * cache may have dropped the dirty pages, so the caller must treat the data as lost. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log/io.h"

static int px_open(void *ctx, const char *path, int flags, int mode) {
    (void)ctx;
    int fd;
    do fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off) {
    (void)ctx;
    ssize_t r = pwrite(fd, buf, n, (off_t)off);
    return r < 0 ? -errno : r;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off) {
    (void)ctx;
    ssize_t r = pread(fd, buf, n, (off_t)off);
    return r < 0 ? -errno : r;
}

static int px_sync(void *ctx, int fd) {
    (void)ctx;
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_alloc(void *ctx, int fd, uint64_t off, uint64_t len) {
    (void)ctx;
    int r = posix_fallocate(fd, (off_t)off, (off_t)len);
    if (r == EOPNOTSUPP || r == EINVAL) { /* e.g. tmpfs without fallocate: grow the file */
        struct stat st;
        if (fstat(fd, &st) < 0) return -errno;
        if ((uint64_t)st.st_size < off + len && ftruncate(fd, (off_t)(off + len)) < 0)
            return -errno;
        return 0;
    }
    return -r;
}

static int px_size(void *ctx, int fd, uint64_t *size) {
    (void)ctx;
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_close(void *ctx, int fd) {
    (void)ctx;
    return close(fd) < 0 ? -errno : 0;
}

static const void *px_map(void *ctx, int fd, uint64_t len) {
    (void)ctx;
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void px_unmap(void *ctx, const void *p, uint64_t len) {
    (void)ctx;
    munmap((void *)p, len);
}

static int px_sync_dir(void *ctx, const char *dir) {
    (void)ctx;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int px_unlink(void *ctx, const char *path) {
    (void)ctx;
    return unlink(path) < 0 ? -errno : 0;
}

static int px_fault(void *ctx, const char *where) {
    (void)ctx;
    (void)where;
    return 0;
}

static int px_space(void *ctx, int fd, uint64_t *avail) {
    (void)ctx;
    struct statvfs st;
    if (fstatvfs(fd, &st) < 0) return -errno;
    *avail = (uint64_t)st.f_bavail * st.f_frsize;
    return 0;
}

static const annal__io posix_io = {1,        NULL,        px_open,   px_pwrite, px_pread,
                                   px_sync,  px_alloc,    px_size,   px_close,  px_map,
                                   px_unmap, px_sync_dir, px_unlink, px_fault,  px_space};

const annal__io *annal__io_posix(void) { return &posix_io; }

int annal__io_write_all(const annal__io *io, int fd, const void *buf, size_t n, uint64_t off) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = io->pwrite(io->ctx, fd, p, n, off);
        if (w == -EINTR) continue;
        if (w < 0) return (int)w;
        if (w == 0) return -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int annal__io_read_all(const annal__io *io, int fd, void *buf, size_t n, uint64_t off) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = io->pread(io->ctx, fd, p, n, off);
        if (r == -EINTR) continue;
        if (r < 0) return (int)r;
        if (r == 0) return -EIO;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}
