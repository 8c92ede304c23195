/* Compaction (placeholder). */
#include "store/db_int.h"
annal_err annal_compact(annal_db *db, uint64_t bytes_per_s, annal_compact_stats *stats) {
    (void)bytes_per_s;
    (void)stats;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
