#!/usr/bin/env bash
# The cluster stage of scripts/test.sh: weatherflow against Kafka as users run it.
#
#   1. A 3-node KRaft cluster of its own (scripts/services.sh up --brokers 3): the pipeline
#      (fetch → persist --until-idle → analytics) with replication factor 3 and min.insync.replicas 2,
#      and `weatherflow check` warning about RF=1.
#   2. On that cluster, a backlog of 500,100 observations drained by three `weatherflow consumer`
#      processes while a fetch runs every second: the broker leading most partitions is SIGKILLed and
#      started again, one consumer leaves and another joins, then all three brokers restart in turn. End
#      state, checked with SQL against what the fetch runs reported as acknowledged: nothing lost,
#      nothing twice, every message on the topic stored exactly once.
#   3. ZooKeeper-mode Kafka 3.9.2 (scripts/services.sh up --zookeeper): the pipeline again.
#
# Its servers use ports and a state directory of their own (below), so the shared broker on 9092 is
# not touched; they are stopped when the stage ends, failed or not. PostgreSQL is the shared server:
# each part makes its own database and drops it.
#   SERVICES_TEST_CLUSTER_PORT (19092; nodes on +0, +2, +4)  SERVICES_TEST_CLUSTER_CONTROLLER_PORT (19093)
#   SERVICES_TEST_ZOOKEEPER_PORT (12181)  SERVICES_TEST_ZOOKEEPER_KAFKA_PORT (19192)
#   SERVICES_TEST_CLUSTER_STATE (state, default $SERVICES_CACHE/test-cluster)
#   SERVICES_JARS (the jar cache, shared with scripts/services.sh)  SERVICES_BIN (a built binary)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
STATE="${SERVICES_TEST_CLUSTER_STATE:-$CACHE/test-cluster}"
JARS="${SERVICES_JARS:-$CACHE}"
PORT="${SERVICES_TEST_CLUSTER_PORT:-19092}"
CONTROLLER_PORT="${SERVICES_TEST_CLUSTER_CONTROLLER_PORT:-19093}"
ZK_PORT="${SERVICES_TEST_ZOOKEEPER_PORT:-12181}"
ZK_KAFKA_PORT="${SERVICES_TEST_ZOOKEEPER_KAFKA_PORT:-19192}"
BACKLOG_LOCATIONS=100
BACKLOG_HOURS=1250            # 100 locations x (1250 h x 4 + 1) observations = 500,100
TICK_LOCATIONS=12             # per fetch; enough that every fetch writes to most partitions
FAILOVER_BOUND_SECS=30        # every partition owned again within this after a consumer leaves (and one joins)
BACKLOG=$((BACKLOG_LOCATIONS * (BACKLOG_HOURS * 4 + 1)))
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
RUN="$(date +%s)-$$"
WORK="$STATE/run"
stage_start=$SECONDS

say() { printf '[cluster %3ds] %s\n' $((SECONDS - stage_start)) "$*"; }
# The reason is said again after the logs when the stage ends, so a reader of the output's tail (CI's
# excerpt) sees it; a command that failed outside fail() (set -e) is named by the ERR trap.
FAILURE=""
fail() { FAILURE="$*"; say "FAILED: $*"; exit 1; }
trap 'FAILURE="${FAILURE:-line $LINENO: \`$BASH_COMMAND\` exited with status $?}"' ERR

