/* Fuzz target: a whole segment file from the input, opened as a store by a writer
 * (recovery) and then verified. Invariant: no crash, no sanitizer report; an open that
 * succeeds serves only events that read back whole. For half the inputs (by the parity
 * of their byte sum, so a finding replays) the header's and the records' CRCs are first
 * recomputed over the mutated bytes: mutations then reach recovery's checks of batches,
 * positions and revisions, which a wrong checksum would stop short of. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>

#include "annal.h"
#include "base/base.h"
#include "log/record.h"

static int rm1(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s, (void)f, (void)w;
    return remove(p);
}

/* As a writer would have computed them: the header's, then each record's along the chain
 * of lengths. */
static void fix_crcs(uint8_t *p, size_t size) {
    if (size < ANNAL__SEG_HDR) return;
    annal__put32(p + 60, annal__crc32c(0, p, 60));
    for (size_t off = ANNAL__SEG_HDR; off + ANNAL__REC_HDR <= size;) {
        uint32_t len = annal__get32(p + off + 4);
        if (len < ANNAL__REC_HDR || (len & 7) || len > size - off) break;
        annal__put32(p + off, annal__crc32c(0, p + off + 4, len - 4));
        off += len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* tmpfs where available: the target is about parsing, not about flush speed */
    char dir[] = "/dev/shm/annal-fuzz-XXXXXX", path[128];
    if (!mkdtemp(dir)) {
        memcpy(dir, "/tmp/annal-fuzz-XXXXXX", sizeof "/tmp/annal-fuzz-XXXXXX");
        if (!mkdtemp(dir)) return 0;
    }
    snprintf(path, sizeof path, "%s/log", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/index", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/log/0000000000000000.seg", dir);
    uint8_t *bytes = malloc(size ? size : 1);
    if (!bytes) abort();
    if (size) memcpy(bytes, data, size);
    unsigned sum = 0;
    for (size_t i = 0; i < size; i++) sum += data[i];
    if (sum & 1) fix_crcs(bytes, size);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(bytes, 1, size, f);
        fclose(f);
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.segment_bytes = 64 << 10;
    o.index_map_bytes = 4 << 20;
    /* a small id memtable: the default one is tens of MiB, zeroed on every open */
    o.id_cache_events = 1024;
    annal_db *db = NULL;
    if (annal_db_open(dir, &o, &db) == ANNAL_OK) {
        annal_iter *it;
        const annal_event *ev;
        if (annal_read_all(db, 0, 0, 0, &it) == ANNAL_OK) {
            uint64_t pos = 0;
            while (annal_iter_next(it, &ev) == ANNAL_OK)
                if (ev->position != pos++) abort();
            annal_iter_close(it);
        }
        annal_event_data e = {{{0}}, "Fuzzed", "{}", 2, NULL, 0};
        (void)annal_append(db, "after-fuzz", ANNAL_EXPECT_ANY, &e, 1, NULL);
        annal_db_close(db);
    }
    (void)annal_verify(dir, NULL, NULL, NULL);
    nftw(dir, rm1, 8, FTW_DEPTH | FTW_PHYS);
    free(bytes);
    return 0;
}
