/*
 * sys_pg.c -- PostgreSQL peer through libpq.
 *
 * Schema (one schema per store, so the write and read fixtures can coexist):
 *   streams(name text PRIMARY KEY, version bigint)           -- the lock row
 *   events(position bigserial PRIMARY KEY, stream text, version bigint, id uuid,
 *          type text, data bytea, UNIQUE(stream, version))
 * An append is one autocommit call of the PL/pgSQL function bench_append(stream,
 * expected, ids uuid[], types text[], data bytea[]): it locks the stream's row
 * (SELECT ... FOR UPDATE; a new stream inserts it, a racing creator hits the primary
 * key), compares the revision, bumps it and inserts the batch with one INSERT ...
 * SELECT FROM unnest(...). Parameters go in binary. Durability is the server's:
 * fsync=on, synchronous_commit=on (bulk fixture loads turn the latter off).
 * Reads: one SELECT ... ORDER BY in libpq single-row mode, binary rows.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OID_TEXT 25
#define OID_INT8 20
#define OID_BYTEA 17
#define OID_UUID 2950
#define OID_TEXT_ARR 1009
#define OID_BYTEA_ARR 1001
#define OID_UUID_ARR 2951

typedef struct pg_db {
    char conninfo[1024];
    char schema[64];
    int bulk;
    struct pg_conn *main;
} pg_db;

typedef struct pg_conn {
    pg_db *db;
    PGconn *c;
    char *buf[3];
    size_t cap[3];
} pg_conn;

static int pg_cmd(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "postgres: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

static const char *const SCHEMA_SQL =
    "CREATE TABLE streams(name text PRIMARY KEY, version bigint NOT NULL);"
    "CREATE TABLE events(position bigserial PRIMARY KEY, stream text NOT NULL,"
    "  version bigint NOT NULL, id uuid NOT NULL, type text NOT NULL, data bytea NOT NULL,"
    "  UNIQUE(stream, version));"
    "CREATE FUNCTION bench_append(p_stream text, p_expected bigint, p_ids uuid[],"
    "  p_types text[], p_data bytea[]) RETURNS bigint LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  cur bigint;\n"
    "  n bigint := cardinality(p_ids);\n"
    "BEGIN\n"
    "  SELECT version INTO cur FROM streams WHERE name = p_stream FOR UPDATE;\n"
    "  IF NOT FOUND THEN\n"
    "    IF p_expected <> -1 THEN\n"
    "      RAISE EXCEPTION 'wrong expected revision' USING ERRCODE = 'AB001';\n"
    "    END IF;\n"
    "    cur := -1;\n"
    "    INSERT INTO streams(name, version) VALUES (p_stream, n - 1);\n"
    "  ELSE\n"
    "    IF cur <> p_expected THEN\n"
    "      RAISE EXCEPTION 'wrong expected revision' USING ERRCODE = 'AB001';\n"
    "    END IF;\n"
    "    UPDATE streams SET version = cur + n WHERE name = p_stream;\n"
    "  END IF;\n"
    "  INSERT INTO events(stream, version, id, type, data)\n"
    "    SELECT p_stream, cur + u.ord, u.id, u.type, u.data\n"
    "    FROM unnest(p_ids, p_types, p_data) WITH ORDINALITY AS u(id, type, data, ord);\n"
    "  RETURN cur + n;\n"
    "END\n"
    "$f$;";

static pg_conn *pg_connect(pg_db *db)
{
    pg_conn *k = xcalloc(1, sizeof *k);
    k->db = db;
    k->c = PQconnectdb(db->conninfo);
    if (PQstatus(k->c) != CONNECTION_OK) {
        fprintf(stderr, "postgres: connect: %s", PQerrorMessage(k->c));
        return NULL;
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SET search_path = %s", db->schema);
    if (pg_cmd(k->c, sql) ||
        pg_cmd(k->c, db->bulk ? "SET synchronous_commit = off" : "SET synchronous_commit = on"))
        return NULL;
    return k;
}

static void pg_disconnect(pg_conn *k)
{
    if (!k)
        return;
    PQfinish(k->c);
    for (int i = 0; i < 3; i++)
        free(k->buf[i]);
    free(k);
}

static int pg_prepare(pg_conn *k)
{
    Oid types[5] = {OID_TEXT, OID_INT8, OID_UUID_ARR, OID_TEXT_ARR, OID_BYTEA_ARR};
    PGresult *r = PQprepare(k->c, "app", "SELECT bench_append($1, $2, $3, $4, $5)", 5, types);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "postgres: prepare: %s", PQerrorMessage(k->c));
    PQclear(r);
    return ok ? 0 : -1;
}

static void *pg_open(const bench_open *o)
{
    pg_db *db = xcalloc(1, sizeof *db);
    if (!o->pg || !o->pg_schema)
        die("postgres needs --pg CONNINFO");
    snprintf(db->conninfo, sizeof db->conninfo, "%s", o->pg);
    snprintf(db->schema, sizeof db->schema, "%s", o->pg_schema);
    db->bulk = o->bulk;
    PGconn *c = PQconnectdb(db->conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "postgres: connect: %s", PQerrorMessage(c));
        return NULL;
    }
    char sql[256];
    if (o->fresh) {
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", db->schema);
        if (pg_cmd(c, "SET client_min_messages = warning") || pg_cmd(c, sql))
            return NULL;
    }
    snprintf(sql, sizeof sql, "SELECT 1 FROM pg_namespace WHERE nspname = '%s'", db->schema);
    PGresult *r = PQexec(c, sql);
    int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!exists) {
        snprintf(sql, sizeof sql, "CREATE SCHEMA %s; SET search_path = %s", db->schema,
                 db->schema);
        if (pg_cmd(c, sql) || pg_cmd(c, SCHEMA_SQL))
            return NULL;
    }
    /* Start every measurement from a clean checkpoint. */
    if (o->fresh && pg_cmd(c, "CHECKPOINT"))
        return NULL;
    PQfinish(c);
    db->main = pg_connect(db);
    if (!db->main || pg_prepare(db->main))
        return NULL;
    return db;
}

