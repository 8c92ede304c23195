# pglib.sh -- start a throwaway PostgreSQL server for a test: initdb in a temporary
# directory (as user postgres when run as root), listening on 127.0.0.1 only, on a free
# port; stopped and deleted by pg_stop. Sourced, not run. Missing server binaries are
# installed with scripts/deps.sh when root; a server that cannot start fails the test.
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_DIR=""
PG_RUN=()

pg_start() {
    if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
        if [ "$(id -u)" = 0 ] && [ -x "$ANNAL_SRC/scripts/deps.sh" ]; then
            "$ANNAL_SRC/scripts/deps.sh" postgresql >&2 || return 1
            PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
        fi
        [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL server binaries" >&2; return 1; }
    fi
    # /tmp, not the build tree: the server's user must be able to reach its directory
    PG_DIR=$(mktemp -d /tmp/annal-pg-XXXXXX) || return 1
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$PG_DIR"
        PG_RUN=(runuser -u postgres --)
    fi
    "${PG_RUN[@]}" "$PGBIN/initdb" -D "$PG_DIR/db" -U annal --auth=trust -E UTF8 --no-instructions \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    local try port
    for try in 1 2 3 4 5 6 7 8; do
        # a random port in a range other tools here do not use, free right now
        port=$((55400 + RANDOM % 500))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
        if "${PG_RUN[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/db" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' -c fsync=off" \
            start >/dev/null 2>&1; then
            PGCONN="host=127.0.0.1 port=$port user=annal dbname=postgres"
            PGPORT_USED=$port
            return 0
        fi
    done
    cat "$PG_DIR/server.log" >&2
    return 1
}

pg_stop() {
    [ -n "$PG_DIR" ] || return 0
    "${PG_RUN[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/db" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$PG_DIR"
    PG_DIR=""
}

psql_q() { "$PGBIN/psql" -X -q -A -t -F $'\t' "$PGCONN" -c "$1"; }
