/*
 * tls.c -- TLS server credentials whose certificates can be replaced while the server
 * runs: gRPC core asks a fetcher for the configuration at each new handshake, and the
 * fetcher hands over a new one once annal_server_reload_tls has read and checked the
 * files. Connections already open keep their session. Files are checked with OpenSSL
 * first, so a wrong file gets a clear reason instead of failed handshakes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server_int.h"

struct sec_tls {
    annal_server *srv;
    char *cert_path, *key_path, *ca_path;
    pthread_mutex_t mu;
    grpc_ssl_server_certificate_config *pending; /* taken by the next handshake */
    int has_ca;
};

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (len + 1 == cap) {
            char *nb = cap < (4u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf) buf[len] = '\0';
    fclose(f);
    return buf;
}

/* Check the PEM texts: a certificate within its validity, the key matching it, CA
 * certificates that are CAs. NULL, or why not (static text). */
static const char *check(const char *cert, const char *key, const char *ca, char *why,
                         size_t size) {
    BIO *b = BIO_new_mem_buf(cert, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(key, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    const char *r = NULL;
    if (!x)
        r = "the certificate file holds no PEM certificate";
    else if (!k)
        r = "the key file holds no (unencrypted) PEM private key";
    else if (X509_check_private_key(x, k) != 1)
        r = "the private key does not match the certificate";
    else if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
        r = "the certificate has expired";
    else if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0)
        r = "the certificate is not valid yet";
    if (r) snprintf(why, size, "%s", r);
    int ncas = 0;
    if (!r && ca) {
        b = BIO_new_mem_buf(ca, -1);
        for (X509 *c; b && (c = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL; X509_free(c)) {
            ncas++;
            if (!r && X509_check_ca(c) == 0) r = "a certificate of the CA file is not a CA";
            if (!r && X509_cmp_current_time(X509_get0_notAfter(c)) <= 0)
                r = "a CA certificate has expired";
        }
        BIO_free(b);
        if (!r && ncas == 0) r = "the CA file holds no PEM certificate";
        if (r) snprintf(why, size, "%s", r);
    }
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(k);
    return r;
}

/* Read and check the files into t->pending. */
static annal_err load(sec_tls *t) {
    char *cert = slurp(t->cert_path), *key = slurp(t->key_path);
    char *ca = t->ca_path ? slurp(t->ca_path) : NULL;
    annal_err r = ANNAL_OK;
    char why[160];
    if (!cert || !key || (t->ca_path && !ca)) {
        srv_log(t->srv, ANNAL_LOG_ERROR, "TLS: cannot read %s: %s",
                !cert  ? t->cert_path
                : !key ? t->key_path
                       : t->ca_path,
                strerror(errno));
        r = ANNAL_EIO;
    } else if (check(cert, key, ca, why, sizeof why)) {
        srv_log(t->srv, ANNAL_LOG_ERROR, "TLS: %s (certificate %s, key %s%s%s)", why, t->cert_path,
                t->key_path, ca ? ", CA " : "", ca ? t->ca_path : "");
        r = ANNAL_EINVAL;
    } else {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        grpc_ssl_server_certificate_config *cfg =
            /* gRPC 1.51's reloading path insists on roots even when no client certificate
             * is requested: then the server's own chain stands in, never consulted. */
            grpc_ssl_server_certificate_config_create(ca ? ca : cert, &pair, 1);
        if (!cfg) {
            r = ANNAL_EINVAL;
        } else {
            pthread_mutex_lock(&t->mu);
            if (t->pending) grpc_ssl_server_certificate_config_destroy(t->pending);
            t->pending = cfg;
            pthread_mutex_unlock(&t->mu);
        }
    }
    if (key) OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    free(ca);
    return r;
}

static grpc_ssl_certificate_config_reload_status fetch(void *ud,
                                                       grpc_ssl_server_certificate_config **cfg) {
    sec_tls *t = ud;
    pthread_mutex_lock(&t->mu);
    grpc_ssl_server_certificate_config *p = t->pending;
    t->pending = NULL;
    pthread_mutex_unlock(&t->mu);
    if (!p) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    *cfg = p;
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

annal_err tls_open(annal_server *srv, const annal_server_opts *o, sec_tls **out) {
    sec_tls *t = calloc(1, sizeof *t);
    if (!t) return ANNAL_ENOMEM;
    t->srv = srv;
    pthread_mutex_init(&t->mu, NULL);
    t->cert_path = dup_or_null(o->cert_file);
    t->key_path = dup_or_null(o->key_file);
    t->ca_path = dup_or_null(o->ca_file);
    t->has_ca = o->ca_file != NULL;
    *out = t;
    /* The CLI may hand over a temporary CA bundle it removes after start: keep its text
     * by loading now; a reload reads the same paths again. */
    return load(t);
}

void *tls_credentials(sec_tls *t) {
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            t->has_ca ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                      : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch, t);
    return opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
}

void tls_close(sec_tls *t) {
    if (!t) return;
    if (t->pending) grpc_ssl_server_certificate_config_destroy(t->pending);
    pthread_mutex_destroy(&t->mu);
    free(t->cert_path);
    free(t->key_path);
    free(t->ca_path);
    free(t);
}

annal_err annal_server_reload_tls(annal_server *srv) {
    if (!srv || !srv->tls) return ANNAL_EINVAL;
    annal_err r = load(srv->tls);
    if (r == ANNAL_OK)
        srv_log(srv, ANNAL_LOG_INFO,
                "TLS: certificates reloaded from %s (new connections use them)",
                srv->tls->cert_path);
    else
        srv_log(srv, ANNAL_LOG_WARN, "TLS: reload failed; the previous certificates stay in use");
    return r;
}
