/* lua_test.c -- Lua handlers of projection files: sql() binds the values it is given. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annal_project.h"
#include "project_int.h"

/* ---- helpers */

static annal_proj_def *parse_ok(const char *text) {
    annal_proj_def *d = NULL;
    char err[1024];
    annal_err rc = annal_proj_def_parse(text, strlen(text), "t.proj", &d, err, sizeof err);
    if (rc != ANNAL_OK) print_error("parse failed: %s\n", err);
    assert_int_equal(rc, ANNAL_OK);
    return d;
}

typedef struct text_rows {
    char out[2048]; /* rows as "v1|v2|...;" with NULL written as "NULL" */
} text_rows;

static int text_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    (void)names;
    text_rows *t = ctx;
    size_t k = strlen(t->out);
    for (int c = 0; c < n; c++) {
        char cell[256];
        switch (v[c].kind) {
        case ANNAL_PROJ_NULL: snprintf(cell, sizeof cell, "NULL"); break;
        case ANNAL_PROJ_INT: snprintf(cell, sizeof cell, "%lld", (long long)v[c].i); break;
        case ANNAL_PROJ_REAL: snprintf(cell, sizeof cell, "%g", v[c].d); break;
        case ANNAL_PROJ_TEXT: snprintf(cell, sizeof cell, "%.*s", (int)v[c].len, v[c].s); break;
        }
        k += (size_t)snprintf(t->out + k, sizeof t->out - k, "%s%s", c ? "|" : "", cell);
    }
    snprintf(t->out + k, sizeof t->out - k, ";");
    return 0;
}

static void query_text(const char *target, const char *sql, char *out, size_t n) {
    text_rows t;
    t.out[0] = '\0';
    char err[512];
    annal_err rc = annal_proj_query(target, NULL, sql, text_row, &t, err, sizeof err);
    if (rc != ANNAL_OK) print_error("query %s: %s\n", sql, err);
    assert_int_equal(rc, ANNAL_OK);
    snprintf(out, n, "%s", t.out);
}

static annal_proj *open_def(annal_db *db, const annal_proj_def *d, const char *target,
                            const char *name) {
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = name;
    o.def = d;
    o.target = target;
    annal_proj *p = NULL;
    char err[1024];
    annal_err rc = annal_proj_open(db, &o, &p, err, sizeof err);
    if (rc != ANNAL_OK) print_error("open: %s\n", err);
    assert_int_equal(rc, ANNAL_OK);
    return p;
}

/* ---- sql() binds every '?' to the value given, of every kind */

static void test_sql_binds_values(void **state) {
    (void)state;
    char *dir = tu_tmpdir("lua-sql");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{\"c\": 5, \"k\": \"x\"}", NULL));
    TU_OK(db, tu_append1(db, "acc-2", ANNAL_EXPECT_ANY, "Dep", "{\"c\": 7, \"k\": \"y\"}", NULL));
    const char *text =
        "source $ce-acc\n"
        "[schema]\n"
        "CREATE TABLE t (s TEXT, c INTEGER, r REAL, b INTEGER, j TEXT, n TEXT, again TEXT);\n"
        "[lua]\n"
        "function on.Dep(e)\n"
        "  sql('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)', e.stream, e.data.c, e.data.c / 2,\n"
        "      e.data.c > 6, { k = e.data.k }, nil, e.stream_id)\n"
        "  local r = sql('SELECT c FROM t WHERE s = ? AND c = ?', e.stream, e.data.c)\n"
        "  assert(#r == 1 and r[1].c == e.data.c, 'row not found by its bound values')\n"
        "end\n";
    annal_proj_def *d = parse_ok(text);
    char target[512];
    snprintf(target, sizeof target, "sqlite:%s/l.db", dir);
    annal_proj *p = open_def(db, d, target, "binds");
    annal_err rc = annal_proj_run(p, 1);
    if (rc != ANNAL_OK) print_error("run: %s\n", annal_proj_errmsg(p));
    assert_int_equal(rc, ANNAL_OK);
    char got[2048];
    query_text(target, "SELECT s, c, r, b, j, n, again FROM t ORDER BY s", got, sizeof got);
    assert_string_equal(got, "acc-1|5|2.5|0|{\"k\":\"x\"}|NULL|1;"
                             "acc-2|7|3.5|1|{\"k\":\"y\"}|NULL|2;");
    annal_proj_close(p);
    annal_proj_def_free(d);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sql_binds_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
