/* Online backup and point-in-time restore (src/store/backup.c): backups taken while
 * threads append and compaction rewrites segments hold exactly the source's events below
 * their position and verify clean; incremental backups after more appends and a
 * compaction; a backup process SIGKILLed at random moments never leaves something that
 * looks complete; restores at random positions and times end where asked; a full disk
 * at the destination fails cleanly and leaves the source as it was. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "base/base.h"
#include "log/segment.h"

static annal_db *open_small(const char *dir, unsigned flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = flags | ANNAL_OPEN_CREATE;
    o.segment_bytes = 64u << 10; /* many segments: more to copy, more to compact */
    o.id_cache_events = 4096;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) fail_msg("open %s: %s", dir, annal_strerror(rc));
    return db;
}

static annal_db *open_ro(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) fail_msg("open %s read-only: %s", dir, annal_strerror(rc));
    return db;
}

static void append_n(annal_db *db, const char *stream, size_t n, size_t bytes,
                     annal_append_result *res) {
    annal_event_data ev[64];
    static char data[4096];
    memset(data, 'x', sizeof data);
    data[0] = '"';
    size_t len = bytes < 2 ? 2 : bytes > sizeof data ? sizeof data : bytes;
    for (size_t i = 0; i < n; i++) {
        memset(&ev[i], 0, sizeof ev[i]);
        ev[i].type = i % 2 ? "Odd" : "Even";
        ev[i].data = data;
        ev[i].data_len = len;
        ev[i].metadata = "{\"m\":1}";
        ev[i].metadata_len = 7;
    }
    data[len - 1] = '"';
    TU_OK(db, annal_append(db, stream, ANNAL_EXPECT_ANY, ev, n, res));
    data[len - 1] = 'x';
}

static void on_damage(void *ctx, const annal_damage *d) {
    (void)ctx;
    printf("damage: segment %llu offset %llu position %lld: %s\n", (unsigned long long)d->segment,
           (unsigned long long)d->offset, (long long)d->position, d->what);
}

static void on_log(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx;
    if (level <= ANNAL_LOG_WARN) printf("log: %s\n", msg);
}

/* Every event of the copy is the source's event at that position, field for field,
 * and none is at or past next; returns how many the copy holds, and (if out) their
 * positions and ids in order. Both logs are walked from the start side by side (a read
 * of $all from a position is not used: after a compaction it may skip that position, a
 * bug of read.c being fixed elsewhere). */
typedef struct posid {
    uint64_t pos;
    annal_uuid id;
} posid;

static uint64_t compare_ids(annal_db *src, const char *copy, uint64_t next, posid **out) {
    annal_db *c = open_ro(copy);
    annal_iter *it = NULL, *si = NULL;
    TU_OK(c, annal_read_all(c, 0, 0, 0, &it));
    TU_OK(src, annal_read_all(src, 0, 0, 0, &si));
    const annal_event *e, *s = NULL;
    annal_err rc, src_rc = ANNAL_OK;
    uint64_t n = 0, cap = 0;
    posid *ids = NULL;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        assert_true(e->position < next);
        while (src_rc == ANNAL_OK && (!s || s->position < e->position))
            src_rc = annal_iter_next(si, &s);
        if (src_rc == ANNAL_OK && s->position == e->position) {
            assert_memory_equal(&s->id, &e->id, sizeof s->id);
            assert_string_equal(s->stream, e->stream);
            assert_string_equal(s->type, e->type);
            assert_int_equal(s->revision, e->revision);
            assert_int_equal(s->timestamp_ns, e->timestamp_ns);
            assert_int_equal(s->data_len, e->data_len);
            assert_memory_equal(s->data, e->data, s->data_len);
            assert_int_equal(s->metadata_len, e->metadata_len);
            assert_memory_equal(s->metadata, e->metadata, s->metadata_len);
        } else if (!strncmp(e->stream, "keep-", 5)) {
            /* Only events of deleted streams (and their system streams: metadata, seal
             * markers) may have left the source since (compaction erased them); the
             * appenders' keep- streams are never deleted. */
            fail_msg("%s at %llu is not in the source", e->stream, (unsigned long long)e->position);
        }
        if (out) {
            if (n == cap) ids = realloc(ids, (cap = cap ? cap * 2 : 4096) * sizeof *ids);
            ids[n] = (posid){e->position, e->id};
        }
        n++;
    }
    assert_int_equal(rc, ANNAL_END);
    annal_iter_close(it);
    annal_iter_close(si);
    annal_db_close(c);
    annal_db_opts vo;
    annal_db_opts_init(&vo);
    vo.log = on_log;
    assert_int_equal(annal_verify(copy, &vo, on_damage, NULL), ANNAL_OK);
    if (out) *out = ids;
    return n;
}

