/*
 * def.c -- the projection file: a header of `key value` lines, then sections [schema],
 * [on <Type>] (SQL with :placeholders bound from the event) and [lua]. Parsing checks
 * everything that can be checked without a database and reports "file:line: why".
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "project_int.h"

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---------------------------------------------------------------- the file */

void annal_proj_def_free(annal_proj_def *d) {
    if (!d) return;
    free(d->filename);
    free(d->name);
    free(d->source);
    free(d->target);
    free(d->schema);
    free(d->lua);
    for (size_t i = 0; i < d->nhandlers; i++) {
        for (size_t j = 0; j < d->handlers[i].nstmts; j++)
            annal__pj_stmt_free(&d->handlers[i].stmts[j]);
        free(d->handlers[i].stmts);
        free(d->handlers[i].type);
    }
    free(d->handlers);
    free(d);
}

const char *annal_proj_def_name(const annal_proj_def *d) { return d ? d->name : NULL; }
const char *annal_proj_def_source(const annal_proj_def *d) { return d ? d->source : NULL; }
const char *annal_proj_def_target(const annal_proj_def *d) { return d ? d->target : NULL; }
int annal_proj_def_emits(const annal_proj_def *d) { return d ? d->emits : 0; }

typedef enum { SEC_HEADER, SEC_SCHEMA, SEC_ON, SEC_LUA } sec_kind;

typedef struct parser {
    annal_proj_def *d;
    const char *fname;
    char *err;
    size_t err_n;
    sec_kind kind;
    const char *body; /* start of the current section's text */
    int body_line;
    char *on_type;
    int on_line;
} parser;

static int perr(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(parser *p, int line, const char *fmt, ...) {
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    annal__pj_fmt(p->err, p->err_n, "%s:%d: %s", p->fname, line, what);
    return -1;
}

int annal__pj_name_ok(const char *s);
int annal__pj_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > PJ_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.') return 0;
    return 1;
}

static int header_line(parser *p, const char *s, size_t n, int line) {
    size_t k = 0;
    while (k < n && !isspace((unsigned char)s[k])) k++;
    size_t v = k;
    while (v < n && isspace((unsigned char)s[v])) v++;
    size_t e = n;
    while (e > v && isspace((unsigned char)s[e - 1])) e--;
    /* a trailing comment, only when separated by a blank */
    for (size_t c = v; c < e; c++)
        if (s[c] == '#' && c > v && isspace((unsigned char)s[c - 1])) {
            e = c;
            while (e > v && isspace((unsigned char)s[e - 1])) e--;
            break;
        }
    char key[32];
    if (k >= sizeof key) return perr(p, line, "unknown setting '%.*s'", (int)k, s);
    memcpy(key, s, k);
    key[k] = '\0';
    if (v == e) return perr(p, line, "'%s' needs a value", key);
    char *val = dupn(s + v, e - v);
    if (!val) return perr(p, line, "out of memory");
    char **slot = NULL;
    if (strcmp(key, "projection") == 0) {
        if (!annal__pj_name_ok(val)) {
            perr(p, line, "bad projection name '%s': 1..63 of A-Z a-z 0-9 _ - .", val);
            free(val);
            return -1;
        }
        slot = &p->d->name;
    } else if (strcmp(key, "source") == 0) {
        if (strlen(val) > ANNAL_MAX_NAME || strcmp(val, "$ce-") == 0 || strcmp(val, "$et-") == 0 ||
            (val[0] == '$' && strcmp(val, "$all") != 0 && strncmp(val, "$ce-", 4) != 0 &&
             strncmp(val, "$et-", 4) != 0)) {
            perr(p, line, "bad source '%s': $all, $ce-<category>, $et-<type> or a stream", val);
            free(val);
            return -1;
        }
        slot = &p->d->source;
    } else if (strcmp(key, "target") == 0) {
        pj_tkind tk;
        const char *rest;
        if (annal__pj_target_kind(val, &tk, &rest) != 0 || (tk != PJ_T_MEMORY && !*rest)) {
            perr(p, line, "bad target '%s': sqlite:PATH or postgresql:CONNINFO", val);
            free(val);
            return -1;
        }
        slot = &p->d->target;
    } else if (strcmp(key, "batch") == 0) {
        char *end;
        errno = 0;
        unsigned long b = strtoul(val, &end, 10);
        int bad = errno || *end || !isdigit((unsigned char)val[0]) || b == 0 || b > 1000000;
        free(val);
        if (bad) return perr(p, line, "batch must be a number of events in 1..1000000");
        p->d->batch = (uint32_t)b;
        return 0;
    } else if (strcmp(key, "emits") == 0) {
        int yes = strcmp(val, "yes") == 0, no = strcmp(val, "no") == 0;
        free(val);
        if (!yes && !no) return perr(p, line, "emits must be yes or no");
        p->d->emits = yes;
        return 0;
    } else {
        free(val);
        return perr(p, line,
                    "unknown setting '%s' (projection, source, target, batch, emits; "
                    "sections: [schema], [on Type], [lua])",
                    key);
    }
    if (*slot) {
        free(val);
        return perr(p, line, "'%s' given twice", key);
    }
    *slot = val;
    return 0;
}

