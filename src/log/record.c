/* Encoding and strict decoding of segment headers and event records. Little-endian,
 * 8-byte aligned; every record is covered by a CRC32C of all its bytes after the CRC. */
#include <string.h>

#include "base/base.h"
#include "log/record.h"

void annal__seg_hdr_encode(const annal__seg_hdr *h, uint8_t out[ANNAL__SEG_HDR]) {
    memset(out, 0, ANNAL__SEG_HDR);
    memcpy(out, ANNAL__SEG_MAGIC, 8);
    annal__put32(out + 8, h->format);
    annal__put32(out + 12, ANNAL__SEG_HDR);
    annal__put64(out + 16, h->segno);
    annal__put64(out + 24, h->first_pos);
    annal__put64(out + 32, h->capacity);
    annal__put64(out + 40, (uint64_t)h->created_ns);
    annal__put32(out + 48, h->gen);
    annal__put32(out + 60, annal__crc32c(0, out, 60));
}

annal_err annal__seg_hdr_decode(const uint8_t *p, size_t avail, annal__seg_hdr *h) {
    if (avail < ANNAL__SEG_HDR || memcmp(p, ANNAL__SEG_MAGIC, 8) != 0) return ANNAL_ECORRUPT;
    if (annal__get32(p + 60) != annal__crc32c(0, p, 60)) return ANNAL_ECORRUPT;
    h->format = annal__get32(p + 8);
    if (h->format != ANNAL__FORMAT) return ANNAL_EVERSION;
    if (annal__get32(p + 12) != ANNAL__SEG_HDR) return ANNAL_ECORRUPT;
    h->segno = annal__get64(p + 16);
    h->first_pos = annal__get64(p + 24);
    h->capacity = annal__get64(p + 32);
    h->created_ns = (int64_t)annal__get64(p + 40);
    h->gen = annal__get32(p + 48);
    if (h->capacity < 4096 || h->capacity > ((uint64_t)1 << 32)) return ANNAL_ECORRUPT;
    return ANNAL_OK;
}

uint32_t annal__rec_encode(const annal_event *ev, uint32_t batch_index, uint32_t batch_count,
                           uint64_t group, uint8_t *out) {
    return annal__rec_encode_flags(ev, batch_index, batch_count, group, 0, out);
}

uint32_t annal__rec_encode_flags(const annal_event *ev, uint32_t batch_index, uint32_t batch_count,
                                 uint64_t group, uint32_t flags, uint8_t *out) {
    uint32_t len = (uint32_t)annal__rec_size_tags(ev->stream_len, ev->type_len, ev->data_len,
                                                  ev->metadata_len, ev->tags_len);
    annal__put32(out + 4, len);
    annal__put64(out + 8, ev->position);
    annal__put64(out + 16, ev->revision);
    annal__put64(out + 24, (uint64_t)ev->timestamp_ns);
    memcpy(out + 32, ev->id.bytes, 16);
    annal__put32(out + 48, batch_index);
    annal__put32(out + 52, batch_count);
    annal__put16(out + 56, (uint16_t)ev->stream_len);
    annal__put16(out + 58, (uint16_t)ev->type_len);
    annal__put32(out + 60,
                 ANNAL__REC_EVENT | flags | (uint32_t)ev->tags_len << ANNAL__REC_TAGS_SHIFT);
    annal__put32(out + 64, (uint32_t)ev->data_len);
    annal__put32(out + 68, (uint32_t)ev->metadata_len);
    annal__put64(out + 72, group);
    uint8_t *q = out + ANNAL__REC_HDR;
    memcpy(q, ev->stream, ev->stream_len);
    q += ev->stream_len;
    *q++ = 0;
    memcpy(q, ev->type, ev->type_len);
    q += ev->type_len;
    *q++ = 0;
    if (ev->data_len) memcpy(q, ev->data, ev->data_len);
    q += ev->data_len;
    if (ev->metadata_len) memcpy(q, ev->metadata, ev->metadata_len);
    q += ev->metadata_len;
    if (ev->tags_len) memcpy(q, ev->tags, ev->tags_len);
    q += ev->tags_len;
    memset(q, 0, (size_t)(out + len - q));
    annal__put32(out, annal__crc32c(0, out + 4, len - 4));
    return len;
}

void annal__hole_encode(uint64_t pos, uint64_t count, uint8_t out[ANNAL__REC_HDR]) {
    memset(out, 0, ANNAL__REC_HDR);
    annal__put32(out + 4, ANNAL__REC_HDR);
    annal__put64(out + 8, pos);
    annal__put64(out + 16, count);
    annal__put32(out + 52, 1); /* a batch of its own */
    annal__put32(out + 60, ANNAL__REC_HOLE);
    annal__put64(out + 72, pos);
    annal__put32(out, annal__crc32c(0, out + 4, ANNAL__REC_HDR - 4));
}

