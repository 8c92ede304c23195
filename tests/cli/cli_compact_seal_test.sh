#!/usr/bin/env bash
# cli_compact_seal_test.sh -- `annal compact` on a small store (one active segment):
# without --seal it says why nothing was erased; with --seal the deleted events are gone
# from the files, the visible ones stay, and appends go on.
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_compact_seal.XXXXXX")
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
on_disk() { grep -rqa "$1" "$ANNAL_DATA"; }

run append order-1 OrderPlaced '{"amount":200}'; expect 0 "append order"
run append user-9 Profile '{"ssn":"SECRET-SSN-1234"}'; expect 0 "append profile"
run delete user-9; expect 0 "delete"
on_disk SECRET-SSN-1234 || fail "the profile should be on disk before compaction"

# Plain compact: nothing sealed, nothing erased, and it says why and what to do.
run compact; expect 0 "compact"
grep -q '0 of 0 sealed segments' "$T/out" || fail "compact output: $(cat "$T/out")"
grep -q 'compact --seal' "$T/out" || fail "compact does not say how to erase now: $(cat "$T/out")"
on_disk SECRET-SSN-1234 || fail "plain compact erased from the active segment?"

run compact --seal; expect 0 "compact --seal"
grep -q '1 of 1 sealed segments examined, 1 events erased' "$T/out" ||
    fail "compact --seal output: $(cat "$T/out")"
if on_disk SECRET-SSN-1234; then fail "deleted data still on disk after compact --seal"; fi

run verify; expect 0 "verify after compact --seal"
run read order-1 --json; expect 0 "read order-1"
grep -q '"amount":200' "$T/out" || fail "visible event lost: $(cat "$T/out")"
run append order-1 OrderPaid '{"amount":200}' --expected-revision 0; expect 0 "append after seal"
# Position 3 is the seal's marker event (system stream $seals), opening the new segment.
grep -q '"position":4' "$T/out" || fail "positions go on after the seal: $(cat "$T/out")"
run streams; expect 0 streams
if grep -q seals "$T/out"; then fail "the marker's system stream is listed: $(cat "$T/out")"; fi
# Sealing an empty active segment is a no-op: no new segment each time.
run compact --seal; expect 0 "compact --seal again"
run compact --seal; expect 0 "compact --seal a third time"
segs=$("$ANNAL" info --json | sed 's/.*"segments":\([0-9]*\).*/\1/')
[ "$segs" -eq 3 ] || fail "segments after three seals with appends between two: $segs"
echo "ok"
