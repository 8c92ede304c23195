/* readme_decider.c -- the README's decider: an account whose balance may not go below
 * zero, run through a handler. Usage: readme_decider [DIR] (default ./shop). */
#include <annal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { long long balance; } account;               /* the state */
typedef struct { int deposit; long long cents; } account_cmd; /* a command */

static annal_err evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    account *a = state;
    char buf[32];
    if (ev->data_len >= sizeof buf) return ANNAL_ECORRUPT;
    memcpy(buf, ev->data, ev->data_len);
    buf[ev->data_len] = '\0';
    long long c = strtoll(buf, NULL, 10);
    a->balance += strcmp(ev->type, "Deposited") == 0 ? c : -c;
    return ANNAL_OK;
}

static annal_err decide(void *ctx, const void *state, const void *command, annal_decision *out) {
    (void)ctx;
    const account *a = state;
    const account_cmd *c = command;
    if (!c->deposit && c->cents > a->balance)
        return annal_decision_reject(out, 1, "insufficient funds");
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", c->cents);
    return annal_decision_emit(out, c->deposit ? "Deposited" : "Withdrawn", buf, (size_t)n,
                               NULL, 0);
}

static const annal_decider account_decider = {
    .version = ANNAL_DECIDER_VERSION, .name = "account", .state_size = sizeof(account),
    .evolve = evolve, .decide = decide,
};

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "./shop";
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    if (annal_db_open(dir, &opts, &db) != ANNAL_OK) return 1;
    annal_handler *h;
    if (annal_handler_open(db, &account_decider, NULL, &h) != ANNAL_OK) return 1;

    account_cmd cmds[] = {{1, 10000}, {0, 5000}, {0, 50000}}; /* +100.00, -50.00, -500.00 */
    annal_command_meta meta = {.user = "ann", .correlation_id = "request-42"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        annal_command_result r;
        annal_err rc = annal_handle(h, "account-7", &cmds[i], &meta, &r);
        if (rc != ANNAL_OK)
            printf("failed: %s: %s\n", annal_strerror(rc), r.message);
        else if (r.rejected)
            printf("rejected: %s\n", r.message); /* the domain said no */
        else
            printf("accepted: revision %lld\n", (long long)r.append.revision);
    }

    void *state;
    if (annal_state_load(h, "account-7", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &state,
                         NULL) == ANNAL_OK) {
        printf("balance: %lld cents\n", ((const account *)state)->balance);
        annal_state_free(h, state);
    }
    annal_handler_close(h);
    annal_db_close(db);
    return 0;
}
