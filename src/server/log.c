/*
 * log.c -- what every file of the server uses: its log, whether it is stopping, and ids
 * for scavenges and the like. The bottom floor of src/server (nothing here calls up).
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "server_int.h"

void srv_log(annal_server *srv, annal_log_level level, const char *fmt, ...) {
    if (!srv->log || level > srv->log_level) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    srv->log(srv->log_ctx, level, buf);
}

int srv_stopping(annal_server *srv) {
    pthread_mutex_lock(&srv->mu);
    int s = srv->stopping;
    pthread_mutex_unlock(&srv->mu);
    return s;
}

void srv_random_id(annal_uuid *id) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)id;
    for (int i = 0; i < 16; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        id->bytes[i] = (uint8_t)x;
    }
    id->bytes[6] = (uint8_t)((id->bytes[6] & 0x0f) | 0x40);
    id->bytes[8] = (uint8_t)((id->bytes[8] & 0x3f) | 0x80);
}
