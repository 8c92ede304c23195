/*
 * util.c -- the plumbing every sub-command of `annal` shares: option parsing, one-line
 * errors and exit codes, opening the store, progress on stderr, times and tables.
 * Nothing here knows about a particular sub-command.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

/* ---------------------------------------------------------------- memory */

void *cli_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("annal: out of memory\n", stderr);
        exit(CLI_EXIT_STORE);
    }
    return q;
}

char *cli_xstrndup(const char *s, size_t n) {
    char *d = cli_xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---------------------------------------------------------------- errors */

int cli_exit_code(annal_err rc) {
    switch (rc) {
    case ANNAL_OK:
    case ANNAL_END: return CLI_EXIT_OK;
    case ANNAL_EINVAL:
    case ANNAL_ETOOBIG: return CLI_EXIT_USAGE; /* the request itself was wrong: fix the input */
    case ANNAL_ENOTFOUND: return CLI_EXIT_NOTFOUND;
    case ANNAL_ECONFLICT:
    case ANNAL_EDUPLICATE: return CLI_EXIT_CONFLICT;
    case ANNAL_ECORRUPT: return CLI_EXIT_CORRUPT;
    case ANNAL_ECONDITION: return CLI_EXIT_CONDITION;
    default: return CLI_EXIT_STORE;
    }
}

static void vreport(const char *cmd, const char *fmt, va_list ap, const char *detail,
                    const char *suffix) {
    /* Build the whole line first so that it reaches stderr in one write. */
    char line[2048];
    int n = snprintf(line, sizeof line, "annal: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    if (n < 0) n = 0;
    if ((size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (detail && *detail && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ": %s", detail);
    if (suffix && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, "%s", suffix);
    /* Detail texts come from the library and may in theory hold a newline: keep one line. */
    for (char *c = line; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    fprintf(stderr, "%s\n", line);
}

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap, NULL, NULL);
    va_end(ap);
}

int cli_fail(const char *cmd, annal_db *db, annal_err rc, const char *fmt, ...) {
    const char *detail = db ? annal_db_errmsg(db) : cli_last_logged_error();
    if (!detail || !*detail) detail = annal_strerror(rc);
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap, detail, NULL);
    va_end(ap);
    return cli_exit_code(rc);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    char suffix[128];
    if (cmd)
        snprintf(suffix, sizeof suffix, " (see 'annal %s --help')", cmd);
    else
        snprintf(suffix, sizeof suffix, " (see 'annal --help')");
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap, NULL, suffix);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_finish_output(const char *cmd, FILE *out, const char *name, int rc) {
    if (fflush(out) != 0 || ferror(out)) {
        cli_error(cmd, "cannot write %s: %s", name, strerror(errno));
        return rc ? rc : CLI_EXIT_STORE;
    }
    return rc;
}

/* ---------------------------------------------------------------- options */

void cli_args_init(cli_args *a, cli_global *g, int argc, char **argv) {
    a->cmd = argv[0];
    a->g = g;
    a->argc = argc;
    a->argv = argv;
    a->i = 1;
    a->operands_only = 0;
}

int cli_args_next(cli_args *a, const cli_option *opts, const char **value) {
    while (a->i < a->argc) {
        const char *arg = a->argv[a->i++];
        *value = NULL;
        if (a->operands_only || arg[0] != '-' || arg[1] == '\0') {
            *value = arg;
            return CLI_ARG_OPERAND;
        }
        if (strcmp(arg, "--") == 0) {
            a->operands_only = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0) return CLI_ARG_HELP;
        if (arg[1] != '-') {
            /* A negative number is data, not an option (e.g. `append s T -5`). */
            if (arg[1] >= '0' && arg[1] <= '9') {
                *value = arg;
                return CLI_ARG_OPERAND;
            }
            return cli_usage_error(a->cmd, "unknown option %s", arg), CLI_ARG_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (nlen == 4 && strncmp(name, "help", 4) == 0) return CLI_ARG_HELP;
        static const cli_option data_opt = {"data", 1, -100}, wait_opt = {"wait", 1, -101};
        const cli_option *o = NULL;
        if (nlen == 4 && strncmp(name, "data", 4) == 0) o = &data_opt;
        if (nlen == 4 && strncmp(name, "wait", 4) == 0) o = &wait_opt;
        for (const cli_option *p = opts; !o && p && p->name; p++)
            if (strlen(p->name) == nlen && strncmp(p->name, name, nlen) == 0) o = p;
        if (!o)
            return cli_usage_error(a->cmd, "unknown option --%.*s", (int)nlen, name), CLI_ARG_ERROR;
        if (o->takes_value) {
            if (eq)
                *value = eq + 1;
            else if (a->i < a->argc)
                *value = a->argv[a->i++];
            else
                return cli_usage_error(a->cmd, "option --%s needs a value", o->name), CLI_ARG_ERROR;
        } else if (eq) {
            return cli_usage_error(a->cmd, "option --%s takes no value", o->name), CLI_ARG_ERROR;
        }
        if (o == &data_opt) {
            /* Accepted after the command too, for convenience; same meaning as before it. */
            if (!**value) return cli_usage_error(a->cmd, "--data needs a directory"), CLI_ARG_ERROR;
            a->g->data_dir = *value;
            continue;
        }
        if (o == &wait_opt) {
            if (cli_parse_u64(*value, &a->g->wait_ms) != 0)
                return cli_usage_error(a->cmd, "--wait needs a number of milliseconds"),
                       CLI_ARG_ERROR;
            continue;
        }
        return o->id;
    }
    return CLI_ARG_END;
}

int cli_args_json_all(cli_global *g, const char *cmd, const char *usage, int argc, char **argv,
                      int *json, int *all) {
    enum { OPT_JSON, OPT_ALL };
    static const cli_option options[] = {
        {"json", 0, OPT_JSON}, {"all", 0, OPT_ALL}, {"system", 0, OPT_ALL}, {NULL, 0, 0}};
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    *json = *all = 0;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output(cmd, stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND: return cli_usage_error(cmd, "unexpected argument '%s'", v);
        case OPT_JSON: *json = 1; break;
        case OPT_ALL: *all = 1; break;
        }
    }
    return -1;
}

int cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9')
        return -1; /* strtoull would accept blanks, signs and wrap negatives */
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* ---------------------------------------------------------------- store */

static char last_logged[1024];

static void log_cb(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx;
    if (level == ANNAL_LOG_ERROR) {
        /* Kept, not printed: the failing call reports it as the detail of its one line. */
        snprintf(last_logged, sizeof last_logged, "%s", msg);
    } else if (level == ANNAL_LOG_WARN) {
        fprintf(stderr, "annal: warning: %s\n", msg);
    }
}

const char *cli_last_logged_error(void) { return last_logged; }

void cli_db_opts(annal_db_opts *o, unsigned flags, cli_progress *progress) {
    annal_db_opts_init(o);
    o->flags = flags;
    o->log = log_cb;
    o->log_ctx = NULL;
    if (progress) {
        o->progress = cli_progress_cb;
        o->progress_ctx = progress;
    }
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Open; while another process holds the writer lock (ANNAL_EBUSY), try again until
 * g->wait_ms have passed, as sqlite3's busy timeout does: parallel `annal append`s then
 * take turns instead of failing. Short sleeps first (an append holds the lock for
 * milliseconds), growing to 50 ms, with jitter so that waiters do not move in step. */
annal_err cli_open_waiting(cli_global *g, const annal_db_opts *o, annal_db **out) {
    uint64_t deadline = now_ms() + g->wait_ms;
    unsigned sleep_us = 1000, seed = (unsigned)getpid();
    for (;;) {
        last_logged[0] = '\0';
        annal_err rc = annal_db_open(g->data_dir, o, out);
        if (rc != ANNAL_EBUSY || (o->flags & ANNAL_OPEN_READONLY) || now_ms() >= deadline)
            return rc;
        seed = seed * 1103515245u + 12345u;
        struct timespec ts = {0, (long)(sleep_us + (seed >> 8) % sleep_us) * 1000};
        nanosleep(&ts, NULL);
        if (sleep_us < 50000) sleep_us *= 2;
    }
}

int cli_open(cli_global *g, const char *cmd, unsigned flags, cli_progress *progress,
             annal_db **out) {
    /* Opening may catch the index up with a long log: show it like any long operation.
     * Static, because the handle may keep the callback's context. */
    static cli_progress open_progress;
    if (!progress) {
        cli_progress_init(&open_progress, "opening store", g->stderr_tty);
        progress = &open_progress;
    }
    annal_db_opts o;
    cli_db_opts(&o, flags, progress);
    *out = NULL;
    annal_err rc = cli_open_waiting(g, &o, out);
    cli_progress_end(progress);
    if (rc == ANNAL_OK) return 0;
    *out = NULL;
    if (rc == ANNAL_ENOTFOUND) {
        cli_error(cmd, "no store at %s (pass --data DIR or set ANNAL_DATA)", g->data_dir);
        return CLI_EXIT_NOTFOUND;
    }
    return cli_fail(cmd, NULL, rc, "cannot open store %s", g->data_dir);
}

/* ---------------------------------------------------------------- progress */

static double seconds_between(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

void cli_progress_init(cli_progress *p, const char *label, int enabled) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->enabled = enabled;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
    p->last = p->start;
}

/* "12.3k" for rates and counts read at a glance. */
static void short_num(double v, char *out, size_t len) {
    if (v >= 1e6)
        snprintf(out, len, "%.1fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(out, len, "%.1fk", v / 1e3);
    else
        snprintf(out, len, "%.0f", v);
}

/* One line, redrawn in place: done/total, percent, rate and time left (when the total
 * is known), e.g. "verify: 1200/5000 events (24%), 3.1k events/s, 2s left". */
static void progress_draw(cli_progress *p) {
    const char *unit = p->unit ? p->unit : "events";
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = seconds_between(&p->start, &now);
    double rate = secs > 0 ? (double)p->done / secs : 0;
    char line[256];
    int n;
    if (p->total > 0 && p->done <= p->total)
        n = snprintf(line, sizeof line, "%s: %llu/%llu %s (%u%%)", p->label,
                     (unsigned long long)p->done, (unsigned long long)p->total, unit,
                     (unsigned)(p->done * 100.0 / (double)p->total));
    else
        n = snprintf(line, sizeof line, "%s: %llu %s", p->label, (unsigned long long)p->done, unit);
    if (n > 0 && (size_t)n < sizeof line && rate > 0) {
        char rs[32];
        short_num(rate, rs, sizeof rs);
        n += snprintf(line + n, sizeof line - (size_t)n, ", %s %s/s", rs, unit);
        if (p->total > p->done && (size_t)n < sizeof line) {
            double left = (double)(p->total - p->done) / rate;
            if (left < 60)
                snprintf(line + n, sizeof line - (size_t)n, ", %.0fs left", left + 0.5);
            else if (left < 3600)
                snprintf(line + n, sizeof line - (size_t)n, ", %.0fm%02.0fs left", left / 60,
                         (double)((long)left % 60));
            else
                snprintf(line + n, sizeof line - (size_t)n, ", %.1fh left", left / 3600);
        }
    }
    /* \033[K clears what a longer previous line left, on a terminal only. */
    fprintf(stderr, "\r%s%s", line, isatty(STDERR_FILENO) ? "\033[K" : "  ");
    p->shown = 1;
}

int cli_progress_cb(void *ctx, uint64_t done, uint64_t total) {
    cli_progress *p = ctx;
    p->done = done;
    p->total = total;
    if (!p->enabled) return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* ~5 updates a second, and nothing at all for operations shorter than that. */
    if (seconds_between(p->shown ? &p->last : &p->start, &now) < 0.2) return 0;
    p->last = now;
    progress_draw(p);
    return 0;
}

void cli_progress_end(cli_progress *p) {
    /* enabled == 2 means --progress was asked for: then always give the final figure. */
    if (p->shown || p->enabled == 2) {
        progress_draw(p);
        fputc('\n', stderr);
    }
    p->shown = 0;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
}

/* ---------------------------------------------------------------- time */

static int split_ns(int64_t ns, struct tm *tm, long *micros) {
    int64_t sec = ns / 1000000000;
    int64_t rem = ns % 1000000000;
    if (rem < 0) { /* floor, so that times before 1970 still print correctly */
        rem += 1000000000;
        sec--;
    }
    time_t t = (time_t)sec;
    *micros = (long)(rem / 1000);
    return gmtime_r(&t, tm) ? 0 : -1;
}

void cli_time_rfc3339(int64_t ns, char out[CLI_TIME_LEN]) {
    struct tm tm;
    long us;
    if (split_ns(ns, &tm, &us) != 0) {
        snprintf(out, CLI_TIME_LEN, "?");
        return;
    }
    snprintf(out, CLI_TIME_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

void cli_time_short(int64_t ns, char out[CLI_TIME_LEN]) {
    struct tm tm;
    long us;
    if (split_ns(ns, &tm, &us) != 0) {
        snprintf(out, CLI_TIME_LEN, "?");
        return;
    }
    snprintf(out, CLI_TIME_LEN, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---------------------------------------------------------------- tables */

#define TABLE_SAMPLE_ROWS 200 /* rows looked at to choose the column widths */

/* Terminal columns taken by UTF-8 text: one per code point (good enough for names). */
static size_t text_cols(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

/* Print s in exactly w columns (w == 0: as is), cutting with an ellipsis. */
static void put_cell(FILE *out, const char *s, size_t w, int right, int pad) {
    size_t cols = text_cols(s);
    if (w && cols > w) {
        size_t keep = w - 1, seen = 0;
        const char *p = s;
        for (; *p; p++) {
            if (((unsigned char)*p & 0xC0) != 0x80) {
                if (seen == keep) break;
                seen++;
            }
        }
        fwrite(s, 1, (size_t)(p - s), out);
        fputs("\xE2\x80\xA6", out); /* … */
        return;
    }
    if (right)
        for (size_t i = cols; i < w; i++) fputc(' ', out);
    fputs(s, out);
    if (!right && pad)
        for (size_t i = cols; i < w; i++) fputc(' ', out);
}

void cli_table_init(cli_table *t, cli_global *g, FILE *out, int ncols, const char *const *spec,
                    const size_t *maxw) {
    memset(t, 0, sizeof *t);
    t->out = out;
    t->ncols = ncols > CLI_TABLE_MAXCOLS ? CLI_TABLE_MAXCOLS : ncols;
    for (int c = 0; c < t->ncols; c++) {
        t->right[c] = spec[c][0] == '>';
        t->optional[c] = spec[c][0] == '?';
        t->heads[c] = spec[c] + (t->right[c] || t->optional[c] ? 1 : 0);
        t->maxw[c] = maxw ? maxw[c] : 0;
    }
    t->term_cols = 120;
    struct winsize ws;
    if (g->stdout_tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        t->term_cols = ws.ws_col;
}

/* The last cell led by the text of hidden columns ("[a] [b] last"), or NULL when no hidden
 * column has any: a hidden column's later text is not lost. Caller frees. */
static char *lead_text(const cli_table *t, const char *const *cells) {
    size_t n = 0;
    for (int c = 0; c < t->ncols; c++)
        if (t->hidden[c] && cells != t->heads && cells[c][0]) n += strlen(cells[c]) + 3;
    if (!n) return NULL;
    const char *last = cells[t->ncols - 1];
    size_t size = n + strlen(last) + 1, at = 0;
    char *s = cli_xrealloc(NULL, size);
    for (int c = 0; c < t->ncols; c++)
        if (t->hidden[c] && cells != t->heads && cells[c][0])
            at += (size_t)snprintf(s + at, size - at, "[%s] ", cells[c]);
    snprintf(s + at, size - at, "%s", last);
    return s;
}

static void table_print_row(cli_table *t, const char *const *cells) {
    size_t used = 0;
    char *lead = lead_text(t, cells);
    for (int c = 0; c < t->ncols; c++) {
        int last = c == t->ncols - 1;
        if (t->hidden[c]) continue;
        size_t w = t->width[c];
        const char *cell = last && lead ? lead : cells[c];
        /* The last: whatever the terminal has left, but never squeeze it to nothing. */
        if (last) w = t->term_cols > used + 20 ? t->term_cols - used : 20;
        put_cell(t->out, cell, w, t->right[c] && !last, !last);
        if (!last) {
            fputs("  ", t->out);
            used += t->width[c] + 2;
        }
    }
    fputc('\n', t->out);
    free(lead);
}

static void table_fix(cli_table *t) {
    for (int c = 0; c < t->ncols; c++) {
        size_t w = text_cols(t->heads[c]);
        for (size_t r = 0; r < t->npending; r++) {
            size_t cw = text_cols(t->pending[r * (size_t)t->ncols + (size_t)c]);
            if (cw > w) w = cw;
        }
        if (t->maxw[c] && w > t->maxw[c]) w = t->maxw[c];
        t->width[c] = w;
        int empty = 1;
        for (size_t r = 0; empty && r < t->npending; r++)
            empty = !t->pending[r * (size_t)t->ncols + (size_t)c][0];
        t->hidden[c] = t->optional[c] && empty && c < t->ncols - 1;
    }
    t->fixed = 1;
    table_print_row(t, t->heads);
    for (size_t r = 0; r < t->npending; r++) {
        char **row = &t->pending[r * (size_t)t->ncols];
        table_print_row(t, (const char *const *)row);
        for (int c = 0; c < t->ncols; c++) free(row[c]);
    }
    free(t->pending);
    t->pending = NULL;
    t->npending = 0;
}

void cli_table_row(cli_table *t, const char *const *cells) {
    if (t->fixed) {
        table_print_row(t, cells);
        return;
    }
    t->pending = cli_xrealloc(t->pending, (t->npending + 1) * (size_t)t->ncols * sizeof(char *));
    for (int c = 0; c < t->ncols; c++)
        t->pending[t->npending * (size_t)t->ncols + (size_t)c] =
            cli_xstrndup(cells[c], strlen(cells[c]));
    t->npending++;
    if (t->npending >= TABLE_SAMPLE_ROWS) table_fix(t);
}

void cli_table_end(cli_table *t) {
    /* An empty table prints nothing at all, not even its header. */
    if (!t->fixed && t->npending > 0) table_fix(t);
    free(t->pending);
    t->pending = NULL;
}
