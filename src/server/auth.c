/*
 * auth.c -- who a call acts for. Basic credentials from the `authorization` header, or
 * the CN of a verified client certificate (mutual TLS), or the local socket (trusted by
 * its file permissions, as the admin); with `insecure` every call is an admin. Verified
 * passwords are cached as a keyed MAC (an argon2id hash per call would cap throughput);
 * a user's entry goes the moment the user changes. Failed logins lock the user and the
 * address out for a time that doubles with each failure, and are logged (never the
 * password).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "server_int.h"

#define FAIL_BASE_MS  250   /* the first failure's lock-out */
#define FAIL_USER_MS  8000  /* a user is never locked out longer (others could lock it) */
#define FAIL_ADDR_MS  60000 /* an address, longer */
#define FAIL_FORGET_S (15 * 60)

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t fnv(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

int sec_insecure(const annal_server *srv) { return srv->sec->insecure; }

void sec_audit(annal_server *srv, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    srv_log(srv, ANNAL_LOG_WARN, "audit: %s", buf);
}

/* ---- the users table (a copy of the store's, changed only through this server) */
static sec_user *find_user(sec_state *s, const char *name) {
    for (size_t i = 0; i < s->nusers; i++)
        if (strcmp(s->users[i].name, name) == 0) return &s->users[i];
    return NULL;
}

void sec_user_changed(annal_server *srv, const char *name, const sec_user *u) {
    sec_state *s = srv->sec;
    pthread_rwlock_wrlock(&s->lock);
    sec_user *have = find_user(s, name);
    if (!u && have) {
        *have = s->users[--s->nusers];
    } else if (u && have) {
        *have = *u;
    } else if (u && s->nusers < s->cap) {
        s->users[s->nusers++] = *u;
    } else if (u) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        sec_user *nu = realloc(s->users, cap * sizeof *nu);
        if (nu) {
            s->users = nu;
            s->cap = cap;
            s->users[s->nusers++] = *u;
        }
    }
    sec_cred *c = &s->creds[fnv(name) % CRED_SLOTS];
    if (strcmp(c->name, name) == 0) memset(c, 0, sizeof *c);
    pthread_rwlock_unlock(&s->lock);
}

/* ---- start and stop */
/* Create the built-in user name if missing, or give it its first password. Without a
 * password it is created disabled (there is no well-known password), unless create_bare
 * is 0: then nothing is written. A password that was set is never replaced here. */
static annal_err builtin(annal_server *srv, const char *name, const char *groups, const char *full,
                         const char *password, int create_bare) {
    sec_user u;
    annal_err r = users_read(srv->db, name, &u);
    int created = r == ANNAL_ENOTFOUND;
    if (r != ANNAL_OK && !created) return r;
    int has_password = password && *password;
    if (!created && u.hash[0] && has_password)
        srv_log(srv, ANNAL_LOG_INFO,
                "config: the default %s password is not used: %s has a password already "
                "(change it with `annal user passwd %s`)",
                name, name, name);
    if (!created && (u.hash[0] || !has_password)) return ANNAL_OK;
    if (created && !has_password && !create_bare) return ANNAL_OK;
    if (created) {
        memset(&u, 0, sizeof u);
        snprintf(u.name, sizeof u.name, "%s", name);
        snprintf(u.groups, sizeof u.groups, "%s", groups);
        snprintf(u.full_name, sizeof u.full_name, "%s", full);
    }
    u.disabled = !has_password; /* nobody logs in until a password is set */
    if (has_password && (r = users_hash(password, u.hash)) != ANNAL_OK) return r;
    r = users_write(srv->db, &u, created);
    if (r == ANNAL_OK)
        sec_audit(srv, "user '%s' %s (built-in, %s)", name, created ? "created" : "enabled",
                  u.disabled ? "disabled until a password is set" : "password from the settings");
    memset(&u, 0, sizeof u);
    return r;
}

