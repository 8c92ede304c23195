/* orders.c -- the seed's order story as a decider on annal, using only annal.h (and jansson
 * for the JSON payloads): placed for 200, a discount of 50, a payment of 150, an invoice to
 * a wrong address voided and reissued, shipped. It prints the history with who and why,
 * the state, and the state as of every step (time travel by revision and by time).
 *
 * usage: orders DIR      (DIR: the store, created if missing; a new order-N each run) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "annal.h"

/* ------------------------------------------------------------------------------------
 * The domain: state, events (evolve), commands (decide) */

#define MAX_INVOICES 8

typedef struct invoice {
    char id[32];
    char address[96];
    int voided;
} invoice;

typedef struct order {
    int placed, shipped;
    char customer[64];
    long long total, discount, paid;
    char discount_reason[96];
    invoice inv[MAX_INVOICES];
    int ninv;
} order;

static long long due(const order *o) { return o->total - o->discount - o->paid; }

static void copy_str(char *dst, size_t cap, json_t *v) {
    snprintf(dst, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static annal_err order_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    order *o = state;
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        return ANNAL_ECORRUPT;
    }
    long long amount = json_integer_value(json_object_get(d, "amount"));
    annal_err rc = ANNAL_OK;
    if (strcmp(ev->type, "OrderPlaced") == 0) {
        o->placed = 1;
        o->total = amount;
        copy_str(o->customer, sizeof o->customer, json_object_get(d, "customer"));
    } else if (strcmp(ev->type, "DiscountApplied") == 0) {
        o->discount += amount;
        copy_str(o->discount_reason, sizeof o->discount_reason, json_object_get(d, "reason"));
    } else if (strcmp(ev->type, "PaymentReceived") == 0) {
        o->paid += amount;
    } else if (strcmp(ev->type, "InvoiceIssued") == 0 && o->ninv < MAX_INVOICES) {
        invoice *i = &o->inv[o->ninv++];
        copy_str(i->id, sizeof i->id, json_object_get(d, "invoice"));
        copy_str(i->address, sizeof i->address, json_object_get(d, "address"));
        i->voided = 0;
    } else if (strcmp(ev->type, "InvoiceVoided") == 0) {
        const char *id = json_string_value(json_object_get(d, "invoice"));
        for (int k = 0; id && k < o->ninv; k++)
            if (strcmp(o->inv[k].id, id) == 0) o->inv[k].voided = 1;
    } else if (strcmp(ev->type, "OrderShipped") == 0) {
        o->shipped = 1;
    } else {
        rc = ANNAL_ECORRUPT; /* an event this program does not know */
    }
    json_decref(d);
    return rc;
}

typedef enum { PLACE, DISCOUNT, PAY, INVOICE, VOID, SHIP } cmd_kind;

typedef struct order_cmd {
    cmd_kind kind;
    long long amount;
    const char *text;  /* customer, reason, method, invoice id, carrier */
    const char *text2; /* address (INVOICE), reason (VOID) */
} order_cmd;

enum { E_STATE = 1, E_AMOUNT, E_NOT_PAID, E_INVOICE };

static const invoice *valid_invoice(const order *o) {
    for (int k = 0; k < o->ninv; k++)
        if (!o->inv[k].voided) return &o->inv[k];
    return NULL;
}

/* Emit one event whose data is the JSON object j (consumed). */
static annal_err emit(annal_decision *out, const char *type, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return ANNAL_ENOMEM;
    annal_err rc = annal_decision_emit(out, type, s, strlen(s), NULL, 0);
    free(s);
    return rc;
}