static uint64_t compare(annal_db *src, const char *copy, uint64_t next) {
    return compare_ids(src, copy, next, NULL);
}

/* The mark in DIR/acked (docs/format.md): the valid slot with the higher sequence. */
static uint64_t acked_mark(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/acked", dir);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint64_t best_seq = 0, mark = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t s[28];
        if (pread(fd, s, 28, i ? 4096 : 0) != 28 || memcmp(s, "ANNALACK", 8) != 0) continue;
        if (annal__get32(s + 24) != annal__crc32c(0, s, 24)) continue;
        if (annal__get64(s + 8) >= best_seq)
            best_seq = annal__get64(s + 8), mark = annal__get64(s + 16);
    }
    close(fd);
    return mark;
}

/* ---- backups beside appenders and compaction ----------------------------------------- */

#define THREADS 4
typedef struct acked_ev {
    uint64_t pos;
    annal_uuid id;
} acked_ev;

typedef struct shared {
    annal_db *db;
    _Atomic int stop;
    pthread_mutex_t mu;
    acked_ev *acked; /* keep-stream events acknowledged */
    size_t n, cap;
    _Atomic uint64_t compactions;
} shared;

static void *appender(void *arg) {
    shared *sh = arg;
    uint64_t rng = annal__rng_seed();
    char stream[32];
    while (!sh->stop) {
        size_t n = 1 + annal__rng_next(&rng) % 40;
        annal_event_data ev[40];
        char data[300];
        int len =
            snprintf(data, sizeof data, "{\"r\":%llu}", (unsigned long long)annal__rng_next(&rng));
        for (size_t i = 0; i < n; i++) {
            memset(&ev[i], 0, sizeof ev[i]);
            ev[i].type = "Tick";
            ev[i].data = data;
            ev[i].data_len = (size_t)len;
        }
        snprintf(stream, sizeof stream, "keep-%llu",
                 (unsigned long long)(annal__rng_next(&rng) % 50));
        annal_append_result res;
        annal_err rc = annal_append(sh->db, stream, ANNAL_EXPECT_ANY, ev, n, &res);
        if (rc != ANNAL_OK) fail_msg("append: %s", annal_strerror(rc));
        pthread_mutex_lock(&sh->mu);
        for (size_t i = 0; i < n; i++) {
            if (sh->n == sh->cap) {
                sh->cap = sh->cap ? sh->cap * 2 : 4096;
                sh->acked = realloc(sh->acked, sh->cap * sizeof *sh->acked);
            }
            sh->acked[sh->n++] = (acked_ev){res.first_position + i, ev[i].id};
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return NULL;
}

/* Writes streams and deletes them, seals and compacts, over and over. */
static void *compactor(void *arg) {
    shared *sh = arg;
    for (unsigned k = 0; !sh->stop; k++) {
        char stream[32];
        snprintf(stream, sizeof stream, "gone-%u", k);
        append_n(sh->db, stream, 30, 500, NULL);
        TU_OK(sh->db, annal_stream_delete(sh->db, stream, ANNAL_EXPECT_ANY, 0, NULL));
        TU_OK(sh->db, annal_seal(sh->db));
        annal_err rc = annal_compact(sh->db, 0, NULL);
        if (rc != ANNAL_OK)
            fail_msg("compact: %s: %s", annal_strerror(rc), annal_db_errmsg(sh->db));
        sh->compactions++;
    }
    return NULL;
}

static void test_backup_online(void **state) {
    (void)state;
    char *dir = tu_tmpdir("backup-src"), *dest = tu_tmpdir("backup-dest");
    char *rdir = tu_tmpdir("backup-restored");
    shared sh = {.db = open_small(dir, 0)};
    pthread_mutex_init(&sh.mu, NULL);
    pthread_t th[THREADS + 1];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, appender, &sh);
    pthread_create(&th[THREADS], NULL, compactor, &sh);
    uint64_t last_p = 0;
    for (int round = 0; round < 4; round++) {
        struct timespec ts = {0, 300 * 1000000L};
        nanosleep(&ts, NULL);
        annal_backup_result res;
        /* From the writer's handle; the command backs up through a read-only handle of
         * another process (test_backup_killed here, cli_backup_test.sh beside appends). */
        TU_OK(sh.db, annal_backup(sh.db, dest, NULL, &res));
        assert_true(res.next_position >= last_p);
        assert_int_equal(res.incremental, round > 0);
        last_p = res.next_position;
        uint64_t p;
        assert_int_equal(annal_backup_check(dest, &p), ANNAL_OK);
        assert_int_equal(p, res.next_position);
        assert_int_equal(acked_mark(dest), res.next_position);
        posid *ids = NULL;
        uint64_t held = compare_ids(sh.db, dest, res.next_position, &ids);
        /* every acknowledged keep- event below P is in the copy */
        pthread_mutex_lock(&sh.mu);
        size_t n = sh.n;
        acked_ev *snap = malloc(n * sizeof *snap + 1);
        memcpy(snap, sh.acked, n * sizeof *snap);
        pthread_mutex_unlock(&sh.mu);
        uint64_t below = 0;
        for (size_t i = 0; i < n; i++) {
            if (snap[i].pos >= res.next_position) continue;
            below++;
            size_t lo = 0, hi = held; /* ids are in position order */
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (ids[mid].pos < snap[i].pos)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo == held || ids[lo].pos != snap[i].pos)
                fail_msg("acknowledged event at %llu is not in the backup",
                         (unsigned long long)snap[i].pos);
            assert_memory_equal(&ids[lo].id, &snap[i].id, sizeof snap[i].id);
        }
        free(ids);
        free(snap);
        assert_true(held >= below);
        printf("round %d: P=%llu, %llu events in the copy, %llu segments (%llu copied), %llu "
               "compactions so far\n",
               round, (unsigned long long)res.next_position, (unsigned long long)held,
               (unsigned long long)res.segments, (unsigned long long)res.segments_copied,
               (unsigned long long)sh.compactions);
    }
    sh.stop = 1;
    for (int i = 0; i <= THREADS; i++) pthread_join(th[i], NULL);
    assert_true(sh.compactions > 0);
    /* A restore is writable, its mark is its end, and appends go on at P. */
    annal_restore_result rr;
    assert_int_equal(annal_restore(dest, rdir, NULL, &rr), ANNAL_OK);
    assert_int_equal(rr.next_position, last_p);
    assert_int_equal(acked_mark(rdir), last_p);
    compare(sh.db, rdir, last_p);
    annal_db *r = open_small(rdir, 0);
    annal_append_result ar;
    append_n(r, "after-restore", 1, 10, &ar);
    assert_int_equal(ar.first_position, last_p);
    annal_db_close(r);
    assert_int_equal(annal_verify(rdir, NULL, NULL, NULL), ANNAL_OK);
    annal_db_close(sh.db);
    free(sh.acked);
    tu_rmrf(dir), tu_rmrf(dest), tu_rmrf(rdir);
    free(dir), free(dest), free(rdir);
}

