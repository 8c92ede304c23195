/*
 * cli.h -- what the sub-commands of the `annal` command share: exit codes, option
 * parsing, error reporting, progress, tables and the JSON shape of an event.
 * Every sub-command lives in its own file and only talks to the store through annal.h.
 */
#ifndef ANNAL_CLI_H
#define ANNAL_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "annal.h"

/* Exit codes: documented in docs/cli.md and `annal --help`; keep the three in step. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_USAGE = 1,    /* bad command line or bad input (name, UUID, JSON line, size) */
    CLI_EXIT_NOTFOUND = 2, /* no such store or stream */
    CLI_EXIT_CONFLICT = 3, /* wrong expected revision, or an event id used differently */
    CLI_EXIT_CORRUPT = 4,  /* damage found in the store */
    CLI_EXIT_STORE = 5,    /* any other failure: I/O, busy, full disk, out of memory... */
    CLI_EXIT_CONDITION = 6 /* a DCB append condition failed: a matching event came first */
};

/* Settings decided by main.c (which alone reads the environment). */
typedef struct cli_global {
    const char *data_dir; /* --data DIR, else $ANNAL_DATA, else ./data */
    int stderr_tty;       /* progress is shown by default only on a terminal */
    int stdout_tty;       /* tables fit the terminal width only on a terminal */
    int data_dir_flag;    /* data_dir came from --data (not $ANNAL_DATA or the default) */
    char *const *env;     /* the environment, for settings read by commands (config.c) */
    const char *server;   /* --server URL or $ANNAL_SERVER: write through it (route.c) */
    /* Set by route.c's wrapper of `import` when a server owns the store: its appends go
     * through remote (import.c is also built into the fuzz target, without the client). */
    void *remote;
    annal_err (*remote_append)(void *remote, const char *stream, int64_t expected,
                               annal_event_data *evs, size_t n, annal_append_result *res);
    const char *(*remote_errmsg)(void *remote);
    /* ... and its appends of tagged events, or to the DCB stream "$dcb" (route_dcb.c). */
    annal_err (*remote_append_tagged)(void *remote, const char *stream, int64_t expected,
                                      annal_event_data *evs, const annal_tag_list *tags, size_t n,
                                      annal_append_result *res);
    uint64_t wait_ms; /* --wait MS: how long a writer waits for another one to finish */
} cli_global;

#define CLI_WAIT_DEFAULT_MS 5000 /* like sqlite3's busy timeout, but on by default */

/* Sub-commands: argv[0] is the command name. Each returns an exit code. */
typedef int (*cli_cmd_fn)(cli_global *g, int argc, char **argv);
int cli_cmd_append(cli_global *g, int argc, char **argv);
int cli_cmd_read(cli_global *g, int argc, char **argv);
int cli_cmd_streams(cli_global *g, int argc, char **argv);
int cli_cmd_info(cli_global *g, int argc, char **argv);
int cli_cmd_verify(cli_global *g, int argc, char **argv);
int cli_cmd_rebuild_index(cli_global *g, int argc, char **argv);
int cli_cmd_recover(cli_global *g, int argc, char **argv);
int cli_cmd_export(cli_global *g, int argc, char **argv);
int cli_cmd_import(cli_global *g, int argc, char **argv);
int cli_cmd_demo(cli_global *g, int argc, char **argv);
int cli_cmd_meta(cli_global *g, int argc, char **argv);
int cli_cmd_delete(cli_global *g, int argc, char **argv);
int cli_cmd_compact(cli_global *g, int argc, char **argv);
int cli_cmd_subscribe(cli_global *g, int argc, char **argv);
int cli_cmd_projection(cli_global *g, int argc, char **argv);
int cli_cmd_query(cli_global *g, int argc, char **argv);
int cli_cmd_serve(cli_global *g, int argc, char **argv);
int cli_cmd_completion(cli_global *g, int argc, char **argv);
int cli_cmd_cert(cli_global *g, int argc, char **argv);
int cli_cmd_user(cli_global *g, int argc, char **argv);    /* user.c (docs/security.md) */
int cli_cmd_backup(cli_global *g, int argc, char **argv);  /* backup.c */
int cli_cmd_restore(cli_global *g, int argc, char **argv); /* backup.c */
int cli_cmd_find(cli_global *g, int argc, char **argv);    /* find.c: DCB queries */
/* `annal append --batch FILE` (batch.c): FILE's events atomically across streams, if cond
 * (may be NULL) holds. */
