/* Fuzz target: the record and segment-header decoders, fed arbitrary bytes. Invariant:
 * a record that decodes re-encodes to the same bytes (nothing unchecked slips through). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    annal__seg_hdr h, h2;
    if (annal__seg_hdr_decode(data, size, &h) == ANNAL_OK) {
        uint8_t hb[ANNAL__SEG_HDR];
        annal__seg_hdr_encode(&h, hb);
        if (annal__seg_hdr_decode(hb, sizeof hb, &h2) != ANNAL_OK || h.format != h2.format ||
            h.segno != h2.segno || h.first_pos != h2.first_pos || h.capacity != h2.capacity ||
            h.created_ns != h2.created_ns || h.gen != h2.gen)
            abort();
    }
    annal_event ev;
    annal__rec_info info;
    size_t off = 0;
    while (off < size) {
        annal_err rc = annal__rec_decode(data + off, size - off, &ev, &info);
        if (rc != ANNAL_OK) break;
        if (info.len > size - off || info.len % 8) abort();
        uint8_t *buf = malloc(info.len);
        if (!buf) abort();
        uint32_t len = ANNAL__REC_HDR;
        if (info.kind == ANNAL__REC_HOLE)
            annal__hole_encode(ev.position, ev.revision, buf);
        else
            len = annal__rec_encode(&ev, info.batch_index, info.batch_count, info.group, buf);
        if (len != info.len || memcmp(buf, data + off, len) != 0) abort();
        free(buf);
        off += info.len;
    }
    return 0;
}
