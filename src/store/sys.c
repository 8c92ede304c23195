/*
 * sys.c -- annal_append_system: appends to system (`$`-prefixed) streams for trusted
 * embedders, such as a server acting for an administrator (KurrentDB keeps users in
 * `$user-<name>` and `$users`, default ACLs in `$settings`). The store's own streams and
 * event types stay reserved: metadata goes through annal_stream_meta_set, deletion
 * through annal_stream_delete.
 */
#include <string.h>

#include "base/base.h"
#include "store/db_int.h"

annal_err annal_append_system_sized(annal_db *db, const char *stream, int64_t expected,
                                    annal_event_data *events, size_t n, annal_append_result *result,
                                    size_t result_size) {
    if (!db || !stream) return ANNAL_EINVAL;
    if (stream[0] != '$')
        return annal_append_sized(db, stream, expected, events, n, result, result_size);
    size_t len;
    if (!annal__name_ok(stream, &len) || len > ANNAL_MAX_STREAM_NAME)
        return annal__fail(db, ANNAL_EINVAL, "invalid system stream name: must be 2..%d bytes",
                           ANNAL_MAX_STREAM_NAME);
    if (len < 2 || stream[1] == '$' || strcmp(stream, "$all") == 0 ||
        strncmp(stream, "$ce-", 4) == 0 || strncmp(stream, "$et-", 4) == 0 ||
        strcmp(stream, "$seals") == 0 || strcmp(stream, ANNAL_DCB_STREAM) == 0)
        return annal__fail(db, ANNAL_EINVAL,
                           "%s is the store's own stream (metadata streams `$$...`, `$all`, "
                           "`$ce-`, `$et-`, `$seals`, `$dcb` are not appended to)",
                           stream);
    for (size_t i = 0; i < n && events; i++)
        if (events[i].type && (strcmp(events[i].type, "$streamDeleted") == 0 ||
                               strcmp(events[i].type, "$metadata") == 0))
            return annal__fail(db, ANNAL_EINVAL,
                               "event %zu: type %s is reserved for the store (use "
                               "annal_stream_delete / annal_stream_meta_set)",
                               i, events[i].type);
    /* A guard marks the append as the store's own, which lets the `$` name through; on
     * the stream itself with no expectation it adds only the tombstone check. */
    annal__guard guard = {stream, len, ANNAL_EXPECT_ANY, 0, 0};
    annal_append_result r = {0};
    annal_err rc = annal__append(db, stream, expected, events, n, result ? &r : NULL, &guard);
    annal__out_copy(result, result_size, &r, sizeof r);
    return rc;
}
