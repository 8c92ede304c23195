/* Wake-ups when the committed head moves. Waiters on a writer handle sleep on a condition
 * variable signalled by the group-commit leader; waiters on read-only handles (usually in
 * another process) sleep on a futex word in DIR/index/notify, bumped by the writer.
 *
 * The file is only a hint: every wait re-reads the head itself and every futex wait has
 * a timeout, so stale counters left by a crash, a missing file or a dead writer can delay
 * a wake-up by at most one slice, never lose an event or break a wait. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "store/db_int.h"
#include "store/notify.h"

#define NOTIFY_MAGIC   0x46544e41u /* "ANTF" */
#define NOTIFY_VERSION 1u
#define NOTIFY_BYTES   64
/* A futex wait re-checks the head at least this often: a wake-up can be missed only if
 * the file was replaced or the writer died mid-publish. */
#define FUTEX_SLICE_MS 250
/* Read-only handles without the file sleep in growing steps between head checks. */
#define POLL_MIN_MS 5
#define POLL_MAX_MS 50

/* The shared page. seq is bumped on every publish (and kick); waiters counts threads of
 * any process sleeping on it, so a publish with nobody waiting makes no system call. */
typedef struct notify_shm {
    uint32_t magic;
    uint32_t version;
    uint32_t seq;     /* futex word */
    uint32_t waiters; /* may be stale after a crash: costs a useless wake, nothing more */
} notify_shm;

struct annal__notify {
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* CLOCK_MONOTONIC */
    unsigned waiters;    /* atomic: in-process threads in annal__notify_wait */
    uint64_t kicks;      /* under mu: annal__notify_kick calls */
    notify_shm *shm;     /* atomic pointer; NULL: no shared file (yet) */
    int64_t next_try_ns; /* under mu: a read-only handle retries mapping the file then */
};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec ts_of(int64_t ns) {
    return (struct timespec){.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
}

/* Map DIR/index/notify; a writer creates (or repairs) it. NULL when not possible. */
static notify_shm *map_file(annal_db *db) {
    char path[4096];
    snprintf(path, sizeof path, "%s/notify", db->index_dir);
    int fd = db->readonly ? open(path, O_RDWR | O_CLOEXEC)
                          : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return NULL;
    struct stat st;
    notify_shm *m = NULL;
    /* Never truncate an existing file: waiters of other processes have it mapped. */
    if (fstat(fd, &st) == 0 &&
        (st.st_size >= NOTIFY_BYTES || (!db->readonly && ftruncate(fd, NOTIFY_BYTES) == 0))) {
        void *p = mmap(NULL, NOTIFY_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) m = p;
    }
    close(fd);
    if (!m) return NULL;
    uint32_t magic = __atomic_load_n(&m->magic, __ATOMIC_ACQUIRE);
    if (!db->readonly && (magic != NOTIFY_MAGIC || m->version != NOTIFY_VERSION)) {
        /* new or unknown: start over (a reader of another version is only a hint) */
        m->version = NOTIFY_VERSION;
        __atomic_store_n(&m->magic, NOTIFY_MAGIC, __ATOMIC_RELEASE);
    } else if (db->readonly && magic != 0 &&
               (magic != NOTIFY_MAGIC || m->version != NOTIFY_VERSION)) {
        munmap(m, NOTIFY_BYTES);
        return NULL;
    }
    return m;
}

annal_err annal__notify_open(annal_db *db) {
    annal__notify *n = calloc(1, sizeof *n);
    if (!n) return ANNAL_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&n->mu, NULL);
    n->shm = map_file(db);
    db->notify = n;
    if (!n->shm && !db->readonly)
        annal__log_msg(db, ANNAL_LOG_WARN,
                       "cannot create %s/notify: subscribers in other processes will poll",
                       db->index_dir);
    return ANNAL_OK;
}

void annal__notify_close(annal_db *db) {
    annal__notify *n = db->notify;
    if (!n) return;
    if (n->shm) munmap(n->shm, NOTIFY_BYTES);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n);
    db->notify = NULL;
}

