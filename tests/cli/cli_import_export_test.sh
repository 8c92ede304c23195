#!/usr/bin/env bash
# cli_import_export_test.sh -- `annal export` and `annal import` end to end: a store of awkward
# events survives export -> import -> export unchanged, re-imports append nothing, and bad
# lines stop the import at the right line with the right exit code.
# '$all' is a literal stream name and `run read` runs `annal read`, hence:
# shellcheck disable=SC2016,SC2162
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_import_export_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
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
    [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stderr: $(cat "$T/err")"
}
one_error_line() {
    local n
    n=$(wc -l <"$T/err")
    [ "$n" -eq 1 ] || fail "$1: want one stderr line, got $n: $(cat "$T/err")"
    grep -qE -- "$2" "$T/err" || fail "$1: stderr does not match '$2': $(cat "$T/err")"
}
events_in() { # events_in DIR: number of events in the store
    "$ANNAL" --data "$1" info --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["events"])'
}
# same_export A B: two exports hold the same events, timestamps aside (import cannot set
# the commit time: the store stamps each event when it is appended).
same_export() {
    "$PY" - "$1" "$2" <<'EOF' || fail "exports differ: $1 $2"
import json, sys
def load(p):
    rows = []
    for l in open(p, encoding="utf-8"):
        e = json.loads(l)
        del e["timestamp"]
        rows.append(e)
    return rows
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) > 0 and a == b, (a, b)
EOF
    cmp -s <(sed 's/"timestamp":"[^"]*"//' "$1") <(sed 's/"timestamp":"[^"]*"//' "$2") ||
        fail "exports differ byte-wise: $1 $2"
}

# --- a source store with awkward events, streams interleaved -----------------------------
S="$T/src"
a() { "$ANNAL" --data "$S" append "$@" >/dev/null || fail "append $*"; }
a cart-1 Added '{"sku": "A-1", "price": 0.1, "qty": 3}' --metadata '{"user":"ann"}'
a cart-2 Added '{"big": 18446744073709551615, "neg": -0.0, "exp": 1E+2}'
a cart-1 Added '[1, [2, {"deep": [3]}], "x y"]'
a cart-1 Note 'plain text, not JSON: {oops'
a cart-2 Note '"a JSON string"'
a cart-2 Raw "$(printf 'latin1 \xe9t\xe9')"
a cart-3 Empty ''
a cart-3 Meta '{}' --metadata 'null'
a cart-3 Meta '{}' --metadata 'not json metadata'
a cart-1 Unicode '{"name": "Zoë \u00e9 ☃", "tab": "a\tb"}'
a cart-4 Num '42'
[ "$(events_in "$S")" -eq 11 ] || fail "source store"

run --data "$S" export --output "$T/e1.jsonl"
expect 0 "export --output"
[ ! -s "$T/out" ] || fail "export --output must not write to stdout: $(cat "$T/out")"
[ "$(wc -l <"$T/e1.jsonl")" -eq 11 ] || fail "export line count"
run --data "$S" read '$all' --json
cmp -s "$T/out" "$T/e1.jsonl" || fail "export differs from read \$all --json"
"$PY" - "$T/e1.jsonl" <<'EOF' || fail "export content"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
raw = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert [e["position"] for e in ev] == list(range(11)), ev
assert ev[0]["data"] == {"sku": "A-1", "price": 0.1, "qty": 3} and ev[0]["metadata"] == {"user": "ann"}
assert '"price":0.1,' in raw[0], raw[0]                      # number kept as written
assert '18446744073709551615' in raw[1] and '1E+2' in raw[1], raw[1]
assert ev[2]["data"] == [1, [2, {"deep": [3]}], "x y"], ev[2]
assert ev[3]["data"] == "plain text, not JSON: {oops" and ev[3]["data_encoding"] == "text", ev[3]
assert ev[4]["data"] == "a JSON string" and "data_encoding" not in ev[4], ev[4]
assert ev[5]["data_encoding"] == "base64", ev[5]
assert ev[6]["data"] == "" and ev[6]["data_encoding"] == "text", ev[6]
assert ev[7]["metadata"] == "null" and ev[7]["metadata_encoding"] == "text", ev[7]
assert ev[8]["metadata"] == "not json metadata", ev[8]
assert ev[9]["data"]["name"] == "Zo\u00eb \u00e9 \u2603", ev[9]
assert ev[10]["data"] == 42, ev[10]
EOF

# --- export -> import into a fresh store -> the same export -----------------------------------
run --data "$T/dst" import "$T/e1.jsonl"
expect 0 "import into a fresh store"
grep -q 'imported 11 events from .*: 11 appended, 0 already present' "$T/out" ||
    fail "import summary: $(cat "$T/out")"
run --data "$T/dst" export
expect 0 "export of the copy"
cp "$T/out" "$T/e2.jsonl"
same_export "$T/e1.jsonl" "$T/e2.jsonl"
"$PY" - "$T/e1.jsonl" "$T/e2.jsonl" <<'EOF' || fail "imported ids and bytes"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [e["id"] for e in a] == [e["id"] for e in b]
EOF
# The raw Latin-1 bytes came back as the same base64.
run --data "$T/dst" read cart-2 --json --from 2 --limit 1
"$PY" -c '
import base64, json, sys
e = json.load(open(sys.argv[1]))
assert base64.b64decode(e["data"]) == b"latin1 \xe9t\xe9", e
' "$T/out" || fail "base64 round trip"

