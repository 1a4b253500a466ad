#!/usr/bin/env bash
# The fault stage (scripts/test.sh runs it after the main suite; docs/testing.md, "Fault stage"):
# weatherflow against a broker and a PostgreSQL cluster of its own, which it breaks while records are
# in flight. A backlog of FAULTS_BACKLOG (default 500,000) simulated observations is produced first;
# while `weatherflow consumer` drains it, serially:
#   1. the consumer is SIGKILLed and restarted, 10 times;
#   2. the broker is SIGKILLed and restarted;   3. the broker is stopped cleanly and restarted;
#   4. PostgreSQL is restarted in immediate mode (a crash: sessions cut, crash recovery);
#   5. the server goes read-only (default_transaction_read_only, reloaded: SQLSTATE 25006);
#   6. INSERT on observations is revoked (42501);   7. inserts wait on a lock and every statement
#      times out after 200 ms (57014);   each for FAULTS_REFUSAL_SECS (5) while a paced stream of
#      FAULTS_STREAM_RATE (1,500) records a second keeps arriving;
#   8. the dead-letter topic is deleted and malformed records arrive; it is created again;
#   9. the database connection of the consumer and of a manual analytics run goes silent
#      (scripts/lib/faults_proxy.py stops forwarding without closing) for longer than
#      persist.write_timeout_secs and the job lock's check timeout, then resumes: the run's lock check
#      must give up while it lasts;
# then the topic is drained and checked whole, and, on the stored rows,
#  10. the session holding a scheduled analytics run's advisory lock is terminated: the run must stop
#      as failed "lock lost", and no two analytics runs may overlap.
# Every fault from 2 on strikes after a fresh slice of FAULTS_SLICE records (40,000) and fails unless
# at least FAULTS_MIN_INFLIGHT (5,000) are not yet stored at that moment; each scenario prints how
# many were. After every scenario: 0 duplicate rows; on every partition each offset below the group's
# committed offset is in the database (0 lost; committed offsets never ahead of the database);
# rejected_records holds only the malformed records of scenario 8 (a valid record quarantined fails
# the stage). Refusals must show on /readyz (503), the outage gauge and the log. After the drain:
# every valid record in observations exactly once, every malformed one in rejected_records once.
#
# Own services: Kafka 127.0.0.1:29092 (controller 29093) with state under $FAULTS_STATE, PostgreSQL
# cluster 15/faults on 5433 (dropped at the end), the proxy on 25433, the consumer's /readyz and
# /metrics on 29180. Everything started here is stopped on exit, failure included. Variables:
# FAULTS_BACKLOG, FAULTS_SLICE, FAULTS_MIN_INFLIGHT, FAULTS_STREAM_RATE, FAULTS_REFUSAL_SECS,
# FAULTS_BIN (default: the debug binary of CARGO_TARGET_DIR, built if missing), FAULTS_STATE (default
# ~/.cache/weatherflow/state/faults). Helpers: scripts/lib/faults-{base,load,refusals}.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib/kafka-node.sh

