#!/usr/bin/env bash
# `annal serve` under load (issues 15 and 17), side by side in one run, rounds interleaved,
# medians, ratios. Measured through the C load generator (bench/server_load.c, gRPC core,
# annal's own client) and the official Node.js client (bench/server_load.js), against:
#   annal in-process  bench's annal system (annal_bench), the same workload without a server
#   PostgreSQL        bench's postgres system over loopback TCP (64 connections for c64)
# Workloads: single-event appends from 1 and 64 clients (and, for scale, 64 clients
# calling ServerFeatures: a call without the store), BatchAppend of 100 events from one
# client, reads of stream-hot (100,000 events) and of $all (200,000), 100 live $all
# subscribers under 10,000 appends/s (ack-to-delivery latency), and issue 17's calls/s
# with TLS + authentication + ACL checks against --insecure (16 clients, reads of 10
# events and single-event appends; the user is named in the ACLs of the streams).
# Usage: bench/server_run.sh [--quick] [--rounds N] [--seconds S] [--no-node] [--no-pg]
#        [--only serve|security] [--results FILE] [--no-install]
# Prints a Markdown table on stdout, progress on stderr. Data in bench/srvdata.XXXXXX
# (not tmpfs: fsync must cost what it costs), deleted at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
rounds=3 seconds=5 node=1 pg=1 install=1 results_out="" only=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) rounds=1 seconds=2 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --no-node) node=0 ;;
    --no-pg) pg=0 ;;
    --results) results_out=$2; shift ;;
    --no-install) install=0 ;;
    --only) only=$2; shift ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done
log() { echo "server_run: $*" >&2; }

# ---- packages
pkgs="cmake gcc make pkg-config python3 liblmdb-dev libjansson-dev libsqlite3-dev libpq-dev"
pkgs="$pkgs libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libargon2-dev libssl-dev"
[ "$pg" = 1 ] && pkgs="$pkgs postgresql"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ "$node" = 1 ] && ! command -v npm >/dev/null && missing="$missing nodejs npm"
if [ -n "$missing" ]; then
    if [ "$install" = 1 ] && [ "$(id -u)" = 0 ]; then
        log "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        # shellcheck disable=SC2086
        apt-get install -y -qq $missing >&2
    else
        log "missing packages:$missing (run as root, or install them)"
        exit 1
    fi
fi

# ---- build (Release, as bench/run)
BUILD=$HERE/build
log "building into $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DANNAL_BUILD_TESTS=OFF \
    -DANNAL_BUILD_BENCH=ON >"$HERE/.srvbuild.log" 2>&1 &&
    nice cmake --build "$BUILD" -j2 --target annal_cli annal_bench annal_server_load \
        >>"$HERE/.srvbuild.log" 2>&1 || { tail -20 "$HERE/.srvbuild.log" >&2; exit 1; }
rm -f "$HERE/.srvbuild.log"
ANNAL=$BUILD/annal
LOAD=$BUILD/bench/annal_server_load
BENCH=$BUILD/bench/annal_bench
NODE_DIR=$BUILD/e2e-node
if [ "$node" = 1 ]; then
    bash "$ROOT/tests/e2e/install.sh" "$NODE_DIR" >&2
    cp "$HERE/server_load.js" "$NODE_DIR/"
fi

# ---- data, servers, PostgreSQL
DATA=$(mktemp -d "${BENCH_DATA_PARENT:-$HERE}/srvdata.XXXXXX")
chmod 755 "$DATA"
case $(df -T "$DATA" | awk 'NR==2 {print $2}') in
tmpfs | ramfs) log "$DATA is on tmpfs: fsync is free there, refusing"; rm -rf "$DATA"; exit 1 ;;
esac
RESULTS=$DATA/results.jsonl
: >"$RESULTS"
pids=()
PGBIN=/usr/lib/postgresql/15/bin
PG_STARTED=0
PG_RUN=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ "$PG_STARTED" = 1 ] && "${PG_RUN[@]}" "$PGBIN/pg_ctl" -D "$DATA/pg/db" -m fast -w stop >/dev/null 2>&1
    [ -n "$results_out" ] && cp "$RESULTS" "$results_out"
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() { # start_server NAME ARGS...: sets port
    local name=$1
    shift
    ANNAL_DEFAULT_ADMIN_PASSWORD=bench-Admin-1 "$ANNAL" --data "$DATA/$name" serve \
        --listen 127.0.0.1:0 "$@" 2>"$DATA/$name.log" </dev/null >/dev/null &
    pids+=($!)
    spid=$!
    for _ in $(seq 200); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$DATA/$name.log" 2>/dev/null || true)
        [ -n "$port" ] && return
        sleep 0.05
    done
    log "server $name did not start: $(cat "$DATA/$name.log")"
    exit 1
}

