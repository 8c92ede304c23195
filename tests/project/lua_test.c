/* lua_test.c -- Lua handlers of projection files: sql() binds the values it is given;
 * the sandbox (parsing compiles without running; text chunks only; no string.dump, os,
 * io, debug, require, dofile, loadfile); the time budget that fails an event whose
 * handler loops, with the line; cancel interrupting a handler without failing it. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

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

static annal_err try_open(annal_db *db, const annal_proj_def *d, const char *target,
                          const char *name, uint32_t budget_ms, annal_proj **p, char *err,
                          size_t err_n) {
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = name;
    o.def = d;
    o.target = target;
    if (budget_ms) o.lua_budget_ms = budget_ms;
    return annal_proj_open(db, &o, p, err, err_n);
}

static annal_proj *open_budget(annal_db *db, const annal_proj_def *d, const char *target,
                               const char *name, uint32_t budget_ms) {
    annal_proj *p = NULL;
    char err[1024];
    annal_err rc = try_open(db, d, target, name, budget_ms, &p, err, sizeof err);
    if (rc != ANNAL_OK) print_error("open: %s\n", err);
    assert_int_equal(rc, ANNAL_OK);
    return p;
}

static annal_proj *open_def(annal_db *db, const annal_proj_def *d, const char *target,
                            const char *name) {
    return open_budget(db, d, target, name, 0);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* ---- parsing compiles the chunk and runs nothing */

static void test_parse_runs_nothing(void **state) {
    (void)state;
    alarm(30); /* a parse that ran the loop would hang: fail instead */
    const char *loop = "source $all\n[lua]\nwhile true do end\n";
    annal_proj_def *d = parse_ok(loop);
    alarm(0);
    char *dir = tu_tmpdir("lua-parse");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    char target[512], err[1024];
    snprintf(target, sizeof target, "sqlite:%s/l.db", dir);
    /* running it is the projector's business, under the budget: open fails on line 3 */
    annal_proj *p = NULL;
    double t0 = mono_now();
    assert_int_equal(try_open(db, d, target, "loop", 100, &p, err, sizeof err), ANNAL_EINVAL);
    assert_null(p);
    assert_true(mono_now() - t0 < 10);
    if (!strstr(err, "t.proj:3: Lua ran longer than its budget of 100 ms"))
        print_error("got: %s\n", err);
    assert_non_null(strstr(err, "t.proj:3: Lua ran longer than its budget of 100 ms"));
    annal_proj_def_free(d);
    /* a chunk that raises: parsed, then refused at open with its line */
    d = parse_ok("source $all\n[lua]\nerror('boom')\n");
    snprintf(target, sizeof target, "sqlite:%s/m.db", dir);
    assert_int_equal(try_open(db, d, target, "boom", 0, &p, err, sizeof err), ANNAL_EINVAL);
    assert_non_null(strstr(err, "t.proj:3: boom"));
    annal_proj_def_free(d);
    /* a binary chunk is not a projection file's Lua */
    annal_proj_def *bd = NULL;
    const char bin[] = "source $all\n[lua]\n\x1bLua";
    assert_int_not_equal(annal_proj_def_parse(bin, sizeof bin - 1, "t.proj", &bd, err, sizeof err),
                         ANNAL_OK);
    assert_null(bd);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- the sandbox: what a handler cannot reach */

typedef struct dumped {
    char text[8192]; /* the chunk as a Lua string literal of \xHH escapes */
    size_t n;
} dumped;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    dumped *d = ud;
    for (size_t i = 0; i < sz && d->n + 5 < sizeof d->text; i++)
        d->n += (size_t)snprintf(d->text + d->n, sizeof d->text - d->n, "\\x%02x",
                                 ((const unsigned char *)p)[i]);
    return 0;
}

static void test_sandbox(void **state) {
    (void)state;
    /* real bytecode, made here with the C API, to offer to load() from inside */
    lua_State *L = luaL_newstate();
    assert_int_equal(luaL_loadstring(L, "return 40 + 2"), LUA_OK);
    dumped bc;
    memset(&bc, 0, sizeof bc);
    assert_int_equal(lua_dump(L, dump_writer, &bc, 0), 0);
    lua_close(L);
    assert_true(bc.n > 16 && bc.n + 5 < sizeof bc.text);

    char *dir = tu_tmpdir("lua-sandbox");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "box-1", ANNAL_EXPECT_ANY, "Probe", "{}", NULL));
    static char text[16384];
    snprintf(text, sizeof text,
             "source $all\n"
             "[schema]\nCREATE TABLE r (k TEXT PRIMARY KEY, ok INTEGER);\n"
             "[lua]\n"
             "local bc = \"%s\"\n"
             "function on.Probe(e)\n"
             "  local r = {}\n"
             "  r.no_os = os == nil\n"
             "  r.no_io = io == nil\n"
             "  r.no_debug = debug == nil\n"
             "  r.no_require = require == nil\n"
             "  r.no_package = package == nil\n"
             "  r.no_dofile = dofile == nil\n"
             "  r.no_loadfile = loadfile == nil\n"
             "  r.no_dump = string.dump == nil and getmetatable('').__index.dump == nil\n"
             "  local f, why = load(bc)\n"
             "  r.no_binary = f == nil and tostring(why):find('binary') ~= nil\n"
             "  f, why = load(bc, 'x', 'b')\n"
             "  r.no_binary_mode_b = f == nil\n"
             "  f, why = load(bc, 'x', 'bt', {})\n"
             "  r.no_binary_mode_bt = f == nil\n"
             "  f = load('return 40 + 2')\n"
             "  r.text_loads = f ~= nil and f() == 42\n"
             "  f = load('return x', 'x', 't', { x = 7 })\n"
             "  r.text_env = f ~= nil and f() == 7\n"
             "  r.string_lib = string.format('%%d', 5) == '5'\n"
             "  for k, v in pairs(r) do sql('INSERT INTO r VALUES (?, ?)', k, v) end\n"
             "end\n",
             bc.text);
    annal_proj_def *d = parse_ok(text);
    char target[512];
    snprintf(target, sizeof target, "sqlite:%s/l.db", dir);
    annal_proj *p = open_def(db, d, target, "box");
    annal_err rc = annal_proj_run(p, 1);
    if (rc != ANNAL_OK) print_error("run: %s\n", annal_proj_errmsg(p));
    assert_int_equal(rc, ANNAL_OK);
    char got[2048];
    query_text(target, "SELECT k, ok FROM r ORDER BY k", got, sizeof got);
    assert_string_equal(got, "no_binary|1;no_binary_mode_b|1;no_binary_mode_bt|1;no_debug|1;"
                             "no_dofile|1;no_dump|1;no_io|1;no_loadfile|1;no_os|1;no_package|1;"
                             "no_require|1;string_lib|1;text_env|1;text_loads|1;");
    annal_proj_close(p);
    annal_proj_def_free(d);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- the budget: a looping handler fails its event, with the line */

