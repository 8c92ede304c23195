/* concurrency_test.c -- one handle used by many threads at once.
 *
 * 64 writer threads append single events (exercising group commit) while reader threads
 * iterate $all and streams. Readers check that positions are dense and increasing, that
 * every event they see is fully formed (its payload verifies), that batches are never
 * seen in part, and that every append acknowledged before a read began is visible to it.
 * Afterwards every acknowledged append must be present, once, at its reported position.
 *
 * Threads never call cmocka assertions: they record the first problem and stop; the
 * main thread asserts after joining. */
#include "testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_WRITERS 64
#define MAGIC       0x414e4e41u /* "ANNA" */

/* ------------------------------------------------------------------------------------
 * Payloads that verify themselves */

typedef struct payload_hdr {
    uint32_t magic;
    uint32_t writer;
    uint32_t seq; /* writer's append number */
    uint32_t body_len;
    uint32_t batch_idx; /* index in its batch */
    uint32_t batch_n;   /* events in its batch */
    uint64_t batch_id;  /* writer << 32 | seq */
} payload_hdr;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv64(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint8_t body_byte(uint64_t seed, size_t i) {
    return (uint8_t)((seed >> ((i % 8) * 8)) + i * 31u);
}

/* fill buf (>= sizeof hdr + body_len) and return its length; meta gets 8 checksum bytes */
static size_t make_payload(uint8_t *buf, uint8_t meta[8], uint32_t writer, uint32_t seq,
                           uint32_t body_len, uint32_t idx, uint32_t n) {
    payload_hdr h = {MAGIC, writer, seq, body_len, idx, n, ((uint64_t)writer << 32) | seq};
    memcpy(buf, &h, sizeof h);
    uint64_t seed = h.batch_id * 0x9e3779b97f4a7c15ull + idx;
    for (uint32_t i = 0; i < body_len; i++) buf[sizeof h + i] = body_byte(seed, i);
    uint64_t sum = fnv64(buf, sizeof h + body_len);
    memcpy(meta, &sum, 8);
    return sizeof h + body_len;
}

/* verify an event read back; returns NULL or a description of the problem */
static const char *check_payload(const annal_event *e, payload_hdr *out) {
    if (!e) return "NULL event";
    if (!e->stream || strlen(e->stream) != e->stream_len || e->stream_len == 0)
        return "stream name not formed";
    if (!e->type || strlen(e->type) != e->type_len || e->type_len == 0) return "type not formed";
    if (e->data_len < sizeof(payload_hdr) || !e->data) return "data too short";
    payload_hdr h;
    memcpy(&h, e->data, sizeof h);
    if (h.magic != MAGIC) return "bad magic";
    if (e->data_len != sizeof h + h.body_len) return "data length disagrees with header";
    if (e->metadata_len != 8 || !e->metadata) return "metadata missing";
    uint64_t sum;
    memcpy(&sum, e->metadata, 8);
    if (sum != fnv64(e->data, e->data_len)) return "checksum mismatch";
    uint64_t seed = h.batch_id * 0x9e3779b97f4a7c15ull + h.batch_idx;
    const uint8_t *b = (const uint8_t *)e->data + sizeof h;
    for (uint32_t i = 0; i < h.body_len; i++)
        if (b[i] != body_byte(seed, i)) return "body bytes differ";
    char want_type[32];
    snprintf(want_type, sizeof want_type, "W%u", h.writer);
    if (strcmp(e->type, want_type) != 0) return "type does not match writer";
    if (h.batch_idx >= h.batch_n) return "batch index out of range";
    if (e->timestamp_ns <= 0) return "no timestamp";
    if (out) *out = h;
    return NULL;
}

/* ------------------------------------------------------------------------------------
 * Shared state of one run */

typedef struct ack {
    uint64_t position; /* of the first event */
    uint64_t revision; /* of the first event in its stream */
    uint32_t n;
    uint32_t stream; /* 0: writer's own stream, 1 + k: shared stream k */
} ack;

typedef struct shared {
    annal_db *db;  /* handle for writers */
    annal_db *rdb; /* handle for readers (db or a read-only handle) */
    int nwriters;
    int per_writer; /* appends per writer */
    int nshared;    /* shared streams; 0: none */
    int max_batch;  /* events per append: 1 for single-event runs */
    atomic_int writers_left;
    atomic_int stop;
    atomic_uint_fast64_t hwm;                    /* 1 + highest acknowledged position */
    atomic_uint_fast64_t own_acked[MAX_WRITERS]; /* events acknowledged in w-NN */
    pthread_mutex_t mu;
    char err[1024];
    atomic_long reads, events_seen, conflicts;
    int64_t deadline_ns; /* writers stop starting appends after this (CLOCK_MONOTONIC) */
    atomic_int deadline_hit;
} shared;

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef struct writer {
    shared *S;
    int idx;
    ack *acks;
    int nacks;
} writer;

static void report(shared *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(shared *S, const char *fmt, ...) {
    pthread_mutex_lock(&S->mu);
    if (!S->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(S->err, sizeof S->err, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&S->mu);
    atomic_store(&S->stop, 1);
}

static void own_stream(char *out, size_t cap, int w) { snprintf(out, cap, "w-%02d", w); }
static void shared_stream(char *out, size_t cap, int k) { snprintf(out, cap, "shared-%d", k); }

static void hwm_raise(shared *S, uint64_t v) {
    uint64_t cur = atomic_load(&S->hwm);
    while (cur < v && !atomic_compare_exchange_weak(&S->hwm, &cur, v)) {}
}

static void *writer_main(void *arg) {
    writer *W = arg;
    shared *S = W->S;
    char own[32], type[32];
    own_stream(own, sizeof own, W->idx);
    snprintf(type, sizeof type, "W%d", W->idx);
    uint8_t *buf = malloc((size_t)S->max_batch * 4200);
    uint8_t(*meta)[8] = malloc((size_t)S->max_batch * 8);
    annal_event_data *ev = calloc((size_t)S->max_batch, sizeof *ev);
    uint64_t rng = 0x1234567ull * (uint64_t)(W->idx + 1);
    if (!buf || !meta || !ev) {
        report(S, "writer %d: out of memory", W->idx);
        goto out;
    }
    int64_t own_rev = -1;
    for (int seq = 0; seq < S->per_writer && !atomic_load(&S->stop); seq++) {
        if (seq > 0 && mono_ns() > S->deadline_ns) { /* bounded runtime on slow machines */
            atomic_store(&S->deadline_hit, 1);
            break;
        }
        uint32_t n = S->max_batch > 1 ? 1 + (uint32_t)(splitmix(&rng) % (uint64_t)S->max_batch) : 1;
        size_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t body = (uint32_t)(splitmix(&rng) % 4000);
            memset(&ev[i], 0, sizeof ev[i]);
            ev[i].type = type;
            ev[i].data = buf + off;
            ev[i].data_len =
                make_payload(buf + off, meta[i], (uint32_t)W->idx, (uint32_t)seq, body, i, n);
            ev[i].metadata = meta[i];
            ev[i].metadata_len = 8;
            off += ev[i].data_len;
        }
        /* every third append goes to a shared stream (expected any, or exact with retry) */
        int to_shared = S->nshared && seq % 3 == 2;
        char sname[32];
        uint32_t stream_code = 0;
        const char *stream = own;
        int64_t expected = own_rev; /* only this writer writes its own stream */
        if (expected < 0) expected = ANNAL_EXPECT_NO_STREAM;
        if (to_shared) {
            int k = (int)(splitmix(&rng) % (uint64_t)S->nshared);
            shared_stream(sname, sizeof sname, k);
            stream = sname;
            stream_code = 1 + (uint32_t)k;
        }
        annal_append_result res;
        annal_err rc;
        for (int attempt = 0;; attempt++) {
            if (to_shared && S->max_batch > 1) { /* exact expected: read the head first */
                uint64_t head;
                rc = annal_stream_head(S->db, stream, &head);
                if (rc == ANNAL_ENOTFOUND)
                    expected = ANNAL_EXPECT_NO_STREAM;
                else if (rc == ANNAL_OK)
                    expected = (int64_t)head;
                else {
                    report(S, "writer %d: stream_head: %s", W->idx, annal_errname(rc));
                    goto out;
                }
            } else if (to_shared) {
                expected = ANNAL_EXPECT_ANY;
            }
            rc = annal_append(S->db, stream, expected, ev, n, &res);
            if (rc == ANNAL_ECONFLICT && to_shared && attempt < 100000) {
                atomic_fetch_add(&S->conflicts, 1);
                continue;
            }
            break;
        }
        if (rc != ANNAL_OK) {
            report(S, "writer %d seq %d: append to %s (expected %" PRId64 "): %s: %s", W->idx, seq,
                   stream, expected, annal_errname(rc), annal_db_errmsg(S->db));
            goto out;
        }
        if (res.idempotent || res.count != n ||
            res.revision != (int64_t)(res.first_revision + n - 1)) {
            report(S, "writer %d seq %d: bad result idem=%d count=%" PRIu64, W->idx, seq,
                   res.idempotent, res.count);
            goto out;
        }
        if (!to_shared) {
            if (res.first_revision != (uint64_t)(own_rev + 1)) {
                report(S, "writer %d: own stream revision %" PRIu64 ", expected %" PRId64, W->idx,
                       res.first_revision, own_rev + 1);
                goto out;
            }
            own_rev += n;
            atomic_store(&S->own_acked[W->idx], (uint64_t)(own_rev + 1));
        }
        W->acks[W->nacks++] = (ack){res.first_position, res.first_revision, n, stream_code};
        hwm_raise(S, res.first_position + n);
    }
out:
    free(buf);
    free(meta);
    free(ev);
    atomic_fetch_sub(&S->writers_left, 1);
    return NULL;
}

/* ------------------------------------------------------------------------------------
 * Readers */

typedef struct reader {
    shared *S;
    int idx;
} reader;

/* $all forward from 0: dense, increasing, formed, batches whole, and at least what was
 * acknowledged before the read began */
static void read_all_forward(shared *S) {
    uint64_t floor = atomic_load(&S->hwm);
    annal_iter *it = NULL;
    annal_err rc = annal_read_all(S->rdb, 0, 0, 0, &it);
    if (rc != ANNAL_OK) {
        report(S, "read_all: %s", annal_errname(rc));
        return;
    }
    const annal_event *e;
    uint64_t next = 0;
    payload_hdr prev = {0};
    int in_batch = 0;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        if (e->position != next) {
            report(S, "read_all forward: position %" PRIu64 " where %" PRIu64 " was due",
                   e->position, next);
            break;
        }
        payload_hdr h;
        const char *why = check_payload(e, &h);
        if (why) {
            report(S, "read_all forward @%" PRIu64 ": %s", e->position, why);
            break;
        }
        if (in_batch && (h.batch_id != prev.batch_id || h.batch_idx != prev.batch_idx + 1)) {
            report(S,
                   "read_all @%" PRIu64 ": batch %" PRIx64 " event %u/%u interrupted by %" PRIx64
                   " event %u",
                   e->position, prev.batch_id, prev.batch_idx, prev.batch_n, h.batch_id,
                   h.batch_idx);
            break;
        }
        if (!in_batch && h.batch_idx != 0) {
            report(S, "read_all @%" PRIu64 ": batch starts at event %u", e->position, h.batch_idx);
            break;
        }
        in_batch = h.batch_idx + 1 < h.batch_n;
        prev = h;
        next++;
    }
    annal_iter_close(it);
    if (rc != ANNAL_OK && rc != ANNAL_END) {
        if (!atomic_load(&S->stop)) report(S, "read_all forward: %s", annal_errname(rc));
        return;
    }
    if (rc == ANNAL_END && in_batch)
        report(S, "read_all: batch %" PRIx64 " seen in part (%u of %u events)", prev.batch_id,
               prev.batch_idx + 1, prev.batch_n);
    if (rc == ANNAL_END && next < floor)
        report(S,
               "read_all saw %" PRIu64 " events, but %" PRIu64 " were acknowledged before it began",
               next, floor);
    atomic_fetch_add(&S->reads, 1);
    atomic_fetch_add(&S->events_seen, (long)next);
}

static void read_all_backward(shared *S) {
    uint64_t floor = atomic_load(&S->hwm);
    annal_iter *it = NULL;
    annal_err rc = annal_read_all(S->rdb, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 200, &it);
    if (rc != ANNAL_OK) {
        report(S, "read_all backward: %s", annal_errname(rc));
        return;
    }
    const annal_event *e;
    uint64_t prev = UINT64_MAX, count = 0;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        if (count == 0 && floor && e->position + 1 < floor) {
            report(S,
                   "backward read starts at %" PRIu64 " but %" PRIu64 " events were acknowledged",
                   e->position, floor);
            break;
        }
        if (prev != UINT64_MAX && e->position + 1 != prev) {
            report(S, "backward: position %" PRIu64 " after %" PRIu64, e->position, prev);
            break;
        }
        const char *why = check_payload(e, NULL);
        if (why) {
            report(S, "backward @%" PRIu64 ": %s", e->position, why);
            break;
        }
        prev = e->position;
        count++;
    }
    annal_iter_close(it);
    if (rc != ANNAL_END && rc != ANNAL_OK) report(S, "backward: %s", annal_errname(rc));
    if (rc == ANNAL_END && count == 0 && floor) report(S, "backward read empty after acks");
    if (rc == ANNAL_END && count < 200 && prev != 0 && count)
        report(S, "backward read ended at position %" PRIu64 " before the limit", prev);
    atomic_fetch_add(&S->reads, 1);
}

