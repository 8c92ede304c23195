/* Recent event ids in memory, written to LMDB in sorted runs (idtab.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "index/idtab.h"

/* Ids are random or time-ordered (v7: the low bytes are random): mixing the last 8
 * bytes spreads both. */
static size_t slot_of(const annal__idtab *t, const annal_uuid *id) {
    uint64_t h = annal__get64(id->bytes + 8) ^ annal__get64(id->bytes);
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (t->nslots - 1);
}

static int grow(annal__idtab *t) {
    size_t cap = t->cap ? t->cap * 2 : 4096;
    annal__idtab_ent *e = realloc(t->ents, cap * sizeof *e);
    if (!e) return -ENOMEM;
    t->ents = e;
    uint32_t *s = calloc(cap * 2, sizeof *s);
    if (!s) return -ENOMEM;
    free(t->slots);
    t->slots = s;
    t->nslots = cap * 2;
    t->cap = cap;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = slot_of(t, &t->ents[i].id);
        while (t->slots[k]) k = (k + 1) & (t->nslots - 1);
        t->slots[k] = (uint32_t)(i + 1);
    }
    return 0;
}

void annal__idtab_free(annal__idtab *t) {
    free(t->ents);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

int annal__idtab_add(annal__idtab *t, const annal_uuid *id, uint64_t pos, uint64_t loc) {
    if (t->n == t->cap && grow(t) < 0) return -ENOMEM;
    t->ents[t->n] = (annal__idtab_ent){*id, pos, loc};
    size_t k = slot_of(t, id);
    while (t->slots[k]) k = (k + 1) & (t->nslots - 1);
    t->slots[k] = (uint32_t)(++t->n);
    return 0;
}

int annal__idtab_get(const annal__idtab *t, const annal_uuid *id, uint64_t *pos, uint64_t *loc) {
    if (!t->n) return 0;
    for (size_t k = slot_of(t, id); t->slots[k]; k = (k + 1) & (t->nslots - 1)) {
        const annal__idtab_ent *e = &t->ents[t->slots[k] - 1];
        if (memcmp(e->id.bytes, id->bytes, 16) == 0) {
            *pos = e->pos;
            *loc = e->loc;
            return 1;
        }
    }
    return 0;
}

/* Remove the slot of entry i (linear probing: shift later members of the run back). */
static void slot_del(annal__idtab *t, size_t i) {
    size_t mask = t->nslots - 1, k = slot_of(t, &t->ents[i].id);
    while (t->slots[k] != i + 1) k = (k + 1) & mask;
    for (size_t j = (k + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t home = slot_of(t, &t->ents[t->slots[j] - 1].id);
        /* Move j's entry into the hole at k unless its home lies cyclically in (k, j]. */
        int stays = k <= j ? (home > k && home <= j) : (home > k || home <= j);
        if (!stays) {
            t->slots[k] = t->slots[j];
            k = j;
        }
    }
    t->slots[k] = 0;
}

void annal__idtab_truncate(annal__idtab *t, size_t n) {
    if (n == 0 && t->n > 0) {
        memset(t->slots, 0, t->nslots * sizeof *t->slots);
        t->n = 0;
        return;
    }
    while (t->n > n) slot_del(t, --t->n);
}

static int cmp_ent(const void *a, const void *b) {
    return memcmp(((const annal__idtab_ent *)a)->id.bytes, ((const annal__idtab_ent *)b)->id.bytes,
                  16);
}

annal_err annal__idtab_flush(annal__idtab *t, MDB_txn *txn, const annal__index *idx) {
    if (!t->n) return ANNAL_OK;
    annal__idtab_ent *sorted = malloc(t->n * sizeof *sorted);
    if (!sorted) return ANNAL_ENOMEM;
    memcpy(sorted, t->ents, t->n * sizeof *sorted);
    qsort(sorted, t->n, sizeof *sorted, cmp_ent);
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(txn, idx->ids, &c);
    for (size_t i = 0; !rc && i < t->n; i++) {
        uint8_t v[16];
        annal__put64(v, sorted[i].pos);
        annal__put64(v + 8, sorted[i].loc);
        MDB_val k = {16, sorted[i].id.bytes}, val = {16, v};
        rc = mdb_cursor_put(c, &k, &val, MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST) rc = MDB_CORRUPTED; /* checked when added: cannot be */
    }
    if (c) mdb_cursor_close(c);
    free(sorted);
    return annal__index_err(rc);
}
