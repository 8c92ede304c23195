#!/usr/bin/env bash
# cli_wait_test.sh -- writing commands wait for the writer lock (issue 14, item 14):
# 8 parallel `annal append`s all succeed; --wait 0 fails at once while another process
# writes, and the default wait outlasts a short writer.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_wait_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
unset ANNAL_DATA
D="$T/data"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$ANNAL" --data "$D" append warm T '{}' >/dev/null
for round in 1 2 3; do
    pids=()
    for i in $(seq 1 8); do
        "$ANNAL" --data "$D" append "p-$round" T "{\"i\":$i}" >"$T/out.$i" 2>"$T/err.$i" &
        pids+=($!)
    done
    for i in $(seq 1 8); do
        wait "${pids[$((i - 1))]}" || fail "round $round: append $i failed: $(cat "$T/err.$i")"
    done
    n=$("$ANNAL" --data "$D" read "p-$round" --json | grep -c '"type":"T"')
    [ "$n" -eq 8 ] || fail "round $round: $n of 8 events stored"
done

# A writer that holds the lock for ~2 s: import waiting on its input.
(sleep 2; echo) | "$ANNAL" --data "$D" import >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 50); do # until it holds the lock
    if ! "$ANNAL" --data "$D" --wait 0 append probe T '{}' >/dev/null 2>"$T/err"; then break; fi
    sleep 0.05
done
grep -q "open for writing" "$T/err" || fail "--wait 0 did not fail while a writer held the lock: $(cat "$T/err")"
start=$(date +%s%N)
set +e
"$ANNAL" --data "$D" append waited T '{}' --wait=0 >/dev/null 2>"$T/err"
rc=$?
set -e
[ "$rc" -eq 5 ] || fail "--wait=0 after the command: exit $rc, want 5"
[ $((($(date +%s%N) - start) / 1000000)) -lt 1000 ] || fail "--wait 0 waited"
"$ANNAL" --data "$D" append waited T '{}' >/dev/null 2>"$T/err" ||
    fail "the default wait did not outlast a 2 s writer: $(cat "$T/err")"
wait "$holder" || true
echo "cli_wait_test: ok"
