#!/usr/bin/env bash
# KurrentDB's v2 append protocol (StreamsService/AppendSession and /AppendRecords) through
# the official @kurrent/kurrentdb-client (tests/e2e/v2.js): against `annal serve
# --insecure`, then over TLS with users and ACLs. Each server runs on a free loopback
# port of its own and is stopped at the end.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC/tests/e2e/v2.js" "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/v2.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export NODE_NO_WARNINGS=1

# start LOG PATTERN ARGS...: a server in the background; its port in $port.
start() {
    local log=$1 pattern=$2
    shift 2
    : >"$log" # exists before the job opens it
    "$ANNAL" --data "$work/store" serve --listen 127.0.0.1:0 --log-level debug "$@" 2>"$log" &
    server_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed -n "s/.*listening on 127.0.0.1:\([0-9]*\)$pattern.*/\1/p" "$log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$log")"
        sleep 0.1
    done
    [ -n "$port" ] || fail "no port: $(cat "$log")"
}
stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" || fail "server exit $?"
    server_pid=""
}

start "$work/server.log" "" --insecure
timeout 180 node "$node_dir/v2.js" "$ANNAL_SRC/src/server/proto" "$port" || fail "v2.js: $(tail -5 "$work/server.log")"
# The client went through the v2 methods (it does only once GetSupportedMethods lists them).
for m in AppendSession AppendRecords; do
    grep -q "call /kurrentdb.protocol.v2.streams.StreamsService/$m" "$work/server.log" ||
        fail "no $m call in the log"
done
stop
"$ANNAL" --data "$work/store" verify >/dev/null || fail "verify after the v2 appends"
echo "ok: v2 appends, insecure"

# Over TLS, with the built-in users (admin, ops) and a stream ACL.
"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/node" >/dev/null
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit KURRENTDB_DEFAULT_OPS_PASSWORD=ops-Secret-9 \
    start "$work/secure.log" " (TLS)" --cert "$work/node/node.crt" --key "$work/node/node.key" \
    --ca "$work/ca/ca.crt"
timeout 180 node "$node_dir/v2.js" "$ANNAL_SRC/src/server/proto" "$port" secure "$work/ca/ca.crt" ||
    fail "v2.js secure: $(tail -5 "$work/secure.log")"
grep -qF "audit: denied write of 'v2locked-" "$work/secure.log" || fail "no audit line for the refused write"
stop
echo "ok: v2 appends over TLS, with ACLs"