static void read_own_stream(shared *S, int w) {
    char name[32];
    own_stream(name, sizeof name, w);
    uint64_t floor = atomic_load(&S->own_acked[w]);
    annal_iter *it = NULL;
    annal_err rc = annal_read_stream(S->rdb, name, 0, 0, 0, &it);
    if (rc == ANNAL_ENOTFOUND) {
        if (floor)
            report(S, "%s not found although %" PRIu64 " events were acknowledged", name, floor);
        return;
    }
    if (rc != ANNAL_OK) {
        report(S, "read_stream(%s): %s", name, annal_errname(rc));
        return;
    }
    const annal_event *e;
    uint64_t rev = 0, last_pos = 0;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        payload_hdr h;
        const char *why = check_payload(e, &h);
        if (why) {
            report(S, "%s rev %" PRIu64 ": %s", name, rev, why);
            break;
        }
        if (e->revision != rev || strcmp(e->stream, name) != 0 || h.writer != (uint32_t)w) {
            report(S, "%s: revision %" PRIu64 " (writer %u) where %" PRIu64 " was due", name,
                   e->revision, h.writer, rev);
            break;
        }
        if (rev && e->position <= last_pos) {
            report(S, "%s: positions not increasing with revisions", name);
            break;
        }
        last_pos = e->position;
        rev++;
    }
    annal_iter_close(it);
    if (rc != ANNAL_END && rc != ANNAL_OK)
        report(S, "read_stream(%s): %s", name, annal_errname(rc));
    if (rc == ANNAL_END && rev < floor)
        report(S, "%s: %" PRIu64 " events seen, %" PRIu64 " acknowledged before the read", name,
               rev, floor);
    uint64_t head;
    floor = atomic_load(&S->own_acked[w]);
    rc = annal_stream_head(S->rdb, name, &head);
    if (floor && (rc != ANNAL_OK || head + 1 < floor))
        report(S, "stream_head(%s): %s %" PRIu64 ", acknowledged %" PRIu64, name, annal_errname(rc),
               head, floor);
    atomic_fetch_add(&S->reads, 1);
}

