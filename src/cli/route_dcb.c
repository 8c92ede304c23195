/*
 * route_dcb.c -- `annal append` with tags or a condition through a server (route.h): the
 * append goes to the server's own DCB service (annal.dcb.v1.Dcb/Append, dcb.proto), and
 * the stored event is read back with Dcb/Read, which keeps its tags (KurrentDB's Read
 * has none), so the output is the direct command's.
 */
#include <stdlib.h>
#include <string.h>

#include "dcb.pb-c.h"
#include "route.h"

typedef Annal__Dcb__V1__AppendResp AppendResp;

/* The wire form of q, borrowing its strings; *items and *pitems freed by the caller. */
static void query_out(cli_query *q, Annal__Dcb__V1__Query *out, Annal__Dcb__V1__QueryItem **items,
                      Annal__Dcb__V1__QueryItem ***pitems) {
    annal__dcb__v1__query__init(out);
    *items = cli_xrealloc(NULL, (q->nitems + 1) * sizeof **items);
    *pitems = cli_xrealloc(NULL, (q->nitems + 1) * sizeof **pitems);
    for (size_t i = 0; i < q->nitems; i++) {
        annal__dcb__v1__query_item__init(&(*items)[i]);
        (*items)[i].types = q->items[i].types;
        (*items)[i].n_types = q->items[i].ntypes;
        (*items)[i].tags = q->items[i].tags;
        (*items)[i].n_tags = q->items[i].ntags;
        (*pitems)[i] = &(*items)[i];
    }
    out->items = *pitems;
    out->n_items = q->nitems;
}

static int keep_append(void *ctx, const uint8_t *p, size_t n) {
    AppendResp **out = ctx;
    if (*out) protobuf_c_message_free_unpacked(&(*out)->base, NULL);
    *out = annal__dcb__v1__append_resp__unpack(NULL, n, p);
    return 0;
}

/* Print the event the server read back (an Event message) as the direct command does. */
static int print_event(void *ctx, const uint8_t *p, size_t n) {
    int *printed = ctx;
    Annal__Dcb__V1__ReadResp *m = annal__dcb__v1__read_resp__unpack(NULL, n, p);
    for (size_t i = 0; m && i < m->n_events; i++) {
        const Annal__Dcb__V1__Event *e = m->events[i];
        annal_event ev;
        memset(&ev, 0, sizeof ev);
        (void)annal_uuid_parse(e->id, &ev.id);
        ev.stream = e->stream;
        ev.stream_len = strlen(e->stream);
        ev.type = e->type;
        ev.type_len = strlen(e->type);
        ev.revision = e->revision;
        ev.position = e->position;
        ev.timestamp_ns = e->timestamp_ns;
        ev.data = e->data.data;
        ev.data_len = e->data.len;
        ev.metadata = e->metadata.data;
        ev.metadata_len = e->metadata.len;
        cli_buf tags = {0};
        for (size_t k = 0; k < e->n_tags; k++)
            cli_buf_add(&tags, e->tags[k], strlen(e->tags[k]) + 1);
        ev.tags = tags.p;
        ev.tags_len = tags.len;
        ev.ntags = e->n_tags;
        cli_buf line = {0};
        cli_event_json(&line, &ev);
        cli_buf_addc(&line, '\n');
        fwrite(line.p, 1, line.len, stdout);
        cli_buf_free(&line);
        cli_buf_free(&tags);
        (*printed)++;
    }
    if (m) protobuf_c_message_free_unpacked(&m->base, NULL);
    return 0;
}

static int read_back(annal_remote *r, uint64_t position) {
    Annal__Dcb__V1__ReadReq req = ANNAL__DCB__V1__READ_REQ__INIT;
    req.limit = 1;
    if (position > 0) {
        req.after_option_case = ANNAL__DCB__V1__READ_REQ__AFTER_OPTION_AFTER;
        req.after = position - 1;
    }
    int printed = 0;
    annal_err e = annal_remote_call(r, "/annal.dcb.v1.Dcb/Read", &req.base, print_event, &printed);
    if (e != ANNAL_OK || printed != 1) {
        cli_error("append", "appended at position %llu but cannot read it back: %s",
                  (unsigned long long)position, annal_remote_errmsg(r));
        return CLI_EXIT_STORE;
    }
    return cli_finish_output("append", stdout, "standard output", 0);
}

/* What the server answered, as the direct command reports it. */
static int report(annal_remote *r, const AppendResp *resp, const char *stream, uint64_t after) {
    if (resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_SUCCESS)
        return read_back(r, resp->success->first_position);
    const Annal__Dcb__V1__AppendResp__WrongExpectedRevision *w =
        resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_WRONG_EXPECTED_REVISION
            ? resp->wrong_expected_revision
        : resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_CONDITION_FAILED
            ? resp->condition_failed->wrong_expected_revision
            : NULL;
    if (w)
        cli_error("append", "stream %s is at %lld, not at the expected revision",
                  stream ? stream : ANNAL_DCB_STREAM, (long long)w->actual_revision);
    if (resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_CONDITION_FAILED)
        return cli_report_condition("append", NULL, resp->condition_failed->position, after);
    if (w) return CLI_EXIT_CONFLICT;
    cli_error("append", "the server answered the append with nothing known");
    return CLI_EXIT_STORE;
}

/* One Dcb/Append of n events (tags[i] for evs[i], tags may be NULL) to stream (NULL: $dcb),
 * with cond (may be NULL). *out is the answer (freed by the caller) when ANNAL_OK. */
