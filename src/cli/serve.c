/*
 * serve.c -- `annal serve`: the store as a server that KurrentDB's gRPC clients use
 * unchanged. A thin wrapper over annal_server.h: settings (flags, environment, YAML file:
 * config.c), logging to stderr, and a graceful stop on SIGTERM or SIGINT.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "annal_server.h"
#include "cli.h"
#include "config.h"
#include "route.h"

static const char usage[] =
    "usage: annal [--data DIR] serve (--insecure | --cert FILE --key FILE) [options]\n"
    "\n"
    "Serve the store over KurrentDB's gRPC protocol (docs/server.md): the official\n"
    "KurrentDB/EventStoreDB clients connect with kurrentdb://HOST:PORT (add ?tls=false\n"
    "with --insecure). Creates the store if missing. Stops gracefully on SIGTERM/SIGINT.\n"
    "\n"
    "Options (each also an environment variable ANNAL_<NAME> and a key of the --config\n"
    "file; flags > environment > file > defaults):\n"
    "  --config FILE        YAML file of settings (also ANNAL_CONFIG)\n"
    "  --listen HOST:PORT   where to listen (default 127.0.0.1:2113, KurrentDB's port;\n"
    "                       port 0 picks a free one, printed at start)\n"
    "  --node-ip HOST       the host part alone (KurrentDB's NodeIp)\n"
    "  --node-port PORT     the port alone (KurrentDB's NodePort)\n"
    "  --insecure           plain HTTP/2 without TLS, authentication or ACLs\n"
    "  --cert FILE          PEM certificate chain for TLS (CertificateFile)\n"
    "  --key FILE           PEM private key for TLS (CertificatePrivateKeyFile)\n"
    "  --ca FILE|DIR        PEM CA certificates to verify client certificates with\n"
    "                       (TrustedRootCertificatesPath; a directory: its .crt/.pem files)\n"
    "  --log-level L        error, warn, info (default) or debug (a line per call)\n"
    "  --grace-ms N         how long to wait for calls at stop (default 10000)\n"
    "  --default-admin-password P, --default-ops-password P\n"
    "                       first passwords of the built-in users admin and ops (with TLS,\n"
    "                       the first start needs one for admin; docs/security.md)\n"
    "  --run-projections all|none\n"
    "                       run the store's registered projections (`annal projection add`)\n"
    "                       in the server, picking up changes to them (default all;\n"
    "                       KurrentDB's System means none here)\n"
    "  --lua-budget MS      the longest a run of a projection's Lua code may take\n"
    "                       (each handler call; default 5000): past it the event fails\n"
    "SIGHUP reloads the TLS certificate, key and CA files.\n"
    "KurrentDB's names work too: KURRENTDB_NODE_PORT=2113, EVENTSTORE_INSECURE=true,\n"
    "NodePort: 2113 in the file. `annal cert` makes development certificates.\n"
    "\n"
    "Exit codes: 0 stopped cleanly, 1 usage or bad setting, 5 store or server error.\n";

static void log_line(void *ctx, annal_log_level level, const char *msg) {
    (void)ctx;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char when[CLI_TIME_LEN];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    cli_time_rfc3339((int64_t)now.tv_sec * 1000000000 + now.tv_nsec, when);
    fprintf(stderr, "%s annal serve %s: %s\n", when, names[level <= 3 ? level : 3], msg);
}

static void log_info(const char *line) { log_line(NULL, ANNAL_LOG_INFO, line); }

/* Flags into c; *config_path set by --config; *help by --help. */
static int parse_args(cli_global *g, int argc, char **argv, cli_config *c, const char **config_path,
                      int *help) {
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    const char *data_before = g->data_dir;
    for (int o; (o = cli_args_next(&a, cli_config_flags(), &v)) != CLI_ARG_END;) {
        if (o == CLI_ARG_ERROR) return CLI_EXIT_USAGE;
        if (o == CLI_ARG_HELP) {
            *help = 1;
            return 0;
        }
        if (o == CLI_ARG_OPERAND) return cli_usage_error("serve", "unexpected argument '%s'", v);
        if (o == CFG_NSETTINGS) {
            *config_path = v;
            continue;
        }
        /* The flag as typed, for messages: "--node-port", not its value. */
        const char *typed = argv[a.i - 1];
        if (!cli_config_is_switch(o) && !(strncmp(typed, "--", 2) == 0 && strchr(typed, '=')))
            typed = argv[a.i - 2];
        char origin[96];
        snprintf(origin, sizeof origin, "%.*s", (int)strcspn(typed, "="), typed);
        int rc = cli_config_set(c, "serve", o, cli_config_is_switch(o) ? "true" : v, CFG_SRC_FLAG,
                                origin);
        if (rc) return rc;
    }
    /* cppcheck-suppress knownConditionTrueFalse ; the option parser replaces it through g */
    if (g->data_dir_flag || g->data_dir != data_before) {
        int rc = cli_config_set(c, "serve", CFG_DATA, g->data_dir, CFG_SRC_FLAG, "--data");
        if (rc) return rc;
    }
    return 0;
}

