#!/usr/bin/env bash
# install_test.sh -- install libannal with `cmake --install` into a temporary prefix and
# build, link and run a small program against the INSTALLED copy found through
# pkg-config (not the build tree). The program appends an event and reads it back.
#
# env (set by tests/CMakeLists.txt): ANNAL_BUILD (cmake build dir), ANNAL_SRC (repo root),
# ANNAL_TEST_TMP (scratch base; default /tmp).
set -euo pipefail

: "${ANNAL_BUILD:?ANNAL_BUILD must name the cmake build directory}"
: "${ANNAL_SRC:?ANNAL_SRC must name the repository root}"
base="${ANNAL_TEST_TMP:-/tmp}"
mkdir -p "$base"
tmp="$(mktemp -d "$base/install-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Installed programs must run as installed: nothing here may help the loader.
unset LD_LIBRARY_PATH

pass=0
fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
finish() {
    echo "install: $pass passed, $fail failed"
    if [ "$fail" -eq 0 ]; then exit 0; else exit 1; fi
}

prefix="$tmp/prefix"
if cmake --install "$ANNAL_BUILD" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
    ok "cmake --install into $prefix"
else
    cat "$tmp/install.log" >&2
    bad "cmake --install failed"
    finish
fi

# The installed files.
hdr="$prefix/include/annal.h"
if [ -f "$hdr" ] && cmp -s "$hdr" "$ANNAL_SRC/include/annal.h"; then
    ok "annal.h installed and identical to the source"
else
    bad "include/annal.h missing or different under $prefix"
fi

pcdir=""
for d in lib/pkgconfig lib/x86_64-linux-gnu/pkgconfig lib64/pkgconfig; do
    if [ -f "$prefix/$d/annal.pc" ]; then pcdir="$prefix/$d"; break; fi
done
if [ -n "$pcdir" ]; then
    ok "annal.pc installed in ${pcdir#"$prefix"/}"
else
    bad "no annal.pc under $prefix/lib/pkgconfig or $prefix/lib/x86_64-linux-gnu/pkgconfig"
    find "$prefix" >&2
    finish
fi
libdir_guess="$(dirname "$pcdir")"
so="$(find "$libdir_guess" -maxdepth 1 -type f -name 'libannal.so.*' | head -n 1)"
if [ -L "$libdir_guess/libannal.so" ] && [ -n "$so" ]; then
    ok "libannal.so development link and versioned library present"
else
    bad "libannal.so (link) or libannal.so.N missing in $libdir_guess"
fi
if [ -e "$libdir_guess/libannal.so.0" ]; then
    ok "SONAME link libannal.so.0 present"
else
    bad "libannal.so.0 missing in $libdir_guess"
fi
if command -v readelf >/dev/null && [ -n "$so" ]; then
    soname="$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
    if [ "$soname" = "libannal.so.0" ]; then ok "SONAME is $soname"; else bad "SONAME is '$soname'"; fi
fi

# pkg-config must describe the installed copy, not the build tree or the configured
# default prefix. Our .pc directory comes first on the search path.
export PKG_CONFIG_PATH="$pcdir"
if ! pkg-config --exists annal; then
    bad "pkg-config cannot find annal in $pcdir"
    finish
fi
version="$(pkg-config --modversion annal)"
want_version="$(sed -n 's/^#define ANNAL_VERSION_STRING "\(.*\)"/\1/p' "$ANNAL_SRC/include/annal.h")"
if [ "$version" = "$want_version" ]; then ok "pkg-config version $version"; else bad "pkg-config version '$version', header says '$want_version'"; fi
cflags="$(pkg-config --cflags annal)"
libs="$(pkg-config --libs annal)"
pc_includedir="$(pkg-config --variable=includedir annal)"
pc_libdir="$(pkg-config --variable=libdir annal)"
echo "pkg-config: cflags=[$cflags] libs=[$libs] includedir=$pc_includedir libdir=$pc_libdir"
real() { readlink -f "$1" 2>/dev/null || echo "$1"; }
if [ "$(real "$pc_includedir")" = "$(real "$prefix/include")" ]; then
    ok "pkg-config includedir is the installed one"
else
    bad "pkg-config includedir '$pc_includedir' is not '$prefix/include': annal.pc does not follow 'cmake --install --prefix' (prefix fixed at configure time)"
fi
if [ "$(real "$pc_libdir")" = "$(real "$libdir_guess")" ]; then
    ok "pkg-config libdir is the installed one"
