#!/usr/bin/env bash
# The command line while a server owns the store: append, delete and meta go through the
# server's Unix socket (what they write is what an official Node.js client then reads);
# commands that cannot go through it refuse clearly; `annal --server kurrentdb://...`
# writes to a server by its address, over TLS too. Without a server (stopped, or killed
# and its socket left behind) the commands work directly as before.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_SRC:?}" "${ANNAL_BUILD:?}" "${ANNAL_TEST_TMP:=/tmp}"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: npm and node are needed (scripts/deps.sh installs them)"
    exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
unset ANNAL_SERVER || true

node_dir="$ANNAL_BUILD/e2e-node"
mkdir -p "$node_dir"
bash "$ANNAL_SRC/tests/e2e/install.sh" "$node_dir" || fail "npm ci"

mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/cli_server.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
store="$work/store"

start_server() { # start_server LOG ARGS...: sets server_pid and port
    local log=$1
    shift
    : >"$log" # exists before the job opens it: reading it at once must not fail
    "$ANNAL" --data "$store" serve --listen 127.0.0.1:0 "$@" 2>"$log" &
    server_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
        [ -n "$port" ] && grep -q "local socket" "$log" && break
        kill -0 "$server_pid" 2>/dev/null || fail "server died: $(cat "$log")"
        sleep 0.05
    done
    [ -n "$port" ] || fail "no port: $(cat "$log")"
}

# A Node.js client's view of the store: NODE_PATH points at the installed clients.
node_check() {
    NODE_PATH="$node_dir/node_modules" timeout 60 node -e "$1" -- "$port" || fail "node check: $2"
}

# ---- with a server owning the store
"$ANNAL" --data "$store" append before T '"made directly"' >/dev/null
start_server "$work/server.log" --insecure
[ "$(stat -c %a "$store/annal.sock")" = 600 ] || fail "socket mode $(stat -c %a "$store/annal.sock"), want 600"

