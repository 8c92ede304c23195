/* The indexes over the log, kept in LMDB: stream name -> stream record, (stream, revision)
 * -> block of up to 64 events, every ANNAL__POS_STRIDE-th position -> location, category
 * and type -> blocks. (Event id -> position is the LSM in index/ids.h.) All of it is derived from
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
    MDB_dbi tags;        /* tag -> blocks, as types (DCB) */
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
    5 /* layout of the tables; another version is rebuilt (3: event ids moved from LMDB            \
       * to index/ids.h; 4: revision, category and type entries per block of 64 events;            \
       * 5: the tag table) */

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
/* Remove the LMDB files in dir (the index is rebuilt on open). 0 or -errno. The event-id
 * runs beside them are ids.h's (annal__ids_remove_all): the store removes both. */
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

/* Every LMDB transaction on idx goes through these (they return LMDB's codes). A
 * writer maps the data file writable (MDB_WRITEMAP: a commit writes no pages, which cut
 * its cost 4-20x), in a map that must be moved to grow, which LMDB allows only while
 * no transaction of the process is active: each active one (begun or renewed, not yet
 * reset, aborted or committed) holds the environment's map lock shared. A reset read
 * transaction holds nothing; annal__txn_free ends one. */
int annal__txn_begin(annal__index *idx, unsigned flags, MDB_txn **t);
int annal__txn_renew(annal__index *idx, MDB_txn *t);
void annal__txn_reset(annal__index *idx, MDB_txn *t);
void annal__txn_abort(annal__index *idx, MDB_txn *t);
int annal__txn_commit(annal__index *idx, MDB_txn *t); /* t is gone either way */
void annal__txn_free(MDB_txn *t);

/* Make room for a transaction that may write up to need bytes of index pages beyond
 * those used. A writer maps the file writable (MDB_WRITEMAP); what a transaction may
 * write must be allocated first: a write through the map into a hole of a full disk
 * would be a SIGBUS, not an error. So the file is allocated up to need and a slack of a
 * quarter of what is used (1 to 64 MiB) beyond it, growing by twice that. The map
 * covers just the allocation while the writer catches up at open (a transaction that
 * outgrows its guess fails with MDB_MAP_FULL and changes nothing); after
 * annal__index_headroom, a sparse map as large again (256 MiB at least) lies beyond
 * it, so that allocating never has to wait for transactions. Moving the map does:
 * for those of this process to end, 200 ms at most, and only when the map is nearly
 * full or `wait`. Call with no transaction of this thread active. ANNAL_ENOSPC: need
 * could not be allocated (the disk, or index_map_bytes); ANNAL_OK otherwise. A
 * read-only environment maps the most from the start and never grows. */
annal_err annal__index_grow(annal__index *idx, uint64_t need, int wait);
/* Does this environment map the file writable (a writer where fallocate works)? */
int annal__index_writemap(const annal__index *idx);
/* A bound on the bytes of new pages a transaction indexing these events (whose index
 * entries take at most bytes) may write. */
uint64_t annal__index_need(annal__index *idx, uint64_t events, uint64_t bytes);
/* Catch-up is done: from now on the map keeps a sparse headroom (see above). */
void annal__index_headroom(annal__index *idx);
/* Bytes allocated and not yet used (UINT64_MAX when the map does not grow). */
uint64_t annal__index_room(annal__index *idx);

/* The helpers below return ANNAL_OK, ANNAL_ENOTFOUND, or ANNAL_EIO / ANNAL_ENOSPC /
 * ANNAL_ECORRUPT for LMDB failures. */
annal_err annal__index_err(int mdb_rc);
annal_err annal__index_head_get(MDB_txn *t, const annal__index *idx, annal__index_head *h);
annal_err annal__index_head_put(MDB_txn *t, const annal__index *idx, const annal__index_head *h);
annal_err annal__index_stream_get(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  annal__stream_rec *rec);
annal_err annal__index_stream_put(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                                  const annal__stream_rec *rec);
/* The system streams ('$' names) with events, and their events. */
annal_err annal__index_system_streams(MDB_txn *t, const annal__index *idx, uint64_t *streams,
                                      uint64_t *events);
