/*
 * annal.h -- the whole public interface of libannal, an embeddable event store.
 * Anything not declared in this file is private and may change without notice.
 *
 * Model: a store (annal_db) is a directory holding an append-only log of immutable
 * events, grouped in streams. Every event has a revision in its stream (0, 1, 2, ...)
 * and a position in the global order `$all` (0, 1, 2, ... in commit order, no gaps).
 * Positions are never reused. Gaps appear only where events were erased (compaction) or
 * where an operator accepted the loss of a log's lost tail (annal_recover_accept_loss):
 * those positions stay a recorded hole and are never given to another event.
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

/* Version. ABI promise: within one MAJOR version, functions are only added and a changed
 * meaning gets a new name. Structs grow only at their end, and the library never reads
 * or writes a byte of caller memory past the size the caller was compiled with:
 *   - Option structs (annal_db_opts, annal_sub_opts, annal_handler_opts) start with
 *     `struct_size`, which their init macro sets to the caller's sizeof. The library reads
 *     only the fields inside struct_size and uses defaults for the rest; a struct_size
 *     too small to hold the first field is ANNAL_EINVAL. Always init before setting fields.
 *   - Result structs the caller provides (annal_append_result, annal_db_info,
 *     annal_compact_stats, annal_sub_item, annal_command_result, annal_state_info) are
 *     filled through macros that pass sizeof(the type in the caller's header): the
 *     library writes at most that many bytes. annal_append_result is also embedded in
 *     annal_command_result, so it is frozen: new outputs go at the end of the outer one.
 *   - The macros keep the source API (annal_db_opts_init, annal_append, ...); the
 *     *_sized functions behind them are the ABI. Call the macros.
 *   - Structs passed in arrays or only read (annal_uuid, annal_event_data, annal_filter,
 *     annal_command_meta, annal_tag_list, annal_query_item, annal_query, annal_condition,
 *     annal_tagged_append) are frozen. Structs the library owns and hands out by pointer
 *     (annal_event, annal_stream_info, annal_damage, annal_sub_item.event) may grow.
 * The on-disk format has its own version (docs/format.md). */
#define ANNAL_VERSION_MAJOR  0
#define ANNAL_VERSION_MINOR  2
#define ANNAL_VERSION_PATCH  0
#define ANNAL_VERSION_STRING "0.2.0"
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
    ANNAL_ECANCELED,  /* a progress callback asked to stop, or a wait was canceled */
    ANNAL_EDELETED,   /* the stream was hard-deleted (tombstoned): never written again */
    ANNAL_ETIMEDOUT,  /* a wait ended before anything happened: not a failure */
    ANNAL_EPERM,      /* the operating system denied access to the store's files */
    ANNAL_ECONDITION, /* an event matching an append's condition exists after its position:
                       * nothing was written (annal_append_tagged) */
    ANNAL_ENOTSUP,    /* the operation is not supported by this build or handle */
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

#define ANNAL_OPEN_CREATE 0x1u /* create the directory and an empty store if missing */
#define ANNAL_OPEN_READONLY                                                                        \
    0x2u /* read only; may run while another process (or a handle of                               \
          * this one) writes. In one process, handles of a store share                             \
          * one index environment: open a writer before read-only                                  \
          * handles, or it gets ANNAL_EBUSY. */
#define ANNAL_OPEN_NOSYNC                                                                          \
    0x4u /* NOT DURABLE: appends return before data is on disk.                                    \
          * For tests and bulk import only. */

typedef enum annal_log_level { ANNAL_LOG_ERROR, ANNAL_LOG_WARN, ANNAL_LOG_INFO } annal_log_level;

/* Called for long operations (index catch-up on open, rebuild, verify, import).
 * done/total count events (total may be 0 when unknown). Return non-zero to cancel;
 * the operation then fails with ANNAL_ECANCELED. */
typedef int (*annal_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct annal_db_opts {
    size_t struct_size;        /* set by annal_db_opts_init: see the ABI promise above */
    unsigned flags;            /* ANNAL_OPEN_* */
    uint64_t segment_bytes;    /* log segment size; default 256 MiB (fixed at creation) */
    uint64_t max_event_bytes;  /* max data + metadata of one event; default 32 MiB */
    uint64_t max_batch_bytes;  /* max data + metadata of one append; default 64 MiB */
    uint32_t max_batch_events; /* max events in one append; default 100000 */
    uint64_t index_map_bytes;  /* the most the index may map (and its file grow to): a
                                * writer maps a little more than it has allocated; readers
                                * map the file as it is (more as it grows); default 1 TiB */
    uint64_t id_cache_events;  /* newest event ids a writer keeps in memory (32 bytes each)
                                * before writing them to a sorted run file beside the index;
                                * default 524288 (16 MiB) */
    /* Logger: msg is valid only during the call. May be NULL (silence). */
    void (*log)(void *ctx, annal_log_level level, const char *msg);
    void *log_ctx;
    annal_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} annal_db_opts;

/* Fill *opts with defaults. Always call before setting fields. The macro passes the
 * caller's sizeof; the function writes only that many bytes. */
ANNAL_API void annal_db_opts_init_sized(annal_db_opts *opts, size_t struct_size);
#define annal_db_opts_init(opts) annal_db_opts_init_sized((opts), sizeof *(opts))

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

/* Name limits. ANNAL_MAX_NAME bounds every name the store keeps (event types, and
 * streams, the system ones included; the on-disk format, docs/format.md). A stream name
 * given to a writing call (append, metadata, delete, handlers) is shorter, so that every
 * system stream derived from it fits: `$$<stream>` (its metadata, +2 bytes) and, with
 * one more name of at most 63 bytes (a subscription group, a projection), names such as
 * `$persistentsubscription-<stream>::<group>-checkpoint` (+37 + group). Streams written
 * with longer names by older versions stay readable but take no new writes. */
#define ANNAL_MAX_NAME        255 /* bytes in an event type or any stored stream name */
#define ANNAL_MAX_STREAM_NAME 150 /* bytes in a stream name a caller writes to */

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

/* Append n events to stream (borrowed, NUL-terminated UTF-8, 1..ANNAL_MAX_STREAM_NAME bytes,
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
ANNAL_API annal_err annal_append_sized(annal_db *db, const char *stream, int64_t expected,
                                       annal_event_data *events, size_t n,
                                       annal_append_result *result, size_t result_size);
#define annal_append(db, stream, expected, events, n, result)                                      \
    annal_append_sized((db), (stream), (expected), (events), (n), (result),                        \
                       sizeof(annal_append_result))

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
    /* Tags (Dynamic Consistency Boundaries, below): ntags NUL-terminated strings packed one
     * after another in tags_len bytes ("course:c1\0student:s7\0"), in the order they were
     * appended; NULL, 0, 0 when the event has none. Walk them with annal_event_tag_next. */
    const char *tags;
    size_t tags_len;
    size_t ntags;
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
    /* Of the above, the store's own: streams whose names start with '$' (the metadata
     * streams `$$<stream>`) and their events. events - system_events are the users'. */
    uint64_t system_streams;
    uint64_t system_events;
} annal_db_info;
ANNAL_API annal_err annal_db_info_get_sized(annal_db *db, annal_db_info *out, size_t out_size);
#define annal_db_info_get(db, out) annal_db_info_get_sized((db), (out), sizeof(annal_db_info))