annal_err sec_start(annal_server *srv, const annal_server_opts *o) {
    sec_state *s = calloc(1, sizeof *s);
    if (!s) return ANNAL_ENOMEM;
    srv->sec = s;
    s->insecure = o->insecure;
    pthread_rwlock_init(&s->lock, NULL);
    pthread_mutex_init(&s->fail_mu, NULL);
    pthread_mutex_init(&s->settings_mu, NULL);
    pthread_mutex_init(&s->verify_mu, NULL);
    pthread_cond_init(&s->verify_cv, NULL);
    if (getrandom(s->key, sizeof s->key, 0) != (ssize_t)sizeof s->key) return ANNAL_EIO;
    if (s->insecure) return ANNAL_OK; /* nothing is checked, nothing is written */
    if (users_hash("annal decoy", s->decoy) != ANNAL_OK) return ANNAL_ENOMEM;
    annal_err r = builtin(srv, "admin", "$admins", "Administrator", o->default_admin_password, 0);
    if (r == ANNAL_OK) r = builtin(srv, "ops", "$ops", "Operations", o->default_ops_password, 1);
    if (r != ANNAL_OK) {
        srv_log(srv, ANNAL_LOG_ERROR, "cannot set up the built-in users: %s: %s", annal_strerror(r),
                annal_db_errmsg(srv->db));
        return r;
    }
    r = users_all(srv->db, &s->users, &s->nusers);
    s->cap = s->nusers;
    if (r != ANNAL_OK) {
        srv_log(srv, ANNAL_LOG_ERROR, "cannot read the users: %s", annal_strerror(r));
        return r;
    }
    const sec_user *admin = find_user(s, "admin");
    if (!admin || !admin->hash[0] || admin->disabled) {
        int others = 0;
        for (size_t i = 0; i < s->nusers; i++)
            others |= !s->users[i].disabled && s->users[i].hash[0] &&
                      users_has_group(s->users[i].groups, "$admins");
        if (!others) {
            srv_log(srv, ANNAL_LOG_ERROR,
                    "no administrator can log in: give `admin` a password for this first secure "
                    "start (ANNAL_DEFAULT_ADMIN_PASSWORD or KURRENTDB_DEFAULT_ADMIN_PASSWORD, "
                    "--default-admin-password, or `annal user passwd admin` before starting)");
            return ANNAL_EINVAL;
        }
    }
    srv_log(srv, ANNAL_LOG_INFO, "security: %zu users; authentication and ACLs on", s->nusers);
    return ANNAL_OK;
}

void sec_stop(annal_server *srv) {
    sec_state *s = srv->sec;
    if (!s) return;
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->fail_mu);
    pthread_mutex_destroy(&s->settings_mu);
    pthread_mutex_destroy(&s->verify_mu);
    pthread_cond_destroy(&s->verify_cv);
    json_decref(s->settings);
    if (s->users) memset(s->users, 0, s->cap * sizeof *s->users);
    free(s->users);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    srv->sec = NULL;
}

/* ---- failed logins */
static sec_fail *fail_slot(sec_state *s, const char *key) {
    sec_fail *f = &s->fails[fnv(key) % FAIL_SLOTS];
    if (strcmp(f->key, key) != 0) {
        memset(f, 0, sizeof *f);
        snprintf(f->key, sizeof f->key, "%s", key);
    }
    return f;
}

/* ms left of a lock-out on user or address (0: none). */
static int64_t locked_out(sec_state *s, const char *user, const char *addr) {
    char k1[sizeof((sec_fail *)0)->key], k2[sizeof k1];
    snprintf(k1, sizeof k1, "u:%s", user);
    snprintf(k2, sizeof k2, "a:%s", addr);
    int64_t now = now_ms(), left = 0;
    pthread_mutex_lock(&s->fail_mu);
    const sec_fail *f1 = &s->fails[fnv(k1) % FAIL_SLOTS], *f2 = &s->fails[fnv(k2) % FAIL_SLOTS];
    if (strcmp(f1->key, k1) == 0 && f1->until_ms > now) left = f1->until_ms - now;
    if (strcmp(f2->key, k2) == 0 && f2->until_ms - now > left) left = f2->until_ms - now;
    pthread_mutex_unlock(&s->fail_mu);
    return left;
}

