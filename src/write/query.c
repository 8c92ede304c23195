/* The command side over a query (annal_handle_query): a decider whose state is folded
 * from the events matching a query instead of a stream, appended with a condition. */
#include "annal.h"
#include "write/write.h"

annal_err annal_decision_emit_tagged(annal_decision *d, const char *type, const void *data,
                                     size_t data_len, const void *metadata, size_t metadata_len,
                                     const char *const *tags, size_t ntags) {
    (void)d, (void)type, (void)data, (void)data_len, (void)metadata, (void)metadata_len, (void)tags,
        (void)ntags;
    return ANNAL_ENOTSUP;
}

annal_err annal_handle_query_sized(annal_handler *h, const annal_query *query, const void *command,
                                   const annal_command_meta *meta, annal_command_result *result,
                                   size_t result_size) {
    (void)h, (void)query, (void)command, (void)meta, (void)result, (void)result_size;
    return ANNAL_ENOTSUP;
}
