/* Fuzz target: a Streams.Append request as the server decodes it, both as the first
 * message of a call (the options) and as a later one (a proposed event). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ProtobufCMessage *m =
        fuzz_srv_unpack(&event_store__client__streams__append_req__descriptor, data, size);
    if (!m) return 0;
    (void)srv_append_check((const EventStore__Client__Streams__AppendReq *)m, 1);
    (void)srv_append_check((const EventStore__Client__Streams__AppendReq *)m, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
