/*
 * projection.c -- `annal projection add|list|status|run|rebuild|pause|resume|retry|skip|
 * wait|remove`: projections registered in the store directory (DIR/projections/NAME.proj,
 * the file as given, plus NAME.target when --target overrode it) and run by a projector
 * process. Status and commands go through each projection's state row in its target, so
 * they reach a projector running in another process.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "annal_project.h"
#include "cli.h"
#include "route.h"

static const char usage[] =
    "usage: annal [--data DIR] projection <action> [args]\n"
    "\n"
    "Projections turn events into read models in SQLite or PostgreSQL (docs/projections.md).\n"
    "\n"
    "Actions:\n"
    "  add FILE [--name N] [--target T] [--replace]\n"
    "                      check the projection file (SQL is tried on an empty SQLite model)\n"
    "                      and register it as DIR/projections/N.proj\n"
    "  list                registered projections with source, target and state\n"
    "  status [NAME...] [--json]\n"
    "                      position, lag (events and time), events/s, last error\n"
    "  run [NAME...] [--once]\n"
    "                      apply events to every (or each named) projection, following new\n"
    "                      events until interrupted; --once stops when all have caught up\n"
    "  rebuild NAME [--progress]\n"
    "                      rebuild from history into a shadow that replaces the read model\n"
    "                      when caught up (queries and a running projector go on);\n"
    "                      progress on stderr on a terminal, or with --progress\n"
    "  pause NAME | resume NAME\n"
    "  retry NAME          apply the failed event again\n"
    "  skip NAME           pass over the failed event\n"
    "  wait NAME POSITION [--timeout MS]\n"
    "                      wait until the projection has passed POSITION (read your writes)\n"
    "  remove NAME [--drop]\n"
    "                      unregister; --drop also deletes a SQLite read model's file\n"
    "\n"
    "Options of add, run and rebuild: --lua-budget MS, the longest a run of the file's Lua\n"
    "code may take (each handler call; default 5000): past it the event fails.\n"
    "\n"
    "Targets: sqlite:PATH (relative paths are in DIR), postgresql:CONNINFO; by default\n"
    "sqlite:DIR/projections/NAME.db.\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or bad projection file, 2 not found, 5 failure;\n"
    "status exits 6 when a projection has failed; wait exits 7 on timeout.\n";

enum {
    OPT_NAME,
    OPT_TARGET,
    OPT_REPLACE,
    OPT_JSON,
    OPT_ONCE,
    OPT_TIMEOUT,
    OPT_DROP,
    OPT_LUA,
    OPT_PROGRESS
};
static const cli_option options[] = {{"name", 1, OPT_NAME},         {"target", 1, OPT_TARGET},
                                     {"replace", 0, OPT_REPLACE},   {"json", 0, OPT_JSON},
                                     {"once", 0, OPT_ONCE},         {"timeout", 1, OPT_TIMEOUT},
                                     {"drop", 0, OPT_DROP},         {"lua-budget", 1, OPT_LUA},
                                     {"progress", 0, OPT_PROGRESS}, {NULL, 0, 0}};

#define CMD          "projection"
#define MAX_OPERANDS 64

typedef struct args {
    const char *operands[MAX_OPERANDS];
    int n;
    const char *name, *target;
    int replace, json, once, drop, progress;
    uint64_t timeout_ms;
    int has_timeout;
    uint32_t lua_budget_ms; /* 0: the library's default */
} args;

/* A registered projection. */
typedef struct reg {
    char name[64];
    char *path;   /* DIR/projections/NAME.proj */
    char *target; /* resolved */
    annal_proj_def *def;
} reg;

static void reg_free(reg *r) {
    free(r->path);
    free(r->target);
    annal_proj_def_free(r->def);
    memset(r, 0, sizeof *r);
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...) {
    cli_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    char tmp[4096];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    cli_buf_adds(&b, tmp);
    cli_buf_cstr(&b); /* terminates it */
    return b.p;
}

/* sqlite:REL becomes sqlite:DIR/REL; everything else is kept. */
static char *resolve_target(cli_global *g, const char *t, const char *name) {
    if (!t) return pathf("sqlite:%s/projections/%s.db", g->data_dir, name);
    if (strncmp(t, "sqlite:", 7) == 0 && t[7] != '/' && strcmp(t + 7, ":memory:") != 0)
        return pathf("sqlite:%s/%s", g->data_dir, t + 7);
    return cli_xstrndup(t, strlen(t));
}

