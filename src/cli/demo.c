/*
 * demo.c -- `annal demo`: append the story of one order (placed, discounted, paid,
 * invoiced to the wrong address, voided, invoiced again), each event saying who and why.
 * It then shows the story back as a history and as the state computed by replaying it.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: annal [--data DIR] demo\n"
    "\n"
    "Append a short story to a new stream order-N of the store (created if missing):\n"
    "OrderPlaced, DiscountApplied, PaymentReceived, InvoiceIssued, InvoiceVoided,\n"
    "InvoiceIssued, each with metadata saying who (user) and why (correlationId,\n"
    "causationId). Then print the history and the state obtained by replaying it.\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 3 conflict (another writer took the stream), 5 store error.\n";

#define STEPS 6

/* ---------------------------------------------------------------- the story */

typedef struct step {
    const char *type;
    const char *user;
    int cause; /* index of the step that caused this one, -1: a person's decision */
    json_t *data;
} step;

static void write_story(step s[STEPS], uint64_t n) {
    char order[32], inv1[48], inv2[48];
    snprintf(order, sizeof order, "%llu", (unsigned long long)n);
    snprintf(inv1, sizeof inv1, "INV-%llu-1", (unsigned long long)n);
    snprintf(inv2, sizeof inv2, "INV-%llu-2", (unsigned long long)n);
    s[0] = (step){
        "OrderPlaced", "alice", -1,
        json_pack("{s:s, s:s, s:i}", "orderId", order, "customer", "Ada Lovelace", "amount", 200)};
    s[1] = (step){"DiscountApplied", "bob", 0,
                  json_pack("{s:i, s:s}", "amount", 50, "reason", "loyal customer")};
    s[2] = (step){"PaymentReceived", "payments", 1,
                  json_pack("{s:i, s:s}", "amount", 150, "method", "card")};
    s[3] = (step){"InvoiceIssued", "billing", 2,
                  json_pack("{s:s, s:s}", "invoice", inv1, "address", "1 Wrong Street")};
    s[4] = (step){"InvoiceVoided", "carol", 3,
                  json_pack("{s:s, s:s}", "invoice", inv1, "reason", "wrong address")};
    s[5] = (step){"InvoiceIssued", "billing", 4,
                  json_pack("{s:s, s:s}", "invoice", inv2, "address", "2 Right Street")};
}

/* The first order-N that does not exist yet, so that every run tells a fresh story. */
static int pick_stream(annal_db *db, char *name, size_t len, uint64_t *n) {
    for (*n = 1;; (*n)++) {
        snprintf(name, len, "order-%llu", (unsigned long long)*n);
        uint64_t head;
        annal_err e = annal_stream_head(db, name, &head);
        if (e == ANNAL_ENOTFOUND) return 0;
        if (e != ANNAL_OK) return cli_fail("demo", db, e, "cannot look up stream %s", name);
    }
}

static int append_story(annal_db *db, const char *stream, step s[STEPS], uint64_t n) {
    annal_uuid ids[STEPS];
    char corr[48];
    snprintf(corr, sizeof corr, "checkout-%llu", (unsigned long long)n);
    for (int i = 0; i < STEPS; i++) {
        char cause[37];
        if (s[i].cause >= 0) annal_uuid_format(&ids[s[i].cause], cause);
        json_t *meta = json_pack("{s:s, s:s?, s:s}", "correlationId", corr, "causationId",
                                 s[i].cause >= 0 ? cause : NULL, "user", s[i].user);
        char *data = json_dumps(s[i].data, JSON_COMPACT);
        char *metadata = json_dumps(meta, JSON_COMPACT);
        json_decref(meta);
        if (!data || !metadata) {
            free(data);
            free(metadata);
            cli_error("demo", "out of memory");
            return CLI_EXIT_STORE;
        }
        annal_event_data ev;
        memset(&ev, 0, sizeof ev); /* zero id: the store assigns one and tells us */
        ev.type = s[i].type;
        ev.data = data;
        ev.data_len = strlen(data);
        ev.metadata = metadata;
        ev.metadata_len = strlen(metadata);
        /* Exact expected revisions: if anyone else wrote to this order meanwhile, stop. */
        annal_append_result res;
        annal_err e =
            annal_append(db, stream, i == 0 ? ANNAL_EXPECT_NO_STREAM : i - 1, &ev, 1, &res);
        free(data);
        free(metadata);
        if (e != ANNAL_OK)
            return cli_fail("demo", db, e, "cannot append %s to %s", s[i].type, stream);
        ids[i] = ev.id;
    }
    return 0;
}

/* ---------------------------------------------------------------- replaying it */

typedef struct invoice {
    char id[48];
    char address[96];
    char void_reason[96];
    int voided;
} invoice;

typedef struct order_state {
    long long total, discount, paid;
    invoice inv[8];
    int ninv;
} order_state;

static long long amount_of(json_t *data) {
    json_t *a = json_object_get(data, "amount");
    return json_is_integer(a) ? (long long)json_integer_value(a) : (long long)json_number_value(a);
}

static const char *str_of(json_t *data, const char *key) {
    const char *s = json_string_value(json_object_get(data, key));
    return s ? s : "?";
}

/* The state is a left fold over the events: each type changes it in one small way.
 * Unknown types are skipped, so that old code can replay newer streams. */
