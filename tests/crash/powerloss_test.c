/* Simulated power loss through the engine's io table. A scripted workload runs once to
 * count its write and flush calls; then, for every call k in turn, it runs again and the
 * power is cut at call k: that call and all later ones fail, and every write not yet
 * flushed is undone — wholly, or torn at 512- or 4096-byte sectors (some sectors of it
 * land, some do not), and files whose directory entry was not flushed vanish. The index
 * (MDB_NOSYNC) is treated as lost with the reboot. Each time the store must reopen to a
 * state that holds every acknowledged event and nothing half-written. Some steps are
 * atomic sets across two streams (annal_append_tagged, with tags and a condition): never
 * partly visible either, and their tags come back from the records and the tag index. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"
#include "store/db_int.h"
#include "testutil.h"

typedef struct pending {
    int fd;
    uint64_t off;
    size_t n;
    uint8_t *old; /* bytes before the write */
    uint8_t *new_;
    char path[256];
} pending;

static struct {
    long calls, cut_at; /* cut_at < 0: never */
    int dead;
    pending *p;
    size_t np, cap;
    char fdpath[1024][256]; /* path of each open fd */
    char created[64][256];  /* files created since the last directory flush */
    int ncreated;
    uint64_t rng;
} S;

static uint64_t rnd(void) {
    uint64_t z = (S.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    return z ^ (z >> 27);
}

static int tick(void) { /* 1 if this call is the cut or after it */
    if (S.dead) return 1;
    if (S.cut_at >= 0 && ++S.calls >= S.cut_at)
        S.dead = 1;
    else if (S.cut_at < 0)
        S.calls++;
    return S.dead;
}

static int p_open(void *ctx, const char *path, int flags, int mode) {
    (void)ctx;
    if (S.dead) return -EIO;
    int fd = annal__io_posix()->open(NULL, path, flags, mode);
    if (fd >= 0 && fd < 1024) snprintf(S.fdpath[fd], sizeof S.fdpath[fd], "%s", path);
    if (fd >= 0 && (flags & O_CREAT) && S.ncreated < 64)
        snprintf(S.created[S.ncreated++], 256, "%s", path);
    return fd;
}

static ssize_t p_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off) {
    (void)ctx;
    if (tick()) return -EIO;
    pending w = {fd, off, n, calloc(1, n), malloc(n), {0}};
    assert_non_null(w.old);
    assert_non_null(w.new_);
    ssize_t r = pread(fd, w.old, n, (off_t)off);
    (void)r; /* past the end: zeros, as calloc left them */
    memcpy(w.new_, buf, n);
    snprintf(w.path, sizeof w.path, "%s", S.fdpath[fd]);
    if (S.np == S.cap) {
        S.cap = S.cap ? 2 * S.cap : 256;
        S.p = realloc(S.p, S.cap * sizeof *S.p);
        assert_non_null(S.p);
    }
    S.p[S.np++] = w;
    return annal__io_posix()->pwrite(NULL, fd, buf, n, off);
}

static void drop_pending(int fd) {
    size_t k = 0;
    for (size_t i = 0; i < S.np; i++) {
        if (S.p[i].fd == fd) {
            free(S.p[i].old);
            free(S.p[i].new_);
        } else {
            S.p[k++] = S.p[i];
        }
    }
    S.np = k;
}

static int p_sync(void *ctx, int fd) {
    (void)ctx;
    if (tick()) return -EIO;
    int r = annal__io_posix()->sync(NULL, fd);
    if (r == 0) drop_pending(fd);
    return r;
}

static int p_alloc(void *ctx, int fd, uint64_t off, uint64_t len) {
    (void)ctx;
    if (S.dead) return -EIO;
    return annal__io_posix()->alloc(NULL, fd, off, len);
}

static int p_sync_dir(void *ctx, const char *dir) {
    (void)ctx;
    if (tick()) return -EIO;
    int r = annal__io_posix()->sync_dir(NULL, dir);
    if (r == 0) S.ncreated = 0;
    return r;
}

static int p_fault(void *ctx, const char *where) {
    (void)ctx;
    (void)where;
    return S.dead ? -EIO : 0;
}

/* The power goes out: undo unflushed writes (newest first), possibly torn. */
static void power_cut(int sector) {
    for (size_t i = S.np; i-- > 0;) {
        pending *w = &S.p[i];
        int fd = open(w->path, O_WRONLY);
        if (fd < 0) continue;
        if (sector == 0) {
            assert_int_equal(pwrite(fd, w->old, w->n, (off_t)w->off), (ssize_t)w->n);
        } else if (sector < 0) {
            /* The disk wrote the first 3/4 of the write in order, then lost power. */
            uint64_t part = w->n * 3 / 4, keep = part - part % (uint64_t)-sector;
            assert_int_equal(pwrite(fd, w->old + keep, w->n - keep, (off_t)(w->off + keep)),
                             (ssize_t)(w->n - keep));
        } else {
            /* Each sector of the write independently landed or not. */
            for (uint64_t s = w->off - w->off % (uint64_t)sector; s < w->off + w->n;
                 s += (uint64_t)sector) {
                uint64_t a = s < w->off ? w->off : s, b = s + (uint64_t)sector;
                if (b > w->off + w->n) b = w->off + w->n;
                const uint8_t *src = rnd() % 2 ? w->new_ : w->old;
                assert_int_equal(pwrite(fd, src + (a - w->off), b - a, (off_t)a), (ssize_t)(b - a));
            }
        }
        close(fd);
    }
    for (int i = 0; i < S.ncreated; i++) unlink(S.created[i]);
    drop_pending(-2);
    for (size_t i = 0; i < S.np; i++) {
        free(S.p[i].old);
        free(S.p[i].new_);
    }
    S.np = 0;
    S.ncreated = 0;
}

