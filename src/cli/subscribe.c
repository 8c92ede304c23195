/*
 * subscribe.c -- `annal subscribe`: `tail -f` for events. Prints the history of a stream,
 * $all, a category or an event type as JSON lines, then follows new events as they are
 * committed. Opens the store read-only, so it runs beside `annal append` in another
 * process, which wakes it through the store's shared notify file.
 */
#include <limits.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] subscribe [STREAM] [options]\n"
    "\n"
    "Print the events of STREAM (default '$all'; also '$ce-CATEGORY', '$et-TYPE') as\n"
    "JSON lines, one per event in the shape of `read --json`, then keep following new\n"
    "events as they are committed (by this or another process) until interrupted.\n"
    "\n"
    "Options:\n"
    "  --category C        the events of category C (as STREAM '$ce-C')\n"
    "  --type T            the events of type T (as STREAM '$et-T')\n"
    "  --from W            START (default), END (only new events), or N: after position\n"
    "                      N (after revision N for one stream)\n"
    "  --type-prefix P     only types starting with P\n"
    "  --type-regex RE     only types matching the POSIX extended regex RE\n"
    "  --stream-prefix P   only streams starting with P\n"
    "  --stream-regex RE   only streams matching RE\n"
    "  --exclude-system    skip types and streams starting with '$'\n"
    "  --limit N           exit after N events\n"
    "  --timeout SEC       exit (status 0) after SEC seconds without an event\n"
    "  --checkpoints       also print {\"checkpoint\":P} (resume with --from P-1) and\n"
    "                      {\"caught_up\":true} lines\n"
    "Filters need '$all', a category or a type, not one stream.\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no such store, 4 damaged event, 5 store error\n"
    "(also when the stream is tombstoned).\n";

enum {
    OPT_CATEGORY,
    OPT_TYPE,
    OPT_FROM,
    OPT_TYPE_PREFIX,
    OPT_TYPE_REGEX,
    OPT_STREAM_PREFIX,
    OPT_STREAM_REGEX,
    OPT_EXCLUDE_SYSTEM,
    OPT_LIMIT,
    OPT_TIMEOUT,
    OPT_CHECKPOINTS
};
static const cli_option options[] = {
    {"category", 1, OPT_CATEGORY},
    {"type", 1, OPT_TYPE},
    {"from", 1, OPT_FROM},
    {"type-prefix", 1, OPT_TYPE_PREFIX},
    {"type-regex", 1, OPT_TYPE_REGEX},
    {"stream-prefix", 1, OPT_STREAM_PREFIX},
    {"stream-regex", 1, OPT_STREAM_REGEX},
    {"exclude-system", 0, OPT_EXCLUDE_SYSTEM},
    {"limit", 1, OPT_LIMIT},
    {"timeout", 1, OPT_TIMEOUT},
    {"checkpoints", 0, OPT_CHECKPOINTS},
    {NULL, 0, 0},
};

/* Print what s delivers, a JSON line each (checkpoints and state changes too if asked),
 * until limit events, a quiet timeout_ms (-1: never) or a failure (returned). */
static annal_err deliver(annal_sub *s, int timeout_ms, uint64_t limit, int checkpoints) {
    cli_buf line = {0};
    uint64_t delivered = 0;
    while (!limit || delivered < limit) {
        annal_sub_item it;
        annal_err e = annal_sub_next(s, timeout_ms, &it);
        if (e == ANNAL_ETIMEDOUT) break; /* quiet for timeout_ms: done */
        if (e != ANNAL_OK) {
            cli_buf_free(&line);
            return e;
        }
        line.len = 0;
        if (it.kind == ANNAL_SUB_EVENT) {
            cli_event_json(&line, it.event);
            delivered++;
        } else if (it.kind == ANNAL_SUB_CHECKPOINT && checkpoints) {
            cli_buf_addf(&line, "{\"checkpoint\":%llu}", (unsigned long long)it.position);
        } else if (it.kind == ANNAL_SUB_CAUGHT_UP && checkpoints) {
            cli_buf_adds(&line, "{\"caught_up\":true}");
        } else if (it.kind == ANNAL_SUB_FELL_BEHIND && checkpoints) {
            cli_buf_adds(&line, "{\"fell_behind\":true}");
        } else {
            continue;
        }
        cli_buf_addc(&line, '\n');
        /* One line at a time: a reader at the other end of a pipe follows live. */
        if (fwrite(line.p, 1, line.len, stdout) != line.len || fflush(stdout) != 0) break;
    }
    cli_buf_free(&line);
    return ANNAL_OK;
}

