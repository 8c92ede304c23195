/* Recovery and fault handling of the store: torn tails cut back to the last whole
 * batch, failed flushes that poison the handle until reopen, ENOSPC that leaves the
 * store usable, damage in the middle of the log named and never served, and an index
 * that is rebuilt when it cannot be trusted. Faults come through the io table. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"
#include "log/record.h"
#include "store/db_int.h"
#include "testutil.h"

/* ---- a fault-injecting io table over the POSIX one ------------------------------- */
typedef struct faults {
    int fail_sync;    /* next N syncs fail with EIO */
    int fail_alloc;   /* allocations fail with ENOSPC while set */
    int fail_commit;  /* next index commit fails with EIO */
    int short_writes; /* writes are cut to at most 7 bytes (must be looped over) */
    int fail_write;   /* writes fail with this errno (after writing half) while set */
} faults;

static faults F;
static annal__io fio;

static int f_sync(void *ctx, int fd) {
    (void)ctx;
    if (F.fail_sync > 0) {
        F.fail_sync--;
        return -EIO;
    }
    return annal__io_posix()->sync(NULL, fd);
}
static int f_alloc(void *ctx, int fd, uint64_t off, uint64_t len) {
    (void)ctx;
    if (F.fail_alloc) return -ENOSPC;
    return annal__io_posix()->alloc(NULL, fd, off, len);
}
static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off) {
    (void)ctx;
    if (F.short_writes && n > 7) n = 7;
    if (F.fail_write) {
        if (n > 1) annal__io_posix()->pwrite(NULL, fd, buf, n / 2, off); /* half landed */
        return -F.fail_write;
    }
    return annal__io_posix()->pwrite(NULL, fd, buf, n, off);
}
static int f_fault(void *ctx, const char *where) {
    (void)ctx;
    if (F.fail_commit && strcmp(where, "index-commit") == 0) {
        F.fail_commit = 0;
        return -EIO;
    }
    return 0;
}

static annal_db *open_f(const char *dir, uint64_t seg_bytes) {
    fio = *annal__io_posix();
    fio.sync = f_sync;
    fio.alloc = f_alloc;
    fio.pwrite = f_pwrite;
    fio.fault = f_fault;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    if (seg_bytes) o.segment_bytes = seg_bytes;
    annal_db *db = NULL;
    annal_err rc = annal__db_open_io(dir, &o, &fio, &db);
    if (rc != ANNAL_OK) fail_msg("open %s: %s", dir, annal_errname(rc));
    return db;
}

static void append_n(annal_db *db, const char *stream, int n) {
    for (int i = 0; i < n; i++) {
        char d[64];
        snprintf(d, sizeof d, "{\"n\":%d}", i);
        TU_OK(db, tu_append1(db, stream, ANNAL_EXPECT_ANY, "Counted", d, NULL));
    }
}

static uint64_t count_all(annal_db *db) {
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    uint64_t n = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        assert_int_equal(ev->position, n);
        n++;
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    return n;
}

static void write_at(const char *dir, uint64_t seg, uint64_t off, const void *buf, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/log/%016llx.seg", dir, (unsigned long long)seg);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void tail_of(annal_db *db, uint64_t *seg, uint64_t *off) {
    *seg = db->wseg->no;
    *off = db->woff;
}

/* A batch whose last record never made it: the first records are whole and valid. */
static void torn_batch_is_cut(void **state) {
    (void)state;
    char *dir = tu_tmpdir("torn");
    annal_db *db = open_f(dir, 0);
    append_n(db, "a", 10);
    uint64_t seg, off;
    tail_of(db, &seg, &off);
    annal_db_close(db);

    uint8_t buf[1024];
    uint32_t at = 0;
    for (uint32_t i = 0; i < 2; i++) { /* records 0 and 1 of a 3-record batch */
        annal_event ev;
        memset(&ev, 0, sizeof ev);
        ev.id.bytes[0] = (uint8_t)(i + 1);
        ev.stream = "a";
        ev.stream_len = 1;
        ev.type = "Lost";
        ev.type_len = 4;
        ev.revision = 10 + i;
        ev.position = 10 + i;
        at += annal__rec_encode(&ev, i, 3, 10, buf + at);
    }
    write_at(dir, seg, off, buf, at);

    db = open_f(dir, 0);
    assert_int_equal(count_all(db), 10);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "a", &head));
    assert_int_equal(head, 9);
    annal_append_result r;
    TU_OK(db, tu_append1(db, "b", ANNAL_EXPECT_NO_STREAM, "After", "{}", &r));
    assert_int_equal(r.first_position, 10);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    /* and again, after a clean close, nothing changed */
    db = open_f(dir, 0);
    assert_int_equal(count_all(db), 11);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* Random garbage of every length after the last record. */
