/* Crash test with real processes and real kills. A child appends under load (threads,
 * mixed batch sizes, conflicting expected revisions, small segments so they roll, and
 * sometimes an index rebuild in progress) and reports every acknowledgement through a
 * pipe; the parent SIGKILLs it at a random moment, reopens the store and checks that
 * every acknowledged event is there, in order, that $all has no gap or duplicate, that
 * no batch is partly visible, and that the store takes appends again. A quarter of the
 * appends are atomic sets across streams (annal_append_multi): their ids number the
 * events of the whole set, so a set partly visible shows as a torn batch. Half of those
 * sets carry tags (annal_append_tagged) and a DCB condition on the thread's own chain
 * tag after its last acknowledged set (which must always hold): their tags come back
 * from the record and the tag index finds each event of the last cycle by its own tag.
 * Cycles: ANNAL_CRASH_CYCLES (default 150; ANNAL_LONG=1: 2000). Seed: argv[1] or time. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define STREAMS   24
#define THREADS   6
#define MAGIC     0xA11A
#define SEG_BYTES (256u << 10)

static uint64_t g_seed;
static char *g_dir;

/* One acknowledgement, written atomically to the pipe (< PIPE_BUF). */
typedef struct ack {
    uint32_t cycle, thread, counter, n;
    uint32_t stream;
    uint32_t base, total; /* the part's first index in its set, the set's size (else 0, n) */
    uint64_t first_rev, first_pos;
    uint32_t tagged, pad; /* the set was appended with tags (tag_of) */
} ack;

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void make_id(annal_uuid *id, uint32_t cycle, uint32_t thread, uint32_t counter, uint32_t idx,
                    uint32_t n) {
    uint8_t *b = id->bytes;
    b[0] = MAGIC >> 8, b[1] = MAGIC & 0xff;
    b[2] = (uint8_t)(cycle >> 16), b[3] = (uint8_t)(cycle >> 8), b[4] = (uint8_t)cycle;
    b[5] = (uint8_t)thread;
    b[6] = (uint8_t)(counter >> 16), b[7] = (uint8_t)(counter >> 8), b[8] = (uint8_t)counter;
    b[9] = (uint8_t)(idx >> 8), b[10] = (uint8_t)idx;
    b[11] = (uint8_t)(n >> 8), b[12] = (uint8_t)n;
    b[13] = b[14] = b[15] = 0x5A;
}

typedef struct child_arg {
    annal_db *db;
    int fd;
    uint32_t cycle, thread;
    uint64_t chain_last; /* position of its last tagged set's last event (ANNAL_AFTER_NONE) */
} child_arg;

/* The tags of event idx of set counter: its own, and its thread's chain tag. */
static void tag_of(char own[48], char chain[32], uint32_t cycle, uint32_t thread, uint32_t counter,
                   uint32_t idx) {
    snprintf(own, 48, "e:%u.%u.%u.%u", cycle, thread, counter, idx);
    snprintf(chain, 32, "chain:%u.%u", cycle, thread);
}

/* The set as annal_append_tagged with tags and the chain condition. */
static annal_err tagged_append(child_arg *a, const annal_stream_append *parts, uint32_t np,
                               uint32_t total, uint32_t counter, annal_multi_result *res) {
    static _Thread_local char own[64][48], chain[32];
    static _Thread_local const char *tv[64][2];
    annal_tag_list tl[64];
    annal_tagged_append tp[4];
    for (uint32_t k = 0; k < total; k++) {
        tag_of(own[k], chain, a->cycle, a->thread, counter, k);
        tv[k][0] = own[k];
        tv[k][1] = chain;
        tl[k] = (annal_tag_list){tv[k], 2};
    }
    for (uint32_t p = 0, k = 0; p < np; k += (uint32_t)parts[p].n, p++)
        tp[p] = (annal_tagged_append){parts[p].stream, parts[p].expected, parts[p].events, &tl[k],
                                      parts[p].n};
    const char *ct[1] = {chain};
    annal_query_item item = {NULL, 0, ct, 1};
    annal_query q = {&item, 1};
    annal_condition c = {&q, a->chain_last}; /* only this thread writes its chain */
    annal_err rc = annal_append_tagged(a->db, tp, np, NULL, 0, &c, res);
    if (rc == ANNAL_OK) a->chain_last = res->first_position + total - 1;
    return rc;
}

static char payload[20000];

