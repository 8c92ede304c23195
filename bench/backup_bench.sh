#!/usr/bin/env bash
# backup_bench.sh -- `annal backup` of a large store beside `cp -r` of the same directory,
# an incremental backup after 1% more events, and appenders' throughput during a backup.
# usage: bench/backup_bench.sh [EVENTS (default 1000000)] [ANNAL binary]
# Figures go to stdout; bench/RESULTS.md records a run ("Backup" section).
set -euo pipefail
N=${1:-1000000}
ANNAL=${2:-${ANNAL:-build/annal}}
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
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; python3 -c "print('%.2f' % ($(date +%s.%N) - $s))"; }
gen "$N" s | "$ANNAL" --data "$S" import --no-sync >/dev/null
sync
echo "store: $N events, $(du -sh "$S" | cut -f1) ($(du -sh "$S/log" | cut -f1) log)"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
echo "cp -r:                   $(t cp -r "$S" "$W/cp") s"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
echo "backup (index rebuilt):  $(t "$ANNAL" --data "$S" backup "$W/b") s"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
echo "backup --no-index:       $(t "$ANNAL" --data "$S" backup "$W/bn" --no-index) s"
echo "rebuild-index of a copy: $(t "$ANNAL" --data "$W/cp" rebuild-index) s  (the cost of the index left out)"
if command -v mdb_copy >/dev/null; then
    echo "mdb_copy of the index:   $(t mdb_copy "$S/index" "$W/mdbcopy") s  (LMDB's copy, the alternative)"
fi
gen $((N / 100)) more | "$ANNAL" --data "$S" import --no-sync >/dev/null
echo "incremental after 1%:    $(t "$ANNAL" --data "$S" backup "$W/b") s"
# appenders: 4 importers of 20k events each, alone and beside a full backup loop
app() { for k in 1 2 3 4; do gen 20000 "a$1-$k" | "$ANNAL" --data "$S" --wait 60000 import >/dev/null & done; wait; }
s0=$(date +%s.%N); app x; s1=$(date +%s.%N)
( while :; do rm -rf "$W/b2"; "$ANNAL" --data "$S" backup "$W/b2" >/dev/null; done ) & BL=$!
s2=$(date +%s.%N); app y; s3=$(date +%s.%N); kill $BL; wait $BL 2>/dev/null || true
python3 -c "
a = 80000 / ($s1 - $s0); b = 80000 / ($s3 - $s2)
print('appends alone: %.0f ev/s; during backups: %.0f ev/s (%.0f%%)' % (a, b, 100 * b / a))"
