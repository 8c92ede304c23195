/*
 * jsonfast.c -- the quick JSON check of jsonfast.h: recursive descent over the plain
 * subset, giving up (-1) at the first thing outside it.
 */
#include "jsonfast.h"

typedef struct scan {
    const unsigned char *p, *end;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int lit(scan *s, const char *word) {
    for (; *word; word++, s->p++)
        if (s->p >= s->end || *s->p != (unsigned char)*word) return -1;
    return 1;
}

/* A string of printable ASCII and simple escapes (no \u: jansson checks those). */
static int str(scan *s) {
    for (s->p++; s->p < s->end; s->p++) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return 1;
        }
        if (c < 0x20 || c >= 0x80) return -1;
        if (c == '\\') {
            if (++s->p >= s->end) return -1;
            c = *s->p;
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
                c != 't')
                return -1;
        }
    }
    return -1;
}

static int digits(scan *s) {
    int n = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++, n++;
    return n;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)? with at most 15 digits: no overflow either way. */
static int num(scan *s) {
    if (*s->p == '-') s->p++;
    const unsigned char *start = s->p;
    int n = digits(s);
    if (n == 0 || (n > 1 && *start == '0')) return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        int f = digits(s);
        if (f == 0) return -1;
        n += f;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) return -1;
    return n <= 15 ? 1 : -1;
}

static int value(scan *s, int depth);

/* An object or array: members separated by commas, keys for objects. */
static int container(scan *s, int depth, unsigned char close) {
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (s->p >= s->end || *s->p != '"' || str(s) != 1) return -1;
            ws(s);
            if (s->p >= s->end || *s->p != ':') return -1;
            s->p++;
        }
        if (value(s, depth + 1) != 1) return -1;
        ws(s);
        if (s->p >= s->end) return -1;
        if (*s->p == close) {
            s->p++;
            return 1;
        }
        if (*s->p != ',') return -1;
        s->p++;
    }
}

static int value(scan *s, int depth) {
    ws(s);
    if (s->p >= s->end || depth > 32) return -1;
    switch (*s->p) {
    case '{': return container(s, depth, '}');
    case '[': return container(s, depth, ']');
    case '"': return str(s);
    case 't': return lit(s, "true");
    case 'f': return lit(s, "false");
    case 'n': return lit(s, "null");
    default: return (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) ? num(s) : -1;
    }
}

int jsonfast_plain(const void *data, size_t len) {
    if (!data) return -1;
    scan s = {data, (const unsigned char *)data + len};
    if (value(&s, 0) != 1) return -1;
    ws(&s);
    return s.p == s.end ? 1 : -1;
}