/* Blocks. Revision, category and type entries each describe a *block*: the positions
 * [first_pos, first_pos + 64) of one batch that belong to one stream (revs, cats) or have
 * one event type (types), as a mask (bit i: first_pos + i) and the location of the
 * record at the lowest set bit. The other members are found by walking the log from
 * there (a batch's records are consecutive in one segment). One entry per up to 64 events
 * keeps LMDB out of the per-event cost of an append; compaction clears the bits of the
 * events it erases and moves loc to the first survivor. */
#define ANNAL__BLOCK     64u
#define ANNAL__BLOCK_VAL 24u /* encoded: first position (u64 big-endian), location, mask */

typedef struct annal__block {
    uint64_t first_pos; /* position of bit 0 */
    uint64_t loc;       /* location of the record at annal__block_first() */
    uint64_t mask;      /* members; never 0 in the index */
    uint64_t first_rev; /* revs only: revision of bit 0 (the key) */
} annal__block;

static inline uint64_t annal__block_first(const annal__block *b) {
    return b->first_pos + (uint64_t)__builtin_ctzll(b->mask);
}
/* One past the highest member's position. */
static inline uint64_t annal__block_end(const annal__block *b) {
    return b->first_pos + 64u - (uint64_t)__builtin_clzll(b->mask);
}
static inline int annal__block_has(const annal__block *b, uint64_t pos) {
    return pos >= b->first_pos && pos - b->first_pos < 64 && (b->mask >> (pos - b->first_pos) & 1);
}
void annal__block_encode(const annal__block *b, uint8_t out[ANNAL__BLOCK_VAL]);
annal_err annal__block_decode(const void *p, size_t len, annal__block *b);

/* Put the revision block b (key: stream id, b->first_rev), replacing an entry with the
 * same key. */
annal_err annal__index_rev_put(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                               const annal__block *b);
/* The block holding revision rev of the stream: ANNAL_OK only if rev is a member; its
 * position is b->first_pos + rev - b->first_rev. */
annal_err annal__index_rev_block(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                                 uint64_t rev, annal__block *b);
/* Delete the revision block of the stream that starts at revision first_rev. */
annal_err annal__index_rev_del(MDB_txn *t, const annal__index *idx, uint64_t stream_id,
                               uint64_t first_rev);
/* Position-table entry (pos a multiple of ANNAL__POS_STRIDE, above every other). */
annal_err annal__index_pos_put(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t loc);
/* Move the entry of pos to loc, or delete it with loc 0 (compaction); a missing entry
 * stays missing. */
annal_err annal__index_pos_move(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t loc);
/* Empty every table in t (the index is rebuilt from the log), with the event ids that
 * layout 2 kept in LMDB. */
annal_err annal__index_clear(MDB_txn *t, const annal__index *idx);
/* Category of a stream name: the bytes before the first '-' (all of it without one). */
size_t annal__category_len(const char *name, size_t len);
/* Add n blocks (vals: n encoded blocks in position order) under name in a category or
 * type table (idx->cats or idx->types), with one call when they are above every entry. */
annal_err annal__index_tag_put_many(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                    const uint8_t *vals, size_t n);
/* Put c (on a category or type table) on the block under name that starts at or below
 * pos, or else on its first block; v gets the value. 0, or MDB_NOTFOUND when name has
 * no blocks (an LMDB code). */
int annal__index_tag_seek(MDB_cursor *c, const char *name, size_t len, uint64_t pos, MDB_val *v);
/* The block under name holding pos: ANNAL_OK only if pos is a member. */
annal_err annal__index_tag_block(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                 uint64_t pos, annal__block *b);
/* The number of blocks under name (0 for none) through cursor c on a category, type or
 * tag table: the cost of walking it. 0 or an LMDB code. */
int annal__index_tag_count(MDB_cursor *c, const char *name, size_t len, uint64_t *n);
/* The block under name that starts exactly at first_pos (blocks of one batch slice start
 * at the same position in every table): 0, MDB_NOTFOUND when there is none, or an LMDB
 * code. */
