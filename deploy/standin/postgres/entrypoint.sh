#!/bin/sh
# Entrypoint of the postgres:15 stand-in (deploy/standin/README.md). On an empty PGDATA it creates the
# cluster with POSTGRES_USER (default postgres) as superuser, its password POSTGRES_PASSWORD or the
# content of the file POSTGRES_PASSWORD_FILE (one is required) and the database POSTGRES_DB (default: the user's name), and allows password logins
# (scram-sha-256) from the container network, and runs /docker-entrypoint-initdb.d, as the official
# image does. The password goes through a file that is removed at once, never a command line.
set -eu

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-postgres}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"; fi
  : "${POSTGRES_PASSWORD:?the postgres stand-in needs POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE}"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode: no server listens while the database is made.
    echo "CREATE DATABASE \"$db\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  # /docker-entrypoint-initdb.d, as the official image: once, on the new cluster, in name order, with
  # a server on the Unix socket only (local logins trust); *.sh run with sh (or executed when
  # executable), *.sql through psql, stopping at the first error.
  if [ -n "$(ls -A /docker-entrypoint-initdb.d 2>/dev/null)" ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    export POSTGRES_USER="$user" POSTGRES_DB="$db"
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sh) echo "postgres stand-in: running $f"; if [ -x "$f" ]; then "$f"; else sh "$f"; fi ;;
        *.sql) echo "postgres stand-in: running $f"
          psql -v ON_ERROR_STOP=1 -q --username "$user" --dbname "$db" -f "$f" >/dev/null ;;
        *) echo "postgres stand-in: ignoring $f" ;;
      esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "postgres stand-in: initialised $PGDATA (user $user, database $db)"
fi

if [ "${1:-postgres}" = postgres ]; then
  shift || true
  exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