static annal_err call_append(annal_remote *r, const char *stream, int64_t expected,
                             const annal_event_data *evs, const annal_tag_list *tags, size_t n,
                             Annal__Dcb__V1__Condition *cond, AppendResp **out) {
    Annal__Dcb__V1__AppendEvent *e = cli_xrealloc(NULL, (n + 1) * sizeof *e);
    Annal__Dcb__V1__AppendEvent **pe = cli_xrealloc(NULL, (n + 1) * sizeof *pe);
    char(*ids)[37] = cli_xrealloc(NULL, (n + 1) * sizeof *ids);
    static const annal_uuid nil;
    for (size_t i = 0; i < n; i++) {
        annal__dcb__v1__append_event__init(&e[i]);
        ids[i][0] = '\0'; /* no id: the store makes one */
        if (memcmp(&evs[i].id, &nil, sizeof nil) != 0) annal_uuid_format(&evs[i].id, ids[i]);
        e[i].id = ids[i];
        e[i].type = (char *)evs[i].type;
        e[i].data = (ProtobufCBinaryData){evs[i].data_len, (uint8_t *)evs[i].data};
        e[i].metadata = (ProtobufCBinaryData){evs[i].metadata_len, (uint8_t *)evs[i].metadata};
        e[i].tags = tags ? (char **)tags[i].tags : NULL;
        e[i].n_tags = tags ? tags[i].n : 0;
        pe[i] = &e[i];
    }
    Annal__Dcb__V1__AppendReq req = ANNAL__DCB__V1__APPEND_REQ__INIT;
    req.events = pe;
    req.n_events = n;
    if (stream) {
        req.target_case = ANNAL__DCB__V1__APPEND_REQ__TARGET_STREAM;
        req.stream = (char *)stream;
    }
    if (expected >= 0) {
        req.expected_case = ANNAL__DCB__V1__APPEND_REQ__EXPECTED_EXPECTED_REVISION;
        req.expected_revision = (uint64_t)expected;
    } else if (expected != ANNAL_EXPECT_ANY) {
        req.expected_case = ANNAL__DCB__V1__APPEND_REQ__EXPECTED_EXPECTED_STATE;
        req.expected_state = expected == ANNAL_EXPECT_NO_STREAM
                                 ? ANNAL__DCB__V1__APPEND_REQ__EXPECTED_STATE__NO_STREAM
                                 : ANNAL__DCB__V1__APPEND_REQ__EXPECTED_STATE__STREAM_EXISTS;
    }
    req.condition = cond;
    *out = NULL;
    annal_err rc = annal_remote_call(r, "/annal.dcb.v1.Dcb/Append", &req.base, keep_append, out);
    if (rc == ANNAL_OK && !*out) rc = ANNAL_EIO;
    free(e);
    free(pe);
    free(ids);
    return rc;
}

int cli_remote_append_dcb(annal_remote *r, const char *stream, int64_t expected,
                          annal_event_data *ev, const char *const *tags, size_t ntags,
                          const char *fail_if, uint64_t after) {
    cli_query q = {0};
    char err[256];
    if (fail_if && cli_query_parse(fail_if, &q, err, sizeof err) != 0) {
        cli_query_free(&q);
        return cli_usage_error("append", "bad --fail-if-match: %s", err);
    }
    annal_tag_list tl = {tags, ntags};
    Annal__Dcb__V1__Condition cond = ANNAL__DCB__V1__CONDITION__INIT;
    Annal__Dcb__V1__Query wq;
    Annal__Dcb__V1__QueryItem *items = NULL, **pitems = NULL;
    if (fail_if) {
        query_out(&q, &wq, &items, &pitems);
        cond.query = &wq;
        if (after != ANNAL_AFTER_NONE) {
            cond.after_option_case = ANNAL__DCB__V1__CONDITION__AFTER_OPTION_AFTER;
            cond.after = after;
        }
    }
    AppendResp *resp = NULL;
    annal_err rc = call_append(r, stream, expected, ev, &tl, 1, fail_if ? &cond : NULL, &resp);
    int exit_code;
    if (rc != ANNAL_OK) {
        cli_error("append", "cannot append to stream %s: %s", stream ? stream : ANNAL_DCB_STREAM,
                  annal_remote_errmsg(r));
        exit_code = cli_exit_code(rc);
    } else {
        exit_code = report(r, resp, stream, after);
    }
    if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(items);
    free(pitems);
    cli_query_free(&q);
    return exit_code;
}

annal_err cli_remote_append_tagged(void *remote, const char *stream, int64_t expected,
                                   annal_event_data *evs, const annal_tag_list *tags, size_t n,
                                   annal_append_result *res) {
    annal_remote *r = remote;
    int dcb = strcmp(stream, ANNAL_DCB_STREAM) == 0;
    AppendResp *resp = NULL;
    annal_err rc = call_append(r, dcb ? NULL : stream, dcb ? ANNAL_EXPECT_ANY : expected, evs, tags,
                               n, NULL, &resp);
    memset(res, 0, sizeof *res);
    if (rc == ANNAL_OK && resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_SUCCESS) {
        res->first_position = resp->success->first_position;
        res->first_revision = resp->success->first_revision;
        res->count = resp->success->count;
        res->revision = resp->success->revision;
        res->idempotent = resp->success->idempotent;
    } else if (rc == ANNAL_OK &&
               resp->result_case == ANNAL__DCB__V1__APPEND_RESP__RESULT_WRONG_EXPECTED_REVISION) {
        res->revision = resp->wrong_expected_revision->actual_revision;
        rc = ANNAL_ECONFLICT;
    } else if (rc == ANNAL_OK) {
        rc = ANNAL_EIO; /* no condition was sent: nothing else can come back */
    }
    if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}