# scripts/services.sh on this stage's ports and state; the ZooKeeper/Kafka override variables of the
# caller's shell are not this stage's business. A broker restarted after SIGKILL recovers its logs
# first; on a busy 2-core machine that took more than the 90 s a person waits by default.
svc() {
  env -u KAFKA_BROKER_ID -u KAFKA_ZOOKEEPER_CONNECT -u KAFKA_ADVERTISED_LISTENERS -u KAFKA_LISTENERS \
    -u KAFKA_LISTENER_SECURITY_PROTOCOL_MAP -u ZOOKEEPER_TICK_TIME \
    SERVICES_CACHE="$STATE" SERVICES_JARS="$JARS" SERVICES_KAFKA_PORT="$PORT" \
    SERVICES_KAFKA_CONTROLLER_PORT="$CONTROLLER_PORT" ZOOKEEPER_CLIENT_PORT="$ZK_PORT" \
    SERVICES_ZOOKEEPER_KAFKA_PORT="$ZK_KAFKA_PORT" \
    SERVICES_KAFKA_START_TIMEOUT="${SERVICES_KAFKA_START_TIMEOUT:-300}" scripts/services.sh "$@"
}
# Kafka's own admin tools (topics, consumer groups), from the jars services.sh fetched.
ktool() { timeout 60 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$JARS/kafka-$KAFKA_VERSION/libs/*" "$@" 2>/dev/null; }

# ---------------------------------------------------------------- clean-up, always
PIDS=()
DATABASES=()
PG_URL="${DATABASE_URL:-postgres://weatherflow:${SERVICES_PG_PASSWORD:-weatherflow}@127.0.0.1:5432/weatherflow}"
PG_BASE="${PG_URL%/*}"
# psql gets the URL without its password, which goes in PGPASSWORD: arguments are readable by any
# local user in ps. (The weatherflow processes get the whole URL in DATABASE_URL, an environment
# variable.)
pg_userinfo="${PG_BASE#*://}"; pg_userinfo="${pg_userinfo%%@*}"
if [ "$pg_userinfo" != "${pg_userinfo#*:}" ]; then
  export PGPASSWORD="${pg_userinfo#*:}"
  PG_PUBLIC="${PG_BASE/"$pg_userinfo@"/"${pg_userinfo%%:*}@"}"
else
  PG_PUBLIC="$PG_BASE"
fi
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$PG_PUBLIC/postgres" "$@"; }
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$PG_PUBLIC/$1" -c "$2"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Every step below runs, whatever the one before it did.
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ $rc != 0 ]; then
    say "logs of the failed stage:"
    for f in "$WORK"/*.log "$STATE"/state/cluster/node-*/broker.log "$STATE"/state/zookeeper/*/*.log; do
      [ -f "$f" ] || continue
      echo "== $f"; grep -E 'ERROR|WARN|error|FAILED' "$f" | tail -n 8
    done
  fi
  svc down kafka >/dev/null 2>&1 || say "warning: scripts/services.sh down did not finish cleanly"
  [ $rc = 0 ] || say "FAILED: ${FAILURE:-interrupted or killed}"
  for db in "${DATABASES[@]}"; do psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; done
  say "stage finished in $((SECONDS - stage_start)) s (rc $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets DB to a new database of this run (not in a subshell: the clean-up must know it).
new_database() {
  DB="wf_cluster_${1}_${RUN//-/_}"
  psql_admin -c "CREATE DATABASE \"$DB\""
  DATABASES+=("$DB")
}
# Waits until the command succeeds, at most $1 seconds.
wait_for() {
  local limit="$1" what="$2" t0=$SECONDS; shift 2
  until "$@"; do
    [ $((SECONDS - t0)) -le "$limit" ] || fail "$what: not within $limit s"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- the binary and the state
if [ -n "${SERVICES_BIN:-}" ]; then wf="$SERVICES_BIN"
else cargo build -q -p weatherflow --locked; wf="$CARGO_TARGET_DIR/debug/weatherflow"; fi
# Servers of an earlier run of this stage that was killed before its clean-up.
svc down kafka >/dev/null 2>&1 || true
rm -rf "$STATE/state" "$WORK"; mkdir -p "$WORK"

# Environment of one weatherflow process against database $1 and topic suffix $2 (plus the Kafka
# settings already exported).
wf_env() {
  export DATABASE_URL="$PG_BASE/$1"
  export WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC="weather.cluster.$2.$RUN"
  export WEATHERFLOW_KAFKA_DLQ_TOPIC="weather.cluster.$2.$RUN.dlq"
  export WEATHERFLOW_KAFKA_CONSUMER_GROUP="weatherflow-cluster-$2-$RUN"
}

# fetch → persist --until-idle → analytics on the current settings; checks the rows.
pipeline() {
  local name="$1"
  new_database "$name"
  local db="$DB"
  wf_env "$db" "$name"
  "$wf" migrate up >"$WORK/$name-migrate.log" 2>&1 || fail "$name: migrate (see $WORK/$name-migrate.log)"
  "$wf" run fetch --source simulated --backfill-hours 48 --location London --location Paris --location Tokyo \
    >"$WORK/$name-fetch.log" 2>&1 || fail "$name: fetch"
  "$wf" run persist --until-idle >"$WORK/$name-persist.log" 2>&1 || fail "$name: persist"
  "$wf" run analytics >"$WORK/$name-analytics.log" 2>&1 || fail "$name: analytics"
  local rows fits
  rows="$(sql "$db" "SELECT count(*) FROM observations")"
  fits="$(sql "$db" "SELECT count(*) FROM regression_results")"
  [ "$rows" = $((3 * (48 * 4 + 1))) ] || fail "$name: $rows observations stored, expected $((3 * 193))"
  [ "$fits" -ge 1 ] || fail "$name: analytics stored no regression result"
  say "$name: pipeline ok ($rows observations, $fits regression results)"
}

# ================================================================ 1. the 3-node cluster
t=$SECONDS
svc up --brokers 3 kafka >"$WORK/cluster-up.log" 2>&1 || { cat "$WORK/cluster-up.log"; fail "cluster start"; }
say "3-node KRaft cluster up in $((SECONDS - t)) s"
BOOTSTRAP="127.0.0.1:$PORT,127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 4))"
export KAFKA_BOOTSTRAP_SERVERS="$BOOTSTRAP"

# (Output captured first: `grep -q` closing the pipe early would fail the command under pipefail.)
out="$(WEATHERFLOW_KAFKA_REPLICATION_FACTOR=1 "$wf" check 2>&1)" || fail "check failed: $out"
grep -q "WARNING: 3 brokers" <<<"$out" || fail "check did not warn about replication factor 1 on 3 brokers: $out"
export WEATHERFLOW_KAFKA_REPLICATION_FACTOR=3 WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS=2
out="$("$wf" check 2>&1)" || fail "check failed: $out"
if grep -q WARNING <<<"$out"; then fail "check warned with replication factor 3: $out"; fi
say "check warns on RF=1 over 3 brokers, and not on RF=3"

pipeline kraft3
topic_desc="$(ktool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --describe \
  --topic "$WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC")"
grep -q "ReplicationFactor: 3" <<<"$topic_desc" || fail "topic not created with 3 replicas: $topic_desc"
grep -q "min.insync.replicas=2" <<<"$topic_desc" || fail "topic has no min.insync.replicas=2: $topic_desc"
say "kraft3: topics have replication factor 3 and min.insync.replicas 2"

# ================================================================ 2. failures under a backlog
new_database chaos
wf_env "$DB" chaos
TOPIC="$WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC" GROUP="$WEATHERFLOW_KAFKA_CONSUMER_GROUP"
"$wf" migrate up >"$WORK/chaos-migrate.log" 2>&1 || fail "chaos: migrate"

locations=()
for i in $(seq -w 1 $BACKLOG_LOCATIONS); do locations+=(--location "bl-$i"); done
t=$SECONDS
"$wf" run fetch --source simulated --backfill-hours $BACKLOG_HOURS "${locations[@]}" >"$WORK/backlog-fetch.log" 2>&1 \
  || fail "the backlog fetch failed"
say "backlog: $BACKLOG observations produced and acknowledged in $((SECONDS - t)) s"

# Partition → leader of the observations topic.
leaders() {
  ktool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --describe --topic "$TOPIC" \
    | sed -n 's/.*Partition: \([0-9]*\).*Leader: \([-0-9a-z]*\).*/\1 \2/p'
}
# Consumer group rows "partition log-end-offset lag consumer-id" of the observations topic.
group_rows() {
  ktool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$BOOTSTRAP" \
    --describe --group "$GROUP" | awk -v t="$TOPIC" '$2 == t { print $3, $5, $6, $7 }'
}
rows_now() { sql "$DB" "SELECT count(*) FROM observations"; }

