#!/usr/bin/env bash
# proj_run.sh -- projection throughput: builds proj_bench (Release, -DANNAL_BUILD_BENCH=ON)
# into bench/build-proj, starts a throwaway PostgreSQL on 127.0.0.1 (tests/project/pglib.sh:
# initdb as user postgres when root, fsync=off for both the projection and the direct
# program) and prints the medians as a Markdown table (bench/RESULTS.md, "Projections").
# usage: bench/proj_run.sh [--events N] [--rounds R] [--batch B]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/bench/build-proj"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DANNAL_BUILD_BENCH=ON \
    -DANNAL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target proj_bench >/dev/null
data="$(mktemp -d "$root/bench/proj-data.XXXXXX")"
ANNAL_SRC="$root"
. "$root/tests/project/pglib.sh"
trap 'pg_stop; rm -rf "$data"' EXIT
pg_start || { echo "proj_run: PostgreSQL did not start" >&2; exit 1; }
"$build/bench/proj_bench" --dir "$data/run" --pg "$PGCONN" "$@"
