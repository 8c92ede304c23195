/* Helpers shared by the C tests: temporary store directories and assertions that print
 * annal error names. Include after <cmocka.h>'s prerequisites (done here). */
#ifndef ANNAL_TESTUTIL_H
#define ANNAL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "annal.h"

/* A fresh empty directory under $ANNAL_TEST_TMP (or /tmp); caller frees with free(). */
char *tu_tmpdir(const char *tag);
/* rm -rf dir. */
void tu_rmrf(const char *dir);

/* Assert rc == want, printing both names and the db's detail message on failure. */
#define TU_EXPECT(db, rc, want) tu_expect((db), (rc), (want), #rc, __FILE__, __LINE__)
#define TU_OK(db, rc)           TU_EXPECT((db), (rc), ANNAL_OK)
void tu_expect(annal_db *db, annal_err rc, annal_err want, const char *expr, const char *file,
               int line);

/* Open (creating) a store with default options plus extra_flags. */
annal_db *tu_open(const char *dir, unsigned extra_flags);

/* Append one event with type and NUL-terminated JSON data; returns the error. */
annal_err tu_append1(annal_db *db, const char *stream, int64_t expected, const char *type,
                     const char *data, annal_append_result *res);

#endif