static void get_some(shared *S, uint64_t *rng) {
    uint64_t floor = atomic_load(&S->hwm);
    if (!floor) return;
    for (int i = 0; i < 8; i++) {
        uint64_t p = splitmix(rng) % floor;
        annal_event *e = NULL;
        annal_err rc = annal_event_get(S->rdb, p, &e);
        if (rc != ANNAL_OK) {
            report(S, "event_get(%" PRIu64 ") below acknowledged head %" PRIu64 ": %s", p, floor,
                   annal_errname(rc));
            return;
        }
        const char *why = e->position == p ? check_payload(e, NULL) : "wrong position";
        annal_free(e);
        if (why) {
            report(S, "event_get(%" PRIu64 "): %s", p, why);
            return;
        }
    }
}

static void list_streams(shared *S) {
    annal_stream_iter *it = NULL;
    annal_err rc = annal_streams_open(S->rdb, NULL, &it);
    if (rc != ANNAL_OK) {
        report(S, "streams_open: %s", annal_errname(rc));
        return;
    }
    const annal_stream_info *si;
    char prev[ANNAL_MAX_NAME + 1] = "";
    while ((rc = annal_streams_next(it, &si)) == ANNAL_OK) {
        if (!si->name || (prev[0] && strcmp(prev, si->name) >= 0)) {
            report(S, "streams not in name order: '%s' then '%s'", prev, si->name ? si->name : "");
            break;
        }
        snprintf(prev, sizeof prev, "%s", si->name);
    }
    annal_streams_close(it);
    if (rc != ANNAL_END && rc != ANNAL_OK) report(S, "streams_next: %s", annal_errname(rc));
}

