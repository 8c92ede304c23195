#!/usr/bin/env bash
# projection_pg_test.sh -- projections into a real PostgreSQL server, started by this test
# on 127.0.0.1 (pglib.sh): the read model in the projection's own schema, queries through
# `annal query` and psql, a failing event and skip, SIGKILL of the projector mid-batch many
# times (the model must equal one built from scratch), and a rebuild into a shadow schema
# while the projector runs.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pglib.sh"
cleanup() {
    kill -9 $(jobs -p) 2>/dev/null
    pg_stop
    rm -rf "$tmp"
}
trap cleanup EXIT

if ! pg_start; then
    bad "PostgreSQL could not be started (needed: Debian's postgresql; scripts/deps.sh)"
    finish
fi
ok "PostgreSQL on 127.0.0.1:$PGPORT_USED"
T="postgresql:$PGCONN"

gen_orders 3000 40 >"$tmp/events.jsonl"
a import --no-sync "$tmp/events.jsonl" >/dev/null || bad "import"

# ---- the examples' customer overview and daily revenue, in PostgreSQL
for p in customer_overview daily_revenue; do
    a projection add "$ANNAL_SRC/examples/projections/$p.proj" --target "$T" >"$tmp/out" 2>&1 ||
        bad "add $p: $(cat "$tmp/out")"
done
a projection run --once 2>"$tmp/err" || bad "run: $(cat "$tmp/err")"
a projection status --json >"$tmp/st.json"
expect_grep "customer_overview caught up" '"name":"customer_overview".*"state":"stopped","position":3000,.*"lag_events":0' "$tmp/st.json"
# The same figures computed by psql from the events themselves (loaded as a table).
psql_q "CREATE TABLE public.ev (line jsonb)" >/dev/null
while IFS= read -r l; do printf '%s\n' "$l"; done <"$tmp/events.jsonl" |
    "$PGBIN/psql" -X -q "$PGCONN" -c "COPY public.ev (line) FROM STDIN WITH (FORMAT text)" ||
    bad "load events into psql"
