/* Fuzz target: the JSON documents the store and the command side interpret.
 *  - stream metadata ($tb, $maxCount, $maxAge, $deleted): checked by annal_stream_meta_set,
 *    and applied as found in a `$metadata` event of the log (which a damaged or imported
 *    log may hold unchecked), then read back through the limits it set;
 *  - an event's metadata "$schema" (annal_event_schema_get);
 *  - command metadata: the `extra` object, merged into event metadata.
 * One store in tmpfs serves every input (opening LMDB per input would explore nothing).
 * Invariant: bad documents are refused or ignored; never a crash, never a wrong event. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "annal.h"
#include "store/db_int.h"
#include "write/write.h"

static char dir[64];
static annal_db *db;

static int rm1(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s, (void)f, (void)w;
    return remove(p);
}

static void cleanup(void) {
    annal_db_close(db);
    if (dir[0]) nftw(dir, rm1, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
    memcpy(dir, "/dev/shm/annal-fzmeta-XXXXXX", sizeof "/dev/shm/annal-fzmeta-XXXXXX");
    if (!mkdtemp(dir)) {
        memcpy(dir, "/tmp/annal-fzmeta-XXXXXX", sizeof "/tmp/annal-fzmeta-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.segment_bytes = 1 << 20;
    o.index_map_bytes = 256 << 20;
    if (annal_db_open(dir, &o, &db) != ANNAL_OK) abort();
    atexit(cleanup);
}

/* Every event read from a stream is that stream's, in revision order. */
static void read_back(const char *stream) {
    annal_iter *it;
    const annal_event *ev;
    if (annal_read_stream(db, stream, 0, 0, 0, &it) != ANNAL_OK) return;
    int64_t last = -1;
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        if (strcmp(ev->stream, stream) != 0 || (int64_t)ev->revision <= last) abort();
        last = (int64_t)ev->revision;
    }
    annal_iter_close(it);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!db) setup();
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';

    /* Fresh streams for every input: reads stay short however long the run. */
    static unsigned long n;
    char s1[32], s2[32], m2[40];
    snprintf(s1, sizeof s1, "m-%lu", ++n);
    snprintf(s2, sizeof s2, "m-%lu", ++n);
    snprintf(m2, sizeof m2, "$$%s", s2);

    /* stream metadata through the API, which checks it */
    annal_event_data e = {{{0}}, "T", "{}", 2, NULL, 0};
    (void)annal_append(db, s1, ANNAL_EXPECT_ANY, &e, 1, NULL);
    if (annal_stream_meta_set(db, s1, ANNAL_EXPECT_ANY, text, size, NULL) == ANNAL_OK) {
        char *json = NULL;
        int64_t rev;
        if (annal_stream_meta_get(db, s1, &json, &rev) != ANNAL_OK) abort();
        annal_free(json);
    }
    (void)annal_append(db, s1, ANNAL_EXPECT_ANY, &e, 1, NULL);
    read_back(s1);

    /* stream metadata as the log may hold it: unchecked, applied when indexed */
    annal__guard g = {s2, strlen(s2), ANNAL_EXPECT_ANY, 0, 0};
    annal_event_data me = {{{0}}, "$metadata", text, size, NULL, 0};
    (void)annal_append(db, s2, ANNAL_EXPECT_ANY, &e, 1, NULL);
    (void)annal__append(db, m2, ANNAL_EXPECT_ANY, &me, 1, NULL, &g);
    (void)annal_append(db, s2, ANNAL_EXPECT_ANY, &e, 1, NULL);
    read_back(s2);

    /* an event's metadata and its "$schema" */
    annal_event ev;
    memset(&ev, 0, sizeof ev);
    ev.stream = "x", ev.stream_len = 1, ev.type = "T", ev.type_len = 1;
    ev.metadata = text, ev.metadata_len = size;
    uint32_t version;
    annal_err rc = annal_event_schema_get(&ev, &version);
    if (rc == ANNAL_OK && version < 1) abort();

    /* command metadata: extra as given, merged with the event's own metadata */
    annal_command_meta cm = {"corr", "cause", "user", text};
    annal__write_cmeta c;
    char err[256];
    if (annal__write_cmeta_init(&c, &cm, err, sizeof err) == ANNAL_OK) {
        char *out = NULL;
        size_t out_len = 0;
        if (annal__write_meta_merge(&c, 3, text, size, &out, &out_len, err, sizeof err) ==
            ANNAL_OK) {
            /* the merged metadata carries the schema the handler wrote */
            annal_event merged = ev;
            merged.metadata = out, merged.metadata_len = out_len;
            if (annal_event_schema_get(&merged, &version) != ANNAL_OK || version != 3) abort();
        }
        free(out);
        annal__write_cmeta_free(&c);
    }
    free(text);
    return 0;
}
