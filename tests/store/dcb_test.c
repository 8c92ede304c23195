/* dcb_test.c -- Dynamic Consistency Boundaries: tags stored and returned by every read,
 * their limits, reads by query (items, types, tags, directions, bounds, limits), append
 * conditions (position of the match, `after`, anywhere), conditions combined with
 * expected revisions, resends, the $dcb stream, and tags kept across reopen, rebuild,
 * verify and compaction. */
#include "testutil.h"

#include "store/db_int.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static annal_event_data ev_of(const char *type) {
    annal_event_data e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.data = "{}";
    e.data_len = 2;
    return e;
}

/* Append one event of type with the NULL-terminated tags to $dcb if cond holds. */
static annal_err put(annal_db *db, const char *type, const char *const *tags,
                     const annal_condition *cond, uint64_t *pos) {
    size_t n = 0;
    while (tags && tags[n]) n++;
    annal_event_data e = ev_of(type);
    annal_tag_list tl = {tags, n};
    annal_append_result r;
    uint64_t cp;
    annal_err rc = annal_append_if(db, &e, &tl, 1, cond, &r, &cp);
    if (pos) *pos = rc == ANNAL_OK ? r.first_position : cp;
    return rc;
}

#define TAGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The positions a query read returns, as a string "p1,p2,..." in buf. */
static const char *read_q(annal_db *db, const annal_query *q, uint64_t from, unsigned flags,
                          uint64_t limit, char *buf, size_t len) {
    annal_iter *it;
    TU_OK(db, annal_read_query(db, q, from, flags, limit, &it));
    const annal_event *ev;
    size_t off = 0;
    buf[0] = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) {
        assert_true(annal_query_match(q, ev));
        off += (size_t)snprintf(buf + off, len - off, "%s%" PRIu64, off ? "," : "", ev->position);
    }
    TU_EXPECT(db, rc, ANNAL_END);
    annal_iter_close(it);
    return buf;
}

/* The tags of ev joined with '|'. */
static const char *tags_of(const annal_event *ev, char *buf, size_t len) {
    size_t off = 0, n = 0;
    buf[0] = 0;
    for (const char *t = NULL; annal_event_tag_next(ev, &t); n++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? "|" : "", t);
    assert_int_equal(n, ev->ntags);
    return buf;
}

