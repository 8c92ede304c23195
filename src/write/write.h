/* write.h -- internals shared by the command side's files (src/write/), which are built
 * only on the public API of annal.h. Nothing here is exported from the library. */
#ifndef ANNAL_WRITE_H
#define ANNAL_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "annal.h"

/* ---- buf.c */

struct annal_buf {
    unsigned char *p;
    size_t len, cap;
};

void annal__write_buf_init(annal_buf *b);
void annal__write_buf_free(annal_buf *b);
/* Drop the contents, keep the memory. */
static inline void annal__write_buf_clear(annal_buf *b) { b->len = 0; }

/* ---- decision.c */

struct annal_decision {
    annal_event_data *ev; /* each ev[i].type heads one allocation holding type, data, meta */
    char **merged;        /* per event: metadata made by the handler, or NULL */
    size_t n, cap;
    annal_err err; /* first failed emit: the command fails with it even if decide ignored it */
    int code;      /* rejection code; 0: not rejected */
    char reason[256];
    annal_tag_list *tl; /* per event: its tags (annal_decision_emit_tagged), or none */
    char **tagblk;      /* per event: one allocation holding its tag list, or NULL */
};

void annal__write_decision_init(annal_decision *d);
/* Forget every event and the rejection; keep the arrays. */
void annal__write_decision_reset(annal_decision *d);
void annal__write_decision_free(annal_decision *d);

/* ---- schema.c */

/* Whether any upcaster starts from `type`: events of other types skip the metadata scan. */
int annal__write_schema_touches(const annal_schema *s, const char *type);

/* Upcast ev through s. On ANNAL_OK *out is ev itself (nothing to do) or tmp filled with
 * ev's fields and type/data pointing into the registry and into bufs[0] or bufs[1], valid
 * until the bufs change. */
annal_err annal__write_upcast(const annal_schema *s, const annal_event *ev, annal_event *tmp,
                              annal_buf bufs[2], const annal_event **out);

/* ---- meta.c */

/* The command's metadata, parsed once per command (a jansson object, or NULL when the
 * command brings nothing). */
typedef struct annal__write_cmeta {
    void *obj; /* json_t * */
} annal__write_cmeta;

/* Parse meta (may be NULL) into *cm. ANNAL_EINVAL (with detail in err) if a string is not
 * UTF-8 or extra is not a JSON object; ANNAL_ENOMEM. */
annal_err annal__write_cmeta_init(annal__write_cmeta *cm, const annal_command_meta *meta, char *err,
                                  size_t errlen);
void annal__write_cmeta_free(annal__write_cmeta *cm);

/* The metadata to store for one event: its own metadata (meta, len) with the command's
 * members and "$schema": schema (when above 1) set. *out is NULL when nothing needs adding
 * (store meta as is); otherwise a malloc'd text of *out_len bytes the caller frees.
 * ANNAL_EINVAL (detail in err) when meta is not empty and not a JSON object. */
annal_err annal__write_meta_merge(const annal__write_cmeta *cm, uint32_t schema, const void *meta,
                                  size_t len, char **out, size_t *out_len, char *err,
                                  size_t errlen);

/* ---- handler.c, for query.c */

/* What annal_handle_query needs of a handler (handler.c owns its struct). */
typedef struct annal__write_hview {
    annal_db *db;
    const annal_decider *d;
    void *ctx;
    unsigned max_retries;
    const annal_schema *schema;
} annal__write_hview;
void annal__write_handler_view(const annal_handler *h, annal__write_hview *out);
/* Give each decided event its final metadata (the command's, "$schema"). */
annal_err annal__write_prepare(const annal_schema *schema, const annal__write_cmeta *cm,
                               annal_decision *d, char *err, size_t errlen);

/* ---- snapshot.c */

typedef struct annal__write_snap {
    uint32_t state_version;
    uint64_t revision;
    uint64_t position;
    int64_t timestamp_ns;
    annal_uuid id; /* id of the event at revision: proves the snapshot belongs to this log */
    annal_buf state;
} annal__write_snap;

/* Read the snapshot of (decider, stream) from dir into *snap (snap->state must be an
 * initialised buffer). ANNAL_ENOTFOUND: no file; ANNAL_ECORRUPT: a file that is damaged or
 * is not this stream's; ANNAL_EIO; ANNAL_ENOMEM. */
annal_err annal__write_snap_read(const char *dir, const char *decider, const char *stream,
                                 annal__write_snap *snap);

/* Write it atomically: temporary file, fdatasync, rename over the old one. */
annal_err annal__write_snap_write(const char *dir, const char *decider, const char *stream,
                                  const annal__write_snap *snap);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start). */
uint32_t annal__write_crc32c(uint32_t crc, const void *p, size_t n);

#endif
