/* Compaction: what stays visible is exactly what was visible, byte for byte and at the
 * same positions, through reopen and rebuild; erased data is gone from every file; reads
 * racing compaction see the same events; a compaction killed at each of its steps, or at
 * random moments, leaves a store that reopens whole. */
#include <dirent.h>
#include <inttypes.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "log/io.h"
#include "store/db_int.h"
#include "testutil.h"

#define SEG_BYTES (64u << 10)

/* ---- the visible events, as a list to compare ---- */
typedef struct vis {
    uint64_t pos, rev;
    uint32_t crc; /* of stream, type, data, metadata, id */
} vis;

typedef struct vset {
    vis *v;
    size_t n, cap;
} vset;

static uint32_t ev_crc(const annal_event *ev) {
    uint32_t c = annal__crc32c(0, ev->stream, ev->stream_len);
    c = annal__crc32c(c, ev->type, ev->type_len);
    c = annal__crc32c(c, ev->data, ev->data_len);
    c = annal__crc32c(c, ev->metadata, ev->metadata_len);
    c = annal__crc32c(c, ev->id.bytes, 16);
    return annal__crc32c(c, &ev->timestamp_ns, 8);
}

/* Every visible event below position `end` (0: all) via $all. */
static void snapshot(annal_db *db, vset *s, uint64_t end) {
    s->n = 0;
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (end && ev->position >= end) break;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->v = realloc(s->v, s->cap * sizeof *s->v);
        }
        s->v[s->n++] = (vis){ev->position, ev->revision, ev_crc(ev)};
    }
    if (rc != ANNAL_OK && rc != ANNAL_END) TU_OK(db, rc);
    annal_iter_close(it);
}

static int same(const vset *a, const vset *b, char *why, size_t len) {
    for (size_t i = 0; i < a->n || i < b->n; i++) {
        if (i >= a->n || i >= b->n || a->v[i].pos != b->v[i].pos || a->v[i].rev != b->v[i].rev ||
            a->v[i].crc != b->v[i].crc) {
            snprintf(why, len, "differ at entry %zu (position %llu vs %llu), counts %zu vs %zu", i,
                     i < a->n ? (unsigned long long)a->v[i].pos : 0ull,
                     i < b->n ? (unsigned long long)b->v[i].pos : 0ull, a->n, b->n);
            return 0;
        }
    }
    return 1;
}

#define ASSERT_SAME(a, b)                                                                          \
    do {                                                                                           \
        char why_[200];                                                                            \
        if (!same((a), (b), why_, sizeof why_)) fail_msg("visible events changed: %s", why_);      \
    } while (0)

/* Backward $all and per-stream reads must agree with the forward snapshot too. */
static void check_other_reads(annal_db *db, const vset *s) {
    annal_iter *it;
    const annal_event *ev;
    TU_OK(db, annal_read_all(db, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 0, &it));
    size_t i = s->n;
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        if (ev->position > s->v[s->n - 1].pos) continue; /* appended later */
        assert_true(i > 0);
        i--;
        assert_int_equal(ev->position, s->v[i].pos);
        assert_int_equal(ev_crc(ev), s->v[i].crc);
    }
    annal_iter_close(it);
    assert_int_equal(i, 0);
    /* category "keep": every visible event of those streams, in order */
    size_t want = 0, got = 0;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    while (annal_iter_next(it, &ev) == ANNAL_OK)
        want += strncmp(ev->stream, "keep-", 5) == 0 && ev->position <= s->v[s->n - 1].pos;
    annal_iter_close(it);
    TU_OK(db, annal_read_category(db, "keep", 0, 0, 0, &it));
    uint64_t last = 0;
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        if (ev->position > s->v[s->n - 1].pos) continue;
        assert_true(got == 0 || ev->position > last);
        last = ev->position;
        got++;
    }
    annal_iter_close(it);
    assert_int_equal(got, want);
}

/* ---- the workload ---- */
static void add(annal_db *db, const char *stream, int n, const char *secret) {
    for (int i = 0; i < n; i++) {
        char d[300];
        snprintf(d, sizeof d, "{\"i\":%d,\"pad\":\"%0200d\",\"s\":\"%s\"}", i, i,
                 secret ? secret : "none");
        TU_OK(db, tu_append1(db, stream, ANNAL_EXPECT_ANY, "Thing", d, NULL));
    }
}