/* ---- killed backups ------------------------------------------------------------------ */

static int slow_progress(void *ctx, uint64_t done, uint64_t total) {
    (void)ctx, (void)done, (void)total;
    struct timespec ts = {0, 200000}; /* 0.2 ms a segment: a wider window to be killed in */
    nanosleep(&ts, NULL);
    return 0;
}

static void test_backup_killed(void **state) {
    (void)state;
    char *dir = tu_tmpdir("backup-kill-src"), *dest = tu_tmpdir("backup-kill-dest");
    char *rdir = tu_tmpdir("backup-kill-restored");
    uint64_t rng = annal__rng_seed();
    printf("seed %llu\n", (unsigned long long)rng);
    int rounds = getenv("ANNAL_LONG") ? 60 : 16, complete = 0, incomplete = 0;
    uint64_t prev = UINT64_MAX; /* P of the backup DEST held before this round, if any */
    for (int round = 0; round < rounds; round++) {
        annal_db *db = open_small(dir, 0);
        /* ("keep" between them: a segment compaction erases entirely, or a hole at
         * position 0, makes `annal verify` of the source itself report damage — a
         * verify/compaction bug outside this test's subject.) */
        for (int i = 0; i < 40; i++) {
            append_n(db, "s", 20, 200 + (size_t)(annal__rng_next(&rng) % 800), NULL);
            append_n(db, "keep", 1, 10, NULL);
        }
        if (round % 5 == 4) { /* a compaction between backups now and then */
            TU_OK(db, annal_stream_delete(db, "s", ANNAL_EXPECT_ANY, 0, NULL));
            TU_OK(db, annal_seal(db));
            TU_OK(db, annal_compact(db, 0, NULL));
        }
        uint64_t head = 0;
        annal_db_info info;
        TU_OK(db, annal_db_info_get(db, &info));
        head = info.events;
        annal_db_close(db);
        if (round % 4 == 0) { /* sometimes full, mostly incremental */
            tu_rmrf(dest);
            prev = UINT64_MAX;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            annal_db_opts o;
            annal_db_opts_init(&o);
            o.flags = ANNAL_OPEN_READONLY;
            o.progress = slow_progress;
            annal_db *h = NULL;
            if (annal_db_open(dir, &o, &h) != ANNAL_OK) _exit(3);
            _exit(annal_backup(h, dest, NULL, NULL) == ANNAL_OK ? 0 : 4);
        }
        struct timespec ts = {0, (long)(annal__rng_next(&rng) % 250000000)};
        nanosleep(&ts, NULL);
        assert_true(pid > 0);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        uint64_t p = 0;
        annal_err ck = annal_backup_check(dest, &p);
        tu_rmrf(rdir);
        annal_restore_result rr;
        annal_err rs = annal_restore(dest, rdir, NULL, &rr);
        if (ck == ANNAL_OK) { /* finished before the kill, or killed before it began to
                               * change DEST, which then still holds the last backup: whole */
            complete++;
            if (p != head) assert_int_equal(p, prev);
            head = p;
            prev = p;
            assert_int_equal(rs, ANNAL_OK);
            assert_int_equal(annal_verify(dest, NULL, on_damage, NULL), ANNAL_OK);
            annal_db *c = open_ro(dest);
            TU_OK(c, annal_db_info_get(c, &info));
            assert_int_equal(info.events, head);
            annal_db_close(c);
        } else { /* anything else must not pass for a backup, nor open as a store */
            incomplete++;
            prev = UINT64_MAX;
            assert_int_not_equal(rs, ANNAL_OK);
            annal_db_opts o;
            annal_db_opts_init(&o);
            o.flags = ANNAL_OPEN_READONLY;
            annal_db *c = NULL;
            assert_int_not_equal(annal_db_open(dest, &o, &c), ANNAL_OK);
            o.flags = 0;
            assert_int_not_equal(annal_db_open(dest, &o, &c), ANNAL_OK);
        }
    }
    printf("%d rounds: %d complete, %d killed part way\n", rounds, complete, incomplete);
    assert_true(incomplete > 0);
    tu_rmrf(dir), tu_rmrf(dest), tu_rmrf(rdir);
    free(dir), free(dest), free(rdir);
}

