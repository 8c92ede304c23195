/* Fuzz target: a Streams.BatchAppend request as the server decodes it: correlation id,
 * options (stream, expected position, deadlines of either kind) and proposed events. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ProtobufCMessage *m =
        fuzz_srv_unpack(&event_store__client__streams__batch_append_req__descriptor, data, size);
    if (!m) return 0;
    const EventStore__Client__Streams__BatchAppendReq *r =
        (const EventStore__Client__Streams__BatchAppendReq *)m;
    annal_uuid id;
    (void)cv_uuid_in(r->correlation_id, &id);
    (void)srv_batch_check(r, 16u << 20);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
