#!/usr/bin/env bash
# Damaged index files: `annal verify` reports the damage (exit 4) even when reading the
# index crashes, and `annal rebuild-index` restores an index that agrees with the log.
set -euo pipefail
# Under AddressSanitizer a crash in the verify child would become "exit 1" from ASan's own
# handler; let it die of the signal as a normal build does, which verify reports (exit 4).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0:handle_sigbus=0"
: "${ANNAL:?built annal binary}"
tmp=$(mktemp -d "${ANNAL_TEST_TMP:-/tmp}/idxdmg-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
passed=0

for i in $(seq 0 59); do
  "$ANNAL" --data "$tmp/s" append "acct-$((i % 7))" Deposited "{\"amount\":$i}" >/dev/null
done
"$ANNAL" --data "$tmp/s" read '$all' --json > "$tmp/before.jsonl"
[ "$(wc -l < "$tmp/before.jsonl")" -eq 60 ] || fail "expected 60 events"

for seed in 1 2 3 4 5; do
  rm -rf "$tmp/d"; cp -r "$tmp/s" "$tmp/d"
  python3 - "$tmp/d/index/data.mdb" "$seed" <<'PY'
import random, struct, sys
p, seed = sys.argv[1], int(sys.argv[2])
f = bytearray(open(p, 'rb').read())
# The pages in use end at the newest meta page's last page number (the file of a
# writer's writable map is allocated further ahead): LMDB's meta follows a 16-byte page
# header; its last page and transaction id are at bytes 136 and 144 of the page.
last = max((struct.unpack_from('<QQ', f, m * 4096 + 136) for m in (0, 1)), key=lambda x: x[1])[0]
random.seed(seed)
for _ in range(60):  # leave the two meta pages alone: damage the tables
    pg = random.randrange(2, last + 1)
    f[pg * 4096 + random.randrange(0, 4096)] ^= random.randrange(1, 256)
open(p, 'wb').write(f)
PY
  set +e
  "$ANNAL" --data "$tmp/d" verify > "$tmp/out" 2> "$tmp/err"
  rc=$?
  set -e
  [ "$rc" -eq 4 ] || fail "seed $seed: verify of a damaged index exited $rc, want 4: $(cat "$tmp/out" "$tmp/err")"
  grep -q "index" "$tmp/out" "$tmp/err" || fail "seed $seed: verify did not name the index"
  "$ANNAL" --data "$tmp/d" rebuild-index > /dev/null 2>&1 || fail "seed $seed: rebuild-index failed"
  "$ANNAL" --data "$tmp/d" verify > /dev/null || fail "seed $seed: still damaged after rebuild-index"
  "$ANNAL" --data "$tmp/d" read '$all' --json > "$tmp/after.jsonl"
  cmp -s "$tmp/before.jsonl" "$tmp/after.jsonl" || fail "seed $seed: events differ after rebuild-index"
  passed=$((passed + 1))
done
echo "index damage: $passed passed, 0 failed"
