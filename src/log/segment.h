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
    uint32_t gen;       /* generation: 0 as written, +1 per compaction (file name too) */
    uint64_t first_pos; /* from the header */
    uint64_t cap;       /* capacity from the header; the mapping is this long */
    int fd;
    const uint8_t *map; /* read-only mapping, cap bytes (pages past EOF must not be touched) */
    uint64_t size;      /* bytes of file known to exist (atomic; grows) */
    uint64_t claim;     /* end of the writer's last annal__seg_claim (under grow_mu) */
    struct annal__seg *older; /* generations replaced by compaction, kept mapped until
                               * the log closes so pointers handed out stay valid */
} annal__seg;

typedef struct annal__log {
    const annal__io *io;
    char *dir; /* DIR/log */
    int readonly;
    pthread_mutex_t mu; /* guards segs/nsegs growth */
    annal__seg **segs;  /* segs[i] has number base + i */
    uint64_t base;
    size_t nsegs, capsegs;
    /* Preallocation ahead of the writer (annal__log_start_grower). grow_mu serializes
     * every extension of a segment; gmu/gcv carry the writer's hints to the thread. */
    pthread_mutex_t grow_mu;
    pthread_mutex_t gmu;
    pthread_cond_t gcv;
    pthread_t grower;
    int has_grower, grow_stop;
    annal__seg *grow_seg; /* extend this segment ... */
    uint64_t grow_to;     /* ... to at least this many bytes */
} annal__log;

/* A location in the log: generation (low 8 bits) << 56 | segment number << 32 | byte
 * offset. Segment numbers stay below 2^24 (4 PiB of 256 MiB segments). A location of an
 * older generation still resolves while the log is open (readers of an old snapshot). */
#define ANNAL__LOCG(gen, seg, off)                                                                 \
    (((uint64_t)((gen)&0xffu) << 56) | (((uint64_t)(seg)&0xffffffu) << 32) | (uint64_t)(off))
#define ANNAL__LOC(seg, off)   ANNAL__LOCG(0, seg, off)
#define ANNAL__SEG_LOC(s, off) ANNAL__LOCG((s)->gen, (s)->no, off)
#define ANNAL__LOC_SEG(loc)    (((loc) >> 32) & 0xffffffu)
#define ANNAL__LOC_GEN(loc)    ((uint32_t)((loc) >> 56))
#define ANNAL__LOC_OFF(loc)    ((loc)&0xffffffffu)
#define ANNAL__MAX_SEGNO       0xffffffu

/* Open the log in dir (created when create is set). Every segment file is opened and
 * its header checked; a last segment whose header is torn (crash while creating it)
 * is removed when writable. detail receives a message on failure. */
annal_err annal__log_open(annal__log *log, const annal__io *io, const char *dir, int readonly,
                          int create, char *detail, size_t detail_len);
void annal__log_close(annal__log *log);

/* Segment number no, opening it if another process created it since. NULL if absent. */
annal__seg *annal__log_seg(annal__log *log, uint64_t no);
/* The segment holding loc, of loc's generation: the current one, an older one still
 * mapped, or a newer one another handle's compaction made (opened and made current).
 * NULL if that generation cannot be found. */
annal__seg *annal__log_seg_at(annal__log *log, uint64_t loc);

/* Can loc's segment generation still be read? (No: compaction replaced and deleted it.) */
static inline int annal__log_has(annal__log *log, uint64_t loc) {
    return annal__log_seg_at(log, loc) != NULL;
}

/* A file of DIR/log: segment number, generation, and whether it is a tmp name. */
typedef struct annal__seg_file {
    uint64_t no;
    uint32_t gen;
    int tmp;
} annal__seg_file;

/* The segment files in dir (DIR/log), sorted by number, then generation, tmp names after
 * the others. *out is malloc'd (the caller frees it). 0 or -errno. */
int annal__seg_list(const char *dir, annal__seg_file **out, size_t *n);

