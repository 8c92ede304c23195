/* Wake-ups when the committed head moves: in-process waiters sleep on a condition
 * variable, waiters in other processes on a futex in a small shared file beside the
 * index (index/notify), so subscribers follow the writer without polling. */
#ifndef ANNAL_NOTIFY_H
#define ANNAL_NOTIFY_H

#include <stdint.h>

#include "annal.h"

typedef struct annal__notify annal__notify;

/* Open (a writer creates) the shared notify file of db; sets db->notify. A failure is
 * not fatal for the store: waits then fall back to short sleeps. */
annal_err annal__notify_open(annal_db *db);
void annal__notify_close(annal_db *db);
/* Writer: the head is now `visible` (already published in db->visible). Cheap when
 * nobody waits. */
void annal__notify_publish(annal_db *db, uint64_t visible);
/* Wait until the committed head is past `known` (annal__visible > known), *cancel
 * becomes non-zero, or timeout_ms passes (-1: forever). ANNAL_OK, ANNAL_ECANCELED or
 * ANNAL_ETIMEDOUT. cancel may be NULL. */
annal_err annal__notify_wait(annal_db *db, uint64_t known, int timeout_ms, const int *cancel);
/* Wake every waiter of db in this process (after setting a cancel flag). */
void annal__notify_kick(annal_db *db);

#endif
