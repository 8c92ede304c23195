/* snapshot_test.c -- snapshot files read back as written, and damaged ones (with their
 * checksum made valid again, as a crafted or unlucky file would have) refused as
 * ANNAL_ECORRUPT without reading past the file: the handler then replays instead.
 * Meant to run under ASan too (build-asan), where an over-read is a failure. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "write/write.h"

#define DECIDER "counter"
#define STREAM  "account-1"

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* The one .snap file in dir (caller frees). */
static char *snap_file(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *path = NULL;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".snap")) {
            assert_null(path);
            size_t n = strlen(dir) + strlen(e->d_name) + 2;
            path = malloc(n);
            snprintf(path, n, "%s/%s", dir, e->d_name);
        }
    closedir(d);
    assert_non_null(path);
    return path;
}

static void write_file(const char *path, const unsigned char *img, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* img (n bytes) with its trailing CRC made valid, written at path, read back. */
static annal_err read_crafted(const char *dir, const char *path, unsigned char *img, size_t n) {
    if (n >= 4) put32(img + n - 4, annal__write_crc32c(0, img, n - 4));
    write_file(path, img, n);
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    annal_err rc = annal__write_snap_read(dir, DECIDER, STREAM, &sn);
    if (rc == ANNAL_OK) assert_true(sn.state.len <= n); /* never more than the file held */
    annal__write_buf_free(&sn.state);
    return rc;
}

static void write_good(const char *dir, const char *state) {
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    sn.state_version = 3;
    sn.revision = 41;
    sn.position = 977;
    sn.timestamp_ns = 1234567890;
    memset(sn.id.bytes, 0xab, sizeof sn.id.bytes);
    assert_int_equal(annal_buf_append(&sn.state, state, strlen(state)), ANNAL_OK);
    assert_int_equal(annal__write_snap_write(dir, DECIDER, STREAM, &sn), ANNAL_OK);
    annal__write_buf_free(&sn.state);
}

static void test_round_trip(void **state) {
    (void)state;
    char *dir = tu_tmpdir("snap-rt");
    write_good(dir, "{\"value\":15}");
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    assert_int_equal(annal__write_snap_read(dir, DECIDER, STREAM, &sn), ANNAL_OK);
    assert_int_equal(sn.state_version, 3);
    assert_int_equal(sn.revision, 41);
    assert_int_equal(sn.position, 977);
    assert_int_equal(sn.state.len, strlen("{\"value\":15}"));
    /* another stream's name hashed elsewhere: not found; same file under other names: no */
    assert_int_equal(annal__write_snap_read(dir, DECIDER, "account-2", &sn), ANNAL_ENOTFOUND);
    annal__write_buf_free(&sn.state);
    tu_rmrf(dir);
    free(dir);
}

/* The file of the issue: 76 bytes (header and CRC only), names said to be as long as the
 * caller's, and a state length that makes "size - 76 - names" wrap around to match. */
static void test_names_longer_than_file(void **state) {
    (void)state;
    char *dir = tu_tmpdir("snap-short");
    write_good(dir, "{}");
    char *path = snap_file(dir);
    unsigned char img[76];
    memset(img, 0, sizeof img);
    memcpy(img, "annalSN1", 8);
    put32(img + 8, 3);
    put32(img + 12, (uint32_t)strlen(DECIDER));
    put32(img + 16, (uint32_t)strlen(STREAM));
    put64(img + 64, (uint64_t)0 - strlen(DECIDER) - strlen(STREAM));
    assert_int_equal(read_crafted(dir, path, img, sizeof img), ANNAL_ECORRUPT);
    /* the names longer than the file, only one of them past it, and a state past it */
    unsigned char big[100];
    memset(big, 0, sizeof big);
    memcpy(big, img, 72);
    put64(big + 64, (uint64_t)sizeof big - 76 - strlen(DECIDER) - strlen(STREAM));
    assert_int_equal(read_crafted(dir, path, big, sizeof big), ANNAL_ECORRUPT); /* wrong names */
    memcpy(big + 72, DECIDER, strlen(DECIDER));
    memcpy(big + 72 + strlen(DECIDER), STREAM, strlen(STREAM));
    assert_int_equal(read_crafted(dir, path, big, sizeof big), ANNAL_OK); /* the control */
    put64(big + 64, (uint64_t)sizeof big);
    assert_int_equal(read_crafted(dir, path, big, sizeof big), ANNAL_ECORRUPT);
    put64(big + 64, UINT64_MAX);
    assert_int_equal(read_crafted(dir, path, big, sizeof big), ANNAL_ECORRUPT);
    /* shorter than a header, and empty */
    assert_int_equal(read_crafted(dir, path, big, 40), ANNAL_ECORRUPT);
    assert_int_equal(read_crafted(dir, path, big, 0), ANNAL_ECORRUPT);
    free(path);
    tu_rmrf(dir);
    free(dir);
}

/* Random damage to a good file, checksum fixed: every read is OK or ECORRUPT, never more
 * state than the file holds (and, under ASan, no byte read outside it). */
static void test_random_damage(void **state) {
    (void)state;
    char *dir = tu_tmpdir("snap-fuzz");
    write_good(dir, "{\"value\":15,\"pad\":\"abcdefghijklmnop\"}");
    char *path = snap_file(dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char good[512];
    size_t n = fread(good, 1, sizeof good, f);
    fclose(f);
    assert_true(n > 76 && n < sizeof good);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int ok = 0, bad = 0;
    for (int round = 0; round < 3000; round++) {
        unsigned char img[512];
        memcpy(img, good, n);
        size_t len = n;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        switch (x % 4) {
        case 0: len = (size_t)(x >> 8) % (n + 1); break;                          /* truncated */
        case 1: put32(img + 12 + 4 * ((x >> 8) % 2), (uint32_t)(x >> 16)); break; /* a name */
        case 2: put64(img + 64, (x >> 8) % 2 ? x >> 16 : (uint64_t)0 - ((x >> 16) % 200)); break;
        default: img[(x >> 8) % (n - 4)] ^= (unsigned char)(1u << ((x >> 16) % 8)); break;
        }
        annal_err rc = read_crafted(dir, path, img, len);
        assert_true(rc == ANNAL_OK || rc == ANNAL_ECORRUPT);
        if (rc == ANNAL_OK)
            ok++;
        else
            bad++;
    }
    assert_true(bad > 1000); /* the damage was mostly seen */
    (void)ok;
    free(path);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_names_longer_than_file),
        cmocka_unit_test(test_random_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
