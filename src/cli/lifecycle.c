/*
 * lifecycle.c -- the stream lifecycle from the command line: `annal meta` (stream
 * metadata: max count, max age, truncate-before, custom properties), `annal delete`
 * (soft, or --hard for a tombstone) and `annal compact` (give back the space of what
 * those made invisible).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "route.h"

static int parse_expected(const char *cmd, const char *v, int64_t *out) {
    uint64_t n;
    if (strcmp(v, "any") == 0)
        *out = ANNAL_EXPECT_ANY;
    else if (strcmp(v, "no-stream") == 0 || strcmp(v, "no_stream") == 0)
        *out = ANNAL_EXPECT_NO_STREAM;
    else if (strcmp(v, "exists") == 0 || strcmp(v, "stream_exists") == 0)
        *out = ANNAL_EXPECT_STREAM_EXISTS;
    else if (cli_parse_u64(v, &n) == 0 && n <= INT64_MAX)
        *out = (int64_t)n;
    else
        return cli_usage_error(cmd, "--expect takes any, no-stream, exists or a revision: '%s'", v);
    return 0;
}

/* ---- annal meta ---- */
static const char meta_usage[] =
    "usage: annal [--data DIR] meta STREAM                 show its metadata\n"
    "       annal [--data DIR] meta STREAM JSON [--expect E]  replace it\n"
    "       annal [--data DIR] meta STREAM [--max-count N] [--max-age SECONDS]\n"
    "                                      [--truncate-before REV] [--expect E]\n"
    "\n"
    "Stream metadata is a JSON object kept as versioned `$metadata` events in the stream\n"
    "`$$STREAM`. \"$maxCount\", \"$maxAge\" (seconds) and \"$tb\" (truncate before a\n"
    "revision) hide older events from every read at once; `annal compact` then gives\n"
    "their space back. Other members are custom properties. The options change those\n"
    "three members and keep the rest. --expect checks the metadata's own revision\n"
    "(any, no-stream, or a revision; default any).\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or bad JSON, 2 no store, 3 conflict, 5 store error\n"
    "(stream deleted with --hard included).\n";

enum { M_EXPECT, M_MAXCOUNT, M_MAXAGE, M_TB };
static const cli_option meta_opts[] = {{"expect", 1, M_EXPECT},
                                       {"max-count", 1, M_MAXCOUNT},
                                       {"max-age", 1, M_MAXAGE},
                                       {"truncate-before", 1, M_TB},
                                       {NULL, 0, 0}};

