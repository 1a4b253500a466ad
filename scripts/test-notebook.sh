#!/usr/bin/env bash
# The analysis notebook in CI (a stage of scripts/test.sh), on the real PostgreSQL and Kafka:
#   1. the demo pipeline (scripts/demo.sh) into a database and topics of this run's own, then the
#      notebook headless against them: any cell error, or a stored-vs-scikit-learn mismatch, fails;
#   2. the notebook on an empty migrated database: must stop cleanly, saying so;
#   3. the notebook with an unreachable database: must fail with one message naming DATABASE_URL,
#      password masked.
# The databases and topics are dropped on exit, whatever happened.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
BASE_URL="${DATABASE_URL:-postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
step() { printf '\n--> %s\n' "$*"; }
fail() { echo "test-notebook: $*" >&2; exit 1; }

id="nb_$(date +%s)_$$"
demo_db="wf_${id}_demo"
empty_db="wf_${id}_empty"
topic="wf-${id}-obs"
group="wf-${id}-group"
work="$(mktemp -d "${TMPDIR:-/tmp}/wf-notebook.XXXXXX")"
# BASE_URL with its database name replaced.
url_for() { printf '%s' "$BASE_URL" | sed -E "s#/[^/?]*(\\?.*)?\$#/$1\\1#"; }
admin() { psql -q -v ON_ERROR_STOP=1 "$(url_for postgres)" -c "$1" >/dev/null; }

venv="$(scripts/notebook.sh venv)"
cleanup() {
  admin "DROP DATABASE IF EXISTS $demo_db WITH (FORCE)" || true
  admin "DROP DATABASE IF EXISTS $empty_db WITH (FORCE)" || true
  # The demo's persist job committed offsets under its group; the notebook's own group commits none.
  "$venv/bin/python" scripts/lib/kafka_drop.py "$group" "$topic" "$topic.dlq" || true
  rm -rf "$work"
}
trap cleanup EXIT

step "demo pipeline into database $demo_db, topic $topic"
admin "CREATE DATABASE $demo_db"
if [ -z "${SERVICES_BIN:-}" ]; then
  cargo build -q -p weatherflow --locked
  SERVICES_BIN="$CARGO_TARGET_DIR/debug/weatherflow"
fi
started=$SECONDS
env -u WEATHERAPI_KEY DATABASE_URL="$(url_for "$demo_db")" SERVICES_BIN="$SERVICES_BIN" \
  WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC="$topic" WEATHERFLOW_KAFKA_DLQ_TOPIC="$topic.dlq" \
  WEATHERFLOW_KAFKA_CONSUMER_GROUP="$group" SERVICES_DEMO_PLOT="$work/demo.svg" \
  scripts/demo.sh >"$work/demo.log" 2>&1 || { cat "$work/demo.log"; fail "the demo failed"; }
echo "demo: $((SECONDS - started)) s"

step "notebook on the demo's data"
started=$SECONDS
DATABASE_URL="$(url_for "$demo_db")" WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC="$topic" NOTEBOOK_REQUIRE_KAFKA=1 \
  scripts/notebook.sh run --out "$work/demo" | tee "$work/run.log"
grep -q "equals the stored global regression within 1e-9" "$work/run.log" \
  || fail "the notebook did not compare the reference fit with the stored regression"
grep -q "messages read from $topic" "$work/run.log" \
  || fail "the notebook read no messages from $topic"
for figure in distributions temperature_series correlation regression city_slopes; do
  [ -s "$work/demo/figures/$figure.png" ] || fail "figure $figure.png was not written"
done
echo "notebook: $((SECONDS - started)) s"

# The two short runs wait mostly on kernel start-up: run them side by side.
step "notebook on an empty migrated database, and with an unreachable database"
admin "CREATE DATABASE $empty_db"
DATABASE_URL="$(url_for "$empty_db")" "$SERVICES_BIN" migrate up >/dev/null
secret="not-the-password-$$"
unreachable="postgres://weatherflow:$secret@127.0.0.1:1/weatherflow"
DATABASE_URL="$(url_for "$empty_db")" scripts/notebook.sh run --out "$work/empty" >"$work/empty.log" 2>&1 &
empty_pid=$!
DATABASE_URL="$unreachable" scripts/notebook.sh run --out "$work/unreachable" >"$work/unreachable.log" 2>&1 &
unreachable_pid=$!
empty_rc=0; wait "$empty_pid" || empty_rc=$?
unreachable_rc=0; wait "$unreachable_pid" || unreachable_rc=$?

[ "$empty_rc" = 0 ] || { cat "$work/empty.log"; fail "the notebook failed on an empty database"; }
grep -q "no observations yet — run scripts/demo.sh" "$work/empty.log" \
  || { cat "$work/empty.log"; fail "no empty-database message"; }
echo "empty database: $(grep -m1 'notebook stopped' "$work/empty.log")"

[ "$unreachable_rc" != 0 ] || { cat "$work/unreachable.log"; fail "the notebook succeeded without a database"; }
grep -q "DATABASE_URL=postgres://weatherflow:\*\*\*@127.0.0.1:1/weatherflow" "$work/unreachable.log" \
  || { cat "$work/unreachable.log"; fail "the message does not name DATABASE_URL with the password masked"; }
! grep -rq "$secret" "$work/unreachable.log" "$work/unreachable" || fail "the password appears in the output"
echo "unreachable database: $(grep -m1 'notebook failed' "$work/unreachable.log")"
