/* Fuzz target: the JSON lines `annal import` accepts (src/cli/import.c's line parser and
 * the JSON helpers of src/cli/json.c). Invariants: no crash or sanitizer report; a line
 * that parses yields a stream and a type the store would accept or refuse cleanly, and
 * data that re-serialises as valid JSON when it was JSON. */
#include <jansson.h>

#include "../src/cli/import.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && s[i] != '\n') continue;
        line_event le;
        char err[256];
        if (parse_line(s + start, i - start, &le, err, sizeof err) == 0) {
            if (!le.stream || !le.type) abort();
            line_event_free(&le);
        } else if (err[0] == 0) {
            abort(); /* a refusal always says why */
        }
        start = i + 1;
    }
    if (cli_json_valid(data, size)) {
        cli_buf b = {0};
        cli_json_add_compact(&b, data, size);
        json_error_t je;
        json_t *j = json_loadb(b.p ? b.p : "", b.len, CLI_JSON_FLAGS, &je);
        if (!j) abort(); /* compacting valid JSON keeps it valid */
        json_decref(j);
        cli_buf_free(&b);
    }
    return 0;
}