static void fold(order_state *st, const annal_event *ev) {
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        return;
    }
    if (strcmp(ev->type, "OrderPlaced") == 0) {
        st->total = amount_of(d);
    } else if (strcmp(ev->type, "DiscountApplied") == 0) {
        st->discount += amount_of(d);
    } else if (strcmp(ev->type, "PaymentReceived") == 0) {
        st->paid += amount_of(d);
    } else if (strcmp(ev->type, "InvoiceIssued") == 0 && st->ninv < 8) {
        invoice *in = &st->inv[st->ninv++];
        memset(in, 0, sizeof *in);
        snprintf(in->id, sizeof in->id, "%s", str_of(d, "invoice"));
        snprintf(in->address, sizeof in->address, "%s", str_of(d, "address"));
    } else if (strcmp(ev->type, "InvoiceVoided") == 0) {
        for (int i = 0; i < st->ninv; i++)
            if (strcmp(st->inv[i].id, str_of(d, "invoice")) == 0) {
                st->inv[i].voided = 1;
                snprintf(st->inv[i].void_reason, sizeof st->inv[i].void_reason, "%s",
                         str_of(d, "reason"));
            }
    }
    json_decref(d);
}

/* "#k Type" of the event whose id is the causation id, from the events seen so far. */
static void cause_of(const annal_event *ev, annal_uuid *seen, char (*types)[64], size_t nseen,
                     char *out, size_t len) {
    snprintf(out, len, "-");
    json_t *m = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    const char *c = json_string_value(json_object_get(m, "causationId"));
    annal_uuid id;
    if (c && annal_uuid_parse(c, &id) == ANNAL_OK) {
        for (size_t i = 0; i < nseen; i++)
            if (memcmp(&seen[i], &id, sizeof id) == 0) snprintf(out, len, "#%zu %s", i, types[i]);
    }
    json_decref(m);
}

static void user_of(const annal_event *ev, char *out, size_t len) {
    json_t *m = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    const char *u = json_string_value(json_object_get(m, "user"));
    snprintf(out, len, "%s", u ? u : "?");
    json_decref(m);
}

static int show(cli_global *g, annal_db *db, const char *stream) {
    annal_iter *it;
    annal_err e = annal_read_stream(db, stream, 0, 0, 0, &it);
    if (e != ANNAL_OK) return cli_fail("demo", db, e, "cannot read %s back", stream);

    printf("History of %s (times in UTC; who and why come from each event's metadata):\n"
           "  rev  time                 event            who       caused by\n",
           stream);
    order_state st;
    memset(&st, 0, sizeof st);
    annal_uuid seen[STEPS * 2];
    char types[STEPS * 2][64];
    size_t nseen = 0;
    const annal_event *ev;
    cli_buf data = {0};
    while ((e = annal_iter_next(it, &ev)) == ANNAL_OK) {
        char when[CLI_TIME_LEN], who[32], why[96];
        cli_time_short(ev->timestamp_ns, when);
        user_of(ev, who, sizeof who);
        cause_of(ev, seen, types, nseen, why, sizeof why);
        data.len = 0;
        cli_data_preview(&data, ev->data, ev->data_len);
        printf("  %-3llu  %-19s  %-15s  %-8s  %s\n       %s\n", (unsigned long long)ev->revision,
               when, ev->type, who, why, cli_buf_cstr(&data));
        if (nseen < STEPS * 2) {
            seen[nseen] = ev->id;
            snprintf(types[nseen], sizeof types[nseen], "%s", ev->type);
            nseen++;
        }
        fold(&st, ev);
    }
    cli_buf_free(&data);
    annal_iter_close(it);
    if (e != ANNAL_END) return cli_fail("demo", db, e, "reading %s stopped", stream);

    long long due = st.total - st.discount;
    printf("\nState, computed by replaying these %zu events:\n"
           "  total %lld - discount %lld = due %lld\n"
           "  paid %lld, balance %lld\n",
           nseen, st.total, st.discount, due, st.paid, due - st.paid);
    for (int i = 0; i < st.ninv; i++)
        if (!st.inv[i].voided) printf("  invoice %s to %s\n", st.inv[i].id, st.inv[i].address);
    for (int i = 0; i < st.ninv; i++)
        if (st.inv[i].voided)
            printf("  voided  %s to %s (%s)\n", st.inv[i].id, st.inv[i].address,
                   st.inv[i].void_reason);
    printf("\nNext: annal --data %s read %s --json\n"
           "      annal --data %s streams\n",
           g->data_dir, stream, g->data_dir);
    return 0;
}

int cli_cmd_demo(cli_global *g, int argc, char **argv) {
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, NULL, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("demo", stdout, "standard output", CLI_EXIT_OK);
        default: return cli_usage_error("demo", "unexpected argument '%s'", v);
        }
    }

    annal_db *db;
    int rc = cli_open(g, "demo", ANNAL_OPEN_CREATE, NULL, &db);
    if (rc) return rc;
    char stream[64];
    uint64_t n;
    rc = pick_stream(db, stream, sizeof stream, &n);
    if (!rc) {
        step s[STEPS];
        write_story(s, n);
        rc = append_story(db, stream, s, n);
        for (int i = 0; i < STEPS; i++) json_decref(s[i].data);
    }
    if (!rc) {
        printf("Appended %d events to stream %s in %s.\n\n", STEPS, stream, g->data_dir);
        rc = show(g, db, stream);
    }
    if (!rc) rc = cli_demo_decide(db, stream + strlen("order-"));
    annal_db_close(db);
    return cli_finish_output("demo", stdout, "standard output", rc);
}
