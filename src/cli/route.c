/*
 * route.c -- the writing commands through a server (route.h). A server owns the store when
 * it holds the writer lock and answers on the store's socket; then append, delete and meta
 * send their writes to it over the same protocol as any client, as the admin the
 * socket's permissions make the caller.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "route.h"

#define PING_MS 3000

static int connect_to(const char *cmd, const char *target, const char *shown, annal_remote **out) {
    char err[256];
    annal_err e = annal_remote_open(target, out, err, sizeof err);
    if (e != ANNAL_OK) {
        cli_error(cmd, "cannot use server %s: %s", shown, err[0] ? err : annal_strerror(e));
        return e == ANNAL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_STORE;
    }
    e = annal_remote_ping(*out, PING_MS);
    if (e != ANNAL_OK) {
        cli_error(cmd, "server %s does not answer: %s", shown, annal_remote_errmsg(*out));
        annal_remote_close(*out);
        *out = NULL;
        return CLI_EXIT_STORE;
    }
    return 0;
}

/* The local server's socket, when the store's writer lock is held and the socket answers. */
static int local_server(cli_global *g, annal_remote **out) {
    char path[4096];
    struct stat st;
    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", g->data_dir, CLI_SOCKET_NAME);
    if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
    /* A socket left by a server that was killed refuses connections: then the store is
     * free and the command opens it directly. The lock is what a server holds: probe it
     * with a read-only open only if the socket answers, so no write lock is ever taken. */
    char target[4200];
    snprintf(target, sizeof target, "unix:%s", path);
    if (annal_remote_open(target, out, NULL, 0) != ANNAL_OK) return 0;
    if (annal_remote_ping(*out, PING_MS) != ANNAL_OK) {
        annal_remote_close(*out);
        *out = NULL;
    }
    return 0;
}

int cli_route(cli_global *g, const char *cmd, annal_remote **out) {
    *out = NULL;
    if (g->server) return connect_to(cmd, g->server, g->server, out);
    return local_server(g, out);
}

int cli_route_refuse(cli_global *g, const char *cmd) {
    annal_remote *r = NULL;
    if (g->server) {
        cli_error(cmd, "cannot run through a server (--server): it works on a local store only");
        return CLI_EXIT_USAGE;
    }
    local_server(g, &r);
    if (!r) return 0;
    annal_remote_close(r);
    cli_error(cmd,
              "a server (annal serve) owns the store at %s: stop it first (SIGTERM), then run "
              "`annal %s` again",
              g->data_dir, cmd);
    return CLI_EXIT_STORE;
}

static annal_err import_append(void *remote, const char *stream, int64_t expected,
                               annal_event_data *evs, size_t n, annal_append_result *res) {
    return annal_remote_append(remote, stream, expected, evs, n, res);
}

static const char *import_errmsg(void *remote) { return annal_remote_errmsg(remote); }

int cli_cmd_import_routed(cli_global *g, int argc, char **argv) {
    int help = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) help = 1;
    annal_remote *r = NULL;
    int rc = help ? 0 : cli_route(g, "import", &r);
    if (rc) return rc;
    g->remote = r;
    g->remote_append = import_append;
    g->remote_errmsg = import_errmsg;
    g->remote_append_tagged = cli_remote_append_tagged;
    rc = cli_cmd_import(g, argc, argv);
    g->remote = NULL;
    annal_remote_close(r);
    return rc;
}

/* A failed remote call as the direct command reports a failed store call. */
static int remote_fail(const char *cmd, annal_remote *r, annal_err e, const char *what,
                       const char *stream) {
    const char *detail = annal_remote_errmsg(r);
    cli_error(cmd, "%s %s: %s", what, stream, detail[0] ? detail : annal_strerror(e));
    return cli_exit_code(e);
}

static void report_conflict(const char *cmd, const char *stream, int64_t expected, int64_t actual) {
    char at[64];
    if (actual < 0)
        snprintf(at, sizeof at, "does not exist");
    else
        snprintf(at, sizeof at, "is at %lld", (long long)actual);
    if (expected == ANNAL_EXPECT_NO_STREAM)
        cli_error(cmd, "expected no stream but stream %s %s", stream, at);
    else if (expected == ANNAL_EXPECT_STREAM_EXISTS)
        cli_error(cmd, "expected stream %s to exist but it does not", stream);
    else
        cli_error(cmd, "expected revision %lld but stream %s %s", (long long)expected, stream, at);
}

