/* handler_test.c -- the command side through the public API: deciding, rejecting, command
 * metadata in events, retries after conflicts, time travel, snapshots and upcasters.
 *
 * The decider under test is a bounded counter: "Added" events carry a decimal amount,
 * and a command adds to the counter unless that would pass its limit. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

/* ------------------------------------------------------------------------------------
 * The counter decider */

typedef struct counter {
    long long value;
    long long events;
    char *last_type; /* owned: exercises release() */
} counter;

typedef struct add_cmd {
    long long amount;
    long long limit;
    int emit_none;                /* decide nothing */
    const char *meta;             /* the event's own metadata */
    annal_db *interfere;          /* append to stream from inside decide, once */
    const char *interfere_stream; /* that stream */
    int interfered;               /* set after it did */
    int interfere_times;          /* > 0: interfere in this many decides, not once */
} add_cmd;

typedef struct ctx {
    int fail_evolve_at; /* evolve returns ANNAL_ECORRUPT on this value+1-th event; 0 never */
    int decodes;        /* snapshot_decode calls */
} ctx;

static long long parse_ll(const void *p, size_t n) {
    char buf[32];
    if (n >= sizeof buf) return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static void c_release(void *c, void *state) {
    (void)c;
    free(((counter *)state)->last_type);
}

static annal_err c_evolve(void *c, void *state, const annal_event *ev) {
    counter *s = state;
    ctx *x = c;
    if (x && x->fail_evolve_at && s->events + 1 == x->fail_evolve_at) return ANNAL_ECORRUPT;
    if (strcmp(ev->type, "Added") != 0) return ANNAL_ECORRUPT;
    s->value += parse_ll(ev->data, ev->data_len);
    s->events++;
    free(s->last_type);
    s->last_type = strdup(ev->type);
    return s->last_type ? ANNAL_OK : ANNAL_ENOMEM;
}

static annal_err c_decide(void *c, const void *state, const void *command, annal_decision *out) {
    (void)c;
    const counter *s = state;
    add_cmd *cmd = (add_cmd *)command;
    if (cmd->interfere &&
        (cmd->interfere_times > 0 ? cmd->interfered < cmd->interfere_times : !cmd->interfered)) {
        cmd->interfered++;
        annal_err rc = tu_append1(cmd->interfere, cmd->interfere_stream, ANNAL_EXPECT_ANY, "Added",
                                  "1000", NULL);
        if (rc != ANNAL_OK) return rc;
    }
    if (cmd->emit_none) return ANNAL_OK;
    if (s->value + cmd->amount > cmd->limit) {
        char why[64];
        snprintf(why, sizeof why, "%lld + %lld is over %lld", s->value, cmd->amount, cmd->limit);
        return annal_decision_reject(out, 7, why);
    }
    char data[32];
    int n = snprintf(data, sizeof data, "%lld", cmd->amount);
    return annal_decision_emit(out, "Added", data, (size_t)n, cmd->meta,
                               cmd->meta ? strlen(cmd->meta) : 0);
}

static annal_err c_encode(void *c, const void *state, annal_buf *out) {
    (void)c;
    const counter *s = state;
    return annal_buf_append(out, s, 2 * sizeof(long long));
}

static annal_err c_decode(void *c, void *state, const void *data, size_t len) {
    ctx *x = c;
    if (x) x->decodes++;
    if (len != 2 * sizeof(long long)) return ANNAL_ECORRUPT;
    memcpy(state, data, len);
    return ANNAL_OK;
}

static annal_err bad_decode(void *c, void *state, const void *data, size_t len) {
    (void)state;
    (void)data;
    (void)len;
    ((ctx *)c)->decodes++;
    return ANNAL_ECORRUPT;
}

static annal_decider counter_decider(int snapshots) {
    annal_decider d;
    memset(&d, 0, sizeof d);
    d.version = ANNAL_DECIDER_VERSION;
    d.name = "counter";
    d.state_size = sizeof(counter);
    d.release = c_release;
    d.evolve = c_evolve;
    d.decide = c_decide;
    d.state_version = 1;
    if (snapshots) {
        d.snapshot_encode = c_encode;
        d.snapshot_decode = c_decode;
    }
    return d;
}

/* ------------------------------------------------------------------------------------
 * Fixture */

typedef struct fx {
    char *dir;
    char *snapdir;
    annal_db *db;
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->dir = tu_tmpdir("write");
    size_t n = strlen(f->dir) + 16;
    f->snapdir = malloc(n);
    snprintf(f->snapdir, n, "%s/snapshots", f->dir);
    char *store = malloc(n);
    snprintf(store, n, "%s/store", f->dir);
    f->db = tu_open(store, ANNAL_OPEN_NOSYNC);
    free(store);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    annal_db_close(f->db);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f->snapdir);
    free(f);
    return 0;
}