/* Round r: more events in kept, limited, deleted and tombstoned streams. */
static void workload(annal_db *db, int r) {
    char s[64], secret[64];
    for (int k = 0; k < 6; k++) {
        snprintf(s, sizeof s, "keep-%d", k);
        add(db, s, 8, NULL);
        snprintf(s, sizeof s, "gone-%d-%d", r, k);
        snprintf(secret, sizeof secret, "SECRET-%d-%d", r, k);
        add(db, s, 6, secret);
        snprintf(s, sizeof s, "trim-%d", k);
        add(db, s, 5, NULL);
    }
    for (int k = 0; k < 6; k++) {
        snprintf(s, sizeof s, "gone-%d-%d", r, k);
        TU_OK(db, annal_stream_delete(db, s, ANNAL_EXPECT_ANY, k % 3 == 2 ? ANNAL_DELETE_HARD : 0,
                                      NULL));
        snprintf(s, sizeof s, "trim-%d", k);
        TU_OK(db, annal_stream_meta_set(db, s, ANNAL_EXPECT_ANY, "{\"$maxCount\":2}", 15, NULL));
    }
    add(db, "keep-0", 40, NULL); /* a little more, so the last segment moves on */
}

/* Does any file under dir/log hold needle? */
static int log_holds(const char *dir, const char *needle) {
    char ld[4096];
    snprintf(ld, sizeof ld, "%s/log", dir);
    DIR *d = opendir(ld);
    struct dirent *e;
    int found = 0;
    size_t nl = strlen(needle);
    while (d && (e = readdir(d)) != NULL && !found) {
        if (e->d_name[0] == '.') continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", ld, e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        static char buf[1 << 16];
        size_t carry = 0, n;
        while (!found && (n = fread(buf + carry, 1, sizeof buf - carry, f)) > 0) {
            size_t have = carry + n;
            found = memmem(buf, have, needle, nl) != NULL;
            carry = have < nl ? have : nl - 1;
            memmove(buf, buf + have - carry, carry);
        }
        fclose(f);
    }
    if (d) closedir(d);
    return found;
}

static annal_db *open_seg(const char *dir, const annal__io *io) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    annal_err rc = annal__db_open_io(dir, &o, io ? io : annal__io_posix(), &db);
    if (rc != ANNAL_OK) fail_msg("open %s: %s", dir, annal_errname(rc));
    return db;
}

