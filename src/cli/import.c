/*
 * import.c -- `annal import`: append events read from JSON lines (the shape `export`
 * writes), batching consecutive events of one stream into one atomic append.
 * Each event keeps its id and is appended at its revision, so importing twice is a no-op.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] import [FILE|-] [--no-sync] [--progress]\n"
    "\n"
    "Append the events of FILE (default '-': standard input), JSON lines in the shape\n"
    "`annal export` writes, creating the store if missing. Each line needs \"stream\"\n"
    "and \"type\"; \"id\", \"revision\", \"data\", \"metadata\", \"*_encoding\" and\n"
    "\"tags\" are optional; \"position\" and \"timestamp\" are ignored (the store stamps each "
    "event).\n"
    "An event is appended with its id at its revision (expected revision = revision - 1),\n"
    "so importing the same file again appends nothing, and an interrupted import can be\n"
    "run again. Consecutive lines of one stream go in one append.\n"
    "\n"
    "On a bad line the import stops: the lines before it are appended, none after it.\n"
    "\n"
    "Options:\n"
    "  --no-sync    faster, NOT DURABLE: do not wait for each append to reach the disk\n"
    "               (a crash or power loss may drop recent events; run import again)\n"
    "  --progress   show progress on stderr even when it is not a terminal\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or bad line, 3 conflict with the events already stored,\n"
    "5 store or read error.\n";

enum { OPT_NOSYNC, OPT_PROGRESS };
static const cli_option options[] = {
    {"no-sync", 0, OPT_NOSYNC},
    {"progress", 0, OPT_PROGRESS},
    {NULL, 0, 0},
};

/* Batches stay well under the store's default limits (100000 events, 64 MiB). */
#define BATCH_EVENTS 10000
#define BATCH_BYTES  (16u << 20)

/* One parsed line. */
typedef struct line_event {
    char *stream;
    char *type;
    annal_uuid id; /* all zero when the line has none: the store makes one */
    int has_rev;
    uint64_t rev;
    cli_buf data, meta;
    char **tags; /* "tags": [...] (Dynamic Consistency Boundaries) */
    size_t ntags;
} line_event;

typedef struct importer {
    annal_db *db;
    cli_global *g;   /* g->remote: append through a server instead of db */
    const char *src; /* file name for messages */
    /* The batch being collected: events of one stream at consecutive revisions (or all
     * without revision). */
    char *stream;
    int exact;
    uint64_t first_rev;
    annal_event_data *evs;
    char **types;
    cli_buf *datas, *metas;
    char ***tagv; /* each event's tags (owned), and as the store takes them */
    size_t *ntagv;
    annal_tag_list *tls;
    int tagged; /* the batch needs annal_append_tagged: tags, or the DCB stream */
    uint64_t *lines;
    size_t n, cap, bytes;
    /* Totals. */
    uint64_t appended, present;
    cli_progress prog;
} importer;

static void tags_free(char **tags, size_t n) {
    for (size_t i = 0; i < n; i++) free(tags[i]);
    free(tags);
}

static void line_event_free(line_event *le) {
    free(le->stream);
    free(le->type);
    cli_buf_free(&le->data);
    cli_buf_free(&le->meta);
    tags_free(le->tags, le->ntags);
}

/* ---------------------------------------------------------------- parsing a line */

static int bad(char *err, size_t errlen, const char *fmt, const char *arg) {
    snprintf(err, errlen, fmt, arg);
    return -1;
}

/* A required or optional name field ("stream", "type"): a string without NUL. */
static int get_name(json_t *obj, const char *key, char **out, char *err, size_t errlen) {
    json_t *j = json_object_get(obj, key);
    if (!j) return bad(err, errlen, "missing \"%s\"", key);
    if (!json_is_string(j)) return bad(err, errlen, "\"%s\" must be a string", key);
    size_t len = json_string_length(j);
    if (strlen(json_string_value(j)) != len)
        return bad(err, errlen, "\"%s\" must not contain NUL", key);
    *out = cli_xstrndup(json_string_value(j), len);
    return 0;
}

/* data or metadata, as the bytes to store. The value's own text is kept (compacted):
 * numbers are not rewritten through a double as a re-serialization would. */
