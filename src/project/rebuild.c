/*
 * rebuild.c -- rebuilding a read model from history into a shadow that replaces the live
 * one when caught up. SQLite: the target path is a symbolic link to a generation file
 * (orders.db -> orders.db.g<N>); the shadow is the next generation and the link is
 * replaced atomically. PostgreSQL: the shadow is the schema <name>__rebuild, renamed over
 * the live schema in one transaction. In both, the switch holds the live model's write
 * lock while the shadow applies the last events, so the running projector stops between
 * two batches and then finds the model replaced.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "project_int.h"

annal_err annal__pj_open_schema(annal_db *db, const annal_proj_opts *o, const char *schema,
                                annal_proj **out, char *err, size_t err_size);

annal_err annal__pj_add_skips(annal_proj *p, const uint64_t *pos, size_t n);
annal_err annal__pj_read_skips(pj_target *t, const char *name, uint64_t **out, size_t *n);

/* Carry the events an operator skipped in the live model over to the shadow: a rebuild
 * must not stop again at an event someone already decided to pass over. */
static annal_err copy_skips(const char *live_spec, const char *schema, const char *name,
                            annal_proj *shadow, char *err, size_t err_size) {
    pj_target *t = NULL;
    if (annal__pj_target_open(live_spec, schema, &t, err, err_size) != ANNAL_OK) {
        annal__pj_fmt(err, err_size, "%s", "");
        return ANNAL_OK; /* no live model yet: nothing skipped */
    }
    uint64_t *v = NULL;
    size_t n = 0;
    annal_err rc = annal__pj_read_skips(t, name, &v, &n);
    annal__pj_target_close(t);
    if (rc == ANNAL_OK) rc = annal__pj_add_skips(shadow, v, n);
    if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal_proj_errmsg(shadow));
    free(v);
    return rc;
}

/* Step p until caught up, reporting progress. */
static annal_err catch_up(annal_db *db, annal_proj *p, annal_progress_fn progress, void *pctx,
                          uint64_t *done, char *err, size_t err_size) {
    for (;;) {
        uint64_t n = 0;
        annal_err rc = annal_proj_step(p, &n);
        *done += n;
        if (rc == ANNAL_END) return ANNAL_OK;
        if (rc != ANNAL_OK) {
            annal__pj_fmt(err, err_size, "%s", annal_proj_errmsg(p));
            return rc;
        }
        if (progress) {
            annal_db_info info;
            if (annal_db_info_get(db, &info) == ANNAL_OK && progress(pctx, *done, info.events))
                return ANNAL_ECANCELED;
        }
    }
}

static annal_err rebuild_sqlite(annal_db *db, const annal_proj_opts *o, const char *path,
                                annal_progress_fn progress, void *pctx, char *err,
                                size_t err_size) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char shadow[PATH_MAX], spec[PATH_MAX + 8], link_tmp[PATH_MAX + 16], old_real[PATH_MAX];
    int n =
        snprintf(shadow, sizeof shadow, "%s.g%lld%09ld", path, (long long)ts.tv_sec, ts.tv_nsec);
    if (n < 0 || (size_t)n >= sizeof shadow - 8) {
        annal__pj_fmt(err, err_size, "path too long: %s", path);
        return ANNAL_EINVAL;
    }
    snprintf(spec, sizeof spec, "sqlite:%s", shadow);
    snprintf(link_tmp, sizeof link_tmp, "%s.link-tmp", shadow);
    annal_proj_opts so = *o;
    so.target = spec;
    annal_proj *p = NULL;
    annal_err rc = annal_proj_open(db, &so, &p, err, err_size);
    uint64_t done = 0;
    int have_live = access(path, F_OK) == 0;
    const char *name = o->name ? o->name : annal_proj_def_name(o->def);
    if (rc == ANNAL_OK && have_live) {
        char lspec[PATH_MAX + 8];
        snprintf(lspec, sizeof lspec, "sqlite:%s", path);
        rc = copy_skips(lspec, NULL, name, p, err, err_size);
    }
    if (rc == ANNAL_OK) rc = catch_up(db, p, progress, pctx, &done, err, err_size);
    pj_target *live = NULL;
    int had_link = 0;
    if (rc == ANNAL_OK && have_live) {
        /* The switch: hold the live model's write lock, apply the last events to the
         * shadow, mark the live row replaced, swap the link, release. */
        char lspec[PATH_MAX + 8];
        snprintf(lspec, sizeof lspec, "sqlite:%s", path);
        rc = annal__pj_target_open(lspec, NULL, &live, err, err_size);
        if (rc == ANNAL_OK) rc = annal__pj_target_begin(live);
        if (rc == ANNAL_OK) rc = catch_up(db, p, progress, pctx, &done, err, err_size);
        if (rc == ANNAL_OK) {
            annal_proj_value nm = {ANNAL_PROJ_TEXT, 0, 0, name, strlen(name)};
            /* a live model from before projections had a state table has none: fine */
            (void)annal__pj_target_exec(
                live, "UPDATE annal_projections SET status = 'replaced' WHERE name = ?1", &nm, 1,
                NULL, NULL);
        }
        char lbuf[PATH_MAX];
        ssize_t ln = readlink(path, lbuf, sizeof lbuf - 1);
        had_link = ln > 0;
        if (!realpath(path, old_real)) old_real[0] = '\0';
    }
    if (rc == ANNAL_OK) {
        char base[PATH_MAX];
        snprintf(base, sizeof base, "%s", shadow);
        const char *b = basename(base);
        unlink(link_tmp);
        if (symlink(b, link_tmp) != 0 || rename(link_tmp, path) != 0) {
            annal__pj_fmt(err, err_size, "cannot switch %s to %s: %s", path, shadow,
                          strerror(errno));
            unlink(link_tmp);
            rc = ANNAL_EIO;
        }
    }
    if (live) {
        if (rc == ANNAL_OK) {
            rc = annal__pj_target_commit(live);
            if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(live));
        } else {
            annal__pj_target_rollback(live);
        }
        annal__pj_target_close(live);
    }
    annal_proj_close(p);
    char side[PATH_MAX + 8];
    if (rc != ANNAL_OK) {
        unlink(shadow);
        snprintf(side, sizeof side, "%s-wal", shadow);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", shadow);
        unlink(side);
        return rc;
    }
    /* The old generation: processes that still have it open keep their copy. */
    if (have_live && old_real[0] && strcmp(old_real, path) != 0 && had_link) {
        unlink(old_real);
        snprintf(side, sizeof side, "%s-wal", old_real);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", old_real);
        unlink(side);
    } else if (have_live) { /* the live model was a plain file, now replaced by the link */
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
    }
    return ANNAL_OK;
}

