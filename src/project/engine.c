/*
 * engine.c -- running a projection: read the source from the checkpoint, apply a batch of
 * events to the target in one transaction together with the new checkpoint, repeat. The
 * state row (annal_projections) is also how operators reach a running projector: it is
 * read at the start of every batch, under the batch's write lock.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "project_int.h"

int annal__pj_name_ok(const char *s);

#define DEFAULT_BATCH 500

static const char state_ddl[] = "CREATE TABLE IF NOT EXISTS annal_projections ("
                                " name TEXT PRIMARY KEY,"
                                " source TEXT NOT NULL,"
                                " position BIGINT NOT NULL DEFAULT 0,"
                                " revision BIGINT NOT NULL DEFAULT 0,"
                                " events BIGINT NOT NULL DEFAULT 0,"
                                " last_event_ns BIGINT NOT NULL DEFAULT 0,"
                                " updated_ns BIGINT NOT NULL DEFAULT 0,"
                                " rate DOUBLE PRECISION NOT NULL DEFAULT 0,"
                                " status TEXT NOT NULL DEFAULT 'running',"
                                " error TEXT, error_position BIGINT, error_event TEXT);"
                                "CREATE TABLE IF NOT EXISTS annal_state ("
                                " projection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                                " PRIMARY KEY (projection, key));"
                                "CREATE TABLE IF NOT EXISTS annal_skipped ("
                                " projection TEXT NOT NULL, position BIGINT NOT NULL, event TEXT,"
                                " PRIMARY KEY (projection, position));"
                                "CREATE TABLE IF NOT EXISTS annal_projectors ("
                                " name TEXT PRIMARY KEY, pid BIGINT NOT NULL, host TEXT NOT NULL,"
                                " heartbeat_ns BIGINT NOT NULL)";
/* Events an operator skipped stay skipped: a rebuild copies this list into its shadow. */
static const char sql_skips[] = "SELECT position FROM annal_skipped WHERE projection = ? "
                                "ORDER BY position";
static const char sql_skip_add[] =
    "INSERT INTO annal_skipped (projection, position, event) VALUES (?, ?, ?) "
    "ON CONFLICT (projection, position) DO NOTHING";

/* In PostgreSQL the batch's first statement locks the row, which is what serialises a
 * projector with operators and with a rebuild's switch-over (SQLite: BEGIN IMMEDIATE). */
static const char sql_get_lite[] =
    "SELECT position, revision, events, last_event_ns, status FROM annal_projections "
    "WHERE name = ?1";
static const char sql_get_pg[] =
    "SELECT position, revision, events, last_event_ns, status FROM annal_projections "
    "WHERE name = $1 FOR UPDATE";
static const char sql_put[] =
    "UPDATE annal_projections SET position = ?, revision = ?, events = ?, "
    "last_event_ns = ?, updated_ns = ?, rate = ? WHERE name = ?";
static const char sql_fail[] = "UPDATE annal_projections SET status = 'failed', error = ?, "
                               "error_position = ?, error_event = ?, updated_ns = ? WHERE name = ?";
static const char sql_new[] =
    "INSERT INTO annal_projections (name, source, updated_ns) VALUES (?, ?, ?)";
static const char sql_state_get[] =
    "SELECT value FROM annal_state WHERE projection = ? AND key = ?";
/* Liveness: a table of its own (not columns of annal_projections), so that targets made
 * before it need no migration and a heartbeat never waits on a batch's row lock. */
static const char sql_hb[] =
    "INSERT INTO annal_projectors (name, pid, host, heartbeat_ns) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
    "heartbeat_ns = excluded.heartbeat_ns";
static const char sql_hb_del[] =
    "DELETE FROM annal_projectors WHERE name = ? AND pid = ? AND host = ?";
#define HB_EVERY_NS 1000000000LL
static const char sql_state_put[] =
    "INSERT INTO annal_state (projection, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (projection, key) DO UPDATE SET value = excluded.value";

struct annal_proj_tx {
    annal_proj *p;
    const annal_event *ev;
    unsigned emits; /* emits made for ev: part of the derived event id */
};

typedef struct ev_ctx { /* per-event values, made lazily */
    const annal_event *ev;
    char ts[64], date[48], id[37];
    int have_ts, have_id;
} ev_ctx;

