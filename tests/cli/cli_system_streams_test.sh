#!/usr/bin/env bash
# cli_system_streams_test.sh -- `annal streams` and `annal info` show the users' streams
# and events; the store's own ($$<stream> metadata) only with --all (issue 14, item 18).
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_system_streams_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
unset ANNAL_DATA
D="$T/data"
fail() { echo "FAIL: $*" >&2; exit 1; }
jfield() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

"$ANNAL" --data "$D" append order-1 Placed '{}' >/dev/null
"$ANNAL" --data "$D" append order-1 Paid '{}' >/dev/null
"$ANNAL" --data "$D" append order-2 Placed '{}' >/dev/null
"$ANNAL" --data "$D" meta order-1 --max-count 10 >/dev/null
"$ANNAL" --data "$D" meta order-1 --max-count 20 >/dev/null
"$ANNAL" --data "$D" meta order-2 --max-count 5 >/dev/null

# streams: the users' by default
"$ANNAL" --data "$D" streams --json >"$T/s"
grep -q '"stream":"order-1"' "$T/s" || fail "order-1 missing: $(cat "$T/s")"
grep -q '"stream":"order-2"' "$T/s" || fail "order-2 missing: $(cat "$T/s")"
if grep -q '"stream":"\$' "$T/s"; then fail "system streams listed by default: $(cat "$T/s")"; fi
"$ANNAL" --data "$D" streams >"$T/t"
if grep -q '^\$' "$T/t"; then fail "system streams in the table: $(cat "$T/t")"; fi
for opt in --all --system; do
    "$ANNAL" --data "$D" streams "$opt" --json >"$T/s"
    grep -q '"stream":"\$\$order-1"' "$T/s" || fail "$opt lacks \$\$order-1: $(cat "$T/s")"
    [ "$(wc -l <"$T/s")" -eq 4 ] || fail "$opt: want 4 streams: $(cat "$T/s")"
done

# info: counts of the users' by default, everything with --all
"$ANNAL" --data "$D" info --json >"$T/i"
[ "$(jfield events <"$T/i")" -eq 3 ] || fail "info events: $(cat "$T/i")"
[ "$(jfield streams <"$T/i")" -eq 2 ] || fail "info streams: $(cat "$T/i")"
[ "$(jfield system_events <"$T/i")" -eq 3 ] || fail "info system_events: $(cat "$T/i")"
[ "$(jfield system_streams <"$T/i")" -eq 2 ] || fail "info system_streams: $(cat "$T/i")"
"$ANNAL" --data "$D" info --all --json >"$T/i"
[ "$(jfield events <"$T/i")" -eq 6 ] || fail "info --all events: $(cat "$T/i")"
[ "$(jfield streams <"$T/i")" -eq 4 ] || fail "info --all streams: $(cat "$T/i")"
"$ANNAL" --data "$D" info >"$T/t"
grep -Eq '^events +3$' "$T/t" || fail "info text events: $(cat "$T/t")"
"$ANNAL" --data "$D" info --all >"$T/t"
grep -Eq '^events +6 \(3 in system streams\)$' "$T/t" || fail "info --all text: $(cat "$T/t")"
echo "cli_system_streams_test: ok"
