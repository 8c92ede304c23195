#!/usr/bin/env bash
# projection_cli_test.sh -- projections through the `annal` command with SQLite read
# models: bad files rejected with line numbers, add/run/query/status, a failing event
# stopping the projection (shown, then retried or skipped), pause/resume, waiting for a
# position, Lua, a transformation that emits events only once across rebuilds, and a
# rebuild into a shadow while a projector and appends run.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

a append order-1 OrderPlaced '{"customer":"ann"}' >/dev/null || bad "append"

# ---- bad files: each must fail at `add` with file:line and the reason
badfile() { # WHAT LINE PATTERN, file text on stdin
    local what=$1 line=$2 pat=$3 f="$tmp/bad.proj"
    cat >"$f"
    if a projection add "$f" --name bad >"$tmp/out" 2>&1; then
        bad "$what: accepted"
    elif grep -Eq -- "bad\.proj:$line: .*$pat" "$tmp/out"; then
        ok "$what: $(cat "$tmp/out")"
    else
        bad "$what: want line $line and /$pat/, got: $(cat "$tmp/out")"
    fi
}
printf 'source $all\nbatchsize 10\n[on A]\nSELECT 1\n' | badfile "unknown setting" 2 "unknown setting 'batchsize'"
printf 'source $all\n\n[onn A]\nSELECT 1\n' | badfile "unknown section" 3 "unknown section"
printf 'source $all\n[on A]\nSELECT\n  :dta.x\n' | badfile "unknown parameter" 4 "unknown parameter :dta.x"
printf 'source $all\n[on A]\nSELECT :data.items[x]\n' | badfile "bad path" 3 "bad path"
printf '# no source\n[on A]\nSELECT 1\n' | badfile "no source" 1 "no source"
printf 'source $all\n[on A]\nSELECT 1\n[on A]\nSELECT 2\n' | badfile "handler twice" 4 "given twice"
printf 'source $all\n[schema]\nCREATE TABLE t (a INT);\n[on A]\nSELECT 1;\n\nINSERT INTO t (b) VALUES (:revision)\n' |
    badfile "SQL error, line of its statement" 7 "no column named b"
printf 'source $all\n[schema]\nCREATE TABLEE t (a INT)\n[on A]\nSELECT 1\n' | badfile "schema error" 3 "syntax error"
printf 'source $all\n[lua]\nfunction on.A(e)\n  local x = \nend\n' | badfile "Lua syntax error" 5 "unexpected symbol|expected"
printf 'source $all\n[lua]\non.A = 5\n' | badfile "Lua handler not a function" 3 "not a function"
printf 'source $all\n[on A]\nSELECT :v.x\n' | badfile ":v without Lua" 3 "needs a Lua handler"
printf 'source $bogus\n[on A]\nSELECT 1\n' | badfile "bad source" 1 "bad source"
if a projection list | grep -q '^bad'; then bad "a bad file was registered"; else ok "no bad file registered"; fi

# ---- a read model: order summary with a NOT NULL column that an event can violate
cat >"$tmp/orders.proj" <<'P'
projection orders
source $ce-order
batch 2

[schema]
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL,
  total INTEGER NOT NULL DEFAULT 0, day TEXT, last_rev INTEGER);

[on OrderPlaced]
INSERT INTO orders (id, customer, day, last_rev) VALUES (:stream_id, :data.customer, :date, :revision)

[on ItemAdded]
UPDATE orders SET total = total + :data.qty * :data.price, last_rev = :revision WHERE id = :stream_id
P
a projection add "$tmp/orders.proj" >"$tmp/out" 2>&1 && expect_grep "add" "added projection orders" "$tmp/out" || bad "add: $(cat "$tmp/out")"
a append order-1 ItemAdded '{"qty":2,"price":25}' >/dev/null
a append order-2 OrderPlaced '{"customer":"bob"}' >/dev/null
a append other-1 Noise '{}' >/dev/null
a projection run --once || bad "run --once"
expect_eq "query (tsv)" "$(a query orders 'SELECT id, customer, total, last_rev FROM orders ORDER BY id' --tsv | tr '\t\n' ',;')" \
    "id,customer,total,last_rev;1,ann,50,1;2,bob,0,0;"
a query orders 'SELECT id, total FROM orders ORDER BY id' --json >"$tmp/q.json"
expect_grep "query (json)" '^\{"id":"1","total":50\}$' "$tmp/q.json"
a query orders 'SELECT nope FROM orders' >"$tmp/out" 2>&1
expect_eq "query with a SQL error exits 1" "$?" "1"
a projection status --json >"$tmp/st.json"
# run --once has exited: nobody applies events, and status says so (not "running")
expect_grep "status: stopped, position past the head, no lag" '"state":"stopped","position":4,"events":3,"lag_events":0' "$tmp/st.json"

