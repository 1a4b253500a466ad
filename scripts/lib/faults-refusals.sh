# The fault stage's scenarios 5-9 (sourced by scripts/test-faults.sh): the database refuses writes
# (read-only, a revoked privilege, a statement timeout), the dead-letter topic disappears, and the
# database connection goes silent. Each strikes with at least FAULTS_MIN_INFLIGHT records not yet
# stored while a paced stream keeps more arriving, and ends with everything stored exactly once.

# What `/readyz` and `/metrics` said during the fault: sampled in the background by `during_outage`
# (a probe may wait for the database as long as its check timeout; the fault must not last longer
# for it), read by `outage_seen` after the fault.
SEEN_READY="" SEEN_GAUGE="" SAMPLER=""

# Samples `/readyz` and the outage gauge of target $1 (and label $2, e.g. class="25").
during_outage() {
  (
    readyz >"$STATE/during.ready" &
    outage_gauge "target=\"$1\"" "${2:-}" >"$STATE/during.gauge" &
    wait
  ) &
  SAMPLER=$!
}
outage_seen() {
  local body
  wait "$SAMPLER" || true
  SAMPLER=""
  body=$(cat "$STATE/during.ready")
  SEEN_READY="${body%% *} $(python3 -c 'import json, sys
try: print(json.loads(sys.argv[1]).get("checks", {}).get("persist", "no persist check"))
except ValueError: print("no JSON")' "${body#* }")"
  SEEN_GAUGE=$(head -n 1 "$STATE/during.gauge")
}

# Asserts what the consumer showed during a database refusal of SQLSTATE class $2 (scenario $1):
# `/readyz` 503 naming the persist check, the outage gauge of that class above 0, and WARN lines
# saying "database outage" in its log since line $3.
assert_outage_shown() {
  local name=$1 class=$2 from=$3 lines
  lines=$(log_since "$from" | grep -c "database outage" || true)
  say "$name: during the fault: /readyz ${SEEN_READY:-not sampled}; gauge ${SEEN_GAUGE:-absent}; $lines \"database outage\" log lines"
  [ "${SEEN_READY%% *}" = 503 ] || fail "$name: /readyz answered ${SEEN_READY%% *} during the refusal, not 503"
  [ -n "$SEEN_GAUGE" ] && awk '{ exit !($NF > 0) }' <<<"$SEEN_GAUGE" \
    || fail "$name: no weatherflow_persist_outage_seconds{target=\"database\",class=\"$class\"} above 0 during the refusal"
  [ "$lines" -gt 0 ] || fail "$name: the consumer logged no \"database outage\" line"
}

# One database refusal (scenarios 5-7): $1 number and name, $2 the SQLSTATE class expected, $3 and $4
# the functions that start and lift it. The stream runs from before the slice until after the fault.
refusal() {
  local name=$1 class=$2 on=$3 off=$4 from left t0 lifted before ms drained bad
  from=$(log_lines)
  loaded "$name" "$STREAM_SECS"; left=$LEFT
  t0=$(now_ms)
  "$on"
  sleep 2
  during_outage database "class=\"$class\""
  sleep "$((REFUSAL_SECS - 2))"
  "$off"
  lifted=$(now_ms) before=$(mark)
  outage_seen
  ms=$(until_stored_past "$before" 30) || fail "$name: no row stored within 30 s of the refusal's end"
  stream_wait
  until_drained "$name" 120 >/dev/null
  drained=$(( $(now_ms) - lifted ))
  sleep 1  # the last acknowledgements' commits
  bad=$(psql_q "SELECT count(*) FROM rejected_records WHERE error_class = 'db_rejected'")
  say "$name: $left records not yet stored at the fault, $STREAM_LINES more streamed at $STREAM_RATE/s; refused for $(( lifted - t0 )) ms; first row $ms ms after the end, all (the stream's too) $drained ms after it; $bad valid records quarantined as db_rejected"
  check "$name"
  assert_outage_shown "$name" "$class" "$from"
}

