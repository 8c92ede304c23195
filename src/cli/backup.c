/*
 * backup.c -- `annal backup DEST` and `annal restore SRC DIR`: an online, consistent copy
 * of the store as of one position (incremental into the same DEST, or a tar stream on
 * standard output), and a writable store made from it, whole or up to a point in time.
 * Projections' SQLite read models go along with --with-projections (sqlite3_backup_*).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cli.h"

static const char backup_usage[] =
    "usage: annal [--data DIR] backup DEST|- [--link] [--no-index | --rebuild-index]\n"
    "                                [--rate MB_PER_S] [--with-projections]\n"
    "\n"
    "Copy the store as of one position P (every event up to P, none after) into the\n"
    "directory DEST while writers, subscribers, projections and compaction go on, and\n"
    "print P. DEST opens as a store (read-only: `annal --data DEST read`) and passes\n"
    "`annal verify`; `annal restore DEST DIR` makes a writable store of it. A second\n"
    "backup into the same DEST copies only what changed. A backup cut short (killed, full\n"
    "disk) never looks complete: its marker, DEST/backup, is written last.\n"
    "With DEST '-', the backup is written to standard output as a tar archive (without the\n"
    "index: rebuilt when restored), for pipes: annal backup - | zstd > store.tar.zst\n"
    "\n"
    "Options:\n"
    "  --link               hard-link sealed segments instead of copying them (DEST on the\n"
    "                       same filesystem; they are never written again)\n"
    "  --no-index           leave the index out (faster; the first writer open rebuilds it)\n"
    "  --rebuild-index      build the index in DEST from the copied log instead of copying\n"
    "                       the store's (slower)\n"
    "  --rate N             copy at most N MB/s, so that appenders keep their pace\n"
    "                       (default: no limit)\n"
    "  --with-projections   also copy DIR/projections: definitions and SQLite read models\n"
    "                       (rebuildable from the log; each consistent with its checkpoint)\n"
    "\n"
    "Exit codes: 0 done, 1 usage, 2 no store, 5 failure (DEST is then incomplete).\n";

static const char restore_usage[] =
    "usage: annal restore SRC DIR [--to-position P | --to-time T]\n"
    "\n"
    "Make a writable store in DIR (new or empty) from the backup in SRC (refused if the\n"
    "backup is incomplete). With --to-position P the store ends at P; with --to-time T\n"
    "(ISO 8601 UTC, 2026-03-01T14:03:00Z, or ns since the epoch) it ends with the last\n"
    "event committed at or before T. An append is kept whole or not at all. Projection\n"
    "read models in the backup are restored only with the whole log (a point in time\n"
    "drops them: they are rebuilt from the log).\n"
    "\n"
    "Exit codes: 0 done, 1 usage, 2 SRC is not a backup, 4 incomplete or damaged\n"
    "backup, 5 failure.\n";

enum { OPT_LINK, OPT_NO_INDEX, OPT_REBUILD, OPT_PROJ, OPT_RATE, OPT_TO_POS, OPT_TO_TIME };
static const cli_option backup_options[] = {{"link", 0, OPT_LINK},
                                            {"rate", 1, OPT_RATE},
                                            {"rebuild-index", 0, OPT_REBUILD},
                                            {"no-index", 0, OPT_NO_INDEX},
                                            {"with-projections", 0, OPT_PROJ},
                                            {NULL, 0, 0}};
static const cli_option restore_options[] = {
    {"to-position", 1, OPT_TO_POS}, {"to-time", 1, OPT_TO_TIME}, {NULL, 0, 0}};

/* ---- projections ------------------------------------------------------------------ */

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    int ok = in && out;
    char buf[65536];
    for (size_t n; ok && (n = fread(buf, 1, sizeof buf, in)) > 0;) ok = fwrite(buf, 1, n, out) == n;
    if (out && (fflush(out) != 0 || fsync(fileno(out)) != 0)) ok = 0;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok ? 0 : -1;
}

/* One SQLite database, online: sqlite3_backup copies a consistent snapshot (its pages
 * as of one read transaction, restarted if a writer changes it meanwhile), so the
 * read model and its checkpoint row agree. */
