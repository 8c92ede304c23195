/*
 * config.h -- the interface of `annal serve`'s settings: one table of settings, each set
 * from a flag, an environment variable or a YAML file, the strongest source winning
 * (flags > environment > file > defaults). KurrentDB's names are accepted where they mean
 * the same thing, so its docker files and config files carry over.
 */
#ifndef ANNAL_CLI_CONFIG_H
#define ANNAL_CLI_CONFIG_H

#include "cli.h"

/* The settings, in the order the table in config.c lists them. */
enum {
    CFG_DATA,
    CFG_LISTEN, /* HOST:PORT; node-ip and node-port set one half each */
    CFG_NODE_IP,
    CFG_NODE_PORT,
    CFG_INSECURE,
    CFG_CERT,
    CFG_KEY,
    CFG_CA,
    CFG_LOG_LEVEL,
    CFG_GRACE_MS,
    CFG_ADMIN_PASSWORD, /* kept for issue 17 (users); a secret: never logged */
    CFG_OPS_PASSWORD,
    CFG_RUN_PROJECTIONS, /* all (default), none or system: the registered ones run or not */
    CFG_LUA_BUDGET,      /* ms per run of a projection's Lua code (default 5000) */
    CFG_NSETTINGS
};

typedef enum cli_cfg_source {
    CFG_SRC_DEFAULT,
    CFG_SRC_FILE,
    CFG_SRC_ENV,
    CFG_SRC_FLAG
} cli_cfg_source;

typedef struct cli_cfg_value {
    char *value;           /* owned; NULL when unset */
    cli_cfg_source source; /* where value came from */
    char origin[128];      /* "--listen", "KURRENTDB_NODE_PORT", "annal.yaml:3" */
} cli_cfg_value;

typedef struct cli_config {
    cli_cfg_value v[CFG_NSETTINGS];
} cli_config;

/* The settings' names as flags ("listen", "node-port", ...), for option tables: each entry's
 * id is its setting, or CFG_NSETTINGS for --config. Ends with a NULL name. */
const cli_option *cli_config_flags(void);
/* 1 if setting id is a switch (a flag without a value). */
int cli_config_is_switch(int id);

/* Set setting id from source (kept only if no stronger source set it). The value is checked
 * (a bad one is an error naming origin, never echoing a secret). 0, or an exit code after
 * reporting on stderr as command cmd. */
int cli_config_set(cli_config *c, const char *cmd, int id, const char *value, cli_cfg_source src,
                   const char *origin);
/* Every ANNAL_*, KURRENTDB_* and EVENTSTORE_* variable of env (NULL-terminated "K=V" list)
 * that names a setting. Unknown KURRENTDB_/EVENTSTORE_ names get a warning; ANNAL_ names
 * that are not settings belong to other tools and are left alone. */
int cli_config_env(cli_config *c, const char *cmd, char *const *env);
/* The config file named by ANNAL_CONFIG / KURRENTDB_CONFIG in env, when flag_path is NULL. */
const char *cli_config_env_path(char *const *env);
/* A YAML file: one mapping of setting names (annal's or KurrentDB's, any case, '-' or '_'
 * or none between words) to scalars. An unknown key is an error naming it and its line. */
int cli_config_file(cli_config *c, const char *cmd, const char *path);

/* Value of a setting, or NULL. */
const char *cli_config_get(const cli_config *c, int id);
int cli_config_bool(const cli_config *c, int id); /* a set boolean is true */
/* "name = value (from origin)" lines for every setting not at its default, secrets as ****,
 * through log (one call per line). */
void cli_config_describe(const cli_config *c, void (*log)(const char *line));
void cli_config_free(cli_config *c);

/* Log levels in annal's and KurrentDB's words (Verbose, Information, Warning, Fatal...):
 * 0 error, 1 warn, 2 info, 3 debug; -1 if unknown. */
int cli_config_log_level(const char *v);

#endif
