/*
 * links.c -- link events as KurrentDB's clients know them. annal keeps categories and
 * event types as native indexes and writes no links, so a read of `$ce-<category>` or
 * `$et-<type>` makes them: the n-th event of the category reads as event n of the link
 * stream, of type `$>` with data `revision@stream` (and, with resolveLinkTos, the event
 * itself with that link beside it). A link a client appended (type `$>`) is resolved on
 * request from any stream. Link numbers count the events visible now, so events deleted
 * or expired from a category renumber the links after them (KurrentDB keeps dead links).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

int links_is_stream(const char *name) {
    return (strncmp(name, "$ce-", 4) == 0 || strncmp(name, "$et-", 4) == 0) && name[4];
}

void links_done(srv_links *l) {
    if (l->held) annal_iter_close(l->held);
    l->held = NULL;
}

/* The made link of ev: its own id (ev's, transformed: stable across reads), the link
 * stream's name and number, ev's position and time. */
static void make_link(srv_links *l, const annal_event *ev) {
    memset(&l->link, 0, sizeof l->link);
    l->link.id = ev->id;
    for (int i = 0; i < 16; i++) l->link.id.bytes[i] ^= (uint8_t)(0x5a + i);
    l->link.id.bytes[6] = (uint8_t)((l->link.id.bytes[6] & 0x0f) | 0x40);
    l->link.id.bytes[8] = (uint8_t)((l->link.id.bytes[8] & 0x3f) | 0x80);
    l->link.stream = l->name;
    l->link.stream_len = strlen(l->name);
    l->link.type = SRV_LINK_TYPE;
    l->link.type_len = 2;
    int n = snprintf(l->data, sizeof l->data, "%" PRIu64 "@%s", ev->revision, ev->stream);
    l->link.data = l->data;
    l->link.data_len = n > 0 ? (size_t)n : 0;
    l->link.revision = l->next;
    l->link.position = ev->position;
    l->link.timestamp_ns = ev->timestamp_ns;
    if (l->backward)
        l->next--;
    else
        l->next++;
}

/* The event a stored link points at, read into l->held; NULL if it is not there. */
static const annal_event *resolve(srv_links *l, const annal_event *link) {
    char text[24 + ANNAL_MAX_NAME + 2];
    if (link->data_len == 0 || link->data_len >= sizeof text) return NULL;
    memcpy(text, link->data, link->data_len);
    text[link->data_len] = '\0';
    char *at = strchr(text, '@'), *end;
    if (!at || at == text || !at[1]) return NULL;
    *at = '\0';
    unsigned long long rev = strtoull(text, &end, 10);
    if (*end) return NULL;
    links_done(l);
    if (annal_read_stream(l->db, at + 1, rev, 0, 1, &l->held) != ANNAL_OK) {
        l->held = NULL;
        return NULL;
    }
    const annal_event *ev;
    if (annal_iter_next(l->held, &ev) != ANNAL_OK || ev->revision != rev) return NULL;
    return ev;
}

void links_emit(srv_links *l, const annal_event *ev, int uuid_string, cv_event_msg *m) {
    if (l && l->numbered) {
        make_link(l, ev);
        /* security: a link to an event its reader may not read stays unresolved. */
        if (l->resolve && (!l->c || sec_readable(l->c, ev)))
            cv_read_resolved(ev, &l->link, uuid_string, m);
        else
            cv_read_event(&l->link, uuid_string, m);
        return;
    }
    const annal_event *target = NULL;
    if (l && l->resolve && strcmp(ev->type, SRV_LINK_TYPE) == 0) target = resolve(l, ev);
    if (target && l->c && !sec_readable(l->c, target)) target = NULL; /* security: as gone */
    /* A link whose event is gone reads as the link alone. */
    if (target)
        cv_read_resolved(target, ev, uuid_string, m);
    else
        cv_read_event(ev, uuid_string, m);
}

annal_err links_seek(annal_db *db, const char *name, uint64_t idx, uint64_t *pos, uint64_t *count) {
    annal_iter *it;
    annal_err r = annal_read_stream(db, name, 0, 0, 0, &it);
    if (r != ANNAL_OK) return r;
    const annal_event *ev;
    uint64_t n = 0;
    *pos = 0;
    while ((r = annal_iter_next(it, &ev)) == ANNAL_OK) {
        *pos = ev->position;
        if (n++ == idx) break;
    }
    annal_iter_close(it);
    *count = n;
    if (r != ANNAL_OK && r != ANNAL_END) return r;
    return idx != UINT64_MAX && n <= idx ? ANNAL_ENOTFOUND : ANNAL_OK;
}
