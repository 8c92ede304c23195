/*
 * runner.c -- the store's registered projections, run inside the server as KurrentDB runs
 * its own (docs/projections.md, docs/server.md). The registry is the store directory's
 * projections/ folder that `annal projection add|remove` keeps (NAME.proj, NAME.target);
 * a poller thread reads it every second and keeps one thread per registered projection,
 * each running libannal_project's engine exactly as `annal projection run` does: the
 * checkpoint commits with the read model, operators reach it through its state row
 * (pause, resume, retry, skip, rebuild), and the open is exclusive, so a projector in
 * another process and this one never hold the same projection. A projection that fails
 * is logged and marked failed in its target; the server goes on.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "annal_project.h"
#include "server_int.h"

#define POLL_MS  1000 /* how often the registry is read again */
#define RETRY_MS 2000 /* pause before opening again after a failure that may pass */
#define KEY_MAX  96

/* One registered projection and the thread that runs it. */
typedef struct rproj {
    srv_runner *r;
    char name[64];
    char key[KEY_MAX]; /* what its files were when the thread started (see file_key) */
    pthread_t thread;
    int stop;      /* guarded by r->mu */
    annal_proj *p; /* while open, for cancelling (r->mu) */
    struct rproj *next;
} rproj;

struct srv_runner {
    annal_server *srv;
    char *dir; /* the store directory (owned) */
    uint32_t lua_budget_ms;
    pthread_t poller;
    pthread_mutex_t mu; /* guards stopping and each rproj's stop and p */
    pthread_cond_t cv;
    int stopping;
    rproj *list; /* the poller's own, and stop's once the poller is joined */
};

static char *joinf(const char *a, const char *b, const char *c) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

/* ---- The registry, as `annal projection add` writes it (src/cli/projection.c). */

/* "size.mtime" of a file, "-" if missing: a change of either file restarts the thread. */
static void file_key(const char *path, char *out, size_t n) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(out, n, "-");
        return;
    }
    snprintf(out, n, "%lld.%lld.%ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec);
}

static void reg_key(const srv_runner *r, const char *name, char *out, size_t n) {
    char a[40], b[40];
    char *p = joinf(r->dir, "/projections/", name);
    char *proj = p ? joinf(p, ".proj", "") : NULL, *tgt = p ? joinf(p, ".target", "") : NULL;
    file_key(proj ? proj : "", a, sizeof a);
    file_key(tgt ? tgt : "", b, sizeof b);
    snprintf(out, n, "%s/%s", a, b);
    free(p);
    free(proj);
    free(tgt);
}

/* The target of the registration: NAME.target when given at add, else the file's; relative
 * SQLite paths are in the store directory; none at all: sqlite:DIR/projections/NAME.db. */
static char *reg_target(const srv_runner *r, const char *name, const annal_proj_def *def) {
    char over[4096] = "";
    char *p = joinf(r->dir, "/projections/", name);
    char *tpath = p ? joinf(p, ".target", "") : NULL;
    FILE *f = tpath ? fopen(tpath, "r") : NULL;
    if (f) {
        size_t n = fread(over, 1, sizeof over - 1, f);
        fclose(f);
        while (n && (over[n - 1] == '\n' || over[n - 1] == ' ')) n--;
        over[n] = '\0';
    }
    free(tpath);
    const char *t = over[0] ? over : annal_proj_def_target(def);
    char *out;
    if (!t)
        out = joinf("sqlite:", p ? p : "", ".db");
    else if (strncmp(t, "sqlite:", 7) == 0 && t[7] != '/' && strcmp(t + 7, ":memory:") != 0) {
        char *base = joinf("sqlite:", r->dir, "/");
        out = base ? joinf(base, t + 7, "") : NULL;
        free(base);
    } else
        out = joinf(t, "", "");
    free(p);
    return out;
}

/* ---- One projection's thread. */

static void proj_log(void *ctx, annal_log_level level, const char *msg) {
    srv_log(((rproj *)ctx)->r->srv, level, "%s", msg);
}

