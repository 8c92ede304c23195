#!/usr/bin/env bash
# Run every libFuzzer target (fuzz/fuzz_*.c) for a while, with AddressSanitizer and
# UndefinedBehaviorSanitizer. New inputs that grow coverage go to a scratch corpus under
# build-fuzz/ (the committed seeds in fuzz/corpus/<target>/ are only read); a crash, leak,
# timeout or OOM is copied into fuzz/corpus/<target>/ as a regression input, so that the
# ctest replay keeps failing until it is fixed, and the script fails.
# Usage: scripts/fuzz.sh [--seconds N | --minutes M] [--only REGEX]
#   default 30 s per target (scripts/test.sh --long); `--minutes 60` for a long campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=30
only=.
while (($#)); do
  case "$1" in
    --seconds) secs=$2; shift 2 ;;
    --minutes) secs=$(($2 * 60)); shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "usage: scripts/fuzz.sh [--seconds N | --minutes M] [--only REGEX]" >&2; exit 2 ;;
  esac
done

# clang and its libFuzzer runtime (Debian: clang, libclang-rt-<v>-dev).
have_fuzzer() {
  command -v clang >/dev/null || return 1
  local t
  t=$(mktemp -d)
  printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
    >"$t/t.c"
  clang -fsanitize=fuzzer,address,undefined "$t/t.c" -o "$t/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$t"
  return $rc
}
if ! have_fuzzer; then
  v=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
  scripts/deps.sh clang "libclang-rt-${v:-14}-dev"
  have_fuzzer || { echo "fuzz: clang cannot build libFuzzer targets" >&2; exit 1; }
fi

echo "== fuzz: building the targets (clang, -fsanitize=fuzzer,address,undefined)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANNAL_FUZZ=ON \
  -DANNAL_BUILD_BENCH=OFF >/dev/null
targets=()
for f in fuzz/fuzz_*.c; do
  t=$(basename "$f" .c)
  t=${t#fuzz_}
  [[ $t =~ $only ]] && targets+=("$t")
done
((${#targets[@]})) || { echo "fuzz: no target matches $only" >&2; exit 2; }
nice -n 10 cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  work=build-fuzz/corpus-work/$t
  art=build-fuzz/artifacts/$t
  rm -rf "$art" # findings of an earlier run were kept (or dropped) then
  mkdir -p "$work" "$art" "fuzz/corpus/$t"
  echo "== fuzz: $t for ${secs}s"
  log=build-fuzz/fuzz-$t.log
  extra=()
  # lua keeps a Lua state and a SQLite read model across inputs: their caches grow, and a
  # leak scan after every such input took two thirds of the time. Leaks are still checked
  # at exit.
  [ "$t" = lua ] && extra+=(-detect_leaks=0)
  # -timeout: one input running longer is a hang (a finding); -rss_limit_mb bounds memory.
  if build-fuzz/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2560 \
       -print_final_stats=1 -artifact_prefix="$art/" "${extra[@]}" "$work" "fuzz/corpus/$t" \
       >"$log" 2>&1; then
    grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' "$log" | sed 's/^/   /'
  else
    failed+=("$t")
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | sed 's/^/   /' | head -20
    for a in "$art"/*; do
      [ -f "$a" ] || continue
      dst=fuzz/corpus/$t/regress-$(basename "$a")
      cp "$a" "$dst"
      echo "   kept $dst: fix the defect, then commit it (the ctest replay reruns it)"
    done
    echo "   full log: $log"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no findings"