struct annal_proj {
    annal_db *db;
    char name[PJ_NAME_MAX + 1];
    char *source, *target, *schema;
    pj_tkind kind;
    pj_target *t;
    const annal_proj_def *def;
    annal_proj_handler handler;
    int has_handler;
    void *ctx;
    pj_lua *lua;
    uint32_t batch;
    uint32_t lua_budget_ms;
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;
    pj_prep ***preps; /* per def handler, per statement */
    /* the checkpoint, as last read or written */
    uint64_t position, revision, events;
    int64_t last_ns;
    char status[16];
    int new_target; /* the state row was created by this open */
    int64_t hb_ns;  /* when this handle last wrote its heartbeat; 0: not since connecting */
    /* events/s over windows of at least a second */
    double rate;
    struct timespec rate_t0;
    uint64_t rate_ev0;
    /* scratch for parameters */
    annal_proj_value *vals;
    size_t nvals;
    char **scratch;
    size_t *scratch_cap;
    size_t nscratch;
    uint64_t *skips; /* positions an operator skipped, ascending */
    size_t nskips;
    char err[1024];
    atomic_int cancel;
    /* Tests only (annal__pj_set_fault): non-zero from fault() fails the step there, as a
     * crash at that point would, to reach windows no kill lands in reliably. */
    int (*fault)(void *ctx, const char *where);
    void *fault_ctx;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double mono_s(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void plog(annal_proj *p, annal_log_level lv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void plog(annal_proj *p, annal_log_level lv, const char *fmt, ...) {
    if (!p->log) return;
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->log(p->log_ctx, lv, msg);
}

void annal_proj_opts_init(annal_proj_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch_events = DEFAULT_BATCH;
    o->lua_budget_ms = ANNAL_PROJ_LUA_BUDGET_MS;
}

const char *annal_proj_errmsg(const annal_proj *p) { return p ? p->err : "no projection"; }

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* ---------------------------------------------------------------- values */

static const annal_proj_value V_NULL = {ANNAL_PROJ_NULL, 0, 0, NULL, 0};

static annal_proj_value v_int(int64_t i) {
    annal_proj_value v = V_NULL;
    v.kind = ANNAL_PROJ_INT;
    v.i = i;
    return v;
}

static annal_proj_value v_text(const char *s, size_t n) {
    annal_proj_value v = V_NULL;
    v.kind = ANNAL_PROJ_TEXT;
    v.s = s;
    v.len = n;
    return v;
}

static annal_proj_value v_str(const char *s) { return s ? v_text(s, strlen(s)) : V_NULL; }

/* ---------------------------------------------------------------- target access */

static annal_err tgt_fail(annal_proj *p, annal_err rc, const char *what) {
    annal__pj_fmt(p->err, sizeof p->err, "%s: %s", what, annal__pj_target_errmsg(p->t));
    return rc;
}

typedef struct row_state {
    annal_proj *p;
    int found;
    char status[16];
} row_state;

static int get_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    row_state *r = ctx;
    (void)names;
    if (n < 5) return 1;
    r->found = 1;
    r->p->position = (uint64_t)v[0].i;
    r->p->revision = (uint64_t)v[1].i;
    r->p->events = (uint64_t)v[2].i;
    r->p->last_ns = v[3].i;
    annal__pj_fmt(r->status, sizeof r->status, "%.*s", (int)v[4].len, v[4].s ? v[4].s : "");
    return 0;
}

static annal_err state_read(annal_proj *p, int *found) {
    row_state r = {p, 0, ""};
    annal_proj_value nm = v_str(p->name);
    annal_err rc = annal__pj_target_exec(p->t, p->kind == PJ_T_PG ? sql_get_pg : sql_get_lite, &nm,
                                         1, get_row, &r);
    if (rc != ANNAL_OK) return tgt_fail(p, rc, "reading the checkpoint");
    *found = r.found;
    if (r.found) memcpy(p->status, r.status, sizeof p->status);
    return ANNAL_OK;
}

/* Prepare sql written with '?' for the target's dialect. */
static annal_err prep_q(annal_proj *p, const char *sql, pj_prep **out) {
    pj_stmt st;
    char msg[256];
    int line = 0;
    if (annal__pj_sql_translate(sql, strlen(sql), 1, 0, &st, msg, sizeof msg, &line) != 0) {
        annal__pj_fmt(p->err, sizeof p->err, "%s", msg);
        return ANNAL_ENOMEM;
    }
    annal_err rc = annal__pj_target_prepare(p->t, p->kind == PJ_T_PG ? st.sql_pg : st.sql_sqlite,
                                            (int)st.nparams, out);
    annal__pj_stmt_free(&st);
    if (rc != ANNAL_OK) return tgt_fail(p, rc, "preparing");
    return ANNAL_OK;
}

static annal_err exec_q(annal_proj *p, const char *sql, const annal_proj_value *v, int n,
                        annal_proj_row_fn rows, void *ctx) {
    pj_prep *pp;
    annal_err rc = prep_q(p, sql, &pp);
    if (rc != ANNAL_OK) return rc;
    rc = annal__pj_target_run(p->t, pp, v, n, rows, ctx);
    if (rc != ANNAL_OK && rc != ANNAL_ECANCELED) return tgt_fail(p, rc, "SQL");
    return rc;
}

void annal__pj_set_fault(annal_proj *p, int (*fault)(void *ctx, const char *where), void *ctx) {
    p->fault = fault;
    p->fault_ctx = ctx;
}

static annal_err state_write(annal_proj *p) {
    if (p->fault && p->fault(p->fault_ctx, "checkpoint")) {
        annal__pj_fmt(p->err, sizeof p->err, "fault injected before the checkpoint");
        return ANNAL_EIO;
    }
    annal_proj_value v[7] = {v_int((int64_t)p->position),
                             v_int((int64_t)p->revision),
                             v_int((int64_t)p->events),
                             v_int(p->last_ns),
                             v_int(now_ns()),
                             V_NULL,
                             v_str(p->name)};
    v[5].kind = ANNAL_PROJ_REAL;
    v[5].d = p->rate;
    return exec_q(p, sql_put, v, 7, NULL, NULL);
}

/* ---------------------------------------------------------------- opening */

static annal_err prepare_def(annal_proj *p) {
    const annal_proj_def *d = p->def;
    p->preps = calloc(d->nhandlers ? d->nhandlers : 1, sizeof *p->preps);
    if (!p->preps) return ANNAL_ENOMEM;
    size_t maxp = 8;
    for (size_t i = 0; i < d->nhandlers; i++) {
        const pj_handler *h = &d->handlers[i];
        p->preps[i] = calloc(h->nstmts ? h->nstmts : 1, sizeof **p->preps);
        if (!p->preps[i]) return ANNAL_ENOMEM;
        for (size_t j = 0; j < h->nstmts; j++) {
            const pj_stmt *s = &h->stmts[j];
            if (s->nparams > maxp) maxp = s->nparams;
            annal_err rc =
                annal__pj_target_prepare(p->t, p->kind == PJ_T_PG ? s->sql_pg : s->sql_sqlite,
                                         (int)s->nparams, &p->preps[i][j]);
            if (rc != ANNAL_OK) {
                annal__pj_fmt(p->err, sizeof p->err, "%s:%d: [on %s]: %s", d->filename, s->line,
                              h->type, annal__pj_target_errmsg(p->t));
                return rc;
            }
        }
    }
    p->nvals = maxp;
    p->vals = calloc(maxp, sizeof *p->vals);
    p->scratch = calloc(maxp, sizeof *p->scratch);
    p->scratch_cap = calloc(maxp, sizeof *p->scratch_cap);
    p->nscratch = maxp;
    if (!p->vals || !p->scratch || !p->scratch_cap) return ANNAL_ENOMEM;
    return ANNAL_OK;
}

static int skip_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    annal_proj *p = ctx;
    (void)names;
    if (n < 1) return 0;
    uint64_t *q = realloc(p->skips, (p->nskips + 1) * sizeof *q);
    if (!q) return 1;
    p->skips = q;
    p->skips[p->nskips++] = (uint64_t)v[0].i;
    return 0;
}

static annal_err load_skips(annal_proj *p) {
    free(p->skips);
    p->skips = NULL;
    p->nskips = 0;
    annal_proj_value nm = v_str(p->name);
    annal_err rc = exec_q(p, sql_skips, &nm, 1, skip_row, p);
    return rc == ANNAL_ECANCELED ? ANNAL_ENOMEM : rc;
}

static int skipped(const annal_proj *p, uint64_t pos) {
    size_t lo = 0, hi = p->nskips;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->skips[mid] == pos) return 1;
        if (p->skips[mid] < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Record skipped positions in p's target (its own transaction) and in p. */
annal_err annal__pj_add_skips(annal_proj *p, const uint64_t *pos, size_t n);
annal_err annal__pj_add_skips(annal_proj *p, const uint64_t *pos, size_t n) {
    if (!n) return ANNAL_OK;
    annal_err rc = annal__pj_target_begin(p->t);
    for (size_t i = 0; i < n && rc == ANNAL_OK; i++) {
        annal_proj_value v[3] = {v_str(p->name), v_int((int64_t)pos[i]), V_NULL};
        rc = exec_q(p, sql_skip_add, v, 3, NULL, NULL);
    }
    if (rc == ANNAL_OK) rc = load_skips(p);
    if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
    if (rc != ANNAL_OK) annal__pj_target_rollback(p->t);
    return rc;
}

/* The skipped positions recorded in target for name (caller frees *out). */
annal_err annal__pj_read_skips(pj_target *t, const char *name, uint64_t **out, size_t *n);
typedef struct skips_ctx {
    uint64_t *v;
    size_t n;
} skips_ctx;
static int skips_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    skips_ctx *c = ctx;
    (void)names;
    if (n < 1) return 0;
    uint64_t *q = realloc(c->v, (c->n + 1) * sizeof *q);
    if (!q) return 1;
    c->v = q;
    c->v[c->n++] = (uint64_t)v[0].i;
    return 0;
}
annal_err annal__pj_read_skips(pj_target *t, const char *name, uint64_t **out, size_t *n) {
    skips_ctx c = {NULL, 0};
    annal_proj_value nm = v_str(name);
    annal_err rc = annal__pj_target_exec(
        t,
        annal__pj_target_kindof(t) == PJ_T_PG
            ? "SELECT position FROM annal_skipped WHERE projection = $1 ORDER BY position"
            : "SELECT position FROM annal_skipped WHERE projection = ?1 ORDER BY position",
        &nm, 1, skips_row, &c);
    if (rc == ANNAL_ECANCELED) rc = ANNAL_ENOMEM;
    if (rc != ANNAL_OK) {
        free(c.v);
        c.v = NULL;
        c.n = 0;
        /* a model without the table (older, or never skipped): nothing skipped */
        rc = rc == ANNAL_ENOMEM ? rc : ANNAL_OK;
    }
    *out = c.v;
    *n = c.n;
    return rc;
}

/* Connect, make the state tables and row (and the read model for a new row). */
static annal_err connect_target(annal_proj *p, int create) {
    annal_err rc = annal__pj_target_open(p->target, p->schema, &p->t, p->err, sizeof p->err);
    if (rc != ANNAL_OK) return rc;
    rc = annal__pj_target_begin(p->t);
    if (rc != ANNAL_OK) return tgt_fail(p, rc, "starting a transaction");
    rc = annal__pj_target_script(p->t, state_ddl);
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        return tgt_fail(p, rc, "creating the state table");
    }
    int found = 0;
    rc = state_read(p, &found);
    if (rc == ANNAL_OK && !found && !create) {
        /* Reconnecting after the row vanished (removed, or a rebuild failed half-way):
         * starting over on tables that hold the old effects would apply them twice. */
        annal__pj_fmt(p->err, sizeof p->err, "projection %s: its state row is gone", p->name);
        rc = ANNAL_ENOTFOUND;
    }
    if (rc == ANNAL_OK && !found) {
        annal_proj_value v[3] = {v_str(p->name), v_str(p->source), v_int(now_ns())};
        rc = exec_q(p, sql_new, v, 3, NULL, NULL);
        if (rc == ANNAL_OK && p->def && p->def->schema) {
            rc = annal__pj_target_script(p->t, p->def->schema);
            if (rc != ANNAL_OK) {
                annal__pj_fmt(p->err, sizeof p->err, "%s:%d: [schema]: %s", p->def->filename,
                              p->def->schema_line, annal__pj_target_errmsg(p->t));
            }
        }
        if (rc == ANNAL_OK && p->has_handler && p->handler.setup) {
            annal_proj_tx tx = {p, NULL, 0};
            rc = p->handler.setup(p->ctx, &tx);
            if (rc != ANNAL_OK && !p->err[0])
                annal__pj_fmt(p->err, sizeof p->err, "setup failed: %s", annal_strerror(rc));
        }
        if (rc == ANNAL_OK) {
            memcpy(p->status, "running", 8);
            p->position = p->revision = p->events = 0;
            p->last_ns = 0;
            p->new_target = 1;
        }
    }
    if (rc == ANNAL_OK) rc = load_skips(p);
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        return rc;
    }
    rc = annal__pj_target_commit(p->t);
    if (rc != ANNAL_OK) return tgt_fail(p, rc, "committing");
    p->hb_ns = 0; /* a new connection (or model, after a rebuild): beat at the next step */
    if (p->def) rc = prepare_def(p);
    return rc;
}

