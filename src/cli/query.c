/*
 * query.c -- `annal query`: run one SQL statement against a projection's read model (a
 * registered projection by name, or any target) and print the rows as a table, as
 * tab-separated values or as JSON lines. Reads only what the projector committed.
 */
#include <stdlib.h>
#include <string.h>

#include "annal_project.h"
#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] query NAME 'SQL' [--json | --tsv]\n"
    "       annal query --target sqlite:PATH|postgresql:CONNINFO 'SQL' [--json | --tsv]\n"
    "\n"
    "Run one SQL statement against the read model of projection NAME (registered with\n"
    "'annal projection add') or of any target, and print the rows.\n"
    "\n"
    "Options:\n"
    "  --json     one JSON object per row\n"
    "  --tsv      tab-separated values with a header line (NULL is empty)\n"
    "  --target T the database itself instead of a projection's\n"
    "\n"
    "Exit codes: 0 ok, 1 usage or SQL error, 2 no such projection, 5 failure.\n";

enum { OPT_JSON, OPT_TSV, OPT_TARGET };
static const cli_option options[] = {
    {"json", 0, OPT_JSON}, {"tsv", 0, OPT_TSV}, {"target", 1, OPT_TARGET}, {NULL, 0, 0}};

char *cli_projection_target(cli_global *g, const char *name, int *exit_code);

typedef struct out {
    cli_global *g;
    int mode; /* 0 table, 1 json, 2 tsv */
    int started;
    cli_table t;
    const char *heads[CLI_TABLE_MAXCOLS];
    char *owned[CLI_TABLE_MAXCOLS];
    int ncols;
    uint64_t rows;
} out;

static void value_text(cli_buf *b, const annal_proj_value *v) {
    switch (v->kind) {
    case ANNAL_PROJ_NULL: break;
    case ANNAL_PROJ_INT: cli_buf_addf(b, "%lld", (long long)v->i); break;
    case ANNAL_PROJ_REAL: cli_buf_addf(b, "%.15g", v->d); break;
    case ANNAL_PROJ_TEXT: cli_buf_add(b, v->s, v->len); break;
    }
}

static int on_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    out *o = ctx;
    cli_buf b = {0};
    o->rows++;
    if (o->mode == 1) {
        cli_buf_addc(&b, '{');
        for (int c = 0; c < n; c++) {
            if (c) cli_buf_addc(&b, ',');
            cli_json_add_string(&b, names[c], strlen(names[c]));
            cli_buf_addc(&b, ':');
            if (v[c].kind == ANNAL_PROJ_NULL)
                cli_buf_adds(&b, "null");
            else if (v[c].kind == ANNAL_PROJ_TEXT)
                cli_json_add_string(&b, v[c].s, v[c].len);
            else
                value_text(&b, &v[c]);
        }
        cli_buf_adds(&b, "}\n");
        fputs(cli_buf_cstr(&b), stdout);
    } else if (o->mode == 2) {
        if (!o->started) {
            for (int c = 0; c < n; c++) printf("%s%s", c ? "\t" : "", names[c]);
            putchar('\n');
            o->started = 1;
        }
        for (int c = 0; c < n; c++) {
            if (c) cli_buf_addc(&b, '\t');
            value_text(&b, &v[c]);
        }
        cli_buf_addc(&b, '\n');
        fputs(cli_buf_cstr(&b), stdout);
    } else {
        int nc = n > CLI_TABLE_MAXCOLS ? CLI_TABLE_MAXCOLS : n;
        if (!o->started) {
            for (int c = 0; c < nc; c++) {
                o->owned[c] = cli_xstrndup(names[c], strlen(names[c]));
                o->heads[c] = o->owned[c];
            }
            o->ncols = nc;
            cli_table_init(&o->t, o->g, stdout, nc, o->heads, NULL);
            o->started = 1;
        }
        cli_buf cells[CLI_TABLE_MAXCOLS];
        const char *cp[CLI_TABLE_MAXCOLS];
        memset(cells, 0, sizeof cells);
        for (int c = 0; c < nc; c++) {
            value_text(&cells[c], &v[c]);
            if (v[c].kind == ANNAL_PROJ_NULL) cli_buf_adds(&cells[c], "NULL");
            cp[c] = cli_buf_cstr(&cells[c]);
        }
        cli_table_row(&o->t, cp);
        for (int c = 0; c < nc; c++) cli_buf_free(&cells[c]);
    }
    cli_buf_free(&b);
    return 0;
}

int cli_cmd_query(cli_global *g, int argc, char **argv) {
    const char *ops[2] = {NULL, NULL};
    int nops = 0;
    const char *target = NULL;
    out o;
    memset(&o, 0, sizeof o);
    o.g = g;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int opt; (opt = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (opt) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("query", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (nops >= 2) return cli_usage_error("query", "unexpected argument '%s'", v);
            ops[nops++] = v;
            break;
        case OPT_JSON: o.mode = 1; break;
        case OPT_TSV: o.mode = 2; break;
        case OPT_TARGET: target = v; break;
        }
    }
    const char *name = NULL, *sql;
    if (target) {
        if (nops != 1) return cli_usage_error("query", "give the SQL (one argument)");
        sql = ops[0];
    } else {
        if (nops != 2) return cli_usage_error("query", "give a projection NAME and the SQL");
        name = ops[0];
        sql = ops[1];
    }
    char *owned = NULL;
    if (!target) {
        int ec;
        owned = cli_projection_target(g, name, &ec);
        if (!owned) return ec;
        target = owned;
    }
    char err[1024];
    annal_err rc = annal_proj_query(target, name, sql, on_row, &o, err, sizeof err);
    if (o.mode == 0 && o.started) cli_table_end(&o.t);
    for (int c = 0; c < o.ncols; c++) free(o.owned[c]);
    free(owned);
    int ec = 0;
    if (rc != ANNAL_OK) {
        cli_error("query", "%s", err);
        ec = rc == ANNAL_EINVAL ? CLI_EXIT_USAGE : cli_exit_code(rc);
    }
    return cli_finish_output("query", stdout, "standard output", ec);
}
