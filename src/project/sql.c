/*
 * sql.c -- SQL in a projection file: :placeholders resolved to the event's values and
 * translated into both dialects (?N for SQLite, $N for PostgreSQL), and a section split
 * into statements. Below def.c (the file) and lua.c (sql() from Lua), above jpath.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "project_int.h"
/* ---------------------------------------------------------------- SQL */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        while (c < b->len + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Length of the lexical item at s that must be copied verbatim (string, quoted name,
 * comment, `::`), or 0. Newlines inside are counted into *line. */
static size_t sql_skip(const char *s, size_t n, int *line) {
    size_t i = 0;
    if (s[0] == '\'' || s[0] == '"') {
        char q = s[0];
        for (i = 1; i < n; i++) {
            if (s[i] == '\n') (*line)++;
            if (s[i] == q) {
                if (i + 1 < n && s[i + 1] == q) {
                    i++;
                    continue;
                }
                return i + 1;
            }
        }
        return n;
    }
    if (n >= 2 && s[0] == '-' && s[1] == '-') {
        while (i < n && s[i] != '\n') i++;
        return i;
    }
    if (n >= 2 && s[0] == '/' && s[1] == '*') {
        for (i = 2; i + 1 < n; i++) {
            if (s[i] == '\n') (*line)++;
            if (s[i] == '*' && s[i + 1] == '/') return i + 2;
        }
        return n;
    }
    if (n >= 2 && s[0] == ':' && s[1] == ':') return 2;
    return 0;
}

static const struct {
    const char *name;
    pj_param_kind kind;
} fixed_params[] = {
    {"stream", PJ_P_STREAM},     {"stream_id", PJ_P_STREAM_ID}, {"category", PJ_P_CATEGORY},
    {"type", PJ_P_TYPE},         {"event_id", PJ_P_EVENT_ID},   {"revision", PJ_P_REVISION},
    {"position", PJ_P_POSITION}, {"timestamp", PJ_P_TIMESTAMP}, {"timestamp_ms", PJ_P_TIMESTAMP_MS},
    {"date", PJ_P_DATE},         {"data", PJ_P_DATA},           {"metadata", PJ_P_METADATA},
};

static int param_resolve(pj_param *p, char *msg, size_t msg_n) {
    const char *t = p->text;
    for (size_t i = 0; i < sizeof fixed_params / sizeof fixed_params[0]; i++)
        if (strcmp(t, fixed_params[i].name) == 0) {
            p->kind = fixed_params[i].kind;
            return 0;
        }
    const char *rest = NULL;
    if (strncmp(t, "data.", 5) == 0 || strncmp(t, "data[", 5) == 0) {
        p->kind = PJ_P_DATA_PATH;
        rest = t + 4;
    } else if (strncmp(t, "metadata.", 9) == 0 || strncmp(t, "metadata[", 9) == 0) {
        p->kind = PJ_P_META_PATH;
        rest = t + 8;
    } else if (strncmp(t, "meta.", 5) == 0 || strncmp(t, "meta[", 5) == 0) {
        p->kind = PJ_P_META_PATH;
        rest = t + 4;
    } else if (strncmp(t, "v.", 2) == 0 && t[2]) {
        p->kind = PJ_P_LUA;
        p->lua_key = strndup(t + 2, strlen(t + 2));
        return p->lua_key ? 0 : -1;
    } else {
        annal__pj_fmt(msg, msg_n,
                      "unknown parameter :%s (known: :stream :stream_id :category :type "
                      ":event_id :revision :position :timestamp :timestamp_ms :date :data "
                      ":metadata :data.PATH :meta.PATH :v.NAME)",
                      t);
        return -1;
    }
    if (*rest == '.') rest++;
    char why[160];
    if (annal__pj_path_parse(rest, strlen(rest), &p->path, why, sizeof why) != 0) {
        annal__pj_fmt(msg, msg_n, "bad path in :%s: %s", t, why);
        return -1;
    }
    return 0;
}

static int is_pchar(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '[' || c == ']';
}

void annal__pj_stmt_free(pj_stmt *s) {
    if (!s) return;
    free(s->sql_sqlite);
    free(s->sql_pg);
    for (size_t i = 0; s->params && i < s->nparams; i++) { /* '?' statements have none */
        free(s->params[i].text);
        free(s->params[i].lua_key);
        annal__pj_path_free(&s->params[i].path);
    }
    free(s->params);
    memset(s, 0, sizeof *s);
}

int annal__pj_sql_translate(const char *sql, size_t len, int line, int params_ok, pj_stmt *out,
                            char *msg, size_t msg_n, int *err_line) {
    memset(out, 0, sizeof *out);
    out->line = line;
    sbuf a = {0}, b = {0};
    size_t i = 0;
    int nq = 0;
    while (i < len) {
        size_t k = sql_skip(sql + i, len - i, &line);
        if (k) {
            sb_add(&a, sql + i, k);
            sb_add(&b, sql + i, k);
            i += k;
            continue;
        }
        char c = sql[i];
        char num[24];
        if (c == '\n') line++;
        if (params_ok && c == ':' && i + 1 < len &&
            (isalpha((unsigned char)sql[i + 1]) || sql[i + 1] == '_')) {
            size_t j = i + 1;
            while (j < len && is_pchar(sql[j])) j++;
            while (j > i + 1 && sql[j - 1] == '.') j--; /* "... = :x." ends a sentence */
            size_t idx = 0;
            for (; idx < out->nparams; idx++)
                if (strlen(out->params[idx].text) == j - i - 1 &&
                    memcmp(out->params[idx].text, sql + i + 1, j - i - 1) == 0)
                    break;
            if (idx == out->nparams) {
                pj_param *np = realloc(out->params, (out->nparams + 1) * sizeof *np);
                if (!np) goto oom;
                out->params = np;
                memset(&np[idx], 0, sizeof np[idx]);
                out->nparams++;
                np[idx].text = strndup(sql + i + 1, j - i - 1);
                if (!np[idx].text) goto oom;
                if (param_resolve(&np[idx], msg, msg_n) != 0) {
                    *err_line = line;
                    goto fail;
                }
            }
            snprintf(num, sizeof num, "?%zu", idx + 1);
            sb_add(&a, num, strlen(num));
            snprintf(num, sizeof num, "$%zu", idx + 1);
            sb_add(&b, num, strlen(num));
            i = j;
            continue;
        }
        if (!params_ok && c == '?') {
            nq++;
            snprintf(num, sizeof num, "?%d", nq);
            sb_add(&a, num, strlen(num));
            snprintf(num, sizeof num, "$%d", nq);
            sb_add(&b, num, strlen(num));
            i++;
            continue;
        }
        sb_add(&a, &c, 1);
        sb_add(&b, &c, 1);
        i++;
    }
    if (a.oom || b.oom) goto oom;
    if (!params_ok) out->nparams = (size_t)nq;
    out->sql_sqlite = a.p ? a.p : strndup("", 0);
    out->sql_pg = b.p ? b.p : strndup("", 0);
    if (!out->sql_sqlite || !out->sql_pg) goto oom;
    return 0;
oom:
    annal__pj_fmt(msg, msg_n, "out of memory");
    *err_line = line;
fail:
    free(a.p);
    free(b.p);
    annal__pj_stmt_free(out);
    return -1;
}

/* Split a section's SQL at top-level ';' into statements (blank ones dropped). */
int annal__pj_sql_split(const char *s, size_t n, int line, pj_handler *h, char *msg, size_t msg_n,
                        int *err_line) {
    size_t start = 0, i = 0;
    int start_line = line;
    while (i <= n) {
        if (i < n) {
            size_t k = sql_skip(s + i, n - i, &line);
            if (k) {
                i += k;
                continue;
            }
        }
        if (i == n || s[i] == ';') {
            size_t j = start;
            int l = start_line;
            for (;;) { /* blanks and comments before the statement: its line is its text's */
                while (j < i && isspace((unsigned char)s[j])) {
                    if (s[j] == '\n') l++;
                    j++;
                }
                if (j + 1 < i && s[j] == '-' && s[j + 1] == '-') {
                    while (j < i && s[j] != '\n') j++;
                } else if (j + 1 < i && s[j] == '/' && s[j + 1] == '*') {
                    int dummy = l;
                    j += sql_skip(s + j, i - j, &dummy);
                    l = dummy;
                } else {
                    break;
                }
            }
            if (j < i) {
                pj_stmt *ns = realloc(h->stmts, (h->nstmts + 1) * sizeof *ns);
                if (!ns) {
                    annal__pj_fmt(msg, msg_n, "out of memory");
                    return -1;
                }
                h->stmts = ns;
                if (annal__pj_sql_translate(s + j, i - j, l, 1, &ns[h->nstmts], msg, msg_n,
                                            err_line) != 0)
                    return -1;
                h->nstmts++;
            }
            start = i + 1;
            start_line = line;
            i++;
            continue;
        }
        if (s[i] == '\n') line++;
        i++;
    }
    return 0;
}