else
    bad "pkg-config libdir '$pc_libdir' is not '$libdir_guess': annal.pc does not follow 'cmake --install --prefix'"
    # Go on with the prefix pkg-config derives from the .pc file's place, so that the rest
    # (the installed header and library themselves) is still checked.
    if pkg-config --define-prefix --exists annal 2>/dev/null; then
        cflags="$(pkg-config --define-prefix --cflags annal)"
        libs="$(pkg-config --define-prefix --libs annal)"
        pc_libdir="$(pkg-config --define-prefix --variable=libdir annal)"
        echo "continuing with pkg-config --define-prefix: cflags=[$cflags] libs=[$libs]"
    fi
fi

# A library built with ANNAL_SANITIZE needs its consumers built with the sanitizers too.
san=""
if [ -n "$so" ] && ldd "$so" 2>/dev/null | grep -q 'libasan'; then
    san="-fsanitize=address,undefined"
    echo "the installed library is sanitized: consumers get $san"
fi

# A consumer program: strict C17, warnings as errors, only <annal.h>.
cat >"$tmp/consumer.c" <<'EOF'
#include <annal.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    CHECK(annal_version_number() == ANNAL_VERSION_NUMBER);
    CHECK(strcmp(annal_version_string(), ANNAL_VERSION_STRING) == 0);
    annal_db_opts opts;
    annal_db_opts_init(&opts);
    opts.flags = ANNAL_OPEN_CREATE;
    annal_db *db = NULL;
    annal_err rc = annal_db_open(argv[1], &opts, &db);
    if (rc != ANNAL_OK) { fprintf(stderr, "open: %s\n", annal_errname(rc)); return 1; }
    const char *payload = "{\"installed\":true}";
    const char meta[] = "m";
    annal_event_data ev;
    memset(&ev, 0, sizeof ev);
    ev.type = "Installed";
    ev.data = payload;
    ev.data_len = strlen(payload);
    ev.metadata = meta;
    ev.metadata_len = 1;
    annal_append_result res;
    rc = annal_append(db, "install-check", ANNAL_EXPECT_NO_STREAM, &ev, 1, &res);
    if (rc != ANNAL_OK) { fprintf(stderr, "append: %s: %s\n", annal_errname(rc), annal_db_errmsg(db)); return 1; }
    CHECK(res.count == 1 && res.first_revision == 0 && res.revision == 0 && !res.idempotent);
    annal_iter *it = NULL;
    CHECK(annal_read_stream(db, "install-check", 0, 0, 0, &it) == ANNAL_OK);
    const annal_event *e = NULL;
    CHECK(annal_iter_next(it, &e) == ANNAL_OK);
    CHECK(memcmp(e->id.bytes, ev.id.bytes, 16) == 0);
    CHECK(strcmp(e->type, "Installed") == 0 && strcmp(e->stream, "install-check") == 0);
    CHECK(e->data_len == strlen(payload) && memcmp(e->data, payload, e->data_len) == 0);
    CHECK(e->metadata_len == 1 && memcmp(e->metadata, meta, 1) == 0);
    CHECK(e->position == res.first_position && e->revision == 0);
    CHECK(annal_iter_next(it, &e) == ANNAL_END);
    annal_iter_close(it);
    annal_event *got = NULL;
    CHECK(annal_event_get(db, res.first_position, &got) == ANNAL_OK);
    CHECK(got->data_len == strlen(payload) && memcmp(got->data, payload, got->data_len) == 0);
    annal_free(got);
    char text[37];
    annal_uuid_format(&ev.id, text);
    annal_db_close(db);
    printf("appended %s at position %llu\n", text, (unsigned long long)res.first_position);
    return 0;
}
EOF
cc="${CC:-cc}"
# shellcheck disable=SC2086 # pkg-config output is a list of words
if "$cc" -std=c17 -Wall -Wextra -Wpedantic -Werror $san $cflags -o "$tmp/consumer" "$tmp/consumer.c" $libs \
    >"$tmp/cc.log" 2>&1; then
    ok "consumer compiled against the installed header and library"
else
    cat "$tmp/cc.log" >&2
    bad "consumer did not build with pkg-config flags"
    finish
