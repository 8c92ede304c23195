/* The event-id index: event id -> position, for idempotent appends and store-wide
 * uniqueness of ids. Ids are usually random (UUIDv4), and random keys scatter inserts
 * over every leaf of a B-tree: in LMDB that cost ~60% of a batched append. So this index
 * is a small log-structured merge tree instead:
 *   - a memtable of the newest ids (hash table over an insertion-ordered array), and
 *   - immutable run files `ids-<seq>.run` beside the LMDB files: entries sorted by id,
 *     with a blocked Bloom filter, merged pairwise as they grow (binary counter), so a
 *     store of N events has about log2(N / memtable) runs.
 * Like the LMDB tables it is derived from the log. The run list and `next` (the first
 * position no run covers) live in the LMDB meta table and change in the same transaction
 * that the caller commits; the memtable holds positions from `next` on and is refilled
 * from the log on open. Only writers (and `annal verify`) use it: readers never look up
 * ids. A handle's ids are used by one thread at a time (the append leader). */
#ifndef ANNAL_IDS_H
#define ANNAL_IDS_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "annal.h"

typedef struct annal__ids annal__ids;
struct annal__index;

#define ANNAL__IDS_MEM_DEFAULT (1u << 19) /* memtable entries before a run is written */

/* Open the id index in dir as t's meta table (dbi) describes it. mem_max: memtable size
 * that makes annal__ids_full() true. ANNAL_ENOTFOUND or ANNAL_ECORRUPT when a listed run
 * is missing or damaged (the caller rebuilds the index); detail says which. */
annal_err annal__ids_open(const char *dir, MDB_txn *t, MDB_dbi meta, uint64_t mem_max,
                          annal__ids **out, char *detail, size_t dlen);
void annal__ids_close(annal__ids *ids);

/* First position not covered by a run: the memtable must hold every id from here on. */
uint64_t annal__ids_next(const annal__ids *ids);

/* The newest entry for id. ANNAL_OK: *pos, and *loc (the location recorded with it, or
 * UINT64_MAX when it came from a run, which keeps positions only). ANNAL_ENOTFOUND.
 * An entry may name an event that compaction erased since: the caller checks. */
annal_err annal__ids_get(const annal__ids *ids, const annal_uuid *id, uint64_t *pos, uint64_t *loc);

/* Size the memtable for mem_max entries now (a rebuild fills it: no rehashing). */
annal_err annal__ids_reserve(annal__ids *ids);

/* Add an entry to the memtable; positions only grow. ANNAL_ENOMEM. */
annal_err annal__ids_add(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc);

/* Add id at pos unless an entry for it exists: then ANNAL_EDUPLICATE with the newest
 * one's position and location (as annal__ids_get) and nothing added. One probe does both. */
annal_err annal__ids_claim(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc,
                           uint64_t *old_pos, uint64_t *old_loc);

/* annal__ids_claim against the memtable only, not the runs (a rebuild, which reads ids
 * that were unique when appended: checking every run for each was half its time). */
annal_err annal__ids_claim_mem(annal__ids *ids, const annal_uuid *id, uint64_t pos, uint64_t loc,
                               uint64_t *old_pos);

/* Start loading the memtable slot of id into the cache, and (while held) the Bloom
 * filter block of each run for it: claiming a batch's ids after prefetching them all
 * overlaps their cache misses. */
void annal__ids_prefetch(const annal__ids *ids, const annal_uuid *id);

/* Keep the run list still (from the merger thread) for a batch of claims and lookups
 * by the calling thread, which would otherwise lock and unlock for each; release
 * before anything else of ids is called (a flush, a close). */
void annal__ids_hold(annal__ids *ids);
void annal__ids_release(annal__ids *ids);

/* Forget the memtable's entries at positions >= pos (added by an append that failed). */
void annal__ids_truncate(annal__ids *ids, uint64_t pos);

/* Has the memtable reached its size? Then the caller flushes between appends. */
int annal__ids_full(const annal__ids *ids);
uint64_t annal__ids_mem_count(const annal__ids *ids);

/* Write the memtable as a run covering positions below upto (every entry is below it),
 * merge runs as the policy asks, and put the new run list into t. Nothing changes in
 * memory until annal__ids_flush_end says whether t committed: then the memtable is
 * emptied and replaced runs deleted, or else the new files are deleted. */
annal_err annal__ids_flush(annal__ids *ids, MDB_txn *t, MDB_dbi meta, uint64_t upto);
void annal__ids_flush_end(annal__ids *ids, int committed);

/* Forget every run and entry (the index is being rebuilt from position 0). The files
 * are deleted at once: the meta table that names them is being dropped by the caller. */
void annal__ids_reset(annal__ids *ids);

/* fsync the run files written since the last call (the index is about to be marked
 * clean). 0 or a negative errno. */
int annal__ids_sync(annal__ids *ids);

/* Merge runs in a thread of their own from now on (a writer, after open): a flush then
 * only writes the memtable's run, and merges, which rewrite up to the whole index,
 * no longer pause appends. The thread commits the new run lists in its own LMDB write
 * transactions on idx. Stopped by annal__ids_stop_merger or annal__ids_close. */
annal_err annal__ids_start_merger(annal__ids *ids, struct annal__index *idx, MDB_dbi meta);
void annal__ids_stop_merger(annal__ids *ids);

/* Check every run's checksum and order (annal verify). ANNAL_ECORRUPT with detail. */
annal_err annal__ids_check(const annal__ids *ids, char *detail, size_t dlen);

/* Writer at open: remove run files the list does not name (left by a crash). */
void annal__ids_clean(const annal__ids *ids);

/* Remove every run file in dir (the index is being removed). */
void annal__ids_remove_all(const char *dir);

#endif
