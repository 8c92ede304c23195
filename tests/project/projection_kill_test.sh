#!/usr/bin/env bash
# projection_kill_test.sh -- SIGKILL the projector many times while it applies batches;
# after it finishes, its read model (SQL counters that double on a repeated event, Lua
# state per order, one row per event) must equal a model built from scratch in one go.
# The checkpoint commits with the changes, so no kill can lose or repeat an event.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

EVENTS=${KILL_EVENTS:-20000}
ROUNDS=${KILL_ROUNDS:-30}
gen_orders "$EVENTS" 300 >"$tmp/events.jsonl"
a import --no-sync "$tmp/events.jsonl" >/dev/null || { bad "import"; finish; }

cat >"$tmp/totals.proj" <<'P'
source $all
batch 100

[schema]
CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, items INTEGER NOT NULL, amount INTEGER NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (position INTEGER NOT NULL, type TEXT NOT NULL);

[on ItemAdded]
INSERT INTO totals (id, items, amount, n) VALUES (:stream_id, :data.qty, :data.qty * :data.price, 1)
ON CONFLICT (id) DO UPDATE SET items = items + excluded.items, amount = amount + excluded.amount, n = n + 1;

[on ItemRemoved]
UPDATE totals SET items = items - :data.qty, amount = amount - :data.qty * :data.price, n = n + 1
WHERE id = :stream_id

[on *]
INSERT INTO seen (position, type) VALUES (:position, :type)

[lua]
-- Work per event, so that a run lasts long enough to be killed many times.
local spin = 0
on["*"] = function(e) for i = 1, 20000 do spin = spin + i end end

function on.PaymentReceived(e)
  local s = state_get(e.data.order) or { paid = 0, count = 0 }
  s.paid = s.paid + e.data.amount
  s.count = s.count + 1
  state_set(e.data.order, s)
end
P
a projection add "$tmp/totals.proj" --name killed >/dev/null || bad "add killed"
a projection add "$tmp/totals.proj" --name fresh >/dev/null || bad "add fresh"

dump() { # the whole read model of projection $1, in a fixed order
    a query "$1" 'SELECT id, items, amount, n FROM totals ORDER BY id' --tsv
    a query "$1" 'SELECT count(*), count(DISTINCT position), min(position), max(position) FROM seen' --tsv
    a query "$1" "SELECT key, value FROM annal_state ORDER BY key" --tsv
}

head=$(a info --json 2>/dev/null | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
[ -n "$head" ] || head=$EVENTS
mid=0
kills=0
for ((i = 0; i < ROUNDS; i++)); do
    "$ANNAL" --data "$tmp/store" projection run killed >/dev/null 2>"$tmp/run.err" & # not `a`: a function in the background is a subshell, and $! would not be annal
    pid=$!
    # 20..150 ms: most kills land inside a batch transaction
    sleep "0.$(printf '%03d' $((20 + RANDOM % 130)))"
    kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
    wait "$pid" 2>/dev/null
    pos=$(a projection status killed --json | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
    if [ -n "$pos" ] && [ "$pos" -lt "$head" ]; then mid=$((mid + 1)); else break; fi
done
echo "killed the projector $kills times, $mid of them before it had caught up"
if [ "$mid" -ge 1 ]; then ok "kills landed while the projector was working"; else bad "no kill landed mid-way"; fi

a projection run killed --once 2>"$tmp/run.err" || { cat "$tmp/run.err"; bad "final run"; }
a projection run fresh --once 2>"$tmp/run2.err" || { cat "$tmp/run2.err"; bad "fresh run"; }
dump killed >"$tmp/killed.tsv"
dump fresh | sed 's/^fresh\t/killed\t/' >"$tmp/fresh.tsv"
if cmp -s "$tmp/killed.tsv" "$tmp/fresh.tsv"; then
    ok "after $kills kills the read model equals one built from scratch"
else
    bad "read models differ after kills"
    diff "$tmp/killed.tsv" "$tmp/fresh.tsv" | head -20 >&2
fi
seen=$(a query killed 'SELECT count(*) FROM seen' --tsv | tail -n 1)
expect_eq "every event applied exactly once" "$seen" "$EVENTS"
distinct=$(a query killed 'SELECT count(DISTINCT position) FROM seen' --tsv | tail -n 1)
expect_eq "no event applied twice" "$distinct" "$EVENTS"
a projection status killed --json >"$tmp/st.json"
expect_grep "status: caught up, nothing failed" "\"position\":$head,\"events\":$EVENTS,\"lag_events\":0" "$tmp/st.json"
finish
