/* Atomic appends across streams (annal_append_multi). The whole set is one request of
 * the group commit and one batch of the log, its records flagged ANNAL__REC_MULTI: the
 * leader checks every part and check first, then encodes the set in consecutive
 * positions, so recovery, readers and subscribers see it whole or not at all. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

/* The request, on its caller's stack; the leader fills its outputs. */
typedef struct annal__multi {
    const annal_stream_append *parts;
    size_t nparts;
    const annal_stream_check *checks;
    size_t nchecks;
    size_t *slen;                /* per part, then per check: name lengths */
    annal_append_result *pres;   /* per part */
    annal_stream_conflict *conf; /* room for nparts + nchecks */
    size_t nconf;
    uint64_t total;  /* events in all parts */
    uint64_t *loc;   /* per event: where it was encoded */
    int spans;       /* the events belong to more than one stream */
    uint64_t first;  /* out: first position */
    int idempotent;  /* out */
    annal__dcb *dcb; /* annal_append_tagged: tags, a condition; NULL for annal_append_multi */
} annal__multi;

/* The tags section of event k (of all parts), or none. */
static annal__evtags ev_tags(const annal__multi *m, uint64_t k) {
    return m->dcb && m->dcb->tags ? m->dcb->tags[k] : (annal__evtags){NULL, 0};
}

static const char *expected_str(int64_t e, char *buf, size_t n) {
    if (e == ANNAL_EXPECT_ANY) return "any";
    if (e == ANNAL_EXPECT_NO_STREAM) return "no_stream";
    if (e == ANNAL_EXPECT_STREAM_EXISTS) return "stream_exists";
    snprintf(buf, n, "%" PRId64, e);
    return buf;
}

static int same_name(const char *a, size_t al, const char *b, size_t bl) {
    return al == bl && memcmp(a, b, al) == 0;
}

/* Could an append under `expected` have been given first revision r0? (annal_append) */
static int place_ok(int64_t expected, uint64_t r0) {
    return expected == ANNAL_EXPECT_ANY || (expected == ANNAL_EXPECT_NO_STREAM && r0 == 0) ||
           (expected == ANNAL_EXPECT_STREAM_EXISTS && r0 > 0) ||
           (expected >= 0 && r0 == (uint64_t)expected + 1);
}

/* Is this set a resend of one already stored? ANNAL_ENOTFOUND: no, go on. The stored
 * events must follow the first one in the log, one for one: same ids, same streams,
 * consecutive revisions per part, first revisions its expectation allowed. */
static annal_err check_resend(annal_db *db, annal__group *g, MDB_txn *t, annal__req *req) {
    annal__multi *m = req->multi;
    size_t p0 = 0;
    while (p0 < m->nparts && m->parts[p0].n == 0) p0++;
    const annal_uuid *id0 = &m->parts[p0].events[0].id;
    uint64_t pos0, loc;
    if (annal__uuid_is_nil(id0)) return ANNAL_ENOTFOUND;
    annal_err rc = annal__id_live(db, t, id0, &pos0, &loc);
    if (rc != ANNAL_OK) return rc;
    uint64_t k = 0;
    uint32_t len = 0;
    int all = 1;
    for (size_t i = 0; all && i < m->nparts; i++) {
        const annal_stream_append *p = &m->parts[i];
        m->pres[i] = (annal_append_result){0, pos0 + k, p->n, -1, 1};
        for (size_t e = 0; all && e < p->n; e++, k++) {
            annal_event ev;
            loc += len;
            all = annal__group_read(db, g, loc, &ev, &len) == ANNAL_OK && ev.position == pos0 + k &&
                  memcmp(ev.id.bytes, p->events[e].id.bytes, 16) == 0 &&
                  same_name(ev.stream, ev.stream_len, p->stream, m->slen[i]);
            if (all && e == 0) {
                all = place_ok(p->expected, ev.revision);
                m->pres[i].first_revision = ev.revision;
            }
            all = all && ev.revision == m->pres[i].first_revision + e;
        }
        if (p->n) m->pres[i].revision = (int64_t)(m->pres[i].first_revision + p->n) - 1;
    }
    if (!all) {
        char ids[37];
        annal_uuid_format(id0, ids);
        snprintf(req->msg, sizeof req->msg,
                 "event id %s is already stored at position %" PRIu64 " by a different append", ids,
                 pos0);
        return ANNAL_EDUPLICATE;
    }
    /* Parts without events report their stream's revision now. */
    for (size_t i = 0; i < m->nparts; i++) {
        if (m->parts[i].n) continue;
        annal__stream_rec sr;
        rc = annal__index_stream_get(t, &db->idx, m->parts[i].stream, m->slen[i], &sr);
        if (rc != ANNAL_OK && rc != ANNAL_ENOTFOUND) return rc;
        m->pres[i].revision = rc == ANNAL_OK ? (int64_t)sr.count - 1 : -1;
    }
    m->first = pos0;
    m->idempotent = 1;
    return ANNAL_OK;
}

