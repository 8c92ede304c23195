#!/usr/bin/env bash
# cli_append_input_test.sh -- `annal append` takes data and metadata from files and
# standard input (byte for byte, up to the event size limit), and says so when data
# that starts like JSON does not parse (--json: an error, nothing appended).
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_append_input.XXXXXX")
trap 'rm -rf "$T"' EXIT
export ANNAL_DATA="$T/data"

fail() { echo "FAIL: $*" >&2; exit 1; }
run() {
    set +e
    "$ANNAL" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
run_in() { # run_in FILE args...: standard input from FILE
    local in=$1
    shift
    set +e
    "$ANNAL" "$@" <"$in" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
expect() { [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stderr: $(cat "$T/err")"; }
events() { "$ANNAL" read "$1" --json 2>/dev/null | grep -c . || true; }
# The data of the event at revision $2 of stream $1, decoded back to bytes.
data_of() {
    "$ANNAL" read "$1" --json | sed -n "$(($2 + 1))p" >"$T/line"
    grep -q '"data_encoding":"base64"' "$T/line" || fail "binary data not shown as base64"
    sed 's/.*"data":"\([^"]*\)".*/\1/' "$T/line" | base64 -d
}

# 1 MiB of random bytes (no shell argument could hold it), from a file and from stdin.
head -c 1048576 /dev/urandom >"$T/blob"
run append blobs Blob --data-file "$T/blob"; expect 0 "append --data-file"
data_of blobs 0 >"$T/back0"
cmp "$T/blob" "$T/back0" || fail "--data-file: data read back differs"
run_in "$T/blob" append blobs Blob --data-file -; expect 0 "append --data-file -"
data_of blobs 1 >"$T/back1"
cmp "$T/blob" "$T/back1" || fail "--data-file -: data read back differs"
run_in "$T/blob" append blobs Blob -; expect 0 "append DATA -"
data_of blobs 2 >"$T/back2"
cmp "$T/blob" "$T/back2" || fail "DATA -: data read back differs"

# Metadata from a file, as written (a trailing newline is a byte like any other).
printf '{"user":"ann","reason":"bulk"}\n' >"$T/meta.json"
run append docs Doc '{"n":1}' --metadata-file "$T/meta.json"; expect 0 "append --metadata-file"
grep -q '"metadata":{"user":"ann","reason":"bulk"}' "$T/out" || fail "metadata: $(cat "$T/out")"
printf '{"n":2}' | "$ANNAL" append docs Doc --data-file - --metadata-file "$T/meta.json" >"$T/out"
grep -q '"data":{"n":2}' "$T/out" || fail "data from a pipe: $(cat "$T/out")"

# Over the store's event size limit (32 MiB): a clear error, nothing appended.
head -c $((32 * 1048576 + 1)) /dev/zero >"$T/huge"
run append blobs Blob --data-file "$T/huge"; expect 1 "append of 32 MiB + 1"
grep -q 'over the store.s event size limit' "$T/err" || fail "too big: $(cat "$T/err")"
[ "$(events blobs)" -eq 3 ] || fail "a too big event was appended"
run append blobs Blob --data-file "$T/missing"; expect 1 "missing file"
grep -q "cannot open data file $T/missing" "$T/err" || fail "missing file: $(cat "$T/err")"
run_in "$T/meta.json" append blobs Blob - --metadata-file -; expect 1 "both from stdin"
run append blobs Blob x --data-file "$T/blob"; expect 1 "DATA and --data-file"

# Broken JSON data: stored as text, with a warning; --json refuses it.
run append orders OrderPlaced '{"amount":'; expect 0 "broken JSON, no --json"
grep -q '"data_encoding":"text"' "$T/out" || fail "broken JSON not stored as text: $(cat "$T/out")"
grep -q 'warning: data starts like JSON but is not valid JSON' "$T/err" ||
    fail "no warning for broken JSON: $(cat "$T/err")"
run append orders OrderPlaced '  [1, 2'; expect 0 "broken JSON array"
grep -q 'warning: data starts like JSON' "$T/err" || fail "no warning after blanks: $(cat "$T/err")"
run append orders OrderPlaced '{"amount":' --json; expect 1 "broken JSON with --json"
grep -q 'data is not valid JSON' "$T/err" || fail "--json error: $(cat "$T/err")"
run append orders OrderPlaced 'plain text' --json; expect 1 "text with --json"
[ "$(events orders)" -eq 2 ] || fail "a refused event was appended"
# Text and valid JSON: no warning.
run append orders Note 'plain text'; expect 0 "text data"
[ ! -s "$T/err" ] || fail "text data warned: $(cat "$T/err")"
run append orders OrderPlaced '{"amount":200}' --json; expect 0 "valid JSON with --json"
[ ! -s "$T/err" ] || fail "valid JSON warned: $(cat "$T/err")"

# Metadata is JSON by convention: broken JSON is an error, text a warning.
run append orders OrderPlaced '{"amount":1}' --metadata '{"user":'; expect 1 "broken metadata"
grep -q 'metadata is not valid JSON' "$T/err" || fail "broken metadata: $(cat "$T/err")"
run append orders OrderPlaced '{"amount":1}' --metadata 'by ann'; expect 0 "text metadata"
grep -q 'warning: metadata is not JSON' "$T/err" || fail "text metadata: $(cat "$T/err")"
run append orders OrderPlaced '{"amount":1}' --metadata 'by ann' --json; expect 1 "text metadata --json"
[ "$(events orders)" -eq 5 ] || fail "orders: $(events orders) events, want 5"
echo "ok"
