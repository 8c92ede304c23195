#!/usr/bin/env bash
# cli_progress_test.sh -- long commands show progress (done/total, rate) on stderr with
# --progress, and print nothing on stderr without it when stderr is not a terminal.
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_SRC:?ANNAL_SRC must point at the source tree}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_progress.XXXXXX")
trap 'rm -rf "$T"' EXIT
export ANNAL_DATA="$T/data"
fail() { echo "FAIL: $*" >&2; exit 1; }

for i in $(seq 1 500); do
    echo "{\"stream\":\"order-$i\",\"type\":\"OrderPlaced\",\"data\":{\"customer\":\"c$i\",\"amount\":$i}}"
done >"$T/in.jsonl"
"$ANNAL" import "$T/in.jsonl" --no-sync >/dev/null 2>"$T/err"
[ ! -s "$T/err" ] || fail "import without --progress wrote on stderr: $(cat "$T/err")"
"$ANNAL" projection add "$ANNAL_SRC/examples/projections/order_summary.proj" >/dev/null

# cmd args... ; label ; the figure the final line must show
check() {
    local label=$1 figure=$2
    shift 2
    "$ANNAL" "$@" >/dev/null 2>"$T/err" || fail "$*: exit $?: $(cat "$T/err")"
    [ ! -s "$T/err" ] || fail "$* without --progress wrote on stderr: $(cat "$T/err")"
    "$ANNAL" "$@" --progress >/dev/null 2>"$T/err" || fail "$* --progress failed: $(cat "$T/err")"
    tr '\r' '\n' <"$T/err" | grep -Eq "^$label: $figure \([0-9]+%\), [0-9.]+[kM]? [a-z]+/s" ||
        fail "$* --progress: no line with done/total and rate: $(cat -A "$T/err")"
}
check export '500/500 events' export
check verify '[0-9]+/[0-9]+ events' verify
check rebuild-index '[0-9]+/[0-9]+ events' rebuild-index
check rebuilding '[0-9]+/[0-9]+ events' projection rebuild order_summary
check compact '1/1 segments' compact --seal
echo "ok"