/* KurrentDB's TrustedRootCertificatesPath is a directory: gRPC wants one PEM bundle, so
 * the directory's .crt and .pem files are joined into a private temporary file, which is
 * removed once the server has read it. */
static int ca_bundle(const char *path, char *tmp, size_t tmp_size, const char **out) {
    struct stat st;
    *out = path;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    DIR *d = opendir(path);
    if (!d) {
        cli_error("serve", "cannot read CA directory %s: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    snprintf(tmp, tmp_size, "/tmp/annal-ca.XXXXXX");
    int fd = mkstemp(tmp);
    FILE *bundle = fd >= 0 ? fdopen(fd, "w") : NULL;
    int n = 0;
    for (struct dirent *e; bundle && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || (strcmp(e->d_name + len - 4, ".crt") && strcmp(e->d_name + len - 4, ".pem")))
            continue;
        char file[4096];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        FILE *f = fopen(file, "rb");
        if (!f) continue;
        char buf[8192];
        for (size_t got; (got = fread(buf, 1, sizeof buf, f)) > 0;) fwrite(buf, 1, got, bundle);
        fputc('\n', bundle);
        fclose(f);
        n++;
    }
    closedir(d);
    if (!bundle || fclose(bundle) != 0 || n == 0) {
        if (fd >= 0) unlink(tmp);
        cli_error("serve", "no CA certificates (.crt or .pem files) in %s", path);
        return CLI_EXIT_USAGE;
    }
    *out = tmp;
    return 0;
}

/* The listen address from listen, node-ip and node-port: each half from the strongest
 * source that sets it (node-ip/node-port over listen from the same source). */
static void resolve_listen(const cli_config *c, char *buf, size_t size) {
    const char *l = cli_config_get(c, CFG_LISTEN);
    const char *colon = l ? strrchr(l, ':') : NULL;
    char host[256] = "127.0.0.1", port[8] = "2113";
    if (colon) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - l), l);
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    cli_cfg_source ls = l ? c->v[CFG_LISTEN].source : CFG_SRC_DEFAULT;
    if (cli_config_get(c, CFG_NODE_IP) && (!l || c->v[CFG_NODE_IP].source >= ls))
        snprintf(host, sizeof host, "%s", cli_config_get(c, CFG_NODE_IP));
    if (cli_config_get(c, CFG_NODE_PORT) && (!l || c->v[CFG_NODE_PORT].source >= ls))
        snprintf(port, sizeof port, "%s", cli_config_get(c, CFG_NODE_PORT));
    snprintf(buf, size, "%s:%s", host, port);
}

static int load(cli_global *g, int argc, char **argv, cli_config *c, int *help) {
    const char *path = NULL;
    int rc = parse_args(g, argc, argv, c, &path, help);
    if (rc || *help) return rc;
    rc = cli_config_env(c, "serve", g->env);
    if (rc) return rc;
    if (!path) path = cli_config_env_path(g->env);
    if (path) rc = cli_config_file(c, "serve", path);
    return rc;
}

/* The command line writes through this socket while the server owns the store. Made
 * with umask 077, so only the store's owner (the admin) can connect. NULL if the store's
 * path is too long for one. */
static const char *socket_path(const char *dir, char *sock, size_t len) {
    int n = snprintf(sock, len, "%s/%s", dir, CLI_SOCKET_NAME);
    if (n >= (int)sizeof(((struct sockaddr_un *)0)->sun_path)) {
        log_line(NULL, ANNAL_LOG_WARN,
                 "store path too long for a Unix socket: `annal` commands cannot write while "
                 "this server runs (use --server)");
        return NULL;
    }
    return sock;
}

/* Serve until SIGINT or SIGTERM (returned); each SIGHUP reloads the TLS certificates
 * (security), rebuilding a CA directory's bundle first. */
static int wait_for_stop(const sigset_t *sigs, annal_server *srv, int insecure, const char *ca_dir,
                         const char *ca_tmp) {
    int sig = 0;
    while (sigwait(sigs, &sig) == 0 && sig == SIGHUP) {
        log_line(NULL, ANNAL_LOG_INFO, "got SIGHUP: reloading the TLS certificates");
        char fresh[4096];
        const char *bundle;
        if (ca_dir && ca_bundle(ca_dir, fresh, sizeof fresh, &bundle) == 0 && bundle == fresh &&
            rename(fresh, ca_tmp) != 0)
            unlink(fresh);
        if (insecure)
            log_line(NULL, ANNAL_LOG_WARN, "SIGHUP ignored: no TLS (--insecure)");
        else
            (void)annal_server_reload_tls(srv);
    }
    return sig;
}

/* The server's options from the settings (borrowing from c; listen is the buffer of the
 * address): returns the grace period in ms. */