pg_start() { # as bench/run: initdb, durable settings, loopback TCP only
    mkdir -p "$DATA/pg"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$DATA/pg"
        PG_RUN=(runuser -u postgres --)
    fi
    "${PG_RUN[@]}" "$PGBIN/initdb" -D "$DATA/pg/db" -U bench --auth=trust -E UTF8 \
        --no-instructions >"$DATA/pg/initdb.log" 2>&1 || { cat "$DATA/pg/initdb.log" >&2; exit 1; }
    local p
    for p in $(seq 54330 54500); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break; done
    "${PG_RUN[@]}" tee -a "$DATA/pg/db/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $p
unix_socket_directories = ''
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 512MB
max_connections = 100
EOF
    PG_STARTED=1
    "${PG_RUN[@]}" "$PGBIN/pg_ctl" -D "$DATA/pg/db" -l "$DATA/pg/server.log" -w -t 60 start \
        >/dev/null || { cat "$DATA/pg/server.log" >&2; exit 1; }
    psql -q -X "host=127.0.0.1 port=$p user=bench dbname=postgres" -c "CREATE DATABASE bench" >&2
    PGCONN="host=127.0.0.1 port=$p user=bench dbname=bench"
    log "PostgreSQL on 127.0.0.1:$p"
}
[ "$only" = security ] && pg=0 node=0
if [ "$pg" = 1 ]; then pg_start; fi

"$ANNAL" cert ca --out "$DATA/ca" >/dev/null
"$ANNAL" cert node --ca "$DATA/ca" --out "$DATA/ca" >/dev/null
start_server writes --insecure # appends, and the insecure side of issue 17
W="esdb://127.0.0.1:$port?tls=false" W_pid=$spid
start_server reads --insecure # the read fixture, reads, subscriptions
R="esdb://127.0.0.1:$port?tls=false" R_pid=$spid
start_server secure --cert "$DATA/ca/node.crt" --key "$DATA/ca/node.key"
S_port=$port S_pid=$spid
echo "Bench-User-2" | "$ANNAL" --data "$DATA/secure" user add bencher >/dev/null
# ACLs that name the user, so its calls are checked against lists (through the server's
# local socket, as the admin): stream-hot's own, and the default for the appends' streams.
"$ANNAL" --data "$DATA/secure" append '$settings' update-default-acl \
    '{"$userStreamAcl":{"$r":["bencher","$admins"],"$w":["bencher","$admins"]}}' >/dev/null
"$ANNAL" --data "$DATA/secure" meta stream-hot \
    '{"$acl":{"$r":["bencher","$admins"],"$w":["bencher","$admins"]}}' >/dev/null
tls="tls=true&tlsCAFile=$DATA/ca/ca.crt"
SA="esdb://admin:bench-Admin-1@127.0.0.1:$S_port?$tls"
SU="esdb://bencher:Bench-User-2@127.0.0.1:$S_port?$tls"

log "loading the read fixture (200,000 events, 100,000 in stream-hot)"
"$LOAD" --target "$R" --workload fixture --events 200000 --window 8 >/dev/null
# Issue 17's read calls read 10 events of stream-hot: a small one on both servers.
"$LOAD" --target "$W" --workload fixture --events 2000 --window 4 >/dev/null
"$LOAD" --target "$SA" --workload fixture --events 2000 --window 4 >/dev/null
# The user's first login runs argon2id once; measure the steady state after it.
"$LOAD" --target "$SU" --workload read-calls --seconds 0.2 >/dev/null

