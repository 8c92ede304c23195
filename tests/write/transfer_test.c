/* transfer_test.c -- decisions across streams (annal_handle_streams): a transfer decider
 * that withdraws from one account and deposits to another in one decision, appended to
 * both atomically; conflicts on either account retried (or refused when the retry sees a
 * state that no longer allows it); a stream read but not written checked; a tombstoned
 * account failing the whole transfer. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------
 * The account decider: "Opened", "Deposited" and "Withdrawn" events carry a decimal
 * amount; a transfer (streams: from, to) moves money if both are open and from has it. */

typedef struct account {
    int opened;
    long long balance;
} account;

enum { OPEN, TRANSFER, FEE };
enum { R_NOT_OPEN = 1, R_FUNDS = 2 };

typedef struct cmd {
    int kind;
    long long amount;
    size_t emit_to;      /* OPEN: the stream index to emit to (normally 0) */
    annal_db *interfere; /* append to interfere_stream from inside decide */
    const char *interfere_stream;
    const char *interfere_type; /* its event, with interfere_amount; NULL: tombstone it */
    long long interfere_amount;
    int interfere_times; /* in this many decides */
    int interfered;
} cmd;

static long long parse_ll(const void *p, size_t n) {
    char buf[32];
    if (n >= sizeof buf) return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static annal_err a_evolve(void *c, void *state, const annal_event *ev) {
    (void)c;
    account *a = state;
    long long v = parse_ll(ev->data, ev->data_len);
    if (strcmp(ev->type, "Opened") == 0) {
        a->opened = 1;
        a->balance = v;
    } else if (strcmp(ev->type, "Deposited") == 0) {
        a->balance += v;
    } else if (strcmp(ev->type, "Withdrawn") == 0) {
        a->balance -= v;
    } else {
        return ANNAL_ECORRUPT;
    }
    return ANNAL_OK;
}

static annal_err emit(annal_decision *d, size_t to, const char *type, long long amount) {
    char data[32];
    int n = snprintf(data, sizeof data, "%lld", amount);
    return annal_decision_emit_to(d, to, type, data, (size_t)n, NULL, 0);
}

static annal_err a_decide(void *c, const void *state, const void *command, annal_decision *d) {
    (void)c;
    cmd *k = (cmd *)command;
    if (k->interfere && k->interfered < k->interfere_times) {
        k->interfered++;
        char data[32];
        snprintf(data, sizeof data, "%lld", k->interfere_amount);
        annal_err rc = k->interfere_type
                           ? tu_append1(k->interfere, k->interfere_stream, ANNAL_EXPECT_ANY,
                                        k->interfere_type, data, NULL)
                           : annal_stream_delete(k->interfere, k->interfere_stream,
                                                 ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, NULL);
        if (rc != ANNAL_OK) return rc;
    }
    const account *from = state;
    if (k->kind == OPEN) return emit(d, k->emit_to, "Opened", k->amount);
    const account *to = annal_decision_state(d, 1);
    if (!to) return ANNAL_EINVAL;
    if (!from->opened || !to->opened) return annal_decision_reject(d, R_NOT_OPEN, "not open");
    if (from->balance < k->amount) return annal_decision_reject(d, R_FUNDS, "insufficient funds");
    annal_err rc = emit(d, 0, "Withdrawn", k->amount);
    /* A fee goes nowhere: the second account is only read (it must stay open). */
    if (rc == ANNAL_OK && k->kind == TRANSFER) rc = emit(d, 1, "Deposited", k->amount);
    return rc;
}

static int decodes; /* snapshot_decode calls */

static annal_err a_encode(void *c, const void *state, annal_buf *out) {
    (void)c;
    return annal_buf_append(out, state, sizeof(account));
}

static annal_err a_decode(void *c, void *state, const void *data, size_t len) {
    (void)c;
    decodes++;
    if (len != sizeof(account)) return ANNAL_ECORRUPT;
    memcpy(state, data, len);
    return ANNAL_OK;
}

static const annal_decider account_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "account",
    .state_size = sizeof(account),
    .evolve = a_evolve,
    .decide = a_decide,
};

/* ------------------------------------------------------------------------------------
 * Fixture */

