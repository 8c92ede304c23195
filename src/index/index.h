/* The indexes over the log, kept in LMDB: stream name -> stream record, (stream, revision)
 * -> position and location, every ANNAL__POS_STRIDE-th position -> location, category and
 * type -> positions. (Event id -> position is the LSM in index/ids.h.) All of it is derived from
 * the log and can be rebuilt from it. */
#ifndef ANNAL_INDEX_H
#define ANNAL_INDEX_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "annal.h"

#define ANNAL__POS_STRIDE 32u /* one position->location entry per this many events */

typedef struct annal__index {
    MDB_env *env;
    MDB_dbi meta, streams, revs, pos;
    MDB_dbi cats, types; /* category / event type -> (position, location), DUPSORT */
    char *dir;
    void *shared; /* this process's registry entry for the environment */
} annal__index;

/* Progress of the index through the log, stored under one key in the same transaction
 * as the entries it describes, so it can never disagree with them. */
typedef struct annal__index_head {
    uint64_t next_pos;       /* first position not indexed */
    uint64_t next_loc;       /* its location in the log (0: start of the first segment) */
    uint64_t last_loc;       /* location of the record at next_pos - 1 (if any) */
    uint64_t next_stream_id; /* id for the next new stream */
    uint64_t streams;        /* streams with at least one event */
    int64_t last_ns;         /* timestamp of the last indexed event */
    uint64_t restricted;     /* metadata, delete and tombstone events ever indexed: while 0,
                              * every event is visible and reads skip the checks */
    uint64_t version;        /* layout that wrote it (head_get; head_put writes the current) */
} annal__index_head;

#define ANNAL__INDEX_VERSION                                                                       \
    3 /* layout of the tables; another version is rebuilt                                          \
       * (3: event ids moved from LMDB to index/ids.h) */

#define ANNAL__UNSET        UINT64_MAX
#define ANNAL__SR_DELETED   0x1u /* soft-deleted: reads as not found until appended to */
#define ANNAL__SR_TOMBSTONE 0x2u /* hard-deleted: never written again */

typedef struct annal__stream_rec {
    uint64_t id;       /* internal stream number */
    uint64_t count;    /* events in the stream == next revision (0: only metadata so far) */
    uint64_t last_pos; /* position of its last event */
    int64_t created_ns;
    /* From its metadata stream ($$name); ANNAL__UNSET when not set. */
    uint64_t tb;        /* truncate before this revision */
    uint64_t max_count; /* only the newest max_count events are visible */
    uint64_t max_age;   /* seconds */
    uint64_t flags;     /* ANNAL__SR_* */
} annal__stream_rec;

#define ANNAL__STREAM_REC 64u /* bytes of an encoded stream record */
annal_err annal__stream_rec_decode(const void *data, size_t len, annal__stream_rec *rec);
/* A new stream record with id and no limits. */
annal__stream_rec annal__stream_rec_new(uint64_t id, int64_t created_ns);

/* Trust file beside the LMDB files: was the index closed cleanly, and by which boot.
 * LMDB runs with MDB_NOSYNC (the log is the durable copy), which survives a process
 * crash but not a power loss; after one the index is rebuilt. */
typedef struct annal__index_state {
    int clean;
    char boot_id[40];
} annal__index_state;

annal_err annal__index_state_read(const char *dir, annal__index_state *st);
int annal__index_state_write(const char *dir, const annal__index_state *st);
void annal__boot_id(char out[40]);
/* Remove the LMDB files in dir (the index is rebuilt on open). */
int annal__index_remove(const char *dir);

/* Is the index in dir open by a handle of this process? 0: no; 1: in a read-only
 * environment (opened by a read-only handle first); 2: in a read-write one. */
int annal__index_in_use(const char *dir);

/* Open the index in dir. LMDB must not open one environment twice in a process (closing
 * the second copy drops the first one's locks), so handles of this process share one
 * environment per index; a writer cannot join one first opened read-only (ANNAL_EBUSY). */
annal_err annal__index_open(annal__index *idx, const char *dir, int readonly, int create,
                            uint64_t mapsize, char *detail, size_t dlen);
void annal__index_close(annal__index *idx);
/* Flush everything to disk (the writer does this at clean close). */
int annal__index_sync(annal__index *idx);

/* The helpers below return ANNAL_OK, ANNAL_ENOTFOUND, or ANNAL_EIO / ANNAL_ENOSPC /
 * ANNAL_ECORRUPT for LMDB failures. */
annal_err annal__index_err(int mdb_rc);
annal_err annal__index_head_get(MDB_txn *t, const annal__index *idx, annal__index_head *h);
annal_err annal__index_head_put(MDB_txn *t, const annal__index *idx, const annal__index_head *h);
annal_err annal__index_stream_get(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  annal__stream_rec *rec);
annal_err annal__index_stream_put(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  const annal__stream_rec *rec);
/* Index one event's revision and (every ANNAL__POS_STRIDE-th) position entry. Its id
 * goes to the id index (index/ids.h), which is not in LMDB. */
annal_err annal__index_event_put(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                                 uint64_t rev, uint64_t pos, uint64_t loc);
/* The same through revs, a cursor on idx->revs in t (may be NULL): a stream's next
 * revisions usually go on the page it stands on, which LMDB then need not search for. */
annal_err annal__index_event_put_c(MDB_cursor *revs, MDB_txn *t, const annal__index *idx,
                                   uint64_t stream_id, uint64_t rev, uint64_t pos, uint64_t loc);
annal_err annal__index_rev_get(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                               uint64_t rev, uint64_t *pos, uint64_t *loc);
/* Category of a stream name: the bytes before the first '-' (all of it without one). */
size_t annal__category_len(const char *name, size_t len);
/* Add (position, location) under name in a category or type table (idx->cats or idx->types). */
annal_err annal__index_tag_put(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                               uint64_t loc);
/* Add n entries (vals: n values of ANNAL__TAG_VAL bytes in position order) under name with
 * one call: for new events, whose positions are above every entry. */
annal_err annal__index_tag_put_many(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                    const uint8_t *vals, size_t n);
/* ANNAL_OK if exactly that entry is present, else ANNAL_ENOTFOUND (or an LMDB error). */
annal_err annal__index_tag_has(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                               uint64_t loc);
/* Tag entries: value = position big-endian (so duplicates sort by position), location. */
#define ANNAL__TAG_VAL 16u

/* Generation of segment no that the index's locations point into (0 if never compacted). */
annal_err annal__index_gen_get(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t *gen);
annal_err annal__index_gen_put(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t gen);

/* The marker of a compaction whose index update is under way (segment no to generation
 * gen); ANNAL_ENOTFOUND if none. _put with no = UINT64_MAX removes it. */
annal_err annal__index_compacting_get(MDB_txn *t, const annal__index *idx, uint64_t *no,
                                      uint32_t *gen);
annal_err annal__index_compacting_put(MDB_txn *t, const annal__index *idx, uint64_t no,
                                      uint32_t gen);

/* Location of the nearest position-table entry at or below pos: *base gets its position.
 * (Entries are every ANNAL__POS_STRIDE-th position, minus those compaction erased.) */
annal_err annal__index_pos_floor(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t *base,
                                 uint64_t *loc);

/* Revision entries: key = stream id and revision, both big-endian so that one stream's
 * entries are contiguous and ordered; value = position and location (little-endian). */
#define ANNAL__REV_KEY 16u
void annal__rev_key(uint8_t out[ANNAL__REV_KEY], uint64_t stream_id, uint64_t rev);

#endif
