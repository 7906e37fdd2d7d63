#!/usr/bin/env bash
# A private PostgreSQL server for the tests: `postgres.sh start` prints the SQLAlchemy URL, `postgres.sh stop`.
# Debian's postgresql package, installed if missing; it refuses to run as root, so it runs as `postgres`,
# on its own port and data directory, with fsync off (test data only).
set -euo pipefail
PGROOT=${CORRAL_PG_ROOT:-/tmp/corral-test-pg}
PGPORT=${CORRAL_PG_PORT:-55432}

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    BIN=$(find_bin)
    if [ -z "$BIN" ]; then
      if [ "$(id -u)" != 0 ]; then echo "postgres.sh: PostgreSQL is not installed and we are not root" >&2; exit 1; fi
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
      BIN=$(find_bin)
    fi
    as_postgres true 2>/dev/null || { echo "postgres.sh: no postgres user" >&2; exit 1; }
    "$0" stop >/dev/null 2>&1 || true
    rm -rf "$PGROOT"
    mkdir -p "$PGROOT"
    [ "$(id -u)" = 0 ] && chown postgres "$PGROOT"
    as_postgres "$BIN/initdb" -D "$PGROOT/data" -A trust -U postgres >/dev/null
    as_postgres "$BIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w -o \
      "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" \
      start >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
    ;;
  stop)
    BIN=$(find_bin)
    if [ -n "$BIN" ] && [ -d "$PGROOT/data" ]; then
      as_postgres "$BIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$PGROOT"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