# --- importing again appends nothing; stdin works ----------------------------------------------
run --data "$T/dst" import - <"$T/e1.jsonl"
expect 0 "re-import from stdin"
grep -q '11 events from stdin: 0 appended, 11 already present' "$T/out" ||
    fail "re-import summary: $(cat "$T/out")"
[ "$(events_in "$T/dst")" -eq 11 ] || fail "re-import appended events"

# An interrupted import (here: the first 5 lines only) resumes where it stopped.
head -5 "$T/e1.jsonl" >"$T/first5.jsonl"
run --data "$T/resume" import "$T/first5.jsonl"
expect 0 "partial import"
run --data "$T/resume" import "$T/e1.jsonl"
expect 0 "resumed import"
grep -q '6 appended, 5 already present' "$T/out" || fail "resume summary: $(cat "$T/out")"
run --data "$T/resume" export
same_export "$T/e1.jsonl" "$T/out"

# --- one stream -------------------------------------------------------------------------------
run --data "$S" export cart-3
expect 0 "export of one stream"
cp "$T/out" "$T/cart3.jsonl"
"$PY" -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert [(e["stream"], e["revision"]) for e in ev] == [("cart-3", 0), ("cart-3", 1), ("cart-3", 2)], ev
' "$T/cart3.jsonl" || fail "export cart-3"
run --data "$T/one" import "$T/cart3.jsonl"
expect 0 "import of one stream"
run --data "$T/one" export
[ "$(wc -l <"$T/out")" -eq 3 ] || fail "one-stream copy"
run --data "$S" export no-such-stream --output "$T/nothing.jsonl"
expect 2 "export of a missing stream"
[ ! -e "$T/nothing.jsonl" ] || fail "failed export must not create its output"

# --- conflicts with what the target holds -------------------------------------------------------
"$ANNAL" --data "$T/other" append cart-3 Different '{}' >/dev/null
run --data "$T/other" import "$T/cart3.jsonl"
expect 3 "import over a different stream"
one_error_line "import over a different stream" "line 1: expected no stream but stream cart-3 is at 0"
[ "$(events_in "$T/other")" -eq 1 ] || fail "conflicting import wrote events"

# --- bad lines: line number, exit 1, earlier lines in, later lines out ------------------------------
bad_import() { # bad_import NAME LINE3 PATTERN
    {
        sed -n 1,2p "$T/e1.jsonl"
        printf '%s\n' "$2"
        sed -n 4p "$T/e1.jsonl"
    } >"$T/bad.jsonl"
    rm -rf "$T/bad"
    run --data "$T/bad" import "$T/bad.jsonl"
    expect 1 "$1"
    one_error_line "$1" "line 3: $3"
    [ "$(events_in "$T/bad")" -eq 2 ] || fail "$1: want the 2 lines before the bad one, got $(events_in "$T/bad")"
}
bad_import "malformed JSON" '{"stream": "s", "type": ' "invalid JSON"
bad_import "not an object" '[1, 2]' "expected a JSON object"
bad_import "missing stream" '{"type": "T", "data": {}}' 'missing "stream"'
bad_import "bad uuid" '{"id": "1234", "stream": "s", "type": "T"}' "bad id '1234'"
bad_import "bad revision" '{"stream": "s", "type": "T", "revision": -1}' '"revision" must be'
bad_import "bad encoding" '{"stream": "s", "type": "T", "data": "x", "data_encoding": "rot13"}' '"data_encoding"'
bad_import "bad base64" '{"stream": "s", "type": "T", "data": "!!", "data_encoding": "base64"}' '"data" is not valid base64'

run --data "$T/bad" import "$T/does-not-exist.jsonl"
expect 2 "import of a missing file"
one_error_line "import of a missing file" "cannot open"
run --data "$T/bad" import a.jsonl b.jsonl
expect 1 "two files"

# --- many events: batching, progress, hand-written lines without id or revision -------------------
"$PY" - "$T/many.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(3000):
        s = "acct-%d" % (i // 500)          # runs of 500 events per stream
        f.write(json.dumps({"stream": s, "type": "Deposited", "revision": i % 500,
                            "data": {"n": i}}) + "\n")
    f.write("\n")                             # a trailing blank line is fine
    for i in range(20):                      # no id, no revision: appended as they come
        f.write(json.dumps({"stream": "loose", "type": "T", "data": {"i": i}}) + "\n")
EOF
run --data "$T/many" import "$T/many.jsonl" --progress
expect 0 "import of many events"
grep -q 'import: 3020 events' "$T/err" || fail "--progress: $(cat "$T/err")"
grep -q '3020 appended' "$T/out" || fail "many summary: $(cat "$T/out")"
run --data "$T/many" streams --json
"$PY" -c '
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
assert [(x["stream"], x["events"]) for x in s] == [("acct-%d" % i, 500) for i in range(6)] + [("loose", 20)], s
' "$T/out" || fail "many streams"
run --data "$T/many" read acct-5 --json --backward --limit 1
"$PY" -c '
import json, sys
e = json.load(open(sys.argv[1]))
assert e["revision"] == 499 and e["data"] == {"n": 2999} and e["position"] == 2999, e
' "$T/out" || fail "last imported event"

echo "cli_import_export_test: ok"