static void test_compact_basic(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact");
    annal_db *db = open_seg(dir, NULL);
    for (int r = 0; r < 6; r++) workload(db, r);
    /* Every position-table entry of a long run erased: backward reads must look far down
     * for an entry and keep only the newest events they pass. */
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    for (uint64_t p = info.events; p < info.events + 2400; p++)
        add(db, p % 32 == 0 ? "stride-gone" : "keep-s", 1, "SECRET-STRIDE");
    TU_OK(db, annal_stream_delete(db, "stride-gone", ANNAL_EXPECT_ANY, 0, NULL));
    add(db, "keep-0", 300, NULL); /* seal the segments holding them */
    vset before = {0}, after = {0};
    snapshot(db, &before, 0);
    assert_true(log_holds(dir, "SECRET-1-0"));
    annal_db_info i0, i1;
    TU_OK(db, annal_db_info_get(db, &i0));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    printf("compacted %llu of %llu segments: %llu events erased, %llu bytes freed\n",
           (unsigned long long)st.segments_done, (unsigned long long)st.segments_total,
           (unsigned long long)st.events_erased, (unsigned long long)st.bytes_reclaimed);
    TU_OK(db, annal_db_info_get(db, &i1));
    assert_true(st.segments_total >= 4);
    assert_true(st.events_erased > 100);
    assert_true(st.bytes_reclaimed > 0);
    /* The log shrank. (The index file may have grown: what a transaction may write is
     * allocated first, and a compaction moves many entries.) */
    assert_true(i1.disk_bytes - i1.index_bytes < i0.disk_bytes - i0.index_bytes);
    snapshot(db, &after, 0);
    ASSERT_SAME(&before, &after);
    check_other_reads(db, &after);
    /* deleted data is in no file any more, except in the active segment */
    assert_false(log_holds(dir, "SECRET-0-0"));
    assert_false(log_holds(dir, "SECRET-1-4"));
    /* a second run has nothing to do */
    TU_OK(db, annal_compact(db, 0, &st));
    assert_int_equal(st.events_erased, 0);
    /* revisions go on: a soft-deleted stream re-created, a trimmed one appended to */
    annal_append_result res;
    TU_OK(db, tu_append1(db, "gone-0-0", ANNAL_EXPECT_NO_STREAM, "Back", "{}", &res));
    assert_int_equal(res.first_revision, 6);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));

    /* reopen, then rebuild from the compacted log: the same events, the same revisions */
    for (int pass = 0; pass < 2; pass++) {
        if (pass) TU_OK(NULL, annal_rebuild_index(dir, NULL));
        db = open_seg(dir, NULL);
        vset again = {0};
        snapshot(db, &again, after.v[after.n - 1].pos + 1);
        ASSERT_SAME(&after, &again);
        check_other_reads(db, &again);
        uint64_t head;
        TU_OK(db, annal_stream_head(db, "gone-0-0", &head));
        assert_int_equal(head, 6);
        TU_OK(db, annal_stream_head(db, "trim-3", &head));
        assert_int_equal(head, 29); /* 5 events in each of 6 rounds */
        TU_EXPECT(db, annal_stream_head(db, "gone-0-2", &head), ANNAL_EDELETED);
        TU_EXPECT(db, tu_append1(db, "gone-1-2", ANNAL_EXPECT_ANY, "X", "{}", NULL),
                  ANNAL_EDELETED);
        const char *back = pass ? "gone-2-1" : "gone-1-1";
        TU_EXPECT(db, annal_stream_head(db, back, &head), ANNAL_ENOTFOUND);
        TU_OK(db, tu_append1(db, back, ANNAL_EXPECT_NO_STREAM, "Back", "{}", &res));
        assert_int_equal(res.first_revision, 6);
        free(again.v);
        annal_db_close(db);
        TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    }
    free(before.v);
    free(after.v);
    tu_rmrf(dir);
    free(dir);
}

/* ---- reads racing compaction ---- */
typedef struct racer {
    annal_db *db;
    const vset *want;
    int stop;
    long rounds;
    char err[200];
} racer;

static void *reader(void *arg) {
    racer *r = arg;
    vset got = {0};
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && !r->err[0]) {
        snapshot(r->db, &got, r->want->v[r->want->n - 1].pos + 1);
        if (!same(r->want, &got, r->err, sizeof r->err)) break;
        r->rounds++;
    }
    free(got.v);
    return NULL;
}

static void *appender(void *arg) {
    racer *r = arg;
    for (int i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
        char s[32];
        snprintf(s, sizeof s, "fresh-%d", i % 17);
        if (tu_append1(r->db, s, ANNAL_EXPECT_ANY, "New", "{\"x\":1}", NULL) != ANNAL_OK) {
            snprintf(r->err, sizeof r->err, "append failed: %s", annal_db_errmsg(r->db));
            break;
        }
    }
    return NULL;
}

