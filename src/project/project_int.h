/*
 * project_int.h -- the interface between the parts of libannal_project: the projection
 * file (def.c), JSON paths (jpath.c), the target databases (target.c, target_sqlite.c,
 * target_pg.c), Lua (lua.c) and the engine (engine.c). Nothing here is public.
 */
#ifndef ANNAL_PROJECT_INT_H
#define ANNAL_PROJECT_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "annal_project.h"

#define PJ_NAME_MAX 63

/* ---- Messages: "detail" buffers of fixed size, filled with snprintf. */
/* Inline so every file of the library can use it without calling into another. */
static inline void annal__pj_fmt(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void annal__pj_fmt(char *buf, size_t n, const char *fmt, ...) {
    if (!buf || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

/* ---- JSON paths: a.b[0].c into steps; extraction by scanning the text (no tree). */
typedef struct pj_step {
    char *key; /* member name, or NULL for an index */
    long index;
} pj_step;
typedef struct pj_path {
    pj_step *steps;
    size_t n;
} pj_path;
/* 0 ok, -1 malformed (msg says why). */
int annal__pj_path_parse(const char *s, size_t len, pj_path *out, char *msg, size_t msg_n);
void annal__pj_path_free(pj_path *p);
/* The value at path in json (len bytes) into *v: numbers as INT or REAL, strings
 * unescaped into scratch (a malloc'ed buffer grown as needed), true/false as INT 1/0,
 * objects and arrays as their JSON text, missing or null as NULL. Returns 0, or -1 when
 * the text is not JSON (v is then NULL). */
int annal__pj_json_get(const char *json, size_t len, const pj_path *path, annal_proj_value *v,
                       char **scratch, size_t *scratch_cap);

/* ---- Parameters of SQL in a projection file. */
typedef enum pj_param_kind {
    PJ_P_STREAM,
    PJ_P_STREAM_ID,
    PJ_P_CATEGORY,
    PJ_P_TYPE,
    PJ_P_EVENT_ID,
    PJ_P_REVISION,
    PJ_P_POSITION,
    PJ_P_TIMESTAMP,    /* RFC 3339 text, milliseconds, UTC */
    PJ_P_TIMESTAMP_MS, /* integer */
    PJ_P_DATE,         /* YYYY-MM-DD, UTC */
    PJ_P_DATA,         /* the whole data text */
    PJ_P_METADATA,
    PJ_P_DATA_PATH,
    PJ_P_META_PATH,
    PJ_P_LUA /* :v.name, a member of the table the Lua handler returned */
} pj_param_kind;

typedef struct pj_param {
    pj_param_kind kind;
    char *text; /* the placeholder as written, without ':' */
    pj_path path;
    char *lua_key;
} pj_param;

/* One SQL statement with its placeholders replaced by ?N (SQLite) and $N (PostgreSQL). */
typedef struct pj_stmt {
    char *sql_sqlite;
    char *sql_pg;
    int line; /* line of the file where it starts */
    pj_param *params;
    size_t nparams;
} pj_stmt;

/* Translate SQL written with :placeholders (when params_ok) or ? (C and Lua) into both
 * dialects. On error returns -1 and msg holds the reason and *err_line the line. */
int annal__pj_sql_translate(const char *sql, size_t len, int line, int params_ok, pj_stmt *out,
                            char *msg, size_t msg_n, int *err_line);
void annal__pj_stmt_free(pj_stmt *s);

typedef struct pj_handler {
    char *type; /* event type, or "*" for every event */
    int line;
    pj_stmt *stmts;
    size_t nstmts;
} pj_handler;

/* Split a section's SQL at top-level ';' into h's statements (blank ones dropped); -1 with
 * msg and *err_line on an error. */
int annal__pj_sql_split(const char *s, size_t n, int line, pj_handler *h, char *msg, size_t msg_n,
                        int *err_line);

struct annal_proj_def {
    char *filename;
    char *name, *source, *target;
    uint32_t batch;
    int emits;
    char *schema; /* SQL script run once on a new target; may be NULL */
    int schema_line;
    pj_handler *handlers;
    size_t nhandlers;
    char *lua; /* Lua chunk, padded with newlines so its line numbers are the file's */
    size_t lua_len;
    int lua_line;
};

/* ---- Targets. */
typedef struct pj_target pj_target;
typedef struct pj_prep pj_prep; /* a prepared statement of a target */

typedef enum pj_tkind { PJ_T_SQLITE, PJ_T_PG, PJ_T_MEMORY } pj_tkind;

/* Split "sqlite:PATH" etc. *rest points into spec. -1 unknown. */
int annal__pj_target_kind(const char *spec, pj_tkind *kind, const char **rest);

/* Connect. schema (PostgreSQL only; may be NULL: no search_path change) names the
 * schema holding the read model and state table, created if missing. */
annal_err annal__pj_target_open(const char *spec, const char *schema, pj_target **out, char *err,
                                size_t err_n);
void annal__pj_target_close(pj_target *t);
pj_tkind annal__pj_target_kindof(const pj_target *t);
const char *annal__pj_target_errmsg(const pj_target *t);
/* A script of statements without parameters, outside or inside a transaction. */
annal_err annal__pj_target_script(pj_target *t, const char *sql);
annal_err annal__pj_target_begin(pj_target *t); /* takes the write lock at once */
annal_err annal__pj_target_commit(pj_target *t);
void annal__pj_target_rollback(pj_target *t);
/* Prepare sql (dialect of the target). Statements are freed with the target. */
annal_err annal__pj_target_prepare(pj_target *t, const char *sql, int nparams, pj_prep **out);
annal_err annal__pj_target_run(pj_target *t, pj_prep *p, const annal_proj_value *params, int n,
                               annal_proj_row_fn rows, void *ctx);
/* Run unprepared sql with params. */
annal_err annal__pj_target_exec(pj_target *t, const char *sql, const annal_proj_value *params,
                                int n, annal_proj_row_fn rows, void *ctx);

/* Backends (target.c dispatches). */
typedef struct pj_target_ops {
    annal_err (*script)(pj_target *t, const char *sql);
    annal_err (*begin)(pj_target *t);
    annal_err (*commit)(pj_target *t);
    void (*rollback)(pj_target *t);
    annal_err (*prepare)(pj_target *t, const char *sql, int nparams, pj_prep **out);
    annal_err (*run)(pj_target *t, pj_prep *p, const annal_proj_value *params, int n,
                     annal_proj_row_fn rows, void *ctx);
    void (*close)(pj_target *t);
} pj_target_ops;

struct pj_target {
    const pj_target_ops *ops;
    pj_tkind kind;
    char err[1024];
    void *impl;
    void *cache; /* prepared statements by text (target.c) */
};

annal_err annal__pj_sqlite_open(const char *path, pj_target *t);
annal_err annal__pj_pg_open(const char *conninfo, const char *schema, pj_target *t);

/* ---- Lua (lua.c). */
typedef struct pj_lua pj_lua;
/* What Lua may do inside the projection's transaction: the engine's services, handed to
 * lua.c when it opens so that lua.c never calls up into engine.c. */
typedef struct pj_lua_host {
    /* Run sql already written in the target's dialect (?N or $N) with n params. */
    annal_err (*exec_native)(annal_proj_tx *tx, const char *sql, const annal_proj_value *params,
                             int n, annal_proj_row_fn rows, void *ctx);
    pj_tkind (*kind)(annal_proj_tx *tx);
    const char *(*errmsg)(annal_proj_tx *tx); /* the last failure's message */
    annal_err (*emit)(annal_proj_tx *tx, const char *stream, const char *type, const void *data,
                      size_t data_len, const void *metadata, size_t metadata_len);
    annal_err (*state_get)(annal_proj_tx *tx, const char *key, char **json); /* *json malloc'ed */
    annal_err (*state_set)(annal_proj_tx *tx, const char *key, const char *json);
    int (*canceled)(const annal_proj *p); /* annal_proj_cancel was called */
} pj_lua_host;
/* Compile-check only (def.c): 0 ok, else msg "file:line: ...". */
int annal__pj_lua_check(const annal_proj_def *d, char *msg, size_t msg_n);
/* A state for running the file's handlers in projection p; every run of Lua code (the
 * chunk now, each call later) is stopped after budget_ms, or when p is cancelled. */
annal_err annal__pj_lua_open(const annal_proj_def *d, annal_proj *p, const pj_lua_host *host,
                             uint32_t budget_ms, pj_lua **out, char *err, size_t err_n);
void annal__pj_lua_close(pj_lua *l);
int annal__pj_lua_has(pj_lua *l, const char *type);
/* Run on[type](e). *skip_sql set when it returned false; the values it returned are then
 * looked up with annal__pj_lua_value until the next call. */
annal_err annal__pj_lua_call(pj_lua *l, const char *type, annal_proj_tx *tx, const annal_event *ev,
                             int *skip_sql, char *err, size_t err_n);
int annal__pj_lua_value(pj_lua *l, const char *key, annal_proj_value *v);

/* ---- Engine (engine.c). */
/* Tests only: fault(ctx, where) is asked at each fault point ("checkpoint": before the
 * checkpoint is written in a batch's transaction); non-zero fails the step there. */
void annal__pj_set_fault(annal_proj *p, int (*fault)(void *ctx, const char *where), void *ctx);

#endif
