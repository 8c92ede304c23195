#!/usr/bin/env bash
# deps_test.sh -- scripts/deps.sh waits while another apt/dpkg run holds the package
# locks instead of failing at once (issue 14, item 17), and still fails on other errors.
# apt-get, dpkg-query and sudo are stand-ins on PATH: nothing is installed.
set -euo pipefail
: "${ANNAL_SRC:?ANNAL_SRC must name the repository root}"
base="${ANNAL_TEST_TMP:-/tmp}"
mkdir -p "$base"
T="$(mktemp -d "$base/deps-XXXXXX")"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir "$T/bin"
# Every package is missing.
printf '#!/bin/sh\nexit 1\n' >"$T/bin/dpkg-query"
printf '#!/bin/sh\nexec "$@"\n' >"$T/bin/sudo"
# apt-get: each sub-command is "locked" for the first $LOCKED calls, then succeeds (or
# fails with another error when BROKEN is set). Calls are logged with their options.
cat >"$T/bin/apt-get" <<'SH'
#!/bin/sh
echo "$*" >>"$STATE/calls"
for a in "$@"; do case "$a" in update|install) cmd=$a ;; esac; done
n=$(cat "$STATE/$cmd" 2>/dev/null || echo 0)
echo $((n + 1)) >"$STATE/$cmd"
if [ "$n" -lt "$LOCKED" ]; then
    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
    exit 100
fi
if [ -n "${BROKEN:-}" ]; then echo "E: Unable to locate package nonesuch" >&2; exit 100; fi
exit 0
SH
chmod +x "$T/bin/"*
export PATH="$T/bin:$PATH" STATE="$T" ANNAL_DEPS_POLL=0.1

# Locked for 3 tries each: deps.sh waits and succeeds.
LOCKED=3 ANNAL_DEPS_WAIT=60 bash "$ANNAL_SRC/scripts/deps.sh" 2>"$T/err" ||
    fail "deps.sh did not wait for the locks: $(cat "$T/err")"
[ "$(cat "$T/update")" -eq 4 ] || fail "update ran $(cat "$T/update") times, want 4"
[ "$(cat "$T/install")" -eq 4 ] || fail "install ran $(cat "$T/install") times, want 4"
grep -q "waiting" "$T/err" || fail "deps.sh did not say it was waiting: $(cat "$T/err")"
grep -q "DPkg::Lock::Timeout=60" "$T/calls" || fail "apt-get not told to wait: $(cat "$T/calls")"

# A lock held longer than the wait: it gives up with apt's message.
rm -f "$T/update" "$T/install"
if LOCKED=1000 ANNAL_DEPS_WAIT=1 bash "$ANNAL_SRC/scripts/deps.sh" 2>"$T/err"; then
    fail "deps.sh succeeded while the lock was never released"
fi
grep -q "Could not get lock" "$T/err" || fail "no lock message: $(cat "$T/err")"

# Another error fails at once, without waiting.
rm -f "$T/update" "$T/install"
if LOCKED=0 BROKEN=1 ANNAL_DEPS_WAIT=60 bash "$ANNAL_SRC/scripts/deps.sh" 2>"$T/err"; then
    fail "deps.sh succeeded on a broken apt-get"
fi
[ "$(cat "$T/update")" -eq 1 ] || fail "a non-lock error was retried"
echo "deps_test: ok"
