/*
 * sys_sqlite.c -- SQLite peer: WAL, synchronous=FULL, one table
 *   events(position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, id BLOB,
 *          type TEXT, data BLOB, UNIQUE(stream, version))
 * An append is BEGIN IMMEDIATE; SELECT max(version) FROM events WHERE stream=?;
 * (compare with the expected revision); INSERT ... (one per event); COMMIT.
 * Every thread gets its own connection (busy_timeout 60 s).
 */
#include "bench.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sq_db {
    char path[4096];
    char marker[4096];
    int bulk;
    struct sq_conn *main;
} sq_db;

typedef struct sq_conn {
    sq_db *db;
    sqlite3 *c;
    sqlite3_stmt *begin, *commit, *rollback, *head, *ins, *rd_stream, *rd_all;
} sq_conn;

static int sq_exec(sqlite3 *c, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(c, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

static sqlite3_stmt *sq_prep(sqlite3 *c, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite: prepare %s: %s\n", sql, sqlite3_errmsg(c));
        return NULL;
    }
    return st;
}

static sq_conn *sq_connect(sq_db *db)
{
    sq_conn *k = xcalloc(1, sizeof *k);
    k->db = db;
    if (sqlite3_open_v2(db->path, &k->c,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite: open %s: %s\n", db->path, sqlite3_errmsg(k->c));
        return NULL;
    }
    sqlite3_busy_timeout(k->c, 60000);
    if (sq_exec(k->c, "PRAGMA journal_mode=WAL") ||
        sq_exec(k->c, db->bulk ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL") ||
        sq_exec(k->c, "CREATE TABLE IF NOT EXISTS events(position INTEGER PRIMARY KEY, "
                      "stream TEXT, version INTEGER, id BLOB, type TEXT, data BLOB, "
                      "UNIQUE(stream, version))"))
        return NULL;
    k->begin = sq_prep(k->c, "BEGIN IMMEDIATE");
    k->commit = sq_prep(k->c, "COMMIT");
    k->rollback = sq_prep(k->c, "ROLLBACK");
    k->head = sq_prep(k->c, "SELECT max(version) FROM events WHERE stream = ?1");
    k->ins = sq_prep(k->c, "INSERT INTO events(stream, version, id, type, data) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)");
    k->rd_stream = sq_prep(k->c, "SELECT position, stream, version, id, type, data FROM events "
                                 "WHERE stream = ?1 ORDER BY version");
    k->rd_all = sq_prep(k->c, "SELECT position, stream, version, id, type, data FROM events "
                              "ORDER BY position");
    if (!k->begin || !k->commit || !k->rollback || !k->head || !k->ins || !k->rd_stream ||
        !k->rd_all)
        return NULL;
    return k;
}

static void sq_disconnect(sq_conn *k)
{
    if (!k)
        return;
    sqlite3_finalize(k->begin);
    sqlite3_finalize(k->commit);
    sqlite3_finalize(k->rollback);
    sqlite3_finalize(k->head);
    sqlite3_finalize(k->ins);
    sqlite3_finalize(k->rd_stream);
    sqlite3_finalize(k->rd_all);
    sqlite3_close(k->c);
    free(k);
}

static void *sq_open(const bench_open *o)
{
    sq_db *db = xcalloc(1, sizeof *db);
    snprintf(db->path, sizeof db->path, "%s/events.db", o->dir);
    snprintf(db->marker, sizeof db->marker, "%s/complete", o->dir);
    db->bulk = o->bulk;
    if (o->fresh) {
        char p[4200];
        unlink(db->marker);
        unlink(db->path);
        snprintf(p, sizeof p, "%s-wal", db->path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", db->path);
        unlink(p);
    }
    db->main = sq_connect(db);
    if (!db->main)
        return NULL;
    if (db->bulk && sq_exec(db->main->c, "BEGIN"))
        return NULL;
    return db;
}

static void *sq_session_open(void *h)
{
    sq_db *db = h;
    return db->bulk ? db->main : sq_connect(db);
}

static void sq_session_close(void *h, void *s)
{
    sq_db *db = h;
    if (s != db->main)
        sq_disconnect(s);
}

static int sq_step_done(sq_conn *k, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "sqlite: %s: %s\n", sqlite3_sql(st), sqlite3_errmsg(k->c));
        return -1;
    }
    return 0;
}

static int sq_append(void *s, const char *stream, int64_t expected, const bench_event *ev,
                     size_t n)
{
    sq_conn *k = s;
    int bulk = k->db->bulk; /* bulk: one outer transaction around the whole load */
    if (!bulk && sq_step_done(k, k->begin))
        return BENCH_ERROR;
    sqlite3_bind_text(k->head, 1, stream, -1, SQLITE_STATIC);
    int rc = sqlite3_step(k->head);
    if (rc != SQLITE_ROW) {
        fprintf(stderr, "sqlite: head: %s\n", sqlite3_errmsg(k->c));
        sqlite3_reset(k->head);
        goto fail;
    }
    int64_t cur = sqlite3_column_type(k->head, 0) == SQLITE_NULL
                      ? -1
                      : sqlite3_column_int64(k->head, 0);
    sqlite3_reset(k->head);
    if (cur != expected) {
        if (!bulk)
            sq_step_done(k, k->rollback);
        return BENCH_CONFLICT;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_text(k->ins, 1, stream, -1, SQLITE_STATIC);
        sqlite3_bind_int64(k->ins, 2, cur + 1 + (int64_t)i);
        sqlite3_bind_blob(k->ins, 3, ev[i].id, 16, SQLITE_STATIC);
        sqlite3_bind_text(k->ins, 4, ev[i].type, -1, SQLITE_STATIC);
        sqlite3_bind_blob(k->ins, 5, ev[i].data, (int)ev[i].data_len, SQLITE_STATIC);
        if (sq_step_done(k, k->ins))
            goto fail;
    }
    if (!bulk && sq_step_done(k, k->commit))
        goto fail;
    return BENCH_OK;
fail:
    if (!bulk)
        sq_step_done(k, k->rollback);
    return BENCH_ERROR;
}

static int sq_read(sq_conn *k, sqlite3_stmt *st, bench_sink *sink)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *stream = sqlite3_column_text(st, 1);
        size_t stream_len = (size_t)sqlite3_column_bytes(st, 1);
        const unsigned char *type = sqlite3_column_text(st, 4);
        size_t type_len = (size_t)sqlite3_column_bytes(st, 4);
        const void *data = sqlite3_column_blob(st, 5);
        size_t data_len = (size_t)sqlite3_column_bytes(st, 5);
        const uint8_t *id = sqlite3_column_blob(st, 3);
        static const uint8_t zero[16];
        if (sqlite3_column_bytes(st, 3) != 16)
            id = zero;
        sink_event(sink, (const char *)stream, stream_len, (const char *)type, type_len, data,
                   data_len, id, (uint64_t)sqlite3_column_int64(st, 2),
                   (uint64_t)sqlite3_column_int64(st, 0));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "sqlite: read: %s\n", sqlite3_errmsg(k->c));
        return -1;
    }
    return 0;
}