static char *read_small(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) n--;
    return cli_xstrndup(buf, n);
}

static int reg_load(cli_global *g, const char *name, reg *r) {
    memset(r, 0, sizeof *r);
    if (strlen(name) >= sizeof r->name || strchr(name, '/')) {
        cli_error(CMD, "bad projection name '%s'", name);
        return CLI_EXIT_USAGE;
    }
    memcpy(r->name, name, strlen(name) + 1);
    r->path = pathf("%s/projections/%s.proj", g->data_dir, name);
    char err[1024];
    annal_err rc = annal_proj_def_load(r->path, &r->def, err, sizeof err);
    if (rc == ANNAL_ENOTFOUND) {
        cli_error(CMD, "no projection %s (not in %s/projections)", name, g->data_dir);
        reg_free(r);
        return CLI_EXIT_NOTFOUND;
    }
    if (rc != ANNAL_OK) {
        cli_error(CMD, "%s", err);
        reg_free(r);
        return cli_exit_code(rc);
    }
    char *tpath = pathf("%s/projections/%s.target", g->data_dir, name);
    char *over = read_small(tpath);
    free(tpath);
    r->target = resolve_target(g, over ? over : annal_proj_def_target(r->def), name);
    free(over);
    return 0;
}

static int names_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Registered names in order; caller frees each and the array. */
static char **reg_list(cli_global *g, size_t *n) {
    *n = 0;
    char *dir = pathf("%s/projections", g->data_dir);
    DIR *d = opendir(dir);
    free(dir);
    char **out = NULL;
    if (!d) return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".proj") == 0) {
            out = cli_xrealloc(out, (*n + 1) * sizeof *out);
            out[(*n)++] = cli_xstrndup(e->d_name, l - 5);
        }
    }
    closedir(d);
    if (*n) qsort(out, *n, sizeof *out, names_cmp);
    return out;
}

static void names_free(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void plog(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx;
    fprintf(stderr, "annal: projection: %s%s\n", level == ANNAL_LOG_ERROR ? "" : "note: ", msg);
}

static int write_file(const char *path, const char *data, size_t n) {
    char *tmp = pathf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) unlink(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------- add */

static int cmd_add(cli_global *g, args *a) {
    if (a->n != 1) return cli_usage_error(CMD, "add needs one projection FILE");
    const char *file = a->operands[0];
    char err[1024];
    annal_proj_def *def = NULL;
    annal_err rc = annal_proj_def_load(file, &def, err, sizeof err);
    if (rc != ANNAL_OK) {
        cli_error(CMD, "%s", err);
        return rc == ANNAL_ENOTFOUND ? CLI_EXIT_NOTFOUND : cli_exit_code(rc);
    }
    const char *name = a->name ? a->name : annal_proj_def_name(def);
    char base[64];
    if (!name) { /* the file's name without its extension */
        const char *s = strrchr(file, '/');
        s = s ? s + 1 : file;
        size_t l = strcspn(s, ".");
        snprintf(base, sizeof base, "%.*s", (int)(l < 63 ? l : 63), s);
        name = base;
    }
    annal_db *db;
    int ec = cli_open(g, CMD, ANNAL_OPEN_READONLY, NULL, &db);
    if (ec) {
        annal_proj_def_free(def);
        return ec;
    }
    /* Try the SQL on an empty in-memory SQLite model: errors come with line numbers now
     * instead of from the projector later. PostgreSQL's dialect is checked on first run. */
    const char *t = a->target ? a->target : annal_proj_def_target(def);
    if (!t || strncmp(t, "sqlite:", 7) == 0) {
        annal_proj_opts o;
        annal_proj_opts_init(&o);
        o.def = def;
        o.name = name;
        o.target = "sqlite::memory:";
        o.lua_budget_ms = a->lua_budget_ms;
        annal_proj *p = NULL;
        rc = annal_proj_open(db, &o, &p, err, sizeof err);
        annal_proj_close(p);
        if (rc != ANNAL_OK) {
            cli_error(CMD, "%s", err);
            annal_db_close(db);
            annal_proj_def_free(def);
            return CLI_EXIT_USAGE;
        }
    }
    annal_db_close(db);
    char *dir = pathf("%s/projections", g->data_dir);
    char *path = pathf("%s/%s.proj", dir, name);
    char *tpath = pathf("%s/%s.target", dir, name);
    int ret = 0;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        ret = cli_fail(CMD, NULL, ANNAL_EIO, "cannot create %s: %s", dir, strerror(errno));
    } else if (!a->replace && access(path, F_OK) == 0) {
        cli_error(CMD, "projection %s is already registered (--replace to change its file)", name);
        ret = CLI_EXIT_CONFLICT;
    } else {
        FILE *f = fopen(file, "r");
        cli_buf b = {0};
        char chunk[8192];
        size_t n;
        while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0) cli_buf_add(&b, chunk, n);
        if (f) fclose(f);
        if (write_file(path, b.p ? b.p : "", b.len) != 0 ||
            (a->target && write_file(tpath, a->target, strlen(a->target)) != 0)) {
            ret = cli_fail(CMD, NULL, ANNAL_EIO, "cannot write %s: %s", path, strerror(errno));
        } else {
            if (!a->target) unlink(tpath);
            char *rt = resolve_target(g, t, name);
            printf("added projection %s: source %s, target %s\n", name, annal_proj_def_source(def),
                   rt);
            free(rt);
        }
        cli_buf_free(&b);
    }
    free(dir);
    free(path);
    free(tpath);
    annal_proj_def_free(def);
    return cli_finish_output(CMD, stdout, "standard output", ret);
}

