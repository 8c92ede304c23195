/*
 * recover.c -- `annal recover --accept-loss`: the operator's answer when a writer refuses
 * to open because acknowledged positions are missing from the end of the log (the disk
 * lost its tail). Those positions become a recorded hole in $all, never reused.
 */
#include <inttypes.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] recover --accept-loss\n"
    "\n"
    "When the log lost its tail (the disk dropped or zeroed its last blocks, a segment\n"
    "was truncated), a writer refuses to open the store and names the acknowledged\n"
    "positions that are missing. Restore the log from a backup if you can. Otherwise this\n"
    "command accepts the loss: the missing positions become a recorded hole in $all (they\n"
    "are never given to other events), the index is rebuilt and the store is writable\n"
    "again. On a store that lost nothing it changes nothing.\n"
    "\n"
    "Options:\n"
    "  --accept-loss   required: say that the missing events are gone for good\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no store, 4 damaged log, 5 store error or busy.\n";

enum { OPT_ACCEPT };
static const cli_option options[] = {{"accept-loss", 0, OPT_ACCEPT}, {NULL, 0, 0}};

int cli_cmd_recover(cli_global *g, int argc, char **argv) {
    int accept = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("recover", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND: return cli_usage_error("recover", "unexpected argument '%s'", v);
        case OPT_ACCEPT: accept = 1; break;
        }
    }
    if (!accept)
        return cli_usage_error("recover", "--accept-loss is required: the missing events are "
                                          "lost for good once it runs");
    annal_db_opts opts;
    cli_db_opts(&opts, 0, NULL);
    uint64_t from = 0, count = 0;
    annal_err e = annal_recover_accept_loss(g->data_dir, &opts, &from, &count);
    if (e == ANNAL_ENOTFOUND) {
        cli_error("recover", "no store at %s (pass --data DIR or set ANNAL_DATA)", g->data_dir);
        return CLI_EXIT_NOTFOUND;
    }
    if (e != ANNAL_OK) return cli_fail("recover", NULL, e, "cannot recover %s", g->data_dir);
    if (count == 0)
        printf("%s lost nothing: no change\n", g->data_dir);
    else
        printf("positions %" PRIu64 " to %" PRIu64 " (%" PRIu64
               " events) recorded as lost in %s; the store is writable\n",
               from, from + count - 1, count, g->data_dir);
    return cli_finish_output("recover", stdout, "standard output", CLI_EXIT_OK);
}
