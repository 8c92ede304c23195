#!/usr/bin/env bash
# cli_info_sizes_test.sh -- `annal info` reports what the store's files take on disk
# (allocated, as du counts it) and their apparent sizes (as ls -l and stat show them),
# so that a sparse index file of hundreds of MB does not frighten: both must agree with
# du and stat exactly.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_info_sizes.XXXXXX")
trap 'rm -rf "$T"' EXIT
export ANNAL_DATA="$T/data"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$ANNAL" append order-1 OrderPlaced '{"amount":200}' >/dev/null
"$ANNAL" append order-1 OrderPaid '{"amount":200}' >/dev/null
"$ANNAL" info --json >"$T/json"
"$ANNAL" info >"$T/text"
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$T/json"; }
alloc=$(field allocated_bytes)
appar=$(field apparent_bytes)
[ -n "$alloc" ] && [ -n "$appar" ] || fail "info --json lacks the sizes: $(cat "$T/json")"

# du counts every entry of the tree, directories included, as info does.
du_alloc=$(du -s --block-size=1 "$ANNAL_DATA" | cut -f1)
du_appar=$(du -s --apparent-size --block-size=1 "$ANNAL_DATA" | cut -f1)
[ "$alloc" -eq "$du_alloc" ] || fail "allocated $alloc, du says $du_alloc"
[ "$appar" -eq "$du_appar" ] || fail "apparent $appar, du --apparent-size says $du_appar"
# The same from stat, entry by entry.
st_alloc=0 st_appar=0
while read -r blocks size; do
    st_alloc=$((st_alloc + blocks * 512))
    st_appar=$((st_appar + size))
done < <(find "$ANNAL_DATA" -exec stat -c '%b %s' {} +)
[ "$alloc" -eq "$st_alloc" ] || fail "allocated $alloc, stat says $st_alloc"
[ "$appar" -eq "$st_appar" ] || fail "apparent $appar, stat says $st_appar"
# A small store: the sparse index makes apparent far above allocated, and info says so.
[ "$appar" -gt "$alloc" ] || fail "expected a sparse file here: apparent $appar, allocated $alloc"
grep -q "^allocated    $alloc (" "$T/text" || fail "info text: $(cat "$T/text")"
grep -q "^apparent     $appar (" "$T/text" || fail "info text: $(cat "$T/text")"
grep -q 'sparse' "$T/text" || fail "info does not explain the apparent size"
echo "ok"
