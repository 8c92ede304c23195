#!/usr/bin/env bash
# cli_demo_test.sh -- the demo's words must be true of the run they describe: every
# "done at revision R" names the user whose event is at R, the lines come in commit order,
# a rejection saw every append before it, and the race summary says what the loser did
# (decided again, or refused at its first attempt) as its attempt count shows. Several runs,
# because which thread wins differs from run to run.
set -euo pipefail

: "${ANNAL:?ANNAL must point at the annal binary}"
: "${ANNAL_TEST_TMP:=/tmp}"
mkdir -p "$ANNAL_TEST_TMP"
T=$(mktemp -d "$ANNAL_TEST_TMP/cli_demo_test.XXXXXX")
trap 'rm -rf "$T"' EXIT
unset ANNAL_DATA
PY=$(python3 -c 'import sys; print(sys.executable)')

for run in $(seq 1 12); do
    "$ANNAL" --data "$T/d" demo >"$T/out.$run"
    "$ANNAL" --data "$T/d" read "account-$run" --json >"$T/account.$run"
    "$ANNAL" --data "$T/d" read "stock-$run" --json >"$T/stock.$run"
    "$PY" - "$T/out.$run" "$T/account.$run" "$T/stock.$run" <<'EOF'
import json, re, sys

out = open(sys.argv[1]).read().splitlines()
events = {name: [json.loads(l) for l in open(p)] for name, p in
          (("account", sys.argv[2]), ("stock", sys.argv[3]))}
line_re = re.compile(r"^    (\S+)\s+(.+?): (done at revision (\d+)|rejected \((.+)\) "
                     r"(?:seeing revision (\d+)|on an empty stream)) after (\d+) attempts?$")

def section(start, stop):
    i = next(i for i, l in enumerate(out) if l.startswith(start))
    j = next(j for j in range(i + 1, len(out)) if out[j].startswith(stop))
    return out[i + 1:j + 1]

def check(lines, evs, what):
    outcomes, last_key = [], -2
    for l in lines:
        m = line_re.match(l)
        if not m:
            continue
        user, _, _, done, reason, seen, attempts = m.groups()
        if done is not None:
            rev = int(done)
            assert evs[rev]["metadata"]["user"] == user, (what, l, evs[rev])
            key = 2 * rev
        else:
            # A rejection saw every append that came before it in the printed order.
            s = int(seen) if seen is not None else -1
            assert s == max([o[2] for o in outcomes if o[1]] + [-1]), (what, l, outcomes)
            key = 2 * s + 1
        assert key >= last_key, (what, "not in commit order", l)
        last_key = key
        outcomes.append((user, done is not None, int(done) if done else -1, int(attempts)))
    return outcomes

bank = section("Bank account", "  -> ")
o = check(bank, events["account"], "bank")
summary = bank[-1]
race = [x for x in o if x[0] in ("bob", "carol")]
assert len(race) == 2, race
winners = [x for x in race if x[1]]
losers = [x for x in race if not x[1]]
assert len(winners) == 1 and len(losers) == 1, race
assert summary.startswith("  -> 1 of 2 succeeded"), summary
loser = losers[0]
if loser[3] == 1:
    assert f"{loser[0]} read the balance after the winner's withdrawal and was refused at its first attempt" in summary, (summary, loser)
    assert "decided again" not in summary, summary
else:
    assert f"{loser[0]}'s first decision conflicted" in summary and "decided again" in summary, (summary, loser)
withdrawn = [e for e in events["account"] if e["type"] == "Withdrawn"]
assert len(withdrawn) == 2, withdrawn

stock = section("Inventory", "  -> ")
o = check(stock, events["stock"], "stock")
shipped = [e for e in events["stock"] if e["type"] == "ItemShipped"]
done = [x for x in o if x[1] and x[0] != "warehouse"]
assert len(shipped) == len(done) == 3, (shipped, done)
m = re.match(r"  -> (\d+) shipped, (\d+) refused: never oversold \((\d+) attempts in all\)\.$", stock[-1])
assert m, stock[-1]
assert (int(m.group(1)), int(m.group(2))) == (3, 2), stock[-1]
assert int(m.group(3)) == sum(x[3] for x in o if x[0] != "warehouse"), (stock[-1], o)
EOF
done
echo "cli_demo_test: ok"