int cli_cmd_meta(cli_global *g, int argc, char **argv) {
    const char *stream = NULL, *json = NULL;
    const char *lim[3] = {NULL, NULL, NULL}; /* $maxCount, $maxAge, $tb */
    static const char *const keys[3] = {"$maxCount", "$maxAge", "$tb"};
    int64_t expected = ANNAL_EXPECT_ANY;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, meta_opts, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(meta_usage, stdout);
            return cli_finish_output("meta", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (!stream)
                stream = v;
            else if (!json)
                json = v;
            else
                return cli_usage_error("meta", "unexpected argument '%s'", v);
            break;
        case M_EXPECT:
            if (parse_expected("meta", v, &expected)) return CLI_EXIT_USAGE;
            break;
        case M_MAXCOUNT:
        case M_MAXAGE:
        case M_TB: {
            uint64_t n;
            if (cli_parse_u64(v, &n) != 0 || n > INT64_MAX)
                return cli_usage_error("meta", "--%s takes a non-negative integer: '%s'",
                                       meta_opts[o].name, v);
            lim[o - M_MAXCOUNT] = v;
            break;
        }
        }
    }
    if (!stream) return cli_usage_error("meta", "a stream name is needed");
    int setting = json || lim[0] || lim[1] || lim[2];
    if (json && (lim[0] || lim[1] || lim[2]))
        return cli_usage_error("meta", "give either a JSON document or the limit options");
    /* Writes go through a server that owns the store; reads stay direct when local. */
    annal_remote *srv = NULL;
    int rc = setting || g->server ? cli_route(g, "meta", &srv) : 0;
    if (rc) return rc;
    if (srv) {
        rc = cli_remote_meta(srv, stream, json, lim, expected);
        annal_remote_close(srv);
        return rc;
    }
    annal_db *db;
    rc = cli_open(g, "meta", setting ? 0 : ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) return rc;
    char *cur = NULL;
    int64_t rev = -1;
    annal_err e = annal_stream_meta_get(db, stream, &cur, &rev);
    if (e != ANNAL_OK) {
        rc = cli_fail("meta", db, e, "cannot read the metadata of %s", stream);
        annal_db_close(db);
        return rc;
    }
    if (!setting) {
        printf("{\"stream\":");
        cli_buf b = {0};
        cli_json_add_string(&b, stream, strlen(stream));
        printf("%s,\"revision\":%" PRId64 ",\"metadata\":%s}\n", cli_buf_cstr(&b), rev, cur);
        cli_buf_free(&b);
        annal_free(cur);
        annal_db_close(db);
        return cli_finish_output("meta", stdout, "standard output", CLI_EXIT_OK);
    }
    char *doc = NULL;
    if (!json) { /* merge the limits into the current document */
        json_t *o = json_loads(cur, 0, NULL);
        for (int i = 0; o && i < 3; i++)
            if (lim[i]) json_object_set_new(o, keys[i], json_integer(strtoll(lim[i], NULL, 10)));
        doc = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(o);
        if (!doc) {
            annal_free(cur);
            annal_db_close(db);
            cli_error("meta", "out of memory");
            return CLI_EXIT_STORE;
        }
        json = doc;
    }
    annal_free(cur);
    annal_append_result res;
    e = annal_stream_meta_set(db, stream, expected, json, strlen(json), &res);
    if (e == ANNAL_OK)
        printf("metadata of %s is at revision %" PRId64 "\n", stream, res.revision);
    else
        rc = cli_fail("meta", db, e, "cannot set the metadata of %s", stream);
    free(doc);
    annal_db_close(db);
    return rc ? rc : cli_finish_output("meta", stdout, "standard output", CLI_EXIT_OK);
}

/* ---- annal delete ---- */
static const char delete_usage[] =
    "usage: annal [--data DIR] delete STREAM [--hard] [--expect E]\n"
    "\n"
    "Soft delete (default): the stream reads as not found; appending to it later\n"
    "re-creates it, its revisions going on and its old events staying hidden.\n"
    "--hard writes a tombstone: the stream can never be written again.\n"
    "Either way its events are hidden at once and erased from disk by `annal compact`.\n"
    "--expect checks the stream's last revision (any, exists or a revision; default any).\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no such store or stream, 3 conflict, 5 store error.\n";

enum { D_HARD, D_EXPECT };
static const cli_option delete_opts[] = {
    {"hard", 0, D_HARD}, {"expect", 1, D_EXPECT}, {NULL, 0, 0}};

int cli_cmd_delete(cli_global *g, int argc, char **argv) {
    const char *stream = NULL;
    int hard = 0;
    int64_t expected = ANNAL_EXPECT_ANY;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, delete_opts, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(delete_usage, stdout);
            return cli_finish_output("delete", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (stream) return cli_usage_error("delete", "unexpected argument '%s'", v);
            stream = v;
            break;
        case D_HARD: hard = 1; break;
        case D_EXPECT:
            if (parse_expected("delete", v, &expected)) return CLI_EXIT_USAGE;
            break;
        }
    }
    if (!stream) return cli_usage_error("delete", "a stream name is needed");
    annal_remote *srv;
    int rc = cli_route(g, "delete", &srv);
    if (rc) return rc;
    if (srv) {
        rc = cli_remote_delete(srv, stream, expected, hard);
        annal_remote_close(srv);
        return rc;
    }
    annal_db *db;
    rc = cli_open(g, "delete", 0, NULL, &db);
    if (rc) return rc;
    annal_append_result res;
    annal_err e = annal_stream_delete(db, stream, expected, hard ? ANNAL_DELETE_HARD : 0, &res);
    if (e == ANNAL_OK)
        printf("%s %s\n", hard ? "tombstoned" : "deleted", stream);
    else
        rc = cli_fail("delete", db, e, "cannot delete %s", stream);
    annal_db_close(db);
    return rc ? rc : cli_finish_output("delete", stdout, "standard output", CLI_EXIT_OK);
}

