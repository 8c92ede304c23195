#!/usr/bin/env bash
# cli_verify_test.sh -- `annal verify` and `annal rebuild-index`: a clean store is sound (exit 0);
# one flipped byte inside an event's data is reported with its segment (exit 4).
# '$all' is a literal stream name and `run read` runs `annal read`, hence:
# shellcheck disable=SC2016,SC2162
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_verify_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
D="$T/data"
unset ANNAL_DATA
# The real interpreter, once: a version-manager shim costs a second per call.
PY=$(python3 -c 'import sys; print(sys.executable)')

fail() { echo "FAIL: $*" >&2; exit 1; }
run() {
    set +e
    "$ANNAL" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
expect() {
    [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stdout: $(cat "$T/out") stderr: $(cat "$T/err")"
}

for i in $(seq 0 9); do
    pad=$(printf 'MARK%02d' "$i")$(printf 'x%.0s' $(seq 1 200))
    "$ANNAL" --data "$D" append "acct-$((i % 3))" Deposited "{\"n\": $i, \"pad\": \"$pad\"}" \
        >/dev/null || fail "append $i"
done

run --data "$D" verify
expect 0 "verify of a clean store"
grep -q 'is sound' "$T/out" || fail "verify ok message: $(cat "$T/out")"
run --data "$D" verify --progress
expect 0 "verify --progress"
grep -q 'verify: ' "$T/err" || fail "verify --progress printed nothing: $(cat "$T/err")"

run --data "$D" rebuild-index --progress
expect 0 "rebuild-index"
grep -q 'rebuilt the index of .* (10 events)' "$T/out" || fail "rebuild-index: $(cat "$T/out")"
run --data "$D" read '$all' --json
"$PY" -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert [e["data"]["n"] for e in ev] == list(range(10)), ev
' "$T/out" || fail "read after rebuild-index"
run --data "$D" verify
expect 0 "verify after rebuild-index"

# Flip one byte in the middle of the data of event 5 (its marker is unique in the log).
segs=("$D"/log/*)
[ "${#segs[@]}" -eq 1 ] || fail "expected one segment file, got: ${segs[*]}"
seg_file=${segs[0]}
seg_name=$(basename "$seg_file")
seg_num=$("$PY" -c 'import sys; print(int(sys.argv[1].split(".")[0], 10))' "$seg_name")
"$PY" - "$seg_file" <<'EOF' || fail "could not corrupt the log"
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.find(b"MARK05")
assert i > 0 and b.find(b"MARK05", i + 1) < 0, "marker not found once"
i += 60                          # well inside the padding of that event
b[i] ^= 0x5A
open(p, "r+b").write(bytes(b))
EOF

run --data "$D" verify
expect 4 "verify of a damaged store"
grep -qE "^segment $seg_num offset [0-9]+ position (5|\\?) stream (acct-2|\\?): .+" "$T/out" ||
    fail "damage line does not name segment $seg_num: $(cat "$T/out")"
grep -qE '^annal: verify: [0-9]+ problems? found in ' "$T/err" || fail "verify summary: $(cat "$T/err")"

run --data "$T/none" verify
expect 2 "verify of a missing store"
run --data "$T/none" rebuild-index
expect 2 "rebuild-index of a missing store"

echo "cli_verify_test: ok"