static void login_failed(annal_server *srv, const char *user, const char *addr, const char *why) {
    sec_state *s = srv->sec;
    char key[sizeof((sec_fail *)0)->key];
    int64_t now = now_ms(), wait[2];
    pthread_mutex_lock(&s->fail_mu);
    for (int i = 0; i < 2; i++) {
        snprintf(key, sizeof key, i ? "a:%s" : "u:%s", i ? addr : user);
        sec_fail *f = fail_slot(s, key);
        if (f->last_ms && now - f->last_ms > FAIL_FORGET_S * 1000) f->count = 0;
        f->count++;
        f->last_ms = now;
        int64_t ms = FAIL_BASE_MS, cap = i ? FAIL_ADDR_MS : FAIL_USER_MS;
        for (unsigned k = 1; k < f->count && ms < cap; k++) ms *= 2;
        if (ms > cap) ms = cap;
        f->until_ms = now + ms;
        wait[i] = ms;
    }
    pthread_mutex_unlock(&s->fail_mu);
    sec_audit(srv,
              "failed login as '%s' from %s: %s; next attempt in %lld ms (user), %lld ms "
              "(address)",
              user, addr, why, (long long)wait[0], (long long)wait[1]);
}

static void login_ok(sec_state *s, const char *user, const char *addr) {
    char key[sizeof((sec_fail *)0)->key];
    pthread_mutex_lock(&s->fail_mu);
    for (int i = 0; i < 2; i++) {
        snprintf(key, sizeof key, i ? "a:%s" : "u:%s", i ? addr : user);
        sec_fail *f = &s->fails[fnv(key) % FAIL_SLOTS];
        if (strcmp(f->key, key) == 0) memset(f, 0, sizeof *f);
    }
    pthread_mutex_unlock(&s->fail_mu);
}

/* ---- credentials */
static int b64_value(int ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

/* Decode base64 text of len bytes into out (NUL-terminated). -1 if malformed. */
static int b64_decode(const char *in, size_t len, char *out, size_t size) {
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=') break;
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n + 1 >= size) return -1;
            out[n++] = (char)(acc >> bits & 0xff);
        }
    }
    out[n] = '\0';
    return memchr(out, '\0', n) ? -1 : 0;
}

static void mac_of(const sec_state *s, const char *password, uint8_t out[32]) {
    unsigned len = 32;
    HMAC(EVP_sha256(), s->key, sizeof s->key, (const uint8_t *)password, strlen(password), out,
         &len);
}

static void set_who(sec_who *w, const sec_user *u) {
    w->authenticated = 1;
    snprintf(w->name, sizeof w->name, "%s", u->name);
    snprintf(w->groups, sizeof w->groups, "%s", u->groups);
    w->admin = users_has_group(u->groups, "$admins");
    w->ops = users_has_group(u->groups, "$ops");
}

static void refuse(srv_call *c, const char *msg) {
    srv_kv kv[] = {{"exception", "not-authenticated"}};
    call_finish(c, GRPC_STATUS_UNAUTHENTICATED, msg, kv, 1);
}

/* Is name:mac in the credential cache? */
static int cred_cached(sec_state *s, const char *name, const uint8_t mac[32]) {
    pthread_rwlock_rdlock(&s->lock);
    const sec_cred *cr = &s->creds[fnv(name) % CRED_SLOTS];
    int cached = strcmp(cr->name, name) == 0 && CRYPTO_memcmp(cr->mac, mac, 32) == 0;
    pthread_rwlock_unlock(&s->lock);
    return cached;
}

static sec_verifying *verifying_find(sec_state *s, const char *name, const uint8_t mac[32]) {
    for (int i = 0; i < VERIFY_SLOTS; i++) {
        sec_verifying *v = &s->verifying[i];
        if (v->name[0] && strcmp(v->name, name) == 0 && CRYPTO_memcmp(v->mac, mac, 32) == 0)
            return v;
    }
    return NULL;
}

/* Before verifying name:mac: wait for the same verification under way elsewhere, then 1
 * if it left the credentials cached; else 0, with *slot the verification now claimed
 * (NULL if every slot is busy: verify anyway), for verify_end. */
static int verify_begin(sec_state *s, const char *name, const uint8_t mac[32],
                        sec_verifying **slot) {
    *slot = NULL;
    pthread_mutex_lock(&s->verify_mu);
    while (verifying_find(s, name, mac)) pthread_cond_wait(&s->verify_cv, &s->verify_mu);
    int cached = cred_cached(s, name, mac);
    for (int i = 0; !cached && i < VERIFY_SLOTS; i++) {
        sec_verifying *v = &s->verifying[i];
        if (v->name[0]) continue;
        snprintf(v->name, sizeof v->name, "%s", name);
        memcpy(v->mac, mac, 32);
        *slot = v;
        break;
    }
    pthread_mutex_unlock(&s->verify_mu);
    return cached;
}

