/*
 * cert.c -- `annal cert`: a development CA and node and user certificates, made with
 * OpenSSL's C API. X.509 v3 with subjectAltNames and key usages, because the Rust-based
 * KurrentDB client (and any modern TLS stack) rejects v1 certificates and ones without SANs.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "cli.h"

static const char usage[] =
    "usage: annal cert ca --out DIR [--days N] [--force]\n"
    "       annal cert node --ca DIR --out DIR [--ip IP]... [--dns NAME]... [--days N] [--force]\n"
    "       annal cert user NAME --ca DIR --out DIR [--days N] [--force]\n"
    "\n"
    "Make certificates for development and tests (RSA 2048, SHA-256, X.509 v3):\n"
    "  ca    a certificate authority: DIR/ca.crt and DIR/ca.key\n"
    "  node  a server certificate signed by the CA in --ca DIR: DIR/node.crt, DIR/node.key;\n"
    "        its subjectAltNames are IP:127.0.0.1 and DNS:localhost plus each --ip and --dns\n"
    "  user  a client certificate for mutual TLS, CN=NAME: DIR/user-NAME.crt and .key\n"
    "Private keys are written unencrypted with mode 0600. Existing files are kept unless\n"
    "--force. Serve with: annal serve --cert DIR/node.crt --key DIR/node.key --ca DIR/ca.crt\n"
    "Clients trust the CA: kurrentdb://127.0.0.1:2113?tls=true&tlsCAFile=DIR/ca.crt\n"
    "\n"
    "Options:\n"
    "  --out DIR    where to write (created if missing)\n"
    "  --ca DIR     the CA made by `annal cert ca` (ca.crt and ca.key)\n"
    "  --ip IP      an IP address the node is reached at (repeatable)\n"
    "  --dns NAME   a DNS name the node is reached at (repeatable)\n"
    "  --days N     validity (default: 1825 for a CA, 365 otherwise)\n"
    "  --force      overwrite existing files\n"
    "\n"
    "Exit codes: 0 ok, 1 usage, 5 failure (OpenSSL, files).\n";

enum { OPT_OUT, OPT_CA, OPT_IP, OPT_DNS, OPT_DAYS, OPT_FORCE };
static const cli_option options[] = {
    {"out", 1, OPT_OUT},   {"ca", 1, OPT_CA},       {"ip", 1, OPT_IP}, {"dns", 1, OPT_DNS},
    {"days", 1, OPT_DAYS}, {"force", 0, OPT_FORCE}, {NULL, 0, 0},
};

#define MAX_NAMES 32

typedef struct cert_req {
    const char *kind; /* "ca", "node", "user" */
    const char *user; /* user's name */
    const char *out, *ca;
    const char *ips[MAX_NAMES], *dns[MAX_NAMES];
    int nips, ndns;
    uint64_t days;
    int force;
} cert_req;

/* The OpenSSL error queue as one message. */
static int ssl_fail(const char *what) {
    char detail[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, detail, sizeof detail);
    ERR_clear_error();
    cli_error("cert", "%s: %s", what, detail);
    return CLI_EXIT_STORE;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* Write a PEM file, the key readable by its owner only. */
static int write_pem(const char *dir, const char *name, int force, X509 *cert, EVP_PKEY *key) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (force ? 0 : O_EXCL), key ? 0600 : 0644);
    if (fd < 0) {
        cli_error("cert", "cannot write %s: %s%s", path, strerror(errno),
                  errno == EEXIST ? " (--force overwrites)" : "");
        return CLI_EXIT_STORE;
    }
    if (key) (void)fchmod(fd, 0600); /* an existing file keeps its mode on O_TRUNC */
    FILE *f = fdopen(fd, "w");
    int ok = f && (key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                       : PEM_write_X509(f, cert));
    if (f ? fclose(f) != 0 : close(fd) != 0) ok = 0;
    if (!ok) {
        cli_error("cert", "cannot write %s", path);
        return CLI_EXIT_STORE;
    }
    return 0;
}

