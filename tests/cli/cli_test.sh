#!/usr/bin/env bash
# cli_test.sh -- end-to-end checks of the `annal` command: append, read, streams, info,
# demo, option handling, error lines and exit codes. Every check compares real output.
# '$all' is a literal stream name and `run read` runs `annal read`, hence:
# shellcheck disable=SC2016,SC2162
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
D="$T/data"
unset ANNAL_DATA
# The real interpreter, once: a version-manager shim costs a second per call.
PY=$(python3 -c 'import sys; print(sys.executable)')

fail() { echo "FAIL: $*" >&2; exit 1; }

# run ARGS...: runs annal, keeping stdout in $T/out, stderr in $T/err and status in RC.
run() {
    set +e
    "$ANNAL" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
# expect CODE WHAT: the last run exited with CODE.
expect() {
    [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stderr: $(cat "$T/err")"
}
# one_error_line WHAT PATTERN: stderr is exactly one line, "annal: ...", matching PATTERN.
one_error_line() {
    local n
    n=$(wc -l <"$T/err")
    [ "$n" -eq 1 ] || fail "$1: want one stderr line, got $n: $(cat "$T/err")"
    grep -q '^annal: ' "$T/err" || fail "$1: stderr does not start with 'annal: ': $(cat "$T/err")"
    grep -qE -- "$2" "$T/err" || fail "$1: stderr does not match '$2': $(cat "$T/err")"
}
# py WHAT CODE: runs python CODE with `out` = stdout of the last run, `lines` = its JSON lines.
py() {
    "$PY" - "$T/out" "$2" <<'EOF' || fail "$1"
import json, re, sys
out = open(sys.argv[1], encoding="utf-8").read()
lines = [json.loads(l) for l in out.splitlines() if l.strip()]
exec(sys.argv[2])
EOF
}

# --- help, version, usage errors -------------------------------------------------------
run --version
expect 0 "--version"
grep -qE '^annal [0-9]+\.[0-9]+\.[0-9]+' "$T/out" || fail "--version output: $(cat "$T/out")"
run --help
expect 0 "--help"
for w in append read streams info verify rebuild-index export import demo "Exit codes"; do
    grep -q -- "$w" "$T/out" || fail "--help does not mention $w"
done
run read --help
expect 0 "read --help"
grep -q -- '--backward' "$T/out" || fail "read --help lacks --backward"
run frobnicate
expect 1 "unknown command"
one_error_line "unknown command" "unknown command 'frobnicate'"
run --data "$D" read order-1 --bogus
expect 1 "unknown option"
one_error_line "unknown option" "unknown option --bogus"
run --data "$D" append only-stream
expect 1 "missing operands"
one_error_line "missing operands" "missing TYPE and DATA"

# --- missing store -----------------------------------------------------------------------
run --data "$D" read order-1
expect 2 "read of a missing store"
one_error_line "read of a missing store" "no store at"
[ ! -e "$D" ] || fail "reading must not create the store"
run --data "$D" info
expect 2 "info of a missing store"
run --data "$D" verify
expect 2 "verify of a missing store"
one_error_line "verify of a missing store" "no store at"

# --- append and read back -------------------------------------------------------------
run --data "$D" append order-1 OrderPlaced '{"orderId": "1", "amount": 200, "rate": 0.1}'
expect 0 "first append"
[ "$(wc -l <"$T/out")" -eq 1 ] || fail "append must print one line: $(cat "$T/out")"
py "first append output" '
e = lines[0]
assert e["stream"] == "order-1" and e["type"] == "OrderPlaced", e
assert e["revision"] == 0 and e["position"] == 0, e
assert e["data"] == {"orderId": "1", "amount": 200, "rate": 0.1}, e
assert "0.1," in out or "0.1}" in out, "numbers must be kept as written: " + out
assert e["metadata"] is None, e
assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", e["id"]), e
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e["timestamp"]), e
'
first_id=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/out")
[ -d "$D/log" ] || fail "append did not create the store"

run --data "$D" append order-1 DiscountApplied '{"amount":50}' \
    --metadata '{"correlationId":"c-1","causationId":"'"$first_id"'","user":"bob"}'
expect 0 "append with metadata"
py "metadata round trip on append" '
e = lines[0]
assert e["revision"] == 1 and e["position"] == 1, e
assert e["metadata"]["user"] == "bob" and e["metadata"]["correlationId"] == "c-1", e
'
run --data "$D" append order-1 Note 'hello world' --expected-revision 1
expect 0 "append of non-JSON data with exact expected revision"
py "non-JSON data" '
e = lines[0]
assert e["data"] == "hello world" and e["data_encoding"] == "text", e
assert e["revision"] == 2, e
'

run --data "$D" read order-1 --json
expect 0 "read --json"
py "read --json of order-1" '
assert [e["revision"] for e in lines] == [0, 1, 2], lines
assert [e["type"] for e in lines] == ["OrderPlaced", "DiscountApplied", "Note"], lines
assert lines[0]["id"] == "'"$first_id"'", lines[0]
assert lines[0]["data"]["amount"] == 200, lines[0]
assert lines[1]["metadata"] == {"correlationId": "c-1", "causationId": "'"$first_id"'", "user": "bob"}, lines[1]
assert lines[2]["data"] == "hello world", lines[2]
for e in lines:
    for k in ("id", "type", "stream", "revision", "position", "timestamp", "data", "metadata"):
        assert k in e, (k, e)
'

# --- expected revision conflicts write nothing ----------------------------------------------
run --data "$D" append order-1 Late '{}' --expected-revision 0
expect 3 "stale expected revision"
one_error_line "stale expected revision" "expected revision 0 but stream order-1 is at 2"
run --data "$D" append order-1 Late '{}' --expected-revision no_stream
expect 3 "no_stream on an existing stream"
one_error_line "no_stream on an existing stream" "order-1"
run --data "$D" append order-9 Late '{}' --expected-revision stream_exists
expect 3 "stream_exists on a missing stream"
run --data "$D" append order-9 Late '{}' --expected-revision 4
expect 3 "exact revision on a missing stream"
one_error_line "exact revision on a missing stream" "does not exist"
run --data "$D" append order-1 Late '{}' --expected-revision banana
expect 1 "bad expected revision"
run --data "$D" info --json
expect 0 "info after conflicts"
py "conflicts wrote nothing" '
i = lines[0]
assert i["events"] == 3 and i["streams"] == 1, i
'

# --- ids: bad UUID, idempotent re-append, reuse ----------------------------------------------
run --data "$D" append order-1 X '{}' --id not-a-uuid
expect 1 "bad UUID"
one_error_line "bad UUID" "bad --id 'not-a-uuid'"
U=0190b5d2-7c1e-7a3b-9f00-5d2e4c1b8a77
run --data "$D" append order-2 Shipped '{"carrier":"post"}' --id "$U"
expect 0 "append with --id"
cp "$T/out" "$T/first_with_id"
run --data "$D" append order-2 Shipped '{"carrier":"post"}' --id "$U"
expect 0 "idempotent re-append"
cmp -s "$T/out" "$T/first_with_id" || fail "re-append printed $(cat "$T/out"), first $(cat "$T/first_with_id")"
py "re-append returns the original" '
e = lines[0]
assert e["id"] == "'"$U"'" and e["position"] == 3 and e["revision"] == 0, e
'
run --data "$D" append order-5 Shipped '{"carrier":"post"}' --id "$U"
expect 3 "same id in another stream"
one_error_line "same id in another stream" "cannot append to stream order-5: .*$U"
run --data "$D" info --json
py "idempotent append stored one event" 'assert lines[0]["events"] == 4, lines[0]'

# --- $all, backward, limit, from ---------------------------------------------------------------
run --data "$D" append order-3 OrderPlaced '{"amount":1}'
expect 0 "append order-3"
run --data "$D" append order-2 Delivered '{}'
expect 0 "append order-2 #1"
run --data "$D" read '$all' --json
expect 0 "read \$all"
py "\$all order and positions" '
assert [e["position"] for e in lines] == list(range(6)), lines
assert [(e["stream"], e["revision"]) for e in lines] == [("order-1", 0), ("order-1", 1),
    ("order-1", 2), ("order-2", 0), ("order-3", 0), ("order-2", 1)], lines
'
run --data "$D" read order-1 --json --backward --limit 2
expect 0 "backward limit on a stream"
py "backward limit on a stream" 'assert [e["revision"] for e in lines] == [2, 1], lines'
run --data "$D" read '$all' --json --backward --limit 3
expect 0 "backward limit on \$all"
py "backward limit on \$all" 'assert [e["position"] for e in lines] == [5, 4, 3], lines'
run --data "$D" read '$all' --json --from 2 --limit 2
py "\$all from 2" 'assert [e["position"] for e in lines] == [2, 3], lines'
run --data "$D" read order-1 --json --from 1
py "stream from 1" 'assert [e["revision"] for e in lines] == [1, 2], lines'
run --data "$D" read order-1 --json --backward --from 1
py "stream backward from 1" 'assert [e["revision"] for e in lines] == [1, 0], lines'
run --data "$D" read order-1 --limit 0
expect 1 "limit 0"
run --data "$D" read no-such-stream
expect 2 "read of a missing stream"
one_error_line "read of a missing stream" "stream no-such-stream not found"

# --- the table ---------------------------------------------------------------------------------
run --data "$D" read order-1
expect 0 "read as a table"
[ "$(wc -l <"$T/out")" -eq 4 ] || fail "table: want header + 3 rows: $(cat "$T/out")"
head -1 "$T/out" | grep -qE 'POSITION +STREAM +REV +TYPE +TIME \(UTC\) +DATA' ||
    fail "table header: $(head -1 "$T/out")"
grep -qE '^ +1  order-1 +1  DiscountApplied +[0-9-]+ [0-9:]+  \{"amount":50\}$' "$T/out" ||
    fail "table row: $(cat "$T/out")"
long=$("$PY" -c 'print("{\"text\":\"" + "y" * 500 + "\"}")')
run --data "$D" append order-4 Long "$long"
run --data "$D" read order-4
"$PY" -c '
import sys
rows = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert len(rows) == 2 and max(len(r) for r in rows) == 120, rows
assert rows[1].endswith("\u2026"), rows[1]
' "$T/out" || fail "table lines must fit 120 columns when not on a terminal"

# --- streams and info ----------------------------------------------------------------------------
run --data "$D" streams --json
expect 0 "streams --json"
py "streams --json" '
assert [(s["stream"], s["last_revision"], s["events"]) for s in lines] == [
    ("order-1", 2, 3), ("order-2", 1, 2), ("order-3", 0, 1), ("order-4", 0, 1)], lines
assert lines[1]["last_position"] == 5, lines[1]
'
run --data "$D" streams
expect 0 "streams table"
grep -qE '^order-2 +1 +5  [0-9]{4}-' "$T/out" || fail "streams table: $(cat "$T/out")"
run --data "$D" info --json
py "info --json" '
i = lines[0]
assert i["events"] == 7 and i["streams"] == 4 and i["segments"] >= 1, i
assert i["log_bytes"] > 0, i
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", i["last_event"]), i
'
run --data "$D" info
grep -qE '^events +7$' "$T/out" || fail "info: $(cat "$T/out")"
grep -qE '^streams +4$' "$T/out" || fail "info: $(cat "$T/out")"

# --- ANNAL_DATA and --data after the command --------------------------------------------------
ANNAL_DATA="$D" "$ANNAL" read order-3 --json >"$T/out" 2>"$T/err" || fail "ANNAL_DATA: $(cat "$T/err")"
py "ANNAL_DATA" 'assert lines[0]["stream"] == "order-3", lines'
run read order-3 --json --data "$D"
expect 0 "--data after the command"

# --- demo ------------------------------------------------------------------------------------------
run --data "$T/demo" demo
expect 0 "demo"
grep -q 'balance 0' "$T/out" || fail "demo must end with balance 0: $(cat "$T/out")"
grep -qE 'total 200 - discount 50 = due 150' "$T/out" || fail "demo totals: $(cat "$T/out")"
grep -qE 'invoice .* Right Street' "$T/out" || fail "demo invoice: $(cat "$T/out")"
grep -qE 'voided .* Wrong Street \(wrong address\)' "$T/out" || fail "demo voided: $(cat "$T/out")"
grep -q -- '-> 1 of 2 succeeded' "$T/out" || fail "demo: exactly one concurrent withdrawal: $(cat "$T/out")"
grep -q 'Balance by replaying 3 events: 10.00' "$T/out" || fail "demo: bank balance: $(cat "$T/out")"
grep -q -- '-> 3 shipped, 2 refused' "$T/out" || fail "demo: inventory never oversold: $(cat "$T/out")"
grep -q 'insufficient funds' "$T/out" || fail "demo: overdraft rejected: $(cat "$T/out")"
run --data "$T/demo" demo
expect 0 "demo again"
run --data "$T/demo" streams --json
py "each demo run has its own order stream" '
assert [(s["stream"], s["events"]) for s in lines if s["stream"].startswith("order-")] == [("order-1", 6), ("order-2", 6)], lines
assert [(s["stream"], s["events"]) for s in lines if not s["stream"].startswith("order-")] == [("account-1", 3), ("account-2", 3), ("stock-1", 4), ("stock-2", 4)], lines
'
run --data "$T/demo" read order-2 --json
py "demo metadata says who and why" '
assert [e["type"] for e in lines] == ["OrderPlaced", "DiscountApplied", "PaymentReceived",
    "InvoiceIssued", "InvoiceVoided", "InvoiceIssued"], lines
for prev, e in zip(lines, lines[1:]):
    assert e["metadata"]["causationId"] == prev["id"], e
    assert e["metadata"]["correlationId"] == lines[0]["metadata"]["correlationId"], e
assert all(e["metadata"]["user"] for e in lines), lines
'

echo "cli_test: ok"