/* ------------------------------------------------------------------------------------
 * Categories and event types. A stream `order-123` belongs to category `order` (the text
 * before the first '-'; a name without '-' is its own category). Both are native indexes
 * kept with the main index and rebuilt with it: no link events are written. The names
 * `$ce-<category>` and `$et-<type>` read them through annal_read_stream; there, as here,
 * `from` is a position in $all (not a revision) and events keep their own stream and
 * revision. ANNAL_FROM_END starts a backward read at the newest. A category or type with
 * no events yields no events (not ANNAL_ENOTFOUND).
 */
ANNAL_API annal_err annal_read_category(annal_db *db, const char *category, uint64_t from,
                                        unsigned flags, uint64_t limit, annal_iter **out);
ANNAL_API annal_err annal_read_type(annal_db *db, const char *type, uint64_t from, unsigned flags,
                                    uint64_t limit, annal_iter **out);

/* ------------------------------------------------------------------------------------
 * Stream metadata and deletion. Metadata is a JSON object per stream, stored as events
 * of type `$metadata` in the stream `$$<stream>` (as in KurrentDB), so it is versioned
 * and written with an expected revision of that metadata stream. Recognized members:
 *   "$maxCount": n   only the newest n events are visible
 *   "$maxAge":   s   only events committed in the last s seconds are visible
 *   "$tb":       r   events with revision < r are invisible (truncate before)
 * Any other member is kept as a custom property. Limits apply to every read, category
 * and type read, $all read and subscription at once; annal_compact reclaims the space.
 */

/* Set stream's metadata to json (borrowed; a JSON object text, json_len bytes).
 * expected is the expected revision of the metadata stream (ANNAL_EXPECT_*), result as
 * in annal_append (revisions are the metadata stream's). The stream need not exist.
 * Errors: those of annal_append; ANNAL_EINVAL (not a JSON object, a recognized member
 * with a negative or non-integer value); ANNAL_EDELETED for a tombstoned stream. */
ANNAL_API annal_err annal_stream_meta_set_sized(annal_db *db, const char *stream, int64_t expected,
                                                const char *json, size_t json_len,
                                                annal_append_result *result, size_t result_size);
#define annal_stream_meta_set(db, stream, expected, json, json_len, result)                        \
    annal_stream_meta_set_sized((db), (stream), (expected), (json), (json_len), (result),          \
                                sizeof(annal_append_result))

/* stream's current metadata as a NUL-terminated JSON object text in *json (caller frees)
 * and the metadata stream's revision in *revision (may be NULL; -1 when never set, then
 * *json is "{}"). */
ANNAL_API annal_err annal_stream_meta_get(annal_db *db, const char *stream, char **json,
                                          int64_t *revision);

#define ANNAL_DELETE_HARD 0x1u /* tombstone: the stream can never be written again */

/* Delete stream, whose last revision must match expected (ANNAL_EXPECT_*).
 * Soft (flags 0): the stream reads as ANNAL_ENOTFOUND; a later append re-creates it and
 * continues its revisions, with the old events staying invisible (its metadata gets
 * "$tb" = the next revision). Hard (ANNAL_DELETE_HARD): a `$streamDeleted` event is
 * appended to it; from then on reads and appends fail with ANNAL_EDELETED.
 * result (may be NULL) describes the event written. Errors: those of annal_append,
 * ANNAL_ENOTFOUND (no such stream), ANNAL_EDELETED (already tombstoned). */
ANNAL_API annal_err annal_stream_delete_sized(annal_db *db, const char *stream, int64_t expected,
                                              unsigned flags, annal_append_result *result,
                                              size_t result_size);
#define annal_stream_delete(db, stream, expected, flags, result)                                   \
    annal_stream_delete_sized((db), (stream), (expected), (flags), (result),                       \
                              sizeof(annal_append_result))

/* ------------------------------------------------------------------------------------
 * Subscriptions: catch-up then live, over one stream, $all, a category (`$ce-<cat>`) or
 * an event type (`$et-<type>`). A subscription is a cursor over the log: history and live
 * events come from the same place, so the switch has no gap and no duplicate, a slow
 * subscriber holds no memory in the store and never slows appenders. A subscriber in
 * another process (a read-only handle) is woken by the writer through a shared futex,
 * without polling.
 */
typedef struct annal_sub annal_sub; /* opaque; used by one thread at a time, except cancel */

/* Filters evaluated in the store for $all (and category and type) subscriptions. A
 * filtered-out event is not delivered, but it moves the checkpoint. */
typedef struct annal_filter {
    const char *type_prefix;   /* deliver only types starting with this; NULL: any */
    const char *type_regex;    /* POSIX extended regex the type must match; NULL: any */
    const char *stream_prefix; /* the same for stream names */
    const char *stream_regex;
    int exclude_system; /* skip events of types or streams starting with '$' */
} annal_filter;

#define ANNAL_SUB_START 0 /* from the first event */
#define ANNAL_SUB_AFTER 1 /* after `from` (a revision for a stream, else a position) */
#define ANNAL_SUB_END   2 /* only events appended after the subscription opened */

typedef struct annal_sub_opts {
    size_t struct_size;         /* set by annal_sub_opts_init: see the ABI promise */
    const char *stream;         /* borrowed during open: NULL or "$all", "$ce-<category>",
                                 * "$et-<type>", or a stream name */
    int start;                  /* ANNAL_SUB_START, ANNAL_SUB_AFTER or ANNAL_SUB_END */
    uint64_t from;              /* for ANNAL_SUB_AFTER */
    const annal_filter *filter; /* copied during open; NULL: none. Not for one stream. */
    /* A checkpoint item is produced after this many events were passed over without one
     * being delivered (0: default 1000), and whenever the subscription catches up. */
    uint32_t checkpoint_every;
    /* Once caught up, being this many events behind the head again reports
     * ANNAL_SUB_FELL_BEHIND (0: default 10000). */
    uint64_t behind_threshold;
    /* Deliver only events matching this query (Dynamic Consistency Boundaries, below);
     * copied during open; NULL: every event. Only for $all (stream NULL or "$all"); with a
     * filter too, an event must pass both. Catch-up is served from the tag and type
     * indexes; non-matching events move the checkpoint like filtered-out ones. */
    const struct annal_query *query;
} annal_sub_opts;

/* defaults: $all from the start */
ANNAL_API void annal_sub_opts_init_sized(annal_sub_opts *opts, size_t struct_size);
#define annal_sub_opts_init(opts) annal_sub_opts_init_sized((opts), sizeof *(opts))

typedef enum annal_sub_kind {
    ANNAL_SUB_EVENT,       /* item->event is the next event */
    ANNAL_SUB_CAUGHT_UP,   /* every event committed so far has been delivered */
    ANNAL_SUB_FELL_BEHIND, /* after catching up, the subscriber is behind_threshold behind */
    ANNAL_SUB_CHECKPOINT   /* item->position: a place to resume from (see below) */
} annal_sub_kind;

typedef struct annal_sub_item {
    annal_sub_kind kind;
    const annal_event *event; /* EVENT: borrowed until the next call on the subscription */
    /* EVENT: its position. CHECKPOINT: every event before this position has been
     * delivered or filtered out, so ANNAL_SUB_AFTER with from = position - 1 resumes
     * exactly (position 0: nothing passed yet). For a one-stream subscription the
     * checkpoint is a revision in the same sense. */
    uint64_t position;
} annal_sub_item;