/* One atomic set of 2..4 parts (streams may repeat), acknowledged part by part. */
static void multi_append(child_arg *a, uint64_t *s, uint32_t counter) {
    annal_event_data ev[64];
    annal_stream_append parts[4];
    annal_append_result pr[4];
    uint32_t st[4], np = 2 + (uint32_t)(rnd(s) % 3), total = 0, cnt[4];
    char names[4][32];
    for (uint32_t p = 0; p < np; p++) {
        cnt[p] = 1 + (uint32_t)(rnd(s) % (rnd(s) % 6 == 0 ? 15 : 4));
        total += cnt[p];
    }
    for (uint32_t p = 0, k = 0; p < np; p++) {
        st[p] = (uint32_t)(rnd(s) % STREAMS);
        snprintf(names[p], sizeof names[p], "crash-%u", st[p]);
        int64_t expected = ANNAL_EXPECT_ANY;
        int again = 0;
        for (uint32_t q = 0; q < p; q++) again |= st[q] == st[p];
        uint64_t head;
        if (!again && rnd(s) % 2) {
            annal_err hr = annal_stream_head(a->db, names[p], &head);
            expected = hr == ANNAL_OK ? (int64_t)head : ANNAL_EXPECT_NO_STREAM;
        }
        parts[p] = (annal_stream_append){names[p], expected, &ev[k], cnt[p]};
        for (uint32_t i = 0; i < cnt[p]; i++, k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            make_id(&ev[k].id, a->cycle, a->thread, counter, k, total);
            ev[k].type = "Crashed";
            ev[k].data = payload;
            ev[k].data_len = rnd(s) % 16 == 0 ? 1000 + rnd(s) % 19000 : 20 + rnd(s) % 300;
        }
    }
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.parts = pr;
    uint32_t tagged = (uint32_t)(rnd(s) % 2);
    annal_err rc = tagged ? tagged_append(a, parts, np, total, counter, &res)
                          : annal_append_multi(a->db, parts, np, NULL, 0, &res);
    if (rc == ANNAL_OK) {
        for (uint32_t p = 0, k = 0; p < np; k += cnt[p], p++) {
            ack ak = {a->cycle,
                      a->thread,
                      counter,
                      cnt[p],
                      st[p],
                      k,
                      total,
                      pr[p].first_revision,
                      pr[p].first_position,
                      tagged,
                      0};
            if (write(a->fd, &ak, sizeof ak) != (ssize_t)sizeof ak) _exit(3);
        }
    } else if (rc != ANNAL_ECONFLICT) {
        fprintf(stderr, "child: multi append failed: %s (%s)\n", annal_errname(rc),
                annal_db_errmsg(a->db));
        _exit(4);
    }
}

static void *child_thread(void *p) {
    child_arg *a = p;
    uint64_t s = g_seed ^ ((uint64_t)a->cycle << 20) ^ a->thread;
    memset(payload, 'p', sizeof payload);
    for (uint32_t counter = 0;; counter++) {
        if (rnd(&s) % 4 == 0) {
            multi_append(a, &s, counter);
            continue;
        }
        uint32_t n = (uint32_t)(rnd(&s) % 8 == 0 ? 1 + rnd(&s) % 60 : 1 + rnd(&s) % 4);
        uint32_t st = (uint32_t)(rnd(&s) % STREAMS);
        char name[32];
        snprintf(name, sizeof name, "crash-%u", st);
        annal_event_data ev[64];
        for (uint32_t i = 0; i < n; i++) {
            memset(&ev[i], 0, sizeof ev[i]);
            make_id(&ev[i].id, a->cycle, a->thread, counter, i, n);
            ev[i].type = "Crashed";
            ev[i].data = payload;
            ev[i].data_len = rnd(&s) % 16 == 0 ? 1000 + rnd(&s) % 19000 : 20 + rnd(&s) % 300;
        }
        int64_t expected = ANNAL_EXPECT_ANY;
        uint64_t head;
        int mode = (int)(rnd(&s) % 4);
        if (mode > 0) {
            annal_err hr = annal_stream_head(a->db, name, &head);
            expected = hr == ANNAL_OK ? (int64_t)head : ANNAL_EXPECT_NO_STREAM;
            if (mode == 3 && hr == ANNAL_OK) expected -= 1; /* a stale read: must conflict */
        }
        annal_append_result r;
        annal_err rc = annal_append(a->db, name, expected, ev, n, &r);
        if (rc == ANNAL_OK) {
            ack k = {a->cycle, a->thread,        counter,          n, st, 0,
                     n,        r.first_revision, r.first_position, 0, 0};
            if (write(a->fd, &k, sizeof k) != (ssize_t)sizeof k) _exit(3);
        } else if (rc != ANNAL_ECONFLICT) {
            fprintf(stderr, "child: append failed: %s (%s)\n", annal_errname(rc),
                    annal_db_errmsg(a->db));
            _exit(4);
        }
    }
    return NULL;
}

