/* snapshot.c -- snapshot files: one per (decider, stream) in the handler's snapshot
 * directory, outside the event log, each a checksummed image replaced atomically.
 *
 * File name: 32 hex digits of two 64-bit hashes of "decider\0stream" plus ".snap" (stream
 * names may hold any byte but NUL, and are longer than a file name may be); the names
 * are stored inside and compared, so a hash collision only costs a replay. Layout, all
 * integers little-endian:
 *   0  "annalSN1"            8  u32 state_version   12 u32 decider_len
 *   16 u32 stream_len        20 u32 zero            24 u64 revision
 *   32 u64 position          40 i64 timestamp_ns    48 16-byte event id
 *   64 u64 state_len         72 decider, stream, state bytes
 *   then u32 CRC-32C of everything before it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "write.h"

#define MAGIC     "annalSN1"
#define HDR_BYTES 72

/* Nibble-wise table for the reflected Castagnoli polynomial 0x82F63B78: small, constant,
 * and fast enough for states that are read once per command at most. */
static const uint32_t crc_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
    0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9, 0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75};

uint32_t annal__write_crc32c(uint32_t crc, const void *p, size_t n) {
    const unsigned char *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= b[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
    }
    return ~crc;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* "<dir>/<32 hex>.snap", malloc'd; NULL when out of memory. */
static char *snap_path(const char *dir, const char *decider, const char *stream) {
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x9e3779b97f4a7c15ull;
    const char *parts[2] = {decider, stream};
    for (int k = 0; k < 2; k++) {
        /* include the NUL so that ("ab","c") and ("a","bc") differ */
        for (const unsigned char *c = (const unsigned char *)parts[k];; c++) {
            h1 = (h1 ^ *c) * 0x100000001b3ull;
            h2 = mix64(h2 ^ *c);
            if (!*c) break;
        }
    }
    size_t n = strlen(dir) + 1 + 32 + 5 + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%016llx%016llx.snap", dir, (unsigned long long)h1,
                 (unsigned long long)h2);
    return p;
}

static annal_err errno_err(int e) {
    if (e == ENOENT) return ANNAL_ENOTFOUND;
    if (e == ENOMEM) return ANNAL_ENOMEM;
    if (e == ENOSPC || e == EDQUOT) return ANNAL_ENOSPC;
    return ANNAL_EIO;
}

annal_err annal__write_snap_read(const char *dir, const char *decider, const char *stream,
                                 annal__write_snap *snap) {
    char *path = snap_path(dir, decider, stream);
    if (!path) return ANNAL_ENOMEM;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return errno_err(errno);
    annal_err rc = ANNAL_OK;
    unsigned char *img = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = ANNAL_EIO;
        goto out;
    }
    size_t size = (size_t)st.st_size;
    if (st.st_size < HDR_BYTES + 4 || (off_t)size != st.st_size) {
        rc = ANNAL_ECORRUPT;
        goto out;
    }
    if (!(img = malloc(size))) {
        rc = ANNAL_ENOMEM;
        goto out;
    }
    for (size_t got = 0; got < size;) {
        ssize_t r = pread(fd, img + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = r == 0 ? ANNAL_ECORRUPT : ANNAL_EIO; /* shrank under us: treat as damage */
            goto out;
        }
        got += (size_t)r;
    }
    size_t dlen = strlen(decider), slen = strlen(stream);
    size_t body = size - HDR_BYTES - 4; /* bytes for the names and the state */
    uint64_t state_len = get64(img + 64);
    /* The names must fit before the state length is derived from them: a file naming more
     * than it holds would make the subtraction wrap and the compares read past img. */
    if (memcmp(img, MAGIC, 8) != 0 ||
        get32(img + size - 4) != annal__write_crc32c(0, img, size - 4) || get32(img + 12) != dlen ||
        get32(img + 16) != slen || dlen > body || slen > body - dlen ||
        state_len != (uint64_t)(body - dlen - slen) ||
        memcmp(img + HDR_BYTES, decider, dlen) != 0 ||
        memcmp(img + HDR_BYTES + dlen, stream, slen) != 0) {
        rc = ANNAL_ECORRUPT;
        goto out;
    }
    snap->state_version = get32(img + 8);
    snap->revision = get64(img + 24);
    snap->position = get64(img + 32);
    snap->timestamp_ns = (int64_t)get64(img + 40);
    memcpy(snap->id.bytes, img + 48, 16);
    annal__write_buf_clear(&snap->state);
    rc = annal_buf_append(&snap->state, img + HDR_BYTES + dlen + slen, (size_t)state_len);
out:
    free(img);
    close(fd);
    return rc;
}

annal_err annal__write_snap_write(const char *dir, const char *decider, const char *stream,
                                  const annal__write_snap *snap) {
    size_t dlen = strlen(decider), slen = strlen(stream);
    size_t size = HDR_BYTES + dlen + slen + snap->state.len + 4;
    unsigned char *img = malloc(size);
    char *path = snap_path(dir, decider, stream);
    size_t tlen = path ? strlen(path) + 16 : 0;
    char *tmp = path ? malloc(tlen) : NULL;
    annal_err rc = ANNAL_OK;
    int fd = -1, created = 0;
    if (!img || !tmp) {
        rc = ANNAL_ENOMEM;
        goto out;
    }
    memcpy(img, MAGIC, 8);
    put32(img + 8, snap->state_version);
    put32(img + 12, (uint32_t)dlen);
    put32(img + 16, (uint32_t)slen);
    put32(img + 20, 0);
    put64(img + 24, snap->revision);
    put64(img + 32, snap->position);
    put64(img + 40, (uint64_t)snap->timestamp_ns);
    memcpy(img + 48, snap->id.bytes, 16);
    put64(img + 64, snap->state.len);
    memcpy(img + HDR_BYTES, decider, dlen);
    memcpy(img + HDR_BYTES + dlen, stream, slen);
    if (snap->state.len) memcpy(img + HDR_BYTES + dlen + slen, snap->state.p, snap->state.len);
    put32(img + size - 4, annal__write_crc32c(0, img, size - 4));

    /* A unique temporary name per writer: two threads snapshotting the same stream each
     * rename a whole file into place, and either result is a valid snapshot. */
    snprintf(tmp, tlen, "%s.tmp-XXXXXX", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = errno_err(errno);
        goto out;
    }
    created = 1;
    for (size_t done = 0; done < size;) {
        ssize_t w = write(fd, img + done, size - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = w < 0 ? errno_err(errno) : ANNAL_EIO;
            goto out;
        }
        done += (size_t)w;
    }
    /* Flushed before the rename so that a crash never leaves the name on an empty file
     * where a good snapshot was; the directory is not flushed: losing the rename only
     * loses this snapshot, and the next command writes another. */
    if (fdatasync(fd) != 0) {
        rc = errno_err(errno);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = ANNAL_EIO;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) rc = errno_err(errno);
out:
    if (fd >= 0) close(fd);
    if (rc != ANNAL_OK && created) unlink(tmp);
    free(tmp);
    free(path);
    free(img);
    return rc;
}
