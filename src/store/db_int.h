/* Private definition of annal_db, shared by the store's files. They stand on floors and
 * call down only (docs/architecture.md, "The store's floors"):
 *   db.c                                 open, close, info, rebuild-index (top)
 *   meta.c  compact.c  seal.c  subscribe.c  verify.c
 *   append.c  read.c                     group commit (and annal_db_sync), iterators
 *   recovery.c  notify.c  acked.c        catch-up and settling, wake-ups, the mark
 *   entries.c                            locate, block members, id claims, batch encoder
 *   handle.c                             options, errors, names, read txns, visibility
 * Errors: every function here returns annal_err (log/ and index/ below return their
 * own kinds; see docs/architecture.md), and records detail with annal__fail. */
#ifndef ANNAL_DB_INT_H
#define ANNAL_DB_INT_H

#include <pthread.h>
#include <stdint.h>

#include "annal.h"
#include "index/ids.h"
#include "index/index.h"
#include "log/io.h"
#include "log/segment.h"

/* A condition on another stream checked in the same commit as an append: metadata and
 * delete events go to `$$name` or carry a decision about `name`. */
typedef struct annal__guard {
    const char *stream;
    size_t len;
    int64_t expected; /* ANNAL_EXPECT_* or a revision; a tombstoned stream always fails */
    int must_exist;   /* ANNAL_ENOTFOUND if it has no visible existence (absent or deleted) */
    int soft_delete;  /* the leader writes the event's data: the stream's metadata document
                       * with "$tb" = its next revision at commit and "$deleted" */
} annal__guard;

struct annal__multi; /* an annal_append_multi request (store/multi.c) */
struct annal__group; /* the group being committed (below) */

/* One waiting append; lives on its caller's stack. */
typedef struct annal__req {
    const annal__guard *guard;  /* may be NULL */
    struct annal__multi *multi; /* NULL, or the parts of an atomic multi-stream append */
    /* With multi: its own encoder (store/multi.c, which sits above append.c), returning
     * as add_req does: the request's code, or a negative errno that ends the group. */
    int (*multi_add)(annal_db *db, struct annal__group *g, MDB_txn *t, struct annal__req *req);
    const char *stream;
    size_t stream_len;
    int64_t expected;
    annal_event_data *ev;
    size_t n;
    uint64_t bytes; /* encoded size of all its records */
    annal_append_result res;
    annal_err rc;
    char *owned;            /* data the leader made for this request (soft delete); freed after */
    char msg[400];          /* detail for annal_db_errmsg when rc != OK */
    _Atomic uint32_t state; /* REQ_*: set by the leader, read by the caller */
    _Atomic uint32_t *word; /* the futex word its caller sleeps on (a db->wake word) */
    uint32_t bit;           /* its own bit of the futex bitset (the group's is bit 31) */
    struct annal__req *next;
} annal__req;
enum { REQ_QUEUED, REQ_DONE, REQ_LEAD /* the caller leads now */ };

/* Detail messages, one per thread that saw a failure on this handle. */
typedef struct annal__errslot {
    pthread_t thread;
    annal_err code;
    char msg[512];
    struct annal__errslot *next;
} annal__errslot;

/* The events of one batch (consecutive positions of one stream), gathered so that
 * their revision, category and type blocks (index.h) are put once per 64 events and
 * each name gets one LMDB call. Owned by its user, reused; type names must stay valid
 * until annal__batch_put. */
typedef struct annal__batch {
    size_t n, cap;
    uint64_t *loc;     /* per event */
    const char **type; /* per event */
    uint64_t *tkey;    /* per event: hash of its type << 32 | its length */
    uint8_t *out;      /* cap encoded blocks: one name's, being gathered */
    uint64_t first_pos;
    /* Tags (DCB): per event its tags section (NUL-terminated strings, as in the record)
     * or NULL, and its length; valid until annal__batch_put. */
    const char **tags;
    size_t *tags_len;
    struct annal__tag_ent *tent; /* scratch: one entry per (tag, event) of the batch */
    size_t tent_cap;
    size_t ntags; /* tags of the events gathered so far */
} annal__batch;
/* DIR/acked (store/acked.c): how far the log was acknowledged, flushed off the append
 * path. */