int cli_cmd_subscribe(cli_global *g, int argc, char **argv) {
    const char *stream = NULL, *category = NULL, *type = NULL;
    annal_filter filter = {0};
    int have_filter = 0, checkpoints = 0;
    uint64_t limit = 0, timeout_s = 0;
    int have_timeout = 0;
    annal_sub_opts so;
    annal_sub_opts_init(&so);

    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("subscribe", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (stream) return cli_usage_error("subscribe", "unexpected argument '%s'", v);
            stream = v;
            break;
        case OPT_CATEGORY: category = v; break;
        case OPT_TYPE: type = v; break;
        case OPT_FROM:
            if (strcmp(v, "START") == 0 || strcmp(v, "start") == 0) {
                so.start = ANNAL_SUB_START;
            } else if (strcmp(v, "END") == 0 || strcmp(v, "end") == 0) {
                so.start = ANNAL_SUB_END;
            } else if (cli_parse_u64(v, &so.from) == 0) {
                so.start = ANNAL_SUB_AFTER;
            } else {
                return cli_usage_error("subscribe", "bad --from '%s': want START, END or a number",
                                       v);
            }
            break;
        case OPT_TYPE_PREFIX: filter.type_prefix = v, have_filter = 1; break;
        case OPT_TYPE_REGEX: filter.type_regex = v, have_filter = 1; break;
        case OPT_STREAM_PREFIX: filter.stream_prefix = v, have_filter = 1; break;
        case OPT_STREAM_REGEX: filter.stream_regex = v, have_filter = 1; break;
        case OPT_EXCLUDE_SYSTEM: filter.exclude_system = 1, have_filter = 1; break;
        case OPT_LIMIT:
            if (cli_parse_u64(v, &limit) != 0 || limit == 0)
                return cli_usage_error("subscribe", "bad --limit '%s': want a number > 0", v);
            break;
        case OPT_TIMEOUT:
            if (cli_parse_u64(v, &timeout_s) != 0 || timeout_s > INT_MAX / 1000)
                return cli_usage_error("subscribe", "bad --timeout '%s': want seconds", v);
            have_timeout = 1;
            break;
        case OPT_CHECKPOINTS: checkpoints = 1; break;
        }
    }
    if ((stream != NULL) + (category != NULL) + (type != NULL) > 1)
        return cli_usage_error("subscribe", "give one of STREAM, --category and --type");
    cli_buf name = {0};
    if (category) cli_buf_addf(&name, "$ce-%s", category);
    if (type) cli_buf_addf(&name, "$et-%s", type);
    so.stream = category || type ? cli_buf_cstr(&name) : stream;
    so.filter = have_filter ? &filter : NULL;

    annal_db *db;
    int rc = cli_open(g, "subscribe", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) {
        cli_buf_free(&name);
        return rc;
    }
    annal_sub *s = NULL;
    annal_err e = annal_sub_open(db, &so, &s);
    if (e != ANNAL_OK) {
        rc = e == ANNAL_EINVAL ? cli_usage_error("subscribe", "%s", annal_db_errmsg(db))
                               : cli_fail("subscribe", db, e, "cannot subscribe");
        annal_db_close(db);
        cli_buf_free(&name);
        return rc;
    }
    int timeout_ms = have_timeout ? (int)timeout_s * 1000 : -1;
    e = deliver(s, timeout_ms, limit, checkpoints);
    rc = CLI_EXIT_OK;
    if (e != ANNAL_OK)
        rc = cli_fail("subscribe", db, e, "subscription to %s stopped",
                      so.stream ? so.stream : "$all");
    cli_buf_free(&name);
    annal_sub_close(s);
    annal_db_close(db);
    return cli_finish_output("subscribe", stdout, "standard output", rc);
}
