#!/usr/bin/env bash
# cli_dcb_test.sh -- Dynamic Consistency Boundaries on the command line: `annal append
# --tag` and `--fail-if-match QUERY --after P` (exit 6 naming the matching event), the
# DCB stream '$dcb', tags in read/subscribe/export/import/--batch, and `annal find` with
# types, tags, several items, --after, --limit, --backwards and --follow. The examples of
# dcb.events at the CLI level: a unique username (a released name is re-usable) and a
# course's capacity.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_dcb.XXXXXX")
trap 'rm -rf "$T"' EXIT
export ANNAL_DATA="$T/data"

fail() { echo "FAIL: $*" >&2; exit 1; }
run() {
    set +e
    "$ANNAL" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}
expect() { [ "$RC" -eq "$1" ] || fail "$2: exit $RC, want $1; stderr: $(cat "$T/err")"; }
count() { jq -s length "$T/out"; }

# ---- Unique username (dcb.events): claim only if nothing about the name was appended
# after what the decision read.
Q='type=UsernameClaimed,UsernameReleased tag=username:alice'
# The position of the last event about alice, or nothing (then no --after: "anywhere").
last_about_alice() { "$ANNAL" find "$Q" --backwards --limit 1 --json | jq -r .position; }
claim() { # claim AFTER_OR_EMPTY
    if [ -n "$1" ]; then
        run append '$dcb' UsernameClaimed '{"user":"alice"}' --tag username:alice \
            --fail-if-match "$Q" --after "$1"
    else
        run append '$dcb' UsernameClaimed '{"user":"alice"}' --tag username:alice --fail-if-match "$Q"
    fi
}
run append other-1 Noise '{}'
expect 0 "an unrelated event first (position 0)"
[ -z "$(last_about_alice)" ] || fail "no event about alice yet"
claim ""
expect 0 "first claim of alice"
jq -e '.stream == "$dcb" and .tags == ["username:alice"] and .position == 1' "$T/out" >/dev/null ||
    fail "the claim is printed as stored, with its tags: $(cat "$T/out")"
# A second claimant who read before the first claim landed (nothing about alice).
claim ""
expect 6 "a second claim of the same name fails with exit 6"
grep -q "condition failed: event at position 1 (UsernameClaimed in \$dcb" "$T/err" ||
    fail "the error names the matching event's position: $(cat "$T/err")"
# The same stale read expressed as --after 0 (the unrelated event) fails the same way.
claim 0
expect 6 "a claim after a stale position fails"
run read '$dcb' --json
[ "$(count)" -eq 1 ] || fail "a failed claim appends nothing: $(cat "$T/out")"
# Release, with the position just read.
P=$(last_about_alice)
[ "$P" = 1 ] || fail "the last event about alice is the claim at 1, got '$P'"
run append '$dcb' UsernameReleased '{"user":"alice"}' --tag username:alice --fail-if-match "$Q" --after "$P"
expect 0 "release"
# The released name is re-usable by a decision that read the release...
P2=$(last_about_alice)
claim "$P2"
expect 0 "a released name is claimed again"
# ... but not by one that read before the release.
claim "$P"
expect 6 "a claim that did not see the release and the new claim fails"
grep -q "event at position 2 (UsernameReleased" "$T/err" ||
    fail "the first matching event after --after is named: $(cat "$T/err")"

