#!/usr/bin/env bash
# cli_completion_man_test.sh -- `annal completion bash` completes sub-commands, options
# and stream names (simulated with COMP_WORDS in bash), and the man page made at build
# time from the help texts renders and holds every sub-command's usage.
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_BUILD:?ANNAL_BUILD must name the build directory}"
: "${ANNAL_SRC:?ANNAL_SRC must point at the source tree}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_completion_man.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset ANNAL_DATA

"$ANNAL" completion bash >"$T/annal.bash" || fail "annal completion bash failed"
"$ANNAL" --data "$T/shop" append order-1 OrderPlaced '{"customer":"ann"}' >/dev/null
"$ANNAL" --data "$T/shop" append order-2 OrderPlaced '{"customer":"bob"}' >/dev/null
"$ANNAL" --data "$T/shop" append user-9 Profile '{}' >/dev/null

# complete WORD...: the completions bash offers for the last word.
complete_words() {
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _annal
             [ ${#COMPREPLY[@]} -eq 0 ] || printf "%s\n" "${COMPREPLY[@]}"' _ "$T/annal.bash" "$@"
}
complete_words "$ANNAL" ver >"$T/c"
[ "$(cat "$T/c")" = verify ] || fail "annal ver<TAB>: $(cat "$T/c")"
complete_words "$ANNAL" "" >"$T/c"
for c in append read compact completion projection; do
    grep -qx "$c" "$T/c" || fail "annal <TAB> lacks $c: $(tr '\n' ' ' <"$T/c")"
done
complete_words "$ANNAL" --data "$T/shop" read or >"$T/c"
[ "$(sort "$T/c" | tr '\n' ' ')" = "order-1 order-2 " ] || fail "read or<TAB>: $(cat "$T/c")"
complete_words "$ANNAL" append --data-f >"$T/c"
[ "$(cat "$T/c")" = --data-file ] || fail "append --data-f<TAB>: $(cat "$T/c")"
complete_words "$ANNAL" compact --se >"$T/c"
[ "$(cat "$T/c")" = --seal ] || fail "compact --se<TAB>: $(cat "$T/c")"
# No store: no stream names, no noise.
complete_words "$ANNAL" --data "$T/none" read o >"$T/c" 2>"$T/err"
[ ! -s "$T/c" ] && [ ! -s "$T/err" ] || fail "completion without a store: $(cat "$T/c" "$T/err")"

# The man page: built from the help texts, and still equal to what they say now.
man1="$ANNAL_BUILD/annal.1"
[ -s "$man1" ] || fail "no $man1: the build makes it"
bash "$ANNAL_SRC/man/gen_man.sh" "$ANNAL" >"$T/annal.1"
cmp -s "$man1" "$T/annal.1" || fail "$man1 differs from the current --help texts"
if command -v man >/dev/null; then
    LC_ALL=C MANWIDTH=200 man -l "$man1" 2>"$T/err" | col -bx >"$T/man.txt"
elif command -v groff >/dev/null; then
    LC_ALL=C groff -man -Tascii -rLL=200n "$man1" 2>"$T/err" | col -bx >"$T/man.txt"
else
    cp "$man1" "$T/man.txt" # no renderer: the troff source itself
fi
[ ! -s "$T/err" ] || fail "the man page renders with warnings: $(cat "$T/err")"
for c in $("$ANNAL" --help | sed -n '/^Commands:/,/^$/{s/^  \([a-z][a-z-]*\) .*/\1/p}'); do
    usage=$("$ANNAL" "$c" --help | head -1 | sed 's/ *$//')
    grep -qF -- "$usage" "$T/man.txt" || fail "man page lacks the usage of $c: $usage"
done
echo "ok"
