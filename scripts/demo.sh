#!/usr/bin/env bash
# README "Quick start", command 1: bring the platform up and show it healthy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"

scripts/services.sh up
cargo build -q -p weatherflow --locked
wf="$CARGO_TARGET_DIR/debug/weatherflow"
"$wf" migrate up
"$wf" check
