/* project_test.c -- the projection library through its API: projection files (errors with
 * line numbers, SQL translation), JSON paths, projections written in C into SQLite and
 * into memory, checkpoints, a failing event with retry and skip, emitted events with
 * derived ids, Lua values and state, and waiting for a position. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "annal_project.h"
#include "project_int.h"

static annal_proj_def *parse_ok(const char *text) {
    annal_proj_def *d = NULL;
    char err[1024];
    annal_err rc = annal_proj_def_parse(text, strlen(text), "t.proj", &d, err, sizeof err);
    if (rc != ANNAL_OK) print_error("parse failed: %s\n", err);
    assert_int_equal(rc, ANNAL_OK);
    return d;
}

static void parse_bad(const char *text, const char *want) {
    annal_proj_def *d = NULL;
    char err[1024];
    annal_err rc = annal_proj_def_parse(text, strlen(text), "t.proj", &d, err, sizeof err);
    assert_int_equal(rc, ANNAL_EINVAL);
    assert_null(d);
    if (!strstr(err, want)) print_error("error [%s] lacks [%s]\n", err, want);
    assert_non_null(strstr(err, want));
}

static void test_parse(void **state) {
    (void)state;
    annal_proj_def *d = parse_ok("# c\nprojection p1\nsource $ce-order   # trailing\n"
                                 "target sqlite:x.db\nbatch 7\nemits no\n"
                                 "[schema]\nCREATE TABLE t (a);\n"
                                 "[on A]\nINSERT INTO t VALUES (:data.x); -- ; in a comment\n"
                                 "INSERT INTO t VALUES (';:not' || :data.x || :stream);\n"
                                 "[on *]\nSELECT 1\n");
    assert_string_equal(annal_proj_def_name(d), "p1");
    assert_string_equal(annal_proj_def_source(d), "$ce-order");
    assert_string_equal(annal_proj_def_target(d), "sqlite:x.db");
    assert_int_equal(annal_proj_def_emits(d), 0);
    assert_int_equal(d->batch, 7);
    assert_int_equal(d->nhandlers, 2);
    assert_int_equal(d->handlers[0].nstmts, 2);
    pj_stmt *s = &d->handlers[0].stmts[1];
    assert_int_equal(s->line, 11);
    assert_int_equal(s->nparams, 2); /* :data.x twice is one parameter */
    assert_string_equal(s->sql_sqlite, "INSERT INTO t VALUES (';:not' || ?1 || ?2)");
    assert_string_equal(s->sql_pg, "INSERT INTO t VALUES (';:not' || $1 || $2)");
    annal_proj_def_free(d);

    parse_bad("source $all\n[on A]\nSELECT :x\n", "t.proj:3: [on A]: unknown parameter :x");
    parse_bad("source $all\n[on A]\nSELECT 1;\n\n  SELECT :data.a..b\n", "t.proj:5:");
    parse_bad("source $all\nbatch 0\n[on A]\nSELECT 1\n", "t.proj:2: batch");
    parse_bad("source $all\n[lua]\nx = = 1\n", "t.proj:3:");
    /* the chunk is only compiled at parse time: its errors at run come at open (lua_test) */
    parse_bad("source $all\n", "no handlers");
    parse_bad("projection a/b\nsource $all\n[on A]\nSELECT 1\n", "t.proj:1: bad projection name");
    parse_bad("source $all\ntarget mysql:x\n[on A]\nSELECT 1\n", "t.proj:2: bad target");
    parse_bad("source $all\n [on A]\nSELECT 1\n", "t.proj:2: a section header starts at column 0");
}

static void test_translate(void **state) {
    (void)state;
    pj_stmt s;
    char msg[128];
    int line = 0;
    const char *q = "SELECT x::int, \"a:b\", $$, ? /* ? */ FROM t WHERE y = ? -- ?\n";
    assert_int_equal(annal__pj_sql_translate(q, strlen(q), 1, 0, &s, msg, sizeof msg, &line), 0);
    assert_int_equal(s.nparams, 2);
    assert_string_equal(s.sql_pg,
                        "SELECT x::int, \"a:b\", $$, $1 /* ? */ FROM t WHERE y = $2 -- ?\n");
    annal__pj_stmt_free(&s);
}

