/* bank.c -- a bank account as a decider on annal, using only annal.h (and jansson for the
 * JSON payloads): deposits and withdrawals, the balance by replay, an overdraft rejected,
 * history written by an older version of the program read through an upcaster, snapshots,
 * and two concurrent withdrawals that together would overdraw, of which exactly one wins.
 *
 * usage: bank DIR [--race RUNS]   (DIR: the store, created if missing)
 * --race repeats the two-withdrawals race RUNS times on fresh accounts and exits 1 unless
 * exactly one withdrawal succeeded every time. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "annal.h"

/* ------------------------------------------------------------------------------------
 * The domain. Amounts are integer cents. Version 1 of this program wrote deposits as
 * "MoneyDeposited" {"euros": N}; version 2 writes "Deposited" {"cents": N}. */

typedef struct account {
    int open;
    long long balance; /* cents */
    long long deposits, withdrawals;
} account;

typedef enum { OPEN, DEPOSIT, WITHDRAW } cmd_kind;
typedef struct account_cmd {
    cmd_kind kind;
    long long cents;
    const char *owner;
} account_cmd;

enum { E_CLOSED = 1, E_AMOUNT, E_FUNDS, E_OPEN };

static long long cents_of(const annal_event *ev) {
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *c = json_object_get(d, "cents");
    long long v = json_is_integer(c) ? (long long)json_integer_value(c) : -1;
    json_decref(d);
    return v;
}

static annal_err account_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    account *a = state;
    if (strcmp(ev->type, "AccountOpened") == 0) {
        a->open = 1;
        return ANNAL_OK;
    }
    long long c = cents_of(ev);
    if (c < 0) return ANNAL_ECORRUPT;
    if (strcmp(ev->type, "Deposited") == 0) {
        a->balance += c;
        a->deposits++;
    } else if (strcmp(ev->type, "Withdrawn") == 0) {
        a->balance -= c;
        a->withdrawals++;
    } else {
        return ANNAL_ECORRUPT;
    }
    return ANNAL_OK;
}

static annal_err account_decide(void *ctx, const void *state, const void *command,
                                annal_decision *out) {
    (void)ctx;
    const account *a = state;
    const account_cmd *c = command;
    char buf[160];
    int n;
    if (c->kind == OPEN) {
        if (a->open) return annal_decision_reject(out, E_OPEN, "account already open");
        n = snprintf(buf, sizeof buf, "{\"owner\":\"%s\"}", c->owner);
        return annal_decision_emit(out, "AccountOpened", buf, (size_t)n, NULL, 0);
    }
    if (!a->open) return annal_decision_reject(out, E_CLOSED, "no such account");
    if (c->cents <= 0) return annal_decision_reject(out, E_AMOUNT, "amount must be positive");
    if (c->kind == WITHDRAW && c->cents > a->balance) {
        snprintf(buf, sizeof buf, "insufficient funds: balance %lld.%02lld, asked %lld.%02lld",
                 a->balance / 100, a->balance % 100, c->cents / 100, c->cents % 100);
        return annal_decision_reject(out, E_FUNDS, buf);
    }
    n = snprintf(buf, sizeof buf, "{\"cents\":%lld}", c->cents);
    return annal_decision_emit(out, c->kind == DEPOSIT ? "Deposited" : "Withdrawn", buf, (size_t)n,
                               NULL, 0);
}

/* Snapshots: the state as text, so the file does not depend on this machine's layout. */
static annal_err account_encode(void *ctx, const void *state, annal_buf *out) {
    (void)ctx;
    const account *a = state;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%d %lld %lld %lld", a->open, a->balance, a->deposits,
                     a->withdrawals);
    return annal_buf_append(out, buf, (size_t)n);
}

static annal_err account_decode(void *ctx, void *state, const void *data, size_t len) {
    (void)ctx;
    account *a = state;
    char buf[96];
    if (len >= sizeof buf) return ANNAL_ECORRUPT;
    memcpy(buf, data, len);
    buf[len] = '\0';
    char *p = buf, *end;
    long long v[4];
    for (int i = 0; i < 4; i++, p = end) {
        v[i] = strtoll(p, &end, 10);
        if (end == p) return ANNAL_ECORRUPT;
    }
    *a = (account){(int)v[0], v[1], v[2], v[3]};
    return ANNAL_OK;
}

static const annal_decider account_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "account",
    .state_size = sizeof(account),
    .evolve = account_evolve,
    .decide = account_decide,
    .state_version = 1,
    .snapshot_encode = account_encode,
    .snapshot_decode = account_decode,
};

