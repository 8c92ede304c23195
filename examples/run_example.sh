#!/usr/bin/env bash
# run_example.sh BINARY [ARGS...] -- PATTERN... -- run an example program on a fresh store
# directory and check its output: exit 0 and every PATTERN (an extended regex) found.
set -uo pipefail
bin="$1"
shift
args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
[ $# -gt 0 ] && shift
base="${ANNAL_TEST_TMP:-/tmp}"
mkdir -p "$base"
dir="$(mktemp -d "$base/example-XXXXXX")"
trap 'rm -rf "$dir"' EXIT
out="$dir/out.txt"
"$bin" "$dir/store" "${args[@]}" >"$out" 2>&1
rc=$?
cat "$out"
fail=0
if [ $rc -ne 0 ]; then echo "FAIL: $(basename "$bin") exited with $rc" >&2; fail=1; fi
for p in "$@"; do
  if ! grep -Eq -- "$p" "$out"; then echo "FAIL: output lacks: $p" >&2; fail=1; fi
done
exit $fail
