/* annal_append_system (src/store/sys.c): trusted embedders write `$` streams, with
 * annal_append's expected revisions and durability, while the store's own streams and
 * event types stay reserved and annal_append still refuses `$` names. */
#include <stdlib.h>
#include <string.h>

#include "store/db_int.h"
#include "testutil.h"

static annal_event_data one(const char *type, const char *data) {
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.data = data;
    e.data_len = strlen(data);
    return e;
}

static void test_system_streams(void **state) {
    (void)state;
    char *dir = tu_tmpdir("sys");
    annal_db *db = tu_open(dir, 0);
    annal_event_data e = one("$user", "{\"loginName\":\"a\"}");
    annal_append_result r;
    /* the public annal_append keeps refusing '$' names */
    assert_int_equal(annal_append(db, "$user-a", ANNAL_EXPECT_ANY, &e, 1, &r), ANNAL_EINVAL);
    memset(&e.id, 0, sizeof e.id);
    assert_int_equal(annal_append_system(db, "$user-a", ANNAL_EXPECT_NO_STREAM, &e, 1, &r),
                     ANNAL_OK);
    assert_int_equal(r.revision, 0);
    memset(&e.id, 0, sizeof e.id);
    assert_int_equal(annal_append_system(db, "$user-a", ANNAL_EXPECT_NO_STREAM, &e, 1, &r),
                     ANNAL_ECONFLICT);
    assert_int_equal(r.revision, 0);
    memset(&e.id, 0, sizeof e.id);
    assert_int_equal(annal_append_system(db, "$user-a", 0, &e, 1, &r), ANNAL_OK);
    assert_int_equal(r.revision, 1);
    /* a plain name works as annal_append */
    memset(&e.id, 0, sizeof e.id);
    annal_event_data plain = one("T", "{}");
    assert_int_equal(annal_append_system(db, "orders", ANNAL_EXPECT_ANY, &plain, 1, &r), ANNAL_OK);
    /* reserved: the store's own streams and event types */
    const char *reserved[] = {"$$orders", "$all", "$ce-orders", "$et-T", "$seals", "$"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        memset(&e.id, 0, sizeof e.id);
        assert_int_equal(annal_append_system(db, reserved[i], ANNAL_EXPECT_ANY, &e, 1, &r),
                         ANNAL_EINVAL);
    }
    annal_event_data meta = one("$metadata", "{}");
    assert_int_equal(annal_append_system(db, "$settings", ANNAL_EXPECT_ANY, &meta, 1, &r),
                     ANNAL_EINVAL);
    annal_event_data del = one("$streamDeleted", "{}");
    assert_int_equal(annal_append_system(db, "$settings", ANNAL_EXPECT_ANY, &del, 1, &r),
                     ANNAL_EINVAL);
    /* durable and readable after reopen */
    annal_db_close(db);
    db = tu_open(dir, ANNAL_OPEN_READONLY);
    annal_iter *it;
    assert_int_equal(annal_read_stream(db, "$user-a", 0, 0, 10, &it), ANNAL_OK);
    const annal_event *ev;
    int n = 0;
    while (annal_iter_next(it, &ev) == ANNAL_OK) {
        assert_string_equal(ev->type, "$user");
        n++;
    }
    annal_iter_close(it);
    assert_int_equal(n, 2);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_system_streams)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
