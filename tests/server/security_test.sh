#!/usr/bin/env bash
# annal serve's security (docs/security.md) through the official Node.js clients over TLS:
# a secure start needs an admin password; certificate files are checked with clear
# errors; tests/e2e/security.js (users, authentication, ACLs, system streams, $settings,
# filtered $all reads and subscriptions, client certificates); operations for $ops and
# $admins only; the audit lines; a SIGHUP reload of the certificates without dropping
# connections (tests/e2e/security_reload.js); and no password in any log or in the store.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC"/tests/e2e/{security.js,security_reload.js} "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/security.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export NODE_NO_WARNINGS=1

"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/node" >/dev/null
"$ANNAL" cert user alice --ca "$work/ca" --out "$work/users" >/dev/null
"$ANNAL" cert user mallory --ca "$work/ca" --out "$work/users" >/dev/null
"$ANNAL" cert ca --out "$work/ca2" >/dev/null
"$ANNAL" cert node --ca "$work/ca2" --out "$work/node2" >/dev/null
# The server's certificate files, replaced in place for the reload below.
mkdir -p "$work/live"
cp "$work/node/node.crt" "$work/node/node.key" "$work/live/"
# Client CAs: both, so user certificates stay valid across the reload.
cat "$work/ca/ca.crt" "$work/ca2/ca.crt" >"$work/cas.crt"

serve() { # serve LOG ARGS... (environment before): exits with the server's status
    local log=$1
    shift
    "$ANNAL" --data "$work/store" serve --listen 127.0.0.1:0 "$@" 2>"$log"
}

# ---- refusals at start, each with its reason
rc=0
serve "$work/noadmin.log" --cert "$work/live/node.crt" --key "$work/live/node.key" || rc=$?
[ "$rc" -ne 0 ] || fail "a secure start without an admin password"
grep -q "ANNAL_DEFAULT_ADMIN_PASSWORD" "$work/noadmin.log" || fail "no hint: $(cat "$work/noadmin.log")"
rc=0
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit serve "$work/mismatch.log" --cert "$work/live/node.crt" --key "$work/node2/node.key" || rc=$?
[ "$rc" -ne 0 ] || fail "started with a key that does not match"
grep -q "does not match the certificate" "$work/mismatch.log" || fail "mismatch: $(cat "$work/mismatch.log")"
rc=0
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit serve "$work/notca.log" --cert "$work/live/node.crt" --key "$work/live/node.key" --ca "$work/node/node.crt" || rc=$?
[ "$rc" -ne 0 ] || fail "started with a CA file that holds no CA"
grep -q "is not a CA" "$work/notca.log" || fail "not a CA: $(cat "$work/notca.log")"
if command -v openssl >/dev/null; then
    e="$work/expired"
    mkdir -p "$e/new"
    : >"$e/index.txt"
    echo 01 >"$e/serial"
    printf '[ca]\ndefault_ca=d\n[d]\ndir=%s\ndatabase=%s/index.txt\nnew_certs_dir=%s/new\nserial=%s/serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n' \
        "$e" "$e" "$e" "$e" >"$e/ca.cnf"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$e/node.key" -out "$e/node.csr" -subj /CN=expired 2>/dev/null
    openssl ca -batch -config "$e/ca.cnf" -cert "$work/ca/ca.crt" -keyfile "$work/ca/ca.key" -in "$e/node.csr" \
        -out "$e/node.crt" -startdate 20200101000000Z -enddate 20200102000000Z -notext >/dev/null 2>&1
    rc=0
    ANNAL_DEFAULT_ADMIN_PASSWORD=changeit serve "$work/expired.log" --cert "$e/node.crt" --key "$e/node.key" || rc=$?
    [ "$rc" -ne 0 ] || fail "started with an expired certificate"
    grep -q "has expired" "$work/expired.log" || fail "expired: $(cat "$work/expired.log")"
fi
echo "ok: refused to start without an admin password, with a mismatched key, a non-CA, an expired certificate"

# ---- the server, with the built-in passwords from the environment (KurrentDB's names too)
: >"$work/server.log" # exists before the job opens it: reading it at once must not fail
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit KURRENTDB_DEFAULT_OPS_PASSWORD=ops-Secret-9 \
    "$ANNAL" --data "$work/store" serve --listen 127.0.0.1:0 --cert "$work/live/node.crt" \
    --key "$work/live/node.key" --ca "$work/cas.crt" 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) (TLS).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$work/server.log")"
    sleep 0.1
done
[ -n "$port" ] || fail "no port: $(cat "$work/server.log")"

timeout 120 node "$node_dir/security.js" "$port" "$work/ca/ca.crt" "$work/users" "$ANNAL_SRC/src/server/proto" \
    >"$work/node.out" 2>&1 || fail "security.js: $(cat "$work/node.out")"
cat "$work/node.out"

# ---- the audit lines
for line in "audit: user 'alice' created by 'admin'" "audit: user 'bob' disabled by 'admin'" \
    "audit: user 'alice' password changed by 'alice'" "audit: user 'bob' deleted by 'admin'" \
    "audit: failed login as 'bob' from ipv4:127.0.0.1: wrong password" \
    "audit: failed login as 'bob' from ipv4:127.0.0.1: user disabled" \
    "audit: denied read of 'secret_" "audit: denied write of '\$settings' to user 'bob'" \
    "audit: denied delete of 'secret_" "audit: denied write of '\$\$secret_" \
    "audit: metadata and ACL of stream 'secret_" "audit: default ACLs (\$settings) changed by 'admin'" \
    "audit: anonymous call to /event_store.client.streams.Streams/Read" \
    "audit: denied write of 'public_" \
    "audit: client certificate CN 'mallory'" "audit: denied /event_store.client.operations.Operations/Shutdown to user 'alice'"; do
    grep -qF "$line" "$work/server.log" || fail "no audit line '$line'"
done
echo "ok: audit lines for denials, failed logins and every change to users and ACLs"

# ---- certificates reloaded on SIGHUP
timeout 60 node "$node_dir/security_reload.js" "$port" "$server_pid" "$work/ca/ca.crt" "$work/ca2/ca.crt" \
    "$work/live/node.crt" "$work/live/node.key" "$work/node2/node.crt" "$work/node2/node.key" "$work/node/node.key" \
    >"$work/reload.out" 2>&1 || fail "security_reload.js: $(cat "$work/reload.out"; tail -5 "$work/server.log")"
cat "$work/reload.out"
grep -q "TLS: certificates reloaded" "$work/server.log" || fail "no reload logged"
grep -q "TLS: the private key does not match the certificate" "$work/server.log" || fail "bad reload not explained"
grep -q "previous certificates stay in use" "$work/server.log" || fail "bad reload: no word on the certificates in use"

kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit"
server_pid=""

# ---- no secret anywhere: logs, client output, the store's files
for secret in changeit ops-Secret-9 alice-Secret-1 bob-Secret-2 alice-New-3; do
    if grep -rqF -- "$secret" "$work"/*.log "$work/node.out" "$work/reload.out"; then
        fail "password '$secret' appears in a log: $(grep -rF -- "$secret" "$work"/*.log "$work/node.out" "$work/reload.out" | head -3)"
    fi
    if grep -rqaF -- "$secret" "$work/store"; then fail "password '$secret' stored in clear"; fi
done
grep -qaF '$argon2id$' "$work/store"/* -r || fail "no argon2id hash in the store"
echo "ok: no password in the logs, the client output or the store (argon2id hashes only)"