/* ---- point in time ------------------------------------------------------------------- */

static void test_point_in_time(void **state) {
    (void)state;
    char *dir = tu_tmpdir("pitr-src"), *dest = tu_tmpdir("pitr-dest"), *rdir = tu_tmpdir("pitr-r");
    annal_db *db = open_small(dir, 0);
    uint64_t rng = annal__rng_seed();
    printf("seed %llu\n", (unsigned long long)rng);
    enum { BATCHES = 300 };
    uint64_t first[BATCHES + 1];
    int64_t when[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        annal_append_result res;
        char s[16];
        snprintf(s, sizeof s, "st-%d", (int)(annal__rng_next(&rng) % 7));
        append_n(db, s, 1 + annal__rng_next(&rng) % 30, 50 + annal__rng_next(&rng) % 900, &res);
        first[b] = res.first_position;
        annal_iter *it;
        const annal_event *e;
        TU_OK(db, annal_read_all(db, res.first_position, 0, 1, &it));
        TU_OK(db, annal_iter_next(it, &e));
        when[b] = e->timestamp_ns;
        annal_iter_close(it);
    }
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    first[BATCHES] = info.events;
    TU_OK(db, annal_backup(db, dest, NULL, NULL));
    for (int k = 0; k < 24; k++) {
        tu_rmrf(rdir);
        annal_restore_opts o;
        annal_restore_opts_init(&o);
        uint64_t want;
        if (k % 2 == 0) { /* a position: the batch holding P+1 goes unless it starts there */
            o.to_position = annal__rng_next(&rng) % (info.events + 5);
            want = info.events;
            for (int b = 0; b < BATCHES; b++)
                if (first[b + 1] > o.to_position + 1) { /* ends past P: it goes */
                    want = first[b];
                    break;
                }
        } else { /* a time: every batch committed at or before it */
            int b = (int)(annal__rng_next(&rng) % BATCHES);
            o.to_time_ns = when[b] + (k % 4 == 1 ? 0 : -1);
            want = info.events;
            for (int i = 0; i < BATCHES; i++)
                if (when[i] > o.to_time_ns) {
                    want = first[i];
                    break;
                }
        }
        annal_restore_result rr;
        annal_err rc = annal_restore(dest, rdir, &o, &rr);
        if (rc != ANNAL_OK) fail_msg("restore: %s", rr.message);
        assert_int_equal(rr.next_position, want);
        compare(db, rdir, want);
        annal_db *r = open_small(rdir, 0);
        TU_OK(r, annal_db_info_get(r, &info));
        annal_append_result ar;
        append_n(r, "later", 2, 10, &ar);
        assert_int_equal(ar.first_position, want);
        annal_db_close(r);
        TU_OK(db, annal_db_info_get(db, &info));
    }
    annal_db_close(db);
    tu_rmrf(dir), tu_rmrf(dest), tu_rmrf(rdir);
    free(dir), free(dest), free(rdir);
}

