#!/usr/bin/env bash
# Conditional appends over gRPC (issue 24): single-event appends through `annal serve` from
# 1 and 64 concurrent calls, three ways, interleaved round by round on one server and store:
#   streams   KurrentDB's Streams.Append (the baseline)
#   dcb       annal.dcb.v1.Dcb/Append, tagged, no condition
#   dcb-cond  the same with a condition on the caller's own tag after its last position
# Each append is acknowledged after fdatasync (group commit). Medians of the rounds, and
# dcb-cond's ratio to dcb and to streams (the issue's target: conditional >= 80% of
# unconditional). For scale, UmaDB publishes 7.5k conditional appends/s from one client and
# 114k/s from 1,024 clients on a 14-core laptop over gRPC.
# Usage: bench/dcb_grpc_run.sh [--quick] [--rounds N] [--seconds S] [--clients "1 64"]
# Needs a build (build/annal, or ANNAL=...) and the e2e clients (build/e2e-node, made by
# the server tests); prints a Markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=7 seconds=2 clients="1 64"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) rounds=1 seconds=2 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --clients) clients=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--seconds S] [--clients \"1 64\"]" >&2; exit 1 ;;
    esac
    shift
done
ANNAL=${ANNAL:-$PWD/build/annal}
node_dir=${NODE_DIR:-$PWD/build/e2e-node}
[ -x "$ANNAL" ] || { echo "no $ANNAL: build first" >&2; exit 1; }
[ -d "$node_dir/node_modules/@grpc/grpc-js" ] || { echo "no clients in $node_dir: run the server tests first" >&2; exit 1; }
cp bench/dcb_grpc_load.js "$node_dir/"
work=$(mktemp -d "${BENCH_DATA_PARENT:-$PWD/bench}/dcbdata.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$ANNAL" --data "$work/store" serve --insecure --listen 127.0.0.1:0 2>"$work/server.log" </dev/null >/dev/null &
server_pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/server.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "server did not start: $(cat "$work/server.log")" >&2; exit 1; }

results="$work/results.jsonl"
for r in $(seq "$rounds"); do
    for c in $clients; do
        for m in streams dcb dcb-cond; do
            line=$(NODE_NO_WARNINGS=1 node "$node_dir/dcb_grpc_load.js" "$PWD/src/server/proto" "$port" "$m" "$seconds" "$c")
            echo "{\"round\":$r,${line#\{}" | tee -a "$results" >&2
        done
    done
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const med = (a) => { a = a.slice().sort((x, y) => x - y); return a[Math.floor(a.length / 2)]; };
console.log("| concurrent calls | Streams.Append | Dcb/Append | Dcb/Append + condition | cond / dcb | cond / streams |");
console.log("|---:|---:|---:|---:|---:|---:|");
for (const c of [...new Set(rows.map((r) => r.clients))]) {
  const m = (mode) => med(rows.filter((r) => r.clients === c && r.mode === mode).map((r) => r.appends_per_s));
  const s = m("streams"), d = m("dcb"), k = m("dcb-cond");
  const pct = (x, y) => `${Math.round((100 * x) / y)}%`;
  console.log(`| ${c} | ${s.toFixed(0)}/s | ${d.toFixed(0)}/s | ${k.toFixed(0)}/s | ${pct(k, d)} | ${pct(k, s)} |`);
}' "$results"
