#!/usr/bin/env bash
# annal serve's settings: a port from each source (YAML file, ANNAL_*, KURRENTDB_*,
# EVENTSTORE_*, flags), their precedence (flags > environment > file > defaults), an unknown
# key or a bad value named in the error, and secrets never in the log.
set -euo pipefail
: "${ANNAL:?}" "${ANNAL_TEST_TMP:=/tmp}"
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$ANNAL_TEST_TMP"
work=$(mktemp -d "$ANNAL_TEST_TMP/config.XXXXXX")
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# The ANNAL_DATA of the test harness would be the environment's data directory.
unset ANNAL_DATA ANNAL_LISTEN ANNAL_CONFIG KURRENTDB_CONFIG EVENTSTORE_CONFIG || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve LOG [env NAME=V ...] -- ARGS...: start annal serve, wait for its port, stop it;
# prints the port it listened on.
serve() {
    local log=$1
    shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    : >"$log" # exists before the job opens it: reading it at once must not fail
    env "${envs[@]}" "$ANNAL" serve "$@" 2>"$log" &
    pid=$!
    local port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on [^ ]*:\([0-9]*\) .*/\1/p' "$log")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || fail "server died: $(cat "$log")"
        sleep 0.05
    done
    kill -TERM "$pid"
    wait "$pid" || fail "server did not stop cleanly: $(cat "$log")"
    pid=""
    echo "$port"
}

p_file=$(free_port)
p_env=$(free_port)
p_kdb=$(free_port)
p_flag=$(free_port)
cat >"$work/annal.yaml" <<YAML
# KurrentDB's names, in KurrentDB's case
Db: $work/from-file
NodePort: $p_file
Insecure: true
DefaultAdminPassword: file-secret-0xA1
YAML

# The file alone: port, insecure and the data directory (KurrentDB's Db) all from it.
got=$(serve "$work/1.log" X=1 -- --config "$work/annal.yaml")
[ "$got" = "$p_file" ] || fail "file's NodePort: listened on $got, want $p_file"
[ -d "$work/from-file" ] || fail "file's Db did not choose the data directory"
grep -q "node-port = $p_file (file $work/annal.yaml:3)" "$work/1.log" || fail "origin not logged: $(cat "$work/1.log")"

# The file through ANNAL_CONFIG; the environment beats the file.
got=$(serve "$work/2.log" ANNAL_CONFIG="$work/annal.yaml" ANNAL_LISTEN="127.0.0.1:$p_env" --)
[ "$got" = "$p_env" ] || fail "ANNAL_LISTEN over the file: listened on $got, want $p_env"

# KurrentDB's and EventStoreDB's variables alone, no file.
got=$(serve "$work/3.log" KURRENTDB_NODE_PORT="$p_kdb" KURRENTDB_INSECURE=true -- --data "$work/s")
[ "$got" = "$p_kdb" ] || fail "KURRENTDB_NODE_PORT: listened on $got, want $p_kdb"
got=$(serve "$work/4.log" EVENTSTORE_NODE_PORT="$p_env" EVENTSTORE_INSECURE=1 -- --data "$work/s")
[ "$got" = "$p_env" ] || fail "EVENTSTORE_NODE_PORT: listened on $got, want $p_env"
# annal's name beats KurrentDB's from the same source.
got=$(serve "$work/5.log" KURRENTDB_NODE_PORT="$p_kdb" ANNAL_NODE_PORT="$p_env" KURRENTDB_INSECURE=true -- --data "$work/s")
[ "$got" = "$p_env" ] || fail "ANNAL_NODE_PORT over KURRENTDB_NODE_PORT: listened on $got, want $p_env"