static annal_err order_decide(void *ctx, const void *state, const void *command,
                              annal_decision *out) {
    (void)ctx;
    const order *o = state;
    const order_cmd *c = command;
    char why[160];
    if (c->kind != PLACE && !o->placed) return annal_decision_reject(out, E_STATE, "no such order");
    switch (c->kind) {
    case PLACE:
        if (o->placed) return annal_decision_reject(out, E_STATE, "already placed");
        if (c->amount <= 0) return annal_decision_reject(out, E_AMOUNT, "amount must be > 0");
        return emit(out, "OrderPlaced",
                    json_pack("{s:s, s:I}", "customer", c->text, "amount", (json_int_t)c->amount));
    case DISCOUNT:
        if (o->shipped) return annal_decision_reject(out, E_STATE, "already shipped");
        if (c->amount <= 0 || c->amount > due(o)) {
            snprintf(why, sizeof why, "discount %lld is more than the %lld due", c->amount, due(o));
            return annal_decision_reject(out, E_AMOUNT, why);
        }
        return emit(out, "DiscountApplied",
                    json_pack("{s:I, s:s}", "amount", (json_int_t)c->amount, "reason", c->text));
    case PAY:
        if (c->amount <= 0 || c->amount > due(o)) {
            snprintf(why, sizeof why, "payment %lld does not fit the %lld due", c->amount, due(o));
            return annal_decision_reject(out, E_AMOUNT, why);
        }
        return emit(out, "PaymentReceived",
                    json_pack("{s:I, s:s}", "amount", (json_int_t)c->amount, "method", c->text));
    case INVOICE:
        if (valid_invoice(o)) return annal_decision_reject(out, E_INVOICE, "an invoice is valid");
        if (o->ninv == MAX_INVOICES) return annal_decision_reject(out, E_INVOICE, "too many");
        return emit(out, "InvoiceIssued",
                    json_pack("{s:s, s:s, s:I}", "invoice", c->text, "address", c->text2, "amount",
                              (json_int_t)(o->total - o->discount)));
    case VOID: {
        const invoice *i = valid_invoice(o);
        if (!i || strcmp(i->id, c->text) != 0)
            return annal_decision_reject(out, E_INVOICE, "no such valid invoice");
        return emit(out, "InvoiceVoided",
                    json_pack("{s:s, s:s}", "invoice", c->text, "reason", c->text2));
    }
    case SHIP:
        if (o->shipped) return annal_decision_reject(out, E_STATE, "already shipped");
        if (due(o) > 0) {
            snprintf(why, sizeof why, "not paid: %lld due", due(o));
            return annal_decision_reject(out, E_NOT_PAID, why);
        }
        return emit(out, "OrderShipped", json_pack("{s:s}", "carrier", c->text));
    }
    return ANNAL_EINVAL;
}

static const annal_decider order_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "order",
    .state_size = sizeof(order),
    .evolve = order_evolve,
    .decide = order_decide,
};

/* ------------------------------------------------------------------------------------
 * Printing */

static void print_state(const order *o) {
    const invoice *i = valid_invoice(o);
    printf("total %lld, discount %lld, paid %lld, due %lld, invoice %s%s%s, %s\n", o->total,
           o->discount, o->paid, due(o), i ? i->id : "-", i ? " to " : "", i ? i->address : "",
           o->shipped ? "shipped" : "not shipped");
}

static void print_history(annal_db *db, const char *stream) {
    annal_iter *it;
    const annal_event *ev;
    if (annal_read_stream(db, stream, 0, 0, 0, &it) != ANNAL_OK) return;
    char ids[32][37];
    char types[32][ANNAL_MAX_NAME + 1];
    printf("History of %s (who, why, caused by):\n", stream);
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        json_t *m = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
        const char *user = json_string_value(json_object_get(m, "user"));
        const char *why = json_string_value(json_object_get(d, "reason"));
        if (!why) why = json_string_value(json_object_get(m, "reason"));
        const char *cause = json_string_value(json_object_get(m, "causationId"));
        const char *cause_type = "a person";
        for (uint64_t k = 0; cause && k < ev->revision && k < 32; k++)
            if (strcmp(ids[k], cause) == 0) cause_type = types[k];
        if (ev->revision < 32) {
            annal_uuid_format(&ev->id, ids[ev->revision]);
            snprintf(types[ev->revision], sizeof types[0], "%s", ev->type);
        }
        printf("  %" PRIu64 "  %-16s %-56.*s by %-8s why: %s; caused by %s\n", ev->revision,
               ev->type, (int)ev->data_len, (const char *)ev->data, user ? user : "?",
               why ? why : "-", cause_type);
        json_decref(d);
        json_decref(m);
    }
    annal_iter_close(it);
}

/* ------------------------------------------------------------------------------------
 * The story */

typedef struct step {
    const char *user;
    const char *reason; /* why the person asked, into the metadata */
    order_cmd cmd;
} step;