static void budget_case(annal_db *db, const char *dir, const char *name, const char *body,
                        int line) {
    char text[1024];
    snprintf(text, sizeof text,
             "source $ce-acc\n"
             "[schema]\nCREATE TABLE n (p INTEGER);\n"
             "[lua]\n"
             "function on.Dep(e) sql('INSERT INTO n VALUES (?)', e.position) end\n"
             "function on.Loop(e)\n"
             "%s\n"
             "end\n",
             body);
    annal_proj_def *d = parse_ok(text);
    char target[512], err[1024];
    snprintf(target, sizeof target, "sqlite:%s/%s.db", dir, name);
    annal_proj *p = open_budget(db, d, target, name, 200);
    double t0 = mono_now();
    assert_int_equal(annal_proj_run(p, 1), ANNAL_EBUSY);
    double took = mono_now() - t0;
    assert_true(took < 10); /* 200 ms, twice (the batch is replayed up to the event) */
    annal_proj_status st;
    assert_int_equal(annal_proj_status_get(target, name, &st, err, sizeof err), ANNAL_OK);
    assert_int_equal(st.error_position, 1);
    assert_non_null(strstr(st.error_event, "acc-1@1 Loop "));
    char want[128];
    snprintf(want, sizeof want, "t.proj:%d: Lua ran longer than its budget of 200 ms", line);
    if (!strstr(st.error, want)) print_error("error [%s] lacks [%s]\n", st.error, want);
    assert_non_null(strstr(st.error, want));
    char got[256];
    query_text(target, "SELECT p FROM n", got, sizeof got); /* the event before it: kept */
    assert_string_equal(got, "0;");
    annal_proj_close(p);
    annal_proj_def_free(d);
}

static void test_budget(void **state) {
    (void)state;
    alarm(60); /* without a budget the loops never end: fail instead of hanging */
    char *dir = tu_tmpdir("lua-budget");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{}", NULL));
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Loop", "{}", NULL));
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{}", NULL));
    budget_case(db, dir, "plain", "  while true do end", 7);
    /* catching the budget's error does not buy more time */
    budget_case(db, dir, "caught",
                "  local n = 0\n"
                "  while true do n = n + 1; pcall(function() while true do end end) end",
                8);
    budget_case(db, dir, "swallowed", "  pcall(function() while true do end end)\n  return 1", 7);
    /* a tail call of pcall returns to C with no Lua instruction after the catch */
    budget_case(db, dir, "tail", "  return pcall(function() while true do end end)", 7);
    alarm(0);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- cancel interrupts a handler: the batch is rolled back, nothing fails */

typedef struct runner {
    annal_proj *p;
    annal_err rc;
} runner;

static void *run_thread(void *arg) {
    runner *r = arg;
    r->rc = annal_proj_run(r->p, 0);
    return NULL;
}

static void test_cancel_interrupts(void **state) {
    (void)state;
    alarm(60);
    char *dir = tu_tmpdir("lua-cancel");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{}", NULL));
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Loop", "{}", NULL));
    annal_proj_def *d = parse_ok("source $ce-acc\n"
                                 "[schema]\nCREATE TABLE n (p INTEGER);\n"
                                 "[lua]\n"
                                 "function on.Dep(e) sql('INSERT INTO n VALUES (?)', 1) end\n"
                                 "function on.Loop(e) while true do end end\n");
    char target[512], err[1024];
    snprintf(target, sizeof target, "sqlite:%s/c.db", dir);
    runner r = {open_budget(db, d, target, "cancel", 600000), ANNAL_OK};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_thread, &r), 0);
    usleep(300 * 1000);
    double t0 = mono_now();
    annal_proj_cancel(r.p);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(mono_now() - t0 < 5);
    assert_int_equal(r.rc, ANNAL_ECANCELED);
    annal_proj_status st;
    assert_int_equal(annal_proj_status_get(target, "cancel", &st, err, sizeof err), ANNAL_OK);
    assert_int_equal(st.position, 0); /* the batch was rolled back */
    assert_string_equal(st.error, "");
    char got[64];
    query_text(target, "SELECT count(*) FROM n", got, sizeof got);
    assert_string_equal(got, "0;");
    alarm(0);
    annal_proj_close(r.p);
    annal_proj_def_free(d);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sql_binds_values),  cmocka_unit_test(test_parse_runs_nothing),
        cmocka_unit_test(test_sandbox),           cmocka_unit_test(test_budget),
        cmocka_unit_test(test_cancel_interrupts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
