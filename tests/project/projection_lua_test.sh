#!/usr/bin/env bash
# projection_lua_test.sh -- Lua that never ends, through the `annal` command: `add` does
# not run a file's chunk when parsing it (and stops it at open within --lua-budget);
# `run` fails an event whose handler loops, naming the event and the line; SIGTERM stops
# a projector whose handler loops, without failing the projection.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

a append acc-1 Dep '{}' >/dev/null || bad "append"
a append acc-1 Loop '{}' >/dev/null || bad "append"

# ---- a chunk that loops at the top: stopped at open, within the budget
printf 'source $all\n[lua]\nwhile true do end\n' >"$tmp/top.proj"
start=$SECONDS
if timeout 30 "$ANNAL" --data "$tmp/store" projection add "$tmp/top.proj" --lua-budget 300 >"$tmp/out" 2>&1; then
    bad "a chunk that never ends was added"
else
    expect_grep "add: the chunk stopped at its line" "top\.proj:3: Lua ran longer than its budget of 300 ms" "$tmp/out"
fi
[ $((SECONDS - start)) -lt 20 ] && ok "add returned" || bad "add hung"

# ---- a handler that loops: registered at once (nothing runs at add)
cat >"$tmp/loop.proj" <<'P'
source $ce-acc
[schema]
CREATE TABLE n (p INTEGER);
[lua]
function on.Dep(e) sql('INSERT INTO n VALUES (?)', e.position) end
function on.Loop(e)
  local i = 0
  while true do i = i + 1 end
end
P
timeout 30 "$ANNAL" --data "$tmp/store" projection add "$tmp/loop.proj" >"$tmp/out" 2>&1 ||
    bad "add of a file whose handler loops: $(cat "$tmp/out")"

# ---- SIGTERM stops a projector that is inside a handler that loops
"$ANNAL" --data "$tmp/store" projection run loop --lua-budget 600000 >"$tmp/run.out" 2>&1 &
pid=$!
sleep 1
kill -TERM "$pid"
for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    bad "SIGTERM did not stop the projector within 5 s"
    kill -9 "$pid"
fi
wait "$pid"
expect_eq "the projector stopped on SIGTERM with status 0" "$?" "0"
a projection status loop --json >"$tmp/st.json"
expect_grep "interrupted: the batch rolled back, nothing failed" '"position":0,' "$tmp/st.json"
if grep -q '"error"' "$tmp/st.json"; then bad "an error was recorded: $(cat "$tmp/st.json")"; else ok "no error recorded"; fi

# ---- the budget fails the event, with the event and the line
a projection run loop --once --lua-budget 300 >"$tmp/run.out" 2>&1
expect_eq "run --once exits 6 (failed)" "$?" "6"
a projection status loop --json >"$tmp/st.json"
expect_grep "status names the event" '"error_position":1,"error_event":"acc-1@1 Loop ' "$tmp/st.json"
expect_grep "status names the line" 'loop\.proj:8: Lua ran longer than its budget of 300 ms' "$tmp/st.json"
got=$(a query loop 'SELECT p FROM n' --tsv | tail -n 1)
expect_eq "the event before it applied" "$got" "0"
finish