static void add_conflict(annal__multi *m, const char *stream, size_t index, int64_t expected,
                         int64_t actual, annal_err reason) {
    m->conf[m->nconf++] = (annal_stream_conflict){stream, index, expected, actual, reason};
}

/* Check every part (as the parts before it leave its stream) and every check (against
 * the store); fill each part's first revision. Collects every failure. */
static annal_err check_all(annal_db *db, MDB_txn *t, annal__multi *m) {
    for (size_t i = 0; i < m->nparts + m->nchecks; i++) {
        int is_part = i < m->nparts;
        const char *name = is_part ? m->parts[i].stream : m->checks[i - m->nparts].stream;
        int64_t expected = is_part ? m->parts[i].expected : m->checks[i - m->nparts].expected;
        annal__stream_rec sr;
        annal_err rc = annal__index_stream_get(t, &db->idx, name, m->slen[i], &sr);
        if (rc == ANNAL_ENOTFOUND)
            sr = annal__stream_rec_new(0, 0);
        else if (rc != ANNAL_OK)
            return rc;
        uint64_t count = sr.count, earlier = 0;
        for (size_t j = 0; is_part && j < i; j++) /* what this call wrote before */
            if (same_name(m->parts[j].stream, m->slen[j], name, m->slen[i]))
                earlier += m->parts[j].n;
        count += earlier;
        int64_t cur = (int64_t)count - 1;
        if (sr.flags & ANNAL__SR_TOMBSTONE) {
            add_conflict(m, name, i, expected, cur, ANNAL_EDELETED);
            continue;
        }
        /* A soft-deleted stream reads as absent until something re-creates it. */
        int gone = cur < 0 || ((sr.flags & ANNAL__SR_DELETED) && earlier == 0);
        int ok = expected == ANNAL_EXPECT_ANY || (expected == ANNAL_EXPECT_NO_STREAM && gone) ||
                 (expected == ANNAL_EXPECT_STREAM_EXISTS && !gone) || expected == cur;
        if (!ok) add_conflict(m, name, i, expected, gone ? -1 : cur, ANNAL_ECONFLICT);
        if (is_part)
            m->pres[i] =
                (annal_append_result){count, 0, m->parts[i].n, cur + (int64_t)m->parts[i].n, 0};
    }
    return ANNAL_OK;
}

/* The failure message naming the streams (the caller's array has them all). */
static annal_err conflict_result(annal__req *req, annal__multi *m) {
    int deleted_only = 1;
    size_t off = 0;
    off += (size_t)snprintf(req->msg, sizeof req->msg, "%zu of %zu streams failed:", m->nconf,
                            m->nparts + m->nchecks);
    for (size_t i = 0; i < m->nconf && off < sizeof req->msg; i++) {
        const annal_stream_conflict *c = &m->conf[i];
        char eb[32]; // cppcheck-suppress variableScope ; kept beside the message it formats
        if (c->reason == ANNAL_EDELETED)
            off += (size_t)snprintf(req->msg + off, sizeof req->msg - off, " %s is tombstoned;",
                                    c->stream);
        else
            off += (size_t)snprintf(req->msg + off, sizeof req->msg - off,
                                    " %s expected %s, is at %" PRId64 ";", c->stream,
                                    expected_str(c->expected, eb, sizeof eb), c->actual);
        if (c->reason != ANNAL_EDELETED) deleted_only = 0;
    }
    return deleted_only ? ANNAL_EDELETED : ANNAL_ECONFLICT;
}

