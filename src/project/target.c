/*
 * target.c -- the read-model databases behind one small table of operations: SQLite
 * (target_sqlite.c), PostgreSQL (target_pg.c). The engine and Lua see only these calls.
 */
#include <stdlib.h>
#include <string.h>

#include "project_int.h"

int annal__pj_target_kind(const char *spec, pj_tkind *kind, const char **rest) {
    static const struct {
        const char *prefix;
        pj_tkind kind;
    } kinds[] = {{"sqlite:", PJ_T_SQLITE},
                 {"postgresql:", PJ_T_PG},
                 {"postgres:", PJ_T_PG},
                 {"pg:", PJ_T_PG}};
    if (!spec) return -1;
    if (strcmp(spec, "memory") == 0) {
        *kind = PJ_T_MEMORY;
        *rest = spec + 6;
        return 0;
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(spec, kinds[i].prefix, n) == 0) {
            *kind = kinds[i].kind;
            *rest = spec + n;
            return 0;
        }
    }
    return -1;
}

/* Statements are cached by text, so
 * annal_proj_exec and Lua's sql() prepare each statement once per connection. */
typedef struct pj_cached {
    struct pj_cached *next;
    char *sql;
    pj_prep *prep;
} pj_cached;

annal_err annal__pj_target_open(const char *spec, const char *schema, pj_target **out, char *err,
                                size_t err_n) {
    *out = NULL;
    pj_tkind kind;
    const char *rest;
    if (annal__pj_target_kind(spec, &kind, &rest) != 0 || kind == PJ_T_MEMORY) {
        annal__pj_fmt(err, err_n, "bad target '%s': sqlite:PATH or postgresql:CONNINFO",
                      spec ? spec : "(none)");
        return ANNAL_EINVAL;
    }
    pj_target *t = calloc(1, sizeof *t);
    if (!t) return ANNAL_ENOMEM;
    t->kind = kind;
    annal_err rc =
        kind == PJ_T_SQLITE ? annal__pj_sqlite_open(rest, t) : annal__pj_pg_open(rest, schema, t);
    if (rc != ANNAL_OK) {
        annal__pj_fmt(err, err_n, "%s", t->err);
        if (t->ops) t->ops->close(t);
        free(t);
        return rc;
    }
    *out = t;
    return ANNAL_OK;
}

void annal__pj_target_close(pj_target *t) {
    if (!t) return;
    for (pj_cached *c = t->cache, *n; c; c = n) {
        n = c->next;
        free(c->sql);
        free(c);
    }
    t->ops->close(t);
    free(t);
}

pj_tkind annal__pj_target_kindof(const pj_target *t) { return t->kind; }
const char *annal__pj_target_errmsg(const pj_target *t) { return t->err; }
annal_err annal__pj_target_script(pj_target *t, const char *sql) { return t->ops->script(t, sql); }
annal_err annal__pj_target_begin(pj_target *t) { return t->ops->begin(t); }
annal_err annal__pj_target_commit(pj_target *t) { return t->ops->commit(t); }
void annal__pj_target_rollback(pj_target *t) { t->ops->rollback(t); }

annal_err annal__pj_target_prepare(pj_target *t, const char *sql, int nparams, pj_prep **out) {
    pj_cached **head = (pj_cached **)&t->cache;
    for (pj_cached *c = *head; c; c = c->next)
        if (strcmp(c->sql, sql) == 0) {
            *out = c->prep;
            return ANNAL_OK;
        }
    pj_cached *c = calloc(1, sizeof *c);
    if (!c) return ANNAL_ENOMEM;
    c->sql = strdup(sql);
    if (!c->sql) {
        free(c);
        return ANNAL_ENOMEM;
    }
    annal_err rc = t->ops->prepare(t, sql, nparams, &c->prep);
    if (rc != ANNAL_OK) {
        free(c->sql);
        free(c);
        return rc;
    }
    c->next = *head;
    *head = c;
    *out = c->prep;
    return ANNAL_OK;
}

annal_err annal__pj_target_run(pj_target *t, pj_prep *p, const annal_proj_value *params, int n,
                               annal_proj_row_fn rows, void *ctx) {
    return t->ops->run(t, p, params, n, rows, ctx);
}

annal_err annal__pj_target_exec(pj_target *t, const char *sql, const annal_proj_value *params,
                                int n, annal_proj_row_fn rows, void *ctx) {
    pj_prep *p;
    annal_err rc = annal__pj_target_prepare(t, sql, n, &p);
    if (rc != ANNAL_OK) return rc;
    return t->ops->run(t, p, params, n, rows, ctx);
}
