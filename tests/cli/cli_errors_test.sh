#!/usr/bin/env bash
# cli_errors_test.sh -- errors about the store's directory say what is wrong (issue 14,
# item 13): a deleted index is rebuilt; a data path that is a file is "not a directory";
# a non-empty directory that is not a store is refused, not turned into one; files the
# user may not open say "permission denied" and verify does not call that damage.
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_errors_test.XXXXXX")
P=""
trap 'rm -rf "$T" ${P:+"$P"}' EXIT
unset ANNAL_DATA

fail() { echo "FAIL: $*" >&2; exit 1; }
run() {
    set +e
    "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
expect() {
    [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stdout: $(cat "$T/out") stderr: $(cat "$T/err")"
}
says() { grep -qi -- "$1" "$T/err" || fail "$2: stderr lacks '$1': $(cat "$T/err")"; }

# --- rebuild-index after the index directory was deleted (as verify advises)
D="$T/data"
"$ANNAL" --data "$D" append s T '{"n":1}' >/dev/null
"$ANNAL" --data "$D" append s T '{"n":2}' >/dev/null
rm -rf "$D/index"
run "$ANNAL" --data "$D" rebuild-index
expect 0 "rebuild-index with index/ deleted"
run "$ANNAL" --data "$D" read s --json
expect 0 "read after the rebuild"
[ "$(grep -c '"stream":"s"' "$T/out")" -eq 2 ] || fail "rebuilt index lost events: $(cat "$T/out")"
# and a plain writer open rebuilds it too
rm -rf "$D/index"
run "$ANNAL" --data "$D" append s T '{"n":3}'
expect 0 "append with index/ deleted"
grep -q '"revision":2' "$T/out" || fail "append after a deleted index: $(cat "$T/out")"

# --- a data path that is a regular file
touch "$T/afile"
run "$ANNAL" --data "$T/afile" append s T '{}'
[ "$RC" -ne 0 ] || fail "a file accepted as a store"
says "not a directory" "data path is a file"

# --- an existing, non-empty directory that is not a store is refused, untouched
mkdir "$T/home"
echo precious >"$T/home/notes.txt"
run "$ANNAL" --data "$T/home" append s T '{}'
[ "$RC" -ne 0 ] || fail "a non-empty directory was made a store"
says "not empty" "non-empty directory"
[ "$(ls -A "$T/home")" = "notes.txt" ] || fail "the refused directory changed: $(ls -A "$T/home")"
# an empty one and a missing one are fine
mkdir "$T/empty"
run "$ANNAL" --data "$T/empty" append s T '{}'
expect 0 "append into an empty directory"
run "$ANNAL" --data "$T/new" append s T '{}'
expect 0 "append creating a missing directory"

# --- permissions: as a user who may not open the files. Root passes every permission
# check, so the checks run as nobody (setpriv), or as ourselves when not root.
if [ "$(id -u)" -eq 0 ]; then
    command -v setpriv >/dev/null || { echo "SKIP permission checks: no setpriv"; exit 0; }
    AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    # nobody must reach the binary; else skip rather than test the wrong thing
    "${AS[@]}" "$ANNAL" --version >/dev/null 2>&1 || { echo "SKIP: nobody cannot run $ANNAL"; exit 0; }
else
    AS=()
fi
P=$(mktemp -d /tmp/cli_errors_perm.XXXXXX)
chmod 755 "$P"
S="$P/store"
"$ANNAL" --data "$S" append s T '{}' >/dev/null
if [ "$(id -u)" -eq 0 ]; then
    chmod -R a+rX "$S" # readable, not writable, by nobody (the index needs its lock file)
else
    chmod -R a-w "$S"
fi
for cmd in "read s" "info" "verify"; do
    # shellcheck disable=SC2086
    run "${AS[@]}" "$ANNAL" --data "$S" $cmd
    [ "$RC" -ne 0 ] || continue # some systems let a reader in: then nothing to check
    [ "$RC" -ne 4 ] || fail "$cmd of an unwritable store exits as damage: $(cat "$T/err")"
    says "permission denied" "$cmd of an unwritable store"
    if grep -qi "input/output" "$T/err"; then fail "$cmd says I/O error: $(cat "$T/err")"; fi
done
if [ "$(id -u)" -eq 0 ]; then chmod 700 "$S"; else chmod 000 "$S"; fi # not even searchable
for cmd in "read s" "verify" "append s T {}"; do
    # shellcheck disable=SC2086
    run "${AS[@]}" "$ANNAL" --data "$S" $cmd
    [ "$RC" -ne 0 ] || fail "$cmd of a store that cannot be entered succeeded"
    [ "$RC" -ne 4 ] || fail "$cmd of a store that cannot be entered exits as damage"
    says "permission denied" "$cmd of a store that cannot be entered"
done
chmod 755 "$S"
chmod -R u+w "$S"
echo "cli_errors_test: ok"