static void child(int fd, uint32_t cycle, int rebuild) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = SEG_BYTES;
    if (rebuild) {
        char path[4096];
        snprintf(path, sizeof path, "%s/index/data.mdb", g_dir);
        unlink(path); /* the open below rebuilds the index from the log, and may be killed */
    }
    annal_db *db;
    annal_err rc = annal_db_open(g_dir, &o, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "child: open failed: %s\n", annal_errname(rc));
        _exit(2);
    }
    if (write(fd, "R", 1) != 1) _exit(3); /* ready */
    pthread_t th[THREADS];
    child_arg args[THREADS];
    for (uint32_t t = 0; t < THREADS; t++) {
        args[t] = (child_arg){db, fd, cycle, t, ANNAL_AFTER_NONE};
        pthread_create(&th[t], NULL, child_thread, &args[t]);
    }
    for (;;) pause();
}

typedef struct acks {
    ack *v;
    size_t n, cap;
} acks;

static void push(acks *a, const ack *k) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        assert_non_null(a->v);
    }
    a->v[a->n++] = *k;
}

/* Read everything the child wrote: 'R' first, then whole ack records. */
static void drain(int fd, acks *all, int *ready, uint8_t *part, size_t *plen) {
    uint8_t buf[65536];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        size_t i = 0;
        if (!*ready && r > 0) {
            assert_int_equal(buf[0], 'R');
            *ready = 1;
            i = 1;
        }
        for (; i < (size_t)r; i++) {
            part[(*plen)++] = buf[i];
            if (*plen == sizeof(ack)) {
                ack k;
                memcpy(&k, part, sizeof k);
                push(all, &k);
                *plen = 0;
            }
        }
    }
}

static void log_stderr(void *ctx, annal_log_level lvl, const char *msg) {
    (void)ctx;
    fprintf(stderr, "annal[%d]: %s\n", (int)lvl, msg);
}

/* The tags of a tagged set's event j: both come back, and in the last cycle the tag
 * index finds the event by its own tag (and only it). */
static void check_tags(annal_db *db, const annal_event *e, const ack *k, uint32_t j,
                       uint32_t last_cycle) {
    char own[48], chain[32];
    tag_of(own, chain, k->cycle, k->thread, k->counter, k->base + j);
    const char *t = NULL;
    int ok = e->ntags == 2 && annal_event_tag_next(e, &t) && strcmp(t, own) == 0 &&
             annal_event_tag_next(e, &t) && strcmp(t, chain) == 0;
    if (!ok)
        fail_msg("seed %llu: the event at %llu lost its tags", (unsigned long long)g_seed,
                 (unsigned long long)e->position);
    if (k->cycle != last_cycle) return;
    const char *tv[1] = {own};
    annal_query_item item = {NULL, 0, tv, 1};
    annal_query q = {&item, 1};
    annal_iter *it;
    TU_OK(db, annal_read_query(db, &q, 0, 0, 0, &it));
    const annal_event *ev;
    TU_OK(db, annal_iter_next(it, &ev));
    if (ev->position != e->position)
        fail_msg("seed %llu: tag %s finds position %llu, not %llu", (unsigned long long)g_seed, own,
                 (unsigned long long)ev->position, (unsigned long long)e->position);
    TU_EXPECT(db, annal_iter_next(it, &ev), ANNAL_END);
    annal_iter_close(it);
}

