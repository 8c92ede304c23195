/*
 * main.c -- entry point of the `annal` command: global options, the environment, and
 * dispatch to one sub-command per file. It is the only place that reads the environment.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "route.h"

static const struct {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"append", cli_cmd_append, "append one event to a stream and print it"},
    {"read", cli_cmd_read, "read a stream or $all (table, or JSON lines with --json)"},
    {"streams", cli_cmd_streams, "list streams with their last revision"},
    {"info", cli_cmd_info, "counts and sizes of the store"},
    {"verify", cli_cmd_verify, "check every record and the index; exit 4 on damage"},
    {"rebuild-index", cli_cmd_rebuild_index, "throw the index away and rebuild it from the log"},
    {"recover", cli_cmd_recover, "accept the loss of a log's lost tail (--accept-loss)"},
    {"export", cli_cmd_export, "write events as JSON lines"},
    {"import", cli_cmd_import_routed, "append events from JSON lines (idempotent)"},
    {"demo", cli_cmd_demo, "play a short order story and show its history and state"},
    {"meta", cli_cmd_meta, "show or set a stream's metadata (max count, max age, truncate)"},
    {"delete", cli_cmd_delete, "delete a stream (soft), or tombstone it with --hard"},
    {"compact", cli_cmd_compact, "erase deleted, truncated and expired events from disk"},
    {"backup", cli_cmd_backup, "copy the store as of one position, online (incremental, or tar)"},
    {"restore", cli_cmd_restore, "make a store from a backup, whole or up to a point in time"},
    {"subscribe", cli_cmd_subscribe, "follow a stream or $all live (JSON lines, like tail -f)"},
    {"projection", cli_cmd_projection, "add, run, rebuild and operate projections (read models)"},
    {"query", cli_cmd_query, "run SQL against a projection's read model"},
    {"find", cli_cmd_find, "events matching a query of types and tags (DCB), or --follow them"},
    {"serve", cli_cmd_serve, "serve the store over KurrentDB's gRPC protocol"},
    {"completion", cli_cmd_completion, "print a bash completion script (sub-commands, streams)"},
    {"cert", cli_cmd_cert, "make a development CA and node/user TLS certificates"},
    {"user", cli_cmd_user, "add, list and change the users of a secure server"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fputs("usage: annal [--data DIR] <command> [args]\n"
          "       annal <command> --help\n"
          "       annal --version\n"
          "\n"
          "An embeddable event store, on the command line.\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "Options:\n"
          "  --data DIR     the store directory (default: $ANNAL_DATA, else ./data)\n"
          "  --server URL   write through a server: kurrentdb://HOST:PORT[?tls=false] or\n"
          "                 esdb://... (also $ANNAL_SERVER); writes go through a local\n"
          "                 `annal serve` by itself while it owns the store\n"
          "  --wait MS      how long a writing command waits while another process writes\n"
          "                 (default 5000; 0: fail at once)\n"
          "  --help, -h     this help; `annal <command> --help` for one command\n"
          "  --version      print the version\n"
          "\n"
          "Exit codes:\n"
          "  0  ok\n"
          "  1  usage error or invalid input (option, name, UUID, JSON line, too big)\n"
          "  2  not found (no store, no stream)\n"
          "  3  conflict (wrong expected revision, event id already used differently)\n"
          "  4  corruption found\n"
          "  5  other store error (I/O, store busy, disk full, ...)\n"
          "  6  append condition failed (--fail-if-match: a matching event came first)\n",
          out);
}

static int find_command(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return (int)i;
    return -1;
}

int main(int argc, char **argv) {
    cli_global g;
    memset(&g, 0, sizeof g);
    const char *env = getenv("ANNAL_DATA");
    g.data_dir = env && *env ? env : "./data";
    g.stderr_tty = isatty(STDERR_FILENO);
    g.stdout_tty = isatty(STDOUT_FILENO);
    g.env = environ;
    const char *srv_env = getenv("ANNAL_SERVER");
    g.server = srv_env && *srv_env ? srv_env : NULL;
    int server_flag = 0;
    g.wait_ms = CLI_WAIT_DEFAULT_MS;

    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return cli_finish_output(NULL, stdout, "standard output", CLI_EXIT_OK);
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("annal %s (libannal %s)\n", ANNAL_VERSION_STRING, annal_version_string());
            return cli_finish_output(NULL, stdout, "standard output", CLI_EXIT_OK);
        }
        if (strcmp(a, "--data") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return cli_usage_error(NULL, "--data needs a directory");
            g.data_dir = argv[++i];
            g.data_dir_flag = 1;
        } else if (strncmp(a, "--data=", 7) == 0 && a[7]) {
            g.data_dir = a + 7;
            g.data_dir_flag = 1;
        } else if (strcmp(a, "--server") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return cli_usage_error(NULL, "--server needs kurrentdb://HOST:PORT");
            g.server = argv[++i];
            server_flag = 1;
        } else if (strncmp(a, "--server=", 9) == 0 && a[9]) {
            g.server = a + 9;
            server_flag = 1;
        } else if (strcmp(a, "--wait") == 0 || strncmp(a, "--wait=", 7) == 0) {
            const char *v = a[6] == '=' ? a + 7 : i + 1 < argc ? argv[++i] : NULL;
            if (cli_parse_u64(v, &g.wait_ms) != 0)
                return cli_usage_error(NULL, "--wait needs a number of milliseconds");
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else {
            return cli_usage_error(NULL, "unknown option %s", a);
        }
    }
    if (i >= argc) return cli_usage_error(NULL, "no command given");

    const char *name = argv[i];
    if (strcmp(name, "help") == 0) {
        /* `annal help CMD` is `annal CMD --help`. */
        if (i + 1 >= argc) {
            usage(stdout);
            return cli_finish_output(NULL, stdout, "standard output", CLI_EXIT_OK);
        }
        int c = find_command(argv[i + 1]);
        if (c < 0) return cli_usage_error(NULL, "unknown command '%s'", argv[i + 1]);
        char *help_argv[] = {argv[i + 1], "--help", NULL};
        return commands[c].fn(&g, 2, help_argv);
    }
    int c = find_command(name);
    if (c < 0) return cli_usage_error(NULL, "unknown command '%s'", name);
    /* Only these reach a server by its address: asked of any other command, --server would
     * silently mean the local store. ANNAL_SERVER, set for a shell, just does not apply. */
    static const char *const remote_ok[] = {"append", "import", "delete", "meta", "user"};
    int routed = 0;
    for (size_t k = 0; k < sizeof remote_ok / sizeof remote_ok[0]; k++)
        routed |= strcmp(name, remote_ok[k]) == 0;
    if (server_flag && !routed)
        return cli_usage_error(NULL,
                               "--server works with append, import, delete, meta and user; '%s' "
                               "works on a local store (--data)",
                               name);
    if (!routed) g.server = NULL;
    return commands[c].fn(&g, argc - i, argv + i);
}