static void test_reads_race_compaction(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-race");
    annal_db *db = open_seg(dir, NULL);
    for (int r = 0; r < 6; r++) workload(db, r);
    vset want = {0};
    snapshot(db, &want, 0);
    /* a reader in another process, through a read-only handle, for the whole time */
    int stop_pipe[2];
    assert_int_equal(pipe(stop_pipe), 0);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        close(stop_pipe[1]);
        annal_db_opts o;
        annal_db_opts_init(&o);
        o.flags = ANNAL_OPEN_READONLY;
        annal_db *ro = NULL;
        if (annal_db_open(dir, &o, &ro) != ANNAL_OK) _exit(3);
        racer me = {ro, &want, 0, 0, ""};
        struct timeval tv0 = {0, 0};
        for (;;) {
            fd_set fs;
            FD_ZERO(&fs);
            FD_SET(stop_pipe[0], &fs);
            struct timeval tv = tv0;
            if (select(stop_pipe[0] + 1, &fs, NULL, NULL, &tv) > 0) break;
            vset got = {0};
            snapshot(ro, &got, want.v[want.n - 1].pos + 1);
            int ok = same(&want, &got, me.err, sizeof me.err);
            free(got.v);
            /* backward and by category go through index locations: other generations */
            annal_iter *it;
            const annal_event *ev;
            size_t k = want.n;
            if (ok && annal_read_all(ro, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 0, &it) == ANNAL_OK) {
                annal_err rc;
                while (ok && (rc = annal_iter_next(it, &ev)) == ANNAL_OK)
                    if (ev->position <= want.v[want.n - 1].pos)
                        ok =
                            k > 0 && want.v[--k].pos == ev->position && want.v[k].crc == ev_crc(ev);
                ok = ok && rc == ANNAL_END && k == 0;
                annal_iter_close(it);
                if (!ok) snprintf(me.err, sizeof me.err, "backward read differs near %zu", k);
            }
            if (ok && annal_read_category(ro, "keep", 0, 0, 0, &it) == ANNAL_OK) {
                annal_err rc;
                while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {}
                ok = rc == ANNAL_END;
                annal_iter_close(it);
                if (!ok) snprintf(me.err, sizeof me.err, "category read: %s", annal_errname(rc));
            }
            if (!ok) {
                fprintf(stderr, "read-only reader: %s\n", me.err);
                _exit(1);
            }
            me.rounds++;
        }
        printf("read-only reader in another process: %ld passes\n", me.rounds);
        annal_db_close(ro);
        fflush(stdout);
        _exit(me.rounds > 0 ? 0 : 2);
    }
    close(stop_pipe[0]);
    usleep(50000); /* let it open before the compaction starts */
    racer rd[2] = {{db, &want, 0, 0, ""}, {db, &want, 0, 0, ""}}, ap = {db, &want, 0, 0, ""};
    pthread_t th[3];
    pthread_create(&th[0], NULL, reader, &rd[0]);
    pthread_create(&th[1], NULL, reader, &rd[1]);
    pthread_create(&th[2], NULL, appender, &ap);
    annal_compact_stats st;
    annal_err rc = annal_compact(db, 4u << 20, &st);
    for (int i = 0; i < 2; i++) __atomic_store_n(&rd[i].stop, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&ap.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    close(stop_pipe[1]);
    int cst;
    waitpid(child, &cst, 0);
    TU_OK(db, rc);
    if (!WIFEXITED(cst) || WEXITSTATUS(cst) != 0) fail_msg("the read-only reader failed (%d)", cst);
    printf("readers: %ld and %ld full passes during compaction; %llu events erased\n", rd[0].rounds,
           rd[1].rounds, (unsigned long long)st.events_erased);
    if (rd[0].err[0] || rd[1].err[0] || ap.err[0])
        fail_msg("%s %s %s", rd[0].err, rd[1].err, ap.err);
    assert_true(st.events_erased > 0);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    free(want.v);
    tu_rmrf(dir);
    free(dir);
}

/* ---- killed compactions ---- */
static const char *g_kill_at; /* fault point where the child dies */

static int kill_fault(void *ctx, const char *where) {
    (void)ctx;
    if (g_kill_at && strcmp(where, g_kill_at) == 0) raise(SIGKILL);
    return 0;
}

/* Fork a child that compacts dir and dies at point (or after delay_us if point is
 * NULL); the parent waits for it. */
static void compact_and_die(const char *dir, const char *point, long delay_us) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        static annal__io kio;
        kio = *annal__io_posix();
        kio.fault = kill_fault;
        g_kill_at = point;
        annal_db *db = NULL;
        annal_db_opts o;
        annal_db_opts_init(&o);
        o.segment_bytes = SEG_BYTES;
        if (annal__db_open_io(dir, &o, &kio, &db) != ANNAL_OK) _exit(3);
        annal_compact(db, point ? 0 : (2u << 20), NULL); /* slow when killed by time */
        _exit(0);
    }
    if (!point) {
        usleep((useconds_t)delay_us);
        kill(pid, SIGKILL);
    }
    int st;
    waitpid(pid, &st, 0);
    if (point && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
        fail_msg("child did not die at %s (status %d)", point, st);
}