/* Open a subscription on db (borrowed: db must outlive it). *out is freed with
 * annal_sub_close(). Errors: ANNAL_EINVAL (bad name, bad regex, filter on one stream),
 * ANNAL_ENOMEM. A stream that does not exist yet is waited for. */
ANNAL_API annal_err annal_sub_open(annal_db *db, const annal_sub_opts *opts, annal_sub **out);

/* The next item, waiting up to timeout_ms for one (-1: forever, 0: do not wait).
 * ANNAL_ETIMEDOUT when none came in time; ANNAL_ECANCELED after annal_sub_cancel;
 * ANNAL_EDELETED when a subscribed stream is tombstoned; read errors otherwise. */
ANNAL_API annal_err annal_sub_next_sized(annal_sub *s, int timeout_ms, annal_sub_item *item,
                                         size_t item_size);
#define annal_sub_next(s, timeout_ms, item)                                                        \
    annal_sub_next_sized((s), (timeout_ms), (item), sizeof(annal_sub_item))

/* Make a waiting or future annal_sub_next return ANNAL_ECANCELED. Any thread. */
ANNAL_API void annal_sub_cancel(annal_sub *s);
ANNAL_API void annal_sub_close(annal_sub *s); /* NULL is a no-op */

/* Wait until the store's head passes `position` (an event at or after it is committed),
 * up to timeout_ms (-1: forever). ANNAL_OK or ANNAL_ETIMEDOUT. Works across processes. */
ANNAL_API annal_err annal_wait_position(annal_db *db, uint64_t position, int timeout_ms);

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

/* Accept that the log lost its tail. A writer open fails with ANNAL_ECORRUPT when
 * positions that were acknowledged are missing from the end of the log (the disk lost
 * or zeroed its last blocks, a segment was truncated). This records those positions as
 * lost — a hole in `$all`, never given to another event — rebuilds the index and leaves
 * the store writable. *lost_from and *lost_count (either may be NULL) get the range, a
 * count of 0 when nothing was missing. Needs the write lock (ANNAL_EBUSY otherwise). */
ANNAL_API annal_err annal_recover_accept_loss(const char *dir, const annal_db_opts *opts,
                                              uint64_t *lost_from, uint64_t *lost_count);

/* Compaction progress: segments done of total, bytes reclaimed so far. */
typedef struct annal_compact_stats {
    uint64_t segments_total, segments_done;
    uint64_t events_erased;   /* deleted, truncated or expired events removed */
    uint64_t bytes_reclaimed; /* disk bytes given back */
} annal_compact_stats;

/* Reclaim the disk space of invisible events (deleted, truncated, expired) in sealed
 * segments of the store open as db (a writer handle), online: appends and reads go on.
 * Their bytes are erased from disk; positions of the other events never change.
 * bytes_per_s throttles the rewrite (0: no limit). stats (may be NULL) gets the totals;
 * opts->progress of db is called per segment. Killed at any point, the store reopens
 * with every visible event intact. Errors: ANNAL_EREADONLY, ANNAL_EIO, ANNAL_ENOSPC,
 * ANNAL_ECANCELED, ANNAL_ECORRUPT. */
ANNAL_API annal_err annal_compact_sized(annal_db *db, uint64_t bytes_per_s,
                                        annal_compact_stats *stats, size_t stats_size);
#define annal_compact(db, bytes_per_s, stats)                                                      \
    annal_compact_sized((db), (bytes_per_s), (stats), sizeof(annal_compact_stats))

/* annal_compact with a progress callback of this call's own, which can stop it (so one
 * thread can cancel another's compaction: the server's StopScavenge). progress(ctx, done,
 * total) counts sealed segments; it is called before each segment and, while a segment
 * is rewritten, after each MiB written (done unchanged). A nonzero return stops at that
 * safe point with ANNAL_ECANCELED: the segments done stay compacted, the one being
 * rewritten stays as it was (its partial next generation is removed), and the store is
 * as consistent as after a finished compaction; a later compaction goes on from there.
 * (Once a segment's rewrite is written, moving its index entries and installing it run
 * to their end: bounded by one segment.) progress may be NULL (annal_compact). */
ANNAL_API annal_err annal_compact_cb_sized(annal_db *db, uint64_t bytes_per_s,
                                           annal_progress_fn progress, void *ctx,
                                           annal_compact_stats *stats, size_t stats_size);
#define annal_compact_cb(db, bytes_per_s, progress, ctx, stats)                                    \
    annal_compact_cb_sized((db), (bytes_per_s), (progress), (ctx), (stats),                        \
                           sizeof(annal_compact_stats))

/* ---- Command side (src/write/) ---- */
/* ------------------------------------------------------------------------------------
 * The command side, built only on the functions above (docs/write.md).
 *
 * A decider is three pure functions over a state the user defines: initial state,
 * evolve(state, event) and decide(state, command) -> events or a domain rejection. A
 * handler binds a decider to a store and runs commands: it rebuilds the state of a stream
 * (from the newest snapshot, if any, plus the events after it), calls decide without any
 * lock held, and appends the decided events with the revision it read as the expected
 * revision. When another writer got there first (ANNAL_ECONFLICT) it folds the new events
 * and decides again, a bounded number of times.
 *
 * Metadata written by the handler into every event it appends (a JSON object):
 *   "correlationId", "causationId", "user"  from annal_command_meta (when given)
 *   "$schema"                              the event type's schema version, when above 1
 * An event's metadata without "$schema" is at schema version 1.
 */

/* A growing byte buffer owned by the library; callbacks write their output into one.
 * It is valid only during the callback that receives it. */
typedef struct annal_buf annal_buf;

/* Append len bytes of data (borrowed; may be NULL when len is 0) to b.
 * Errors: ANNAL_ENOMEM, ANNAL_EINVAL (b NULL, or data NULL with len > 0). */
ANNAL_API annal_err annal_buf_append(annal_buf *b, const void *data, size_t len);

/* ---- Schema evolution: upcasters turn old event payloads into the current shape when
 * events are read; the log is never rewritten. */
typedef struct annal_schema annal_schema; /* opaque registry of upcasters */

#define ANNAL_SCHEMA_KEY "$schema" /* metadata member holding an event's schema version */

/* Turn ev (borrowed for the call; ev->type and ev->data are the payload at the version
 * the upcaster was registered for) into the next version's data, appended to out.
 * Return ANNAL_OK, or an error that fails the read (ANNAL_ECORRUPT for bad old data).
 * May be called from many threads at once. */
typedef annal_err (*annal_upcast_fn)(void *ctx, const annal_event *ev, annal_buf *out);

/* A new, empty registry in *out; the caller frees it with annal_schema_free().
 * Errors: ANNAL_ENOMEM, ANNAL_EINVAL. */
ANNAL_API annal_err annal_schema_new(annal_schema **out);

/* Free s. No handler using s may be open. NULL is a no-op. */
ANNAL_API void annal_schema_free(annal_schema *s);

