/*
 * projection_c.c -- a projection written in C, for applications that embed annal: order
 * totals kept in a SQLite read model by a projector thread, while the main thread appends
 * and, before each query, waits until the projection has caught up with its own append
 * (read your writes). A second projection counts events in memory, with no database.
 * Usage: projection_c STORE_DIR [ORDERS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <annal.h>
#include <annal_project.h>

/* ---- the read model: one row per order with its item count and total */

static annal_err setup(void *ctx, annal_proj_tx *tx) {
    (void)ctx;
    return annal_proj_exec(tx,
                           "CREATE TABLE IF NOT EXISTS order_totals (id TEXT PRIMARY KEY, "
                           "items INTEGER NOT NULL, total INTEGER NOT NULL)",
                           NULL, 0, NULL, NULL);
}

/* ItemAdded data is "qty price" as text, to keep the example free of a JSON parser. */
static annal_err apply(void *ctx, annal_proj_tx *tx, const annal_event *ev) {
    (void)ctx;
    if (strcmp(ev->type, "ItemAdded") != 0) return ANNAL_OK;
    char buf[64];
    if (ev->data_len >= sizeof buf) return ANNAL_EINVAL;
    memcpy(buf, ev->data, ev->data_len);
    buf[ev->data_len] = '\0';
    char *end;
    long long qty = strtoll(buf, &end, 10), price = strtoll(end, NULL, 10);
    const char *id = strchr(ev->stream, '-') + 1;
    annal_proj_value v[3] = {{ANNAL_PROJ_TEXT, 0, 0, id, strlen(id)},
                             {ANNAL_PROJ_INT, qty, 0, NULL, 0},
                             {ANNAL_PROJ_INT, qty * price, 0, NULL, 0}};
    return annal_proj_exec(tx,
                           "INSERT INTO order_totals (id, items, total) VALUES (?, ?, ?) "
                           "ON CONFLICT (id) DO UPDATE SET items = items + excluded.items, "
                           "total = total + excluded.total",
                           v, 3, NULL, NULL);
}

static const annal_proj_handler totals = {ANNAL_PROJ_HANDLER_VERSION, setup, apply};

/* ---- in memory: count events, no database at all */
static annal_err count(void *ctx, annal_proj_tx *tx, const annal_event *ev) {
    (void)tx;
    (void)ev;
    ++*(uint64_t *)ctx;
    return ANNAL_OK;
}
static const annal_proj_handler counter = {ANNAL_PROJ_HANDLER_VERSION, NULL, count};

static void *projector(void *arg) {
    annal_proj *p = arg;
    annal_err rc = annal_proj_run(p, 0); /* until annal_proj_cancel */
    if (rc != ANNAL_ECANCELED) fprintf(stderr, "projector: %s\n", annal_proj_errmsg(p));
    return NULL;
}

typedef struct row {
    char text[128];
} row;

static int one_row(void *ctx, int n, const char *const *names, const annal_proj_value *v) {
    (void)names;
    row *r = ctx;
    if (n == 2)
        snprintf(r->text, sizeof r->text, "%lld items, total %lld", (long long)v[0].i,
                 (long long)v[1].i);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: projection_c STORE_DIR [ORDERS]\n");
        return 2;
    }
    int orders = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 3;
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE;
    annal_db *db;
    if (annal_db_open(argv[1], &o, &db) != ANNAL_OK) return 1;

    char target[4096];
    snprintf(target, sizeof target, "sqlite:%s/order_totals.db", argv[1]);
    annal_proj_opts po;
    annal_proj_opts_init(&po);
    po.name = "order_totals";
    po.source = "$ce-order";
    po.target = target;
    po.handler = &totals;
    char err[1024];
    annal_proj *p;
    if (annal_proj_open(db, &po, &p, err, sizeof err) != ANNAL_OK) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, projector, p);

    for (int i = 1; i <= orders; i++) {
        char stream[32], data[32];
        snprintf(stream, sizeof stream, "order-%d", i);
        annal_append_result res;
        for (int k = 1; k <= i; k++) {
            annal_event_data ev = {.type = "ItemAdded", .data = data};
            ev.data_len = (size_t)snprintf(data, sizeof data, "%d %d", k, 10 * i);
            if (annal_append(db, stream, ANNAL_EXPECT_ANY, &ev, 1, &res) != ANNAL_OK) return 1;
        }
        /* read your writes: the projection has applied our last append before we query */
        annal_err rc =
            annal_proj_wait(target, "order_totals", res.first_position, 5000, err, sizeof err);
        if (rc != ANNAL_OK) {
            fprintf(stderr, "wait: %s\n", err);
            return 1;
        }
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT items, total FROM order_totals WHERE id = '%d'", i);
        row r = {""};
        annal_proj_query(target, NULL, sql, one_row, &r, err, sizeof err);
        printf("order-%d: %s (read after waiting for position %llu)\n", i, r.text,
               (unsigned long long)res.first_position);
    }
    annal_proj_cancel(p);
    pthread_join(th, NULL);
    annal_proj_close(p);

    uint64_t n = 0;
    annal_proj_opts mo;
    annal_proj_opts_init(&mo);
    mo.name = "count";
    mo.source = "$all";
    mo.target = "memory";
    mo.handler = &counter;
    mo.ctx = &n;
    if (annal_proj_open(db, &mo, &p, err, sizeof err) != ANNAL_OK) return 1;
    annal_proj_run(p, 1);
    annal_proj_close(p);
    printf("in memory: %llu events counted\n", (unsigned long long)n);
    annal_db_close(db);
    return 0;
}
