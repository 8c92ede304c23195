/*
 * remote.h -- the interface of annal's gRPC client: the writes and reads of annal.h, sent
 * to a server that speaks KurrentDB's protocol (annal serve, or KurrentDB itself) over
 * gRPC core's client API and the same protos as the server. The CLI uses it to write
 * through a running server; errors come back as annal_err, as from a local store.
 */
#ifndef ANNAL_REMOTE_H
#define ANNAL_REMOTE_H

#include "annal.h"

typedef struct annal_remote annal_remote; /* one channel to one server */

/* Connect to target: "unix:/path/annal.sock" (plain HTTP/2 over a Unix socket), or a
 * connection string "kurrentdb://[user:pass@]host[:port][?tls=false&tlsCAFile=PATH]" (also
 * esdb://; TLS is on unless tls=false; the port defaults to 2113). Nothing is sent until
 * the first call. Errors: ANNAL_EINVAL (bad target, the message in err), ANNAL_EIO (the CA
 * file cannot be read), ANNAL_ENOMEM. */
annal_err annal_remote_open(const char *target, annal_remote **out, char *err, size_t errlen);
void annal_remote_close(annal_remote *r); /* NULL is a no-op */
/* Detail of the last failure on r ("" if none). Valid until the next call on r. */
const char *annal_remote_errmsg(const annal_remote *r);

/* Ask the server what it serves, waiting at most timeout_ms: ANNAL_OK if it answered. */
annal_err annal_remote_ping(annal_remote *r, int timeout_ms);

/* annal_append over the wire: events without an id get a UUIDv7 made here (written back
 * into evs, so a retry resends the same ids and the server deduplicates). On
 * ANNAL_ECONFLICT res->revision is the stream's actual revision (-1: no stream). Other
 * errors: ANNAL_EDELETED, ANNAL_ETOOBIG, ANNAL_EINVAL, ANNAL_EIO (server unreachable or
 * failing: the detail in annal_remote_errmsg). */
annal_err annal_remote_append(annal_remote *r, const char *stream, int64_t expected,
                              annal_event_data *evs, size_t n, annal_append_result *res);
/* Soft delete, or tombstone with hard. ANNAL_ECONFLICT as above. */
annal_err annal_remote_delete(annal_remote *r, const char *stream, int64_t expected, int hard);

/* Read up to max events of stream from revision from (-1: the start, or the end when
 * backwards). *out holds *n events, freed with annal_remote_events_free. A missing stream
 * reads as no events with ANNAL_ENOTFOUND. */
annal_err annal_remote_read(annal_remote *r, const char *stream, int64_t from, int backwards,
                            size_t max, annal_event **out, size_t *n);
void annal_remote_events_free(annal_event *evs, size_t n);

/* Each item of a read, as it arrives: ANNAL_SUB_EVENT (item->event and its strings are
 * borrowed until the callback returns; the data is not NUL-terminated), and for
 * subscriptions ANNAL_SUB_CAUGHT_UP, ANNAL_SUB_FELL_BEHIND and ANNAL_SUB_CHECKPOINT. A
 * non-zero return ends the call (the function then returns ANNAL_OK). */
typedef int (*annal_remote_item_fn)(void *ctx, const annal_sub_item *item);

/* Read up to max events of stream (NULL: $all) forwards from from (a revision, or a
 * position for $all; -1: the start), each to fn, without copying them: for readers that
 * stream (the load generator, bench/server_load.c). Errors as annal_remote_read's. */
annal_err annal_remote_read_each(annal_remote *r, const char *stream, int64_t from, size_t max,
                                 annal_remote_item_fn fn, void *ctx);

/* A catch-up subscription to stream (NULL: $all) after from (-1: only new events), each
 * item to fn, until fn returns non-zero, the server ends it, or a day passes. */
annal_err annal_remote_subscribe(annal_remote *r, const char *stream, int64_t from,
                                 annal_remote_item_fn fn, void *ctx);

/* Streams.BatchAppend: one call carries many appends, each under a tag of the caller's
 * (its correlation id), answered in the order they finish, so a caller keeps several in
 * flight by sending ahead of receiving. One thread at a time per batch call. */
typedef struct annal_remote_batch annal_remote_batch;
annal_err annal_remote_batch_open(annal_remote *r, annal_remote_batch **out);
/* Send one append (all n events in one request). Event ids as annal_remote_append's.
 * ANNAL_EIO when the server has ended the call. */
annal_err annal_remote_batch_send(annal_remote_batch *b, uint64_t tag, const char *stream,
                                  int64_t expected, annal_event_data *evs, size_t n);
/* Wait for the next answer: *tag is the append's; res->revision the stream's revision
 * after it, res->first_position the position of its last event. A refused append returns
 * ANNAL_ECONFLICT (wrong expected revision, deleted stream) or ANNAL_EIO with the
 * server's message in annal_remote_errmsg, *tag still set; ANNAL_EIO with *tag
 * UINT64_MAX when the call has ended. */
annal_err annal_remote_batch_recv(annal_remote_batch *b, uint64_t *tag, annal_append_result *res);
void annal_remote_batch_close(annal_remote_batch *b); /* cancels what is in flight; NULL no-op */

/* Call method with one request, handing each reply's bytes to on_msg (may be NULL; its
 * non-zero return stops). For services without a call above (the Users service, used by
 * `annal user`). Errors: ANNAL_ENOTFOUND (`user-not-found`), ANNAL_ECONFLICT
 * (`user-conflict`), others as annal_remote_append's. */
struct ProtobufCMessage;
annal_err annal_remote_call(annal_remote *r, const char *method, const struct ProtobufCMessage *req,
                            int (*on_msg)(void *ctx, const uint8_t *p, size_t n), void *ctx);

#endif