# ---- A course's capacity (2 seats) and a student's course limit, with events in named
# streams too: the condition spans the streams.
book() { # book STUDENT -> exit code in RC
    local after
    after=$("$ANNAL" find "type=SeatBooked tag=course:c1" --backwards --limit 1 --json | jq -r .position)
    local taken
    taken=$("$ANNAL" find "type=SeatBooked tag=course:c1" --json | jq -s length)
    if [ "$taken" -ge 2 ]; then RC=9; return; fi # the decision: full
    if [ -n "$after" ]; then
        run append "student-$1" SeatBooked "{\"course\":\"c1\"}" --tag course:c1 --tag "student:$1" \
            --fail-if-match "type=SeatBooked tag=course:c1" --after "$after"
    else
        run append "student-$1" SeatBooked "{\"course\":\"c1\"}" --tag course:c1 --tag "student:$1" \
            --fail-if-match "type=SeatBooked tag=course:c1"
    fi
}
book s1
expect 0 "first seat"
book s2
expect 0 "second seat"
book s3
[ "$RC" -eq 9 ] || fail "the course is full: the decision refuses"
# A booking decided on a stale read (one seat taken) loses to the one that got there first.
run append student-s4 SeatBooked '{}' --tag course:c1 --tag student:s4 \
    --fail-if-match "type=SeatBooked tag=course:c1" --after "$("$ANNAL" find "type=SeatBooked tag=course:c1" --limit 1 --json | jq -r .position)"
expect 6 "a booking on a stale read"
run find "type=SeatBooked tag=course:c1" --json
[ "$(count)" -eq 2 ] || fail "exactly the capacity is booked"

# ---- find: types any-of, tags all-of, items OR'd, --after, --limit, --backwards, JSON form.
run find --tag course:c1 --tag student:s2 --json
[ "$(jq -r .stream "$T/out")" = student-s2 ] || fail "tags are all-of: $(cat "$T/out")"
run find 'type=UsernameReleased | tag=student:s1' --json
[ "$(jq -r .type "$T/out" | tr '\n' ' ')" = "UsernameReleased SeatBooked " ] ||
    fail "items are OR'd, in position order: $(cat "$T/out")"
run find '{"items":[{"types":["Noise","UsernameReleased"]}]}' --json
[ "$(count)" -eq 2 ] || fail "types are any-of (JSON form): $(cat "$T/out")"
run find '*' --after 2 --limit 2 --json
[ "$(jq -r .position "$T/out" | tr '\n' ' ')" = "3 4 " ] || fail "--after and --limit: $(cat "$T/out")"
run find '*' --backwards --after 3 --json
[ "$(jq -r .position "$T/out" | tr '\n' ' ')" = "5 4 " ] || fail "--backwards stops at --after: $(cat "$T/out")"
run find --type SeatBooked --or --type Noise
expect 0 "table output"
grep -q "course:c1 student:s1" "$T/out" || fail "the table shows tags: $(cat "$T/out")"
run find 'type=A |'
expect 1 "an empty item is a usage error"
run find 'color=red'
expect 1 "an unknown term is a usage error"
run find ''
expect 1 "an empty query is a usage error ('*' is every event)"

# ---- find --follow: history, then live events of the query only.
"$ANNAL" find --tag course:c2 --follow --timeout 5 --limit 2 >"$T/follow" 2>"$T/follow.err" &
FP=$!
sleep 0.5
"$ANNAL" append other-2 Noise '{}' >/dev/null
"$ANNAL" append student-s9 SeatBooked '{}' --tag course:c2 >/dev/null
"$ANNAL" append student-s8 SeatBooked '{}' --tag course:c2 --tag student:s8 >/dev/null
wait $FP || fail "find --follow failed: $(cat "$T/follow.err")"
[ "$(jq -r .stream "$T/follow" | tr '\n' ' ')" = "student-s9 student-s8 " ] ||
    fail "--follow prints the matching live events: $(cat "$T/follow")"

# ---- Tags everywhere events are shown: read, subscribe.
run read student-s8 --json
jq -e '.tags == ["course:c2","student:s8"]' "$T/out" >/dev/null || fail "read --json tags: $(cat "$T/out")"
run read other-1 --json
jq -e 'has("tags") | not' "$T/out" >/dev/null || fail "no \"tags\" member without tags: $(cat "$T/out")"
run read student-s8
grep -q "course:c2 student:s8" "$T/out" || fail "read's table shows tags: $(cat "$T/out")"
run subscribe --timeout 1 --limit 1 --type UsernameReleased
jq -e '.tags == ["username:alice"]' "$T/out" >/dev/null || fail "subscribe shows tags: $(cat "$T/out")"