typedef struct annal__acked {
    int fd;
    int opened, inited, running, stop;
    uint64_t seq;        /* of the newest valid slot */
    uint64_t written;    /* the mark on disk */
    pthread_mutex_t wmu; /* one write at a time */
    pthread_mutex_t mu;  /* the thread's sleep */
    pthread_cond_t cv;
    pthread_t thread;
} annal__acked;
/* Counters for annal_db_stats_get (stats.c): written by the leader, read by anyone, all
 * with __atomic builtins (relaxed: figures, not synchronisation). */
typedef struct annal__counters {
    uint64_t groups, group_reqs, group_reqs_max, group_events, group_events_max;
    uint64_t flushes, flush_ns_total, flush_ns_max, flush_ns_last;
} annal__counters;

struct annal_db {
    char *dir;
    char *index_dir;
    annal_db_opts opts;
    const annal__io *io;
    int readonly;
    int lock_fd[2]; /* the flocks that make this process the only writer: DIR/lock, DIR */
    annal__log log;
    annal__index idx;
    annal__ids *ids;    /* writer: event id -> position (leader-only after open) */
    annal__batch batch; /* leader-only scratch: an append's events, for their blocks */

    pthread_mutex_t errmu;
    annal__errslot *errs;

    /* Writer: requests queue up under wmu; one thread at a time (the leader) takes
     * the whole queue and commits it with one write and one flush. */
    pthread_mutex_t wmu;
    pthread_cond_t wcv; /* the leader let go, for annal_db_sync */
    annal__req *qhead, *qtail;
    int leader;       /* a leader is committing (or was just handed the queue) */
    int sync_waiting; /* annal_db_sync calls waiting for the leader to let go */
    /* Callers sleep on wake[epoch & 1] as of their queueing; each group taken starts a
     * new epoch, so one wake-up call reaches a whole group and not the next one. */
    _Atomic uint32_t wake[2];
    uint32_t epoch, nqueued;
    annal_err failed; /* sticky: after a failed write or flush, refuse appends */
    char failed_msg[320];

    /* Leader-only state (touched by one thread at a time, handed over under wmu). */
    annal__seg *wseg;       /* segment being appended to */
    uint64_t woff;          /* next write offset in wseg */
    annal__index_head head; /* what the index will hold once the current group commits */
    uint64_t rng;
    uint8_t *buf;
    size_t bufcap;

    uint64_t visible;             /* atomic: positions below this are committed and readable */
    struct annal__notify *notify; /* wake-ups for subscribers (store/notify.c) */
    pthread_mutex_t compact_mu;   /* one annal_compact at a time */
    int rebuild_index;            /* open: the index must be rebuilt from the log */
    int log_compacted;            /* recovery: some segment is a compacted generation */
    annal__acked acked;           /* writer: the acknowledged mark (store/acked.c) */
    int accept_loss;              /* open: record a lost tail as a hole instead of failing */
    uint64_t lost_from, lost_to;  /* open: the positions it recorded as lost */
    annal__counters ctr;          /* for annal_db_stats_get (stats.c) */
};

/* ---- acked.c --------------------------------------------------------------------- */

/* Open (creating when missing) DIR/acked; *mark: the newest valid mark, 0 if none. */
annal_err annal__acked_open(annal__acked *a, const char *dir, uint64_t *mark);
/* Record that positions below pos were acknowledged (flushed). 0 or -errno. */
int annal__acked_write(annal__acked *a, uint64_t pos);
/* Start the thread that writes db->visible as the mark, coalesced. 0 or -errno. */
int annal__acked_start(annal_db *db);
/* Stop the thread (the file stays open for a last annal__acked_write). */
void annal__acked_close(annal__acked *a);
/* Stop the thread and close the file. */
void annal__acked_release(annal__acked *a);

/* stats.c: count a flush that took ns, and a committed group. Leader only. */
void annal__counters_flush(annal__counters *c, int64_t ns);
void annal__counters_group(annal__counters *c, uint64_t reqs, uint64_t events);
/* ---- db.c ------------------------------------------------------------------------ */