/* ---------------------------------------------------------------- status, list */

static void fmt_dur(int64_t ns, char *out, size_t n) {
    double s = (double)ns / 1e9;
    if (s < 0) s = 0;
    if (s < 1)
        snprintf(out, n, "%.0fms", s * 1000);
    else if (s < 120)
        snprintf(out, n, "%.1fs", s);
    else if (s < 7200)
        snprintf(out, n, "%.0fm", s / 60);
    else
        snprintf(out, n, "%.1fh", s / 3600);
}

/* The projections named on the command line, or else every registered one. */
static char **operand_names(cli_global *g, const args *a, size_t *n) {
    if (!a->n) return reg_list(g, n);
    char **names = cli_xrealloc(NULL, (size_t)a->n * sizeof *names);
    for (int i = 0; i < a->n; i++) names[i] = cli_xstrndup(a->operands[i], strlen(a->operands[i]));
    *n = (size_t)a->n;
    return names;
}

/* One projection's status as a JSON line (head: the store's event count). */
static void status_json(const reg *r, const char *state, const annal_proj_status *s, uint64_t lag,
                        int64_t lag_ns, double rate, uint64_t head, int64_t now_ns) {
    cli_buf b = {0};
    cli_buf_adds(&b, "{\"name\":");
    cli_json_add_string(&b, r->name, strlen(r->name));
    cli_buf_adds(&b, ",\"source\":");
    const char *src = annal_proj_def_source(r->def);
    cli_json_add_string(&b, src, strlen(src));
    cli_buf_adds(&b, ",\"target\":");
    cli_json_add_string(&b, r->target, strlen(r->target));
    cli_buf_adds(&b, ",\"state\":");
    cli_json_add_string(&b, state, strlen(state));
    if (s->projector_pid) { /* the last projector, live or not (state says) */
        cli_buf_addf(&b,
                     ",\"projector_pid\":%lld,\"projector_host\":", (long long)s->projector_pid);
        cli_json_add_string(&b, s->projector_host, strlen(s->projector_host));
        cli_buf_addf(&b, ",\"heartbeat_ms_ago\":%lld",
                     (long long)((now_ns - s->heartbeat_ns) / 1000000));
    }
    cli_buf_addf(&b,
                 ",\"position\":%llu,\"events\":%llu,\"lag_events\":%llu,"
                 "\"lag_ms\":%lld,\"events_per_s\":%.1f,\"head\":%llu",
                 (unsigned long long)s->position, (unsigned long long)s->events,
                 (unsigned long long)lag, (long long)(lag_ns / 1000000), rate,
                 (unsigned long long)head);
    if (s->error[0]) {
        cli_buf_adds(&b, ",\"error\":");
        cli_json_add_string(&b, s->error, strlen(s->error));
        cli_buf_addf(
            &b, ",\"error_position\":%llu,\"error_event\":", (unsigned long long)s->error_position);
        cli_json_add_string(&b, s->error_event, strlen(s->error_event));
    }
    cli_buf_adds(&b, "}\n");
    fputs(cli_buf_cstr(&b), stdout);
    cli_buf_free(&b);
}

