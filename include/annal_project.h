/*
 * annal_project.h -- the public interface of libannal_project: projections that turn the
 * events of an annal store into read models in SQLite or PostgreSQL (docs/projections.md).
 * Anything not declared here is private. Conventions are those of annal.h: every call
 * that can fail returns annal_err, ownership is stated beside each declaration.
 *
 * A projection reads a source ($all, $ce-<category>, $et-<type> or one stream) from its
 * checkpoint and applies events to a target database in batches; the checkpoint (row
 * `name` of the table annal_projections in the target) is written in the same
 * transaction as the read-model changes, so a crash never loses or repeats an effect.
 * Handlers come from a projection file (SQL per event type, optional Lua 5.4) or from C.
 */
#ifndef ANNAL_PROJECT_H
#define ANNAL_PROJECT_H

#include "annal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------
 * Projection files.
 */
typedef struct annal_proj_def annal_proj_def; /* opaque: a parsed, checked projection file */

/* Parse the projection file text (borrowed, len bytes). filename (borrowed, may be NULL)
 * prefixes messages. On success *out is freed with annal_proj_def_free(). On
 * ANNAL_EINVAL err (err_size bytes, may be NULL) gets "file:line: what is wrong";
 * also ANNAL_ENOMEM. Lua code is compiled here, so syntax errors are reported too. */
ANNAL_API annal_err annal_proj_def_parse(const char *text, size_t len, const char *filename,
                                         annal_proj_def **out, char *err, size_t err_size);
/* The same from the file at path (borrowed); ANNAL_ENOTFOUND / ANNAL_EIO when unreadable. */
ANNAL_API annal_err annal_proj_def_load(const char *path, annal_proj_def **out, char *err,
                                        size_t err_size);
ANNAL_API void annal_proj_def_free(annal_proj_def *d); /* NULL is a no-op */

/* Header values of the file: static to d, NULL when the file does not set them. */
ANNAL_API const char *annal_proj_def_name(const annal_proj_def *d);
ANNAL_API const char *annal_proj_def_source(const annal_proj_def *d);
ANNAL_API const char *annal_proj_def_target(const annal_proj_def *d);
/* 1 if the file declares `emits yes` (its Lua appends events: the store must be writable). */
ANNAL_API int annal_proj_def_emits(const annal_proj_def *d);

/* ------------------------------------------------------------------------------------
 * Values bound to SQL parameters and read back from rows.
 */
typedef enum annal_proj_kind {
    ANNAL_PROJ_NULL,
    ANNAL_PROJ_INT,
    ANNAL_PROJ_REAL,
    ANNAL_PROJ_TEXT
} annal_proj_kind;

typedef struct annal_proj_value {
    annal_proj_kind kind;
    int64_t i;     /* INT */
    double d;      /* REAL */
    const char *s; /* TEXT: borrowed, len bytes (NUL-terminated when read from a row) */
    size_t len;
} annal_proj_value;

/* A row of a query: n columns, names and values borrowed for the call. Return non-zero to
 * stop (the query then returns ANNAL_ECANCELED). */
typedef int (*annal_proj_row_fn)(void *ctx, int n, const char *const *names,
                                 const annal_proj_value *values);

/* ------------------------------------------------------------------------------------
 * Projections in C.
 */
typedef struct annal_proj_tx annal_proj_tx; /* the open transaction of a batch */

/* Run sql (borrowed; one statement, parameters written `?` for both targets) with n
 * params in the batch's transaction; rows (may be NULL) gets each result row. Statements
 * are prepared once per text and cached. Errors: ANNAL_EINVAL (SQL error: see
 * annal_proj_errmsg), ANNAL_EIO (database failure), ANNAL_ENOMEM. */
ANNAL_API annal_err annal_proj_exec(annal_proj_tx *tx, const char *sql,
                                    const annal_proj_value *params, size_t n,
                                    annal_proj_row_fn rows, void *ctx);

/* Append an event to stream (transformation projections). Its id is derived from the
 * projection's name, the event being applied and the number of emits made for it so far,
 * so a replay after a crash or a rebuild re-appends the same ids, which the store
 * ignores (idempotent appends). data and metadata are borrowed. Needs a writable store.
 * Errors: those of annal_append. */
ANNAL_API annal_err annal_proj_emit(annal_proj_tx *tx, const char *stream, const char *type,
                                    const void *data, size_t data_len, const void *metadata,
                                    size_t metadata_len);

#define ANNAL_PROJ_HANDLER_VERSION 1

