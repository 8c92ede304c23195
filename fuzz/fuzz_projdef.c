/* Fuzz target: projection definition files (.proj, src/project/def.c): the header lines,
 * [schema], [on Type] SQL whose :placeholders are translated for SQLite and PostgreSQL,
 * and [lua]. With a server, these arrive over the network. Invariant: a bad file is a
 * clear error (a message naming its line), never a crash.
 * Parsing a [lua] section only compiles its chunk (text mode), so `while true do end` is
 * a valid definition, not a hang; the Lua bridges have their own target (fuzz_lua). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "annal_project.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    char *text = malloc(size ? size : 1); /* exactly the input: no terminator to lean on */
    if (!text) abort();
    if (size) memcpy(text, data, size);
    annal_proj_def *d = NULL;
    char err[512] = "";
    annal_err rc = annal_proj_def_parse(text, size, "f.proj", &d, err, sizeof err);
    if (rc == ANNAL_OK) {
        if (!d) abort();
        (void)annal_proj_def_name(d); /* each may be absent: given when opening */
        (void)annal_proj_def_source(d);
        (void)annal_proj_def_target(d);
        (void)annal_proj_def_emits(d);
    } else if (d || !err[0]) {
        abort(); /* a refusal says why, and returns nothing */
    }
    annal_proj_def_free(d);
    free(text);
    return 0;
}
