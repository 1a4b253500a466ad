#!/usr/bin/env bash
# README "Quick start", command 1: the end-to-end demo on a fresh machine, in one command.
#
#   services up → migrate → check → fetch (simulated unless WEATHERAPI_KEY is set; with the simulated
#   source, 48 hours of history) → persist until the topic is drained → analytics → results + plot.
#
# Re-running it is safe: observations are de-duplicated on (location, observation time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
PLOT="${SERVICES_DEMO_PLOT:-weatherflow-demo.svg}"
step() { printf '\n==> %s\n' "$*"; }

step "starting Kafka and PostgreSQL"
scripts/services.sh up

if [ -n "${SERVICES_BIN:-}" ]; then
  wf="$SERVICES_BIN"            # a prebuilt binary (the demo's own integration test passes one)
else
  step "building weatherflow"
  cargo build -q -p weatherflow --locked
  wf="$CARGO_TARGET_DIR/debug/weatherflow"
fi

step "weatherflow migrate"
"$wf" migrate up

step "weatherflow check"
"$wf" check

if [ -n "${WEATHERAPI_KEY:-}" ]; then
  step "weatherflow run fetch (WeatherAPI.com, locations from schedules.toml)"
  "$wf" run fetch --source weatherapi
else
  step "weatherflow run fetch --source simulated --backfill-hours 48 (no WEATHERAPI_KEY set)"
  "$wf" run fetch --source simulated --backfill-hours 48
fi

step "weatherflow run persist --until-idle"
"$wf" run persist --until-idle

step "weatherflow run analytics --plot $PLOT"
"$wf" run analytics --plot "$PLOT"

step "weatherflow results"
"$wf" results --last 20

step "weatherflow runs"
"$wf" runs --last 5

cat <<MSG

Done. The regression table is above and the plot is in $PLOT.
Next:
  $wf scheduler                 # the service: fetch every 10 min, analytics nightly, consumer alongside
  $wf status                    # last runs, next fire times, consumer lag, row counts
  psql postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow   # query the tables yourself
  scripts/services.sh down      # stop Kafka and PostgreSQL
MSG