/* ---- the index: copied, or rebuilt when a compaction ran meanwhile ------------------- */

static int g_in_compaction, g_compacted;

/* The source's progress callback: called per segment copied by the backup; the first
 * time, it deletes a stream, seals and compacts, in the middle of the backup. */
static int compact_midway(void *ctx, uint64_t done, uint64_t total) {
    (void)done, (void)total;
    annal_db *db = *(annal_db **)ctx;
    if (g_in_compaction || g_compacted || !db) return 0;
    g_in_compaction = 1;
    TU_OK(db, annal_stream_delete(db, "s", ANNAL_EXPECT_ANY, 0, NULL));
    TU_OK(db, annal_seal(db));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 0);
    g_in_compaction = 0;
    g_compacted = 1;
    return 0;
}

static void test_index_copied(void **state) {
    (void)state;
    char *dir = tu_tmpdir("bk-index-src"), *dest = tu_tmpdir("bk-index-dest");
    char *d2 = tu_tmpdir("bk-index-dest2");
    annal_db *db = open_small(dir, 0);
    annal_append_result ar;
    for (int i = 0; i < 300; i++) {
        append_n(db, "s", 10, 300, NULL);
        append_n(db, "keep", 1, 10, &ar);
    }
    /* A backup as usual: the index is copied, and the copy is the source up to P. */
    annal_backup_result res;
    TU_OK(db, annal_backup(db, dest, NULL, &res));
    assert_true(res.index_copied);
    assert_true(res.segments > 10);
    compare(db, dest, res.next_position);
    /* Its ids came along: an append to the restored store of an event id of the source is
     * recognized as the same append (idempotent), not appended again. */
    tu_rmrf(d2);
    annal_restore_result rr;
    assert_int_equal(annal_restore(dest, d2, NULL, &rr), ANNAL_OK);
    annal_iter *it;
    const annal_event *e;
    TU_OK(db, annal_read_stream(db, "keep", 0, 0, 0, &it));
    TU_OK(db, annal_iter_next(it, &e));
    annal_event_data again = {.id = e->id,
                              .type = e->type,
                              .data = e->data,
                              .data_len = e->data_len,
                              .metadata = e->metadata,
                              .metadata_len = e->metadata_len};
    annal_db *r = open_small(d2, 0);
    annal_db_info before, after;
    TU_OK(r, annal_db_info_get(r, &before));
    annal_append_result again_res;
    TU_OK(r, annal_append(r, "keep", ANNAL_EXPECT_ANY, &again, 1, &again_res));
    TU_OK(r, annal_db_info_get(r, &after));
    assert_int_equal(after.events, before.events);
    assert_int_equal(again_res.first_position, e->position);
    annal_iter_close(it);
    annal_db_close(r);
    annal_db_close(db);
    /* A compaction while the backup copies: the index copy names generations the copy
     * may not hold, so it is not used, and the index is built from the copied log. */
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = 64u << 10;
    o.progress = compact_midway;
    static annal_db *handle;
    o.progress_ctx = &handle;
    handle = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &handle));
    tu_rmrf(d2);
    g_compacted = 0;
    TU_OK(handle, annal_backup(handle, d2, NULL, &res));
    assert_true(g_compacted);
    assert_false(res.index_copied);
    compare(handle, d2, res.next_position);
    annal_db_close(handle);
    tu_rmrf(dir), tu_rmrf(dest), tu_rmrf(d2);
    free(dir), free(dest), free(d2);
}

