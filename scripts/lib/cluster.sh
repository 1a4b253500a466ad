# A local KRaft cluster of N combined (broker + controller) nodes on 127.0.0.1, for
# `scripts/services.sh up --brokers N`, `stop-broker`, `start-broker`. Sourced by scripts/services.sh,
# which defines CACHE, KAFKA_LIBS, KAFKA_HOST, KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_HEAP, log, die,
# port_open and kafka_fetch_jars.
#
# Node n listens on KAFKA_PORT + 2(n-1) and its controller on KAFKA_CONTROLLER_PORT + 2(n-1): by
# default 9092/9093, 9094/9095, 9096/9097. Node 1 takes the single broker's ports, so the single broker
# and the cluster are alternatives (set SERVICES_KAFKA_PORT and SERVICES_KAFKA_CONTROLLER_PORT to
# run both). Every node votes in the controller quorum, so a cluster of 3 survives the loss of any one.
# State: $CACHE/state/cluster/{nodes,node-<n>/{server.properties,data,broker.log,broker.pid}}.

CLUSTER_STATE="$CACHE/state/cluster"
CLUSTER_MAX_NODES=9

cluster_size() { cat "$CLUSTER_STATE/nodes" 2>/dev/null || echo 0; }
node_dir() { echo "$CLUSTER_STATE/node-$1"; }
node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }

# Replication of the cluster's topics: 3 copies (fewer on smaller clusters), and writes with acks=all
# need 2 of them, so one broker may fail without losing an acknowledged write or stopping producers.
cluster_rf() { local n="$1"; echo $((n < 3 ? n : 3)); }
cluster_min_isr() { local rf; rf="$(cluster_rf "$1")"; echo $((rf >= 3 ? 2 : 1)); }

cluster_bootstrap() {
  local n="${1:-$(cluster_size)}" out="" i
  for i in $(seq 1 "$n"); do out="${out:+$out,}$KAFKA_HOST:$(node_port "$i")"; done
  echo "$out"
}

node_pid() {
  local f; f="$(node_dir "$1")/broker.pid"
  [ -f "$f" ] || return 1
  local pid; pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

cluster_answers() {
  timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$(cluster_bootstrap)" --list >/dev/null 2>&1
}

# Partitions (of every topic, internal ones included) whose in-sync replicas are fewer than their
# replicas; empty when the cluster is fully replicated.
cluster_under_replicated() {
  timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$(cluster_bootstrap)" --describe --under-replicated-partitions 2>/dev/null
}

cluster_write_props() {
  local n="$1" size="$2" dir voters="" i
  dir="$(node_dir "$n")"
  for i in $(seq 1 "$size"); do voters="${voters:+$voters,}$i@$KAFKA_HOST:$(node_controller_port "$i")"; done
  local rf isr port cport
  rf="$(cluster_rf "$size")"; isr="$(cluster_min_isr "$size")"
  port="$(node_port "$n")"; cport="$(node_controller_port "$n")"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://$KAFKA_HOST:$port,CONTROLLER://$KAFKA_HOST:$cport
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=6
# Topics created without an explicit factor (and the broker's own) get $rf copies; acks=all writes
# need $isr of them in sync.
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.segment.bytes=67108864
EOF
}

cluster_format() {
  local size="$1" id i pids=()
  # A cluster id is 16 random bytes in URL-safe base64 without padding (what `StorageTool random-uuid`
  # prints), made here to save a JVM start.
  id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
  log "formatting $size nodes' storage (cluster id $id)"
  for i in $(seq 1 "$size"); do
    # Static voters (controller.quorum.voters): no --standalone. The nodes in parallel.
    java -Xmx128m -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --cluster-id="$id" \
      -c "$(node_dir "$i")/server.properties" >>"$(node_dir "$i")/broker.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$size"); do
    wait "${pids[$((i - 1))]}" || { tail -n 30 "$(node_dir "$i")/broker.log" >&2; die "kafka storage format of node $i failed"; }
  done
}