static int settings_to_opts(cli_global *g, const cli_config *c, annal_server_opts *so, char *listen,
                            size_t listen_size) {
    annal_server_opts_init(so);
    so->log = log_line;
    resolve_listen(c, listen, listen_size);
    so->listen = listen;
    so->insecure = cli_config_bool(c, CFG_INSECURE);
    so->cert_file = cli_config_get(c, CFG_CERT);
    so->key_file = cli_config_get(c, CFG_KEY);
    if (cli_config_get(c, CFG_LOG_LEVEL))
        so->log_level = (annal_log_level)cli_config_log_level(cli_config_get(c, CFG_LOG_LEVEL));
    int grace = 10000;
    uint64_t ms;
    if (cli_config_get(c, CFG_GRACE_MS) && cli_parse_u64(cli_config_get(c, CFG_GRACE_MS), &ms) == 0)
        grace = (int)ms; /* checked to be at most an hour where it was set */
    if (cli_config_get(c, CFG_DATA)) g->data_dir = cli_config_get(c, CFG_DATA);
    /* The registered projections run here unless asked not to (docs/projections.md). */
    const char *runp = cli_config_get(c, CFG_RUN_PROJECTIONS);
    so->projections_data_dir = !runp || strcasecmp(runp, "all") == 0 ? g->data_dir : NULL;
    if (cli_config_get(c, CFG_LUA_BUDGET) &&
        cli_parse_u64(cli_config_get(c, CFG_LUA_BUDGET), &ms) == 0)
        so->projections_lua_budget_ms = (uint32_t)ms; /* 0: the default */
    return grace;
}

int cli_cmd_serve(cli_global *g, int argc, char **argv) {
    cli_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int help = 0;
    int rc = load(g, argc, argv, &cfg, &help);
    if (rc || help) {
        cli_config_free(&cfg);
        if (rc) return rc;
        fputs(usage, stdout);
        return cli_finish_output("serve", stdout, "standard output", CLI_EXIT_OK);
    }
    annal_server_opts so;
    char listen[300], ca_tmp[4096] = "";
    int grace = settings_to_opts(g, &cfg, &so, listen, sizeof listen);

    if (!so.insecure && (!so.cert_file || !so.key_file))
        rc = cli_usage_error("serve",
                             "refusing to serve without TLS or --insecure: pass --cert FILE "
                             "--key FILE for TLS, or --insecure for plain HTTP/2 (no TLS)");
    else if (so.insecure && (so.cert_file || so.key_file))
        rc = cli_usage_error("serve", "--insecure and --cert/--key exclude each other");
    if (!rc && cli_config_get(&cfg, CFG_CA))
        rc = ca_bundle(cli_config_get(&cfg, CFG_CA), ca_tmp, sizeof ca_tmp, &so.ca_file);
    if (rc) {
        cli_config_free(&cfg);
        return rc;
    }
    cli_config_describe(&cfg, log_info);
    /* security: the built-in users' first passwords (docs/security.md) */
    so.default_admin_password = cli_config_get(&cfg, CFG_ADMIN_PASSWORD);
    so.default_ops_password = cli_config_get(&cfg, CFG_OPS_PASSWORD);
    if (so.insecure && (so.default_admin_password || so.default_ops_password))
        log_line(NULL, ANNAL_LOG_WARN,
                 "config: default passwords are not used with --insecure: every call acts as an "
                 "admin (docs/security.md)");

    /* Signals go to sigwait below, not to gRPC's threads (they inherit this mask). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP); /* security: reload the TLS certificates */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    annal_db *db;
    rc = cli_open(g, "serve", ANNAL_OPEN_CREATE, NULL, &db);
    annal_server *srv = NULL;
    annal_err e = ANNAL_OK;
    char sock[4096];
    so.local_socket = socket_path(g->data_dir, sock, sizeof sock);
    mode_t old_mask = umask(077);
    if (!rc) e = annal_server_start(db, &so, &srv);
    umask(old_mask);
    if (!rc && e == ANNAL_OK && so.local_socket) {
        (void)chmod(sock, 0600);
        char msg[4200];
        snprintf(msg, sizeof msg, "local socket unix:%s (mode 0600: the CLI writes through it)",
                 sock);
        log_info(msg);
    }
    /* security: a CA directory's bundle stays until exit, rebuilt at each SIGHUP. */
    char *ca_dir =
        ca_tmp[0] ? cli_xstrndup(cli_config_get(&cfg, CFG_CA), strlen(cli_config_get(&cfg, CFG_CA)))
                  : NULL;
    cli_config_free(&cfg);
    if (rc || e != ANNAL_OK) {
        if (ca_tmp[0]) unlink(ca_tmp);
        free(ca_dir);
    }
    if (rc) return rc;
    if (e != ANNAL_OK) {
        annal_db_close(db);
        cli_error("serve", "cannot start the server: %s", annal_strerror(e));
        return e == ANNAL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_STORE;
    }
    int sig = wait_for_stop(&sigs, srv, so.insecure, ca_dir, ca_tmp);
    char msg[64];
    snprintf(msg, sizeof msg, "got %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    log_line(NULL, ANNAL_LOG_INFO, msg);
    annal_server_stop(srv, grace);
    if (ca_tmp[0]) unlink(ca_tmp);
    free(ca_dir);
    if (so.local_socket) unlink(sock);
    annal_db_close(db);
    log_line(NULL, ANNAL_LOG_INFO, "store closed");
    return CLI_EXIT_OK;
}
