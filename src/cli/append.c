/*
 * append.c -- `annal append`: append one event to a stream, creating the store if it is
 * missing, and print the stored event as one JSON line (the shape of `read --json`).
 * Conflicts are explained in the user's terms: what revision was expected, what there is.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"
#include "route.h"

static const char usage[] =
    "usage: annal [--data DIR] append STREAM TYPE DATA [options]\n"
    "       annal [--data DIR] append STREAM TYPE --data-file FILE [options]\n"
    "       annal [--data DIR] append --batch FILE.jsonl\n"
    "\n"
    "Append one event to STREAM (the store is created if missing) and print it as one\n"
    "JSON line, as `annal read --json` does. DATA is stored as given (bytes); DATA -\n"
    "reads it from standard input. Data that starts like JSON ({ or [) but does not\n"
    "parse is stored as text with a warning on stderr (an error with --json).\n"
    "\n"
    "Options:\n"
    "  --data-file FILE       read the data from FILE, byte for byte (- : standard\n"
    "                         input), up to the event size limit (32 MiB with the\n"
    "                         metadata)\n"
    "  --json                 the data (and metadata) must be valid JSON: exit 1 and\n"
    "                         append nothing otherwise\n"
    "  --expected-revision R  N, any (default), no_stream or stream_exists; the append\n"
    "                         fails with exit 3 and writes nothing unless it holds\n"
    "  --id UUID              event id (default: a new UUIDv7); appending the same id\n"
    "                         again returns the original event and writes nothing\n"
    "  --metadata TEXT        metadata, a JSON object by the store's convention (stored\n"
    "                         as given): broken JSON is an error, text a warning\n"
    "  --metadata-file FILE   read the metadata from FILE (- : standard input)\n"
    "  --batch FILE           append the events of FILE (- : standard input) atomically,\n"
    "                         all or none, across streams: one JSON object a line with\n"
    "                         \"stream\", \"type\", and optional \"data\", \"metadata\",\n"
    "                         \"id\"; \"expected_revision\" (as above) on a stream's first\n"
    "                         line. Prints one JSON line per run of one stream's lines;\n"
    "                         \"tags\": [\"x\", ...] on a line tags its event\n"
    "\n"
    "Dynamic Consistency Boundaries (see `annal find --help`):\n"
    "  --tag X                tag the event with X (repeat for more tags)\n"
    "  --fail-if-match QUERY  append only if no event matching QUERY exists (after\n"
    "                         --after P, when given): else exit 6, nothing appended, and\n"
    "                         the error names the matching event's position. With --batch\n"
    "                         too\n"
    "  --after P              the position the decision read up to (for --fail-if-match)\n"
    "STREAM '$dcb' appends the event with its tags alone, to the store's DCB stream.\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or invalid input, 3 conflict or id already used,\n"
    "5 store error, 6 condition failed (--fail-if-match).\n";

enum {
    OPT_EXPECTED,
    OPT_ID,
    OPT_METADATA,
    OPT_DATA_FILE,
    OPT_METADATA_FILE,
    OPT_JSON,
    OPT_BATCH,
    OPT_TAG,
    OPT_FAIL_IF,
    OPT_AFTER
};
static const cli_option options[] = {
    {"expected-revision", 1, OPT_EXPECTED},
    {"id", 1, OPT_ID},
    {"metadata", 1, OPT_METADATA},
    {"data-file", 1, OPT_DATA_FILE},
    {"metadata-file", 1, OPT_METADATA_FILE},
    {"json", 0, OPT_JSON},
    {"batch", 1, OPT_BATCH},
    {"tag", 1, OPT_TAG},
    {"fail-if-match", 1, OPT_FAIL_IF},
    {"after", 1, OPT_AFTER},
    {NULL, 0, 0},
};

/* ---- Loading data and metadata (from the command line, a file or standard input). */

/* Read all of path ("-": standard input) into b, refusing more than limit bytes: the
 * store would refuse the event anyway, and reading on would only fill memory. Returns
 * 0, or an exit code after reporting. */