static annal_err rebuild_pg(annal_db *db, const annal_proj_opts *o, const char *target,
                            const char *name, annal_progress_fn progress, void *pctx, char *err,
                            size_t err_size) {
    char shadow[PJ_NAME_MAX + 16];
    snprintf(shadow, sizeof shadow, "%s__rebuild", name);
    pj_target *live = NULL;
    annal_err rc = annal__pj_target_open(target, NULL, &live, err, err_size);
    if (rc != ANNAL_OK) return rc;
    char sql[512];
    snprintf(sql, sizeof sql,
             "DROP SCHEMA IF EXISTS \"%s\" CASCADE; CREATE SCHEMA IF NOT EXISTS \"%s\"", shadow,
             name);
    rc = annal__pj_target_script(live, sql);
    if (rc != ANNAL_OK) {
        annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(live));
        annal__pj_target_close(live);
        return rc;
    }
    annal_proj *p = NULL;
    rc = annal__pj_open_schema(db, o, shadow, &p, err, err_size);
    uint64_t done = 0;
    if (rc == ANNAL_OK) rc = copy_skips(target, name, name, p, err, err_size);
    if (rc == ANNAL_OK) rc = catch_up(db, p, progress, pctx, &done, err, err_size);
    if (rc == ANNAL_OK) rc = annal__pj_target_begin(live);
    if (rc == ANNAL_OK) {
        /* Lock the live state table first: a projector blocks at its next batch, holding
         * nothing, so dropping the live schema cannot deadlock with it. */
        snprintf(sql, sizeof sql,
                 "CREATE TABLE IF NOT EXISTS \"%s\".annal_projections (name TEXT PRIMARY KEY); "
                 "LOCK TABLE \"%s\".annal_projections IN ACCESS EXCLUSIVE MODE",
                 name, name);
        rc = annal__pj_target_script(live, sql);
        if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(live));
    }
    if (rc == ANNAL_OK) rc = catch_up(db, p, progress, pctx, &done, err, err_size);
    annal_proj_close(p);
    p = NULL;
    if (rc == ANNAL_OK) {
        snprintf(sql, sizeof sql,
                 "DROP SCHEMA \"%s\" CASCADE; ALTER SCHEMA \"%s\" RENAME TO \"%s\"", name, shadow,
                 name);
        rc = annal__pj_target_script(live, sql);
        if (rc == ANNAL_OK) rc = annal__pj_target_commit(live);
        if (rc != ANNAL_OK) annal__pj_fmt(err, err_size, "%s", annal__pj_target_errmsg(live));
    }
    if (rc != ANNAL_OK) {
        annal__pj_target_rollback(live);
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", shadow);
        (void)annal__pj_target_script(live, sql);
    }
    annal__pj_target_close(live);
    return rc;
}

annal_err annal_proj_rebuild(annal_db *db, const annal_proj_opts *o, annal_progress_fn progress,
                             void *progress_ctx, char *err, size_t err_size) {
    annal__pj_fmt(err, err_size, "%s", "");
    if (!db || !o) return ANNAL_EINVAL;
    const char *name = o->name ? o->name : annal_proj_def_name(o->def);
    const char *target = o->target ? o->target : annal_proj_def_target(o->def);
    pj_tkind kind;
    const char *rest;
    if (!name || annal__pj_target_kind(target, &kind, &rest) != 0 || kind == PJ_T_MEMORY) {
        annal__pj_fmt(err, err_size, "a rebuild needs a named projection with a database target");
        return ANNAL_EINVAL;
    }
    if (kind == PJ_T_SQLITE)
        return rebuild_sqlite(db, o, rest, progress, progress_ctx, err, err_size);
    return rebuild_pg(db, o, target, name, progress, progress_ctx, err, err_size);
}