/* Index the events of one stream's run (consecutive positions and revisions) from
 * event k on: what add_req does for one request, and recovery for one run of a batch. */
static annal_err index_run(annal_db *db, annal__group *g, MDB_txn *t, annal__index_head *h,
                           annal__multi *m, const char *stream, size_t slen, uint64_t k,
                           annal_event_data **evs, size_t n) {
    annal__stream_rec sr;
    annal_err rc = annal__index_stream_get(t, &db->idx, stream, slen, &sr);
    if (rc == ANNAL_ENOTFOUND) {
        sr = annal__stream_rec_new(h->next_stream_id++, g->now);
        rc = ANNAL_OK;
    }
    if (rc != ANNAL_OK) return rc;
    if (sr.count == 0) {
        sr.created_ns = g->now;
        h->streams++;
    }
    uint64_t rev0 = sr.count;
    for (size_t i = 0; i < n && rc == ANNAL_OK; i++) {
        annal_event_data *in = evs[i];
        annal_event ev = {.id = in->id,
                          .stream = stream,
                          .stream_len = slen,
                          .type = in->type,
                          .type_len = strlen(in->type),
                          .data = in->data,
                          .data_len = in->data_len,
                          .metadata = in->metadata,
                          .metadata_len = in->metadata_len,
                          .revision = rev0 + i,
                          .position = h->next_pos + k + i,
                          .timestamp_ns = g->now,
                          .tags = ev_tags(m, k + i).p,
                          .tags_len = ev_tags(m, k + i).len};
        if (ev.position % ANNAL__POS_STRIDE == 0)
            rc = annal__index_pos_put(t, &db->idx, ev.position, m->loc[k + i]);
        if (rc == ANNAL_OK)
            rc = annal__batch_add(&db->batch, ev.type, ev.type_len, ev.tags, ev.tags_len,
                                  ev.position, m->loc[k + i]);
        if (rc == ANNAL_OK) rc = annal__index_event_effects(&db->idx, t, h, &sr, &ev);
        sr.count = ev.revision + 1;
        sr.last_pos = ev.position;
    }
    if (rc == ANNAL_OK) rc = annal__batch_put(&db->batch, &db->idx, t, stream, slen, sr.id, rev0);
    db->batch.n = 0;
    if (rc == ANNAL_OK) rc = annal__index_stream_put(t, &db->idx, stream, slen, &sr);
    return rc;
}

/* The DCB condition (annal_append_tagged), here in the leader and in the group's
 * transaction: it sees every committed event and every event of the requests ahead of
 * this one in the group (their entries are in t), and nothing can be appended between
 * this check and the write that follows it. Two appends whose conditions match each
 * other's events are therefore ordered here and the second fails; a check made with a
 * read before queueing could let both through (Marten's issue #4591). */
static annal_err check_condition(annal_db *db, MDB_txn *t, annal__req *req, annal__multi *m) {
    if (!m->dcb || !m->dcb->cond) return ANNAL_OK;
    annal_err rc = annal__dcb_check(db, t, m->dcb->cond, m->dcb->after, &m->dcb->cond_pos);
    if (rc == ANNAL_ECONDITION)
        snprintf(req->msg, sizeof req->msg,
                 "the event at position %" PRIu64 " matches the append's condition",
                 m->dcb->cond_pos);
    else if (rc != ANNAL_OK)
        snprintf(req->msg, sizeof req->msg, "%s", annal_db_errmsg(db));
    return rc;
}