# ---- The table's TAGS column: left out when the first 200 rows have no tags; a later
# row's tags then lead its data.
for i in $(seq 1 201); do echo '{"stream":"plain-1","type":"P","data":{}}'; done >"$T/plain.jsonl"
echo '{"stream":"plain-1","type":"P","data":{"late":1},"tags":["late:1"]}' >>"$T/plain.jsonl"
run --data "$T/tab" append --batch "$T/plain.jsonl"
expect 0 "202 events, the last tagged"
run --data "$T/tab" read plain-1
head -1 "$T/out" | grep -q TAGS && fail "no TAGS column without tags in the sample: $(head -1 "$T/out")"
tail -1 "$T/out" | grep -q '\[late:1\] {"late":1}' || fail "a later row's tags: $(tail -1 "$T/out")"
run --data "$T/tab" read plain-1 --backward --limit 3
head -1 "$T/out" | grep -q TAGS || fail "a TAGS column when the sample has tags: $(head -1 "$T/out")"

# ---- --batch: "tags" per line, '$dcb' lines, and a condition for the whole batch.
cat >"$T/b.jsonl" <<'J'
{"stream":"$dcb","type":"InvoiceNumbered","data":{"n":1},"tags":["invoice:1"]}
{"stream":"inv-1","type":"InvoiceCreated","data":{},"tags":["invoice:1","customer:k"]}
J
run append --batch "$T/b.jsonl" --fail-if-match 'type=InvoiceNumbered'
expect 0 "a tagged batch"
jq -s -e '.[0].stream == "$dcb" and .[1].stream == "inv-1"' "$T/out" >/dev/null || fail "batch output: $(cat "$T/out")"
run append --batch "$T/b.jsonl" --fail-if-match 'type=InvoiceNumbered tag=invoice:1'
expect 6 "the same invoice number again"
run find 'tag=invoice:1' --json
[ "$(count)" -eq 2 ] || fail "a failed batch appends nothing: $(cat "$T/out")"
jq -s -e '.[1].tags == ["invoice:1","customer:k"]' "$T/out" >/dev/null || fail "batch tags: $(cat "$T/out")"
echo '{"stream":"$dcb","type":"X","expected_revision":0}' >"$T/bad.jsonl"
run append --batch "$T/bad.jsonl"
expect 1 "the DCB stream takes no expected revision in a batch"
run append '$dcb' X '{}' --expected-revision 0
expect 1 "nor on the command line"
run append s X '{}' --after 3
expect 1 "--after needs --fail-if-match"
run append s X '{}' --tag ''
expect 1 "an empty tag"
args=()
for i in $(seq 1 33); do args+=(--tag "t$i"); done
run append s X '{}' "${args[@]}"
expect 1 "more tags than the limit"
grep -qi "tag" "$T/err" || fail "the limit is explained: $(cat "$T/err")"

# ---- export / import keep tags; a second import appends nothing.
"$ANNAL" export >"$T/all.jsonl"
run --data "$T/copy" import "$T/all.jsonl"
expect 0 "import"
run --data "$T/copy" import "$T/all.jsonl"
expect 0 "import again"
grep -q "0 appended" "$T/out" || fail "a second import is a no-op: $(cat "$T/out")"
"$ANNAL" --data "$T/copy" export >"$T/copy.jsonl"
diff <(jq -c '{id,stream,type,revision,position,data,tags}' "$T/all.jsonl") \
    <(jq -c '{id,stream,type,revision,position,data,tags}' "$T/copy.jsonl") ||
    fail "tags and positions survive export and import"
run --data "$T/copy" find 'tag=username:alice' --json
[ "$(count)" -eq 3 ] || fail "the imported tags are indexed: $(cat "$T/out")"

# ---- `annal query` is still SQL on a projection's read model.
"$ANNAL" query --help | grep -q SQL || fail "annal query is the SQL command"
echo "cli_dcb_test: ok"
