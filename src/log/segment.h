/* The log: a directory of segment files, each mapped read-only for readers, with one
 * writer appending at the tail of the last. Segments are never unmapped while the log
 * is open, so a segment pointer handed out stays valid until annal__log_close. */
#ifndef ANNAL_SEGMENT_H
#define ANNAL_SEGMENT_H

#include <pthread.h>
#include <stdint.h>

#include "annal.h"
#include "log/io.h"
#include "log/record.h"

typedef struct annal__seg {
    uint64_t no;        /* segment number (file name) */
    uint64_t first_pos; /* from the header */
    uint64_t cap;       /* capacity from the header; the mapping is this long */
    int fd;
    const uint8_t *map; /* read-only mapping, cap bytes (pages past EOF must not be touched) */
    uint64_t size;      /* bytes of file known to exist (atomic; grows) */
} annal__seg;

typedef struct annal__log {
    const annal__io *io;
    char *dir; /* DIR/log */
    int readonly;
    pthread_mutex_t mu; /* guards segs/nsegs growth */
    annal__seg **segs;  /* segs[i] has number base + i */
    uint64_t base;
    size_t nsegs, capsegs;
} annal__log;

/* A location in the log: segment number << 32 | byte offset. */
#define ANNAL__LOC(seg, off) (((uint64_t)(seg) << 32) | (uint64_t)(off))
#define ANNAL__LOC_SEG(loc)  ((loc) >> 32)
#define ANNAL__LOC_OFF(loc)  ((loc)&0xffffffffu)

/* Open the log in dir (created when create is set). Every segment file is opened and
 * its header checked; a last segment whose header is torn (crash while creating it)
 * is removed when writable. detail receives a message on failure. */
annal_err annal__log_open(annal__log *log, const annal__io *io, const char *dir, int readonly,
                          int create, char *detail, size_t detail_len);
void annal__log_close(annal__log *log);

/* Segment number no, opening it if another process created it since. NULL if absent. */
annal__seg *annal__log_seg(annal__log *log, uint64_t no);
/* The last segment, or NULL for an empty log. */
annal__seg *annal__log_last(annal__log *log);

/* Create segment no starting at first_pos with capacity cap: header written and made
 * durable with its directory entry. Returns -errno or 0. */
int annal__log_add(annal__log *log, uint64_t no, uint64_t first_pos, uint64_t cap,
                   annal__seg **out);

/* Make sure bytes [0, end) of seg exist on disk (preallocation in growing chunks).
 * -errno (ENOSPC) leaves the log unchanged. */
int annal__seg_reserve(annal__log *log, annal__seg *seg, uint64_t end);

/* Make seg readable up to end: refreshes the known size from the file when needed.
 * ANNAL_ECORRUPT if the file is shorter. */
annal_err annal__seg_readable(annal__log *log, annal__seg *seg, uint64_t end);

/* A forward reader of consecutive records, crossing segment boundaries. */
typedef struct annal__cursor {
    annal__log *log;
    annal__seg *seg;
    uint64_t off; /* offset of the next record in seg */
    uint64_t pos; /* position the next record must carry */
} annal__cursor;

/* Read the record at the cursor into ev, checking its position, and advance.
 * ANNAL_END at the clean end of the data, ANNAL_ECORRUPT otherwise. *loc_out (may be
 * NULL) gets the record's location, info its framing. */
annal_err annal__cursor_next(annal__cursor *c, annal_event *ev, annal__rec_info *info,
                             uint64_t *loc_out);

/* If the cursor stands at the clean end of a segment and the next segment starts at
 * its position, move it there (no record is consumed). */
void annal__cursor_settle(annal__cursor *c);

/* Step over a damaged record at the cursor when its length field still leads to a
 * valid record carrying the next position. ANNAL_OK if resynchronised. */
annal_err annal__cursor_skip(annal__cursor *c);

/* Decode the record at loc and check it carries position pos (UINT64_MAX: any). */
annal_err annal__log_read_at(annal__log *log, uint64_t loc, uint64_t pos, annal_event *ev,
                             annal__rec_info *info);

#endif
