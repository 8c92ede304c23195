/*
 * bench.h -- shared declarations of the annal benchmark driver and its peers.
 *
 * Every system under test (annal, raw, raw-prealloc, sqlite, postgres) implements
 * bench_sys. The driver (bench_main.c) generates the workload up front from a seeded
 * PRNG, so every system appends exactly the same events to the same streams with the
 * same expected revisions.
 */
#ifndef ANNAL_BENCH_H
#define ANNAL_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* One event to append. All pointers borrowed for the duration of the call. */
typedef struct bench_event {
    uint8_t id[16];   /* random UUIDv4 */
    const char *type; /* NUL-terminated */
    const char *data; /* ~200 bytes of JSON, not NUL-terminated */
    uint32_t data_len;
} bench_event;

/* Consumer of read results: every system hands each event it reads to sink_event(),
 * so the per-event work outside the system is identical. It also checks ordering. */
typedef struct bench_sink {
    uint64_t count;
    uint64_t bytes;    /* data bytes seen */
    uint64_t check;    /* a checksum of touched bytes, keeps the reads honest */
    int64_t last_key;  /* last revision (stream read) or position (all read) */
    int by_revision;   /* 1: keys are revisions 0,1,2... ; 0: positions, increasing */
    int errors;        /* ordering errors seen */
} bench_sink;

void sink_init(bench_sink *s, int by_revision);
void sink_event(bench_sink *s, const char *stream, size_t stream_len, const char *type,
                size_t type_len, const void *data, size_t data_len, const uint8_t id[16],
                uint64_t revision, uint64_t position);

/* Open options. */
typedef struct bench_open {
    const char *dir;       /* data directory for this store (created by the driver) */
    const char *pg;        /* libpq conninfo (postgres only) */
    const char *pg_schema; /* schema holding this store's tables (postgres only) */
    int fresh;             /* 1: start from an empty store (drop what's there) */
    int bulk;              /* 1: loading a read fixture: durability not needed */
    int auto_id;           /* annal only: pass all-zero ids so the store makes UUIDv7s */
} bench_open;

/* Append outcome. */
enum { BENCH_OK = 0, BENCH_CONFLICT = 1, BENCH_ERROR = -1 };

typedef struct bench_sys {
    const char *name;
    /* Open or create the store. Returns a handle or NULL (message on stderr). */
    void *(*open)(const bench_open *o);
    /* Per-thread session (a connection for sqlite/postgres; the handle itself for
     * annal/raw). Called from the thread that uses it. */
    void *(*session_open)(void *h);
    void (*session_close)(void *h, void *s);
    /* Append n events atomically to stream with an expected revision (-1: the stream
     * must not exist; else the stream's last revision). Durable on return unless
     * opened with bulk. BENCH_OK, BENCH_CONFLICT or BENCH_ERROR. */
    int (*append)(void *s, const char *stream, int64_t expected, const bench_event *ev,
                  size_t n);
    /* Full forward reads. Return 0, or -1 on error. */
    int (*read_stream)(void *s, const char *stream, bench_sink *sink);
    int (*read_all)(void *s, bench_sink *sink);
    /* Flush and close. */
    void (*close)(void *h);
    /* Is the store a complete read fixture (marker set by mark_complete)? */
    int (*is_complete)(void *h);
    void (*mark_complete)(void *h);
} bench_sys;

extern const bench_sys bench_sys_raw;
extern const bench_sys bench_sys_raw_prealloc;
extern const bench_sys bench_sys_sqlite;
extern const bench_sys bench_sys_postgres;
#ifdef BENCH_WITH_ANNAL
extern const bench_sys bench_sys_annal;
#endif

/* Helpers (bench_common.c). */
double now_s(void);                        /* CLOCK_MONOTONIC seconds */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
int mkdir_p(const char *path);
int file_exists(const char *path);
int touch_file(const char *path);
int rm_rf(const char *path);
uint64_t du_bytes(const char *path);       /* allocated bytes under path */

/* splitmix64 PRNG. */
typedef struct bench_rng {
    uint64_t s;
} bench_rng;
uint64_t rng_next(bench_rng *r);
uint64_t rng_below(bench_rng *r, uint64_t n); /* uniform in [0, n) */

/* Generate one event payload/type/id from rng. data must have room for 256 bytes;
 * returns the JSON length (about 200). */
uint32_t gen_payload(bench_rng *r, char *data);
const char *gen_type(bench_rng *r);
void gen_uuid(bench_rng *r, uint8_t id[16]);

/* Latency statistics. */
double percentile(double *v, size_t n, double p); /* sorts v in place */

#endif