static void *reader_main(void *arg) {
    reader *Rd = arg;
    shared *S = Rd->S;
    uint64_t rng = 0xabcdefull + (uint64_t)Rd->idx;
    /* keep reading while writers run, and once more after they finish */
    int last = 0;
    while (!atomic_load(&S->stop)) {
        last = atomic_load(&S->writers_left) == 0;
        switch ((Rd->idx + (int)(splitmix(&rng) % 4)) % 4) {
        case 0: read_all_forward(S); break;
        case 1: read_all_backward(S); break;
        case 2: read_own_stream(S, (int)(splitmix(&rng) % (uint64_t)S->nwriters)); break;
        default:
            get_some(S, &rng);
            list_streams(S);
            break;
        }
        if (last) break;
    }
    return NULL;
}

/* annal_verify "may run while another process writes": a child process (this binary,
 * run as `concurrency_test --verify-loop DIR`) verifies in a loop while the writers
 * write, until its stdin closes, and prints one line per run that was not ANNAL_OK. */
static void on_damage(void *ctx, const annal_damage *d) {
    int *shown = ctx;
    if ((*shown)++ < 3)
        printf("  damage: segment %" PRIu64 " offset %" PRIu64 " position %" PRIu64 ": %s\n",
               d->segment, d->offset, d->position, d->what ? d->what : "(no description)");
}