static int load_file(const char *path, const char *what, uint64_t limit, cli_buf *b) {
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        cli_error("append", "cannot open %s file %s: %s", what, path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    int rc = 0;
    char chunk[65536];
    for (;;) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n > 0 && (uint64_t)b->len + n > limit) {
            cli_error("append", "%s from %s is over the store's event size limit of %llu bytes",
                      what, is_stdin ? "standard input" : path, (unsigned long long)limit);
            rc = CLI_EXIT_USAGE;
            break;
        }
        cli_buf_add(b, chunk, n);
        if (n < sizeof chunk) {
            if (ferror(f)) {
                cli_error("append", "cannot read %s from %s: %s", what,
                          is_stdin ? "standard input" : path, strerror(errno));
                rc = CLI_EXIT_USAGE;
            }
            break;
        }
    }
    if (!is_stdin) fclose(f);
    return rc;
}

/* Does s start like JSON, an object or an array after blanks? Such text that does not
 * parse is almost surely a mistake (a cut-off paste, shell quoting), not text. */
static int looks_like_json(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i < n && (s[i] == '{' || s[i] == '[');
}

/* Check one field against the JSON rules (docs/cli.md, append): returns 0 to go on, or
 * an exit code after reporting. Data: broken JSON warns, --json refuses anything that
 * is not JSON. Metadata is JSON by the store's convention (handlers read "$schema" and
 * correlation ids from it): broken JSON is refused, plain text warns unless --json. */
static int check_json(const char *what, const char *s, size_t n, int strict, int is_meta) {
    json_error_t err;
    json_t *j = json_loadb(s, n, CLI_JSON_FLAGS, &err);
    if (j) {
        json_decref(j);
        return 0;
    }
    int broken = looks_like_json(s, n);
    if (strict || (is_meta && broken)) {
        if (broken)
            cli_error("append", "%s is not valid JSON: %s (line %d, column %d); nothing appended",
                      what, err.text, err.line, err.column);
        else
            cli_error("append", "%s is not JSON (--json); nothing appended", what);
        return CLI_EXIT_USAGE;
    }
    if (broken)
        cli_error("append",
                  "warning: %s starts like JSON but is not valid JSON: %s (line %d, column %d); "
                  "storing it as text (--json makes this an error)",
                  what, err.text, err.line, err.column);
    else if (is_meta)
        cli_error("append", "warning: metadata is not JSON; storing it as text");
    return 0;
}

/* Fill ev's data and metadata from the operand or files; both buffers live until the
 * append is done. Returns 0 or an exit code after reporting. */
static int load_event(annal_event_data *ev, const char *data_arg, const char *data_file,
                      const char *meta_arg, const char *meta_file, int strict, cli_buf *data,
                      cli_buf *meta) {
    annal_db_opts o;
    annal_db_opts_init(&o); /* the limit the store will apply to this event */
    uint64_t limit = o.max_event_bytes;
    int rc = 0;
    if (data_file || strcmp(data_arg, "-") == 0)
        rc = load_file(data_file ? data_file : "-", "data", limit, data);
    else
        cli_buf_add(data, data_arg, strlen(data_arg));
    if (!rc && meta_file) {
        if (strcmp(meta_file, "-") == 0 &&
            (!data_file ? strcmp(data_arg, "-") == 0 : strcmp(data_file, "-") == 0)) {
            cli_error("append", "data and metadata cannot both come from standard input");
            return CLI_EXIT_USAGE;
        }
        rc = load_file(meta_file, "metadata", limit - data->len, meta);
    } else if (!rc && meta_arg) {
        cli_buf_add(meta, meta_arg, strlen(meta_arg));
    }
    if (!rc) rc = check_json("data", data->p ? data->p : "", data->len, strict, 0);
    if (!rc && (meta_file || meta_arg))
        rc = check_json("metadata", meta->p ? meta->p : "", meta->len, strict, 1);
    ev->data = data->p;
    ev->data_len = data->len;
    ev->metadata = meta_file || meta_arg ? (meta->p ? meta->p : "") : NULL;
    ev->metadata_len = meta->len;
    return rc;
}

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

/* The command line, parsed. */
typedef struct append_args {
    const char *operands[3];
    int nops;
    int64_t expected;
    int has_expected;
    const char *metadata, *data_file, *meta_file, *batch_file;
    int strict;
    annal_event_data ev;
    /* Dynamic Consistency Boundaries */
    const char **tags; /* argc entries, borrowed from argv */
    size_t ntags;
    const char *fail_if; /* --fail-if-match QUERY */
    uint64_t after;      /* --after P, else ANNAL_AFTER_NONE */
} append_args;

static int is_dcb(const char *stream) { return strcmp(stream, ANNAL_DCB_STREAM) == 0; }

