/*
 * verify.c -- `annal verify`: check every record of every log segment and the index
 * against the log, printing one line per problem; exit 4 when anything is damaged.
 * The store is checked through its directory, read-only, so a writer may keep running.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] verify [--progress]\n"
    "\n"
    "Check every record of every segment (checksums, sequence, batches) and that the index\n"
    "agrees with the log. Read-only: safe while another process writes. Each problem is\n"
    "one line on standard output:\n"
    "  segment S offset O position P stream X: what\n"
    "(P and X are '?' when unknown).\n"
    "\n"
    "Options:\n"
    "  --progress   show progress on stderr even when it is not a terminal\n"
    "\n"
    "Exit codes: 0 sound, 1 usage, 2 no store, 4 damage found, 5 could not check.\n";

enum { OPT_PROGRESS };
static const cli_option options[] = {{"progress", 0, OPT_PROGRESS}, {NULL, 0, 0}};

typedef struct found_ctx {
    uint64_t count;
    cli_progress *progress;
} found_ctx;

static void on_damage(void *ctx, const annal_damage *d) {
    found_ctx *f = ctx;
    char pos[24];
    if (d->position == UINT64_MAX)
        snprintf(pos, sizeof pos, "?");
    else
        snprintf(pos, sizeof pos, "%llu", (unsigned long long)d->position);
    /* Start the line clean if a progress figure is being drawn on the same terminal. */
    if (f->progress->shown) fputs("\r\033[K", stderr);
    printf("segment %llu offset %llu position %s stream %s: %s\n", (unsigned long long)d->segment,
           (unsigned long long)d->offset, pos, d->stream ? d->stream : "?",
           d->what ? d->what : "damaged");
    fflush(stdout);
    f->count++;
}

static int verify_run(cli_global *g, int progress_opt);

int cli_cmd_verify(cli_global *g, int argc, char **argv) {
    int progress_opt = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("verify", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND: return cli_usage_error("verify", "unexpected argument '%s'", v);
        case OPT_PROGRESS: progress_opt = 1; break;
        }
    }

    /* LMDB does not checksum its pages: damaged index files can crash the process that
     * reads them. Check in a child so that such damage is reported, not suffered. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) exit(verify_run(g, progress_opt));
    if (pid < 0) return verify_run(g, progress_opt);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    cli_error("verify",
              "reading the index of %s crashed (signal %d): the index files are "
              "damaged; run `annal rebuild-index`",
              g->data_dir, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return CLI_EXIT_CORRUPT;
}

static int verify_run(cli_global *g, int progress_opt) {
    cli_progress prog;
    cli_progress_init(&prog, "verify", progress_opt ? 2 : g->stderr_tty);
    annal_db_opts opts;
    cli_db_opts(&opts, ANNAL_OPEN_READONLY, &prog);
    found_ctx f = {0, &prog};
    annal_err e = annal_verify(g->data_dir, &opts, on_damage, &f);
    cli_progress_end(&prog);

    int rc = CLI_EXIT_OK;
    if (e == ANNAL_OK && f.count == 0) {
        printf("%s is sound\n", g->data_dir);
    } else if (e == ANNAL_ECORRUPT && f.count == 0) {
        /* Damage that stopped the check before any finding (a bad header, say). */
        rc = cli_fail("verify", NULL, e, "damage found in %s", g->data_dir);
    } else if (e == ANNAL_OK || e == ANNAL_ECORRUPT) {
        cli_error("verify", "%llu problem%s found in %s", (unsigned long long)f.count,
                  f.count == 1 ? "" : "s", g->data_dir);
        rc = CLI_EXIT_CORRUPT;
    } else if (e == ANNAL_ENOTFOUND) {
        cli_error("verify", "no store at %s (pass --data DIR or set ANNAL_DATA)", g->data_dir);
        rc = CLI_EXIT_NOTFOUND;
    } else {
        rc = cli_fail("verify", NULL, e, "could not check %s", g->data_dir);
    }
    return cli_finish_output("verify", stdout, "standard output", rc);
}