static int verify_loop_main(const char *dir) {
    long runs = 0, bad = 0;
    for (;;) {
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 0) > 0) break; /* EOF (or a byte): the parent is done */
        int shown = 0;
        annal_err rc = annal_verify(dir, NULL, on_damage, &shown);
        runs++;
        if (rc != ANNAL_OK) {
            bad++;
            printf("verify run %ld: %s\n", runs, annal_errname(rc));
        }
        fflush(stdout);
    }
    printf("verify runs: %ld, not OK: %ld\n", runs, bad);
    return 0;
}

typedef struct verifier {
    pid_t pid;
    int to_child;   /* closing it stops the child */
    int from_child; /* its report */
    /* Every other configuration verifies from a thread of this process (which shares
     * the writer's index environment); ANNAL_CONC_INPROC_VERIFY=1 or 0 forces one way. */
    int inproc;
    pthread_t thread;
    const char *dir;
    atomic_int done;
    long runs, bad;
} verifier;

static void *inproc_verify_main(void *arg) {
    verifier *V = arg;
    while (!atomic_load(&V->done)) {
        int shown = 0;
        annal_err rc = annal_verify(V->dir, NULL, on_damage, &shown);
        V->runs++;
        if (rc != ANNAL_OK) {
            V->bad++;
            printf("in-process verify run %ld: %s\n", V->runs, annal_errname(rc));
        }
    }
    return NULL;
}

static void verifier_start(verifier *V, const char *dir) {
    static int configs;
    const char *ip = getenv("ANNAL_CONC_INPROC_VERIFY");
    int inproc = ip && *ip ? *ip == '1' : configs++ % 2 == 1;
    memset(V, 0, sizeof *V);
    if (inproc) {
        V->inproc = 1;
        V->dir = dir;
        assert_int_equal(pthread_create(&V->thread, NULL, inproc_verify_main, V), 0);
        return;
    }
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {(char *)"concurrency_test", (char *)"--verify-loop", (char *)dir, NULL};
    assert_int_equal(posix_spawn(&V->pid, "/proc/self/exe", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    V->to_child = in[1];
    V->from_child = out[0];
}

/* stop the child; returns the number of runs that were not OK (its output is printed) */
static long verifier_stop(verifier *V) {
    if (V->inproc) {
        atomic_store(&V->done, 1);
        pthread_join(V->thread, NULL);
        print_message("annal_verify ran %ld times in this process beside the writers\n", V->runs);
        return V->bad;
    }
    close(V->to_child);
    FILE *f = fdopen(V->from_child, "r");
    assert_non_null(f);
    char line[512];
    long runs = -1, bad = -1;
    int printed = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "verify runs: %ld, not OK: %ld", &runs, &bad) == 2) continue;
        if (printed++ < 12) print_error("verifier: %s", line);
    }
    fclose(f);
    int status = 0;
    assert_int_equal(waitpid(V->pid, &status, 0), V->pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    print_message("annal_verify ran %ld times in another process beside the writers\n", runs);
    assert_true(runs >= 1);
    return bad;
}

/* ------------------------------------------------------------------------------------
 * Driver and final check */

