#!/usr/bin/env bash
# The project's test command (README "Quick start", command 2; `.ci/run` calls it).
# Installs and starts the services when needed, then: rustfmt, clippy -D warnings, the compose file's
# files' validation, the whole test suite against the real Kafka broker and PostgreSQL, then the cluster
# stage (scripts/test-cluster.sh: its own 3-node cluster and ZooKeeper-mode broker, on ports of its own).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }
start=$SECONDS

step "services"
scripts/services.sh up

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docker-compose config -q (validation only: no Docker engine runs here)"
if ! command -v docker-compose >/dev/null; then
  echo "installing Debian's docker-compose (it parses compose files without an engine)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null
fi
for f in docker-compose*.yml; do
  docker-compose --env-file .env.example -f "$f" config -q
  echo "$f is valid"
done

step "cargo test --workspace"
cargo test --workspace --locked

step "cluster stage: a 3-node KRaft cluster and ZooKeeper-mode Kafka 3.9.2 of its own (scripts/test-cluster.sh)"
scripts/test-cluster.sh

echo
echo "all checks passed in $((SECONDS - start)) s"