static void test_compaction_killed(void **state) {
    (void)state;
    static const char *points[] = {"compact-written", "compact-marked", "compact-moved",
                                   "compact-indexed", "compact-renamed"};
    unsigned seed = (unsigned)getpid();
    int cycles = getenv("ANNAL_LONG") ? 60 : 16;
    printf("seed %u, %d random kills after the 5 fixed points\n", seed, cycles);
    char *dir = tu_tmpdir("compact-kill");
    vset want = {0}, got = {0};
    for (int cycle = 0; cycle < 5 + cycles; cycle++) {
        annal_db *db = open_seg(dir, NULL);
        workload(db, cycle);
        if (cycle == 0) workload(db, 1000); /* fill the first segments */
        snapshot(db, &want, 0);
        annal_db_close(db);
        const char *point = cycle < 5 ? points[cycle] : NULL;
        compact_and_die(dir, point, 1000 + rand_r(&seed) % 150000);
        db = open_seg(dir, NULL);
        snapshot(db, &got, want.v[want.n - 1].pos + 1);
        char why[200];
        if (!same(&want, &got, why, sizeof why))
            fail_msg("cycle %d (%s): %s", cycle, point ? point : "random", why);
        check_other_reads(db, &got);
        annal_db_close(db);
        annal_err rc = annal_verify(dir, NULL, NULL, NULL);
        if (rc != ANNAL_OK) fail_msg("cycle %d: verify: %s", cycle, annal_errname(rc));
    }
    /* and a final, uninterrupted compaction still works and keeps everything */
    annal_db *db = open_seg(dir, NULL);
    TU_OK(db, annal_compact(db, 0, NULL));
    snapshot(db, &got, want.v[want.n - 1].pos + 1);
    ASSERT_SAME(&want, &got);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    free(want.v);
    free(got.v);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a full disk while compacting ---- */
static int g_full; /* writes fail with ENOSPC while set */

static ssize_t full_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off) {
    (void)ctx;
    if (g_full) return -ENOSPC;
    return annal__io_posix()->pwrite(NULL, fd, buf, n, off);
}

static void test_compaction_disk_full(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-full");
    static annal__io fio;
    fio = *annal__io_posix();
    fio.pwrite = full_pwrite;
    annal_db *db = open_seg(dir, &fio);
    for (int r = 0; r < 4; r++) workload(db, r);
    vset want = {0}, got = {0};
    snapshot(db, &want, 0);
    g_full = 1;
    TU_EXPECT(db, annal_compact(db, 0, NULL), ANNAL_ENOSPC);
    g_full = 0;
    /* nothing half-written is left, nothing changed, and the store goes on */
    char ld[4096];
    snprintf(ld, sizeof ld, "%s/log", dir);
    DIR *d = opendir(ld);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) assert_null(strstr(e->d_name, ".tmp"));
    closedir(d);
    snapshot(db, &got, 0);
    ASSERT_SAME(&want, &got);
    TU_OK(db, tu_append1(db, "keep-0", ANNAL_EXPECT_ANY, "After", "{}", NULL));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 0);
    snapshot(db, &got, want.v[want.n - 1].pos + 1);
    ASSERT_SAME(&want, &got);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    free(want.v);
    free(got.v);
    tu_rmrf(dir);
    free(dir);
}

/* ---- reads that start inside a run of erased events (issue 14.1) ---- */

/* The first event at or after `from` through $all (position, or UINT64_MAX at the end). */
static uint64_t first_from(annal_db *db, uint64_t from) {
    annal_iter *it;
    const annal_event *ev;
    TU_OK(db, annal_read_all(db, from, 0, 1, &it));
    annal_err rc = annal_iter_next(it, &ev);
    uint64_t p = rc == ANNAL_OK ? ev->position : UINT64_MAX;
    if (rc != ANNAL_END) TU_OK(db, rc);
    annal_iter_close(it);
    return p;
}

/* The first event a subscription to $all after `after` delivers. */
static uint64_t sub_first(annal_db *db, uint64_t after) {
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.start = ANNAL_SUB_AFTER;
    so.from = after;
    annal_sub *sub;
    TU_OK(db, annal_sub_open(db, &so, &sub));
    annal_sub_item item;
    uint64_t p = UINT64_MAX;
    for (;;) {
        TU_OK(db, annal_sub_next(sub, 0, &item));
        if (item.kind == ANNAL_SUB_EVENT) p = item.event->position;
        if (item.kind == ANNAL_SUB_EVENT || item.kind == ANNAL_SUB_CAUGHT_UP) break;
    }
    annal_sub_close(sub);
    return p;
}

