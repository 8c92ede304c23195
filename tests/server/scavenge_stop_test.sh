#!/usr/bin/env bash
# Operations.StopScavenge stops a running scavenge (issue 15): a store with a sealed
# 256 MiB segment, half of its events in deleted streams; `annal serve`; StartScavenge and
# at once StopScavenge (tests/e2e/scavenge.js): the scavenge ends "stopped" before it is
# done. Then, the server stopped: the store verifies, every kept event is there, and
# `annal compact` finishes the work, verifying again.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC/tests/e2e/scavenge.js" "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"
mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/scavenge_stop.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
S="$work/store"

# 1.1M events of ~250 bytes in 20 streams, interleaved: more than the first (256 MiB)
# segment; the streams d-* (half) deleted.
python3 -c "
import sys
pad = 'x' * 200
w = sys.stdout.write
for i in range(1100000):
    k = i % 20
    w('{\"stream\":\"%s-%d\",\"type\":\"T\",\"data\":{\"p\":\"%s\"}}\n' % ('d' if k % 2 else 'k', k, pad))
" | "$ANNAL" --data "$S" import --no-sync >/dev/null || fail "import"
for k in 1 3 5 7 9 11 13 15 17 19; do "$ANNAL" --data "$S" delete "d-$k" >/dev/null || fail "delete d-$k"; done
kept() { "$ANNAL" --data "$S" read '$ce-k' --json | sha256sum; }
before=$(kept)

: >"$work/server.log"
"$ANNAL" --data "$S" serve --insecure --listen 127.0.0.1:0 --log-level debug 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$work/server.log")"
    sleep 0.1
done
[ -n "$port" ] || fail "server did not report its port"
timeout 120 node "$node_dir/scavenge.js" "$ANNAL_SRC/src/server/proto" "$port" ||
    fail "StopScavenge checks: $(grep -i scavenge "$work/server.log" | tail -3)"
grep -q "scavenge .* stopped" "$work/server.log" || fail "the server log does not say the scavenge stopped"
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit status $?"
server_pid=""

"$ANNAL" --data "$S" verify >/dev/null || fail "verify after a stopped scavenge"
[ "$(kept)" = "$before" ] || fail "kept events changed after a stopped scavenge"
"$ANNAL" --data "$S" compact >"$work/compact.out" || fail "compact after a stopped scavenge"
"$ANNAL" --data "$S" verify >/dev/null || fail "verify after compact"
[ "$(kept)" = "$before" ] || fail "kept events changed after compact"
echo "ok"