# A fetch every second, or as soon as the one before has finished when it takes longer (the fetch
# lock allows one run at a time); each run's exit status is what it reported.
ticker() {
  local n=0 next
  while [ ! -f "$WORK/stop-ticker" ]; do
    n=$((n + 1)); next=$((SECONDS + 1))
    local args=() k
    for k in $(seq 1 $TICK_LOCATIONS); do args+=(--location "tick-$n-$k"); done
    local started; started="$(date +%s.%N)"
    if "$wf" run fetch --source simulated "${args[@]}" >>"$WORK/ticker.log" 2>&1; then rc=0; else rc=$?; fi
    echo "$n $rc $started $(date +%s.%N)" >>"$WORK/ticks"
    while [ $SECONDS -lt $next ]; do sleep 0.1; done
  done
}
: >"$WORK/ticks"
ticker & PIDS+=($!); TICKER=$!

# One writer each, so that three processes drain the backlog slowly enough for every failure below to
# happen while it lasts.
start_consumer() {
  RUST_LOG=info WEATHERFLOW_PERSIST_WRITERS=1 "$wf" consumer >>"$WORK/consumer-$1.log" 2>&1 &
  PIDS+=($!); eval "CONSUMER_$1=$!"
}
for c in 1 2 3; do start_consumer $c; done
say "three consumers and a fetch every second started"