/* Path of segment no, generation gen (tmp: the name it is written under first). */
void annal__seg_path(const annal__log *log, uint64_t no, uint32_t gen, int tmp, char *out,
                     size_t len);
/* Open generation gen of segment no (from its tmp name if tmp) and make it current; the
 * replaced one stays mapped. ANNAL_ENOTFOUND if no such file. */
annal_err annal__log_install(annal__log *log, uint64_t no, uint32_t gen, int tmp);

/* The current segment whose positions include pos (the last one starting at or below
 * it), learning of newer segments in a read-only log. NULL if pos is below the log. */
annal__seg *annal__log_seg_for(annal__log *log, uint64_t pos);

/* The last segment, or NULL for an empty log. */
annal__seg *annal__log_last(annal__log *log);

/* Create segment no starting at first_pos with capacity cap: header written and made
 * durable with its directory entry. Returns -errno or 0. */
int annal__log_add(annal__log *log, uint64_t no, uint64_t first_pos, uint64_t cap,
                   annal__seg **out);

/* Make sure bytes [0, end) of seg exist on disk (preallocation in growing chunks).
 * -errno (ENOSPC) leaves the log unchanged. */
int annal__seg_reserve(annal__log *log, annal__seg *seg, uint64_t end);

/* Let the writer's next write, up to end, extend seg itself without zeros written first:
 * a large flush is better off paying for the file's growth once, in its own fdatasync,
 * than writing every byte twice. Checks that the filesystem has room for the growth
 * (with a margin), so that a full disk is met here, before anything is written: -ENOSPC
 * (or another -errno) leaves the log unchanged. Preallocation never zeroes below a
 * claim. Once the write has landed, annal__seg_wrote says so. */
int annal__seg_claim(annal__log *log, annal__seg *seg, uint64_t end);
void annal__seg_wrote(annal__seg *seg, uint64_t end);

/* A writer's thread that extends the segment being written ahead of the appends, so
 * that no append waits for preallocation (annal__seg_reserve then finds the bytes
 * there). Best effort: a failure (a full disk) is left for annal__seg_reserve to meet
 * and report. 0 or -errno. */
int annal__log_start_grower(annal__log *log);
/* Ask the grower to have [0, end) of seg preallocated soon (cheap; no-op without one). */
void annal__log_grow_hint(annal__log *log, annal__seg *seg, uint64_t end);
void annal__log_stop_grower(annal__log *log);
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

/* The same; check = 0 skips the checksums of records already checked. */
annal_err annal__cursor_next2(annal__cursor *c, annal_event *ev, annal__rec_info *info,
                              uint64_t *loc_out, int check);

/* Move the cursor forward until the next record it returns is the first event at or
 * after pos, consuming nothing at or after pos: inside a hole (erased events) that
 * covers pos, the cursor stays on the hole with its position set to pos. Damaged
 * records below pos are stepped over as annal__cursor_skip does. ANNAL_END if the log
 * ends before pos. */
annal_err annal__cursor_seek(annal__cursor *c, uint64_t pos);

/* If the cursor stands at the clean end of a segment and the next segment starts at
 * its position, move it there (no record is consumed). */
void annal__cursor_settle(annal__cursor *c);

/* Step over a damaged record at the cursor when its length field still leads to a
 * valid record carrying the next position. ANNAL_OK if resynchronised. */
annal_err annal__cursor_skip(annal__cursor *c);

/* The framing of the record at off in seg, without decoding or checking the rest: its
 * position, length, whether it is an event (else a hole) and the positions it stands
 * for (1, or a hole's count). For walks that only need to find records; whoever
 * returns an event decodes it in full. ANNAL_ECORRUPT if the framing is not sane. */
annal_err annal__seg_peek(annal__log *log, annal__seg *seg, uint64_t off, uint64_t *pos,
                          uint64_t *span, uint32_t *len, int *event);
/* Decode the record at loc and check it carries position pos (UINT64_MAX: any). */
annal_err annal__log_read_at(annal__log *log, uint64_t loc, uint64_t pos, annal_event *ev,
                             annal__rec_info *info);

#endif
