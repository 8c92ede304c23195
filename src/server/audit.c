/*
 * audit.c -- refusals and the audit log: the lines a security review reads (every denied
 * access, every change to users and ACLs) and the statuses a refused call gets. Below
 * acl.c and auth.c, which both refuse.
 */
#include <stdarg.h>
#include <stdio.h>

#include "sec.h"
#include "server_int.h"

void sec_audit(annal_server *srv, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    srv_log(srv, ANNAL_LOG_WARN, "audit: %s", buf);
}

void sec_refuse(srv_call *c, const char *msg) {
    srv_kv kv[] = {{"exception", "not-authenticated"}};
    call_finish(c, GRPC_STATUS_UNAUTHENTICATED, msg, kv, 1);
}

void sec_deny_audit(srv_call *c, const char *what, const char *stream) {
    const sec_who *w = &c->who;
    sec_audit(c->srv, "denied %s%s%s%s to %s%s%s from %s", what, stream ? " of '" : "",
              stream ? stream : "", stream ? "'" : "", w->authenticated ? "user '" : "anonymous",
              w->authenticated ? w->name : "", w->authenticated ? "'" : "", w->peer);
}

void sec_deny(srv_call *c, const char *what, const char *stream) {
    const sec_who *w = &c->who;
    sec_deny_audit(c, what, stream);
    if (!w->authenticated) {
        sec_refuse(c, "authentication required");
        return;
    }
    srv_kv kv[] = {{"exception", "access-denied"}};
    call_finish(c, GRPC_STATUS_PERMISSION_DENIED, "Access denied.", kv, 1);
}
