#!/usr/bin/env bash
# The fault stage (scripts/test.sh runs it after the main suite; docs/operations.md, "Fault stage"):
# weatherflow against a broker and a PostgreSQL cluster of its own, which it kills and restarts.
# One backlog of FAULTS_BACKLOG (default 500,000) simulated observations is produced first; while the
# consumer drains it, serially:
#   1. the consumer is SIGKILLed and restarted, 10 times;
#   2. the broker is SIGKILLed and restarted;   3. the broker is stopped cleanly and restarted;
#   4. PostgreSQL is restarted in immediate mode (a crash: sessions cut, crash recovery);
# then the backlog is drained and checked whole, and, on the stored rows,
#   5. the session holding a scheduled analytics run's advisory lock is terminated: the run must stop
#      as failed "lock lost", and no two analytics runs may overlap.
# After every scenario: 0 duplicate rows, and on every partition each offset below the group's
# committed offset is in the database (0 lost; committed offsets never ahead of the database). After
# the drain: every produced record stored exactly once. Each scenario prints its records and its time
# to recover.
#
# Own services: Kafka 127.0.0.1:29092 (controller 29093) with state under $FAULTS_STATE, PostgreSQL
# cluster 15/faults on 5433 (dropped at the end). Everything started here is stopped on exit, failure
# included. Variables: FAULTS_BACKLOG, FAULTS_BIN (default: the debug binary of CARGO_TARGET_DIR, built
# if missing), FAULTS_STATE (default ~/.cache/weatherflow/state/faults).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib/kafka-node.sh

STATE="${FAULTS_STATE:-${SERVICES_CACHE:-$HOME/.cache/weatherflow}/state/faults}"
export KN_LIBS="${FAULTS_KAFKA_LIBS:-$HOME/.cache/weatherflow/kafka-4.4.0/libs}"
export KN_STATE="$STATE/kafka" KN_PORT=29092 KN_CONTROLLER_PORT=29093
# A SIGKILLed consumer's partitions go to its successor when its session expires; the broker's default
# floor (6 s) would make ten kills a minute of waiting. Static membership (kafka.group_instance_id)
# is the production answer; here a 3 s session keeps the stage short.
export KN_EXTRA_PROPS="group.min.session.timeout.ms=1000"
# C1 only: the broker restarts twice, and a JVM starts faster without C2; 500,000 records need no
# peak throughput.
export KN_JAVA_OPTS="-XX:TieredStopAtLevel=1"
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