static int cmd_status(cli_global *g, args *a, int list) {
    size_t n = 0;
    char **names = operand_names(g, a, &n);
    annal_db *db = NULL;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    int rc = cli_open(g, CMD, ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) {
        names_free(names, n);
        return rc;
    }
    annal_db_info_get(db, &info);
    annal_db_close(db);
    static const char *const heads_s[] = {"NAME",      "STATE",     ">POSITION", ">LAG",
                                          ">LAG_TIME", ">EVENTS/S", "ERROR"};
    static const char *const heads_l[] = {"NAME", "SOURCE", "TARGET", "STATE", ">POSITION"};
    cli_table t;
    if (!a->json) {
        if (list)
            cli_table_init(&t, g, stdout, 5, heads_l, NULL);
        else
            cli_table_init(&t, g, stdout, 7, heads_s, NULL);
    }
    int any_failed = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    for (size_t i = 0; i < n; i++) {
        reg r;
        int e = reg_load(g, names[i], &r);
        if (e) {
            rc = e;
            continue;
        }
        annal_proj_status s;
        char err[1024];
        annal_err st = annal_proj_status_get(r.target, r.name, &s, err, sizeof err);
        const char *state = annal_proj_state_name(s.state);
        if (st == ANNAL_ENOTFOUND) {
            memset(&s, 0, sizeof s);
            state = "new";
        } else if (st != ANNAL_OK) {
            memset(&s, 0, sizeof s);
            state = "unknown";
            snprintf(s.error, sizeof s.error, "%.500s", err);
        }
        int failed = st == ANNAL_OK && s.state == ANNAL_PROJ_FAILED;
        if (failed) any_failed = 1;
        uint64_t lag = info.events > s.position ? info.events - s.position : 0;
        int64_t lag_ns = lag && s.last_event_ns ? info.last_ns - s.last_event_ns : 0;
        if (lag && !s.last_event_ns && info.last_ns) lag_ns = now_ns - info.last_ns;
        /* the rate is the projector's last figure; stale when it has not written lately */
        double rate = now_ns - s.updated_ns < 5000000000LL ? s.rate : 0;
        if (a->json) {
            status_json(&r, state, &s, lag, lag_ns, rate, info.events, now_ns);
        } else {
            char pos[32], lg[32], lt[32], rt[32];
            snprintf(pos, sizeof pos, "%llu", (unsigned long long)s.position);
            snprintf(lg, sizeof lg, "%llu", (unsigned long long)lag);
            fmt_dur(lag_ns, lt, sizeof lt);
            snprintf(rt, sizeof rt, "%.0f", rate);
            char errtxt[1024];
            if (s.error[0] && failed)
                snprintf(errtxt, sizeof errtxt, "at %llu (%s): %s",
                         (unsigned long long)s.error_position, s.error_event, s.error);
            else
                snprintf(errtxt, sizeof errtxt, "%s", s.error);
            if (list) {
                const char *cells[] = {r.name, annal_proj_def_source(r.def), r.target, state, pos};
                cli_table_row(&t, cells);
            } else {
                const char *cells[] = {r.name, state, pos, lg, lt, rt, errtxt};
                cli_table_row(&t, cells);
            }
        }
        reg_free(&r);
    }
    if (!a->json) cli_table_end(&t);
    names_free(names, n);
    if (!rc && any_failed && !list) rc = 6;
    return cli_finish_output(CMD, stdout, "standard output", rc);
}

/* ---------------------------------------------------------------- run */

static volatile sig_atomic_t stop_flag;
/* The projections being run: a signal cancels them, which interrupts Lua code in the
 * middle of a batch (rolled back), so a handler that loops cannot hold off SIGTERM. */
static annal_proj *volatile *run_ps;
static volatile size_t run_n;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
    for (size_t i = 0; run_ps && i < run_n; i++) annal_proj_cancel(run_ps[i]);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Step each projection once: counts those that did work (busy), are paused or failed
 * (blocked) and have caught up (ended). A failure that stops the run is its exit code;
 * one that may pass (a lost database) is reported once and retried. */
