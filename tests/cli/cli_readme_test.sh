#!/usr/bin/env bash
# cli_readme_test.sh -- the README's command-line story works when pasted in order: the
# shell blocks between <!-- readme-story: begin/end --> markers run one after the other
# on a new store, with the built binary as `annal`, from a copy of the repository's
# top (for examples/), and the projection's query shows the order the events describe.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_SRC:?ANNAL_SRC must point at the source tree}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_readme.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset ANNAL_DATA

# The shell blocks between the markers, in order.
awk '/<!-- readme-story: begin -->/ { on = 1; next }
     /<!-- readme-story: end -->/   { on = 0; next }
     on && /^```sh$/ { inblock = 1; n++; next }
     on && /^```$/   { inblock = 0; next }
     inblock { print }
     END { if (n < 2) exit 1 }' "$ANNAL_SRC/README.md" >"$T/story.sh" ||
    fail "fewer than two marked shell blocks in README.md"
grep -q 'projection add' "$T/story.sh" || fail "the projection block is not in the story"

mkdir "$T/repo"
ln -s "$ANNAL_SRC/examples" "$T/repo/examples"
{
    echo 'set -euo pipefail'
    echo 'annal() { "$ANNAL" "$@"; }'
    cat "$T/story.sh"
} >"$T/run.sh"
(cd "$T/repo" && bash "$T/run.sh") >"$T/out" 2>"$T/err" ||
    fail "the README's story failed: $(tail -5 "$T/err")"
# Warnings would mean the README's own examples are doubtful (broken JSON, text metadata).
if grep -q 'warning' "$T/err"; then fail "the story warns: $(cat "$T/err")"; fi
grep -Eq '^1 +ann +checked out +2 +200 *$' "$T/out" ||
    fail "the query does not show the story's order: $(tail -5 "$T/out")"
grep -q '1 events erased' "$T/out" || fail "compact --seal did not erase the deleted cart"
echo "ok"