/* Register the step from version `version` (>= 1) of event type `type` to version
 * version + 1 of type `new_type` (NULL: the same type; another name renames the type).
 * fn makes the new data from the old; NULL keeps the data (a pure rename). ctx is passed
 * to fn. type and new_type are copied. Steps chain: an event is upcast while a step
 * exists for its (type, version). Register every step before the registry is used;
 * afterwards it is read-only and may be shared by threads and handlers.
 * Errors: ANNAL_EINVAL (bad name, version 0 or UINT32_MAX, a step already registered for
 * (type, version)), ANNAL_ENOMEM. */
ANNAL_API annal_err annal_schema_upcaster_add(annal_schema *s, const char *type, uint32_t version,
                                              const char *new_type, annal_upcast_fn fn, void *ctx);

/* The current schema version of type (borrowed): 1 + the highest version a registered
 * step leads to it from, or 1. Handlers stamp it into new events of that type (as
 * "$schema", when above 1). s may be NULL (always 1). */
ANNAL_API uint32_t annal_schema_version(const annal_schema *s, const char *type);

/* The schema version recorded in ev's metadata into *version: its top-level "$schema"
 * member, or 1 when the metadata is empty, not a JSON object, or has no such member.
 * Errors: ANNAL_ECORRUPT ("$schema" present but not an integer in 1..UINT32_MAX),
 * ANNAL_EINVAL. */
ANNAL_API annal_err annal_event_schema_get(const annal_event *ev, uint32_t *version);

/* ev (borrowed) upcast through s to its current shape, as one allocation the caller
 * releases with annal_free(): type and data replaced, every other field (metadata
 * included, with its original "$schema") copied. An event with no step to apply comes
 * back as a plain copy. s may be NULL.
 * Errors: those of annal_event_schema_get, ANNAL_ENOMEM, or what an upcaster returned. */
ANNAL_API annal_err annal_schema_upcast(const annal_schema *s, const annal_event *ev,
                                        annal_event **out);

/* ---- Deciders */

/* Where decide() writes its outcome. Valid only during the decide() call. */
typedef struct annal_decision annal_decision;

/* Add an event to append: type (1..ANNAL_MAX_NAME bytes), data and metadata are copied.
 * metadata, if not empty, must be a JSON object; the handler adds the command's metadata
 * and "$schema" to it (those members replace members of the same name).
 * Errors: ANNAL_EINVAL, ANNAL_ENOMEM (the handler then fails the command). */
ANNAL_API annal_err annal_decision_emit(annal_decision *d, const char *type, const void *data,
                                        size_t data_len, const void *metadata, size_t metadata_len);

/* Reject the command with a domain error: code (non-zero, the decider's own numbering)
 * and reason (copied, truncated to fit annal_command_result.message; may be NULL).
 * Events emitted in the same decision are discarded. Errors: ANNAL_EINVAL (code 0). */
ANNAL_API annal_err annal_decision_reject(annal_decision *d, int code, const char *reason);

#define ANNAL_DECIDER_VERSION 1

/* A decider: a table of callbacks, read at annal_handler_open() (the struct and name are
 * copied). Every callback gets the ctx of annal_handler_opts. A handler calls them from
 * the threads that call it, possibly at once on different states, and never while it
 * holds a lock; state is only ever touched by one thread at a time. */
typedef struct annal_decider {
    int version;       /* ANNAL_DECIDER_VERSION */
    const char *name;  /* 1..ANNAL_MAX_NAME bytes: names this decider's snapshots */
    size_t state_size; /* bytes of state; the handler allocates and zero-fills them */
    /* Make the initial state in zero-filled memory. NULL: all zeros is the initial state. */
    annal_err (*init)(void *ctx, void *state);
    /* Release what the state owns (not the state's own bytes). May be NULL. */
    void (*release)(void *ctx, void *state);
    /* Apply one event (borrowed for the call, already upcast). Required. An error stops
     * the load and is returned by the call that loads. */
    annal_err (*evolve)(void *ctx, void *state, const annal_event *ev);
    /* Decide on command (the pointer given to annal_handle) from state: emit events with
     * annal_decision_emit, reject with annal_decision_reject, or do neither (nothing to
     * do). Must not keep state, command or out. Return ANNAL_OK, or an error that fails
     * the command as it is (nothing appended). Required. May run more than once per
     * command (after a conflict), each time on a newer state. */
    annal_err (*decide)(void *ctx, const void *state, const void *command, annal_decision *out);
    /* Snapshots (optional, both or neither). state_version names the encoding: a snapshot
     * written under another state_version is ignored and replaced. Change it whenever the
     * encoding, evolve() or the upcasters change what a state means. */
    uint32_t state_version;
    annal_err (*snapshot_encode)(void *ctx, const void *state, annal_buf *out);
    /* Fill an initial state (init() has run) from data. Any error: the snapshot is
     * ignored (the state is released and made again) and the stream is replayed. */
    annal_err (*snapshot_decode)(void *ctx, void *state, const void *data, size_t len);
} annal_decider;

/* ---- Handlers */
typedef struct annal_handler annal_handler; /* opaque; may be used from many threads */

typedef struct annal_handler_opts {
    size_t struct_size;   /* set by annal_handler_opts_init: see the ABI promise */
    void *ctx;            /* passed to every decider and log callback; may be NULL */
    unsigned max_retries; /* decisions again after a conflict; default 10 */
    /* Directory for snapshots (borrowed during open; created if missing, one level).
     * NULL (default): no snapshots. Used only if the decider can encode its state. Files
     * are written to a temporary name, flushed, then renamed into place; deleting them
     * at any time never changes a result. */
    const char *snapshot_dir;
    /* Write a snapshot when a command loaded at least this many events past the newest
     * snapshot (0: only read existing ones); default 100. A command that writes one
     * waits for it (one extra flush per snapshot_every commands). */
    uint64_t snapshot_every;
    const annal_schema *schema; /* upcasters; borrowed for the handler's life; may be NULL */
    /* Problems that fail nothing (a snapshot that could not be written or read).
     * msg is valid only during the call. May be NULL (silence). */
    void (*log)(void *ctx, annal_log_level level, const char *msg);
} annal_handler_opts;

/* Fill *opts with defaults. Always call before setting fields. */
ANNAL_API void annal_handler_opts_init_sized(annal_handler_opts *opts, size_t struct_size);
#define annal_handler_opts_init(opts) annal_handler_opts_init_sized((opts), sizeof *(opts))

/* A handler in *out for decider (read during the call) on db (borrowed: db must outlive
 * the handler). opts may be NULL (defaults). The caller frees it with
 * annal_handler_close(). Errors: ANNAL_EINVAL (unknown version, missing evolve/decide,
 * bad name, state_size 0, only one of the snapshot callbacks), ANNAL_EIO (snapshot_dir
 * cannot be created), ANNAL_ENOMEM. */
ANNAL_API annal_err annal_handler_open(annal_db *db, const annal_decider *decider,
                                       const annal_handler_opts *opts, annal_handler **out);

/* Free h. No call on h may be running or start. NULL is a no-op. */
ANNAL_API void annal_handler_close(annal_handler *h);

/* Who and why, copied into the metadata of every event a command appends. All members
 * are borrowed for the call; each may be NULL (left out). Strings are UTF-8. */
typedef struct annal_command_meta {
    const char *correlation_id; /* "correlationId": the conversation it belongs to */
    const char *causation_id;   /* "causationId": what caused this command */
    const char *user;           /* "user": who asked */
    const char *extra;          /* a JSON object text: its members are added too */
} annal_command_meta;