# ---- read your writes: wait for a position
a projection wait orders 3 --timeout 1000 && ok "wait for an applied position" || bad "wait for an applied position"
pos=$(a append order-2 ItemAdded '{"qty":1,"price":7}' | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
a projection wait orders "$pos" --timeout 200
expect_eq "wait times out (exit 7) before the projector ran" "$?" "7"
a projection run --once
a projection wait orders "$pos" --timeout 1000 && ok "wait returns once applied" || bad "wait after run"

# ---- a failing event stops the projection, shown; retry fails again; skip goes on
a append order-3 OrderPlaced '{"who":"nobody"}' >/dev/null   # customer missing: NOT NULL
a append order-4 OrderPlaced '{"customer":"cy"}' >/dev/null
a projection run --once 2>"$tmp/run.err"
expect_eq "run --once exits 6 when a projection failed" "$?" "6"
expect_grep "the failure is reported" "orders stopped at position 5 \(order-3@0 OrderPlaced .*NOT NULL" "$tmp/run.err"
a projection status >"$tmp/st.txt"
expect_eq "status exits 6 with a failed projection" "$?" "6"
expect_grep "status shows the failed event" "orders +failed .*at 5 \(order-3@0 OrderPlaced [0-9a-f-]+\)" "$tmp/st.txt"
a projection status orders --json >"$tmp/st.json"
expect_grep "status --json has the error" '"error":".*orders.proj:10: \[on OrderPlaced\]: SQL: NOT NULL constraint failed: orders.customer","error_position":5,"error_event":"order-3@0 OrderPlaced' "$tmp/st.json"
a projection pause orders >/dev/null 2>&1
expect_eq "pause of a failed projection is refused" "$?" "1"
a projection retry orders >/dev/null || bad "retry"
a projection run --once 2>/dev/null
a projection status --json >"$tmp/st.json"
expect_grep "retry without a fix fails again at the same event" '"state":"failed","position":5,.*"error_position":5' "$tmp/st.json"
a projection skip orders >/dev/null || bad "skip"
a projection run --once || bad "run after skip"
expect_eq "after skip: the events after the failed one are applied" \
    "$(a query orders "SELECT group_concat(id) FROM (SELECT id FROM orders ORDER BY id)" --tsv | tail -n 1)" "1,2,4"

# ---- pause and resume
a projection pause orders >/dev/null || bad "pause"
a append order-5 OrderPlaced '{"customer":"di"}' >/dev/null
a projection run --once 2>/dev/null
expect_eq "paused: run --once applies nothing and exits 6" \
    "$?,$(a query orders "SELECT count(*) FROM orders WHERE id = '5'" --tsv | tail -n 1)" "6,0"
a projection resume orders >/dev/null || bad "resume"
a projection run --once || bad "run after resume"
expect_eq "resumed: applied" "$(a query orders "SELECT count(*) FROM orders WHERE id = '5'" --tsv | tail -n 1)" "1"

# ---- a projector in another process obeys pause/resume
"$ANNAL" --data "$tmp/store" projection run orders >/dev/null 2>&1 & # $! must be annal itself
runner=$!
a projection pause orders >/dev/null
sleep 0.2 # a batch that had begun before the pause may still commit
a append order-6 OrderPlaced '{"customer":"ed"}' >/dev/null
sleep 0.3
expect_eq "running projector paused" "$(a query orders "SELECT count(*) FROM orders WHERE id = '6'" --tsv | tail -n 1)" "0"
a projection resume orders >/dev/null
pos=$(a info --json | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
a projection wait orders $((pos - 1)) --timeout 10000 && ok "running projector resumed" || bad "resume of a running projector"
a projection status orders --json >"$tmp/st.json"
expect_grep "status: running, held by the projector's process" "\"state\":\"running\",.*\"projector_pid\":$runner," "$tmp/st.json"

# ---- rebuild into a shadow while the projector runs, appends go on and queries answer
for i in $(seq 0 9); do a append "order-r$i" OrderPlaced '{"customer":"r"}' >/dev/null; done
(for i in $(seq 1 150); do a append "order-r$((i % 10))" ItemAdded "{\"qty\":1,\"price\":$i}" >/dev/null; done) &
appender=$!
(for i in $(seq 1 200); do a query orders 'SELECT count(*) FROM orders' --tsv >/dev/null 2>&1 || echo "query failed" >>"$tmp/qerr"; done) &
querier=$!
a projection rebuild orders >"$tmp/rb.out" 2>&1 || bad "rebuild: $(cat "$tmp/rb.out")"
expect_grep "rebuild reports what it applied" "rebuilt orders: [0-9]+ events applied" "$tmp/rb.out"
wait $appender
wait $querier
if [ -s "$tmp/qerr" ]; then bad "queries failed during the rebuild: $(wc -l <"$tmp/qerr")"; else ok "queries answered throughout the rebuild"; fi
pos=$(a info --json | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
a projection wait orders $((pos - 1)) --timeout 20000 || bad "projector continues on the rebuilt model"
a projection status orders --json >"$tmp/st.json"
expect_grep "status: still running after the rebuild" "\"state\":\"running\",.*\"projector_pid\":$runner," "$tmp/st.json"
kill "$runner"
wait "$runner" 2>/dev/null
a projection status orders --json >"$tmp/st.json"
expect_grep "status: stopped once the projector has exited" '"state":"stopped"' "$tmp/st.json"
[ -L "$tmp/store/projections/orders.db" ] && ok "the read model is now a link to its generation" || bad "no link after rebuild"
expect_eq "the skipped event stays skipped in the rebuilt model" \
    "$(a query orders "SELECT count(*) FROM orders WHERE id = '3'" --tsv | tail -n 1)" "0"
# the streams appended during the rebuild, against a model built from scratch
cat >"$tmp/r.proj" <<'P'
source $ce-order
[schema]
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL DEFAULT 0);
[on ItemAdded]
INSERT INTO orders (id, total) VALUES (:stream_id, :data.qty * :data.price)
ON CONFLICT (id) DO UPDATE SET total = total + excluded.total
P
a projection add "$tmp/r.proj" --name fresh >/dev/null && a projection run fresh --once || bad "fresh"
expect_eq "rebuilt model equals a fresh one (appends during the rebuild included)" \
    "$(a query orders "SELECT group_concat(id || '=' || total) FROM (SELECT * FROM orders WHERE id LIKE 'r%' ORDER BY id)" --tsv | tail -n 1)" \
    "$(a query fresh "SELECT group_concat(id || '=' || total) FROM (SELECT * FROM orders WHERE id LIKE 'r%' ORDER BY id)" --tsv | tail -n 1)"

# ---- transformation: emitted events appear once, however often the projection replays
cp "$ANNAL_SRC/examples/projections/order_payment.proj" "$tmp/pay.proj"
a append order-p1 OrderPlaced '{"customer":"fay"}' >/dev/null
a append order-p1 ItemAdded '{"qty":3,"price":10}' >/dev/null
a append order-p1 OrderCheckedOut '{}' >/dev/null
a projection add "$tmp/pay.proj" >/dev/null || bad "add order_payment"
a projection run order_payment --once || bad "run order_payment"
a projection rebuild order_payment >/dev/null || bad "rebuild order_payment"
a projection rebuild order_payment >/dev/null || bad "rebuild order_payment again"
a read payment-p1 --json >"$tmp/pay.json"
expect_eq "one payment event after a run and two rebuilds" "$(wc -l <"$tmp/pay.json")" "1"
expect_grep "payment carries the summed total" '"type":"PaymentRequested".*"amount":30' "$tmp/pay.json"

# ---- the projection file shown in the README works as shown (in a store of its own)
sed -n '/^# order_summary.proj: a shorter/,/^```$/p' "$ANNAL_SRC/README.md" | sed '$d' >"$tmp/readme.proj"
r() { "$ANNAL" --data "$tmp/readme-store" "$@"; }
r append order-1 OrderPlaced '{"customer":"ann"}' >/dev/null
r append order-1 ItemAdded '{"qty":2,"price":25}' >/dev/null
r append order-1 OrderCheckedOut '{}' >/dev/null
if r projection add "$tmp/readme.proj" >"$tmp/out" 2>&1 && r projection run --once 2>>"$tmp/out"; then
    expect_eq "the README's projection file runs" \
        "$(r query order_summary "SELECT id, customer, status, items, total FROM orders" --tsv | tail -n 1)" \
        "$(printf '1\tann\tchecked out\t2\t50')"
else
    bad "the README's projection file: $(cat "$tmp/out")"
fi

# ---- remove
a projection remove fresh --drop >/dev/null || bad "remove"
if a projection list | grep -q '^fresh'; then bad "removed projection still listed"; else ok "removed"; fi
[ ! -e "$tmp/store/projections/fresh.db" ] && ok "--drop deleted the read model" || bad "read model left"
finish