int annal__index_tag_at(MDB_cursor *c, const char *name, size_t len, uint64_t first_pos,
                        annal__block *b);
/* Replace the block starting at old->first_pos under name with nb (nb->mask 0: delete). */
annal_err annal__index_tag_replace(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len,
                                   const annal__block *old, const annal__block *nb);

/* Revision entries: key = stream id and the block's first revision, both big-endian so
 * that one stream's entries are contiguous and ordered; value = the encoded block. */
#define ANNAL__REV_KEY 16u

/* A walk over index blocks in key order (or backward): the revision blocks of a stream,
 * or the blocks under a name in a category or type table. Its calls return LMDB codes
 * (0, MDB_NOTFOUND at the end, MDB_CORRUPTED for a malformed entry, ...) as the
 * transaction calls do. */
typedef struct annal__blocks {
    MDB_cursor *c;
    MDB_val k, v;
    int by_rev, backward;
    uint64_t stream_id;
    uint8_t key[ANNAL__REV_KEY]; /* where a revision walk starts */
} annal__blocks;
/* On the revision block of stream_id at or below rev (it may hold rev), or on the
 * nearest one to it. */
int annal__blocks_rev(MDB_txn *t, const annal__index *idx, uint64_t stream_id, uint64_t rev,
                      int backward, annal__blocks *w);
/* On the block under name that starts at or below pos, or else on its first. */
int annal__blocks_tag(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                      int backward, annal__blocks *w);
/* The same, forward only, and MDB_NOTFOUND at once when no block under name reaches pos
 * (its newest one ends at or below it). */
int annal__blocks_tag_fwd(MDB_txn *t, MDB_dbi dbi, const char *name, size_t len, uint64_t pos,
                          annal__blocks *w);
/* The block the walk is on; for revision blocks b->first_rev and *other: the block is
 * another stream's, below (-1) or above (1) stream_id; 0 otherwise. */
int annal__blocks_get(const annal__blocks *w, annal__block *b, int *other);
int annal__blocks_step(annal__blocks *w);
void annal__blocks_close(annal__blocks *w);

/* The first stream record whose name sorts after name (from the first with first set),
 * skipping those for which skip(rec) is non-zero: its name (NUL-terminated, *out_len
 * bytes) and record. 0, MDB_NOTFOUND past the last, MDB_CORRUPTED, or another LMDB
 * code. */
int annal__index_stream_next(MDB_txn *t, const annal__index *idx, const char *name, size_t len,
                             int first, int (*skip)(const annal__stream_rec *),
                             char out[ANNAL_MAX_NAME + 1], size_t *out_len, annal__stream_rec *sr);

/* Generation of segment no that the index's locations point into (0 if never compacted). */
annal_err annal__index_gen_get(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t *gen);
annal_err annal__index_gen_put(MDB_txn *t, const annal__index *idx, uint64_t no, uint32_t gen);

/* The marker of a compaction whose index update is under way (segment no to generation
 * gen); ANNAL_ENOTFOUND if none. _put with no = UINT64_MAX removes it. */
/* The "behind" mark: set by a writer while it indexes the log (catch-up, rebuild) in
 * more than one transaction, cleared by the transaction that finishes; an index that
 * carries it is behind its log, and read-only handles refuse it. put: on = 0 clears. */
int annal__index_behind(MDB_txn *t, const annal__index *idx);
annal_err annal__index_behind_put(MDB_txn *t, const annal__index *idx, int on);
annal_err annal__index_compacting_get(MDB_txn *t, const annal__index *idx, uint64_t *no,
                                      uint32_t *gen);
annal_err annal__index_compacting_put(MDB_txn *t, const annal__index *idx, uint64_t no,
                                      uint32_t gen);

/* Location of the nearest position-table entry at or below pos: *base gets its position.
 * (Entries are every ANNAL__POS_STRIDE-th position, minus those compaction erased.) */
annal_err annal__index_pos_floor(MDB_txn *t, const annal__index *idx, uint64_t pos, uint64_t *base,
                                 uint64_t *loc);

void annal__rev_key(uint8_t out[ANNAL__REV_KEY], uint64_t stream_id, uint64_t rev);

#endif