/* Close the current section, whose text runs from p->body to end. */
static int end_section(parser *p, const char *end) {
    size_t n = p->body ? (size_t)(end - p->body) : 0;
    annal_proj_def *d = p->d;
    if (p->kind == SEC_SCHEMA) {
        d->schema = dupn(p->body, n);
        d->schema_line = p->body_line;
        if (!d->schema) return perr(p, p->body_line, "out of memory");
    } else if (p->kind == SEC_LUA) {
        /* Pad with newlines so that Lua's line numbers are the file's. */
        size_t pad = (size_t)(p->body_line - 1);
        d->lua = malloc(pad + n + 1);
        if (!d->lua) return perr(p, p->body_line, "out of memory");
        memset(d->lua, '\n', pad);
        memcpy(d->lua + pad, p->body, n);
        d->lua[pad + n] = '\0';
        d->lua_len = pad + n;
        d->lua_line = p->body_line;
    } else if (p->kind == SEC_ON) {
        pj_handler *nh = realloc(d->handlers, (d->nhandlers + 1) * sizeof *nh);
        if (!nh) return perr(p, p->on_line, "out of memory");
        d->handlers = nh;
        pj_handler *h = &nh[d->nhandlers++];
        memset(h, 0, sizeof *h);
        h->type = p->on_type;
        h->line = p->on_line;
        p->on_type = NULL;
        char msg[600];
        int eline = p->body_line;
        if (annal__pj_sql_split(p->body, n, p->body_line, h, msg, sizeof msg, &eline) != 0)
            return perr(p, eline, "[on %s]: %s", h->type, msg);
    }
    return 0;
}

static int section_line(parser *p, const char *s, size_t n, int line, const char *next) {
    /* s is "[...]" trimmed */
    const char *in = s + 1;
    size_t m = n - 2;
    if (end_section(p, s) != 0) return -1;
    p->body = next;
    p->body_line = line + 1;
    if (m == 6 && memcmp(in, "schema", 6) == 0) {
        if (p->d->schema) return perr(p, line, "[schema] given twice");
        p->kind = SEC_SCHEMA;
        return 0;
    }
    if (m == 3 && memcmp(in, "lua", 3) == 0) {
        if (p->d->lua) return perr(p, line, "[lua] given twice");
        p->kind = SEC_LUA;
        return 0;
    }
    if (m > 3 && memcmp(in, "on", 2) == 0 && isspace((unsigned char)in[2])) {
        size_t a = 3;
        while (a < m && isspace((unsigned char)in[a])) a++;
        size_t b = m;
        while (b > a && isspace((unsigned char)in[b - 1])) b--;
        for (size_t i = a; i < b; i++)
            if (isspace((unsigned char)in[i]))
                return perr(p, line, "[on TYPE]: one event type per section, no blanks");
        if (b == a || b - a > ANNAL_MAX_NAME) return perr(p, line, "[on TYPE] needs an event type");
        for (size_t i = 0; i < p->d->nhandlers; i++)
            if (strlen(p->d->handlers[i].type) == b - a &&
                memcmp(p->d->handlers[i].type, in + a, b - a) == 0)
                return perr(p, line, "[on %.*s] given twice (first at line %d)", (int)(b - a),
                            in + a, p->d->handlers[i].line);
        p->kind = SEC_ON;
        p->on_type = dupn(in + a, b - a);
        p->on_line = line;
        return p->on_type ? 0 : perr(p, line, "out of memory");
    }
    return perr(p, line, "unknown section '%.*s' (expected [schema], [on Type] or [lua])", (int)n,
                s);
}