static void verify_end(sec_state *s, sec_verifying *slot) {
    if (!slot) return;
    pthread_mutex_lock(&s->verify_mu);
    OPENSSL_cleanse(slot, sizeof *slot);
    pthread_cond_broadcast(&s->verify_cv);
    pthread_mutex_unlock(&s->verify_mu);
}

/* Check name:password. 0 and c->who set, or -1 with the call refused. */
static int login(srv_call *c, const char *name, const char *password) {
    annal_server *srv = c->srv;
    sec_state *s = srv->sec;
    sec_who *w = &c->who;
    int64_t left = locked_out(s, name, w->peer);
    if (left > 0) {
        sec_audit(srv, "login as '%s' from %s refused: locked out for %lld ms after failures", name,
                  w->peer, (long long)left);
        refuse(c, "too many failed logins: try again later");
        return -1;
    }
    uint8_t mac[32];
    mac_of(s, password, mac);
    sec_user u;
    int found = 0, cached = 0;
    pthread_rwlock_rdlock(&s->lock);
    const sec_user *p = find_user(s, name);
    if (p) {
        found = 1;
        u = *p;
        const sec_cred *cr = &s->creds[fnv(name) % CRED_SLOTS];
        cached = strcmp(cr->name, name) == 0 && CRYPTO_memcmp(cr->mac, mac, sizeof mac) == 0;
    }
    pthread_rwlock_unlock(&s->lock);
    const char *why = !found ? "no such user" : u.disabled ? "user disabled" : NULL;
    sec_verifying *slot = NULL;
    if (!why && !cached) cached = verify_begin(s, name, mac, &slot);
    if (!why && !cached && !users_verify(u.hash, password)) why = "wrong password";
    /* An unknown user costs a verification too, so answer times do not tell names. */
    if (!found) (void)users_verify(s->decoy, password);
    if (why) {
        verify_end(s, slot);
        OPENSSL_cleanse(&u, sizeof u);
        login_failed(srv, name, w->peer, why);
        refuse(c, "Bad credentials");
        return -1;
    }
    if (!cached) {
        pthread_rwlock_wrlock(&s->lock);
        /* Only if the user is still as verified (not changed meanwhile). */
        const sec_user *now = find_user(s, name);
        if (now && strcmp(now->hash, u.hash) == 0 && !now->disabled) {
            sec_cred *cr = &s->creds[fnv(name) % CRED_SLOTS];
            snprintf(cr->name, sizeof cr->name, "%s", name);
            memcpy(cr->mac, mac, sizeof mac);
        }
        pthread_rwlock_unlock(&s->lock);
        srv_log(srv, ANNAL_SERVER_LOG_DEBUG, "password of '%s' verified (argon2id), now cached",
                name);
    }
    verify_end(s, slot); /* after the cache is filled: the waiters find it there */
    OPENSSL_cleanse(mac, sizeof mac);
    login_ok(s, name, w->peer);
    set_who(w, &u);
    OPENSSL_cleanse(&u, sizeof u);
    return 0;
}

/* The CN of a verified client certificate into cn, or -1 if none. */
static int cert_user(srv_call *c, char *cn, size_t size) {
    grpc_auth_context *ctx = grpc_call_auth_context(c->call);
    if (!ctx) return -1;
    int r = -1;
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p && p->value_length > 0 && p->value_length < size) {
            memcpy(cn, p->value, p->value_length);
            cn[p->value_length] = '\0';
            r = 0;
        }
    }
    grpc_auth_context_release(ctx);
    return r;
}

static int cert_login(srv_call *c, const char *cn) {
    sec_state *s = c->srv->sec;
    sec_user u;
    int ok = 0;
    pthread_rwlock_rdlock(&s->lock);
    const sec_user *p = find_user(s, cn);
    if (p && !p->disabled) {
        u = *p;
        ok = 1;
    }
    pthread_rwlock_unlock(&s->lock);
    if (!ok) {
        sec_audit(c->srv, "client certificate CN '%s' from %s refused: %s", cn, c->who.peer,
                  p ? "user disabled" : "no such user");
        refuse(c, "the client certificate's user is unknown or disabled");
        return -1;
    }
    set_who(&c->who, &u);
    OPENSSL_cleanse(&u, sizeof u);
    return 0;
}