static void garbage_tail_is_cut(void **state) {
    (void)state;
    char *dir = tu_tmpdir("garbage");
    srand(7);
    uint64_t expect = 0;
    for (int round = 0; round < 20; round++) {
        annal_db *db = open_f(dir, 0);
        assert_int_equal(count_all(db), expect);
        append_n(db, "g", 3);
        expect += 3;
        uint64_t seg, off;
        tail_of(db, &seg, &off);
        annal_db_close(db);
        uint8_t junk[4096];
        size_t n = 1 + (size_t)rand() % sizeof junk;
        for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)rand();
        write_at(dir, seg, off + (uint64_t)(rand() % 3) * 8, junk, n);
    }
    annal_db *db = open_f(dir, 0);
    assert_int_equal(count_all(db), expect);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

static void failed_flush_poisons_until_reopen(void **state) {
    (void)state;
    char *dir = tu_tmpdir("fsync");
    annal_db *db = open_f(dir, 0);
    append_n(db, "s", 5);
    F.fail_sync = 1;
    annal_err rc = tu_append1(db, "s", 4, "Doomed", "{}", NULL);
    TU_EXPECT(db, rc, ANNAL_EIO);
    /* no retry may pretend the data is safe */
    rc = tu_append1(db, "s", ANNAL_EXPECT_ANY, "Refused", "{}", NULL);
    TU_EXPECT(db, rc, ANNAL_EFAILED);
    assert_non_null(strstr(annal_db_errmsg(db), "reopen"));
    /* reads still work and never show the unacknowledged event */
    assert_int_equal(count_all(db), 5);
    annal_db_close(db);
    db = open_f(dir, 0);
    uint64_t n = count_all(db);
    assert_true(n == 5 || n == 6); /* the failed append may or may not have landed */
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "s", &head));
    assert_int_equal(head, n - 1);
    TU_OK(db, tu_append1(db, "s", (int64_t)head, "Works", "{}", NULL));
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

