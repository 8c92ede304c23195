/* The writer lock cannot be taken away: deleting DIR/lock while a writer runs does not
 * let a second writer in (it would interleave records with the first), and the lock an
 * older annal takes (a flock on DIR/lock) still keeps a new writer out. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* Open dir for writing in a child process; its annal_err. */
static int open_in_child(const char *dir) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        annal_db *db = NULL;
        annal_db_opts o;
        annal_db_opts_init(&o);
        annal_err rc = annal_db_open(dir, &o, &db);
        annal_db_close(db);
        _exit((int)rc);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void deleted_lock_file_keeps_second_writer_out(void **state) {
    (void)state;
    char *dir = tu_tmpdir("lock");
    annal_db *db = tu_open(dir, 0);
    TU_OK(db, tu_append1(db, "a", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    assert_int_equal(open_in_child(dir), ANNAL_EBUSY);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(open_in_child(dir), ANNAL_EBUSY);
    assert_int_equal(open_in_child(dir), ANNAL_EBUSY); /* (a new DIR/lock exists now) */
    TU_OK(db, tu_append1(db, "a", ANNAL_EXPECT_ANY, "T", "{}", NULL));
    annal_db_close(db);
    assert_int_equal(open_in_child(dir), ANNAL_OK); /* released at close */
    TU_OK(NULL, annal_verify(dir, NULL, NULL, NULL));
    tu_rmrf(dir);
    free(dir);
}

/* A writer of an older version holds only a flock on DIR/lock. */
static void old_style_lock_is_honoured(void **state) {
    (void)state;
    char *dir = tu_tmpdir("oldlock");
    annal_db *db = tu_open(dir, 0);
    annal_db_close(db);
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    assert_int_equal(open_in_child(dir), ANNAL_EBUSY);
    close(fd);
    assert_int_equal(open_in_child(dir), ANNAL_OK);
    tu_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deleted_lock_file_keeps_second_writer_out),
        cmocka_unit_test(old_style_lock_is_honoured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