static void test_tags_roundtrip(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-tags");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    uint64_t p;
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s7"), NULL, &p));
    assert_int_equal(p, 0);
    TU_OK(db, tu_append1(db, "plain", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    char b[256];
    annal_event *ev;
    TU_OK(db, annal_event_get(db, 0, &ev));
    assert_string_equal(ev->stream, ANNAL_DCB_STREAM);
    assert_string_equal(tags_of(ev, b, sizeof b), "course:c1|student:s7");
    annal_free(ev);
    TU_OK(db, annal_event_get(db, 1, &ev));
    assert_int_equal(ev->ntags, 0);
    assert_null(ev->tags);
    annal_free(ev);
    /* every read returns them: a stream read, $all, a type read */
    annal_iter *it;
    const annal_event *e;
    TU_OK(db, annal_read_stream(db, ANNAL_DCB_STREAM, 0, 0, 0, &it));
    TU_OK(db, annal_iter_next(it, &e));
    assert_string_equal(tags_of(e, b, sizeof b), "course:c1|student:s7");
    annal_iter_close(it);
    TU_OK(db, annal_read_type(db, "Enrolled", 0, 0, 0, &it));
    TU_OK(db, annal_iter_next(it, &e));
    assert_string_equal(tags_of(e, b, sizeof b), "course:c1|student:s7");
    /* copies keep them: annal_event_get's above, annal_schema_upcast's (src/write) */
    annal_event *up;
    TU_OK(db, annal_schema_upcast(NULL, e, &up));
    assert_ptr_not_equal(up->tags, e->tags); /* in the copy's own allocation */
    assert_string_equal(tags_of(up, b, sizeof b), "course:c1|student:s7");
    annal_free(up);
    annal_iter_close(it);
    /* and across a reopen and a rebuilt index */
    annal_db_close(db);
    TU_OK(NULL, annal_rebuild_index(dir, NULL));
    db = tu_open(dir, 0);
    annal_query_item item = {NULL, 0, TAGS("student:s7"), 1};
    annal_query q = {&item, 1};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "0");
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

static void test_tag_limits(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-limits");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    const char *many[ANNAL_MAX_TAGS + 2];
    char names[ANNAL_MAX_TAGS + 1][8];
    for (int i = 0; i <= ANNAL_MAX_TAGS; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        many[i] = names[i];
    }
    many[ANNAL_MAX_TAGS + 1] = NULL;
    TU_EXPECT(db, put(db, "T", many, NULL, NULL), ANNAL_ETOOBIG);
    many[ANNAL_MAX_TAGS] = NULL; /* exactly the limit */
    TU_OK(db, put(db, "T", many, NULL, NULL));
    char longtag[ANNAL_MAX_TAG_BYTES + 2];
    memset(longtag, 'x', sizeof longtag - 1);
    longtag[sizeof longtag - 1] = 0;
    TU_EXPECT(db, put(db, "T", TAGS(longtag), NULL, NULL), ANNAL_ETOOBIG);
    longtag[ANNAL_MAX_TAG_BYTES] = 0; /* exactly the limit */
    TU_OK(db, put(db, "T", TAGS(longtag), NULL, NULL));
    TU_EXPECT(db, put(db, "T", TAGS(""), NULL, NULL), ANNAL_EINVAL);
    TU_EXPECT(db, put(db, "T", TAGS("a", "b", "a"), NULL, NULL), ANNAL_EINVAL);
    TU_EXPECT(db, put(db, "T", TAGS("bad\xff"), NULL, NULL), ANNAL_EINVAL);
    /* the reserved stream takes no other writes */
    TU_EXPECT(db, tu_append1(db, ANNAL_DCB_STREAM, ANNAL_EXPECT_ANY, "T", "{}", NULL),
              ANNAL_EINVAL);
    annal_event_data e = ev_of("T");
    TU_EXPECT(db, annal_append_system(db, ANNAL_DCB_STREAM, ANNAL_EXPECT_ANY, &e, 1, NULL),
              ANNAL_EINVAL);
    annal_tagged_append part = {ANNAL_DCB_STREAM, ANNAL_EXPECT_ANY, &e, NULL, 1};
    TU_EXPECT(db, annal_append_tagged(db, &part, 1, NULL, 0, NULL, NULL), ANNAL_EINVAL);
    e = ev_of("$metadata"); /* reserved types stay reserved in $dcb */
    TU_EXPECT(db, put(db, "$metadata", TAGS("a"), NULL, NULL), ANNAL_EINVAL);
    /* bad queries */
    annal_query_item item = {NULL, 0, TAGS(""), 1};
    annal_query q = {&item, 1};
    annal_iter *it;
    TU_EXPECT(db, annal_read_query(db, &q, 0, 0, 0, &it), ANNAL_EINVAL);
    annal_condition c = {&q, ANNAL_AFTER_NONE};
    TU_EXPECT(db, put(db, "T", TAGS("a"), &c, NULL), ANNAL_EINVAL);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.events, 2); /* only the two at the limits */
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void test_queries(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-query");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    /* 0..5 in $dcb, 6..8 one batch in a named stream, 9 untagged */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s1"), NULL, NULL)); /* 0 */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c2", "student:s1"), NULL, NULL)); /* 1 */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s2"), NULL, NULL)); /* 2 */
    TU_OK(db, put(db, "Left", TAGS("course:c1", "student:s1"), NULL, NULL));     /* 3 */
    TU_OK(db, put(db, "Opened", TAGS("course:c3"), NULL, NULL));                 /* 4 */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c3", "student:s2"), NULL, NULL)); /* 5 */
    annal_event_data evs[3] = {ev_of("Enrolled"), ev_of("Noted"), ev_of("Enrolled")};
    annal_tag_list tl[3] = {
        {TAGS("course:c1", "student:s3"), 2}, {NULL, 0}, {TAGS("student:s3", "course:c2"), 2}};
    annal_tagged_append part = {"school-1", ANNAL_EXPECT_NO_STREAM, evs, tl, 3};
    TU_OK(db, annal_append_tagged(db, &part, 1, NULL, 0, NULL, NULL));            /* 6..8 */
    TU_OK(db, tu_append1(db, "other", ANNAL_EXPECT_ANY, "Enrolled", "{}", NULL)); /* 9 */
    char b[256];
    annal_query_item c1 = {NULL, 0, TAGS("course:c1"), 1};
    annal_query q = {&c1, 1};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "0,2,3,6");
    assert_string_equal(read_q(db, &q, 3, 0, 0, b, sizeof b), "3,6");
    assert_string_equal(read_q(db, &q, 0, 0, 2, b, sizeof b), "0,2");
    assert_string_equal(read_q(db, &q, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 0, b, sizeof b),
                        "6,3,2,0");
    assert_string_equal(read_q(db, &q, 2, ANNAL_READ_BACKWARD, 0, b, sizeof b), "2,0");
    assert_string_equal(read_q(db, &q, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 1, b, sizeof b), "6");
    /* tags AND, types OR */
    annal_query_item both = {TAGS("Enrolled", "Left"), 2, TAGS("course:c1", "student:s1"), 2};
    q = (annal_query){&both, 1};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "0,3");
    both.ntypes = 1;
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "0");
    /* types only: the type index, untagged events included */
    annal_query_item ty = {TAGS("Opened", "Noted"), 2, NULL, 0};
    q = (annal_query){&ty, 1};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "4,7");
    /* several items: OR, each event once */
    annal_query_item items[3] = {{NULL, 0, TAGS("student:s3"), 1},
                                 {TAGS("Opened"), 1, NULL, 0},
                                 {NULL, 0, TAGS("course:c2"), 1}};
    q = (annal_query){items, 3};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "1,4,6,8");
    assert_string_equal(read_q(db, &q, ANNAL_FROM_END, ANNAL_READ_BACKWARD, 0, b, sizeof b),
                        "8,6,4,1");
    /* a tag nobody has; an empty query (everything) */
    annal_query_item none = {NULL, 0, TAGS("course:c9"), 1};
    q = (annal_query){&none, 1};
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "");
    q = (annal_query){NULL, 0};
    assert_string_equal(read_q(db, &q, 7, 0, 0, b, sizeof b), "7,8,9");
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void test_conditions(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-cond");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    annal_query_item c1 = {NULL, 0, TAGS("course:c1"), 1};
    annal_query q = {&c1, 1};
    annal_condition none = {&q, ANNAL_AFTER_NONE};
    uint64_t p;
    TU_OK(db, put(db, "Opened", TAGS("course:c1"), &none, &p)); /* 0 */
    TU_EXPECT(db, put(db, "Opened", TAGS("course:c1"), &none, &p), ANNAL_ECONDITION);
    assert_int_equal(p, 0);
    annal_query_item c2 = {NULL, 0, TAGS("course:c2"), 1};
    annal_query q2 = {&c2, 1};
    annal_condition none2 = {&q2, ANNAL_AFTER_NONE};
    TU_OK(db, put(db, "Opened", TAGS("course:c2"), &none2, &p)); /* 1: another boundary */
    annal_condition after0 = {&q, 0};
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1"), &after0, &p)); /* 2 */
    TU_EXPECT(db, put(db, "Enrolled", TAGS("course:c1"), &after0, &p), ANNAL_ECONDITION);
    assert_int_equal(p, 2);
    annal_condition after2 = {&q, 2};
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1"), &after2, &p)); /* 3 */
    /* the types of the item narrow it: no "Closed" yet */
    annal_query_item closed = {TAGS("Closed"), 1, TAGS("course:c1"), 1};
    annal_query qc = {&closed, 1};
    annal_condition cc = {&qc, ANNAL_AFTER_NONE};
    TU_OK(db, put(db, "Closed", TAGS("course:c1"), &cc, &p)); /* 4 */
    TU_EXPECT(db, put(db, "Closed", TAGS("course:c1"), &cc, &p), ANNAL_ECONDITION);
    assert_int_equal(p, 4);
    /* match-all query: anything after */
    annal_condition all = {NULL, 3};
    TU_EXPECT(db, put(db, "X", NULL, &all, &p), ANNAL_ECONDITION);
    assert_int_equal(p, 4);
    all.after = 4;
    TU_OK(db, put(db, "X", NULL, &all, &p)); /* 5 */

    /* with expected revisions in one call: the condition fails, nothing is written */
    annal_event_data e = ev_of("Enrolled");
    annal_tag_list tl = {TAGS("course:c1", "student:s7"), 2};
    annal_event_data se = ev_of("StudentJoined");
    annal_tagged_append parts[2] = {{NULL, 0, &e, &tl, 1},
                                    {"student-s7", ANNAL_EXPECT_ANY, &se, NULL, 1}};
    annal_stream_conflict conf[2];
    annal_multi_result r = {.conflicts = conf, .max_conflicts = 2};
    TU_EXPECT(db, annal_append_tagged(db, parts, 2, NULL, 0, &after2, &r), ANNAL_ECONDITION);
    assert_int_equal(r.condition_position, 3) /* the first match after 2 */;
    assert_int_equal(r.nconflicts, 0);
    parts[1].expected = 5; /* both fail: the condition's code, the stream named */
    TU_EXPECT(db, annal_append_tagged(db, parts, 2, NULL, 0, &after2, &r), ANNAL_ECONDITION);
    assert_int_equal(r.nconflicts, 1);
    assert_string_equal(conf[0].stream, "student-s7");
    TU_EXPECT(db, annal_append_tagged(db, parts, 2, NULL, 0, NULL, &r), ANNAL_ECONFLICT);
    parts[1].expected = ANNAL_EXPECT_NO_STREAM;
    annal_condition after4 = {&q, 4};
    TU_OK(db, annal_append_tagged(db, parts, 2, NULL, 0, &after4, &r)); /* 6, 7 */
    assert_int_equal(r.first_position, 6);
    assert_int_equal(r.condition_position, UINT64_MAX);
    /* a resend (same ids) returns the first result, though its condition matches now */
    annal_multi_result r2 = {0};
    TU_OK(db, annal_append_tagged(db, parts, 2, NULL, 0, &after4, &r2));
    assert_int_equal(r2.idempotent, 1);
    assert_int_equal(r2.first_position, 6);
    annal_db_info info;
    TU_OK(db, annal_db_info_get(db, &info));
    assert_int_equal(info.events, 8);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* Blocks under tag in the tag index (internals). */
static uint64_t tag_blocks(annal_db *db, const char *tag) {
    MDB_txn *t;
    TU_OK(db, annal__read_txn(db, &t));
    MDB_cursor *c;
    assert_int_equal(mdb_cursor_open(t, db->idx.tags, &c), 0);
    uint64_t n;
    assert_int_equal(annal__index_tag_count(c, tag, strlen(tag), &n), 0);
    mdb_cursor_close(c);
    annal__txn_abort(&db->idx, t);
    return n;
}

/* Events hidden by their stream's metadata match no query and no condition; compaction
 * erases them from the tag index; verify agrees. */
static void test_hidden_and_compacted(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-compact");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.segment_bytes = 64 << 10;
    annal_db *db;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    annal_event_data e[2] = {ev_of("Claimed"), ev_of("Claimed")};
    annal_tag_list tl[2] = {{TAGS("user:ann", "batch:1"), 2}, {TAGS("user:bob", "batch:1"), 2}};
    annal_tagged_append part = {"users-1", ANNAL_EXPECT_ANY, e, tl, 2};
    TU_OK(db, annal_append_tagged(db, &part, 1, NULL, 0, NULL, NULL));      /* 0, 1 */
    TU_OK(db, put(db, "Claimed", TAGS("user:cid", "batch:1"), NULL, NULL)); /* 2 */
    annal_query_item it = {NULL, 0, TAGS("batch:1"), 1};
    annal_query q = {&it, 1};
    char b[128];
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "0,1,2");
    TU_OK(db, annal_stream_delete(db, "users-1", ANNAL_EXPECT_ANY, 0, NULL)); /* 3: $$users-1 */
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "2");
    annal_query_item ann = {NULL, 0, TAGS("user:ann"), 1};
    annal_query qa = {&ann, 1};
    annal_condition c = {&qa, ANNAL_AFTER_NONE};
    uint64_t p;
    TU_OK(db, put(db, "Claimed", TAGS("user:ann"), &c, &p)); /* 4: ann's old claim is gone */
    assert_int_equal(p, 4);
    TU_EXPECT(db, put(db, "Claimed", TAGS("user:ann"), &c, &p), ANNAL_ECONDITION);
    assert_int_equal(p, 4);
    assert_int_equal(tag_blocks(db, "user:bob"), 1);
    TU_OK(db, annal_seal(db));
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 0, &st));
    assert_int_equal(st.events_erased, 2);
    assert_int_equal(tag_blocks(db, "user:bob"), 0); /* erased events leave the tag index */
    assert_int_equal(tag_blocks(db, "user:ann"), 1); /* the new claim only */
    assert_int_equal(tag_blocks(db, "batch:1"), 1);
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "2");
    assert_string_equal(read_q(db, &qa, 0, 0, 0, b, sizeof b), "4");
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    TU_OK(NULL, annal_rebuild_index(dir, NULL)); /* the compacted log indexes the same */
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    assert_int_equal(tag_blocks(db, "user:bob"), 0);
    assert_string_equal(read_q(db, &qa, 0, 0, 0, b, sizeof b), "4");
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* A subscription by query: history from the indexes, then live events, in order. */
static void test_subscription(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-sub");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s1"), NULL, NULL)); /* 0 */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c2", "student:s1"), NULL, NULL)); /* 1 */
    TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s2"), NULL, NULL)); /* 2 */
    annal_query_item it = {TAGS("Enrolled"), 1, TAGS("course:c1"), 1};
    annal_query q = {&it, 1};
    annal_sub_opts so;
    annal_sub_opts_init(&so);
    so.query = &q;
    annal_sub *sub;
    TU_OK(db, annal_sub_open(db, &so, &sub));
    it.ntags = 0; /* the subscription has its own copy */
    annal_sub_item item;
    uint64_t got[8];
    size_t n = 0;
    int caught_up = 0;
    while (n < 4) {
        annal_err rc = annal_sub_next(sub, 2000, &item);
        TU_OK(db, rc);
        if (item.kind == ANNAL_SUB_CAUGHT_UP && !caught_up) {
            caught_up = 1;
            assert_int_equal(n, 2);
            TU_OK(db, put(db, "Enrolled", TAGS("course:c2"), NULL, NULL));               /* 3 */
            TU_OK(db, put(db, "Left", TAGS("course:c1"), NULL, NULL));                   /* 4 */
            TU_OK(db, put(db, "Enrolled", TAGS("course:c1", "student:s3"), NULL, NULL)); /* 5 */
            TU_OK(db, put(db, "Enrolled", TAGS("course:c1"), NULL, NULL));               /* 6 */
        }
        if (item.kind == ANNAL_SUB_EVENT) got[n++] = item.event->position;
    }
    assert_int_equal(got[0], 0);
    assert_int_equal(got[1], 2);
    assert_int_equal(got[2], 5);
    assert_int_equal(got[3], 6);
    /* Live events it does not match move its checkpoint, as a filter's do: a consumer of a
     * rare query can still keep its place. */
    for (int i = 0; i < 5; i++) TU_OK(db, put(db, "Enrolled", TAGS("course:c9"), NULL, NULL));
    uint64_t cp = 0;
    while (cp < 12) {
        TU_OK(db, annal_sub_next(sub, 2000, &item));
        assert_int_not_equal(item.kind, ANNAL_SUB_EVENT);
        if (item.kind == ANNAL_SUB_CHECKPOINT) cp = item.position;
    }
    assert_int_equal(cp, 12);
    annal_sub_close(sub);
    /* a query on one stream is refused */
    so.stream = "users-1";
    TU_EXPECT(db, annal_sub_open(db, &so, &sub), ANNAL_EINVAL);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

