/*
 * annal.h -- the whole public interface of libannal, an embeddable event store.
 * Anything not declared in this file is private and may change without notice.
 *
 * Model: a store (annal_db) is a directory holding an append-only log of immutable
 * events, grouped in streams. Every event has a revision in its stream (0, 1, 2, ...)
 * and a position in the global order `$all` (0, 1, 2, ... in commit order, no gaps).
 *
 * Conventions used below:
 *   - Every function that can fail returns annal_err; ANNAL_OK (0) is success.
 *   - "borrowed" pointers stay owned by the caller (arguments) or by the library
 *     (results) and are valid only for the lifetime stated beside them.
 *   - "caller frees" results are released with annal_free() unless stated otherwise.
 *   - A handle (annal_db) may be used from many threads at once. Iterators belong to
 *     one thread at a time.
 *   - No global state: everything hangs off the handle; the library never reads the
 *     environment.
 */
#ifndef ANNAL_H
#define ANNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ANNAL_BUILDING) && defined(__GNUC__)
#define ANNAL_API __attribute__((visibility("default")))
#else
#define ANNAL_API
#endif

/* Version. ABI promise: within one MAJOR version, functions are only added and structs
 * only grow at their end behind an explicit options-init function; a changed meaning
 * gets a new name. The on-disk format has its own version (docs/format.md). */
#define ANNAL_VERSION_MAJOR  0
#define ANNAL_VERSION_MINOR  1
#define ANNAL_VERSION_PATCH  0
#define ANNAL_VERSION_STRING "0.1.0"
#define ANNAL_VERSION_NUMBER                                                                       \
    (ANNAL_VERSION_MAJOR * 1000000 + ANNAL_VERSION_MINOR * 1000 + ANNAL_VERSION_PATCH)
ANNAL_API int annal_version_number(void);         /* ANNAL_VERSION_NUMBER of the library */
ANNAL_API const char *annal_version_string(void); /* static text */

/* ------------------------------------------------------------------------------------
 * Errors: one enum for everything. OS errno values are detail (see annal_db_errmsg).
 */
typedef enum annal_err {
    ANNAL_OK = 0,
    ANNAL_END,        /* an iterator has no more items: not a failure */
    ANNAL_ENOMEM,     /* out of memory */
    ANNAL_EINVAL,     /* invalid argument: name, option, flag, UUID text */
    ANNAL_EIO,        /* the operating system reported an I/O error */
    ANNAL_ENOSPC,     /* the disk is full; nothing was written, retry when space is freed */
    ANNAL_ECORRUPT,   /* data on disk failed a check (checksum, sequence, header) */
    ANNAL_ENOTFOUND,  /* no such stream, event or store */
    ANNAL_ECONFLICT,  /* expected revision did not match the stream's revision */
    ANNAL_EDUPLICATE, /* an event id is already used by a different append */
    ANNAL_ETOOBIG,    /* an event or a batch is over the configured limit */
    ANNAL_EBUSY,      /* the store is open for writing by another process */
    ANNAL_EREADONLY,  /* the handle was opened read-only */
    ANNAL_EFAILED,    /* an earlier write or flush failed: close and reopen to recover */
    ANNAL_EVERSION,   /* the store was written by an unsupported format version */
    ANNAL_ECANCELED,  /* a progress callback asked to stop */
    ANNAL_ERR_COUNT   /* number of codes; not an error */
} annal_err;

ANNAL_API const char *annal_strerror(annal_err e); /* static text, never NULL, thread-safe */
ANNAL_API const char *annal_errname(annal_err e);  /* "ANNAL_ECONFLICT"; static, never NULL */

/* Release memory the library handed over ("caller frees"). NULL is a no-op. */
ANNAL_API void annal_free(void *p);

/* ------------------------------------------------------------------------------------
 * Opening a store.
 */
typedef struct annal_db annal_db; /* opaque; one per open store */

