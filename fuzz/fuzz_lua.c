/* Fuzz target: the bridges between events and Lua handlers (src/project/lua.c): event
 * JSON to Lua tables, Lua values back to JSON (json, state_set, emit) and to SQL
 * parameters (the table a handler returns). A fixed projection file whose handler pushes
 * the event through every bridge runs over one store and one SQLite read model kept for
 * all inputs; each input is one event: its data, a newline, its metadata. Invariant: odd
 * JSON is an event failure at worst, never a crash. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "annal.h"
#include "annal_project.h"

static const char def_text[] = "projection fz\nsource $ce-in\nemits yes\n"
                               "[schema]\nCREATE TABLE t (k, v, n);\n"
                               "[on In]\nINSERT INTO t VALUES (:v.k, :v.v, :v.n)\n"
                               "[lua]\n"
                               "function on.In(e)\n"
                               "  local ok, prev = pcall(state_get, 'k')\n"
                               "  pcall(state_set, 'k', e.data)\n"
                               "  pcall(state_set, 'm', { d = e.data, m = e.metadata, p = prev })\n"
                               "  local _, back = pcall(state_get, 'm')\n"
                               "  local _, j = pcall(json, e.data)\n"
                               "  local _, jm = pcall(json, back)\n"
                               "  pcall(emit, 'out-1', 'Echo', e.data, e.metadata)\n"
                               "  pcall(emit, 'out-1', 'EchoText', j)\n"
                               "  local n = type(e.data) == 'table' and e.data.n or nil\n"
                               "  return { k = j, v = jm, n = n }\n"
                               "end\n";

static char dir[64], target[128];
static annal_db *db;
static annal_proj_def *def;
static annal_proj *proj;
static uint64_t applied_total, resets; /* ANNAL_FUZZ_VERBOSE=1 prints them at exit */

static int rm1(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s, (void)f, (void)w;
    return remove(p);
}

static void teardown(void) {
    annal_proj_close(proj);
    annal_db_close(db);
    proj = NULL, db = NULL;
    if (dir[0]) nftw(dir, rm1, 8, FTW_DEPTH | FTW_PHYS);
}

static void at_exit(void) {
    if (getenv("ANNAL_FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_lua: %llu events applied, %llu event failures\n",
                (unsigned long long)applied_total, (unsigned long long)resets);
    teardown();
    annal_proj_def_free(def);
}

/* A fresh store and read model (also after an event failure stopped the projection). */
static void setup(void) {
    memcpy(dir, "/dev/shm/annal-fzlua-XXXXXX", sizeof "/dev/shm/annal-fzlua-XXXXXX");
    if (!mkdtemp(dir)) {
        memcpy(dir, "/tmp/annal-fzlua-XXXXXX", sizeof "/tmp/annal-fzlua-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    char err[1024];
    if (!def && annal_proj_def_parse(def_text, sizeof def_text - 1, "fz.proj", &def, err,
                                     sizeof err) != ANNAL_OK) {
        fprintf(stderr, "fuzz_lua: %s\n", err);
        abort();
    }
    char sdir[96];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    snprintf(target, sizeof target, "sqlite:%s/rm.db", dir);
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.segment_bytes = 1 << 20;
    o.index_map_bytes = 64 << 20;
    o.id_cache_events = 1024;
    if (annal_db_open(sdir, &o, &db) != ANNAL_OK) abort();
    annal_proj_opts po;
    annal_proj_opts_init(&po);
    po.def = def;
    po.target = target;
    if (annal_proj_open(db, &po, &proj, err, sizeof err) != ANNAL_OK) {
        fprintf(stderr, "fuzz_lua: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int registered;
    if (!registered) {
        atexit(at_exit);
        registered = 1;
    }
    if (!db) setup();
    if (size > 8192) return 0;
    const char *s = (const char *)data, *nl = memchr(s, '\n', size);
    size_t dlen = nl ? (size_t)(nl - s) : size;
    annal_event_data e = {{{0}}, "In", s, dlen, nl ? nl + 1 : NULL, nl ? size - dlen - 1 : 0};
    if (annal_append(db, "in-1", ANNAL_EXPECT_ANY, &e, 1, NULL) != ANNAL_OK) return 0;
    uint64_t applied = 0;
    annal_err rc = annal_proj_step(proj, &applied);
    applied_total += applied;
    if (rc != ANNAL_OK && rc != ANNAL_END) {
        resets++;
        if (getenv("ANNAL_FUZZ_VERBOSE"))
            fprintf(stderr, "fuzz_lua: %s\n", annal_proj_errmsg(proj));
        /* an event failure stops the projection (as it should): start again, clean */
        teardown();
        setup();
    }
    return 0;
}
