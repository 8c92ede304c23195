/*
 * users_rpc.c -- the Users service (event_store.client.users.Users) over users.c, with
 * the errors the clients dispatch on: `user-not-found` and `user-conflict` with the
 * `login-name` trailer. Administrators manage users; any user may read its own details
 * and change its own password (knowing the current one). Every change is audited and
 * reaches the authentication cache at once. Passwords are never logged nor returned.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "server_int.h"
#include "users.pb-c.h"

/* User changes are read-modify-write of one stream: one at a time. */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

static ProtobufCMessage *recv_req(srv_call *c, const ProtobufCMessageDescriptor *d) {
    ProtobufCMessage *m;
    int bad;
    if (call_recv(c, d, &m, &bad) != 1) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, bad ? "undecodable request" : "no request",
                    NULL, 0);
        return NULL;
    }
    return m;
}

static void not_found(srv_call *c, const char *name) {
    srv_kv kv[] = {{"exception", "user-not-found"}, {"login-name", name}};
    call_finish(c, GRPC_STATUS_NOT_FOUND, "User not found.", kv, 2);
}

static void conflict(srv_call *c, const char *name) {
    srv_kv kv[] = {{"exception", "user-conflict"}, {"login-name", name}};
    call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "User already exists.", kv, 2);
}

static void fail(srv_call *c, annal_err r) { rpc_fail_store(c, r, NULL); }

/* Read name for a change (under write_mu). 0, or -1 with the call finished. */
static int load(srv_call *c, const char *name, sec_user *u) {
    annal_err r = users_read(c->srv->db, name, u);
    if (r == ANNAL_ENOTFOUND) {
        not_found(c, name);
        return -1;
    }
    if (r != ANNAL_OK) {
        fail(c, r);
        return -1;
    }
    return 0;
}

/* Unless r (what preparing u gave, e.g. hashing its password) failed: store u, tell the
 * cache, audit, reply with the empty response m. */
static void commit(srv_call *c, annal_err r, sec_user *u, int created, const char *what,
                   const ProtobufCMessage *m) {
    if (r == ANNAL_OK) r = users_write(c->srv->db, u, created);
    if (r != ANNAL_OK) {
        fail(c, r);
        return;
    }
    sec_user_changed(c->srv, u->name, u->deleted ? NULL : u);
    sec_audit(c->srv, "user '%s' %s by '%s' from %s", u->name, what, c->who.name, c->who.peer);
    call_reply(c, m);
}

static void join_groups(char *const *groups, size_t n, char *out, size_t size) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, size - len, "%s%s", len ? "," : "", groups[i]);
        if (w < 0 || (size_t)w >= size - len) break;
        len += (size_t)w;
    }
}

