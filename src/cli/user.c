/*
 * user.c -- `annal user`: the users of a secure `annal serve` (docs/security.md). Through
 * the server that owns the store (its Users service over the local socket, as the admin,
 * so its caches learn of the change at once), else directly on the store. Passwords are
 * read from standard input, never from the command line (other users see arguments).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "annal_server.h"
#include "cli.h"
#include "route.h"
#include "users.pb-c.h"

static const char usage[] =
    "usage: annal [--data DIR] user add NAME [--full-name TEXT] [--groups G1,G2]\n"
    "       annal [--data DIR] user passwd NAME\n"
    "       annal [--data DIR] user list [--json]\n"
    "       annal [--data DIR] user disable|enable|remove NAME\n"
    "       annal --server kurrentdb://ADMIN:PASSWORD@HOST:PORT?... user ...\n"
    "\n"
    "Manage the users of a secure `annal serve` (docs/security.md). They live in the\n"
    "store's system streams ($user-<name>, $users), passwords as argon2id hashes. While a\n"
    "server owns the store the change goes through it (and applies at once); --server\n"
    "sends it to a server by its address (KurrentDB too); otherwise the store is\n"
    "changed directly. `add` and `passwd` read the password from standard\n"
    "input (a terminal is asked without echo). `passwd admin` (or ops) also creates the\n"
    "built-in user when missing: a secure server's first start needs an admin password.\n"
    "Roles are groups: $admins may do anything, $ops may run operations.\n"
    "\n"
    "Options:\n"
    "  --full-name TEXT   the user's full name\n"
    "  --groups LIST      comma-separated groups (roles)\n"
    "  --json             list as JSON lines: name, full_name, groups, disabled, updated\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 2 no such user or store, 3 the user exists, 5 store error.\n";

enum { OPT_FULL, OPT_GROUPS, OPT_JSON };
static const cli_option options[] = {
    {"full-name", 1, OPT_FULL}, {"groups", 1, OPT_GROUPS}, {"json", 0, OPT_JSON}, {NULL, 0, 0}};

/* One line of standard input (without echo on a terminal) into buf. 0, or -1. */
static int read_password(const char *name, char *buf, size_t size) {
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "password for %s: ", name);
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    int ok = fgets(buf, (int)size, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fputc('\n', stderr);
    }
    if (!ok) return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] ? 0 : -1;
}

static int exit_for(annal_err e) {
    return e == ANNAL_ENOTFOUND   ? CLI_EXIT_NOTFOUND
           : e == ANNAL_ECONFLICT ? CLI_EXIT_CONFLICT
           : e == ANNAL_EINVAL    ? CLI_EXIT_USAGE
                                  : CLI_EXIT_STORE;
}

static void print_user(const annal_user *u, int json) {
    char when[CLI_TIME_LEN];
    cli_time_rfc3339(u->updated_ns, when);
    if (json) {
        cli_buf b = {0};
        cli_buf_adds(&b, "{\"name\":");
        cli_json_add_string(&b, u->name, strlen(u->name));
        cli_buf_adds(&b, ",\"full_name\":");
        cli_json_add_string(&b, u->full_name, strlen(u->full_name));
        cli_buf_adds(&b, ",\"groups\":");
        cli_json_add_string(&b, u->groups, strlen(u->groups));
        cli_buf_addf(&b, ",\"disabled\":%s,\"updated\":\"%s\"}", u->disabled ? "true" : "false",
                     when);
        puts(cli_buf_cstr(&b));
        cli_buf_free(&b);
    } else {
        printf("%-20s %-24s %-9s %s\n", u->name, u->groups[0] ? u->groups : "-",
               u->disabled ? "disabled" : "enabled", u->full_name);
    }
}

