/* Fuzz target: KurrentDB's v2 append requests as the server decodes them (v2.c): the
 * first byte picks an AppendRequest of a session or an AppendRecordsRequest, the rest is
 * the message: streams, expected revisions, record ids, schemas, property values (nested
 * google.protobuf.Values turned into JSON metadata) and consistency checks. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_srv.h"
#include "v2streams.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int records = data[0] & 1;
    const ProtobufCMessageDescriptor *d =
        records ? &kurrentdb__protocol__v2__streams__append_records_request__descriptor
                : &kurrentdb__protocol__v2__streams__append_request__descriptor;
    ProtobufCMessage *m = fuzz_srv_unpack(d, data + 1, size - 1);
    if (!m) return 0;
    (void)srv_v2_check(m, records, 1u << 20);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
