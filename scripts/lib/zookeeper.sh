# ZooKeeper-mode Kafka for `scripts/services.sh up --zookeeper`: Apache Kafka 3.9.2 (the last line with
# ZooKeeper mode) coordinated by ZooKeeper 3.8.4, both from Maven Central jars
# (scripts/kafka/zookeeper/pom.xml). Sourced by scripts/services.sh after scripts/lib/cluster.sh.
#
# The broker has ports of its own (SERVICES_ZOOKEEPER_KAFKA_PORT, default 9192), so it runs beside
# the KRaft broker. The variables of Confluent's images override the matching settings when set:
#   ZOOKEEPER_CLIENT_PORT (clientPort, 2181)          ZOOKEEPER_TICK_TIME (tickTime, 2000)
#   KAFKA_BROKER_ID (broker.id, 1)                    KAFKA_ZOOKEEPER_CONNECT (zookeeper.connect)
#   KAFKA_ADVERTISED_LISTENERS (advertised.listeners) KAFKA_LISTENER_SECURITY_PROTOCOL_MAP
#   (listener.security.protocol.map); and KAFKA_LISTENERS (listeners), which must name the same
#   listeners when the other two change.
# State: $CACHE/state/zookeeper/{zookeeper,kafka}/.

ZK_POM="$HERE/kafka/zookeeper/pom.xml"
ZK_KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ZK_POM")"
ZK_LIBS="$JARS/kafka-$ZK_KAFKA_VERSION/libs"
ZK_STATE="$CACHE/state/zookeeper"
ZK_CLIENT_PORT="${ZOOKEEPER_CLIENT_PORT:-2181}"
ZK_TICK_TIME="${ZOOKEEPER_TICK_TIME:-2000}"
ZKB_PORT="${SERVICES_ZOOKEEPER_KAFKA_PORT:-9192}"
ZKB_BROKER_ID="${KAFKA_BROKER_ID:-1}"
ZKB_CONNECT="${KAFKA_ZOOKEEPER_CONNECT:-$KAFKA_HOST:$ZK_CLIENT_PORT}"
ZKB_LISTENERS="${KAFKA_LISTENERS:-PLAINTEXT://$KAFKA_HOST:$ZKB_PORT}"
ZKB_ADVERTISED="${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://$KAFKA_HOST:$ZKB_PORT}"
ZKB_PROTOCOL_MAP="${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-PLAINTEXT:PLAINTEXT}"

zk_fetch_jars() {
  if [ -f "$ZK_LIBS/.complete" ]; then return; fi
  command -v mvn >/dev/null || die "mvn not found: it fetches the Kafka $ZK_KAFKA_VERSION jars from Maven Central"
  log "fetching Kafka $ZK_KAFKA_VERSION and ZooKeeper jars from Maven Central into $ZK_LIBS"
  local t=$SECONDS
  rm -rf "$ZK_LIBS"; mkdir -p "$ZK_LIBS"
  mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$M2_REPO" -f "$ZK_POM" dependency:copy-dependencies \
    -DoutputDirectory="$ZK_LIBS" -DincludeScope=runtime \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:$ZK_KAFKA_VERSION"
  ls "$ZK_LIBS"/zookeeper-3.8.*.jar >/dev/null 2>&1 || die "no zookeeper 3.8 jar among the fetched jars"
  touch "$ZK_LIBS/.complete"
  log "fetched $(ls "$ZK_LIBS" | wc -l) jars in $((SECONDS - t)) s"
}

