/*
 * seal.c -- annal_seal: end the segment being appended to and go on in a new one, the
 * same roll an append makes when a batch does not fit. Compaction rewrites only sealed
 * segments, so a small store needs this to erase its deleted events now.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

#define SEAL_STREAM "$seals"
#define SEAL_TYPE   "$SegmentSealed"

/* Does the active segment hold nothing, or only the marker of the last seal? Then
 * sealing again would only make an empty segment. (Leader only.) */
static int nothing_to_seal(annal_db *db) {
    if (db->woff <= ANNAL__SEG_HDR) return 1;
    annal_event ev;
    annal__rec_info info;
    if (annal__log_read_at(&db->log, ANNAL__SEG_LOC(db->wseg, ANNAL__SEG_HDR), UINT64_MAX, &ev,
                           &info) != ANNAL_OK)
        return 0;
    return db->woff == ANNAL__SEG_HDR + info.len && ev.stream_len == strlen(SEAL_STREAM) &&
           memcmp(ev.stream, SEAL_STREAM, ev.stream_len) == 0;
}

annal_err annal_seal(annal_db *db) {
    if (!db) return ANNAL_EINVAL;
    if (db->readonly) return annal__fail(db, ANNAL_EREADONLY, "the store is open read-only");
    /* Take the writer's role as annal_db_sync does: no group writes while we roll. */
    pthread_mutex_lock(&db->wmu);
    db->sync_waiting++;
    while (db->leader) pthread_cond_wait(&db->wcv, &db->wmu);
    db->sync_waiting--;
    db->leader = 1;
    pthread_mutex_unlock(&db->wmu);

    annal_err rc = ANNAL_OK;
    int rolled = 0;
    uint64_t sealed_no = db->wseg->no;
    if (db->failed != ANNAL_OK) {
        rc = annal__fail(db, ANNAL_EFAILED, "%s", db->failed_msg);
    } else if (!nothing_to_seal(db)) {
        /* Every group flushed its bytes before it was acknowledged, so the old segment
         * is whole on disk; the new one is made durable with its directory entry. */
        annal__seg *ns = NULL;
        int r = annal__log_add(&db->log, db->wseg->no + 1, db->head.next_pos,
                               db->opts.segment_bytes, &ns);
        if (r < 0) {
            rc = annal__fail(db, r == -ENOSPC ? ANNAL_ENOSPC : ANNAL_EIO,
                             "cannot start a new segment: %s", strerror(-r));
        } else {
            db->wseg = ns;
            db->woff = ANNAL__SEG_HDR;
            rolled = 1;
        }
    }

    pthread_mutex_lock(&db->wmu);
    annal__req *next = annal__hand_over(db); /* appends queued meanwhile */
    pthread_mutex_unlock(&db->wmu);
    annal__lead_wake(next);
    if (!rolled) return rc;

    /* The index head names the store's last record, and compaction (which never touches
     * the active segment) relies on that record staying where it is. An empty active
     * segment would leave it in the sealed one: a marker event in the system stream
     * $seals opens the new segment instead (unless another append got there first). A
     * crash before the marker leaves an empty last segment, as an append's roll can. */
    char data[64];
    int n = snprintf(data, sizeof data, "{\"segment\":%" PRIu64 "}", sealed_no);
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = SEAL_TYPE;
    ev.data = data;
    ev.data_len = (size_t)n;
    annal__guard guard = {SEAL_STREAM, strlen(SEAL_STREAM), ANNAL_EXPECT_ANY, 0, 0};
    return annal__append(db, SEAL_STREAM, ANNAL_EXPECT_ANY, &ev, 1, NULL, &guard);
}