static int get_bytes(json_t *obj, const char *line, size_t len, const char *key, int is_metadata,
                     cli_buf *out, char *err, size_t errlen) {
    char enc_key[32];
    snprintf(enc_key, sizeof enc_key, "%s_encoding", key);
    json_t *j = json_object_get(obj, key);
    json_t *enc = json_object_get(obj, enc_key);
    if (enc && !json_is_null(enc)) {
        if (!json_is_string(enc))
            return bad(err, errlen, "\"%s\" must be \"text\" or \"base64\"", enc_key);
        const char *e = json_string_value(enc);
        if (!j || !json_is_string(j))
            return bad(err, errlen, "\"%s\" must be a string when it has an encoding", key);
        if (strcmp(e, "text") == 0) {
            cli_buf_add(out, json_string_value(j), json_string_length(j));
            return 0;
        }
        if (strcmp(e, "base64") == 0) {
            if (cli_base64_decode(json_string_value(j), json_string_length(j), out) != 0)
                return bad(err, errlen, "\"%s\" is not valid base64", key);
            return 0;
        }
        return bad(err, errlen, "\"%s\" must be \"text\" or \"base64\"", enc_key);
    }
    if (!j || (is_metadata && json_is_null(j))) return 0; /* no data / no metadata: empty */
    const char *raw;
    size_t raw_len;
    if (cli_json_member(line, len, key, &raw, &raw_len)) {
        cli_json_add_compact(out, raw, raw_len);
    } else {
        /* The key was spelled with escapes: let jansson write the value instead. */
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s) return bad(err, errlen, "cannot re-encode \"%s\"", key);
        cli_buf_adds(out, s);
        free(s);
    }
    return 0;
}

static int get_revision(json_t *obj, const char *line, size_t len, line_event *le, char *err,
                        size_t errlen) {
    json_t *j = json_object_get(obj, "revision");
    if (!j || json_is_null(j)) return 0;
    const char *raw;
    size_t raw_len;
    char text[32];
    if (json_is_number(j) && cli_json_member(line, len, "revision", &raw, &raw_len) &&
        raw_len < sizeof text) {
        memcpy(text, raw, raw_len);
        text[raw_len] = '\0';
        if (cli_parse_u64(text, &le->rev) == 0 && le->rev <= (uint64_t)INT64_MAX) {
            le->has_rev = 1;
            return 0;
        }
    }
    return bad(err, errlen, "\"%s\" must be a whole number >= 0", "revision");
}

/* "tags": an array of strings, as export writes it (the store checks the limits). */
static int get_tags(json_t *obj, line_event *le, char *err, size_t errlen) {
    json_t *j = json_object_get(obj, "tags");
    if (!j || json_is_null(j)) return 0;
    if (!json_is_array(j)) return bad(err, errlen, "%s", "\"tags\" must be an array of strings");
    size_t i;
    json_t *t;
    json_array_foreach(j, i, t) {
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
            return bad(err, errlen, "%s", "\"tags\" must be strings without NUL");
        le->tags = cli_xrealloc(le->tags, (le->ntags + 1) * sizeof *le->tags);
        le->tags[le->ntags++] = cli_xstrndup(json_string_value(t), json_string_length(t));
    }
    return 0;
}

static int parse_line(const char *line, size_t len, line_event *le, char *err, size_t errlen) {
    memset(le, 0, sizeof *le);
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, CLI_JSON_FLAGS, &jerr);
    if (!obj) {
        snprintf(err, errlen, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(obj)) {
        bad(err, errlen, "%s", "expected a JSON object");
        goto out;
    }
    if (get_name(obj, "stream", &le->stream, err, errlen) ||
        get_name(obj, "type", &le->type, err, errlen))
        goto out;
    json_t *id = json_object_get(obj, "id");
    if (id && !json_is_null(id)) {
        if (!json_is_string(id) || annal_uuid_parse(json_string_value(id), &le->id) != ANNAL_OK) {
            char shown[64];
            snprintf(shown, sizeof shown, "%s", json_is_string(id) ? json_string_value(id) : "?");
            bad(err, errlen, "bad id '%s': want a UUID like 0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77",
                shown);
            goto out;
        }
    }
    if (get_revision(obj, line, len, le, err, errlen) ||
        get_bytes(obj, line, len, "data", 0, &le->data, err, errlen) ||
        get_bytes(obj, line, len, "metadata", 1, &le->meta, err, errlen) ||
        get_tags(obj, le, err, errlen))
        goto out;
    rc = 0;
out:
    json_decref(obj);
    if (rc) line_event_free(le);
    return rc;
}

/* ---------------------------------------------------------------- appending */

static int64_t expected_for(int exact, uint64_t rev) {
    if (!exact) return ANNAL_EXPECT_ANY;
    return rev == 0 ? ANNAL_EXPECT_NO_STREAM : (int64_t)(rev - 1);
}

static void batch_clear(importer *im) {
    for (size_t i = 0; i < im->n; i++) {
        free(im->types[i]);
        cli_buf_free(&im->datas[i]);
        cli_buf_free(&im->metas[i]);
        tags_free(im->tagv[i], im->ntagv[i]);
    }
    im->tagged = 0;
    free(im->stream);
    im->stream = NULL;
    im->n = 0;
    im->bytes = 0;
}

/* evs[from, from+n) with their tags, to the DCB stream when that is the stream (where the
 * revision is the store's to give: the events' ids make a second import a no-op). */
