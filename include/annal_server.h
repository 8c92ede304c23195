/*
 * annal_server.h -- serve an annal store over KurrentDB's (EventStoreDB's) gRPC protocol,
 * so the official KurrentDB clients work against it unchanged (docs/server.md).
 * Built only on annal.h: an application can serve the store it has open itself.
 */
#ifndef ANNAL_SERVER_H
#define ANNAL_SERVER_H

#include "annal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct annal_server annal_server; /* opaque; one per listening server */

/* A log level below INFO: one line per call. */
#define ANNAL_SERVER_LOG_DEBUG ((annal_log_level)(ANNAL_LOG_INFO + 1))

typedef struct annal_server_opts {
    const char *listen;        /* "HOST:PORT" (borrowed during start); default "127.0.0.1:2113".
                                * Port 0 picks a free port (see annal_server_port). */
    int insecure;              /* 1: plain HTTP/2 without TLS. Either this or cert+key. */
    const char *cert_file;     /* PEM certificate chain (borrowed during start) */
    const char *key_file;      /* PEM private key */
    const char *ca_file;       /* PEM CA bundle for client certificates; may be NULL */
    uint64_t max_append_bytes; /* data + metadata of one Append; default 16 MiB */
    annal_log_level log_level; /* most detailed level passed to log; default INFO;
                                * ANNAL_SERVER_LOG_DEBUG adds a line per call */
    /* Logger: msg is valid only during the call. May be NULL (silence). Called from
     * the server's threads. */
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;
    /* Also listen on this Unix socket path (borrowed during start), plain HTTP/2 whatever
     * the TCP side uses: it is trusted by its file permissions, which the caller sets (the
     * CLI writes through it as the admin). NULL: none. */
    const char *local_socket;
    /* ---- Security (docs/security.md); ignored when insecure. */
    /* Passwords (borrowed during start) given to the built-in users `admin` ($admins) and
     * `ops` ($ops) when the store has no such user yet. A secure start needs an admin with
     * a password: from here, or set before with annal_user_put. */
    const char *default_admin_password;
    const char *default_ops_password;
    /* Operations.Shutdown: called (from a server thread, after the reply) to have the
     * embedder stop the server. NULL: the process gets SIGTERM, which `annal serve`
     * handles as a graceful stop. */
    void (*on_shutdown)(void *ctx);
    void *shutdown_ctx;
    /* ---- Projections (docs/projections.md): the store directory DIR (copied at start)
     * whose registered projections -- DIR/projections/NAME.proj, `annal projection add` --
     * the server runs, each on a thread of its own with libannal_project's engine as
     * `annal projection run` does, opened exclusively (one projector per projection). The
     * registry is read again every second: projections added, replaced or removed
     * meanwhile start and stop. Stopped between batches by annal_server_stop. NULL: none. */
    const char *projections_data_dir;
    uint32_t projections_lua_budget_ms; /* per run of a file's Lua code; 0: the default */
} annal_server_opts;

/* Fill *opts with defaults. Always call before setting fields. */
void annal_server_opts_init(annal_server_opts *opts);

/* Start serving db (borrowed: it must stay open until annal_server_stop returns) with
 * opts (NULL: defaults, which are refused: insecure or TLS must be chosen). On success
 * *out is a running server, stopped and freed with annal_server_stop().
 * Errors: ANNAL_EINVAL (neither insecure nor cert and key, bad listen address, the
 * address cannot be bound: the detail goes to opts->log), ANNAL_EIO (a PEM file cannot be
 * read), ANNAL_ENOMEM. */
annal_err annal_server_start(annal_db *db, const annal_server_opts *opts, annal_server **out);

/* The TCP port the server listens on (the one picked, when asked for port 0). */
int annal_server_port(const annal_server *srv);

/* Stop gracefully: stop accepting calls, let appends in flight finish, end subscriptions
 * with UNAVAILABLE (clients retry on it), wait up to grace_ms for the rest before
 * cancelling them, then free srv. The store stays open. NULL is a no-op. */
void annal_server_stop(annal_server *srv, int grace_ms);

/* Reload the TLS certificate, key and CA from the files given at start (SIGHUP in
 * `annal serve`): new connections get them, connections open stay up. They are checked
 * first (readable PEM, key matching the certificate, within its validity): on a problem
 * the old ones stay, the reason goes to the log and ANNAL_EINVAL (ANNAL_EIO: unreadable)
 * is returned. ANNAL_EINVAL for an insecure server. */
annal_err annal_server_reload_tls(annal_server *srv);

/* ---- Users (docs/security.md), kept in the store's system streams `$user-<name>` and
 * `$users` as KurrentDB keeps them. These work on a store no server owns (a running
 * server changes users through its Users service, which also updates its caches). */
typedef struct annal_user {
    char name[65];
    char full_name[129];
    char groups[512]; /* comma-separated roles: `$admins`, `$ops`, any other */
    int disabled;
    int has_password;   /* a user without one cannot log in with a password */
    int64_t updated_ns; /* when last changed */
} annal_user;

#define ANNAL_USER_CREATE      0x1u /* create the user if missing (else ANNAL_ENOTFOUND) */
#define ANNAL_USER_MUST_CREATE 0x2u /* ANNAL_ECONFLICT if the user exists */
typedef struct annal_user_change {
    unsigned flags;
    const char *full_name; /* NULL: keep */
    const char *groups;    /* NULL: keep; comma-separated */
    const char *password;  /* NULL: keep; hashed with argon2id, never stored in clear */
    int disabled;          /* -1: keep */
} annal_user_change;

/* Create or change the user name (1..64 bytes, no ':' ',' '/' or spaces, not starting
 * with '$'). Errors: ANNAL_EINVAL, ANNAL_ENOTFOUND, ANNAL_ECONFLICT, the store's. */
annal_err annal_user_put(annal_db *db, const char *name, const annal_user_change *change);
annal_err annal_user_get(annal_db *db, const char *name, annal_user *out); /* ANNAL_ENOTFOUND */
annal_err annal_user_remove(annal_db *db, const char *name);               /* ANNAL_ENOTFOUND */
/* Every user, in order of creation: *out (free with annal_user_list_free) holds *n. */
annal_err annal_user_list(annal_db *db, annal_user **out, size_t *n);
void annal_user_list_free(annal_user *list);

#ifdef __cplusplus
}
#endif
#endif /* ANNAL_SERVER_H */