annal_err annal_proj_def_parse(const char *text, size_t len, const char *filename,
                               annal_proj_def **out, char *err, size_t err_size) {
    *out = NULL;
    annal__pj_fmt(err, err_size, "%s", "");
    annal_proj_def *d = calloc(1, sizeof *d);
    if (!d) return ANNAL_ENOMEM;
    parser p = {.d = d,
                .fname = filename ? filename : "<projection>",
                .err = err,
                .err_n = err_size,
                .kind = SEC_HEADER};
    d->filename = dupn(p.fname, strlen(p.fname));
    if (!d->filename) goto nomem;
    if (memchr(text, '\0', len)) {
        perr(&p, 1, "the file holds a NUL byte: not a text file");
        goto bad;
    }
    int line = 0;
    const char *s = text, *end = text + len;
    while (s < end) {
        line++;
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        const char *a = s, *b = le;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        /* A section header starts at column 0 with '[' and a letter: Lua's [[ never does. */
        if (s[0] == '[' && le - s > 2 && isalpha((unsigned char)s[1]) && b[-1] == ']') {
            if (section_line(&p, s, (size_t)(b - s), line, next) != 0) goto bad;
        } else if (p.kind == SEC_HEADER && a < b && *a != '#') {
            if (*a == '[') {
                perr(&p, line, "a section header starts at column 0: [schema], [on Type], [lua]");
                goto bad;
            }
            if (header_line(&p, a, (size_t)(b - a), line) != 0) goto bad;
        }
        s = next;
    }
    if (end_section(&p, end) != 0) goto bad;
    if (!d->source) {
        perr(&p, 1,
             "no source: add a line 'source $all' (or $ce-<category>, $et-<type>, a stream)");
        goto bad;
    }
    if (!d->nhandlers && !d->lua) {
        perr(&p, line ? line : 1, "no handlers: add [on EventType] sections with SQL, or [lua]");
        goto bad;
    }
    for (size_t i = 0; i < d->nhandlers; i++) {
        pj_handler *h = &d->handlers[i];
        for (size_t j = 0; j < h->nstmts; j++)
            for (size_t k = 0; k < h->stmts[j].nparams; k++)
                if (h->stmts[j].params[k].kind == PJ_P_LUA && !d->lua) {
                    perr(&p, h->stmts[j].line, "[on %s]: :%s needs a Lua handler ([lua] section)",
                         h->type, h->stmts[j].params[k].text);
                    goto bad;
                }
    }
    if (d->lua) {
        char msg[768];
        if (annal__pj_lua_check(d, msg, sizeof msg) != 0) {
            annal__pj_fmt(err, err_size, "%s", msg);
            goto bad;
        }
    }
    free(p.on_type);
    *out = d;
    return ANNAL_OK;
nomem:
    free(p.on_type);
    annal_proj_def_free(d);
    return ANNAL_ENOMEM;
bad:
    free(p.on_type);
    annal_proj_def_free(d);
    return ANNAL_EINVAL;
}

annal_err annal_proj_def_load(const char *path, annal_proj_def **out, char *err, size_t err_size) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        annal__pj_fmt(err, err_size, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? ANNAL_ENOTFOUND : ANNAL_EIO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                annal__pj_fmt(err, err_size, "%s: larger than 64 MiB", path);
                return ANNAL_EINVAL;
            }
            char *q = realloc(buf, cap);
            if (!q) {
                free(buf);
                fclose(f);
                return ANNAL_ENOMEM;
            }
            buf = q;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        annal__pj_fmt(err, err_size, "%s: read error", path);
        return ANNAL_EIO;
    }
    annal_err rc = annal_proj_def_parse(buf ? buf : "", len, path, out, err, err_size);
    free(buf);
    return rc;
}
