# One single-node KRaft Kafka broker, with its port, controller port and state directory as parameters,
# for scripts that need a broker of their own (scripts/test-faults.sh restarts and kills it). Source it,
# set the variables, then call the functions:
#
#   KN_LIBS            the Kafka jars (scripts/services.sh fetches them into ~/.cache/weatherflow)
#   KN_STATE           state directory: data, server.properties, broker.log, broker.pid
#   KN_PORT            client port (PLAINTEXT on 127.0.0.1)
#   KN_CONTROLLER_PORT controller port
#   KN_HEAP            JVM heap, default 512m
#   KN_EXTRA_PROPS     more server.properties lines (e.g. group.min.session.timeout.ms=1000)
#   KN_JAVA_OPTS       more JVM options
#
# kn_start formats the storage once and starts the broker in the background; kn_wait_ready waits for a
# metadata answer; kn_stop stops it with SIGTERM (clean), kn_kill with SIGKILL (the crash case).

kn_props() { echo "$KN_STATE/server.properties"; }
kn_log() { echo "$KN_STATE/broker.log"; }

kn_write_props() {
  mkdir -p "$KN_STATE/data"
  cat > "$(kn_props)" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KN_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KN_PORT,CONTROLLER://127.0.0.1:$KN_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KN_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KN_STATE/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
${KN_EXTRA_PROPS:-}
PROPS
}

kn_java() { java -Xms"${KN_HEAP:-512m}" -Xmx"${KN_HEAP:-512m}" -cp "$KN_LIBS/*" "$@"; }

kn_pid() {
  [ -f "$KN_STATE/broker.pid" ] || return 1
  local pid; pid="$(cat "$KN_STATE/broker.pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

kn_start() {
  [ -f "$KN_LIBS/.complete" ] || { echo "no Kafka jars in $KN_LIBS (run scripts/services.sh up once)" >&2; return 1; }
  kn_pid >/dev/null && return 0
  kn_write_props
  if [ ! -f "$KN_STATE/data/meta.properties" ]; then
    local id; id="$(kn_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    kn_java kafka.tools.StorageTool format --cluster-id="$id" -c "$(kn_props)" >>"$(kn_log)" 2>&1
  fi
  wc -c <"$(kn_log)" 2>/dev/null >"$KN_STATE/log.offset" || echo 0 >"$KN_STATE/log.offset"
  # shellcheck disable=SC2086  # KN_JAVA_OPTS is a list of options
  nohup java -Xms"${KN_HEAP:-512m}" -Xmx"${KN_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true ${KN_JAVA_OPTS:-} \
    -cp "$KN_LIBS/*" kafka.Kafka "$(kn_props)" >>"$(kn_log)" 2>&1 </dev/null &
  echo $! >"$KN_STATE/broker.pid"
  # Not a job of the caller's shell: killing it is the point, and needs no "Killed" notice.
  disown $! 2>/dev/null || true
}

kn_answers() {
  timeout 30 java -Xmx128m -cp "$KN_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$KN_PORT" --list >/dev/null 2>&1
}

# Ready when this start's log says the server started and the client port accepts connections (a JVM
# admin tool per probe is slow on a loaded machine).
kn_started() {
  tail -c +"$(( $(cat "$KN_STATE/log.offset" 2>/dev/null || echo 0) + 1 ))" "$(kn_log)" 2>/dev/null \
    | grep -q "Kafka Server started" && (exec 3<>"/dev/tcp/127.0.0.1/$KN_PORT") 2>/dev/null
}

kn_wait_ready() {
  local deadline=$((SECONDS + ${1:-90}))
  until kn_started; do
    kn_pid >/dev/null || { tail -n 30 "$(kn_log)" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$(kn_log)" >&2; return 1; }
    sleep 0.5
  done
}

kn_stop() {
  local pid; pid="$(kn_pid)" || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

kn_kill() {
  local pid; pid="$(kn_pid)" || return 0
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# Committed offsets of group $1 on topic $2, one "partition offset" per line.
kn_committed() {
  timeout 60 java -Xmx128m -cp "$KN_LIBS/*" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "127.0.0.1:$KN_PORT" --describe --group "$1" 2>/dev/null \
    | awk -v t="$2" '$2 == t && $4 ~ /^[0-9]+$/ { print $3, $4 }'
}
