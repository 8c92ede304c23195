/* Fuzz target: a Streams.Read request as the server decodes it: protobuf-c's unpack, then
 * everything the handler checks before it touches the store (names, positions, filters
 * turned into regexes and compiled). Nothing may crash or leak. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ProtobufCMessage *m =
        fuzz_srv_unpack(&event_store__client__streams__read_req__descriptor, data, size);
    if (!m) return 0;
    (void)srv_read_check((const EventStore__Client__Streams__ReadReq *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
