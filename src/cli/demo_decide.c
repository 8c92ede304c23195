/*
 * demo_decide.c -- the write side of `annal demo`: the seed's bank account and inventory
 * stories run through deciders and a command handler, with real concurrent writers.
 * Every rule lives in decide(); the store's expected revisions catch the races.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- a bank account: deposits, withdrawals, no overdraft ---------------------------- */

typedef struct account {
    long long balance; /* cents */
} account;
typedef struct money_cmd {
    int deposit;
    long long cents;
} money_cmd;

static long long cents_of(const annal_event *ev) {
    char buf[32];
    size_t n = ev->data_len < sizeof buf - 1 ? ev->data_len : sizeof buf - 1;
    memcpy(buf, ev->data, n);
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

static annal_err account_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    account *a = state;
    a->balance += strcmp(ev->type, "Deposited") == 0 ? cents_of(ev) : -cents_of(ev);
    return ANNAL_OK;
}

static annal_err account_decide(void *ctx, const void *state, const void *command,
                                annal_decision *out) {
    (void)ctx;
    const account *a = state;
    const money_cmd *c = command;
    if (!c->deposit && c->cents > a->balance)
        return annal_decision_reject(out, 1, "insufficient funds");
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", c->cents);
    return annal_decision_emit(out, c->deposit ? "Deposited" : "Withdrawn", buf, (size_t)n, NULL,
                               0);
}

static const annal_decider account_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "demo-account",
    .state_size = sizeof(account),
    .evolve = account_evolve,
    .decide = account_decide,
};

/* ---- inventory: stock is checked before shipping ------------------------------------ */

typedef struct stock {
    long long on_hand;
} stock;
typedef struct stock_cmd {
    int receive; /* else: ship one to a customer */
    long long qty;
} stock_cmd;

static annal_err stock_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    stock *s = state;
    s->on_hand += strcmp(ev->type, "StockReceived") == 0 ? cents_of(ev) : -cents_of(ev);
    return ANNAL_OK;
}

static annal_err stock_decide(void *ctx, const void *state, const void *command,
                              annal_decision *out) {
    (void)ctx;
    const stock *s = state;
    const stock_cmd *c = command;
    if (!c->receive && c->qty > s->on_hand) return annal_decision_reject(out, 1, "out of stock");
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", c->qty);
    return annal_decision_emit(out, c->receive ? "StockReceived" : "ItemShipped", buf, (size_t)n,
                               NULL, 0);
}

static const annal_decider stock_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "demo-stock",
    .state_size = sizeof(stock),
    .evolve = stock_evolve,
    .decide = stock_decide,
};

/* ---- running commands ----------------------------------------------------------------- */

typedef struct racer {
    annal_handler *h;
    const char *stream;
    const void *cmd;
    const char *user;
    annal_err rc;
    annal_command_result res;
} racer;

static void *race(void *p) {
    racer *r = p;
    annal_command_meta meta = {.user = r->user, .correlation_id = "annal-demo"};
    r->rc = annal_handle(r->h, r->stream, r->cmd, &meta, &r->res);
    return NULL;
}

/* Where an outcome stands in the stream's history: an append at its first revision, a
 * rejection just after the last event its final decision saw. The threads finish in any
 * order; printed in this order, the lines tell what happened. */
static int64_t commit_key(const racer *r) {
    return r->res.rejected ? r->res.state_revision * 2 + 1
                           : (int64_t)r->res.append.first_revision * 2;
}

static int by_commit(const void *a, const void *b) {
    int64_t ka = commit_key(*(racer *const *)a), kb = commit_key(*(racer *const *)b);
    return (ka > kb) - (ka < kb);
}

static void print_outcome(const racer *r, const char *what) {
    const char *s = r->res.attempts == 1 ? "" : "s";
    if (!r->res.rejected) {
        printf("    %-9s %s: done at revision %" PRIu64 " after %u attempt%s\n", r->user, what,
               r->res.append.first_revision, r->res.attempts, s);
    } else if (r->res.state_revision < 0) {
        printf("    %-9s %s: rejected (%s) on an empty stream after %u attempt%s\n", r->user, what,
               r->res.message, r->res.attempts, s);
    } else {
        printf("    %-9s %s: rejected (%s) seeing revision %" PRId64 " after %u attempt%s\n",
               r->user, what, r->res.message, r->res.state_revision, r->res.attempts, s);
    }
}

/* Run commands at once from n threads; print each outcome in commit order. Returns how
 * many succeeded, or -1 on a store error. */
