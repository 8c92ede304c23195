/*
 * sec.h -- the interface of the server's security (docs/security.md): who a call acts
 * for (auth.c: Basic credentials, a client certificate's CN, the trusted local socket),
 * users kept in the store (users.c), stream ACLs and the `$settings` defaults (acl.c),
 * the Users service (users_rpc.c) and TLS certificates that reload on request (tls.c).
 * With `insecure` every call acts as an administrator and nothing here refuses anything.
 */
#ifndef ANNAL_SERVER_SEC_H
#define ANNAL_SERVER_SEC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "annal.h"
#include "annal_server.h"

#define SEC_NAME_MAX   64  /* bytes in a login name */
#define SEC_FULL_MAX   128 /* bytes in a full name */
#define SEC_GROUPS_MAX 512 /* bytes of the comma-separated groups */
#define SEC_HASH_MAX   160 /* an argon2id encoded hash */

typedef struct srv_call srv_call;
typedef struct sec_state sec_state;
typedef struct sec_acl_cache sec_acl_cache;

/* Who a call acts for; filled by sec_authenticate before its handler runs. */
typedef struct sec_who {
    int authenticated;           /* 0: anonymous */
    int admin;                   /* $admins (or insecure, or the local socket) */
    int ops;                     /* $ops */
    char name[SEC_NAME_MAX + 1]; /* "" when anonymous */
    char groups[SEC_GROUPS_MAX]; /* comma-separated roles */
    char peer[96];               /* the client's address, for the audit log */
    sec_acl_cache *cache;        /* per-call ACL answers (acl.c) */
} sec_who;

/* What an ACL grants, as KurrentDB's `$acl` keys. */
typedef enum sec_op { SEC_READ, SEC_WRITE, SEC_DELETE, SEC_META_READ, SEC_META_WRITE } sec_op;

/* A user as kept in `$user-<name>` (the latest event is the user). */
typedef struct sec_user {
    char name[SEC_NAME_MAX + 1];
    char full_name[SEC_FULL_MAX + 1];
    char groups[SEC_GROUPS_MAX]; /* comma-separated */
    char hash[SEC_HASH_MAX];     /* argon2id encoded; "" = no password, cannot log in */
    int disabled;
    int deleted;
    int64_t updated_ns;
} sec_user;

/* What the server keeps for security (auth.c, acl.c). */
#define CRED_SLOTS 1024
#define FAIL_SLOTS 4096

typedef struct sec_cred {
    char name[SEC_NAME_MAX + 1];
    uint8_t mac[32]; /* HMAC-SHA256(process key, password) */
} sec_cred;

/* A password verification under way (auth.c): logins with the same name and MAC wait for
 * it instead of running argon2id again, so a burst of new connections costs one. */
#define VERIFY_SLOTS 16
typedef struct sec_verifying {
    char name[SEC_NAME_MAX + 1]; /* "" = free */
    uint8_t mac[32];
} sec_verifying;

typedef struct sec_fail {
    char key[SEC_NAME_MAX + 100]; /* "u:<name>" or "a:<address>" */
    unsigned count;
    int64_t until_ms, last_ms;
} sec_fail;

struct sec_state {
    int insecure;
    pthread_rwlock_t lock; /* users, creds */
    sec_user *users;
    size_t nusers, cap;
    sec_cred creds[CRED_SLOTS];
    uint8_t key[32];
    pthread_mutex_t fail_mu;
    sec_fail fails[FAIL_SLOTS];
    char decoy[SEC_HASH_MAX];  /* verified for unknown users: no timing tells who exists */
    pthread_mutex_t verify_mu; /* verifying */
    pthread_cond_t verify_cv;  /* a verification ended */
    sec_verifying verifying[VERIFY_SLOTS];
    /* acl.c: bumped by every change of ACLs through this server */
    _Atomic uint64_t acl_gen;
    pthread_mutex_t settings_mu;
    void *settings; /* json_t of `$settings`, NULL: none */
    uint64_t settings_gen;
    int settings_loaded;
};

/* ---- users.c: the store's users (no server needed) */
annal_err users_read(annal_db *db, const char *name, sec_user *out); /* ANNAL_ENOTFOUND */
/* Write u as the user's newest state; created: also list it in `$users`. */
annal_err users_write(annal_db *db, const sec_user *u, int created);
/* Every user listed in `$users` (deleted ones skipped): *out malloc'd. */
annal_err users_all(annal_db *db, sec_user **out, size_t *n);
/* argon2id with a random salt into u->hash. */
annal_err users_hash(const char *password, char *hash);
int users_verify(const char *hash, const char *password); /* 1 if it matches */
int users_name_ok(const char *name);
int users_has_group(const char *groups, const char *group);

/* ---- auth.c */
annal_err sec_start(annal_server *srv, const annal_server_opts *o);
void sec_stop(annal_server *srv);
/* Who c acts for (into c->who). 0, or -1 with the call finished (bad credentials). */
int sec_authenticate(srv_call *c, const char *path);
void sec_call_end(srv_call *c);
/* Drop name's verified credentials and take its new state (NULL: deleted). */
void sec_user_changed(annal_server *srv, const char *name, const sec_user *u);
/* Refuse the call as KurrentDB does: anonymous -> UNAUTHENTICATED, else
 * PERMISSION_DENIED `access-denied`; with an audit line. */
void sec_deny(srv_call *c, const char *what, const char *stream);
/* Only the audit line of a refusal (for refusals answered in-band, as BatchAppend's). */
void sec_deny_audit(srv_call *c, const char *what, const char *stream);
void sec_audit(annal_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A call that must be an admin (or ops, when ops_ok): 0, or -1 refused. */
int sec_require_role(srv_call *c, int ops_ok, const char *what);
int sec_insecure(const annal_server *srv);

/* ---- acl.c */
/* Is c allowed op on stream? 0, or -1 with the call refused (audited). */
int sec_check(srv_call *c, const char *stream, sec_op op);
/* The same without refusing the call: 1 allowed, 0 denied (audited). */
int sec_allowed(srv_call *c, const char *stream, sec_op op);
/* May c read ev (its stream's $r, or $mr of a `$$` stream)? 1 yes, 0 no; cached per call. */
int sec_readable(srv_call *c, const annal_event *ev);
/* A successful write to stream through the server: `$settings` and `$$<stream>` change
 * ACLs (audited; cached answers dropped). */
void sec_written(srv_call *c, const char *stream);
/* annal_append, or annal_append_system for a `$` stream (only reached after sec_check). */
annal_err sec_append(srv_call *c, const char *stream, int64_t expected, annal_event_data *ev,
                     size_t n, annal_append_result *res);
void acl_cache_free(sec_acl_cache *cache);
uint64_t acl_generation(annal_server *srv);

/* ---- users_rpc.c: event_store.client.users.Users */
void rpc_users_create(srv_call *c);
void rpc_users_update(srv_call *c);
void rpc_users_delete(srv_call *c);
void rpc_users_disable(srv_call *c);
void rpc_users_enable(srv_call *c);
void rpc_users_details(srv_call *c);
void rpc_users_change_password(srv_call *c);
void rpc_users_reset_password(srv_call *c);

/* ---- tls.c: server credentials whose certificates reload (annal_server_reload_tls) */
typedef struct sec_tls sec_tls;
annal_err tls_open(annal_server *srv, const annal_server_opts *o, sec_tls **out);
void *tls_credentials(sec_tls *t); /* grpc_server_credentials *, owned by the caller */
void tls_close(sec_tls *t);

#endif