/* annal_db_open with another file-operation table (tests inject faults with it). */
annal_err annal__db_open_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            annal_db **out);
/* annal_recover_accept_loss with another file-operation table. */
annal_err annal__recover_io(const char *dir, const annal_db_opts *opts, const annal__io *io,
                            uint64_t *lost_from, uint64_t *lost_count);

/* `$metadata` (the stream's limits), `$streamDeleted` (tombstone), and the key that
 * marks a soft delete in a metadata document. */
#define ANNAL__META_TYPE   "$metadata"
#define ANNAL__TOMB_TYPE   "$streamDeleted"
#define ANNAL__DELETED_KEY "$deleted" /* written by soft delete only */

/* ---- handle.c -------------------------------------------------------------------- */

/* Record detail for the calling thread and return code. */
annal_err annal__fail(annal_db *db, annal_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The one failure of an LMDB call (mrc: its return code): "index: <LMDB's text>". */
annal_err annal__fail_index(annal_db *db, int mrc);
void annal__log_msg(annal_db *db, annal_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Log the calling thread's failure detail as an error (generic if it has none). */
void annal__log_failure(annal_db *db, const char *generic);
/* Free every thread's detail (close). */
void annal__errs_free(annal_db *db);

/* Check a stream name or type name (1..ANNAL_MAX_NAME bytes of UTF-8). */
int annal__name_ok(const char *s, size_t *len);
/* ... and a stream name a caller writes to: not '$', 1..ANNAL_MAX_STREAM_NAME bytes. */
int annal__stream_name_ok(const char *s, size_t *len);
/* The caller's options (may be NULL) as a full struct: see annal.h's ABI promise. */
annal_err annal__db_opts_in(const annal_db_opts *in, annal_db_opts *out);

/* Open a read transaction (MDB_NOTLS: any thread may use it). */
annal_err annal__read_txn(annal_db *db, MDB_txn **t);

/* The committed head as seen by this handle: for a writer, what it has published;
 * for a read-only handle, what the index in t says. */
uint64_t annal__visible(annal_db *db, MDB_txn *t);
/* The lowest revision of sr that its metadata leaves visible. */
uint64_t annal__first_visible(const annal__stream_rec *sr);
/* Is the event at rev committed at ts visible now (now_ns) under sr's metadata? */
int annal__event_visible(const annal__stream_rec *sr, uint64_t rev, int64_t ts, int64_t now_ns);

/* ---- append.c -------------------------------------------------------------------- */

/* annal_append for the store itself: `$` streams and types allowed, with a guard. */
annal_err annal__append(annal_db *db, const char *stream, int64_t expected,
                        annal_event_data *events, size_t n, annal_append_result *result,
                        const annal__guard *guard);

/* ---- entries.c ------------------------------------------------------------------- */

/* Gather one event of a batch (consecutive positions) for annal__batch_put; tags (its
 * tags section, tags_len bytes; NULL when none) must stay valid until then. */
annal_err annal__batch_add(annal__batch *a, const char *type, size_t tlen, const char *tags,
                           size_t tags_len, uint64_t pos, uint64_t loc);
/* Put the blocks of the gathered events (of stream, whose id is sid, the first at
 * revision first_rev) into t and empty a. */
annal_err annal__batch_put(annal__batch *a, annal__index *idx, MDB_txn *t, const char *stream,
                           size_t slen, uint64_t sid, uint64_t first_rev);
void annal__batch_free(annal__batch *a);
/* Index what an event implies beyond its own entries: re-creation of a
 * soft-deleted stream, a tombstone, and for `$metadata` events the limits of the stream
 * they describe. sr is the event's own stream record (updated in memory; the caller
 * stores it). Used by append and by recovery alike. */
annal_err annal__index_event_effects(annal__index *idx, MDB_txn *t, annal__index_head *h,
                                     annal__stream_rec *sr, const annal_event *ev);
/* A metadata limit of document o ("$tb", "$maxCount", "$maxAge") as a count in *out
 * (ANNAL__UNSET when absent); 1 if it is malformed. */
struct json_t;
int annal__meta_member(struct json_t *o, const char *key, uint64_t *out);
/* The metadata document of a soft delete: prev (the stream's current document, may be
 * NULL) with "$tb" = tb and "$deleted": true, as a malloc'd text. NULL when out of memory. */
char *annal__soft_delete_doc(const void *prev, size_t prev_len, uint64_t tb);

/* The members of block b that are still in the log, in position order, with their
 * locations (at most ANNAL__BLOCK). ANNAL_ENOTFOUND: b.loc names a segment generation
 * that compaction has deleted (fetch b again); ANNAL_ECORRUPT: the log does not match. */
annal_err annal__block_members(annal_db *db, const annal__block *b, uint64_t *pos, uint64_t *loc,
                               size_t *n);
/* Location of the event at pos, found from the position table through t;
 * ANNAL_ENOTFOUND if compaction erased it (or it is not in the log). */
annal_err annal__locate(annal_db *db, MDB_txn *t, uint64_t pos, uint64_t *loc);
/* The newest entry for id in db->ids whose event still exists: ANNAL_OK with its
 * position and current location, or ANNAL_ENOTFOUND. */
annal_err annal__id_live(annal_db *db, MDB_txn *t, const annal_uuid *id, uint64_t *pos,
                         uint64_t *loc);
/* Claim id for the event at pos/loc in db->ids: ANNAL_OK (added), or ANNAL_EDUPLICATE
 * with *dup_pos when an event that still exists has it. */
annal_err annal__id_claim(annal_db *db, MDB_txn *t, const annal_uuid *id, uint64_t pos,
                          uint64_t loc, uint64_t *dup_pos);
/* Open the id index of db's store as t sees it, with the ids of positions below upto
 * that no run covers read from the log into its memtable. */
annal_err annal__ids_load(annal_db *db, MDB_txn *t, uint64_t upto, annal__ids **out, char *detail,
                          size_t dlen);
/* ---- append.c: group commit ------------------------------------------------------ */

/* Write db->ids' memtable as a run (between groups, or at close). */
void annal__flush_ids(annal_db *db);
/* Under wmu, when leading (or annal_db_sync) ends: the queued request to make the next
 * leader, to wake with annal__lead_wake after unlocking; NULL if leading stopped. */
annal__req *annal__hand_over(annal_db *db);
void annal__lead_wake(annal__req *next);

/* ---- recovery.c ------------------------------------------------------------------ */

/* Settle what an interrupted compaction left in DIR/log before the log is opened;
 * trusted: the index may name the current generations. */
annal_err annal__settle_compaction(annal_db *db, int trusted);
/* Before anything is indexed or cut: does the log still hold every acknowledged
 * position (mark: DIR/acked's)? ANNAL_ECORRUPT with the missing range if not; with
 * db->accept_loss, the range is recorded as a hole instead. */
annal_err annal__check_acknowledged(annal_db *db, uint64_t mark);
/* Index every complete batch of the log from the index head onwards; used by recovery
 * and rebuild. Sets *end_loc to the location after the last whole batch. */
annal_err annal__catch_up(annal_db *db, uint64_t *end_seg, uint64_t *end_off);

/* ---- Shared by append.c and multi.c (atomic appends across streams) ---- */

/* State of the group being committed; written only by the leader. */
typedef struct annal__group {
    MDB_txn *txn;
    uint64_t bl;    /* bytes encoded into db->buf, to go at db->woff of db->wseg */
    int written;    /* bytes of this group reached the file: a failure now poisons */
    uint64_t first; /* position of the first record in the buffer (each record says it) */
    int64_t now;
    int broken; /* an index write failed: txn must not commit */
    int ioerr;  /* -errno of a log write that failed: the group ends */
} annal__group;

/* Queue req, lead or wait, until it is committed or refused; req->rc is the result. */
void annal__submit(annal_db *db, annal__req *req);
/* Check the name, expectation and events of one append; *bytes: their encoded size.
 * dcb: the stream may be ANNAL_DCB_STREAM (a tagged part without a stream). */
annal_err annal__append_validate(annal_db *db, const char *stream, size_t *slen, int64_t expected,
                                 annal_event_data *ev, size_t n, uint64_t *bytes, int dcb);

/* ---- dcb.c: Dynamic Consistency Boundaries ---------------------------------------- */

/* A query copied and checked (annal__query_compile): one allocation, freed with free(). */
typedef struct annal__qname {
    const char *p;
    size_t len;
} annal__qname;
typedef struct annal__qitem {
    annal__qname *types, *tags;
    size_t ntypes, ntags;
} annal__qitem;
typedef struct annal__query {
    annal__qitem *items;
    size_t nitems;
    int all; /* it matches every event (no items, or an item with neither types nor tags) */
} annal__query;

/* Check q (NULL: every event) against the limits and copy it into *out (caller frees).
 * ANNAL_EINVAL (annal__fail says which item), ANNAL_ENOMEM. */
annal_err annal__query_compile(annal_db *db, const annal_query *q, annal__query **out);
/* Does ev match q? */
int annal__query_match(const annal__query *q, const annal_event *ev);

/* The tags of one event to append: its tags section as the record holds it. */
typedef struct annal__evtags {
    const char *p; /* NULL: none */
    size_t len;
} annal__evtags;

/* What annal_append_tagged adds to an annal_append_multi request. */
typedef struct annal__dcb {
    const annal__evtags *tags; /* per event of all parts, or NULL: none has tags */
    const unsigned char *sys;  /* per part: 1 when it goes to ANNAL_DCB_STREAM */
    const annal__query *cond;  /* NULL: no condition */
    uint64_t after;            /* the condition's `after` */
    uint64_t extra;            /* bytes the tags add to the records */
    uint64_t cond_pos;         /* out: the matching event's position on ANNAL_ECONDITION */
} annal__dcb;

/* annal_append_multi's body with DCB additions (dcb may be NULL); *r has the caller's
 * in-fields and gets the out-fields. */
annal_err annal__append_parts(annal_db *db, const annal_stream_append *parts, size_t nparts,
                              const annal_stream_check *checks, size_t nchecks, annal__dcb *dcb,
                              annal_multi_result *r);

/* The leader's condition check, in the group's write transaction t: the position of the
 * first event after `after` (ANNAL_AFTER_NONE: anywhere) that matches q and that a read
 * would return, in *found: ANNAL_ECONDITION. Events of the group ahead of this request
 * (positions at or above the committed head) count as readable. ANNAL_OK: none. */
annal_err annal__dcb_check(annal_db *db, MDB_txn *t, const annal__query *q, uint64_t after,
                           uint64_t *found);

/* annal_read_query with a compiled query (read.c); the iterator owns cq on success
 * unless borrowed (then cq must outlive it). A cq->all query reads $all and is not kept. */
annal_err annal__read_query(annal_db *db, annal__query *cq, int borrowed, uint64_t from,
                            unsigned flags, uint64_t limit, annal_iter **out);

/* One chunk of a read by query (read.c): the locations of the events matching q among
 * positions [*lo, *hi] in t, in reading order, at most cap (>= ANNAL__BLOCK); the bound
 * of the reading direction moves past what was taken; *done when nothing matching is
 * left in range. ANNAL_ENOTFOUND: a block names a generation compaction deleted (fetch
 * again under a newer snapshot); ANNAL_ECORRUPT; index errors. */
annal_err annal__query_fetch(annal_db *db, MDB_txn *t, const annal__query *q, int backward,
                             uint64_t *lo, uint64_t *hi, uint64_t *pos, uint64_t *loc, size_t cap,
                             size_t *n, int *done);
/* Leader helpers of append.c: room for need bytes in db->buf (0 or -ENOMEM); write and
 * flush the group's buffer (0 or -errno); decode a record that may still be in it. */
int annal__group_reserve(annal_db *db, uint64_t need);
int annal__group_flush(annal_db *db, annal__group *g);
annal_err annal__group_read(annal_db *db, annal__group *g, uint64_t loc, annal_event *ev,
                            uint32_t *len);
/* Make room for bytes more in the active segment, rolling to a new one (flushing the
 * group first) when they do not fit. 0 or -errno. */
int annal__group_room(annal_db *db, annal__group *g, uint64_t bytes, uint64_t next_pos);

#endif
