/*
 * store/marker.h -- the marker files of a backup in its directory: DIR/backup (the
 * manifest, written last) and DIR/backup-incomplete (the flag, written first). Below both
 * store/db.c (which refuses to open a copy cut short) and store/backup.c (which writes them).
 */
#ifndef ANNAL_STORE_MARKER_H
#define ANNAL_STORE_MARKER_H

#include <stddef.h>
#include <stdint.h>

#define ANNAL__BACKUP_FLAG     "backup-incomplete"
#define ANNAL__BACKUP_MANIFEST "backup"

typedef struct annal__manifest {
    uint64_t token;    /* the flag file of the same backup carries it too */
    uint64_t next_pos; /* every position below it is in the backup */
    uint64_t last_seg; /* the last segment copied, and where its data ends */
    uint64_t last_off;
    int64_t time_ns;
} annal__manifest;

/* A small file's text into buf (NUL added): its length, or -errno. */
int annal__small_read(const char *path, char *buf, size_t cap);
/* Write dir/name durably: a tmp file, flushed, renamed, directory flushed. 0 or -errno. */
int annal__small_write(const char *dir, const char *name, const char *text);
/* The manifest's text, with its CRC, into out; its length. */
int annal__manifest_text(const annal__manifest *m, char *out, size_t cap);
/* 0 and *m if dir holds a valid manifest, else -errno (-EINVAL: damaged). */
int annal__manifest_read(const char *dir, annal__manifest *m);
/* The token of dir's flag file: 1 and *token if there is one, 0 if none, -errno. */
int annal__backup_flag_read(const char *dir, uint64_t *token);
int annal__backup_flag_write(const char *dir, uint64_t token);
int annal__backup_flag_remove(const char *dir);
/* 1 if dir is a backup or restore that did not finish (annal_db_open refuses it). */
int annal__backup_incomplete(const char *dir);

#endif