# Flags beat the environment and the file.
got=$(serve "$work/6.log" KURRENTDB_NODE_PORT="$p_kdb" ANNAL_CONFIG="$work/annal.yaml" -- --data "$work/s" --listen "127.0.0.1:$p_flag")
[ "$got" = "$p_flag" ] || fail "--listen over env and file: listened on $got, want $p_flag"
got=$(serve "$work/7.log" KURRENTDB_NODE_PORT="$p_kdb" -- --data "$work/s" --config "$work/annal.yaml" --node-port "$p_flag")
[ "$got" = "$p_flag" ] || fail "--node-port over env and file: listened on $got, want $p_flag"
# ANNAL_DATA (environment) beats the file's Db; --data (flag) beats both.
got=$(serve "$work/8.log" ANNAL_DATA="$work/from-env" -- --config "$work/annal.yaml")
[ -d "$work/from-env" ] || fail "ANNAL_DATA did not beat the file's Db"
grep -q "data = $work/from-env (environment ANNAL_DATA)" "$work/8.log" || fail "data origin: $(cat "$work/8.log")"

# The default: 2113 when nothing sets a port (checked only in the log line, as 2113 may be in use).
"$ANNAL" serve --data "$work/s" --insecure --node-ip 127.0.0.1 --listen bad 2>"$work/bad.err" && fail "bad --listen accepted"
grep -q "bad value 'bad' for listen (from --listen)" "$work/bad.err" || fail "bad --listen: $(cat "$work/bad.err")"

# An unknown key in the file: an error naming it and its line; nothing served.
printf 'NodePort: 0\nInsecure: true\nNodePrt: 5\n' >"$work/typo.yaml"
rc=0
"$ANNAL" serve --data "$work/s" --config "$work/typo.yaml" 2>"$work/typo.err" || rc=$?
[ "$rc" -eq 1 ] || fail "unknown key: exit $rc, want 1"
grep -q "typo.yaml:3: unknown setting 'NodePrt'" "$work/typo.err" || fail "unknown key not named: $(cat "$work/typo.err")"
# A nested value, a bad value from the environment, a missing file.
printf 'Insecure:\n  - true\n' >"$work/nested.yaml"
"$ANNAL" serve --data "$work/s" --config "$work/nested.yaml" 2>"$work/n.err" && fail "nested value accepted"
grep -q "setting 'Insecure': want one value, not a list" "$work/n.err" || fail "nested: $(cat "$work/n.err")"
KURRENTDB_NODE_PORT=70000 "$ANNAL" serve --data "$work/s" --insecure 2>"$work/p.err" && fail "port 70000 accepted"
grep -q "for node-port (from KURRENTDB_NODE_PORT)" "$work/p.err" || fail "bad env value: $(cat "$work/p.err")"
"$ANNAL" serve --data "$work/s" --config "$work/none.yaml" 2>"$work/m.err" && fail "missing config file accepted"
grep -q "cannot read config file" "$work/m.err" || fail "missing file: $(cat "$work/m.err")"
# Unknown KurrentDB variables are warned about, not fatal (one environment serves both).
got=$(serve "$work/9.log" KURRENTDB_CLUSTER_SIZE=1 KURRENTDB_INSECURE=true KURRENTDB_NODE_PORT="$p_kdb" -- --data "$work/s")
[ "$got" = "$p_kdb" ] || fail "with an unknown KurrentDB variable: $got"
grep -q "ignoring KURRENTDB_CLUSTER_SIZE" "$work/9.log" || fail "unknown KurrentDB variable not warned about"

# Secrets: set from the file, the environment and a flag; never in any log or error.
got=$(serve "$work/10.log" KURRENTDB_DEFAULT_OPS_PASSWORD=env-secret-0xB2 -- --data "$work/s" --config "$work/annal.yaml" --default-admin-password flag-secret-0xC3)
grep -q "default-admin-password = \*\*\*\* (flag --default-admin-password)" "$work/10.log" || fail "secret setting not logged masked: $(cat "$work/10.log")"
KURRENTDB_DEFAULT_ADMIN_PASSWORD="" "$ANNAL" serve --data "$work/s" --insecure 2>"$work/e.err" && fail "empty password accepted"
if grep -l -e "0xA1" -e "0xB2" -e "0xC3" "$work"/*.log "$work"/*.err; then fail "a secret reached a log"; fi
echo "ok: config sources, precedence, errors, secrets"
