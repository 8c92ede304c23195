#!/usr/bin/env bash
# A burst of new connections with the same credentials costs one password verification
# (argon2id, ~0.1 s of CPU each), not one each: 16 clients of the load generator start
# their first calls at the same instant as one user, and the server's debug log shows
# that user's password verified once. Also: the calls all succeed.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
LOAD="$ANNAL_BUILD/bench/annal_server_load"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$LOAD" ] || fail "no $LOAD"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/loginburst.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/ca" >/dev/null
ANNAL_DEFAULT_ADMIN_PASSWORD=Burst-Admin-1 "$ANNAL" --data "$work/store" serve \
    --listen 127.0.0.1:0 --cert "$work/ca/node.crt" --key "$work/ca/node.key" \
    --log-level debug 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log" 2>/dev/null || true)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(tail -5 "$work/server.log")"
    sleep 0.05
done
[ -n "$port" ] || fail "server did not start"
echo "Burst-User-2" | "$ANNAL" --data "$work/store" user add burster >/dev/null
tls="tls=true&tlsCAFile=$work/ca/ca.crt"
"$LOAD" --target "esdb://admin:Burst-Admin-1@127.0.0.1:$port?$tls" --workload fixture \
    --events 2000 --window 4 >/dev/null || fail "fixture"

"$LOAD" --target "esdb://burster:Burst-User-2@127.0.0.1:$port?$tls" --workload read-calls \
    --clients 16 --seconds 0.5 >"$work/burst.json" 2>"$work/burst.err" ||
    fail "the burst failed: $(cat "$work/burst.err")"
cat "$work/burst.json"
calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["calls"])' "$work/burst.json")
[ "$calls" -ge 16 ] || fail "only $calls calls"
n=$(grep -c "password of 'burster' verified" "$work/server.log" || true)
[ "$n" -eq 1 ] || fail "the password was verified $n times for one burst"
echo "ok: $calls calls, one verification"