/* A backup copies the log and the index with its tags: it verifies and answers queries;
 * a restore of it too. */
static void test_backup(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-backup"), *bak = tu_tmpdir("dcb-backup-dest"),
         *res = tu_tmpdir("dcb-backup-restored");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    for (int i = 0; i < 100; i++) {
        char t[16];
        snprintf(t, sizeof t, "k:%d", i % 7);
        TU_OK(db, put(db, i % 2 ? "Odd" : "Even", TAGS(t, "all"), NULL, NULL));
    }
    annal_backup_result br;
    TU_OK(db, annal_backup(db, bak, NULL, &br));
    assert_int_equal(br.next_position, 100);
    annal_db_close(db);
    TU_OK(NULL, annal_verify(bak, NULL, NULL, NULL));
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    TU_OK(NULL, annal_db_open(bak, &o, &db)); /* read-only: the copied index serves it */
    annal_query_item it = {TAGS("Odd"), 1, TAGS("k:3", "all"), 2};
    annal_query q = {&it, 1};
    char b[128];
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "3,17,31,45,59,73,87");
    annal_db_close(db);
    tu_rmrf(res);
    annal_restore_result rr;
    TU_OK(NULL, annal_restore(bak, res, NULL, &rr));
    db = tu_open(res, 0);
    assert_string_equal(read_q(db, &q, 0, 0, 0, b, sizeof b), "3,17,31,45,59,73,87");
    annal_db_close(db);
    tu_rmrf(dir);
    tu_rmrf(bak);
    tu_rmrf(res);
    free(dir);
    free(bak);
    free(res);
}