/* Print the event at position as stored. */
static int print_stored(annal_db *db, uint64_t position) {
    annal_event *stored = NULL;
    annal_err e = annal_event_get(db, position, &stored);
    if (e != ANNAL_OK)
        return cli_fail("append", db, e, "appended at position %llu but cannot read it back",
                        (unsigned long long)position);
    cli_buf line = {0};
    cli_event_json(&line, stored);
    cli_buf_addc(&line, '\n');
    fwrite(line.p, 1, line.len, stdout);
    cli_buf_free(&line);
    annal_free(stored);
    return 0;
}

/* Append ev to the open store and print it as stored (or say why not). */
static int append_local(annal_db *db, const char *stream, int64_t expected, annal_event_data *ev) {
    annal_append_result res;
    memset(&res, 0, sizeof res);
    annal_err e = annal_append(db, stream, expected, ev, 1, &res);
    if (e == ANNAL_ECONFLICT) {
        report_conflict(stream, expected, res.revision);
        return CLI_EXIT_CONFLICT;
    }
    /* The store's detail says what: the reused id, the limit passed, the bad name. */
    if (e != ANNAL_OK) return cli_fail("append", db, e, "cannot append to stream %s", stream);
    /* Print what the store holds, not what we sent: revision, position and time. */
    return print_stored(db, res.first_position);
}

/* The same with tags and a condition (annal_append_tagged): '$dcb' is the DCB stream. */
static int append_tagged(annal_db *db, const char *stream, append_args *aa) {
    cli_query q = {0};
    annal_condition cond = {NULL, aa->after};
    char err[256];
    if (aa->fail_if && cli_query_parse(aa->fail_if, &q, err, sizeof err) != 0) {
        cli_query_free(&q);
        return cli_usage_error("append", "bad --fail-if-match: %s", err);
    }
    cond.query = cli_query_view(&q);
    annal_tag_list tl = {aa->tags, aa->ntags};
    annal_tagged_append part = {is_dcb(stream) ? NULL : stream, aa->expected, &aa->ev, &tl, 1};
    annal_append_result pr;
    annal_stream_conflict conf;
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.parts = &pr;
    res.conflicts = &conf;
    res.max_conflicts = 1;
    annal_err e = annal_append_tagged(db, &part, 1, NULL, 0, aa->fail_if ? &cond : NULL, &res);
    int rc;
    if (e == ANNAL_ECONDITION || e == ANNAL_ECONFLICT) {
        if (res.nconflicts) report_conflict(stream, aa->expected, conf.actual);
        rc = e == ANNAL_ECONFLICT
                 ? CLI_EXIT_CONFLICT
                 : cli_report_condition("append", db, res.condition_position, aa->after);
    } else if (e != ANNAL_OK) {
        rc = cli_fail("append", db, e, "cannot append to stream %s", stream);
    } else {
        rc = print_stored(db, pr.first_position);
    }
    cli_query_free(&q);
    return rc;
}

/* Parse argv into aa. 0, -1 (help shown), or an exit code after reporting. */
static int parse_args(cli_global *g, int argc, char **argv, append_args *aa) {
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("append", stdout, "standard output", -1);
        case CLI_ARG_OPERAND:
            if (aa->nops == 3) return cli_usage_error("append", "unexpected argument '%s'", v);
            aa->operands[aa->nops++] = v;
            break;
        case OPT_EXPECTED:
            if (parse_expected(v, &aa->expected) != 0)
                return cli_usage_error("append",
                                       "bad --expected-revision '%s': want a revision number, "
                                       "any, no_stream or stream_exists",
                                       v);
            aa->has_expected = 1;
            break;
        case OPT_ID:
            if (annal_uuid_parse(v, &aa->ev.id) != ANNAL_OK)
                return cli_usage_error("append",
                                       "bad --id '%s': want a UUID like "
                                       "0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77",
                                       v);
            break;
        case OPT_METADATA: aa->metadata = v; break;
        case OPT_DATA_FILE: aa->data_file = v; break;
        case OPT_METADATA_FILE: aa->meta_file = v; break;
        case OPT_JSON: aa->strict = 1; break;
        case OPT_BATCH: aa->batch_file = v; break;
        case OPT_TAG: aa->tags[aa->ntags++] = v; break;
        case OPT_FAIL_IF: aa->fail_if = v; break;
        case OPT_AFTER:
            if (cli_parse_u64(v, &aa->after) != 0 || aa->after == ANNAL_AFTER_NONE)
                return cli_usage_error("append", "bad --after '%s': want a position", v);
            break;
        }
    }
    if (aa->after != ANNAL_AFTER_NONE && !aa->fail_if)
        return cli_usage_error("append", "--after goes with --fail-if-match");
    return 0;
}

