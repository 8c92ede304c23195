/*
 * backup_appenders.c -- appenders' throughput with and without a backup running beside
 * them (issue 22: >= 80% of without). Prints one line per window and the medians.
 *
 *   annal_backup_appenders --dir DIR --backup 'CMD' [--threads T] [--seconds S] [--rounds R]
 *
 * T threads (default 16) append batches of 10 events (~200 bytes each), durably, to the
 * store in DIR (opened here, as a writer). Windows of S seconds (default 3) alternate:
 * "alone", then "backup" (CMD runs over and over through /bin/sh, in a process group of
 * its own, for the window: e.g. `rm -rf D && annal --data DIR backup D`; the one running
 * when the window ends is killed, which a backup survives by design), R rounds (default
 * 5). Between windows the appenders pause while the disk is synced, so that no window
 * pays for another's dirty pages. Events/s counts the events acknowledged in a window.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
#include <annal.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static annal_db *g_db;
static atomic_ullong g_events;
static atomic_int g_stop, g_backing_up, g_pause;
static const char *g_backup_cmd;
static atomic_ulong g_backups;

static void *appender(void *arg) {
    unsigned long k = (unsigned long)(uintptr_t)arg;
    char data[200];
    memset(data, 'x', sizeof data);
    data[0] = '"', data[sizeof data - 1] = '"';
    annal_event_data ev[10];
    for (unsigned long n = 0; !atomic_load(&g_stop); n++) {
        while (atomic_load(&g_pause) && !atomic_load(&g_stop)) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
        char stream[32];
        snprintf(stream, sizeof stream, "app-%lu-%lu", k, n % 100);
        memset(ev, 0, sizeof ev);
        for (int i = 0; i < 10; i++) {
            ev[i].type = "Tick";
            ev[i].data = data;
            ev[i].data_len = sizeof data;
        }
        annal_err rc = annal_append(g_db, stream, ANNAL_EXPECT_ANY, ev, 10, NULL);
        if (rc != ANNAL_OK) {
            fprintf(stderr, "append: %s: %s\n", annal_errname(rc), annal_db_errmsg(g_db));
            exit(1);
        }
        atomic_fetch_add(&g_events, 10);
    }
    return NULL;
}

/* Runs CMD over and over while g_backing_up; kills the one running when it is cleared. */
static void *backer(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        if (!atomic_load(&g_backing_up)) {
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            execl("/bin/sh", "sh", "-c", g_backup_cmd, (char *)NULL);
            _exit(127);
        }
        if (pid < 0) {
            perror("fork");
            exit(1);
        }
        setpgid(pid, pid);
        int st = 0;
        for (;;) {
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) break;
            if (!atomic_load(&g_backing_up)) { /* the window ended: stop this one */
                kill(-pid, SIGKILL);
                waitpid(pid, &st, 0);
                st = -1;
                break;
            }
            struct timespec ts = {0, 2 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (st == -1) continue;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "backup command failed: %s\n", g_backup_cmd);
            exit(1);
        }
        atomic_fetch_add(&g_backups, 1);
    }
    return NULL;
}

/* Between windows: appenders paused, the disk synced. */
static void settle(void) {
    atomic_store(&g_pause, 1);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    sync();
    atomic_store(&g_pause, 0);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double window(double seconds) {
    unsigned long long e0 = atomic_load(&g_events);
    int64_t t0 = mono_ns();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    return (double)(atomic_load(&g_events) - e0) / ((double)(mono_ns() - t0) / 1e9);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 16, rounds = 5;
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--backup"))
            g_backup_cmd = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
    }
    if (!dir || !g_backup_cmd || threads < 1 || threads > 256 || rounds < 1 || rounds > 100) {
        fprintf(stderr, "usage: annal_backup_appenders --dir DIR --backup CMD [--threads T] "
                        "[--seconds S] [--rounds R]\n");
        return 1;
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    annal_err rc = annal_db_open(dir, &o, &g_db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "open %s: %s\n", dir, annal_errname(rc));
        return 1;
    }
    pthread_t th[257];
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, appender, (void *)(uintptr_t)i);
    pthread_create(&th[threads], NULL, backer, NULL);
    double alone[100], with[100], ratio[100];
    (void)window(1); /* warm up */
    for (int r = 0; r < rounds; r++) {
        settle();
        alone[r] = window(seconds);
        unsigned long b0 = atomic_load(&g_backups);
        atomic_store(&g_backing_up, 1);
        with[r] = window(seconds);
        atomic_store(&g_backing_up, 0);
        ratio[r] = with[r] / alone[r];
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL); /* the backup is killed */
        printf("round %d: alone %.0f ev/s, with backups %.0f ev/s (%lu backups finished), "
               "ratio %.2f\n",
               r, alone[r], with[r], atomic_load(&g_backups) - b0, ratio[r]);
        fflush(stdout);
        settle();
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i <= threads; i++) pthread_join(th[i], NULL);
    annal_db_close(g_db);
    qsort(alone, (size_t)rounds, sizeof *alone, cmp);
    qsort(with, (size_t)rounds, sizeof *with, cmp);
    qsort(ratio, (size_t)rounds, sizeof *ratio, cmp);
    printf("median: alone %.0f ev/s, with backups %.0f ev/s, ratio of medians %.2f, median "
           "ratio %.2f (%d threads, %.0f s windows, %d rounds)\n",
           alone[rounds / 2], with[rounds / 2], with[rounds / 2] / alone[rounds / 2],
           ratio[rounds / 2], threads, seconds, rounds);
    return 0;
}