/* ---- --link ------------------------------------------------------------------------- */

/* crc of a file's bytes, and its inode */
static uint32_t file_crc(const char *path, ino_t *ino) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    if (ino) *ino = st.st_ino;
    static uint8_t buf[1 << 16];
    uint32_t c = 0;
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) c = annal__crc32c(c, buf, (size_t)n);
    close(fd);
    return c;
}

/* The sealed segments of dir: how many of the backup's files share their inode. */
static int linked_files(const char *src, const char *dest, int *files) {
    char sl[4200], dl[4200];
    snprintf(sl, sizeof sl, "%s/log", src);
    snprintf(dl, sizeof dl, "%s/log", dest);
    annal__seg_file *f = NULL;
    size_t n = 0;
    assert_int_equal(annal__seg_list(dl, &f, &n), 0);
    int same = 0;
    *files = (int)n;
    annal__log names = {.dir = dl}, snames = {.dir = sl};
    for (size_t i = 0; i < n; i++) {
        char dp[4300], sp[4300];
        annal__seg_path(&names, f[i].no, f[i].gen, 0, dp, sizeof dp);
        annal__seg_path(&snames, f[i].no, f[i].gen, 0, sp, sizeof sp);
        struct stat a, b;
        if (stat(dp, &a) == 0 && stat(sp, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            same++;
    }
    free(f);
    return same;
}

static void test_link(void **state) {
    (void)state;
    char *dir = tu_tmpdir("bk-link-src"), *dest = tu_tmpdir("bk-link-dest");
    char *mnt = tu_tmpdir("bk-link-mnt");
    annal_db *db = open_small(dir, 0);
    for (int i = 0; i < 100; i++) {
        append_n(db, "gone", 10, 300, NULL);
        append_n(db, "keep", 1, 10, NULL);
    }
    TU_OK(db, annal_seal(db));
    annal_backup_opts o;
    annal_backup_opts_init(&o);
    o.flags = ANNAL_BACKUP_LINK;
    annal_backup_result res;
    TU_OK(db, annal_backup(db, dest, &o, &res));
    int files, same = linked_files(dir, dest, &files);
    printf("same filesystem: %d of %d files linked, %llu bytes linked, %llu copied\n", same, files,
           (unsigned long long)res.bytes_linked, (unsigned long long)res.bytes_copied);
    assert_true(res.bytes_linked > 0);
    assert_int_equal(same, files - 1); /* every sealed one; P's segment is copied */
    compare(db, dest, res.next_position);
    /* The backup's files before a compaction of the source, byte for byte. */
    char path[4300];
    uint32_t crc[64];
    ino_t ino[64];
    assert_true(files <= 64);
    for (int no = 0; no < files; no++) {
        snprintf(path, sizeof path, "%s/log/%016x.seg", dest, (unsigned)no);
        crc[no] = file_crc(path, &ino[no]);
    }
    /* Compaction rewrites into new files (new inodes) and never writes a sealed segment
     * in place: the linked files keep their bytes, and the backup still verifies. */
    TU_OK(db, annal_stream_delete(db, "gone", ANNAL_EXPECT_ANY, 0, NULL));
    TU_OK(db, annal_seal(db));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_true(st.events_erased > 0);
    for (int no = 0; no < files; no++) {
        ino_t now;
        snprintf(path, sizeof path, "%s/log/%016x.seg", dest, (unsigned)no);
        assert_int_equal(file_crc(path, &now), crc[no]);
        assert_int_equal(now, ino[no]);
    }
    assert_int_equal(linked_files(dir, dest, &files), 0); /* the source has new files */
    assert_int_equal(annal_verify(dest, NULL, on_damage, NULL), ANNAL_OK);
    annal_db *c = open_ro(dest);
    annal_db_info info;
    TU_OK(c, annal_db_info_get(c, &info));
    assert_int_equal(info.events, res.next_position); /* the deleted events too: as of P */
    annal_db_close(c);
    /* An incremental backup after it: the compacted generations replace the links. */
    TU_OK(db, annal_backup(db, dest, &o, &res));
    compare(db, dest, res.next_position);
    /* Another filesystem (a tmpfs): link(2) fails with EXDEV and the segments are copied
     * instead; the backup is whole. */
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=64m") == 0) {
        char d2[4200];
        snprintf(d2, sizeof d2, "%s/b", mnt);
        TU_OK(db, annal_backup(db, d2, &o, &res));
        printf("another filesystem: %llu bytes linked, %llu copied\n",
               (unsigned long long)res.bytes_linked, (unsigned long long)res.bytes_copied);
        assert_int_equal(res.bytes_linked, 0);
        assert_true(res.bytes_copied > 0);
        assert_int_equal(linked_files(dir, d2, &files), 0);
        compare(db, d2, res.next_position);
        umount2(mnt, MNT_DETACH);
    } else {
        printf("another filesystem: not tried (mounting a tmpfs needs root: %s)\n",
               strerror(errno));
    }
    annal_db_close(db);
    tu_rmrf(dir), tu_rmrf(dest), tu_rmrf(mnt);
    free(dir), free(dest), free(mnt);
}

/* ---- full disk at the destination ---------------------------------------------------- */

static uint32_t log_crc(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "cat %s/log/*.seg | cksum", dir);
    FILE *p = popen(cmd, "r");
    unsigned long v = 0;
    if (!p || fscanf(p, "%lu", &v) != 1) v = 0;
    if (p) pclose(p);
    return (uint32_t)v;
}

