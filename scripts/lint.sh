#!/usr/bin/env bash
# Static checks run by the test suite: cppcheck on the engine and CLI, clang-format
# conformance, and a ban on C functions that invite overflows (curl's checksrc idea).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'src/*.c' 'src/*.h' 'include/*.h' 'tests/*.c' 'tests/*.h' 2>/dev/null || true)
[ -n "$files" ] || files=$(find src include tests -name '*.[ch]')
cppcheck --quiet --error-exitcode=1 --std=c11 --inline-suppr \
  --enable=warning,portability,performance --suppress=missingIncludeSystem \
  -I include -I src -D__GNUC__ -DANNAL_BUILDING src
if command -v clang-format >/dev/null; then
  # shellcheck disable=SC2086
  clang-format --dry-run --Werror $files
fi
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol)\s*\(' $files; then
  echo "lint: banned function (use snprintf, memcpy with a length, strtol)" >&2
  exit 1
fi
echo "lint: ok"
