/* Fuzz target: the record and segment-header decoders, fed arbitrary bytes. Invariant:
 * a record that decodes re-encodes to the same bytes (nothing unchecked slips through).
 * Each input is decoded twice: as given (the checksums guard the decoder), and with every
 * CRC recomputed over the mutated bytes, so that mutations reach the field checks behind
 * the checksum instead of stopping at it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/record.h"

/* Rewrite the CRC of the header (if the input starts like one) and of each record in the
 * chain of lengths, as a writer would have computed it. */
static void fix_crcs(uint8_t *p, size_t size) {
    size_t off = 0;
    if (size >= ANNAL__SEG_HDR && memcmp(p, ANNAL__SEG_MAGIC, 8) == 0) {
        annal__put32(p + 60, annal__crc32c(0, p, 60));
        off = ANNAL__SEG_HDR;
    }
    while (off + ANNAL__REC_HDR <= size) {
        uint32_t len = annal__get32(p + off + 4);
        if (len < ANNAL__REC_HDR || (len & 7) || len > size - off) break;
        annal__put32(p + off, annal__crc32c(0, p + off + 4, len - 4));
        off += len;
    }
}

static void decode_all(const uint8_t *data, size_t size) {
    annal__seg_hdr h, h2;
    size_t off = 0;
    if (annal__seg_hdr_decode(data, size, &h) == ANNAL_OK) {
        off = ANNAL__SEG_HDR; /* then records, as in a segment file */
        uint8_t hb[ANNAL__SEG_HDR];
        annal__seg_hdr_encode(&h, hb);
        if (annal__seg_hdr_decode(hb, sizeof hb, &h2) != ANNAL_OK || h.format != h2.format ||
            h.segno != h2.segno || h.first_pos != h2.first_pos || h.capacity != h2.capacity ||
            h.created_ns != h2.created_ns || h.gen != h2.gen)
            abort();
    }
    annal_event ev;
    annal__rec_info info;
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    decode_all(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed) abort();
    if (size) memcpy(fixed, data, size);
    fix_crcs(fixed, size);
    decode_all(fixed, size);
    free(fixed);
    return 0;
}