int cli_remote_append(annal_remote *r, const char *stream, int64_t expected, annal_event_data *ev) {
    annal_append_result res;
    annal_err e = annal_remote_append(r, stream, expected, ev, 1, &res);
    if (e == ANNAL_ECONFLICT) {
        report_conflict("append", stream, expected, res.revision);
        return CLI_EXIT_CONFLICT;
    }
    if (e != ANNAL_OK) return remote_fail("append", r, e, "cannot append to stream", stream);
    /* Print what the store holds, as the direct command does: read it back. */
    annal_event *evs = NULL;
    size_t n = 0;
    e = annal_remote_read(r, stream, res.revision, 0, 1, &evs, &n);
    int rc = 0;
    if (n == 1) {
        cli_buf line = {0};
        cli_event_json(&line, &evs[0]);
        cli_buf_addc(&line, '\n');
        fwrite(line.p, 1, line.len, stdout);
        cli_buf_free(&line);
    } else {
        rc = remote_fail("append", r, e == ANNAL_OK ? ANNAL_ENOTFOUND : e,
                         "appended but cannot read back from stream", stream);
    }
    annal_remote_events_free(evs, n);
    return cli_finish_output("append", stdout, "standard output", rc);
}

int cli_remote_delete(annal_remote *r, const char *stream, int64_t expected, int hard) {
    annal_err e = annal_remote_delete(r, stream, expected, hard);
    if (e == ANNAL_ECONFLICT) {
        cli_error("delete", "cannot delete %s: the stream is not at the expected revision", stream);
        return CLI_EXIT_CONFLICT;
    }
    if (e != ANNAL_OK) return remote_fail("delete", r, e, "cannot delete", stream);
    printf("%s %s\n", hard ? "tombstoned" : "deleted", stream);
    return cli_finish_output("delete", stdout, "standard output", CLI_EXIT_OK);
}

int cli_remote_meta(annal_remote *r, const char *stream, const char *json, const char *const lim[3],
                    int64_t expected) {
    static const char *const keys[3] = {"$maxCount", "$maxAge", "$tb"};
    /* KurrentDB keeps a stream's metadata as $metadata events in $$<stream>. */
    size_t mlen = strlen(stream) + 3;
    char *mstream = cli_xrealloc(NULL, mlen);
    snprintf(mstream, mlen, "$$%s", stream);
    annal_event *evs = NULL;
    size_t n = 0;
    annal_err e = annal_remote_read(r, mstream, -1, 1, 1, &evs, &n);
    int rc = 0;
    if (e != ANNAL_OK && e != ANNAL_ENOTFOUND) {
        rc = remote_fail("meta", r, e, "cannot read the metadata of", stream);
        goto done;
    }
    int64_t rev = n ? (int64_t)evs[0].revision : -1;
    const char *cur = n ? evs[0].data : "{}";
    if (!json && !lim[0] && !lim[1] && !lim[2]) {
        cli_buf b = {0};
        cli_buf_adds(&b, "{\"stream\":");
        cli_json_add_string(&b, stream, strlen(stream));
        cli_buf_addf(&b, ",\"revision\":%" PRId64 ",\"metadata\":", rev);
        cli_json_add_compact(&b, cur, strlen(cur));
        cli_buf_adds(&b, "}\n");
        fwrite(b.p, 1, b.len, stdout);
        cli_buf_free(&b);
        rc = cli_finish_output("meta", stdout, "standard output", 0);
        goto done;
    }
    char *doc = NULL;
    if (!json) { /* merge the limits into the current document, as the direct command */
        json_t *o = json_loads(cur, 0, NULL);
        if (o && !json_is_object(o)) json_decref(o), o = NULL;
        for (int i = 0; o && i < 3; i++)
            if (lim[i]) json_object_set_new(o, keys[i], json_integer(strtoll(lim[i], NULL, 10)));
        doc = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(o);
        if (!doc) {
            cli_error("meta", "the metadata of %s is not a JSON object", stream);
            rc = CLI_EXIT_STORE;
            goto done;
        }
    }
    const char *body = doc ? doc : json;
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = "$metadata";
    ev.data = body;
    ev.data_len = body ? strlen(body) : 0;
    annal_append_result res;
    e = annal_remote_append(r, mstream, expected, &ev, 1, &res);
    free(doc);
    if (e == ANNAL_ECONFLICT) {
        report_conflict("meta", mstream, expected, res.revision);
        rc = CLI_EXIT_CONFLICT;
    } else if (e != ANNAL_OK) {
        rc = remote_fail("meta", r, e, "cannot set the metadata of", stream);
    } else {
        printf("metadata of %s is at revision %" PRId64 "\n", stream, res.revision);
        rc = cli_finish_output("meta", stdout, "standard output", 0);
    }
done:
    annal_remote_events_free(evs, n);
    free(mstream);
    return rc;
}