/* Reads by query racing compaction (which replaces segment generations under them):
 * every pass, forward and backward, returns exactly the matching visible events. */
typedef struct qracer {
    annal_db *db;
    const char *want; /* the positions a forward read returns, "p1,p2,..." */
    int backward, stop;
    long rounds;
    char err[256];
} qracer;

/* One pass of the k:even query; 0, or -1 with err set. */
static int query_pass(annal_db *db, int backward, const char *want, char *err, size_t errlen) {
    annal_query_item it = {NULL, 0, TAGS("k:even"), 1};
    annal_query q = {&it, 1};
    static _Thread_local char got[65536];
    annal_iter *iter;
    annal_err rc = annal_read_query(db, &q, backward ? ANNAL_FROM_END : 0,
                                    backward ? ANNAL_READ_BACKWARD : 0, 0, &iter);
    size_t off = 0;
    const annal_event *ev;
    uint64_t prev = UINT64_MAX;
    got[0] = 0;
    while (rc == ANNAL_OK && (rc = annal_iter_next(iter, &ev)) == ANNAL_OK) {
        if (prev != UINT64_MAX && (backward ? ev->position >= prev : ev->position <= prev))
            snprintf(err, errlen, "out of order at %" PRIu64, ev->position);
        prev = ev->position;
        if (off < sizeof got - 32)
            off += (size_t)snprintf(got + off, sizeof got - off, "%s%" PRIu64, off ? "," : "",
                                    ev->position);
    }
    if (iter) annal_iter_close(iter);
    if (rc != ANNAL_END)
        snprintf(err, errlen, "read: %s (%s)", annal_errname(rc), annal_db_errmsg(db));
    else if (!backward && strcmp(got, want) != 0)
        snprintf(err, errlen, "a pass read other events than before compaction");
    return err[0] ? -1 : 0;
}