typedef struct annal_proj_handler {
    int version; /* ANNAL_PROJ_HANDLER_VERSION */
    /* Create the read model (run in the first transaction of a new target). May be NULL. */
    annal_err (*setup)(void *ctx, annal_proj_tx *tx);
    /* Apply ev (borrowed for the call). An error fails the event: the batch is rolled
     * back and the projection stops at it (see annal_proj_status). tx is NULL for the
     * "memory" target. Required. */
    annal_err (*apply)(void *ctx, annal_proj_tx *tx, const annal_event *ev);
} annal_proj_handler;

/* ------------------------------------------------------------------------------------
 * Running a projection.
 */
typedef struct annal_proj annal_proj; /* opaque; one thread at a time, except cancel */

typedef struct annal_proj_opts {
    const char *name;   /* 1..63 bytes of [A-Za-z0-9_.-]; NULL: the file's `projection` */
    const char *source; /* "$all", "$ce-<cat>", "$et-<type>" or a stream; NULL: the file's */
    /* "sqlite:PATH", "postgresql:CONNINFO" or "memory" (no database; C handlers only;
     * the checkpoint lives in the handle). NULL: the file's. All three strings are copied. */
    const char *target;
    const annal_proj_def *def;         /* borrowed for the handle's life; or NULL and: */
    const annal_proj_handler *handler; /* copied; used when def is NULL */
    void *ctx;                         /* for the handler's callbacks */
    uint32_t batch_events;             /* events per transaction; default 500 */
    /* Problems that fail nothing (a reconnect, a failed event). msg valid during the call. */
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;
    /* Longest a run of the file's Lua code may take: the chunk at open, each handler call
     * (its sql() included). Past it the code is stopped and the event fails with the
     * file's line ("file:line: Lua ran longer than its budget of N ms"). Default
     * ANNAL_PROJ_LUA_BUDGET_MS; 0 also means the default. */
    uint32_t lua_budget_ms;
    /* 1: one projector per projection. The open fails with ANNAL_EBUSY (err names the
     * process) while another live projector (another process: see annal_proj_status's
     * projector_pid) holds the projection; checked and claimed in one transaction of the
     * target. 0 (default): a second projector is let in; the two serialise on the
     * target's lock and apply nothing twice, but both do the work. */
    int exclusive;
} annal_proj_opts;

#define ANNAL_PROJ_LUA_BUDGET_MS 5000

ANNAL_API void annal_proj_opts_init(annal_proj_opts *o); /* defaults; call before setting */

/* Open the projection described by o on db (borrowed: it must outlive the handle; a
 * read-only handle unless the projection emits). Connects to the target, creates the
 * state table and, for a new target, the read model (the file's [schema]), and prepares
 * every statement, so SQL errors are reported here with the file's line number.
 * Errors: ANNAL_EINVAL (bad options, SQL or Lua error: detail in err), ANNAL_EIO
 * (cannot open or connect to the target), ANNAL_ENOMEM. *out is closed with
 * annal_proj_close(). err (may be NULL) gets the detail of a failure. */
ANNAL_API annal_err annal_proj_open(annal_db *db, const annal_proj_opts *o, annal_proj **out,
                                    char *err, size_t err_size);
ANNAL_API void annal_proj_close(annal_proj *p); /* NULL is a no-op */

/* Detail of the last failure on p: text owned by p, valid until its next call. */
ANNAL_API const char *annal_proj_errmsg(const annal_proj *p);

/* Apply at most one batch (one transaction). *applied (may be NULL) gets the number of
 * events the batch applied or passed over. Returns ANNAL_OK after a batch, ANNAL_END when
 * nothing was there to apply (caught up), ANNAL_EBUSY when the projection is paused or
 * stopped at a failed event (status says which; nothing is applied until an operator
 * resumes, retries or skips), or an error of the target or the store. An event that
 * fails is not an error of this call: the events before it are committed, the projection
 * is marked failed with the event and the error, and ANNAL_EBUSY follows. */
ANNAL_API annal_err annal_proj_step(annal_proj *p, uint64_t *applied);

/* Step until caught up (once != 0) or until annal_proj_cancel (then ANNAL_ECANCELED),
 * waiting for new events and for operator commands while idle. Returns an error of the
 * target or store (after retrying a lost connection) or ANNAL_EBUSY when once is set and
 * the projection is paused or failed. */
ANNAL_API annal_err annal_proj_run(annal_proj *p, int once);
/* Stop p: annal_proj_run returns ANNAL_ECANCELED at the end of the current batch, and Lua
 * code running meanwhile is interrupted (its batch rolled back, nothing marked failed),
 * so a step then returns ANNAL_ECANCELED. For good: Lua code of p stays interrupted.
 * Any thread, and async-signal-safe (a SIGTERM handler may call it). */
ANNAL_API void annal_proj_cancel(annal_proj *p);

/* ------------------------------------------------------------------------------------
 * Operating a projection through its target, from any process (the state row is the
 * channel: a running projector reads it at every batch).
 */
