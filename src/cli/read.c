/*
 * read.c -- `annal read`: print the events of one stream, or of $all, as an aligned
 * table for people or as JSON lines (--json) for programs.
 * Reads open the store read-only, so they never create it and may run beside a writer.
 */
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] read STREAM [options]\n"
    "\n"
    "Print the events of STREAM, or of every stream in commit order when STREAM is\n"
    "'$all' (quote it in the shell).\n"
    "\n"
    "Options:\n"
    "  --json       one JSON object per line: id, stream, type, revision, position,\n"
    "               timestamp, data, metadata, tags (see docs/cli.md)\n"
    "  --backward   newest first\n"
    "  --from N     start at revision N (at position N for $all); default: the first\n"
    "               event, or the last one with --backward\n"
    "  --limit N    at most N events\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no such store or stream, 4 damaged event, 5 store error.\n";

enum { OPT_JSON, OPT_BACKWARD, OPT_FROM, OPT_LIMIT };
static const cli_option options[] = {
    {"json", 0, OPT_JSON}, {"backward", 0, OPT_BACKWARD},
    {"from", 1, OPT_FROM}, {"limit", 1, OPT_LIMIT},
    {NULL, 0, 0},
};

static void table_row(cli_table *t, const annal_event *ev) {
    char pos[24], rev[24], when[CLI_TIME_LEN];
    snprintf(pos, sizeof pos, "%llu", (unsigned long long)ev->position);
    snprintf(rev, sizeof rev, "%llu", (unsigned long long)ev->revision);
    cli_time_short(ev->timestamp_ns, when);
    cli_buf data = {0}, tags = {0};
    cli_data_preview(&data, ev->data, ev->data_len);
    for (const char *tg = NULL; annal_event_tag_next(ev, &tg);) {
        if (tags.len) cli_buf_addc(&tags, ' ');
        cli_buf_adds(&tags, tg);
    }
    const char *cells[] = {pos,  ev->stream,         rev, ev->type, cli_buf_cstr(&tags),
                           when, cli_buf_cstr(&data)};
    cli_table_row(t, cells);
    cli_buf_free(&data);
    cli_buf_free(&tags);
}

int cli_cmd_read(cli_global *g, int argc, char **argv) {
    const char *stream = NULL;
    int json = 0;
    unsigned flags = 0;
    uint64_t from = 0, limit = 0;
    int have_from = 0;

    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("read", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (stream) return cli_usage_error("read", "unexpected argument '%s'", v);
            stream = v;
            break;
        case OPT_JSON: json = 1; break;
        case OPT_BACKWARD: flags |= ANNAL_READ_BACKWARD; break;
        case OPT_FROM:
            if (cli_parse_u64(v, &from) != 0)
                return cli_usage_error("read", "bad --from '%s': want a number", v);
            have_from = 1;
            break;
        case OPT_LIMIT:
            if (cli_parse_u64(v, &limit) != 0 || limit == 0)
                return cli_usage_error("read", "bad --limit '%s': want a number > 0", v);
            break;
        }
    }
    if (!stream) return cli_usage_error("read", "missing STREAM (a stream name or '$all')");
    if (!have_from && (flags & ANNAL_READ_BACKWARD)) from = ANNAL_FROM_END;
    int all = strcmp(stream, "$all") == 0;

    annal_db *db;
    int rc = cli_open(g, "read", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) return rc;

    annal_iter *it = NULL;
    annal_err e = all ? annal_read_all(db, from, flags, limit, &it)
                      : annal_read_stream(db, stream, from, flags, limit, &it);
    if (e == ANNAL_ENOTFOUND && !all) {
        cli_error("read", "stream %s not found in %s", stream, g->data_dir);
        annal_db_close(db);
        return CLI_EXIT_NOTFOUND;
    }
    if (e != ANNAL_OK) {
        rc = cli_fail("read", db, e, "cannot read %s", stream);
        annal_db_close(db);
        return rc;
    }

    static const char *const heads[] = {">POSITION", "STREAM",     ">REV", "TYPE",
                                        "?TAGS",     "TIME (UTC)", "DATA"};
    static const size_t maxw[] = {0, 32, 0, 28, 40, 0, 0};
    cli_table t;
    cli_table_init(&t, g, stdout, 7, heads, maxw);
    cli_buf line = {0};
    const annal_event *ev;
    while ((e = annal_iter_next(it, &ev)) == ANNAL_OK) {
        if (json) {
            line.len = 0;
            cli_event_json(&line, ev);
            cli_buf_addc(&line, '\n');
            fwrite(line.p, 1, line.len, stdout);
        } else {
            table_row(&t, ev);
        }
    }
    cli_table_end(&t);
    cli_buf_free(&line);
    if (e != ANNAL_END) rc = cli_fail("read", db, e, "reading %s stopped", stream);
    annal_iter_close(it);
    annal_db_close(db);
    return cli_finish_output("read", stdout, "standard output", rc);
}
