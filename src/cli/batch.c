/*
 * batch.c -- `annal append --batch FILE`: JSON lines, one event each with its stream,
 * appended as one atomic set across streams (annal_append_multi). Consecutive lines of
 * one stream form one part; a stream's expected revision goes on its first line.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "route.h"

/* One line's event, kept until the append is done. */
typedef struct batch_line {
    char *stream, *type;
    annal_uuid id;
    int has_expected;
    int64_t expected;
    cli_buf data, meta;
    int has_meta;
    char **tags; /* "tags": [...] (Dynamic Consistency Boundaries) */
    size_t ntags;
} batch_line;

typedef struct batch {
    batch_line *lines;
    size_t n, cap;
} batch;

static void line_free(batch_line *bl) {
    free(bl->stream);
    free(bl->type);
    cli_buf_free(&bl->data);
    cli_buf_free(&bl->meta);
    for (size_t k = 0; k < bl->ntags; k++) free(bl->tags[k]);
    free(bl->tags);
}

static void batch_free(batch *b) {
    for (size_t i = 0; i < b->n; i++) line_free(&b->lines[i]);
    free(b->lines);
}

static int bad(char *err, size_t errlen, const char *fmt, const char *arg) {
    snprintf(err, errlen, fmt, arg);
    return -1;
}

static int get_name(json_t *obj, const char *key, char **out, char *err, size_t errlen) {
    json_t *j = json_object_get(obj, key);
    if (!j) return bad(err, errlen, "missing \"%s\"", key);
    if (!json_is_string(j) || strlen(json_string_value(j)) != json_string_length(j))
        return bad(err, errlen, "\"%s\" must be a string without NUL", key);
    *out = cli_xstrndup(json_string_value(j), json_string_length(j));
    return 0;
}

/* data or metadata as stored: the value's own JSON text, compacted (as import does). */
static int get_bytes(json_t *obj, const char *line, size_t len, const char *key, cli_buf *out,
                     int *present, char *err, size_t errlen) {
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) return 0;
    const char *raw;
    size_t raw_len;
    if (!cli_json_member(line, len, key, &raw, &raw_len))
        return bad(err, errlen, "cannot find \"%s\" (spelled with escapes?)", key);
    cli_json_add_compact(out, raw, raw_len);
    if (present) *present = 1;
    return 0;
}

/* "expected_revision": a whole number, "any", "no_stream" or "stream_exists". */
static int get_expected(json_t *obj, const char *line, size_t len, batch_line *bl, char *err,
                        size_t errlen) {
    json_t *j = json_object_get(obj, "expected_revision");
    if (!j || json_is_null(j)) return 0;
    bl->has_expected = 1;
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (strcmp(s, "any") == 0)
            bl->expected = ANNAL_EXPECT_ANY;
        else if (strcmp(s, "no_stream") == 0)
            bl->expected = ANNAL_EXPECT_NO_STREAM;
        else if (strcmp(s, "stream_exists") == 0)
            bl->expected = ANNAL_EXPECT_STREAM_EXISTS;
        else
            return bad(err, errlen, "bad \"expected_revision\" '%s'", s);
        return 0;
    }
    const char *raw;
    size_t raw_len;
    char text[32];
    uint64_t v;
    if (json_is_number(j) && cli_json_member(line, len, "expected_revision", &raw, &raw_len) &&
        raw_len < sizeof text) {
        memcpy(text, raw, raw_len);
        text[raw_len] = '\0';
        if (cli_parse_u64(text, &v) == 0 && v <= (uint64_t)INT64_MAX) {
            bl->expected = (int64_t)v;
            return 0;
        }
    }
    return bad(err, errlen, "\"%s\" must be a whole number >= 0, any, no_stream or stream_exists",
               "expected_revision");
}

/* "tags": an array of strings (the store checks the limits). */
static int get_tags(json_t *obj, batch_line *bl, char *err, size_t errlen) {
    json_t *j = json_object_get(obj, "tags");
    if (!j || json_is_null(j)) return 0;
    if (!json_is_array(j)) return bad(err, errlen, "%s", "\"tags\" must be an array of strings");
    size_t i;
    json_t *t;
    json_array_foreach(j, i, t) {
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
            return bad(err, errlen, "%s", "\"tags\" must be strings without NUL");
        bl->tags = cli_xrealloc(bl->tags, (bl->ntags + 1) * sizeof *bl->tags);
        bl->tags[bl->ntags++] = cli_xstrndup(json_string_value(t), json_string_length(t));
    }
    return 0;
}