static void *query_reader(void *arg) {
    qracer *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && !r->err[0])
        if (query_pass(r->db, r->backward, r->want, r->err, sizeof r->err) == 0) r->rounds++;
    return NULL;
}

/* The same from a read-only handle in another process, until stop_fd closes: its index
 * locations may name a generation the writer has deleted (read again, never twice). */
static void query_reader_process(const char *dir, const char *want, int stop_fd) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *ro = NULL;
    if (annal_db_open(dir, &o, &ro) != ANNAL_OK) _exit(3);
    long rounds = 0;
    char err[256] = "";
    for (;;) {
        struct pollfd pf = {stop_fd, POLLIN, 0};
        if (poll(&pf, 1, 0) > 0) break;
        for (int back = 0; back < 2; back++)
            if (query_pass(ro, back, want, err, sizeof err) != 0) {
                fprintf(stderr, "read-only query reader: %s\n", err);
                _exit(1);
            }
        rounds++;
    }
    printf("read-only query reader in another process: %ld passes\n", rounds);
    annal_db_close(ro);
    fflush(stdout);
    _exit(rounds > 0 ? 0 : 2);
}

static void test_reads_race_compaction(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-race-compact");
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    o.segment_bytes = 64 << 10;
    annal_db *db;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    /* batches of 100 to 10 streams, half the events tagged k:even; then delete 5 of the
     * streams, so that compaction has most segments to rewrite */
    annal_event_data e[100];
    annal_tag_list tl[100];
    static const char *const odd[] = {"k:odd"}, *const even[] = {"k:even", "x"};
    for (int b = 0; b < 40; b++) {
        for (int i = 0; i < 100; i++) {
            e[i] = ev_of("T");
            tl[i] = i % 2 ? (annal_tag_list){odd, 1} : (annal_tag_list){even, 2};
        }
        char st[16];
        snprintf(st, sizeof st, "s-%d", b % 10);
        annal_tagged_append part = {st, ANNAL_EXPECT_ANY, e, tl, 100};
        TU_OK(db, annal_append_tagged(db, &part, 1, NULL, 0, NULL, NULL));
    }
    for (int s = 0; s < 10; s += 2) {
        char st[16];
        snprintf(st, sizeof st, "s-%d", s);
        TU_OK(db, annal_stream_delete(db, st, ANNAL_EXPECT_ANY, 0, NULL));
    }
    TU_OK(db, annal_seal(db));
    annal_query_item it = {NULL, 0, TAGS("k:even"), 1};
    annal_query q = {&it, 1};
    static char want[65536];
    read_q(db, &q, 0, 0, 0, want, sizeof want);
    int stop_pipe[2];
    assert_int_equal(pipe(stop_pipe), 0);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        close(stop_pipe[1]);
        query_reader_process(dir, want, stop_pipe[0]);
    }
    close(stop_pipe[0]);
    usleep(50000); /* let it open before the compaction starts */
    qracer r[2] = {{db, want, 0, 0, 0, ""}, {db, want, 1, 0, 0, ""}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, query_reader, &r[i]), 0);
    annal_compact_stats st;
    TU_OK(db, annal_compact(db, 2u << 20, &st)); /* throttled: the readers see it at work */
    close(stop_pipe[1]);
    int cst;
    waitpid(child, &cst, 0);
    if (!WIFEXITED(cst) || WEXITSTATUS(cst) != 0) fail_msg("the read-only reader failed (%d)", cst);
    for (int i = 0; i < 2; i++) {
        __atomic_store_n(&r[i].stop, 1, __ATOMIC_RELEASE);
        pthread_join(th[i], NULL);
        if (r[i].err[0]) fail_msg("%s reader: %s", i ? "backward" : "forward", r[i].err);
    }
    assert_true(st.events_erased == 2000);
    char after[65536];
    assert_string_equal(read_q(db, &q, 0, 0, 0, after, sizeof after), want);
    print_message("query readers: %ld and %ld passes during compaction\n", r[0].rounds,
                  r[1].rounds);
    annal_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static void count_damage(void *ctx, const annal_damage *d) {
    (void)d;
    (*(int *)ctx)++;
}