typedef enum annal_proj_state {
    ANNAL_PROJ_RUNNING, /* applying: a live projector holds it (see projector_pid) */
    ANNAL_PROJ_STOPPED, /* would run, but no live projector holds it */
    ANNAL_PROJ_PAUSED,  /* an operator paused it */
    ANNAL_PROJ_FAILED,  /* stopped at a failed event (error, error_position, error_event) */
    ANNAL_PROJ_REPLACED /* a rebuild replaced this read model */
} annal_proj_state;

/* "running", "stopped", "paused", "failed", "replaced"; "unknown" for other values.
 * Static text. */
ANNAL_API const char *annal_proj_state_name(annal_proj_state s);

/* A projector is live while it writes its heartbeat (every second; at every batch that
 * takes longer, at the next) and, on the same host, its process exists. A projector that
 * closes its handle says so at once; one killed is seen stopped after at most this. */
#define ANNAL_PROJ_HEARTBEAT_STALE_MS 10000

typedef struct annal_proj_status {
    char name[64];
    annal_proj_state state;
    uint64_t position;       /* every event before this $all position is applied or passed */
    uint64_t revision;       /* the same as a revision, for a one-stream source */
    uint64_t events;         /* events applied so far */
    int64_t last_event_ns;   /* commit time of the last applied event (0: none) */
    int64_t updated_ns;      /* when the projector last wrote the row */
    double rate;             /* events/s applied over the last batches */
    char error[512];         /* the failed event's error, "" when none */
    uint64_t error_position; /* the failed event's position */
    char error_event[384];   /* "stream@revision Type id" of the failed event */
    /* The projector that last held it (0 / "" / 0 when none ever did or it closed): its
     * process id, host name and last heartbeat (Unix time, ns). Kept when it died, for
     * the operator; state says whether it is live. */
    int64_t projector_pid;
    char projector_host[64];
    int64_t heartbeat_ns;
} annal_proj_status;

/* Status of projection name (borrowed) in target (borrowed). ANNAL_ENOTFOUND if the target
 * has no such row. err as in annal_proj_open. */
ANNAL_API annal_err annal_proj_status_get(const char *target, const char *name,
                                          annal_proj_status *out, char *err, size_t err_size);

typedef enum annal_proj_cmd {
    ANNAL_PROJ_PAUSE,  /* stop applying after the current batch */
    ANNAL_PROJ_RESUME, /* go on after a pause */
    ANNAL_PROJ_RETRY,  /* apply the failed event again */
    ANNAL_PROJ_SKIP,   /* pass over the failed event and go on after it */
    ANNAL_PROJ_FORGET  /* delete the state row (the read model's tables stay) */
} annal_proj_cmd;

/* Send cmd to projection name in target. ANNAL_ENOTFOUND (no row), ANNAL_EINVAL (RETRY or
 * SKIP of a projection that has not failed, RESUME of one that is not paused). */
ANNAL_API annal_err annal_proj_control(const char *target, const char *name, annal_proj_cmd cmd,
                                       char *err, size_t err_size);

/* Read-your-writes: wait until projection name in target has passed $all position
 * `position` (the first_position + count - 1 an append returned), up to timeout_ms (-1:
 * forever). ANNAL_OK, ANNAL_ETIMEDOUT, ANNAL_EBUSY (the projection failed before reaching
 * it), or an error of the target. */
ANNAL_API annal_err annal_proj_wait(const char *target, const char *name, uint64_t position,
                                    int timeout_ms, char *err, size_t err_size);

/* Run sql (borrowed; one statement, no parameters) against target, calling rows (may be
 * NULL) for every result row. For queries of read models (`annal query`). name (may be
 * NULL) is the projection whose PostgreSQL schema is put first on the search path. */
ANNAL_API annal_err annal_proj_query(const char *target, const char *name, const char *sql,
                                     annal_proj_row_fn rows, void *ctx, char *err, size_t err_size);

/* Rebuild the projection described by o from the start of its source into a shadow (a
 * new SQLite file; a new PostgreSQL schema) while the old read model goes on answering
 * queries and appends go on; once the shadow has caught up it replaces the old model
 * atomically, and a projector running on the old one switches over at its next batch.
 * progress (may be NULL) gets events done and the head. Errors: those of annal_proj_open
 * and annal_proj_step; ANNAL_EBUSY if an event fails during the rebuild (err says which;
 * the old model is kept). */
ANNAL_API annal_err annal_proj_rebuild(annal_db *db, const annal_proj_opts *o,
                                       annal_progress_fn progress, void *progress_ctx, char *err,
                                       size_t err_size);

#ifdef __cplusplus
}
#endif
#endif /* ANNAL_PROJECT_H */
