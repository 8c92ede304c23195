/*
 * jpath.c -- values of event JSON by path (items[0].qty) for SQL parameters. The text is
 * scanned, not parsed into a tree: a projection binds a few fields of every event, and
 * skipping the rest is several times cheaper than building a document.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "project_int.h"

void annal__pj_path_free(pj_path *p) {
    for (size_t i = 0; i < p->n; i++) free(p->steps[i].key);
    free(p->steps);
    p->steps = NULL;
    p->n = 0;
}

int annal__pj_path_parse(const char *s, size_t len, pj_path *out, char *msg, size_t msg_n) {
    memset(out, 0, sizeof *out);
    size_t i = 0;
    while (i < len) {
        pj_step st = {NULL, 0};
        if (s[i] == '[') {
            size_t j = i + 1;
            long v = 0;
            if (j >= len || !isdigit((unsigned char)s[j])) goto bad;
            while (j < len && isdigit((unsigned char)s[j]) && v < 100000000)
                v = v * 10 + (s[j++] - '0');
            if (j >= len || s[j] != ']') goto bad;
            st.index = v;
            i = j + 1;
        } else {
            size_t j = i;
            while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            if (j == i) goto bad;
            st.key = malloc(j - i + 1);
            if (!st.key) goto bad;
            memcpy(st.key, s + i, j - i);
            st.key[j - i] = '\0';
            i = j;
        }
        pj_step *ns = realloc(out->steps, (out->n + 1) * sizeof *ns);
        if (!ns) {
            free(st.key);
            goto bad;
        }
        out->steps = ns;
        ns[out->n++] = st;
        if (i < len) {
            if (s[i] == '.') {
                i++;
                if (i >= len || s[i] == '[' || s[i] == '.') goto bad;
            } else if (s[i] != '[') {
                goto bad;
            }
        }
    }
    if (out->n == 0) goto bad;
    return 0;
bad:
    annal__pj_fmt(msg, msg_n, "expected names and [index] joined by '.' (like items[0].qty)");
    annal__pj_path_free(out);
    return -1;
}

typedef struct scan {
    const char *s;
    size_t n, i;
} scan;

static void ws(scan *c) {
    while (c->i < c->n &&
           (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

/* Skip a string starting at the quote; 0 ok. */
static int skip_string(scan *c) {
    c->i++;
    for (;;) {
        const char *q = memchr(c->s + c->i, '"', c->n - c->i);
        if (!q) return -1;
        size_t at = (size_t)(q - c->s), bs = 0;
        while (at - bs > c->i && c->s[at - bs - 1] == '\\') bs++;
        c->i = at + 1;
        if (bs % 2 == 0) return 0; /* not escaped: an even run of backslashes before it */
    }
}

static int skip_value(scan *c, int depth) {
    ws(c);
    if (c->i >= c->n || depth > 512) return -1;
    char ch = c->s[c->i];
    if (ch == '"') return skip_string(c);
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        c->i++;
        ws(c);
        if (c->i < c->n && c->s[c->i] == close) {
            c->i++;
            return 0;
        }
        for (;;) {
            if (ch == '{') {
                ws(c);
                if (c->i >= c->n || c->s[c->i] != '"' || skip_string(c)) return -1;
                ws(c);
                if (c->i >= c->n || c->s[c->i] != ':') return -1;
                c->i++;
            }
            if (skip_value(c, depth + 1)) return -1;
            ws(c);
            if (c->i >= c->n) return -1;
            if (c->s[c->i] == ',') {
                c->i++;
                continue;
            }
            if (c->s[c->i] == close) {
                c->i++;
                return 0;
            }
            return -1;
        }
    }
    size_t st = c->i;
    while (c->i < c->n && (isalnum((unsigned char)c->s[c->i]) || c->s[c->i] == '-' ||
                           c->s[c->i] == '+' || c->s[c->i] == '.'))
        c->i++;
    size_t n = c->i - st;
    const char *t = c->s + st;
    if (n == 0) return -1;
    /* a literal or a number: anything else means the text is not JSON */
    if ((n == 4 && (memcmp(t, "true", 4) == 0 || memcmp(t, "null", 4) == 0)) ||
        (n == 5 && memcmp(t, "false", 5) == 0) || t[0] == '-' || isdigit((unsigned char)t[0]))
        return 0;
    return -1;
}

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int ensure(char **b, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n) c *= 2;
    char *q = realloc(*b, c);
    if (!q) return -1;
    *b = q;
    *cap = c;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode the string at c (at its quote) into scratch. */