static void host_name(char *out, size_t n) {
    if (gethostname(out, n) != 0) out[0] = '\0';
    out[n - 1] = '\0';
}

/* Say this process holds the projection: in a transaction of its own, at most once a
 * second (force: now). A failure is left to the batch that follows, which meets it too. */
static void heartbeat(annal_proj *p, int force) {
    int64_t now = now_ns();
    if (!p->t || (!force && p->hb_ns && now - p->hb_ns < HB_EVERY_NS)) return;
    char host[64];
    host_name(host, sizeof host);
    annal_err rc = annal__pj_target_begin(p->t);
    if (rc == ANNAL_OK) {
        annal_proj_value v[4] = {v_str(p->name), v_int((int64_t)getpid()), v_str(host), v_int(now)};
        rc = exec_q(p, sql_hb, v, 4, NULL, NULL);
    }
    if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        p->err[0] = '\0';
        return;
    }
    p->hb_ns = now;
}

static int projector_row(void *ctx, int n, const char *const *names, const annal_proj_value *v);
static int projector_live(const annal_proj_status *s);
static const char sql_hb_get[] =
    "SELECT pid, host, heartbeat_ns FROM annal_projectors WHERE name = ?";

/* For an exclusive open: hold the projection unless another live projector does. The
 * check and the first heartbeat share a transaction (SQLite: BEGIN IMMEDIATE, PostgreSQL:
 * the row's lock), so of two projectors starting together one gets it. */
static annal_err claim(annal_proj *p, char *err, size_t err_size) {
    char host[64];
    host_name(host, sizeof host);
    annal_proj_status s;
    memset(&s, 0, sizeof s);
    annal_proj_value nm = v_str(p->name);
    annal_err rc = annal__pj_target_begin(p->t);
    if (rc == ANNAL_OK) rc = exec_q(p, sql_hb_get, &nm, 1, projector_row, &s);
    if (rc == ANNAL_ECANCELED) rc = ANNAL_OK; /* the row callback stops after one row */
    if (rc == ANNAL_OK && projector_live(&s) &&
        (s.projector_pid != (int64_t)getpid() || strcmp(s.projector_host, host) != 0)) {
        annal__pj_target_rollback(p->t);
        annal__pj_fmt(err, err_size,
                      "projection %s is already run by process %lld on %s: one projector per "
                      "projection",
                      p->name, (long long)s.projector_pid, s.projector_host);
        return ANNAL_EBUSY;
    }
    int64_t now = now_ns();
    if (rc == ANNAL_OK) {
        annal_proj_value v[4] = {nm, v_int((int64_t)getpid()), v_str(host), v_int(now)};
        rc = exec_q(p, sql_hb, v, 4, NULL, NULL);
    }
    if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        annal__pj_fmt(err, err_size, "projection %s: %s", p->name, p->err);
        return rc;
    }
    p->hb_ns = now;
    return ANNAL_OK;
}

/* A clean close says at once that nobody holds the projection any more. */
static void heartbeat_clear(annal_proj *p) {
    if (!p->t || !p->hb_ns) return;
    char host[64];
    host_name(host, sizeof host);
    annal_proj_value v[3] = {v_str(p->name), v_int((int64_t)getpid()), v_str(host)};
    (void)exec_q(p, sql_hb_del, v, 3, NULL, NULL);
    p->hb_ns = 0;
}

static void disconnect(annal_proj *p) {
    if (p->preps && p->def)
        for (size_t i = 0; i < p->def->nhandlers; i++) free(p->preps[i]);
    free(p->preps);
    p->preps = NULL;
    free(p->vals);
    p->vals = NULL;
    if (p->scratch)
        for (size_t i = 0; i < p->nscratch; i++) free(p->scratch[i]);
    free(p->scratch);
    free(p->scratch_cap);
    p->scratch = NULL;
    p->scratch_cap = NULL;
    annal__pj_target_close(p->t);
    p->t = NULL;
}

/* The services Lua's sql(), emit() and state_*() call back into (defined below). */
static annal_err tx_exec_native(annal_proj_tx *tx, const char *sql, const annal_proj_value *params,
                                int n, annal_proj_row_fn rows, void *ctx);
static pj_tkind tx_kind(annal_proj_tx *tx);
static const char *tx_errmsg(annal_proj_tx *tx);
static annal_err state_get(annal_proj_tx *tx, const char *key, char **json);
static annal_err state_set(annal_proj_tx *tx, const char *key, const char *json);
static int pj_canceled(const annal_proj *p);
static const pj_lua_host lua_host = {tx_exec_native, tx_kind,   tx_errmsg,  annal_proj_emit,
                                     state_get,      state_set, pj_canceled};

