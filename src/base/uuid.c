/* UUID text codec and UUIDv7 generation (RFC 9562). v7 ids sort by creation time, so
 * store-made ids land near each other in the id index. */
#include <sys/random.h>
#include <time.h>

#include "base.h"

void annal_uuid_format(const annal_uuid *id, char out[37]) {
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[id->bytes[i] >> 4];
        out[o++] = hex[id->bytes[i] & 15];
    }
    out[o] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

annal_err annal_uuid_parse(const char *text, annal_uuid *out) {
    if (!text || !out) return ANNAL_EINVAL;
    int b = 0;
    for (int i = 0; i < 36; i++) {
        char c = text[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return ANNAL_EINVAL;
            continue;
        }
        int h = hexval(c), l = h < 0 ? -1 : hexval(text[i + 1]);
        if (h < 0 || l < 0) return ANNAL_EINVAL;
        out->bytes[b++] = (uint8_t)(h << 4 | l);
        i++;
    }
    return text[36] == 0 ? ANNAL_OK : ANNAL_EINVAL;
}

int annal__uuid_is_nil(const annal_uuid *id) {
    for (int i = 0; i < 16; i++)
        if (id->bytes[i]) return 0;
    return 1;
}

uint64_t annal__rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t annal__rng_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
    }
    return s;
}

void annal__uuid_v7(annal_uuid *out, int64_t ms, uint64_t *rng) {
    uint64_t a = annal__rng_next(rng), b = annal__rng_next(rng);
    uint8_t *p = out->bytes;
    for (int i = 0; i < 6; i++) p[i] = (uint8_t)((uint64_t)ms >> (40 - 8 * i));
    p[6] = (uint8_t)(0x70 | (a & 0x0f));
    p[7] = (uint8_t)(a >> 8);
    p[8] = (uint8_t)(0x80 | ((a >> 16) & 0x3f));
    for (int i = 9; i < 16; i++) p[i] = (uint8_t)(b >> (8 * (i - 9)));
}
