#!/usr/bin/env bash
# Atomic appends across streams over gRPC (issue 19): events/s of `annal serve --insecure`
# through @kurrent/kurrentdb-client, 100 events a call, CONC concurrent calls, workloads
# interleaved in each round, medians of the rounds (bench/v2_load.js):
#   single-b100    appendToStream, one stream (BatchAppend)
#   multi-10x10    multiStreamAppend, 10 streams x 10 events (AppendSession)
#   records-10x10  appendRecords, 100 records in 10 runs of one stream (AppendRecords)
# Usage: bench/v2_run.sh [--quick] [--rounds N] [--seconds S] [--clients C]
# Needs a build (build/annal, or ANNAL=...) and the e2e clients (build/e2e-node, made by
# the server tests); prints a Markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 seconds=10 clients=4
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) rounds=1 seconds=3 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --clients) clients=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--seconds S] [--clients C]" >&2; exit 1 ;;
    esac
    shift
done
ANNAL=${ANNAL:-$PWD/build/annal}
node_dir=${NODE_DIR:-$PWD/build/e2e-node}
[ -x "$ANNAL" ] || { echo "no $ANNAL: build first" >&2; exit 1; }
[ -d "$node_dir/node_modules/@kurrent/kurrentdb-client" ] || { echo "no clients in $node_dir: run the server tests first" >&2; exit 1; }
cp bench/v2_load.js "$node_dir/"
work=$(mktemp -d "${BENCH_DATA_PARENT:-$PWD/bench}/v2data.XXXXXX")
pid=""
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

: >"$work/server.log"
"$ANNAL" --data "$work/store" serve --insecure --listen 127.0.0.1:0 2>"$work/server.log" </dev/null >/dev/null &
pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "server did not start: $(cat "$work/server.log")" >&2; exit 1; }

results="$work/results.jsonl"
for r in $(seq "$rounds"); do
    for w in single-b100 multi-10x10 records-10x10; do
        line=$(NODE_NO_WARNINGS=1 node "$node_dir/v2_load.js" "kurrentdb://127.0.0.1:$port?tls=false" "$w" "$seconds" "$clients")
        echo "{\"round\":$r,${line#\{}" | tee -a "$results" >&2
    done
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const med = (a) => { a = a.slice().sort((x, y) => x - y); return a[Math.floor(a.length / 2)]; };
const m = (w) => med(rows.filter((r) => r.workload === w).map((r) => r.events_per_s));
const base = m("single-b100");
console.log("| workload | events/s | vs single-b100 |");
console.log("|---|---:|---:|");
for (const w of ["single-b100", "multi-10x10", "records-10x10"])
  console.log(`| ${w} | ${Math.round(m(w)).toLocaleString("en")} | ${(m(w) / base).toFixed(2)} |`);
' "$results"