/* Encode the set's records at *bl of the buffer and claim their ids: first what may
 * refuse the set (an id already stored), with no index write. */
static annal_err encode_set(annal_db *db, annal__group *g, MDB_txn *t, annal__req *req,
                            annal__index_head *h, uint64_t *bl) {
    annal__multi *m = req->multi;
    annal_err rc = ANNAL_OK;
    annal__ids_hold(db->ids);
    for (size_t i = 0; i < m->nparts; i++)
        for (size_t e = 0; e < m->parts[i].n; e++)
            annal__ids_prefetch(db->ids, &m->parts[i].events[e].id);
    uint64_t k = 0;
    for (size_t i = 0; i < m->nparts && rc == ANNAL_OK; i++) {
        const annal_stream_append *p = &m->parts[i];
        for (size_t e = 0; e < p->n; e++, k++) {
            annal_event_data *in = &p->events[e];
            if (annal__uuid_is_nil(&in->id)) annal__uuid_v7(&in->id, g->now / 1000000, &db->rng);
            annal_event ev = {.id = in->id,
                              .stream = p->stream,
                              .stream_len = m->slen[i],
                              .type = in->type,
                              .type_len = strlen(in->type),
                              .data = in->data,
                              .data_len = in->data_len,
                              .metadata = in->metadata,
                              .metadata_len = in->metadata_len,
                              .revision = m->pres[i].first_revision + e,
                              .position = h->next_pos + k,
                              .timestamp_ns = g->now,
                              .tags = ev_tags(m, k).p,
                              .tags_len = ev_tags(m, k).len};
            uint64_t loc = ANNAL__LOC(db->wseg->no, db->woff + *bl);
            if (*bl == 0) g->first = ev.position;
            *bl += annal__rec_encode_flags(&ev, (uint32_t)k, (uint32_t)m->total, g->first,
                                           m->spans ? ANNAL__REC_MULTI : 0, db->buf + *bl);
            h->last_loc = loc;
            m->loc[k] = loc;
            uint64_t dp;
            rc = annal__id_claim(db, t, &in->id, ev.position, loc, &dp);
            if (rc == ANNAL_EDUPLICATE) {
                char ids[37];
                annal_uuid_format(&in->id, ids);
                snprintf(req->msg, sizeof req->msg, "event id %s is already stored%s", ids,
                         dp >= db->head.next_pos ? " (repeated within the append)" : "");
            }
            if (rc != ANNAL_OK) break;
        }
    }
    annal__ids_release(db->ids);
    return rc;
}

/* Check and encode a multi-stream request into the group (req->multi_add). */
static int multi_add(annal_db *db, annal__group *g, MDB_txn *t, annal__req *req) {
    annal__multi *m = req->multi;
    annal__index_head h = db->head;
    m->nconf = 0;
    if (m->total > 0) {
        annal_err rc = check_resend(db, g, t, req);
        if (rc != ANNAL_ENOTFOUND) return rc;
    }
    annal_err rc = check_all(db, t, m);
    if (rc != ANNAL_OK) return rc;
    rc = check_condition(db, t, req, m);
    if (rc != ANNAL_OK) return rc;
    if (m->nconf) return conflict_result(req, m);
    m->first = h.next_pos;
    uint64_t k = 0;
    for (size_t i = 0; i < m->nparts; k += m->parts[i].n, i++)
        m->pres[i].first_position = h.next_pos + k;
    if (m->total == 0) return ANNAL_OK;

    int r = annal__group_room(db, g, req->bytes, h.next_pos); /* one batch, one segment */
    if (r < 0) return r;
    if (annal__group_reserve(db, g->bl + req->bytes) < 0) return ANNAL_ENOMEM;
    uint64_t bl = g->bl;
    rc = encode_set(db, g, t, req, &h, &bl);
    if (rc != ANNAL_OK) return rc;
    /* Then the index, one run of one stream at a time (adjacent parts of one stream are
     * one run, as recovery will see them). A failure now is LMDB's and ends the group. */
    annal_event_data **run = malloc(m->total * sizeof *run);
    if (!run) rc = ANNAL_ENOMEM;
    k = 0;
    size_t rn = 0, rp = 0;
    uint64_t rk = 0;
    for (size_t i = 0; i <= m->nparts && rc == ANNAL_OK; i++) {
        if (i < m->nparts && m->parts[i].n == 0) continue;
        if (rn && (i == m->nparts ||
                   !same_name(m->parts[i].stream, m->slen[i], m->parts[rp].stream, m->slen[rp]))) {
            rc = index_run(db, g, t, &h, m, m->parts[rp].stream, m->slen[rp], rk, run, rn);
            rk += rn;
            rn = 0;
        }
        if (i == m->nparts) break;
        if (rn == 0) rp = i;
        for (size_t e = 0; e < m->parts[i].n; e++) run[rn++] = &m->parts[i].events[e];
    }
    free(run);
    if (rc != ANNAL_OK) {
        g->broken = 1;
        return rc;
    }
    req->res.first_position = h.next_pos;
    req->res.count = m->total;
    h.next_pos += m->total;
    h.last_ns = g->now;
    db->head = h;
    g->bl = bl;
    return ANNAL_OK;
}

