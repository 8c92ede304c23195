/* buf.c -- annal_buf, the growing byte buffer that decider and upcaster callbacks write
 * their output into. The library owns the memory, so callbacks never allocate for us. */
#include <stdlib.h>
#include <string.h>

#include "write.h"

void annal__write_buf_init(annal_buf *b) { memset(b, 0, sizeof *b); }

void annal__write_buf_free(annal_buf *b) {
    free(b->p);
    annal__write_buf_init(b);
}

annal_err annal_buf_append(annal_buf *b, const void *data, size_t len) {
    if (!b || (!data && len)) return ANNAL_EINVAL;
    if (len == 0) return ANNAL_OK;
    if (len > SIZE_MAX / 2 - b->len) return ANNAL_ENOMEM;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) return ANNAL_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return ANNAL_OK;
}