static int fail(annal_db *db, const char *what, annal_err rc, const annal_command_result *r) {
    fprintf(stderr, "orders: %s: %s (%s)\n", what, annal_errname(rc),
            r && r->message[0] ? r->message : annal_db_errmsg(db));
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: orders DIR\n");
        return 1;
    }
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    annal_err rc = annal_db_open(argv[1], &opts, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "orders: cannot open %s: %s\n", argv[1], annal_errname(rc));
        return 2;
    }
    annal_handler *h;
    rc = annal_handler_open(db, &order_decider, NULL, &h);
    if (rc != ANNAL_OK) return fail(db, "handler", rc, NULL);

    char stream[32], corr[32];
    for (int n = 1;; n++) { /* a fresh order each run */
        snprintf(stream, sizeof stream, "order-%d", n);
        snprintf(corr, sizeof corr, "checkout-%d", n);
        uint64_t head;
        if (annal_stream_head(db, stream, &head) == ANNAL_ENOTFOUND) break;
    }
    const step story[] = {
        {"alice", "customer checkout", {PLACE, 200, "Ada Lovelace", NULL}},
        {"warehouse", "pick list printed", {SHIP, 0, "DHL", NULL}}, /* rejected: not paid */
        {"bob", "loyal customer", {DISCOUNT, 50, "loyal customer", NULL}},
        {"payments", "card captured", {PAY, 150, "card", NULL}},
        {"billing", "order paid", {INVOICE, 0, "INV-1", "1 Wrong Street"}},
        {"carol", "customer called", {VOID, 0, "INV-1", "wrong address"}},
        {"billing", "address corrected", {INVOICE, 0, "INV-2", "2 Right Street"}},
        {"warehouse", "parcel ready", {SHIP, 0, "DHL", NULL}},
        {"warehouse", "double scan", {SHIP, 0, "DHL", NULL}}, /* rejected: already shipped */
    };
    char cause[37] = "";
    int64_t paid_ns = 0;
    printf("Commands on %s:\n", stream);
    for (size_t i = 0; i < sizeof story / sizeof story[0]; i++) {
        char extra[160];
        snprintf(extra, sizeof extra, "{\"reason\":\"%s\"}", story[i].reason);
        annal_command_meta meta = {.correlation_id = corr,
                                   .causation_id = cause[0] ? cause : NULL,
                                   .user = story[i].user,
                                   .extra = extra};
        annal_command_result r;
        rc = annal_handle(h, stream, &story[i].cmd, &meta, &r);
        if (rc != ANNAL_OK) return fail(db, "command", rc, &r);
        if (r.rejected) {
            printf("  %-9s rejected: %s\n", story[i].user, r.message);
            continue;
        }
        printf("  %-9s accepted: revision %" PRIu64 "\n", story[i].user, r.append.first_revision);
        annal_uuid_format(&r.first_id, cause); /* the next step was caused by this event */
        if (story[i].cmd.kind == PAY) {
            annal_event *ev;
            if (annal_event_get(db, r.append.first_position, &ev) == ANNAL_OK) {
                paid_ns = ev->timestamp_ns;
                annal_free(ev);
            }
        }
    }
    printf("\n");
    print_history(db, stream);

    void *st;
    annal_state_info info;
    rc = annal_state_load(h, stream, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, &info);
    if (rc != ANNAL_OK) return fail(db, "state", rc, NULL);
    const order *o = st;
    printf("\nState by replaying %" PRIu64 " events: ", info.folded);
    print_state(o);
    printf("Why %lld was paid: %lld placed - %lld discount (%s) = %lld\n", o->paid, o->total,
           o->discount, o->discount_reason, o->total - o->discount);
    int64_t last = info.revision;
    annal_state_free(h, st);

    printf("\nState as of each step:\n");
    for (int64_t rev = 0; rev <= last; rev++) {
        if (annal_state_load(h, stream, (uint64_t)rev, ANNAL_TIME_LATEST, &st, &info) != ANNAL_OK)
            return fail(db, "state as of", ANNAL_EIO, NULL);
        printf("  as of revision %" PRId64 ": ", rev);
        print_state(st);
        annal_state_free(h, st);
    }
    if (annal_state_load(h, stream, ANNAL_REVISION_LATEST, paid_ns, &st, &info) == ANNAL_OK) {
        printf("  as of the payment's time (revision %" PRId64 "): ", info.revision);
        print_state(st);
        annal_state_free(h, st);
    }
    annal_handler_close(h);
    annal_db_close(db);
    return 0;
}
