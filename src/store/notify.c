/* Placeholder: replaced by the subscription work. */
#include "store/db_int.h"
annal_err annal__notify_open(annal_db *db) {
    (void)db;
    return ANNAL_OK;
}
void annal__notify_close(annal_db *db) { (void)db; }
void annal__notify_publish(annal_db *db, uint64_t visible) {
    (void)db;
    (void)visible;
}
annal_err annal__notify_wait(annal_db *db, uint64_t known, int timeout_ms, const int *cancel) {
    (void)db;
    (void)known;
    (void)timeout_ms;
    (void)cancel;
    return ANNAL_ETIMEDOUT;
}
void annal__notify_kick(annal_db *db) { (void)db; }