static int run_all(racer *r, int n, const char *what) {
    pthread_t t[16];
    racer *order[16] = {0};
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, race, &r[i]);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < n; i++) {
        if (r[i].rc != ANNAL_OK) {
            cli_error("demo", "%s: %s (%s)", what, annal_errname(r[i].rc), r[i].res.message);
            return -1;
        }
        order[i] = &r[i];
    }
    qsort(order, (size_t)n, sizeof order[0], by_commit);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        print_outcome(order[i], what);
        ok += !order[i]->res.rejected;
    }
    return ok;
}

/* The race's summary, from what the loser actually did: a loser whose first decision
 * conflicted decided again on the new balance; one that read the new balance at once
 * was refused without a retry. */
static void print_race_summary(const racer *r, int n, int ok) {
    printf("  -> %d of %d succeeded", ok, n);
    for (int i = 0; i < n; i++) {
        if (!r[i].res.rejected) continue;
        if (r[i].res.attempts > 1)
            printf("; %s's first decision conflicted with the winner's append, so it decided "
                   "again on the new balance and was refused",
                   r[i].user);
        else
            printf("; %s read the balance after the winner's withdrawal and was refused at its "
                   "first attempt",
                   r[i].user);
    }
    printf(".\n");
}

static unsigned total_attempts(const racer *r, int n) {
    unsigned a = 0;
    for (int i = 0; i < n; i++) a += r[i].res.attempts;
    return a;
}

static int one(annal_handler *h, const char *stream, const void *cmd, const char *user,
               const char *what) {
    racer r = {h, stream, cmd, user, ANNAL_OK, {0}};
    return run_all(&r, 1, what);
}

int cli_demo_decide(annal_db *db, const char *suffix) {
    annal_handler *bank = NULL, *shop = NULL;
    annal_err e = annal_handler_open(db, &account_decider, NULL, &bank);
    if (e == ANNAL_OK) e = annal_handler_open(db, &stock_decider, NULL, &shop);
    if (e != ANNAL_OK) {
        annal_handler_close(bank);
        return cli_fail("demo", db, e, "cannot open a command handler");
    }
    char acct[64], item[64];
    snprintf(acct, sizeof acct, "account-%s", suffix);
    snprintf(item, sizeof item, "stock-%s", suffix);
    int rc = 0;

    printf("\nBank account %s: the balance is the fold of its deposits and withdrawals.\n", acct);
    money_cmd dep = {1, 10000}, w30 = {0, 3000}, w100 = {0, 10000}, w60 = {0, 6000};
    if (one(bank, acct, &dep, "ann", "deposit 100.00") < 0 ||
        one(bank, acct, &w30, "ann", "withdraw 30.00") < 0 ||
        one(bank, acct, &w100, "ann", "withdraw 100.00") < 0)
        rc = CLI_EXIT_STORE;
    if (!rc) {
        printf("  Two withdrawals of 60.00 at the same moment from 70.00:\n");
        racer r[2] = {{bank, acct, &w60, "bob", ANNAL_OK, {0}},
                      {bank, acct, &w60, "carol", ANNAL_OK, {0}}};
        int ok = run_all(r, 2, "withdraw 60.00");
        if (ok < 0)
            rc = CLI_EXIT_STORE;
        else
            print_race_summary(r, 2, ok);
    }
    void *st = NULL;
    annal_state_info info;
    if (!rc && annal_state_load(bank, acct, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, &info) ==
                   ANNAL_OK) {
        printf("  Balance by replaying %" PRIu64 " events: %.2f\n", info.folded,
               (double)((account *)st)->balance / 100);
        annal_state_free(bank, st);
    }

    if (!rc) {
        printf("\nInventory %s: 3 in stock, 5 customers order one each at once.\n", item);
        stock_cmd in = {1, 3}, buy = {0, 1};
        if (one(shop, item, &in, "warehouse", "receive 3") < 0) rc = CLI_EXIT_STORE;
        racer r[5];
        static const char *who[5] = {"dan", "eve", "fay", "gus", "hal"};
        for (int i = 0; i < 5 && !rc; i++) r[i] = (racer){shop, item, &buy, who[i], ANNAL_OK, {0}};
        int ok = rc ? -1 : run_all(r, 5, "order 1");
        if (ok < 0)
            rc = CLI_EXIT_STORE;
        else
            printf("  -> %d shipped, %d refused: never oversold (%u attempts in all).\n", ok,
                   5 - ok, total_attempts(r, 5));
    }
    annal_handler_close(bank);
    annal_handler_close(shop);
    return rc;
}
