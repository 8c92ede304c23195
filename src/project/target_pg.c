/*
 * target_pg.c -- PostgreSQL read models through libpq. A projection's tables and its
 * state row live in a schema of its own (its name), set as the search_path, so the
 * projection's SQL names tables without a schema and a rebuild can fill a shadow schema
 * that replaces the live one in one transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "project_int.h"

struct pj_prep {
    struct pj_prep *next;
    char name[24];
    int nparams;
    char *lazy; /* SQL whose parameter types need the first values (see pg_prepare) */
};

typedef struct pg {
    PGconn *conn;
    pj_prep *preps;
    int nprep;
    char **bufs; /* per-parameter text buffers */
    size_t *caps;
    int nbufs;
} pg;

static annal_err pg_fail(pj_target *t, PGresult *r, const char *what) {
    pg *g = t->impl;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(g->conn);
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    annal__pj_fmt(t->err, sizeof t->err, "%s: %.*s", what, (int)n, m);
    for (char *c = t->err; *c; c++) /* "ERROR: ...\nDETAIL: ..." on one line */
        if (*c == '\n') *c = ' ';
    if (r) PQclear(r);
    if (PQstatus(g->conn) != CONNECTION_OK) return ANNAL_EIO;
    return ANNAL_EINVAL;
}

static annal_err pg_script(pj_target *t, const char *sql) {
    pg *g = t->impl;
    PGresult *r = PQexec(g->conn, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY)
        return pg_fail(t, r, "SQL");
    PQclear(r);
    return ANNAL_OK;
}

static annal_err pg_begin(pj_target *t) { return pg_script(t, "BEGIN"); }
static annal_err pg_commit(pj_target *t) { return pg_script(t, "COMMIT"); }
static void pg_rollback(pj_target *t) {
    pg *g = t->impl;
    if (PQtransactionStatus(g->conn) != PQTRANS_IDLE) PQclear(PQexec(g->conn, "ROLLBACK"));
}

static annal_err pg_prepare(pj_target *t, const char *sql, int nparams, pj_prep **out) {
    pg *g = t->impl;
    pj_prep *p = calloc(1, sizeof *p);
    if (!p) return ANNAL_ENOMEM;
    snprintf(p->name, sizeof p->name, "annal_%d", ++g->nprep);
    p->nparams = nparams;
    PGresult *r = PQprepare(g->conn, p->name, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* Parameters whose type the context does not settle (`$1 * $2`: operator is not
         * unique, indeterminate type) are typed from the values of the first call. */
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st &&
            (strcmp(st, "42725") == 0 || strcmp(st, "42P18") == 0 || strcmp(st, "42883") == 0)) {
            PQclear(r);
            p->lazy = strdup(sql);
            if (!p->lazy) {
                free(p);
                return ANNAL_ENOMEM;
            }
            /* a failed statement aborts the transaction it ran in */
            if (PQtransactionStatus(g->conn) == PQTRANS_INERROR) {
                free(p->lazy);
                free(p);
                annal__pj_fmt(t->err, sizeof t->err,
                              "SQL: parameter types cannot be inferred inside a transaction");
                return ANNAL_EINVAL;
            }
            p->next = g->preps;
            g->preps = p;
            *out = p;
            return ANNAL_OK;
        }
        free(p);
        return pg_fail(t, r, "SQL");
    }
    PQclear(r);
    p->next = g->preps;
    g->preps = p;
    *out = p;
    return ANNAL_OK;
}

static int grow_bufs(pg *g, int n) {
    if (n <= g->nbufs) return 0;
    char **b = realloc(g->bufs, (size_t)n * sizeof *b);
    if (!b) return -1;
    g->bufs = b;
    size_t *c = realloc(g->caps, (size_t)n * sizeof *c);
    if (!c) return -1;
    g->caps = c;
    for (int i = g->nbufs; i < n; i++) {
        g->bufs[i] = NULL;
        g->caps[i] = 0;
    }
    g->nbufs = n;
    return 0;
}

