#!/usr/bin/env bash
# annal serve stopping under load from 8 concurrent appenders (the official grpc-js client):
# - SIGTERM: every append either succeeded (and is in the store after the stop) or failed
#   with a status; the server exits 0.
# - kill -9, then a restart on the same port: the clients resend what was not acknowledged
#   with the same event ids; every acknowledged append is there, and nothing is there twice.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
cp "$ANNAL_SRC"/tests/server/load_clients.js "$node_dir/"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/shutdown.XXXXXX")
server_pid=""
load_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    [ -n "$load_pid" ] && kill -KILL "$load_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_server() { # start_server STORE LOG
    "$ANNAL" --data "$1" serve --insecure --listen "127.0.0.1:$port" 2>>"$2" &
    server_pid=$!
    for _ in $(seq 200); do
        grep -q "listening on 127.0.0.1:$port" "$2" && return 0
        kill -0 "$server_pid" 2>/dev/null || fail "server died: $(tail -5 "$2")"
        sleep 0.05
    done
    fail "server did not start: $(tail -5 "$2")"
}

wait_acks() { # wait_acks FILE N: until N appends were acknowledged
    for _ in $(seq 300); do
        [ "$(grep -c '^ack ' "$1" || true)" -ge "$2" ] && return 0
        kill -0 "$load_pid" 2>/dev/null || fail "load clients died: $(tail -5 "$1")"
        sleep 0.05
    done
    fail "fewer than $2 acknowledged appends: $(tail -5 "$1")"
}

# check_store STORE LOADLOG: every acknowledged id once in the store, no id twice.
check_store() {
    "$ANNAL" --data "$1" read --json '$all' | sed -n 's/.*"id":"\([^"]*\)","stream":"load-.*/\1/p' | sort >"$work/stored"
    local dups
    dups=$(uniq -d "$work/stored" | wc -l)
    [ "$dups" -eq 0 ] || fail "$dups event ids stored twice"
    awk '$1 == "ack" {print $2}' "$2" | sort -u >"$work/acked"
    local missing
    missing=$(comm -23 "$work/acked" "$work/stored" | wc -l)
    [ "$missing" -eq 0 ] || fail "$missing acknowledged appends missing: $(comm -23 "$work/acked" "$work/stored" | head -3)"
    # Nothing appeared that no client sent.
    awk '$1 == "ack" || $1 == "fail" {print $2}' "$2" | sort -u >"$work/sent"
    [ "$(comm -13 "$work/sent" "$work/stored" | wc -l)" -eq 0 ] || fail "stored events no client sent"
}

# ---- SIGTERM under load
start_server "$work/a" "$work/a.log"
timeout 90 node "$node_dir/load_clients.js" "$port" 8 sigterm "$work/stop" >"$work/a.load" 2>"$work/a.err" &
load_pid=$!
wait_acks "$work/a.load" 200
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
[ "$rc" -eq 0 ] || fail "server exited $rc after SIGTERM under load: $(tail -5 "$work/a.log")"
rc=0
wait "$load_pid" || rc=$?
load_pid=""
[ "$rc" -eq 0 ] || fail "load clients: exit $rc: $(cat "$work/a.err")"
grep -q "^done" "$work/a.load" || fail "load clients did not finish"
# Every worker ended on a failure with a status (none hung, none crashed).
fails=$(grep -c '^fail ' "$work/a.load" || true)
[ "$fails" -eq 8 ] || fail "want 8 failed appends (one a worker), got $fails: $(grep '^fail' "$work/a.load" | head)"
if grep '^fail ' "$work/a.load" | awk '{print $3}' | grep -qvE '^(unavailable|deadline-exceeded|cancelled|14|4|1|UnavailableError|CancelledError|DeadlineExceededError)$'; then
    fail "an append failed without a status: $(grep "^fail " "$work/a.load" | sort -k3 | tail -3)"
fi
check_store "$work/a" "$work/a.load"
# Graceful: an append the server refused while stopping was not performed (in-flight ones
# finish and are answered), so a client may safely treat the failure as "not written".
stored_failed=$(awk '$1 == "fail" {print $2}' "$work/a.load" | sort -u | comm -12 - "$work/stored" | wc -l)
[ "$stored_failed" -eq 0 ] || fail "$stored_failed appends failed at SIGTERM but are in the store"
echo "SIGTERM: $(grep -c '^ack ' "$work/a.load") acknowledged, all in the store; 8 clean failures ($(grep '^fail ' "$work/a.load" | awk '{print $3}' | sort | uniq -c | tr -s ' ' | tr '\n' ';'))"

# ---- kill -9 under load, restart, resend
start_server "$work/b" "$work/b.log"
timeout 120 node "$node_dir/load_clients.js" "$port" 8 kill "$work/stop" >"$work/b.load" 2>"$work/b.err" &
load_pid=$!
wait_acks "$work/b.load" 200
kill -KILL "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
before=$(grep -c '^ack ' "$work/b.load" || true)
sleep 1
start_server "$work/b" "$work/b.log"
wait_acks "$work/b.load" $((before + 200))
touch "$work/stop"
rc=0
wait "$load_pid" || rc=$?
load_pid=""
[ "$rc" -eq 0 ] || fail "load clients after the restart: exit $rc: $(tail -3 "$work/b.err")"
grep -q "^done" "$work/b.load" || fail "load clients did not finish"
kill -TERM "$server_pid"
wait "$server_pid" || fail "restarted server did not stop cleanly"
server_pid=""
"$ANNAL" --data "$work/b" verify >/dev/null || fail "verify after kill -9"
check_store "$work/b" "$work/b.load"
resent=$(awk '$1 == "fail" {print $2}' "$work/b.load" | sort -u | wc -l)
[ "$resent" -gt 0 ] || fail "no append failed across kill -9: the test did not test resending"
echo "kill -9: $(grep -c '^ack ' "$work/b.load") acknowledged (of them $resent resent after failures), all in the store once"