static void futex_wake_all(notify_shm *m) {
    syscall(SYS_futex, &m->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void annal__notify_publish(annal_db *db, uint64_t visible) {
    (void)visible; /* waiters read the head themselves: the word only says "look again" */
    annal__notify *n = db->notify;
    if (!n) return;
    /* Pairs with the waiter's increment of a waiters count followed by its head check:
     * either the waiter sees the new head, or we see it waiting. (A read-modify-write of
     * the count orders like a fence and a load, and ThreadSanitizer models it.) */
    if (__atomic_fetch_add(&n->waiters, 0, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&n->mu);
        pthread_cond_broadcast(&n->cv);
        pthread_mutex_unlock(&n->mu);
    }
    notify_shm *m = n->shm;
    if (m) {
        __atomic_fetch_add(&m->seq, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&m->waiters, __ATOMIC_SEQ_CST) > 0) futex_wake_all(m);
    }
}

void annal__notify_kick(annal_db *db) {
    annal__notify *n = db->notify;
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->kicks++;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    notify_shm *m = __atomic_load_n(&n->shm, __ATOMIC_ACQUIRE);
    if (m && db->readonly) {
        /* Waiters of other processes wake too, look at their head and sleep again. */
        __atomic_fetch_add(&m->seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(m);
    }
}

/* The committed head; for a read-only handle from a fresh index snapshot. */
static int head_past(annal_db *db, uint64_t known, annal_err *err) {
    if (!db->readonly) return annal__visible(db, NULL) > known;
    MDB_txn *t;
    *err = annal__read_txn(db, &t);
    if (*err != ANNAL_OK) return 0;
    uint64_t v = annal__visible(db, t);
    annal__txn_abort(&db->idx, t);
    return v > known;
}

static int canceled(const int *cancel) {
    return cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST);
}

/* Remaining ms to deadline (-1: none), at least 0. */
static int64_t remaining_ms(int64_t deadline) {
    if (deadline < 0) return -1;
    int64_t r = (deadline - mono_ns()) / 1000000;
    return r < 0 ? 0 : r;
}

/* Writer handle: the head only moves in this process, under our condition variable. */
static annal_err wait_local(annal_db *db, uint64_t known, int64_t deadline, const int *cancel) {
    annal__notify *n = db->notify;
    annal_err rc = ANNAL_OK;
    pthread_mutex_lock(&n->mu);
    __atomic_fetch_add(&n->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        if (canceled(cancel)) {
            rc = ANNAL_ECANCELED;
            break;
        }
        if (annal__visible(db, NULL) > known) break;
        if (deadline < 0) {
            pthread_cond_wait(&n->cv, &n->mu);
        } else {
            struct timespec ts = ts_of(deadline);
            if (pthread_cond_timedwait(&n->cv, &n->mu, &ts) == ETIMEDOUT) {
                rc = annal__visible(db, NULL) > known ? ANNAL_OK : ANNAL_ETIMEDOUT;
                if (canceled(cancel)) rc = ANNAL_ECANCELED;
                break;
            }
        }
    }
    __atomic_fetch_sub(&n->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

/* A read-only handle that could map the file: sleep on the futex word. */
static annal_err wait_futex(annal_db *db, notify_shm *m, uint64_t known, int64_t deadline,
                            const int *cancel) {
    annal_err rc = ANNAL_OK;
    __atomic_fetch_add(&m->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint32_t seq = __atomic_load_n(&m->seq, __ATOMIC_SEQ_CST);
        if (canceled(cancel)) {
            rc = ANNAL_ECANCELED;
            break;
        }
        annal_err err = ANNAL_OK;
        if (head_past(db, known, &err)) break;
        if (err != ANNAL_OK) {
            rc = err;
            break;
        }
        int64_t ms = remaining_ms(deadline);
        if (ms == 0) {
            rc = ANNAL_ETIMEDOUT;
            break;
        }
        if (ms < 0 || ms > FUTEX_SLICE_MS) ms = FUTEX_SLICE_MS;
        struct timespec rel = ts_of(ms * 1000000);
        /* Shared (non-private) futex: the writer is another process. */
        syscall(SYS_futex, &m->seq, FUTEX_WAIT, seq, &rel, NULL, 0);
    }
    __atomic_fetch_sub(&m->waiters, 1, __ATOMIC_SEQ_CST);
    return rc;
}

/* A read-only handle without the file: short sleeps, interrupted by kicks. */
static annal_err wait_poll(annal_db *db, uint64_t known, int64_t deadline, const int *cancel) {
    annal__notify *n = db->notify;
    int step = POLL_MIN_MS;
    for (;;) {
        if (canceled(cancel)) return ANNAL_ECANCELED;
        annal_err err = ANNAL_OK;
        if (head_past(db, known, &err)) return ANNAL_OK;
        if (err != ANNAL_OK) return err;
        int64_t ms = remaining_ms(deadline);
        if (ms == 0) return ANNAL_ETIMEDOUT;
        if (ms < 0 || ms > step) ms = step;
        if (step < POLL_MAX_MS) step = step * 2 > POLL_MAX_MS ? POLL_MAX_MS : step * 2;
        pthread_mutex_lock(&n->mu);
        uint64_t kicks = n->kicks;
        struct timespec ts = ts_of(mono_ns() + ms * 1000000);
        while (n->kicks == kicks && pthread_cond_timedwait(&n->cv, &n->mu, &ts) != ETIMEDOUT) {}
        /* A writer may have created the file since: switch to the futex. */
        int64_t now = mono_ns();
        int retry = !__atomic_load_n(&n->shm, __ATOMIC_ACQUIRE) && now >= n->next_try_ns;
        if (retry) n->next_try_ns = now + 1000000000LL;
        notify_shm *m = retry ? map_file(db) : NULL;
        if (m) __atomic_store_n(&n->shm, m, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&n->mu);
        if (__atomic_load_n(&n->shm, __ATOMIC_ACQUIRE))
            return wait_futex(db, n->shm, known, deadline, cancel);
    }
}

annal_err annal__notify_wait(annal_db *db, uint64_t known, int timeout_ms, const int *cancel) {
    if (!db->notify) return ANNAL_ETIMEDOUT;
    int64_t deadline = timeout_ms < 0 ? -1 : mono_ns() + (int64_t)timeout_ms * 1000000;
    if (!db->readonly) return wait_local(db, known, deadline, cancel);
    notify_shm *m = __atomic_load_n(&db->notify->shm, __ATOMIC_ACQUIRE);
    return m ? wait_futex(db, m, known, deadline, cancel) : wait_poll(db, known, deadline, cancel);
}

annal_err annal_wait_position(annal_db *db, uint64_t position, int timeout_ms) {
    if (!db) return ANNAL_EINVAL;
    return annal__notify_wait(db, position, timeout_ms, NULL);
}