/* The rest of a hole: every field but position, count, framing and kind is zero. */
static annal_err hole_decode(const uint8_t *p, uint32_t len, annal_event *ev,
                             annal__rec_info *info) {
    if (len != ANNAL__REC_HDR || info->batch_index != 0 || info->batch_count != 1)
        return ANNAL_ECORRUPT;
    for (size_t i = 24; i < 48; i++)
        if (p[i]) return ANNAL_ECORRUPT;
    for (size_t i = 56; i < 60; i++)
        if (p[i]) return ANNAL_ECORRUPT;
    if (annal__get64(p + 64) != 0) return ANNAL_ECORRUPT;
    memset(ev, 0, sizeof *ev);
    ev->position = annal__get64(p + 8);
    ev->revision = annal__get64(p + 16);
    if (ev->revision == 0 || info->group != ev->position) return ANNAL_ECORRUPT;
    return ANNAL_OK;
}

int annal__tags_check(const uint8_t *g, size_t len, size_t *ntags) {
    size_t n = 0, start = 0;
    if (len < 2 || g[len - 1] != 0) return -1;
    for (size_t i = 0; i < len; i++) {
        if (g[i] != 0) continue;
        if (i == start || i - start > ANNAL_MAX_TAG_BYTES) return -1; /* empty or too long */
        n++;
        start = i + 1;
    }
    if (n > ANNAL_MAX_TAGS) return -1;
    *ntags = n;
    return 0;
}

annal_err annal__rec_decode(const uint8_t *p, size_t avail, annal_event *ev,
                            annal__rec_info *info) {
    return annal__rec_decode2(p, avail, ev, info, 1);
}

annal_err annal__rec_decode2(const uint8_t *p, size_t avail, annal_event *ev, annal__rec_info *info,
                             int check) {
    if (avail < 8) {
        for (size_t i = 0; i < avail; i++)
            if (p[i]) return ANNAL_ECORRUPT;
        return ANNAL_END;
    }
    uint32_t crc = annal__get32(p), len = annal__get32(p + 4);
    if (crc == 0 && len == 0) return ANNAL_END;
    if (len < ANNAL__REC_HDR || (len & 7) || len > avail) return ANNAL_ECORRUPT;
    if (check && annal__crc32c(0, p + 4, len - 4) != crc) return ANNAL_ECORRUPT;
    info->len = len;
    info->batch_index = annal__get32(p + 48);
    info->batch_count = annal__get32(p + 52);
    info->kind = annal__get32(p + 60);
    info->group = annal__get64(p + 72);
    info->multi = 0;
    uint64_t gl = info->kind >> ANNAL__REC_TAGS_SHIFT; /* tags section */
    info->kind &= (1u << ANNAL__REC_TAGS_SHIFT) - 1;
    if (info->kind == (ANNAL__REC_EVENT | ANNAL__REC_MULTI)) {
        info->kind = ANNAL__REC_EVENT;
        info->multi = 1;
    }
    if (info->kind == ANNAL__REC_HOLE && gl == 0) return hole_decode(p, len, ev, info);
    if (info->kind != ANNAL__REC_EVENT || info->batch_count == 0 ||
        info->batch_index >= info->batch_count)
        return ANNAL_ECORRUPT;
    uint64_t sl = annal__get16(p + 56), tl = annal__get16(p + 58);
    uint64_t dl = annal__get32(p + 64), ml = annal__get32(p + 68);
    if (sl == 0 || tl == 0 || annal__rec_size_tags(sl, tl, dl, ml, gl) != len)
        return ANNAL_ECORRUPT;
    if (info->group > annal__get64(p + 8)) return ANNAL_ECORRUPT; /* a flush starts at or before */
    const uint8_t *q = p + ANNAL__REC_HDR;
    if (q[sl] != 0 || q[sl + 1 + tl] != 0) return ANNAL_ECORRUPT;
    const uint8_t *g = q + sl + 1 + tl + 1 + dl + ml;
    size_t ntags = 0;
    if (gl && annal__tags_check(g, gl, &ntags) != 0) return ANNAL_ECORRUPT;
    for (const uint8_t *z = g + gl; z < p + len; z++)
        if (*z) return ANNAL_ECORRUPT; /* padding is zero: one encoding per record */
    ev->position = annal__get64(p + 8);
    ev->revision = annal__get64(p + 16);
    ev->timestamp_ns = (int64_t)annal__get64(p + 24);
    memcpy(ev->id.bytes, p + 32, 16);
    ev->stream = (const char *)q;
    ev->stream_len = sl;
    ev->type = (const char *)q + sl + 1;
    ev->type_len = tl;
    ev->data = q + sl + 1 + tl + 1;
    ev->data_len = dl;
    ev->metadata = q + sl + 1 + tl + 1 + dl;
    ev->metadata_len = ml;
    ev->tags = gl ? (const char *)g : NULL;
    ev->tags_len = gl;
    ev->ntags = ntags;
    return ANNAL_OK;
}
