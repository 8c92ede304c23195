/* The table of file operations every byte of the log goes through. Tests replace it to
 * inject short writes, EIO, ENOSPC and simulated power loss (tests/util, fuzz, crash). */
#ifndef ANNAL_IO_H
#define ANNAL_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Every function returns >= 0 on success and -errno on failure; none retries. */
typedef struct annal__io {
    int version; /* 1 */
    void *ctx;
    int (*open)(void *ctx, const char *path, int flags, int mode); /* fd */
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n,
                      uint64_t off); /* may be short */
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off);
    int (*sync)(void *ctx, int fd);                              /* fdatasync */
    int (*alloc)(void *ctx, int fd, uint64_t off, uint64_t len); /* fallocate, size grows */
    int (*size)(void *ctx, int fd, uint64_t *size);
    int (*close)(void *ctx, int fd);
    /* Read-only shared mapping of len bytes (may exceed the file size), or NULL. */
    const void *(*map)(void *ctx, int fd, uint64_t len);
    void (*unmap)(void *ctx, const void *p, uint64_t len);
    int (*sync_dir)(void *ctx, const char *dir);
    int (*unlink)(void *ctx, const char *path);
    /* Named points where a fault may be injected: "index-commit". 0 = go on. */
    int (*fault)(void *ctx, const char *where);
    /* Bytes an unprivileged writer may still add to fd's filesystem (fstatvfs). */
    int (*space)(void *ctx, int fd, uint64_t *avail);
} annal__io;

/* The real thing: POSIX calls. */
const annal__io *annal__io_posix(void);

/* pwrite all of buf, looping on short writes and EINTR. 0 or -errno. */
int annal__io_write_all(const annal__io *io, int fd, const void *buf, size_t n, uint64_t off);
/* pread exactly n bytes; -EIO on a short read (past the end). 0 or -errno. */
int annal__io_read_all(const annal__io *io, int fd, void *buf, size_t n, uint64_t off);

#endif