static void test_reads_from_inside_holes(void **state) {
    (void)state;
    /* gone_first: the log starts with erased events (no position entry is left below). */
    for (int gone_first = 0; gone_first < 2; gone_first++) {
        char *dir = tu_tmpdir("compact-holes");
        annal_db *db = open_seg(dir, NULL);
        for (int r = 0; r < 4; r++) {
            if (gone_first) add(db, "gone-1", 150, NULL);
            add(db, "keep-1", 35, NULL);
            if (!gone_first) add(db, "gone-1", 150, NULL);
        }
        add(db, "keep-1", 300, NULL); /* seal the segments holding them */
        TU_OK(db, annal_stream_delete(db, "gone-1", ANNAL_EXPECT_ANY, 0, NULL));
        annal_compact_stats st;
        TU_OK(db, annal_compact(db, 0, &st));
        assert_true(st.events_erased >= 300);
        vset all = {0};
        snapshot(db, &all, 0);
        annal_db_info info;
        TU_OK(db, annal_db_info_get(db, &info));
        size_t k = 0; /* all.v[k]: the first survivor at or after p */
        for (uint64_t p = 0; p < info.events; p++) {
            while (k < all.n && all.v[k].pos < p) k++;
            uint64_t want = k < all.n ? all.v[k].pos : UINT64_MAX;
            uint64_t got = first_from(db, p);
            if (got != want)
                fail_msg("$all from %llu: first event %llu, want %llu", (unsigned long long)p,
                         (unsigned long long)got, (unsigned long long)want);
            if (p > 0 && (got = sub_first(db, p - 1)) != want)
                fail_msg("subscription after %llu: first event %llu, want %llu",
                         (unsigned long long)(p - 1), (unsigned long long)got,
                         (unsigned long long)want);
        }
        check_other_reads(db, &all);
        free(all.v);
        annal_db_close(db);
        TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
        tu_rmrf(dir);
        free(dir);
    }
}

/* ---- a compacted segment that ends with a hole on a page boundary ---- */

/* Segment 0: one kept event with data_len bytes of data, then single "gone" events up to
 * the end; segment 1: a batch of kept events first. Gone deleted and compacted: segment
 * 0's new file ends with the hole record. Returns that file's size. */
static uint64_t hole_at_end(const char *dir, size_t data_len) {
    annal_db *db = open_seg(dir, NULL);
    char *d = malloc(data_len + 1);
    memset(d, 'x', data_len);
    d[data_len] = 0;
    TU_OK(db, tu_append1(db, "keep-1", ANNAL_EXPECT_ANY, "K", d, NULL));
    free(d);
    uint64_t per = 0;
    for (;;) {
        uint64_t before = db->woff;
        if (per && db->woff + 2 * per > db->wseg->cap) break; /* the next might not fit */
        TU_OK(db, tu_append1(db, "gone-1", ANNAL_EXPECT_ANY, "G", "{}", NULL));
        per = db->woff - before;
    }
    assert_int_equal(db->wseg->no, 0);
    annal_event_data ev[5];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 5; i++) ev[i].type = "K", ev[i].data = "{}", ev[i].data_len = 2;
    TU_OK(db, annal_append(db, "keep-1", ANNAL_EXPECT_ANY, ev, 5, NULL));
    assert_int_equal(db->wseg->no, 1);
    add(db, "keep-2", 400, NULL); /* seal segment 1 */
    TU_OK(db, annal_stream_delete(db, "gone-1", ANNAL_EXPECT_ANY, 0, NULL));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 10);
    annal_db_close(db);
    char p[4096];
    snprintf(p, sizeof p, "%s/log/%016x.%08x.seg", dir, 0u, 1u);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    return (uint64_t)sb.st_size;
}

static void test_rebuild_hole_at_page_end(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-pageend");
    uint64_t f0 = hole_at_end(dir, 100);
    tu_rmrf(dir);
    /* The same with the kept event longer by what brings the file to a page boundary:
     * the next record's header lies past the end of the file. */
    size_t more = (size_t)((4096 - f0 % 4096) % 4096);
    uint64_t f1 = hole_at_end(dir, 100 + more);
    assert_int_equal(f1 % 4096, 0);
    TU_OK(NULL, annal_rebuild_index(dir, NULL)); /* (was SIGBUS reading past the file) */
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    annal_db *db = open_seg(dir, NULL);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "keep-1", &head));
    assert_int_equal(head, 5);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- read-only opens while compaction replaces segments (issue 14.5) ---- */

