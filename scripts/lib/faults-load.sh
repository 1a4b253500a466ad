# The fault stage's load (sourced by scripts/test-faults.sh): before each fault, a fresh slice of
# records the consumer has not read yet; for the refusals, a paced stream that keeps records arriving
# while the fault lasts; malformed records for the dead-letter scenario.
#
# The consumer stores as fast as the fetch job or the console producer produce (a slice made while it
# runs is stored when the producer ends), so a slice is produced while the consumer is stopped
# (SIGTERM: it commits and leaves the group); the consumer is started again and the fault strikes
# once it has stored its first rows of the slice: the rest is in flight, read or about to be.
#
# The stream's records are made once, up front, by the fetch job's simulated source on a staging
# topic (locations "stream-<i>", stored nowhere else), dumped as "key<TAB>value" lines, and replayed by
# the Kafka console producer: a replay needs neither the fetch job nor PostgreSQL, so it goes on
# while the database refuses writes or restarts.
#
# TOTAL counts the records on the observations topic whose producer has finished, INVALID the
# malformed ones among them; `inflight` adds what a running producer has been handed so far.

TOTAL=0 INVALID=0 LEFT=0 SLICES=0 PRODUCERS=0 PRODUCER_LOG=""
STREAM_PID="" STREAM_LINES=0 STREAM_NEXT=1

# Makes $1 valid records to replay, on the staging topic, and dumps them.
stream_prepare() {
  local want=$1 locs=40 hours args=() t0 n; t0=$(now_ms)
  hours=$(( (want / locs + 3) / 4 ))
  for i in $(seq 1 $locs); do args+=(--location "stream-$i"); done
  # In the background: a signal's trap runs during `wait`, not until a foreground child has ended.
  WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC=$TOPIC.staging "$BIN" run fetch --source simulated \
    --backfill-hours "$hours" "${args[@]}" >>"$LOGS/fetch.log" 2>&1 &
  SCHED_PIDS+=($!)
  wait $! || fail "producing the records to replay (see $LOGS/fetch.log)"
  unset 'SCHED_PIDS[-1]'
  # Every location gets one observation per 15 minutes of the backfill, plus the current one.
  n=$((locs * (4 * hours + 1)))
  kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --topic "$TOPIC.staging" --from-beginning --max-messages "$n" --timeout-ms 60000 \
    --formatter-property print.key=true --formatter-property key.separator=$'\t' \
    >"$STATE/stream.tsv" 2>"$LOGS/stream-dump.log" || true
  [ "$(wc -l <"$STATE/stream.tsv")" -eq "$n" ] || fail "dumping the records to replay: $(wc -l <"$STATE/stream.tsv") of $n"
  say "records to replay: $n made and dumped in $(( $(now_ms) - t0 )) ms"
}

# Produces the lines of a "key<TAB>value" file ($1) to the observations topic with the console
# producer, the first $2 at once and the rest at $3 a second. In the background (STREAM_PID).
produce_file() {
  local file=$1 burst=$2 rate=$3
  STREAM_LINES=$(wc -l <"$file")
  PRODUCERS=$((PRODUCERS + 1)) PRODUCER_LOG="$LOGS/producer-$PRODUCERS.log"
  python3 scripts/lib/faults_pace.py "$burst" "$rate" "$STATE/stream.count" <"$file" \
    | kafka_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
      --topic "$TOPIC" --reader-property parse.key=true --reader-property key.separator=$'\t' \
      --timeout 5 --request-required-acks all >"$PRODUCER_LOG" 2>&1 &
  STREAM_PID=$!
  SCHED_PIDS+=("$STREAM_PID")
}

# Replays the next $1 records, the first $2 at once and the rest at STREAM_RATE a second.
stream_start() {
  local n=$1 burst=$2
  sed -n "${STREAM_NEXT},$((STREAM_NEXT + n - 1))p" "$STATE/stream.tsv" >"$STATE/stream.part"
  [ "$(wc -l <"$STATE/stream.part")" -eq "$n" ] || fail "fewer than $n records left to replay"
  STREAM_NEXT=$((STREAM_NEXT + n))
  echo 0 >"$STATE/stream.count"
  produce_file "$STATE/stream.part" "$burst" "$STREAM_RATE"
}

