/* inventory.c -- stock of one article as a decider on annal, using only annal.h: stock is
 * checked before an order ships, so many threads ordering the last items at once never
 * oversell. The decision runs without locks; the expected revision does the rest.
 *
 * usage: inventory DIR [--runs R] [--threads T] [--nosync]
 * Tells a short story, then R times (default 1) lets T threads (default 8) order 1-3
 * items at a time from 20 until none is left; exits 1 if any run sold more or less than
 * the stock, or if the log and the replies disagree. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annal.h"

/* ------------------------------------------------------------------------------------
 * The domain. Payloads are tiny JSON objects written and read with snprintf/strtoll. */

typedef struct stock {
    long long on_hand, received, shipped;
    long long orders;
} stock;

typedef enum { RECEIVE, SHIP } cmd_kind;
typedef struct stock_cmd {
    cmd_kind kind;
    long long qty;
    const char *order;
} stock_cmd;

enum { E_QTY = 1, E_OUT_OF_STOCK };

/* The integer after "qty": in a payload this program wrote. */
static long long qty_of(const annal_event *ev) {
    static const char key[] = "\"qty\":";
    char buf[128];
    if (ev->data_len >= sizeof buf) return -1;
    memcpy(buf, ev->data, ev->data_len);
    buf[ev->data_len] = '\0';
    const char *p = strstr(buf, key);
    if (!p) return -1;
    char *end;
    long long v = strtoll(p + sizeof key - 1, &end, 10);
    return end == p + sizeof key - 1 ? -1 : v;
}

static annal_err stock_evolve(void *ctx, void *state, const annal_event *ev) {
    (void)ctx;
    stock *s = state;
    long long q = qty_of(ev);
    if (q <= 0) return ANNAL_ECORRUPT;
    if (strcmp(ev->type, "StockReceived") == 0) {
        s->on_hand += q;
        s->received += q;
    } else if (strcmp(ev->type, "OrderShipped") == 0) {
        s->on_hand -= q;
        s->shipped += q;
        s->orders++;
    } else {
        return ANNAL_ECORRUPT;
    }
    return ANNAL_OK;
}

static annal_err stock_decide(void *ctx, const void *state, const void *command,
                              annal_decision *out) {
    (void)ctx;
    const stock *s = state;
    const stock_cmd *c = command;
    char buf[128];
    if (c->qty <= 0) return annal_decision_reject(out, E_QTY, "quantity must be positive");
    if (c->kind == SHIP && c->qty > s->on_hand) {
        snprintf(buf, sizeof buf, "out of stock: %lld left, %lld asked", s->on_hand, c->qty);
        return annal_decision_reject(out, E_OUT_OF_STOCK, buf);
    }
    int n = c->kind == SHIP
                ? snprintf(buf, sizeof buf, "{\"order\":\"%s\",\"qty\":%lld}", c->order, c->qty)
                : snprintf(buf, sizeof buf, "{\"qty\":%lld}", c->qty);
    return annal_decision_emit(out, c->kind == SHIP ? "OrderShipped" : "StockReceived", buf,
                               (size_t)n, NULL, 0);
}

static annal_err stock_encode(void *ctx, const void *state, annal_buf *out) {
    (void)ctx;
    const stock *s = state;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%lld %lld %lld %lld", s->on_hand, s->received, s->shipped,
                     s->orders);
    return annal_buf_append(out, buf, (size_t)n);
}

static annal_err stock_decode(void *ctx, void *state, const void *data, size_t len) {
    (void)ctx;
    char buf[128];
    if (len >= sizeof buf) return ANNAL_ECORRUPT;
    memcpy(buf, data, len);
    buf[len] = '\0';
    long long v[4];
    char *p = buf, *end;
    for (int i = 0; i < 4; i++, p = end) {
        v[i] = strtoll(p, &end, 10);
        if (end == p) return ANNAL_ECORRUPT;
    }
    *(stock *)state = (stock){v[0], v[1], v[2], v[3]};
    return ANNAL_OK;
}

