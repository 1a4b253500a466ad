#!/usr/bin/env bash
# The OpenAPI stage of scripts/test.sh (docs/web.md, "The OpenAPI document"), on the real PostgreSQL
# and Kafka, with a database, topics and consumer group of its own, dropped on exit:
#   1. docs/schema/openapi.v1.json is a valid OpenAPI 3.1 document (openapi-spec-validator);
#   2. a scratch database gets some data through the real pipeline (a simulated fetch, persist until
#      idle, analytics, one quarantined record), and `weatherflow serve` runs on it;
#   3. the served /api/v1/openapi.json is the committed file, byte for byte;
#   4. schemathesis fuzzes every operation of the document against the live server, with every
#      check: no 5xx, every status, content type and body as documented, every out-of-bound or
#      malformed parameter answered 4xx (the document says 400 with ErrorBody, which is checked too),
#      every valid one accepted. Prints the figures (operations, cases, failures).
# The tools come from PyPI, pinned in scripts/openapi-requirements.txt, into a venv outside the checkout
# ($CACHE/venv-openapi-<hash of that file>), built once per version of the file.
# OPENAPI_MAX_EXAMPLES (default 200) bounds the cases per operation and phase; SERVICES_BIN names a
# built binary (default: cargo build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
REQUIREMENTS=scripts/openapi-requirements.txt
DOCUMENT=docs/schema/openapi.v1.json
BASE_URL="${DATABASE_URL:-postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
step() { printf '\n--> %s\n' "$*"; }
fail() { echo "test-openapi: $*" >&2; exit 1; }

# shellcheck source=scripts/lib/venv.sh
. scripts/lib/venv.sh

id="oa_$(date +%s)_$$"
db="wf_${id}"
topic="wf-${id}-obs"
group="wf-${id}-group"
work="$(mktemp -d "${TMPDIR:-/tmp}/wf-openapi.XXXXXX")"
url_for() { printf '%s' "$BASE_URL" | sed -E "s#/[^/?]*(\\?.*)?\$#/$1\\1#"; }
admin() { psql -q -v ON_ERROR_STOP=1 "$(url_for postgres)" -c "$1" >/dev/null; }
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true; fi
  admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  if [ -n "${venv:-}" ]; then
    "$venv/bin/python" scripts/lib/kafka_drop.py "$group" "$topic" "$topic.dlq" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

venv="$(cached_venv venv-openapi "$REQUIREMENTS")"
step "openapi-spec-validator $DOCUMENT"
"$venv/bin/openapi-spec-validator" "$DOCUMENT"

if [ -z "${SERVICES_BIN:-}" ]; then
  cargo build -q -p weatherflow --locked
  SERVICES_BIN="$CARGO_TARGET_DIR/debug/weatherflow"
fi
export DATABASE_URL="$(url_for "$db")" WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC="$topic" \
  WEATHERFLOW_KAFKA_DLQ_TOPIC="$topic.dlq" WEATHERFLOW_KAFKA_CONSUMER_GROUP="$group"
unset WEATHERAPI_KEY WEATHERFLOW_WEB_TOKEN

step "data in database $db: a simulated fetch (6 hours), persist until idle, analytics, a quarantined record"
started=$SECONDS
admin "CREATE DATABASE $db"
{
  "$SERVICES_BIN" migrate up
  "$SERVICES_BIN" run fetch --source simulated --backfill-hours 6
  "$SERVICES_BIN" run persist --until-idle
  "$SERVICES_BIN" run analytics
} >"$work/data.log" 2>&1 || { cat "$work/data.log"; fail "loading the data failed"; }
# A record the persist job refused, as it would quarantine one (no malformed message is produced:
# the table is what the API reads).
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "INSERT INTO rejected_records
  (kafka_topic, kafka_partition, kafka_offset, key, payload, error_class, reason)
  VALUES ('$topic', 0, 999999, 'x', '{not json', 'invalid_json', 'expected value at line 1 column 2')" >/dev/null
echo "data: $((SECONDS - started)) s; $(psql -tA "$DATABASE_URL" -c "SELECT count(*) FROM observations") observations"

step "weatherflow serve on the scratch database"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# A web.token the fuzzer is not given: POST /api/v1/runs/{job} answers 401 to it (without any token
# configured it would answer 403 to everyone), and no run starts.
WEATHERFLOW_WEB_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')" \
  "$SERVICES_BIN" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited"; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/api/v1/openapi.json" -o "$work/served.json" || fail "GET /api/v1/openapi.json failed"
cmp -s "$work/served.json" "$DOCUMENT" || fail "the served /api/v1/openapi.json is not $DOCUMENT (run scripts/gen-docs.sh)"
echo "the served document is $DOCUMENT"

step "schemathesis: every operation, every check"
started=$SECONDS
rc=0
# From the scratch directory: schemathesis and hypothesis keep their state (.schemathesis,
# .hypothesis) in the current directory, which must not be the checkout.
root="$PWD"
# One worker: schemathesis' workers are threads, and CPython 3.11's ast.parse is not safe across
# threads (hypothesis parses lambdas to describe them): two workers failed a run once with
# "SystemError: AST constructor recursion depth mismatch", a runtime error and not a finding.
(cd "$work" && "$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" \
  run "$root/$DOCUMENT" --url "http://127.0.0.1:$port" \
  --checks all --max-examples "${OPENAPI_MAX_EXAMPLES:-200}" --seed 20261207 --workers 1 \
  --request-timeout 10 --no-color --report junit --report-junit-path "$work/junit.xml") \
  >"$work/schemathesis.log" 2>&1 || rc=$?
cat "$work/schemathesis.log"
[ -s "$work/junit.xml" ] || fail "schemathesis wrote no report"
cases="$(grep -oE '[0-9]+ generated' "$work/schemathesis.log" | grep -oE '[0-9]+' || echo '?')"
"$venv/bin/python" - "$work/junit.xml" "$cases" $((SECONDS - started)) <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
ops = sum(int(s.get("tests", 0)) for s in suites)
failing = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
print(f"schemathesis figures: {ops} operations, {sys.argv[2]} cases, {failing} operations failing, {sys.argv[3]} s")
PY
[ "$rc" = 0 ] || fail "schemathesis found failures (above)"
