/*
 * json.c -- how the `annal` command turns events into JSON lines and back: a growable
 * buffer, JSON strings, whitespace-only compaction, base64, and the event object shape.
 * Event data are bytes, so they are shown as JSON only when they are JSON.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---------------------------------------------------------------- buffer */

static void buf_reserve(cli_buf *b, size_t extra) {
    if (b->cap - b->len > extra) return; /* strictly greater: room for the NUL of cli_buf_cstr */
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) cap *= 2;
    b->p = cli_xrealloc(b->p, cap);
    b->cap = cap;
}

void cli_buf_add(cli_buf *b, const void *s, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

void cli_buf_addc(cli_buf *b, char c) {
    buf_reserve(b, 1);
    b->p[b->len++] = c;
}

void cli_buf_adds(cli_buf *b, const char *s) { cli_buf_add(b, s, strlen(s)); }

void cli_buf_addf(cli_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[128];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        cli_buf_add(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

const char *cli_buf_cstr(cli_buf *b) {
    buf_reserve(b, 0);
    b->p[b->len] = '\0';
    return b->p;
}

void cli_buf_free(cli_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- UTF-8 and strings */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates,
 * nothing past U+10FFFF), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned long cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return len;
}

int cli_utf8_valid(const void *s, size_t n) {
    const unsigned char *p = s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

void cli_json_add_string(cli_buf *b, const void *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s;
    cli_buf_addc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            cli_buf_addc(b, '\\');
            cli_buf_addc(b, (char)c);
            i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': cli_buf_add(b, "\\n", 2); break;
            case '\r': cli_buf_add(b, "\\r", 2); break;
            case '\t': cli_buf_add(b, "\\t", 2); break;
            case '\b': cli_buf_add(b, "\\b", 2); break;
            case '\f': cli_buf_add(b, "\\f", 2); break;
            default: {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                cli_buf_add(b, u, sizeof u);
            }
            }
            i++;
        } else if (c < 0x80) {
            cli_buf_addc(b, (char)c);
            i++;
        } else {
            size_t l = utf8_seq(p + i, n - i);
            if (l) {
                cli_buf_add(b, p + i, l);
                i += l;
            } else {
                cli_buf_add(b, "\\ufffd", 6);
                i++;
            }
        }
    }
    cli_buf_addc(b, '"');
}

/* ---------------------------------------------------------------- JSON text */

int cli_json_valid(const void *s, size_t n) {
    /* Quick refusal of plain text, the common non-JSON case, before asking jansson. */
    const char *p = s;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    if (i == n || !strchr("{[\"-0123456789tfn", p[i])) return 0;
    /* jansson decides, with the very flags import uses to read lines back: whatever is
     * printed as JSON here is accepted there (big integers and all). */
    json_error_t err;
    json_t *j = json_loadb(s, n, CLI_JSON_FLAGS, &err);
    if (!j) return 0;
    json_decref(j);
    return 1;
}

void cli_json_add_compact(cli_buf *b, const void *s, size_t n) {
    const char *p = s;
    int in_str = 0;
    size_t run = 0; /* start of the current run of kept bytes */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte can be neither a quote end nor blank */
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            cli_buf_add(b, p + run, i - run);
            run = i + 1;
        }
    }
    if (run < n) cli_buf_add(b, p + run, n - run);
}

static size_t skip_ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* s[i] is an opening quote; returns the index after the closing one. */
static size_t skip_string(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

/* Index after the value starting at s[i] (the text is known to be valid JSON). */
static size_t skip_value(const char *s, size_t n, size_t i) {
    if (i >= n) return n;
    if (s[i] == '"') return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, n, i);
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && !strchr(",}] \t\r\n", s[i])) i++;
    return i;
}

int cli_json_member(const char *obj, size_t n, const char *key, const char **val, size_t *val_len) {
    size_t klen = strlen(key);
    int found = 0;
    size_t i = skip_ws(obj, n, 0);
    if (i >= n || obj[i] != '{') return 0;
    i++;
    for (;;) {
        i = skip_ws(obj, n, i);
        if (i >= n || obj[i] != '"') return found;
        size_t kstart = i + 1;
        i = skip_string(obj, n, i);
        size_t kend = i - 1;
        i = skip_ws(obj, n, i);
        if (i >= n || obj[i] != ':') return found;
        i = skip_ws(obj, n, i + 1);
        size_t vstart = i;
        i = skip_value(obj, n, i);
        /* Keys written with escapes are not matched; callers then fall back to jansson. */
        if (kend - kstart == klen && memcmp(obj + kstart, key, klen) == 0) {
            *val = obj + vstart;
            *val_len = i - vstart;
            found = 1; /* keep going: the last duplicate wins, as in jansson */
        }
        i = skip_ws(obj, n, i);
        if (i >= n || obj[i] != ',') return found;
        i++;
    }
}

