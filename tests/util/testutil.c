/* Shared test helpers (see testutil.h). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>

char *tu_tmpdir(const char *tag) {
    const char *base = getenv("ANNAL_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    size_t n = strlen(base) + strlen(tag) + 32;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(p));
    return p;
}

static int rm1(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmrf(const char *dir) {
    if (dir) nftw(dir, rm1, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_expect(annal_db *db, annal_err rc, annal_err want, const char *expr, const char *file,
               int line) {
    if (rc == want) return;
    print_error("%s:%d: %s returned %s, expected %s (%s)\n", file, line, expr, annal_errname(rc),
                annal_errname(want), db ? annal_db_errmsg(db) : "");
    _fail(file, line);
}

annal_db *tu_open(const char *dir, unsigned extra_flags) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags |= ANNAL_OPEN_CREATE | extra_flags;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(dir, &o, &db);
    if (rc != ANNAL_OK) {
        print_error("annal_db_open(%s): %s\n", dir, annal_errname(rc));
        fail();
    }
    return db;
}

annal_err tu_append1(annal_db *db, const char *stream, int64_t expected, const char *type,
                     const char *data, annal_append_result *res) {
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.data = data;
    e.data_len = strlen(data);
    return annal_append(db, stream, expected, &e, 1, res);
}
