#!/usr/bin/env bash
# backup_bench.sh -- `annal backup` of a large store beside `cp -r` of the same directory
# (with and without a sync after it: a backup is durable, cp -r alone is not), the index
# copied vs rebuilt vs left out, an incremental backup after 1% more events, and
# appenders' throughput with and without backups running beside them.
# usage: bench/backup_bench.sh [EVENTS (default 10000000)] [ROUNDS (default 3)]
#        (ANNAL=build/annal, APPENDERS=build/bench/annal_backup_appenders; a build with
#        -DANNAL_BUILD_BENCH=ON makes the latter; RATE=MB/s of the throttled backups, 100)
# Peers run in interleaved rounds, the page cache dropped before each (when root);
# figures are medians. bench/RESULTS.md records a run ("Backup" section).
set -euo pipefail
N=${1:-10000000}
ROUNDS=${2:-3}
ANNAL=${ANNAL:-build/annal}
APPENDERS=${APPENDERS:-build/bench/annal_backup_appenders}
RATE=${RATE:-100}
W=$(mktemp -d "${TMPDIR:-/tmp}/backup_bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
S="$W/src"
gen() { # $1 events, $2 stream prefix: 100 events per stream, ~200 B of data each
    python3 -c "
import sys
pad = 'x' * 160
w = sys.stdout.write
for i in range($1):
    w('{\"stream\":\"$2-%d\",\"type\":\"Tick\",\"data\":{\"i\":%d,\"p\":\"%s\"}}\n' % (i // 100, i, pad))"
}
cold() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# seconds taken by "$@" (output dropped), after dropping the page cache
t() { cold; local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print('%.3f' % ($e - $s))"; }
cp_sync() { cp -r "$1" "$2" && sync -f "$2"; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
med() { python3 -c "import statistics, sys; print('%.3f' % statistics.median(map(float, sys.argv[1:])))" ${T[$1]}; }

gen "$N" s | "$ANNAL" --data "$S" import --no-sync >/dev/null
sync
echo "store: $N events, $(du -sh "$S" | cut -f1) ($(du -sh "$S/log" | cut -f1) log, $(du -sh "$S/index" | cut -f1) index)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (shared with other jobs: noisy)"
for r in $(seq "$ROUNDS"); do
    rm -rf "$W"/cp "$W"/cps "$W"/b "$W"/br "$W"/bn
    add cp "$(t cp -r "$S" "$W/cp")"
    add cps "$(t cp_sync "$S" "$W/cps")"
    add copied "$(t "$ANNAL" --data "$S" backup "$W/b")"
    add rebuilt "$(t "$ANNAL" --data "$S" backup "$W/br" --rebuild-index)"
    add noindex "$(t "$ANNAL" --data "$S" backup "$W/bn" --no-index)"
    add rebuild_after "$(t "$ANNAL" --data "$W/bn" rebuild-index)"
    echo "round $r: cp -r ${T[cp]##* } s, cp -r + sync ${T[cps]##* } s, backup ${T[copied]##* } s," \
        "--rebuild-index ${T[rebuilt]##* } s, --no-index ${T[noindex]##* } s" \
        "(+ rebuild-index ${T[rebuild_after]##* } s)"
done
grep -q "index copied" <("$ANNAL" --data "$S" backup "$W/check") || echo "note: the index was not copied"
rm -rf "$W/check"
"$ANNAL" --data "$W/b" verify >/dev/null || { echo "the backup does not verify" >&2; exit 1; }
python3 - "$(med cp)" "$(med cps)" "$(med copied)" "$(med rebuilt)" "$(med noindex)" "$(med rebuild_after)" <<'P'
import sys
cp, cps, copied, rebuilt, noindex, after = map(float, sys.argv[1:])
print("medians: cp -r %.2f s, cp -r + sync %.2f s" % (cp, cps))
for name, v in (("backup (index copied)", copied), ("backup --rebuild-index", rebuilt),
                ("backup --no-index", noindex)):
    print("  %-24s %.2f s: %.2fx the speed of cp -r, %.2fx of cp -r + sync" % (name, v, cp / v, cps / v))
print("  rebuild-index of a --no-index copy (the cost deferred to its first open): %.2f s" % after)
P

# ---- incremental after 1% more events (the store is closed: import writes it)
for r in $(seq "$ROUNDS"); do
    gen $((N / 100)) "more$r" | "$ANNAL" --data "$S" import --no-sync >/dev/null
    add incr "$(t "$ANNAL" --data "$S" backup "$W/b")"
done
"$ANNAL" --data "$W/b" verify >/dev/null || { echo "the incremental backup does not verify" >&2; exit 1; }
echo "incremental backup after 1% more events: median $(med incr) s ($(python3 -c "print('%.0f' % (100 * $(med incr) / $(med copied)))")% of a full one)"

# ---- appenders, alone and beside backups (unthrottled, then --rate RATE)
if [ -x "$APPENDERS" ]; then
    for R in "" "--rate $RATE"; do
        echo "appenders (16 threads, batches of 10) alone and beside back-to-back backups ${R:-(no limit)}:"
        "$APPENDERS" --dir "$S" --rounds 5 --seconds 5 \
            --backup "rm -rf '$W/ab' && '$ANNAL' --data '$S' backup '$W/ab' $R >/dev/null" | tail -1
    done
    echo "appenders alone and beside back-to-back cp -r + sync, for reference:"
    "$APPENDERS" --dir "$S" --rounds 5 --seconds 5 \
        --backup "rm -rf '$W/ab' && cp -r '$S' '$W/ab' && sync -f '$W/ab'" | tail -1
else
    echo "(no $APPENDERS: configure with -DANNAL_BUILD_BENCH=ON for the appenders' figures)"
fi