annal_err annal__pj_open_schema(annal_db *db, const annal_proj_opts *o, const char *schema,
                                annal_proj **out, char *err, size_t err_size);
annal_err annal__pj_open_schema(annal_db *db, const annal_proj_opts *o, const char *schema,
                                annal_proj **out, char *err, size_t err_size) {
    *out = NULL;
    annal__pj_fmt(err, err_size, "%s", "");
    const annal_proj_def *d = o ? o->def : NULL;
    const char *name = o && o->name ? o->name : d ? d->name : NULL;
    const char *source = o && o->source ? o->source : d ? d->source : NULL;
    const char *target = o && o->target ? o->target : d ? d->target : NULL;
    if (!db || !o || (!d && !o->handler)) {
        annal__pj_fmt(err, err_size, "a projection needs a store and a file or a C handler");
        return ANNAL_EINVAL;
    }
    if (!name || !annal__pj_name_ok(name)) {
        annal__pj_fmt(err, err_size, "bad projection name '%s': 1..63 of A-Z a-z 0-9 _ - .",
                      name ? name : "(none)");
        return ANNAL_EINVAL;
    }
    if (!source || !*source) {
        annal__pj_fmt(err, err_size, "projection %s has no source", name);
        return ANNAL_EINVAL;
    }
    pj_tkind kind;
    const char *rest;
    if (annal__pj_target_kind(target, &kind, &rest) != 0) {
        annal__pj_fmt(err, err_size, "projection %s: bad or no target '%s'", name,
                      target ? target : "");
        return ANNAL_EINVAL;
    }
    if (!d && o->handler->version != ANNAL_PROJ_HANDLER_VERSION) {
        annal__pj_fmt(err, err_size, "unknown handler version %d", o->handler->version);
        return ANNAL_EINVAL;
    }
    if (!d && !o->handler->apply) {
        annal__pj_fmt(err, err_size, "the handler has no apply()");
        return ANNAL_EINVAL;
    }
    if (kind == PJ_T_MEMORY && d) {
        annal__pj_fmt(err, err_size, "the memory target takes a C handler, not a file");
        return ANNAL_EINVAL;
    }
    annal_proj *p = calloc(1, sizeof *p);
    if (!p) return ANNAL_ENOMEM;
    p->db = db;
    memcpy(p->name, name, strlen(name) + 1);
    p->source = xstrdup(source);
    p->target = xstrdup(target);
    p->schema = kind == PJ_T_PG ? xstrdup(schema ? schema : name) : NULL;
    p->kind = kind;
    p->def = d;
    if (!d) {
        p->handler = *o->handler;
        p->has_handler = 1;
    }
    p->ctx = o->ctx;
    p->batch = d && d->batch ? d->batch : o->batch_events ? o->batch_events : DEFAULT_BATCH;
    p->log = o->log;
    p->log_ctx = o->log_ctx;
    p->lua_budget_ms = o->lua_budget_ms ? o->lua_budget_ms : ANNAL_PROJ_LUA_BUDGET_MS;
    memcpy(p->status, "running", 8);
    atomic_init(&p->cancel, 0);
    clock_gettime(CLOCK_MONOTONIC, &p->rate_t0);
    annal_err rc = ANNAL_OK;
    if (!p->source || !p->target || (kind == PJ_T_PG && !p->schema)) rc = ANNAL_ENOMEM;
    if (rc == ANNAL_OK && d && d->lua)
        rc = annal__pj_lua_open(d, p, &lua_host, p->lua_budget_ms, &p->lua, p->err, sizeof p->err);
    if (rc == ANNAL_OK && kind != PJ_T_MEMORY) rc = connect_target(p, 1);
    if (rc != ANNAL_OK) {
        annal__pj_fmt(err, err_size, "%s", p->err[0] ? p->err : annal_strerror(rc));
        annal_proj_close(p);
        return rc;
    }
    p->rate_ev0 = p->events;
    if (kind != PJ_T_MEMORY && o->exclusive) {
        rc = claim(p, err, err_size);
        if (rc != ANNAL_OK) {
            annal_proj_close(p);
            return rc;
        }
    } else if (kind != PJ_T_MEMORY) {
        heartbeat(p, 1);
    }
    *out = p;
    return ANNAL_OK;
}

annal_err annal_proj_open(annal_db *db, const annal_proj_opts *o, annal_proj **out, char *err,
                          size_t err_size) {
    return annal__pj_open_schema(db, o, NULL, out, err, err_size);
}

void annal_proj_close(annal_proj *p) {
    if (!p) return;
    heartbeat_clear(p);
    disconnect(p);
    annal__pj_lua_close(p->lua);
    free(p->skips);
    free(p->source);
    free(p->target);
    free(p->schema);
    free(p);
}

void annal_proj_cancel(annal_proj *p) {
    if (p) atomic_store(&p->cancel, 1);
}

static int pj_canceled(const annal_proj *p) { return atomic_load(&p->cancel) != 0; }

/* ---------------------------------------------------------------- applying */

