#!/usr/bin/env bash
# cli_append_batch_test.sh -- `annal append --batch FILE`: JSON lines across streams
# appended atomically (all or none), a conflict naming the stream, bad lines refused.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_append_batch.XXXXXX")
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

run append acct-b Opened '{}'
expect 0 "setup"
cat >"$T/ok.jsonl" <<'J'
{"stream":"acct-a","type":"Debited","data":{"amount":5},"expected_revision":"no_stream"}
{"stream":"acct-a","type":"Noted","data":"text"}
{"stream":"acct-b","type":"Credited","data":{"amount":5},"expected_revision":0,"metadata":{"by":"cli"}}
J
run append --batch "$T/ok.jsonl"
expect 0 "batch"
[ "$(wc -l <"$T/out")" -eq 2 ] || fail "one line per run: $(cat "$T/out")"
grep -q '"stream":"acct-a","first_revision":0,"revision":1,"first_position":1' "$T/out" ||
    fail "acct-a result: $(cat "$T/out")"
grep -q '"stream":"acct-b","first_revision":1,"revision":1,"first_position":3' "$T/out" ||
    fail "acct-b result: $(cat "$T/out")"
run read '$all' --json
expect 0 "read"
[ "$(wc -l <"$T/out")" -eq 4 ] || fail "4 events: $(cat "$T/out")"
grep -q '"by":"cli"' "$T/out" || fail "metadata kept"

# the same file again: acct-a exists now, so the whole set conflicts and nothing is added
run append --batch "$T/ok.jsonl"
expect 3 "conflict"
grep -q 'stream acct-a' "$T/err" || fail "names the stream: $(cat "$T/err")"
grep -q 'stream acct-b' "$T/err" || fail "names every stream: $(cat "$T/err")"
run info --json
grep -q '"events": *4' "$T/out" || grep -q '"events":4' "$T/out" || fail "nothing added: $(cat "$T/out")"

# a bad line: nothing appended, the line named
printf '%s\n' '{"stream":"c","type":"T"}' '{"stream":"d"}' >"$T/bad.jsonl"
run append --batch "$T/bad.jsonl"
expect 1 "bad line"
grep -q 'line 2' "$T/err" || fail "line number: $(cat "$T/err")"
run read c
[ "$RC" -ne 0 ] || fail "stream c must not exist"
# an expectation on a later line of the same stream
printf '%s\n' '{"stream":"c","type":"T"}' '{"stream":"c","type":"T","expected_revision":0}' >"$T/late.jsonl"
run append --batch "$T/late.jsonl"
expect 1 "late expectation"
# --batch with other operands
run append --batch "$T/ok.jsonl" x
expect 1 "operands"
# from standard input
set +e
printf '%s\n' '{"stream":"e","type":"T","data":1}' | "$ANNAL" append --batch - >"$T/out" 2>"$T/err"
RC=$?
set -e
expect 0 "stdin"
grep -q '"stream":"e"' "$T/out" || fail "stdin result"
echo "ok"