/* ---------------------------------------------------------------- base64 */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void cli_base64_add(cli_buf *b, const void *s, size_t n) {
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n) v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {b64[(v >> 18) & 63], b64[(v >> 12) & 63], i + 1 < n ? b64[(v >> 6) & 63] : '=',
                     i + 2 < n ? b64[v & 63] : '='};
        cli_buf_add(b, q, 4);
    }
}

static int b64_val(char c) {
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int cli_base64_decode(const char *s, size_t n, cli_buf *out) {
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int pad = (s[i + 3] == '=') + (s[i + 2] == '=');
        if (pad && !last) return -1;
        if (s[i + 2] == '=' && s[i + 3] != '=') return -1;
        int a = b64_val(s[i]), bb = b64_val(s[i + 1]);
        int c = pad >= 2 ? 0 : b64_val(s[i + 2]);
        int d = pad >= 1 ? 0 : b64_val(s[i + 3]);
        if (a < 0 || bb < 0 || c < 0 || d < 0) return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)bb << 12 | (unsigned)c << 6 | (unsigned)d;
        char q[3] = {(char)(v >> 16), (char)(v >> 8), (char)v};
        cli_buf_add(out, q, (size_t)(3 - pad));
    }
    return 0;
}

/* ---------------------------------------------------------------- events */

/* "name":value for data or metadata bytes, choosing the representation that lets
 * import restore exactly these bytes. */
static void add_bytes_field(cli_buf *b, const char *name, const void *s, size_t n,
                            int is_metadata) {
    cli_buf_addf(b, ",\"%s\":", name);
    if (is_metadata && n == 0) {
        cli_buf_adds(b, "null");
        return;
    }
    if (cli_json_valid(s, n)) {
        size_t at = b->len;
        cli_json_add_compact(b, s, n);
        /* Metadata that is the JSON text null must not read back as "no metadata". */
        if (!(is_metadata && b->len - at == 4 && memcmp(b->p + at, "null", 4) == 0)) return;
        b->len = at;
    }
    if (cli_utf8_valid(s, n)) {
        cli_json_add_string(b, s, n);
        cli_buf_addf(b, ",\"%s_encoding\":\"text\"", name);
    } else {
        cli_buf_addc(b, '"');
        cli_base64_add(b, s, n);
        cli_buf_addc(b, '"');
        cli_buf_addf(b, ",\"%s_encoding\":\"base64\"", name);
    }
}

void cli_event_json(cli_buf *b, const annal_event *ev) {
    char id[37], ts[CLI_TIME_LEN];
    annal_uuid_format(&ev->id, id);
    cli_time_rfc3339(ev->timestamp_ns, ts);
    cli_buf_addf(b, "{\"id\":\"%s\",\"stream\":", id);
    cli_json_add_string(b, ev->stream, ev->stream_len);
    cli_buf_adds(b, ",\"type\":");
    cli_json_add_string(b, ev->type, ev->type_len);
    cli_buf_addf(b, ",\"revision\":%llu,\"position\":%llu,\"timestamp\":\"%s\"",
                 (unsigned long long)ev->revision, (unsigned long long)ev->position, ts);
    add_bytes_field(b, "data", ev->data, ev->data_len, 0);
    add_bytes_field(b, "metadata", ev->metadata, ev->metadata_len, 1);
    if (ev->ntags) { /* omitted when empty: stores without tags export as before */
        cli_buf_adds(b, ",\"tags\":");
        cli_tags_json(b, ev);
    }
    cli_buf_addc(b, '}');
}

void cli_tags_json(cli_buf *b, const annal_event *ev) {
    cli_buf_addc(b, '[');
    int first = 1;
    for (const char *t = NULL; annal_event_tag_next(ev, &t); first = 0) {
        if (!first) cli_buf_addc(b, ',');
        cli_json_add_string(b, t, strlen(t));
    }
    cli_buf_addc(b, ']');
}

void cli_data_preview(cli_buf *b, const void *s, size_t n) {
    if (cli_json_valid(s, n)) {
        cli_json_add_compact(b, s, n);
        return;
    }
    /* A table line shows only the start of text: look at 4 KiB, cut on a character. */
    const unsigned char *p = s;
    size_t m = n > 4096 ? 4096 : n;
    for (int k = 0; k < 3 && m < n && m > 0 && (p[m] & 0xC0) == 0x80; k++) m--;
    if (cli_utf8_valid(s, m)) {
        /* One table line: control characters (newlines...) become spaces. */
        for (size_t i = 0; i < m; i++) cli_buf_addc(b, p[i] < 0x20 ? ' ' : (char)p[i]);
    } else {
        cli_buf_addf(b, "<%zu bytes binary>", n);
    }
}