typedef struct fx {
    char *dir;
    annal_db *db;
    annal_handler *h;
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->dir = tu_tmpdir("transfer");
    f->db = tu_open(f->dir, ANNAL_OPEN_NOSYNC);
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.max_retries = 3;
    TU_OK(f->db, annal_handler_open(f->db, &account_decider, &o, &f->h));
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    annal_handler_close(f->h);
    annal_db_close(f->db);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void open_account(fx *f, const char *stream, long long amount) {
    cmd c = {.kind = OPEN, .amount = amount};
    annal_command_result r;
    TU_OK(f->db, annal_handle(f->h, stream, &c, NULL, &r));
    assert_int_equal(r.append.count, 1);
}

static long long balance(fx *f, const char *stream) {
    void *st;
    TU_OK(f->db,
          annal_state_load(f->h, stream, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL));
    long long b = ((account *)st)->balance;
    annal_state_free(f->h, st);
    return b;
}

static int64_t head(fx *f, const char *stream) {
    uint64_t rev;
    annal_err rc = annal_stream_head(f->db, stream, &rev);
    return rc == ANNAL_OK ? (int64_t)rev : -1;
}

static const char *AB[] = {"account-a", "account-b"};

/* ------------------------------------------------------------------------------------
 * Tests */

static void test_transfer(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 5);
    cmd c = {.kind = TRANSFER, .amount = 30};
    annal_command_result r;
    annal_append_result parts[2];
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts));
    assert_int_equal(r.rejected, 0);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.state_revision, 0);
    assert_int_equal(r.append.count, 2); /* the whole set */
    assert_int_equal(parts[0].count, 1);
    assert_int_equal(parts[0].revision, 1);
    assert_int_equal(parts[1].count, 1);
    assert_int_equal(parts[1].first_revision, 1);
    assert_int_equal(parts[1].revision, 1);
    /* One set: consecutive positions, in the order emitted. */
    assert_int_equal(r.append.first_position, parts[0].first_position);
    assert_int_equal(parts[1].first_position, parts[0].first_position + 1);
    assert_int_equal(balance(f, AB[0]), 70);
    assert_int_equal(balance(f, AB[1]), 35);
    annal_event *ev;
    TU_OK(f->db, annal_event_get(f->db, parts[1].first_position, &ev));
    assert_string_equal(ev->stream, AB[1]);
    assert_string_equal(ev->type, "Deposited");
    annal_free(ev);
}

static void test_rejected_writes_nothing(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 10);
    cmd c = {.kind = TRANSFER, .amount = 30};
    annal_command_result r;
    annal_append_result parts[2];
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts));
    assert_int_equal(r.rejected, R_NOT_OPEN); /* b was never opened */
    open_account(f, AB[1], 0);
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts));
    assert_int_equal(r.rejected, R_FUNDS);
    assert_string_equal(r.message, "insufficient funds");
    assert_int_equal(head(f, AB[0]), 0);
    assert_int_equal(head(f, AB[1]), 0);
}

/* Another writer appends to account `who` (0: from, 1: to) while the first decision runs:
 * the set conflicts, the handler folds both streams and decides again. */
static void conflict_retried(fx *f, int who) {
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    cmd c = {.kind = TRANSFER,
             .amount = 60,
             .interfere = f->db,
             .interfere_stream = AB[who],
             .interfere_type = "Deposited",
             .interfere_amount = 7,
             .interfere_times = 1};
    annal_command_result r;
    annal_append_result parts[2];
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts));
    assert_int_equal(r.rejected, 0);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(parts[who].revision, 2); /* Opened, the interference, the transfer */
    assert_int_equal(parts[1 - who].revision, 1);
    assert_int_equal(balance(f, AB[0]), 100 - 60 + (who == 0 ? 7 : 0));
    assert_int_equal(balance(f, AB[1]), 60 + (who == 1 ? 7 : 0));
}

static void test_conflict_on_from_retried(void **state) { conflict_retried(*state, 0); }
static void test_conflict_on_to_retried(void **state) { conflict_retried(*state, 1); }

/* The retry sees a state that refuses the command: nothing of the transfer is written. */
static void test_conflict_then_refused(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    cmd c = {.kind = TRANSFER,
             .amount = 60,
             .interfere = f->db,
             .interfere_stream = AB[0],
             .interfere_type = "Withdrawn",
             .interfere_amount = 50,
             .interfere_times = 1};
    annal_command_result r;
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, NULL));
    assert_int_equal(r.rejected, R_FUNDS);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.state_revision, 1);
    assert_int_equal(balance(f, AB[0]), 50);
    assert_int_equal(head(f, AB[1]), 0);
}

/* A stream only read (the fee's second account) is checked: a change to it conflicts. */
static void test_read_only_stream_checked(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    cmd c = {.kind = FEE,
             .amount = 10,
             .interfere = f->db,
             .interfere_stream = AB[1],
             .interfere_type = "Deposited",
             .interfere_amount = 1,
             .interfere_times = 1};
    annal_command_result r;
    annal_append_result parts[2];
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts));
    assert_int_equal(r.attempts, 2);
    assert_int_equal(parts[0].count, 1);
    assert_int_equal(parts[1].count, 0);
    assert_int_equal(parts[1].revision, 1); /* its state's revision: the interference folded */
    assert_int_equal(balance(f, AB[0]), 90);
}