/* ---- through the server */
static int on_details(void *ctx, const uint8_t *p, size_t n) {
    EventStore__Client__Users__DetailsResp *r =
        event_store__client__users__details_resp__unpack(NULL, n, p);
    if (!r || !r->user_details) {
        if (r) event_store__client__users__details_resp__free_unpacked(r, NULL);
        return 0;
    }
    const EventStore__Client__Users__DetailsResp__UserDetails *d = r->user_details;
    annal_user u;
    memset(&u, 0, sizeof u);
    snprintf(u.name, sizeof u.name, "%s", d->login_name ? d->login_name : "");
    snprintf(u.full_name, sizeof u.full_name, "%s", d->full_name ? d->full_name : "");
    for (size_t i = 0, len = 0; i < d->n_groups; i++) {
        int w = snprintf(u.groups + len, sizeof u.groups - len, "%s%s", i ? "," : "", d->groups[i]);
        if (w < 0 || (size_t)w >= sizeof u.groups - len) break;
        len += (size_t)w;
    }
    u.disabled = d->disabled;
    u.updated_ns = d->last_updated ? d->last_updated->ticks_since_epoch * 100 : 0;
    print_user(&u, *(int *)ctx);
    event_store__client__users__details_resp__free_unpacked(r, NULL);
    return 0;
}

static annal_err via_server(annal_remote *r, const char *sub, const char *name, const char *full,
                            const char *groups, const char *password, int json) {
    char *gl[64];
    char gbuf[512];
    size_t ng = 0;
    snprintf(gbuf, sizeof gbuf, "%s", groups ? groups : "");
    for (char *p = gbuf, *save = NULL, *t; ng < 64 && (t = strtok_r(p, ",", &save)); p = NULL)
        gl[ng++] = t;
    if (strcmp(sub, "add") == 0) {
        EventStore__Client__Users__CreateReq req = EVENT_STORE__CLIENT__USERS__CREATE_REQ__INIT;
        EventStore__Client__Users__CreateReq__Options o =
            EVENT_STORE__CLIENT__USERS__CREATE_REQ__OPTIONS__INIT;
        o.login_name = (char *)name;
        o.password = (char *)password;
        o.full_name = (char *)(full ? full : "");
        o.n_groups = ng;
        o.groups = gl;
        req.options = &o;
        return annal_remote_call(r, "/event_store.client.users.Users/Create", &req.base, NULL,
                                 NULL);
    }
    if (strcmp(sub, "passwd") == 0) {
        EventStore__Client__Users__ResetPasswordReq req =
            EVENT_STORE__CLIENT__USERS__RESET_PASSWORD_REQ__INIT;
        EventStore__Client__Users__ResetPasswordReq__Options o =
            EVENT_STORE__CLIENT__USERS__RESET_PASSWORD_REQ__OPTIONS__INIT;
        o.login_name = (char *)name;
        o.new_password = (char *)password;
        req.options = &o;
        return annal_remote_call(r, "/event_store.client.users.Users/ResetPassword", &req.base,
                                 NULL, NULL);
    }
    if (strcmp(sub, "list") == 0) {
        EventStore__Client__Users__DetailsReq req = EVENT_STORE__CLIENT__USERS__DETAILS_REQ__INIT;
        EventStore__Client__Users__DetailsReq__Options o =
            EVENT_STORE__CLIENT__USERS__DETAILS_REQ__OPTIONS__INIT;
        o.login_name = "";
        req.options = &o;
        return annal_remote_call(r, "/event_store.client.users.Users/Details", &req.base,
                                 on_details, &json);
    }
    /* Disable, Enable and Delete requests share one shape. */
    EventStore__Client__Users__DeleteReq req = EVENT_STORE__CLIENT__USERS__DELETE_REQ__INIT;
    EventStore__Client__Users__DeleteReq__Options o =
        EVENT_STORE__CLIENT__USERS__DELETE_REQ__OPTIONS__INIT;
    o.login_name = (char *)name;
    req.options = &o;
    const char *method = strcmp(sub, "disable") == 0  ? "/event_store.client.users.Users/Disable"
                         : strcmp(sub, "enable") == 0 ? "/event_store.client.users.Users/Enable"
                                                      : "/event_store.client.users.Users/Delete";
    return annal_remote_call(r, method, &req.base, NULL, NULL);
}