static annal_handler *open_handler(annal_db *db, const annal_decider *d, ctx *x,
                                   const char *snapdir, uint64_t every) {
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.ctx = x;
    o.snapshot_dir = snapdir;
    o.snapshot_every = every;
    annal_handler *h = NULL;
    TU_OK(db, annal_handler_open(db, d, &o, &h));
    return h;
}

static long long value_of(annal_handler *h, const char *stream, uint64_t rev, int64_t until,
                          annal_state_info *info) {
    void *st;
    TU_OK(NULL, annal_state_load(h, stream, rev, until, &st, info));
    long long v = ((counter *)st)->value;
    annal_state_free(h, st);
    return v;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void remove_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        assert_int_equal(unlink(p), 0);
    }
    closedir(d);
}

/* ------------------------------------------------------------------------------------
 * Tests */

static void test_open_checks(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(1);
    annal_handler *h = (annal_handler *)1;
    annal_decider bad = d;
    bad.version = 0;
    assert_int_equal(annal_handler_open(f->db, &bad, NULL, &h), ANNAL_EINVAL);
    assert_null(h);
    bad = d;
    bad.evolve = NULL;
    assert_int_equal(annal_handler_open(f->db, &bad, NULL, &h), ANNAL_EINVAL);
    bad = d;
    bad.snapshot_decode = NULL;
    assert_int_equal(annal_handler_open(f->db, &bad, NULL, &h), ANNAL_EINVAL);
    bad = d;
    bad.name = "";
    assert_int_equal(annal_handler_open(f->db, &bad, NULL, &h), ANNAL_EINVAL);
    bad = d;
    bad.state_size = 0;
    assert_int_equal(annal_handler_open(f->db, &bad, NULL, &h), ANNAL_EINVAL);
    assert_int_equal(annal_handler_open(NULL, &d, NULL, &h), ANNAL_EINVAL);
    TU_OK(f->db, annal_handler_open(f->db, &d, NULL, &h));
    annal_command_result r;
    add_cmd c = {.amount = 1, .limit = 10};
    assert_int_equal(annal_handle(h, "$all", &c, NULL, &r), ANNAL_EINVAL);
    assert_int_equal(annal_handle(h, "", &c, NULL, &r), ANNAL_EINVAL);
    void *st = (void *)1;
    assert_int_equal(annal_state_load(h, "$x", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL),
                     ANNAL_EINVAL);
    assert_null(st);
    annal_handler_close(h);
    annal_handler_close(NULL);
    annal_state_free(NULL, NULL);
}