static void ev_time(ev_ctx *c) {
    if (c->have_ts) return;
    int64_t ns = c->ev->timestamp_ns;
    time_t s = (time_t)(ns / 1000000000);
    int ms = (int)((ns % 1000000000) / 1000000);
    if (ns < 0) {
        s = 0;
        ms = 0;
    }
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(c->ts, sizeof c->ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    snprintf(c->date, sizeof c->date, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
    c->have_ts = 1;
}

static int bind_param(annal_proj *p, const pj_param *pa, ev_ctx *c, size_t k, annal_proj_value *v) {
    const annal_event *ev = c->ev;
    const char *dash;
    switch (pa->kind) {
    case PJ_P_STREAM: *v = v_text(ev->stream, ev->stream_len); return 0;
    case PJ_P_STREAM_ID:
        dash = memchr(ev->stream, '-', ev->stream_len);
        *v = dash ? v_text(dash + 1, ev->stream_len - (size_t)(dash + 1 - ev->stream))
                  : v_text(ev->stream, ev->stream_len);
        return 0;
    case PJ_P_CATEGORY:
        dash = memchr(ev->stream, '-', ev->stream_len);
        *v = v_text(ev->stream, dash ? (size_t)(dash - ev->stream) : ev->stream_len);
        return 0;
    case PJ_P_TYPE: *v = v_text(ev->type, ev->type_len); return 0;
    case PJ_P_EVENT_ID:
        if (!c->have_id) annal_uuid_format(&ev->id, c->id);
        c->have_id = 1;
        *v = v_text(c->id, 36);
        return 0;
    case PJ_P_REVISION: *v = v_int((int64_t)ev->revision); return 0;
    case PJ_P_POSITION: *v = v_int((int64_t)ev->position); return 0;
    case PJ_P_TIMESTAMP:
        ev_time(c);
        *v = v_str(c->ts);
        return 0;
    case PJ_P_TIMESTAMP_MS: *v = v_int(ev->timestamp_ns / 1000000); return 0;
    case PJ_P_DATE:
        ev_time(c);
        *v = v_str(c->date);
        return 0;
    case PJ_P_DATA: *v = v_text(ev->data, ev->data_len); return 0;
    case PJ_P_METADATA: *v = v_text(ev->metadata, ev->metadata_len); return 0;
    case PJ_P_DATA_PATH:
    case PJ_P_META_PATH: {
        const char *j = pa->kind == PJ_P_DATA_PATH ? ev->data : ev->metadata;
        size_t n = pa->kind == PJ_P_DATA_PATH ? ev->data_len : ev->metadata_len;
        if (n == 0) {
            *v = V_NULL;
            return 0;
        }
        if (annal__pj_json_get(j, n, &pa->path, v, &p->scratch[k], &p->scratch_cap[k]) != 0) {
            annal__pj_fmt(p->err, sizeof p->err, "event %s is not JSON (for :%s)",
                          pa->kind == PJ_P_DATA_PATH ? "data" : "metadata", pa->text);
            return -1;
        }
        return 0;
    }
    case PJ_P_LUA:
        if (!p->lua || !annal__pj_lua_value(p->lua, pa->lua_key, v)) *v = V_NULL;
        return 0;
    }
    return -1;
}

static const pj_handler *find_handler(const annal_proj_def *d, const char *type, size_t *idx) {
    for (size_t i = 0; i < d->nhandlers; i++)
        if (strcmp(d->handlers[i].type, type) == 0) {
            *idx = i;
            return &d->handlers[i];
        }
    return NULL;
}

/* Apply one event. ANNAL_EINVAL-like errors (the event failed) leave p->err set. */
static annal_err apply(annal_proj *p, annal_proj_tx *tx, const annal_event *ev) {
    tx->ev = ev;
    tx->emits = 0;
    p->err[0] = '\0';
    if (p->has_handler) {
        annal_err rc = p->handler.apply(p->ctx, p->kind == PJ_T_MEMORY ? NULL : tx, ev);
        if (rc != ANNAL_OK && !p->err[0])
            annal__pj_fmt(p->err, sizeof p->err, "apply failed: %s", annal_strerror(rc));
        return rc;
    }
    ev_ctx c = {.ev = ev};
    const char *sels[2] = {ev->type, "*"};
    for (int s = 0; s < 2; s++) {
        int skip = 0;
        if (p->lua && annal__pj_lua_has(p->lua, sels[s])) {
            annal_err rc =
                annal__pj_lua_call(p->lua, sels[s], tx, ev, &skip, p->err, sizeof p->err);
            if (rc != ANNAL_OK) return rc;
        }
        size_t hi;
        const pj_handler *h = skip ? NULL : find_handler(p->def, sels[s], &hi);
        if (!h) continue;
        for (size_t j = 0; j < h->nstmts; j++) {
            const pj_stmt *st = &h->stmts[j];
            for (size_t k = 0; k < st->nparams; k++)
                if (bind_param(p, &st->params[k], &c, k, &p->vals[k]) != 0) {
                    char why[sizeof p->err];
                    memcpy(why, p->err, sizeof why);
                    annal__pj_fmt(p->err, sizeof p->err, "%s:%d: [on %s]: %s", p->def->filename,
                                  st->line, h->type, why);
                    return ANNAL_EINVAL;
                }
            annal_err rc =
                annal__pj_target_run(p->t, p->preps[hi][j], p->vals, (int)st->nparams, NULL, NULL);
            if (rc != ANNAL_OK) {
                annal__pj_fmt(p->err, sizeof p->err, "%s:%d: [on %s]: %s", p->def->filename,
                              st->line, h->type, annal__pj_target_errmsg(p->t));
                return rc;
            }
        }
    }
    return ANNAL_OK;
}

static annal_err open_source(annal_proj *p, uint32_t limit, annal_iter **it) {
    const char *s = p->source;
    annal_err rc;
    if (strcmp(s, "$all") == 0)
        rc = annal_read_all(p->db, p->position, 0, limit, it);
    else if (strncmp(s, "$ce-", 4) == 0)
        rc = annal_read_category(p->db, s + 4, p->position, 0, limit, it);
    else if (strncmp(s, "$et-", 4) == 0)
        rc = annal_read_type(p->db, s + 4, p->position, 0, limit, it);
    else
        rc = annal_read_stream(p->db, s, p->revision, 0, limit, it);
    if (rc == ANNAL_ENOTFOUND && s[0] != '$') { /* a stream not written yet */
        *it = NULL;
        return ANNAL_OK;
    }
    if (rc != ANNAL_OK)
        annal__pj_fmt(p->err, sizeof p->err, "reading %s: %s", s, annal_db_errmsg(p->db));
    return rc;
}

static void describe(const annal_event *ev, char *out, size_t n) {
    char id[37];
    annal_uuid_format(&ev->id, id);
    annal__pj_fmt(out, n, "%s@%llu %s %s", ev->stream, (unsigned long long)ev->revision, ev->type,
                  id);
}

static int is_event_failure(annal_err rc) {
    /* a cancel interrupts the batch (rolled back): the event did not fail */
    return rc != ANNAL_EIO && rc != ANNAL_ENOMEM && rc != ANNAL_EFAILED && rc != ANNAL_ECANCELED;
}

typedef struct batch_out {
    uint64_t n; /* events applied or passed */
    int failed; /* an event failed: fail_* describe it */
    uint64_t fail_pos, fail_rev;
    char fail_event[384];
    char fail_err[512];
} batch_out;

/* One pass over at most p->batch events: apply (stop before stop_pos). Does not touch the
 * transaction. On an infrastructure error returns it; an event failure is reported in o. */
static annal_err run_events(annal_proj *p, uint64_t stop_pos, batch_out *o) {
    annal_db_info info;
    annal_err rc = annal_db_info_get(p->db, &info);
    if (rc != ANNAL_OK) {
        annal__pj_fmt(p->err, sizeof p->err, "store: %s", annal_db_errmsg(p->db));
        return rc;
    }
    annal_iter *it = NULL;
    rc = open_source(p, p->batch, &it);
    if (rc != ANNAL_OK) return rc;
    annal_proj_tx tx = {p, NULL, 0};
    const annal_event *ev;
    uint64_t seen = 0;
    while (it && (rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        seen++;
        if (ev->position >= stop_pos) break;
        annal_err arc = skipped(p, ev->position) ? ANNAL_OK : apply(p, &tx, ev);
        if (arc != ANNAL_OK) {
            if (!is_event_failure(arc)) {
                annal_iter_close(it);
                return arc;
            }
            o->failed = 1;
            o->fail_pos = ev->position;
            o->fail_rev = ev->revision;
            describe(ev, o->fail_event, sizeof o->fail_event);
            annal__pj_fmt(o->fail_err, sizeof o->fail_err, "%s", p->err);
            annal_iter_close(it);
            return ANNAL_OK;
        }
        p->position = ev->position + 1;
        p->revision = ev->revision + 1;
        p->events++;
        p->last_ns = ev->timestamp_ns;
        o->n++;
    }
    if (it) annal_iter_close(it);
    if (it && rc != ANNAL_OK && rc != ANNAL_END) {
        annal__pj_fmt(p->err, sizeof p->err, "reading %s: %s", p->source, annal_db_errmsg(p->db));
        return rc;
    }
    /* The whole source up to the head we saw before reading has been considered: a
     * caller waiting for a position this source does not hold is released. */
    if (seen < p->batch && stop_pos == UINT64_MAX && info.events > p->position) {
        p->position = info.events;
    }
    return ANNAL_OK;
}

static void rate_update(annal_proj *p) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double dt = mono_s(&p->rate_t0, &now);
    if (dt >= 1.0) {
        p->rate = (double)(p->events - p->rate_ev0) / dt;
        p->rate_t0 = now;
        p->rate_ev0 = p->events;
    }
}

static annal_err reconnect(annal_proj *p) {
    disconnect(p);
    plog(p, ANNAL_LOG_INFO, "projection %s: reconnecting to its target", p->name);
    return connect_target(p, 0);
}

static annal_err step_memory(annal_proj *p, uint64_t *applied) {
    if (strcmp(p->status, "running") != 0) return ANNAL_EBUSY;
    batch_out o;
    memset(&o, 0, sizeof o);
    uint64_t before = p->position;
    annal_err rc = run_events(p, UINT64_MAX, &o);
    if (rc != ANNAL_OK) return rc;
    if (o.failed) {
        memcpy(p->status, "failed", 7);
        return ANNAL_EBUSY;
    }
    rate_update(p);
    if (applied) *applied = o.n;
    return o.n || p->position != before ? ANNAL_OK : ANNAL_END;
}

annal_err annal_proj_step(annal_proj *p, uint64_t *applied) {
    if (applied) *applied = 0;
    if (p->kind == PJ_T_MEMORY) return step_memory(p, applied);
    int tries = 0;
    heartbeat(p, 0);
again:;
    annal_err rc = annal__pj_target_begin(p->t);
    int found = 0;
    if (rc == ANNAL_OK) rc = state_read(p, &found);
    if (rc != ANNAL_OK || !found || strcmp(p->status, "replaced") == 0) {
        /* A rebuild replaced the model (SQLite: marked; PostgreSQL: schema swapped, so the
         * row is gone from this connection's view), or the connection broke. */
        annal__pj_target_rollback(p->t);
        if (tries++ == 0) {
            rc = reconnect(p);
            if (rc != ANNAL_OK) return rc;
            goto again;
        }
        if (rc == ANNAL_OK) {
            annal__pj_fmt(p->err, sizeof p->err, "projection %s: its state row is gone", p->name);
            return ANNAL_ENOTFOUND;
        }
        return rc;
    }
    if (strcmp(p->status, "running") != 0) {
        annal__pj_target_rollback(p->t);
        return ANNAL_EBUSY;
    }
    uint64_t before = p->position, ev_before = p->events;
    batch_out o;
    memset(&o, 0, sizeof o);
    rc = run_events(p, UINT64_MAX, &o);
    if (rc == ANNAL_OK && o.failed) {
        /* Keep what came before the failed event, then mark the failure. */
        annal__pj_target_rollback(p->t);
        char why[512], what[384];
        memcpy(why, o.fail_err, sizeof why);
        memcpy(what, o.fail_event, sizeof what);
        uint64_t fpos = o.fail_pos;
        rc = annal__pj_target_begin(p->t);
        if (rc == ANNAL_OK) rc = state_read(p, &found);
        memset(&o, 0, sizeof o);
        if (rc == ANNAL_OK) rc = run_events(p, fpos, &o);
        if (rc == ANNAL_OK) rc = state_write(p);
        if (rc == ANNAL_OK) {
            annal_proj_value v[5] = {v_str(why), v_int((int64_t)fpos), v_str(what), v_int(now_ns()),
                                     v_str(p->name)};
            rc = exec_q(p, sql_fail, v, 5, NULL, NULL);
        }
        if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
        if (rc != ANNAL_OK) {
            annal__pj_target_rollback(p->t);
            return rc;
        }
        memcpy(p->status, "failed", 7);
        annal__pj_fmt(p->err, sizeof p->err, "projection %s stopped at position %llu (%s): %s",
                      p->name, (unsigned long long)fpos, what, why);
        plog(p, ANNAL_LOG_ERROR, "%s", p->err);
        if (applied) *applied = o.n;
        return ANNAL_EBUSY;
    }
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        return rc;
    }
    if (p->position == before && p->events == ev_before) {
        annal__pj_target_rollback(p->t);
        return ANNAL_END;
    }
    rate_update(p);
    rc = state_write(p);
    if (rc == ANNAL_OK) rc = annal__pj_target_commit(p->t);
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(p->t);
        return rc;
    }
    if (applied) *applied = o.n;
    return ANNAL_OK;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

annal_err annal_proj_run(annal_proj *p, int once) {
    int idle_ms = 1;
    while (!atomic_load(&p->cancel)) {
        annal_err rc = annal_proj_step(p, NULL);
        if (rc == ANNAL_OK) {
            idle_ms = 1;
            continue;
        }
        if (rc == ANNAL_END && once) return ANNAL_OK;
        if (rc == ANNAL_EBUSY && once) return rc;
        if (rc != ANNAL_END && rc != ANNAL_EBUSY) return rc;
        /* Caught up: the store wakes us when an event at or after our position commits
         * (also from another process). The timeout bounds how late an operator's command
         * or a cancel is noticed. Paused or failed: poll the state row. */
        if (rc == ANNAL_END) {
            annal_err w = annal_wait_position(p->db, p->position, 50);
            if (w == ANNAL_OK || w == ANNAL_ETIMEDOUT) continue;
        }
        sleep_ms(idle_ms);
        if (idle_ms < 50) idle_ms *= 2;
    }
    return ANNAL_ECANCELED;
}

/* ---------------------------------------------------------------- C handler services */

annal_err annal_proj_exec(annal_proj_tx *tx, const char *sql, const annal_proj_value *params,
                          size_t n, annal_proj_row_fn rows, void *ctx) {
    if (!tx || !sql) return ANNAL_EINVAL;
    return exec_q(tx->p, sql, params, (int)n, rows, ctx);
}

static annal_err tx_exec_native(annal_proj_tx *tx, const char *sql, const annal_proj_value *params,
                                int n, annal_proj_row_fn rows, void *ctx) {
    annal_proj *p = tx->p;
    pj_prep *pp;
    annal_err rc = annal__pj_target_prepare(p->t, sql, n, &pp);
    if (rc != ANNAL_OK) return tgt_fail(p, rc, "preparing");
    rc = annal__pj_target_run(p->t, pp, params, n, rows, ctx);
    if (rc != ANNAL_OK && rc != ANNAL_ECANCELED) return tgt_fail(p, rc, "SQL");
    return rc;
}

static const char *tx_errmsg(annal_proj_tx *tx) { return tx->p->err; }
static pj_tkind tx_kind(annal_proj_tx *tx) { return tx->p->kind; }

/* A 128-bit hash of (projection, source event id, emit number) as a UUID (version 8,
 * "custom"): deterministic, so a replay appends the ids the store already has. */
static void derive_id(const char *name, const annal_uuid *src, unsigned k, annal_uuid *out) {
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    for (int r = 0; r < 2; r++) {
        uint64_t x = h[r];
        for (const char *s = name; *s; s++) x = (x ^ (uint8_t)*s) * 0x100000001b3ULL;
        x = (x ^ 0xff) * 0x100000001b3ULL;
        for (int i = 0; i < 16; i++) x = (x ^ src->bytes[i]) * 0x100000001b3ULL;
        for (int i = 0; i < 4; i++) x = (x ^ ((k >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
        x ^= (uint64_t)r * 0x9e3779b97f4a7c15ULL;
        /* splitmix64 finaliser: spread every input bit over the output */
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        h[r] = x;
    }
    for (int i = 0; i < 8; i++) {
        out->bytes[i] = (uint8_t)(h[0] >> (56 - 8 * i));
        out->bytes[8 + i] = (uint8_t)(h[1] >> (56 - 8 * i));
    }
    out->bytes[6] = (uint8_t)((out->bytes[6] & 0x0f) | 0x80);
    out->bytes[8] = (uint8_t)((out->bytes[8] & 0x3f) | 0x80);
}

annal_err annal_proj_emit(annal_proj_tx *tx, const char *stream, const char *type, const void *data,
                          size_t data_len, const void *metadata, size_t metadata_len) {
    if (!tx || !tx->ev || !stream || !type) return ANNAL_EINVAL;
    annal_proj *p = tx->p;
    annal_event_data e;
    memset(&e, 0, sizeof e);
    derive_id(p->name, &tx->ev->id, tx->emits++, &e.id);
    e.type = type;
    e.data = data;
    e.data_len = data_len;
    e.metadata = metadata;
    e.metadata_len = metadata_len;
    annal_err rc = annal_append(p->db, stream, ANNAL_EXPECT_ANY, &e, 1, NULL);
    if (rc != ANNAL_OK)
        annal__pj_fmt(p->err, sizeof p->err, "emit to %s: %s", stream, annal_db_errmsg(p->db));
    return rc;
}

typedef struct sget {
    char *v;
    int oom;
} sget;
static int sget_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    sget *g = ctx;
    (void)names;
    if (n < 1 || v[0].kind != ANNAL_PROJ_TEXT) return 0;
    g->v = malloc(v[0].len + 1);
    if (!g->v) {
        g->oom = 1;
        return 1;
    }
    memcpy(g->v, v[0].s, v[0].len);
    g->v[v[0].len] = '\0';
    return 1;
}
static annal_err state_get(annal_proj_tx *tx, const char *key, char **json) {
    sget g = {NULL, 0};
    annal_proj_value v[2] = {v_str(tx->p->name), v_str(key)};
    annal_err rc = exec_q(tx->p, sql_state_get, v, 2, sget_row, &g);
    if (rc == ANNAL_ECANCELED) rc = g.oom ? ANNAL_ENOMEM : ANNAL_OK;
    *json = g.v;
    return rc;
}

static annal_err state_set(annal_proj_tx *tx, const char *key, const char *json) {
    annal_proj_value v[3] = {v_str(tx->p->name), v_str(key), v_str(json)};
    return exec_q(tx->p, sql_state_put, v, 3, NULL, NULL);
}

/* ---------------------------------------------------------------- operating */

static annal_err open_plain(const char *target, const char *name, pj_target **t, char *err,
                            size_t err_size) {
    pj_tkind k;
    const char *rest;
    if (annal__pj_target_kind(target, &k, &rest) != 0 || k == PJ_T_MEMORY) {
        annal__pj_fmt(err, err_size, "bad target '%s'", target ? target : "");
        return ANNAL_EINVAL;
    }
    if (k == PJ_T_SQLITE && access(rest, F_OK) != 0) {
        annal__pj_fmt(err, err_size, "no read model at %s (has the projection run?)", rest);
        return ANNAL_ENOTFOUND;
    }
    return annal__pj_target_open(target, k == PJ_T_PG ? name : NULL, t, err, err_size);
}

typedef struct st_row {
    annal_proj_status *s;
    int found;
} st_row;

const char *annal_proj_state_name(annal_proj_state s) {
    switch (s) {
    case ANNAL_PROJ_RUNNING: return "running";
    case ANNAL_PROJ_STOPPED: return "stopped";
    case ANNAL_PROJ_PAUSED: return "paused";
    case ANNAL_PROJ_FAILED: return "failed";
    case ANNAL_PROJ_REPLACED: return "replaced";
    }
    return "unknown";
}

/* The state row's status (what operators set); liveness is added by status_get. */
static annal_proj_state state_of(const annal_proj_value *v) {
    static const struct {
        const char *text;
        annal_proj_state state;
    } m[] = {{"running", ANNAL_PROJ_RUNNING},
             {"paused", ANNAL_PROJ_PAUSED},
             {"failed", ANNAL_PROJ_FAILED},
             {"replaced", ANNAL_PROJ_REPLACED}};
    for (size_t i = 0; v->kind == ANNAL_PROJ_TEXT && i < sizeof m / sizeof m[0]; i++)
        if (v->len == strlen(m[i].text) && memcmp(v->s, m[i].text, v->len) == 0) return m[i].state;
    return ANNAL_PROJ_FAILED; /* written by a newer version: not something to run */
}

static void copy_text(char *dst, size_t n, const annal_proj_value *v) {
    if (v->kind == ANNAL_PROJ_TEXT)
        annal__pj_fmt(dst, n, "%.*s", (int)v->len, v->s);
    else
        dst[0] = '\0';
}

static int status_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    st_row *r = ctx;
    (void)names;
    if (n < 11) return 1;
    annal_proj_status *s = r->s;
    r->found = 1;
    copy_text(s->name, sizeof s->name, &v[0]);
    s->position = (uint64_t)v[1].i;
    s->revision = (uint64_t)v[2].i;
    s->events = (uint64_t)v[3].i;
    s->last_event_ns = v[4].i;
    s->updated_ns = v[5].i;
    s->rate = v[6].kind == ANNAL_PROJ_REAL ? v[6].d : (double)v[6].i;
    s->state = state_of(&v[7]);
    copy_text(s->error, sizeof s->error, &v[8]);
    s->error_position = v[9].kind == ANNAL_PROJ_INT ? (uint64_t)v[9].i : 0;
    copy_text(s->error_event, sizeof s->error_event, &v[10]);
    return 1;
}

static annal_err status_on(pj_target *t, const char *name, annal_proj_status *out, char *err,
                           size_t err_size) {
    static const char q_lite[] =
        "SELECT name, position, revision, events, last_event_ns, updated_ns, rate, status, "
        "error, error_position, error_event FROM annal_projections WHERE name = ?1";
    static const char q_pg[] =
        "SELECT name, position, revision, events, last_event_ns, updated_ns, rate, status, "
        "error, error_position, error_event FROM annal_projections WHERE name = $1";
    memset(out, 0, sizeof *out);
    st_row r = {out, 0};
    annal_proj_value nm = v_str(name);
    annal_err rc = annal__pj_target_exec(t, annal__pj_target_kindof(t) == PJ_T_PG ? q_pg : q_lite,
                                         &nm, 1, status_row, &r);
    if (rc == ANNAL_ECANCELED) rc = ANNAL_OK;
    if (rc != ANNAL_OK) {
        annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(t));
        return rc;
    }
    if (!r.found) {
        annal__pj_fmt(err, err_size, "no projection %s in this target", name);
        return ANNAL_ENOTFOUND;
    }
    return ANNAL_OK;
}

static int projector_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    annal_proj_status *s = ctx;
    (void)names;
    if (n < 3) return 1;
    s->projector_pid = v[0].kind == ANNAL_PROJ_INT ? v[0].i : 0;
    copy_text(s->projector_host, sizeof s->projector_host, &v[1]);
    s->heartbeat_ns = v[2].kind == ANNAL_PROJ_INT ? v[2].i : 0;
    return 1;
}