/* Wait up to ms (-1: until stopped). 1 if the thread is to stop. */
static int wait_stop(rproj *w, int ms) {
    srv_runner *r = w->r;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&r->mu);
    int timed_out = 0;
    while (!w->stop && !timed_out) {
        if (ms < 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else
            timed_out = pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT;
    }
    int stop = w->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

/* Make p the handle stop cancels (NULL: none). 0, or 1 when stop came first. */
static int publish(rproj *w, annal_proj *p) {
    pthread_mutex_lock(&w->r->mu);
    int stop = w->stop;
    w->p = stop ? NULL : p;
    pthread_mutex_unlock(&w->r->mu);
    return stop;
}

/* Follow the projection until stopped (ANNAL_ECANCELED) or its state row is gone
 * (removed: ANNAL_ENOTFOUND). A failed event is not an error here: the engine marks the
 * projection failed and logs it, and the run waits for an operator's retry or skip. Other
 * errors (a lost database) are logged once and retried, as `annal projection run` does. */
static annal_err follow(rproj *w, annal_proj *p) {
    char last[512] = "";
    for (;;) {
        annal_err rc = annal_proj_run(p, 0);
        if (rc == ANNAL_ECANCELED || rc == ANNAL_ENOTFOUND) return rc;
        if (strcmp(last, annal_proj_errmsg(p)) != 0) {
            snprintf(last, sizeof last, "%s", annal_proj_errmsg(p));
            srv_log(w->r->srv, ANNAL_LOG_ERROR, "projection %s: %s (retrying)", w->name, last);
        }
        if (wait_stop(w, RETRY_MS)) return ANNAL_ECANCELED;
    }
}

/* Load, open (exclusive) and follow the projection once. *retry says whether a failure
 * may pass (a projector elsewhere holds it, the database is down) or needs the file
 * changed (a bad file, SQL or Lua). */
static annal_err run_once(rproj *w, int *retry, char *err, size_t err_size) {
    srv_runner *r = w->r;
    char *path = joinf(r->dir, "/projections/", w->name);
    char *file = path ? joinf(path, ".proj", "") : NULL;
    free(path);
    annal_proj_def *def = NULL;
    annal_err rc = file ? annal_proj_def_load(file, &def, err, err_size) : ANNAL_ENOMEM;
    free(file);
    *retry = 0;
    if (rc != ANNAL_OK) return rc;
    char *target = reg_target(r, w->name, def);
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = w->name;
    o.def = def;
    o.target = target;
    o.log = proj_log;
    o.log_ctx = w;
    o.lua_budget_ms = r->lua_budget_ms;
    o.exclusive = 1; /* one projector per projection */
    annal_proj *p = NULL;
    rc = target ? annal_proj_open(r->srv->db, &o, &p, err, err_size) : ANNAL_ENOMEM;
    *retry = rc != ANNAL_EINVAL && rc != ANNAL_ENOMEM;
    if (rc == ANNAL_OK && publish(w, p)) rc = ANNAL_ECANCELED;
    if (rc == ANNAL_OK) {
        srv_log(r->srv, ANNAL_LOG_INFO, "projection %s: running (source %s, target %s)", w->name,
                annal_proj_def_source(def), target);
        rc = follow(w, p);
        publish(w, NULL);
        if (rc == ANNAL_ENOTFOUND) snprintf(err, err_size, "%s", annal_proj_errmsg(p));
        *retry = 0; /* its state row was removed: not again until registered again */
    }
    annal_proj_close(p);
    free(target);
    annal_proj_def_free(def);
    return rc;
}

static int still_registered(const rproj *w) {
    char *p = joinf(w->r->dir, "/projections/", w->name);
    char *file = p ? joinf(p, ".proj", "") : NULL;
    int there = file && access(file, F_OK) == 0;
    free(p);
    free(file);
    return there;
}

static void *proj_thread(void *arg) {
    rproj *w = arg;
    (void)pthread_setname_np(pthread_self(), "annal-proj");
    char err[1024], last[1024] = "";
    for (;;) {
        int retry = 0;
        err[0] = '\0';
        annal_err rc = run_once(w, &retry, err, sizeof err);
        if (rc == ANNAL_ECANCELED) break;
        if (rc == ANNAL_ENOTFOUND && !still_registered(w)) { /* removed: the poller stops it */
            if (wait_stop(w, -1)) break;
            continue;
        }
        if (strcmp(err, last) != 0) { /* each reason once, not at every retry */
            srv_log(w->r->srv, ANNAL_LOG_ERROR, "projection %s: %s%s", w->name,
                    err[0] ? err : annal_strerror(rc),
                    retry ? " (trying again)" : " (stopped until its file changes)");
            snprintf(last, sizeof last, "%s", err);
        }
        if (wait_stop(w, retry ? RETRY_MS : -1)) break;
    }
    return NULL;
}

/* ---- The poller: threads follow the registry. */

static void stop_threads(srv_runner *r, rproj **list) {
    pthread_mutex_lock(&r->mu);
    for (rproj *w = *list; w; w = w->next) {
        w->stop = 1;
        annal_proj_cancel(w->p); /* between batches; Lua code under way is interrupted */
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    while (*list) {
        rproj *w = *list;
        *list = w->next;
        pthread_join(w->thread, NULL);
        srv_log(r->srv, ANNAL_LOG_INFO, "projection %s: stopped", w->name);
        free(w);
    }
}

static void start_thread(srv_runner *r, const char *name, const char *key) {
    rproj *w = calloc(1, sizeof *w);
    if (!w) return;
    w->r = r;
    snprintf(w->name, sizeof w->name, "%s", name);
    snprintf(w->key, sizeof w->key, "%s", key);
    if (pthread_create(&w->thread, NULL, proj_thread, w) != 0) {
        srv_log(r->srv, ANNAL_LOG_ERROR, "projection %s: cannot start a thread", name);
        free(w);
        return;
    }
    w->next = r->list;
    r->list = w;
}

static int registered(const char *fname, char *name, size_t n) {
    size_t l = strlen(fname);
    if (l <= 5 || l - 5 >= n || strcmp(fname + l - 5, ".proj") != 0) return 0;
    memcpy(name, fname, l - 5);
    name[l - 5] = '\0';
    return 1;
}

/* Stop the threads of projections removed or changed, start those of new ones. */
static void scan(srv_runner *r) {
    char *dir = joinf(r->dir, "/projections", "");
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    rproj *gone = NULL, *keep = NULL;
    char name[64], key[KEY_MAX];
    /* Keep the threads whose files are as they were. */
    while (r->list) {
        rproj *w = r->list;
        r->list = w->next;
        reg_key(r, w->name, key, sizeof key);
        rproj **to = strcmp(key, w->key) == 0 && strncmp(key, "-/", 2) != 0 ? &keep : &gone;
        w->next = *to;
        *to = w;
    }
    r->list = keep;
    stop_threads(r, &gone);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!registered(e->d_name, name, sizeof name)) continue;
        int running = 0;
        for (rproj *w = r->list; w && !running; w = w->next) running = !strcmp(w->name, name);
        if (running) continue;
        reg_key(r, name, key, sizeof key);
        start_thread(r, name, key);
    }
    if (d) closedir(d);
}

