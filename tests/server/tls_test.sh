#!/usr/bin/env bash
# annal serve over TLS with certificates from `annal cert`: both official Node.js clients
# (the kurrent client reads over its Rust stack, which rejects v1 certificates) append and
# read with the CA in their connection string; a client trusting another CA fails clearly.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

# The clients, installed once per lock file (shared with server_e2e_test).
node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC"/tests/server/tls_clients.js "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/tls.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Certificates: a CA, a node certificate for 127.0.0.1/localhost, a user; another CA.
"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/node" --dns node.test >/dev/null
"$ANNAL" cert user alice --ca "$work/ca" --out "$work/users" >/dev/null
"$ANNAL" cert ca --out "$work/other" >/dev/null
if command -v openssl >/dev/null; then
    openssl x509 -in "$work/node/node.crt" -noout -text >"$work/node.txt"
    grep -q "Version: 3" "$work/node.txt" || fail "node certificate is not X.509 v3"
    grep -q "IP Address:127.0.0.1, DNS:localhost, DNS:node.test" "$work/node.txt" || fail "SANs: $(grep -A1 'Alternative' "$work/node.txt")"
    openssl verify -CAfile "$work/ca/ca.crt" "$work/node/node.crt" "$work/users/user-alice.crt" >/dev/null || fail "not signed by the CA"
    if openssl verify -CAfile "$work/other/ca.crt" "$work/node/node.crt" >/dev/null 2>&1; then fail "verified by another CA"; fi
fi
[ "$(stat -c %a "$work/node/node.key")" = 600 ] || fail "node.key is not 0600"
# Existing files are kept; a missing CA is explained.
if "$ANNAL" cert ca --out "$work/ca" 2>"$work/again.err"; then fail "overwrote the CA"; fi
grep -q -- "--force" "$work/again.err" || fail "no hint: $(cat "$work/again.err")"
if "$ANNAL" cert node --ca "$work/none" --out "$work/x" 2>"$work/noca.err"; then fail "node without a CA"; fi
grep -q "annal cert ca" "$work/noca.err" || fail "no hint: $(cat "$work/noca.err")"

: >"$work/server.log" # exists before the job opens it: reading it at once must not fail
# With TLS, calls authenticate (docs/security.md): the admin's first password from the
# environment; tls_clients.js connects as admin:changeit.
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit "$ANNAL" --data "$work/store" serve --listen 127.0.0.1:0 --cert "$work/node/node.crt" \
    --key "$work/node/node.key" --ca "$work/ca" 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) (TLS).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$work/server.log")"
    sleep 0.1
done
[ -n "$port" ] || fail "server did not report its port: $(cat "$work/server.log")"

for client in eventstore kurrent; do
    timeout 60 node "$node_dir/tls_clients.js" "$client" "$port" "$work/ca/ca.crt" || fail "$client over TLS"
    timeout 60 node "$node_dir/tls_clients.js" "$client" "$port" "$work/other/ca.crt" wrong-ca >"$work/wrong-$client.out" 2>&1 ||
        fail "$client with the wrong CA: $(cat "$work/wrong-$client.out")"
    grep "^refused:" "$work/wrong-$client.out" | grep -qiE "certificate|self.signed|unknown ca|UnknownIssuer|handshake" ||
        fail "$client: the failure does not say it is the certificate: $(cat "$work/wrong-$client.out")"
    echo "$client, wrong CA: $(grep "^refused:" "$work/wrong-$client.out" | head -c 300)"
done
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit"
server_pid=""
"$ANNAL" --data "$work/store" read --json '$all' >"$work/all.json"
[ "$(grep -c '"type":"Tls"' "$work/all.json")" -eq 4 ] || fail "want 4 events in the store: $(cat "$work/all.json")"
echo "ok: TLS with annal cert's certificates, both clients; wrong CA refused"
