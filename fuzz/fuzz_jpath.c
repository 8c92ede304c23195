/* Fuzz target: the JSON paths of a projection's SQL parameters (`:data.items[0].qty`) and
 * the scanner that extracts their value from an event's JSON without building a tree
 * (src/project/jpath.c). Input: a path, a newline, then the event's JSON. Invariant: a
 * malformed path or document is refused; an extracted value lies within bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "project_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t plen = nl ? (size_t)(nl - s) : size;
    /* the parser and the scanner get exactly their bytes: ASan sees any read past them */
    char *path_txt = malloc(plen ? plen : 1);
    size_t jlen = nl ? size - plen - 1 : 0;
    char *json = malloc(jlen ? jlen : 1);
    if (!path_txt || !json) abort();
    memcpy(path_txt, s, plen);
    if (jlen) memcpy(json, nl + 1, jlen);
    pj_path path;
    char msg[256];
    if (annal__pj_path_parse(path_txt, plen, &path, msg, sizeof msg) == 0) {
        annal_proj_value v;
        char *scratch = NULL;
        size_t cap = 0;
        if (annal__pj_json_get(json, jlen, &path, &v, &scratch, &cap) == 0 &&
            v.kind == ANNAL_PROJ_TEXT) {
            /* text is either a slice of the document or unescaped into scratch */
            int in_doc = v.s >= json && v.s + v.len <= json + jlen;
            int in_scratch = scratch && v.s >= scratch && v.s + v.len <= scratch + cap;
            if (!in_doc && !in_scratch && v.len) abort();
        }
        free(scratch);
        annal__pj_path_free(&path);
    }
    free(path_txt);
    free(json);
    return 0;
}