#define ANNAL_OPEN_CREATE   0x1u /* create the directory and an empty store if missing */
#define ANNAL_OPEN_READONLY 0x2u /* read only; may run while another process writes */
#define ANNAL_OPEN_NOSYNC                                                                          \
    0x4u /* NOT DURABLE: appends return before data is on disk.                                    \
          * For tests and bulk import only. */

typedef enum annal_log_level { ANNAL_LOG_ERROR, ANNAL_LOG_WARN, ANNAL_LOG_INFO } annal_log_level;

/* Called for long operations (index catch-up on open, rebuild, verify, import).
 * done/total count events (total may be 0 when unknown). Return non-zero to cancel;
 * the operation then fails with ANNAL_ECANCELED. */
typedef int (*annal_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct annal_db_opts {
    unsigned flags;            /* ANNAL_OPEN_* */
    uint64_t segment_bytes;    /* log segment size; default 256 MiB (fixed at creation) */
    uint64_t max_event_bytes;  /* max data + metadata of one event; default 32 MiB */
    uint64_t max_batch_bytes;  /* max data + metadata of one append; default 64 MiB */
    uint32_t max_batch_events; /* max events in one append; default 100000 */
    uint64_t index_map_bytes;  /* address space reserved for the index; default 1 TiB */
    /* Logger: msg is valid only during the call. May be NULL (silence). */
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;
    annal_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} annal_db_opts;

/* Fill *opts with defaults. Always call before setting fields. */
ANNAL_API void annal_db_opts_init(annal_db_opts *opts);

/* Open the store in directory dir (borrowed). opts may be NULL (defaults, no CREATE).
 * On success *out is a new handle the caller closes with annal_db_close().
 * A writer recovers the store: a torn tail left by a crash is cut back to the last
 * whole append, and the indexes catch up with the log.
 * Damage to acknowledged events is never cut away: it fails the open with ANNAL_ECORRUPT
 * when recovery would have to step over it (run annal_verify to locate it).
 * Errors: ANNAL_ENOTFOUND (no store and no CREATE), ANNAL_EBUSY (another process
 * writes), ANNAL_EVERSION, ANNAL_ECORRUPT, ANNAL_EIO, ANNAL_ENOSPC, ANNAL_ENOMEM, ANNAL_EINVAL.
 * Failing opens have no handle for annal_db_errmsg(): the detail goes to opts->log. */
ANNAL_API annal_err annal_db_open(const char *dir, const annal_db_opts *opts, annal_db **out);

/* Make every append returned so far durable: for handles opened with
 * ANNAL_OPEN_NOSYNC (bulk import); a no-op cost otherwise. ANNAL_EIO poisons the
 * handle like a failed append flush. */
ANNAL_API annal_err annal_db_sync(annal_db *db);

/* Flush and close (a NOSYNC handle is synced first). No call on db may be running or
 * start. Open iterators must be closed first. NULL is a no-op. */
ANNAL_API void annal_db_close(annal_db *db);

/* Detail of the last failure of a call on db made by the calling thread: static or
 * thread-owned text valid until this thread's next call on db. Never NULL. */
ANNAL_API const char *annal_db_errmsg(annal_db *db);

/* ------------------------------------------------------------------------------------
 * Appending.
 */
typedef struct annal_uuid {
    uint8_t bytes[16]; /* RFC 9562 byte order */
} annal_uuid;

/* Text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into out (>= 37 bytes, NUL added). */
ANNAL_API void annal_uuid_format(const annal_uuid *id, char out[37]);
/* Parse the text form (hyphens required, any case). ANNAL_EINVAL if malformed. */
ANNAL_API annal_err annal_uuid_parse(const char *text, annal_uuid *out);

/* One event to append. All pointers are borrowed for the duration of the call. */
typedef struct annal_event_data {
    annal_uuid id;    /* in/out: all zero => the store makes a UUIDv7 and writes it here */
    const char *type; /* NUL-terminated UTF-8, 1..ANNAL_MAX_NAME bytes */
    const void *data; /* may be NULL when data_len is 0 */
    size_t data_len;
    const void *metadata; /* may be NULL when metadata_len is 0 */
    size_t metadata_len;
} annal_event_data;

#define ANNAL_MAX_NAME 255 /* bytes in a stream name or an event type */

/* Expected revision of an append: an exact revision (>= 0), or one of these. */
#define ANNAL_EXPECT_ANY           ((int64_t)-2) /* no check */
#define ANNAL_EXPECT_NO_STREAM     ((int64_t)-1) /* the stream must not exist */
#define ANNAL_EXPECT_STREAM_EXISTS ((int64_t)-4) /* the stream must have an event */

typedef struct annal_append_result {
    uint64_t first_revision; /* revision of the first appended event */
    uint64_t first_position; /* position in $all of the first appended event */
    uint64_t count;          /* events appended (or found, when idempotent) */
    int64_t revision;        /* the stream's last revision after the append; on
                              * ANNAL_ECONFLICT its actual revision (-1: no stream) */
    int idempotent;          /* 1 if the batch had already been appended: nothing new
                              * was written and the fields describe the original */
} annal_append_result;

/* Append n events to stream (borrowed, NUL-terminated UTF-8, 1..ANNAL_MAX_NAME bytes,
 * not starting with '$') atomically: all or none, in consecutive revisions, in
 * consecutive positions. Returns only once the events are durable on disk (unless
 * ANNAL_OPEN_NOSYNC). result may be NULL.
 *
 * Idempotence: event ids are unique in the store. If the first event's id is already
 * stored and the whole batch matches, in order and by id only (type, data and metadata
 * are not compared, as in KurrentDB), events already in this stream whose
 * first revision is one the original append could have been given under `expected`
 * (any: always; exact E: E + 1; no_stream: 0; stream_exists: > 0), the call succeeds
 * with result->idempotent = 1 and the original revisions and positions. Any other reuse
 * of a stored id fails with ANNAL_EDUPLICATE.
 *
 * Errors: ANNAL_ECONFLICT (result->revision holds the actual revision),
 * ANNAL_EDUPLICATE, ANNAL_EINVAL, ANNAL_ETOOBIG, ANNAL_EREADONLY, ANNAL_ENOSPC,
 * ANNAL_EIO, ANNAL_EFAILED. On any error nothing from this call is visible. After
 * ANNAL_EIO from a flush the handle refuses appends with ANNAL_EFAILED until reopened:
 * such an append may or may not be present after recovery, never partly. */
ANNAL_API annal_err annal_append(annal_db *db, const char *stream, int64_t expected,
                                 annal_event_data *events, size_t n, annal_append_result *result);

/* ------------------------------------------------------------------------------------
 * Reading. Reads never wait for appends and appends never wait for reads. A read sees
 * every event acknowledged before it began.
 */
typedef struct annal_event {
    annal_uuid id;
    const char *stream; /* NUL-terminated */
    size_t stream_len;
    const char *type; /* NUL-terminated */
    size_t type_len;
    const void *data; /* data_len bytes, not NUL-terminated */
    size_t data_len;
    const void *metadata; /* metadata_len bytes */
    size_t metadata_len;
    uint64_t revision;    /* in its stream */
    uint64_t position;    /* in $all */
    int64_t timestamp_ns; /* store's wall clock at commit, ns since the Unix epoch */
} annal_event;

typedef struct annal_iter annal_iter; /* opaque read cursor */

#define ANNAL_READ_BACKWARD 0x1u       /* newest first */
#define ANNAL_FROM_END      UINT64_MAX /* as `from` of a backward read: start at the last event */

/* Read stream from revision `from` (inclusive), forward or backward, at most limit
 * events (0: no limit). *out is closed with annal_iter_close(). A stream that does not
 * exist reads as ANNAL_ENOTFOUND. */
ANNAL_API annal_err annal_read_stream(annal_db *db, const char *stream, uint64_t from,
                                      unsigned flags, uint64_t limit, annal_iter **out);

/* Read $all from position `from` (inclusive), forward or backward, at most limit events
 * (0: no limit). An empty store yields no events. */
ANNAL_API annal_err annal_read_all(annal_db *db, uint64_t from, unsigned flags, uint64_t limit,
                                   annal_iter **out);

/* Next event. On ANNAL_OK *ev is borrowed and valid until the next call on it or
 * annal_iter_close(). ANNAL_END when done; ANNAL_ECORRUPT names a damaged event (the
 * iterator stops there). */
ANNAL_API annal_err annal_iter_next(annal_iter *it, const annal_event **ev);
ANNAL_API void annal_iter_close(annal_iter *it); /* NULL is a no-op */

/* The event at position, as one allocation the caller releases with annal_free().
 * ANNAL_ENOTFOUND past the head. */
ANNAL_API annal_err annal_event_get(annal_db *db, uint64_t position, annal_event **out);

/* The last revision of stream, or ANNAL_ENOTFOUND. */
ANNAL_API annal_err annal_stream_head(annal_db *db, const char *stream, uint64_t *revision);

/* Streams in name order. */
typedef struct annal_stream_info {
    const char *name;       /* NUL-terminated; borrowed until the next call */
    uint64_t last_revision; /* revision of its last event */
    uint64_t last_position; /* position of its last event */
    int64_t created_ns;     /* timestamp of its first event */
} annal_stream_info;
typedef struct annal_stream_iter annal_stream_iter;
/* after: start after this name (borrowed, NULL: from the first). */
ANNAL_API annal_err annal_streams_open(annal_db *db, const char *after, annal_stream_iter **out);
ANNAL_API annal_err annal_streams_next(annal_stream_iter *it, const annal_stream_info **info);
ANNAL_API void annal_streams_close(annal_stream_iter *it); /* NULL is a no-op */

typedef struct annal_db_info {
    uint64_t events;      /* events in $all == next position */
    uint64_t streams;     /* streams with at least one event */
    uint64_t segments;    /* log segment files */
    uint64_t log_bytes;   /* bytes of log used (not preallocated) */
    uint64_t disk_bytes;  /* bytes on disk: log files (preallocated) + index */
    uint64_t index_bytes; /* bytes of the index files */
    int64_t last_ns;      /* timestamp of the last event, 0 if none */
    int readonly;         /* 1 if opened read-only */
} annal_db_info;
ANNAL_API annal_err annal_db_info_get(annal_db *db, annal_db_info *out);

/* ------------------------------------------------------------------------------------
 * Maintenance. Both take the store directory, not a handle.
 */

/* One finding of annal_verify. All pointers are valid only during the callback. */
typedef struct annal_damage {
    uint64_t segment;   /* segment number (file name) */
    uint64_t offset;    /* byte offset in that segment file */
    uint64_t position;  /* position of the damaged or missing event, UINT64_MAX unknown */
    const char *stream; /* its stream when known, else NULL */
    const char *what;   /* human-readable description */
} annal_damage;
typedef void (*annal_damage_fn)(void *ctx, const annal_damage *d);

/* Check every record of every segment (checksums, sequence, batches) and that the index
 * agrees with the log. Read-only; may run while another process writes. Calls found()
 * for each problem (may be NULL). Returns ANNAL_OK if the store is sound,
 * ANNAL_ECORRUPT if anything was found, or the error that stopped it. */
ANNAL_API annal_err annal_verify(const char *dir, const annal_db_opts *opts, annal_damage_fn found,
                                 void *ctx);

/* Throw away the index and rebuild it from the log. Needs the write lock (ANNAL_EBUSY
 * if another process has the store open for writing). */
ANNAL_API annal_err annal_rebuild_index(const char *dir, const annal_db_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* ANNAL_H */