static annal__io pio;

static void reset_state(void) {
    free(S.p);
    memset(&S, 0, sizeof S);
}

typedef struct acked {
    char stream[16];
    uint64_t first_pos, first_rev, n;
    uint8_t tag;  /* first byte of every id in the batch */
    uint8_t base; /* index of its first event in the batch (a part of a set) */
    uint8_t set;  /* a part of a set: appended with tags */
} acked;

/* The workload: mixed batches over a few streams, segments rolling every 64 KiB.
 * Returns the number of acknowledged appends written to out. */
static size_t workload(const char *dir, acked *out) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.segment_bytes = 64 << 10;
    annal_db *db = NULL;
    if (annal__db_open_io(dir, &o, &pio, &db) != ANNAL_OK) return 0;
    static char big[9000];
    memset(big, 'b', sizeof big);
    size_t nack = 0;
    uint64_t rev[3] = {0};
    int exists[3] = {0};
    for (int i = 0; i < 24; i++) {
        int s = i % 3;
        size_t n = (size_t)(1 + (i * 7) % 5);
        annal_event_data ev[8];
        for (size_t k = 0; k < n; k++) {
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].id.bytes[0] = (uint8_t)(i + 1);
            ev[k].id.bytes[1] = (uint8_t)k;
            ev[k].id.bytes[15] = 0x77;
            ev[k].type = "Step";
            ev[k].data = big;
            /* sets span sectors, so that a torn flush can keep one part and lose another */
            ev[k].data_len = i % 4 == 0 ? 8000 : i % 4 == 3 ? 1500 + (size_t)i : 100 + (size_t)i;
        }
        char name[16];
        snprintf(name, sizeof name, "pl-%d", s);
        int64_t exp = exists[s] ? (int64_t)rev[s] : ANNAL_EXPECT_NO_STREAM;
        if (i % 4 == 3 && n >= 2) { /* a set: the first half here, the rest in the next stream */
            int s2 = (s + 1) % 3;
            char name2[16];
            snprintf(name2, sizeof name2, "pl-%d", s2);
            size_t n1 = n / 2;
            annal_stream_append parts[2] = {
                {name, exp, ev, n1},
                {name2, exists[s2] ? (int64_t)rev[s2] : ANNAL_EXPECT_NO_STREAM, ev + n1, n - n1}};
            annal_append_result pr[2];
            annal_multi_result mr;
            memset(&mr, 0, sizeof mr);
            mr.parts = pr;
            char tag[16];
            snprintf(tag, sizeof tag, "step:%d", i + 1);
            const char *tv[1] = {tag};
            annal_tag_list tl[8];
            for (size_t k = 0; k < n; k++) tl[k] = (annal_tag_list){tv, 1};
            annal_tagged_append tp[2] = {
                {parts[0].stream, parts[0].expected, ev, tl, n1},
                {parts[1].stream, parts[1].expected, ev + n1, tl + n1, n - n1}};
            annal_query_item item = {NULL, 0, tv, 1};
            annal_query q = {&item, 1};
            annal_condition c = {&q, ANNAL_AFTER_NONE}; /* a new tag: it holds */
            if (annal_append_tagged(db, tp, 2, NULL, 0, &c, &mr) != ANNAL_OK) break;
            for (int p = 0; p < 2; p++) {
                int sp = p ? s2 : s;
                exists[sp] = 1;
                rev[sp] = (uint64_t)pr[p].revision;
                acked a = {{0},        pr[p].first_position, pr[p].first_revision,
                           parts[p].n, (uint8_t)(i + 1),     (uint8_t)(p ? n1 : 0),
                           1};
                memcpy(a.stream, p ? name2 : name, sizeof name);
                out[nack++] = a;
            }
            continue;
        }
        annal_append_result r;
        annal_err rc = annal_append(db, name, exp, ev, n, &r);
        if (rc != ANNAL_OK) break; /* the power is out */
        exists[s] = 1;
        rev[s] = (uint64_t)r.revision;
        acked a = {{0}, r.first_position, r.first_revision, n, (uint8_t)(i + 1), 0, 0};
        memcpy(a.stream, name, sizeof name);
        out[nack++] = a;
    }
    annal_db_close(db);
    return nack;
}

static void reboot(const char *dir) {
    char idir[4096];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index_state st = {0, "before-the-power-cut"};
    annal__index_state_write(idir, &st);
    char p[4200];
    snprintf(p, sizeof p, "%s/data.mdb", idir);
    unlink(p); /* and its unflushed pages with it */
}

