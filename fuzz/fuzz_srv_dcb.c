/* Fuzz target: annal's DCB requests (src/server/proto/dcb.proto) as the server decodes
 * them: an Append (events, tags, the target stream, the expected revision, the condition's
 * query), and the query of a Read or a Subscribe, matched against an event as the
 * subscription and ACL paths do. The same bytes are tried as each message type. */
#include <stdint.h>
#include <stdlib.h>

#include "dcb.pb-c.h"
#include "fuzz_srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ProtobufCMessage *m = fuzz_srv_unpack(&annal__dcb__v1__append_req__descriptor, data, size);
    if (m) {
        (void)srv_dcb_append_check((const Annal__Dcb__V1__AppendReq *)m, 16u << 20);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    m = fuzz_srv_unpack(&annal__dcb__v1__read_req__descriptor, data, size);
    if (m) {
        (void)srv_dcb_query_check(((const Annal__Dcb__V1__ReadReq *)m)->query);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    m = fuzz_srv_unpack(&annal__dcb__v1__subscribe_req__descriptor, data, size);
    if (m) {
        (void)srv_dcb_query_check(((const Annal__Dcb__V1__SubscribeReq *)m)->query);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