out=$("$ANNAL" --data "$store" append orders Placed '{"n":1}' --metadata '{"by":"cli"}') || fail "append through the server"
echo "$out" | grep -q '"stream":"orders","type":"Placed","revision":0' || fail "append printed: $out"
id=$(echo "$out" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
"$ANNAL" --data "$store" append orders Shipped '{"n":2}' --expected-revision 0 >/dev/null || fail "append at revision 0"
rc=0
"$ANNAL" --data "$store" append orders Placed '{}' --expected-revision no_stream 2>"$work/conflict.err" >/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "conflict through the server: exit $rc"
grep -q "expected no stream but stream orders is at 1" "$work/conflict.err" || fail "conflict: $(cat "$work/conflict.err")"
# The same id again is the same event (the server deduplicates): nothing twice.
"$ANNAL" --data "$store" append orders Placed '{"n":1}' --metadata '{"by":"cli"}' --id "$id" >/dev/null || fail "idempotent resend"
"$ANNAL" --data "$store" meta orders --max-count 10 >"$work/meta.out" || fail "meta through the server"
grep -q "metadata of orders is at revision 0" "$work/meta.out" || fail "meta: $(cat "$work/meta.out")"
# Reads stay direct (read-only beside the server): they see what went through it.
"$ANNAL" --data "$store" meta orders | grep -q '"\$maxCount":10' || fail "meta read directly"
[ "$("$ANNAL" --data "$store" read --json orders | wc -l)" -eq 2 ] || fail "direct read sees two events"
"$ANNAL" --data "$store" append doomed T x >/dev/null
rc=0
"$ANNAL" --data "$store" delete doomed --expect 5 2>"$work/dconf.err" >/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "delete at a wrong revision through the server: exit $rc ($(cat "$work/dconf.err"))"
rc=0
# The socket acts as the admin, who may write system streams (issue 17), but not the
# store's own ($all, $$ metadata streams, $ce-/$et- indexes).
"$ANNAL" --data "$store" append '$all' T x 2>"$work/sys.err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "append to \$all through the server: exit $rc ($(cat "$work/sys.err"))"
"$ANNAL" --data "$store" append '$system' T x >/dev/null || fail "admin append to a \$ stream through the server"
"$ANNAL" --data "$store" delete doomed | grep -q "deleted doomed" || fail "delete through the server"
"$ANNAL" --data "$store" append tomb T x >/dev/null
"$ANNAL" --data "$store" delete tomb --hard | grep -q "tombstoned tomb" || fail "tombstone through the server"
rc=0
"$ANNAL" --data "$store" append tomb T x 2>"$work/tomb.err" >/dev/null || rc=$?
[ "$rc" -ne 0 ] || fail "append to a tombstoned stream succeeded"
grep -q "tombstoned" "$work/tomb.err" || fail "tombstone error: $(cat "$work/tomb.err")"

# Commands that need the store to themselves say why.
for cmd in rebuild-index compact; do
    rc=0
    # shellcheck disable=SC2086
    "$ANNAL" --data "$store" $cmd 2>"$work/refuse.err" >/dev/null || rc=$?
    [ "$rc" -ne 0 ] || fail "$cmd ran while a server owns the store"
    grep -q "a server (annal serve) owns the store" "$work/refuse.err" || fail "$cmd: $(cat "$work/refuse.err")"
done

# import goes through the server too; importing the same export again adds nothing (the
# ids are the same, the server deduplicates).
"$ANNAL" --data "$work/other" append imp Imported '{"k":1}' >/dev/null
"$ANNAL" --data "$work/other" append imp Imported '{"k":2}' >/dev/null
"$ANNAL" --data "$work/other" export >"$work/export.jsonl"
for round in 1 2; do
    "$ANNAL" --data "$store" import "$work/export.jsonl" >"$work/import.out" || fail "import round $round through the server"
    grep -q "imported 2 events .* through the server" "$work/import.out" || fail "import: $(cat "$work/import.out")"
done
[ "$("$ANNAL" --data "$store" read --json imp | grep -c Imported)" -eq 2 ] || fail "import through the server stored $("$ANNAL" --data "$store" read --json imp | wc -l) events, want 2"

# By address: kurrentdb:// and esdb:// connection strings.
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tls=false" append remote T '{"via":"kurrentdb"}' >/dev/null || fail "--server kurrentdb://"
ANNAL_SERVER="esdb://127.0.0.1:$port/?tls=false" "$ANNAL" append remote T '{"via":"esdb"}' >/dev/null || fail "ANNAL_SERVER=esdb://"
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tls=false" meta remote '{"$maxAge":3600,"owner":"ops"}' >/dev/null || fail "meta by address"
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tls=false" meta remote | grep -q '"owner":"ops"' || fail "meta read by address"
rc=0
"$ANNAL" --server "kurrentdb://127.0.0.1:1?tls=false" append x T x 2>"$work/down.err" || rc=$?
[ "$rc" -eq 5 ] || fail "unreachable server: exit $rc"
grep -q "does not answer" "$work/down.err" || fail "unreachable: $(cat "$work/down.err")"
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tls=false" read remote 2>"$work/read.err" && fail "--server read worked on the local store"
grep -q "works with append, import, delete, meta and user" "$work/read.err" || fail "--server read: $(cat "$work/read.err")"
"$ANNAL" --server "http://127.0.0.1:$port" append x T x 2>"$work/bad.err" && fail "http:// accepted"
grep -q "is not kurrentdb://HOST:PORT" "$work/bad.err" || fail "bad URL: $(cat "$work/bad.err")"

# What went through the server is what a Node.js client reads.
ID="$id" node_check '
const lib = require("@eventstore/db-client");
const c = lib.EventStoreDBClient.connectionString(`esdb://127.0.0.1:${process.argv[1]}?tls=false`);
(async () => {
  const evs = [];
  for await (const e of c.readStream("orders")) evs.push(e.event);
  if (evs.length !== 2 || evs[0].type !== "Placed" || evs[0].data.n !== 1 || evs[1].type !== "Shipped")
    throw new Error("orders: " + JSON.stringify(evs.map((e) => [e.type, e.data])));
  if (evs[0].id !== process.env.ID) throw new Error("id " + evs[0].id);
  const m = await c.getStreamMetadata("orders");
  if (m.metadata.maxCount !== 10) throw new Error("maxCount " + JSON.stringify(m.metadata));
  const r = [];
  for await (const e of c.readStream("remote")) r.push(e.event.data.via);
  if (r.join() !== "kurrentdb,esdb") throw new Error("remote " + r.join());
  try { for await (const e of c.readStream("doomed")) throw new Error("doomed has " + e.event.type); }
  catch (err) { if (!(err instanceof lib.StreamNotFoundError)) throw err; }
  await c.dispose();
})().catch((e) => { console.error(e); process.exit(1); });' "events written through the server"

# ---- stopped: the socket goes, the commands work directly again
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit"
server_pid=""
[ ! -e "$store/annal.sock" ] || fail "socket left after a clean stop"
"$ANNAL" --data "$store" append after T x >/dev/null || fail "direct append after the stop"
"$ANNAL" --data "$store" rebuild-index >/dev/null || fail "rebuild-index after the stop"

# ---- killed: a stale socket that answers nothing does not stop direct writes
start_server "$work/server2.log" --insecure
kill -KILL "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
[ -S "$store/annal.sock" ] || echo "(note: gRPC removed the socket)"
"$ANNAL" --data "$store" append after T y >/dev/null || fail "direct append beside a stale socket"
"$ANNAL" --data "$store" delete after >/dev/null || fail "direct delete beside a stale socket"
# A new server replaces the stale socket.
start_server "$work/server3.log" --insecure
"$ANNAL" --data "$store" append again T z >/dev/null || fail "append through a restarted server"

# ---- over TLS by address, with annal cert's CA; another CA is refused
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
"$ANNAL" cert ca --out "$work/ca" >/dev/null
"$ANNAL" cert node --ca "$work/ca" --out "$work/ca" >/dev/null
"$ANNAL" cert ca --out "$work/other" >/dev/null
# With TLS, calls authenticate (docs/security.md): the admin's first password from the
# environment, sent as user:pass@ in the URL.
ANNAL_DEFAULT_ADMIN_PASSWORD=changeit start_server "$work/server4.log" --cert "$work/ca/node.crt" --key "$work/ca/node.key"
"$ANNAL" --server "kurrentdb://admin:changeit@127.0.0.1:$port?tlsCAFile=$work/ca/ca.crt" append secure T x >/dev/null || fail "--server over TLS"
rc=0
"$ANNAL" --server "kurrentdb://127.0.0.1:$port?tlsCAFile=$work/other/ca.crt" append secure T x 2>"$work/wrongca.err" || rc=$?
[ "$rc" -eq 5 ] || fail "wrong CA: exit $rc"
grep -qi "ssl\|certificate\|handshake" "$work/wrongca.err" || fail "wrong CA: $(cat "$work/wrongca.err")"
# Through the local socket, a TLS server needs no certificate from the CLI.
"$ANNAL" --data "$store" append secure T local >/dev/null || fail "local socket beside TLS"
[ "$("$ANNAL" --data "$store" read --json secure | wc -l)" -eq 2 ] || fail "TLS appends"
echo "ok: CLI writes through the server (socket, kurrentdb://, esdb://, TLS); direct without one"
