/*
 * proj_bench.c -- projection throughput (docs/projections.md): a projection file applying
 * every event of an order log to a SQLite and a PostgreSQL read model, against a plain
 * program doing the same upserts with the same values, prepared statements and batch
 * size directly (the values already in memory: no store, no JSON); and an in-memory
 * projection with a trivial C handler. Rounds are interleaved; medians are printed.
 *
 * usage: proj_bench --dir DIR [--events N] [--rounds R] [--batch B] [--pg CONNINFO]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <annal.h>
#include <annal_project.h>
#include <libpq-fe.h>
#include <sqlite3.h>

typedef struct item {
    char id[16];
    int qty, price;
} item;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 42;
static uint64_t next_rand(void) { /* splitmix64 */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "proj_bench: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

static const char proj_text[] =
    "source $ce-order\n"
    "[schema]\n"
    "CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, items BIGINT NOT NULL,\n"
    "  amount BIGINT NOT NULL);\n"
    "[on ItemAdded]\n"
    "INSERT INTO totals (id, items, amount) VALUES (:stream_id, :data.qty, :data.amount)\n"
    "ON CONFLICT (id) DO UPDATE SET items = totals.items + excluded.items,\n"
    "  amount = totals.amount + excluded.amount\n";

static const char upsert_lite[] =
    "INSERT INTO totals (id, items, amount) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE "
    "SET items = totals.items + excluded.items, amount = totals.amount + excluded.amount";
static const char upsert_pg[] =
    "INSERT INTO totals (id, items, amount) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
    "SET items = totals.items + excluded.items, amount = totals.amount + excluded.amount";
static const char ddl[] = "CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, items BIGINT "
                          "NOT NULL, amount BIGINT NOT NULL)";

static double direct_sqlite(const char *path, const item *it, size_t n, size_t batch) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) die("sqlite open", path);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    sqlite3_exec(db, ddl, NULL, NULL, NULL);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, upsert_lite, -1, &st, NULL) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    double t0 = now_s();
    for (size_t i = 0; i < n; i += batch) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (size_t k = i; k < n && k < i + batch; k++) {
            sqlite3_bind_text(st, 1, it[k].id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, it[k].qty);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)it[k].qty * it[k].price);
            if (sqlite3_step(st) != SQLITE_DONE) die("step", sqlite3_errmsg(db));
            sqlite3_reset(st);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            die("commit", sqlite3_errmsg(db));
    }
    double t = now_s() - t0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return (double)n / t;
}

static void pg_ok(PGconn *c, PGresult *r, const char *what) {
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) die(what, PQerrorMessage(c));
    PQclear(r);
}

static double direct_pg(const char *conninfo, const char *schema, const item *it, size_t n,
                        size_t batch) {
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s; SET search_path TO %s", schema, schema);
    pg_ok(c, PQexec(c, sql), "schema");
    pg_ok(c, PQexec(c, ddl), "ddl");
    pg_ok(c, PQprepare(c, "up", upsert_pg, 3, NULL), "prepare");
    double t0 = now_s();
    for (size_t i = 0; i < n; i += batch) {
        pg_ok(c, PQexec(c, "BEGIN"), "begin");
        for (size_t k = i; k < n && k < i + batch; k++) {
            char q[16], a[24];
            snprintf(q, sizeof q, "%d", it[k].qty);
            snprintf(a, sizeof a, "%lld", (long long)it[k].qty * it[k].price);
            const char *v[3] = {it[k].id, q, a};
            pg_ok(c, PQexecPrepared(c, "up", 3, v, NULL, NULL, 0), "upsert");
        }
        pg_ok(c, PQexec(c, "COMMIT"), "commit");
    }
    double t = now_s() - t0;
    PQfinish(c);
    return (double)n / t;
}