static void jget(const char *json, const char *path, annal_proj_kind kind, const char *text,
                 int64_t i) {
    pj_path p;
    char msg[128];
    assert_int_equal(annal__pj_path_parse(path, strlen(path), &p, msg, sizeof msg), 0);
    annal_proj_value v;
    char *scratch = NULL;
    size_t cap = 0;
    assert_int_equal(annal__pj_json_get(json, strlen(json), &p, &v, &scratch, &cap), 0);
    assert_int_equal(v.kind, kind);
    if (kind == ANNAL_PROJ_TEXT) {
        assert_int_equal(v.len, strlen(text));
        assert_memory_equal(v.s, text, v.len);
    }
    if (kind == ANNAL_PROJ_INT) assert_int_equal(v.i, i);
    free(scratch);
    annal__pj_path_free(&p);
}

static void test_json_paths(void **state) {
    (void)state;
    const char *j = "{ \"a\": {\"b\": [1, {\"c\": \"x\\\"y\\u00e9\\ud83d\\ude00\"}, 3]}, "
                    "\"n\": -12, \"f\": 1.5, \"t\": true, \"z\": null, \"o\": {\"k\": [1, 2]} }";
    jget(j, "n", ANNAL_PROJ_INT, NULL, -12);
    jget(j, "t", ANNAL_PROJ_INT, NULL, 1);
    jget(j, "z", ANNAL_PROJ_NULL, NULL, 0);
    jget(j, "missing", ANNAL_PROJ_NULL, NULL, 0);
    jget(j, "a.b[0]", ANNAL_PROJ_INT, NULL, 1);
    jget(j, "a.b[2]", ANNAL_PROJ_INT, NULL, 3);
    jget(j, "a.b[3]", ANNAL_PROJ_NULL, NULL, 0);
    jget(j, "a.b[1].c", ANNAL_PROJ_TEXT, "x\"y\xc3\xa9\xf0\x9f\x98\x80", 0);
    jget(j, "o", ANNAL_PROJ_TEXT, "{\"k\": [1, 2]}", 0);
    jget(j, "n.deeper", ANNAL_PROJ_NULL, NULL, 0);
    pj_path p;
    char msg[128];
    assert_int_equal(annal__pj_path_parse("f", 1, &p, msg, sizeof msg), 0);
    annal_proj_value v;
    char *scratch = NULL;
    size_t cap = 0;
    assert_int_equal(annal__pj_json_get(j, strlen(j), &p, &v, &scratch, &cap), 0);
    assert_int_equal(v.kind, ANNAL_PROJ_REAL);
    assert_true(v.d == 1.5);
    assert_int_equal(annal__pj_json_get("{\"f\": ", 6, &p, &v, &scratch, &cap), -1);
    assert_int_equal(annal__pj_json_get("not json", 8, &p, &v, &scratch, &cap), -1);
    annal__pj_path_free(&p);
    free(scratch);
    assert_int_equal(annal__pj_path_parse("a[", 2, &p, msg, sizeof msg), -1);
    assert_int_equal(annal__pj_path_parse(".a", 2, &p, msg, sizeof msg), -1);
}

/* ---- a projection in C: counts events per stream, fails on a chosen type */

typedef struct cproj {
    const char *fail_type; /* events of this type fail */
    uint64_t applied;
    int emit;
} cproj;

static annal_err c_setup(void *ctx, annal_proj_tx *tx) {
    (void)ctx;
    return annal_proj_exec(tx, "CREATE TABLE counts (stream TEXT PRIMARY KEY, n INTEGER)", NULL, 0,
                           NULL, NULL);
}

static annal_err c_apply(void *ctx, annal_proj_tx *tx, const annal_event *ev) {
    cproj *c = ctx;
    if (c->fail_type && strcmp(ev->type, c->fail_type) == 0) return ANNAL_EINVAL;
    c->applied++;
    if (!tx) return ANNAL_OK; /* memory target */
    annal_proj_value v = {ANNAL_PROJ_TEXT, 0, 0, ev->stream, ev->stream_len};
    annal_err rc = annal_proj_exec(tx,
                                   "INSERT INTO counts (stream, n) VALUES (?, 1) "
                                   "ON CONFLICT (stream) DO UPDATE SET n = n + 1",
                                   &v, 1, NULL, NULL);
    if (rc == ANNAL_OK && c->emit)
        rc = annal_proj_emit(tx, "derived-1", "Seen", ev->stream, ev->stream_len, NULL, 0);
    return rc;
}

static const annal_proj_handler c_handler = {ANNAL_PROJ_HANDLER_VERSION, c_setup, c_apply};

typedef struct count_ctx {
    int64_t n;
} count_ctx;

static int count_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    (void)names;
    count_ctx *c = ctx;
    if (n > 0) c->n = v[0].kind == ANNAL_PROJ_INT ? v[0].i : -1;
    return 0;
}