static annal_err pg_run(pj_target *t, pj_prep *p, const annal_proj_value *params, int n,
                        annal_proj_row_fn rows, void *ctx) {
    pg *g = t->impl;
    int np = p->nparams > n ? p->nparams : n;
    if (np > 4096 || grow_bufs(g, np)) return ANNAL_ENOMEM;
    const char *vals[np > 0 ? np : 1];
    for (int i = 0; i < np; i++) {
        vals[i] = NULL;
        if (i >= n || params[i].kind == ANNAL_PROJ_NULL) continue;
        size_t need = params[i].kind == ANNAL_PROJ_TEXT ? params[i].len + 1 : 40;
        if (need > g->caps[i]) {
            char *q = realloc(g->bufs[i], need);
            if (!q) return ANNAL_ENOMEM;
            g->bufs[i] = q;
            g->caps[i] = need;
        }
        char *b = g->bufs[i];
        if (params[i].kind == ANNAL_PROJ_INT) {
            snprintf(b, 40, "%lld", (long long)params[i].i);
        } else if (params[i].kind == ANNAL_PROJ_REAL) {
            snprintf(b, 40, "%.17g", params[i].d);
        } else {
            if (params[i].len) memcpy(b, params[i].s, params[i].len);
            b[params[i].len] = '\0';
        }
        vals[i] = b;
    }
    if (p->lazy) {
        Oid types[np > 0 ? np : 1];
        for (int i = 0; i < np; i++)
            types[i] = i >= n                              ? 0
                       : params[i].kind == ANNAL_PROJ_INT  ? 20  /* int8 */
                       : params[i].kind == ANNAL_PROJ_REAL ? 701 /* float8 */
                       : params[i].kind == ANNAL_PROJ_TEXT ? 25  /* text */
                                                           : 0;
        PGresult *pr = PQprepare(g->conn, p->name, p->lazy, p->nparams, types);
        if (PQresultStatus(pr) != PGRES_COMMAND_OK) return pg_fail(t, pr, "SQL");
        PQclear(pr);
        free(p->lazy);
        p->lazy = NULL;
    }
    PGresult *r = PQexecPrepared(g->conn, p->name, p->nparams, vals, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) return pg_fail(t, r, "SQL");
    annal_err res = ANNAL_OK;
    if (rows && s == PGRES_TUPLES_OK) {
        int nc = PQnfields(r);
        if (nc > 64) nc = 64;
        const char *names[64];
        annal_proj_value v[64];
        for (int c = 0; c < nc; c++) names[c] = PQfname(r, c);
        for (int row = 0; row < PQntuples(r) && res == ANNAL_OK; row++) {
            for (int c = 0; c < nc; c++) {
                memset(&v[c], 0, sizeof v[c]);
                if (PQgetisnull(r, row, c)) {
                    v[c].kind = ANNAL_PROJ_NULL;
                    continue;
                }
                const char *txt = PQgetvalue(r, row, c);
                Oid ty = PQftype(r, c);
                if (ty == 20 || ty == 21 || ty == 23) { /* int8, int2, int4 */
                    v[c].kind = ANNAL_PROJ_INT;
                    v[c].i = strtoll(txt, NULL, 10);
                } else if (ty == 700 || ty == 701) { /* float4, float8 */
                    v[c].kind = ANNAL_PROJ_REAL;
                    v[c].d = strtod(txt, NULL);
                } else {
                    v[c].kind = ANNAL_PROJ_TEXT;
                    v[c].s = txt;
                    v[c].len = (size_t)PQgetlength(r, row, c);
                }
            }
            if (rows(ctx, nc, names, v)) res = ANNAL_ECANCELED;
        }
    }
    PQclear(r);
    return res;
}

static void pg_close(pj_target *t) {
    pg *g = t->impl;
    if (!g) return;
    for (pj_prep *p = g->preps, *n; p; p = n) {
        n = p->next;
        free(p->lazy);
        free(p);
    }
    for (int i = 0; i < g->nbufs; i++) free(g->bufs[i]);
    free(g->bufs);
    free(g->caps);
    if (g->conn) PQfinish(g->conn);
    free(g);
    t->impl = NULL;
}

static const pj_target_ops pg_ops = {pg_script,  pg_begin, pg_commit, pg_rollback,
                                     pg_prepare, pg_run,   pg_close};

static void pg_notice(void *arg, const char *msg) {
    (void)arg; /* "relation already exists, skipping" and the like: not for the user */
    (void)msg;
}

annal_err annal__pj_pg_open(const char *conninfo, const char *schema, pj_target *t) {
    pg *g = calloc(1, sizeof *g);
    if (!g) return ANNAL_ENOMEM;
    t->impl = g;
    t->ops = &pg_ops;
    g->conn = PQconnectdb(conninfo);
    if (!g->conn) return ANNAL_ENOMEM;
    if (PQstatus(g->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(g->conn);
        size_t n = strlen(m);
        while (n && m[n - 1] == '\n') n--;
        annal__pj_fmt(t->err, sizeof t->err, "cannot connect to PostgreSQL: %.*s", (int)n, m);
        return ANNAL_EIO;
    }
    PQsetNoticeProcessor(g->conn, pg_notice, NULL);
    if (schema) {
        char *id = PQescapeIdentifier(g->conn, schema, strlen(schema));
        if (!id) return pg_fail(t, NULL, "schema name");
        size_t n = strlen(id) * 2 + 96;
        char *sql = malloc(n);
        if (!sql) {
            PQfreemem(id);
            return ANNAL_ENOMEM;
        }
        snprintf(sql, n, "CREATE SCHEMA IF NOT EXISTS %s; SET search_path TO %s", id, id);
        PQfreemem(id);
        annal_err rc = pg_script(t, sql);
        free(sql);
        if (rc != ANNAL_OK) return rc;
    }
    return ANNAL_OK;
}
