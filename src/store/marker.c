/*
 * marker.c -- a backup's marker files (store/marker.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "log/io.h"
#include "store/marker.h"

/* ---- markers ------------------------------------------------------------------------ */

int annal__small_read(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, cap - 1);
    int e = errno;
    close(fd);
    if (n < 0) return -e;
    buf[n] = 0;
    return (int)n;
}

/* Write path durably: a tmp file, flushed, renamed, directory flushed. 0 or -errno. */
int annal__small_write(const char *dir, const char *name, const char *text) {
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    size_t len = strlen(text);
    int r = annal__io_write_all(annal__io_posix(), fd, text, len, 0);
    if (r == 0 && fsync(fd) < 0) r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0) r = -errno;
    if (r == 0) r = annal__io_posix()->sync_dir(NULL, dir);
    if (r < 0) unlink(tmp);
    return r;
}

int annal__manifest_text(const annal__manifest *m, char *out, size_t cap) {
    int n = snprintf(out, cap,
                     "annal-backup 1\ntoken %016" PRIx64 "\nnext_position %" PRIu64
                     "\nlast_segment %" PRIu64 "\nlast_offset %" PRIu64 "\ntime_ns %" PRId64 "\n",
                     m->token, m->next_pos, m->last_seg, m->last_off, m->time_ns);
    uint32_t crc = annal__crc32c(0, out, (size_t)n);
    return n + snprintf(out + n, cap - (size_t)n, "crc %08" PRIx32 "\n", crc);
}

/* 0 and *m if dir holds a valid manifest, else -errno (-EINVAL: damaged). */
int annal__manifest_read(const char *dir, annal__manifest *m) {
    char path[4200], buf[1024];
    snprintf(path, sizeof path, "%s/%s", dir, ANNAL__BACKUP_MANIFEST);
    int n = annal__small_read(path, buf, sizeof buf);
    if (n < 0) return n;
    char *crcl = strstr(buf, "crc ");
    if (!crcl) return -EINVAL;
    uint32_t want;
    if (sscanf(crcl, "crc %" SCNx32, &want) != 1) return -EINVAL;
    if (annal__crc32c(0, buf, (size_t)(crcl - buf)) != want) return -EINVAL;
    if (sscanf(buf,
               "annal-backup 1\ntoken %" SCNx64 "\nnext_position %" SCNu64 "\nlast_segment %" SCNu64
               "\nlast_offset %" SCNu64 "\ntime_ns %" SCNd64,
               &m->token, &m->next_pos, &m->last_seg, &m->last_off, &m->time_ns) != 5)
        return -EINVAL;
    return 0;
}

/* The token of dir's flag file: 1 and *token if there is one, 0 if none, -errno. */
int annal__backup_flag_read(const char *dir, uint64_t *token) {
    char path[4200], buf[128];
    snprintf(path, sizeof path, "%s/%s", dir, ANNAL__BACKUP_FLAG);
    int n = annal__small_read(path, buf, sizeof buf);
    if (n == -ENOENT) return 0;
    if (n < 0) return n;
    *token = 0;
    (void)sscanf(buf, "annal-backup-incomplete %" SCNx64, token);
    return 1;
}

int annal__backup_incomplete(const char *dir) {
    uint64_t token;
    int f = annal__backup_flag_read(dir, &token);
    if (f <= 0) return 0; /* none, or unreadable: the open itself reports EACCES and such */
    annal__manifest m;
    /* The flag of a backup that completed (a tar stream extracted: its annal__manifest came
     * last and names the same token) is harmless; any other flag means unfinished. */
    return annal__manifest_read(dir, &m) == 0 && m.token == token ? 0 : 1;
}

int annal__backup_flag_write(const char *dir, uint64_t token) {
    char text[64];
    snprintf(text, sizeof text, "annal-backup-incomplete %016" PRIx64 "\n", token);
    return annal__small_write(dir, ANNAL__BACKUP_FLAG, text);
}

int annal__backup_flag_remove(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, ANNAL__BACKUP_FLAG);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
    return annal__io_posix()->sync_dir(NULL, dir);
}
