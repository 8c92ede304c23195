/* Read-only handles map the index as large as its file, not index_map_bytes (1 TiB by
 * default): they open under `ulimit -v 4G`, and map more when a writer in another
 * process has grown the index beyond what they mapped. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1 /* (their shadow memory needs far more address space than 4 GiB) */
#else
#define SANITIZED 0
#endif

static void append_many(const char *dir, uint64_t map_bytes, int n) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_CREATE | ANNAL_OPEN_NOSYNC;
    if (map_bytes) o.index_map_bytes = map_bytes;
    annal_db *db = NULL;
    TU_OK(NULL, annal_db_open(dir, &o, &db));
    for (int i = 0; i < n; i++) {
        char stream[32];
        snprintf(stream, sizeof stream, "s-%d", i); /* a stream each: the index grows */
        TU_OK(db, tu_append1(db, stream, ANNAL_EXPECT_ANY, "T", "{}", NULL));
    }
    annal_db_close(db);
}

/* Events of $all through a read-only handle db; -1 on a failure. */
static long count_all(annal_db *db) {
    annal_iter *it;
    if (annal_read_all(db, 0, 0, 0, &it) != ANNAL_OK) return -1;
    const annal_event *ev;
    long n = 0;
    annal_err rc;
    while ((rc = annal_iter_next(it, &ev)) == ANNAL_OK) n++;
    annal_iter_close(it);
    return rc == ANNAL_END ? n : -1;
}

static annal_db *open_ro(const char *dir) {
    annal_db_opts o;
    annal_db_opts_init(&o);
    o.flags = ANNAL_OPEN_READONLY;
    annal_db *db = NULL;
    return annal_db_open(dir, &o, &db) == ANNAL_OK ? db : NULL;
}

static void opens_under_ulimit_v(void **state) {
    (void)state;
    if (SANITIZED) skip();
    char *dir = tu_tmpdir("rolimit");
    append_many(dir, 0, 2000);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {4ull << 30, 4ull << 30};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(2);
        annal_db *db = open_ro(dir);
        if (!db) _exit(3);
        long n = count_all(db);
        annal_db_close(db);
        _exit(n == 2000 ? 0 : 4);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    tu_rmrf(dir);
    free(dir);
}

/* The reader mapped a small index; a writer (another process) grows it well beyond:
 * the reader's next reads see everything. */
static void reader_follows_a_grown_index(void **state) {
    (void)state;
    char *dir = tu_tmpdir("roremap");
    append_many(dir, 2u << 20, 10); /* a writer capped at 2 MiB leaves a 2 MiB file */
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        annal_db *db = open_ro(dir);
        long before = db ? count_all(db) : -1;
        char c = 'r';
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(2);
        long after = db ? count_all(db) : -1;
        annal_db_close(db);
        _exit(before == 10 && after == 30010 ? 0 : 3);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    append_many(dir, 0, 30000);
    assert_int_equal(write(go[1], &c, 1), 1);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    for (int i = 0; i < 2; i++) close(ready[i]), close(go[i]);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(opens_under_ulimit_v),
        cmocka_unit_test(reader_follows_a_grown_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
