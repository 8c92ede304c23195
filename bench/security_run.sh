#!/usr/bin/env bash
# Calls per second of `annal serve` with authentication and ACL checks against the same
# server --insecure (issue 17: >= 90%), same workload, interleaved in one run, through the
# official Node.js client (@eventstore/db-client, grpc-js):
#   insecure      plain HTTP/2, every call an admin (no TLS, no checks)
#   secure-admin  TLS, Basic credentials of admin (authentication, cached verification)
#   secure-user   TLS, Basic credentials of a user: authentication plus the ACL check
#                 (the stream's metadata and $settings read on every call)
# Workloads: `read` (10 events of a stream per call) and `append` (one event per call,
# each acknowledged after fdatasync), CONC concurrent calls.
# Usage: bench/security_run.sh [--quick] [--rounds N] [--seconds S] [--clients C]
# Needs a build (build/annal, or ANNAL=...) and the e2e clients (build/e2e-node, made by
# the server tests); prints a Markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 seconds=10 clients=16
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
[ -d "$node_dir/node_modules/@eventstore/db-client" ] || { echo "no clients in $node_dir: run the server tests first" >&2; exit 1; }
cp bench/security_load.js "$node_dir/"
work=$(mktemp -d "${BENCH_DATA_PARENT:-$PWD/bench}/secdata.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/ca" >/dev/null
start() { # start NAME ARGS...: sets port
    local name=$1
    shift
    ANNAL_DEFAULT_ADMIN_PASSWORD=bench-Admin-1 "$ANNAL" --data "$work/$name" serve --listen 127.0.0.1:0 "$@" 2>"$work/$name.log" </dev/null >/dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/$name.log")
        [ -n "$port" ] && return
        sleep 0.1
    done
    echo "server $name did not start: $(cat "$work/$name.log")" >&2
    exit 1
}
start insecure --insecure
p_ins=$port
start secure --cert "$work/ca/node.crt" --key "$work/ca/node.key"
p_sec=$port
echo "Bench-User-2" | "$ANNAL" --data "$work/secure" user add bencher >/dev/null
tls="tls=true&tlsCAFile=$work/ca/ca.crt"

results="$work/results.jsonl"
for r in $(seq "$rounds"); do
    for w in read append; do
        for cfg in insecure secure-admin secure-user; do
            case $cfg in
            insecure) url="esdb://127.0.0.1:$p_ins?tls=false" u="" pw="" ;;
            secure-admin) url="esdb://127.0.0.1:$p_sec?$tls" u=admin pw=bench-Admin-1 ;;
            secure-user) url="esdb://127.0.0.1:$p_sec?$tls" u=bencher pw=Bench-User-2 ;;
            esac
            line=$(NODE_NO_WARNINGS=1 node "$node_dir/security_load.js" "$url" "$w" "$seconds" "$clients" "$u" "$pw")
            echo "{\"round\":$r,\"config\":\"$cfg\",${line#\{}" | tee -a "$results" >&2
        done
    done
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const med = (a) => { a = a.slice().sort((x, y) => x - y); return a[Math.floor(a.length / 2)]; };
console.log("| workload | insecure | secure, admin | ratio | secure, user (ACL) | ratio | target |");
console.log("|---|---:|---:|---:|---:|---:|---|");
for (const w of ["read", "append"]) {
  const m = (c) => med(rows.filter((r) => r.workload === w && r.config === c).map((r) => r.calls_per_s));
  const i = m("insecure"), a = m("secure-admin"), u = m("secure-user");
  const pct = (x) => `${Math.round((100 * x) / i)}%`;
  console.log(`| ${w} | ${i.toFixed(0)}/s | ${a.toFixed(0)}/s | ${pct(a)} | ${u.toFixed(0)}/s | ${pct(u)} | >= 90%: ${u / i >= 0.9 ? "met" : "missed"} |`);
}' "$results"