static void test_decide_reject_noop(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    add_cmd c = {.amount = 4, .limit = 10};
    TU_OK(f->db, annal_handle(h, "c-1", &c, NULL, &r));
    assert_int_equal(r.rejected, 0);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.state_revision, -1);
    assert_int_equal(r.append.count, 1);
    assert_int_equal(r.append.first_revision, 0);
    assert_int_equal(r.append.revision, 0);
    static const annal_uuid zero;
    assert_memory_not_equal(&r.first_id, &zero, sizeof zero);
    TU_OK(f->db, annal_handle(h, "c-1", &c, NULL, &r));
    assert_int_equal(r.state_revision, 0);
    assert_int_equal(r.append.revision, 1);

    /* 8 + 4 > 10: rejected with the decider's code and reason, nothing written */
    TU_OK(f->db, annal_handle(h, "c-1", &c, NULL, &r));
    assert_int_equal(r.rejected, 7);
    assert_string_equal(r.message, "8 + 4 is over 10");
    assert_int_equal(r.append.count, 0);
    uint64_t head;
    TU_OK(f->db, annal_stream_head(f->db, "c-1", &head));
    assert_int_equal(head, 1);

    /* nothing to do: success, nothing written, the revision it stands at */
    c.emit_none = 1;
    TU_OK(f->db, annal_handle(h, "c-1", &c, NULL, &r));
    assert_int_equal(r.rejected, 0);
    assert_int_equal(r.append.count, 0);
    assert_int_equal(r.append.revision, 1);
    /* a NULL result is allowed */
    c.emit_none = 0;
    c.amount = 1;
    TU_OK(f->db, annal_handle(h, "c-1", &c, NULL, NULL));
    assert_int_equal(value_of(h, "c-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, NULL), 9);
    /* a stream that does not exist loads as the initial state */
    annal_state_info info;
    assert_int_equal(value_of(h, "nobody", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), 0);
    assert_int_equal(info.revision, -1);
    annal_handler_close(h);
}

static json_t *meta_at(annal_db *db, const char *stream, uint64_t rev) {
    annal_iter *it;
    const annal_event *ev;
    TU_OK(db, annal_read_stream(db, stream, rev, 0, 1, &it));
    TU_OK(db, annal_iter_next(it, &ev));
    json_t *m = ev->metadata_len ? json_loadb(ev->metadata, ev->metadata_len, 0, NULL) : NULL;
    annal_iter_close(it);
    return m;
}

static void test_command_metadata(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    add_cmd c = {.amount = 1, .limit = 100, .meta = "{\"reason\":\"test\",\"user\":\"spoof\"}"};
    annal_command_meta m = {.correlation_id = "corr-1",
                            .causation_id = "cmd-9",
                            .user = "ann",
                            .extra = "{\"ip\":\"10.0.0.1\"}"};
    TU_OK(f->db, annal_handle(h, "m-1", &c, &m, &r));
    json_t *j = meta_at(f->db, "m-1", 0);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "correlationId")), "corr-1");
    assert_string_equal(json_string_value(json_object_get(j, "causationId")), "cmd-9");
    assert_string_equal(json_string_value(json_object_get(j, "user")), "ann"); /* command wins */
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "test");
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "10.0.0.1");
    assert_null(json_object_get(j, "$schema")); /* version 1 is not written */
    json_decref(j);

    /* no command metadata: the event's own metadata is stored byte for byte */
    c.meta = "{ \"k\" : 1 }";
    TU_OK(f->db, annal_handle(h, "m-1", &c, NULL, &r));
    annal_iter *it;
    const annal_event *ev;
    TU_OK(f->db, annal_read_stream(f->db, "m-1", 1, 0, 1, &it));
    TU_OK(f->db, annal_iter_next(it, &ev));
    assert_int_equal(ev->metadata_len, strlen(c.meta));
    assert_memory_equal(ev->metadata, c.meta, ev->metadata_len);
    annal_iter_close(it);
    /* no metadata at all: still none */
    c.meta = NULL;
    TU_OK(f->db, annal_handle(h, "m-1", &c, NULL, &r));
    assert_null(meta_at(f->db, "m-1", 2));

    /* event metadata that is not an object, with command metadata: refused, nothing written */
    c.meta = "[1,2]";
    assert_int_equal(annal_handle(h, "m-1", &c, &m, &r), ANNAL_EINVAL);
    assert_non_null(strstr(r.message, "not a JSON object"));
    c.meta = NULL;
    annal_command_meta bad = {.extra = "\"x\""};
    assert_int_equal(annal_handle(h, "m-1", &c, &bad, &r), ANNAL_EINVAL);
    annal_command_meta badutf = {.user = "\xff\xfe"};
    assert_int_equal(annal_handle(h, "m-1", &c, &badutf, &r), ANNAL_EINVAL);
    uint64_t head;
    TU_OK(f->db, annal_stream_head(f->db, "m-1", &head));
    assert_int_equal(head, 2);
    annal_handler_close(h);
}

static void test_conflict_retry(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    add_cmd c0 = {.amount = 5, .limit = 10000};
    TU_OK(f->db, annal_handle(h, "r-1", &c0, NULL, &r));
    /* Another writer appends 1000 while the first decision is made: the append conflicts,
     * the handler folds the new event and decides again on 1005. */
    add_cmd c = {.amount = 5, .limit = 10000, .interfere = f->db, .interfere_stream = "r-1"};
    TU_OK(f->db, annal_handle(h, "r-1", &c, NULL, &r));
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.state_revision, 1);
    assert_int_equal(r.append.first_revision, 2);
    assert_int_equal(value_of(h, "r-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, NULL), 1010);

    /* the retry decides on the new state: here it now rejects */
    add_cmd c2 = {.amount = 5, .limit = 2012, .interfere = f->db, .interfere_stream = "r-1"};
    TU_OK(f->db, annal_handle(h, "r-1", &c2, NULL, &r));
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.rejected, 7);
    annal_handler_close(h);

    /* with no retries the conflict is returned, with the actual revision */
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.max_retries = 0;
    TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
    add_cmd c3 = {.amount = 1, .limit = 100000, .interfere = f->db, .interfere_stream = "r-1"};
    assert_int_equal(annal_handle(h, "r-1", &c3, NULL, &r), ANNAL_ECONFLICT);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.append.revision, 4);
    assert_int_equal(r.state_revision, 3);
    annal_handler_close(h);

    /* a new stream: the first append expects no stream */
    TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
    add_cmd c4 = {.amount = 1, .limit = 10, .interfere = f->db, .interfere_stream = "r-2"};
    assert_int_equal(annal_handle(h, "r-2", &c4, NULL, &r), ANNAL_ECONFLICT);
    assert_int_equal(r.append.revision, 0);
    annal_handler_close(h);
}

