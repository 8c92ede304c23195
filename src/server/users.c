/*
 * users.c -- users kept in the store as KurrentDB keeps them: the stream `$user-<name>`
 * holds the user (its newest event, type `$user`, a JSON document) and `$users` lists
 * the names (an event `$User` whose data is the name, at each creation). Passwords are
 * kept only as argon2id hashes with a random salt, never in clear.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <argon2.h>
#include <jansson.h>

#include "sec.h"

/* OWASP's argon2id minimum (19 MiB, 2 passes): tens of milliseconds per hash, so the
 * server caches verified credentials instead of hashing on every call. */
#define HASH_T_COST  2
#define HASH_M_KIB   19456
#define HASH_LANES   1
#define HASH_SALT    16
#define HASH_BYTES   32
#define USER_TYPE    "$user"
#define USERS_STREAM "$users"
#define USERS_TYPE   "$User"

int users_name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > SEC_NAME_MAX || name[0] == '$') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        /* ':' would split Basic credentials; ',' separates groups. */
        if (ch < 0x21 || ch == 0x7f || ch == ':' || ch == ',' || ch == '/') return 0;
    }
    return 1;
}

int users_has_group(const char *groups, const char *group) {
    size_t gl = strlen(group);
    for (const char *p = groups; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == gl && memcmp(p, group, gl) == 0) return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

annal_err users_hash(const char *password, char *hash) {
    uint8_t salt[HASH_SALT];
    if (getrandom(salt, sizeof salt, 0) != (ssize_t)sizeof salt) return ANNAL_EIO;
    int r = argon2id_hash_encoded(HASH_T_COST, HASH_M_KIB, HASH_LANES, password, strlen(password),
                                  salt, sizeof salt, HASH_BYTES, hash, SEC_HASH_MAX);
    return r == ARGON2_OK                        ? ANNAL_OK
           : r == ARGON2_MEMORY_ALLOCATION_ERROR ? ANNAL_ENOMEM
                                                 : ANNAL_EINVAL;
}

int users_verify(const char *hash, const char *password) {
    if (!hash[0]) return 0; /* no password set: nobody logs in as this user */
    return argon2id_verify(hash, password, strlen(password)) == ARGON2_OK;
}

static void stream_of(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "$user-%s", name);
}

static void copy_str(json_t *doc, const char *key, char *out, size_t size) {
    const char *s = json_string_value(json_object_get(doc, key));
    snprintf(out, size, "%s", s ? s : "");
}

static int parse(const annal_event *ev, sec_user *u) {
    json_error_t err;
    json_t *doc = json_loadb(ev->data, ev->data_len, 0, &err);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return -1;
    }
    memset(u, 0, sizeof *u);
    copy_str(doc, "loginName", u->name, sizeof u->name);
    copy_str(doc, "fullName", u->full_name, sizeof u->full_name);
    copy_str(doc, "hash", u->hash, sizeof u->hash);
    json_t *g = json_object_get(doc, "groups");
    size_t i, len = 0;
    json_t *v;
    json_array_foreach(g, i, v) {
        const char *s = json_string_value(v);
        if (!s) continue;
        int n = snprintf(u->groups + len, sizeof u->groups - len, "%s%s", len ? "," : "", s);
        if (n < 0 || (size_t)n >= sizeof u->groups - len) break;
        len += (size_t)n;
    }
    u->disabled = json_is_true(json_object_get(doc, "disabled"));
    u->deleted = json_is_true(json_object_get(doc, "deleted"));
    u->updated_ns = ev->timestamp_ns;
    json_decref(doc);
    return 0;
}

annal_err users_read(annal_db *db, const char *name, sec_user *out) {
    if (!users_name_ok(name)) return ANNAL_ENOTFOUND;
    char stream[SEC_NAME_MAX + 8];
    stream_of(name, stream, sizeof stream);
    annal_iter *it;
    annal_err r = annal_read_stream(db, stream, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 1, &it);
    if (r != ANNAL_OK) return r;
    const annal_event *ev;
    r = annal_iter_next(it, &ev);
    if (r == ANNAL_OK)
        r = parse(ev, out) == 0 && strcmp(out->name, name) == 0 ? ANNAL_OK : ANNAL_ECORRUPT;
    else if (r == ANNAL_END)
        r = ANNAL_ENOTFOUND;
    annal_iter_close(it);
    if (r == ANNAL_OK && out->deleted) r = ANNAL_ENOTFOUND;
    return r;
}

annal_err users_write(annal_db *db, const sec_user *u, int created) {
    json_t *groups = json_array();
    for (const char *p = u->groups; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len) json_array_append_new(groups, json_stringn(p, len));
        p = end ? end + 1 : p + len;
    }
    json_t *doc = json_pack("{s:s, s:s, s:o, s:b, s:s, s:b}", "loginName", u->name, "fullName",
                            u->full_name, "groups", groups, "disabled", u->disabled, "hash",
                            u->hash, "deleted", u->deleted);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) return ANNAL_ENOMEM;
    char stream[SEC_NAME_MAX + 8];
    stream_of(u->name, stream, sizeof stream);
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = USER_TYPE;
    ev.data = text;
    ev.data_len = strlen(text);
    annal_err r = annal_append_system(db, stream, ANNAL_EXPECT_ANY, &ev, 1, NULL);
    /* The document held the hash: leave no copy of it behind in freed memory. */
    memset(text, 0, ev.data_len);
    free(text);
    if (r == ANNAL_OK && created) {
        memset(&ev, 0, sizeof ev);
        ev.type = USERS_TYPE;
        ev.data = u->name;
        ev.data_len = strlen(u->name);
        r = annal_append_system(db, USERS_STREAM, ANNAL_EXPECT_ANY, &ev, 1, NULL);
    }
    return r;
}