static void *poller(void *arg) {
    srv_runner *r = arg;
    (void)pthread_setname_np(pthread_self(), "annal-projreg");
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        pthread_mutex_unlock(&r->mu);
        scan(r);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += POLL_MS / 1000;
        pthread_mutex_lock(&r->mu);
        if (!r->stopping) (void)pthread_cond_timedwait(&r->cv, &r->mu, &until);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- For the Projections service (projections.c). */

char *runner_target(annal_server *srv, const char *name) {
    srv_runner *r = srv->runner;
    char fname[80];
    if (!r || !name || strlen(name) > 63 || strchr(name, '/') || name[0] == '.') return NULL;
    snprintf(fname, sizeof fname, "%s.proj", name);
    char *path = joinf(r->dir, "/projections/", fname);
    annal_proj_def *def = NULL;
    char err[256];
    annal_err rc = path ? annal_proj_def_load(path, &def, err, sizeof err) : ANNAL_ENOMEM;
    free(path);
    char *t = rc == ANNAL_OK ? reg_target(r, name, def) : NULL;
    annal_proj_def_free(def);
    return t;
}

char **runner_names(annal_server *srv, size_t *n) {
    *n = 0;
    srv_runner *r = srv->runner;
    char *dir = r ? joinf(r->dir, "/projections", "") : NULL;
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    char **out = NULL, name[64];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!registered(e->d_name, name, sizeof name)) continue;
        char **grown = realloc(out, (*n + 1) * sizeof *out);
        char *copy = strdup(name);
        if (!grown || !copy) {
            free(copy);
            if (grown) out = grown;
            break;
        }
        out = grown;
        out[(*n)++] = copy;
    }
    if (d) closedir(d);
    return out;
}

annal_err runner_start(annal_server *srv, const annal_server_opts *o) {
    srv->runner = NULL;
    if (!o->projections_data_dir) return ANNAL_OK;
    srv_runner *r = calloc(1, sizeof *r);
    if (!r) return ANNAL_ENOMEM;
    r->srv = srv;
    r->dir = joinf(o->projections_data_dir, "", "");
    r->lua_budget_ms = o->projections_lua_budget_ms;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (!r->dir || pthread_create(&r->poller, NULL, poller, r) != 0) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r->dir);
        free(r);
        return ANNAL_ENOMEM;
    }
    srv_log(srv, ANNAL_LOG_INFO, "projections: running those registered in %s/projections",
            o->projections_data_dir);
    srv->runner = r;
    return ANNAL_OK;
}

void runner_stop(annal_server *srv) {
    srv_runner *r = srv->runner;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    int first = !r->stopping;
    r->stopping = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (!first) return;
    pthread_join(r->poller, NULL);
    stop_threads(r, &r->list);
}

void runner_free(annal_server *srv) {
    srv_runner *r = srv->runner;
    if (!r) return;
    runner_stop(srv);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->dir);
    free(r);
    srv->runner = NULL;
}
