/* schema.c -- the upcaster registry: steps from (type, version) to (new type, version + 1)
 * applied in a chain when events are read, so old events are never rewritten.
 * An event's version is the "$schema" member of its metadata (absent: 1). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "write.h"

typedef struct step {
    char *type;
    uint32_t version;
    char *new_type;
    annal_upcast_fn fn;
    void *ctx;
} step;

struct annal_schema {
    step *steps;
    size_t n, cap;
};

/* A chain can only climb versions, so it ends; this only bounds a pathological registry. */
#define MAX_CHAIN 4096

static int name_ok(const char *s) {
    if (!s) return 0;
    size_t n = strnlen(s, ANNAL_MAX_NAME + 1);
    return n >= 1 && n <= ANNAL_MAX_NAME;
}

static const step *find(const annal_schema *s, const char *type, uint32_t version) {
    for (size_t i = 0; i < s->n; i++)
        if (s->steps[i].version == version && strcmp(s->steps[i].type, type) == 0)
            return &s->steps[i];
    return NULL;
}

annal_err annal_schema_new(annal_schema **out) {
    if (!out) return ANNAL_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? ANNAL_OK : ANNAL_ENOMEM;
}

void annal_schema_free(annal_schema *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->steps[i].type);
        free(s->steps[i].new_type);
    }
    free(s->steps);
    free(s);
}

annal_err annal_schema_upcaster_add(annal_schema *s, const char *type, uint32_t version,
                                    const char *new_type, annal_upcast_fn fn, void *ctx) {
    if (!s || !name_ok(type) || (new_type && !name_ok(new_type)) || version == 0 ||
        version == UINT32_MAX || find(s, type, version))
        return ANNAL_EINVAL;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        step *p = realloc(s->steps, cap * sizeof *p);
        if (!p) return ANNAL_ENOMEM;
        s->steps = p;
        s->cap = cap;
    }
    step st = {strdup(type), version, strdup(new_type ? new_type : type), fn, ctx};
    if (!st.type || !st.new_type) {
        free(st.type);
        free(st.new_type);
        return ANNAL_ENOMEM;
    }
    s->steps[s->n++] = st;
    return ANNAL_OK;
}

uint32_t annal_schema_version(const annal_schema *s, const char *type) {
    uint32_t v = 1;
    if (!s || !type) return v;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->steps[i].new_type, type) == 0 && s->steps[i].version + 1 > v)
            v = s->steps[i].version + 1;
    return v;
}

int annal__write_schema_touches(const annal_schema *s, const char *type) {
    if (!s) return 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->steps[i].type, type) == 0) return 1;
    return 0;
}

annal_err annal_event_schema_get(const annal_event *ev, uint32_t *version) {
    if (!ev || !version) return ANNAL_EINVAL;
    *version = 1;
    /* Cheap test first: most metadata never mentions the key, and parsing costs more than
     * the fold itself. The handler writes the key unescaped, so this finds its own. */
    if (!ev->metadata || ev->metadata_len < sizeof ANNAL_SCHEMA_KEY + 1 ||
        !memmem(ev->metadata, ev->metadata_len, "\"" ANNAL_SCHEMA_KEY "\"",
                sizeof ANNAL_SCHEMA_KEY + 1))
        return ANNAL_OK;
    json_t *root = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    if (!root) return ANNAL_OK; /* not JSON: carries no version */
    annal_err rc = ANNAL_OK;
    json_t *v = json_is_object(root) ? json_object_get(root, ANNAL_SCHEMA_KEY) : NULL;
    if (v) {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
        if (n >= 1 && n <= (json_int_t)UINT32_MAX)
            *version = (uint32_t)n;
        else
            rc = ANNAL_ECORRUPT;
    }
    json_decref(root);
    return rc;
}

annal_err annal__write_upcast(const annal_schema *s, const annal_event *ev, annal_event *tmp,
                              annal_buf bufs[2], const annal_event **out) {
    *out = ev;
    if (!annal__write_schema_touches(s, ev->type)) return ANNAL_OK;
    uint32_t v;
    annal_err rc = annal_event_schema_get(ev, &v);
    if (rc != ANNAL_OK) return rc;
    const step *st = find(s, ev->type, v);
    if (!st) return ANNAL_OK;
    *tmp = *ev;
    int in = -1; /* buffer holding tmp->data; -1: the event's own bytes */
    for (int steps = 0; st && steps < MAX_CHAIN; steps++) {
        if (st->fn) {
            int o = in == 0 ? 1 : 0; /* never write into the buffer being read */
            annal__write_buf_clear(&bufs[o]);
            rc = st->fn(st->ctx, tmp, &bufs[o]);
            if (rc != ANNAL_OK) return rc;
            tmp->data = bufs[o].p;
            tmp->data_len = bufs[o].len;
            in = o;
        }
        tmp->type = st->new_type;
        tmp->type_len = strlen(st->new_type);
        st = find(s, st->new_type, st->version + 1);
    }
    *out = tmp;
    return ANNAL_OK;
}

annal_err annal_schema_upcast(const annal_schema *s, const annal_event *ev, annal_event **out) {
    if (!ev || !out) return ANNAL_EINVAL;
    *out = NULL;
    annal_buf bufs[2];
    annal__write_buf_init(&bufs[0]);
    annal__write_buf_init(&bufs[1]);
    annal_event tmp;
    const annal_event *e;
    annal_err rc = annal__write_upcast(s, ev, &tmp, bufs, &e);
    if (rc == ANNAL_OK) {
        /* One allocation, laid out like annal_event_get's: the struct, then its bytes. */
        size_t sz = sizeof *e + e->stream_len + 1 + e->type_len + 1 + e->data_len +
                    e->metadata_len + e->tags_len;
        annal_event *c = malloc(sz);
        if (c) {
            char *p = (char *)(c + 1);
            *c = *e;
            memcpy(p, e->stream, e->stream_len);
            p[e->stream_len] = '\0';
            c->stream = p;
            p += e->stream_len + 1;
            memcpy(p, e->type, e->type_len);
            p[e->type_len] = '\0';
            c->type = p;
            p += e->type_len + 1;
            if (e->data_len) memcpy(p, e->data, e->data_len);
            c->data = e->data_len ? p : NULL;
            p += e->data_len;
            if (e->metadata_len) memcpy(p, e->metadata, e->metadata_len);
            c->metadata = e->metadata_len ? p : NULL;
            p += e->metadata_len;
            if (e->tags_len) memcpy(p, e->tags, e->tags_len); /* (DCB tags) */
            c->tags = e->tags_len ? p : NULL;
            *out = c;
        } else {
            rc = ANNAL_ENOMEM;
        }
    }
    annal__write_buf_free(&bufs[0]);
    annal__write_buf_free(&bufs[1]);
    return rc;
}
