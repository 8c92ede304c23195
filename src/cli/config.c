/*
 * config.c -- `annal serve`'s settings from flags, the environment and a YAML file
 * (config.h). One table names each setting the way annal and KurrentDB spell it; a value
 * is checked where it enters, so a bad one is reported with where it came from.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "config.h"

enum { K_TEXT, K_BOOL, K_PORT, K_MS, K_LEVEL, K_LISTEN, K_RUNPROJ };

static const struct setting {
    const char *name;    /* annal's: --name, YAML name, ANNAL_NAME */
    const char *kurrent; /* KurrentDB's (--name, YAML PascalCase, KURRENTDB_NAME), or NULL */
    int kind;
    int secret; /* never logged nor echoed in errors */
} settings[CFG_NSETTINGS] = {
    [CFG_DATA] = {"data", "db", K_TEXT, 0},
    [CFG_LISTEN] = {"listen", NULL, K_LISTEN, 0},
    [CFG_NODE_IP] = {"node-ip", NULL, K_TEXT, 0},
    [CFG_NODE_PORT] = {"node-port", NULL, K_PORT, 0},
    [CFG_INSECURE] = {"insecure", NULL, K_BOOL, 0},
    [CFG_CERT] = {"cert", "certificate-file", K_TEXT, 0},
    [CFG_KEY] = {"key", "certificate-private-key-file", K_TEXT, 0},
    [CFG_CA] = {"ca", "trusted-root-certificates-path", K_TEXT, 0},
    [CFG_LOG_LEVEL] = {"log-level", NULL, K_LEVEL, 0},
    [CFG_GRACE_MS] = {"grace-ms", NULL, K_MS, 0},
    [CFG_ADMIN_PASSWORD] = {"default-admin-password", NULL, K_TEXT, 1},
    [CFG_OPS_PASSWORD] = {"default-ops-password", NULL, K_TEXT, 1},
    [CFG_RUN_PROJECTIONS] = {"run-projections", NULL, K_RUNPROJ, 0},
    [CFG_LUA_BUDGET] = {"lua-budget", NULL, K_MS, 0},
};

/* Names compared without case and without the separators between words, so NodePort,
 * node-port, node_port and NODE_PORT are one name. */
static int same_name(const char *a, size_t alen, const char *b) {
    size_t i = 0;
    for (;;) {
        while (i < alen && (a[i] == '-' || a[i] == '_')) i++;
        while (*b == '-' || *b == '_') b++;
        if (i == alen || !*b) return i == alen && !*b;
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)*b)) return 0;
        i++, b++;
    }
}

static int find_setting(const char *key, size_t len) {
    for (int i = 0; i < CFG_NSETTINGS; i++)
        if (same_name(key, len, settings[i].name) ||
            (settings[i].kurrent && same_name(key, len, settings[i].kurrent)))
            return i;
    return -1;
}

const cli_option *cli_config_flags(void) {
    static cli_option flags[2 * CFG_NSETTINGS + 2];
    if (!flags[0].name) {
        size_t n = 0;
        for (int i = 0; i < CFG_NSETTINGS; i++) {
            int sw = settings[i].kind == K_BOOL;
            flags[n++] = (cli_option){settings[i].name, !sw, i};
            if (settings[i].kurrent) flags[n++] = (cli_option){settings[i].kurrent, !sw, i};
        }
        flags[n++] = (cli_option){"config", 1, CFG_NSETTINGS};
        flags[n] = (cli_option){NULL, 0, 0};
    }
    return flags;
}

int cli_config_is_switch(int id) {
    return id >= 0 && id < CFG_NSETTINGS && settings[id].kind == K_BOOL;
}

int cli_config_log_level(const char *v) {
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", 0},   {"fatal", 0}, {"warn", 1},    {"warning", 1},     {"info", 2},
                  {"default", 2}, {"debug", 3}, {"verbose", 3}, {"information", 2}, {"trace", 3}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcasecmp(v, levels[i].name) == 0) return levels[i].level;
    return -1;
}

static int parse_bool(const char *v) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return 1;
        if (strcasecmp(v, no[i]) == 0) return 0;
    }
    return -1;
}

/* The value as stored (booleans as true/false), or NULL with *why set. */
static char *check(int id, const char *v, const char **why) {
    uint64_t n;
    *why = NULL;
    switch (settings[id].kind) {
    case K_TEXT:
        if (!*v) *why = "want a value";
        break;
    case K_BOOL: {
        int b = parse_bool(v);
        if (b < 0) {
            *why = "want true or false";
            break;
        }
        return cli_xstrndup(b ? "true" : "false", b ? 4 : 5);
    }
    case K_PORT:
        if (cli_parse_u64(v, &n) != 0 || n > 65535) *why = "want a port number, 0 to 65535";
        break;
    case K_MS:
        if (cli_parse_u64(v, &n) != 0 || n > 3600000) *why = "want milliseconds, 0 to 3600000";
        break;
    case K_LEVEL:
        if (cli_config_log_level(v) < 0) *why = "want error, warn, info or debug";
        break;
    case K_RUNPROJ: /* KurrentDB's None, System, All; annal's system ones always run */
        if (strcasecmp(v, "all") && strcasecmp(v, "none") && strcasecmp(v, "system"))
            *why = "want all, none or system";
        break;
    case K_LISTEN: {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v || cli_parse_u64(colon + 1, &n) != 0 || n > 65535)
            *why = "want HOST:PORT";
        break;
    }
    }
    return *why ? NULL : cli_xstrndup(v, strlen(v));
}

