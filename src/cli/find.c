/*
 * find.c -- `annal find`: the events matching a DCB query (event types and tags, items
 * OR'd), read from the store's tag and type indexes, as a table or JSON lines, and with
 * --follow the ones still to come. Named `find` because `annal query` runs SQL on a
 * projection's read model (query.c); docs/cli.md says so.
 */
#include <limits.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] find [QUERY] [--type T]... [--tag X]... [--or ...] [options]\n"
    "\n"
    "Print the events matching a query of event types and tags (Dynamic Consistency\n"
    "Boundaries): an event matches an item when its type is one of the item's types (if\n"
    "any) and it has every one of the item's tags (if any); items are OR'd.\n"
    "QUERY is '*' (every event), the short form 'type=A,B tag=x tag=y | type=C', or JSON\n"
    "'{\"items\":[{\"types\":[\"A\"],\"tags\":[\"x\"]}]}'. Or build it with options:\n"
    "  --type T      the item's types include T (any of them matches)\n"
    "  --tag X       the item needs tag X (all of them)\n"
    "  --or          start another item\n"
    "\n"
    "Options:\n"
    "  --after P     only events after position P (use it as --after of a conditional\n"
    "                append: the last position your decision read)\n"
    "  --limit N     at most N events\n"
    "  --backwards   newest first\n"
    "  --json        one JSON object per line (the shape of `read --json`, with \"tags\")\n"
    "  --follow      JSON lines, then keep printing new matching events as they come\n"
    "  --timeout SEC with --follow: exit (status 0) after SEC seconds without an event\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or bad query, 2 no such store, 4 damaged event, 5 store error.\n";

enum { OPT_TYPE, OPT_TAG, OPT_OR, OPT_AFTER, OPT_LIMIT, OPT_BACK, OPT_JSON, OPT_FOLLOW, OPT_TMO };
static const cli_option options[] = {
    {"type", 1, OPT_TYPE},
    {"tag", 1, OPT_TAG},
    {"or", 0, OPT_OR},
    {"after", 1, OPT_AFTER},
    {"limit", 1, OPT_LIMIT},
    {"backwards", 0, OPT_BACK},
    {"backward", 0, OPT_BACK},
    {"json", 0, OPT_JSON},
    {"follow", 0, OPT_FOLLOW},
    {"timeout", 1, OPT_TMO},
    {NULL, 0, 0},
};

typedef struct find_opts {
    uint64_t after; /* ANNAL_AFTER_NONE: from the start */
    uint64_t limit; /* 0: none */
    int backwards, json, follow;
    int timeout_ms; /* -1: forever */
} find_opts;

static void table_row(cli_table *t, const annal_event *ev) {
    char pos[24], rev[24], when[CLI_TIME_LEN];
    snprintf(pos, sizeof pos, "%llu", (unsigned long long)ev->position);
    snprintf(rev, sizeof rev, "%llu", (unsigned long long)ev->revision);
    cli_time_short(ev->timestamp_ns, when);
    cli_buf tags = {0}, data = {0};
    for (const char *tg = NULL; annal_event_tag_next(ev, &tg);) {
        if (tags.len) cli_buf_addc(&tags, ' ');
        cli_buf_adds(&tags, tg);
    }
    cli_data_preview(&data, ev->data, ev->data_len);
    const char *cells[] = {pos,  ev->stream,         rev, ev->type, cli_buf_cstr(&tags),
                           when, cli_buf_cstr(&data)};
    cli_table_row(t, cells);
    cli_buf_free(&tags);
    cli_buf_free(&data);
}

static int print_json(cli_buf *line, const annal_event *ev) {
    line->len = 0;
    cli_event_json(line, ev);
    cli_buf_addc(line, '\n');
    /* One line at a time, flushed: a reader at the other end of a pipe follows live. */
    return fwrite(line->p, 1, line->len, stdout) == line->len && fflush(stdout) == 0 ? 0 : -1;
}

static annal_err read_matching(cli_global *g, annal_db *db, const annal_query *q,
                               const find_opts *o) {
    uint64_t from = o->backwards ? ANNAL_FROM_END : o->after == ANNAL_AFTER_NONE ? 0 : o->after + 1;
    annal_iter *it = NULL;
    annal_err e = annal_read_query(db, q, from, o->backwards ? ANNAL_READ_BACKWARD : 0,
                                   o->backwards ? 0 : o->limit, &it);
    if (e != ANNAL_OK) return e;
    static const char *const heads[] = {">POSITION", "STREAM",     ">REV", "TYPE",
                                        "?TAGS",     "TIME (UTC)", "DATA"};
    static const size_t maxw[] = {0, 32, 0, 28, 40, 0, 0};
    cli_table t;
    if (!o->json) cli_table_init(&t, g, stdout, 7, heads, maxw);
    cli_buf line = {0};
    uint64_t n = 0;
    const annal_event *ev;
    while ((!o->limit || n < o->limit) && (e = annal_iter_next(it, &ev)) == ANNAL_OK) {
        /* Backwards, --after is where to stop. */
        if (o->backwards && o->after != ANNAL_AFTER_NONE && ev->position <= o->after) {
            e = ANNAL_END;
            break;
        }
        n++;
        if (!o->json)
            table_row(&t, ev);
        else if (print_json(&line, ev) != 0)
            break;
    }
    if (!o->json) cli_table_end(&t);
    cli_buf_free(&line);
    annal_iter_close(it);
    return e == ANNAL_OK || e == ANNAL_END ? ANNAL_OK : e;
}