static void *pg_session_open(void *h)
{
    pg_db *db = h;
    if (db->bulk)
        return db->main;
    pg_conn *k = pg_connect(db);
    if (!k || pg_prepare(k))
        return NULL;
    return k;
}

static void pg_session_close(void *h, void *s)
{
    pg_db *db = h;
    if (s != db->main)
        pg_disconnect(s);
}

static char *put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return p + 4;
}

/* One-dimensional binary array of n elements from (ptr, len) pairs. */
static size_t pg_array(pg_conn *k, int slot, Oid elem, size_t n, const void *const *ptrs,
                       const uint32_t *lens)
{
    size_t need = 20;
    for (size_t i = 0; i < n; i++)
        need += 4 + lens[i];
    if (need > k->cap[slot]) {
        free(k->buf[slot]);
        k->cap[slot] = need * 2;
        k->buf[slot] = xmalloc(k->cap[slot]);
    }
    char *p = k->buf[slot];
    p = put32(p, 1);     /* ndim */
    p = put32(p, 0);     /* has nulls */
    p = put32(p, elem);  /* element type */
    p = put32(p, (uint32_t)n);
    p = put32(p, 1);     /* lower bound */
    for (size_t i = 0; i < n; i++) {
        p = put32(p, lens[i]);
        memcpy(p, ptrs[i], lens[i]);
        p += lens[i];
    }
    return (size_t)(p - k->buf[slot]);
}