/* Exactly max_retries conflicts in a row are retried through; one more is returned, after
 * max_retries + 1 decisions. */
static void test_conflict_retry_count(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    for (unsigned max = 1; max <= 4; max += 3) {
        annal_handler_opts o;
        annal_handler_opts_init(&o);
        o.max_retries = max;
        annal_handler *h;
        TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
        annal_command_result r;
        add_cmd c = {.amount = 1,
                     .limit = 1000000,
                     .interfere = f->db,
                     .interfere_stream = "k-1",
                     .interfere_times = (int)max};
        TU_OK(f->db, annal_handle(h, "k-1", &c, NULL, &r));
        assert_int_equal(c.interfered, max);
        assert_int_equal(r.attempts, max + 1);
        add_cmd c2 = {.amount = 1,
                      .limit = 1000000,
                      .interfere = f->db,
                      .interfere_stream = "k-1",
                      .interfere_times = (int)max + 1};
        assert_int_equal(annal_handle(h, "k-1", &c2, NULL, &r), ANNAL_ECONFLICT);
        assert_int_equal(c2.interfered, max + 1);
        assert_int_equal(r.attempts, max + 1);
        annal_handler_close(h);
    }
    /* the default: 10 */
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    add_cmd c = {.amount = 1,
                 .limit = 1000000,
                 .interfere = f->db,
                 .interfere_stream = "k-2",
                 .interfere_times = 10};
    TU_OK(f->db, annal_handle(h, "k-2", &c, NULL, &r));
    assert_int_equal(r.attempts, 11);
    annal_handler_close(h);
}