static annal_err append_tagged(importer *im, size_t from, size_t n, int64_t expected,
                               annal_append_result *res) {
    int dcb = strcmp(im->stream, ANNAL_DCB_STREAM) == 0;
    annal_tagged_append part = {dcb ? NULL : im->stream, expected, im->evs + from, im->tls + from,
                                n};
    annal_stream_conflict conf;
    annal_multi_result mr;
    memset(&mr, 0, sizeof mr);
    mr.parts = res;
    mr.conflicts = &conf;
    mr.max_conflicts = 1;
    annal_err e = annal_append_tagged(im->db, &part, 1, NULL, 0, NULL, &mr);
    if (e == ANNAL_ECONFLICT && mr.nconflicts) res->revision = conf.actual;
    return e;
}

/* Append evs[from, from+n) and report a failure with its line numbers. */
static int append_range(importer *im, size_t from, size_t n, annal_append_result *res,
                        annal_err *err) {
    int64_t expected = expected_for(im->exact, im->first_rev + from);
    memset(res, 0, sizeof *res);
    *err = im->tagged && im->g && im->g->remote
               ? im->g->remote_append_tagged(im->g->remote, im->stream, expected, im->evs + from,
                                             im->tls + from, n, res)
           : im->tagged ? append_tagged(im, from, n, expected, res)
           : im->g && im->g->remote
               ? im->g->remote_append(im->g->remote, im->stream, expected, im->evs + from, n, res)
               : annal_append(im->db, im->stream, expected, im->evs + from, n, res);
    if (*err == ANNAL_OK) {
        if (res->idempotent)
            im->present += n;
        else
            im->appended += n;
        return 0;
    }
    if (n > 1 && (*err == ANNAL_ECONFLICT || *err == ANNAL_EDUPLICATE))
        return -1; /* the caller retries one by one to name the very line */
    uint64_t l0 = im->lines[from], l1 = im->lines[from + n - 1];
    char where[96];
    if (n == 1)
        snprintf(where, sizeof where, "%s line %llu", im->src, (unsigned long long)l0);
    else
        snprintf(where, sizeof where, "%s lines %llu-%llu", im->src, (unsigned long long)l0,
                 (unsigned long long)l1);
    if (*err == ANNAL_ECONFLICT) {
        char at[64];
        if (res->revision < 0)
            snprintf(at, sizeof at, "does not exist");
        else
            snprintf(at, sizeof at, "is at %lld", (long long)res->revision);
        if (expected == ANNAL_EXPECT_NO_STREAM)
            cli_error("import", "%s: expected no stream but stream %s %s", where, im->stream, at);
        else
            cli_error("import", "%s: expected revision %lld but stream %s %s", where,
                      (long long)expected, im->stream, at);
        return CLI_EXIT_CONFLICT;
    }
    if (im->g && im->g->remote) {
        cli_error("import", "%s: cannot append to stream %s: %s", where, im->stream,
                  im->g->remote_errmsg(im->g->remote));
        return cli_exit_code(*err);
    }
    return cli_fail("import", im->db, *err, "%s: cannot append to stream %s", where, im->stream);
}

static int flush(importer *im) {
    if (im->n == 0) return 0;
    annal_append_result res;
    annal_err err;
    int rc = append_range(im, 0, im->n, &res, &err);
    if (rc < 0) {
        /* A conflict or a reused id somewhere in the batch, or a batch that a previous,
         * interrupted import stored only in part: one by one, each event is either already
         * there (idempotent) or appended, or fails with its own line number. */
        rc = 0;
        for (size_t i = 0; i < im->n && rc == 0; i++) rc = append_range(im, i, 1, &res, &err);
    }
    batch_clear(im);
    cli_progress_cb(&im->prog, im->appended + im->present, 0);
    return rc;
}

/* Add a parsed line to the batch (taking its buffers), flushing first when it cannot
 * join. */