STATE="${FAULTS_STATE:-${SERVICES_CACHE:-$HOME/.cache/weatherflow}/state/faults}"
export KN_LIBS="${FAULTS_KAFKA_LIBS:-$HOME/.cache/weatherflow/kafka-4.4.0/libs}"
export KN_STATE="$STATE/kafka" KN_PORT=29092 KN_CONTROLLER_PORT=29093
# A SIGKILLed consumer's partitions go to its successor when its session expires; the broker's default
# floor (6 s) would make ten kills a minute of waiting. Static membership (kafka.group_instance_id)
# is the production answer; here a 3 s session keeps the stage short. kafka-node.sh already turns the
# broker's topic auto-creation off, which scenario 8 needs: a deleted topic stays deleted.
export KN_EXTRA_PROPS="group.min.session.timeout.ms=1000"
# C1 only: the broker restarts twice, and a JVM starts faster without C2; 500,000 records need no
# peak throughput.
export KN_JAVA_OPTS="-XX:TieredStopAtLevel=1"
PG_VER=15 PG_NAME=faults PG_PORT=5433 PROXY_PORT=25433 HTTP=127.0.0.1:29180
BACKLOG="${FAULTS_BACKLOG:-500000}"
SLICE="${FAULTS_SLICE:-40000}"
MIN_INFLIGHT="${FAULTS_MIN_INFLIGHT:-5000}"
STREAM_RATE="${FAULTS_STREAM_RATE:-1500}"
REFUSAL_SECS="${FAULTS_REFUSAL_SECS:-5}"
# Some of the scenarios only, while working on one (e.g. FAULTS_SCENARIOS="5 9"); the drain and its
# checks always run.
SCENARIOS=" ${FAULTS_SCENARIOS:-1 2 3 4 5 6 7 8 9 10} "
want() { [[ $SCENARIOS == *" $1 "* ]]; }
# The stream outlasts a slice and the refusal; the silence outlasts the write timeout.
STREAM_SECS=$((REFUSAL_SECS + 5)) WRITE_TIMEOUT=5 SILENT_SECS=15 DLQ_UNAVAILABLE=5
[ "$REFUSAL_SECS" -ge 3 ] || { echo "FAULTS_REFUSAL_SECS must be at least 3" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weatherflow/target}"
BIN="${FAULTS_BIN:-$CARGO_TARGET_DIR/debug/weatherflow}"
LOGS="$STATE/logs"
TOPIC=faults-obs GROUP=faults-group
start=$SECONDS
. scripts/lib/faults-base.sh
. scripts/lib/faults-load.sh
. scripts/lib/faults-refusals.sh
trap cleanup EXIT
# A command that fails outside a check says where, instead of ending the stage without a word.
set -E
trap 'printf "[faults] FAILED: exit status %s at %s line %s\n" "$?" "${BASH_SOURCE[0]}" "$LINENO" >&2' ERR
trap 'exit 130' INT TERM

services_up
export DATABASE_URL="postgres://weatherflow:weatherflow@127.0.0.1:$PG_PORT/faults"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KN_PORT"
export WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC=$TOPIC WEATHERFLOW_KAFKA_DLQ_TOPIC=$TOPIC.dlq
export WEATHERFLOW_KAFKA_CONSUMER_GROUP=$GROUP WEATHERFLOW_KAFKA_PARTITIONS=6
export WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS=3000
export WEATHERFLOW_PERSIST_WRITE_TIMEOUT_SECS=$WRITE_TIMEOUT WEATHERFLOW_PERSIST_DLQ_UNAVAILABLE_SECS=$DLQ_UNAVAILABLE
export RUST_LOG="${RUST_LOG:-info,rdkafka=warn,sqlx=warn,sea_orm=warn}"
unset WEATHERFLOW_CONFIG
[ -x "$BIN" ] || cargo build -q -p weatherflow --bin weatherflow
"$BIN" migrate >"$LOGS/migrate.log" 2>&1 || fail "migrate (see $LOGS/migrate.log)"

# ------------------------------------------------------------------ the backlog, the stream's records
# 4 observations an hour per location (a 15-minute grid), plus the current one. One producer: a
# manual fetch run holds the fetch job's lock, so a second one would be refused.
t0=$(now_ms)
args=()
for i in $(seq 1 120); do args+=(--location "fault-$i"); done
"$BIN" run fetch --source simulated --backfill-hours $(( (BACKLOG / 120 + 3) / 4 )) "${args[@]}" >"$LOGS/fetch.log" 2>&1 &
SCHED_PIDS+=($!)
wait $! || fail "producing the backlog (see $LOGS/fetch.log)"
SCHED_PIDS=()
TOTAL=$(offsets | awk '{ s += $3 } END { print s + 0 }')
[ "$TOTAL" -ge "$BACKLOG" ] || fail "the backlog holds $TOTAL records, fewer than $BACKLOG"
say "backlog: $TOTAL records on $TOPIC (6 partitions) in $(( $(now_ms) - t0 )) ms"
# Scenarios 5-7 stream for STREAM_SECS, 9 for STREAM_SECS + SILENT_SECS - REFUSAL_SECS.
stream_prepare $(( STREAM_RATE * (4 * STREAM_SECS + SILENT_SECS - REFUSAL_SECS) ))

