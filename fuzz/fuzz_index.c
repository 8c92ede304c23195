/* Fuzz target: values read back from the index. The input replaces the index head and
 * one stream's record of a small store (LMDB keeps whatever bytes it is given), then the
 * store is opened for writing, read and appended to. Invariant: garbage in the index is
 * rejected or repaired (rebuilt from the log) — never a crash, never a wrong event. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>

#include "index/index.h"
#include "annal.h"

static int rm1(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s, (void)f, (void)w;
    return remove(p);
}

static annal_db_opts small_opts(unsigned flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = flags;
    o.segment_bytes = 64 << 10;
    o.index_map_bytes = 1 << 20;
    /* a small id memtable: the default one is tens of MiB, zeroed on every open */
    o.id_cache_events = 1024;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[] = "/dev/shm/annal-fzidx-XXXXXX";
    if (!mkdtemp(dir)) {
        memcpy(dir, "/tmp/annal-fzidx-XXXXXX", sizeof "/tmp/annal-fzidx-XXXXXX");
        if (!mkdtemp(dir)) return 0;
    }
    annal_db_opts o = small_opts(ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC);
    annal_db *db = NULL;
    if (annal_db_open(dir, &o, &db) != ANNAL_OK) abort();
    for (int i = 0; i < 40; i++) {
        char s[16];
        snprintf(s, sizeof s, "s-%d", i % 3);
        annal_event_data e = {{{0}}, "T", "{\"i\":1}", 7, NULL, 0};
        if (annal_append(db, s, ANNAL_EXPECT_ANY, &e, 1, NULL) != ANNAL_OK) abort();
    }
    annal_db_close(db);
    /* overwrite index values with the input */
    char idir[128];
    snprintf(idir, sizeof idir, "%s/index", dir);
    annal__index idx;
    char detail[256];
    if (annal__index_open(&idx, idir, 0, 0, 1 << 20, detail, sizeof detail) != ANNAL_OK) abort();
    MDB_txn *t;
    if (mdb_txn_begin(idx.env, NULL, 0, &t) == 0) {
        size_t h = size < 48 ? size : 48, r = size - h < 32 ? size - h : 32;
        MDB_val k = {4, "head"}, v = {h, (void *)data};
        mdb_put(t, idx.meta, &k, &v, 0);
        MDB_val ks = {3, "s-1"}, vs = {r, (void *)(data + h)};
        mdb_put(t, idx.streams, &ks, &vs, 0);
        mdb_txn_commit(t);
    }
    annal__index_close(&idx);
    o = small_opts(0);
    if (annal_db_open(dir, &o, &db) == ANNAL_OK) {
        annal_iter *it;
        const annal_event *ev;
        if (annal_read_all(db, 0, 0, 0, &it) == ANNAL_OK) {
            uint64_t pos = 0;
            while (annal_iter_next(it, &ev) == ANNAL_OK)
                if (ev->position != pos++ || ev->type_len != 1) abort();
            annal_iter_close(it);
        }
        if (annal_read_stream(db, "s-1", 0, 0, 0, &it) == ANNAL_OK) {
            while (annal_iter_next(it, &ev) == ANNAL_OK)
                if (strcmp(ev->stream, "s-1") != 0) abort(); /* never a wrong event */
            annal_iter_close(it);
        }
        annal_event_data e = {{{0}}, "After", "{}", 2, NULL, 0};
        (void)annal_append(db, "s-1", ANNAL_EXPECT_ANY, &e, 1, NULL);
        annal_db_close(db);
    }
    nftw(dir, rm1, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