/* ---- the caller's side --------------------------------------------------------------- */

/* Check the request and size its arrays; annal__fail has said why on error. */
static annal_err validate_multi(annal_db *db, annal__multi *m, annal__req *req) {
    if (m->nparts == 0 || !m->parts)
        return annal__fail(db, ANNAL_EINVAL, "annal_append_multi needs at least one part");
    if (m->nchecks && !m->checks) return annal__fail(db, ANNAL_EINVAL, "checks is NULL");
    if (m->nparts + m->nchecks > db->opts.max_batch_events || m->nparts + m->nchecks < m->nparts)
        return annal__fail(db, ANNAL_ETOOBIG, "%zu parts and checks; the limit is %u",
                           m->nparts + m->nchecks, db->opts.max_batch_events);
    uint64_t payload = 0;
    for (size_t i = 0; i < m->nparts; i++) {
        const annal_stream_append *p = &m->parts[i];
        uint64_t bytes;
        annal_err rc = annal__append_validate(db, p->stream, &m->slen[i], p->expected, p->events,
                                              p->n, &bytes, m->dcb && m->dcb->sys[i]);
        if (rc != ANNAL_OK) {
            char why[400];
            snprintf(why, sizeof why, "%s", annal_db_errmsg(db));
            return annal__fail(db, rc, "part %zu: %s", i, why);
        }
        m->total += p->n;
        req->bytes += bytes;
        for (size_t e = 0; e < p->n; e++)
            payload += (uint64_t)p->events[e].data_len + p->events[e].metadata_len;
        if (req->stream_len < m->slen[i]) req->stream_len = m->slen[i];
    }
    /* Do the events belong to more than one stream? (Parts may be empty.) */
    for (size_t i = 0, f = SIZE_MAX; i < m->nparts; i++) {
        if (!m->parts[i].n) continue;
        if (f == SIZE_MAX)
            f = i;
        else if (!same_name(m->parts[i].stream, m->slen[i], m->parts[f].stream, m->slen[f]))
            m->spans = 1;
    }
    for (size_t i = 0; i < m->nchecks; i++) {
        const annal_stream_check *c = &m->checks[i];
        int64_t e = c->expected;
        if (!annal__name_ok(c->stream, &m->slen[m->nparts + i]))
            return annal__fail(db, ANNAL_EINVAL, "check %zu: invalid stream name", i);
        if (e < 0 && e != ANNAL_EXPECT_ANY && e != ANNAL_EXPECT_NO_STREAM &&
            e != ANNAL_EXPECT_STREAM_EXISTS)
            return annal__fail(db, ANNAL_EINVAL, "check %zu: invalid expected revision %" PRId64, i,
                               e);
    }
    if (m->total > db->opts.max_batch_events)
        return annal__fail(db, ANNAL_ETOOBIG, "%" PRIu64 " events in one append; the limit is %u",
                           m->total, db->opts.max_batch_events);
    if (payload > db->opts.max_batch_bytes)
        return annal__fail(db, ANNAL_ETOOBIG, "append of %" PRIu64 " bytes; the limit is %" PRIu64,
                           payload, db->opts.max_batch_bytes);
    if (req->bytes > db->opts.segment_bytes - ANNAL__SEG_HDR)
        return annal__fail(db, ANNAL_ETOOBIG,
                           "append of %" PRIu64 " bytes does not fit in a segment of %" PRIu64,
                           req->bytes, db->opts.segment_bytes);
    return ANNAL_OK;
}