static int step_round(const args *a, reg *regs, annal_proj **ps, int *reported, size_t n, int *busy,
                      int *blocked, int *ended) {
    for (size_t i = 0; i < n && !stop_flag; i++) {
        annal_err e = annal_proj_step(ps[i], NULL);
        if (e == ANNAL_OK) {
            *busy = 1;
            reported[i] = 0;
        } else if (e == ANNAL_EBUSY) {
            (*blocked)++;
        } else if (e == ANNAL_END) {
            (*ended)++;
        } else if (e == ANNAL_ECANCELED && stop_flag) {
            break; /* interrupted by a signal: its batch was rolled back */
        } else {
            if (a->once || e == ANNAL_ENOTFOUND) {
                cli_error(CMD, "%s: %s", regs[i].name, annal_proj_errmsg(ps[i]));
                return cli_exit_code(e);
            }
            if (!reported[i]) /* a lost database: retried, reported once */
                cli_error(CMD, "%s: %s (retrying)", regs[i].name, annal_proj_errmsg(ps[i]));
            reported[i] = 1;
        }
    }
    return 0;
}

/* 1 if a server (annal serve) owns the store: it runs the registered projections. */
static int server_runs(cli_global *g) {
    annal_remote *r = NULL;
    if (g->server || cli_route(g, CMD, &r) != 0 || !r) return 0;
    annal_remote_close(r);
    return 1;
}
static const char server_runs_hint[] =
    " (the server, annal serve, that owns the store runs its registered projections: see "
    "'annal projection status')";

/* A projection that emits needs the store's writer: refused while a server owns the store
 * (which runs it itself) or when a server is named. */
static int run_refuse(cli_global *g) {
    if (!g->server && server_runs(g)) {
        cli_error(CMD,
                  "a server (annal serve) owns the store at %s and, unless started with "
                  "--run-projections none, runs its registered projections itself: see "
                  "'annal projection status'",
                  g->data_dir);
        return CLI_EXIT_STORE;
    }
    return cli_route_refuse(g, CMD);
}

static int cmd_run(cli_global *g, args *a) {
    size_t n = 0;
    char **names = operand_names(g, a, &n);
    if (!n) {
        cli_error(CMD, "no projections registered in %s/projections", g->data_dir);
        free(names);
        return CLI_EXIT_NOTFOUND;
    }
    reg *regs = cli_xrealloc(NULL, n * sizeof *regs);
    memset(regs, 0, n * sizeof *regs);
    int rc = 0, emits = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = reg_load(g, names[i], &regs[i]);
        if (!rc && annal_proj_def_emits(regs[i].def)) emits = 1;
    }
    annal_db *db = NULL;
    /* Read-only unless a projection appends events: the application stays the writer. */
    if (!rc && emits) rc = run_refuse(g); /* emitting needs the writer */
    if (!rc) rc = cli_open(g, CMD, emits ? 0 : ANNAL_OPEN_READONLY, NULL, &db);
    annal_proj **ps = cli_xrealloc(NULL, n * sizeof *ps);
    memset(ps, 0, n * sizeof *ps);
    for (size_t i = 0; i < n && !rc; i++) {
        annal_proj_opts o;
        annal_proj_opts_init(&o);
        o.def = regs[i].def;
        o.name = regs[i].name;
        o.target = regs[i].target;
        o.log = plog;
        o.lua_budget_ms = a->lua_budget_ms;
        o.exclusive = 1; /* one projector per projection: a server may run it already */
        char err[1024];
        annal_err e = annal_proj_open(db, &o, &ps[i], err, sizeof err);
        if (e == ANNAL_EBUSY) {
            cli_error(CMD, "%s%s", err, server_runs(g) ? server_runs_hint : "");
            rc = cli_exit_code(e);
        } else if (e != ANNAL_OK) {
            cli_error(CMD, "%s: %s", regs[i].name, err);
            rc = cli_exit_code(e);
        }
    }
    run_ps = ps;
    run_n = n;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int idle_ms = 1;
    int *reported = cli_xrealloc(NULL, n * sizeof *reported);
    memset(reported, 0, n * sizeof *reported);
    while (!rc && !stop_flag) {
        int busy = 0, blocked = 0, ended = 0;
        annal_db_info info; /* the head before this round: every step below reads past it */
        if (annal_db_info_get(db, &info) != ANNAL_OK) info.events = 0;
        rc = step_round(a, regs, ps, reported, n, &busy, &blocked, &ended);
        if (busy) {
            idle_ms = 1;
            continue;
        }
        if (a->once) {
            if (blocked) {
                cli_error(CMD, "%d projection(s) paused or failed: see 'annal projection status'",
                          blocked);
                rc = 6;
            }
            break;
        }
        /* All caught up: sleep until the next event commits (the store wakes waiters in
         * other processes too), at most 50 ms so that operator commands are seen. */
        if (ended == (int)n && info.events) {
            annal_err w = annal_wait_position(db, info.events, 50);
            if (w == ANNAL_OK || w == ANNAL_ETIMEDOUT) continue;
        }
        sleep_ms(idle_ms);
        if (idle_ms < 50) idle_ms *= 2;
    }
    run_n = 0; /* the handles go: a later signal must not reach them */
    run_ps = NULL;
    for (size_t i = 0; i < n; i++) {
        annal_proj_close(ps[i]);
        reg_free(&regs[i]);
    }
    free(reported);
    free(ps);
    free(regs);
    annal_db_close(db);
    names_free(names, n);
    return rc;
}