read_only_on() { psql_su "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null; psql_su "SELECT pg_reload_conf()" >/dev/null; }
read_only_off() { psql_su "ALTER SYSTEM RESET default_transaction_read_only" >/dev/null; psql_su "SELECT pg_reload_conf()" >/dev/null; }
revoke_on() { psql_su "REVOKE INSERT ON observations FROM weatherflow" >/dev/null; }
revoke_off() { psql_su "GRANT INSERT ON observations TO weatherflow" >/dev/null; }

# Inserts wait on a lock held by a session of ours, and every statement is cancelled after 200 ms:
# the writers get 57014 on every attempt. The timeout comes first: a statement keeps the timeout it
# started with, so an insert already waiting on the lock when the server reloads would wait on until
# the client's own write timeout. Our session sets its own timeout, so it keeps the lock.
LOCKER=""
timeout_on() {
  psql_su "ALTER SYSTEM SET statement_timeout = '200ms'" >/dev/null; psql_su "SELECT pg_reload_conf()" >/dev/null
  # A session reads the reloaded file before its next statement; the one running now finishes first.
  sleep 0.3
  as_postgres psql -X -q -p "$PG_PORT" -d faults -c "SET statement_timeout = 0" -c "BEGIN" \
    -c "LOCK TABLE observations IN SHARE ROW EXCLUSIVE MODE" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
  SCHED_PIDS+=($!)
  LOCKER=""
  for _ in $(seq 1 100); do
    LOCKER=$(psql_q "SELECT pid FROM pg_locks WHERE relation = 'observations'::regclass AND mode = 'ShareRowExclusiveLock' AND granted")
    [ -n "$LOCKER" ] && break
    sleep 0.05
  done
  [ -n "$LOCKER" ] || fail "statement timeout: could not lock observations"
}
timeout_off() {
  psql_su "ALTER SYSTEM RESET statement_timeout" >/dev/null; psql_su "SELECT pg_reload_conf()" >/dev/null
  psql_su "SELECT pg_terminate_backend($LOCKER)" >/dev/null
}

# 8. The dead-letter topic is deleted (the broker creates no topic on its own), malformed records
# arrive: readiness must fail naming the topic; once it is back, they are in rejected_records and on
# the topic exactly once.
dlq_deleted() {
  local name="8. dead-letter topic deleted" left t0 ready="" waited gone back dlq rows n=1000 first
  loaded "$name" 0; left=$LEFT
  t0=$(now_ms)
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --delete --topic "$TOPIC.dlq" >>"$LOGS/topics.log" 2>&1 || fail "$name: deleting $TOPIC.dlq"
  gone=$(( $(now_ms) - t0 ))
  first=$INVALID
  malformed "$n"
  t0=$(now_ms)
  # Readiness fails persist.dlq_unavailable_secs after the first send, naming the topic. A send to a
  # deleted topic fails only at the dead-letter producer's message timeout, which is no longer than
  # that setting; the bound adds 20 s for the records to be read and batched on a loaded machine.
  while :; do
    ready=$(readyz)
    [[ ${ready%% *} == 503 && $ready == *"$TOPIC.dlq"* ]] && break
    [ $(( $(now_ms) - t0 )) -lt $(( (DLQ_UNAVAILABLE + 20) * 1000 )) ] \
      || fail "$name: /readyz did not fail naming $TOPIC.dlq within $((DLQ_UNAVAILABLE + 20)) s of the malformed records (last: $ready)"
    consumer_alive || fail "$name: the consumer exited (see $LOGS/consumer.log)"
    sleep 0.5
  done
  waited=$(( $(now_ms) - t0 ))
  [ "$(rejected)" -eq "$first" ] || fail "$name: $(( $(rejected) - first )) malformed records quarantined while their dead-letter topic was gone"
  check "$name, topic gone"
  t0=$(now_ms)
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --create \
    --topic "$TOPIC.dlq" --partitions 6 --replication-factor 1 --config max.message.bytes=8388608 \
    >>"$LOGS/topics.log" 2>&1 || fail "$name: creating $TOPIC.dlq again"
  back=$(until_drained "$name" 120)
  sleep 1
  check "$name"
  # The dead-letter topic holds exactly the quarantined records, each once: the headers name the
  # source partition and offset of each.
  dlq=$(kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --topic "$TOPIC.dlq" --from-beginning --timeout-ms 15000 --formatter-property print.headers=true \
    --formatter-property print.value=false 2>"$LOGS/dlq-dump.log" \
    | sed -nE 's/.*original_partition:([0-9]+),original_offset:([0-9]+).*/\1 \2/p' | sort)
  rows=$(psql_q "SELECT kafka_partition || ' ' || kafka_offset FROM rejected_records" | sort)
  say "$name: $left records not yet stored at the fault; topic deleted in $gone ms; $n malformed records produced, /readyz 503 naming the topic $waited ms later; topic back, all stored $back ms later; on the topic: $(grep -c . <<<"$dlq") messages, $(sort -u <<<"$dlq" | grep -c .) distinct source offsets; rejected_records: $(grep -c . <<<"$rows")"
  [ "$(grep -c . <<<"$rows")" -eq "$INVALID" ] || fail "$name: rejected_records holds $(grep -c . <<<"$rows") rows for $INVALID malformed records"
  [ "$dlq" = "$rows" ] || fail "$name: the dead-letter topic and rejected_records differ: $(diff <(echo "$dlq") <(echo "$rows") | head -n 5 | tr '\n' ' ')"
  ready=$(readyz)
  [ "${ready%% *}" = 200 ] || fail "$name: /readyz still ${ready%% *} after the topic came back: ${ready#* }"
}

# 9. The database connection goes silent: a proxy of ours between weatherflow and PostgreSQL stops
# forwarding bytes both ways and ignores new connections, for longer than persist.write_timeout_secs
# and the job lock's check timeout (10 s). The consumer must notice (its outage gauge and log show the
# timeout), keep answering /healthz, and store again soon after the proxy resumes. A manual analytics
# run through the proxy, inside a query when the silence begins, must find its job lock's session
# lost while the silence lasts, and end recorded failed "lock lost" once it is over.
silent_connection() {
  local name="9. silent database connection" via from left t0 healthz resumed before ms drained timeouts
  local run_pid run="" holder="" lost_ms="" ended status healthz="not asked"
  SAMPLER=""
  via="postgres://weatherflow:weatherflow@127.0.0.1:$PROXY_PORT/faults"
  python3 scripts/lib/faults_proxy.py "$PROXY_PORT" 127.0.0.1 "$PG_PORT" 2>>"$LOGS/proxy.log" &
  PROXY_PID=$!
  from=$(log_lines)
  loaded "$name" $((STREAM_SECS + SILENT_SECS - REFUSAL_SECS)) DATABASE_URL="$via"
  left=$LEFT
  # The run's first statement waits on a lock of ours, so it is inside a query on an open
  # connection when the silence begins; the lock goes as soon as the silence has begun.
  PGPASSWORD=weatherflow psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U weatherflow -d faults \
    -c "BEGIN; LOCK TABLE observations IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT" >/dev/null 2>&1 &
  SCHED_PIDS+=($!)
  for _ in $(seq 1 100); do
    holder=$(psql_q "SELECT pid FROM pg_locks WHERE relation = 'observations'::regclass AND mode = 'AccessExclusiveLock' AND granted")
    [ -n "$holder" ] && break
    sleep 0.05
  done
  [ -n "$holder" ] || fail "$name: could not lock observations"
  DATABASE_URL="$via" "$BIN" run analytics >"$LOGS/analytics-silent.log" 2>&1 &
  run_pid=$!
  SCHED_PIDS+=("$run_pid")
  for _ in $(seq 1 300); do
    run=$(psql_q "SELECT id FROM job_runs WHERE job = 'analytics' AND status = 'running' ORDER BY id DESC LIMIT 1")
    [ -n "$run" ] && break
    sleep 0.1
  done
  [ -n "$run" ] || fail "$name: the analytics run did not start within 30 s"
  sleep 1
  t0=$(now_ms)
  kill -USR1 "$PROXY_PID"
  psql_su "SELECT pg_terminate_backend($holder)" >/dev/null
  : >"$STATE/silent.gauge"
  while [ $(( $(now_ms) - t0 )) -lt $((SILENT_SECS * 1000)) ]; do
    if [ -z "$SAMPLER" ] && [ $(( $(now_ms) - t0 )) -ge $(( (WRITE_TIMEOUT + 2) * 1000 )) ]; then
      during_outage database 'class="timeout"'
      healthz=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://$HTTP/healthz" || true)
    fi
    # The gauge's class follows the cause: "timeout" after a write timed out, then "pool" while the
    # next attempt waits for a connection. Every sample, so the timeout's stretch is seen.
    outage_gauge 'target="database"' 'class="timeout"' >>"$STATE/silent.gauge"
    if [ -z "$lost_ms" ] && grep -q "advisory lock's session is lost" "$LOGS/analytics-silent.log"; then
      lost_ms=$(( $(now_ms) - t0 ))
    fi
    sleep 0.2
  done
  kill -USR2 "$PROXY_PID"
  resumed=$(now_ms) before=$(mark)
  outage_seen
  ms=$(until_stored_past "$before" 30) || fail "$name: no row stored within 30 s of the proxy's resumption: hung"
  # The run was cancelled when its lock was lost; it closes its row once the database answers again.
  for _ in $(seq 1 300); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
  ended=$(( $(now_ms) - resumed ))
  status=$(psql_q "SELECT status || ':' || coalesce(error, '') FROM job_runs WHERE id = $run")
  stream_wait
  until_drained "$name" 120 >/dev/null
  drained=$(( $(now_ms) - resumed ))
  sleep 1
  timeouts=$(log_since "$from" | grep "database outage" | grep -ciE "timed? ?out" || true)
  say "$name: $left records not yet stored at the fault, $STREAM_LINES more streamed at $STREAM_RATE/s; silent for $(( resumed - t0 )) ms (persist.write_timeout_secs=$WRITE_TIMEOUT); /healthz $healthz while silent; first row $ms ms after the resumption, all (the stream's too) $drained ms after it; $timeouts \"database outage\" log lines on a timeout; analytics run $run: lock lost ${lost_ms:-never} ms into the silence, recorded '$status' $ended ms after it"
  check "$name"
  [ "$healthz" = 200 ] || fail "$name: /healthz answered $healthz while the connection was silent"
  [ -n "$lost_ms" ] || fail "$name: the analytics run's lock check did not give up during $(( resumed - t0 )) ms of silence (see $LOGS/analytics-silent.log)"
  [ "$status" = "failed:lock lost" ] || fail "$name: analytics run $run ended '$status', not 'failed:lock lost'"
  [ "$timeouts" -gt 0 ] || fail "$name: the consumer logged no \"database outage\" line on a timeout while its connection was silent for $(( resumed - t0 )) ms"
  # The one sample of during_outage may fall on the "pool" stretch: any sample of the silence showing
  # the timeout class above 0 counts.
  if [ -z "$SEEN_GAUGE" ] || ! awk '{ exit !($NF > 0) }' <<<"$SEEN_GAUGE"; then
    SEEN_GAUGE=$(awk '$NF > 0' "$STATE/silent.gauge" | tail -n 1)
  fi
  assert_outage_shown "$name" timeout "$from"
}