# ---- one measurement = one JSON line with "round", "peer" and "bench" added, and with
# CPU_PID set, "server_cpu_s": the CPU time that server process used meanwhile.
cpu_s() { [ -n "${CPU_PID:-}" ] && awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$CPU_PID/stat" || echo 0; }
record() { # record ROUND SYSTEM WORKLOAD COMMAND...
    local r=$1 sys=$2 wl=$3 out cpu0 cpu1
    shift 3
    cpu0=$(cpu_s)
    if out=$("$@" 2>"$DATA/err.txt" | tail -1) && [ -n "$out" ]; then
        cpu1=$(cpu_s)
        out="{\"round\":$r,\"peer\":\"$sys\",\"bench\":\"$wl\",\"server_cpu_s\":$(awk "BEGIN {print $cpu1 - $cpu0}"),${out#\{}"
        echo "$out" >>"$RESULTS"
        log "round $r $(printf '%-13s %-18s' "$wl" "$sys") $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%10.0f events/s  %8.1f calls/s  p50 %.3f p99 %.3f ms" % (d["events_per_s"], d.get("calls_per_s", 0), d.get("p50_ms", 0), d.get("p99_ms", 0)))' "$out")"
    else
        log "round $r $wl $sys FAILED: $(head -5 "$DATA/err.txt")"
    fi
}
inproc() { # inproc WORKLOAD EVENTS: bench's annal system, a fresh store
    "$BENCH" --system annal --workload "$1" --events "$2" --dir "$DATA/inproc-$1" &&
        rm -rf "$DATA/inproc-$1"
}
postgres() { "$BENCH" --system postgres --workload "$1" --events "$2" --dir "$DATA/pgx-$1" --pg "$PGCONN"; }
nodeload() { (cd "$NODE_DIR" && NODE_NO_WARNINGS=1 node server_load.js "$@"); }
reads_in() { "$BENCH" --system "$1" --workload "$2" --events 200000 --dir "$DATA/fixture-$1" ${3:+--pg "$3"}; }

s=$seconds
serve_round() { # serve_round R: issue 15's workloads, every peer
    local r=$1 w rate
    CPU_PID=$W_pid
    record "$r" c-serve append-c1 "$LOAD" --target "$W" --workload append --clients 1 --seconds "$s"
    [ "$node" = 1 ] && record "$r" node-serve append-c1 nodeload "$W" append "$s" 1
    record "$r" in-process append-c1 inproc append-b1 2000
    [ "$pg" = 1 ] && record "$r" postgres append-c1 postgres append-b1 2000

    record "$r" c-serve append-c64 "$LOAD" --target "$W" --workload append --clients 64 --seconds "$s"
    [ "$node" = 1 ] && record "$r" node-serve append-c64 nodeload "$W" append "$s" 64
    record "$r" in-process append-c64 inproc append-c64 20000
    [ "$pg" = 1 ] && record "$r" postgres append-c64 postgres append-c64 10000

    # The same calls without the store: what gRPC alone costs per call (no peers).
    record "$r" c-serve ping-c64 "$LOAD" --target "$W" --workload ping --clients 64 --seconds "$s"

    record "$r" c-serve batch-100 "$LOAD" --target "$W" --workload batch --batch 100 --seconds "$s"
    record "$r" c-serve-w8 batch-100 "$LOAD" --target "$W" --workload batch --batch 100 --window 8 --seconds "$s"
    [ "$node" = 1 ] && record "$r" node-serve batch-100 nodeload "$W" batch "$s" 1
    record "$r" in-process batch-100 inproc append-b100 200000
    [ "$pg" = 1 ] && record "$r" postgres batch-100 postgres append-b100 100000

    CPU_PID=$R_pid
    for w in read-stream read-all; do
        record "$r" c-serve "$w" "$LOAD" --target "$R" --workload "$w" --events 200000 --seconds "$s"
        [ "$node" = 1 ] && record "$r" node-serve "$w" nodeload "$R" "$w" "$s" 1 200000
        record "$r" in-process "$w" reads_in annal "$w"
        [ "$pg" = 1 ] && record "$r" postgres "$w" reads_in postgres "$w" "$PGCONN"
    done

    for rate in 10000 1000; do
        record "$r" c-serve "subscribe-$rate" "$LOAD" --target "$R" --workload subscribe \
            --subs 100 --rate "$rate" --clients 64 --seconds "$s"
    done
    CPU_PID=
}
security_round() { # security_round R: issue 17's pairs, in a different order each round
    local r=$1 w k cfg url
    local cfgs=("insecure $W" "secure-admin $SA" "secure-user $SU")
    for w in read-calls append; do
        for k in 0 1 2; do
            read -r cfg url <<<"${cfgs[$(((k + r) % 3))]}"
            if [ "$cfg" = insecure ]; then CPU_PID=$W_pid; else CPU_PID=$S_pid; fi
            record "$r" "$cfg" "sec-$w" "$LOAD" --target "$url" --workload "$w" --clients 16 --seconds "$s"
        done
    done
    CPU_PID=
}
for r in $(seq "$rounds"); do
    [ "$only" = security ] || serve_round "$r"
    [ "$only" = serve ] || security_round "$r"