annal_err annal_append_multi_sized(annal_db *db, const annal_stream_append *parts, size_t nparts,
                                   const annal_stream_check *checks, size_t nchecks,
                                   annal_multi_result *res, size_t res_size) {
    if (!db) return ANNAL_EINVAL;
    annal_multi_result r = {0};
    if (res) memcpy(&r, res, res_size < sizeof r ? res_size : sizeof r); /* the in-fields */
    r.condition_position = UINT64_MAX;                                   /* no condition */
    annal_err rc = annal__append_parts(db, parts, nparts, checks, nchecks, NULL, &r);
    /* Only the out-fields are written, within the caller's size. */
    if (res) annal__out_copy(res, res_size, &r, sizeof r);
    return rc;
}

annal_err annal__append_parts(annal_db *db, const annal_stream_append *parts, size_t nparts,
                              const annal_stream_check *checks, size_t nchecks, annal__dcb *dcb,
                              annal_multi_result *r) {
    if (db->readonly) return annal__fail(db, ANNAL_EREADONLY, "the store is open read-only");
    annal__multi m = {
        .parts = parts, .nparts = nparts, .checks = checks, .nchecks = nchecks, .dcb = dcb};
    annal__req req;
    memset(&req, 0, sizeof req);
    req.multi = &m;
    req.multi_add = multi_add;
    req.expected = ANNAL_EXPECT_ANY;
    req.bytes = dcb ? dcb->extra : 0; /* what tags add to the records */
    size_t nall = nparts + nchecks;
    annal_err rc = ANNAL_OK;
    if (nall >= nparts && nall <= db->opts.max_batch_events) {
        m.slen = calloc(nall ? nall : 1, sizeof *m.slen);
        m.pres = calloc(nparts ? nparts : 1, sizeof *m.pres);
        m.conf = calloc(nall ? nall : 1, sizeof *m.conf);
        if (!m.slen || !m.pres || !m.conf) rc = annal__fail(db, ANNAL_ENOMEM, "out of memory");
    }
    if (rc == ANNAL_OK) rc = validate_multi(db, &m, &req);
    if (rc == ANNAL_OK && !(m.loc = malloc((m.total ? m.total : 1) * sizeof *m.loc)))
        rc = annal__fail(db, ANNAL_ENOMEM, "out of memory");
    if (rc == ANNAL_OK) {
        req.stream = parts[0].stream;
        req.n = m.total;
        annal__submit(db, &req);
        rc = req.rc;
        r->nconflicts = m.nconf;
        for (size_t i = 0; i < m.nconf && i < r->max_conflicts && r->conflicts; i++)
            r->conflicts[i] = m.conf[i];
        if (rc == ANNAL_OK) {
            r->first_position = m.first;
            r->count = m.total;
            r->idempotent = m.idempotent;
            if (r->parts) memcpy(r->parts, m.pres, nparts * sizeof *m.pres);
        }
        if (rc != ANNAL_OK)
            rc = annal__fail(db, rc, "%s", req.msg[0] ? req.msg : annal_strerror(rc));
    }
    free(m.slen);
    free(m.pres);
    free(m.conf);
    free(m.loc);
    return rc;
}
