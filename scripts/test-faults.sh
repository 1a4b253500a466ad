#!/usr/bin/env bash
# The fault stage (scripts/test.sh runs it after the main suite): weatherflow against a broker and a
# PostgreSQL cluster of its own, which it kills and restarts. Serially, under a backlog of simulated
# observations:
#   1. 10 consumer SIGKILLs, each followed by a restart;
#   2. a broker SIGKILL and restart;   3. a clean broker restart;
#   4. a PostgreSQL immediate-mode restart;
#   5. a lock-session kill during a scheduled run.
# Each scenario ends with 0 lost and 0 duplicate rows, and the group's committed offsets are checked
# never to be ahead of the database; each prints its records and its time to recover.
#
# Ports: Kafka 29092 (controller 29093), PostgreSQL 5433 (cluster 15/faults, dropped at the end); state
# under ~/.cache/wt-faults/state. Everything started here is stopped on exit, failure included.
#   FAULTS_BACKLOG  observations per backlog (default 500000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib/kafka-node.sh

STATE="${FAULTS_STATE:-$HOME/.cache/wt-faults/state}"
export KN_LIBS="${FAULTS_KAFKA_LIBS:-$HOME/.cache/weatherflow/kafka-4.4.0/libs}"
export KN_STATE="$STATE/kafka" KN_PORT=29092 KN_CONTROLLER_PORT=29093
PG_VER=15 PG_NAME=faults PG_PORT=5433
BACKLOG="${FAULTS_BACKLOG:-500000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
BIN="${FAULTS_BIN:-$CARGO_TARGET_DIR/debug/weatherflow}"
LOGS="$STATE/logs"
TOPIC=faults-obs GROUP=faults-group
start=$SECONDS