static void failed_index_commit_recovers(void **state) {
    (void)state;
    char *dir = tu_tmpdir("commit");
    annal_db *db = open_f(dir, 0);
    append_n(db, "s", 3);
    F.fail_commit = 1;
    annal_err rc = tu_append1(db, "s", 2, "Durable", "{}", NULL);
    TU_EXPECT(db, rc, ANNAL_EIO);
    TU_EXPECT(db, tu_append1(db, "s", ANNAL_EXPECT_ANY, "X", "{}", NULL), ANNAL_EFAILED);
    annal_db_close(db);
    db = open_f(dir, 0);
    /* the log had it flushed: recovery indexes it */
    assert_int_equal(count_all(db), 4);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "s", &head));
    assert_int_equal(head, 3);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void enospc_then_space_freed(void **state) {
    (void)state;
    char *dir = tu_tmpdir("enospc");
    annal_db *db = open_f(dir, 64 << 10); /* 64 KiB segments: rolls come quickly */
    char big[8000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    int ok = 0;
    F.fail_alloc = 1;
    annal_err rc = ANNAL_OK;
    for (int i = 0; i < 40 && rc == ANNAL_OK; i++) {
        rc = tu_append1(db, "big", ANNAL_EXPECT_ANY, "Big", big, NULL);
        if (rc == ANNAL_OK) ok++;
    }
    TU_EXPECT(db, rc, ANNAL_ENOSPC);
    assert_true(ok > 0 && ok < 40);
    TU_EXPECT(db, tu_append1(db, "big", ANNAL_EXPECT_ANY, "Big", big, NULL), ANNAL_ENOSPC);
    assert_int_equal(count_all(db), (uint64_t)ok);
    F.fail_alloc = 0; /* space freed */
    TU_OK(db, tu_append1(db, "big", (int64_t)ok - 1, "Big", big, NULL));
    assert_int_equal(count_all(db), (uint64_t)ok + 1);
    annal_db_close(db);
    db = open_f(dir, 64 << 10);
    assert_int_equal(count_all(db), (uint64_t)ok + 1);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

static void short_writes_are_completed(void **state) {
    (void)state;
    char *dir = tu_tmpdir("short");
    F.short_writes = 1;
    annal_db *db = open_f(dir, 64 << 10);
    append_n(db, "s", 50);
    annal_db_close(db);
    F.short_writes = 0;
    db = open_f(dir, 64 << 10);
    assert_int_equal(count_all(db), 50);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

typedef struct found {
    int n;
    uint64_t seg, off, pos;
} found;
static void on_damage(void *ctx, const annal_damage *d) {
    found *f = ctx;
    if (f->n++ == 0) {
        f->seg = d->segment;
        f->off = d->offset;
        f->pos = d->position;
    }
}

/* A flipped byte inside a sealed segment: verify names it, reads stop there with
 * ANNAL_ECORRUPT instead of serving it, and a rebuild refuses to skip over it. */
static void mid_log_damage_is_named(void **state) {
    (void)state;
    char *dir = tu_tmpdir("midlog");
    annal_db *db = open_f(dir, 64 << 10);
    for (int i = 0; i < 400; i++) {
        char d[256];
        snprintf(d, sizeof d, "{\"i\":%d,\"pad\":\"%0200d\"}", i, i);
        TU_OK(db, tu_append1(db, "m", ANNAL_EXPECT_ANY, "Padded", d, NULL));
    }
    assert_true(db->log.nsegs >= 2);
    annal_db_close(db);
    /* event 20 is in segment 0: find its offset by reading */
    db = open_f(dir, 64 << 10);
    MDB_txn *t;
    TU_OK(db, annal__read_txn(db, &t));
    uint64_t base, loc;
    TU_OK(db, annal__index_pos_floor(t, &db->idx, 0, &base, &loc));
    mdb_txn_abort(t);
    annal_db_close(db);
    /* records are the same size: 20 records in, the data bytes of event 20 */
    uint32_t reclen = (uint32_t)annal__rec_size(1, 6, strlen("{\"i\":20,\"pad\":\"") + 200 + 2, 0);
    uint64_t off20 = ANNAL__LOC_OFF(loc) + 20ull * reclen;
    uint8_t x = 'Z';
    write_at(dir, 0, off20 + ANNAL__REC_HDR + 20, &x, 1);

    found f = {0, 0, 0, 0};
    TU_EXPECT(NULL, annal_verify(dir, NULL, on_damage, &f), ANNAL_ECORRUPT);
    assert_true(f.n >= 1);
    assert_int_equal(f.seg, 0);
    assert_int_equal(f.off, off20);
    assert_int_equal(f.pos, 20);

    db = open_f(dir, 64 << 10); /* the tail is sound: the writer opens */
    annal_iter *it;
    TU_OK(db, annal_read_all(db, 0, 0, 0, &it));
    const annal_event *ev;
    uint64_t n = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) n++;
    TU_EXPECT(db, rc, ANNAL_ECORRUPT);
    assert_int_equal(n, 20);
    annal_iter_close(it);
    /* a stream read also refuses the damaged event */
    TU_OK(db, annal_read_stream(db, "m", 20, 0, 1, &it));
    TU_EXPECT(db, annal_iter_next(it, &ev), ANNAL_ECORRUPT);
    annal_iter_close(it);
    annal_event *one = NULL;
    TU_EXPECT(db, annal_event_get(db, 20, &one), ANNAL_ECORRUPT);
    TU_OK(db, annal_event_get(db, 21, &one));
    assert_int_equal(one->position, 21);
    annal_free(one);
    annal_db_close(db);
    /* rebuilding from the log cannot step over the damage */
    TU_EXPECT(NULL, annal_rebuild_index(dir, NULL), ANNAL_ECORRUPT);
    tu_rmrf(dir);
    free(dir);
}

static void lost_index_is_rebuilt(void **state) {
    (void)state;
    char *dir = tu_tmpdir("noindex");
    annal_db *db = open_f(dir, 64 << 10);
    for (int s = 0; s < 20; s++) {
        char name[16];
        snprintf(name, sizeof name, "acct-%d", s);
        append_n(db, name, 1 + s % 5);
    }
    uint64_t n = count_all(db);
    annal_db_close(db);
    char path[4096];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    assert_int_equal(unlink(path), 0);
    db = open_f(dir, 64 << 10);
    assert_int_equal(count_all(db), n);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "acct-4", &head));
    assert_int_equal(head, 4);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.streams, 20);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