typedef struct annal_command_result {
    int rejected;               /* 0: accepted; else the decider's code (nothing written) */
    char message[256];          /* the rejection's reason, or the detail of a failure */
    int64_t state_revision;     /* revision of the state of the last decision; -1 none */
    unsigned attempts;          /* decide() calls made: 1 + retries after conflicts */
    annal_append_result append; /* the append (count 0 when nothing was appended); after
                                 * ANNAL_ECONFLICT, append.revision is the actual one */
    annal_uuid first_id;        /* id of the first appended event; zero when none */
    uint64_t folded;            /* events passed to evolve() (all attempts) */
    /* annal_handle_query: position of the last event of the state the last decision was
     * made on (its condition's `after`); UINT64_MAX when the query matched nothing. */
    uint64_t state_position;
} annal_command_result;

/* Run command (borrowed, passed to decide as is) against stream (as in annal_append)
 * with metadata meta (may be NULL). result may be NULL.
 * Returns ANNAL_OK when the command was handled: its events were appended, or the
 * decider emitted none, or rejected it (result->rejected != 0). Otherwise nothing was
 * appended, except on ANNAL_EIO / ANNAL_EFAILED as described at annal_append.
 * Errors: ANNAL_ECONFLICT (still conflicting after max_retries), ANNAL_EINVAL (bad
 * stream, invalid meta or event metadata), any error of annal_append or
 * annal_read_stream, or an error returned by evolve or decide. result->message says more. */
ANNAL_API annal_err annal_handle_sized(annal_handler *h, const char *stream, const void *command,
                                       const annal_command_meta *meta, annal_command_result *result,
                                       size_t result_size);
#define annal_handle(h, stream, command, meta, result)                                             \
    annal_handle_sized((h), (stream), (command), (meta), (result), sizeof(annal_command_result))

/* ---- Time travel */
#define ANNAL_REVISION_LATEST UINT64_MAX /* no revision bound */
#define ANNAL_TIME_LATEST     INT64_MAX  /* no time bound */

typedef struct annal_state_info {
    int64_t revision;          /* revision of the last event in the state; -1: none */
    uint64_t position;         /* its position in $all (0 when none) */
    int64_t timestamp_ns;      /* its commit time (0 when none) */
    uint64_t folded;           /* events passed to evolve() by this load */
    int64_t snapshot_revision; /* revision of the snapshot the load started from; -1 none */
} annal_state_info;

/* The state of stream made of its events up to revision `revision` (inclusive) that were
 * committed at or before until_ns (ns since the Unix epoch): ANNAL_REVISION_LATEST and
 * ANNAL_TIME_LATEST for now. A stream that does not exist (yet) gives the initial state.
 * On success *state (state_size bytes the decider's callbacks understand) is released
 * with annal_state_free(). info may be NULL. Writes no snapshot.
 * Errors: ANNAL_EINVAL, ANNAL_ENOMEM, errors of annal_read_stream and iteration, or an
 * error returned by init or evolve. */
ANNAL_API annal_err annal_state_load_sized(annal_handler *h, const char *stream, uint64_t revision,
                                           int64_t until_ns, void **state, annal_state_info *info,
                                           size_t info_size);
#define annal_state_load(h, stream, revision, until_ns, state, info)                               \
    annal_state_load_sized((h), (stream), (revision), (until_ns), (state), (info),                 \
                           sizeof(annal_state_info))

/* Release a state from annal_state_load() (calls the decider's release). NULL no-op. */
ANNAL_API void annal_state_free(annal_handler *h, void *state);

/* ---- Decisions across streams (src/write/handler.c): one decision over the states of
 * several streams, its events appended to them atomically (a transfer between accounts). */

/* Add an event to append to the command's stream number `stream` (0: the first, as
 * annal_decision_emit; annal_handle has only stream 0). Otherwise as annal_decision_emit.
 * Errors: ANNAL_EINVAL (also stream >= the command's streams), ANNAL_ENOMEM. */
ANNAL_API annal_err annal_decision_emit_to(annal_decision *d, size_t stream, const char *type,
                                           const void *data, size_t data_len, const void *metadata,
                                           size_t metadata_len);

/* The state of the command's stream number `stream` (0: the one decide() gets as state),
 * valid during decide(); NULL past the command's streams. */
ANNAL_API const void *annal_decision_state(const annal_decision *d, size_t stream);

/* Run command against the states of n streams (streams[0..n): borrowed names as in
 * annal_handle, none twice), each built by h's decider as annal_handle builds one, in one
 * decision: decide() gets streams[0]'s state, the others through annal_decision_state(),
 * and emits to any of them with annal_decision_emit_to(). The events are appended with
 * annal_append_multi, in the order emitted, all or none: every stream written expects the
 * revision its state was built at and every stream read but not written is checked at
 * it, so the decision stands only if none of the n streams moved meanwhile. After a
 * conflict on any of them the handler folds the new events of each and decides again, at
 * most max_retries times, as annal_handle does for one stream.
 * result as annal_handle's: state_revision is streams[0]'s; append.first_position and
 * append.count describe the whole set, its other fields streams[0]'s part. parts (may be
 * NULL) gets n entries, per stream what annal_append would have answered for its events
 * (count 0 and its state's revision when it got none; after ANNAL_ECONFLICT the actual
 * revision of each stream that moved).
 * Errors: those of annal_handle and annal_append_multi (ANNAL_EDELETED: a stream is
 * tombstoned); ANNAL_EINVAL also for n == 0 or a stream named twice. */
ANNAL_API annal_err annal_handle_streams_sized(annal_handler *h, const char *const *streams,
                                               size_t n, const void *command,
                                               const annal_command_meta *meta,
                                               annal_command_result *result,
                                               annal_append_result *parts, size_t result_size);
#define annal_handle_streams(h, streams, n, command, meta, result, parts)                          \
    annal_handle_streams_sized((h), (streams), (n), (command), (meta), (result), (parts),          \
                               sizeof(annal_command_result))

/* ---- Sealing (src/store/seal.c) ---- */
/* Seal the segment being appended to, if it holds any event, and go on in a new one,
 * opened by one small event (type "$SegmentSealed", in the system stream "$seals").
 * Compaction only rewrites sealed segments, so this lets a small store erase its
 * deleted events now rather than once the active segment fills. Durable on return;
 * appends from other threads wait meanwhile. A no-op when the active segment holds
 * nothing, or only the marker of the previous seal.
 * Errors: ANNAL_EINVAL (db NULL), ANNAL_EREADONLY, ANNAL_EFAILED (an earlier write
 * failed), ANNAL_EIO, ANNAL_ENOSPC. */
ANNAL_API annal_err annal_seal(annal_db *db);
/* ------------------------------------------------------------------------------------
 * Statistics for monitoring (src/store/stats.c): the store's counts and what its group
 * commit has done since this handle opened. Cheap (no I/O beyond annal_db_info_get's);
 * any thread. Averages are the totals divided by their counts. */