/* ---------------------------------------------------------------- the others */

static int cmd_rebuild(cli_global *g, args *a) {
    if (a->n != 1) return cli_usage_error(CMD, "rebuild needs one NAME");
    reg r;
    int rc = reg_load(g, a->operands[0], &r);
    if (rc) return rc;
    annal_db *db = NULL;
    if (annal_proj_def_emits(r.def)) rc = cli_route_refuse(g, CMD);
    if (!rc)
        rc = cli_open(g, CMD, annal_proj_def_emits(r.def) ? 0 : ANNAL_OPEN_READONLY, NULL, &db);
    if (!rc) {
        annal_proj_opts o;
        annal_proj_opts_init(&o);
        o.def = r.def;
        o.name = r.name;
        o.target = r.target;
        o.log = plog;
        o.lua_budget_ms = a->lua_budget_ms;
        cli_progress pr;
        cli_progress_init(&pr, "rebuilding", a->progress ? 2 : g->stderr_tty);
        char err[1024];
        annal_err e = annal_proj_rebuild(db, &o, cli_progress_cb, &pr, err, sizeof err);
        cli_progress_end(&pr);
        if (e != ANNAL_OK) {
            cli_error(CMD, "rebuild of %s failed, the old read model stays: %s", r.name, err);
            rc = cli_exit_code(e);
        } else {
            annal_proj_status s;
            if (annal_proj_status_get(r.target, r.name, &s, err, sizeof err) == ANNAL_OK)
                printf("rebuilt %s: %llu events applied, at position %llu\n", r.name,
                       (unsigned long long)s.events, (unsigned long long)s.position);
        }
        annal_db_close(db);
    }
    reg_free(&r);
    return cli_finish_output(CMD, stdout, "standard output", rc);
}

static int cmd_control(cli_global *g, args *a, annal_proj_cmd c, const char *verb) {
    if (a->n != 1) return cli_usage_error(CMD, "%s needs one NAME", verb);
    reg r;
    int rc = reg_load(g, a->operands[0], &r);
    if (rc) return rc;
    char err[1024];
    annal_err e = annal_proj_control(r.target, r.name, c, err, sizeof err);
    if (e != ANNAL_OK) {
        cli_error(CMD, "%s %s: %s", verb, r.name, err);
        rc = cli_exit_code(e);
    } else {
        printf("%s: %s\n", r.name, verb);
    }
    reg_free(&r);
    return cli_finish_output(CMD, stdout, "standard output", rc);
}

static int cmd_wait(cli_global *g, args *a) {
    uint64_t pos;
    if (a->n != 2 || cli_parse_u64(a->operands[1], &pos) != 0)
        return cli_usage_error(CMD, "wait needs NAME and a POSITION");
    reg r;
    int rc = reg_load(g, a->operands[0], &r);
    if (rc) return rc;
    char err[1024];
    int timeout =
        a->has_timeout ? (a->timeout_ms > 2000000000 ? 2000000000 : (int)a->timeout_ms) : -1;
    annal_err e = annal_proj_wait(r.target, r.name, pos, timeout, err, sizeof err);
    if (e == ANNAL_ETIMEDOUT) {
        cli_error(CMD, "%s", err);
        rc = 7;
    } else if (e == ANNAL_EBUSY) {
        cli_error(CMD, "%s", err);
        rc = 6;
    } else if (e != ANNAL_OK) {
        cli_error(CMD, "%s", err);
        rc = cli_exit_code(e);
    }
    reg_free(&r);
    return rc;
}