rows_at_least() { [ "$(rows_now)" -ge "$1" ]; }
wait_for 120 "the consumers storing their first rows" rows_at_least 10000
# The broker leading most partitions of the topic.
layout="$(leaders)"
victim="$(awk '{ c[$2]++ } END { for (b in c) print c[b], b }' <<<"$layout" | sort -rn | head -n1 | awk '{ print $2 }')"
[ -n "$victim" ] || fail "no leader found for $TOPIC"
led="$(awk -v v="$victim" '$2 == v { print $1 }' <<<"$layout" | tr '\n' ' ')"
say "SIGKILL node $victim, leader of partitions $led; $(rows_now) of $BACKLOG+ stored"
kill_at="$(date +%s.%N)"
svc stop-broker "$victim" --kill >/dev/null
# Re-election: no partition led by the dead node any more.
new_leaders() { ! leaders | awk -v v="$victim" '$2 == v || $2 == "none" { bad = 1 } END { exit !bad }'; }
wait_for 60 "new leaders for node $victim's partitions" new_leaders
elected_at="$(date +%s.%N)"
# Producers resumed: the first fetch run started after the kill that reported success.
fetch_resumed() {
  resumed_at="$(awk -v k="$kill_at" '$2 == 0 && $3 > k { print $4; exit }' "$WORK/ticks")"
  [ -n "$resumed_at" ]
}
wait_for 150 "a successful fetch after the kill" fetch_resumed
RESUME_ELECT="$(awk -v a="$kill_at" -v b="$elected_at" 'BEGIN { printf "%.1f", b - a }')"
RESUME_FETCH="$(awk -v a="$kill_at" -v b="$resumed_at" 'BEGIN { printf "%.1f", b - a }')"
say "time to resume after the leader's loss: new leaders in $RESUME_ELECT s, first acknowledged fetch $RESUME_FETCH s after the kill"

t=$SECONDS
svc start-broker "$victim" >/dev/null || fail "node $victim did not come back"
say "node $victim back and in sync in $((SECONDS - t)) s; $(rows_now) stored"
say "consumer 1 leaves, consumer 4 joins; $(rows_now) of $BACKLOG+ stored"
left_at="$(date +%s.%N)"
kill -TERM "$CONSUMER_1"; wait "$CONSUMER_1" || fail "consumer 1 did not stop cleanly"
start_consumer 4
# When the group gave consumer 4 its share: the consumer logs it, so the figure does not include the
# admin tool's own start-up.
assigned() {
  local line
  line="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/consumer-4.log" | grep -m1 'partitions assigned')" || return 1
  assigned_at="$(date -d "${line%% *}" +%s.%N)"
}
wait_for 120 "consumer 4 getting partitions" assigned
REBALANCE="$(awk -v a="$left_at" -v b="$assigned_at" 'BEGIN { printf "%.1f", b - a }')"
all_owned() {
  owned="$(group_rows)"
  [ "$(wc -l <<<"$owned")" -ge 6 ] && ! awk '$4 == "-" { bad = 1 } END { exit !bad }' <<<"$owned"
}
owned=""
wait_for 120 "every partition owned" all_owned
awk -v r="$REBALANCE" -v b="$FAILOVER_BOUND_SECS" 'BEGIN { exit !(r <= b) }' \
  || fail "the group took $REBALANCE s to share the partitions again (bound $FAILOVER_BOUND_SECS s)"