static int get_string(scan *c, annal_proj_value *v, char **scratch, size_t *cap) {
    size_t st = c->i + 1;
    if (skip_string(c)) return -1;
    size_t en = c->i - 1;
    if (!memchr(c->s + st, '\\', en - st)) { /* the common case: no copy */
        v->kind = ANNAL_PROJ_TEXT;
        v->s = c->s + st;
        v->len = en - st;
        return 0;
    }
    if (ensure(scratch, cap, en - st + 1)) return -1;
    char *o = *scratch;
    size_t k = 0;
    for (size_t i = st; i < en; i++) {
        char ch = c->s[i];
        if (ch != '\\') {
            o[k++] = ch;
            continue;
        }
        ch = c->s[++i];
        switch (ch) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'u': {
            if (i + 4 >= en) return -1;
            unsigned cp = 0;
            for (int j = 1; j <= 4; j++) {
                int h = hexv(c->s[i + (size_t)j]);
                if (h < 0) return -1;
                cp = cp * 16 + (unsigned)h;
            }
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < en && c->s[i + 1] == '\\' &&
                c->s[i + 2] == 'u') {
                unsigned lo = 0;
                for (int j = 3; j <= 6; j++) {
                    int h = hexv(c->s[i + (size_t)j]);
                    if (h < 0) return -1;
                    lo = lo * 16 + (unsigned)h;
                }
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            /* 6 escaped bytes always give at most 4 of UTF-8: no overflow of scratch */
            k += put_utf8(o + k, cp);
            break;
        }
        default: o[k++] = ch; break;
        }
    }
    o[k] = '\0';
    v->kind = ANNAL_PROJ_TEXT;
    v->s = o;
    v->len = k;
    return 0;
}

static int get_scalar(scan *c, annal_proj_value *v, char **scratch, size_t *cap) {
    ws(c);
    if (c->i >= c->n) return -1;
    char ch = c->s[c->i];
    if (ch == '"') return get_string(c, v, scratch, cap);
    size_t st = c->i;
    if (ch == '{' || ch == '[') {
        if (skip_value(c, 0)) return -1;
        v->kind = ANNAL_PROJ_TEXT;
        v->s = c->s + st;
        v->len = c->i - st;
        return 0;
    }
    if (skip_value(c, 0)) return -1;
    size_t n = c->i - st;
    const char *t = c->s + st;
    if (n == 4 && memcmp(t, "true", 4) == 0) {
        v->kind = ANNAL_PROJ_INT;
        v->i = 1;
        return 0;
    }
    if (n == 5 && memcmp(t, "false", 5) == 0) {
        v->kind = ANNAL_PROJ_INT;
        v->i = 0;
        return 0;
    }
    if (n == 4 && memcmp(t, "null", 4) == 0) {
        v->kind = ANNAL_PROJ_NULL;
        return 0;
    }
    if (n <= 18 && (isdigit((unsigned char)t[0]) || (t[0] == '-' && n > 1))) {
        /* the common case, a small integer: no copy, no strtoll */
        size_t k = t[0] == '-';
        int64_t x = 0;
        for (; k < n && isdigit((unsigned char)t[k]); k++) x = x * 10 + (t[k] - '0');
        if (k == n) {
            v->kind = ANNAL_PROJ_INT;
            v->i = t[0] == '-' ? -x : x;
            return 0;
        }
    }
    char buf[64];
    if (n >= sizeof buf) return -1;
    memcpy(buf, t, n);
    buf[n] = '\0';
    char *end;
    if (!strpbrk(buf, ".eE")) {
        long long x = strtoll(buf, &end, 10);
        if (*end) return -1;
        v->kind = ANNAL_PROJ_INT;
        v->i = x;
    } else {
        double x = strtod(buf, &end);
        if (*end) return -1;
        v->kind = ANNAL_PROJ_REAL;
        v->d = x;
    }
    return 0;
}

int annal__pj_json_get(const char *json, size_t len, const pj_path *path, annal_proj_value *v,
                       char **scratch, size_t *scratch_cap) {
    memset(v, 0, sizeof *v);
    v->kind = ANNAL_PROJ_NULL;
    scan c = {json, len, 0};
    for (size_t k = 0; k < path->n; k++) {
        const pj_step *st = &path->steps[k];
        ws(&c);
        if (c.i >= c.n) return -1;
        if (st->key) {
            if (c.s[c.i] != '{') return skip_value(&c, 0) ? -1 : 0; /* not an object: null */
            c.i++;
            int found = 0;
            size_t klen = strlen(st->key);
            ws(&c);
            if (c.i < c.n && c.s[c.i] == '}') return 0;
            for (;;) {
                ws(&c);
                if (c.i >= c.n || c.s[c.i] != '"') return -1;
                size_t ks = c.i + 1;
                if (skip_string(&c)) return -1;
                size_t ke = c.i - 1;
                ws(&c);
                if (c.i >= c.n || c.s[c.i] != ':') return -1;
                c.i++;
                /* keys with escapes are compared raw: path names are plain identifiers */
                if (ke - ks == klen && memcmp(c.s + ks, st->key, klen) == 0) {
                    found = 1;
                    break;
                }
                if (skip_value(&c, 0)) return -1;
                ws(&c);
                if (c.i < c.n && c.s[c.i] == ',') {
                    c.i++;
                    continue;
                }
                if (c.i < c.n && c.s[c.i] == '}') break;
                return -1;
            }
            if (!found) return 0;
        } else {
            if (c.s[c.i] != '[') return skip_value(&c, 0) ? -1 : 0;
            c.i++;
            ws(&c);
            if (c.i < c.n && c.s[c.i] == ']') return 0;
            long idx = 0;
            for (;;) {
                if (idx == st->index) break;
                if (skip_value(&c, 0)) return -1;
                ws(&c);
                if (c.i < c.n && c.s[c.i] == ',') {
                    c.i++;
                    idx++;
                    continue;
                }
                if (c.i < c.n && c.s[c.i] == ']') return 0;
                return -1;
            }
        }
    }
    return get_scalar(&c, v, scratch, scratch_cap);
}