static const annal_decider stock_decider = {
    .version = ANNAL_DECIDER_VERSION,
    .name = "stock",
    .state_size = sizeof(stock),
    .evolve = stock_evolve,
    .decide = stock_decide,
    .state_version = 1,
    .snapshot_encode = stock_encode,
    .snapshot_decode = stock_decode,
};

/* ------------------------------------------------------------------------------------
 * Helpers */

static int fail(annal_db *db, const char *what, annal_err rc, const annal_command_result *r) {
    fprintf(stderr, "inventory: %s: %s (%s)\n", what, annal_errname(rc),
            r && r->message[0] ? r->message : annal_db_errmsg(db));
    return 2;
}

static void fresh(annal_db *db, const char *prefix, char *out, size_t cap) {
    for (int n = 1;; n++) {
        snprintf(out, cap, "%s%d", prefix, n);
        uint64_t head;
        if (annal_stream_head(db, out, &head) == ANNAL_ENOTFOUND) return;
    }
}

static annal_err order(annal_handler *h, const char *sku, const char *id, long long qty,
                       annal_command_result *r) {
    stock_cmd c = {SHIP, qty, id};
    annal_command_meta meta = {.user = "shop", .causation_id = id};
    return annal_handle(h, sku, &c, &meta, r);
}

static annal_err receive(annal_handler *h, const char *sku, long long qty,
                         annal_command_result *r) {
    stock_cmd c = {RECEIVE, qty, NULL};
    annal_command_meta meta = {.user = "warehouse"};
    return annal_handle(h, sku, &c, &meta, r);
}

/* ------------------------------------------------------------------------------------
 * The rush: threads order until a one-item order is refused (then nothing is left). */

#define STOCK 20

typedef struct buyer {
    annal_handler *h;
    const char *sku;
    int id;
    pthread_barrier_t *start;
    long long bought, orders, rejected, conflicts, retries;
    annal_err err;
} buyer;

static void *buy(void *arg) {
    buyer *b = arg;
    uint32_t seed = (uint32_t)b->id * 2654435761u + 1;
    pthread_barrier_wait(b->start);
    for (int n = 0;; n++) {
        seed = seed * 1103515245u + 12345u;
        long long qty = 1 + (seed >> 16) % 3;
        char id[48];
        snprintf(id, sizeof id, "%s/b%d/o%d", b->sku, b->id, n);
        annal_command_result r;
        annal_err rc = order(b->h, b->sku, id, qty, &r);
        if (rc == ANNAL_ECONFLICT) { /* out of retries: still sold nothing; ask again */
            b->conflicts++;
            continue;
        }
        if (rc != ANNAL_OK) {
            b->err = rc;
            return NULL;
        }
        b->retries += r.attempts - 1;
        if (!r.rejected) {
            b->bought += qty;
            b->orders++;
        } else {
            b->rejected++;
            if (qty == 1) return NULL; /* not even one left: the shelf is empty */
        }
    }
}

static int rush(annal_db *db, annal_handler *h, int runs, int threads) {
    int good = 0;
    long long rejected = 0, conflicts = 0, retries = 0;
    for (int run = 1; run <= runs; run++) {
        char sku[48];
        fresh(db, "sku-rush-", sku, sizeof sku);
        annal_command_result r;
        annal_err rc = receive(h, sku, STOCK, &r);
        if (rc != ANNAL_OK) return fail(db, "receive", rc, &r);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads);
        buyer *b = calloc((size_t)threads, sizeof *b);
        pthread_t *t = calloc((size_t)threads, sizeof *t);
        if (!b || !t) return fail(db, "memory", ANNAL_ENOMEM, NULL);
        for (int i = 0; i < threads; i++) {
            b[i] = (buyer){.h = h, .sku = sku, .id = i, .start = &start};
            pthread_create(&t[i], NULL, buy, &b[i]);
        }
        long long sold = 0, orders = 0;
        int err = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(t[i], NULL);
            if (b[i].err != ANNAL_OK) err = fail(db, "order", b[i].err, NULL);
            sold += b[i].bought;
            orders += b[i].orders;
            rejected += b[i].rejected;
            conflicts += b[i].conflicts;
            retries += b[i].retries;
        }
        pthread_barrier_destroy(&start);
        free(b);
        free(t);
        if (err) return err;
        /* The log must agree with the replies: replay it (without snapshots' help too). */
        void *st;
        annal_state_info info;
        rc = annal_state_load(h, sku, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, &info);
        if (rc != ANNAL_OK) return fail(db, "replay", rc, NULL);
        stock s = *(stock *)st;
        annal_state_free(h, st);
        if (sold == STOCK && s.on_hand == 0 && s.shipped == sold && s.orders == orders &&
            info.revision == orders) {
            good++;
        } else {
            printf("run %d: sold %lld in %lld orders; log: %lld shipped in %lld orders, %lld on "
                   "hand: WRONG\n",
                   run, sold, orders, s.shipped, s.orders, s.on_hand);
        }
    }
    printf("rush: %d of %d runs with %d threads sold exactly %d, never more (%lld orders "
           "refused for lack of stock, %lld decisions retried after a conflict, %lld "
           "commands out of retries)\n",
           good, runs, threads, STOCK, rejected, retries, conflicts);
    return good == runs ? 0 : 1;
}

/* ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    int runs = 1, threads = 8, nosync = 0, bad = argc < 2;
    for (int i = 2; i < argc && !bad; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--nosync") == 0)
            nosync = 1;
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = (int)strtol(argv[++i], &end, 10);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = (int)strtol(argv[++i], &end, 10);
        else
            bad = 1;
        if (end && (*end || runs < 1 || threads < 1 || threads > 256)) bad = 1;
    }
    if (bad) {
        fprintf(stderr, "usage: inventory DIR [--runs R] [--threads T] [--nosync]\n");
        return 1;
    }
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE | (nosync ? ANNAL_OPEN_NOSYNC : 0);
    annal_db *db;
    annal_err rc = annal_db_open(argv[1], &opts, &db);
    if (rc != ANNAL_OK) {
        fprintf(stderr, "inventory: cannot open %s: %s\n", argv[1], annal_errname(rc));
        return 2;
    }
    size_t sl = strlen(argv[1]) + 16;
    char *snapdir = malloc(sl);
    if (!snapdir) return fail(db, "memory", ANNAL_ENOMEM, NULL);
    snprintf(snapdir, sl, "%s/snapshots", argv[1]);
    annal_handler_opts ho;
    annal_handler_opts_init(&ho);
    ho.max_retries = 64; /* a rush of many buyers on one article conflicts a lot */
    ho.snapshot_dir = snapdir;
    ho.snapshot_every = 8;
    annal_handler *h;
    rc = annal_handler_open(db, &stock_decider, &ho, &h);
    free(snapdir);
    if (rc != ANNAL_OK) return fail(db, "handler", rc, NULL);

    char sku[48];
    fresh(db, "sku-lamp-", sku, sizeof sku);
    annal_command_result r;
    struct {
        cmd_kind k;
        long long qty;
        const char *id;
    } story[] = {{RECEIVE, 10, NULL},
                 {SHIP, 3, "order-1"},
                 {SHIP, 8, "order-2"},
                 {SHIP, 7, "order-3"},
                 {SHIP, 1, "order-4"}};
    for (size_t i = 0; i < sizeof story / sizeof story[0]; i++) {
        rc = story[i].k == RECEIVE ? receive(h, sku, story[i].qty, &r)
                                   : order(h, sku, story[i].id, story[i].qty, &r);
        if (rc != ANNAL_OK) return fail(db, "command", rc, &r);
        printf("%s %lld%s%s: %s%s\n", story[i].k == RECEIVE ? "receive" : "ship", story[i].qty,
               story[i].id ? " for " : "", story[i].id ? story[i].id : "",
               r.rejected ? "rejected: " : "accepted", r.rejected ? r.message : "");
    }
    void *st;
    rc = annal_state_load(h, sku, ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL);
    if (rc != ANNAL_OK) return fail(db, "state", rc, NULL);
    const stock *s = st;
    printf("%s by replay: received %lld, shipped %lld in %lld orders, on hand %lld\n\n", sku,
           s->received, s->shipped, s->orders, s->on_hand);
    annal_state_free(h, st);

    int status = rush(db, h, runs, threads);
    annal_handler_close(h);
    annal_db_close(db);
    return status;
}
