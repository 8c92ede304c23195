/*
 * target_sqlite.c -- SQLite read models: one database file per projection, in WAL mode so
 * that queries read while the projector writes. synchronous=NORMAL: a power loss may
 * drop the last batches, but never a batch without its checkpoint (same transaction),
 * so the projection simply applies them again.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "project_int.h"

struct pj_prep {
    struct pj_prep *next;
    sqlite3_stmt *st;
};

typedef struct lite {
    sqlite3 *db;
    pj_prep *preps;
    int in_tx;
} lite;

static annal_err lite_err(pj_target *t, int rc, const char *what) {
    lite *l = t->impl;
    annal__pj_fmt(t->err, sizeof t->err, "%s: %s", what,
                  l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
    switch (rc & 0xff) {
    case SQLITE_NOMEM: return ANNAL_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_PERM: return ANNAL_EIO;
    default: return ANNAL_EINVAL; /* the SQL or the data: a failed statement */
    }
}

static annal_err lite_script(pj_target *t, const char *sql) {
    lite *l = t->impl;
    char *msg = NULL;
    int rc = sqlite3_exec(l->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        annal_err e = lite_err(t, rc, "SQL");
        if (msg) annal__pj_fmt(t->err, sizeof t->err, "%s", msg);
        sqlite3_free(msg);
        return e;
    }
    return ANNAL_OK;
}

static annal_err lite_begin(pj_target *t) {
    lite *l = t->impl;
    annal_err rc = lite_script(t, "BEGIN IMMEDIATE");
    if (rc == ANNAL_OK) l->in_tx = 1;
    return rc;
}

static annal_err lite_commit(pj_target *t) {
    lite *l = t->impl;
    annal_err rc = lite_script(t, "COMMIT");
    if (rc == ANNAL_OK) l->in_tx = 0;
    return rc;
}

static void lite_rollback(pj_target *t) {
    lite *l = t->impl;
    if (!sqlite3_get_autocommit(l->db)) sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    l->in_tx = 0;
}

static annal_err lite_prepare(pj_target *t, const char *sql, int nparams, pj_prep **out) {
    lite *l = t->impl;
    (void)nparams;
    pj_prep *p = calloc(1, sizeof *p);
    if (!p) return ANNAL_ENOMEM;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &p->st, &tail);
    if (rc != SQLITE_OK) {
        free(p);
        return lite_err(t, rc, "SQL");
    }
    if (!p->st) { /* only blanks or comments */
        free(p);
        annal__pj_fmt(t->err, sizeof t->err, "SQL: empty statement");
        return ANNAL_EINVAL;
    }
    while (tail &&
           (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == '\r' || *tail == ';'))
        tail++;
    if (tail && *tail) {
        sqlite3_finalize(p->st);
        free(p);
        annal__pj_fmt(t->err, sizeof t->err, "SQL: one statement expected, more follows: %.40s",
                      tail);
        return ANNAL_EINVAL;
    }
    p->next = l->preps;
    l->preps = p;
    *out = p;
    return ANNAL_OK;
}

static annal_err lite_run(pj_target *t, pj_prep *p, const annal_proj_value *params, int n,
                          annal_proj_row_fn rows, void *ctx) {
    sqlite3_stmt *st = p->st;
    int want = sqlite3_bind_parameter_count(st);
    for (int i = 0; i < want; i++) {
        int rc;
        if (i >= n || params[i].kind == ANNAL_PROJ_NULL) {
            rc = sqlite3_bind_null(st, i + 1);
        } else if (params[i].kind == ANNAL_PROJ_INT) {
            rc = sqlite3_bind_int64(st, i + 1, params[i].i);
        } else if (params[i].kind == ANNAL_PROJ_REAL) {
            rc = sqlite3_bind_double(st, i + 1, params[i].d);
        } else {
            rc = sqlite3_bind_text(st, i + 1, params[i].s ? params[i].s : "", (int)params[i].len,
                                   SQLITE_STATIC);
        }
        if (rc != SQLITE_OK) {
            sqlite3_reset(st);
            return lite_err(t, rc, "bind");
        }
    }
    annal_err res = ANNAL_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!rows) continue;
        int nc = sqlite3_column_count(st);
        const char *names[64];
        annal_proj_value vals[64];
        if (nc > 64) nc = 64;
        for (int c = 0; c < nc; c++) {
            names[c] = sqlite3_column_name(st, c);
            memset(&vals[c], 0, sizeof vals[c]);
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                vals[c].kind = ANNAL_PROJ_INT;
                vals[c].i = sqlite3_column_int64(st, c);
                break;
            case SQLITE_FLOAT:
                vals[c].kind = ANNAL_PROJ_REAL;
                vals[c].d = sqlite3_column_double(st, c);
                break;
            case SQLITE_NULL: vals[c].kind = ANNAL_PROJ_NULL; break;
            default:
                vals[c].kind = ANNAL_PROJ_TEXT;
                vals[c].s = (const char *)sqlite3_column_text(st, c);
                vals[c].len = (size_t)sqlite3_column_bytes(st, c);
                break;
            }
        }
        if (rows(ctx, nc, names, vals)) {
            res = ANNAL_ECANCELED;
            break;
        }
    }
    if (res == ANNAL_OK && rc != SQLITE_DONE) res = lite_err(t, rc, "SQL");
    sqlite3_reset(st); /* every parameter is bound on each run: no clear_bindings */
    return res;
}

static void lite_close(pj_target *t) {
    lite *l = t->impl;
    if (!l) return;
    for (pj_prep *p = l->preps, *n; p; p = n) {
        n = p->next;
        sqlite3_finalize(p->st);
        free(p);
    }
    sqlite3_close(l->db);
    free(l);
    t->impl = NULL;
}

static const pj_target_ops lite_ops = {lite_script,  lite_begin, lite_commit, lite_rollback,
                                       lite_prepare, lite_run,   lite_close};

annal_err annal__pj_sqlite_open(const char *path, pj_target *t) {
    lite *l = calloc(1, sizeof *l);
    if (!l) return ANNAL_ENOMEM;
    t->impl = l;
    t->ops = &lite_ops;
    int rc = sqlite3_open_v2(path, &l->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        annal__pj_fmt(t->err, sizeof t->err, "cannot open SQLite database %s: %s", path,
                      l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
        return ANNAL_EIO;
    }
    /* Waiting for the lock serialises a projector with `annal projection pause` and with
     * a rebuild's switch-over instead of failing them. */
    sqlite3_busy_timeout(l->db, 30000);
    annal_err e = lite_script(t, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    if (e != ANNAL_OK) {
        char why[sizeof t->err];
        memcpy(why, t->err, sizeof why);
        annal__pj_fmt(t->err, sizeof t->err, "SQLite database %s: %s", path, why);
    }
    return e;
}
