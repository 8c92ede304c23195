#!/usr/bin/env bash
# The whole test suite: install what is missing, then build and test three times — a
# normal build with -Werror, an AddressSanitizer + UndefinedBehaviorSanitizer build, and
# a ThreadSanitizer build of the threaded tests — and run the static checks (cppcheck,
# clang-format, clang-tidy's function size, banned functions).
# Options: --quick (skip the sanitizer passes), --long (long variants of randomized tests,
# then the mutation sample, scripts/mutate.sh, and 30 s of each fuzzer, scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
long=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --long) long=1; export ANNAL_LONG=1 ANNAL_MODEL_OPS=100000 ;;
    *) echo "usage: scripts/test.sh [--quick] [--long]" >&2; exit 1 ;;
  esac
done
scripts/deps.sh
jobs=$(nproc)
start=$(date +%s)
echo "== disk: $(df -h . | tail -1)"

echo "== static checks"
scripts/lint.sh

echo "== build (release, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANNAL_WERROR=ON -DANNAL_BUILD_BENCH=OFF >/dev/null
cmake --build build -j"$jobs" >/dev/null
echo "== tests (release)"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)

if [ "$quick" -eq 0 ]; then
  echo "== build (ASan + UBSan)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DANNAL_WERROR=ON -DANNAL_SANITIZE=ON \
        -DANNAL_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$jobs" >/dev/null
  echo "== tests (ASan + UBSan)"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs" --timeout 1800 -E '^install_test$')

  # ThreadSanitizer over the tests that run threads against one store (group commit's
  # futex wake-ups, the log's grower, the id runs' merger, subscribers, compaction
  # beside readers); not the fork/kill ones. tests/util/tsan.supp says what it hides.
  echo "== build (TSan)"
  tsan_tests='^(concurrency_test|subscribe_test|api_test|ids_store_test|compact_test|dcb_race_test|dcb_examples_test)$'
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANNAL_WERROR=ON -DANNAL_TSAN=ON \
        -DANNAL_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j"$jobs" --target concurrency_test subscribe_test api_test \
        ids_store_test compact_test dcb_race_test dcb_examples_test >/dev/null
  echo "== tests (TSan)"
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/../tests/util/tsan.supp" \
     ctest --output-on-failure -j"$jobs" --timeout 900 -R "$tsan_tests")
fi
if [ "$long" -eq 1 ]; then  # both run, then either fails the suite
  echo "== mutation sample (scripts/mutate.sh)"
  mrc=0; scripts/mutate.sh || mrc=$?
  echo "== fuzzing (scripts/fuzz.sh, 30 s a target)"
  frc=0; scripts/fuzz.sh --seconds 30 || frc=$?
  [ "$mrc" -eq 0 ] && [ "$frc" -eq 0 ] || { echo "== mutants survived or fuzzers found" >&2; exit 1; }
fi
echo "== all tests passed in $(( $(date +%s) - start ))s"