# ------------------------------------------------------------------ 1. consumer SIGKILLs
t0=$(now_ms)
consumer_start
ms=$(until_stored_past 0 120) || fail "the consumer stored nothing within 120 s of its start"
say "consumer started; first row stored after $ms ms"
times=()
want 1 && kills=10 || kills=0
for i in $(seq 1 $kills); do
  sleep 0.5
  left=$(inflight)
  [ "$left" -ge "$MIN_INFLIGHT" ] || fail "consumer SIGKILL $i: only $left records not yet stored (FAULTS_MIN_INFLIGHT=$MIN_INFLIGHT); raise FAULTS_BACKLOG"
  consumer_kill
  until_sessions_gone
  before=$(mark)
  consumer_start
  ms=$(until_stored_past "$before") || fail "consumer SIGKILL $i: no row stored within 60 s of the restart"
  times+=("$ms")
  say "consumer SIGKILL $i: $left records not yet stored at the kill; restart to first stored row $ms ms"
done
if want 1; then
  check "1. 10 consumer SIGKILLs"
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
  say "1. 10 consumer SIGKILLs: restart to first stored row, sorted: ${sorted}ms ($(( $(now_ms) - t0 )) ms in all)"
fi

# ------------------------------------------------------------------ 2-3. broker SIGKILL, clean restart
num=2
for mode in SIGKILL clean; do
  want $num || { num=3; continue; }
  loaded "$num. broker $mode" 0
  t0=$(now_ms)
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
  say "$num. broker $mode: $LEFT records not yet stored at the fault; broker stopped in $down ms, $drained prefetched rows stored while it was down; restarted and answering in $back ms; first row fetched from it stored $ms ms later"
  num=3
done

# ------------------------------------------------------------------ 4. PostgreSQL immediate restart
if want 4; then
  loaded "4. PostgreSQL immediate restart" 0
  t0=$(now_ms)
  as_root pg_ctlcluster "$PG_VER" "$PG_NAME" restart -m immediate
  until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.05; done
  back=$(( $(now_ms) - t0 ))
  before=$(mark)
  ms=$(until_stored_past "$before") || fail "PostgreSQL immediate restart: no row stored within 60 s"
  check "4. PostgreSQL immediate restart"
  say "4. PostgreSQL immediate restart: $LEFT records not yet stored at the fault; server accepting connections after $back ms; first row stored $ms ms later"
fi

# ------------------------------------------------------------------ 5-9. refusals, dead letters, silence
if want 5; then refusal "5. read-only" 25 read_only_on read_only_off; fi
if want 6; then refusal "6. INSERT revoked" 42 revoke_on revoke_off; fi
if want 7; then refusal "7. statement timeout" 57 timeout_on timeout_off; fi
if want 8; then dlq_deleted; fi
if want 9; then silent_connection; fi

# ------------------------------------------------------------------ the drain
t0=$(now_ms)
ms=$(until_drained "drain" 180)
sleep 1  # the last acknowledgements' commits
check "drained"
on_topic=$(offsets | awk '{ s += $3 } END { print s + 0 }')
[ "$on_topic" -eq "$TOTAL" ] || fail "drained: the topic holds $on_topic records, the stage counted $TOTAL produced"
[ "$(stored)" -eq $((TOTAL - INVALID)) ] && [ "$(rejected)" -eq "$INVALID" ] \
  || fail "drained: $(stored) in observations and $(rejected) in rejected_records for $((TOTAL - INVALID)) valid and $INVALID malformed records"
say "drained: all $((TOTAL - INVALID)) valid records in observations exactly once, the $INVALID malformed ones in rejected_records, $ms ms after the last fault's check"
consumer_stop

# ------------------------------------------------------------------ 10. lock-session kill, scheduled run
if want 10; then
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
  say "10. lock-session kill: run $running recorded failed 'lock lost' $stopped ms after its session was terminated; analytics runs $runs (a whole run, unblocked, $took ms); 0 overlapping"


fi

say "all fault scenarios passed in $((SECONDS - start)) s"
