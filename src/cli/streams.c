/*
 * streams.c -- `annal streams`: list every stream in name order with its last revision,
 * last position and creation time, as a table or as JSON lines.
 * The events of a stream are its last revision + 1, since events are never removed.
 */
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] streams [--all] [--json]\n"
    "\n"
    "List the streams in name order with their last revision (events - 1), the position\n"
    "of their last event and the time of their first event. The store's own system\n"
    "streams (names starting with '$', such as $$<stream> holding metadata) are listed\n"
    "only with --all.\n"
    "\n"
    "Options:\n"
    "  --all    list system streams too (--system is the same)\n"
    "  --json   one JSON object per line: stream, events, last_revision, last_position,\n"
    "           created\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no store, 5 store error.\n";

int cli_cmd_streams(cli_global *g, int argc, char **argv) {
    int json, all;
    int done = cli_args_json_all(g, "streams", usage, argc, argv, &json, &all);
    if (done >= 0) return done;

    annal_db *db;
    int rc = cli_open(g, "streams", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) return rc;
    annal_stream_iter *it = NULL;
    annal_err e = annal_streams_open(db, NULL, &it);
    if (e != ANNAL_OK) {
        rc = cli_fail("streams", db, e, "cannot list streams");
        annal_db_close(db);
        return rc;
    }

    static const char *const heads[] = {"STREAM", ">LAST_REV", ">LAST_POS", "CREATED (UTC)"};
    static const size_t maxw[] = {60, 0, 0, 0};
    cli_table t;
    cli_table_init(&t, g, stdout, 4, heads, maxw);
    cli_buf line = {0};
    const annal_stream_info *si;
    while ((e = annal_streams_next(it, &si)) == ANNAL_OK) {
        if (!all && si->name[0] == '$') continue; /* the store's own */
        char created[CLI_TIME_LEN];
        if (json) {
            cli_time_rfc3339(si->created_ns, created);
            line.len = 0;
            cli_buf_adds(&line, "{\"stream\":");
            cli_json_add_string(&line, si->name, strlen(si->name));
            cli_buf_addf(&line,
                         ",\"events\":%llu,\"last_revision\":%llu,\"last_position\":%llu,"
                         "\"created\":\"%s\"}\n",
                         (unsigned long long)si->last_revision + 1,
                         (unsigned long long)si->last_revision,
                         (unsigned long long)si->last_position, created);
            fwrite(line.p, 1, line.len, stdout);
        } else {
            char rev[24], pos[24];
            snprintf(rev, sizeof rev, "%llu", (unsigned long long)si->last_revision);
            snprintf(pos, sizeof pos, "%llu", (unsigned long long)si->last_position);
            cli_time_short(si->created_ns, created);
            const char *cells[] = {si->name, rev, pos, created};
            cli_table_row(&t, cells);
        }
    }
    cli_table_end(&t);
    cli_buf_free(&line);
    if (e != ANNAL_END) rc = cli_fail("streams", db, e, "listing streams stopped");
    annal_streams_close(it);
    annal_db_close(db);
    return cli_finish_output("streams", stdout, "standard output", rc);
}
