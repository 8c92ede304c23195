/* Stream metadata and deletion (placeholder). */
#include "store/db_int.h"
annal_err annal_stream_meta_set(annal_db *db, const char *stream, int64_t expected,
                                const char *json, size_t json_len, annal_append_result *result) {
    (void)stream;
    (void)expected;
    (void)json;
    (void)json_len;
    (void)result;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
annal_err annal_stream_meta_get(annal_db *db, const char *stream, char **json, int64_t *revision) {
    (void)stream;
    (void)json;
    (void)revision;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
annal_err annal_stream_delete(annal_db *db, const char *stream, int64_t expected, unsigned flags,
                              annal_append_result *result) {
    (void)stream;
    (void)expected;
    (void)flags;
    (void)result;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
annal_err annal_read_category(annal_db *db, const char *category, uint64_t from, unsigned flags,
                              uint64_t limit, annal_iter **out) {
    (void)category;
    (void)from;
    (void)flags;
    (void)limit;
    (void)out;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
annal_err annal_read_type(annal_db *db, const char *type, uint64_t from, unsigned flags,
                          uint64_t limit, annal_iter **out) {
    (void)type;
    (void)from;
    (void)flags;
    (void)limit;
    (void)out;
    return annal__fail(db, ANNAL_EINVAL, "not implemented yet");
}