static int64_t q1(const char *target, const char *sql) {
    count_ctx c = {-99};
    char err[512];
    annal_err rc = annal_proj_query(target, NULL, sql, count_row, &c, err, sizeof err);
    if (rc != ANNAL_OK) print_error("query %s: %s\n", sql, err);
    assert_int_equal(rc, ANNAL_OK);
    return c.n;
}

static annal_proj *open_c(annal_db *db, const char *target, cproj *c, const char *source) {
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = "counts";
    o.source = source;
    o.target = target;
    o.handler = &c_handler;
    o.ctx = c;
    o.batch_events = 3;
    annal_proj *p = NULL;
    char err[512];
    annal_err rc = annal_proj_open(db, &o, &p, err, sizeof err);
    if (rc != ANNAL_OK) print_error("open: %s\n", err);
    assert_int_equal(rc, ANNAL_OK);
    return p;
}

static void test_c_sqlite(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-c");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    for (int i = 0; i < 10; i++) {
        char s[16];
        snprintf(s, sizeof s, "s-%d", i % 3);
        TU_OK(db, tu_append1(db, s, ANNAL_EXPECT_ANY, i == 7 ? "Bad" : "Ok", "{}", NULL));
    }
    char target[512];
    snprintf(target, sizeof target, "sqlite:%s/read.db", dir);
    cproj c = {"Bad", 0, 0};
    annal_proj *p = open_c(db, target, &c, "$all");
    uint64_t n = 0;
    assert_int_equal(annal_proj_step(p, &n), ANNAL_OK); /* batches of 3 */
    assert_int_equal(n, 3);
    assert_int_equal(annal_proj_step(p, &n), ANNAL_OK);
    assert_int_equal(annal_proj_step(p, &n), ANNAL_EBUSY); /* event 7 fails */
    assert_int_equal(n, 1);                                /* event 6 kept */
    annal_proj_status st;
    char err[512];
    assert_int_equal(annal_proj_status_get(target, "counts", &st, err, sizeof err), ANNAL_OK);
    assert_int_equal(st.state, ANNAL_PROJ_FAILED);
    assert_int_equal(st.position, 7);
    assert_int_equal(st.error_position, 7);
    assert_non_null(strstr(st.error_event, "s-1@2 Bad "));
    assert_int_equal(q1(target, "SELECT sum(n) FROM counts"), 7);
    assert_int_equal(annal_proj_wait(target, "counts", 8, 10, err, sizeof err), ANNAL_EBUSY);
    /* retry: fails again; skip: goes on */
    assert_int_equal(annal_proj_control(target, "counts", ANNAL_PROJ_SKIP, err, sizeof err),
                     ANNAL_OK);
    assert_int_equal(annal_proj_control(target, "counts", ANNAL_PROJ_RETRY, err, sizeof err),
                     ANNAL_EINVAL); /* not failed any more */
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    assert_int_equal(q1(target, "SELECT sum(n) FROM counts"), 9);
    assert_int_equal(annal_proj_wait(target, "counts", 9, 0, err, sizeof err), ANNAL_OK);
    assert_int_equal(annal_proj_wait(target, "counts", 10, 10, err, sizeof err), ANNAL_ETIMEDOUT);
    assert_int_equal(annal_proj_step(p, &n), ANNAL_END);
    /* pause: nothing applied until resumed */
    assert_int_equal(annal_proj_control(target, "counts", ANNAL_PROJ_PAUSE, err, sizeof err),
                     ANNAL_OK);
    TU_OK(db, tu_append1(db, "s-9", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    assert_int_equal(annal_proj_step(p, &n), ANNAL_EBUSY);
    assert_int_equal(annal_proj_control(target, "counts", ANNAL_PROJ_RESUME, err, sizeof err),
                     ANNAL_OK);
    assert_int_equal(annal_proj_step(p, &n), ANNAL_OK);
    annal_proj_close(p);
    /* reopened: goes on from the checkpoint, does not apply anything twice */
    c.applied = 0;
    p = open_c(db, target, &c, "$all");
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    assert_int_equal(c.applied, 0);
    assert_int_equal(q1(target, "SELECT sum(n) FROM counts"), 10);
    annal_proj_close(p);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void test_c_stream_source_and_emit(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-emit");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    for (int i = 0; i < 5; i++)
        TU_OK(db, tu_append1(db, "src-1", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    TU_OK(db, tu_append1(db, "other-1", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    char t1[512], t2[512];
    snprintf(t1, sizeof t1, "sqlite:%s/a.db", dir);
    snprintf(t2, sizeof t2, "sqlite:%s/b.db", dir);
    cproj c = {NULL, 0, 1};
    annal_proj *p = open_c(db, t1, &c, "src-1");
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    annal_proj_close(p);
    assert_int_equal(c.applied, 5);
    uint64_t head;
    TU_OK(db, annal_stream_head(db, "derived-1", &head));
    assert_int_equal(head, 4);
    /* a second model of the same projection (a rebuild) emits the same ids: no new events */
    p = open_c(db, t2, &c, "src-1");
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    annal_proj_close(p);
    TU_OK(db, annal_stream_head(db, "derived-1", &head));
    assert_int_equal(head, 4);
    annal_proj_status st;
    char err[256];
    assert_int_equal(annal_proj_status_get(t2, "counts", &st, err, sizeof err), ANNAL_OK);
    assert_int_equal(st.revision, 5);
    assert_int_equal(st.events, 5);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void test_memory(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-mem");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    annal_event_data ev[100];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 100; i++) ev[i].type = "T";
    for (int k = 0; k < 10; k++) {
        for (int i = 0; i < 100; i++) memset(&ev[i].id, 0, sizeof ev[i].id); /* new ids */
        TU_OK(db, annal_append(db, "m-1", ANNAL_EXPECT_ANY, ev, 100, NULL));
    }
    cproj c = {NULL, 0, 0};
    annal_proj *p = open_c(db, "memory", &c, "$ce-m");
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    assert_int_equal(c.applied, 1000);
    assert_int_equal(annal_proj_step(p, NULL), ANNAL_END);
    annal_proj_close(p);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void test_lua(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-lua");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{\"c\": 5}", NULL));
    TU_OK(db, tu_append1(db, "acc-1", ANNAL_EXPECT_ANY, "Dep", "{\"c\": 7}", NULL));
    TU_OK(db, tu_append1(db, "acc-2", ANNAL_EXPECT_ANY, "Dep", "{\"c\": 1}", NULL));
    TU_OK(db, tu_append1(db, "acc-2", ANNAL_EXPECT_ANY, "Oops", "{}", NULL));
    const char *text =
        "source $ce-acc\n"
        "[schema]\nCREATE TABLE bal (id TEXT PRIMARY KEY, v INTEGER, big INTEGER);\n"
        "[on Dep]\n"
        "INSERT INTO bal VALUES (:stream_id, :v.total, :v.big)\n"
        "ON CONFLICT (id) DO UPDATE SET v = excluded.v, big = excluded.big\n"
        "[lua]\n"
        "function on.Dep(e)\n"
        "  local s = state_get(e.stream_id) or { total = 0 }\n"
        "  s.total = s.total + e.data.c\n"
        "  state_set(e.stream_id, s)\n"
        "  local r = sql('SELECT count(*) AS n FROM bal WHERE id = ?', e.stream_id)\n"
        "  assert(r[1].n <= 1)\n"
        "  return { total = s.total, big = s.total > 6 }\n"
        "end\n"
        "function on.Oops(e)\n"
        "  error('cannot handle ' .. e.type .. ' of ' .. e.stream)\n"
        "end\n";
    annal_proj_def *d = parse_ok(text);
    char target[512], err[1024];
    snprintf(target, sizeof target, "sqlite:%s/l.db", dir);
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = "lua";
    o.def = d;
    o.target = target;
    annal_proj *p = NULL;
    assert_int_equal(annal_proj_open(db, &o, &p, err, sizeof err), ANNAL_OK);
    assert_int_equal(annal_proj_run(p, 1), ANNAL_EBUSY);
    assert_non_null(strstr(annal_proj_errmsg(p), "t.proj:17: cannot handle Oops of acc-2"));
    assert_int_equal(q1(target, "SELECT v FROM bal WHERE id = '1'"), 12);
    assert_int_equal(q1(target, "SELECT big FROM bal WHERE id = '1'"), 1);
    assert_int_equal(q1(target, "SELECT big FROM bal WHERE id = '2'"), 0);
    annal_proj_status st;
    assert_int_equal(annal_proj_status_get(target, "lua", &st, err, sizeof err), ANNAL_OK);
    assert_int_equal(st.state, ANNAL_PROJ_FAILED);
    assert_int_equal(st.error_position, 3);
    annal_proj_close(p);
    annal_proj_def_free(d);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- exactly once across a crash between the read model's changes and the checkpoint */

typedef struct fault_at {
    int n;    /* checkpoints seen */
    int fail; /* fail the fail-th one (1-based) */
} fault_at;

static int fail_nth(void *ctx, const char *where) {
    fault_at *f = ctx;
    return strcmp(where, "checkpoint") == 0 && ++f->n == f->fail;
}

static void test_checkpoint_with_changes(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-fault");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    for (int i = 0; i < 10; i++)
        TU_OK(db, tu_append1(db, "s-1", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    char target[512];
    snprintf(target, sizeof target, "sqlite:%s/f.db", dir);
    for (int fail = 1; fail <= 4; fail++) {
        char drop[64];
        annal_proj_control(target, "counts", ANNAL_PROJ_FORGET, drop, sizeof drop);
        annal_proj_query(target, NULL, "DROP TABLE IF EXISTS counts", NULL, NULL, drop,
                         sizeof drop);
        cproj c = {NULL, 0, 0};
        annal_proj *p = open_c(db, target, &c, "$all"); /* batches of 3 */
        fault_at f = {0, fail};
        annal__pj_set_fault(p, fail_nth, &f);
        assert_int_equal(annal_proj_run(p, 1), ANNAL_EIO); /* the "crash" */
        annal_proj_close(p);
        /* restart: goes on from the last checkpoint; every event applied exactly once */
        p = open_c(db, target, &c, "$all");
        assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
        annal_proj_close(p);
        assert_int_equal(q1(target, "SELECT sum(n) FROM counts"), 10);
        annal_proj_status st;
        char err[256];
        assert_int_equal(annal_proj_status_get(target, "counts", &st, err, sizeof err), ANNAL_OK);
        assert_int_equal(st.events, 10);
        assert_int_equal(st.position, 10);
    }
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- liveness: status says running only while a live projector holds the projection */

static void sql_on(const char *dir, const char *sql) {
    char path[512];
    snprintf(path, sizeof path, "%s/live.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) print_error("%s: %s\n", sql, msg);
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_close(db);
}

static annal_proj_state state_now(const char *target, annal_proj_status *st) {
    char err[512];
    assert_int_equal(annal_proj_status_get(target, "counts", st, err, sizeof err), ANNAL_OK);
    return st->state;
}

static void test_liveness(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-live");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "s-1", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    char target[512];
    snprintf(target, sizeof target, "sqlite:%s/live.db", dir);
    cproj c = {NULL, 0, 0};
    annal_proj_status st;
    annal_proj *p = open_c(db, target, &c, "$all");
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_RUNNING);
    assert_int_equal(st.projector_pid, getpid());
    assert_true(st.projector_host[0] != '\0');
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    assert_true(now_ns - st.heartbeat_ns < 5000000000LL);
    assert_int_equal(annal_proj_run(p, 1), ANNAL_OK);
    annal_proj_close(p); /* a clean close: stopped at once */
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_STOPPED);
    assert_int_equal(st.projector_pid, 0);

    p = open_c(db, target, &c, "$all");
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_RUNNING);
    /* the recorded projector's process is gone (killed): stopped, its pid still shown */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE annal_projectors SET pid = %d", (int)child);
    sql_on(dir, sql);
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_STOPPED);
    assert_int_equal(st.projector_pid, child);
    /* on another host only the heartbeat tells: fresh is running, stale is stopped */
    sql_on(dir, "UPDATE annal_projectors SET host = 'elsewhere.example'");
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_RUNNING);
    snprintf(sql, sizeof sql, "UPDATE annal_projectors SET heartbeat_ns = %lld",
             (long long)(now_ns - (int64_t)(ANNAL_PROJ_HEARTBEAT_STALE_MS + 1000) * 1000000));
    sql_on(dir, sql);
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_STOPPED);
    /* a live projector beats again within a second or so, even with nothing to apply */
    usleep(1100 * 1000);
    assert_int_equal(annal_proj_step(p, NULL), ANNAL_END);
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_RUNNING);
    assert_int_equal(st.projector_pid, getpid());
    /* paused and failed are the operator's business: shown with or without a projector */
    char err[256];
    assert_int_equal(annal_proj_control(target, "counts", ANNAL_PROJ_PAUSE, err, sizeof err),
                     ANNAL_OK);
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_PAUSED);
    annal_proj_close(p);
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_PAUSED);
    assert_string_equal(annal_proj_state_name(ANNAL_PROJ_RUNNING), "running");
    assert_string_equal(annal_proj_state_name(ANNAL_PROJ_STOPPED), "stopped");
    assert_string_equal(annal_proj_state_name(ANNAL_PROJ_PAUSED), "paused");
    assert_string_equal(annal_proj_state_name(ANNAL_PROJ_FAILED), "failed");
    assert_string_equal(annal_proj_state_name(ANNAL_PROJ_REPLACED), "replaced");
    assert_string_equal(annal_proj_state_name((annal_proj_state)99), "unknown");
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* ---- exclusive opens: one projector per projection (what annal serve and projection run
 * use). The live-projector record decides: another live process refuses the open; a dead
 * one, a stale heartbeat or this process itself does not. */
static annal_err open_excl(annal_db *db, const char *target, cproj *c, annal_proj **p, char *err,
                           size_t n) {
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = "counts";
    o.source = "$all";
    o.target = target;
    o.handler = &c_handler;
    o.ctx = c;
    o.exclusive = 1;
    *p = NULL;
    return annal_proj_open(db, &o, p, err, n);
}

static void test_exclusive(void **state) {
    (void)state;
    char *dir = tu_tmpdir("proj-excl");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, tu_append1(db, "s-1", ANNAL_EXPECT_ANY, "Ok", "{}", NULL));
    char target[512], sql[256], err[512];
    snprintf(target, sizeof target, "sqlite:%s/live.db", dir);
    cproj c = {NULL, 0, 0};
    annal_proj *p, *q;
    assert_int_equal(open_excl(db, target, &c, &p, err, sizeof err), ANNAL_OK);
    /* this process holds it: a second exclusive handle here is let in (same pid) */
    assert_int_equal(open_excl(db, target, &c, &q, err, sizeof err), ANNAL_OK);
    annal_proj_close(q);
    annal_proj_close(p);
    /* another live process on this host (our parent) holds it: refused, named */
    assert_int_equal(open_excl(db, target, &c, &p, err, sizeof err), ANNAL_OK);
    snprintf(sql, sizeof sql, "UPDATE annal_projectors SET pid = %d", (int)getppid());
    sql_on(dir, sql);
    assert_int_equal(open_excl(db, target, &c, &q, err, sizeof err), ANNAL_EBUSY);
    assert_null(q);
    char want[64];
    snprintf(want, sizeof want, "already run by process %d on ", (int)getppid());
    if (!strstr(err, want)) print_error("refusal: %s\n", err);
    assert_non_null(strstr(err, want));
    /* a plain (not exclusive) open is still let in, as before */
    q = open_c(db, target, &c, "$all");
    annal_proj_close(q);
    annal_proj_close(p);
    /* that process is gone (killed): taken over */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    sql_on(dir, "DELETE FROM annal_projectors");
    assert_int_equal(open_excl(db, target, &c, &p, err, sizeof err), ANNAL_OK);
    snprintf(sql, sizeof sql, "UPDATE annal_projectors SET pid = %d", (int)child);
    sql_on(dir, sql);
    assert_int_equal(open_excl(db, target, &c, &q, err, sizeof err), ANNAL_OK);
    annal_proj_status st;
    assert_int_equal(state_now(target, &st), ANNAL_PROJ_RUNNING);
    assert_int_equal(st.projector_pid, getpid()); /* the claim wrote this process */
    annal_proj_close(q);
    /* another host: a fresh heartbeat refuses, a stale one does not */
    snprintf(
        sql, sizeof sql,
        "INSERT OR REPLACE INTO annal_projectors VALUES ('counts', 1, 'elsewhere.example', %lld)",
        (long long)st.heartbeat_ns);
    sql_on(dir, sql);
    assert_int_equal(open_excl(db, target, &c, &q, err, sizeof err), ANNAL_EBUSY);
    snprintf(
        sql, sizeof sql, "UPDATE annal_projectors SET heartbeat_ns = %lld",
        (long long)(st.heartbeat_ns - (int64_t)(ANNAL_PROJ_HEARTBEAT_STALE_MS + 1000) * 1000000));
    sql_on(dir, sql);
    assert_int_equal(open_excl(db, target, &c, &q, err, sizeof err), ANNAL_OK);
    annal_proj_close(q);
    annal_proj_close(p);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_translate),
        cmocka_unit_test(test_json_paths),
        cmocka_unit_test(test_c_sqlite),
        cmocka_unit_test(test_c_stream_source_and_emit),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_lua),
        cmocka_unit_test(test_liveness),
        cmocka_unit_test(test_exclusive),
        cmocka_unit_test(test_checkpoint_with_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
