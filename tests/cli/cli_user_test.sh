#!/usr/bin/env bash
# `annal user` (src/cli/user.c): directly on a store no server owns, and through the server
# that owns it (its Users service over the local socket). The password comes from
# standard input and is stored only as an argon2id hash; `passwd admin` on a new store
# lets a secure server start; exit codes for a missing or existing user.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_TEST_TMP:=/tmp}"
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/cli_user.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
s="$work/store"

echo "First-Admin-Pw1" | "$ANNAL" --data "$s" user passwd admin >/dev/null || fail "passwd admin on a new store"
echo "Carol-Pw-22" | "$ANNAL" --data "$s" user add carol --groups readers,auditors --full-name "Carol C" >/dev/null ||
    fail "add"
rc=0
echo "x" | "$ANNAL" --data "$s" user add carol 2>"$work/dup.err" >/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "add twice: exit $rc"
grep -q "exists" "$work/dup.err" || fail "add twice: $(cat "$work/dup.err")"
rc=0
"$ANNAL" --data "$s" user add dave </dev/null 2>/dev/null >/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "add without a password: exit $rc"
rc=0
"$ANNAL" --data "$s" user disable nobody 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "disable a missing user: exit $rc"
rc=0
echo "pw" | "$ANNAL" --data "$s" user add 'bad:name' 2>/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "a name with ':': exit $rc"
"$ANNAL" --data "$s" user disable carol >/dev/null
"$ANNAL" --data "$s" user list --json >"$work/list.json"
grep -q '"name":"carol","full_name":"Carol C","groups":"readers,auditors","disabled":true' "$work/list.json" ||
    fail "list: $(cat "$work/list.json")"
grep -q '"name":"admin".*"groups":"$admins","disabled":false' "$work/list.json" || fail "admin: $(cat "$work/list.json")"
"$ANNAL" --data "$s" user enable carol >/dev/null
"$ANNAL" --data "$s" user list | grep -q "^carol  *readers,auditors  *enabled  *Carol C" || fail "list table"
echo "ok: add, passwd, disable, enable, list directly on the store"

# ---- through a secure server: it needs no password from the environment now
"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/ca" >/dev/null
"$ANNAL" --data "$s" serve --listen 127.0.0.1:0 --cert "$work/ca/node.crt" --key "$work/ca/node.key" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "local socket" "$work/server.log" && break
    kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$work/server.log")"
    sleep 0.1
done
echo "Erin-Pw-333" | "$ANNAL" --data "$s" user add erin --groups '$ops' >/dev/null || fail "add through the server"
"$ANNAL" --data "$s" user remove carol >/dev/null || fail "remove through the server"
"$ANNAL" --data "$s" user list >"$work/list2.txt"
grep -q "^erin .*\$ops" "$work/list2.txt" || fail "erin: $(cat "$work/list2.txt")"
if grep -q "^carol" "$work/list2.txt"; then fail "carol still listed"; fi
grep -q "audit: user 'erin' created by 'admin' from unix:" "$work/server.log" || fail "no audit line for erin"
grep -q "audit: user 'carol' deleted by 'admin'" "$work/server.log" || fail "no audit line for carol"
rc=0
"$ANNAL" --data "$s" user enable carol 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "enable a removed user through the server: exit $rc"
# By address, with credentials: an admin may, erin (an operator) may not.
port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
url="127.0.0.1:$port?tlsCAFile=$work/ca/ca.crt"
"$ANNAL" --server "kurrentdb://admin:First-Admin-Pw1@$url" user list | grep -q "^erin" || fail "list by address"
rc=0
"$ANNAL" --server "kurrentdb://erin:Erin-Pw-333@$url" user list 2>"$work/denied.err" >/dev/null || rc=$?
[ "$rc" -ne 0 ] || fail "a non-admin listed the users"
grep -qi "denied" "$work/denied.err" || fail "denied: $(cat "$work/denied.err")"
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit"
server_pid=""
echo "ok: add, remove, list, errors through the server that owns the store (audited)"

for pw in First-Admin-Pw1 Carol-Pw-22 Erin-Pw-333; do
    if grep -rqaF -- "$pw" "$s" "$work/server.log"; then fail "password $pw in clear"; fi
done
grep -rqaF '$argon2id$' "$s" || fail "no argon2id hash stored"
echo "ok: passwords stored only as argon2id hashes"