# Records handed to the running producer so far (0 when none runs).
streaming() { if [ -n "$STREAM_PID" ]; then cat "$STATE/stream.count"; else echo 0; fi; }

# Waits for the producer to end (every record delivered) and counts its records into TOTAL.
stream_wait() {
  wait "$STREAM_PID" || fail "the console producer failed (see $PRODUCER_LOG)"
  SCHED_PIDS=("${SCHED_PIDS[@]/$STREAM_PID}")
  ! grep -q "ERROR" "$PRODUCER_LOG" || fail "the console producer reported errors (see $PRODUCER_LOG)"
  TOTAL=$((TOTAL + STREAM_LINES))
  STREAM_PID=""
}

# Sets LEFT to the records not yet stored, and fails, naming the scenario $1, when fewer than
# FAULTS_MIN_INFLIGHT are: the fault would strike a drained topic. The caller strikes right after.
# (Not in a subshell: the callers count into TOTAL.)
at_least_inflight() {
  LEFT=$(inflight)
  [ "$LEFT" -ge "$MIN_INFLIGHT" ] || fail "$1: only $LEFT records not yet stored at the fault ($TOTAL + $(streaming) produced, $(accounted) stored; FAULTS_MIN_INFLIGHT=$MIN_INFLIGHT): raise FAULTS_SLICE"
}

# Produces a fresh slice of FAULTS_SLICE valid records with the fetch job, on locations of its own
# ("slice-<n>-<i>", 20 of them), and waits for it. One producer at a time: a manual fetch run holds
# the fetch job's lock.
slice() {
  local locs=20 hours args=()
  SLICES=$((SLICES + 1))
  hours=$(( (SLICE / locs + 3) / 4 ))
  for i in $(seq 1 $locs); do args+=(--location "slice-$SLICES-$i"); done
  "$BIN" run fetch --source simulated --backfill-hours "$hours" "${args[@]}" >>"$LOGS/fetch.log" 2>&1 &
  SCHED_PIDS+=($!)
  wait $! || fail "producing slice $SLICES (see $LOGS/fetch.log)"
  unset 'SCHED_PIDS[-1]'
  TOTAL=$((TOTAL + locs * (4 * hours + 1)))
}

# Loads the consumer for the fault of scenario $1: stops it, produces a slice, then (with $2 > 0) starts
# the stream for $2 s, starts the consumer again (with the environment assignments after $2), waits
# for its first stored row and sets LEFT (at_least_inflight). The caller strikes right after.
loaded() {
  local name=$1 secs=$2 before t0; shift 2
  consumer_stop
  slice
  if [ "$secs" -gt 0 ]; then
    stream_start $((STREAM_RATE * secs)) 0
  fi
  before=$(mark) t0=$(now_ms)
  consumer_start "$@"
  # Polled on max(id) alone (two index lookups): a count in the loop would take long enough on the
  # stored rows for the consumer to store most of the slice meanwhile.
  until [ "$(mark)" -gt "$before" ]; do
    consumer_alive || fail "$name: the consumer exited (see $LOGS/consumer.log)"
    [ $(( $(now_ms) - t0 )) -lt 60000 ] || fail "$name: the consumer stored nothing within 60 s of its start"
    sleep 0.02
  done
  at_least_inflight "$name"
}

# $1 malformed records (keys "malformed-<n>", values that are not JSON), produced at once and counted
# into TOTAL and INVALID.
malformed() {
  local n=$1 i
  for i in $(seq $((INVALID + 1)) $((INVALID + n))); do printf 'malformed-%d\t{"not json %d\n' "$i" "$i"; done >"$STATE/malformed.tsv"
  produce_file "$STATE/malformed.tsv" "$n" 1
  stream_wait
  INVALID=$((INVALID + n))
}
