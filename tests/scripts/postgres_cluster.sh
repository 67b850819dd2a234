#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on this machine for the sweeper's tests (tests/test_studies.py:
# workers sharing one study in a database), on a port of its own: never the system's cluster on
# 5432, whose data it does not touch.
#
#   sudo tests/scripts/postgres_cluster.sh          # start (idempotent); prints the study URL
#   sudo tests/scripts/postgres_cluster.sh --stop   # stop it and delete its data
#
# Installs Debian's postgresql when initdb/pg_ctl are missing (needs root for apt-get; the server
# itself runs as the postgres user, as PostgreSQL requires). The data lives in $PG_DIR
# (default /tmp/classicnets-postgres), the URL in $PG_DIR/url, which the tests read (or set
# CLASSICNETS_TEST_POSTGRES_URL). Connections from this machine only; trust authentication: a
# test server, nothing to keep.
set -euo pipefail

PG_DIR=${PG_DIR:-/tmp/classicnets-postgres}
PORT=${PG_PORT:-55432}
DB=classicnets
say() { echo "postgres_cluster: $*" >&2; }
die() { echo "postgres_cluster: ERROR: $*" >&2; exit 1; }

find_bin() {  # Debian keeps the server's tools under /usr/lib/postgresql/<version>/bin
    local name=$1 found
    found=$(command -v "$name" 2>/dev/null || true)
    [[ -n $found ]] || found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1)
    echo "$found"
}

as_postgres() {
    if [[ $(id -un) == postgres ]]; then "$@"; else runuser -u postgres -- "$@"; fi
}

PG_CTL=$(find_bin pg_ctl)
case "${1:-}" in
    --stop)
        if [[ -n $PG_CTL && -f $PG_DIR/data/postmaster.pid ]]; then
            as_postgres "$PG_CTL" -D "$PG_DIR/data" -m fast -w stop >/dev/null && say "stopped"
        fi
        rm -rf "$PG_DIR"
        exit 0 ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1 (use --stop or nothing)" ;;
esac

if [[ -z $PG_CTL || -z $(find_bin initdb) ]]; then
    [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root"
    say "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    PG_CTL=$(find_bin pg_ctl)
fi
INITDB=$(find_bin initdb)
id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"

URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/$DB"
mkdir -p "$PG_DIR"
chown postgres "$PG_DIR"
if [[ -f $PG_DIR/data/postmaster.pid ]] && as_postgres "$PG_CTL" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    say "already running on port $PORT"
else
    if [[ ! -f $PG_DIR/data/PG_VERSION ]]; then
        as_postgres "$INITDB" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null \
            || die "initdb failed"
    fi
    # the socket in the data folder, TCP on 127.0.0.1 only
    as_postgres "$PG_CTL" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $PG_DIR/data -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
        start >/dev/null || { tail -n 20 "$PG_DIR/server.log" >&2; die "the server did not start"; }
    say "started on port $PORT (data in $PG_DIR/data, log $PG_DIR/server.log)"
fi
PSQL=$(find_bin psql)
if ! as_postgres "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    as_postgres "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE $DB" >/dev/null
fi
echo "$URL" >"$PG_DIR/url"
chmod a+r "$PG_DIR/url"
echo "$URL"