want=$(psql_q "SELECT line->'data'->>'customer', sum((line->'data'->>'amount')::int) FROM public.ev
               WHERE line->>'type' = 'PaymentReceived' GROUP BY 1 ORDER BY 1" | tr '\t\n' '=;')
got=$(a query customer_overview "SELECT customer, paid FROM customers WHERE paid > 0 ORDER BY customer" --tsv |
    tail -n +2 | tr '\t\n' '=;')
expect_eq "customer overview: payments per customer (joined across streams)" "$got" "$want"
want=$(psql_q "SELECT e.line->'data'->>'customer', sum(CASE WHEN i.line->>'type' = 'ItemAdded' THEN 1 ELSE -1 END
                 * (i.line->'data'->>'qty')::int * (i.line->'data'->>'price')::int)
               FROM public.ev e JOIN public.ev i ON i.line->>'stream' = e.line->>'stream'
               WHERE e.line->>'type' = 'OrderPlaced' AND i.line->>'type' IN ('ItemAdded', 'ItemRemoved')
               GROUP BY 1 ORDER BY 1" | tr '\t\n' '=;')
got=$(a query customer_overview "SELECT customer, ordered FROM customers ORDER BY customer" --tsv |
    tail -n +2 | tr '\t\n' '=;')
expect_eq "customer overview: ordered value per customer (item events joined by order id)" "$got" "$want"
n=$(psql_q "SELECT sum(payments) FROM daily_revenue.daily_revenue")
want=$(psql_q "SELECT count(*) FROM public.ev WHERE line->>'type' = 'PaymentReceived'")
expect_eq "daily revenue readable with psql in the projection's schema" "$n" "$want"

# ---- a failing event stops it; skip goes on
cat >"$tmp/strict.proj" <<'P'
projection strict
source $et-OrderPlaced
[schema]
CREATE TABLE IF NOT EXISTS placed (id TEXT PRIMARY KEY, customer TEXT NOT NULL CHECK (customer <> 'c3'));
[on OrderPlaced]
INSERT INTO placed (id, customer) VALUES (:stream_id, :data.customer)
P
a projection add "$tmp/strict.proj" --target "$T" >/dev/null || bad "add strict"
a projection run strict --once 2>"$tmp/err"
expect_eq "run exits 6 on a failed event" "$?" "6"
a projection status strict --json >"$tmp/st.json"
expect_grep "failure shown with the event" '"state":"failed".*"error":".*violates check constraint.*"error_event":"order-3@0 OrderPlaced' "$tmp/st.json"
skips=0
until a projection run strict --once 2>/dev/null; do
    a projection skip strict >/dev/null || { bad "skip"; break; }
    skips=$((skips + 1))
    [ $skips -lt 5 ] || break
done
expect_eq "skipped the three orders of c3, every other order applied" \
    "$skips,$(psql_q 'SELECT count(*) FROM strict.placed')" "3,37"

# ---- SIGKILL mid-batch, many times
cat >"$tmp/totals.proj" <<'P'
source $all
batch 50
[schema]
CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, items BIGINT NOT NULL, amount BIGINT NOT NULL, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (position BIGINT NOT NULL);
[on ItemAdded]
INSERT INTO totals (id, items, amount, n) VALUES (:stream_id, :data.qty, :data.qty * :data.price, 1)
ON CONFLICT (id) DO UPDATE SET items = totals.items + excluded.items, amount = totals.amount + excluded.amount, n = totals.n + 1
[on *]
INSERT INTO seen (position) VALUES (:position)
[lua]
local spin = 0
on["*"] = function(e) for i = 1, 20000 do spin = spin + i end end
P
a projection add "$tmp/totals.proj" --name killed --target "$T" >/dev/null || bad "add killed"
a projection add "$tmp/totals.proj" --name fresh --target "$T" >/dev/null || bad "add fresh"
mid=0
for ((i = 0; i < 15; i++)); do
    "$ANNAL" --data "$tmp/store" projection run killed >/dev/null 2>&1 & # not `a`: $! must be annal itself
    pid=$!
    sleep "0.$(printf '%03d' $((30 + RANDOM % 120)))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pos=$(a projection status killed --json | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
    if [ -n "$pos" ] && [ "$pos" -lt 3000 ]; then mid=$((mid + 1)); else break; fi
done
echo "$mid kills before the projector caught up"
[ "$mid" -ge 1 ] && ok "kills landed mid-way" || bad "no kill landed mid-way"
a projection run killed --once 2>"$tmp/err" || bad "final run: $(cat "$tmp/err")"
a projection run fresh --once 2>"$tmp/err" || bad "fresh run: $(cat "$tmp/err")"
q='SELECT id, items, amount, n FROM totals ORDER BY id'
if [ "$(a query killed "$q" --tsv)" = "$(a query fresh "$q" --tsv)" ]; then
    ok "after $mid kills the PostgreSQL model equals one built from scratch"
else
    bad "PostgreSQL models differ after kills"
fi
expect_eq "every event once" "$(psql_q 'SELECT count(*), count(DISTINCT position) FROM killed.seen')" "3000	3000"

# ---- rebuild into a shadow schema while the projector runs and appends go on
"$ANNAL" --data "$tmp/store" projection run customer_overview >/dev/null 2>"$tmp/runner.err" &
runner=$!
(for i in $(seq 1 60); do a append "payment-z$((i % 5))" PaymentReceived "{\"customer\":\"z$((i % 5))\",\"amount\":$i}" >/dev/null; done) &
appender=$!
a projection rebuild customer_overview >"$tmp/rb.out" 2>&1 || bad "rebuild: $(cat "$tmp/rb.out")"
wait "$appender"
head=$(a info --json | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
a projection wait customer_overview $((head - 1)) --timeout 20000 || bad "projector continues after the rebuild: $(cat "$tmp/runner.err")"
kill "$runner"
wait "$runner" 2>/dev/null
expect_eq "shadow schema renamed away" "$(psql_q "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%__rebuild'")" "0"
expect_eq "rebuilt model has the appends made during the rebuild" \
    "$(a query customer_overview "SELECT string_agg(customer || '=' || paid, ',' ORDER BY customer) FROM customers WHERE customer LIKE 'z%'" --tsv | tail -n 1)" \
    "z0=390,z1=342,z2=354,z3=366,z4=378"
finish