int cli_config_set(cli_config *c, const char *cmd, int id, const char *value, cli_cfg_source src,
                   const char *origin) {
    const char *why;
    char *v = check(id, value, &why);
    if (!v) {
        if (settings[id].secret)
            cli_error(cmd, "bad value for %s (from %s): %s", settings[id].name, origin, why);
        else
            cli_error(cmd, "bad value '%s' for %s (from %s): %s", value, settings[id].name, origin,
                      why);
        return CLI_EXIT_USAGE;
    }
    cli_cfg_value *s = &c->v[id];
    if (s->value && s->source > src) {
        free(v);
        return 0;
    }
    free(s->value);
    s->value = v;
    s->source = src;
    snprintf(s->origin, sizeof s->origin, "%s", origin);
    return 0;
}

static const char *const env_prefixes[] = {"EVENTSTORE_", "KURRENTDB_", "ANNAL_"};

const char *cli_config_env_path(char *const *env) {
    const char *path = NULL;
    /* Later prefixes win: annal's own name over KurrentDB's over EventStoreDB's. */
    for (int p = 0; p < 3; p++) {
        size_t plen = strlen(env_prefixes[p]);
        for (char *const *e = env; e && *e; e++)
            if (strncmp(*e, env_prefixes[p], plen) == 0 && strncmp(*e + plen, "CONFIG=", 7) == 0 &&
                (*e)[plen + 7])
                path = *e + plen + 7;
    }
    return path;
}

int cli_config_env(cli_config *c, const char *cmd, char *const *env) {
    for (int p = 0; p < 3; p++) {
        size_t plen = strlen(env_prefixes[p]);
        for (char *const *e = env; e && *e; e++) {
            if (strncmp(*e, env_prefixes[p], plen) != 0) continue;
            const char *name = *e + plen, *eq = strchr(name, '=');
            if (!eq) continue;
            size_t nlen = (size_t)(eq - name);
            if (same_name(name, nlen, "config")) continue;
            int id = find_setting(name, nlen);
            if (id < 0) {
                /* KurrentDB has many settings annal has no use for: say so, do not fail,
                 * so one environment can serve both. Other ANNAL_ variables belong to
                 * other tools (tests, the library). */
                if (p < 2)
                    fprintf(stderr, "annal: %s: warning: ignoring %.*s%.*s: not an annal setting\n",
                            cmd, (int)plen, *e, (int)nlen, name);
                continue;
            }
            char origin[128];
            snprintf(origin, sizeof origin, "%.*s", (int)(eq - *e), *e);
            int rc = cli_config_set(c, cmd, id, eq + 1, CFG_SRC_ENV, origin);
            if (rc) return rc;
        }
    }
    return 0;
}

int cli_config_file(cli_config *c, const char *cmd, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error(cmd, "cannot read config file %s: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    int rc = 0, depth = 0, done = 0;
    char *key = NULL;
    size_t key_line = 0;
    while (!rc && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            cli_error(cmd, "%s:%zu: not YAML: %s", path, p.problem_mark.line + 1,
                      p.problem ? p.problem : "parse error");
            rc = CLI_EXIT_USAGE;
            break;
        }
        size_t line = ev.start_mark.line + 1;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_MAPPING_START_EVENT:
            if (depth++ == 0 && !key) break;
            __attribute__((fallthrough)); /* a nested mapping is a value annal cannot take */
        case YAML_SEQUENCE_START_EVENT:
            cli_error(cmd, "%s:%zu: %s%s%s: want one value, not a %s", path, line,
                      key ? "setting '" : "", key ? key : "top level", key ? "'" : "",
                      ev.type == YAML_SEQUENCE_START_EVENT ? "list" : "mapping");
            rc = CLI_EXIT_USAGE;
            break;
        case YAML_MAPPING_END_EVENT: depth--; break;
        case YAML_ALIAS_EVENT:
            cli_error(cmd, "%s:%zu: aliases are not supported", path, line);
            rc = CLI_EXIT_USAGE;
            break;
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            if (depth != 1) {
                cli_error(cmd, "%s:%zu: want a mapping of settings to values", path, line);
                rc = CLI_EXIT_USAGE;
            } else if (!key) {
                key = cli_xstrndup(s, ev.data.scalar.length);
                key_line = line;
                if (find_setting(key, strlen(key)) < 0) {
                    cli_error(cmd, "%s:%zu: unknown setting '%s' (see docs/server.md)", path,
                              key_line, key);
                    rc = CLI_EXIT_USAGE;
                }
            } else {
                char origin[128];
                snprintf(origin, sizeof origin, "%s:%zu", path, key_line);
                rc =
                    cli_config_set(c, cmd, find_setting(key, strlen(key)), s, CFG_SRC_FILE, origin);
                free(key);
                key = NULL;
            }
            break;
        }
        default: break;
        }
        yaml_event_delete(&ev);
    }
    free(key);
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

const char *cli_config_get(const cli_config *c, int id) { return c->v[id].value; }

int cli_config_bool(const cli_config *c, int id) {
    return c->v[id].value && strcmp(c->v[id].value, "true") == 0;
}

void cli_config_describe(const cli_config *c, void (*log)(const char *line)) {
    static const char *const from[] = {"default", "file", "environment", "flag"};
    for (int i = 0; i < CFG_NSETTINGS; i++) {
        const cli_cfg_value *s = &c->v[i];
        if (!s->value) continue;
        char line[1024];
        snprintf(line, sizeof line, "config: %s = %s (%s %s)", settings[i].name,
                 settings[i].secret ? "****" : s->value, from[s->source], s->origin);
        log(line);
    }
}

void cli_config_free(cli_config *c) {
    for (int i = 0; i < CFG_NSETTINGS; i++) free(c->v[i].value);
    memset(c, 0, sizeof *c);
}
