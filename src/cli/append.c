/*
 * append.c -- `annal append`: append one event to a stream, creating the store if it is
 * missing, and print the stored event as one JSON line (the shape of `read --json`).
 * Conflicts are explained in the user's terms: what revision was expected, what there is.
 */
#include <string.h>

#include "cli.h"
#include "route.h"

static const char usage[] =
    "usage: annal [--data DIR] append STREAM TYPE DATA [options]\n"
    "\n"
    "Append one event to STREAM (the store is created if missing) and print it as one\n"
    "JSON line, as `annal read --json` does. DATA is stored as given (bytes).\n"
    "\n"
    "Options:\n"
    "  --expected-revision R  N, any (default), no_stream or stream_exists; the append\n"
    "                         fails with exit 3 and writes nothing unless it holds\n"
    "  --id UUID              event id (default: a new UUIDv7); appending the same id\n"
    "                         again returns the original event and writes nothing\n"
    "  --metadata TEXT        metadata, usually a JSON object (stored as given)\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or invalid input, 3 conflict or id already used,\n"
    "5 store error.\n";

enum { OPT_EXPECTED, OPT_ID, OPT_METADATA };
static const cli_option options[] = {
    {"expected-revision", 1, OPT_EXPECTED},
    {"id", 1, OPT_ID},
    {"metadata", 1, OPT_METADATA},
    {NULL, 0, 0},
};

static int parse_expected(const char *s, int64_t *out) {
    uint64_t n;
    if (strcmp(s, "any") == 0)
        *out = ANNAL_EXPECT_ANY;
    else if (strcmp(s, "no_stream") == 0 || strcmp(s, "no-stream") == 0)
        *out = ANNAL_EXPECT_NO_STREAM;
    else if (strcmp(s, "stream_exists") == 0 || strcmp(s, "stream-exists") == 0)
        *out = ANNAL_EXPECT_STREAM_EXISTS;
    else if (cli_parse_u64(s, &n) == 0 && n <= (uint64_t)INT64_MAX)
        *out = (int64_t)n;
    else
        return -1;
    return 0;
}

/* The conflict, said in terms of what the user asked for. */
static void report_conflict(const char *stream, int64_t expected, int64_t actual) {
    char at[64];
    if (actual < 0)
        snprintf(at, sizeof at, "does not exist");
    else
        snprintf(at, sizeof at, "is at %lld", (long long)actual);
    if (expected == ANNAL_EXPECT_NO_STREAM)
        cli_error("append", "expected no stream but stream %s %s", stream, at);
    else if (expected == ANNAL_EXPECT_STREAM_EXISTS)
        cli_error("append", "expected stream %s to exist but it does not", stream);
    else
        cli_error("append", "expected revision %lld but stream %s %s", (long long)expected, stream,
                  at);
}

int cli_cmd_append(cli_global *g, int argc, char **argv) {
    const char *operands[3] = {NULL, NULL, NULL};
    int nops = 0;
    int64_t expected = ANNAL_EXPECT_ANY;
    const char *metadata = NULL;
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);

    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("append", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (nops == 3) return cli_usage_error("append", "unexpected argument '%s'", v);
            operands[nops++] = v;
            break;
        case OPT_EXPECTED:
            if (parse_expected(v, &expected) != 0)
                return cli_usage_error("append",
                                       "bad --expected-revision '%s': want a revision number, "
                                       "any, no_stream or stream_exists",
                                       v);
            break;
        case OPT_ID:
            if (annal_uuid_parse(v, &ev.id) != ANNAL_OK)
                return cli_usage_error("append",
                                       "bad --id '%s': want a UUID like "
                                       "0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77",
                                       v);
            break;
        case OPT_METADATA: metadata = v; break;
        }
    }
    if (nops < 3)
        return cli_usage_error("append", "missing %s",
                               nops == 0   ? "STREAM, TYPE and DATA"
                               : nops == 1 ? "TYPE and DATA"
                                           : "DATA");
    const char *stream = operands[0];
    ev.type = operands[1];
    ev.data = operands[2];
    ev.data_len = strlen(operands[2]);
    ev.metadata = metadata;
    ev.metadata_len = metadata ? strlen(metadata) : 0;

    /* While a server owns the store, the append goes through it. */
    annal_remote *srv;
    int rc = cli_route(g, "append", &srv);
    if (rc) return rc;
    if (srv) {
        rc = cli_remote_append(srv, stream, expected, &ev);
        annal_remote_close(srv);
        return rc;
    }
    annal_db *db;
    rc = cli_open(g, "append", ANNAL_OPEN_CREATE, NULL, &db);
    if (rc) return rc;

    annal_append_result res;
    memset(&res, 0, sizeof res);
    annal_err e = annal_append(db, stream, expected, &ev, 1, &res);
    if (e == ANNAL_ECONFLICT) {
        report_conflict(stream, expected, res.revision);
        rc = CLI_EXIT_CONFLICT;
    } else if (e != ANNAL_OK) {
        /* The store's detail says what: the reused id, the limit passed, the bad name. */
        rc = cli_fail("append", db, e, "cannot append to stream %s", stream);
    } else {
        /* Print what the store holds, not what we sent: revision, position and time. */
        annal_event *stored = NULL;
        e = annal_event_get(db, res.first_position, &stored);
        if (e != ANNAL_OK) {
            rc = cli_fail("append", db, e, "appended at position %llu but cannot read it back",
                          (unsigned long long)res.first_position);
        } else {
            cli_buf line = {0};
            cli_event_json(&line, stored);
            cli_buf_addc(&line, '\n');
            fwrite(line.p, 1, line.len, stdout);
            cli_buf_free(&line);
            annal_free(stored);
        }
    }
    annal_db_close(db);
    return cli_finish_output("append", stdout, "standard output", rc);
}