static void final_check(shared *S, writer *W, annal_db *db) {
    uint64_t total = 0;
    for (int w = 0; w < S->nwriters; w++)
        for (int i = 0; i < W[w].nacks; i++) total += W[w].acks[i].n;
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.events, total); /* nothing beyond the acknowledged appends */
    /* map each position to the append that reported it: distinct, and all filled */
    int64_t *owner = malloc(total * sizeof *owner);
    assert_non_null(owner);
    for (uint64_t p = 0; p < total; p++) owner[p] = -1;
    for (int w = 0; w < S->nwriters; w++)
        for (int i = 0; i < W[w].nacks; i++) {
            ack *a = &W[w].acks[i];
            assert_true(a->position + a->n <= total);
            for (uint32_t k = 0; k < a->n; k++) {
                if (owner[a->position + k] != -1)
                    print_error("position %" PRIu64 " reported twice\n", a->position + k);
                assert_int_equal(owner[a->position + k], -1);
                owner[a->position + k] = ((int64_t)w << 32) | i;
            }
        }
    /* read $all: each event is the one its acknowledgement named */
    annal_iter *it = NULL;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *e;
    uint64_t p = 0;
    uint64_t *next_rev = calloc((size_t)S->nshared + 1, sizeof *next_rev);
    assert_non_null(next_rev);
    annal_err rc;
    while ((rc = annal_iter_next(it, &e)) == ANNAL_OK) {
        assert_int_equal(e->position, p);
        payload_hdr h;
        const char *why = check_payload(e, &h);
        if (why) print_error("@%" PRIu64 ": %s\n", p, why);
        assert_null(why);
        int w = (int)(owner[p] >> 32), i = (int)(owner[p] & 0xffffffff);
        ack *a = &W[w].acks[i];
        assert_int_equal(h.writer, (uint32_t)w);
        assert_int_equal(h.seq, (uint32_t)i); /* seq numbers only advance on success */
        assert_int_equal(h.batch_idx, p - a->position);
        assert_int_equal(e->revision, a->revision + (p - a->position));
        char name[32];
        if (a->stream == 0)
            own_stream(name, sizeof name, w);
        else
            shared_stream(name, sizeof name, (int)a->stream - 1);
        assert_string_equal(e->stream, name);
        /* $all order agrees with revision order in shared streams */
        if (a->stream) {
            assert_int_equal(e->revision, next_rev[a->stream]);
            next_rev[a->stream]++;
        }
        p++;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    assert_int_equal(p, total);
    /* own streams: dense revisions, one per acknowledged append of that writer */
    for (int w = 0; w < S->nwriters; w++) {
        uint64_t own = 0;
        for (int i = 0; i < W[w].nacks; i++)
            if (W[w].acks[i].stream == 0) own += W[w].acks[i].n;
        char name[32];
        own_stream(name, sizeof name, w);
        uint64_t head = 0;
        if (own == 0) {
            TU_EXPECT(db, annal_stream_head(db, name, &head), ANNAL_ENOTFOUND);
            continue;
        }
        TU_OK(db, annal_stream_head(db, name, &head));
        assert_int_equal(head + 1, own);
    }
    for (int k = 0; k < S->nshared; k++) {
        char name[32];
        shared_stream(name, sizeof name, k);
        uint64_t head = 0;
        if (next_rev[k + 1] == 0) continue;
        TU_OK(db, annal_stream_head(db, name, &head));
        assert_int_equal(head + 1, next_rev[k + 1]);
    }
    free(next_rev);
    free(owner);
}

/* Wall-clock budget of one configuration's append phase; appends still running finish.
 * ANNAL_CONC_SECONDS overrides it. */
#define DEFAULT_SECONDS 12

typedef struct cfg {
    int writers, per_writer, readers, nshared, max_batch;
    unsigned flags;
    uint64_t segment_bytes; /* 0: default */
    int verifier;           /* run annal_verify in a loop beside the writers */
    int ro_readers;         /* readers use a read-only handle */
} cfg;

/* ANNAL_CONC_SCALE: percentage applied to the appends per writer (default 100; 6 under
 * AddressSanitizer, where LMDB's large per-transaction allocations cost an mmap and a
 * shadow memset each and appends run ~50x slower) */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_SCALE 10
#else
#define DEFAULT_SCALE 100
#endif
static int scaled(int n) {
    const char *v = getenv("ANNAL_CONC_SCALE");
    long pct = v && *v ? strtol(v, NULL, 10) : DEFAULT_SCALE;
    long r = (long)n * pct / 100;
    return r < 1 ? 1 : (int)r;
}