/* A reader process: open read-only, read, close, until stop_fd has something to read;
 * exits with the number of failures (at most 100). */
static void ro_opener(const char *dir, int stop_fd) {
    int bad = 0, opens = 0;
    for (;;) {
        fd_set fs;
        FD_ZERO(&fs);
        FD_SET(stop_fd, &fs);
        struct timeval tv = {0, 0};
        if (select(stop_fd + 1, &fs, NULL, NULL, &tv) > 0) break;
        annal_db_opts o;
        annal_db_opts_init(&o);
        o.flags = ANNAL_OPEN_READONLY;
        annal_db *ro = NULL;
        annal_err rc = annal_db_open(dir, &o, &ro);
        annal_iter *it = NULL;
        const annal_event *ev;
        if (rc == ANNAL_OK) rc = annal_read_all(ro, 0, 0, 50, &it);
        while (rc == ANNAL_OK && (rc = annal_iter_next(it, &ev)) == ANNAL_OK) {}
        if (rc != ANNAL_END && bad++ < 5)
            fprintf(stderr, "read-only open %d: %s: %s\n", opens, annal_errname(rc),
                    ro ? annal_db_errmsg(ro) : "");
        annal_iter_close(it);
        annal_db_close(ro);
        opens++;
    }
    printf("%d read-only opens, %d failed\n", opens, bad);
    fflush(stdout);
    _exit(bad > 100 ? 100 : bad);
}