# The consumer, and the other processes of ours (the producer, the schedulers, a psql) to kill on exit.
CONSUMER_PID="" SCHED_PIDS=()
cleanup() {
  local rc=$?
  [ -n "$CONSUMER_PID" ] && kill -KILL "$CONSUMER_PID" 2>/dev/null || true
  for p in "${SCHED_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  kn_kill || true
  as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
  # The broker's data (the backlog, ~80 MB) goes on success; on failure it stays with the logs.
  if [ $rc -eq 0 ]; then rm -rf "$KN_STATE/data"; else
    say "logs kept in $LOGS (consumer.log, scheduler-*.log) and $KN_STATE/broker.log"
    tail -n 20 "$LOGS/consumer.log" 2>/dev/null | sed 's/^/[faults]   consumer: /' >&2 || true
  fi
  say "services stopped; stage ended after $((SECONDS - start)) s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ services of our own
rm -rf "$STATE"; mkdir -p "$STATE" "$LOGS"
kn_start
as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
as_root pg_createcluster "$PG_VER" "$PG_NAME" --port "$PG_PORT" >/dev/null
as_root pg_ctlcluster "$PG_VER" "$PG_NAME" start
until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.2; done
as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
  -c "CREATE ROLE weatherflow LOGIN PASSWORD 'weatherflow'" -c "CREATE DATABASE faults OWNER weatherflow" >/dev/null
kn_wait_ready 90 || fail "the fault stage's broker did not start"
say "services up: Kafka 127.0.0.1:$KN_PORT, PostgreSQL 127.0.0.1:$PG_PORT ($((SECONDS - start)) s)"

export DATABASE_URL="postgres://weatherflow:weatherflow@127.0.0.1:$PG_PORT/faults"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KN_PORT"
export WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC=$TOPIC WEATHERFLOW_KAFKA_DLQ_TOPIC=$TOPIC.dlq
export WEATHERFLOW_KAFKA_CONSUMER_GROUP=$GROUP WEATHERFLOW_KAFKA_PARTITIONS=6
export WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS=3000
export RUST_LOG="${RUST_LOG:-info,rdkafka=warn,sqlx=warn,sea_orm=warn}"
unset WEATHERFLOW_CONFIG
[ -x "$BIN" ] || cargo build -q -p weatherflow --bin weatherflow
"$BIN" migrate >"$LOGS/migrate.log" 2>&1 || fail "migrate (see $LOGS/migrate.log)"

psql_q() { PGPASSWORD=weatherflow psql -X -qtA -h 127.0.0.1 -p "$PG_PORT" -U weatherflow -d faults -c "$1"; }
now_ms() { date +%s%3N; }
accounted() { psql_q "SELECT (SELECT count(*) FROM observations) + (SELECT count(*) FROM rejected_records)"; }
# Grows with every stored row; cheap (two index lookups) where a count would scan.
mark() { psql_q "SELECT coalesce((SELECT max(id) FROM observations), 0) + coalesce((SELECT max(id) FROM rejected_records), 0)"; }

# "partition committed end" per partition of the topic, from `weatherflow status` (committed is
# "none" before the group's first commit there). Retried: on a loaded machine a lag request can time
# out, and the status then says "kafka unreachable".
offsets() {
  local raw parsed
  for _ in 1 2 3 4 5; do
    raw=$("$BIN" status 2>&1) || true
    parsed=$(awk '/^consumer lag/ { on = 1; next }  /^tables/ { on = 0 }
                  on && $1 ~ /^[0-9]+$/ && NF == 4 { print $1, $2, $3 }' <<<"$raw")
    [ "$(grep -c . <<<"$parsed")" -eq 6 ] && { echo "$parsed"; return; }
    printf '%s\n' "=== $(date -u +%T.%3N)" "$raw" >>"$LOGS/status.log"
    sleep 1
  done
}

consumer_start() { echo "=== start $(date -u +%T.%3N)" >>"$LOGS/consumer.log"; "$BIN" consumer >>"$LOGS/consumer.log" 2>&1 & CONSUMER_PID=$!; }
consumer_kill() { kill -KILL "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }
consumer_stop() { kill -TERM "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }
consumer_alive() { [ -n "$CONSUMER_PID" ] && kill -0 "$CONSUMER_PID" 2>/dev/null; }

# Milliseconds until mark() passes $1: the consumer stores again. Fails after $2 seconds (default 60),
# or at once when the consumer died. Also done when every record is stored: the consumer can store
# the last in-flight batch between the service's return and the caller's mark (CI saw it once after
# the PostgreSQL restart, with no record left to store), and the caller's check then proves it.
until_stored_past() {
  local before=$1 limit=$((${2:-60} * 1000)) t0; t0=$(now_ms)
  while [ "$(mark)" -le "$before" ] && [ "$(accounted)" -lt "$TOTAL" ]; do
    consumer_alive || fail "the consumer exited (see $LOGS/consumer.log)"
    [ $(( $(now_ms) - t0 )) -lt $limit ] || fail "no row stored within $((limit / 1000)) s"
    sleep 0.05
  done
  echo $(( $(now_ms) - t0 ))
}

# Waits until the database no longer grows for $1 ms (what a consumer had read is stored); echoes the
# rows stored meanwhile.
until_flat() {
  local quiet=$1 first last now since; first=$(mark); last=$first; since=$(now_ms)
  while [ $(( $(now_ms) - since )) -lt "$quiet" ]; do
    sleep 0.1; now=$(mark)
    [ "$now" = "$last" ] || { last=$now; since=$(now_ms); }
  done
  echo $((last - first))
}

# Until no session of the killed consumer is left on the server: a transaction it had sent may still
# commit until then, which would count as a row of its successor.
until_sessions_gone() {
  for _ in $(seq 1 100); do
    [ "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE datname = 'faults' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")" = 0 ] && return
    sleep 0.05
  done
}

# The checks that end every scenario: no duplicate row, and on each partition every offset below the
# committed one stored (as an observation or a quarantined record): 0 lost, offsets never ahead of the
# database. Records above the committed offset are still in Kafka and will be read again.
check() {
  local name=$1 offs values bad dups committed
  offs=$(offsets) || true
  [ "$(wc -l <<<"$offs")" -eq 6 ] || fail "$name: could not read the group's committed offsets (got: $offs)"
  values=$(awk '{ printf "%s(%d,%d)", (NR > 1 ? "," : ""), $1, ($2 == "none" ? 0 : $2) }' <<<"$offs")
  committed=$(awk '{ s += ($2 == "none" ? 0 : $2) } END { print s }' <<<"$offs")
  bad=$(psql_q "WITH c(p, upto) AS (VALUES $values),
      s AS (SELECT kafka_partition p, kafka_offset o FROM observations
            UNION ALL SELECT kafka_partition, kafka_offset FROM rejected_records)
    SELECT string_agg(format('partition %s: committed %s, %s of the offsets below it stored', p, upto, n), '; ')
    FROM (SELECT c.p, c.upto, count(DISTINCT s.o) n FROM c LEFT JOIN s ON s.p = c.p AND s.o < c.upto
          GROUP BY c.p, c.upto) x WHERE n <> upto")
  [ -z "$bad" ] || fail "$name: committed offsets ahead of the database, records lost: $bad"
  # (location_key, observed_at, source) is UNIQUE in the schema; a record stored twice would show as two rows
  # of one Kafka offset.
  dups=$(psql_q "SELECT (SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset)) FROM observations)
                      + (SELECT count(*) FROM observations o JOIN rejected_records r
                           ON r.kafka_partition = o.kafka_partition AND r.kafka_offset = o.kafka_offset)")
  [ "$dups" -eq 0 ] || fail "$name: $dups duplicate rows"
  say "$name: checked: 0 duplicates, 0 lost, offsets not ahead ($committed committed, $(accounted) stored of $TOTAL)"
}

# ------------------------------------------------------------------ the backlog
# 4 observations an hour per location (a 15-minute grid), plus the current one. One producer: a
# manual fetch run holds the fetch job's lock, so a second one would be refused.
t0=$(now_ms)
args=()
for i in $(seq 1 120); do args+=(--location "fault-$i"); done
# In the background: a signal's trap runs during `wait`, not until a foreground child has ended.
"$BIN" run fetch --source simulated --backfill-hours $(( (BACKLOG / 120 + 3) / 4 )) "${args[@]}" >"$LOGS/fetch.log" 2>&1 &
SCHED_PIDS+=($!)
wait $! || fail "producing the backlog (see $LOGS/fetch.log)"
SCHED_PIDS=()
TOTAL=$(offsets | awk '{ s += $3 } END { print s + 0 }')
[ "$TOTAL" -ge "$BACKLOG" ] || fail "the backlog holds $TOTAL records, fewer than $BACKLOG"
say "backlog: $TOTAL records on $TOPIC (6 partitions) in $(( $(now_ms) - t0 )) ms"
inflight() { echo $((TOTAL - $(accounted))); }

# ------------------------------------------------------------------ 1. consumer SIGKILLs
t0=$(now_ms)
consumer_start
ms=$(until_stored_past 0 120) || fail "the consumer stored nothing within 120 s of its start"
say "consumer started; first row stored after $ms ms"
times=()
for i in $(seq 1 10); do
  sleep 0.5
  left=$(inflight)
  consumer_kill
  until_sessions_gone
  before=$(mark)
  consumer_start
  ms=$(until_stored_past "$before") || fail "consumer SIGKILL $i: no row stored within 60 s of the restart"
  times+=("$ms")
  say "consumer SIGKILL $i: $left records not yet stored at the kill; restart to first stored row $ms ms"
done
check "1. 10 consumer SIGKILLs"
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
say "1. 10 consumer SIGKILLs: restart to first stored row, sorted: ${sorted}ms ($(( $(now_ms) - t0 )) ms in all)"

# ------------------------------------------------------------------ 2-3. broker SIGKILL, clean restart
num=2
for mode in SIGKILL clean; do
  t0=$(now_ms)
  left=$(inflight)
  if [ $mode = SIGKILL ]; then kn_kill; else kn_stop; fi
  down=$(( $(now_ms) - t0 ))
  # What the consumer had fetched before the broker went is stored without it; a row after the restart
  # is then one fetched from the restarted broker.
  drained=$(until_flat 1500)
  consumer_alive || fail "broker $mode: the consumer exited while the broker was down"
  before=$(mark) t1=$(now_ms)
  kn_start; kn_wait_ready 90 || fail "broker $mode: the broker did not come back"
  back=$(( $(now_ms) - t1 ))
  # 30 s: the client's reconnect backoff (10 s at most), a rejoin and a batch fit in it many times
  # over (0.2-9.6 s measured); a consumer that sleeps on every stale connection error does not (45 s
  # and more after a clean restart).
  ms=$(until_stored_past "$before" 30) || fail "broker $mode: no row stored within 30 s of the broker's return"
  check "$num. broker $mode"
  say "$num. broker $mode: $left records not yet stored at the fault; broker stopped in $down ms, $drained prefetched rows stored while it was down; restarted and answering in $back ms; first row fetched from it stored $ms ms later"
  num=3
done

# ------------------------------------------------------------------ 4. PostgreSQL immediate restart
left=$(inflight)
t0=$(now_ms)
as_root pg_ctlcluster "$PG_VER" "$PG_NAME" restart -m immediate
until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.05; done
back=$(( $(now_ms) - t0 ))
before=$(mark)
ms=$(until_stored_past "$before") || fail "PostgreSQL immediate restart: no row stored within 60 s"
check "4. PostgreSQL immediate restart"
if [ "$(mark)" -le "$before" ]; then
  say "4. PostgreSQL immediate restart: $left records not yet stored at the fault; server accepting connections after $back ms; every record was stored by then"
else
  say "4. PostgreSQL immediate restart: $left records not yet stored at the fault; server accepting connections after $back ms; first row stored $ms ms later"
fi

# ------------------------------------------------------------------ the drain
t0=$(now_ms)
while got=$(accounted); [ "$got" -lt "$TOTAL" ]; do
  consumer_alive || fail "the consumer exited during the drain (see $LOGS/consumer.log)"
  [ $(( $(now_ms) - t0 )) -lt 180000 ] || fail "$((TOTAL - got)) of $TOTAL records not stored within 180 s"
  sleep 0.5
done
[ "$got" -eq "$TOTAL" ] || fail "$got rows for $TOTAL records"
sleep 1  # the last acknowledgements' commits
check "drained"
say "drained: all $TOTAL records stored exactly once, $(( $(now_ms) - t0 )) ms after the last fault's check"
consumer_stop

# ------------------------------------------------------------------ 5. lock-session kill, scheduled run
# Two scheduler replicas, analytics every 5 s over all stored rows. A session of ours holds an ACCESS
# EXCLUSIVE lock on observations, so the run that starts waits on it (a long run, on any machine);
# its advisory lock's session is terminated: it must stop as "lock lost". Then our lock goes, the
# other replica must run only once the loser has stopped, and no two analytics runs may overlap.
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
PGPASSWORD=weatherflow psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U weatherflow -d faults \
  -c "BEGIN; LOCK TABLE observations IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT" >/dev/null 2>&1 &
SCHED_PIDS+=($!)
blocker=""
for _ in $(seq 1 100); do
  blocker=$(psql_q "SELECT pid FROM pg_locks WHERE relation = 'observations'::regclass AND mode = 'AccessExclusiveLock' AND granted")
  [ -n "$blocker" ] && break
  sleep 0.1
done
[ -n "$blocker" ] || fail "lock-session kill: could not lock observations"
for r in a b; do
  WEATHERFLOW_SCHEDULER_SCHEDULES_PATH="$STATE/schedules.toml" WEATHERFLOW_SCHEDULER_REPLICA="faults-$r" \
    "$BIN" scheduler --no-consumer >"$LOGS/scheduler-$r.log" 2>&1 &
  SCHED_PIDS+=($!)
done
pid="" running=""
for _ in $(seq 1 300); do
  pid=$(psql_q "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND l.granted AND d.datname = 'faults' LIMIT 1")
  running=$(psql_q "SELECT id FROM job_runs WHERE job = 'analytics' AND status = 'running' ORDER BY id DESC LIMIT 1")
  [ -n "$pid" ] && [ -n "$running" ] && break
  sleep 0.1
done
[ -n "$pid" ] && [ -n "$running" ] || fail "no scheduled analytics run took its lock within 30 s"
t0=$(now_ms)
psql_q "SELECT pg_terminate_backend($pid)" >/dev/null
status=""
for _ in $(seq 1 300); do
  status=$(psql_q "SELECT status || ':' || coalesce(error, '') FROM job_runs WHERE id = $running")
  [ "${status%%:*}" != running ] && break
  sleep 0.05
done
stopped=$(( $(now_ms) - t0 ))
case "$status" in
  "failed:lock lost") ;;
  *) fail "lock-session kill: run $running ended '$status', not 'failed:lock lost'" ;;
esac
psql_q "SELECT pg_terminate_backend($blocker)" >/dev/null
# The other replica takes the lock at a following tick; it must wait for the loser before it runs.
for _ in $(seq 1 300); do
  [ "$(psql_q "SELECT count(*) FROM job_runs WHERE job = 'analytics' AND id > $running AND status IN ('succeeded', 'failed')")" -ge 1 ] && break
  sleep 0.1
done
for p in "${SCHED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
SCHED_PIDS=()
overlaps=$(psql_q "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.id < b.id
  WHERE a.job = 'analytics' AND b.job = 'analytics' AND a.status <> 'skipped' AND b.status <> 'skipped'
    AND tstzrange(a.started_at, coalesce(a.finished_at, now())) && tstzrange(b.started_at, coalesce(b.finished_at, now()))")
runs=$(psql_q "SELECT string_agg(format('%s %s', id, status), ', ' ORDER BY id) FROM job_runs WHERE job = 'analytics' AND status <> 'skipped'")
[ "$overlaps" -eq 0 ] || fail "lock-session kill: $overlaps overlapping analytics runs ($runs)"
after=$(psql_q "SELECT count(*) FROM job_runs WHERE job = 'analytics' AND id > $running AND status = 'succeeded'")
[ "$after" -ge 1 ] || fail "lock-session kill: no analytics run succeeded after the lost one ($runs)"
took=$(psql_q "SELECT round(extract(epoch FROM min(finished_at - started_at)) * 1000) FROM job_runs WHERE job = 'analytics' AND status = 'succeeded'")
say "5. lock-session kill: run $running recorded failed 'lock lost' $stopped ms after its session was terminated; analytics runs $runs (a whole run, unblocked, $took ms); 0 overlapping"

say "all fault scenarios passed in $((SECONDS - start)) s"