int cli_append_batch(cli_global *g, const char *path, const annal_condition *cond);

/* ---- Option parsing: GNU style, options and operands in any order, "--" ends options,
 * "--name=value" or "--name value". --data DIR is accepted by every command. */
typedef struct cli_option {
    const char *name; /* without the leading "--"; NULL ends a table */
    int takes_value;
    int id; /* >= 0, returned by cli_args_next */
} cli_option;

enum { CLI_ARG_END = -1, CLI_ARG_ERROR = -2, CLI_ARG_OPERAND = -3, CLI_ARG_HELP = -4 };

typedef struct cli_args {
    const char *cmd;
    cli_global *g;
    int argc;
    char **argv;
    int i;
    int operands_only;
} cli_args;

void cli_args_init(cli_args *a, cli_global *g, int argc, char **argv);
/* Next option id (value in *value when it takes one), CLI_ARG_OPERAND (*value is it),
 * CLI_ARG_HELP, CLI_ARG_END, or CLI_ARG_ERROR (already reported on stderr). */
int cli_args_next(cli_args *a, const cli_option *opts, const char **value);

/* The options of a command that takes only --json and --all (alias --system): info,
 * streams. Returns -1 to go on, or the exit code when it is done (--help, bad usage). */
int cli_args_json_all(cli_global *g, const char *cmd, const char *usage, int argc, char **argv,
                      int *json, int *all);

/* Strict unsigned decimal: digits only, no sign, no overflow. 0 on success. */
int cli_parse_u64(const char *s, uint64_t *out);

/* ---- Errors: one line on stderr, "annal: CMD: message". */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "annal: CMD: <message>: <detail>" where detail is the store's own explanation; returns
 * the exit code for rc. db may be NULL (failed open). */