void rpc_users_create(srv_call *c) {
    ProtobufCMessage *m = recv_req(c, &event_store__client__users__create_req__descriptor);
    if (!m) return;
    const EventStore__Client__Users__CreateReq__Options *o =
        ((EventStore__Client__Users__CreateReq *)m)->options;
    if (sec_require_role(c, 0, "user creation") != 0) {
    } else if (!o || !users_name_ok(o->login_name) || !o->password || !*o->password) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                    "a login name (1 to 64 bytes, no spaces, ':', ',' or '/', not starting with "
                    "'$') and a password are required",
                    NULL, 0);
    } else {
        pthread_mutex_lock(&write_mu);
        sec_user u;
        annal_err r = users_read(c->srv->db, o->login_name, &u);
        if (r == ANNAL_OK) {
            conflict(c, o->login_name);
        } else if (r != ANNAL_ENOTFOUND) {
            fail(c, r);
        } else {
            memset(&u, 0, sizeof u);
            snprintf(u.name, sizeof u.name, "%s", o->login_name);
            snprintf(u.full_name, sizeof u.full_name, "%s", o->full_name ? o->full_name : "");
            join_groups(o->groups, o->n_groups, u.groups, sizeof u.groups);
            r = users_hash(o->password, u.hash);
            EventStore__Client__Users__CreateResp resp =
                EVENT_STORE__CLIENT__USERS__CREATE_RESP__INIT;
            commit(c, r, &u, 1, "created", &resp.base);
        }
        OPENSSL_cleanse(&u, sizeof u);
        pthread_mutex_unlock(&write_mu);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

void rpc_users_update(srv_call *c) {
    ProtobufCMessage *m = recv_req(c, &event_store__client__users__update_req__descriptor);
    if (!m) return;
    const EventStore__Client__Users__UpdateReq__Options *o =
        ((EventStore__Client__Users__UpdateReq *)m)->options;
    if (sec_require_role(c, 0, "user update") != 0) {
    } else if (!o || !o->login_name) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "a login name is required", NULL, 0);
    } else {
        pthread_mutex_lock(&write_mu);
        sec_user u;
        if (load(c, o->login_name, &u) == 0) {
            snprintf(u.full_name, sizeof u.full_name, "%s", o->full_name ? o->full_name : "");
            join_groups(o->groups, o->n_groups, u.groups, sizeof u.groups);
            annal_err r = o->password && *o->password ? users_hash(o->password, u.hash) : ANNAL_OK;
            EventStore__Client__Users__UpdateResp resp =
                EVENT_STORE__CLIENT__USERS__UPDATE_RESP__INIT;
            commit(c, r, &u, 0, "updated", &resp.base);
        }
        OPENSSL_cleanse(&u, sizeof u);
        pthread_mutex_unlock(&write_mu);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Delete, Disable and Enable: the same request and response shapes. */
enum { DO_DELETE, DO_DISABLE, DO_ENABLE };
static void simple_change(srv_call *c, const ProtobufCMessageDescriptor *d, int what) {
    ProtobufCMessage *m = recv_req(c, d);
    if (!m) return;
    /* DeleteReq, DisableReq and EnableReq are { Options options = 1; } with login_name = 1. */
    const EventStore__Client__Users__DeleteReq__Options *o =
        ((EventStore__Client__Users__DeleteReq *)m)->options;
    static const char *const names[] = {"deleted", "disabled", "enabled"};
    if (sec_require_role(c, 0, "user change") != 0) {
    } else if (!o || !o->login_name) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "a login name is required", NULL, 0);
    } else {
        pthread_mutex_lock(&write_mu);
        sec_user u;
        if (load(c, o->login_name, &u) == 0) {
            if (what == DO_DELETE) {
                u.deleted = 1;
                u.hash[0] = '\0';
            } else {
                u.disabled = what == DO_DISABLE;
            }
            EventStore__Client__Users__DeleteResp resp =
                EVENT_STORE__CLIENT__USERS__DELETE_RESP__INIT;
            commit(c, ANNAL_OK, &u, 0, names[what], &resp.base);
        }
        OPENSSL_cleanse(&u, sizeof u);
        pthread_mutex_unlock(&write_mu);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

void rpc_users_delete(srv_call *c) {
    simple_change(c, &event_store__client__users__delete_req__descriptor, DO_DELETE);
}
void rpc_users_disable(srv_call *c) {
    simple_change(c, &event_store__client__users__disable_req__descriptor, DO_DISABLE);
}
void rpc_users_enable(srv_call *c) {
    simple_change(c, &event_store__client__users__enable_req__descriptor, DO_ENABLE);
}

static int send_details(srv_call *c, const sec_user *u) {
    EventStore__Client__Users__DetailsResp resp = EVENT_STORE__CLIENT__USERS__DETAILS_RESP__INIT;
    EventStore__Client__Users__DetailsResp__UserDetails d =
        EVENT_STORE__CLIENT__USERS__DETAILS_RESP__USER_DETAILS__INIT;
    EventStore__Client__Users__DetailsResp__UserDetails__DateTime t =
        EVENT_STORE__CLIENT__USERS__DETAILS_RESP__USER_DETAILS__DATE_TIME__INIT;
    char groups[SEC_GROUPS_MAX], *gp[64];
    snprintf(groups, sizeof groups, "%s", u->groups);
    size_t ng = 0;
    for (char *p = groups, *save = NULL, *tok; ng < 64 && (tok = strtok_r(p, ",", &save)); p = NULL)
        gp[ng++] = tok;
    d.login_name = (char *)u->name;
    d.full_name = (char *)u->full_name;
    d.n_groups = ng;
    d.groups = gp;
    d.disabled = u->disabled;
    t.ticks_since_epoch = u->updated_ns / 100;
    d.last_updated = &t;
    resp.user_details = &d;
    return call_send(c, &resp.base);
}

void rpc_users_details(srv_call *c) {
    ProtobufCMessage *m = recv_req(c, &event_store__client__users__details_req__descriptor);
    if (!m) return;
    const EventStore__Client__Users__DetailsReq__Options *o =
        ((EventStore__Client__Users__DetailsReq *)m)->options;
    const char *name = o && o->login_name && *o->login_name ? o->login_name : NULL;
    /* A user may see itself; all users, or another, are for admins. */
    if ((!name || strcmp(name, c->who.name) != 0) && sec_require_role(c, 0, "user details") != 0) {
    } else if (name) {
        sec_user u;
        if (load(c, name, &u) == 0) {
            u.hash[0] = '\0';
            if (send_details(c, &u) == 0) call_reply(c, NULL);
        }
        OPENSSL_cleanse(&u, sizeof u);
    } else {
        sec_user *all;
        size_t n;
        annal_err r = users_all(c->srv->db, &all, &n);
        if (r != ANNAL_OK) {
            fail(c, r);
        } else {
            int gone = 0;
            for (size_t i = 0; i < n && !gone; i++) {
                all[i].hash[0] = '\0';
                gone = send_details(c, &all[i]) != 0;
            }
            if (all) OPENSSL_cleanse(all, n * sizeof *all);
            free(all);
            if (!gone) call_reply(c, NULL);
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

void rpc_users_change_password(srv_call *c) {
    ProtobufCMessage *m = recv_req(c, &event_store__client__users__change_password_req__descriptor);
    if (!m) return;
    const EventStore__Client__Users__ChangePasswordReq__Options *o =
        ((EventStore__Client__Users__ChangePasswordReq *)m)->options;
    if (!o || !o->login_name || !o->current_password || !o->new_password || !*o->new_password) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                    "a login name, the current and a new password are required", NULL, 0);
    } else if (strcmp(o->login_name, c->who.name) != 0 &&
               sec_require_role(c, 0, "password change of another user") != 0) {
    } else {
        pthread_mutex_lock(&write_mu);
        sec_user u;
        if (load(c, o->login_name, &u) == 0) {
            if (!users_verify(u.hash, o->current_password)) {
                sec_deny(c, "password change (wrong current password)", NULL);
            } else {
                annal_err r = users_hash(o->new_password, u.hash);
                EventStore__Client__Users__ChangePasswordResp resp =
                    EVENT_STORE__CLIENT__USERS__CHANGE_PASSWORD_RESP__INIT;
                commit(c, r, &u, 0, "password changed", &resp.base);
            }
        }
        OPENSSL_cleanse(&u, sizeof u);
        pthread_mutex_unlock(&write_mu);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

void rpc_users_reset_password(srv_call *c) {
    ProtobufCMessage *m = recv_req(c, &event_store__client__users__reset_password_req__descriptor);
    if (!m) return;
    const EventStore__Client__Users__ResetPasswordReq__Options *o =
        ((EventStore__Client__Users__ResetPasswordReq *)m)->options;
    if (sec_require_role(c, 0, "password reset") != 0) {
    } else if (!o || !o->login_name || !o->new_password || !*o->new_password) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "a login name and a new password are required",
                    NULL, 0);
    } else {
        pthread_mutex_lock(&write_mu);
        sec_user u;
        if (load(c, o->login_name, &u) == 0) {
            /* A reset also enables a built-in that waited for its first password. */
            if (!u.hash[0]) u.disabled = 0;
            annal_err r = users_hash(o->new_password, u.hash);
            EventStore__Client__Users__ResetPasswordResp resp =
                EVENT_STORE__CLIENT__USERS__RESET_PASSWORD_RESP__INIT;
            commit(c, r, &u, 0, "password reset", &resp.base);
        }
        OPENSSL_cleanse(&u, sizeof u);
        pthread_mutex_unlock(&write_mu);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}