/* After a power loss the NOSYNC index may be torn: a state file from another boot
 * that was not closed cleanly makes the writer rebuild it, and a reader refuse. */
static void untrusted_index_after_restart(void **state) {
    (void)state;
    char *dir = tu_tmpdir("reboot");
    annal_db *db = open_f(dir, 0);
    append_n(db, "r", 7);
    annal_db_close(db);
    char idir[4096], path[4200];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index_state st = {0, "another-boot"};
    assert_int_equal(annal__index_state_write(idir, &st), 0);
    /* garbage where the index was: must never be read */
    snprintf(path, sizeof path, "%s/data.mdb", idir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    uint8_t junk[8192];
    memset(junk, 0xA5, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    close(fd);
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *ro = NULL;
    TU_EXPECT(NULL, annal_db_open(dir, &o, &ro), ANNAL_ECORRUPT);
    db = open_f(dir, 0);
    assert_int_equal(count_all(db), 7);
    annal_db_close(db);
    TU_OK(NULL, annal_db_open(dir, &o, &ro));
    assert_int_equal(count_all(ro), 7);
    annal_db_close(ro);
    tu_rmrf(dir);
    free(dir);
}

/* Find the location of position pos through the index's stride table and the log. */
static uint64_t loc_of(const char *dir, uint64_t pos) {
    annal_db *db = open_f(dir, 0);
    MDB_txn *t;
    TU_OK(db, annal__read_txn(db, &t));
    uint64_t base, loc;
    TU_OK(db, annal__index_pos_floor(t, &db->idx, pos, &base, &loc));
    mdb_txn_abort(t);
    annal__cursor c = {&db->log, annal__log_seg(&db->log, ANNAL__LOC_SEG(loc)), ANNAL__LOC_OFF(loc),
                       base};
    annal_event ev;
    annal__rec_info info;
    while (c.pos < pos) TU_OK(db, annal__cursor_next(&c, &ev, &info, NULL));
    loc = ANNAL__LOC(c.seg->no, c.off);
    annal_db_close(db);
    return loc;
}

/* Damage to acknowledged events in the active segment is never mistaken for a torn
 * tail: nothing is cut, the open says what is wrong or serves the rest. */
static void damage_in_active_segment_is_kept(void **state) {
    (void)state;
    char *dir = tu_tmpdir("active");
    annal_db *db = open_f(dir, 0);
    for (int i = 0; i < 4; i++) {
        char d[64];
        snprintf(d, sizeof d, "{\"mark\":\"MARK%d\"}", i);
        TU_OK(db, tu_append1(db, "s", ANNAL_EXPECT_ANY, "T", d, NULL));
    }
    annal_db_close(db);
    uint64_t l2 = loc_of(dir, 2), l3 = loc_of(dir, 3);
    uint8_t x = 'Z';
    write_at(dir, 0, ANNAL__LOC_OFF(l2) + ANNAL__REC_HDR + 6, &x, 1);
    /* index intact: the writer opens, event 2 is refused, 3 is still there */
    db = open_f(dir, 0);
    annal_event *e = NULL;
    TU_EXPECT(db, annal_event_get(db, 2, &e), ANNAL_ECORRUPT);
    TU_OK(db, annal_event_get(db, 3, &e));
    assert_non_null(memmem(e->data, e->data_len, "MARK3", 5));
    annal_free(e);
    annal_db_close(db);
    /* index lost: rebuilding must not cut events 2 and 3 away */
    char path[4096];
    snprintf(path, sizeof path, "%s/index/data.mdb", dir);
    assert_int_equal(unlink(path), 0);
    annal_db_opts o;
    annal_db_opts_init(&o);
    TU_EXPECT(NULL, annal_db_open(dir, &o, &db), ANNAL_ECORRUPT);
    TU_EXPECT(NULL, annal_rebuild_index(dir, NULL), ANNAL_ECORRUPT);
    char seg[4096];
    snprintf(seg, sizeof seg, "%s/log/0000000000000000.seg", dir);
    FILE *f = fopen(seg, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_non_null(memmem(buf, n, "MARK3", 5));
    /* damage to the last acknowledged event itself is named too */
    write_at(dir, 0, ANNAL__LOC_OFF(l3) + ANNAL__REC_HDR + 6, &x, 1);
    found fd = {0, 0, 0, 0};
    TU_EXPECT(NULL, annal_verify(dir, NULL, on_damage, &fd), ANNAL_ECORRUPT);
    assert_int_equal(fd.pos, 2);
    tu_rmrf(dir);
    free(dir);
}

/* A flush torn out of order (a later record landed, an earlier one did not) is cut. */
static void out_of_order_torn_flush_is_cut(void **state) {
    (void)state;
    char *dir = tu_tmpdir("oootorn");
    annal_db *db = open_f(dir, 0);
    append_n(db, "a", 10);
    uint64_t seg, off;
    tail_of(db, &seg, &off);
    annal_db_close(db);
    uint8_t buf[1024];
    uint32_t at = 0, second = 0;
    for (uint32_t i = 0; i < 3; i++) { /* three one-event batches in one flush from 10 */
        annal_event ev;
        memset(&ev, 0, sizeof ev);
        ev.id.bytes[0] = 0xEE;
        ev.id.bytes[1] = (uint8_t)i;
        ev.stream = "a";
        ev.stream_len = 1;
        ev.type = "Torn";
        ev.type_len = 4;
        ev.revision = 10 + i;
        ev.position = 10 + i;
        if (i == 1) second = at;
        at += annal__rec_encode(&ev, 0, 1, 10, buf + at);
    }
    memset(buf + second + 8, 0, 40); /* the middle record never reached the disk */
    write_at(dir, seg, off, buf, at);
    db = open_f(dir, 0);
    assert_int_equal(count_all(db), 11); /* 10 and the whole first record of the flush */
    annal_append_result r;
    TU_OK(db, tu_append1(db, "a", 10, "After", "{}", &r));
    assert_int_equal(r.first_position, 11);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

/* EIO or ENOSPC while writing the log: the append fails, nothing is acknowledged, the
 * handle refuses further appends, and a reopen recovers a consistent store. */
static void failed_write_recovers(void **state) {
    (void)state;
    static const int errs[] = {EIO, ENOSPC};
    for (int e = 0; e < 2; e++) {
        char *dir = tu_tmpdir("wfail");
        annal_db *db = open_f(dir, 0);
        append_n(db, "w", 4);
        F.fail_write = errs[e];
        annal_err rc = tu_append1(db, "w", 3, "Half", "{\"half\":true}", NULL);
        TU_EXPECT(db, rc, errs[e] == EIO ? ANNAL_EIO : ANNAL_ENOSPC);
        F.fail_write = 0;
        TU_EXPECT(db, tu_append1(db, "w", 3, "Refused", "{}", NULL), ANNAL_EFAILED);
        assert_int_equal(count_all(db), 4);
        annal_db_close(db);
        db = open_f(dir, 0);
        assert_int_equal(count_all(db), 4); /* half a record is a torn tail: cut */
        TU_OK(db, tu_append1(db, "w", 3, "Works", "{}", NULL));
        annal_db_close(db);
        TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
        tu_rmrf(dir);
        free(dir);
    }
}

/* The index's map fills up: the append fails with ANNAL_ENOSPC, and a reopen with a
 * larger map recovers every acknowledged event. */
static void index_map_full(void **state) {
    (void)state;
    char *dir = tu_tmpdir("mapfull");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    o.flags |= ANNAL_OPEN_NOSYNC; /* the map, not the disk, is what fills up */
    o.index_map_bytes = 1 << 20;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_err rc = ANNAL_OK;
    uint64_t acked = 0;
    for (int i = 0; i < 200000 && rc == ANNAL_OK; i++) {
        char s[32];
        snprintf(s, sizeof s, "stream-%d", i);
        rc = tu_append1(db, s, ANNAL_EXPECT_NO_STREAM, "Fill", "{}", NULL);
        if (rc == ANNAL_OK) acked++;
    }
    TU_EXPECT(db, rc, ANNAL_ENOSPC);
    assert_true(acked > 100);
    annal_db_close(db);
    o.index_map_bytes = 64 << 20;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    uint64_t n = count_all(db);
    assert_true(n == acked || n == acked + 1);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.streams, n);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void capture_log(void *ctx, annal_log_level lvl, const char *msg) {
    (void)lvl;
    if (strstr(msg, "map filled up")) (*(int *)ctx)++;
}

/* A rebuild whose first transaction outgrows the index map (a new store's is 4 MiB, and
 * 60,000 streams need more): the transaction is redone after the map grows, and every
 * event and stream is indexed. */
static void rebuild_outgrows_the_map(void **state) {
    (void)state;
    char *dir = tu_tmpdir("mapgrow");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    enum { N = 60000 };
    for (int i = 0; i < N; i++) {
        char s[32];
        snprintf(s, sizeof s, "stream-%06d", i);
        TU_OK(db, tu_append1(db, s, ANNAL_EXPECT_NO_STREAM, "Fill", "{\"k\":1}", NULL));
    }
    annal_db_close(db);
    int regrown = 0;
    o.flags = 0;
    o.log = capture_log;
    o.log_ctx = &regrown;
    TU_OK(NULL, annal_rebuild_index(dir, &o));
    assert_true(regrown > 0); /* the path under test was taken */
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    assert_int_equal(count_all(db), N);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.streams, N);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "stream-059999", &head));
    assert_int_equal(head, 0);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

/* An index head of the wrong shape is not trusted: the index is rebuilt from the log. */
static void malformed_index_head_is_rebuilt(void **state) {
    (void)state;
    char *dir = tu_tmpdir("badhead");
    annal_db *db = open_f(dir, 0);
    append_n(db, "h", 9);
    annal_db_close(db);
    char idir[4096], detail[256];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index idx;
    TU_OK(NULL, annal__index_open(&idx, idir, 0, 0, 1 << 26, detail, sizeof detail));
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(idx.env, NULL, 0, &t), 0);
    uint8_t junk[40];
    memset(junk, 0x5c, sizeof junk);
    MDB_val k = {4, "head"}, v = {sizeof junk, junk};
    assert_int_equal(mdb_put(t, idx.meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    annal__index_close(&idx);
    db = open_f(dir, 0);
    assert_int_equal(count_all(db), 9);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "h", &head));
    assert_int_equal(head, 8);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* A failed flush in annal_db_sync (bulk import on a NOSYNC handle) poisons the handle
 * like a failed append flush; a reopen recovers whatever reached the disk, whole. */
static void failed_sync_of_nosync_handle(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dbsync");
    fio = *annal__io_posix();
    fio.sync = f_sync;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    annal_db *db = NULL;
    TU_OK(NULL, annal__db_open_io(dir, &o, &fio, &db));
    append_n(db, "bulk", 20);
    F.fail_sync = 1;
    TU_EXPECT(db, annal_db_sync(db), ANNAL_EIO);
    TU_EXPECT(db, tu_append1(db, "bulk", ANNAL_EXPECT_ANY, "Refused", "{}", NULL), ANNAL_EFAILED);
    TU_EXPECT(db, annal_db_sync(db), ANNAL_EFAILED);
    annal_db_close(db);
    db = open_f(dir, 0);
    uint64_t n = count_all(db);
    assert_true(n <= 20);
    TU_OK(db, tu_append1(db, "bulk", ANNAL_EXPECT_ANY, "Works", "{}", NULL));
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(torn_batch_is_cut),
        cmocka_unit_test(garbage_tail_is_cut),
        cmocka_unit_test(failed_flush_poisons_until_reopen),
        cmocka_unit_test(failed_index_commit_recovers),
        cmocka_unit_test(enospc_then_space_freed),
        cmocka_unit_test(short_writes_are_completed),
        cmocka_unit_test(mid_log_damage_is_named),
        cmocka_unit_test(lost_index_is_rebuilt),
        cmocka_unit_test(untrusted_index_after_restart),
        cmocka_unit_test(damage_in_active_segment_is_kept),
        cmocka_unit_test(out_of_order_torn_flush_is_cut),
        cmocka_unit_test(failed_write_recovers),
        cmocka_unit_test(index_map_full),
        cmocka_unit_test(rebuild_outgrows_the_map),
        cmocka_unit_test(malformed_index_head_is_rebuilt),
        cmocka_unit_test(failed_sync_of_nosync_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
