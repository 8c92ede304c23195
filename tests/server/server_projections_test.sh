#!/usr/bin/env bash
# annal serve runs the store's registered projections itself (docs/projections.md):
# - a projection registered before the start is caught up, and events appended through
#   the server (the CLI over its socket) reach its read model; status shows it running
#   with the server's pid, and `annal projection run` refuses it (one projector each);
# - one registered while the server runs starts; pause stops it, resume goes on; remove
#   stops its thread;
# - a Lua handler that raises is reported (status, log line) and the server stays up;
# - kill -9 of the server mid-projection, then a restart: every event once in the model;
# - SIGTERM interrupts a Lua handler that loops and stops cleanly, nothing marked failed.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_TEST_TMP:=/tmp}"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok ($SECONDS s): $*"; }
unset ANNAL_SERVER || true

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/server_proj.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
store="$work/store"
log="$work/server.log"
a() { "$ANNAL" --data "$store" "$@"; }

start_server() { # start_server [ARGS...]: sets server_pid; the log accumulates over restarts
    touch "$log"
    local before
    before=$(grep -c "local socket" "$log" || true)
    "$ANNAL" --data "$store" serve --insecure --listen 127.0.0.1:0 "$@" 2>>"$log" &
    server_pid=$!
    for _ in $(seq 200); do
        [ "$(grep -c "local socket" "$log" || true)" -gt "$before" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || fail "server died: $(tail -5 "$log")"
        sleep 0.05
    done
    fail "server did not start: $(tail -5 "$log")"
}
term_server() { # SIGTERM, then the exit code in rc; fails if the server is not gone in 10 s
    kill -TERM "$server_pid"
    for _ in $(seq 200); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$server_pid" 2>/dev/null && fail "the server did not stop within 10 s of SIGTERM: $(tail -5 "$log")"
    rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
}
head_pos() { a info --json | sed -n 's/.*"events":\([0-9]*\).*/\1/p'; }
field() { # field NAME KEY: a number from projection status --json
    a projection status "$1" --json | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}
state() { a projection status "$1" --json | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p'; }
q() { a query "$1" "$2" --tsv | tail -n 1; }
wait_for() { # wait_for WHAT CMD...: up to 10 s
    local what=$1
    shift
    for _ in $(seq 200); do
        "$@" && return 0
        sleep 0.05
    done
    fail "$what"
}

pwait() { # pwait NAME POSITION [MS]: the read model may not exist yet when the thread starts
    local until=$(($(date +%s) + ${3:-10000} / 1000))
    while [ "$(date +%s)" -le "$until" ]; do
        a projection wait "$1" "$2" --timeout 1000 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Counts per type and every position, with no key that would hide a repeat.
cat >"$work/seen.proj" <<'P'
source $all
batch 50
[schema]
CREATE TABLE IF NOT EXISTS seen (position INTEGER NOT NULL, type TEXT NOT NULL);
[on *]
INSERT INTO seen (position, type) VALUES (:position, :type)
P

# ---- registered before the start: caught up by the server
for i in $(seq 1 30); do echo "{\"stream\":\"s-$((i % 3))\",\"type\":\"Early\",\"data\":{\"i\":$i}}"; done >"$work/early.jsonl"
a import "$work/early.jsonl" >/dev/null
a projection add "$work/seen.proj" --name first >/dev/null
start_server
pwait first 29 10000 || fail "the server did not catch up the projection registered before it"
[ "$(q first 'SELECT count(*), count(DISTINCT position) FROM seen')" = "30	30" ] || fail "caught up: $(q first 'SELECT count(*), count(DISTINCT position) FROM seen')"
ok "a projection registered before the start is caught up by the server"
grep -q "projection first: running" "$log" || fail "no log line for the start: $(tail -5 "$log")"
[ "$(state first)" = running ] || fail "state $(state first)"
[ "$(field first projector_pid)" = "$server_pid" ] || fail "projector pid $(field first projector_pid), server $server_pid"
ok "status: running, held by the server's process"

# ---- appends through the server reach the read model
out=$(a append orders Placed '{"n":1}') || fail "append through the server"
pos=$(echo "$out" | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
[ -n "$pos" ] || fail "append printed no position: $out"
pwait first "$pos" 10000 || fail "an append through the server did not reach the model"
[ "$(q first "SELECT type FROM seen WHERE position = $pos")" = Placed ] || fail "the appended event in the model"
ok "an event appended through the server's socket reaches the read model"

# ---- one projector per projection
rc=0
a projection run first --once 2>"$work/run.err" >/dev/null || rc=$?
[ "$rc" -eq 5 ] || fail "projection run beside the server: exit $rc ($(cat "$work/run.err"))"
grep -q "already run by process $server_pid" "$work/run.err" || fail "refusal: $(cat "$work/run.err")"
grep -q "annal serve" "$work/run.err" || fail "refusal names no server: $(cat "$work/run.err")"
ok "projection run refuses a projection the server runs"

# ---- registered while the server runs: it starts
a projection add "$work/seen.proj" --name second >/dev/null
h=$(head_pos)
pwait second $((h - 1)) 10000 || fail "a projection added while the server runs did not start: $(tail -5 "$log")"
[ "$(q second 'SELECT count(*) FROM seen')" = "$h" ] || fail "second has $(q second 'SELECT count(*) FROM seen') of $h"
[ "$(field second projector_pid)" = "$server_pid" ] || fail "second not held by the server"
ok "a projection registered while the server runs starts"

# ---- pause stops it, resume goes on
a projection pause second >/dev/null
sleep 0.3 # a batch begun before the pause may still commit
a append orders Paused '{}' >/dev/null
sleep 0.5
[ "$(q second "SELECT count(*) FROM seen WHERE type = 'Paused'")" = 0 ] || fail "a paused projection applied an event"
[ "$(state second)" = paused ] || fail "paused state: $(state second)"
a projection resume second >/dev/null
pwait second $(($(head_pos) - 1)) 10000 || fail "resume"
[ "$(q second "SELECT count(*) FROM seen WHERE type = 'Paused'")" = 1 ] || fail "resumed: not applied once"
ok "pause stops a projection the server runs, resume goes on"

# ---- KurrentDB's clients see the registered projections and disable/enable them
if command -v node >/dev/null && command -v npm >/dev/null &&
    bash "${ANNAL_SRC:?}/tests/e2e/install.sh" "${ANNAL_BUILD:?}/e2e-node" >/dev/null 2>&1; then
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    export NODE_PATH="$ANNAL_BUILD/e2e-node/node_modules"
    timeout 60 node -e '
const assert = require("node:assert/strict");
const { KurrentDBClient } = require("@kurrent/kurrentdb-client");
const c = KurrentDBClient.connectionString(`kurrentdb://127.0.0.1:${process.argv[1]}?tls=false`);
(async () => {
  const st = await c.getProjectionStatus("first");
  assert.equal(st.projectionStatus, "Running");
  assert.equal(st.eventsProcessedAfterRestart, BigInt(process.argv[2]));
  assert.equal(st.position, `C:${process.argv[2]}/P:${process.argv[2]}`);
  const names = (await c.listProjections()).map((p) => p.name);
  assert.ok(names.includes("first") && names.includes("second") && names.includes("$by_category"), names.join());
  await c.disableProjection("first");
  assert.equal((await c.getProjectionStatus("first")).projectionStatus, "Stopped");
  console.log("disabled");
})().then(() => c.dispose(), (e) => { console.error(e); process.exit(1); });
' "$port" "$(field first events)" >"$work/node.out" 2>&1 || fail "node client: $(cat "$work/node.out")"
    [ "$(state first)" = paused ] || fail "disabled by a client, the projection is $(state first)"
    a append orders WhileDisabled '{}' >/dev/null
    sleep 0.5
    [ "$(q first "SELECT count(*) FROM seen WHERE type = 'WhileDisabled'")" = 0 ] || fail "a disabled projection applied an event"
    timeout 60 node -e '
const { KurrentDBClient } = require("@kurrent/kurrentdb-client");
const c = KurrentDBClient.connectionString(`kurrentdb://127.0.0.1:${process.argv[1]}?tls=false`);
c.enableProjection("first").then(() => c.dispose(), (e) => { console.error(e); process.exit(1); });
' "$port" >"$work/node.out" 2>&1 || fail "node enable: $(cat "$work/node.out")"
    pwait first $(($(head_pos) - 1)) 10000 || fail "enabled by a client, the projection did not go on"
    [ "$(q first "SELECT count(*) FROM seen WHERE type = 'WhileDisabled'")" = 1 ] || fail "enabled: not applied once"
    ok "a KurrentDB client lists the registered projections, disables and enables one"
else
    echo "skipped: the KurrentDB client part (node and npm are needed)"
fi

# ---- remove: the server stops its thread
a projection remove second >/dev/null
wait_for "the server did not stop a removed projection" grep -q "projection second: stopped" "$log"
if grep "projection second: " "$log" | grep -q "error"; then fail "removing logged an error: $(grep "projection second" "$log")"; fi
ok "remove stops the projection in the server"

# ---- rebuild beside the server: its projector switches over to the new model
a projection rebuild first >"$work/rb.out" 2>&1 || fail "rebuild beside the server: $(cat "$work/rb.out")"
out=$(a append orders Rebuilt '{}') || fail "append after the rebuild"
pos=$(echo "$out" | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
pwait first "$pos" 10000 || fail "the server's projector did not go on after the rebuild"
[ "$(q first 'SELECT count(*), count(DISTINCT position) FROM seen')" = "$((pos + 1))	$((pos + 1))" ] ||
    fail "rebuilt model: $(q first 'SELECT count(*), count(DISTINCT position) FROM seen'), want $((pos + 1))"
[ "$(field first projector_pid)" = "$server_pid" ] || fail "after the rebuild the projector is $(field first projector_pid)"
ok "rebuild beside the server: the server's projector goes on with the new model"

# ---- a projection that emits appends through the server's store handle
cat >"$work/emit.proj" <<'P'
source $all
emits yes
[lua]
function on.Placed(e)
  emit("derived-" .. e.stream, "Derived", { from = e.position })
end
P
a projection add "$work/emit.proj" --name emitter >/dev/null
pwait emitter $(($(head_pos) - 1)) 10000 || fail "the emitting projection did not run: $(tail -5 "$log")"
[ "$(a read --json derived-orders | grep -c '"type":"Derived"')" = 1 ] || fail "emitted: $(a read --json derived-orders)"
ok "a projection that emits runs in the server and its event is stored"
a projection remove emitter >/dev/null

# ---- a Lua handler that raises: reported, the server stays up
cat >"$work/boom.proj" <<'P'
source $all
[schema]
CREATE TABLE IF NOT EXISTS n (k INTEGER);
[lua]
function on.Boom(e)
  error("boom at " .. e.stream)
end
P
a projection add "$work/boom.proj" --name boom >/dev/null
a append bad-1 Boom '{}' >/dev/null
boom_failed() { [ "$(state boom)" = failed ]; }
wait_for "the failing projection is not reported failed" boom_failed
st=$(a projection status boom --json || true) # exits 6: failed
echo "$st" | grep -q 'boom.proj:6: boom at bad-1' || fail "status error: $st"
grep -q "projection boom stopped at position .*boom at bad-1" "$log" || fail "no log line for the failure: $(tail -5 "$log")"
kill -0 "$server_pid" || fail "the server died with the failing projection"
out=$(a append orders After '{}') || fail "append after the failure"
pos=$(echo "$out" | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
pwait first "$pos" 10000 || fail "the other projection stopped with the failing one"
ok "a failing Lua projection is reported; the server and the other projections go on"
a projection remove boom >/dev/null

# ---- kill -9 mid-projection, restart: exactly once
term_server
[ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc"
cat >"$work/slow.proj" <<'P'
source $all
batch 20
[schema]
CREATE TABLE IF NOT EXISTS seen (position INTEGER NOT NULL, type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS total (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO total VALUES (1, 0);
[on *]
INSERT INTO seen (position, type) VALUES (:position, :type);
UPDATE total SET n = n + 1 WHERE k = 1
[lua]
-- work per event, so that kills land while the server projects
local spin = 0
on["*"] = function(e) for i = 1, 60000 do spin = spin + i end end
P
for i in $(seq 1 2000); do echo "{\"stream\":\"k-$((i % 50))\",\"type\":\"K\",\"data\":{}}"; done >"$work/kill.jsonl"
a import --no-sync "$work/kill.jsonl" >/dev/null
a projection add "$work/slow.proj" --name slow >/dev/null
total=$(head_pos)
kills=0
for round in 1 2 3 4; do
    start_server
    sleep "0.$(printf "%03d" $((200 + RANDOM % 300)))"
    kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    p=$(field slow position)
    if [ -n "$p" ] && [ "$p" -lt "$total" ]; then kills=$((kills + 1)); else break; fi
done
[ "$kills" -ge 1 ] || fail "no kill landed before the projection had caught up"
start_server --lua-budget 60000 # the loop below must outlast the SIGTERM, not its budget
pwait slow $((total - 1)) 60000 || fail "slow did not catch up after the restarts"
[ "$(q slow 'SELECT count(*), count(DISTINCT position) FROM seen')" = "$total	$total" ] ||
    fail "after $kills kills: $(q slow 'SELECT count(*), count(DISTINCT position) FROM seen') rows, want $total	$total"
[ "$(q slow 'SELECT n FROM total')" = "$total" ] || fail "counter $(q slow 'SELECT n FROM total'), want $total"
[ "$(field slow events)" = "$total" ] || fail "status events $(field slow events), want $total"
ok "kill -9 of the server $kills times mid-projection: every event applied exactly once"
a projection remove slow >/dev/null

# ---- SIGTERM interrupts a Lua handler that loops, stops cleanly, marks nothing failed
cat >"$work/loop.proj" <<'P'
source $all
[schema]
CREATE TABLE IF NOT EXISTS n (k INTEGER);
[lua]
function on.Loop(e)
  local i = 0
  while true do i = i + 1 end
end
P
a projection add "$work/loop.proj" --name loop >/dev/null
a append spin Loop '{}' >/dev/null
wait_for "the server did not start the loop projection" grep -q "projection loop: running" "$log"
sleep 1 # inside the handler now (its budget is 5 s)
t0=$(date +%s%N)
term_server
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc: $(tail -5 "$log")"
[ "$ms" -lt 3000 ] || fail "SIGTERM took $ms ms: the Lua handler was not interrupted"
grep -q "projection loop: stopped" "$log" || fail "no stop line: $(tail -5 "$log")"
a projection status loop --json >"$work/st.json"
grep -q '"state":"stopped"' "$work/st.json" || fail "after SIGTERM: $(cat "$work/st.json")"
grep -q '"error"' "$work/st.json" && fail "an error was recorded: $(cat "$work/st.json")"
[ "$(state first)" = stopped ] || fail "first after SIGTERM: $(state first)"
ok "SIGTERM interrupts a looping Lua handler in $ms ms and stops cleanly; nothing failed"
a projection remove loop >/dev/null

# ---- a projection another process runs: the server takes it over once that one stops
"$ANNAL" --data "$store" projection run first >/dev/null 2>"$work/cli_run.err" &
cli_pid=$!
cli_holds() { [ "$(field first projector_pid)" = "$cli_pid" ] && [ "$(state first)" = running ]; }
wait_for "projection run did not take first" cli_holds
start_server --lua-budget 300
# (this start's Lua budget is 300 ms: a handler that loops fails its event with it)
cat >"$work/loop2.proj" <<'P'
source $all
[lua]
function on.Loop2(e)
  while true do end
end
P
a projection add "$work/loop2.proj" --name loop2 >/dev/null
a append spin2 Loop2 '{}' >/dev/null
loop2_failed() { [ "$(state loop2)" = failed ]; }
wait_for "a handler that loops did not fail with the server's --lua-budget" loop2_failed
st=$(a projection status loop2 --json || true)
echo "$st" | grep -q "loop2.proj:4: Lua ran longer than its budget of 300 ms" || fail "budget: $st"
ok "the server's --lua-budget bounds the Lua code of its projections"
wait_for "the server did not report the projection held elsewhere" grep -q "projection first: projection first is already run by process $cli_pid" "$log"
kill -TERM "$cli_pid"
wait "$cli_pid" || fail "projection run exit $?"
server_holds() { [ "$(field first projector_pid)" = "$server_pid" ] && [ "$(state first)" = running ]; }
wait_for "the server did not take first over" server_holds
ok "the server runs a projection once the projector that held it has stopped"
term_server

# ---- without a server, projection run works again
a projection run first --once >/dev/null 2>"$work/run.err" || fail "projection run after the server stopped: $(cat "$work/run.err")"
ok "projection run works once the server has stopped"
# ---- KurrentDB's RunProjections=None: the server leaves them to projection run
: >"$log"
KURRENTDB_RUN_PROJECTIONS=None start_server
grep -q "projections: running those registered" "$log" && fail "RunProjections=None ran projections: $(cat "$log")"
a append orders NoneRun '{}' >/dev/null
a projection run first --once >/dev/null 2>"$work/run.err" || fail "projection run beside a server that runs none: $(cat "$work/run.err")"
[ "$(q first "SELECT count(*) FROM seen WHERE type = 'NoneRun'")" = 1 ] || fail "projection run beside the server did not apply"
term_server
ok "with KURRENTDB_RUN_PROJECTIONS=None the server runs none and projection run works beside it"
echo "server_projections_test: all passed"