typedef struct annal_db_stats {
    annal_db_info info;         /* counts, as annal_db_info_get */
    uint64_t groups;            /* group commits (one write and one flush each) */
    uint64_t group_appends;     /* appends committed in them (annal_append calls and such) */
    uint64_t group_appends_max; /* most appends in one group */
    uint64_t group_events;      /* events committed in them */
    uint64_t group_events_max;  /* most events in one group */
    uint64_t flushes;           /* fdatasync calls of the log (none with ANNAL_OPEN_NOSYNC) */
    uint64_t flush_ns_total;    /* time spent in them, ns */
    uint64_t flush_ns_max;      /* the longest, ns */
    uint64_t flush_ns_last;     /* the latest, ns */
} annal_db_stats;
/* Fill *out (zero counters for a read-only handle). ANNAL_OK or annal_db_info_get's
 * errors. */
ANNAL_API annal_err annal_db_stats_get_sized(annal_db *db, annal_db_stats *out, size_t out_size);
#define annal_db_stats_get(db, out) annal_db_stats_get_sized((db), (out), sizeof(annal_db_stats))

/* ---- Backup and restore (src/store/backup.c, docs/operations.md) ---- */
/* A backup is a directory that holds the log of a store as of one position P (every
 * event below P, none at or after it), indexed, plus a marker DIR/backup written last.
 * It opens read-only as a store and passes annal_verify; annal_restore makes a writable
 * store of it (or of a point before P). A backup or restore that was interrupted is
 * refused by annal_db_open (ANNAL_ECORRUPT) and by annal_restore. */
#define ANNAL_BACKUP_LINK     1u /* hard-link sealed segments (same filesystem) */
#define ANNAL_BACKUP_NO_INDEX 2u /* leave the index out: rebuilt by the first writer open */
/* Build the index in dest from the copied log rather than copy the store's (slower; the
 * default copies it with LMDB's copy function when dest holds no backup yet). */
#define ANNAL_BACKUP_REBUILD_INDEX 4u

typedef struct annal_backup_opts {
    size_t struct_size; /* set by annal_backup_opts_init: see the ABI promise */
    unsigned flags;     /* ANNAL_BACKUP_* */
    /* A stream instead of a directory (dest NULL): the backup as a POSIX tar archive
     * (index left out, the marker its last member), passed to write in pieces; write
     * returns < 0 to stop the backup (ANNAL_EIO). */
    int (*write)(void *ctx, const void *buf, size_t len);
    void *write_ctx;
    /* Copy at most this many bytes a second (0: no limit), so that appenders on the same
     * disk keep their pace (bench/RESULTS.md, "Backup"). */
    uint64_t bytes_per_s;
} annal_backup_opts;
ANNAL_API void annal_backup_opts_init_sized(annal_backup_opts *opts, size_t struct_size);
#define annal_backup_opts_init(opts) annal_backup_opts_init_sized((opts), sizeof *(opts))

typedef struct annal_backup_result {
    uint64_t next_position;   /* P: the backup holds every event below it, none after */
    uint64_t segments;        /* segments in the backup */
    uint64_t segments_copied; /* of which copied or linked now (the rest were there) */
    uint64_t bytes_copied;    /* log bytes copied now */
    uint64_t bytes_linked;    /* log bytes hard-linked now (ANNAL_BACKUP_LINK) */
    int incremental;          /* dest held an earlier backup: only what changed was copied */
    int index_copied;         /* the index was copied (LMDB's copy, as of a snapshot up to P) rather
                               * than built in dest from the copied log */
} annal_backup_result;

/* Back up the store open as db (a writer or a read-only handle; appends, reads and
 * compaction go on) into the directory dest (created if missing). When dest holds an
 * earlier backup of the same store, only what changed is copied: new segments, the tail
 * of the last one, and segments compaction has rewritten since. opts may be NULL; res
 * (may be NULL) gets P and what was copied. Durable on return. Killed or failed part
 * way, dest does not look like a complete backup. opts->progress of db is called per
 * segment. Errors: ANNAL_EINVAL (dest is the store, or a store, or holds a backup at a
 * later position), ANNAL_ENOSPC, ANNAL_EIO, ANNAL_EPERM, ANNAL_ECANCELED, and
 * ANNAL_ECORRUPT (a segment is missing). Detail: annal_db_errmsg(db). */
ANNAL_API annal_err annal_backup_sized(annal_db *db, const char *dest,
                                       const annal_backup_opts *opts, annal_backup_result *res,
                                       size_t res_size);
#define annal_backup(db, dest, opts, res)                                                          \
    annal_backup_sized((db), (dest), (opts), (res), sizeof(annal_backup_result))

/* Is dir a complete backup? ANNAL_OK and *next_position (may be NULL) its P;
 * ANNAL_ENOTFOUND (no marker), ANNAL_ECORRUPT (interrupted or damaged marker). */
ANNAL_API annal_err annal_backup_check(const char *dir, uint64_t *next_position);

typedef struct annal_restore_opts {
    size_t struct_size;   /* set by annal_restore_opts_init */
    uint64_t to_position; /* keep events at positions <= this only (default UINT64_MAX) */
    int64_t to_time_ns;   /* keep events committed at or before this only (INT64_MAX) */
} annal_restore_opts;
ANNAL_API void annal_restore_opts_init_sized(annal_restore_opts *opts, size_t struct_size);
#define annal_restore_opts_init(opts) annal_restore_opts_init_sized((opts), sizeof *(opts))

typedef struct annal_restore_result {
    uint64_t next_position;        /* the restored store holds positions below this */
    uint64_t backup_next_position; /* P of the backup */
    char message[512];             /* detail when the restore failed */
} annal_restore_result;

/* Make a writable store in dir (new or empty) from the complete backup in src. A batch
 * (one append) is kept whole or not at all: the store ends before the first batch that
 * has an event past to_position or to_time_ns. The store's acknowledged mark is its
 * end. Errors: ANNAL_ENOTFOUND (src is no backup), ANNAL_ECORRUPT (incomplete or
 * damaged backup), ANNAL_EINVAL (dir not empty), ANNAL_ENOSPC, ANNAL_EIO. */
ANNAL_API annal_err annal_restore_sized(const char *src, const char *dir,
                                        const annal_restore_opts *opts, annal_restore_result *res,
                                        size_t res_size);
#define annal_restore(src, dir, opts, res)                                                         \
    annal_restore_sized((src), (dir), (opts), (res), sizeof(annal_restore_result))

/* ---- Atomic appends across streams (src/store/multi.c) ---- */
/* One part of annal_append_multi: events for one stream with its expected revision. All
 * pointers are borrowed for the call. Passed in arrays, so frozen. */
typedef struct annal_stream_append {
    const char *stream;       /* as in annal_append: a user stream, not starting with '$' */
    int64_t expected;         /* an exact revision or ANNAL_EXPECT_* */
    annal_event_data *events; /* in/out as in annal_append (zero ids are filled in) */
    size_t n;                 /* may be 0: the part is then only a check, in its turn */
} annal_stream_append;

/* A condition on a stream the call writes nothing to (a consistency check). Frozen. */
typedef struct annal_stream_check {
    const char *stream; /* borrowed for the call; any stored stream name */
    int64_t expected;   /* an exact revision or ANNAL_EXPECT_*; ANY checks only that the
                         * stream is not tombstoned */
} annal_stream_check;