/* Is the projector recorded in s alive? Its heartbeat is recent and, on this host, its
 * process exists (a projector killed a moment ago is not running). */
static int projector_live(const annal_proj_status *s) {
    if (!s->projector_pid || !s->heartbeat_ns) return 0;
    if (now_ns() - s->heartbeat_ns > (int64_t)ANNAL_PROJ_HEARTBEAT_STALE_MS * 1000000) return 0;
    char host[64];
    host_name(host, sizeof host);
    if (strcmp(host, s->projector_host) != 0) return 1;
    return kill((pid_t)s->projector_pid, 0) == 0 || errno == EPERM;
}

annal_err annal_proj_status_get(const char *target, const char *name, annal_proj_status *out,
                                char *err, size_t err_size) {
    pj_target *t;
    annal_err rc = open_plain(target, name, &t, err, err_size);
    if (rc != ANNAL_OK) return rc;
    rc = status_on(t, name, out, err, err_size);
    if (rc == ANNAL_OK) {
        /* A target no projector of this version opened has no such table: no projector. */
        annal_proj_value nm = v_str(name);
        (void)annal__pj_target_exec(
            t,
            annal__pj_target_kindof(t) == PJ_T_PG
                ? "SELECT pid, host, heartbeat_ns FROM annal_projectors WHERE name = $1"
                : "SELECT pid, host, heartbeat_ns FROM annal_projectors WHERE name = ?1",
            &nm, 1, projector_row, out);
        if (out->state == ANNAL_PROJ_RUNNING && !projector_live(out))
            out->state = ANNAL_PROJ_STOPPED;
    }
    annal__pj_target_close(t);
    return rc;
}