fi
if command -v c++ >/dev/null 2>&1; then
    printf '#include <annal.h>\nint main() { return annal_version_number() == ANNAL_VERSION_NUMBER ? 0 : 1; }\n' \
        >"$tmp/consumer.cc"
    # shellcheck disable=SC2086
    if c++ -Wall -Wextra -Werror $san $cflags -o "$tmp/consumer_cxx" "$tmp/consumer.cc" $libs >"$tmp/cxx.log" 2>&1 &&
        "$tmp/consumer_cxx"; then
        ok "header usable from C++"
    else
        cat "$tmp/cxx.log" >&2
        bad "header not usable from C++"
    fi
fi

# It must load the installed library, not the one in the build tree, with no
# LD_LIBRARY_PATH (the rpath pkg-config gave it).
loaded="$(ldd "$tmp/consumer" | awk '/libannal\.so/ {print $3}')"
if [ -n "$loaded" ] && [ "$(real "$loaded")" = "$(real "$so")" ]; then
    ok "consumer loads $loaded"
else
    bad "consumer loads '$loaded' instead of the installed $so"
fi
case "$(real "$loaded")" in
"$(real "$prefix")"/*) ok "the loaded library lies under the install prefix" ;;
*) bad "consumer resolved libannal outside the install prefix: $loaded" ;;
esac

if out="$("$tmp/consumer" "$tmp/store" 2>&1)"; then
    echo "$out"
    if printf '%s\n' "$out" | grep -Eq '^appended [0-9a-f-]{36} at position 0$'; then
        ok "consumer appended an event and read it back"
    else
        bad "unexpected consumer output: $out"
    fi
else
    echo "$out" >&2
    bad "consumer failed"
fi
# the store it wrote is a real store: a second run finds the stream (no_stream conflicts)
if "$tmp/consumer" "$tmp/store" >"$tmp/second.log" 2>&1; then
    bad "second run appended with no_stream to an existing stream"
else
    if grep -q 'ECONFLICT' "$tmp/second.log"; then
        ok "second run sees the stored event (ECONFLICT)"
    else
        cat "$tmp/second.log" >&2
        bad "second run failed for another reason"
    fi
fi

# The installed command runs against the installed library.
cli="$prefix/bin/annal"
if [ -x "$cli" ]; then
    if cli_out="$("$cli" --version 2>&1)" &&
        printf '%s\n' "$cli_out" | grep -qF "$want_version"; then
        ok "installed annal --version: $cli_out"
    else
        bad "installed annal --version failed or lacks $want_version: $cli_out"
    fi
    for lib in libannal.so libannal_project.so; do
        at="$(ldd "$cli" | awk -v l="$lib" 'index($1, l) == 1 {print $3}')"
        case "$(real "$at")" in
        "$(real "$prefix")"/*) ok "installed annal loads $lib from the prefix" ;;
        *) bad "installed annal resolves $lib to '$at', not under $prefix" ;;
        esac
    done
    if "$cli" --data "$tmp/clistore" append s T '{"n":1}' >/dev/null 2>"$tmp/cli.err" &&
        "$cli" --data "$tmp/clistore" read s --json 2>>"$tmp/cli.err" | grep -q '"n":1'; then
        ok "installed annal appends and reads"
    else
        bad "installed annal cannot append and read: $(cat "$tmp/cli.err")"
    fi
else
    bad "no executable $cli"
fi

# Only annal_ symbols are exported by the installed library.
if command -v nm >/dev/null; then
    other="$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^annal_' | grep -v '^_' || true)"
    if [ -z "$other" ]; then ok "installed library exports only annal_ symbols"; else bad "unprefixed exports: $other"; fi
fi


# The man page and the bash completion (made at build time from the help texts).
man1="$(find "$prefix" -path '*/man1/annal.1' | head -n 1)"
if [ -n "$man1" ] && grep -q '^\.TH ANNAL 1' "$man1"; then
    ok "man page installed in ${man1#"$prefix"/}"
    if command -v man >/dev/null; then
        if MANPATH="$prefix/share/man" man -w annal 2>/dev/null | grep -q "^$prefix/"; then
            ok "man annal finds it with MANPATH=$prefix/share/man"
        else
            bad "man annal does not find the installed page"
        fi
    fi
else
    bad "no man1/annal.1 under $prefix"
fi
if [ -f "$prefix/share/bash-completion/completions/annal" ] &&
    grep -q 'complete -F _annal annal' "$prefix/share/bash-completion/completions/annal"; then
    ok "bash completion installed"
else
    bad "no share/bash-completion/completions/annal under $prefix"
fi

finish
