/* Small shared pieces of the engine: little-endian codecs, CRC32C, UUIDs, UTF-8 checks,
 * clocks and per-thread error detail. Everything here is pure or per-handle; no globals. */
#ifndef ANNAL_BASE_H
#define ANNAL_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "annal.h"

static inline void annal__put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void annal__put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void annal__put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline uint32_t annal__get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t annal__get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint16_t annal__get16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
/* Big-endian, for LMDB keys that must sort as numbers under memcmp. */
static inline void annal__put64be(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline uint64_t annal__get64be(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* CRC32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2. crc starts at 0. */
uint32_t annal__crc32c(uint32_t crc, const void *buf, size_t len);

/* Growable structs across the ABI (annal.h's promise): the caller's struct may be smaller
 * or larger than this library's. annal__opts_out writes defaults (full, this library's
 * layout) into the caller's dst_size bytes, recording dst_size in its first field,
 * struct_size; bytes past this library's layout are zeroed. annal__opts_in reads the
 * caller's struct into full (already holding defaults): only the bytes within its
 * struct_size; 0 when struct_size does not cover min_size bytes (not initialized).
 * annal__out_copy fills a caller's result of dst_size bytes, never past it. */
static inline void annal__opts_out(void *dst, size_t dst_size, void *full, size_t full_size) {
    if (!dst || dst_size < sizeof(size_t)) return;
    memcpy(full, &dst_size, sizeof dst_size);
    memcpy(dst, full, dst_size < full_size ? dst_size : full_size);
    if (dst_size > full_size) memset((char *)dst + full_size, 0, dst_size - full_size);
}
static inline int annal__opts_in(void *full, size_t full_size, const void *in, size_t min_size) {
    size_t n;
    memcpy(&n, in, sizeof n);
    if (n < min_size) return 0;
    memcpy(full, in, n < full_size ? n : full_size);
    memcpy(full, &full_size, sizeof full_size);
    return 1;
}
static inline void annal__out_copy(void *dst, size_t dst_size, const void *src, size_t src_size) {
    if (dst) memcpy(dst, src, dst_size < src_size ? dst_size : src_size);
}

/* 1 if s[0..len) is valid UTF-8 without NUL bytes. */
int annal__utf8_valid(const char *s, size_t len);

/* Wall clock, ns since the Unix epoch. */
int64_t annal__now_ns(void);
/* Monotonic clock in ns. */
int64_t annal__mono_ns(void);

/* UUIDv7 from a millisecond timestamp and 74 random bits taken from a per-handle
 * generator state (splitmix64, seeded from getrandom). */
void annal__uuid_v7(annal_uuid *out, int64_t ms, uint64_t *rng);
uint64_t annal__rng_next(uint64_t *state);
uint64_t annal__rng_seed(void);
int annal__uuid_is_nil(const annal_uuid *id);

#endif
