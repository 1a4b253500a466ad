# The fault stage's services and probes (sourced by scripts/test-faults.sh after its settings):
# starting and dropping its broker and PostgreSQL cluster, the consumer under test, the queries that
# say what is stored, and the checks that end every scenario.

say() { printf '[faults] %s\n' "$*"; }
fail() { printf '[faults] FAILED: %s\n' "$*" >&2; exit 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
now_ms() { date +%s%3N; }

# A Kafka command-line tool from the broker's jars (C1 only: these JVMs live for seconds).
kafka_tool() { java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$KN_LIBS/*" "$@"; }

# The consumer, the proxy, and the other processes of ours (producers, schedulers, a psql) to kill on
# exit.
CONSUMER_PID="" PROXY_PID="" SCHED_PIDS=()
cleanup() {
  local rc=$?
  [ -n "$CONSUMER_PID" ] && kill -KILL "$CONSUMER_PID" 2>/dev/null || true
  [ -n "$PROXY_PID" ] && kill -KILL "$PROXY_PID" 2>/dev/null || true
  for p in "${SCHED_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  kn_kill || true
  as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
  # The broker's data (the backlog) and the records to replay (~70 MB) go on success; on
  # failure they stay with the logs.
  if [ $rc -eq 0 ]; then rm -rf "$KN_STATE/data" "$STATE"/stream.* "$STATE/malformed.tsv"; else
    say "logs kept in $LOGS (consumer.log, proxy.log, scheduler-*.log) and $KN_STATE/broker.log"
    tail -n 20 "$LOGS/consumer.log" 2>/dev/null | sed 's/^/[faults]   consumer: /' >&2 || true
  fi
  say "services stopped; stage ended after $((SECONDS - start)) s"
  exit $rc
}

services_up() {
  rm -rf "$STATE"; mkdir -p "$STATE" "$LOGS"
  kn_start
  as_root pg_dropcluster "$PG_VER" "$PG_NAME" --stop >/dev/null 2>&1 || true
  as_root pg_createcluster "$PG_VER" "$PG_NAME" --port "$PG_PORT" >/dev/null
  as_root pg_ctlcluster "$PG_VER" "$PG_NAME" start
  until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do sleep 0.2; done
  # On standard input: a password in psql's arguments is readable by any local user in ps.
  printf '%s\n' "CREATE ROLE weatherflow LOGIN PASSWORD 'weatherflow';" "CREATE DATABASE faults OWNER weatherflow;" |
    as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null
  kn_wait_ready 90 || fail "the fault stage's broker did not start"
  say "services up: Kafka 127.0.0.1:$KN_PORT, PostgreSQL 127.0.0.1:$PG_PORT ($((SECONDS - start)) s)"
}

# Our own sessions opt out of the server-wide settings scenarios 5 and 7 impose.
psql_q() { PGOPTIONS="-c statement_timeout=0 -c default_transaction_read_only=off" PGPASSWORD=weatherflow psql -X -qtA -h 127.0.0.1 -p "$PG_PORT" -U weatherflow -d faults -c "$1"; }
# As the superuser, for the server's settings and privileges.
psql_su() { as_postgres psql -X -qtA -v ON_ERROR_STOP=1 -p "$PG_PORT" -d faults -c "$1"; }
stored() { psql_q "SELECT count(*) FROM observations"; }
rejected() { psql_q "SELECT count(*) FROM rejected_records"; }
accounted() { psql_q "SELECT (SELECT count(*) FROM observations) + (SELECT count(*) FROM rejected_records)"; }
# Grows with every stored row; cheap (two index lookups) where a count would scan.
mark() { psql_q "SELECT coalesce((SELECT max(id) FROM observations), 0) + coalesce((SELECT max(id) FROM rejected_records), 0)"; }
# Records produced and neither stored nor quarantined yet. A running producer counts the records it
# has been handed (at 1,500 a second, the few in its pipe are counted a moment early).
inflight() { echo $((TOTAL + $(streaming) - $(accounted))); }

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

# The consumer under test, with /healthz, /readyz and /metrics on $HTTP. `consumer_start` takes
# environment assignments for this start only (e.g. DATABASE_URL=... through the proxy).
consumer_start() {
  echo "=== start $(date -u +%T.%3N) $*" >>"$LOGS/consumer.log"
  env "$@" "$BIN" consumer --http "$HTTP" >>"$LOGS/consumer.log" 2>&1 & CONSUMER_PID=$!
}
consumer_kill() { kill -KILL "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }
consumer_stop() { [ -n "$CONSUMER_PID" ] || return 0; kill -TERM "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""; }
consumer_alive() { [ -n "$CONSUMER_PID" ] && kill -0 "$CONSUMER_PID" 2>/dev/null; }
# The consumer's log from line $1 on (a scenario takes `wc -l` of it when it starts).
log_since() { tail -n +"$(( $1 + 1 ))" "$LOGS/consumer.log"; }
log_lines() { wc -l <"$LOGS/consumer.log"; }
# `/readyz` as "<HTTP status> <body>"; "000" when the consumer does not answer within 6 s.
readyz() { curl -s -m 6 -o "$STATE/readyz.json" -w '%{http_code}' "http://$HTTP/readyz" || true; printf ' %s' "$(cat "$STATE/readyz.json" 2>/dev/null)"; }
# The `weatherflow_persist_outage_seconds` series of `/metrics` whose labels include all of $@.
outage_gauge() {
  local line
  { curl -s -m 6 "http://$HTTP/metrics" || true; } | { grep '^weatherflow_persist_outage_seconds{' || true; } | while read -r line; do
    local ok=1 l; for l in "$@"; do [[ $line == *"$l"* ]] || ok=0; done
    if [ $ok = 1 ]; then echo "$line"; fi
  done
}

# Milliseconds until mark() passes $1: the consumer stores again. Fails after $2 seconds (default 60),
# or at once when the consumer died. Also done when every record is stored: the consumer can store
# the last in-flight batch between the service's return and the caller's mark (CI saw it once after
# the PostgreSQL restart, with no record left to store), and the caller's check then proves it.
until_stored_past() {
  local before=$1 limit=$((${2:-60} * 1000)) t0; t0=$(now_ms)
  while [ "$(mark)" -le "$before" ] && [ "$(inflight)" -gt 0 ]; do
    consumer_alive || fail "the consumer exited (see $LOGS/consumer.log)"
    [ $(( $(now_ms) - t0 )) -lt $limit ] || fail "no row stored within $((limit / 1000)) s"
    sleep 0.05
  done
  echo $(( $(now_ms) - t0 ))
}

# Milliseconds until every record on the topic is stored or quarantined; fails after $2 s (default
# 120), naming $1.
until_drained() {
  local name=$1 limit=$((${2:-120} * 1000)) t0 got; t0=$(now_ms)
  while got=$(accounted); [ "$got" -lt "$TOTAL" ]; do
    consumer_alive || fail "$name: the consumer exited (see $LOGS/consumer.log)"
    [ $(( $(now_ms) - t0 )) -lt $limit ] || fail "$name: $((TOTAL - got)) of $TOTAL records not stored within $((limit / 1000)) s"
    sleep 0.2
  done
  [ "$got" -eq "$TOTAL" ] || fail "$name: $got rows for $TOTAL records"
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

# The checks that end every scenario: no duplicate row, on each partition every offset below the
# committed one stored (as an observation or a quarantined record): 0 lost, offsets never ahead of the
# database; and rejected_records holds exactly the $INVALID malformed records the stage produced (none
# before scenario 8), so no valid record was quarantined. Records above the committed offset are
# still in Kafka and will be read again.
check() {
  local name=$1 offs values bad dups committed quarantined
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
                      + (SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset)) FROM rejected_records)
                      + (SELECT count(*) FROM observations o JOIN rejected_records r
                           ON r.kafka_partition = o.kafka_partition AND r.kafka_offset = o.kafka_offset)")
  [ "$dups" -eq 0 ] || fail "$name: $dups duplicate rows"
  quarantined=$(psql_q "SELECT count(*) FILTER (WHERE key IS NULL OR substr(key, 1, 10) <> 'malformed-'::bytea) || ' ' || count(*)
                        FROM rejected_records")
  [ "${quarantined%% *}" -eq 0 ] || fail "$name: ${quarantined%% *} valid records quarantined in rejected_records ($(quarantine_classes))"
  [ "${quarantined##* }" -le "$INVALID" ] || fail "$name: rejected_records holds ${quarantined##* } rows, more than the $INVALID malformed records"
  say "$name: checked: 0 duplicates, 0 lost, offsets not ahead, no valid record quarantined ($committed committed, $(stored) in observations, ${quarantined##* } in rejected_records, $TOTAL on the topic)"
}

# rejected_records by class, for a failure message.
quarantine_classes() { psql_q "SELECT coalesce(string_agg(format('%s %s', error_class, n), ', '), 'none') FROM (SELECT error_class, count(*) n FROM rejected_records GROUP BY 1) x"; }