static int sqlite_copy(const char *from, const char *to) {
    sqlite3 *src = NULL, *dst = NULL;
    int rc = sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_open_v2(to, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(src, 5000);
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        if (!b) {
            rc = sqlite3_errcode(dst);
        } else {
            while ((rc = sqlite3_backup_step(b, 256)) == SQLITE_OK || rc == SQLITE_BUSY ||
                   rc == SQLITE_LOCKED)
                sqlite3_sleep(5);
            sqlite3_backup_finish(b);
            if (rc == SQLITE_DONE) rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK)
        cli_error("backup", "projection %s: %s", from,
                  dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc == SQLITE_OK ? 0 : -1;
}

/* DIR/projections: *.proj copied, *.db (a link to its current generation) backed up
 * as a plain file. Done before the log's P is chosen, so that every checkpoint is at
 * most P: a projection restored with the log never claims events the log lacks. */
static int copy_projections(const char *store, const char *dest) {
    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/projections", store);
    DIR *d = opendir(from);
    if (!d) return errno == ENOENT ? 0 : -1;
    snprintf(to, sizeof to, "%s/projections", dest);
    int rc = mkdir(to, 0755) < 0 && errno != EEXIST ? -1 : 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        int proj = n > 5 && !strcmp(e->d_name + n - 5, ".proj");
        int db = n > 3 && !strcmp(e->d_name + n - 3, ".db");
        if (!proj && !db) continue;
        char f[PATH_MAX + 256], t[PATH_MAX + 256];
        snprintf(f, sizeof f, "%s/%s", from, e->d_name);
        snprintf(t, sizeof t, "%s/%s", to, e->d_name);
        unlink(t);
        rc = proj ? copy_file(f, t) : sqlite_copy(f, t);
        if (rc < 0) cli_error("backup", "cannot copy %s", f);
    }
    closedir(d);
    return rc;
}

/* ---- backup ------------------------------------------------------------------------ */

static int write_stdout(void *ctx, const void *buf, size_t len) {
    (void)ctx;
    return fwrite(buf, 1, len, stdout) == len ? 0 : -1;
}

int cli_cmd_backup(cli_global *g, int argc, char **argv) {
    const char *dest = NULL;
    int with_proj = 0;
    annal_backup_opts bo;
    annal_backup_opts_init(&bo);
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, backup_options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(backup_usage, stdout);
            return cli_finish_output("backup", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (dest) return cli_usage_error("backup", "unexpected argument '%s'", v);
            dest = v;
            break;
        case OPT_LINK: bo.flags |= ANNAL_BACKUP_LINK; break;
        case OPT_NO_INDEX: bo.flags |= ANNAL_BACKUP_NO_INDEX; break;
        case OPT_REBUILD: bo.flags |= ANNAL_BACKUP_REBUILD_INDEX; break;
        case OPT_PROJ: with_proj = 1; break;
        case OPT_RATE:
            if (cli_parse_u64(v, &bo.bytes_per_s) != 0 || bo.bytes_per_s == 0 ||
                bo.bytes_per_s > (UINT64_MAX >> 20))
                return cli_usage_error("backup", "--rate takes a positive number of MB/s");
            bo.bytes_per_s <<= 20;
            break;
        }
    }
    if (!dest)
        return cli_usage_error("backup", "missing DEST (a directory, or - for a tar stream)");
    int stream = !strcmp(dest, "-");
    if (stream && with_proj)
        return cli_usage_error("backup", "--with-projections needs a directory DEST");
    if (stream && g->stdout_tty)
        return cli_usage_error("backup", "will not write a tar stream to a terminal");
    if (with_proj) {
        if (mkdir(dest, 0755) < 0 && errno != EEXIST) {
            cli_error("backup", "cannot create %s: %s", dest, strerror(errno));
            return CLI_EXIT_STORE;
        }
        if (copy_projections(g->data_dir, dest) < 0) return CLI_EXIT_STORE;
    }
    annal_db *db = NULL;
    cli_progress prog;
    cli_progress_init(&prog, "backup", g->stderr_tty && !stream);
    /* Read-only: a backup never writes the store, and a writer may be running. */
    int rc = cli_open(g, "backup", ANNAL_OPEN_READONLY, &prog, &db);
    if (rc) return rc;
    if (stream) {
        bo.write = write_stdout;
        dest = NULL;
    }
    annal_backup_result res;
    annal_err e = annal_backup(db, dest, &bo, &res);
    cli_progress_end(&prog);
    if (e != ANNAL_OK) {
        rc = cli_fail("backup", db, e, "backup of %s failed", g->data_dir);
        annal_db_close(db);
        return rc;
    }
    annal_db_close(db);
    if (stream) {
        if (fflush(stdout) != 0) {
            cli_error("backup", "cannot write the tar stream: %s", strerror(errno));
            return CLI_EXIT_STORE;
        }
        fprintf(stderr, "annal: backup: position %" PRId64 " (%" PRIu64 " segments)\n",
                (int64_t)res.next_position - 1, res.segments);
        return CLI_EXIT_OK;
    }
    if (res.next_position == 0)
        printf("backup of %s in %s: empty store\n", g->data_dir, dest);
    else
        printf("backup of %s in %s: position %" PRIu64 " (every event up to it, none after)\n",
               g->data_dir, dest, res.next_position - 1);
    printf("%s: %" PRIu64 " of %" PRIu64 " segments copied, %" PRIu64 " bytes%s%s; index %s\n",
           res.incremental ? "incremental" : "full", res.segments_copied, res.segments,
           res.bytes_copied, res.bytes_linked ? ", linked: " : "", res.bytes_linked ? "yes" : "",
           res.index_copied                     ? "copied"
           : (bo.flags & ANNAL_BACKUP_NO_INDEX) ? "left out"
           : res.incremental                    ? "brought up to date"
                                                : "built from the copied log");
    return cli_finish_output("backup", stdout, "standard output", CLI_EXIT_OK);
}