static void log_stderr(void *ctx, annal_log_level lvl, const char *msg) {
    (void)ctx;
    if (lvl == ANNAL_LOG_ERROR) fprintf(stderr, "annal: %s\n", msg);
}

/* A set's part: its events carry the set's tag, and the tag index finds them. */
static void check_tags(annal_db *db, const acked *a, long cut, int sector) {
    char tag[16];
    snprintf(tag, sizeof tag, "step:%d", a->tag);
    const char *tv[1] = {tag};
    annal_query_item item = {NULL, 0, tv, 1};
    annal_query q = {&item, 1};
    annal_iter *it;
    TU_OK(db, annal_read_query(db, &q, a->first_pos, 0, a->n, &it));
    const annal_event *ev;
    for (uint64_t k = 0; k < a->n; k++) {
        annal_err rc = annal_iter_next(it, &ev);
        const char *t = NULL;
        if (rc != ANNAL_OK || ev->position != a->first_pos + k || !annal_event_tag_next(ev, &t) ||
            strcmp(t, tag) != 0)
            fail_msg("cut at call %ld, sectors %d: tag %s lost at %llu (%s)", cut, sector, tag,
                     (unsigned long long)(a->first_pos + k), annal_errname(rc));
    }
    annal_iter_close(it);
}

static void check(const char *dir, const acked *a, size_t na, long cut, int sector) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.log = log_stderr;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK)
        fail_msg("cut at call %ld, sectors %d: reopen: %s", cut, sector, annal_errname(rc));
    for (size_t i = 0; i < na; i++)
        for (uint64_t k = 0; k < a[i].n; k++) {
            annal_event *e = NULL;
            rc = annal_event_get(db, a[i].first_pos + k, &e);
            if (rc != ANNAL_OK || strcmp(e->stream, a[i].stream) != 0 ||
                e->revision != a[i].first_rev + k || e->id.bytes[0] != a[i].tag ||
                e->id.bytes[1] != a[i].base + k)
                fail_msg("cut at call %ld, sectors %d: acknowledged event at %llu lost (%s)", cut,
                         sector, (unsigned long long)(a[i].first_pos + k), annal_errname(rc));
            annal_free(e);
        }
    for (size_t i = 0; i < na; i++)
        if (a[i].set) check_tags(db, &a[i], cut, sector);
    /* nothing half-written: every batch is whole (ids say index and size) */
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    uint64_t pos = 0;
    int expect_k = 0, open_tag = -1;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        assert_int_equal(ev->position, pos++);
        int tag = ev->id.bytes[0], k = ev->id.bytes[1];
        int n = 1 + ((tag - 1) * 7) % 5;
        if (k != expect_k || (k > 0 && tag != open_tag))
            fail_msg("cut at call %ld, sectors %d: partial batch at position %llu", cut, sector,
                     (unsigned long long)ev->position);
        open_tag = tag;
        expect_k = k + 1 == n ? 0 : k + 1;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    if (expect_k != 0) fail_msg("cut at call %ld: the last batch is partial", cut);
    TU_OK(db, tu_append1(db, "pl-after", ANNAL_EXPECT_ANY, "After", "{}", NULL));
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
}

static void power_loss_at_every_call(void **state) {
    (void)state;
    pio = *annal__io_posix();
    pio.open = p_open;
    pio.pwrite = p_pwrite;
    pio.sync = p_sync;
    pio.alloc = p_alloc;
    pio.sync_dir = p_sync_dir;
    pio.fault = p_fault;
    acked acks[64];
    /* dry run: count the calls */
    char *dir = tu_tmpdir("power");
    reset_state();
    S.cut_at = -1;
    size_t full = workload(dir, acks);
    long total = S.calls;
    power_cut(0);
    tu_rmrf(dir);
    free(dir);
    assert_int_equal(full, 29); /* 24 steps, 5 of them sets of two parts */
    print_message("powerloss_test: %ld write/flush calls; cutting at each, 4 ways\n", total);
    long runs = 0, only = getenv("ANNAL_PL_ONLY") ? strtol(getenv("ANNAL_PL_ONLY"), NULL, 10) : 0;
    for (long k = 1; k <= total + 1; k++) {
        if (only && k != only) continue;
        static const int sectors[] = {0, 512, 4096, -512}; /* -512: a prefix of sectors */
        for (int v = 0; v < 4; v++) {
            dir = tu_tmpdir("power");
            reset_state();
            S.cut_at = k;
            S.rng = (uint64_t)k * 31 + (uint64_t)v;
            size_t na = workload(dir, acks);
            power_cut(sectors[v]);
            reboot(dir);
            if (only)
                print_message("cut %ld/%d: %zu acknowledged, store %s\n", k, sectors[v], na, dir);
            check(dir, acks, na, k, sectors[v]);
            tu_rmrf(dir);
            free(dir);
            runs++;
        }
    }
    reset_state();
    print_message("powerloss_test: %ld power cuts survived\n", runs);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(power_loss_at_every_call)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