static void run_cfg(const char *dir, const cfg *c0) {
    cfg cc = *c0;
    cc.per_writer = scaled(cc.per_writer);
    const char *rv = getenv("ANNAL_CONC_READERS"); /* override the reader count (0..8) */
    if (rv && *rv) cc.readers = (int)strtol(rv, NULL, 10) < 0 ? 0 : (int)strtol(rv, NULL, 10) % 9;
    const cfg *c = &cc;
    shared *S = calloc(1, sizeof *S);
    assert_non_null(S);
    pthread_mutex_init(&S->mu, NULL);
    annal_db_opts wo;
    annal_db_opts_init(&wo);
    wo.flags = ANNAL_OPEN_CREATE | c->flags;
    if (c->segment_bytes) wo.segment_bytes = c->segment_bytes;
    TU_OK(NULL, annal_db_open(dir, &wo, &S->db));
    S->rdb = S->db;
    if (c->ro_readers) {
        annal_db_opts o;
        annal_db_opts_init(&o);
        o.flags = ANNAL_OPEN_READONLY;
        TU_OK(NULL, annal_db_open(dir, &o, &S->rdb));
    }
    S->nwriters = c->writers;
    S->per_writer = c->per_writer;
    S->nshared = c->nshared;
    S->max_batch = c->max_batch;
    atomic_store(&S->writers_left, c->writers);
    const char *sv = getenv("ANNAL_CONC_SECONDS");
    long budget = sv && *sv ? strtol(sv, NULL, 10) : DEFAULT_SECONDS;
    S->deadline_ns = mono_ns() + (int64_t)budget * 1000000000LL;
    writer W[MAX_WRITERS];
    pthread_t wt[MAX_WRITERS], rt[8];
    reader Rd[8];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < c->readers; r++) {
        Rd[r] = (reader){S, r};
        assert_int_equal(pthread_create(&rt[r], NULL, reader_main, &Rd[r]), 0);
    }
    verifier V;
    if (c->verifier) verifier_start(&V, dir);
    for (int w = 0; w < c->writers; w++) {
        W[w] = (writer){S, w, calloc((size_t)c->per_writer, sizeof(ack)), 0};
        assert_non_null(W[w].acks);
        assert_int_equal(pthread_create(&wt[w], NULL, writer_main, &W[w]), 0);
    }
    for (int w = 0; w < c->writers; w++) pthread_join(wt[w], NULL);
    for (int r = 0; r < c->readers; r++) pthread_join(rt[r], NULL);
    long verify_bad = c->verifier ? verifier_stop(&V) : 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    long appends = 0;
    for (int w = 0; w < c->writers; w++) appends += W[w].nacks;
    print_message("%d writers x %d appends (%s%s), %d readers: %ld appends in %.2f s (%.0f/s), "
                  "%ld reads, %ld conflicts%s\n",
                  c->writers, c->per_writer, c->flags & ANNAL_OPEN_NOSYNC ? "nosync" : "durable",
                  c->max_batch > 1 ? ", batches" : "", c->readers, appends, secs, appends / secs,
                  atomic_load(&S->reads), atomic_load(&S->conflicts),
                  atomic_load(&S->deadline_hit) ? " (time budget reached: fewer appends)" : "");
    if (S->err[0]) print_error("%s\n", S->err);
    assert_true(S->err[0] == 0);
    for (int w = 0; w < c->writers; w++) {
        if (atomic_load(&S->deadline_hit))
            assert_true(W[w].nacks >= 1); /* every writer got through at least once */
        else
            assert_int_equal(W[w].nacks, c->per_writer);
    }
    final_check(S, W, S->db);
    if (S->rdb != S->db) {
        final_check(S, W, S->rdb);
        annal_db_close(S->rdb);
    }
    annal_db_close(S->db);
    /* everything acknowledged is there after a reopen too */
    annal_db *db = NULL;
    wo.flags = 0;
    TU_OK(NULL, annal_db_open(dir, &wo, &db));
    final_check(S, W, db);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    for (int w = 0; w < c->writers; w++) free(W[w].acks);
    pthread_mutex_destroy(&S->mu);
    free(S);
    /* checked last so that everything above still ran: the store is sound (the checks
     * above and the verify after close say so), so verify beside the writers must agree */
    if (verify_bad) print_error("annal_verify beside the writers: %ld runs not OK\n", verify_bad);
    assert_int_equal(verify_bad, 0);
}

static int setup(void **state) {
    *state = tu_tmpdir("conc");
    return 0;
}
static int teardown(void **state) {
    tu_rmrf(*state);
    free(*state);
    return 0;
}

/* 64 threads of single-event appends, not durable: the fast path under contention */
static void test_group_commit_nosync(void **state) {
    cfg c = {.writers = 64,
             .per_writer = 400,
             .readers = 4,
             .nshared = 4,
             .max_batch = 1,
             .flags = ANNAL_OPEN_NOSYNC,
             .segment_bytes = 4u << 20,
             .verifier = 1};
    run_cfg(*state, &c);
}

/* the same with durable appends: group commit must keep this quick */
static void test_group_commit_durable(void **state) {
    cfg c = {.writers = 64,
             .per_writer = 60,
             .readers = 3,
             .nshared = 4,
             .max_batch = 1,
             .flags = 0,
             .verifier = 1};
    run_cfg(*state, &c);
}

/* batches with exact expected revisions on shared streams, retried on conflict: readers
 * must never see part of a batch or batches interleaved */
static void test_batches_atomic(void **state) {
    cfg c = {.writers = 16,
             .per_writer = 150,
             .readers = 4,
             .nshared = 3,
             .max_batch = 8,
             .flags = ANNAL_OPEN_NOSYNC,
             .segment_bytes = 1u << 20,
             .verifier = 1};
    run_cfg(*state, &c);
}

