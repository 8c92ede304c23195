/*
 * rebuild_index.c -- `annal rebuild-index`: throw the index away and rebuild it from the
 * log, the cure when verify reports that the index disagrees with the log.
 * The log is the truth; the index is only a cache of where things are in it.
 */
#include <errno.h>
#include <sys/stat.h>

#include "cli.h"
#include "route.h"

static const char usage[] =
    "usage: annal [--data DIR] rebuild-index [--progress]\n"
    "\n"
    "Throw away the index and rebuild it from the log. Needs the store to itself: fails\n"
    "with exit 5 while another process has it open for writing.\n"
    "\n"
    "Options:\n"
    "  --progress   show progress on stderr even when it is not a terminal\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no store, 4 damaged log, 5 store error or busy.\n";

enum { OPT_PROGRESS };
static const cli_option options[] = {{"progress", 0, OPT_PROGRESS}, {NULL, 0, 0}};

int cli_cmd_rebuild_index(cli_global *g, int argc, char **argv) {
    int progress_opt = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("rebuild-index", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            return cli_usage_error("rebuild-index", "unexpected argument '%s'", v);
        case OPT_PROGRESS: progress_opt = 1; break;
        }
    }

    /* The index is the server's while it runs: it would find the lock held anyway. */
    int busy = cli_route_refuse(g, "rebuild-index");
    if (busy) return busy;
    cli_progress prog;
    cli_progress_init(&prog, "rebuild-index", progress_opt ? 2 : g->stderr_tty);
    annal_db_opts opts;
    cli_db_opts(&opts, 0, &prog);
    annal_err e = annal_rebuild_index(g->data_dir, &opts);
    cli_progress_end(&prog);
    struct stat st;
    if (e == ANNAL_ENOTFOUND || (e != ANNAL_OK && stat(g->data_dir, &st) != 0 && errno == ENOENT)) {
        /* (The second test because the library has reported a missing directory as an
         * I/O error here.) */
        cli_error("rebuild-index", "no store at %s (pass --data DIR or set ANNAL_DATA)",
                  g->data_dir);
        return CLI_EXIT_NOTFOUND;
    }
    if (e != ANNAL_OK)
        return cli_fail("rebuild-index", NULL, e, "cannot rebuild the index of %s", g->data_dir);
    /* Count from the rebuilt store itself: progress may not have been reported. */
    uint64_t events = prog.done;
    annal_db *db = NULL;
    annal_db_opts ro;
    cli_db_opts(&ro, ANNAL_OPEN_READONLY, NULL);
    if (annal_db_open(g->data_dir, &ro, &db) == ANNAL_OK) {
        annal_db_info info;
        if (annal_db_info_get(db, &info) == ANNAL_OK) events = info.events;
        annal_db_close(db);
    }
    printf("rebuilt the index of %s (%llu events)\n", g->data_dir, (unsigned long long)events);
    return cli_finish_output("rebuild-index", stdout, "standard output", CLI_EXIT_OK);
}
