#!/usr/bin/env bash
# annal serve's DCB service (src/server/proto/dcb.proto) through grpc-js (tests/e2e/dcb.js):
# conditional appends, reads and subscriptions by query on an insecure server; the race of
# 8 processes for the last 10 seats of a course, many rounds (ANNAL_LONG=1: more); a server
# killed with SIGKILL mid-race losing no acknowledged booking; then a
# secure server (TLS, users) where a DCB read never returns an event its caller may not
# read and appends need $w.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC"/tests/e2e/dcb.js "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/dcb_server.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export NODE_NO_WARNINGS=1
proto="$ANNAL_SRC/src/server/proto"

start() { # start LOG STORE ARGS...: sets server_pid and port
    local log=$1 store=$2
    shift 2
    : >"$log" # exists before the job opens it
    "$ANNAL" --data "$store" serve --listen 127.0.0.1:0 "$@" 2>"$log" &
    server_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$log")"
        sleep 0.1
    done
    [ -n "$port" ] || fail "no port: $(cat "$log")"
}
stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" || fail "server exited $? after SIGTERM"
    server_pid=""
}

# ---- insecure: the service, then the race
start "$work/server.log" "$work/store" --insecure
timeout 120 node "$node_dir/dcb.js" basic "$port" "$proto" || fail "dcb.js basic"
# `annal append --tag --fail-if-match` through the server that owns the store (its socket),
# and through --server: the DCB service, the stored event printed with its tags.
Q='type=NameClaimed tag=name:cli'
out=$("$ANNAL" --data "$work/store" append '$dcb' NameClaimed '{}' --tag name:cli --fail-if-match "$Q") ||
    fail "a tagged append through the server's socket"
echo "$out" | jq -e '.stream == "$dcb" and .tags == ["name:cli"]' >/dev/null || fail "printed as stored: $out"
pos=$(echo "$out" | jq -r .position)
rc=0
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tls=false" append '$dcb' NameClaimed '{}' --tag name:cli \
    --fail-if-match "$Q" 2>"$work/err" || rc=$?
[ "$rc" -eq 6 ] || fail "a second claim through --server: exit $rc, want 6: $(cat "$work/err")"
grep -q "event at position $pos matches" "$work/err" || fail "the matching position: $(cat "$work/err")"
rc=0
"$ANNAL" --data "$work/store" append 'cli-1' Tagged '{}' --tag name:cli --expected-revision 3 2>"$work/err" || rc=$?
[ "$rc" -eq 3 ] || fail "a wrong expected revision through the server: exit $rc: $(cat "$work/err")"
# --after goes through: nothing matching after the claim itself, so this one is written.
"$ANNAL" --data "$work/store" append '$dcb' NameReleased '{}' --tag name:cli --fail-if-match "$Q" --after "$pos" \
    >"$work/out" 2>"$work/err" || fail "an append whose condition holds after --after: $(cat "$work/err")"
jq -e ".position > $pos" "$work/out" >/dev/null || fail "appended after the claim: $(cat "$work/out")"
# import of tagged events (a named stream and $dcb) through the server, twice: the same.
"$ANNAL" --data "$work/src" append imp-1 Imported '{"n":1}' --tag imp:x --tag imp:y >/dev/null
"$ANNAL" --data "$work/src" append '$dcb' Imported '{"n":2}' --tag imp:x >/dev/null
"$ANNAL" --data "$work/src" export >"$work/imp.jsonl"
for _ in 1 2; do
    "$ANNAL" --data "$work/store" import "$work/imp.jsonl" >"$work/out" 2>"$work/err" ||
        fail "import of tagged events through the server: $(cat "$work/err")"
    grep -q "through the server" "$work/out" || fail "import did not go through the server: $(cat "$work/out")"
done
"$ANNAL" --data "$work/store" find 'tag=imp:x' --json >"$work/out"
jq -s -e 'length == 2 and .[0].tags == ["imp:x","imp:y"] and .[1].stream == "$dcb" and .[1].data == {"n":2}' \
    "$work/out" >/dev/null || fail "imported tagged events, once each: $(cat "$work/out")"
echo "ok - annal append with tags and conditions, and import of tagged events, through the server"
rounds=5
[ "${ANNAL_LONG:-0}" = 1 ] && rounds=50
timeout 600 node "$node_dir/dcb.js" race "$port" "$proto" "$rounds" || fail "dcb.js race"
stop
# The store agrees after the server is gone: every course has exactly its capacity.
for c in $("$ANNAL" --data "$work/store" find 'type=SeatBooked' --json | jq -r '.tags[0]' | grep -E '^course:c[0-9]+-[0-9a-f]{8}$' | sort -u); do
    n=$("$ANNAL" --data "$work/store" find "type=SeatBooked tag=$c" --json | jq -s length)
    [ "$n" -eq 30 ] || fail "$c has $n bookings in the store, capacity 30"
done
echo "ok - the store holds exactly the capacity of every raced course"

# ---- a server killed with SIGKILL mid-race loses no acknowledged booking, and never books
# more than the capacity
start "$work/kill.log" "$work/kstore" --insecure
racers=()
for i in 0 1 2 3 4 5 6 7; do
    DCB_ACK_LOG=1 timeout 120 node "$node_dir/dcb.js" racer "$port" "$proto" kc 200 "k$i" >"$work/ack$i" 2>"$work/ack$i.err" &
    racers+=($!)
done
for _ in $(seq 300); do
    [ "$(cat "$work"/ack? | grep -c '"ack"')" -ge 40 ] && break
    sleep 0.05
done
kill -KILL "$server_pid"
wait "$server_pid" || true
server_pid=""
for p in "${racers[@]}"; do wait "$p" || fail "a racer failed: $(cat "$work"/ack*.err)"; done
acked=$(cat "$work"/ack? | grep -c '"ack"')
[ "$acked" -ge 40 ] && [ "$acked" -lt 200 ] || fail "the kill was not mid-race: $acked bookings acknowledged"
"$ANNAL" --data "$work/kstore" find 'type=SeatBooked tag=course:kc' --json >"$work/found"
n=$(jq -s length "$work/found")
[ "$n" -ge "$acked" ] && [ "$n" -le 200 ] || fail "$n bookings stored, $acked acknowledged, capacity 200"
jq -r 'select(.ack) | "\(.ack) \(.student)"' "$work"/ack? | sort >"$work/acked"
jq -r '"\(.position) \(.tags[1])"' "$work/found" | sort >"$work/stored"
missing=$(comm -23 "$work/acked" "$work/stored")
[ -z "$missing" ] || fail "acknowledged bookings lost after kill -9: $missing"
echo "ok - kill -9 mid-race: all $acked acknowledged bookings stored ($n in all, capacity 200)"

# ---- secure: users and ACLs
"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/node" >/dev/null
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit start "$work/secure.log" "$work/secure" \
    --cert "$work/node/node.crt" --key "$work/node/node.key" --ca "$work/ca/ca.crt"
timeout 120 node "$node_dir/dcb.js" secure "$port" "$proto" "$work/ca/ca.crt" || fail "dcb.js secure"
grep -q "access denied" "$work/secure.log" || grep -qi "denied" "$work/secure.log" ||
    fail "no audit line for the refused append: $(grep -i audit "$work/secure.log" | tail -3)"
stop
echo "dcb_server_test: ok"