static int parse_line(const char *line, size_t len, batch_line *bl, char *err, size_t errlen) {
    memset(bl, 0, sizeof *bl);
    bl->expected = ANNAL_EXPECT_ANY;
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
    if (get_name(obj, "stream", &bl->stream, err, errlen) ||
        get_name(obj, "type", &bl->type, err, errlen))
        goto out;
    json_t *id = json_object_get(obj, "id");
    if (id && !json_is_null(id) &&
        (!json_is_string(id) || annal_uuid_parse(json_string_value(id), &bl->id) != ANNAL_OK)) {
        bad(err, errlen, "%s", "bad \"id\": want a UUID like 0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77");
        goto out;
    }
    if (get_expected(obj, line, len, bl, err, errlen) ||
        get_bytes(obj, line, len, "data", &bl->data, NULL, err, errlen) ||
        get_bytes(obj, line, len, "metadata", &bl->meta, &bl->has_meta, err, errlen) ||
        get_tags(obj, bl, err, errlen))
        goto out;
    if (bl->has_expected && strcmp(bl->stream, ANNAL_DCB_STREAM) == 0) {
        bad(err, errlen, "%s", "the DCB stream $dcb takes no \"expected_revision\"");
        goto out;
    }
    rc = 0;
out:
    json_decref(obj);
    if (rc) line_free(bl);
    return rc;
}

/* Read every line of path ("-": standard input). 0 or an exit code after reporting. */
static int load(const char *path, batch *b) {
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        cli_error("append", "cannot open %s: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    char *line = NULL;
    size_t lcap = 0;
    int rc = 0;
    unsigned long long lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t sp = 0;
        while (sp < len && (line[sp] == ' ' || line[sp] == '\t')) sp++;
        if (sp == len) continue; /* blank lines are allowed */
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 64;
            b->lines = cli_xrealloc(b->lines, b->cap * sizeof *b->lines);
        }
        char err[256];
        batch_line *bl = &b->lines[b->n];
        if (parse_line(line, len, bl, err, sizeof err) != 0) {
            cli_error("append", "%s line %llu: %s; nothing appended", path, lineno, err);
            rc = CLI_EXIT_USAGE;
            break;
        }
        b->n++;
        /* The expected revision belongs to the stream's first line only. */
        for (size_t i = 0; bl->has_expected && i + 1 < b->n; i++) {
            if (strcmp(b->lines[i].stream, bl->stream) == 0) {
                cli_error("append",
                          "%s line %llu: \"expected_revision\" for stream %s goes on its first "
                          "line only; nothing appended",
                          path, lineno, bl->stream);
                rc = CLI_EXIT_USAGE;
                break;
            }
        }
        if (rc) break;
    }
    if (!rc && ferror(f)) {
        cli_error("append", "cannot read %s: %s", path, strerror(errno));
        rc = CLI_EXIT_USAGE;
    }
    if (!rc && b->n == 0) {
        cli_error("append", "%s has no events; nothing appended", path);
        rc = CLI_EXIT_USAGE;
    }
    free(line);
    if (!is_stdin) fclose(f);
    return rc;
}

static const char *expected_text(int64_t e, char *buf, size_t n) {
    if (e == ANNAL_EXPECT_ANY) return "any";
    if (e == ANNAL_EXPECT_NO_STREAM) return "no stream";
    if (e == ANNAL_EXPECT_STREAM_EXISTS) return "an existing stream";
    snprintf(buf, n, "revision %lld", (long long)e);
    return buf;
}

/* The part's stream as the user wrote it ($dcb is NULL to the store). */
static const char *part_name(const annal_tagged_append *p) {
    return p->stream ? p->stream : ANNAL_DCB_STREAM;
}

