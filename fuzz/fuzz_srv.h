/* fuzz_srv.h -- what the server's request fuzz targets share: unpack the bytes as the
 * server does, and pack what decoded (the server packs messages of the same types). A
 * re-unpack is not required to succeed: protobuf-c keeps unknown fields numbered 0, which
 * it then refuses, and the server never echoes a request's unknown fields. */
#ifndef ANNAL_FUZZ_SRV_H
#define ANNAL_FUZZ_SRV_H

#include <stdlib.h>

#include "server_int.h"

static inline ProtobufCMessage *fuzz_srv_unpack(const ProtobufCMessageDescriptor *d,
                                                const uint8_t *data, size_t size) {
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size, data);
    if (!m) return NULL;
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) abort();
    if (protobuf_c_message_pack(m, buf) != len) abort();
    ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, len, buf);
    if (again) protobuf_c_message_free_unpacked(again, NULL);
    free(buf);
    return m;
}

#endif /* ANNAL_FUZZ_SRV_H */
