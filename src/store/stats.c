/*
 * stats.c -- annal_db_stats_get: the store's counts plus the group-commit counters the
 * writer keeps (append.c counts; this file owns the arithmetic and the public call).
 */
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

static void add(uint64_t *v, uint64_t n) { __atomic_fetch_add(v, n, __ATOMIC_RELAXED); }

static void raise_to(uint64_t *v, uint64_t n) {
    /* Leader-only writer: a plain load-compare-store cannot race another writer. */
    if (n > __atomic_load_n(v, __ATOMIC_RELAXED)) __atomic_store_n(v, n, __ATOMIC_RELAXED);
}

void annal__counters_flush(annal__counters *c, int64_t ns) {
    uint64_t t = ns > 0 ? (uint64_t)ns : 0;
    add(&c->flushes, 1);
    add(&c->flush_ns_total, t);
    raise_to(&c->flush_ns_max, t);
    __atomic_store_n(&c->flush_ns_last, t, __ATOMIC_RELAXED);
}

void annal__counters_group(annal__counters *c, uint64_t reqs, uint64_t events) {
    add(&c->groups, 1);
    add(&c->group_reqs, reqs);
    raise_to(&c->group_reqs_max, reqs);
    add(&c->group_events, events);
    raise_to(&c->group_events_max, events);
}

annal_err annal_db_stats_get_sized(annal_db *db, annal_db_stats *out, size_t out_size) {
    if (!db || !out) return ANNAL_EINVAL;
    annal_db_stats s;
    memset(&s, 0, sizeof s);
    annal_err rc = annal_db_info_get(db, &s.info);
    if (rc != ANNAL_OK) return rc;
    const annal__counters *c = &db->ctr;
    s.groups = __atomic_load_n(&c->groups, __ATOMIC_RELAXED);
    s.group_appends = __atomic_load_n(&c->group_reqs, __ATOMIC_RELAXED);
    s.group_appends_max = __atomic_load_n(&c->group_reqs_max, __ATOMIC_RELAXED);
    s.group_events = __atomic_load_n(&c->group_events, __ATOMIC_RELAXED);
    s.group_events_max = __atomic_load_n(&c->group_events_max, __ATOMIC_RELAXED);
    s.flushes = __atomic_load_n(&c->flushes, __ATOMIC_RELAXED);
    s.flush_ns_total = __atomic_load_n(&c->flush_ns_total, __ATOMIC_RELAXED);
    s.flush_ns_max = __atomic_load_n(&c->flush_ns_max, __ATOMIC_RELAXED);
    s.flush_ns_last = __atomic_load_n(&c->flush_ns_last, __ATOMIC_RELAXED);
    annal__out_copy(out, out_size, &s, sizeof s);
    return ANNAL_OK;
}
