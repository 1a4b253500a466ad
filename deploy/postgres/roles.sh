#!/bin/sh
# The compose `postgres` service's init script (/docker-entrypoint-initdb.d, run once, when the data
# volume is empty): the login roles the web and consumer services connect as (docs/security.md,
# "Database roles"), with passwords from their compose secrets. Their grants, table by table, come
# from `weatherflow migrate up` (the `migrate` service), which runs as the owner afterwards.
# A volume made before this script: run it once by hand,
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-roles.sh
set -eu

# A psql `\set NAME 'value'` line from the file $2, for standard input (never argv): in psql's
# single quotes, ' is written '' and \ is written \\; the file's trailing newline is dropped.
psql_set() {
  [ -r "$2" ] || { echo "roles.sh: $2 is not a readable file (a compose secret)" >&2; exit 64; }
  printf "\\\\set %s '%s'\n" "$1" "$(sed -e 's/\\/\\\\/g' -e "s/'/''/g" "$2")"
}

{
  psql_set web_password /run/secrets/web_db_password
  psql_set consumer_password /run/secrets/consumer_db_password
  cat <<'SQL'
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['weatherflow_web', 'weatherflow_consumer']) r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)\gexec
SELECT format('ALTER ROLE weatherflow_web LOGIN NOINHERIT PASSWORD %L', :'web_password')\gexec
SELECT format('ALTER ROLE weatherflow_consumer LOGIN NOINHERIT PASSWORD %L', :'consumer_password')\gexec
SQL
} | psql -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" >/dev/null
echo "roles.sh: roles weatherflow_web and weatherflow_consumer ready"
