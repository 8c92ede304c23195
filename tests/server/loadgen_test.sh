#!/usr/bin/env bash
# The server load generator (bench/server_load.c, run by bench/server_run.sh) against a
# server this test starts: every workload runs briefly, reports nonzero counts and no
# errors, and its counts agree with the store (appends there, passes of the right size).
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
LOAD="$ANNAL_BUILD/bench/annal_server_load"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$LOAD" ] || fail "no $LOAD"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/loadgen.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$ANNAL" --data "$work/store" serve --insecure --listen 127.0.0.1:0 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(tail -5 "$work/server.log")"
    sleep 0.05
done
[ -n "$port" ] || fail "server did not start"
target="esdb://127.0.0.1:$port?tls=false"

# run NAME ARGS...: one workload; its JSON line in $work/NAME.json, errors must be 0.
run() {
    local name=$1
    shift
    "$LOAD" --target "$target" "$@" >"$work/$name.json" 2>"$work/$name.err" ||
        fail "$name: exit $?: $(cat "$work/$name.err")"
    echo "$name: $(cat "$work/$name.json")"
}
# field NAME KEY: a number of NAME's line.
field() { python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$work/$1.json" "$2"; }

# The read fixture first, so $all starts with it: 2,000 events, 1,000 in stream-hot.
run fixture --workload fixture --events 2000 --batch 100 --window 4
[ "$(field fixture events)" -eq 2000 ] || fail "fixture appended $(field fixture events) events"
run read-stream --workload read-stream --seconds 0.5
calls=$(field read-stream calls)
[ "$calls" -ge 1 ] || fail "read-stream made no pass"
[ "$(field read-stream events)" -eq $((calls * 1000)) ] || fail "read-stream: not 1,000 events a pass"
run read-all --workload read-all --events 2000 --seconds 0.5
calls=$(field read-all calls)
[ "$calls" -ge 1 ] || fail "read-all made no pass"
[ "$(field read-all events)" -eq $((calls * 2000)) ] || fail "read-all: not 2,000 events a pass"
run read-calls --workload read-calls --clients 2 --seconds 0.5
calls=$(field read-calls calls)
[ "$calls" -ge 1 ] && [ "$(field read-calls events)" -eq $((calls * 10)) ] || fail "read-calls"

# Appends: what the generator counts is what the store holds.
before=$("$ANNAL" --data "$work/store" read --json '$all' | wc -l)
run append --workload append --clients 2 --seconds 1
events=$(field append events)
[ "$events" -ge 1 ] || fail "append: no events"
after=$("$ANNAL" --data "$work/store" read --json '$all' | wc -l)
[ $((after - before)) -eq "$events" ] || fail "append reported $events events, the store got $((after - before))"
run batch --workload batch --batch 50 --window 2 --seconds 0.5
events=$(field batch events)
[ "$events" -ge 50 ] && [ $((events % 50)) -eq 0 ] || fail "batch: $events events"

# Subscriptions: every subscriber gets every event appended (else the generator counts
# errors); at most the paced 400, fewer on a slow machine.
run subscribe --workload subscribe --subs 3 --clients 4 --rate 400 --seconds 1
events=$(field subscribe events)
[ "$events" -ge 1 ] && [ "$events" -le 400 ] || fail "subscribe: $events events appended"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["p99_ms"] >= d["p50_ms"] >= 0 and d["max_ms"] > 0 else 1)' \
    "$work/subscribe.json" || fail "subscribe: no latencies"
echo "ok"