static void test_full_disk(void **state) {
    (void)state;
    char *dir = tu_tmpdir("fulldest-src"), *mnt = tu_tmpdir("fulldest-mnt");
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") != 0) {
        printf("skipped: mounting a tmpfs needs root (%s)\n", strerror(errno));
        tu_rmrf(dir), tu_rmrf(mnt);
        free(dir), free(mnt);
        skip();
    }
    annal_db *db = open_small(dir, 0);
    for (int i = 0; i < 200; i++) append_n(db, "big", 10, 3000, NULL); /* ~6 MiB */
    annal_db_close(db);
    uint32_t before = log_crc(dir);
    char dest[4200];
    snprintf(dest, sizeof dest, "%s/b", mnt);
    db = open_ro(dir);
    annal_err rc = annal_backup(db, dest, NULL, NULL);
    assert_int_equal(rc, ANNAL_ENOSPC);
    printf("full disk: %s\n", annal_db_errmsg(db));
    annal_db_close(db);
    assert_int_not_equal(annal_backup_check(dest, NULL), ANNAL_OK);
    assert_int_equal(log_crc(dir), before);
    assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_OK);
    /* The disk full wherever the space ends (in the log, the index, at the marker): a
     * tmpfs of 50% to 120% of what a whole backup took on it. Each try either fails with
     * ANNAL_ENOSPC and leaves nothing that passes for a backup, or (the last sizes, if
     * they fit) makes a whole one; the source never changes. */
    /* (what a whole backup takes on this tmpfs) */
    char cmd[4300], full[4200];
    snprintf(full, sizeof full, "%s/whole", mnt);
    assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=64m"), 0);
    db = open_ro(dir);
    TU_OK(db, annal_backup(db, full, NULL, NULL));
    annal_db_close(db);
    snprintf(cmd, sizeof cmd, "du -sk %s | cut -f1", full);
    FILE *p = popen(cmd, "r");
    unsigned long kib = 0;
    assert_true(p && fscanf(p, "%lu", &kib) == 1);
    pclose(p);
    int failed = 0, whole = 0, pct[40], npct = 0;
    for (int q = 50; q <= 120 && npct < 40; q += q < 70 ? 10 : q < 100 ? 2 : 10) pct[npct++] = q;
    for (int i = 0; i < npct; i++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", mnt);
        assert_int_equal(system(cmd), 0);
        char size[64];
        snprintf(size, sizeof size, "size=%luk", kib * (unsigned long)pct[i] / 100);
        assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, size), 0);
        db = open_ro(dir);
        rc = annal_backup(db, dest, NULL, NULL);
        printf("%d%% of %lu KiB: %s %s\n", pct[i], kib, annal_strerror(rc),
               rc == ANNAL_OK ? "" : annal_db_errmsg(db));
        annal_db_close(db);
        if (rc == ANNAL_OK) {
            whole++;
            assert_int_equal(annal_backup_check(dest, NULL), ANNAL_OK);
            assert_int_equal(annal_verify(dest, NULL, on_damage, NULL), ANNAL_OK);
        } else {
            failed++;
            assert_int_equal(rc, ANNAL_ENOSPC);
            assert_int_not_equal(annal_backup_check(dest, NULL), ANNAL_OK);
            annal_db_opts o;
            annal_db_opts_init(&o);
            o.flags = ANNAL_OPEN_READONLY;
            annal_db *c = NULL;
            assert_int_not_equal(annal_db_open(dest, &o, &c), ANNAL_OK);
        }
        assert_int_equal(log_crc(dir), before);
    }
    assert_true(failed >= 3);
    assert_true(whole >= 1);
    assert_int_equal(annal_verify(dir, NULL, NULL, NULL), ANNAL_OK);
    db = open_small(dir, 0);
    append_n(db, "big", 1, 10, NULL); /* the source stays writable */
    annal_db_close(db);
    umount2(mnt, MNT_DETACH);
    tu_rmrf(dir), tu_rmrf(mnt);
    free(dir), free(mnt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backup_online), cmocka_unit_test(test_backup_killed),
        cmocka_unit_test(test_point_in_time), cmocka_unit_test(test_index_copied),
        cmocka_unit_test(test_link),          cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