static int load_ca(const char *dir, X509 **cert, EVP_PKEY **key) {
    char path[4096];
    snprintf(path, sizeof path, "%s/ca.crt", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("cert", "cannot read %s: %s (make one with `annal cert ca --out %s`)", path,
                  strerror(errno), dir);
        return CLI_EXIT_USAGE;
    }
    *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!*cert) return ssl_fail("ca.crt is not a PEM certificate");
    snprintf(path, sizeof path, "%s/ca.key", dir);
    f = fopen(path, "rb");
    if (!f) {
        cli_error("cert", "cannot read %s: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!*key) return ssl_fail("ca.key is not an unencrypted PEM private key");
    if (X509_check_private_key(*cert, *key) != 1) return ssl_fail("ca.key does not match ca.crt");
    return 0;
}

/* Build and sign one certificate for r (issuer NULL: self-signed CA). */
static int make_cert(const cert_req *r, X509 *issuer, EVP_PKEY *issuer_key, X509 **out,
                     EVP_PKEY **out_key) {
    int is_ca = strcmp(r->kind, "ca") == 0;
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *cert = X509_new();
    BIGNUM *serial = BN_new();
    int rc = 0;
    if (!key || !cert || !serial) {
        rc = ssl_fail("cannot make a key");
        goto done;
    }
    /* A random 127-bit serial: unique without a database, positive as RFC 5280 asks. */
    if (!BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) ||
        !X509_set_version(cert, X509_VERSION_3) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)(r->days * 86400)) ||
        !X509_set_pubkey(cert, key)) {
        rc = ssl_fail("cannot fill the certificate");
        goto done;
    }
    X509_NAME *name = X509_get_subject_name(cert);
    const char *cn = is_ca ? "annal development CA" : r->user ? r->user : "annal-node";
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"annal", -1,
                                    -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name)) {
        rc = ssl_fail("cannot set the names");
        goto done;
    }
    X509 *iss = issuer ? issuer : cert;
    int bad = add_ext(cert, iss, NID_subject_key_identifier, "hash") ||
              add_ext(cert, iss, NID_authority_key_identifier, "keyid:always");
    if (is_ca) {
        bad = bad || add_ext(cert, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
              add_ext(cert, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        bad =
            bad || add_ext(cert, iss, NID_basic_constraints, "critical,CA:FALSE") ||
            add_ext(cert, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
            add_ext(cert, iss, NID_ext_key_usage, r->user ? "clientAuth" : "serverAuth,clientAuth");
    }
    if (!bad && !is_ca && !r->user) {
        cli_buf san = {0};
        cli_buf_adds(&san, "IP:127.0.0.1,DNS:localhost");
        for (int i = 0; i < r->nips; i++) cli_buf_addf(&san, ",IP:%s", r->ips[i]);
        for (int i = 0; i < r->ndns; i++) cli_buf_addf(&san, ",DNS:%s", r->dns[i]);
        bad = add_ext(cert, iss, NID_subject_alt_name, cli_buf_cstr(&san));
        if (bad) {
            cli_buf_free(&san);
            rc = ssl_fail("bad --ip or --dns");
            goto done;
        }
        cli_buf_free(&san);
    }
    if (bad) {
        rc = ssl_fail("cannot add the extensions");
        goto done;
    }
    if (!X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256())) {
        rc = ssl_fail("cannot sign");
        goto done;
    }
    *out = cert;
    *out_key = key;
    cert = NULL;
    key = NULL;
done:
    BN_free(serial);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static int run(const cert_req *r) {
    if (mkdir(r->out, 0755) != 0 && errno != EEXIST) {
        cli_error("cert", "cannot create %s: %s", r->out, strerror(errno));
        return CLI_EXIT_STORE;
    }
    X509 *ca = NULL, *cert = NULL;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    int rc = 0;
    if (strcmp(r->kind, "ca") != 0) rc = load_ca(r->ca, &ca, &ca_key);
    if (!rc) rc = make_cert(r, ca, ca_key, &cert, &key);
    char crt[300], kf[300];
    const char *base = strcmp(r->kind, "ca") == 0 ? "ca" : r->user ? "user-" : "node";
    snprintf(crt, sizeof crt, "%s%s.crt", base, r->user ? r->user : "");
    snprintf(kf, sizeof kf, "%s%s.key", base, r->user ? r->user : "");
    if (!rc) rc = write_pem(r->out, kf, r->force, NULL, key);
    if (!rc) rc = write_pem(r->out, crt, r->force, cert, NULL);
    if (!rc) printf("wrote %s/%s and %s/%s\n", r->out, crt, r->out, kf);
    X509_free(ca);
    X509_free(cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    return rc;
}

int cli_cmd_cert(cli_global *g, int argc, char **argv) {
    cert_req r;
    memset(&r, 0, sizeof r);
    cli_args a;
    cli_args_init(&a, g, argc, argv);
    const char *v;
    for (int o; (o = cli_args_next(&a, options, &v)) != CLI_ARG_END;) {
        switch (o) {
        case CLI_ARG_ERROR: return CLI_EXIT_USAGE;
        case CLI_ARG_HELP:
            fputs(usage, stdout);
            return cli_finish_output("cert", stdout, "standard output", CLI_EXIT_OK);
        case CLI_ARG_OPERAND:
            if (!r.kind)
                r.kind = v;
            else if (strcmp(r.kind, "user") == 0 && !r.user)
                r.user = v;
            else
                return cli_usage_error("cert", "unexpected argument '%s'", v);
            break;
        case OPT_OUT: r.out = v; break;
        case OPT_CA: r.ca = v; break;
        case OPT_IP:
        case OPT_DNS:
            if ((o == OPT_IP ? r.nips : r.ndns) == MAX_NAMES)
                return cli_usage_error("cert", "at most %d of each of --ip and --dns", MAX_NAMES);
            if (o == OPT_IP)
                r.ips[r.nips++] = v;
            else
                r.dns[r.ndns++] = v;
            break;
        case OPT_DAYS:
            if (cli_parse_u64(v, &r.days) != 0 || r.days == 0 || r.days > 36500)
                return cli_usage_error("cert", "bad --days '%s': want 1 to 36500", v);
            break;
        case OPT_FORCE: r.force = 1; break;
        }
    }
    if (!r.kind) return cli_usage_error("cert", "say what to make: ca, node or user");
    int is_ca = strcmp(r.kind, "ca") == 0, is_node = strcmp(r.kind, "node") == 0;
    if (!is_ca && !is_node && strcmp(r.kind, "user") != 0)
        return cli_usage_error("cert", "unknown kind '%s': want ca, node or user", r.kind);
    if (strcmp(r.kind, "user") == 0 &&
        (!r.user || !*r.user || strpbrk(r.user, "/\\") || r.user[0] == '.'))
        return cli_usage_error("cert", "user needs a NAME (no '/', not starting with '.')");
    if (!r.out) return cli_usage_error("cert", "--out DIR is required");
    if (!is_ca && !r.ca)
        return cli_usage_error("cert", "--ca DIR (made by `annal cert ca`) is required");
    if (is_ca && r.ca) return cli_usage_error("cert", "--ca is for node and user certificates");
    if (!is_node && (r.nips || r.ndns))
        return cli_usage_error("cert", "--ip and --dns are for node certificates");
    if (!r.days) r.days = is_ca ? 1825 : 365;
    int rc = run(&r);
    return cli_finish_output("cert", stdout, "standard output", rc);
}
