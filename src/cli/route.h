/*
 * route.h -- how the writing commands reach the store: directly, or through a running
 * `annal serve` (its Unix socket in the store directory, found when the store's writer is
 * a server) or the server named by --server. The command line keeps working while a
 * server owns the store.
 */
#ifndef ANNAL_CLI_ROUTE_H
#define ANNAL_CLI_ROUTE_H

#include "cli.h"
#include "remote.h"

#define CLI_SOCKET_NAME "annal.sock" /* in the store directory; mode 0600 */

/* For a writing command: *out NULL means open the store directly; else the server to
 * write through (close with annal_remote_close). 0, or an exit code after reporting. */
int cli_route(cli_global *g, const char *cmd, annal_remote **out);
/* For commands that cannot go through a server yet: 0 when no server runs (or is
 * named), else the reason reported and an exit code. */
int cli_route_refuse(cli_global *g, const char *cmd);

/* `annal import`, through the server that owns the store if one does (import.c is also
 * built into the fuzz target, which has no client: the routing lives here). */
int cli_cmd_import_routed(cli_global *g, int argc, char **argv);

/* The writing commands through a server, printing as their direct versions do. */
int cli_remote_append(annal_remote *r, const char *stream, int64_t expected, annal_event_data *ev);
/* A DCB append through the server's annal.dcb.v1 service (dcb.proto): stream NULL for the
 * DCB stream, tags, and the condition "nothing matching fail_if (NULL: none) after after". */
int cli_remote_append_dcb(annal_remote *r, const char *stream, int64_t expected,
                          annal_event_data *ev, const char *const *tags, size_t ntags,
                          const char *fail_if, uint64_t after);
/* Tagged events (tags[i] for evs[i]) to stream ("$dcb": the DCB stream) through the
 * server's Dcb/Append, for `annal import`: ANNAL_OK, ANNAL_ECONFLICT (res->revision the
 * actual one) or the call's error. */
annal_err cli_remote_append_tagged(void *remote, const char *stream, int64_t expected,
                                   annal_event_data *evs, const annal_tag_list *tags, size_t n,
                                   annal_append_result *res);
int cli_remote_delete(annal_remote *r, const char *stream, int64_t expected, int hard);
/* Show (json NULL and no limits) or set a stream's metadata: lim are $maxCount, $maxAge,
 * $tb as decimal text or NULL. */
int cli_remote_meta(annal_remote *r, const char *stream, const char *json, const char *const lim[3],
                    int64_t expected);

#endif