/* ---- annal compact ---- */
static const char compact_usage[] =
    "usage: annal [--data DIR] compact [--seal] [--rate MB_PER_S] [--progress]\n"
    "\n"
    "Erase from disk the events that deletes, truncation and max count or age have\n"
    "hidden, rewriting sealed log segments; positions of the other events never change.\n"
    "The segment being appended to (256 MiB) is sealed only once it is full, so on a\n"
    "small store deleted events stay on disk until then, or until compact --seal.\n"
    "Runs while the store is in use by this process only (it needs the write lock).\n"
    "A compaction killed at any point leaves the store whole; run it again to finish.\n"
    "\n"
    "Options:\n"
    "  --seal       seal the segment being appended to first (new events go to a new\n"
    "               segment), so that its deleted events are erased now too\n"
    "  --rate N     write at most N MB/s (default: no limit)\n"
    "  --progress   show progress on stderr even when it is not a terminal\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no store, 4 damage found, 5 store error or busy.\n";

enum { C_RATE, C_PROGRESS, C_SEAL };
static const cli_option compact_opts[] = {
    {"rate", 1, C_RATE}, {"progress", 0, C_PROGRESS}, {"seal", 0, C_SEAL}, {NULL, 0, 0}};

int cli_cmd_compact(cli_global *g, int argc, char **argv) {
    uint64_t rate = 0;
    int progress_opt = 0, seal = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, compact_opts, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(compact_usage, stdout);
            return cli_finish_output("compact", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND: return cli_usage_error("compact", "unexpected argument '%s'", v);
        case C_RATE:
            if (cli_parse_u64(v, &rate) != 0 || rate == 0 || rate > (UINT64_MAX >> 20))
                return cli_usage_error("compact", "--rate takes a positive number of MB/s");
            rate <<= 20;
            break;
        case C_PROGRESS: progress_opt = 1; break;
        case C_SEAL: seal = 1; break;
        }
    }
    cli_progress prog;
    cli_progress_init(&prog, "compact", progress_opt ? 2 : g->stderr_tty);
    annal_db *db;
    int rc = cli_route_refuse(g, "compact");
    if (!rc) rc = cli_open(g, "compact", 0, &prog, &db);
    if (rc) return rc;
    prog.unit = "segments"; /* opening counted events; annal_compact reports segments */
    annal_compact_stats st;
    memset(&st, 0, sizeof st);
    annal_err e = seal ? annal_seal(db) : ANNAL_OK;
    if (e == ANNAL_OK) e = annal_compact(db, rate, &st);
    cli_progress_end(&prog);
    if (e == ANNAL_OK) {
        printf("compacted %s: %llu of %llu sealed segments examined, %llu events erased, "
               "%llu KiB freed\n",
               g->data_dir, (unsigned long long)st.segments_done,
               (unsigned long long)st.segments_total, (unsigned long long)st.events_erased,
               (unsigned long long)(st.bytes_reclaimed >> 10));
        if (!seal)
            printf("note: the segment being appended to is not compacted: its deleted events "
                   "are erased once it is sealed (when full); 'annal compact --seal' seals "
                   "it now\n");
    } else
        rc = cli_fail("compact", db, e, "%s of %s failed",
                      seal ? "sealing or compaction" : "compaction", g->data_dir);
    annal_db_close(db);
    return rc ? rc : cli_finish_output("compact", stdout, "standard output", CLI_EXIT_OK);
}