int cli_fail(const char *cmd, annal_db *db, annal_err rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "annal: CMD: <message> (see 'annal CMD --help')"; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_exit_code(annal_err rc);
/* Flush stdout and report a failed write (full disk, closed pipe...). Returns rc, or
 * CLI_EXIT_STORE when the output could not be written. */
int cli_finish_output(const char *cmd, FILE *out, const char *name, int rc);
/* Abort on out-of-memory: a command line tool has nothing better to do. */
void *cli_xrealloc(void *p, size_t n);
char *cli_xstrndup(const char *s, size_t n);

/* ---- Opening the store. */
typedef struct cli_progress {
    const char *label;
    int enabled;
    int shown;
    uint64_t done, total;
    struct timespec start, last;
    const char *unit; /* what done and total count; NULL: "events" */
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label, int enabled);
int cli_progress_cb(void *ctx, uint64_t done, uint64_t total); /* an annal_progress_fn */
void cli_progress_end(cli_progress *p); /* final figure and newline if anything was shown */

/* Options with the CLI's logger (warnings on stderr) and progress (may be NULL). */
void cli_db_opts(annal_db_opts *o, unsigned flags, cli_progress *progress);
/* Open g->data_dir; on failure report it and return the exit code, else 0. */
int cli_open(cli_global *g, const char *cmd, unsigned flags, cli_progress *progress,
             annal_db **out);
/* annal_db_open, waiting up to g->wait_ms while another process writes (ANNAL_EBUSY). */
annal_err cli_open_waiting(cli_global *g, const annal_db_opts *o, annal_db **out);
/* Text of the last error the library logged (for failures without a handle), or "". */
const char *cli_last_logged_error(void);

/* ---- Time. */
#define CLI_TIME_LEN 100 /* room for any int the formats could print */
void cli_time_rfc3339(int64_t ns, char out[CLI_TIME_LEN]); /* 2026-11-26T15:30:38.123456Z */
void cli_time_short(int64_t ns, char out[CLI_TIME_LEN]);   /* 2026-11-26 15:30:38 */

/* ---- Growable byte buffer (aborts on out-of-memory). */
typedef struct cli_buf {
    char *p;
    size_t len, cap;
} cli_buf;
void cli_buf_add(cli_buf *b, const void *s, size_t n);
void cli_buf_addc(cli_buf *b, char c);
void cli_buf_adds(cli_buf *b, const char *s);
void cli_buf_addf(cli_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *cli_buf_cstr(cli_buf *b); /* NUL-terminated view (NUL not counted in len) */
void cli_buf_free(cli_buf *b);

/* ---- JSON. Store bytes are shown as JSON when jansson accepts them (flags below);
 * otherwise as a string with "<field>_encoding": "text", or base64 for non-UTF-8. */
#define CLI_JSON_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)
int cli_utf8_valid(const void *s, size_t n);
int cli_json_valid(const void *s, size_t n);
/* Append valid JSON s with the whitespace between tokens removed: numbers, escapes and
 * key order stay exactly as written. */
void cli_json_add_compact(cli_buf *b, const void *s, size_t n);
/* Append s as a JSON string; bytes that are not UTF-8 become U+FFFD. */
void cli_json_add_string(cli_buf *b, const void *s, size_t n);
void cli_base64_add(cli_buf *b, const void *s, size_t n);
int cli_base64_decode(const char *s, size_t n, cli_buf *out); /* 0 ok, -1 malformed */
/* Raw text of top-level member key of the JSON object text obj (which must be valid).
 * Returns 1 and sets *val, *val_len if found (the last one, as jansson keeps). */
int cli_json_member(const char *obj, size_t n, const char *key, const char **val, size_t *val_len);
/* The event as one JSON object (no newline), the shape of read --json and export. */
void cli_event_json(cli_buf *b, const annal_event *ev);
/* Bytes as one display line for tables: compact JSON, text, or "<N bytes binary>". */
void cli_data_preview(cli_buf *b, const void *s, size_t n);

/* ---- Aligned tables for humans. The first rows (or all, when few) set column widths;
 * the last column is cut to the terminal width (120 columns when not a terminal). */
#define CLI_TABLE_MAXCOLS 8
typedef struct cli_table {
    FILE *out;
    int ncols;
    const char *heads[CLI_TABLE_MAXCOLS];
    int right[CLI_TABLE_MAXCOLS];    /* right-align (numbers) */
    int optional[CLI_TABLE_MAXCOLS]; /* hidden when empty in every sampled row */
    int hidden[CLI_TABLE_MAXCOLS];
    size_t maxw[CLI_TABLE_MAXCOLS];
    size_t width[CLI_TABLE_MAXCOLS];
    size_t term_cols;
    int fixed;
    char **pending; /* ncols cells per buffered row */
    size_t npending;
} cli_table;
/* spec: "NAME" left-aligned, ">NAME" right-aligned, "?NAME" left-aligned and hidden when
 * empty in the sampled rows (a later row's text for it then leads the last column, in
 * brackets); maxw 0 = no cap. */
void cli_table_init(cli_table *t, cli_global *g, FILE *out, int ncols, const char *const *spec,
                    const size_t *maxw);
void cli_table_row(cli_table *t, const char *const *cells);
void cli_table_end(cli_table *t);

/* ---- DCB queries (dcbquery.c): the text forms of an annal_query (docs/cli.md, "Queries").
 * Owns its strings; q.items points into view, valid until the next change or free. */
typedef struct cli_query_item {
    char **types, **tags;
    size_t ntypes, ntags;
} cli_query_item;
typedef struct cli_query {
    cli_query_item *items;
    size_t nitems;
    annal_query_item *view;
    annal_query q;
} cli_query;
/* Parse text: '*' (every event), JSON ({"items":[{"types":[..],"tags":[..]}]} or the items
 * array alone), or the short form "type=A,B tag=x tag=y | type=C" (items OR'd). Items are
 * added to out. 0, or -1 with the reason in err. */
int cli_query_parse(const char *text, cli_query *out, char *err, size_t errlen);
void cli_query_new_item(cli_query *q);
void cli_query_add(cli_query *q, int is_tag, const char *s); /* to the last item */
const annal_query *cli_query_view(cli_query *q);             /* the annal_query to pass */
void cli_query_free(cli_query *q);
/* A tag list as JSON ("tags":[...] is how events carry them): ["a","b"]. */
void cli_tags_json(cli_buf *b, const annal_event *ev);
/* "condition failed" said in the user's terms: which event matched (its position, type and
 * stream, read back when db is not NULL). Returns CLI_EXIT_CONDITION. */
int cli_report_condition(const char *cmd, annal_db *db, uint64_t position, uint64_t after);

/* The write-side stories of `annal demo` (demo_decide.c): stream names end in suffix. */
int cli_demo_decide(annal_db *db, const char *suffix);

#endif