/* --batch FILE: the file says everything but the condition. */
static int append_batch(cli_global *g, append_args *aa) {
    static const annal_uuid nil;
    if (aa->nops || aa->data_file || aa->metadata || aa->meta_file || aa->strict ||
        aa->has_expected || aa->ntags || memcmp(&aa->ev.id, &nil, sizeof nil) != 0)
        return cli_usage_error("append", "--batch takes no other operand or option but "
                                         "--fail-if-match: the file says each event's stream, "
                                         "type, tags and expectation");
    if (!aa->fail_if) return cli_append_batch(g, aa->batch_file, NULL);
    cli_query q = {0};
    char err[256];
    int rc;
    if (cli_query_parse(aa->fail_if, &q, err, sizeof err) != 0) {
        rc = cli_usage_error("append", "bad --fail-if-match: %s", err);
    } else {
        annal_condition cond = {cli_query_view(&q), aa->after};
        rc = cli_append_batch(g, aa->batch_file, &cond);
    }
    cli_query_free(&q);
    return rc;
}

/* Through the server that owns the store (or --server), or directly. */
static int append_routed(cli_global *g, append_args *aa) {
    const char *stream = aa->operands[0];
    int dcb = aa->ntags || aa->fail_if || is_dcb(stream);
    annal_remote *srv;
    int rc = cli_route(g, "append", &srv);
    if (!rc && srv) {
        if (dcb)
            rc = cli_remote_append_dcb(srv, is_dcb(stream) ? NULL : stream, aa->expected, &aa->ev,
                                       aa->tags, aa->ntags, aa->fail_if, aa->after);
        else
            rc = cli_remote_append(srv, stream, aa->expected, &aa->ev);
        annal_remote_close(srv);
    }
    if (rc || srv) return rc;
    annal_db *db;
    rc = cli_open(g, "append", ANNAL_OPEN_CREATE, NULL, &db);
    if (rc) return rc;
    rc = dcb ? append_tagged(db, stream, aa) : append_local(db, stream, aa->expected, &aa->ev);
    annal_db_close(db);
    return cli_finish_output("append", stdout, "standard output", rc);
}

int cli_cmd_append(cli_global *g, int argc, char **argv) {
    append_args aa;
    memset(&aa, 0, sizeof aa);
    aa.expected = ANNAL_EXPECT_ANY;
    aa.after = ANNAL_AFTER_NONE;
    aa.tags = cli_xrealloc(NULL, (size_t)(argc + 1) * sizeof *aa.tags);
    int rc = parse_args(g, argc, argv, &aa);
    if (rc || aa.batch_file) {
        if (!rc) rc = append_batch(g, &aa);
        free(aa.tags);
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    if (aa.nops < (aa.data_file ? 2 : 3))
        rc = cli_usage_error("append", "missing %s",
                             aa.nops == 0   ? "STREAM, TYPE and DATA"
                             : aa.nops == 1 ? "TYPE and DATA"
                                            : "DATA (or --data-file FILE)");
    else if (aa.data_file && aa.nops == 3)
        rc = cli_usage_error("append", "give DATA or --data-file, not both");
    else if (aa.metadata && aa.meta_file)
        rc = cli_usage_error("append", "give --metadata or --metadata-file, not both");
    else if (is_dcb(aa.operands[0]) && aa.has_expected)
        rc = cli_usage_error("append", "the DCB stream takes no --expected-revision: use "
                                       "--fail-if-match QUERY --after P");
    if (rc) {
        free(aa.tags);
        return rc;
    }
    aa.ev.type = aa.operands[1];
    cli_buf data = {0}, meta = {0};
    rc = load_event(&aa.ev, aa.operands[2], aa.data_file, aa.metadata, aa.meta_file, aa.strict,
                    &data, &meta);
    if (!rc) rc = append_routed(g, &aa);
    cli_buf_free(&data);
    cli_buf_free(&meta);
    free(aa.tags);
    return rc;
}