/* One stream that failed its condition. Frozen (the caller provides an array). */
typedef struct annal_stream_conflict {
    const char *stream; /* borrowed from the request's part or check */
    size_t index;       /* the part (< nparts), or nparts + the check's index */
    int64_t expected;   /* what was expected */
    int64_t actual;     /* the stream's revision when checked: -1 no stream (or deleted) */
    annal_err reason;   /* ANNAL_ECONFLICT, or ANNAL_EDELETED for a tombstoned stream */
} annal_stream_conflict;

typedef struct annal_multi_result {
    /* In: arrays the caller provides (either may be NULL). parts gets one entry per part
     * (the annal_append_result that part would have had alone, idempotent included);
     * conflicts gets at most max_conflicts entries. */
    annal_append_result *parts;
    annal_stream_conflict *conflicts;
    size_t max_conflicts;
    /* Out. */
    uint64_t first_position; /* of the first event appended (or found, when idempotent) */
    uint64_t count;          /* events appended in all (or found) */
    size_t nconflicts;       /* streams that failed their condition (all of them, even
                              * beyond max_conflicts), in the order of parts then checks */
    int idempotent;          /* 1: the whole set had already been appended; the fields
                              * describe the original append */
    /* annal_append_tagged: on ANNAL_ECONDITION, the position of the first event after the
     * condition's `after` that matches its query; UINT64_MAX otherwise. */
    uint64_t condition_position;
} annal_multi_result;

/* Append the events of nparts parts to their streams and check nchecks more streams,
 * atomically: all or nothing, durable on return (unless ANNAL_OPEN_NOSYNC), and in one
 * place of the global order: consecutive positions in the order of parts (and of the
 * events within each), so the set is one batch of the log. Readers, subscribers and
 * recovery see all of it or none of it, never a part.
 *
 * Conditions: each part's expected revision is checked against its stream as the parts
 * before it in the same call leave it (a stream may appear in several parts: the second
 * sees the revision the first wrote); each check against the store before the call. If
 * any fails, nothing is written, the call returns ANNAL_ECONFLICT (or ANNAL_EDELETED when
 * every failure is a tombstoned stream) and res->conflicts names every stream that
 * failed, with its actual revision.
 *
 * Idempotence, across the whole set: if the first event (of the first part with events)
 * has an id already stored and the whole set matches what was stored there (the same
 * streams in the same order, every id, consecutive positions, first revisions allowed by
 * each part's expected revision as in annal_append), the call succeeds with
 * res->idempotent = 1 and the original positions and revisions; checks are not
 * evaluated again. Any other reuse of a stored id fails with ANNAL_EDUPLICATE.
 *
 * Limits: the events of all parts together count as one append (max_batch_events,
 * max_batch_bytes, one segment); nparts + nchecks <= max_batch_events; at least one part.
 * res may be NULL; its in-fields are read only within res_size.
 * Errors: ANNAL_ECONFLICT, ANNAL_EDELETED, ANNAL_EDUPLICATE, ANNAL_EINVAL (a bad part or
 * check: annal_db_errmsg names it), ANNAL_ETOOBIG, ANNAL_EREADONLY, ANNAL_ENOSPC,
 * ANNAL_EIO, ANNAL_EFAILED, as annal_append. On any error nothing from this call is
 * visible (after ANNAL_EIO, as annal_append says: all of it or none after recovery). */
ANNAL_API annal_err annal_append_multi_sized(annal_db *db, const annal_stream_append *parts,
                                             size_t nparts, const annal_stream_check *checks,
                                             size_t nchecks, annal_multi_result *res,
                                             size_t res_size);
#define annal_append_multi(db, parts, nparts, checks, nchecks, res)                                \
    annal_append_multi_sized((db), (parts), (nparts), (checks), (nchecks), (res),                  \
                             sizeof(annal_multi_result))

/* ------------------------------------------------------------------------------------
 * Dynamic Consistency Boundaries (DCB, dcb.events; src/store/dcb.c, docs/write.md).
 *
 * Streams make one aggregate the boundary of every decision. With DCB a decision picks
 * its own boundary: it reads the events matching a query over event types and tags,
 * decides, and appends on condition that no event matching that query was appended
 * after the last position it read. The check and the write are one step of the group
 * commit, against everything committed and everything ahead of it in the same group, so
 * two appends whose conditions each match the other's events never both succeed.
 *
 * Tags: any event may carry a set of tags, opaque UTF-8 strings such as "course:c1" or
 * "student:s7": 1..ANNAL_MAX_TAGS of them, each 1..ANNAL_MAX_TAG_BYTES bytes, no two the
 * same. More tags or longer ones fail the append with ANNAL_ETOOBIG; an empty tag, one
 * that is not UTF-8, or a repeated one with ANNAL_EINVAL (annal_db_errmsg names the event
 * and the tag). Tags are stored in the event's record (they do not count toward
 * max_event_bytes, they do toward the batch's encoded size), returned by every read
 * (annal_event.tags), kept by compaction, backup, export and import, and indexed: a tag
 * index (tag -> positions) beside the type index serves queries and conditions.
 *
 * Streams and DCB in one store: every event still has a stream, a revision and a
 * position. A tagged event may go to a named stream with an expected revision like any
 * other (annal_tagged_append.stream), and then also obeys that stream's metadata. An event
 * appended with tags alone (stream NULL) goes to the reserved system stream
 * ANNAL_DCB_STREAM, "$dcb": it reads as any stream (annal_read_stream, $all, type and
 * category reads, subscriptions), takes no writes except through annal_append_tagged, and
 * its revisions only count its events. Since its name starts with '$', its events count as
 * system events in annal_db_info, and filters with exclude_system skip them.
 *
 * Queries and conditions see what reads see: events erased by compaction or hidden by
 * their stream's metadata (deleted, truncated, expired) match nothing.
 */
#define ANNAL_MAX_TAGS        32         /* tags on one event */
#define ANNAL_MAX_TAG_BYTES   255        /* bytes in one tag */
#define ANNAL_MAX_QUERY_ITEMS 256        /* items in one query */
#define ANNAL_MAX_QUERY_TYPES 64         /* types in one query item */
#define ANNAL_DCB_STREAM      "$dcb"     /* the stream of events appended with tags alone */
#define ANNAL_AFTER_NONE      UINT64_MAX /* a condition's `after`: anywhere in the store */

/* The tags of one event to append. Borrowed for the call; frozen (passed in arrays). */
typedef struct annal_tag_list {
    const char *const *tags; /* n NUL-terminated strings; may be NULL when n is 0 */
    size_t n;
} annal_tag_list;

/* One item of a query: an event matches it when its type is one of types (if ntypes > 0)
 * AND it carries every one of tags (if ntags > 0). An item with neither matches every
 * event. Borrowed for the call that takes it; frozen. Limits: ntypes <=
 * ANNAL_MAX_QUERY_TYPES, ntags <= ANNAL_MAX_TAGS (else ANNAL_EINVAL). */
typedef struct annal_query_item {
    const char *const *types; /* event types (1..ANNAL_MAX_NAME bytes each) */
    size_t ntypes;
    const char *const *tags; /* tags (as above) */
    size_t ntags;
} annal_query_item;

/* A query: its items combined with OR. No items (nitems 0) matches every event.
 * Borrowed for the call that takes it (a subscription copies it); frozen. */