annal_err users_all(annal_db *db, sec_user **out, size_t *n) {
    *out = NULL;
    *n = 0;
    annal_iter *it;
    annal_err r = annal_read_stream(db, USERS_STREAM, 0, 0, UINT64_MAX, &it);
    if (r == ANNAL_ENOTFOUND) return ANNAL_OK;
    if (r != ANNAL_OK) return r;
    size_t cap = 0;
    sec_user *list = NULL;
    const annal_event *ev;
    while ((r = annal_iter_next(it, &ev)) == ANNAL_OK) {
        char name[SEC_NAME_MAX + 1];
        if (ev->data_len == 0 || ev->data_len > SEC_NAME_MAX) continue;
        memcpy(name, ev->data, ev->data_len);
        name[ev->data_len] = '\0';
        int seen = 0;
        for (size_t i = 0; i < *n && !seen; i++) seen = strcmp(list[i].name, name) == 0;
        if (seen) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            sec_user *nl = realloc(list, cap * sizeof *nl);
            if (!nl) {
                r = ANNAL_ENOMEM;
                break;
            }
            list = nl;
        }
        annal_err ur = users_read(db, name, &list[*n]);
        if (ur == ANNAL_OK)
            (*n)++;
        else if (ur != ANNAL_ENOTFOUND) {
            r = ur;
            break;
        }
    }
    annal_iter_close(it);
    if (r != ANNAL_END) {
        free(list);
        *n = 0;
        return r;
    }
    *out = list;
    return ANNAL_OK;
}

/* ---- annal_server.h: users without a server (the CLI on a store no server owns). */
static void to_public(const sec_user *u, annal_user *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", u->name);
    snprintf(p->full_name, sizeof p->full_name, "%s", u->full_name);
    snprintf(p->groups, sizeof p->groups, "%s", u->groups);
    p->disabled = u->disabled;
    p->has_password = u->hash[0] != '\0';
    p->updated_ns = u->updated_ns;
}

annal_err annal_user_get(annal_db *db, const char *name, annal_user *out) {
    sec_user u;
    annal_err r = users_read(db, name, &u);
    if (r == ANNAL_OK) to_public(&u, out);
    memset(&u, 0, sizeof u);
    return r;
}

annal_err annal_user_list(annal_db *db, annal_user **out, size_t *n) {
    sec_user *all;
    annal_err r = users_all(db, &all, n);
    *out = NULL;
    if (r != ANNAL_OK) return r;
    *out = calloc(*n ? *n : 1, sizeof **out);
    if (!*out) r = ANNAL_ENOMEM;
    for (size_t i = 0; *out && i < *n; i++) to_public(&all[i], &(*out)[i]);
    if (all) memset(all, 0, *n * sizeof *all);
    free(all);
    return r;
}

void annal_user_list_free(annal_user *list) { free(list); }

annal_err annal_user_put(annal_db *db, const char *name, const annal_user_change *ch) {
    if (!users_name_ok(name)) return ANNAL_EINVAL;
    sec_user u;
    annal_err r = users_read(db, name, &u);
    if (r != ANNAL_OK && r != ANNAL_ENOTFOUND) return r;
    int created = r == ANNAL_ENOTFOUND;
    if (created && !(ch->flags & ANNAL_USER_CREATE)) return ANNAL_ENOTFOUND;
    if (!created && (ch->flags & ANNAL_USER_MUST_CREATE)) return ANNAL_ECONFLICT;
    if (created) {
        memset(&u, 0, sizeof u);
        snprintf(u.name, sizeof u.name, "%s", name);
    }
    if (ch->full_name) snprintf(u.full_name, sizeof u.full_name, "%s", ch->full_name);
    if (ch->groups) snprintf(u.groups, sizeof u.groups, "%s", ch->groups);
    if (ch->disabled >= 0) u.disabled = ch->disabled;
    if (ch->password) {
        if (!*ch->password) return ANNAL_EINVAL;
        r = users_hash(ch->password, u.hash);
        if (r != ANNAL_OK) return r;
    }
    u.deleted = 0;
    r = users_write(db, &u, created);
    memset(&u, 0, sizeof u);
    return r;
}

annal_err annal_user_remove(annal_db *db, const char *name) {
    sec_user u;
    annal_err r = users_read(db, name, &u);
    if (r != ANNAL_OK) return r;
    u.deleted = 1;
    u.hash[0] = '\0';
    r = users_write(db, &u, 0);
    memset(&u, 0, sizeof u);
    return r;
}