static int sq_read_stream(void *s, const char *stream, bench_sink *sink)
{
    sq_conn *k = s;
    sqlite3_bind_text(k->rd_stream, 1, stream, -1, SQLITE_STATIC);
    return sq_read(k, k->rd_stream, sink);
}

static int sq_read_all(void *s, bench_sink *sink)
{
    sq_conn *k = s;
    return sq_read(k, k->rd_all, sink);
}

static void sq_close(void *h)
{
    sq_db *db = h;
    if (!db)
        return;
    if (db->bulk)
        sq_exec(db->main->c, "COMMIT");
    sq_disconnect(db->main);
    free(db);
}

static int sq_is_complete(void *h) { return file_exists(((sq_db *)h)->marker); }
static void sq_mark_complete(void *h)
{
    sq_db *db = h;
    if (db->bulk) { /* make the load durable before the marker says it is there */
        sq_exec(db->main->c, "COMMIT");
        sq_exec(db->main->c, "PRAGMA wal_checkpoint(TRUNCATE)");
        sq_exec(db->main->c, "BEGIN");
    }
    touch_file(db->marker);
}

const bench_sys bench_sys_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .session_open = sq_session_open,
    .session_close = sq_session_close,
    .append = sq_append,
    .read_stream = sq_read_stream,
    .read_all = sq_read_all,
    .close = sq_close,
    .is_complete = sq_is_complete,
    .mark_complete = sq_mark_complete,
};
