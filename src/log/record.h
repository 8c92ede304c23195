/* Byte layout of segment headers and event records (docs/format.md), with encoders and
 * strict decoders. Decoders are fed bytes that may be torn or hostile: they check every
 * length against what is available before reading it. */
#ifndef ANNAL_RECORD_H
#define ANNAL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "annal.h"
#include "base/base.h"

#define ANNAL__SEG_MAGIC "ANNALSEG"
#define ANNAL__FORMAT    1u
#define ANNAL__SEG_HDR   64u /* bytes of a segment header; records start here */
#define ANNAL__REC_HDR   80u /* bytes of a record header */
#define ANNAL__REC_EVENT 1u  /* record kind (flags & 0xff) */
#define ANNAL__REC_HOLE  2u  /* compaction erased `count` events from `position` on */
/* Flag of every record of a batch that spans streams (annal_append_multi): without it a
 * batch is one stream's, and readers that predate it refuse such records as damaged
 * rather than index them as one stream's. */
#define ANNAL__REC_MULTI 0x100u
/* Tags (DCB): bits 16..31 of the kind field hold the length G of the record's tags
 * section (its tags as NUL-terminated strings, after the metadata); 0 without tags.
 * Readers that predate tags refuse such records (unknown flag bits) as they do multi. */
#define ANNAL__REC_TAGS_SHIFT 16u
#define ANNAL__REC_TAGS_MAX   0xffffu /* bytes of a tags section */

typedef struct annal__seg_hdr {
    uint32_t format;
    uint64_t segno;
    uint64_t first_pos; /* position of the first record in the segment */
    uint64_t capacity;  /* bytes the segment may grow to */
    int64_t created_ns;
    uint32_t gen; /* 0 as written; each compaction writes the next generation */
} annal__seg_hdr;

void annal__seg_hdr_encode(const annal__seg_hdr *h, uint8_t out[ANNAL__SEG_HDR]);
/* ANNAL_OK, ANNAL_ECORRUPT (bad magic/checksum), ANNAL_EVERSION. */
annal_err annal__seg_hdr_decode(const uint8_t *p, size_t avail, annal__seg_hdr *h);

/* Batch framing carried by each record: a batch is valid only when all its records are. */
typedef struct annal__rec_info {
    uint32_t len;         /* total record bytes, multiple of 8 */
    uint32_t batch_index; /* 0 .. batch_count-1 */
    uint32_t batch_count;
    uint32_t kind;
    uint32_t multi; /* ANNAL__REC_MULTI was set: the batch may span streams */
    uint64_t group; /* position of the first record of the flush that wrote this one */
} annal__rec_info;

/* Fields of a record header at p (ANNAL__REC_HDR bytes readable), read without any
 * check, for walks that only look: its length (a multiple of 8 when sane), the event
 * id (to prefetch its lookup), and whether its checksum and length are both zero (a
 * header never written). */
static inline uint32_t annal__rec_len_at(const uint8_t *p) { return annal__get32(p + 4); }
static inline const annal_uuid *annal__rec_id_at(const uint8_t *p) {
    return (const annal_uuid *)(p + 32);
}
static inline int annal__rec_blank_at(const uint8_t *p) { return annal__get64(p) == 0; }

/* Bytes needed to encode an event with these lengths (tags_len: its tags section). */
static inline uint64_t annal__rec_size_tags(size_t stream_len, size_t type_len, size_t data_len,
                                            size_t meta_len, size_t tags_len) {
    uint64_t n = ANNAL__REC_HDR + stream_len + 1 + type_len + 1 + data_len + meta_len + tags_len;
    return (n + 7) & ~(uint64_t)7;
}
/* ... of an event without tags. */
static inline uint64_t annal__rec_size(size_t stream_len, size_t type_len, size_t data_len,
                                       size_t meta_len) {
    return annal__rec_size_tags(stream_len, type_len, data_len, meta_len, 0);
}

/* Encode ev (stream/type/data/metadata, tags, id, revision, position, timestamp) with its
 * batch framing and the first position of its flush (group) into out, which has room
 * for annal__rec_size(...) bytes. Returns the record length. */
uint32_t annal__rec_encode(const annal_event *ev, uint32_t batch_index, uint32_t batch_count,
                           uint64_t group, uint8_t *out);

/* The same with extra flags (ANNAL__REC_MULTI) in the kind field. */
uint32_t annal__rec_encode_flags(const annal_event *ev, uint32_t batch_index, uint32_t batch_count,
                                 uint64_t group, uint32_t flags, uint8_t *out);

/* A hole record (ANNAL__REC_HDR bytes) standing for count erased events from pos on. */
void annal__hole_encode(uint64_t pos, uint64_t count, uint8_t out[ANNAL__REC_HDR]);

/* Is g (len bytes) a well-formed tags section: 1..ANNAL_MAX_TAGS tags of 1..
 * ANNAL_MAX_TAG_BYTES bytes, each followed by a NUL? 0 and *ntags, or -1. */
int annal__tags_check(const uint8_t *g, size_t len, size_t *ntags);

/* Decode the record at p (avail bytes readable). On ANNAL_OK, ev points into p.
 * A hole decodes with info->kind ANNAL__REC_HOLE, ev->position its first erased
 * position and ev->revision the number of events it stands for (nothing else set).
 * Returns ANNAL_END if the bytes are all zero where a header would be (clean end of
 * data), ANNAL_ECORRUPT for anything malformed, torn or failing its checksum. */
annal_err annal__rec_decode(const uint8_t *p, size_t avail, annal_event *ev, annal__rec_info *info);
/* The same; check = 0 skips the checksum of a record already checked (recovery reads
 * each batch twice: to validate it whole, then to index it). */
annal_err annal__rec_decode2(const uint8_t *p, size_t avail, annal_event *ev, annal__rec_info *info,
                             int check);

#endif
