/*
 * acl.c -- stream ACLs as KurrentDB has them. A stream's metadata may hold `$acl` with
 * `$r`, `$w`, `$d`, `$mr`, `$mw`: each a user or role name or a list of them, `$all`
 * meaning every authenticated user. A key it lacks comes from the newest event of
 * `$settings` (`$userStreamAcl`, or `$systemStreamAcl` for `$` streams), else from the
 * defaults: user streams open to every user, system streams to `$admins` only. Admins
 * may do anything. `$$<stream>` (metadata) is read with `$mr` and written with `$mw` of
 * <stream>. `$all` is read by everyone, each event filtered by its own stream's `$r`.
 * Every check reads the ACL afresh (answers are cached only within one call, and dropped
 * when an ACL changes), so a change takes effect on the next call.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server_int.h"

#define CACHE_SLOTS 64

static const char *const keys[] = {"$r", "$w", "$d", "$mr", "$mw"};
static const char *const op_names[] = {"read", "write", "delete", "metadata read",
                                       "metadata write"};

struct sec_acl_cache {
    uint64_t gen;
    struct {
        char *stream;
        int allowed;
    } slot[CACHE_SLOTS];
};

uint64_t acl_generation(annal_server *srv) { return atomic_load(&srv->sec->acl_gen); }

/* The newest `$settings` document (a new reference), NULL if none. */
static json_t *settings(annal_server *srv) {
    sec_state *s = srv->sec;
    uint64_t gen = acl_generation(srv);
    pthread_mutex_lock(&s->settings_mu);
    if (!s->settings_loaded || s->settings_gen != gen) {
        json_decref(s->settings);
        s->settings = NULL;
        annal_iter *it;
        if (annal_read_stream(srv->db, "$settings", ANNAL_FROM_END, ANNAL_READ_BACKWARD, 1, &it) ==
            ANNAL_OK) {
            const annal_event *ev;
            if (annal_iter_next(it, &ev) == ANNAL_OK) {
                json_error_t err;
                json_t *doc = json_loadb(ev->data, ev->data_len, 0, &err);
                if (json_is_object(doc))
                    s->settings = doc;
                else
                    json_decref(doc);
            }
            annal_iter_close(it);
        }
        s->settings_gen = gen;
        s->settings_loaded = 1;
    }
    json_t *r = json_incref(s->settings);
    pthread_mutex_unlock(&s->settings_mu);
    return r;
}

static int names_match(const sec_who *w, const char *name) {
    return strcmp(name, "$all") == 0 || strcmp(name, w->name) == 0 ||
           users_has_group(w->groups, name);
}

/* Does the role list v (a string or an array of strings) include w? */
static int allowed_by(const sec_who *w, json_t *v) {
    if (json_is_string(v)) return names_match(w, json_string_value(v));
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (json_is_string(e) && names_match(w, json_string_value(e))) return 1;
    }
    return 0;
}

static int decide(annal_server *srv, const sec_who *w, const char *stream, sec_op op) {
    if (w->admin) return 1;
    if (!w->authenticated) return 0;
    if (strncmp(stream, "$$", 2) == 0 && stream[2]) {
        stream += 2;
        op = op == SEC_READ ? SEC_META_READ : SEC_META_WRITE;
    }
    /* The DCB stream holds the application's events with tags alone: governed as a user
     * stream (its own `$acl`, else `$userStreamAcl`, else every user), not admins only. */
    int system = stream[0] == '$' && strcmp(stream, ANNAL_DCB_STREAM) != 0;
    json_t *meta = NULL, *list = NULL;
    if (!system) {
        char *text = NULL;
        /* Most streams have no ACL: parse only a document that may name one (a loose
         * test, so that no spelling of the key, escaped or not, skips the parse). */
        if (annal_stream_meta_get(srv->db, stream, &text, NULL) == ANNAL_OK && text &&
            strstr(text, "acl")) {
            json_error_t err;
            meta = json_loads(text, 0, &err);
        }
        annal_free(text);
        list = json_object_get(json_object_get(meta, "$acl"), keys[op]);
    }
    json_t *set = NULL;
    if (!list) {
        set = settings(srv);
        list = json_object_get(json_object_get(set, system ? "$systemStreamAcl" : "$userStreamAcl"),
                               keys[op]);
    }
    int ok = list ? allowed_by(w, list) : !system;
    json_decref(meta);
    json_decref(set);
    return ok;
}

static int read_decision(srv_call *c, const char *stream);

static int permitted(srv_call *c, const char *stream, sec_op op) {
    if (c->who.admin) return 1;
    /* $all: everyone reads it; what they see is filtered per event (sec_readable). */
    if (strcmp(stream, "$all") == 0 && op == SEC_READ && c->who.authenticated) return 1;
    /* A read's decision is kept for its events (sec_readable): one ACL lookup a call. */
    return op == SEC_READ ? read_decision(c, stream) : decide(c->srv, &c->who, stream, op);
}

int sec_allowed(srv_call *c, const char *stream, sec_op op) {
    if (permitted(c, stream, op)) return 1;
    sec_deny_audit(c, op_names[op], stream);
    return 0;
}

int sec_check(srv_call *c, const char *stream, sec_op op) {
    if (permitted(c, stream, op)) return 0;
    sec_deny(c, op_names[op], stream);
    return -1;
}

static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

void acl_cache_free(sec_acl_cache *cache) {
    if (!cache) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free(cache->slot[i].stream);
    free(cache);
}

/* May c read stream? From the call's cache (valid while no ACL changed), else decided
 * and kept there. */
static int read_decision(srv_call *c, const char *stream) {
    uint64_t gen = acl_generation(c->srv);
    sec_acl_cache *cache = c->who.cache;
    if (cache && cache->gen != gen) {
        acl_cache_free(cache);
        cache = c->who.cache = NULL;
    }
    if (!cache && (cache = c->who.cache = calloc(1, sizeof *cache)) != NULL) cache->gen = gen;
    int slot = (int)(hash(stream) % CACHE_SLOTS);
    if (cache && cache->slot[slot].stream && strcmp(cache->slot[slot].stream, stream) == 0)
        return cache->slot[slot].allowed;
    int ok = decide(c->srv, &c->who, stream, SEC_READ);
    if (cache) {
        char *copy = strdup(stream);
        if (copy) {
            free(cache->slot[slot].stream);
            cache->slot[slot].stream = copy;
            cache->slot[slot].allowed = ok;
        }
    }
    return ok;
}

int sec_readable(srv_call *c, const annal_event *ev) {
    if (c->who.admin) return 1;
    return read_decision(c, ev->stream);
}

void sec_written(srv_call *c, const char *stream) {
    int settings_changed = strcmp(stream, "$settings") == 0;
    if (!settings_changed && strncmp(stream, "$$", 2) != 0) return;
    atomic_fetch_add(&c->srv->sec->acl_gen, 1);
    if (settings_changed)
        sec_audit(c->srv, "default ACLs ($settings) changed by '%s' from %s", c->who.name,
                  c->who.peer);
    else
        sec_audit(c->srv, "metadata and ACL of stream '%s' set by '%s' from %s", stream + 2,
                  c->who.name, c->who.peer);
}

annal_err sec_append(srv_call *c, const char *stream, int64_t expected, annal_event_data *ev,
                     size_t n, annal_append_result *res) {
    annal_err r = stream[0] == '$' ? annal_append_system(c->srv->db, stream, expected, ev, n, res)
                                   : annal_append(c->srv->db, stream, expected, ev, n, res);
    if (r == ANNAL_OK) sec_written(c, stream);
    return r;
}
