/*
 * serve.c -- `annal serve`: the store as a server that KurrentDB's gRPC clients use
 * unchanged. A thin wrapper over annal_server.h: options, logging to stderr, and a
 * graceful stop on SIGTERM or SIGINT.
 */
#include <signal.h>
#include <string.h>
#include <time.h>

#include "annal_server.h"
#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] serve (--insecure | --cert FILE --key FILE) [options]\n"
    "\n"
    "Serve the store over KurrentDB's gRPC protocol (docs/server.md): the official\n"
    "KurrentDB/EventStoreDB clients connect with kurrentdb://HOST:PORT (add ?tls=false\n"
    "with --insecure). Creates the store if missing. Stops gracefully on SIGTERM/SIGINT.\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT   where to listen (default 127.0.0.1:2113, KurrentDB's port;\n"
    "                       port 0 picks a free one, printed at start)\n"
    "  --insecure           plain HTTP/2 without TLS (and, later, without authentication)\n"
    "  --cert FILE          PEM certificate chain for TLS\n"
    "  --key FILE           PEM private key for TLS\n"
    "  --ca FILE            PEM CA bundle to verify client certificates with\n"
    "  --log-level L        error, warn, info (default) or debug (a line per call)\n"
    "  --grace-ms N         how long to wait for calls at stop (default 10000)\n"
    "\n"
    "Exit codes: 0 stopped cleanly, 1 usage, 5 store or server error.\n";

enum { OPT_LISTEN, OPT_INSECURE, OPT_CERT, OPT_KEY, OPT_CA, OPT_LOG_LEVEL, OPT_GRACE };
static const cli_option options[] = {
    {"listen", 1, OPT_LISTEN},  {"insecure", 0, OPT_INSECURE},
    {"cert", 1, OPT_CERT},      {"key", 1, OPT_KEY},
    {"ca", 1, OPT_CA},          {"log-level", 1, OPT_LOG_LEVEL},
    {"grace-ms", 1, OPT_GRACE}, {NULL, 0, 0},
};

static void log_line(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char when[CLI_TIME_LEN];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    cli_time_rfc3339((int64_t)now.tv_sec * 1000000000 + now.tv_nsec, when);
    fprintf(stderr, "%s annal serve %s: %s\n", when, names[level <= 3 ? level : 3], msg);
}

static int parse_level(const char *v, annal_log_level *out) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = (annal_log_level)i;
            return 0;
        }
    return -1;
}

static int parse_args(cli_global *g, int argc, char **argv, annal_server_opts *so, int *grace,
                      int *help) {
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        uint64_t n;
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP: *help = 1; return 0;
        case CLI_ARG_OPERAND: return cli_usage_error("serve", "unexpected argument '%s'", v);
        case OPT_LISTEN: so->listen = v; break;
        case OPT_INSECURE: so->insecure = 1; break;
        case OPT_CERT: so->cert_file = v; break;
        case OPT_KEY: so->key_file = v; break;
        case OPT_CA: so->ca_file = v; break;
        case OPT_LOG_LEVEL:
            if (parse_level(v, &so->log_level) != 0)
                return cli_usage_error("serve", "bad --log-level '%s': error, warn, info or debug",
                                       v);
            break;
        case OPT_GRACE:
            if (cli_parse_u64(v, &n) != 0 || n > 3600000)
                return cli_usage_error("serve", "bad --grace-ms '%s'", v);
            *grace = (int)n;
            break;
        }
    }
    if (!so->insecure && (!so->cert_file || !so->key_file))
        return cli_usage_error("serve",
                               "refusing to serve without TLS or --insecure: pass --cert FILE "
                               "--key FILE for TLS, or --insecure for plain HTTP/2 (no TLS)");
    if (so->insecure && (so->cert_file || so->key_file))
        return cli_usage_error("serve", "--insecure and --cert/--key exclude each other");
    return 0;
}

int cli_cmd_serve(cli_global *g, int argc, char **argv) {
    annal_server_opts so;
    annal_server_opts_init(&so);
    so.log = log_line;
    int grace = 10000, help = 0;
    int rc = parse_args(g, argc, argv, &so, &grace, &help);
    if (rc) return rc;
    if (help) {
        fputs(usage, stdout);
        return cli_finish_output("serve", stdout, "standard output", CLI_EXIT_OK);
    }
    /* Signals go to sigwait below, not to gRPC's threads (they inherit this mask). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    annal_db *db;
    rc = cli_open(g, "serve", ANNAL_OPEN_CREATE, NULL, &db);
    if (rc) return rc;
    annal_server *srv;
    annal_err e = annal_server_start(db, &so, &srv);
    if (e != ANNAL_OK) {
        annal_db_close(db);
        cli_error("serve", "cannot start the server: %s", annal_strerror(e));
        return e == ANNAL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_STORE;
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    char msg[64];
    snprintf(msg, sizeof msg, "got %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    log_line(NULL, ANNAL_LOG_INFO, msg);
    annal_server_stop(srv, grace);
    annal_db_close(db);
    log_line(NULL, ANNAL_LOG_INFO, "store closed");
    return CLI_EXIT_OK;
}