static int method_is(const char *path, const char *service) {
    return strncmp(path, service, strlen(service)) == 0;
}

static int identify(srv_call *c, const char *path) {
    sec_who *w = &c->who;
    memset(w, 0, sizeof *w);
    char *peer = grpc_call_get_peer(c->call);
    snprintf(w->peer, sizeof w->peer, "%s", peer ? peer : "?");
    /* An address without its port: failures count per client host. */
    char *colon = strncmp(w->peer, "ipv", 3) == 0 ? strrchr(w->peer, ':') : NULL;
    if (colon) *colon = '\0';
    gpr_free(peer);
    if (c->srv->sec->insecure || strncmp(w->peer, "unix:", 5) == 0) {
        w->authenticated = w->admin = 1;
        snprintf(w->name, sizeof w->name, "admin");
        snprintf(w->groups, sizeof w->groups, "$admins");
        return 0;
    }
    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *m = &c->request_md.metadata[i];
        if (!grpc_slice_str_cmp(m->key, "authorization")) {
            const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
            size_t len = GRPC_SLICE_LENGTH(m->value);
            char plain[SEC_NAME_MAX + 1024];
            if (len < 6 || strncasecmp(v, "Basic ", 6) != 0 ||
                b64_decode(v + 6, len - 6, plain, sizeof plain) != 0 || !strchr(plain, ':')) {
                sec_audit(c->srv, "malformed authorization header from %s", w->peer);
                refuse(c, "only Basic authorization (user:password) is supported");
                return -1;
            }
            char *pass = strchr(plain, ':');
            *pass++ = '\0';
            int r = login(c, plain, pass);
            OPENSSL_cleanse(plain, sizeof plain);
            return r;
        }
    }
    char cn[SEC_NAME_MAX + 1];
    if (cert_user(c, cn, sizeof cn) == 0) return cert_login(c, cn);
    /* Anonymous: only what a client asks before it knows anything, and BatchAppend, whose
     * batches are checked one by one and denied in-band (batch.c): the clients open it
     * without credentials and decode only in-band errors on it. */
    if (method_is(path, "/event_store.client.server_features.") ||
        method_is(path, "/event_store.client.gossip.") ||
        strcmp(path, "/event_store.client.streams.Streams/BatchAppend") == 0)
        return 0;
    sec_audit(c->srv, "anonymous call to %s from %s refused", path, w->peer);
    refuse(c, "authentication required: send credentials (user:password) or a client certificate");
    return -1;
}

int sec_authenticate(srv_call *c, const char *path) {
    if (identify(c, path) != 0) return -1;
    /* Method-wide rules; streams and users are checked by their handlers. Scavenge and
     * shutdown are for operators. */
    if (method_is(path, "/event_store.client.operations.")) return sec_require_role(c, 1, path);
    /* Enabling a projection changes the node: operators too (reading its figures does not). */
    if (strcmp(path, "/event_store.client.projections.Projections/Enable") == 0)
        return sec_require_role(c, 1, path);
    return 0;
}

void sec_call_end(srv_call *c) {
    acl_cache_free(c->who.cache);
    c->who.cache = NULL;
}

void sec_deny_audit(srv_call *c, const char *what, const char *stream) {
    const sec_who *w = &c->who;
    sec_audit(c->srv, "denied %s%s%s%s to %s%s%s from %s", what, stream ? " of '" : "",
              stream ? stream : "", stream ? "'" : "", w->authenticated ? "user '" : "anonymous",
              w->authenticated ? w->name : "", w->authenticated ? "'" : "", w->peer);
}

void sec_deny(srv_call *c, const char *what, const char *stream) {
    const sec_who *w = &c->who;
    sec_deny_audit(c, what, stream);
    if (!w->authenticated) {
        refuse(c, "authentication required");
        return;
    }
    srv_kv kv[] = {{"exception", "access-denied"}};
    call_finish(c, GRPC_STATUS_PERMISSION_DENIED, "Access denied.", kv, 1);
}

int sec_require_role(srv_call *c, int ops_ok, const char *what) {
    if (c->who.admin || (ops_ok && c->who.ops)) return 0;
    sec_deny(c, what, NULL);
    return -1;
}