typedef struct annal_query {
    const annal_query_item *items;
    size_t nitems; /* <= ANNAL_MAX_QUERY_ITEMS */
} annal_query;

/* An append condition: the append fails with ANNAL_ECONDITION if an event matching query
 * exists at a position > after, or anywhere when after is ANNAL_AFTER_NONE. Frozen. Use
 * as after the position of the last event the decision read (annal_read_query), or
 * ANNAL_AFTER_NONE when it read none. */
typedef struct annal_condition {
    const annal_query *query; /* NULL: the query that matches every event */
    uint64_t after;
} annal_condition;

/* One part of annal_append_tagged: annal_stream_append with tags. Frozen. */
typedef struct annal_tagged_append {
    const char *stream;         /* NULL: ANNAL_DCB_STREAM (then expected is ignored); else a user
                                 * stream as in annal_append */
    int64_t expected;           /* as annal_stream_append */
    annal_event_data *events;   /* in/out as in annal_append (zero ids are filled in) */
    const annal_tag_list *tags; /* NULL (no tags), or n lists: the tags of each event */
    size_t n;                   /* may be 0: the part is then only a check */
} annal_tagged_append;

/* Does ev match q (NULL: every event)? 1 or 0; no I/O, any thread. For callers that
 * filter events themselves (a server, a test's model); the store evaluates queries with
 * its indexes. */
ANNAL_API int annal_query_match(const annal_query *q, const annal_event *ev);

/* The tag of ev after *tag (*tag NULL: its first). 1 and *tag (borrowed from ev), or 0
 * when there are no more. */
ANNAL_API int annal_event_tag_next(const annal_event *ev, const char **tag);

/* Read the events matching q (NULL: every event) from position `from` (inclusive),
 * forward or backward (ANNAL_READ_BACKWARD; ANNAL_FROM_END starts at the newest), at
 * most limit events (0: no limit), in position order, each once even when several items
 * match it. Served from the indexes: reading the few events with a tag touches about as
 * many index entries, whatever the store's size. q is read during the call only.
 * Errors: ANNAL_EINVAL (a malformed query: annal_db_errmsg says which item), ANNAL_ENOMEM,
 * index errors. Iterate with annal_iter_next. */
ANNAL_API annal_err annal_read_query(annal_db *db, const annal_query *q, uint64_t from,
                                     unsigned flags, uint64_t limit, annal_iter **out);

/* annal_append_multi with tags and a condition: append the events of nparts parts (to
 * their streams, or to ANNAL_DCB_STREAM) with their tags, check nchecks more streams,
 * and check cond (may be NULL: none), atomically: all or nothing, one batch of the log,
 * durable on return, as annal_append_multi says.
 *
 * The condition is checked by the group commit's leader in the same step that writes the
 * events, against every event committed before and every event of the appends ahead of
 * this one in its group; the call's own events are not checked against it. When an event
 * matching cond->query is found after cond->after, nothing is written, the call returns
 * ANNAL_ECONDITION and res->condition_position is that event's position (the first one
 * after `after`). Stream conditions are checked too: when both fail the call returns
 * ANNAL_ECONDITION and res->conflicts still names the streams.
 *
 * Idempotence as annal_append_multi: a resend of the same event ids (the same parts)
 * succeeds with res->idempotent = 1 and the original positions; the condition is not
 * evaluated again (the original's own events would match it).
 *
 * Errors: ANNAL_ECONDITION, and those of annal_append_multi (ANNAL_EINVAL and
 * ANNAL_ETOOBIG also for tags and queries beyond their limits). res may be NULL. */
ANNAL_API annal_err annal_append_tagged_sized(annal_db *db, const annal_tagged_append *parts,
                                              size_t nparts, const annal_stream_check *checks,
                                              size_t nchecks, const annal_condition *cond,
                                              annal_multi_result *res, size_t res_size);
#define annal_append_tagged(db, parts, nparts, checks, nchecks, cond, res)                         \
    annal_append_tagged_sized((db), (parts), (nparts), (checks), (nchecks), (cond), (res),         \
                              sizeof(annal_multi_result))

/* The common case: n events with tags (NULL, or one list per event) to ANNAL_DCB_STREAM
 * if cond (may be NULL) holds. result (may be NULL) as in annal_append; on
 * ANNAL_ECONDITION *condition_position (may be NULL) gets the matching event's position.
 * Errors: those of annal_append_tagged. */
ANNAL_API annal_err annal_append_if_sized(annal_db *db, annal_event_data *events,
                                          const annal_tag_list *tags, size_t n,
                                          const annal_condition *cond, annal_append_result *result,
                                          uint64_t *condition_position, size_t result_size);
#define annal_append_if(db, events, tags, n, cond, result, condition_position)                     \
    annal_append_if_sized((db), (events), (tags), (n), (cond), (result), (condition_position),     \
                          sizeof(annal_append_result))

/* Tags for the events a decider emits (src/write): as annal_decision_emit, with ntags
 * tags (copied; limits as above). */
ANNAL_API annal_err annal_decision_emit_tagged(annal_decision *d, const char *type,
                                               const void *data, size_t data_len,
                                               const void *metadata, size_t metadata_len,
                                               const char *const *tags, size_t ntags);

/* Run command against the state folded from the events matching query (instead of a
 * stream): read them all (upcast), fold them with evolve from the initial state, call
 * decide without any lock held, and append the decided events (to ANNAL_DCB_STREAM, with
 * their tags) on the condition that nothing matching query was appended after the last
 * event folded (ANNAL_AFTER_NONE when none was). On ANNAL_ECONDITION the new events are
 * folded and decide runs again, at most max_retries times. No snapshots are read or
 * written. result->state_position is the position of the last event folded;
 * result->state_revision is -1. Returns as annal_handle; ANNAL_ECONDITION when still
 * conflicting after max_retries. */
ANNAL_API annal_err annal_handle_query_sized(annal_handler *h, const annal_query *query,
                                             const void *command, const annal_command_meta *meta,
                                             annal_command_result *result, size_t result_size);
#define annal_handle_query(h, query, command, meta, result)                                        \
    annal_handle_query_sized((h), (query), (command), (meta), (result),                            \
                             sizeof(annal_command_result))

/* ---- System streams (src/store/sys.c) ---- */
/* annal_append for trusted embedders (a server acting for an administrator): stream may
 * also start with '$', as KurrentDB's system streams do (`$users`, `$user-<name>`,
 * `$settings`; docs/security.md). The store's own streams stay reserved (`$$<stream>`
 * metadata, `$all`, `$ce-`/`$et-`, `$seals`, ANNAL_DCB_STREAM `$dcb`), as do the event types
 * `$metadata` and
 * `$streamDeleted`: ANNAL_EINVAL. A stream not starting with '$' is as annal_append.
 * Everything else (expected revision, idempotence, durability, errors) is annal_append's.
 * Expose this only to callers allowed to write system streams. */
ANNAL_API annal_err annal_append_system_sized(annal_db *db, const char *stream, int64_t expected,
                                              annal_event_data *events, size_t n,
                                              annal_append_result *result, size_t result_size);
#define annal_append_system(db, stream, expected, events, n, result)                               \
    annal_append_system_sized((db), (stream), (expected), (events), (n), (result),                 \
                              sizeof(annal_append_result))

#ifdef __cplusplus
}
#endif
#endif /* ANNAL_H */
