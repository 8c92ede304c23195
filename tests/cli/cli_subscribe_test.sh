#!/usr/bin/env bash
# cli_subscribe_test.sh -- `annal subscribe`: history then live events from another
# process (`annal append`), filters, --from, --checkpoints, --timeout and usage errors.
# Every check compares real output. '$all' is a literal stream name, hence:
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_subscribe_test.XXXXXX")
SUB_PID=
cleanup() {
    if [ -n "$SUB_PID" ]; then kill "$SUB_PID" 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT
D="$T/data"
unset ANNAL_DATA
PY=$(python3 -c 'import sys; print(sys.executable)')

fail() { echo "FAIL: $*" >&2; exit 1; }
a() { "$ANNAL" --data "$D" "$@"; }
# check WHAT FILE CODE: python CODE with `lines` = the JSON lines of FILE.
check() {
    "$PY" - "$2" "$3" <<'PYEOF' || fail "$1: $(cat "$2")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if l.strip()]
exec(sys.argv[2])
PYEOF
}

a append order-1 OrderPlaced '{"n":0}' >/dev/null
a append order-1 OrderPaid '{"n":1}' >/dev/null
a append cart-1 ItemAdded '{"n":2}' >/dev/null

# --- history then live, the writer in other processes --------------------------------
a subscribe --limit 8 --timeout 60 >"$T/live" 2>"$T/live.err" &
SUB_PID=$!
# wait until it has printed the history (it is caught up and waiting)
for _ in $(seq 1 200); do
    [ "$(wc -l <"$T/live")" -ge 3 ] && break
    sleep 0.05
done
[ "$(wc -l <"$T/live")" -eq 3 ] || fail "history: $(cat "$T/live") $(cat "$T/live.err")"
for i in 3 4 5 6 7; do a append "order-$i" OrderPlaced "{\"n\":$i}" >/dev/null; done
set +e
wait "$SUB_PID"
RC=$?
set -e
SUB_PID=
[ "$RC" -eq 0 ] || fail "subscribe --limit exited $RC: $(cat "$T/live.err")"
check "live output" "$T/live" '
assert len(lines) == 8, len(lines)
assert [l["position"] for l in lines] == list(range(8))
assert [l["data"]["n"] for l in lines] == list(range(8))
assert set(lines[0]) == {"id", "stream", "type", "revision", "position", "timestamp", "data", "metadata"}
'
# the same shape as read --json
a read '$all' --json --limit 8 >"$T/read"
cmp -s "$T/live" "$T/read" || fail "subscribe and read --json differ: $(diff "$T/live" "$T/read")"

# --- --timeout ends an idle subscription with status 0 --------------------------------
a subscribe order-1 --timeout 1 >"$T/out"
check "one stream" "$T/out" 'assert [(l["stream"], l["revision"]) for l in lines] == [("order-1", 0), ("order-1", 1)]'

# --- --from ------------------------------------------------------------------------------
a subscribe --from 5 --timeout 1 >"$T/out"
check "--from N" "$T/out" 'assert [l["position"] for l in lines] == [6, 7]'
a subscribe --from END --timeout 1 >"$T/out"
[ ! -s "$T/out" ] || fail "--from END printed history: $(cat "$T/out")"
a subscribe order-1 --from 0 --timeout 1 >"$T/out"
check "--from revision" "$T/out" 'assert [l["revision"] for l in lines] == [1]'

# --- categories, types, filters ---------------------------------------------------------
a subscribe --category order --timeout 1 >"$T/out"
check "--category" "$T/out" 'assert [l["position"] for l in lines] == [0, 1, 3, 4, 5, 6, 7]'
a subscribe '$et-OrderPaid' --timeout 1 >"$T/out"
check "\$et-" "$T/out" 'assert [l["position"] for l in lines] == [1]'
a subscribe --type ItemAdded --timeout 1 >"$T/out"
check "--type" "$T/out" 'assert [l["position"] for l in lines] == [2]'
a meta cart-1 --max-count 5 >/dev/null
a subscribe --exclude-system --timeout 1 >"$T/out"
check "--exclude-system" "$T/out" 'assert [l["position"] for l in lines] == list(range(8))'
a subscribe --timeout 1 >"$T/out"
check "system events" "$T/out" 'assert len(lines) == 9 and lines[8]["stream"] == "$$cart-1"'
a subscribe --type-prefix Order --stream-regex '^order-[13]$' --timeout 1 >"$T/out"
check "prefix and regex" "$T/out" 'assert [l["position"] for l in lines] == [0, 1, 3]'
a subscribe --stream-prefix cart --type-regex 'Item' --timeout 1 >"$T/out"
check "stream prefix" "$T/out" 'assert [l["position"] for l in lines] == [2]'

# --- checkpoints ------------------------------------------------------------------------
a subscribe --type-prefix Nothing --checkpoints --timeout 1 >"$T/out"
check "--checkpoints" "$T/out" 'assert lines == [{"checkpoint": 9}, {"caught_up": True}]'

# --- usage errors -----------------------------------------------------------------------
usage_error() {
    set +e
    a subscribe "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    set -e
    [ "$rc" -eq 1 ] || fail "subscribe $*: exit $rc, want 1"
    [ "$(wc -l <"$T/err")" -eq 1 ] || fail "subscribe $*: stderr: $(cat "$T/err")"
    grep -q '^annal: subscribe: ' "$T/err" || fail "subscribe $*: $(cat "$T/err")"
}
usage_error --type-regex '(' --timeout 1
grep -q regex "$T/err" || fail "bad regex message: $(cat "$T/err")"
usage_error order-1 --type-prefix X --timeout 1
grep -q filter "$T/err" || fail "filter on one stream message: $(cat "$T/err")"
usage_error --from LATER
usage_error --limit 0
usage_error a-1 --category order
"$ANNAL" subscribe --help | grep -q -- '--checkpoints' || fail "subscribe --help"
"$ANNAL" --help | grep -q subscribe || fail "--help does not list subscribe"
set +e
"$ANNAL" --data "$T/none" subscribe --timeout 1 >/dev/null 2>&1
RC=$?
set -e
[ "$RC" -eq 2 ] || fail "no store: exit $RC, want 2"
echo "cli_subscribe_test: ok"
