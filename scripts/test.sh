#!/usr/bin/env bash
# The project's test command (README "Quick start", command 2; `.ci/run` calls it).
# Installs and starts the services when needed, then: rustfmt, the notebook-outputs check, clippy
# -D warnings, cargo deny (bans, licenses, sources), the compose files' validation (and their shared
# fetch settings: scripts/check-compose-fetch-env.py), the whole test
# suite against the real Kafka broker and PostgreSQL, then the stages that need services or data of
# their own (the OpenAPI document fuzzed by schemathesis against a live server: scripts/test-openapi.sh;
# the analysis notebook on the demo's data: scripts/test-notebook.sh; the secured broker and
# PostgreSQL: scripts/test-secure.sh; the Kafka clusters: scripts/test-cluster.sh; the fault stage,
# consumer, broker and PostgreSQL kills, database refusals, a deleted dead-letter topic and a silent
# database connection, each striking records in flight: scripts/test-faults.sh; the compose files
# run for real on a local Docker engine: scripts/test-compose.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }
start=$SECONDS

step "services"
scripts/services.sh up

# rdkafka's `ssl` feature builds librdkafka against the system OpenSSL.
if ! pkg-config --exists openssl 2>/dev/null; then
  echo "installing Debian's libssl-dev and pkg-config (librdkafka's TLS and SASL)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all --check

step "no import circles and no upward imports in jobs/src (scripts/import-graph.py)"
python3 scripts/import-graph.py --check

step "notebooks are committed without outputs"
python3 scripts/check_notebook_clean.py notebooks/*.ipynb

step "cargo clippy -D warnings (the product, then the library with the benchmarks' feature)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# `--features bench` changes only the library; checking it with its unit tests (the test profile)
# reuses the dependencies checked above.
cargo clippy -p weatherflow --lib --profile test --all-features --locked -- -D warnings

step "cargo deny check bans licenses sources (offline; policy in deny.toml)"
# cargo-deny lives in a cache outside the checkout, installed once (a few minutes on 2 cores).
DENY_ROOT="${SERVICES_CACHE:-$HOME/.cache/weatherflow}/tools"
export PATH="$PATH:$DENY_ROOT/bin"
if ! command -v cargo-deny >/dev/null; then
  echo "installing cargo-deny into $DENY_ROOT"
  cargo install --locked cargo-deny --root "$DENY_ROOT"
fi
# `cargo metadata` (which cargo-deny reads) needs every platform's crates, not only those a build
# downloads: a fresh machine lacks e.g. android_system_properties. `cargo fetch` gets them all.
cargo fetch --locked
cargo deny --offline --locked check bans licenses sources

step "docker-compose config -q (the files parse; scripts/test-compose.sh runs them at the end)"
if ! command -v docker-compose >/dev/null; then
  echo "installing Debian's docker-compose (it parses compose files without an engine)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null
fi
for file in docker-compose*.yml; do
  docker-compose --env-file .env.example -f "$file" config -q
  echo "$file is valid"
  # Every service that can start a fetch sees the same key and fetch settings (docs/operations.md).
  # Debian's python3 has PyYAML: docker-compose depends on python3-yaml.
  docker-compose --env-file .env.example -f "$file" config | /usr/bin/python3 scripts/check-compose-fetch-env.py "$file"
done

# The envelope_schema test checks docs/schema/envelope.v1.json with a validator that is not ours:
# Debian's python3-jsonschema (docker-compose depends on it; installed here should that change).
if ! /usr/bin/python3 -c "import jsonschema" 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-jsonschema >/dev/null
fi

step "web tools (prometheus, chromium, nginx, wrk) and nginx -t on deploy/nginx"
scripts/web-tools.sh
nginx_prefix="$(mktemp -d)"
nginx -t -p "$nginx_prefix" -e stderr -c "$PWD/deploy/nginx/nginx.conf"
rm -rf "$nginx_prefix"

step "promtool: the Prometheus configuration, its alerting rules and their unit tests (deploy/prometheus)"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts.test.yml

step "cargo test --workspace, then the benchmarks' unit tests (--features bench)"
cargo test --workspace --locked
cargo test -p weatherflow --lib --all-features --locked bench::

step "OpenAPI stage: the document validated, the served one equal to it, schemathesis against a live serve on a database of its own (scripts/test-openapi.sh)"
SERVICES_BIN="$CARGO_TARGET_DIR/debug/weatherflow" scripts/test-openapi.sh

step "the demo pipeline, then the notebook headless against it (database and topics of its own)"
SERVICES_BIN="$CARGO_TARGET_DIR/debug/weatherflow" scripts/test-notebook.sh

step "secured connections (scripts/test-secure.sh: its own SASL_SSL broker and TLS PostgreSQL)"
scripts/test-secure.sh

step "cluster stage: a 3-node KRaft cluster and ZooKeeper-mode Kafka 3.9.2 of its own (scripts/test-cluster.sh)"
scripts/test-cluster.sh

step "fault stage: kills, restarts, refusals, a deleted dead-letter topic and a silent connection, with records in flight, on a broker and PostgreSQL of its own (scripts/test-faults.sh)"
FAULTS_BIN="$CARGO_TARGET_DIR/debug/weatherflow" scripts/test-faults.sh

step "compose stage: the compose files, Dockerfiles and entrypoint run on a Docker engine of its own making, under project and ports of their own (scripts/test-compose.sh)"
scripts/test-compose.sh

echo
echo "all checks passed in $((SECONDS - start)) s"
