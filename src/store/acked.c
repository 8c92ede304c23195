/* DIR/acked: durable evidence of how far the log was acknowledged, so that a log that
 * lost its tail (blocks zeroed or dropped by the disk, a truncated segment) is detected
 * on the next writer open even when the index, which is written without flush, was lost
 * with it. The file holds two slots, written alternately and each flushed: a torn write
 * spoils at most the slot being written, and the other still holds an older, true mark.
 *
 * Slot (at offset 0 and at ACKED_SLOT2, in different 4 KiB blocks):
 *   0  "ANNALACK"   8 bytes magic
 *   8  seq          u64: higher is newer
 *   16 next_pos     u64: every position below it was acknowledged
 *   24 crc32c       u32 of bytes 0..23
 * The mark is written off the append path (a thread of the writer, coalesced), so it
 * lags the acknowledgements a little: docs/durability.md states the window. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "store/db_int.h"

#define ACKED_MAGIC "ANNALACK"
#define ACKED_SLOT  28u
#define ACKED_SLOT2 4096u
#define ACKED_MS    10 /* at most one flush of the mark per this many milliseconds */

static int slot_decode(const uint8_t *p, uint64_t *seq, uint64_t *pos) {
    if (memcmp(p, ACKED_MAGIC, 8) != 0) return 0;
    if (annal__get32(p + 24) != annal__crc32c(0, p, 24)) return 0;
    *seq = annal__get64(p + 8);
    *pos = annal__get64(p + 16);
    return 1;
}

annal_err annal__acked_open(annal__acked *a, const char *dir, uint64_t *mark) {
    memset(a, 0, sizeof *a);
    a->fd = -1;
    pthread_mutex_init(&a->wmu, NULL);
    a->opened = 1;
    *mark = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/acked", dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int created = 0;
    if (fd < 0 && errno == ENOENT) { /* a new store, or one made before the mark existed */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        created = 1;
    }
    if (fd < 0) return errno == ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO;
    a->fd = fd;
    if (created) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); /* the entry, so the first mark is not lost with it */
            close(dfd);
        }
        return ANNAL_OK;
    }
    uint8_t s[2][ACKED_SLOT];
    uint64_t seq[2] = {0, 0}, pos[2] = {0, 0};
    int ok[2];
    for (int i = 0; i < 2; i++) {
        ssize_t n = pread(fd, s[i], ACKED_SLOT, i ? ACKED_SLOT2 : 0);
        ok[i] = n == (ssize_t)ACKED_SLOT && slot_decode(s[i], &seq[i], &pos[i]);
    }
    int best = ok[0] && (!ok[1] || seq[0] >= seq[1]) ? 0 : ok[1] ? 1 : -1;
    if (best >= 0) {
        a->seq = seq[best];
        a->written = pos[best];
        *mark = pos[best];
    }
    /* Neither slot valid: nothing to compare against (a new file, or both slots torn,
     * which one write cannot do). The index head, when trusted, still counts. */
    return ANNAL_OK;
}

int annal__acked_write(annal__acked *a, uint64_t pos) {
    if (a->fd < 0) return 0;
    pthread_mutex_lock(&a->wmu);
    int r = 0;
    if (pos > a->written || a->seq == 0) {
        uint8_t s[ACKED_SLOT];
        memcpy(s, ACKED_MAGIC, 8);
        annal__put64(s + 8, a->seq + 1);
        annal__put64(s + 16, pos);
        annal__put32(s + 24, annal__crc32c(0, s, 24));
        uint64_t off = (a->seq + 1) & 1 ? ACKED_SLOT2 : 0;
        if (pwrite(a->fd, s, ACKED_SLOT, (off_t)off) != (ssize_t)ACKED_SLOT)
            r = errno ? -errno : -EIO;
        else if (fdatasync(a->fd) < 0)
            r = -errno;
        if (r == 0) {
            a->seq++;
            a->written = pos;
        }
    }
    pthread_mutex_unlock(&a->wmu);
    return r;
}

static void *acked_main(void *arg) {
    annal_db *db = arg;
    annal__acked *a = &db->acked;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += ACKED_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        if (a->stop) break;
        /* visible: flushed and acknowledged (durable handles only run this thread) */
        uint64_t v = __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE);
        if (v <= a->written) continue;
        pthread_mutex_unlock(&a->mu);
        (void)annal__acked_write(a, v); /* a failure is retried next time; close writes too */
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int annal__acked_start(annal_db *db) {
    annal__acked *a = &db->acked;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->inited = 1;
    if (pthread_create(&a->thread, NULL, acked_main, db) != 0) return -ENOMEM;
    a->running = 1;
    return 0;
}

void annal__acked_close(annal__acked *a) {
    if (a->running) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        a->running = 0;
    }
    if (a->inited) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        a->inited = 0;
    }
}

void annal__acked_release(annal__acked *a) {
    annal__acked_close(a);
    if (a->fd >= 0) close(a->fd);
    a->fd = -1;
    if (a->opened) pthread_mutex_destroy(&a->wmu);
    a->opened = 0;
}