node_spawn() {
  local n="$1" dir; dir="$(node_dir "$n")"
  log "starting Kafka $KAFKA_VERSION node $n on $KAFKA_HOST:$(node_port "$n") (controller $(node_controller_port "$n")), log $dir/broker.log"
  nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >>"$dir/broker.log" 2>&1 </dev/null &
  echo $! >"$dir/broker.pid"
}

# A KRaft broker opens its client port only once the controllers have unfenced it, so an open port
# means the node serves requests; the metadata probes (JVM starts) come after, once per cluster.
node_wait() {
  local n="$1" deadline=$((SECONDS + ${SERVICES_KAFKA_START_TIMEOUT:-90}))
  until port_open "$KAFKA_HOST" "$(node_port "$n")"; do
    node_pid "$n" >/dev/null || { tail -n 40 "$(node_dir "$n")/broker.log" >&2; die "node $n exited during start-up (log above)"; }
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$(node_dir "$n")/broker.log" >&2; die "node $n did not answer in time"; }
    sleep 0.5
  done
}

# Waits until every partition has all its replicas in sync again: what makes the next step of a
# rolling restart safe.
cluster_wait_in_sync() {
  local deadline=$((SECONDS + ${SERVICES_KAFKA_START_TIMEOUT:-90})) left
  while :; do
    left="$(cluster_under_replicated)" && [ -z "$left" ] && return 0
    [ $SECONDS -lt $deadline ] || { printf '%s\n' "$left" | head -n 10 >&2; die "partitions still under-replicated"; }
    sleep 1
  done
}

cluster_up() {
  local size="$1"
  case "$size" in ''|*[!0-9]*) die "--brokers takes a number (1..$CLUSTER_MAX_NODES)";; esac
  [ "$size" -ge 1 ] && [ "$size" -le $CLUSTER_MAX_NODES ] || die "--brokers takes 1..$CLUSTER_MAX_NODES"
  local have; have="$(cluster_size)"
  if [ "$have" != 0 ] && [ "$have" != "$size" ]; then
    die "$CLUSTER_STATE holds a $have-node cluster; stop it and remove that directory to make a $size-node one"
  fi
  kafka_fetch_jars
  if kafka_pid >/dev/null && [ "$KAFKA_PORT" = "$(node_port 1)" ]; then
    die "the single broker runs on $BOOTSTRAP: stop it first (scripts/services.sh down kafka)"
  fi
  local i fresh=0
  if [ "$have" = 0 ]; then
    rm -rf "$CLUSTER_STATE"; mkdir -p "$CLUSTER_STATE"
    for i in $(seq 1 "$size"); do cluster_write_props "$i" "$size"; done
    cluster_format "$size"
    echo "$size" >"$CLUSTER_STATE/nodes"
    fresh=1
  fi
  for i in $(seq 1 "$size"); do
    node_pid "$i" >/dev/null && continue
    port_open "$KAFKA_HOST" "$(node_port "$i")" && die "port $(node_port "$i") is taken by a process we did not start"
    node_spawn "$i"
  done
  # A quorum needs a majority of the nodes up before any of them answers, so all start first.
  for i in $(seq 1 "$size"); do node_wait "$i"; done
  cluster_answers || die "the cluster does not answer metadata requests on $(cluster_bootstrap)"
  [ $fresh = 1 ] || cluster_wait_in_sync
  log "kafka cluster of $size nodes is ready on $(cluster_bootstrap)"
}

node_stop() {
  local n="$1" signal="${2:-TERM}" pid
  pid="$(node_pid "$n")" || { log "node $n is not running"; return 0; }
  log "stopping node $n (pid $pid) with SIG$signal"
  kill -"$signal" "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "node $n did not stop in 60 s; killing it"; kill -KILL "$pid"; fi
  rm -f "$(node_dir "$n")/broker.pid"
}

