/*
 * convert.c -- between the protocol's messages and annal's values: stream names, UUIDs
 * (structured halves or text), timestamps as .NET ticks, and an event as a ReadResp.
 * Nothing here allocates: messages point into caller-provided storage.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "jsonfast.h"
#include "server_int.h"

int cv_stream_name(const EventStore__Client__StreamIdentifier *id, char *buf) {
    if (!id || id->stream_name.len == 0 || id->stream_name.len > ANNAL_MAX_NAME) return -1;
    if (memchr(id->stream_name.data, '\0', id->stream_name.len)) return -1;
    memcpy(buf, id->stream_name.data, id->stream_name.len);
    buf[id->stream_name.len] = '\0';
    return 0;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

int cv_uuid_in(const EventStore__Client__UUID *u, annal_uuid *out) {
    memset(out, 0, sizeof *out);
    if (!u) return 0; /* none given: the store makes one */
    switch (u->value_case) {
    case EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED:
        if (!u->structured) return -1;
        put_be64(out->bytes, (uint64_t)u->structured->most_significant_bits);
        put_be64(out->bytes + 8, (uint64_t)u->structured->least_significant_bits);
        return 0;
    case EVENT_STORE__CLIENT__UUID__VALUE_STRING:
        return annal_uuid_parse(u->string, out) == ANNAL_OK ? 0 : -1;
    default: return 0;
    }
}

void cv_uuid_out(const annal_uuid *id, int as_string, cv_uuid_buf *s) {
    event_store__client__uuid__init(&s->msg);
    if (as_string) {
        annal_uuid_format(id, s->text);
        s->msg.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRING;
        s->msg.string = s->text;
        return;
    }
    event_store__client__uuid__structured__init(&s->structured);
    s->structured.most_significant_bits = (int64_t)get_be64(id->bytes);
    s->structured.least_significant_bits = (int64_t)get_be64(id->bytes + 8);
    s->msg.value_case = EVENT_STORE__CLIENT__UUID__VALUE_STRUCTURED;
    s->msg.structured = &s->structured;
}

void cv_ticks(int64_t ns, char *buf, size_t size) {
    snprintf(buf, size, "%lld", (long long)(ns / 100));
}

int cv_is_json(const void *data, size_t len) {
    if (len == 0) return 0;
    if (jsonfast_plain(data, len) == 1) return 1; /* most events: no parse tree built */
    json_error_t err;
    json_t *j = json_loadb(data, len, JSON_DECODE_ANY, &err);
    if (!j) return 0;
    json_decref(j);
    return 1;
}

void cv_expected_text(int64_t expected, char *buf, size_t size) {
    snprintf(buf, size, "%lld", (long long)expected);
}

static void md_entry(cv_rec *r, int i, const char *key, char *value) {
    event_store__client__streams__read_resp__read_event__recorded_event__metadata_entry__init(
        &r->md[i]);
    r->md[i].key = (char *)key;
    r->md[i].value = value;
    r->mdp[i] = &r->md[i];
}

static void fill_rec(const annal_event *ev, int uuid_string, cv_rec *r) {
    event_store__client__streams__read_resp__read_event__recorded_event__init(&r->rec);
    event_store__client__stream_identifier__init(&r->sid);
    cv_uuid_out(&ev->id, uuid_string, &r->id);
    r->sid.stream_name.data = (uint8_t *)ev->stream;
    r->sid.stream_name.len = ev->stream_len;
    /* The map's strings must be NUL-terminated: copy the names (<= ANNAL_MAX_NAME). */
    snprintf(r->type, sizeof r->type, "%s", ev->type);
    cv_ticks(ev->timestamp_ns, r->created, sizeof r->created);
    md_entry(r, 0, "type", r->type);
    md_entry(r, 1, "content-type",
             cv_is_json(ev->data, ev->data_len) ? "application/json" : "application/octet-stream");
    md_entry(r, 2, "created", r->created);
    r->rec.id = &r->id.msg;
    r->rec.stream_identifier = &r->sid;
    r->rec.stream_revision = ev->revision;
    r->rec.prepare_position = ev->position;
    r->rec.commit_position = ev->position;
    r->rec.n_metadata = 3;
    r->rec.metadata = r->mdp;
    r->rec.custom_metadata.data = (uint8_t *)ev->metadata;
    r->rec.custom_metadata.len = ev->metadata_len;
    r->rec.data.data = (uint8_t *)ev->data;
    r->rec.data.len = ev->data_len;
}

void cv_read_resolved(const annal_event *ev, const annal_event *link, int uuid_string,
                      cv_event_msg *m) {
    event_store__client__streams__read_resp__init(&m->resp);
    event_store__client__streams__read_resp__read_event__init(&m->read);
    fill_rec(ev, uuid_string, &m->event);
    m->read.event = &m->event.rec;
    if (link) {
        fill_rec(link, uuid_string, &m->link);
        m->read.link = &m->link.rec;
    }
    /* The position reported is the one the client resumes from: the link's, if any. */
    m->read.position_case =
        EVENT_STORE__CLIENT__STREAMS__READ_RESP__READ_EVENT__POSITION_COMMIT_POSITION;
    m->read.commit_position = link ? link->position : ev->position;
    m->resp.content_case = EVENT_STORE__CLIENT__STREAMS__READ_RESP__CONTENT_EVENT;
    m->resp.event = &m->read;
}

void cv_read_event(const annal_event *ev, int uuid_string, cv_event_msg *m) {
    cv_read_resolved(ev, NULL, uuid_string, m);
}