/* Append b's events (if cond holds); print one JSON line per part. */
static int append_all(annal_db *db, batch *b, const annal_condition *cond) {
    annal_event_data *evs = cli_xrealloc(NULL, b->n * sizeof *evs);
    annal_tag_list *tags = cli_xrealloc(NULL, b->n * sizeof *tags);
    annal_tagged_append *parts = cli_xrealloc(NULL, b->n * sizeof *parts);
    size_t np = 0;
    for (size_t i = 0; i < b->n; i++) {
        batch_line *bl = &b->lines[i];
        evs[i] = (annal_event_data){bl->id,       bl->type,   bl->data.p,
                                    bl->data.len, bl->meta.p, bl->meta.len};
        if (bl->has_meta && !evs[i].metadata) evs[i].metadata = "";
        tags[i] = (annal_tag_list){(const char *const *)bl->tags, bl->ntags};
        if (np && strcmp(part_name(&parts[np - 1]), bl->stream) == 0) {
            parts[np - 1].n++;
            continue;
        }
        int dcb = strcmp(bl->stream, ANNAL_DCB_STREAM) == 0;
        parts[np++] =
            (annal_tagged_append){dcb ? NULL : bl->stream, bl->expected, &evs[i], &tags[i], 1};
    }
    annal_append_result *pr = cli_xrealloc(NULL, np * sizeof *pr);
    annal_stream_conflict conf[64];
    annal_multi_result res;
    memset(&res, 0, sizeof res);
    res.parts = pr;
    res.conflicts = conf;
    res.max_conflicts = sizeof conf / sizeof conf[0];
    annal_err e = annal_append_tagged(db, parts, np, NULL, 0, cond, &res);
    int rc = 0;
    if (e == ANNAL_ECONFLICT || e == ANNAL_EDELETED || e == ANNAL_ECONDITION) {
        for (size_t i = 0; i < res.nconflicts && i < res.max_conflicts; i++) {
            char eb[48];
            const annal_stream_conflict *c = &conf[i];
            if (c->reason == ANNAL_EDELETED)
                cli_error("append", "stream %s is deleted (tombstoned)", c->stream);
            else if (c->actual < 0)
                cli_error("append", "expected %s but stream %s does not exist",
                          expected_text(c->expected, eb, sizeof eb), c->stream);
            else
                cli_error("append", "expected %s but stream %s is at %lld",
                          expected_text(c->expected, eb, sizeof eb), c->stream,
                          (long long)c->actual);
        }
        if (e == ANNAL_ECONDITION)
            rc = cli_report_condition("append", db, res.condition_position, cond->after);
        else
            cli_error("append", "%zu stream(s) conflicted; nothing appended", res.nconflicts);
        if (e != ANNAL_ECONDITION) rc = CLI_EXIT_CONFLICT;
    } else if (e != ANNAL_OK) {
        rc = cli_fail("append", db, e, "cannot append the batch");
    } else {
        cli_buf out = {0};
        for (size_t i = 0; i < np; i++) {
            cli_buf_adds(&out, "{\"stream\":");
            cli_json_add_string(&out, part_name(&parts[i]), strlen(part_name(&parts[i])));
            cli_buf_addf(&out,
                         ",\"first_revision\":%llu,\"revision\":%lld,\"first_position\":%llu,"
                         "\"count\":%llu,\"idempotent\":%s}\n",
                         (unsigned long long)pr[i].first_revision, (long long)pr[i].revision,
                         (unsigned long long)pr[i].first_position, (unsigned long long)pr[i].count,
                         res.idempotent ? "true" : "false");
        }
        fwrite(out.p, 1, out.len, stdout);
        cli_buf_free(&out);
    }
    free(pr);
    free(parts);
    free(tags);
    free(evs);
    return rc;
}

int cli_append_batch(cli_global *g, const char *path, const annal_condition *cond) {
    batch b = {0};
    int rc = load(path, &b);
    if (!rc) rc = cli_route_refuse(g, "append --batch");
    annal_db *db = NULL;
    if (!rc) rc = cli_open(g, "append", ANNAL_OPEN_CREATE, NULL, &db);
    if (!rc) rc = append_all(db, &b, cond);
    annal_db_close(db);
    batch_free(&b);
    return cli_finish_output("append", stdout, "standard output", rc);
}