done

# ---- the table
python3 - "$RESULTS" "$rounds" <<'EOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(bench, system, key="events_per_s"):
    v = [r[key] for r in rows if r["bench"] == bench and r["peer"] == system and key in r]
    return statistics.median(v) if v else None
def f(x):
    if x is None: return "-"
    return f"{x/1e6:.2f}M" if x >= 1e6 else f"{x/1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"
def ratio(a, b): return f"{a/b:.2f}" if a and b else "-"
print(f"Medians of {sys.argv[2]} rounds, events/s.\n")
serve = any(r["peer"] == "c-serve" for r in rows)
def cpu_us(bench, peer, per="events", key="server_cpu_s"):
    v = [1e6 * r[key] / r[per] for r in rows
         if r["bench"] == bench and r["peer"] == peer and r.get(per) and key in r]
    return f"{statistics.median(v):.1f}" if v else "-"
def cpus(bench, peer):  # server + client CPU per event
    return f"{cpu_us(bench, peer)} + {cpu_us(bench, peer, key='client_cpu_s')}"
if serve: print("| workload | C client → serve | CPU µs/event: server + C client | Node client → serve | annal in-process | PostgreSQL | serve / in-process | serve / PostgreSQL | target |")
if serve: print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
targets = {
    "append-c64": lambda c, i, p: ("≥ 0.70 × in-process and ≥ 5 × PostgreSQL",
                                    c and i and p and c / i >= 0.7 and c / p >= 5),
    "batch-100": lambda c, i, p: ("≥ 150k/s", c and c >= 150000),
    "read-stream": lambda c, i, p: ("≥ 1M/s", c and c >= 1e6),
    "read-all": lambda c, i, p: ("≥ 1M/s", c and c >= 1e6),
}
for b in ["append-c1", "append-c64", "ping-c64", "batch-100", "read-stream", "read-all"] if serve else []:
    c, n, i, p = med(b, "c-serve"), med(b, "node-serve"), med(b, "in-process"), med(b, "postgres")
    t = targets.get(b)
    tt = ""
    if t:
        text, ok = t(c, i, p)
        tt = f"{text}: {'met' if ok else 'missed'}"
    print(f"| {b} | {f(c)} | {cpus(b, 'c-serve')} | {f(n)} | {f(i)} | {f(p)} | {ratio(c, i)} | {ratio(c, p)} | {tt} |")
w8 = med("batch-100", "c-serve-w8")
if w8: print(f"| batch-100, 8 in flight | {f(w8)} | {cpus('batch-100', 'c-serve-w8')} | | | | | | ≥ 150k/s: {'met' if w8 >= 150000 else 'missed'} |")
for rate in (10000, 1000):
    b = f"subscribe-{rate}"
    sub = [r for r in rows if r["bench"] == b]
    if not sub: continue
    p50, p99 = med(b, "c-serve", "p50_ms"), med(b, "c-serve", "p99_ms")
    got = med(b, "c-serve", "events_per_s")
    early = statistics.median([r["early"] / max(1, r["events"] * r["subs"]) for r in sub])
    print(f"\nSubscriptions, 100 live $all subscribers, appends paced to {rate:,}/s ({f(got)}/s reached):"
          f" ack-to-delivery p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 < 5 ms: {'met' if p99 < 5 else 'missed'});"
          f" {100*early:.0f}% of deliveries before the appender had its ack.")
print("\nIssue 17, calls/s through the C client, 16 clients:\n")
print("| workload | insecure | TLS, admin | ratio | TLS, user (ACL) | ratio | target | server CPU µs/call: insecure, admin, user |")
print("|---|---:|---:|---:|---:|---:|---|---|")
for w in ["read-calls", "append"]:
    b = "sec-" + w
    i, a, u = med(b, "insecure", "calls_per_s"), med(b, "secure-admin", "calls_per_s"), med(b, "secure-user", "calls_per_s")
    if not (i and a and u): continue
    cpus = ", ".join(cpu_us(b, p, "calls") for p in ("insecure", "secure-admin", "secure-user"))
    print(f"| {w} | {i:.0f}/s | {a:.0f}/s | {100*a/i:.0f}% | {u:.0f}/s | {100*u/i:.0f}% | ≥ 90%: {'met' if u / i >= 0.9 else 'missed'} | {cpus} |")
errs = sum(r.get("errors", 0) for r in rows)
print(f"\n{len(rows)} measurements, {errs} failed calls.")
EOF