/* v1 "MoneyDeposited" {"euros": N}  ->  v2 "Deposited" {"cents": N * 100} */
static annal_err upcast_v1(void *ctx, const annal_event *ev, annal_buf *out) {
    (void)ctx;
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *e = json_object_get(d, "euros");
    annal_err rc = ANNAL_ECORRUPT;
    if (json_is_integer(e)) {
        char buf[48];
        int n =
            snprintf(buf, sizeof buf, "{\"cents\":%lld}", (long long)json_integer_value(e) * 100);
        rc = annal_buf_append(out, buf, (size_t)n);
    }
    json_decref(d);
    return rc;
}

/* ------------------------------------------------------------------------------------
 * Helpers */

static int fail(annal_db *db, const char *what, annal_err rc, const annal_command_result *r) {
    fprintf(stderr, "bank: %s: %s (%s)\n", what, annal_errname(rc),
            r && r->message[0] ? r->message : annal_db_errmsg(db));
    return 2;
}

static void money(char *buf, size_t cap, long long cents) {
    snprintf(buf, cap, "%s%lld.%02lld", cents < 0 ? "-" : "", llabs(cents) / 100,
             llabs(cents) % 100);
}

/* A stream name not used yet: prefix + the first free number. */
static void fresh(annal_db *db, const char *prefix, char *out, size_t cap) {
    for (int n = 1;; n++) {
        snprintf(out, cap, "%s%d", prefix, n);
        uint64_t head;
        if (annal_stream_head(db, out, &head) == ANNAL_ENOTFOUND) return;
    }
}

static annal_err run(annal_handler *h, const char *stream, cmd_kind k, long long cents,
                     annal_command_result *r) {
    account_cmd c = {k, cents, "Grace Hopper"};
    annal_command_meta meta = {.user = "teller", .correlation_id = stream};
    return annal_handle(h, stream, &c, &meta, r);
}

/* ------------------------------------------------------------------------------------
 * The race: two threads withdraw 60.00 from 100.00 at the same moment. */

typedef struct racer {
    annal_handler *h;
    const char *stream;
    pthread_barrier_t *start;
    annal_err rc;
    annal_command_result r;
} racer;

static void *withdraw60(void *arg) {
    racer *x = arg;
    pthread_barrier_wait(x->start);
    x->rc = run(x->h, x->stream, WITHDRAW, 6000, &x->r);
    return NULL;
}

static int race(annal_db *db, annal_handler *h, int runs) {
    char prefix[32], stream[48];
    for (int k = 1;; k++) { /* raceK-: unused by earlier invocations */
        snprintf(prefix, sizeof prefix, "race%d-", k);
        snprintf(stream, sizeof stream, "%s1", prefix);
        uint64_t head;
        if (annal_stream_head(db, stream, &head) == ANNAL_ENOTFOUND) break;
    }
    int good = 0, contended = 0;
    for (int i = 1; i <= runs; i++) {
        snprintf(stream, sizeof stream, "%s%d", prefix, i);
        annal_command_result r;
        annal_err rc = run(h, stream, OPEN, 0, &r);
        if (rc == ANNAL_OK) rc = run(h, stream, DEPOSIT, 10000, &r);
        if (rc != ANNAL_OK) return fail(db, "race setup", rc, &r);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        racer x[2] = {{h, stream, &start, ANNAL_OK, {0}}, {h, stream, &start, ANNAL_OK, {0}}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, withdraw60, &x[k]);
        for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
        pthread_barrier_destroy(&start);
        int won = 0, lost = 0;
        for (int k = 0; k < 2; k++) {
            if (x[k].rc != ANNAL_OK) return fail(db, "race withdrawal", x[k].rc, &x[k].r);
            if (x[k].r.rejected == E_FUNDS)
                lost++;
            else if (!x[k].r.rejected)
                won++;
            if (x[k].r.attempts > 1) contended++;
        }
        void *st;
        rc = annal_state_load(h, stream, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL);
        if (rc != ANNAL_OK) return fail(db, "race balance", rc, NULL);
        long long bal = ((account *)st)->balance;
        annal_state_free(h, st);
        if (won == 1 && lost == 1 && bal == 4000) {
            good++;
        } else {
            printf("race run %d: %d succeeded, %d rejected, balance %lld cents: WRONG\n", i, won,
                   lost, bal);
        }
    }
    printf("race: %d of %d runs: exactly one of two concurrent withdrawals of 60.00 from 100.00 "
           "succeeded (in %d runs both decided on the same balance and the conflict made the "
           "loser decide again)\n",
           good, runs, contended);
    return good == runs ? 0 : 1;
}

/* ------------------------------------------------------------------------------------
 * The story */