say() { printf '[faults] %s\n' "$*"; }
fail() { printf '[faults] FAILED: %s\n' "$*" >&2; exit 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

CONSUMER_PID=""
cleanup() {
  local rc=$?
  [ -n "$CONSUMER_PID" ] && kill -KILL "$CONSUMER_PID" 2>/dev/null || true
  for p in "${SCHED_PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  kn_stop || true
  as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
  [ $rc -eq 0 ] || { say "logs kept in $LOGS"; }
  exit $rc
}
trap cleanup EXIT INT TERM

# ------------------------------------------------------------------ services of our own
rm -rf "$STATE"; mkdir -p "$STATE" "$LOGS"
as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
as_root pg_createcluster "$PG_VER" "$PG_NAME" --port "$PG_PORT" >/dev/null
as_root pg_ctlcluster "$PG_VER" "$PG_NAME" start
until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.2; done
as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
  -c "CREATE ROLE weatherflow LOGIN PASSWORD 'weatherflow'" -c "CREATE DATABASE faults OWNER weatherflow" >/dev/null
kn_start
kn_wait_ready 90 || fail "the fault stage's broker did not start"
say "services up: Kafka 127.0.0.1:$KN_PORT, PostgreSQL 127.0.0.1:$PG_PORT ($((SECONDS - start)) s)"

export DATABASE_URL="postgres://weatherflow:weatherflow@127.0.0.1:$PG_PORT/faults"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KN_PORT"
export WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC=$TOPIC WEATHERFLOW_KAFKA_DLQ_TOPIC=$TOPIC.dlq
export WEATHERFLOW_KAFKA_CONSUMER_GROUP=$GROUP WEATHERFLOW_KAFKA_PARTITIONS=6
export RUST_LOG="${RUST_LOG:-info,rdkafka=warn,sqlx=warn,sea_orm=warn}"
unset WEATHERFLOW_CONFIG
[ -x "$BIN" ] || cargo build -q -p weatherflow --bin weatherflow
"$BIN" migrate >"$LOGS/migrate.log" 2>&1 || fail "migrate (see $LOGS/migrate.log)"

psql_q() { PGPASSWORD=weatherflow psql -X -qtA -h 127.0.0.1 -p "$PG_PORT" -U weatherflow -d faults -c "$1"; }
now_ms() { date +%s%3N; }
accounted() { psql_q "SELECT (SELECT count(*) FROM observations) + (SELECT count(*) FROM rejected_records)"; }
produced() {
  java -Xmx128m -cp "$KN_LIBS/*" org.apache.kafka.tools.GetOffsetShell --bootstrap-server "127.0.0.1:$KN_PORT" \
    --topic "$TOPIC" --time -1 2>/dev/null | awk -F: '{ s += $3 } END { print s + 0 }'
}

# A backlog of >= $BACKLOG observations under fresh location names (a new scenario, new rows).
backlog() {
  local tag=$1 n=120 hours
  hours=$(( (BACKLOG + n * 4 - 1) / (n * 4) ))
  local args=()
  for i in $(seq 1 $n); do args+=(--location "fault-$tag-$i"); done
  "$BIN" run fetch --source simulated --backfill-hours "$hours" "${args[@]}" >"$LOGS/fetch-$tag.log" 2>&1 \
    || fail "producing the $tag backlog (see $LOGS/fetch-$tag.log)"
  TOTAL=$(produced)
}

consumer_start() { "$BIN" consumer >>"$LOGS/consumer.log" 2>&1 & CONSUMER_PID=$!; }
consumer_kill() { kill -KILL "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }
consumer_stop() { kill -TERM "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }

# Milliseconds until the database holds more than $1 rows (the consumer stores again), or everything
# produced (the backlog was drained before the fault).
TOTAL=0
until_more_than() {
  local before=$1 t0 n; t0=$(now_ms)
  while n=$(accounted); [ "$n" -le "$before" ] && [ "$n" -lt "$TOTAL" ]; do
    [ $(( $(now_ms) - t0 )) -lt 60000 ] || fail "no row stored within 60 s"
    sleep 0.05
  done
  echo $(( $(now_ms) - t0 ))
}

# Offsets never ahead of the database: for every partition, each offset below the committed one is
# stored (as an observation, a rejection, or a duplicate of a stored observation); so the committed
# offset is at most one past the highest offset the database has of that partition.
check_offsets() {
  local p c top
  while read -r p c; do
    top=$(psql_q "SELECT coalesce(max(o), -1) FROM (SELECT max(kafka_offset) o FROM observations WHERE kafka_partition = $p
                  UNION ALL SELECT max(kafka_offset) FROM rejected_records WHERE kafka_partition = $p) m")
    [ "$c" -le $((top + 1)) ] || fail "partition $p: committed offset $c is ahead of the database (highest stored $top)"
  done < <(kn_committed "$GROUP" "$TOPIC")
}

# Waits until everything produced is stored, then checks 0 lost and 0 duplicates.
settle() {
  local name=$1 want got dups t0; t0=$(now_ms)
  want=$(produced)
  while got=$(accounted); [ "$got" -lt "$want" ]; do
    [ $(( $(now_ms) - t0 )) -lt 120000 ] || fail "$name: $((want - got)) of $want records lost (not stored within 120 s)"
    sleep 0.2
  done
  dups=$(psql_q "SELECT (SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset)) FROM observations)
                      + (SELECT count(*) - count(DISTINCT (location_key, observed_at)) FROM observations)")
  [ "$dups" -eq 0 ] || fail "$name: $dups duplicate rows"
  [ "$got" -eq "$want" ] || fail "$name: $got rows for $want records"
  check_offsets
  say "$name: records $want, lost 0, duplicates 0, offsets not ahead; drained $(( $(now_ms) - t0 )) ms after the fault"
}

# ------------------------------------------------------------------ 1. consumer SIGKILLs
backlog c
say "backlog: $(produced) records on $TOPIC"
consumer_start
until_more_than 0 >/dev/null
for i in $(seq 1 10); do
  sleep 1
  consumer_kill
  check_offsets
  before=$(accounted)
  consumer_start
  ms=$(until_more_than "$before") || fail "consumer SIGKILL $i: no row stored within 60 s of the restart"
  say "consumer SIGKILL $i: $before stored; restart to first stored row $ms ms"
done
settle "10 consumer SIGKILLs"

# ------------------------------------------------------------------ 2-3. broker SIGKILL, clean restart
for mode in kill clean; do
  before=$(accounted)
  backlog "b$mode"
  until_more_than "$before" >/dev/null
  if [ $mode = kill ]; then kn_kill; else kn_stop; fi
  check_offsets
  t0=$(now_ms); kn_start; kn_wait_ready 90 || fail "broker restart"
  before=$(accounted)
  ms=$(until_more_than "$before") || fail "broker $mode: no row stored within 60 s of the restart"
  say "broker $mode: back in $(( $(now_ms) - t0 - ms )) ms, first stored row $ms ms later"
  settle "broker $mode + restart"
done

# ------------------------------------------------------------------ 4. PostgreSQL immediate restart
before=$(accounted)
backlog p
until_more_than "$before" >/dev/null
t0=$(now_ms)
as_root pg_ctlcluster "$PG_VER" "$PG_NAME" restart -m immediate
until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.1; done
check_offsets
before=$(accounted)
ms=$(until_more_than "$before") || fail "PostgreSQL restart: no row stored within 60 s"
say "PostgreSQL immediate restart: server back in $(( $(now_ms) - t0 - ms )) ms, first stored row $ms ms later"
settle "PostgreSQL immediate restart"
consumer_stop

# ------------------------------------------------------------------ 5. lock-session kill, scheduled run
# Two scheduler replicas, analytics every 5 s over all stored rows (a run of a few seconds). The
# running one's lock session is terminated: it must stop as "lock lost", and no two analytics runs may
# overlap in time.
cat >"$STATE/schedules.toml" <<TOML
[fetch]
cron = "0 0 0 1 1 *"
enabled = false
[fetch.args]
locations = ["x"]
[analytics]
cron = "*/5 * * * * *"
timeout_secs = 120
retries = 0
TOML
SCHED_PIDS=()
for r in a b; do
  WEATHERFLOW_SCHEDULER_SCHEDULES_PATH="$STATE/schedules.toml" WEATHERFLOW_SCHEDULER_REPLICA="faults-$r" \
    "$BIN" scheduler --no-consumer >"$LOGS/scheduler-$r.log" 2>&1 &
  SCHED_PIDS+=($!)
done
pid=""
for _ in $(seq 1 300); do
  pid=$(psql_q "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND l.granted AND d.datname = 'faults' LIMIT 1")
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || fail "no scheduled analytics run took its lock within 30 s"
running=$(psql_q "SELECT id FROM job_runs WHERE job = 'analytics' AND status = 'running' ORDER BY id DESC LIMIT 1")
t0=$(now_ms)
psql_q "SELECT pg_terminate_backend($pid)" >/dev/null
status=""
for _ in $(seq 1 300); do
  status=$(psql_q "SELECT status || ':' || coalesce(error, '') FROM job_runs WHERE id = ${running:-0}")
  [ "${status%%:*}" != running ] && break
  sleep 0.05
done
stopped=$(( $(now_ms) - t0 ))
sleep 8
for p in "${SCHED_PIDS[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
SCHED_PIDS=()
overlaps=$(psql_q "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.id < b.id
  WHERE a.job = 'analytics' AND b.job = 'analytics' AND a.status <> 'skipped' AND b.status <> 'skipped'
    AND tstzrange(a.started_at, coalesce(a.finished_at, now())) && tstzrange(b.started_at, coalesce(b.finished_at, now()))")
runs=$(psql_q "SELECT count(*) FROM job_runs WHERE job = 'analytics' AND status <> 'skipped'")
[ "$overlaps" -eq 0 ] || fail "lock-session kill: $overlaps overlapping analytics runs"
case "$status" in
  "failed:lock lost") say "lock-session kill: run $running stopped as 'lock lost' in $stopped ms; $runs analytics runs, 0 overlapping" ;;
  *) fail "lock-session kill: run ${running:-?} ended '$status', not 'failed:lock lost'" ;;
esac
settle "lock-session kill"

say "all fault scenarios passed in $((SECONDS - start)) s"