static int cmd_remove(cli_global *g, args *a) {
    if (a->n != 1) return cli_usage_error(CMD, "remove needs one NAME");
    reg r;
    int rc = reg_load(g, a->operands[0], &r);
    if (rc) return rc;
    /* Unregistered first: a server running it sees it gone, not its state row gone. */
    unlink(r.path);
    char *tpath = pathf("%s/projections/%s.target", g->data_dir, r.name);
    unlink(tpath);
    free(tpath);
    char err[1024];
    annal_err e = annal_proj_control(r.target, r.name, ANNAL_PROJ_FORGET, err, sizeof err);
    if (e != ANNAL_OK && e != ANNAL_ENOTFOUND)
        cli_error(CMD, "note: could not clear the state of %s: %s", r.name, err);
    if (a->drop && strncmp(r.target, "sqlite:", 7) == 0) {
        const char *p = r.target + 7;
        char real[4096];
        const char *files[3] = {"", "-wal", "-shm"};
        int link = realpath(p, real) && strcmp(real, p) != 0;
        for (int i = 0; i < 3; i++) {
            char *f = pathf("%s%s", p, files[i]);
            unlink(f);
            free(f);
            if (link) {
                f = pathf("%s%s", real, files[i]);
                unlink(f);
                free(f);
            }
        }
    }
    printf("removed projection %s%s\n", r.name, a->drop ? " and its read model" : "");
    reg_free(&r);
    return cli_finish_output(CMD, stdout, "standard output", 0);
}

int cli_cmd_projection(cli_global *g, int argc, char **argv) {
    args a;
    memset(&a, 0, sizeof a);
    cli_args ca;
    cli_args_init(&ca, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&ca, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output(CMD, stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (a.n >= MAX_OPERANDS) return cli_usage_error(CMD, "too many arguments");
            a.operands[a.n++] = v;
            break;
        case OPT_NAME: a.name = v; break;
        case OPT_TARGET: a.target = v; break;
        case OPT_REPLACE: a.replace = 1; break;
        case OPT_JSON: a.json = 1; break;
        case OPT_ONCE: a.once = 1; break;
        case OPT_DROP: a.drop = 1; break;
        case OPT_PROGRESS: a.progress = 1; break;
        case OPT_TIMEOUT:
            if (cli_parse_u64(v, &a.timeout_ms) != 0)
                return cli_usage_error(CMD, "--timeout needs milliseconds");
            a.has_timeout = 1;
            break;
        case OPT_LUA: {
            uint64_t ms;
            if (cli_parse_u64(v, &ms) != 0 || ms == 0 || ms > 86400000)
                return cli_usage_error(CMD, "--lua-budget needs milliseconds (1..86400000)");
            a.lua_budget_ms = (uint32_t)ms;
            break;
        }
        }
    }
    if (a.n == 0) return cli_usage_error(CMD, "no action given");
    const char *action = a.operands[0];
    memmove(a.operands, a.operands + 1, (size_t)(a.n - 1) * sizeof a.operands[0]);
    a.n--;
    if (strcmp(action, "add") == 0) return cmd_add(g, &a);
    if (strcmp(action, "list") == 0) return cmd_status(g, &a, 1);
    if (strcmp(action, "status") == 0) return cmd_status(g, &a, 0);
    if (strcmp(action, "run") == 0) return cmd_run(g, &a);
    if (strcmp(action, "rebuild") == 0) return cmd_rebuild(g, &a);
    if (strcmp(action, "pause") == 0) return cmd_control(g, &a, ANNAL_PROJ_PAUSE, "paused");
    if (strcmp(action, "resume") == 0) return cmd_control(g, &a, ANNAL_PROJ_RESUME, "resumed");
    if (strcmp(action, "retry") == 0) return cmd_control(g, &a, ANNAL_PROJ_RETRY, "retrying");
    if (strcmp(action, "skip") == 0) return cmd_control(g, &a, ANNAL_PROJ_SKIP, "skipped");
    if (strcmp(action, "wait") == 0) return cmd_wait(g, &a);
    if (strcmp(action, "remove") == 0) return cmd_remove(g, &a);
    return cli_usage_error(CMD, "unknown action '%s'", action);
}

/* For `annal query NAME`: the target of a registered projection (caller frees), or NULL
 * after reporting why. */
char *cli_projection_target(cli_global *g, const char *name, int *exit_code);
char *cli_projection_target(cli_global *g, const char *name, int *exit_code) {
    reg r;
    *exit_code = reg_load(g, name, &r);
    if (*exit_code) return NULL;
    char *t = r.target;
    r.target = NULL;
    reg_free(&r);
    return t;
}
