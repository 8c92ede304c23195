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
    /* Operations.Shutdown: called (from a server thread, after the reply) to have the
     * embedder stop the server. NULL: the process gets SIGTERM, which `annal serve`
     * handles as a graceful stop. */
    void (*on_shutdown)(void *ctx);
    void *shutdown_ctx;
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

#ifdef __cplusplus
}
#endif
#endif /* ANNAL_SERVER_H */
