#!/usr/bin/env bash
# The secured-connections stage of scripts/test.sh: starts a broker and a PostgreSQL cluster of its own
# with `scripts/services.sh up --secure` (SASL_SSL + SCRAM-SHA-512, PostgreSQL TLS, a local CA), runs
# the `secure` integration tests against them, and always stops and removes them again, even on
# failure. The shared services of `scripts/services.sh up` are not touched.
#
# Its own ports and state (override through the environment):
#   SECURE_STAGE_CACHE   state folder parent (default ~/.cache/weatherflow-secure-stage)
#   SECURE_STAGE_KAFKA_PORT / _CONTROLLER_PORT / _SASL_PORT   39092 / 39093 / 39094
#   SECURE_STAGE_PG_PORT   5434 (a cluster named `secure`, created and dropped here)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
STAGE="${SECURE_STAGE_CACHE:-$HOME/.cache/weatherflow-secure-stage}"
SHARED_CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
PG_PORT="${SECURE_STAGE_PG_PORT:-5434}"
PG_CLUSTER=secure
log() { printf '[test-secure] %s\n' "$*" >&2; }

# services.sh for the stage only: every setting is given to that one command, none is exported, so
# the weatherflow binary never sees the script-only variables.
svc() {
  SERVICES_CACHE="$STAGE" \
  SERVICES_KAFKA_PORT="${SECURE_STAGE_KAFKA_PORT:-39092}" \
  SERVICES_KAFKA_CONTROLLER_PORT="${SECURE_STAGE_CONTROLLER_PORT:-39093}" \
  SERVICES_KAFKA_SASL_PORT="${SECURE_STAGE_SASL_PORT:-39094}" \
  SERVICES_KAFKA_HEAP=384m \
  SERVICES_PG_PORT="$PG_PORT" SERVICES_PG_CLUSTER="$PG_CLUSTER" \
  SERVICES_PG_PASSWORD="$PG_PASSWORD" \
    scripts/services.sh "$@"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cleanup() {
  local rc=$?
  log "stopping the stage's services"
  svc down kafka || true
  if pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" -v n="$PG_CLUSTER" '$2 == n && $3 == p' | grep -q .; then
    local ver; ver="$(pg_lsclusters -h | awk -v n="$PG_CLUSTER" -v p="$PG_PORT" '$2 == n && $3 == p {print $1}')"
    as_root pg_dropcluster --stop "$ver" "$PG_CLUSTER" || true
  fi
  rm -rf "$STAGE/state"
  exit $rc
}

if pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p' | grep -v " $PG_CLUSTER " | grep -q .; then
  log "port $PG_PORT belongs to another PostgreSQL cluster; set SECURE_STAGE_PG_PORT"; exit 1
fi
trap cleanup EXIT

# Passwords of this run only, so the tests can look for them in everything they capture.
PG_PASSWORD="pg-$(openssl rand -hex 12)"
mkdir -p "$STAGE"
# The Kafka jars of the shared cache, not a second download.
kafka_dir="$(basename "$(ls -d "$SHARED_CACHE"/kafka-* 2>/dev/null | head -n1)")"
if [ -n "$kafka_dir" ] && [ ! -e "$STAGE/$kafka_dir" ]; then ln -s "$SHARED_CACHE/$kafka_dir" "$STAGE/$kafka_dir"; fi
rm -rf "$STAGE/state"

log "starting the secured services (state in $STAGE/state)"
svc up --secure
env_file="$STAGE/state/secure/test.env"
(umask 077; svc env secret >"$env_file")

# A CA that signed nothing the stage runs: the untrusted-certificate case.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=untrusted test CA" \
  -keyout "$STAGE/state/secure/untrusted-ca.key" -out "$STAGE/state/secure/untrusted-ca.pem" 2>/dev/null

log "cargo test -p weatherflow --test secure -- --ignored"
# The settings are exported by the shell itself (a builtin), so their passwords never appear in a
# process's arguments, where any local user can read them in ps.
(
  while IFS= read -r line; do
    case "$line" in '#'* | '') continue ;; esac
    export "${line?}"
  done <"$env_file"
  SECURE_STAGE_STATE="$STAGE/state/secure" \
    cargo test -p weatherflow --locked --test secure -- --ignored --test-threads 1 --nocapture
)