zk_pid() {
  local f="$ZK_STATE/$1/$1.pid"
  [ -f "$f" ] || return 1
  local pid; pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# ZooKeeper answers `ruok` with `imok` (the four-letter word is allowed in zoo.cfg below).
zk_answers() {
  local reply
  reply="$( (exec 3<>"/dev/tcp/$KAFKA_HOST/$ZK_CLIENT_PORT" && printf ruok >&3 && timeout 5 cat <&3) 2>/dev/null)" || true
  [ "$reply" = imok ]
}

zk_broker_bootstrap() {
  # The first advertised address, without its listener name.
  local first="${ZKB_ADVERTISED%%,*}"; echo "${first#*://}"
}

zk_broker_answers() {
  timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$(zk_broker_bootstrap)" --list >/dev/null 2>&1
}

zk_write_config() {
  mkdir -p "$ZK_STATE/zookeeper/data" "$ZK_STATE/kafka/data"
  cat >"$ZK_STATE/zookeeper/zoo.cfg" <<EOF
dataDir=$ZK_STATE/zookeeper/data
clientPort=$ZK_CLIENT_PORT
clientPortAddress=$KAFKA_HOST
tickTime=$ZK_TICK_TIME
initLimit=10
syncLimit=5
maxClientCnxns=0
# The admin server would take port 8080.
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
EOF
  cat >"$ZK_STATE/kafka/server.properties" <<EOF
broker.id=$ZKB_BROKER_ID
zookeeper.connect=$ZKB_CONNECT
zookeeper.connection.timeout.ms=18000
listeners=$ZKB_LISTENERS
advertised.listeners=$ZKB_ADVERTISED
listener.security.protocol.map=$ZKB_PROTOCOL_MAP
log.dirs=$ZK_STATE/kafka/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.segment.bytes=67108864
EOF
}

# zk_spawn NAME HEAP MAIN-CLASS CONFIG: a JVM on the 3.9.2 classpath, logging to $ZK_STATE/NAME/NAME.log.
zk_spawn() {
  local name="$1" heap="$2" main="$3" conf="$4" dir="$ZK_STATE/$1"
  nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "$ZK_LIBS/*" "$main" "$conf" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

zk_wait() {
  local name="$1" probe="$2" deadline=$((SECONDS + ${SERVICES_KAFKA_START_TIMEOUT:-90}))
  until "$probe"; do
    zk_pid "$name" >/dev/null || { tail -n 40 "$ZK_STATE/$name/$name.log" >&2; die "$name exited during start-up (log above)"; }
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$ZK_STATE/$name/$name.log" >&2; die "$name did not answer in time"; }
    sleep 1
  done
}

zk_up() {
  kafka_fetch_jars   # the 4.x admin tools probe the broker
  zk_fetch_jars
  zk_write_config
  if ! zk_pid zookeeper >/dev/null; then
    port_open "$KAFKA_HOST" "$ZK_CLIENT_PORT" && die "port $ZK_CLIENT_PORT is taken by a process we did not start"
    log "starting ZooKeeper on $KAFKA_HOST:$ZK_CLIENT_PORT, log $ZK_STATE/zookeeper/zookeeper.log"
    zk_spawn zookeeper 256m org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_STATE/zookeeper/zoo.cfg"
  fi
  zk_wait zookeeper zk_answers
  if ! zk_pid kafka >/dev/null; then
    port_open "$KAFKA_HOST" "$ZKB_PORT" && die "port $ZKB_PORT is taken by a process we did not start"
    log "starting Kafka $ZK_KAFKA_VERSION (ZooKeeper mode, broker $ZKB_BROKER_ID) on $(zk_broker_bootstrap), log $ZK_STATE/kafka/kafka.log"
    zk_spawn kafka "$KAFKA_HEAP" kafka.Kafka "$ZK_STATE/kafka/server.properties"
  fi
  zk_wait kafka zk_broker_answers
  log "ZooKeeper-mode Kafka $ZK_KAFKA_VERSION is ready on $(zk_broker_bootstrap)"
}

zk_stop() {
  local name="$1" pid
  pid="$(zk_pid "$name")" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 60 s; killing it"; kill -KILL "$pid"; fi
  rm -f "$ZK_STATE/$name/$name.pid"
}

# The broker first: it deregisters from ZooKeeper on a clean shutdown.
zk_down() { zk_stop kafka; zk_stop zookeeper; }

zk_status() {
  [ -d "$ZK_STATE" ] || return 0
  local rc=0
  if zk_pid zookeeper >/dev/null; then echo "zookeeper: running on $KAFKA_HOST:$ZK_CLIENT_PORT (pid $(zk_pid zookeeper))"
  else echo "zookeeper: down"; rc=1; fi
  if zk_pid kafka >/dev/null; then echo "kafka (zookeeper mode): running on $(zk_broker_bootstrap) (pid $(zk_pid kafka))"
  else echo "kafka (zookeeper mode): down"; rc=1; fi
  return $rc
}

zk_logs() {
  [ -d "$ZK_STATE" ] || return 0
  local name
  for name in zookeeper kafka; do echo "== $ZK_STATE/$name/$name.log"; tail -n "$1" "$ZK_STATE/$name/$name.log" 2>/dev/null || true; done
}

zk_print_env() { echo "KAFKA_BOOTSTRAP_SERVERS=$(zk_broker_bootstrap)"; }