annal_err annal_proj_control(const char *target, const char *name, annal_proj_cmd cmd, char *err,
                             size_t err_size) {
    pj_target *t;
    annal_err rc = open_plain(target, name, &t, err, err_size);
    if (rc != ANNAL_OK) return rc;
    int pg = annal__pj_target_kindof(t) == PJ_T_PG;
    annal_proj_status s;
    rc = annal__pj_target_begin(t);
    if (rc == ANNAL_OK) rc = status_on(t, name, &s, err, err_size);
    const char *sql = NULL;
    annal_proj_value v[3] = {v_str(name), V_NULL, V_NULL};
    int nv = 1;
    if (rc == ANNAL_OK) {
        switch (cmd) {
        case ANNAL_PROJ_PAUSE:
            if (s.state != ANNAL_PROJ_RUNNING) {
                annal__pj_fmt(err, err_size, "projection %s is %s, not running", name,
                              annal_proj_state_name(s.state));
                rc = ANNAL_EINVAL;
            }
            sql = "UPDATE annal_projections SET status = 'paused' WHERE name = ?";
            break;
        case ANNAL_PROJ_RESUME:
            if (s.state != ANNAL_PROJ_PAUSED) {
                annal__pj_fmt(err, err_size, "projection %s is %s, not paused", name,
                              annal_proj_state_name(s.state));
                rc = ANNAL_EINVAL;
            }
            sql = "UPDATE annal_projections SET status = 'running' WHERE name = ?";
            break;
        case ANNAL_PROJ_RETRY:
        case ANNAL_PROJ_SKIP:
            if (s.state != ANNAL_PROJ_FAILED) {
                annal__pj_fmt(err, err_size, "projection %s is %s, it has no failed event", name,
                              annal_proj_state_name(s.state));
                rc = ANNAL_EINVAL;
            }
            if (cmd == ANNAL_PROJ_RETRY) {
                sql = "UPDATE annal_projections SET status = 'running', error = NULL, "
                      "error_position = NULL, error_event = NULL WHERE name = ?";
            } else {
                /* The failed event was the next one: its position (and its revision, for
                 * a one-stream source, which is the next revision) are passed over. */
                sql = "UPDATE annal_projections SET status = 'running', error = NULL, "
                      "error_position = NULL, error_event = NULL, position = ?, "
                      "revision = revision + 1 WHERE name = ?";
                annal_proj_value sv[3] = {v_str(name), v_int((int64_t)s.error_position),
                                          v_str(s.error_event)};
                rc = annal__pj_target_exec(
                    t,
                    pg ? "INSERT INTO annal_skipped (projection, position, event) VALUES "
                         "($1, $2, $3) ON CONFLICT (projection, position) DO NOTHING"
                       : "INSERT INTO annal_skipped (projection, position, event) VALUES "
                         "(?1, ?2, ?3) ON CONFLICT (projection, position) DO NOTHING",
                    sv, 3, NULL, NULL);
                if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(t));
                v[0] = v_int((int64_t)s.error_position + 1);
                v[1] = v_str(name);
                nv = 2;
            }
            break;
        case ANNAL_PROJ_FORGET:
            sql = "DELETE FROM annal_projections WHERE name = ?";
            v[1] = v_str(name);
            nv = 2;
            break;
        }
    }
    if (rc == ANNAL_OK && cmd == ANNAL_PROJ_FORGET) {
        rc = annal__pj_target_exec(t,
                                   pg ? "DELETE FROM annal_state WHERE projection = $1"
                                      : "DELETE FROM annal_state WHERE projection = ?1",
                                   v, 1, NULL, NULL);
        if (rc == ANNAL_OK)
            rc = annal__pj_target_exec(t,
                                       pg ? "DELETE FROM annal_skipped WHERE projection = $1"
                                          : "DELETE FROM annal_skipped WHERE projection = ?1",
                                       v, 1, NULL, NULL);
        v[0] = v_str(name);
        nv = 1;
    }
    if (rc == ANNAL_OK) {
        pj_stmt st;
        char msg[128];
        int line;
        if (annal__pj_sql_translate(sql, strlen(sql), 1, 0, &st, msg, sizeof msg, &line) != 0) {
            rc = ANNAL_ENOMEM;
        } else {
            rc = annal__pj_target_exec(t, pg ? st.sql_pg : st.sql_sqlite, v, nv, NULL, NULL);
            if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(t));
            annal__pj_stmt_free(&st);
        }
    }
    if (rc == ANNAL_OK) rc = annal__pj_target_commit(t);
    if (rc != ANNAL_OK) annal__pj_target_rollback(t);
    annal__pj_target_close(t);
    return rc;
}