static void test_conflicts_exhausted(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    cmd c = {.kind = TRANSFER,
             .amount = 10,
             .interfere = f->db,
             .interfere_stream = AB[1],
             .interfere_type = "Deposited",
             .interfere_amount = 1,
             .interfere_times = 100};
    annal_command_result r;
    annal_append_result parts[2];
    assert_int_equal(annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts), ANNAL_ECONFLICT);
    assert_int_equal(r.attempts, 4);        /* 1 + max_retries */
    assert_int_equal(parts[1].revision, 4); /* the actual one: Opened + 4 interferences */
    assert_int_equal(balance(f, AB[0]), 100);
    assert_int_equal(balance(f, AB[1]), 4);
}

static void test_tombstoned_account(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    TU_OK(f->db, annal_stream_delete(f->db, AB[1], ANNAL_EXPECT_ANY, ANNAL_DELETE_HARD, NULL));
    cmd c = {.kind = TRANSFER, .amount = 10};
    annal_command_result r;
    /* Its state cannot even be read: the command fails before deciding. */
    assert_int_equal(annal_handle_streams(f->h, AB, 2, &c, NULL, &r, NULL), ANNAL_EDELETED);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(head(f, AB[0]), 0);
}

/* Tombstoned while the decision runs: the set fails whole, from's withdrawal with it. */
static void test_tombstoned_meanwhile(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    cmd c = {.kind = TRANSFER,
             .amount = 10,
             .interfere = f->db,
             .interfere_stream = AB[1],
             .interfere_times = 1};
    annal_command_result r;
    annal_append_result parts[2];
    assert_int_equal(annal_handle_streams(f->h, AB, 2, &c, NULL, &r, parts), ANNAL_EDELETED);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(balance(f, AB[0]), 100);
    assert_int_equal(head(f, AB[0]), 0);
}

/* Each stream of a command has its own snapshot, written and read as for one stream. */
static void test_snapshots_per_stream(void **state) {
    fx *f = *state;
    open_account(f, AB[0], 100);
    open_account(f, AB[1], 0);
    char snapdir[4096];
    snprintf(snapdir, sizeof snapdir, "%s/snapshots", f->dir);
    annal_decider d = account_decider;
    d.state_version = 1;
    d.snapshot_encode = a_encode;
    d.snapshot_decode = a_decode;
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.snapshot_dir = snapdir;
    o.snapshot_every = 1;
    annal_handler *h;
    TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
    cmd c = {.kind = TRANSFER, .amount = 10};
    annal_command_result r;
    decodes = 0;
    TU_OK(f->db, annal_handle_streams(h, AB, 2, &c, NULL, &r, NULL));
    assert_int_equal(decodes, 0);
    assert_int_equal(r.folded, 2); /* each account's Opened */
    TU_OK(f->db, annal_handle_streams(h, AB, 2, &c, NULL, &r, NULL));
    assert_int_equal(decodes, 2);  /* both states from their snapshots (at Opened) */
    assert_int_equal(r.folded, 2); /* and each the first transfer's event after it */
    TU_OK(f->db, annal_handle_streams(h, AB, 2, &c, NULL, &r, NULL));
    assert_int_equal(decodes, 4);
    assert_int_equal(r.folded, 2);
    annal_handler_close(h);
    assert_int_equal(balance(f, AB[0]), 70);
    assert_int_equal(balance(f, AB[1]), 30);
}

static void test_invalid(void **state) {
    fx *f = *state;
    cmd c = {.kind = TRANSFER, .amount = 1};
    annal_command_result r;
    const char *twice[] = {"account-a", "account-a"};
    const char *sys[] = {"account-a", "$all"};
    assert_int_equal(annal_handle_streams(f->h, AB, 0, &c, NULL, &r, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_handle_streams(f->h, twice, 2, &c, NULL, &r, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_handle_streams(f->h, sys, 2, &c, NULL, &r, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_handle_streams(NULL, AB, 2, &c, NULL, &r, NULL), ANNAL_EINVAL);
    /* annal_handle reads one stream: an emit to a second one fails the command. */
    cmd o = {.kind = OPEN, .amount = 1, .emit_to = 1};
    assert_int_equal(annal_handle(f->h, AB[0], &o, NULL, &r), ANNAL_EINVAL);
    assert_int_equal(head(f, AB[0]), -1);
    assert_null(annal_decision_state(NULL, 0));
    /* With two streams, an emit to the second one is fine: OPEN of b through a's command. */
    TU_OK(f->db, annal_handle_streams(f->h, AB, 2, &o, NULL, &r, NULL));
    assert_int_equal(head(f, AB[0]), -1);
    assert_int_equal(head(f, AB[1]), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejected_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_on_from_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_on_to_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_then_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_stream_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tombstoned_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tombstoned_meanwhile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots_per_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
