#!/usr/bin/env bash
# cli_backup_test.sh -- `annal backup` from another process while `annal append`s run:
# the backup prints P, opens read-only, verifies, and holds exactly the source's events
# up to P; a second backup into the same DEST is incremental; `annal backup -` is a tar
# stream that `tar x` + `annal restore` turn into a store; restores to a position and to
# an ISO 8601 time end there and take appends after; --with-projections copies a read
# model consistent with its checkpoint; an interrupted backup is refused.
# '$all' is a literal stream name:
# shellcheck disable=SC2016
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_backup_test.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
S="$T/src"
unset ANNAL_DATA

fail() { echo "FAIL: $*" >&2; exit 1; }
a() { "$ANNAL" --data "$S" "$@"; }
# position of every event, stream, revision, id, data: one line each
dump() { "$ANNAL" --data "$1" read '$all' --json | python3 -c '
import sys, json
for l in sys.stdin:
    e = json.loads(l)
    print(e["position"], e["stream"], e["revision"], e["id"], e["timestamp"], json.dumps(e["data"]), json.dumps(e["metadata"]))
'; }

for i in $(seq 1 50); do a append "order-$((i % 5))" OrderPlaced "{\"customer\":\"c$i\"}" >/dev/null; done

# ---- backup beside appenders in other processes
( for i in $(seq 1 200); do a append "bg-$((i % 7))" Tick "{\"i\":$i}" >/dev/null; done ) &
BG=$!
sleep 0.2
a backup "$T/b" >"$T/out" || fail "backup: $(cat "$T/out")"
P=$(sed -n 's/.*: position \([0-9]*\) .*/\1/p' "$T/out" | head -1)
[ -n "$P" ] || fail "no position printed: $(cat "$T/out")"
grep -q '^full:' "$T/out" || fail "first backup not full: $(cat "$T/out")"
grep -q 'index copied$' "$T/out" || fail "first backup did not copy the index: $(cat "$T/out")"
"$ANNAL" --data "$T/b" verify >/dev/null || fail "verify of the backup"
wait "$BG"
dump "$T/b" >"$T/b.txt"
dump "$S" | awk -v p="$P" '$1 <= p' >"$T/s.txt"
cmp -s "$T/b.txt" "$T/s.txt" || fail "backup differs from the source up to $P: $(diff "$T/b.txt" "$T/s.txt" | head -5)"
[ "$(tail -1 "$T/b.txt" | cut -d' ' -f1)" = "$P" ] || fail "backup does not end at $P"

# ---- the index built in the copy instead, at a limited rate
a backup "$T/br" --rebuild-index --rate 100 >"$T/out" || fail "backup --rebuild-index: $(cat "$T/out")"
grep -q 'index built from the copied log$' "$T/out" || fail "--rebuild-index: $(cat "$T/out")"
"$ANNAL" --data "$T/br" verify >/dev/null || fail "verify of the --rebuild-index backup"
P3=$(sed -n 's/.*: position \([0-9]*\) .*/\1/p' "$T/out" | head -1)
cmp -s <(dump "$T/br") <(dump "$S" | awk -v p="$P3" '$1 <= p') || fail "--rebuild-index backup differs from the source"
if a backup "$T/bx" --rate 0 >/dev/null 2>&1; then fail "--rate 0 accepted"; fi

# ---- incremental
for i in $(seq 1 20); do a append more Tick "{\"i\":$i}" >/dev/null; done
a backup "$T/b" >"$T/out" || fail "incremental backup: $(cat "$T/out")"
grep -q '^incremental:' "$T/out" || fail "second backup not incremental: $(cat "$T/out")"
P2=$(sed -n 's/.*: position \([0-9]*\) .*/\1/p' "$T/out" | head -1)
[ "$P2" -gt "$P" ] || fail "incremental position $P2 <= $P"
"$ANNAL" restore "$T/b" "$T/r" >/dev/null || fail "restore"
cmp -s <(dump "$T/r") <(dump "$S") || fail "restored store differs from the source"
"$ANNAL" --data "$T/r" append after Tick '{}' | grep -q "position $((P2 + 1))" ||
    "$ANNAL" --data "$T/r" read '$all' --json | tail -1 | grep -q "\"position\":$((P2 + 1))" ||
    fail "append after restore not at $((P2 + 1))"

# ---- tar stream
a backup - >"$T/b.tar" 2>"$T/err" || fail "backup -: $(cat "$T/err")"
grep -q "position $P2" "$T/err" || fail "backup - did not report $P2: $(cat "$T/err")"
mkdir "$T/x" && tar -xf "$T/b.tar" -C "$T/x" || fail "tar x"
[ "$(tar -tf "$T/b.tar" | tail -1)" = backup ] || fail "the marker is not the last member"
"$ANNAL" restore "$T/x" "$T/rx" >/dev/null || fail "restore from tar"
cmp -s <(dump "$T/rx") <(dump "$S") || fail "store from the tar stream differs"
# a stream cut short: no marker, refused
head -c 20000 "$T/b.tar" >"$T/cut.tar"
mkdir "$T/xc" && tar -xf "$T/cut.tar" -C "$T/xc" 2>/dev/null || true
set +e
"$ANNAL" restore "$T/xc" "$T/rc" >/dev/null 2>&1
RC=$?
"$ANNAL" --data "$T/xc" read '$all' >/dev/null 2>&1
RC2=$?
set -e
[ "$RC" -ne 0 ] && [ "$RC2" -ne 0 ] || fail "a cut tar stream was restored ($RC) or opened ($RC2)"

# ---- point in time: position, then time
"$ANNAL" restore "$T/b" "$T/p" --to-position 10 >/dev/null || fail "restore --to-position"
[ "$(dump "$T/p" | tail -1 | cut -d' ' -f1)" = 10 ] || fail "--to-position 10 does not end at 10"
# the JSON shows microseconds: ask for the microsecond after event 30's, so that exactly
# the events shown at or before event 30's time are kept
TS=$(dump "$S" | awk '$1 == 30 {print $5}')
T2=$(python3 -c "
import datetime, sys
t = datetime.datetime.strptime('$TS', '%Y-%m-%dT%H:%M:%S.%fZ') + datetime.timedelta(microseconds=1)
print(t.strftime('%Y-%m-%dT%H:%M:%S.%fZ'))")
"$ANNAL" restore "$T/b" "$T/t" --to-time "$T2" >/dev/null || fail "restore --to-time $T2"
LAST=$(dump "$T/t" | tail -1 | cut -d' ' -f1)
WANT=$(dump "$S" | awk -v ts="$TS" '$5 <= ts {p = $1} END {print p}')
[ "$LAST" = "$WANT" ] || fail "--to-time $T2 ends at $LAST, want $WANT"
"$ANNAL" --data "$T/t" verify >/dev/null || fail "verify after --to-time"

# ---- projections
cat >"$T/orders.proj" <<'P'
projection orders
source $ce-order

[schema]
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT);

[on OrderPlaced]
INSERT OR REPLACE INTO orders (id, customer) VALUES (:stream_id, :data.customer)
P
a projection add "$T/orders.proj" >/dev/null || fail "projection add"
a projection run --once || fail "projection run"
a backup "$T/bp" --with-projections >/dev/null || fail "backup --with-projections"
[ -f "$T/bp/projections/orders.proj" ] && [ -f "$T/bp/projections/orders.db" ] || fail "projection files missing"
N=$(python3 -c "import sqlite3; print(sqlite3.connect('$T/bp/projections/orders.db').execute('select count(*) from orders').fetchone()[0])")
[ "$N" = 5 ] || fail "read model in the backup has $N orders, want 5"
"$ANNAL" restore "$T/bp" "$T/rp" >/dev/null || fail "restore with projections"
"$ANNAL" --data "$T/rp" query orders 'select count(*) from orders' | grep -q 5 || fail "query on the restored read model"

# ---- a backup directory with its marker missing (as interrupted) is refused
rm "$T/b/backup"
echo "annal-backup-incomplete 0000000000000001" >"$T/b/backup-incomplete"
set +e
"$ANNAL" restore "$T/b" "$T/r2" >/dev/null 2>&1
RC=$?
"$ANNAL" --data "$T/b" read '$all' >/dev/null 2>&1
RC2=$?
set -e
[ "$RC" -ne 0 ] && [ "$RC2" -ne 0 ] || fail "an interrupted backup was restored ($RC) or opened ($RC2)"
echo "ok"
