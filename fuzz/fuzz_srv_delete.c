/* Fuzz target: Streams.Delete and Streams.Tombstone requests as the server decodes them
 * (the same bytes tried as both). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char name[ANNAL_MAX_NAME + 1];
    int64_t expected;
    ProtobufCMessage *m =
        fuzz_srv_unpack(&event_store__client__streams__delete_req__descriptor, data, size);
    if (m) {
        (void)srv_delete_parse((const EventStore__Client__Streams__DeleteReq *)m, name, &expected);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    m = fuzz_srv_unpack(&event_store__client__streams__tombstone_req__descriptor, data, size);
    if (m) {
        (void)srv_tombstone_parse((const EventStore__Client__Streams__TombstoneReq *)m, name,
                                  &expected);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