say "every partition owned again: the group shared them with consumer 4 $REBALANCE s after consumer 1 left (bound $FAILOVER_BOUND_SECS s); $(rows_now) stored"

for n in 1 2 3; do
  t=$SECONDS
  svc stop-broker "$n" >/dev/null
  svc start-broker "$n" >/dev/null || fail "node $n did not come back in the rolling restart"
  say "rolling restart: node $n restarted and in sync in $((SECONDS - t)) s; $(rows_now) stored"
done

touch "$WORK/stop-ticker"; wait "$TICKER" || true
t=$SECONDS
while :; do
  g="$(group_rows)"
  if [ -n "$g" ] && awk '$3 !~ /^[0-9]+$/ { bad = 1 } { lag += $3 } END { exit !(NR >= 6 && !bad && lag == 0) }' <<<"$g"; then break; fi
  [ $((SECONDS - t)) -le 120 ] || fail "the group did not catch up: $g"
  sleep 1
done
say "drained $((SECONDS - t)) s after the last fetch"
for c in 2 3 4; do pid="CONSUMER_$c"; kill -TERM "${!pid}"; wait "${!pid}" || fail "consumer $c did not stop cleanly"; done

# ---------------------------------------------------------------- the end state
ticks_total="$(wc -l <"$WORK/ticks")"
ticks_ok="$(awk '$2 == 0' "$WORK/ticks" | wc -l)"
sql "$DB" "CREATE TABLE acknowledged_ticks (n int PRIMARY KEY)"
awk '$2 == 0 { print $1 }' "$WORK/ticks" | psql -X -q -v ON_ERROR_STOP=1 "$PG_PUBLIC/$DB" -c "\copy acknowledged_ticks FROM STDIN"
rows="$(rows_now)"
backlog_rows="$(sql "$DB" "SELECT count(*) FROM observations WHERE location_name LIKE 'bl-%'")"
lost_ticks="$(sql "$DB" "WITH got AS (SELECT split_part(location_name, '-', 2)::int AS n, count(*) AS c
  FROM observations WHERE location_name LIKE 'tick-%' GROUP BY 1)
  SELECT coalesce(sum($TICK_LOCATIONS - coalesce(c, 0)), 0) FROM acknowledged_ticks LEFT JOIN got USING (n)")"
dup_rows="$(sql "$DB" "SELECT count(*) FROM (SELECT 1 FROM observations GROUP BY location_key, observed_at, source HAVING count(*) > 1) d")"
rejected="$(sql "$DB" "SELECT count(*) FROM rejected_records")"
on_topic="$(group_rows | awk '{ s += $2 } END { print s }')"
lost=$((BACKLOG - backlog_rows + lost_ticks))
say "end state: $rows rows; $ticks_ok of $ticks_total fetch runs reported success; lost $lost; duplicate rows $dup_rows; rejected $rejected; $on_topic messages on the topic"
[ "$lost" = 0 ] || fail "$lost acknowledged observations are missing ($((BACKLOG - backlog_rows)) of the backlog, $lost_ticks of the fetch runs)"
[ "$dup_rows" = 0 ] || fail "$dup_rows observations stored twice"
[ "$rejected" = 0 ] || fail "$rejected records rejected"
# Every message on the topic (a producer retry that was not de-duplicated would be one more) was
# stored exactly once.
[ "$on_topic" = "$rows" ] || fail "$on_topic messages on the topic but $rows rows stored"
[ "$ticks_ok" -ge 10 ] || fail "only $ticks_ok fetch runs succeeded"
svc down kafka >/dev/null

# ================================================================ 3. ZooKeeper mode, Kafka 3.9.2
t=$SECONDS
svc up --zookeeper kafka >"$WORK/zookeeper-up.log" 2>&1 || { cat "$WORK/zookeeper-up.log"; fail "ZooKeeper-mode start"; }
say "ZooKeeper 3.8.4 + Kafka 3.9.2 up in $((SECONDS - t)) s"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$ZK_KAFKA_PORT" WEATHERFLOW_KAFKA_REPLICATION_FACTOR=1
unset WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS
pipeline zookeeper

say "PASSED: resume after the leader's loss $RESUME_FETCH s (leaders re-elected in $RESUME_ELECT s); partitions shared again $REBALANCE s after a consumer left; 0 lost, 0 duplicates"