annal_err annal_proj_wait(const char *target, const char *name, uint64_t position, int timeout_ms,
                          char *err, size_t err_size) {
    pj_target *t;
    annal_err rc = open_plain(target, name, &t, err, err_size);
    if (rc != ANNAL_OK) return rc;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int pause = 1;
    for (;;) {
        annal_proj_status s;
        rc = status_on(t, name, &s, err, err_size);
        if (rc != ANNAL_OK) break;
        if (s.position > position) break;
        if (s.state == ANNAL_PROJ_FAILED) {
            annal__pj_fmt(err, err_size, "projection %s failed at position %llu: %s", name,
                          (unsigned long long)s.error_position, s.error);
            rc = ANNAL_EBUSY;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0 - mono_s(&t0, &now);
        if (left <= 0) {
            annal__pj_fmt(err, err_size, "projection %s is at position %llu, not yet past %llu",
                          name, (unsigned long long)s.position, (unsigned long long)position);
            rc = ANNAL_ETIMEDOUT;
            break;
        }
        int ms = pause;
        if (ms > left * 1000) ms = (int)(left * 1000) + 1;
        sleep_ms(ms);
        if (pause < 20) pause *= 2;
    }
    annal__pj_target_close(t);
    return rc;
}

annal_err annal_proj_query(const char *target, const char *name, const char *sql,
                           annal_proj_row_fn rows, void *ctx, char *err, size_t err_size) {
    pj_target *t;
    annal_err rc = open_plain(target, name, &t, err, err_size);
    if (rc != ANNAL_OK) return rc;
    rc = annal__pj_target_exec(t, sql, NULL, 0, rows, ctx);
    if (rc != ANNAL_OK && rc != ANNAL_ECANCELED)
        annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(t));
    annal__pj_target_close(t);
    return rc;
}