/* verify checks the tag index both ways: an entry naming an event without its tag (or
 * one past the head) is damage, as a missing entry is. */
static void test_verify_tag_entries(void **state) {
    (void)state;
    char *dir = tu_tmpdir("dcb-verify");
    annal_db *db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    TU_OK(db, put(db, "T", TAGS("real"), NULL, NULL));  /* 0 */
    TU_OK(db, put(db, "T", TAGS("other"), NULL, NULL)); /* 1 */
    annal_db_close(db);
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    /* a block of "ghost" naming event 1, which does not carry it */
    db = tu_open(dir, ANNAL_OPEN_NOSYNC);
    MDB_txn *t;
    assert_int_equal(annal__txn_begin(&db->idx, 0, &t), 0);
    annal__block b;
    TU_OK(db, annal__index_tag_block(t, db->idx.tags, "other", 5, 1, &b));
    uint8_t v[ANNAL__BLOCK_VAL];
    annal__block_encode(&b, v);
    TU_OK(db, annal__index_tag_put_many(t, db->idx.tags, "ghost", 5, v, 1));
    assert_int_equal(annal__txn_commit(&db->idx, t), 0);
    annal_db_close(db);
    int found = 0;
    TU_EXPECT(NULL, annal_verify(dir, NULL, count_damage, &found), ANNAL_ECORRUPT);
    assert_int_equal(found, 1);
    TU_OK(NULL, annal_rebuild_index(dir, NULL));
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tags_roundtrip),
        cmocka_unit_test(test_tag_limits),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_conditions),
        cmocka_unit_test(test_hidden_and_compacted),
        cmocka_unit_test(test_subscription),
        cmocka_unit_test(test_backup),
        cmocka_unit_test(test_reads_race_compaction),
        cmocka_unit_test(test_verify_tag_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
