/* The writer's table of recent event ids, not yet in LMDB's `ids` table.
 *
 * Event ids are random (UUIDv4 from clients), so inserting each into the `ids` B-tree as it
 * is appended dirties one leaf page per event: with batches of 1000 that was 60% of the
 * cost of an append. Recent ids are kept here instead (a hash over an array in append
 * order) and written to LMDB sorted, tens of thousands at a time, touching each leaf once.
 * The index head records how far the `ids` table goes (`ids_next`); a crash loses only this
 * table, and the next open re-reads those ids from the log. Writer-only: the leader of the
 * group commit, recovery and compaction (holding the leader role) touch it. */
#ifndef ANNAL_IDTAB_H
#define ANNAL_IDTAB_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "annal.h"
#include "index/index.h"

typedef struct annal__idtab_ent {
    annal_uuid id;
    uint64_t pos, loc;
} annal__idtab_ent;

typedef struct annal__idtab {
    annal__idtab_ent *ents; /* in insertion (= position) order */
    size_t n, cap;
    uint32_t *slots; /* open addressing, linear probing: entry index + 1, 0 = empty */
    size_t nslots;   /* power of two, >= 2 * cap */
} annal__idtab;

#define ANNAL__IDTAB_FLUSH 65536u /* write to LMDB once this many are held */

void annal__idtab_free(annal__idtab *t);
/* Add id: 0, or -ENOMEM. The caller checked it is not present. */
int annal__idtab_add(annal__idtab *t, const annal_uuid *id, uint64_t pos, uint64_t loc);
/* 1 and *pos, *loc if id is held, else 0. */
int annal__idtab_get(const annal__idtab *t, const annal_uuid *id, uint64_t *pos, uint64_t *loc);
/* Forget the entries added after the first n (a request or group that failed). */
void annal__idtab_truncate(annal__idtab *t, size_t n);
/* Write every entry to the `ids` table in t (sorted, so each page is touched once).
 * The caller empties the table (annal__idtab_truncate(t, 0)) once txn commits. */
annal_err annal__idtab_flush(annal__idtab *t, MDB_txn *txn, const annal__index *idx);

#endif
