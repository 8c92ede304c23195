/* Fuzz target: snapshot files (src/write/snapshot.c). A snapshot lives outside the log, so
 * a damaged disk or a copied directory can hand the reader anything. The input becomes the
 * snapshot file of a (decider, stream) pair, with short names and with names longer than
 * most inputs, and is read as given and with its CRC recomputed (so that mutations reach
 * the checks behind the checksum). Invariant: a read either fails (ECORRUPT and friends)
 * or yields a state of exactly the bytes the file holds for it. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "write/write.h"

static const char *const names[2][2] = {
    {"d", "s"}, {"a-decider-named-at-length", "a-stream-named-at-length-too"}};
static char dir[64], paths[2][4200];

static void cleanup(void) {
    for (int i = 0; i < 2; i++)
        if (paths[i][0]) unlink(paths[i]);
    if (dir[0]) rmdir(dir);
}

/* A real snapshot written once gives the file name the reader will look for. */
static int find_path(int k) {
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    if (annal__write_snap_write(dir, names[k][0], names[k][1], &sn) != ANNAL_OK) return -1;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".snap") && (k == 0 || strcmp(p, paths[0]) != 0))
            memcpy(paths[k], p, sizeof p);
    }
    if (d) closedir(d);
    return paths[k][0] ? 0 : -1;
}

static int setup(void) {
    memcpy(dir, "/dev/shm/annal-fzsnap-XXXXXX", sizeof "/dev/shm/annal-fzsnap-XXXXXX");
    if (!mkdtemp(dir)) {
        memcpy(dir, "/tmp/annal-fzsnap-XXXXXX", sizeof "/tmp/annal-fzsnap-XXXXXX");
        if (!mkdtemp(dir)) return -1;
    }
    atexit(cleanup);
    return find_path(0) == 0 && find_path(1) == 0 ? 0 : -1;
}

static void read_as(int k, const uint8_t *data, size_t size) {
    FILE *f = fopen(paths[k], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    annal__write_snap sn;
    memset(&sn, 0, sizeof sn);
    annal__write_buf_init(&sn.state);
    if (annal__write_snap_read(dir, names[k][0], names[k][1], &sn) == ANNAL_OK) {
        /* 72 header bytes, the two names, the state, a 4-byte CRC */
        size_t nl = strlen(names[k][0]) + strlen(names[k][1]);
        if (size < 72 + nl + 4 || sn.state.len != size - 72 - nl - 4) abort();
        if (sn.state.len && memcmp(sn.state.p, data + 72 + nl, sn.state.len) != 0) abort();
    }
    annal__write_buf_free(&sn.state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        if (setup() != 0) abort();
        ready = 1;
    }
    for (int k = 0; k < 2; k++) {
        read_as(k, data, size);
        if (size < 8) continue;
        uint8_t *b = malloc(size);
        if (!b) abort();
        memcpy(b, data, size);
        uint32_t crc = annal__write_crc32c(0, b, size - 4);
        for (int i = 0; i < 4; i++) b[size - 4 + i] = (uint8_t)(crc >> (8 * i));
        read_as(k, b, size);
        free(b);
    }
    return 0;
}