static void test_readonly_opens_during_compaction(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-ro");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    /* Streams t-0..t-N spread over every segment: deleting one gives compaction every
     * segment to replace. */
    int nt = getenv("ANNAL_LONG") ? 40 : 12;
    char s[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(s, sizeof s, "t-%d", i / 3 % nt);
        TU_OK(db, tu_append1(db, i % 3 ? "keep-1" : s, ANNAL_EXPECT_ANY, "E",
                             "{\"pad\":\"0123456789012345678901234567890123456789\"}", NULL));
    }
    annal_db_close(db); /* (a child must not inherit an open index environment) */
    int stop[2];
    assert_int_equal(pipe(stop), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(stop[1]);
        ro_opener(dir, stop[0]);
    }
    close(stop[0]);
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_compact_stats st;
    uint64_t replaced = 0;
    for (int r = 0; r < nt; r++) {
        snprintf(s, sizeof s, "t-%d", r);
        TU_OK(db, annal_stream_delete(db, s, ANNAL_EXPECT_ANY, 0, NULL));
        TU_OK(db, annal_compact(db, 0, &st));
        replaced += st.segments_done;
    }
    assert_int_equal(write(stop[1], "x", 1), 1);
    close(stop[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    printf("%" PRIu64 " segments replaced\n", replaced);
    annal_db_close(db);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    tu_rmrf(dir);
    free(dir);
}

/* ---- revisions are never given twice (issue 26: compact.c erasable) ---- */

/* A stream whose every event is hidden by its limits (not deleted): compaction keeps its
 * last event, which carries its revision, so the next append continues after it — on the
 * live handle, after reopen and after an index rebuild. */
static void test_revisions_survive_compaction(void **state) {
    (void)state;
    const char *docs[] = {"{\"$maxCount\":0}", "{\"$tb\":10}", "{\"$maxAge\":0}"};
    for (int pass = 0; pass < 3 * 3; pass++) {
        char *dir = tu_tmpdir("compact-revs");
        annal_db *db = open_seg(dir, NULL);
        add(db, "hidden-1", 10, NULL);
        const char *doc = docs[pass % 3];
        TU_OK(db, annal_stream_meta_set(db, "hidden-1", ANNAL_EXPECT_ANY, doc, strlen(doc), NULL));
        add(db, "keep-1", 400, NULL); /* seal the segment */
        annal_compact_stats st;
        TU_OK(db, annal_compact(db, 0, &st));
        assert_true(st.events_erased >= 9); /* (all but the last) */
        if (pass / 3 >= 1) {                /* 1: reopen; 2: rebuild the index from the log */
            annal_db_close(db);
            if (pass / 3 == 2) TU_OK(NULL, annal_rebuild_index(dir, NULL));
            db = open_seg(dir, NULL);
        }
        annal_append_result res;
        TU_OK(db, tu_append1(db, "hidden-1", ANNAL_EXPECT_ANY, "After", "{}", &res));
        assert_int_equal(res.first_revision, 10);
        TU_EXPECT(db, tu_append1(db, "hidden-1", 9, "Stale", "{}", &res), ANNAL_ECONFLICT);
        annal_db_close(db);
        tu_rmrf(dir);
        free(dir);
    }
}

/* ---- power cut after a compaction (issue 26: compact.c fdatasync) ---- */

/* Writes not flushed by an fdatasync of their file, as a power cut would lose them. */
static char g_fdpath[1024][256]; /* path of each open fd */
static struct {
    int on;
    struct unflushed {
        char path[256];
        uint64_t off, n;
    } w[4096];
    size_t nw;
} P;

static int pc_open(void *ctx, const char *path, int flags, int mode) {
    int fd = annal__io_posix()->open(ctx, path, flags, mode);
    if (fd >= 0 && fd < 1024) snprintf(g_fdpath[fd], sizeof g_fdpath[fd], "%s", path);
    return fd;
}

static ssize_t pc_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off) {
    ssize_t r = annal__io_posix()->pwrite(ctx, fd, buf, n, off);
    if (r > 0 && P.on && fd < 1024 && P.nw < 4096) {
        snprintf(P.w[P.nw].path, sizeof P.w[P.nw].path, "%s", g_fdpath[fd]);
        P.w[P.nw].off = off;
        P.w[P.nw++].n = (uint64_t)r;
    }
    return r;
}

static int pc_sync(void *ctx, int fd) {
    int r = annal__io_posix()->sync(ctx, fd);
    for (size_t i = 0; r == 0 && fd < 1024 && i < P.nw; i++)
        if (strcmp(P.w[i].path, g_fdpath[fd]) == 0) P.w[i].n = 0; /* on disk */
    return r;
}

/* The power goes: every write not flushed is lost (zeros where it was). A file renamed
 * since (tmp name to final) lost them under its new name. */
static void power_cut(void) {
    for (size_t i = 0; i < P.nw; i++) {
        if (!P.w[i].n) continue;
        char path[256];
        snprintf(path, sizeof path, "%s", P.w[i].path);
        size_t l = strlen(path);
        if (access(path, F_OK) != 0 && l > 4 && strcmp(path + l - 4, ".tmp") == 0) path[l - 4] = 0;
        FILE *f = fopen(path, "r+b");
        if (!f) continue;
        char *z = calloc(1, (size_t)P.w[i].n);
        fseeko(f, (off_t)P.w[i].off, SEEK_SET);
        fwrite(z, 1, (size_t)P.w[i].n, f);
        fclose(f);
        free(z);
    }
    P.nw = 0;
    P.on = 0;
}

static void test_power_cut_after_compaction(void **state) {
    (void)state;
    char *dir = tu_tmpdir("compact-power");
    static annal__io pio;
    pio = *annal__io_posix();
    pio.open = pc_open;
    pio.pwrite = pc_pwrite;
    pio.sync = pc_sync;
    annal_db *db = open_seg(dir, &pio);
    for (int r = 0; r < 3; r++) workload(db, r);
    vset want = {0}, got = {0};
    snapshot(db, &want, 0);
    P.on = 1;
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 0);
    annal_db_close(db);
    power_cut(); /* after annal_compact returned: what it wrote must be on disk */
    db = open_seg(dir, NULL);
    snapshot(db, &got, 0);
    ASSERT_SAME(&want, &got);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    free(want.v);
    free(got.v);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact_basic),
        cmocka_unit_test(test_reads_race_compaction),
        cmocka_unit_test(test_compaction_killed),
        cmocka_unit_test(test_compaction_disk_full),
        cmocka_unit_test(test_reads_from_inside_holes),
        cmocka_unit_test(test_rebuild_hole_at_page_end),
        cmocka_unit_test(test_readonly_opens_during_compaction),
        cmocka_unit_test(test_revisions_survive_compaction),
        cmocka_unit_test(test_power_cut_after_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
