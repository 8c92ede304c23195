#!/usr/bin/env bash
# story.sh -- the seed's order story, projected: appends orders with items, discounts,
# check-outs and payments with the `annal` command, registers the projections of this
# directory (order summary, customer overview, daily revenue, dashboard, order-to-payment
# transformation), runs them once and queries their read models.
# Usage: story.sh STORE_DIR   (ANNAL names the annal binary; default: annal on the PATH)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ANNAL=${ANNAL:-annal}
dir=$1
a() { "$ANNAL" --data "$dir" "$@"; }
ap() { a append "$@" >/dev/null; }

# Two customers, three orders. Order 1: ann buys 2 x 50 and 1 x 100, removes one 50 and
# gets a loyalty discount of 20. Order 2: bob buys 3 x 10. Order 3: ann checks out an
# empty order.
ap order-1 OrderPlaced '{"customer":"ann"}' --expected-revision no_stream
ap order-1 ItemAdded '{"sku":"mug","qty":2,"price":50}'
ap order-1 ItemAdded '{"sku":"pot","qty":1,"price":100}'
ap order-1 ItemRemoved '{"sku":"mug","qty":1,"price":50}'
ap order-1 DiscountApplied '{"amount":20}' --metadata '{"reason":"loyalty"}'
ap order-1 OrderCheckedOut '{}'
ap order-2 OrderPlaced '{"customer":"bob"}' --expected-revision no_stream
ap order-2 ItemAdded '{"sku":"tea","qty":3,"price":10}'
ap order-2 OrderCheckedOut '{}'
ap order-3 OrderPlaced '{"customer":"ann"}' --expected-revision no_stream
ap order-3 OrderCheckedOut '{}'

for p in order_summary customer_overview daily_revenue dashboard order_payment; do
    a projection add "$here/$p.proj"
done
# order_payment appends events, so this projector opens the store for writing
a projection run --once
echo
echo "== order summary"
a query order_summary 'SELECT id, customer, status, items, total, discount FROM orders ORDER BY id'
echo "== order to payment (transformation): payment streams started with the order's total"
a query order_payment 'SELECT order_id, amount, items FROM payments_started ORDER BY order_id'
a read '$ce-payment'

# The customers pay what was asked, into the payment streams the projection started.
ap payment-1 PaymentReceived '{"order":"1","amount":130}' --expected-revision 0
last=$(a append payment-2 PaymentReceived '{"order":"2","customer":"bob","amount":30}' \
    --expected-revision 0 | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
# Eventual consistency: the read models lag until the projector runs; a caller that
# must read its own write waits for the position its append returned.
a projection wait customer_overview "$last" --timeout 100 || echo "customer_overview is behind position $last"
a projection run --once
a projection wait customer_overview "$last" --timeout 1000 && echo "customer_overview has passed position $last"
echo "== customer overview (orders and payments, joined by customer and order id)"
a query customer_overview 'SELECT customer, orders, ordered, paid, payments FROM customers ORDER BY customer'
echo "== daily revenue"
a query daily_revenue 'SELECT day, amount, payments FROM daily_revenue'
echo "== dashboard"
a query dashboard 'SELECT category, type, events FROM activity ORDER BY category, type'
a query dashboard 'SELECT name, value FROM kpi ORDER BY name'
echo "== rebuilding order_payment emits nothing twice"
a projection rebuild order_payment
a read '$et-PaymentRequested' --json | wc -l | sed 's/^ */PaymentRequested events: /'
echo "== status"
a projection status
