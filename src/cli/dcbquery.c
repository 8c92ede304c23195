/*
 * dcbquery.c -- the command line's forms of a DCB query (annal.h, "Dynamic Consistency
 * Boundaries"), shared by `annal find` and `annal append --fail-if-match`: a short form
 * for the shell ("type=SeatBooked tag=course:c1 | ..."), JSON for any tag at all, and '*'.
 * It also says which event made a condition fail.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static char **push(char **arr, size_t *n, const char *s, size_t len) {
    arr = cli_xrealloc(arr, (*n + 1) * sizeof *arr);
    arr[(*n)++] = cli_xstrndup(s, len);
    return arr;
}

void cli_query_new_item(cli_query *q) {
    q->items = cli_xrealloc(q->items, (q->nitems + 1) * sizeof *q->items);
    memset(&q->items[q->nitems++], 0, sizeof *q->items);
}

static void add_n(cli_query *q, int is_tag, const char *s, size_t len) {
    if (!q->nitems) cli_query_new_item(q);
    cli_query_item *it = &q->items[q->nitems - 1];
    if (is_tag)
        it->tags = push(it->tags, &it->ntags, s, len);
    else
        it->types = push(it->types, &it->ntypes, s, len);
}

void cli_query_add(cli_query *q, int is_tag, const char *s) { add_n(q, is_tag, s, strlen(s)); }

const annal_query *cli_query_view(cli_query *q) {
    free(q->view);
    q->view = q->nitems ? cli_xrealloc(NULL, q->nitems * sizeof *q->view) : NULL;
    for (size_t i = 0; i < q->nitems; i++)
        q->view[i] = (annal_query_item){(const char *const *)q->items[i].types, q->items[i].ntypes,
                                        (const char *const *)q->items[i].tags, q->items[i].ntags};
    q->q.items = q->view;
    q->q.nitems = q->nitems;
    return &q->q;
}

void cli_query_free(cli_query *q) {
    for (size_t i = 0; i < q->nitems; i++) {
        for (size_t k = 0; k < q->items[i].ntypes; k++) free(q->items[i].types[k]);
        for (size_t k = 0; k < q->items[i].ntags; k++) free(q->items[i].tags[k]);
        free(q->items[i].types);
        free(q->items[i].tags);
    }
    free(q->items);
    free(q->view);
    memset(q, 0, sizeof *q);
}

static int bad(char *err, size_t errlen, const char *what) {
    snprintf(err, errlen, "%s", what);
    return -1;
}

/* One JSON array of strings (types or tags) into the last item. */
static int json_strings(cli_query *q, json_t *arr, int is_tag, char *err, size_t errlen) {
    if (!arr) return 0;
    if (!json_is_array(arr)) return bad(err, errlen, "\"types\" and \"tags\" must be arrays");
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return bad(err, errlen, "types and tags must be strings without NUL");
        add_n(q, is_tag, json_string_value(v), json_string_length(v));
    }
    return 0;
}

static int parse_json(const char *text, cli_query *q, char *err, size_t errlen) {
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (!doc) {
        snprintf(err, errlen, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
        return -1;
    }
    json_t *items = json_is_object(doc) ? json_object_get(doc, "items") : doc;
    int rc = 0;
    if (json_is_object(doc) && !items && json_object_size(doc) != 0)
        rc = bad(err, errlen, "a JSON query is {\"items\": [...]}");
    else if (items && !json_is_array(items))
        rc = bad(err, errlen, "\"items\" must be an array of {\"types\": [...], \"tags\": [...]}");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        if (rc) break;
        const char *key;
        json_t *val;
        if (!json_is_object(it)) {
            rc = bad(err, errlen, "each item must be an object with \"types\" and/or \"tags\"");
            break;
        }
        json_object_foreach(it, key, val) {
            if (strcmp(key, "types") != 0 && strcmp(key, "tags") != 0) {
                (void)val;
                rc = bad(err, errlen, "an item has only \"types\" and \"tags\"");
            }
        }
        cli_query_new_item(q);
        if (!rc) rc = json_strings(q, json_object_get(it, "types"), 0, err, errlen);
        if (!rc) rc = json_strings(q, json_object_get(it, "tags"), 1, err, errlen);
    }
    json_decref(doc);
    return rc;
}

/* One term of the short form: type=A[,B...] or tag=X. */
static int parse_term(cli_query *q, const char *s, size_t n, char *err, size_t errlen) {
    if (n > 5 && strncmp(s, "type=", 5) == 0) {
        for (size_t i = 5; i <= n;) {
            size_t j = i;
            while (j < n && s[j] != ',') j++;
            if (j == i) return bad(err, errlen, "an empty type in type=...");
            add_n(q, 0, s + i, j - i);
            i = j + 1;
        }
        return 0;
    }
    if (n > 4 && strncmp(s, "tag=", 4) == 0) {
        add_n(q, 1, s + 4, n - 4);
        return 0;
    }
    snprintf(err, errlen,
             "cannot read '%.*s': a query item is type=T[,T2...] and tag=X terms (or '*', or "
             "JSON)",
             (int)(n > 60 ? 60 : n), s);
    return -1;
}

int cli_query_parse(const char *text, cli_query *out, char *err, size_t errlen) {
    size_t n = strlen(text), i = 0;
    while (i < n && (text[i] == ' ' || text[i] == '\t')) i++;
    if (i == n) return bad(err, errlen, "an empty query (give '*' for every event)");
    if (text[i] == '*' && text[i + 1 + strspn(text + i + 1, " \t")] == '\0') return 0;
    if (text[i] == '{' || text[i] == '[') return parse_json(text + i, out, err, errlen);
    int new_item = 1;
    while (i < n) {
        if (text[i] == ' ' || text[i] == '\t') {
            i++;
            continue;
        }
        if (text[i] == '|') {
            if (new_item) return bad(err, errlen, "an empty item before '|'");
            new_item = 1;
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && text[j] != ' ' && text[j] != '\t' && text[j] != '|') j++;
        if (new_item) cli_query_new_item(out);
        new_item = 0;
        if (parse_term(out, text + i, j - i, err, errlen) != 0) return -1;
        i = j;
    }
    if (new_item) return bad(err, errlen, "an empty item after '|'");
    return 0;
}

int cli_report_condition(const char *cmd, annal_db *db, uint64_t position, uint64_t after) {
    char since[64] = "";
    if (after != ANNAL_AFTER_NONE)
        snprintf(since, sizeof since, " after position %llu", (unsigned long long)after);
    annal_event *ev = NULL;
    if (db && position != UINT64_MAX && annal_event_get(db, position, &ev) == ANNAL_OK) {
        cli_buf tags = {0};
        cli_tags_json(&tags, ev);
        cli_error(cmd,
                  "condition failed: event at position %llu (%s in %s, tags %s) matches the "
                  "query%s; nothing appended",
                  (unsigned long long)position, ev->type, ev->stream, cli_buf_cstr(&tags), since);
        cli_buf_free(&tags);
        annal_free(ev);
    } else {
        cli_error(cmd,
                  "condition failed: event at position %llu matches the query%s; nothing "
                  "appended",
                  (unsigned long long)position, since);
    }
    return CLI_EXIT_CONDITION;
}