static int pg_append(void *s, const char *stream, int64_t expected, const bench_event *ev,
                     size_t n)
{
    pg_conn *k = s;
    const void **ptrs = xmalloc(n * sizeof *ptrs);
    uint32_t *lens = xmalloc(n * sizeof *lens);
    const char *vals[5];
    int lv[5], fmt[5] = {1, 1, 1, 1, 1};
    uint64_t be = ((uint64_t)htonl((uint32_t)((uint64_t)expected >> 32))) |
                  ((uint64_t)htonl((uint32_t)expected) << 32);
    vals[0] = stream;
    lv[0] = (int)strlen(stream);
    vals[1] = (const char *)&be;
    lv[1] = 8;
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = ev[i].id;
        lens[i] = 16;
    }
    lv[2] = (int)pg_array(k, 0, OID_UUID, n, ptrs, lens);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = ev[i].type;
        lens[i] = (uint32_t)strlen(ev[i].type);
    }
    lv[3] = (int)pg_array(k, 1, OID_TEXT, n, ptrs, lens);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = ev[i].data;
        lens[i] = ev[i].data_len;
    }
    lv[4] = (int)pg_array(k, 2, OID_BYTEA, n, ptrs, lens);
    vals[2] = k->buf[0];
    vals[3] = k->buf[1];
    vals[4] = k->buf[2];
    free(ptrs);
    free(lens);

    PGresult *r = PQexecPrepared(k->c, "app", 5, vals, lv, fmt, 0);
    int rc = BENCH_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && (strcmp(state, "AB001") == 0 || strcmp(state, "23505") == 0)) {
            rc = BENCH_CONFLICT;
        } else {
            fprintf(stderr, "postgres: append: %s", PQerrorMessage(k->c));
            rc = BENCH_ERROR;
        }
    }
    PQclear(r);
    return rc;
}

static uint64_t get64(const char *p)
{
    uint32_t hi, lo;
    memcpy(&hi, p, 4);
    memcpy(&lo, p + 4, 4);
    return ((uint64_t)ntohl(hi) << 32) | ntohl(lo);
}

static int pg_read(pg_conn *k, const char *stream, bench_sink *sink)
{
    /* Single-row mode, binary rows (measured faster than FETCH n from a cursor here). */
    int ok;
    if (stream) {
        const char *vals[1] = {stream};
        ok = PQsendQueryParams(k->c,
                               "SELECT position, stream, version, id, type, data FROM events "
                               "WHERE stream = $1 ORDER BY version",
                               1, NULL, vals, NULL, NULL, 1);
    } else {
        ok = PQsendQueryParams(k->c,
                               "SELECT position, stream, version, id, type, data FROM events "
                               "ORDER BY position",
                               0, NULL, NULL, NULL, NULL, 1);
    }
    if (!ok || !PQsetSingleRowMode(k->c)) {
        fprintf(stderr, "postgres: send: %s", PQerrorMessage(k->c));
        return -1;
    }
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(k->c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            const char *sname = PQgetvalue(r, 0, 1);
            const char *type = PQgetvalue(r, 0, 4);
            const char *data = PQgetvalue(r, 0, 5);
            sink_event(sink, sname, (size_t)PQgetlength(r, 0, 1), type,
                       (size_t)PQgetlength(r, 0, 4), data, (size_t)PQgetlength(r, 0, 5),
                       (const uint8_t *)PQgetvalue(r, 0, 3), get64(PQgetvalue(r, 0, 2)),
                       get64(PQgetvalue(r, 0, 0)));
        } else if (st != PGRES_TUPLES_OK) {
            fprintf(stderr, "postgres: read: %s", PQerrorMessage(k->c));
            rc = -1;
        }
        PQclear(r);
    }
    return rc;
}

static int pg_read_stream(void *s, const char *stream, bench_sink *sink)
{
    return pg_read(s, stream, sink);
}

static int pg_read_all(void *s, bench_sink *sink) { return pg_read(s, NULL, sink); }

static void pg_close(void *h)
{
    pg_db *db = h;
    if (!db)
        return;
    pg_disconnect(db->main);
    free(db);
}

static int pg_is_complete(void *h)
{
    pg_db *db = h;
    PGresult *r = PQexec(db->main->c, "SELECT to_regclass('complete') IS NOT NULL");
    int done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return done;
}

static void pg_mark_complete(void *h)
{
    pg_db *db = h;
    pg_cmd(db->main->c, "CREATE TABLE IF NOT EXISTS complete(x int)");
    pg_cmd(db->main->c, "VACUUM ANALYZE events");
    pg_cmd(db->main->c, "CHECKPOINT");
}

const bench_sys bench_sys_postgres = {
    .name = "postgres",
    .open = pg_open,
    .session_open = pg_session_open,
    .session_close = pg_session_close,
    .append = pg_append,
    .read_stream = pg_read_stream,
    .read_all = pg_read_all,
    .close = pg_close,
    .is_complete = pg_is_complete,
    .mark_complete = pg_mark_complete,
};