/* readers on a read-only handle beside the writer handle */
static void test_readonly_handle_follows(void **state) {
    cfg c = {.writers = 16,
             .per_writer = 60,
             .readers = 4,
             .nshared = 2,
             .max_batch = 4,
             .flags = 0,
             .ro_readers = 1,
             .segment_bytes = 1u << 20};
    run_cfg(*state, &c);
}

/* durable appends of 1..40 events of up to 4 KB: flushes small enough for the space
 * zeroed ahead of the writer and large ones that extend the segment file themselves,
 * mixed, across segments, with readers (the file may be shorter than the writer's claim
 * while a large write is under way) and verify beside them */
static void test_mixed_flush_sizes(void **state) {
    cfg c = {.writers = 8,
             .per_writer = 80,
             .readers = 3,
             .nshared = 2,
             .max_batch = 40,
             .flags = 0,
             .segment_bytes = 16u << 20, /* its first 8 MiB are zeroed when it is made */
             .verifier = 1};
    run_cfg(*state, &c);
}

/* Appends beside an annal_verify of this process that holds its index snapshot for long
 * (its progress callback waits mid-walk): the snapshot keeps LMDB from reusing pages, so
 * each commit adds its copies to the index file, and keeps the map from moving. Appends
 * must go on regardless (in session 5 they failed once the map's slack was used up). */
typedef struct lv_ctx {
    annal_db *db;
    atomic_int stop, failed, waited;
    annal_err rc;
    char msg[256];
    uint64_t appends, grown;
} lv_ctx;

static void *lv_writer(void *p) {
    lv_ctx *c = p;
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = "T", ev.data = "{}", ev.data_len = 2;
    for (uint64_t i = 0; !c->stop; i++) {
        char stream[32]; /* random streams: each commit copies leaves of its own */
        snprintf(stream, sizeof stream, "lv-%" PRIu64, (i * 2654435761u) % 100003);
        memset(&ev.id, 0, sizeof ev.id); /* a new id (an append fills it in) */
        annal_err rc = annal_append(c->db, stream, ANNAL_EXPECT_ANY, &ev, 1, NULL);
        if (rc != ANNAL_OK) {
            c->rc = rc;
            snprintf(c->msg, sizeof c->msg, "%s", annal_db_errmsg(c->db));
            c->failed = 1;
            break;
        }
        c->appends = i + 1;
    }
    return NULL;
}

static int lv_progress(void *ctx, uint64_t done, uint64_t total) {
    lv_ctx *c = ctx;
    (void)done;
    if (total || c->waited) return 0; /* the first call in the middle of the walk */
    c->waited = 1;
    annal_db_info i0, i;
    TU_OK(c->db, annal_db_info_get(c->db, &i0));
    i = i0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, lv_writer, c), 0);
    for (int k = 0; k < 3000 && !c->failed && i.index_bytes < i0.index_bytes + (24u << 20); k++) {
        usleep(10000);
        TU_OK(c->db, annal_db_info_get(c->db, &i));
    }
    c->stop = 1;
    pthread_join(th, NULL);
    c->grown = i.index_bytes - i0.index_bytes;
    return 0;
}

static void test_appends_beside_long_verify(void **state) {
    const char *dir = *state;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    lv_ctx c;
    memset(&c, 0, sizeof c);
    TU_OK(NULL, annal_db_open(dir, &o, &c.db));
    static annal_event_data ev[1000];
    for (int i = 0; i < 1000; i++) ev[i].type = "Fill", ev[i].data = "{}", ev[i].data_len = 2;
    for (int b = 0; b < 120; b++) { /* verify's progress callback runs every 100,000 events */
        for (int i = 0; i < 1000; i++) memset(&ev[i].id, 0, sizeof ev[i].id); /* new ids */
        TU_OK(c.db, annal_append(c.db, "fill", ANNAL_EXPECT_ANY, ev, 1000, NULL));
    }
    annal_db_opts vo;
    annal_db_opts_init(&vo);
    vo.progress = lv_progress;
    vo.progress_ctx = &c;
    annal_err vr = annal_verify(dir, &vo, NULL, NULL);
    printf("beside a verify holding its snapshot: %" PRIu64 " appends, index +%" PRIu64
           " MiB%s%s\n",
           c.appends, c.grown >> 20, c.failed ? ", failed: " : "", c.failed ? c.msg : "");
    assert_true(c.waited);
    assert_false(c.failed);
    assert_true(c.grown >= (24u << 20));
    assert_int_equal(vr, ANNAL_OK);
    annal_db_close(c.db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--verify-loop") == 0) return verify_loop_main(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_commit_nosync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_handle_follows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mixed_flush_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_appends_beside_long_verify, setup, teardown),
    };
    return cmocka_run_group_tests_name("concurrency", tests, NULL, NULL);
}
