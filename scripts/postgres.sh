#!/usr/bin/env bash
# Install (Debian), start and stop a throw-away PostgreSQL server on 127.0.0.1 for the
# cluster-storage tests and local experiments. Prints the SQLAlchemy URL on `start`.
#
#   scripts/postgres.sh install   # apt-get install postgresql (when missing)
#   scripts/postgres.sh start     # initdb + start on 127.0.0.1:$PGPORT (default 54329)
#   scripts/postgres.sh stop      # stop and remove the data directory
set -euo pipefail
PGPORT=${PGPORT:-54329}
PGDATA_DIR=${PGDATA_DIR:-/tmp/autopeft-postgres}
URL="postgresql+psycopg2://postgres@127.0.0.1:${PGPORT}/autopeft"

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] || { echo "postgres.sh: PostgreSQL is not installed (run: $0 install)" >&2; exit 1; }
  echo "$d"
}

as_postgres() {
  # The server refuses to run as root; run it as the `postgres` user the package creates.
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

case "${1:-}" in
  install)
    if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      SUDO=""
      [ "$(id -u)" = 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      $SUDO apt-get install -y -qq postgresql >/dev/null
      # The package starts a system cluster on 5432; we use our own on $PGPORT.
      $SUDO service postgresql stop >/dev/null 2>&1 || true
    fi
    ;;
  start)
    BIN=$(bindir)
    rm -rf "$PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR"
    as_postgres "$BIN/initdb -D $PGDATA_DIR -U postgres --auth=trust >/dev/null"
    as_postgres "$BIN/pg_ctl -D $PGDATA_DIR -l $PGDATA_DIR/server.log -w \
      -o '-c listen_addresses=127.0.0.1 -p $PGPORT -c max_connections=200 -k /tmp' start >/dev/null"
    as_postgres "$BIN/createdb -h 127.0.0.1 -p $PGPORT -U postgres autopeft"
    echo "$URL"
    ;;
  stop)
    BIN=$(bindir)
    if [ -d "$PGDATA_DIR" ]; then
      as_postgres "$BIN/pg_ctl -D $PGDATA_DIR -m fast -w stop >/dev/null" || true
      rm -rf "$PGDATA_DIR"
    fi
    ;;
  url)
    echo "$URL"
    ;;
  *)
    echo "usage: $0 install|start|stop|url" >&2
    exit 2
    ;;
esac