static double projected(annal_db *db, const annal_proj_def *d, const char *name, const char *target,
                        uint32_t batch, uint64_t want) {
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.def = d;
    o.name = name;
    o.target = target;
    o.batch_events = batch;
    annal_proj *p;
    char err[1024];
    if (annal_proj_open(db, &o, &p, err, sizeof err) != ANNAL_OK) die("projection open", err);
    double t0 = now_s();
    if (annal_proj_run(p, 1) != ANNAL_OK) die("projection run", annal_proj_errmsg(p));
    double t = now_s() - t0;
    annal_proj_status st;
    annal_proj_close(p);
    if (annal_proj_status_get(target, name, &st, err, sizeof err) != ANNAL_OK || st.events != want)
        die("projection", "did not apply every event");
    return (double)want / t;
}

typedef struct mem_ctx {
    uint64_t events, bytes;
} mem_ctx;

static annal_err mem_apply(void *ctx, annal_proj_tx *tx, const annal_event *ev) {
    (void)tx;
    mem_ctx *m = ctx;
    m->events++;
    m->bytes += ev->data_len; /* trivial work that touches the event */
    return ANNAL_OK;
}

static double in_memory(annal_db *db, uint64_t want) {
    static const annal_proj_handler h = {ANNAL_PROJ_HANDLER_VERSION, NULL, mem_apply};
    mem_ctx sum = {0, 0};
    annal_proj_opts o;
    annal_proj_opts_init(&o);
    o.name = "mem";
    o.source = "$all";
    o.target = "memory";
    o.handler = &h;
    o.ctx = &sum;
    o.batch_events = 10000;
    annal_proj *p;
    char err[512];
    if (annal_proj_open(db, &o, &p, err, sizeof err) != ANNAL_OK) die("memory open", err);
    double t0 = now_s();
    if (annal_proj_run(p, 1) != ANNAL_OK) die("memory run", annal_proj_errmsg(p));
    double t = now_s() - t0;
    annal_proj_close(p);
    if (sum.events != want || !sum.bytes) die("memory", "did not see every event");
    return (double)want / t;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *pg = NULL;
    int profile = 0; /* --profile 1: only the SQLite projection, for perf */
    size_t n = 200000, batch = 500;
    int rounds = 3;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("usage", "proj_bench --dir DIR [--events N] [--rounds R] [--batch B] [--pg C]");
        if (strcmp(argv[i], "--dir") == 0)
            dir = v;
        else if (strcmp(argv[i], "--pg") == 0)
            pg = v;
        else if (strcmp(argv[i], "--events") == 0)
            n = strtoull(v, NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = (int)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = strtoull(v, NULL, 10);
        else if (strcmp(argv[i], "--profile") == 0)
            profile = (int)strtol(v, NULL, 10);
        else
            die("unknown option", argv[i]);
        i++;
    }
    if (!dir || !n || !batch || rounds < 1 || rounds > 50) die("usage", "--dir is required");
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/store", dir);
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    annal_db *db;
    if (annal_db_open(path, &o, &db) != ANNAL_OK) die("open store", path);
    annal_db_info info;
    annal_db_info_get(db, &info);
    if (info.events) die("store", "not empty: give a new --dir");

    /* The log: 10,000 orders, item events appended 50 at a time to one order each. */
    item *it = calloc(n, sizeof *it);
    annal_event_data *ev = calloc(50, sizeof *ev);
    char(*data)[128] = calloc(50, sizeof *data);
    if (!it || !ev || !data) die("memory", NULL);
    for (size_t i = 0; i < n; i += 50) {
        unsigned order = (unsigned)(next_rand() % 10000);
        char stream[32];
        snprintf(stream, sizeof stream, "order-%u", order);
        size_t m = n - i < 50 ? n - i : 50;
        for (size_t k = 0; k < m; k++) {
            item *x = &it[i + k];
            snprintf(x->id, sizeof x->id, "%u", order);
            x->qty = 1 + (int)(next_rand() % 5);
            x->price = 1 + (int)(next_rand() % 100);
            memset(&ev[k], 0, sizeof ev[k]);
            ev[k].type = "ItemAdded";
            ev[k].data = data[k];
            ev[k].data_len = (size_t)snprintf(
                data[k], sizeof data[k],
                "{\"sku\":\"sku-%05u\",\"qty\":%d,\"price\":%d,\"amount\":%d,\"currency\":\"EUR\"}",
                (unsigned)(next_rand() % 100000), x->qty, x->price, x->qty * x->price);
        }
        if (annal_append(db, stream, ANNAL_EXPECT_ANY, ev, m, NULL) != ANNAL_OK)
            die("append", annal_db_errmsg(db));
    }
    /* flushed before measuring: no writeback of the log competes with the rounds */
    if (annal_db_sync(db) != ANNAL_OK) die("sync", annal_db_errmsg(db));
    annal_proj_def *d;
    char err[1024];
    if (annal_proj_def_parse(proj_text, strlen(proj_text), "bench.proj", &d, err, sizeof err))
        die("projection file", err);

    /* The first pass over the log maps its pages into this process (a page fault per
     * 4 KiB, costly in a VM); a projector following live pays that once per page. The
     * rounds measure the steady state; the cold pass is reported on its own. */
    double cold = in_memory(db, n);
    if (profile) {
        for (int r = 0; r < rounds; r++) {
            char t[4200], name[32];
            snprintf(name, sizeof name, "prof_%d", r);
            snprintf(t, sizeof t, "sqlite:%s/prof_%d.db", dir, r);
            fprintf(stderr, "projection %.0f/s\n", projected(db, d, name, t, (uint32_t)batch, n));
        }
        return 0;
    }
    double mem[50], pl[50], dl[50], pp[50], dp[50];
    for (int r = 0; r < rounds; r++) {
        mem[r] = in_memory(db, n);
        char t[4200], name[32];
        snprintf(name, sizeof name, "proj_%d", r);
        snprintf(t, sizeof t, "sqlite:%s/proj_%d.db", dir, r);
        char t2[4200];
        snprintf(t2, sizeof t2, "%s/direct_%d.db", dir, r);
        if (r % 2) { /* alternate who goes first: the other one runs on a warmer machine */
            dl[r] = direct_sqlite(t2, it, n, batch);
            pl[r] = projected(db, d, name, t, (uint32_t)batch, n);
        } else {
            pl[r] = projected(db, d, name, t, (uint32_t)batch, n);
            dl[r] = direct_sqlite(t2, it, n, batch);
        }
        if (pg) {
            char schema[32];
            snprintf(t, sizeof t, "postgresql:%s", pg);
            pp[r] = projected(db, d, name, t, (uint32_t)batch, n);
            snprintf(schema, sizeof schema, "direct_%d", r);
            dp[r] = direct_pg(pg, schema, it, n, batch);
        }
        fprintf(stderr, "round %d: memory %.0f/s, sqlite %.0f vs %.0f/s%s", r + 1, mem[r], pl[r],
                dl[r], pg ? "" : "\n");
        if (pg) fprintf(stderr, ", postgresql %.0f vs %.0f/s\n", pp[r], dp[r]);
    }
    double m = median(mem, rounds), a = median(pl, rounds), b = median(dl, rounds);
    printf("| workload (%zu events, batch %zu, median of %d) | projection | direct | ratio |\n", n,
           batch, rounds);
    printf("|---|---:|---:|---:|\n");
    printf("| in memory, C handler | %.2fM/s | | |\n", m / 1e6);
    printf("| in memory, first pass over a cold log | %.2fM/s | | |\n", cold / 1e6);
    printf("| SQLite upsert per event (WAL, synchronous=NORMAL) | %.0fk/s | %.0fk/s | %.0f%% |\n",
           a / 1e3, b / 1e3, 100 * a / b);
    if (pg) {
        double c = median(pp, rounds), e = median(dp, rounds);
        printf(
            "| PostgreSQL upsert per event (one round trip each) | %.1fk/s | %.1fk/s | %.0f%% |\n",
            c / 1e3, e / 1e3, 100 * c / e);
    }
    annal_proj_def_free(d);
    free(it);
    free(ev);
    free(data);
    annal_db_close(db);
    return 0;
}