/* Check the reopened store against every acknowledgement so far. */
static void check(acks *all, uint64_t *events_out) {
    uint32_t last_cycle = 0;
    for (size_t i = 0; i < all->n; i++)
        if (all->v[i].cycle > last_cycle) last_cycle = all->v[i].cycle;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.log = log_stderr;
    o.segment_bytes = SEG_BYTES;
    annal_db *db;
    annal_err rc = annal_db_open(g_dir, &o, &db);
    if (rc == ANNAL_ENOTFOUND && all->n == 0) { /* killed while creating the store */
        *events_out = 0;
        return;
    }
    if (rc != ANNAL_OK)
        fail_msg("seed %llu: reopen failed: %s", (unsigned long long)g_seed, annal_errname(rc));
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    /* $all: dense positions, whole batches, per-stream revisions dense and ordered */
    uint64_t next_rev[STREAMS] = {0};
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    uint64_t pos = 0;
    uint32_t in_batch = 0, batch_n = 0;
    annal_uuid batch_first;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (ev->position != pos)
            fail_msg("seed %llu: position %llu where %llu expected", (unsigned long long)g_seed,
                     (unsigned long long)ev->position, (unsigned long long)pos);
        unsigned st;
        assert_int_equal(sscanf(ev->stream, "crash-%u", &st), 1);
        assert_true(st < STREAMS);
        if (ev->revision != next_rev[st])
            fail_msg("seed %llu: %s revision %llu where %llu expected", (unsigned long long)g_seed,
                     ev->stream, (unsigned long long)ev->revision,
                     (unsigned long long)next_rev[st]);
        next_rev[st]++;
        if (strcmp(ev->type, "Probe") == 0 && in_batch == 0) { /* written by check() */
            pos++;
            continue;
        }
        const uint8_t *b = ev->id.bytes;
        uint32_t idx = (uint32_t)b[9] << 8 | b[10], n = (uint32_t)b[11] << 8 | b[12];
        assert_int_equal(b[0] << 8 | b[1], MAGIC);
        if (in_batch == 0) {
            if (idx != 0)
                fail_msg("seed %llu: batch starts at index %u (position %llu)",
                         (unsigned long long)g_seed, idx, (unsigned long long)pos);
            batch_n = n;
            batch_first = ev->id;
        } else {
            if (idx != in_batch || n != batch_n || memcmp(batch_first.bytes, b, 9) != 0)
                fail_msg("seed %llu: batch interleaved or torn at position %llu",
                         (unsigned long long)g_seed, (unsigned long long)pos);
        }
        in_batch = idx + 1 == n ? 0 : in_batch + 1;
        pos++;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    if (in_batch != 0)
        fail_msg("seed %llu: the last batch is partly visible", (unsigned long long)g_seed);
    assert_int_equal(info.events, pos);
    /* every acknowledged event is where it was acknowledged */
    for (size_t i = 0; i < all->n; i++) {
        ack *k = &all->v[i];
        for (uint32_t j = 0; j < k->n; j++) {
            annal_event *e = NULL;
            rc = annal_event_get(db, k->first_pos + j, &e);
            if (rc != ANNAL_OK)
                fail_msg("seed %llu: acknowledged event at position %llu is gone (%s)",
                         (unsigned long long)g_seed, (unsigned long long)(k->first_pos + j),
                         annal_errname(rc));
            annal_uuid want;
            make_id(&want, k->cycle, k->thread, k->counter, k->base + j, k->total);
            char name[32];
            snprintf(name, sizeof name, "crash-%u", k->stream);
            if (memcmp(want.bytes, e->id.bytes, 16) != 0 || strcmp(e->stream, name) != 0 ||
                e->revision != k->first_rev + j)
                fail_msg("seed %llu: position %llu does not hold the acknowledged event",
                         (unsigned long long)g_seed, (unsigned long long)(k->first_pos + j));
            if (k->tagged)
                check_tags(db, e, k, j, last_cycle);
            else if (e->ntags != 0)
                fail_msg("seed %llu: untagged event at %llu has tags", (unsigned long long)g_seed,
                         (unsigned long long)e->position);
            annal_free(e);
        }
    }
    /* it takes appends again */
    annal_append_result r;
    TU_OK(db, tu_append1(db, "crash-0", ANNAL_EXPECT_ANY, "Probe", "{}", &r));
    assert_int_equal(r.first_position, pos);
    annal_db_close(db);
    *events_out = pos + 1;
}

static void kill_loop(void **state) {
    (void)state;
    int cycles = 150;
    if (getenv("ANNAL_LONG")) cycles = 2000;
    if (getenv("ANNAL_CRASH_CYCLES")) cycles = (int)strtol(getenv("ANNAL_CRASH_CYCLES"), NULL, 10);
    g_dir = tu_tmpdir("crash");
    print_message("kill_test: seed %llu, %d cycles, store %s\n", (unsigned long long)g_seed, cycles,
                  g_dir);
    uint64_t s = g_seed;
    acks all = {0};
    uint64_t events = 0;
    int probes = 0;
    for (int c = 0; c < cycles; c++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        int rebuild = c > 0 && rnd(&s) % 8 == 0;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child(p[1], (uint32_t)c, rebuild);
        }
        close(p[1]);
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        int ready = 0;
        uint8_t part[sizeof(ack)];
        size_t plen = 0;
        /* kill at a random moment: sometimes during open (recovery, rebuild) */
        long delay_us =
            rebuild || rnd(&s) % 6 == 0 ? (long)(rnd(&s) % 20000) : 2000 + (long)(rnd(&s) % 120000);
        struct timespec ts = {0, delay_us * 1000};
        nanosleep(&ts, NULL);
        drain(p[0], &all, &ready, part, &plen);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fail_msg("seed %llu: child exited on its own (status %d) in cycle %d",
                     (unsigned long long)g_seed, status, c);
        drain(p[0], &all, &ready, part, &plen);
        close(p[0]);
        assert_int_equal(plen, 0); /* acks are written whole */
        check(&all, &events);
        probes++;
        (void)probes;
    }
    print_message("kill_test: %d cycles, %zu acknowledged appends, %llu events checked\n", cycles,
                  all.n, (unsigned long long)events);
    assert_true(all.n > 0);
    TU_OK(NULL, annal_verify(g_dir, NULL, NULL, NULL));
    free(all.v);
    tu_rmrf(g_dir);
    free(g_dir);
}

int main(int argc, char **argv) {
    g_seed = argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    const struct CMUnitTest tests[] = {cmocka_unit_test(kill_loop)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