node_check() {
  local n="$1" size; size="$(cluster_size)"
  case "$n" in ''|*[!0-9]*) die "give a node number (1..$size)";; esac
  [ "$size" != 0 ] || die "no cluster configured under $CLUSTER_STATE (scripts/services.sh up --brokers 3)"
  [ "$n" -ge 1 ] && [ "$n" -le "$size" ] || die "node $n does not exist (1..$size)"
}

# stop-broker N [--kill]: SIGTERM (controlled shutdown: leadership moves first) or SIGKILL (a crash).
cluster_stop_broker() {
  node_check "${1:-}"
  if [ "${2:-}" = --kill ]; then node_stop "$1" KILL; else node_stop "$1" TERM; fi
}

# start-broker N: returns once the node answers and has caught up (every partition fully in sync).
cluster_start_broker() {
  node_check "${1:-}"
  node_pid "$1" >/dev/null || node_spawn "$1"
  node_wait "$1"
  cluster_wait_in_sync
  log "node $1 is back and every partition is in sync"
}

# All nodes at once: stopped one by one, the last ones would wait for a controller quorum that the
# first ones took away. Even so, the node that was the active controller finishes its brokers'
# shutdown (logs closed) and then waits for followers that are gone, for a minute; after 20 s it is
# killed: its data logs are closed by then, and the metadata log is written through.
cluster_down() {
  local size i pid pids=(); size="$(cluster_size)"
  [ "$size" != 0 ] || return 0
  for i in $(seq 1 "$size"); do
    pid="$(node_pid "$i")" || continue
    log "stopping node $i (pid $pid)"; kill -TERM "$pid"; pids+=("$pid")
  done
  for _ in $(seq 1 40); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && { log "pid $pid still waits for its quorum after 20 s; killing it"; kill -KILL "$pid"; }; done
  rm -f "$CLUSTER_STATE"/node-*/broker.pid
}

cluster_running() { [ "$(cluster_size)" != 0 ] && node_pid 1 >/dev/null; }

cluster_status() {
  local size i rc=0; size="$(cluster_size)"
  [ "$size" != 0 ] || return 0
  for i in $(seq 1 "$size"); do
    if node_pid "$i" >/dev/null; then echo "kafka node $i: running on $KAFKA_HOST:$(node_port "$i") (pid $(node_pid "$i"))"
    else echo "kafka node $i: down"; rc=1; fi
  done
  return $rc
}

cluster_logs() {
  local size i; size="$(cluster_size)"
  for i in $(seq 1 "$size"); do echo "== $(node_dir "$i")/broker.log"; tail -n "$1" "$(node_dir "$i")/broker.log" 2>/dev/null || true; done
}

cluster_print_env() {
  local size; size="$(cluster_size)"
  echo "KAFKA_BOOTSTRAP_SERVERS=$(cluster_bootstrap "$size")"
  echo "WEATHERFLOW_KAFKA_REPLICATION_FACTOR=$(cluster_rf "$size")"
  echo "WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS=$(cluster_min_isr "$size")"
}

# The commands this file and scripts/lib/zookeeper.sh add:
#   up --brokers N [kafka]   up --zookeeper [kafka]   stop-broker N [--kill]   start-broker N
# With `kafka`, PostgreSQL is left alone.
cluster_main() {
  local cmd="$1"; shift
  case "$cmd" in
    stop-broker) cluster_stop_broker "$@"; return ;;
    start-broker) cluster_start_broker "$@"; return ;;
  esac
  local mode="$1" size=""; shift
  if [ "$mode" = --brokers ]; then size="${1:-}"; shift || true; fi
  local only_kafka=0
  case "${1:-}" in kafka) only_kafka=1 ;; '') ;; *) die "unknown component ${1} (kafka)";; esac
  local start=$SECONDS
  [ $only_kafka = 1 ] || pg_up
  if [ "$mode" = --brokers ]; then
    cluster_up "$size"
    log "platform up in $((SECONDS - start)) s; settings:"
    cluster_print_env
  else
    zk_up
    log "platform up in $((SECONDS - start)) s; settings:"
    zk_print_env
  fi
  print_env | grep '^DATABASE_URL='
}
