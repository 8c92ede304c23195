#!/usr/bin/env bash
# cli_lifecycle_test.sh -- `annal read $ce-/$et-`, `annal meta`, `annal delete` and
# `annal compact` end to end: outputs, exit codes, and that compaction erases deleted
# data from the log files while every visible event stays.
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_lifecycle.XXXXXX")
trap 'rm -rf "$T"' EXIT
export ANNAL_DATA="$T/data"

fail() { echo "FAIL: $*" >&2; exit 1; }
run() {
    set +e
    "$ANNAL" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
expect() { [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stderr: $(cat "$T/err")"; }
count() { grep -c "$1" "$T/out" || true; }

# Orders in four streams, and a user's personal data in one that gets deleted. (The
# store has one segment here, which compaction never rewrites while it is active; the
# erasure itself is tested with small segments in tests/store/compact_test.c.)
pad=$(head -c 600 /dev/zero | tr '\0' 'x')
for i in $(seq 1 40); do
    echo "{\"stream\":\"order-$((i % 4))\",\"type\":\"Placed\",\"data\":{\"i\":$i}}"
    echo "{\"stream\":\"user-9\",\"type\":\"Profile\",\"data\":{\"ssn\":\"SECRET-SSN-$i\",\"pad\":\"$pad\"}}"
done >"$T/in.jsonl"
run import "$T/in.jsonl"; expect 0 "import"

run read '$ce-order' --json; expect 0 "read \$ce-order"
[ "$(count '"stream":"order-')" -eq 40 ] || fail "\$ce-order shows $(count order-) events, want 40"
run read '$et-Profile' --json --backward --limit 3; expect 0 "read \$et-Profile backward"
[ "$(count '"type":"Profile"')" -eq 3 ] || fail "\$et-Profile --limit 3: $(cat "$T/out")"
head -1 "$T/out" | grep -q '"revision":39' || fail "\$et-Profile backward starts at the newest"

# metadata
run meta order-1; expect 0 "meta get"
grep -q '"revision":-1,"metadata":{}' "$T/out" || fail "empty metadata: $(cat "$T/out")"
run meta order-1 --max-count 2; expect 0 "meta --max-count"
run read order-1 --json; expect 0 "read limited"
[ "$(count '"stream":"order-1"')" -eq 2 ] || fail "max count 2 shows $(count order-1)"
run meta order-1 '{"owner":"ops"}' --expect 5; expect 3 "meta with a wrong --expect"
run meta order-1 '[1,2]'; expect 1 "meta with a non-object"
run meta order-1 '{"$maxCount":-3}'; expect 1 "meta with a negative limit"
run meta order-1 '{"owner":"ops"}' --expect 0; expect 0 "meta replace"
run read order-1 --json; expect 0 "read unlimited"
[ "$(count '"stream":"order-1"')" -eq 10 ] || fail "limits lifted shows $(count order-1)"

# delete
run delete order-2 --expect 3; expect 3 "delete with a wrong --expect"
run delete order-2; expect 0 "soft delete"
run read order-2; expect 2 "read a soft-deleted stream"
run append order-2 Placed '{"again":true}'; expect 0 "re-create"
run read order-2 --json; expect 0 "read re-created"
[ "$(count '"revision":10')" -eq 1 ] && [ "$(count '"stream":"order-2"')" -eq 1 ] ||
    fail "re-created stream: $(cat "$T/out")"
run delete user-9 --hard; expect 0 "hard delete"
run append user-9 Profile '{}'; expect 5 "append to a tombstone"
grep -q 'tombstoned' "$T/err" || fail "tombstone error says so: $(cat "$T/err")"
run delete nobody-1; expect 2 "delete a missing stream"

# compact: nothing sealed yet in a store of one 256 MiB segment -> it says so, erases nothing
run compact; expect 0 "compact"
grep -q 'events erased' "$T/out" || fail "compact output: $(cat "$T/out")"
run read '$all' --json; expect 0 "read all after compact"
[ "$(count '"stream":"order-')" -eq 31 ] || fail "visible order events after compact: $(count order-)"
[ "$(count 'SECRET-SSN')" -eq 0 ] || fail "deleted data still readable"
run compact --rate 0; expect 1 "compact --rate 0"
run verify; expect 0 "verify"
echo "ok"