static int add_event(importer *im, line_event *le, uint64_t lineno) {
    size_t size = le->data.len + le->meta.len;
    int joins = im->n > 0 && strcmp(im->stream, le->stream) == 0 &&
                (le->has_rev ? im->exact && le->rev == im->first_rev + im->n : !im->exact) &&
                im->n < BATCH_EVENTS && im->bytes + size <= BATCH_BYTES;
    if (!joins) {
        int rc = flush(im);
        if (rc) return rc;
        im->stream = le->stream;
        le->stream = NULL;
        im->exact = le->has_rev;
        im->first_rev = le->rev;
    }
    if (im->n == im->cap) {
        im->cap = im->cap ? im->cap * 2 : 64;
        im->evs = cli_xrealloc(im->evs, im->cap * sizeof *im->evs);
        im->types = cli_xrealloc(im->types, im->cap * sizeof *im->types);
        im->datas = cli_xrealloc(im->datas, im->cap * sizeof *im->datas);
        im->metas = cli_xrealloc(im->metas, im->cap * sizeof *im->metas);
        im->lines = cli_xrealloc(im->lines, im->cap * sizeof *im->lines);
        im->tagv = cli_xrealloc(im->tagv, im->cap * sizeof *im->tagv);
        im->ntagv = cli_xrealloc(im->ntagv, im->cap * sizeof *im->ntagv);
        im->tls = cli_xrealloc(im->tls, im->cap * sizeof *im->tls);
    }
    size_t i = im->n++;
    im->types[i] = le->type;
    im->datas[i] = le->data;
    im->metas[i] = le->meta;
    le->type = NULL;
    memset(&le->data, 0, sizeof le->data);
    memset(&le->meta, 0, sizeof le->meta);
    im->lines[i] = lineno;
    im->tagv[i] = le->tags;
    im->ntagv[i] = le->ntags;
    le->tags = NULL;
    le->ntags = 0;
    im->tls[i] = (annal_tag_list){(const char *const *)im->tagv[i], im->ntagv[i]};
    im->tagged |= im->ntagv[i] > 0 || strcmp(im->stream, ANNAL_DCB_STREAM) == 0;
    im->bytes += size;
    annal_event_data *ev = &im->evs[i];
    memset(ev, 0, sizeof *ev);
    ev->id = le->id;
    ev->type = im->types[i];
    ev->data = im->datas[i].p;
    ev->data_len = im->datas[i].len;
    ev->metadata = im->metas[i].p;
    ev->metadata_len = im->metas[i].len;
    return 0;
}

static int run(importer *im, FILE *in) {
    char *line = NULL;
    size_t cap = 0;
    uint64_t lineno = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        ssize_t got = getline(&line, &cap, in);
        if (got < 0) {
            if (ferror(in)) {
                flush(im);
                cli_error("import", "cannot read %s: %s", im->src, strerror(errno));
                rc = CLI_EXIT_STORE;
            }
            break;
        }
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
        if (i == len) continue; /* blank lines are allowed, e.g. a trailing one */
        line_event le;
        char err[512];
        if (parse_line(line, len, &le, err, sizeof err) != 0) {
            /* Whatever came before the bad line goes in; nothing after it. */
            rc = flush(im);
            if (!rc) {
                cli_error("import", "%s line %llu: %s", im->src, (unsigned long long)lineno, err);
                rc = CLI_EXIT_USAGE;
            }
            break;
        }
        rc = add_event(im, &le, lineno);
        line_event_free(&le);
        if (rc) break;
    }
    if (!rc) rc = flush(im);
    free(line);
    return rc;
}

int cli_cmd_import(cli_global *g, int argc, char **argv) {
    const char *file = NULL;
    int progress_opt = 0, nosync = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("import", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (file) return cli_usage_error("import", "unexpected argument '%s'", v);
            file = v;
            break;
        case OPT_NOSYNC: nosync = 1; break;
        case OPT_PROGRESS: progress_opt = 1; break;
        }
    }

    FILE *in = stdin;
    const char *src = "stdin";
    if (file && strcmp(file, "-") != 0) {
        in = fopen(file, "r");
        src = file;
        if (!in) {
            cli_error("import", "cannot open %s: %s", file, strerror(errno));
            return errno == ENOENT ? CLI_EXIT_NOTFOUND : CLI_EXIT_STORE;
        }
    }

    importer im;
    memset(&im, 0, sizeof im);
    im.src = src;
    im.g = g;
    cli_progress_init(&im.prog, "import", progress_opt ? 2 : g->stderr_tty);
    /* Durable by default: "imported" must mean on disk, and the library has no call to
     * make NOSYNC appends durable afterwards. --no-sync is for loads one can redo. */
    int rc = g->remote ? 0
                       : cli_open(g, "import", ANNAL_OPEN_CREATE | (nosync ? ANNAL_OPEN_NOSYNC : 0),
                                  NULL, &im.db);
    if (!rc) {
        rc = run(&im, in);
        batch_clear(&im);
        cli_progress_end(&im.prog);
        annal_db_close(im.db);
        free(im.evs);
        free(im.types);
        free(im.datas);
        free(im.metas);
        free(im.lines);
        free(im.tagv);
        free(im.ntagv);
        free(im.tls);
    }
    if (in != stdin) fclose(in);
    if (!rc && g->remote) /* the protocol does not say which appends were already there */
        printf("imported %llu events from %s through the server (appended or already "
               "present)\n",
               (unsigned long long)(im.appended + im.present), src);
    else if (!rc)
        printf("imported %llu events from %s: %llu appended, %llu already present\n",
               (unsigned long long)(im.appended + im.present), src, (unsigned long long)im.appended,
               (unsigned long long)im.present);
    return cli_finish_output("import", stdout, "standard output", rc);
}
