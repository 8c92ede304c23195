/* Unit tests of the record and segment-header codecs (src/log/record.c): round trips,
 * and rejection of every kind of torn or altered record. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/record.h"
#include "testutil.h"

static uint32_t encode(uint8_t *buf, const char *stream, const char *type, const char *data,
                       const char *meta, uint32_t bi, uint32_t bc) {
    annal_event ev;
    memset(&ev, 0, sizeof ev);
    for (int i = 0; i < 16; i++) ev.id.bytes[i] = (uint8_t)(i * 7 + 1);
    ev.stream = stream;
    ev.stream_len = strlen(stream);
    ev.type = type;
    ev.type_len = strlen(type);
    ev.data = data;
    ev.data_len = strlen(data);
    ev.metadata = meta;
    ev.metadata_len = strlen(meta);
    ev.revision = 41;
    ev.position = 1234567;
    ev.timestamp_ns = 1700000000123456789LL;
    return annal__rec_encode(&ev, bi, bc, ev.position - 3, buf);
}

static void round_trip(void **state) {
    (void)state;
    uint8_t buf[512];
    uint32_t len =
        encode(buf, "order-1", "OrderPlaced", "{\"amount\":200}", "{\"user\":\"ann\"}", 1, 3);
    assert_int_equal(len, annal__rec_size(7, 11, 14, 14));
    assert_int_equal(len % 8, 0);
    annal_event ev;
    annal__rec_info info;
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_OK);
    assert_string_equal(ev.stream, "order-1");
    assert_string_equal(ev.type, "OrderPlaced");
    assert_int_equal(ev.data_len, 14);
    assert_memory_equal(ev.data, "{\"amount\":200}", 14);
    assert_memory_equal(ev.metadata, "{\"user\":\"ann\"}", 14);
    assert_int_equal(ev.revision, 41);
    assert_int_equal(ev.position, 1234567);
    assert_int_equal(ev.timestamp_ns, 1700000000123456789LL);
    assert_int_equal(ev.id.bytes[15], 15 * 7 + 1);
    assert_int_equal(info.batch_index, 1);
    assert_int_equal(info.batch_count, 3);
    assert_int_equal(info.len, len);
    assert_int_equal(info.group, 1234567 - 3);
}

static void every_flipped_bit_is_caught(void **state) {
    (void)state;
    uint8_t buf[256], copy[256];
    uint32_t len = encode(buf, "s", "T", "{}", "", 0, 1);
    for (uint32_t byte = 0; byte < len; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, buf, len);
            copy[byte] ^= (uint8_t)(1u << bit);
            annal_event ev;
            annal__rec_info info;
            annal_err rc = annal__rec_decode(copy, len, &ev, &info);
            if (rc == ANNAL_OK) fail_msg("flip of byte %u bit %d not detected", byte, bit);
        }
    }
}

static void torn_and_zero(void **state) {
    (void)state;
    uint8_t buf[256];
    uint32_t len = encode(buf, "stream-x", "Type", "0123456789", "m", 0, 1);
    annal_event ev;
    annal__rec_info info;
    for (uint32_t cut = 0; cut < len; cut++) /* shorter than the record: never valid */
        assert_int_not_equal(annal__rec_decode(buf, cut, &ev, &info), ANNAL_OK);
    uint8_t zeros[128] = {0};
    assert_int_equal(annal__rec_decode(zeros, sizeof zeros, &ev, &info), ANNAL_END);
    assert_int_equal(annal__rec_decode(zeros, 3, &ev, &info), ANNAL_END);
    /* a torn write that zeroed the middle of the record */
    memset(buf + 40, 0, 16);
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_ECORRUPT);
}

static void bad_framing(void **state) {
    (void)state;
    uint8_t buf[256];
    annal_event ev;
    annal__rec_info info;
    /* batch index beyond count, re-checksummed so only framing is wrong */
    uint32_t len = encode(buf, "s", "T", "x", "", 5, 2);
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_ECORRUPT);
    len = encode(buf, "s", "T", "x", "", 0, 1);
    annal__put64(buf + 72, 1234568); /* a flush starting after the record */
    annal__put32(buf, annal__crc32c(0, buf + 4, len - 4));
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_ECORRUPT);
    len = encode(buf, "s", "T", "x", "", 0, 1);
    annal__put32(buf + 64, 1000); /* data length past the record */
    annal__put32(buf, annal__crc32c(0, buf + 4, len - 4));
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_ECORRUPT);
    len = encode(buf, "s", "T", "x", "", 0, 1);
    annal__put32(buf + 4, 12); /* record length below the header size */
    assert_int_equal(annal__rec_decode(buf, len, &ev, &info), ANNAL_ECORRUPT);
}

static void segment_header(void **state) {
    (void)state;
    annal__seg_hdr h = {ANNAL__FORMAT, 7, 123456, 1 << 20, 99, 3}, g;
    uint8_t b[ANNAL__SEG_HDR];
    annal__seg_hdr_encode(&h, b);
    assert_int_equal(annal__seg_hdr_decode(b, sizeof b, &g), ANNAL_OK);
    assert_int_equal(g.segno, 7);
    assert_int_equal(g.first_pos, 123456);
    assert_int_equal(g.capacity, 1 << 20);
    assert_int_equal(annal__seg_hdr_decode(b, 10, &g), ANNAL_ECORRUPT);
    b[20] ^= 1;
    assert_int_equal(annal__seg_hdr_decode(b, sizeof b, &g), ANNAL_ECORRUPT);
    h.format = 99;
    annal__seg_hdr_encode(&h, b);
    assert_int_equal(annal__seg_hdr_decode(b, sizeof b, &g), ANNAL_EVERSION);
}

static void crc32c_known_values(void **state) {
    (void)state;
    /* RFC 3720 test vectors */
    uint8_t z[32] = {0}, o[32];
    memset(o, 0xff, sizeof o);
    assert_int_equal(annal__crc32c(0, z, 32), 0x8A9136AA);
    assert_int_equal(annal__crc32c(0, o, 32), 0x62A8AB43);
    assert_int_equal(annal__crc32c(0, "123456789", 9), 0xE3069283);
    /* incremental == whole */
    assert_int_equal(annal__crc32c(annal__crc32c(0, "12345", 5), "6789", 4), 0xE3069283);
}

static void utf8(void **state) {
    (void)state;
    assert_true(annal__utf8_valid("order-1", 7));
    assert_true(annal__utf8_valid("주문-1", strlen("주문-1")));
    assert_false(annal__utf8_valid("a\xff", 2));
    assert_false(annal__utf8_valid("\xc0\xaf", 2));     /* overlong */
    assert_false(annal__utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    assert_false(annal__utf8_valid("a\0b", 3));
    assert_false(annal__utf8_valid("\xe2\x82", 2)); /* truncated */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),     cmocka_unit_test(every_flipped_bit_is_caught),
        cmocka_unit_test(torn_and_zero),  cmocka_unit_test(bad_framing),
        cmocka_unit_test(segment_header), cmocka_unit_test(crc32c_known_values),
        cmocka_unit_test(utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
