# lib.sh -- shared by the projection shell tests: scratch directory, pass/fail counting,
# event generation. Sourced, not run.
: "${ANNAL:?ANNAL must name the annal binary}"
base="${ANNAL_TEST_TMP:-/tmp}"
mkdir -p "$base"
tmp="$(mktemp -d "$base/proj-XXXXXX")"
pass=0
fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
finish() {
    echo "$(basename "$0" .sh): $pass passed, $fail failed"
    if [ "$fail" -eq 0 ]; then exit 0; else exit 1; fi
}
# expect_eq WHAT GOT WANT
expect_eq() {
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got [$2], want [$3]"; fi
}
# expect_grep WHAT PATTERN FILE
expect_grep() {
    if grep -Eq -- "$2" "$3"; then ok "$1"; else bad "$1: no /$2/ in: $(cat "$3")"; fi
}
a() { "$ANNAL" --data "$tmp/store" "$@"; }

# gen_orders N ORDERS: JSON lines of an order story over ORDERS orders, N events in all:
# OrderPlaced, ItemAdded/ItemRemoved with quantities and prices, OrderCheckedOut, and
# payments in payment-<n> streams.
gen_orders() {
    awk -v n="$1" -v orders="$2" 'BEGIN {
        srand(7);
        for (i = 0; i < n; i++) {
            o = i % orders;
            if (i < orders) {
                printf "{\"stream\":\"order-%d\",\"type\":\"OrderPlaced\",\"data\":{\"customer\":\"c%d\"}}\n", o, o % 17;
            } else if (i % 11 == 0) {
                printf "{\"stream\":\"payment-%d\",\"type\":\"PaymentReceived\",\"data\":{\"order\":\"%d\",\"customer\":\"c%d\",\"amount\":%d}}\n", o, o, o % 17, 1 + int(rand() * 500);
            } else if (i % 7 == 0) {
                printf "{\"stream\":\"order-%d\",\"type\":\"ItemRemoved\",\"data\":{\"sku\":\"s%d\",\"qty\":1,\"price\":%d}}\n", o, i % 5, 1 + i % 13;
            } else {
                printf "{\"stream\":\"order-%d\",\"type\":\"ItemAdded\",\"data\":{\"sku\":\"s%d\",\"qty\":%d,\"price\":%d}}\n", o, i % 5, 1 + i % 3, 1 + i % 13;
            }
        }
    }'
}
