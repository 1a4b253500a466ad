#!/usr/bin/env bash
# Local services for weatherflow without Docker: a real Apache Kafka broker (KRaft, one node) run from
# Maven Central jars, and PostgreSQL from Debian's packages.
#
#   scripts/services.sh up [kafka|postgres]    install what is missing, start, wait until they answer
#   scripts/services.sh down [kafka|postgres]  stop (Kafka cleanly with SIGTERM; PostgreSQL with pg_ctlcluster)
#   scripts/services.sh status   say what runs, exit 1 when something does not
#   scripts/services.sh logs     tail the broker and PostgreSQL logs
#   scripts/services.sh env      print the settings (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL)
#   scripts/services.sh up --secure   also a SASL_SSL listener and PostgreSQL TLS (scripts/lib/secure.sh)
#   scripts/services.sh env secret    the settings with the passwords shown, for eval or a .env
#   scripts/services.sh up --brokers 3 | up --zookeeper   a KRaft cluster, or ZooKeeper-mode Kafka 3.9
#   scripts/services.sh stop-broker N [--kill] | start-broker N   one cluster node (scripts/lib/cluster.sh)
#
# Idempotent: `up` on a running platform only checks it. Jars, the Maven repository and the broker's
# data live under SERVICES_CACHE (default ~/.cache/weatherflow), outside the checkout, so a second
# `up` is fast and offline. SERVICES_JARS (default: SERVICES_CACHE) holds
# only the jars and the Maven repository, so several state directories can share one download.
set -euo pipefail

CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_POM="$HERE/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
JARS="${SERVICES_JARS:-$CACHE}"
KAFKA_LIBS="$JARS/kafka-$KAFKA_VERSION/libs"
KAFKA_STATE="$CACHE/state/kafka"
KAFKA_PROPS="$KAFKA_STATE/server.properties"
KAFKA_LOG="$KAFKA_STATE/broker.log"
KAFKA_PID="$KAFKA_STATE/broker.pid"
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${SERVICES_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SERVICES_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${SERVICES_KAFKA_HEAP:-512m}"
M2_REPO="$JARS/m2"

PG_PORT="${SERVICES_PG_PORT:-5432}"
PG_CLUSTER="${SERVICES_PG_CLUSTER:-main}"
PG_USER=weatherflow
PG_DB=weatherflow
# A local development password, not a secret: the role only listens on 127.0.0.1. Override it with
# SERVICES_PG_PASSWORD for anything that is not a developer's machine.
PG_PASSWORD="${SERVICES_PG_PASSWORD:-weatherflow}"
# The service roles' passwords (docs/security.md, "Database roles"), local development ones likewise.
PG_WEB_PASSWORD="${SERVICES_PG_WEB_PASSWORD:-weatherflow_web}"
PG_CONSUMER_PASSWORD="${SERVICES_PG_CONSUMER_PASSWORD:-weatherflow_consumer}"
PG_SCHEDULER_PASSWORD="${SERVICES_PG_SCHEDULER_PASSWORD:-weatherflow_scheduler}"

BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
DATABASE_URL_LOCAL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
DATABASE_URL_SHOWN="postgres://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { as_root runuser -u postgres -- "$@"; }

# shellcheck source=lib/secure.sh
. "$HERE/lib/secure.sh"

# ---------------------------------------------------------------- Kafka

kafka_fetch_jars() {
  if [ -f "$KAFKA_LIBS/.complete" ]; then return; fi
  command -v java >/dev/null || die "java not found: Kafka $KAFKA_VERSION needs Java 17+"
  command -v mvn >/dev/null || die "mvn not found: it fetches the Kafka jars from Maven Central"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$M2_REPO" -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  touch "$KAFKA_LIBS/.complete"
}

kafka_java() { java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -cp "$KAFKA_LIBS/*" "$@"; }

kafka_write_props() {
  mkdir -p "$KAFKA_STATE/data"
  cat > "$KAFKA_PROPS" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_STATE/data
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
# Tests create and delete many topics; keep the broker's own bookkeeping small.
log.retention.hours=168
log.segment.bytes=67108864
EOF
}

kafka_format() {
  if [ -f "$KAFKA_STATE/data/meta.properties" ]; then return; fi
  local id
  id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  log "formatting broker storage (cluster id $id)"
  kafka_java kafka.tools.StorageTool format --cluster-id="$id" -c "$KAFKA_PROPS" >>"$KAFKA_LOG" 2>&1 \
    || { tail -n 30 "$KAFKA_LOG" >&2; die "kafka storage format failed"; }
}

kafka_pid() {
  [ -f "$KAFKA_PID" ] || return 1
  local pid; pid="$(cat "$KAFKA_PID")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# A metadata request through Kafka's own admin client: the broker is ready when it lists topics.
kafka_answers() {
  timeout 30 java -Xmx128m -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

kafka_up() {
  kafka_fetch_jars
  mkdir -p "$KAFKA_STATE"
  if kafka_pid >/dev/null || port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    if kafka_answers; then log "kafka already running on $BOOTSTRAP"; return; fi
  fi
  if ! kafka_pid >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by a process that is not a Kafka broker we started"
  fi
  if ! kafka_pid >/dev/null; then
    kafka_write_props
    secure_kafka_props
    kafka_format
    log "starting Kafka $KAFKA_VERSION (KRaft, node 1) on $BOOTSTRAP, log $KAFKA_LOG"
    : >"$KAFKA_LOG"
    nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
      -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
      -Dorg.slf4j.simpleLogger.showDateTime=true \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" >>"$KAFKA_LOG" 2>&1 </dev/null &
    echo $! >"$KAFKA_PID"
  fi
  local deadline=$((SECONDS + ${SERVICES_KAFKA_START_TIMEOUT:-90}))
  until kafka_answers; do
    if ! kafka_pid >/dev/null; then
      tail -n 40 "$KAFKA_LOG" >&2; die "the Kafka broker exited during start-up (log above)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 40 "$KAFKA_LOG" >&2; die "the Kafka broker did not answer metadata requests in time"
    fi
    sleep 1
  done
  log "kafka is ready on $BOOTSTRAP"
}

kafka_down() {
  local pid
  if pid="$(kafka_pid)"; then
    log "stopping Kafka (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "kafka did not stop in 30 s; killing it"; kill -KILL "$pid"; fi
  else
    log "kafka is not running"
  fi
  rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------- PostgreSQL

pg_install() {
  if command -v pg_lsclusters >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    return
  fi
  log "installing PostgreSQL from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
}

# The newest installed cluster on PG_PORT, as "version name"; creates one when there is none.
pg_cluster() {
  local line
  line="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p' | sort -V | tail -n1)"
  if [ -z "$line" ]; then
    local ver; ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    log "creating PostgreSQL $ver cluster '$PG_CLUSTER'"
    as_root pg_createcluster "$ver" "$PG_CLUSTER" --port "$PG_PORT" >/dev/null
    line="$(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p' | sort -V | tail -n1)"
  fi
  awk '{print $1" "$2}' <<<"$line"
}

# A psql `\set NAME 'value'` line for standard input, never argv: in psql's single quotes, ' is
# written '' and \ is written \\.
psql_set() {
  local v="${2//\\/\\\\}"
  v="${v//\'/\'\'}"
  printf '%s\n' "\\set $1 '$v'"
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_up() {
  pg_install
  read -r ver name < <(pg_cluster)
  if ! pg_ready; then
    log "starting PostgreSQL $ver/$name on 127.0.0.1:$PG_PORT"
    as_root pg_ctlcluster "$ver" "$name" start || die "PostgreSQL $ver/$name did not start"
  fi
  local deadline=$((SECONDS + 60))
  until pg_ready; do
    [ $SECONDS -lt $deadline ] || die "PostgreSQL did not accept connections on 127.0.0.1:$PG_PORT"
    sleep 0.5
  done
  # Role and database, idempotently. CREATEDB: the test harness gives every test its own database.
  # Names and password are psql variables quoted by format() (%I, %L), never spliced into SQL text.
  # The password reaches psql on its standard input (a \set line), never in its arguments, which
  # any local user can read in ps: in psql's single quotes, ' is written '' and \ is written \\.
  # The service roles (docs/security.md, "Database roles"): NOINHERIT logins whose rights are the
  # grants `weatherflow migrate up` applies (jobs/src/db/grants.rs). The scheduler's may act as the
  # owner (SET ROLE, for partition maintenance only); the owner may act as the web and consumer
  # roles, which the roles test uses to show what each can and cannot do.
  { psql_set password "$PG_PASSWORD"; psql_set web_password "$PG_WEB_PASSWORD"
    psql_set consumer_password "$PG_CONSUMER_PASSWORD"; psql_set scheduler_password "$PG_SCHEDULER_PASSWORD"
    cat <<'SQL'
SELECT format('CREATE ROLE %I', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')\gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['weatherflow_web', 'weatherflow_consumer', 'weatherflow_scheduler']) r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)\gexec
SELECT format('ALTER ROLE weatherflow_web LOGIN NOINHERIT PASSWORD %L', :'web_password')\gexec
SELECT format('ALTER ROLE weatherflow_consumer LOGIN NOINHERIT PASSWORD %L', :'consumer_password')\gexec
SELECT format('ALTER ROLE weatherflow_scheduler LOGIN NOINHERIT PASSWORD %L', :'scheduler_password')\gexec
SELECT format('GRANT %I TO weatherflow_scheduler', :'user')\gexec
SELECT format('GRANT weatherflow_web, weatherflow_consumer TO %I', :'user')\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO weatherflow_web, weatherflow_consumer, weatherflow_scheduler', :'db')\gexec
SQL
  } | as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
    -v user="$PG_USER" -v db="$PG_DB" >/dev/null
  PGPASSWORD="$PG_PASSWORD" psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -c 'select 1' \
    >/dev/null || die "password login as $PG_USER on 127.0.0.1:$PG_PORT failed (check pg_hba.conf)"
  secure_pg "$ver" "$name"
  log "postgresql $ver is ready on 127.0.0.1:$PG_PORT (database $PG_DB)"
}

pg_down() {
  command -v pg_lsclusters >/dev/null || { log "postgresql is not installed"; return; }
  # Only the cluster on PG_PORT: other clusters on the machine are not ours to stop.
  pg_lsclusters -h | while read -r ver name port status _; do
    if [ "$status" = online ] && [ "$port" = "$PG_PORT" ]; then log "stopping PostgreSQL $ver/$name"; as_root pg_ctlcluster "$ver" "$name" stop; fi
  done
}

# ---------------------------------------------------------------- commands

print_env() {
  if secure_ready; then secure_print_env "${1:-}"; return; fi
  if cluster_running; then cluster_print_env; else echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"; fi
  if [ "${1:-}" = secret ]; then echo "DATABASE_URL=$DATABASE_URL_LOCAL"; else echo "DATABASE_URL=$DATABASE_URL_SHOWN"; fi
}

status() {
  local rc=0
  if cluster_running; then :  # the cluster's nodes are listed below
  elif kafka_pid >/dev/null && kafka_answers; then echo "kafka: running on $BOOTSTRAP (pid $(kafka_pid))"
  elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then echo "kafka: port $KAFKA_PORT open (not started by this script)"
  else echo "kafka: down"; rc=1; fi
  if pg_ready 2>/dev/null; then echo "postgresql: running on 127.0.0.1:$PG_PORT"
  else echo "postgresql: down"; rc=1; fi
  cluster_status || rc=1
  zk_status || rc=1
  return $rc
}

# `--secure` anywhere among the arguments; the rest are positional.
args=()
for a in "$@"; do if [ "$a" = --secure ]; then SECURE=1; else args+=("$a"); fi; done
set -- "${args[@]}"

# The cluster and ZooKeeper mode live in files of their own.
. "$HERE/lib/cluster.sh"
. "$HERE/lib/zookeeper.sh"
case "${1:-} ${2:-}" in
  "up --brokers"|"up --zookeeper"|stop-broker*|start-broker*) cluster_main "$@"; exit ;;
esac

# Optional second argument: only one component (kafka | postgres).
only="${2:-all}"
case "$only" in all|kafka|postgres) ;; *) [ "${1:-}" = logs ] || [ "${1:-}" = env ] || die "unknown component $only (kafka | postgres)";; esac
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }

case "${1:-}" in
  up)
    start=$SECONDS
    if [ "$SECURE" = 1 ]; then secure_certs; fi
    if want postgres; then pg_up; fi
    if want kafka; then
      if [ "$SECURE" = 1 ] && kafka_pid >/dev/null && ! port_open "$KAFKA_HOST" "$KAFKA_SASL_PORT"; then
        die "kafka runs without its SASL_SSL listener; stop it first (scripts/services.sh down kafka)"
      fi
      kafka_up
      if [ "$SECURE" = 1 ]; then secure_kafka_user; fi
    fi
    log "platform up in $((SECONDS - start)) s; settings:"
    print_env
    ;;
  down)
    if want kafka; then kafka_down; cluster_down; zk_down; fi
    if want postgres; then pg_down; fi
    ;;
  status) status ;;
  logs)
    echo "== $KAFKA_LOG"; tail -n "${2:-50}" "$KAFKA_LOG" 2>/dev/null || true
    cluster_logs "${2:-50}"; zk_logs "${2:-50}"
    for f in /var/log/postgresql/postgresql-*-main.log; do echo "== $f"; tail -n "${2:-50}" "$f"; done 2>/dev/null || true
    ;;
  env) print_env "${2:-}" ;;
  *) echo "usage: $0 up|down [kafka|postgres] | up --brokers N|--zookeeper [kafka] | stop-broker N [--kill] | start-broker N | status | logs [N] | env [secret]" >&2; exit 2 ;;
esac
