/* The server's quick JSON check (src/server/jsonfast.c) against jansson, the parser it
 * stands in for: whatever it calls JSON, jansson accepts with the same flags; typical
 * event data takes the quick path; and over many mutations of JSON texts it never says
 * yes where jansson says no. */
#include "testutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/server/jsonfast.c"

static int jansson_ok(const char *s, size_t n) {
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY, NULL);
    json_decref(j);
    return j != NULL;
}

static void test_plain_yes(void **state) {
    (void)state;
    const char *yes[] = {"{}",
                         "[]",
                         " {\"a\": 1} ",
                         "{\"order\":\"o-1\",\"amount\":12.5,\"ok\":true,\"n\":null}",
                         "[1,-2,0,0.5,\"x\\n\\\"y\\\\\",false,[[{}]]]",
                         "\"text\"",
                         "42",
                         "-0.25",
                         "true",
                         "{\"a\":{\"b\":{\"c\":[1,2,3]}},\"d\":\"e/\\/f\"}",
                         "123456789012345"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        assert_int_equal(jsonfast_plain(yes[i], strlen(yes[i])), 1);
        assert_true(jansson_ok(yes[i], strlen(yes[i])));
    }
}

static void test_unsure(void **state) {
    (void)state;
    /* Not JSON, or JSON outside the plain subset: jansson decides. */
    const char *no[] = {"",         "{",          "{\"a\"}",     "[1,]",        "{\"a\":1,}",
                        "01",       "1.",         "1e5",         "\"\\u00e9\"", "\"caf\xc3\xa9\"",
                        "tru",      "nul",        "[] []",       "{'a':1}",     "1234567890123456",
                        "\"a\tb\"", "plain text", "{\"a\":1} x", "-",           "\"\\x\""};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_int_equal(jsonfast_plain(no[i], strlen(no[i])), -1);
    char deep[80];
    memset(deep, '[', 40);
    memset(deep + 40, ']', 40);
    assert_int_equal(jsonfast_plain(deep, sizeof deep), -1); /* deeper than 32 */
    assert_int_equal(jsonfast_plain(NULL, 0), -1);
}

/* Mutations: flip, drop or insert one byte of valid texts; a yes must be jansson's yes. */
static void test_never_wrong(void **state) {
    (void)state;
    const char *seeds[] = {"{\"order\":\"o-000000000001\",\"amount\":7919,\"currency\":\"EUR\"}",
                           "[1,2.5,-3,true,false,null,\"s\\\"t\",{\"k\":[{}]}]"};
    const char alphabet[] = "{}[]\":,.-+eE0123456789 \\/tfnulrsa\x01\x80";
    unsigned seed = 12345;
    int yes = 0;
    for (int round = 0; round < 200000; round++) {
        const char *src = seeds[round % 2];
        char buf[128];
        size_t n = strlen(src);
        memcpy(buf, src, n);
        for (int k = 0; k < 1 + round % 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % n;
            char c = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
            switch ((seed >> 4) % 3) {
            case 0: buf[at] = c; break;
            case 1: memmove(buf + at, buf + at + 1, n - at - 1), n--; break;
            default:
                if (n + 1 < sizeof buf) memmove(buf + at + 1, buf + at, n - at), buf[at] = c, n++;
            }
        }
        if (jsonfast_plain(buf, n) == 1) {
            yes++;
            if (!jansson_ok(buf, n)) fail_msg("quick yes, jansson no: %.*s", (int)n, buf);
        }
    }
    assert_true(yes > 1000); /* the mutations do reach valid texts */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_yes),
        cmocka_unit_test(test_unsure),
        cmocka_unit_test(test_never_wrong),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