static void test_evolve_error(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    ctx x = {0};
    annal_handler *h = open_handler(f->db, &d, &x, NULL, 0);
    add_cmd c = {.amount = 1, .limit = 100};
    annal_command_result r;
    for (int i = 0; i < 3; i++) TU_OK(f->db, annal_handle(h, "e-1", &c, NULL, &r));
    x.fail_evolve_at = 2;
    assert_int_equal(annal_handle(h, "e-1", &c, NULL, &r), ANNAL_ECORRUPT);
    assert_non_null(strstr(r.message, "evolve failed"));
    void *st = (void *)1;
    assert_int_equal(
        annal_state_load(h, "e-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL),
        ANNAL_ECORRUPT);
    assert_null(st);
    /* a foreign event type: the decider says corrupt */
    x.fail_evolve_at = 0;
    TU_OK(f->db, tu_append1(f->db, "e-2", ANNAL_EXPECT_ANY, "Other", "1", NULL));
    assert_int_equal(annal_handle(h, "e-2", &c, NULL, &r), ANNAL_ECORRUPT);
    annal_handler_close(h);
}

static void test_time_travel(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    for (int i = 1; i <= 10; i++) {
        add_cmd c = {.amount = i, .limit = 1000};
        TU_OK(f->db, annal_handle(h, "t-1", &c, NULL, &r));
        if (i == 5) usleep(2000); /* a clear gap in time after revision 4 */
    }
    annal_state_info info;
    for (uint64_t rev = 0; rev < 10; rev++) {
        long long want = (long long)(rev + 1) * (long long)(rev + 2) / 2;
        assert_int_equal(value_of(h, "t-1", rev, ANNAL_TIME_LATEST, &info), want);
        assert_int_equal(info.revision, (int64_t)rev);
        assert_int_equal(info.folded, rev + 1);
    }
    assert_int_equal(value_of(h, "t-1", 500, ANNAL_TIME_LATEST, &info), 55);
    assert_int_equal(info.revision, 9);

    /* as of a time: the timestamp of revision 4 includes revisions 0..4 only */
    annal_iter *it;
    const annal_event *ev;
    TU_OK(f->db, annal_read_stream(f->db, "t-1", 4, 0, 1, &it));
    TU_OK(f->db, annal_iter_next(it, &ev));
    int64_t t4 = ev->timestamp_ns;
    annal_iter_close(it);
    assert_int_equal(value_of(h, "t-1", ANNAL_REVISION_LATEST, t4, &info), 15);
    assert_int_equal(info.revision, 4);
    assert_int_equal(info.timestamp_ns, t4);
    assert_int_equal(value_of(h, "t-1", ANNAL_REVISION_LATEST, 0, &info), 0);
    assert_int_equal(info.revision, -1);
    /* both bounds: the tighter wins */
    assert_int_equal(value_of(h, "t-1", 2, t4, &info), 6);
    annal_handler_close(h);
}

static void test_snapshots(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(1);
    ctx x = {0};
    annal_handler *h = open_handler(f->db, &d, &x, f->snapdir, 10);
    annal_command_result r;
    long long sum = 0;
    for (int i = 1; i <= 25; i++) {
        add_cmd c = {.amount = i, .limit = 1000000};
        TU_OK(f->db, annal_handle(h, "s-1", &c, NULL, &r));
        sum += i;
    }
    /* snapshots at revisions 9 and 19 (written when 10 events were loaded past the last) */
    assert_int_equal(count_files(f->snapdir), 1);
    annal_state_info info;
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, 19);
    assert_int_equal(info.folded, 5);
    assert_int_equal(info.revision, 24);
    /* time travel before the snapshot replays from the start */
    assert_int_equal(value_of(h, "s-1", 4, ANNAL_TIME_LATEST, &info), 15);
    assert_int_equal(info.snapshot_revision, -1);
    assert_int_equal(info.folded, 5);
    /* ... and at or after it uses it */
    assert_int_equal(value_of(h, "s-1", 19, ANNAL_TIME_LATEST, &info), 210);
    assert_int_equal(info.snapshot_revision, 19);
    assert_int_equal(info.folded, 0);

    /* deleting snapshots changes no result */
    remove_files(f->snapdir);
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, -1);
    assert_int_equal(info.folded, 25);
    add_cmd c = {.amount = 100, .limit = 1000000};
    TU_OK(f->db, annal_handle(h, "s-1", &c, NULL, &r)); /* loads 25 >= 10: writes one */
    sum += 100;
    assert_int_equal(count_files(f->snapdir), 1);
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, 24);
    annal_handler_close(h);

    /* a new state_version ignores the old snapshot, and the next command replaces it */
    annal_decider d2 = d;
    d2.state_version = 2;
    h = open_handler(f->db, &d2, &x, f->snapdir, 1000);
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, -1);
    TU_OK(f->db, annal_handle(h, "s-1", &c, NULL, &r));
    sum += 100;
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, 25);
    annal_handler_close(h);

    /* a damaged snapshot is ignored (and replaced); the result is the same */
    DIR *dd = opendir(f->snapdir);
    struct dirent *e;
    char path[4096] = "";
    while ((e = readdir(dd)))
        if (e->d_name[0] != '.') snprintf(path, sizeof path, "%s/%s", f->snapdir, e->d_name);
    closedir(dd);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 80, SEEK_SET);
    fputc('X', fp);
    fclose(fp);
    h = open_handler(f->db, &d2, &x, f->snapdir, 1000);
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, -1);
    TU_OK(f->db, annal_handle(h, "s-1", &c, NULL, &r));
    sum += 100;
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(info.snapshot_revision, 26);
    annal_handler_close(h);

    /* a snapshot that does not decode is ignored */
    annal_decider d3 = d2;
    d3.snapshot_decode = bad_decode;
    h = open_handler(f->db, &d3, &x, f->snapdir, 1000);
    int before = x.decodes;
    assert_int_equal(value_of(h, "s-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), sum);
    assert_int_equal(x.decodes, before + 1);
    assert_int_equal(info.snapshot_revision, -1);
    assert_int_equal(info.folded, 28);
    annal_handler_close(h);

    /* a snapshot_dir with a decider that cannot snapshot: not even created */
    size_t n = strlen(f->dir) + 16;
    char *never = malloc(n);
    snprintf(never, n, "%s/never", f->dir);
    annal_decider plain = counter_decider(0);
    h = open_handler(f->db, &plain, &x, never, 1);
    TU_OK(f->db, annal_handle(h, "s-2", &c, NULL, &r));
    TU_OK(f->db, annal_handle(h, "s-2", &c, NULL, &r));
    assert_int_equal(access(never, F_OK), -1);
    annal_handler_close(h);
    free(never);
}

/* A snapshot directory reused with another store: the snapshot's event id does not match
 * that store's event at its revision, so it is ignored. */
static void test_snapshot_other_store(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(1);
    annal_handler *h = open_handler(f->db, &d, NULL, f->snapdir, 5);
    annal_command_result r;
    for (int i = 0; i < 12; i++) {
        add_cmd c = {.amount = 10, .limit = 1000000};
        TU_OK(f->db, annal_handle(h, "o-1", &c, NULL, &r));
    }
    annal_handler_close(h);
    assert_int_equal(count_files(f->snapdir), 1);

    size_t n = strlen(f->dir) + 16;
    char *store2 = malloc(n);
    snprintf(store2, n, "%s/store2", f->dir);
    annal_db *db2 = tu_open(store2, ANNAL_OPEN_NOSYNC);
    for (int i = 0; i < 20; i++)
        TU_OK(db2, tu_append1(db2, "o-1", ANNAL_EXPECT_ANY, "Added", "1", NULL));
    /* the same revision holds another event there */
    h = open_handler(db2, &d, NULL, f->snapdir, 5);
    annal_state_info info;
    assert_int_equal(value_of(h, "o-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), 20);
    assert_int_equal(info.snapshot_revision, -1);
    assert_int_equal(info.folded, 20);
    /* the next command replaces it */
    add_cmd c = {.amount = 1, .limit = 1000000};
    TU_OK(db2, annal_handle(h, "o-1", &c, NULL, &r));
    assert_int_equal(r.folded, 20);
    assert_int_equal(value_of(h, "o-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), 21);
    assert_int_equal(info.snapshot_revision, 19);

    /* a shorter stream than the snapshot's revision (o-2: snapshot at 9 from the first store,
     * 6 events here): ignored, and replaced although it claims a higher revision */
    annal_handler *h1 = open_handler(f->db, &d, NULL, f->snapdir, 5);
    for (int i = 0; i < 12; i++) TU_OK(f->db, annal_handle(h1, "o-2", &c, NULL, &r));
    assert_int_equal(value_of(h1, "o-2", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), 12);
    assert_int_equal(info.snapshot_revision, 9);
    annal_handler_close(h1);
    for (int i = 0; i < 6; i++)
        TU_OK(db2, tu_append1(db2, "o-2", ANNAL_EXPECT_ANY, "Added", "2", NULL));
    TU_OK(db2, annal_handle(h, "o-2", &c, NULL, &r));
    assert_int_equal(value_of(h, "o-2", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), 13);
    assert_int_equal(info.snapshot_revision, 5);
    assert_int_equal(info.folded, 1);
    annal_handler_close(h);
    annal_db_close(db2);
    free(store2);
}

/* ------------------------------------------------------------------------------------
 * Upcasting. History: "Deposited" v1 {"amount":N} (units), v2 {"cents":N*100}, then the
 * type was renamed "MoneyIn" at v3 {"cents":N,"currency":"EUR"}. */

static annal_err up_v1_v2(void *c, const annal_event *ev, annal_buf *out) {
    int *calls = c;
    (*calls)++;
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *a = json_object_get(j, "amount");
    if (!json_is_integer(a)) {
        json_decref(j);
        return ANNAL_ECORRUPT;
    }
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"cents\":%lld}", (long long)json_integer_value(a) * 100);
    json_decref(j);
    return annal_buf_append(out, buf, (size_t)n);
}

static annal_err up_v2_v3(void *c, const annal_event *ev, annal_buf *out) {
    (void)c;
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!j) return ANNAL_ECORRUPT;
    json_object_set_new(j, "currency", json_string("EUR"));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    annal_err rc = annal_buf_append(out, s, strlen(s));
    free(s);
    return rc;
}

typedef struct wallet {
    long long cents;
    int events;
} wallet;

static annal_err w_evolve(void *c, void *state, const annal_event *ev) {
    (void)c;
    wallet *w = state;
    if (strcmp(ev->type, "MoneyIn") != 0) return ANNAL_ECORRUPT;
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *cents = json_object_get(j, "cents");
    const char *cur = json_string_value(json_object_get(j, "currency"));
    annal_err rc =
        json_is_integer(cents) && cur && strcmp(cur, "EUR") == 0 ? ANNAL_OK : ANNAL_ECORRUPT;
    if (rc == ANNAL_OK) w->cents += json_integer_value(cents);
    w->events++;
    json_decref(j);
    return rc;
}

static annal_err w_decide(void *c, const void *state, const void *command, annal_decision *out) {
    (void)c;
    (void)state;
    const long long *cents = command;
    char buf[80];
    int n = snprintf(buf, sizeof buf, "{\"cents\":%lld,\"currency\":\"EUR\"}", *cents);
    return annal_decision_emit(out, "MoneyIn", buf, (size_t)n, NULL, 0);
}

static void test_upcasters(void **state) {
    fx *f = *state;
    int calls = 0;
    annal_schema *s;
    TU_OK(NULL, annal_schema_new(&s));
    assert_int_equal(annal_schema_version(s, "Deposited"), 1);
    TU_OK(NULL, annal_schema_upcaster_add(s, "Deposited", 1, NULL, up_v1_v2, &calls));
    TU_OK(NULL, annal_schema_upcaster_add(s, "Deposited", 2, "MoneyIn", up_v2_v3, NULL));
    assert_int_equal(annal_schema_upcaster_add(s, "Deposited", 2, NULL, NULL, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_schema_upcaster_add(s, "Deposited", 0, NULL, NULL, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_schema_upcaster_add(s, "", 5, NULL, NULL, NULL), ANNAL_EINVAL);
    assert_int_equal(annal_schema_version(s, "MoneyIn"), 3);
    assert_int_equal(annal_schema_version(s, "Deposited"), 2);
    assert_int_equal(annal_schema_version(NULL, "MoneyIn"), 1);

    /* history as old versions of the program wrote it */
    TU_OK(f->db,
          tu_append1(f->db, "w-1", ANNAL_EXPECT_NO_STREAM, "Deposited", "{\"amount\":3}", NULL));
    annal_event_data e2 = {.type = "Deposited",
                           .data = "{\"cents\":250}",
                           .data_len = 13,
                           .metadata = "{\"$schema\":2}",
                           .metadata_len = 13};
    TU_OK(f->db, annal_append(f->db, "w-1", 0, &e2, 1, NULL));

    annal_decider d;
    memset(&d, 0, sizeof d);
    d.version = ANNAL_DECIDER_VERSION;
    d.name = "wallet";
    d.state_size = sizeof(wallet);
    d.evolve = w_evolve;
    d.decide = w_decide;
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.schema = s;
    annal_handler *h;
    TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
    long long cmd = 1000;
    annal_command_result r;
    TU_OK(f->db, annal_handle(h, "w-1", &cmd, NULL, &r));
    assert_int_equal(calls, 1); /* only the v1 event needed the first step */
    /* new events carry the current version */
    json_t *m = meta_at(f->db, "w-1", 2);
    assert_int_equal(json_integer_value(json_object_get(m, "$schema")), 3);
    json_decref(m);
    void *st;
    TU_OK(f->db, annal_state_load(h, "w-1", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &st, NULL));
    assert_int_equal(((wallet *)st)->cents, 300 + 250 + 1000);
    assert_int_equal(((wallet *)st)->events, 3);
    annal_state_free(h, st);
    annal_handler_close(h);

    /* the same through annal_schema_upcast, for readers outside a handler */
    annal_iter *it;
    const annal_event *ev;
    TU_OK(f->db, annal_read_stream(f->db, "w-1", 0, 0, 0, &it));
    const char *want[] = {"{\"cents\":300,\"currency\":\"EUR\"}",
                          "{\"cents\":250,\"currency\":\"EUR\"}",
                          "{\"cents\":1000,\"currency\":\"EUR\"}"};
    for (int i = 0; i < 3; i++) {
        TU_OK(f->db, annal_iter_next(it, &ev));
        annal_event *u;
        TU_OK(NULL, annal_schema_upcast(s, ev, &u));
        assert_string_equal(u->type, "MoneyIn");
        assert_int_equal(u->type_len, 7);
        assert_int_equal(u->data_len, strlen(want[i]));
        assert_memory_equal(u->data, want[i], u->data_len);
        assert_string_equal(u->stream, "w-1");
        assert_int_equal(u->revision, (uint64_t)i);
        assert_int_equal(u->metadata_len, ev->metadata_len);
        annal_free(u);
    }
    annal_iter_close(it);

    /* a malformed "$schema" is an error, not version 1 */
    annal_event fake;
    memset(&fake, 0, sizeof fake);
    fake.type = "Deposited";
    fake.type_len = 9;
    fake.stream = "x";
    fake.stream_len = 1;
    fake.metadata = "{\"$schema\":\"two\"}";
    fake.metadata_len = strlen(fake.metadata);
    uint32_t v;
    assert_int_equal(annal_event_schema_get(&fake, &v), ANNAL_ECORRUPT);
    annal_event *u;
    assert_int_equal(annal_schema_upcast(s, &fake, &u), ANNAL_ECORRUPT);
    fake.metadata = "not json \"$schema\"";
    fake.metadata_len = strlen(fake.metadata);
    TU_OK(NULL, annal_event_schema_get(&fake, &v));
    assert_int_equal(v, 1);
    fake.metadata = "{\"nested\":{\"$schema\":4}}";
    fake.metadata_len = strlen(fake.metadata);
    TU_OK(NULL, annal_event_schema_get(&fake, &v));
    assert_int_equal(v, 1);
    /* an upcaster's error fails the load */
    fake.metadata = NULL;
    fake.metadata_len = 0;
    fake.data = "{}";
    fake.data_len = 2;
    assert_int_equal(annal_schema_upcast(s, &fake, &u), ANNAL_ECORRUPT);
    /* no step: a plain copy */
    fake.type = "Other";
    fake.type_len = 5;
    TU_OK(NULL, annal_schema_upcast(s, &fake, &u));
    assert_string_equal(u->type, "Other");
    assert_memory_equal(u->data, "{}", 2);
    annal_free(u);
    TU_OK(NULL, annal_schema_upcast(NULL, &fake, &u));
    annal_free(u);
    annal_schema_free(s);
    annal_schema_free(NULL);
}

/* Many threads add to one counter through one handler: no update is lost, and every
 * accepted command is in the log exactly once. */
#define THREADS 6
#if defined(__SANITIZE_ADDRESS__)
#define PER 10 /* ASan's allocator makes contended runs ~50x slower on 2 cores */
#else
#define PER 40
#endif

typedef struct worker {
    annal_handler *h;
    int ok, conflicts, other;
    long long added;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    for (int i = 0; i < PER; i++) {
        add_cmd c = {.amount = 1 + (i % 3), .limit = 1LL << 40};
        annal_command_result r;
        annal_err rc = annal_handle(w->h, "shared", &c, NULL, &r);
        if (rc == ANNAL_OK && !r.rejected) {
            w->ok++;
            w->added += c.amount;
        } else if (rc == ANNAL_ECONFLICT) {
            w->conflicts++;
        } else {
            w->other++;
        }
    }
    return NULL;
}

static void test_threads(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(1);
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    o.max_retries = 1000;
    o.snapshot_dir = f->snapdir;
    o.snapshot_every = 16;
    annal_handler *h;
    TU_OK(f->db, annal_handler_open(f->db, &d, &o, &h));
    pthread_t t[THREADS];
    worker w[THREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++) {
        w[i].h = h;
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    long long added = 0;
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].other, 0);
        assert_int_equal(w[i].conflicts, 0);
        added += w[i].added;
        ok += w[i].ok;
    }
    assert_int_equal(ok, THREADS * PER);
    annal_state_info info;
    assert_int_equal(value_of(h, "shared", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), added);
    assert_int_equal(info.revision, ok - 1);
    remove_files(f->snapdir);
    assert_int_equal(value_of(h, "shared", ANNAL_REVISION_LATEST, ANNAL_TIME_LATEST, &info), added);
    annal_handler_close(h);
}

static void test_buf_and_decision_args(void **state) {
    (void)state;
    assert_int_equal(annal_buf_append(NULL, "x", 1), ANNAL_EINVAL);
    assert_int_equal(annal_decision_emit(NULL, "T", NULL, 0, NULL, 0), ANNAL_EINVAL);
    assert_int_equal(annal_decision_reject(NULL, 1, "x"), ANNAL_EINVAL);
    annal_handler_opts o;
    annal_handler_opts_init(&o);
    assert_int_equal(o.max_retries, 10);
    assert_int_equal(o.snapshot_every, 100);
    assert_null(o.snapshot_dir);
    annal_handler_opts_init(NULL);
}

/* decide() errors and emits that fail: the command fails, nothing is written. */
static annal_err bad_decide(void *c, const void *state, const void *command, annal_decision *out) {
    (void)c;
    (void)state;
    int mode = *(const int *)command;
    if (mode == 0) return ANNAL_ENOMEM;
    if (mode == 1) {
        annal_decision_emit(out, "", "x", 1, NULL, 0); /* invalid type, error ignored */
        return ANNAL_OK;
    }
    if (mode == 2) return annal_decision_reject(out, 0, "zero code");
    annal_decision_emit(out, "Added", "1", 1, NULL, 0);
    return annal_decision_reject(out, 3, "changed my mind"); /* the emitted event is dropped */
}

static void test_decide_failures(void **state) {
    fx *f = *state;
    annal_decider d = counter_decider(0);
    d.decide = bad_decide;
    annal_handler *h = open_handler(f->db, &d, NULL, NULL, 0);
    annal_command_result r;
    int mode = 0;
    assert_int_equal(annal_handle(h, "b-1", &mode, NULL, &r), ANNAL_ENOMEM);
    mode = 1;
    assert_int_equal(annal_handle(h, "b-1", &mode, NULL, &r), ANNAL_EINVAL);
    mode = 2;
    assert_int_equal(annal_handle(h, "b-1", &mode, NULL, &r), ANNAL_EINVAL);
    mode = 3;
    TU_OK(f->db, annal_handle(h, "b-1", &mode, NULL, &r));
    assert_int_equal(r.rejected, 3);
    assert_string_equal(r.message, "changed my mind");
    uint64_t head;
    assert_int_equal(annal_stream_head(f->db, "b-1", &head), ANNAL_ENOTFOUND);
    annal_handler_close(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decide_reject_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_retry_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evolve_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_travel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_other_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upcasters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test(test_buf_and_decision_args),
        cmocka_unit_test_setup_teardown(test_decide_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