static annal_err follow(annal_db *db, const annal_query *q, const find_opts *o) {
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.query = q;
    if (o->after != ANNAL_AFTER_NONE) {
        so.start = ANNAL_SUB_AFTER;
        so.from = o->after;
    }
    annal_sub *s = NULL;
    annal_err e = annal_sub_open(db, &so, &s);
    if (e != ANNAL_OK) return e;
    cli_buf line = {0};
    for (uint64_t n = 0; !o->limit || n < o->limit;) {
        annal_sub_item item;
        e = annal_sub_next(s, o->timeout_ms, &item);
        if (e == ANNAL_ETIMEDOUT) {
            e = ANNAL_OK;
            break;
        }
        if (e != ANNAL_OK) break;
        if (item.kind != ANNAL_SUB_EVENT) continue;
        n++;
        if (print_json(&line, item.event) != 0) break;
    }
    cli_buf_free(&line);
    annal_sub_close(s);
    return e;
}

/* Options into q and o. 0, or an exit code after reporting. */
static int parse_args(cli_global *g, int argc, char **argv, cli_query *q, find_opts *o) {
    const char *text = NULL;
    int built = 0;
    uint64_t tmo = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int opt; (opt = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (opt) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("find", stdout, "standard output", -1);
        case CLI_ARG_OPERAND:
            if (text) return cli_usage_error("find", "unexpected argument '%s'", v);
            text = v;
            break;
        case OPT_TYPE:
        case OPT_TAG: cli_query_add(q, opt == OPT_TAG, v), built = 1; break;
        case OPT_OR:
            if (!built) return cli_usage_error("find", "--or between two items (--type/--tag)");
            cli_query_new_item(q);
            break;
        case OPT_AFTER:
            if (cli_parse_u64(v, &o->after) != 0 || o->after == ANNAL_AFTER_NONE)
                return cli_usage_error("find", "bad --after '%s': want a position", v);
            break;
        case OPT_LIMIT:
            if (cli_parse_u64(v, &o->limit) != 0 || o->limit == 0)
                return cli_usage_error("find", "bad --limit '%s': want a number > 0", v);
            break;
        case OPT_BACK: o->backwards = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_FOLLOW: o->follow = o->json = 1; break;
        case OPT_TMO:
            if (cli_parse_u64(v, &tmo) != 0 || tmo > INT_MAX / 1000)
                return cli_usage_error("find", "bad --timeout '%s': want seconds", v);
            o->timeout_ms = (int)tmo * 1000;
            break;
        }
    }
    if (text && built) return cli_usage_error("find", "give QUERY or --type/--tag, not both");
    if (!text && !built) return cli_usage_error("find", "missing QUERY ('*' for every event)");
    if (q->nitems && (q->items[q->nitems - 1].ntypes + q->items[q->nitems - 1].ntags) == 0)
        return cli_usage_error("find", "--or must be followed by --type or --tag");
    if (o->follow && o->backwards) return cli_usage_error("find", "--follow reads forwards only");
    if (tmo && !o->follow) return cli_usage_error("find", "--timeout goes with --follow");
    char err[256];
    if (text && cli_query_parse(text, q, err, sizeof err) != 0)
        return cli_usage_error("find", "bad QUERY: %s", err);
    return 0;
}

int cli_cmd_find(cli_global *g, int argc, char **argv) {
    cli_query q = {0};
    find_opts o = {.after = ANNAL_AFTER_NONE, .timeout_ms = -1};
    int rc = parse_args(g, argc, argv, &q, &o);
    if (rc) {
        cli_query_free(&q);
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    annal_db *db;
    rc = cli_open(g, "find", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) {
        cli_query_free(&q);
        return rc;
    }
    const annal_query *aq = cli_query_view(&q);
    annal_err e = o.follow ? follow(db, aq, &o) : read_matching(g, db, aq, &o);
    if (e == ANNAL_EINVAL)
        rc = cli_usage_error("find", "bad query: %s", annal_db_errmsg(db));
    else if (e != ANNAL_OK)
        rc = cli_fail("find", db, e, "cannot read the events matching the query");
    annal_db_close(db);
    cli_query_free(&q);
    return cli_finish_output("find", stdout, "standard output", rc);
}