/* ---- directly on the store */
static annal_err direct(annal_db *db, const char *sub, const char *name, const char *full,
                        const char *groups, const char *password, int json) {
    if (strcmp(sub, "list") == 0) {
        annal_user *list;
        size_t n;
        annal_err e = annal_user_list(db, &list, &n);
        for (size_t i = 0; e == ANNAL_OK && i < n; i++) print_user(&list[i], json);
        annal_user_list_free(list);
        return e;
    }
    if (strcmp(sub, "remove") == 0) return annal_user_remove(db, name);
    annal_user_change ch = {0, full, groups, NULL, -1};
    if (strcmp(sub, "add") == 0) {
        ch.flags = ANNAL_USER_CREATE | ANNAL_USER_MUST_CREATE;
        ch.password = password;
    } else if (strcmp(sub, "passwd") == 0) {
        ch.password = password;
        annal_user u;
        annal_err e = annal_user_get(db, name, &u);
        int builtin = strcmp(name, "admin") == 0 || strcmp(name, "ops") == 0;
        if (e == ANNAL_ENOTFOUND && builtin) {
            ch.flags = ANNAL_USER_CREATE;
            ch.groups = name[0] == 'a' ? "$admins" : "$ops";
            ch.full_name = name[0] == 'a' ? "Administrator" : "Operations";
        } else if (e != ANNAL_OK) {
            return e;
        }
        if (e == ANNAL_ENOTFOUND || !u.has_password) ch.disabled = 0; /* its first password */
    } else {
        ch.disabled = strcmp(sub, "disable") == 0;
    }
    return annal_user_put(db, name, &ch);
}

int cli_cmd_user(cli_global *g, int argc, char **argv) {
    const char *sub = NULL, *name = NULL, *full = NULL, *groups = NULL;
    int json = 0;
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("user", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (!sub)
                sub = v;
            else if (!name)
                name = v;
            else
                return cli_usage_error("user", "unexpected argument '%s'", v);
            break;
        case OPT_FULL: full = v; break;
        case OPT_GROUPS: groups = v; break;
        case OPT_JSON: json = 1; break;
        }
    }
    static const char *const subs[] = {"add", "passwd", "list", "disable", "enable", "remove"};
    int known = 0;
    for (size_t i = 0; sub && i < sizeof subs / sizeof subs[0]; i++) known |= !strcmp(sub, subs[i]);
    if (!known) return cli_usage_error("user", "want add, passwd, list, disable, enable or remove");
    int is_list = strcmp(sub, "list") == 0;
    if (is_list != !name)
        return cli_usage_error("user", is_list ? "list takes no name" : "want a user name");

    char password[1024] = "";
    int needs_password = !strcmp(sub, "add") || !strcmp(sub, "passwd");
    if (needs_password && read_password(name, password, sizeof password) != 0)
        return cli_usage_error("user", "no password on standard input");

    annal_remote *r = NULL;
    int rc = cli_route(g, "user", &r);
    annal_err e = ANNAL_OK;
    if (!rc && r) {
        e = via_server(r, sub, name, full, groups, password, json);
        if (e != ANNAL_OK) cli_error("user", "%s: %s", sub, annal_remote_errmsg(r));
        annal_remote_close(r);
    } else if (!rc) {
        annal_db *db;
        rc = cli_open(g, "user", is_list ? ANNAL_OPEN_READONLY : ANNAL_OPEN_CREATE, NULL, &db);
        if (!rc) {
            e = direct(db, sub, name, full, groups, password, json);
            if (e != ANNAL_OK)
                cli_error("user", "%s %s: %s", sub, name ? name : "",
                          e == ANNAL_ENOTFOUND   ? "no such user"
                          : e == ANNAL_ECONFLICT ? "the user exists already"
                          : e == ANNAL_EINVAL    ? "bad name (1 to 64 bytes, no spaces, ':', ',' "
                                                   "or '/', not starting with '$') or value"
                                                 : annal_strerror(e));
            annal_db_close(db);
        }
    }
    OPENSSL_cleanse(password, sizeof password);
    if (rc) return rc;
    if (e != ANNAL_OK) return exit_for(e);
    if (!is_list) printf("user %s: %s\n", name, sub);
    return cli_finish_output("user", stdout, "standard output", CLI_EXIT_OK);
}
