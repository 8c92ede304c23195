/*
 * export.c -- `annal export`: write every event of the store, or of one stream, as JSON
 * lines in the shape of `read --json`, which `annal import` reads back.
 * Data that are not JSON are written as text or base64 so that import restores the bytes.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] export [STREAM|$all] [--output FILE] [--progress]\n"
    "\n"
    "Write the events of STREAM, or of the whole store ('$all', the default) in commit\n"
    "order, as JSON lines in the shape of `annal read --json`. `annal import` reads them\n"
    "back.\n"
    "\n"
    "Options:\n"
    "  --output FILE  write to FILE (replaced) instead of standard output\n"
    "  --progress     show progress on stderr even when it is not a terminal\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no such store or stream, 4 damaged event,\n"
    "5 store or write error.\n";

enum { OPT_OUTPUT, OPT_PROGRESS };
static const cli_option options[] = {
    {"output", 1, OPT_OUTPUT},
    {"progress", 0, OPT_PROGRESS},
    {NULL, 0, 0},
};

int cli_cmd_export(cli_global *g, int argc, char **argv) {
    const char *stream = NULL, *output = NULL;
    int progress_opt = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("export", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (stream) return cli_usage_error("export", "unexpected argument '%s'", v);
            stream = v;
            break;
        case OPT_OUTPUT: output = v; break;
        case OPT_PROGRESS: progress_opt = 1; break;
        }
    }
    if (!stream) stream = "$all";
    int all = strcmp(stream, "$all") == 0;

    annal_db *db;
    int rc = cli_open(g, "export", ANNAL_OPEN_READONLY, NULL, &db);
    if (rc) return rc;
    annal_db_info info;
    memset(&info, 0, sizeof info);
    annal_db_info_get(db, &info); /* only for the progress total; 0 is fine */

    annal_iter *it = NULL;
    annal_err e =
        all ? annal_read_all(db, 0, 0, 0, &it) : annal_read_stream(db, stream, 0, 0, 0, &it);
    if (e == ANNAL_ENOTFOUND && !all) {
        cli_error("export", "stream %s not found in %s", stream, g->data_dir);
        annal_db_close(db);
        return CLI_EXIT_NOTFOUND;
    }
    if (e != ANNAL_OK) {
        rc = cli_fail("export", db, e, "cannot read %s", stream);
        annal_db_close(db);
        return rc;
    }
    /* The file is opened only once the source is known good: a typo in STREAM must not
     * truncate an earlier export. */
    FILE *out = stdout;
    const char *out_name = "standard output";
    if (output && strcmp(output, "-") != 0) {
        out = fopen(output, "w");
        out_name = output;
        if (!out) {
            cli_error("export", "cannot create %s: %s", output, strerror(errno));
            annal_iter_close(it);
            annal_db_close(db);
            return CLI_EXIT_STORE;
        }
    }

    cli_progress prog;
    cli_progress_init(&prog, "export", progress_opt ? 2 : g->stderr_tty);
    uint64_t total = all ? info.events : 0, n = 0;
    cli_buf line = {0};
    const annal_event *ev;
    while ((e = annal_iter_next(it, &ev)) == ANNAL_OK) {
        line.len = 0;
        cli_event_json(&line, ev);
        cli_buf_addc(&line, '\n');
        if (fwrite(line.p, 1, line.len, out) != line.len)
            break; /* reported below by cli_finish_output */
        if ((++n & 1023) == 0) cli_progress_cb(&prog, n, total);
    }
    cli_buf_free(&line);
    prog.done = n;
    prog.total = total > n ? n : total;
    cli_progress_end(&prog);
    if (e != ANNAL_END && e != ANNAL_OK)
        rc = cli_fail("export", db, e, "reading %s stopped after %llu events", stream,
                      (unsigned long long)n);
    annal_iter_close(it);
    annal_db_close(db);
    rc = cli_finish_output("export", out, out_name, rc);
    if (out != stdout && fclose(out) != 0 && rc == 0) {
        cli_error("export", "cannot write %s: %s", out_name, strerror(errno));
        rc = CLI_EXIT_STORE;
    }
    return rc;
}