int main(int argc, char **argv) {
    int runs = 0;
    if (argc == 4 && strcmp(argv[2], "--race") == 0) {
        char *end;
        runs = (int)strtol(argv[3], &end, 10);
        if (*end || runs <= 0) argc = 0;
    } else if (argc != 2) {
        argc = 0;
    }
    if (argc == 0) {
        fprintf(stderr, "usage: bank DIR [--race RUNS]\n");
        return 1;
    }
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    annal_err rc = annal_db_open(argv[1], &opts, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "bank: cannot open %s: %s\n", argv[1], annal_errname(rc));
        return 2;
    }
    annal_schema *schema;
    if (annal_schema_new(&schema) != ANNAL_OK ||
        annal_schema_upcaster_add(schema, "MoneyDeposited", 1, "Deposited", upcast_v1, NULL) !=
            ANNAL_OK)
        return fail(db, "schema", ANNAL_ENOMEM, NULL);
    size_t sl = strlen(argv[1]) + 16;
    char *snapdir = malloc(sl);
    if (!snapdir) return fail(db, "memory", ANNAL_ENOMEM, NULL);
    snprintf(snapdir, sl, "%s/snapshots", argv[1]);
    annal_handler_opts ho;
    annal_handler_opts_init(&ho);
    ho.schema = schema;
    ho.snapshot_dir = snapdir; /* snapshots live beside the store, not in its log */
    ho.snapshot_every = 4;
    annal_handler *h;
    rc = annal_handler_open(db, &account_decider, &ho, &h);
    free(snapdir);
    if (rc != ANNAL_OK) return fail(db, "handler", rc, NULL);

    int status = 0;
    if (runs) {
        status = race(db, h, runs);
        goto out;
    }
    char stream[32];
    fresh(db, "account-", stream, sizeof stream);

    /* What version 1 of this program left behind: written directly, as it did. */
    annal_event_data old[2] = {
        {.type = "AccountOpened", .data = "{\"owner\":\"Grace Hopper\"}", .data_len = 24},
        {.type = "MoneyDeposited", .data = "{\"euros\":100}", .data_len = 13},
    };
    rc = annal_append(db, stream, ANNAL_EXPECT_NO_STREAM, old, 2, NULL);
    if (rc != ANNAL_OK) return fail(db, "legacy history", rc, NULL);
    printf("%s: version 1 wrote AccountOpened and MoneyDeposited {\"euros\":100}\n", stream);

    struct {
        cmd_kind k;
        long long cents;
    } cmds[] = {{DEPOSIT, 2550}, {WITHDRAW, 4000}, {WITHDRAW, 50000}, {DEPOSIT, 0}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        annal_command_result r;
        char amt[32];
        money(amt, sizeof amt, cmds[i].cents);
        rc = run(h, stream, cmds[i].k, cmds[i].cents, &r);
        if (rc != ANNAL_OK) return fail(db, "command", rc, &r);
        const char *what = cmds[i].k == DEPOSIT ? "deposit" : "withdraw";
        if (r.rejected)
            printf("%s %s: rejected: %s\n", what, amt, r.message);
        else
            printf("%s %s: accepted at revision %" PRIu64 "\n", what, amt, r.append.first_revision);
    }

    printf("\nHistory as stored, and as the current program reads it:\n");
    annal_iter *it;
    const annal_event *ev;
    rc = annal_read_stream(db, stream, 0, 0, 0, &it);
    if (rc != ANNAL_OK) return fail(db, "read", rc, NULL);
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        annal_event *up;
        if (annal_schema_upcast(schema, ev, &up) != ANNAL_OK) return fail(db, "upcast", rc, NULL);
        printf("  %" PRIu64 "  %-15s %-26.*s -> %-14s %.*s\n", ev->revision, ev->type,
               (int)ev->data_len, (const char *)ev->data, up->type, (int)up->data_len,
               (const char *)up->data);
        annal_free(up);
    }
    annal_iter_close(it);
    if (rc != ANNAL_END) return fail(db, "read", rc, NULL);

    void *st;
    annal_state_info info;
    rc = annal_state_load(h, stream, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, &info);
    if (rc != ANNAL_OK) return fail(db, "balance", rc, NULL);
    const account *a = st;
    char bal[32];
    money(bal, sizeof bal, a->balance);
    printf("\nBalance by replay: %s (%lld deposits, %lld withdrawals; revision %" PRId64
           ", snapshot at %" PRId64 ", %" PRIu64 " events folded after it)\n",
           bal, a->deposits, a->withdrawals, info.revision, info.snapshot_revision, info.folded);
    annal_state_free(h, st);
    status = race(db, h, 1);
out:
    annal_handler_close(h);
    annal_schema_free(schema);
    annal_db_close(db);
    return status;
}