/* ---- restore ----------------------------------------------------------------------- */

/* ISO 8601 UTC (2026-03-01T14:03:00[.123]Z, the Z optional) or ns since the epoch. */
static int parse_time(const char *s, int64_t *ns) {
    uint64_t u;
    if (cli_parse_u64(s, &u) == 0 && u <= INT64_MAX) {
        *ns = (int64_t)u;
        return 0;
    }
    struct tm tm = {0};
    int frac_len = 0;
    char frac[16] = "", z[4] = "";
    int n = sscanf(s, "%4d-%2d-%2d%*1[T ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &frac_len);
    if (n != 6) return -1;
    const char *rest = s + frac_len;
    if (*rest == '.') {
        size_t k = strspn(rest + 1, "0123456789");
        if (k == 0 || k > 9) return -1;
        memcpy(frac, rest + 1, k);
        rest += 1 + k;
    }
    if (sscanf(rest, "%3s", z) == 1 && strcmp(z, "Z") != 0) return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    int64_t f = 0;
    for (int i = 0; i < 9; i++) f = f * 10 + (frac[i] ? frac[i] - '0' : 0);
    *ns = (int64_t)t * 1000000000 + f;
    return 0;
}

static int restore_projections(const char *src, const char *dir) {
    char from[PATH_MAX];
    snprintf(from, sizeof from, "%s/projections", src);
    DIR *d = opendir(from);
    if (!d) return 0;
    closedir(d);
    return copy_projections(src, dir);
}

int cli_cmd_restore(cli_global *g, int argc, char **argv) {
    const char *src = NULL, *dir = NULL;
    annal_restore_opts ro;
    annal_restore_opts_init(&ro);
    int pit = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, restore_options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(restore_usage, stdout);
            return cli_finish_output("restore", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (!src)
                src = v;
            else if (!dir)
                dir = v;
            else
                return cli_usage_error("restore", "unexpected argument '%s'", v);
            break;
        case OPT_TO_POS:
            if (cli_parse_u64(v, &ro.to_position) != 0)
                return cli_usage_error("restore", "--to-position needs a position, not '%s'", v);
            pit = 1;
            break;
        case OPT_TO_TIME:
            if (parse_time(v, &ro.to_time_ns) != 0)
                return cli_usage_error("restore",
                                       "--to-time needs ISO 8601 UTC (2026-03-01T14:03:00Z) or "
                                       "nanoseconds since the epoch, not '%s'",
                                       v);
            pit = 1;
            break;
        }
    }
    if (!src || !dir) return cli_usage_error("restore", "usage: annal restore SRC DIR");
    annal_restore_result res;
    annal_err e = annal_restore(src, dir, &ro, &res);
    if (e != ANNAL_OK) {
        cli_error("restore", "%s", res.message[0] ? res.message : annal_strerror(e));
        return e == ANNAL_ECORRUPT ? CLI_EXIT_CORRUPT : cli_exit_code(e);
    }
    if (!pit && restore_projections(src, dir) < 0) return CLI_EXIT_STORE;
    if (res.next_position == 0)
        printf("restored %s into %s: empty store\n", src, dir);
    else
        printf("restored %s into %s: position %" PRIu64 " (the backup ends at %" PRIu64 ")\n", src,
               dir, res.next_position - 1, res.backup_next_position - 1);
    return cli_finish_output("restore", stdout, "standard output", CLI_EXIT_OK);
}
