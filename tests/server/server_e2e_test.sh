#!/usr/bin/env bash
# annal serve against the official Node.js clients, unchanged: @kurrent/kurrentdb-client
# (reads over its Rust/hyper stack) and @eventstore/db-client (grpc-js), pinned in
# tests/e2e/package-lock.json and installed with `npm ci` into the build directory.
# Then a graceful stop on SIGTERM with a subscription open.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

# The clients, installed once per lock file.
node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC"/tests/e2e/{package.json,package-lock.json,clients.js,raw.js,abuse.js,scale.js} "$node_dir/"
if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock" 2>/dev/null; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci"
    cp "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock"
fi

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/server_e2e.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Neither TLS nor --insecure: refused, saying how.
if "$ANNAL" --data "$work/store" serve 2>"$work/refuse.err"; then fail "served without TLS or --insecure"; fi
grep -q -- "--insecure" "$work/refuse.err" || fail "the refusal does not say how: $(cat "$work/refuse.err")"

# The logs exist before the servers start: the shell opens a background job's redirection
# in the child, so reading it at once could find no file (and stop this script).
: >"$work/server.log"
: >"$work/server2.log"
"$ANNAL" --data "$work/store" serve --insecure --listen 127.0.0.1:0 --log-level debug \
    2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$work/server.log")"
    sleep 0.1
done
[ -n "$port" ] || fail "server did not report its port"
echo "server on port $port"

for client in eventstore kurrent; do
    timeout 120 node "$node_dir/clients.js" "$client" "$port" || fail "$client client checks"
done
# Both clients append through BatchAppend once the server lists it (a line per call).
batch_calls=$(grep -c 'call /event_store.client.streams.Streams/BatchAppend' "$work/server.log" || true)
append_calls=$(grep -c 'call /event_store.client.streams.Streams/Append' "$work/server.log" || true)
[ "$batch_calls" -ge 2 ] && [ "$append_calls" -eq 0 ] ||
    fail "clients did not append through BatchAppend ($batch_calls BatchAppend, $append_calls Append calls)"
timeout 120 node "$node_dir/raw.js" "$ANNAL_SRC/src/server/proto" "$port" || fail "raw gRPC checks"
timeout 180 node "$node_dir/abuse.js" "$ANNAL_SRC/src/server/proto" "$port" "$server_pid" || fail "bad input checks"
# 1,000 subscriptions, a 16 MiB event; with ANNAL_LONG=1 also a subscription idle 90 s.
timeout 300 node "$node_dir/scale.js" "$ANNAL_SRC/src/server/proto" "$port" || fail "scale checks"

# A subscription (and the client's BatchAppend call) open at SIGTERM is ended with
# UNAVAILABLE, and the server exits 0 well within its 10 s grace period.
timeout 60 node "$node_dir/clients.js" eventstore "$port" hold >"$work/hold.out" 2>&1 &
hold_pid=$!
for _ in $(seq 100); do
    grep -q subscribed "$work/hold.out" && break
    sleep 0.1
done
grep -q subscribed "$work/hold.out" || fail "no subscription confirmation: $(cat "$work/hold.out")"
start=$(date +%s)
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
took=$(($(date +%s) - start))
[ "$rc" -eq 0 ] || fail "server exited $rc after SIGTERM: $(tail -5 "$work/server.log")"
[ "$took" -lt 5 ] || fail "server took $took s to stop"
grep -q "store closed" "$work/server.log" || fail "no clean close in the log"
for _ in $(seq 50); do grep -q "ended:" "$work/hold.out" && break; sleep 0.1; done
kill "$hold_pid" 2>/dev/null || true
wait "$hold_pid" 2>/dev/null || true
grep -q "ended: unavailable" "$work/hold.out" || fail "subscription did not end UNAVAILABLE: $(cat "$work/hold.out")"
echo "ok: both clients, SIGTERM with a subscription open ($took s)"

# Operations.Shutdown: the server (started again on the same store) stops as on SIGTERM.
"$ANNAL" --data "$work/store" serve --insecure --listen 127.0.0.1:0 2>"$work/server2.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server2.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || fail "the second server did not report its port"
timeout 30 node "$node_dir/raw.js" "$ANNAL_SRC/src/server/proto" "$port" shutdown >/dev/null ||
    fail "Shutdown call"
rc=0
timeout 10 tail --pid="$server_pid" -f /dev/null || fail "server still running after Shutdown"
wait "$server_pid" || rc=$?
server_pid=""
[ "$rc" -eq 0 ] || fail "server exited $rc after Shutdown: $(tail -5 "$work/server2.log")"
grep -q "shutdown asked by a client" "$work/server2.log" || fail "no Shutdown in the log"
grep -q "store closed" "$work/server2.log" || fail "no clean close after Shutdown"
echo "ok: Operations.Shutdown stops the server cleanly"
