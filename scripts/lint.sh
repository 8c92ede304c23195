#!/usr/bin/env bash
# Suppressed with reasons: protobuf-c request fields are read by the packer, which cppcheck
# cannot see (unreadVariable in src/server, src/cli/user.c); tls.c counts CAs beside the loop
# that needs them (variableScope).
# Static checks run by the test suite: cppcheck (C17, style included) on the engine and
# CLI, clang-format conformance, clang-tidy's function-size check, and a ban on C
# functions that invite overflows (curl's checksrc idea). A tool that is missing fails
# the lint (scripts/deps.sh installs them all): a skipped check would pass unseen.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cppcheck clang-format clang-tidy cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "lint: $tool is missing (run scripts/deps.sh)" >&2
    exit 1
  fi
done
files=$(git ls-files 'src/*.c' 'src/*.h' 'include/*.h' 'tests/*.c' 'tests/*.h' 2>/dev/null || true)
[ -n "$files" ] || files=$(find src include tests -name '*.[ch]')

# src/server/ fills protobuf-c messages field by field and sends them through a pointer
# to their base, which cppcheck does not follow (unreadVariable); its send loop assigns
# and tests in one condition on purpose (clarifyCondition).
cppcheck --quiet --error-exitcode=1 --std=c17 --inline-suppr \
  --enable=warning,style,portability,performance --suppress=missingIncludeSystem \
  --suppress='unreadVariable:src/server/*' --suppress='unreadVariable:src/cli/user.c' --suppress='unreadVariable:src/cli/route_dcb.c' --suppress='variableScope:src/server/tls.c' --suppress='clarifyCondition:src/server/streams.c' \
  -I include -I src -D__GNUC__ -DANNAL_BUILDING src

# shellcheck disable=SC2086
clang-format --dry-run --Werror $files

# Functions a reader can hold in their head: clang-tidy's size check over src/ needs
# the compile commands of a build of its own.
lintdir=build-lint
cmake -S . -B "$lintdir" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DANNAL_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
# (generated sources: the protobuf-c files must exist for the server's includes)
cmake --build "$lintdir" --target annal_server_proto -j2 >/dev/null 2>&1 || true
srcs=$(git ls-files 'src/*.c' 2>/dev/null || find src -name '*.c')
# shellcheck disable=SC2086
tidy=$(clang-tidy -p "$lintdir" --quiet --checks='-*,readability-function-size' \
  --config='{CheckOptions: [{key: readability-function-size.LineThreshold, value: 100}]}' \
  $srcs 2>/dev/null || true)
if grep -E 'warning:|error:' <<<"$tidy" >&2; then
  echo "lint: clang-tidy: functions over 100 lines (split them) or sources it cannot read" >&2
  exit 1
fi

if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol)\s*\(' $files; then
  echo "lint: banned function (use snprintf, memcpy with a length, strtol)" >&2
  exit 1
fi
echo "lint: ok"
