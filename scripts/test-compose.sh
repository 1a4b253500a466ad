#!/usr/bin/env bash
# The compose stage of scripts/test.sh: the platform as users deploy it, from our compose files,
# Dockerfiles and entrypoint, unchanged, on a real Docker engine (docs/deploy.md).
#
#   0. scripts/docker.sh up (engine and compose v2 plugin) and scripts/images.sh (the base images
#      under their official names, built locally only when absent: deploy/standin/).
#   1. docker compose build: weatherflow:latest and weatherflow-notebook:latest (BuildKit; the cargo
#      registry and target directory live in cache mounts, kept between runs).
#   2. up --wait: every healthcheck passes.
#   3. the pipeline through the containers: `run --rm scheduler run fetch` (simulated, places of the
#      stage's own), the consumer service stores every message (group lag 0, rows of those places =
#      messages fetched), `run analytics`, results read through the published PostgreSQL port.
#   4. nginx: the dashboard, /api/v1/status and /healthz answer; /metrics is refused; one Chromium
#      screenshot of the dashboard. The monitoring profile: Prometheus scrapes the three services
#      (every target up) and has loaded every alerting rule of deploy/prometheus/alerts.yml.
#   5. APP_MODE=jupyter answers with its token, refuses without it, and will not start without one.
#   6. stop consumer, a backlog is fetched, start consumer: every message stored once.
#   7. down then up: every observation and the group's committed offsets are kept; down -v removes
#      the volumes.
#   8. docker-compose.cluster.yml (3 brokers) and docker-compose.zookeeper.yml (ZooKeeper and one
#      broker): a fetch -> persist cycle on each, with a PostgreSQL container of the stage's own.
#   9. `docker compose config` prints no secret of the env file.
# Everything runs under compose project names and host ports of its own (below), so the test services
# (Kafka 9092, PostgreSQL 5432) are never touched. Containers, networks, volumes and the two images it
# built are removed when the stage ends, failed or not; the stand-in base images and BuildKit's cache
# stay, so a second run is fast; a dockerd the stage started is stopped (its state stays on disk). Each step's time is printed, and a summary at the end.
# The ports sit below Linux's ephemeral range (32768-60999), where an outgoing connection of any
# process can hold a port just when docker-proxy wants to listen on it (seen on 41888).
#   COMPOSE_TEST_PROJECT (wfci)  COMPOSE_TEST_PORT_BASE (28000: Kafka +92, PostgreSQL +320, nginx +80,
#   Jupyter +888, Prometheus +90, cluster +192/+194/+196, ZooKeeper-mode broker +292)  COMPOSE_TEST_KEEP=1 keeps all
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROJECT="${COMPOSE_TEST_PROJECT:-wfci}"
BASE="${COMPOSE_TEST_PORT_BASE:-28000}"
KAFKA_PORT=$((BASE + 92)) POSTGRES_PORT=$((BASE + 320)) HTTP_PORT=$((BASE + 80)) JUPYTER_PORT=$((BASE + 888))
PROMETHEUS_PORT=$((BASE + 90))
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wf-compose.XXXXXX")"
ENV_FILE="$WORK/ci.env"
stage_start=$SECONDS
TIMES=()
step_name="" step_start=$SECONDS

say() { printf '[compose %4ds] %s\n' $((SECONDS - stage_start)) "$*"; }
step() {
  if [ -n "$step_name" ]; then TIMES+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step_name")"); fi
  step_name="$*" step_start=$SECONDS
  printf '\n--> %s\n' "$*"
}
FAILURE=""
fail() { FAILURE="$*"; say "FAILED: $*"; exit 1; }
trap 'FAILURE="${FAILURE:-line $LINENO: \`$BASH_COMMAND\` exited with status $?}"' ERR

secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
PG_PASSWORD="pw$(secret)"
JUPYTER_TOKEN="jt$(secret)"
WEB_DB_PASSWORD="wp$(secret)"
CONSUMER_DB_PASSWORD="cp$(secret)"
# The secrets as users give them: files, readable by the containers' users, in a folder only we open.
mkdir -m 700 "$WORK/secrets"
printf '%s\n' "$PG_PASSWORD" >"$WORK/secrets/postgres_password"
printf '%s\n' "$JUPYTER_TOKEN" >"$WORK/secrets/jupyter_token"
# The web and consumer services' roles (deploy/postgres/roles.sh, docs/security.md).
printf '%s\n' "$WEB_DB_PASSWORD" >"$WORK/secrets/web_db_password"
printf '%s\n' "$CONSUMER_DB_PASSWORD" >"$WORK/secrets/consumer_db_password"
chmod 644 "$WORK/secrets/"*
cat >"$ENV_FILE" <<ENV
POSTGRES_USER=weatherflow
POSTGRES_DB=weatherflow
SECRETS_DIR=$WORK/secrets
WEATHERAPI_KEY=
WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL=false
WEATHERFLOW_WEB_TOKEN=
KAFKA_PORT=$KAFKA_PORT
POSTGRES_PORT=$POSTGRES_PORT
HTTP_PORT=$HTTP_PORT
JUPYTER_PORT=$JUPYTER_PORT
PROMETHEUS_PORT=$PROMETHEUS_PORT
ENV

# Compose with the stage's env file only: the caller's shell variables of the same names (a real
# WEATHERAPI_KEY, another project's ports) would win over it.
compose_in() {
  local project="$1"; shift
  env -u WEATHERAPI_KEY -u WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL -u POSTGRES_USER \
    -u SECRETS_DIR -u POSTGRES_DB -u JUPYTER_TOKEN -u WEATHERFLOW_WEB_TOKEN -u KAFKA_PORT \
    -u POSTGRES_PORT -u HTTP_PORT -u JUPYTER_PORT -u PROMETHEUS_PORT -u KAFKA_PORT_1 -u KAFKA_PORT_2 -u KAFKA_PORT_3 \
    -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES -u DATABASE_URL \
    docker compose --env-file "$ENV_FILE" -p "$project" "$@"
}
dc() { compose_in "$PROJECT" -f docker-compose.yml "$@"; }

# SQL through the published port, from the host, as a user would.
sql() { PGPASSWORD="$PG_PASSWORD" psql -X -q -t -A -h 127.0.0.1 -p "$POSTGRES_PORT" -U weatherflow -d weatherflow -c "$1"; }
# Kafka's own tools inside the broker container.
kafka_tool() { dc exec -T kafka "/opt/kafka/bin/kafka-$1.sh" --bootstrap-server kafka:29092 "${@:2}"; }
# Sum of the committed offsets of the persist group, and its total lag.
group_offsets() {
  kafka_tool consumer-groups --describe --group weatherflow-persist 2>/dev/null \
    | awk '$2 == "weather.observations" { if ($4 ~ /^[0-9]+$/) c += $4; if ($6 ~ /^[0-9]+$/) l += $6; e += $5 } END { printf "%d %d %d\n", c, e, l }'
}
observations() { sql "select count(*) from observations"; }
# Rows of the places whose names start with $1. The stage fetches places of its own: the scheduler
# service also fetches the default places on its cron (every 10 min), and one of its observations
# can share a key with ours, so a count of every row would not tell loss from an upsert.
rows_of() { sql "select count(*) from observations where location_name like '$1%'"; }
# `run fetch` of simulated weather for the places given, through the scheduler service's
# definition; PRODUCED is the number of messages it reports acknowledged.
fetch() {
  local out tries=0
  # The scheduler service fetches on its own cron (every 10 minutes) and holds the fetch job's lock
  # meanwhile; a manual run is then refused, as it should be. Try again until it is free.
  until out="$(dc run --rm -T scheduler run fetch --source simulated "$@" 2>&1)"; do
    if grep -q "another fetch run (scheduled or manual) is in progress" <<<"$out" && [ $((tries += 1)) -le 30 ]; then
      say "the scheduler's own fetch holds the lock; trying again in 5 s"
      sleep 5
      continue
    fi
    echo "$out" | tail -n 20; fail "run fetch failed"
  done
  PRODUCED="$(grep -o 'produced=[0-9]*' <<<"$out" | tail -n1 | cut -d= -f2)"
  [ -n "$PRODUCED" ] && [ "$PRODUCED" -gt 0 ] || { echo "$out" | tail -n 20; fail "run fetch reported no produced count"; }
  say "run fetch produced $PRODUCED messages"
}

# Waits until the persist group has read every message on the topic and the rows match it.
wait_drained() {
  local deadline=$((SECONDS + ${1:-180})) committed end lag rows
  while :; do
    read -r committed end lag < <(group_offsets || echo "0 0 -1")
    rows="$(observations 2>/dev/null || echo -1)"
    if [ "$end" -gt 0 ] && [ "$committed" = "$end" ] && [ "$lag" = 0 ]; then
      say "group weatherflow-persist: committed $committed of $end messages, lag 0; $rows observations"
      DRAINED_MESSAGES="$end" DRAINED_ROWS="$rows"
      return 0
    fi
    [ $SECONDS -lt $deadline ] || fail "the consumer did not drain the topic (committed $committed of $end, lag $lag, $rows rows)"
    sleep 2
  done
}

cleanup() {
  local rc=$?
  trap - ERR
  if [ -n "$step_name" ]; then TIMES+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step_name")"); fi
  if [ $rc -ne 0 ]; then
    say "logs of the failed run (last 40 lines per service):"
    for p in "$PROJECT" "$PROJECT-cluster" "$PROJECT-zk"; do
      docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.Names}}' | while read -r c; do
        printf -- '---- %s (%s)\n' "$c" "$(docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")"
        docker logs --tail 40 "$c" 2>&1 | cut -c1-400
      done
    done
  fi
  if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ]; then
    say "COMPOSE_TEST_KEEP=1: containers, volumes and images kept (project $PROJECT; env $ENV_FILE)"
  else
    local t=$SECONDS
    # Every container, network and volume of the stage's projects (labels, whichever file made them).
    for p in "$PROJECT" "$PROJECT-cluster" "$PROJECT-zk"; do
      ids="$(docker ps -aq --filter "label=com.docker.compose.project=$p")"
      [ -z "$ids" ] || docker rm -f -v $ids >/dev/null 2>&1 || true
      ids="$(docker volume ls -q --filter "label=com.docker.compose.project=$p")"
      [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
      ids="$(docker network ls -q --filter "label=com.docker.compose.project=$p")"
      [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
    done
    docker rm -f -v "$PROJECT-cluster-pg" "$PROJECT-zk-pg" >/dev/null 2>&1 || true
    docker rmi weatherflow:latest weatherflow-notebook:latest >/dev/null 2>&1 || true
    docker image prune -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if [ "${ENGINE_WAS_UP:-1}" = 0 ]; then scripts/docker.sh down; fi
    say "cleaned up in $((SECONDS - t)) s"
  fi
  printf '\nstep times:\n'; printf '  %s\n' "${TIMES[@]}"
  if [ $rc -eq 0 ]; then
    say "compose stage passed in $((SECONDS - stage_start)) s"
  else
    say "compose stage FAILED after $((SECONDS - stage_start)) s: ${FAILURE:-exit status $rc}"
  fi
  exit $rc
}
trap cleanup EXIT

step "engine: scripts/docker.sh up"
# An engine that answered before the stage is someone else's; one the stage starts, it stops.
ENGINE_WAS_UP=0
if timeout 10 docker info >/dev/null 2>&1; then ENGINE_WAS_UP=1; fi
scripts/docker.sh up
step "base images: scripts/images.sh"
scripts/images.sh
command -v psql >/dev/null || fail "psql not found (scripts/services.sh up installs PostgreSQL's client)"

step "docker compose build (weatherflow, weatherflow-notebook)"
# Leftovers of an interrupted run would change what the checks below see.
dc --profile analysis --profile monitoring down -v --remove-orphans >/dev/null 2>&1 || true
BUILD_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)"
export BUILD_GIT_COMMIT
DOCKER_BUILDKIT=1 dc --profile analysis build --progress plain >"$WORK/build.log" 2>&1 \
  || { tail -n 60 "$WORK/build.log"; fail "docker compose build failed (log above)"; }
grep -E '^#[0-9]+ (DONE|CACHED)|cargo build|Finished' "$WORK/build.log" | grep -E 'Finished|cargo' | tail -n 3 || true
for image in weatherflow:latest weatherflow-notebook:latest; do
  size="$(docker image inspect --format '{{.Size}}' "$image")"
  user="$(docker image inspect --format '{{.Config.User}}' "$image")"
  say "$image: $((size / 1000000)) MB, runs as user '$user'"
  case "$user" in ""|root|0|0:*) fail "$image runs as root";; esac
done

step "secrets: not in the images, not printed by docker compose config"
for image in weatherflow:latest weatherflow-notebook:latest; do
  if docker image inspect "$image" | grep -q -e "$PG_PASSWORD" -e "$JUPYTER_TOKEN" -e "$WEB_DB_PASSWORD" -e "$CONSUMER_DB_PASSWORD"; then fail "$image holds a secret"; fi
  if docker history --no-trunc "$image" | grep -q -e "$PG_PASSWORD" -e "$JUPYTER_TOKEN" -e "$WEB_DB_PASSWORD" -e "$CONSUMER_DB_PASSWORD"; then fail "$image's history holds a secret"; fi
done
for f in docker-compose.yml docker-compose.cluster.yml docker-compose.zookeeper.yml; do
  config="$(compose_in "$PROJECT" -f "$f" --profile analysis --profile monitoring config)" || fail "docker compose -f $f config failed"
  if grep -q -e "$PG_PASSWORD" -e "$JUPYTER_TOKEN" -e "$WEB_DB_PASSWORD" -e "$CONSUMER_DB_PASSWORD" <<<"$config"; then fail "docker compose -f $f config prints a secret"; fi
done
say "neither secret (database password, Jupyter token) in the images or in docker compose config"

step "up --wait: every healthcheck"
dc up -d --wait --wait-timeout 300 || fail "the services did not all become healthy"
dc ps --format '{{.Service}}\t{{.Status}}'
# The user of each container's main process (PID 1), not of `exec`.
for svc in kafka postgres scheduler consumer web nginx; do
  say "$svc: PID 1 runs as $(dc exec -T "$svc" stat -c %U /proc/1 2>/dev/null || echo '?')"
done

step "pipeline: run fetch (simulated) -> consumer -> run analytics, read through 127.0.0.1:$POSTGRES_PORT"
fetch --backfill-hours 48 --seed 7 --location "Compose North" --location "Compose South" \
  --location "Compose East" --location "Compose West"
wait_drained 300
first="$(rows_of Compose)"
[ "$first" = "$PRODUCED" ] || fail "$PRODUCED messages fetched but $first of their observations stored"
say "every message stored: $first observations of the fetched places"
dc run --rm -T scheduler run analytics | tail -n 8
results="$(sql "select count(*) from regression_results")"
[ "$results" -gt 0 ] || fail "run analytics wrote no regression_results"
say "regression_results: $results rows; job_runs: $(sql "select string_agg(job || '=' || status, ', ' order by id) from job_runs")"

step "nginx on 127.0.0.1:$HTTP_PORT: dashboard, /api/v1/status, /healthz; /metrics refused"
http() { curl -sS -o "$WORK/body" -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT$1"; }
[ "$(http /healthz)" = 200 ] || fail "/healthz through nginx: $(cat "$WORK/body")"
if [ -n "$BUILD_GIT_COMMIT" ]; then
  grep -q "\"commit\":\"$BUILD_GIT_COMMIT\"" "$WORK/body" \
    || fail "/healthz does not name the commit built ($BUILD_GIT_COMMIT): $(cat "$WORK/body")"
fi
[ "$(http /api/v1/status)" = 200 ] || fail "/api/v1/status through nginx"
shown="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tables"]["observations"]["rows"])' "$WORK/body" 2>/dev/null || echo '?')"
total="$(observations)"
[ "$shown" = "$total" ] || fail "/api/v1/status through nginx reports $shown observations, the table holds $total: $(head -c 300 "$WORK/body")"
[ "$(http /)" = 200 ] || fail "the dashboard through nginx"
code="$(http /metrics)"; [ "$code" = 404 ] || fail "/metrics through nginx answered $code, not 404"
say "/healthz 200, /api/v1/status 200 ($shown observations), / 200, /metrics $code"
if command -v chromium >/dev/null; then
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,900 \
    --screenshot="$WORK/dashboard.png" "http://127.0.0.1:$HTTP_PORT/" >/dev/null 2>&1 || true
  [ -s "$WORK/dashboard.png" ] || fail "Chromium took no screenshot of the dashboard"
  shot="${COMPOSE_TEST_SCREENSHOT:-${TMPDIR:-/tmp}/weatherflow-compose-dashboard.png}"
  cp "$WORK/dashboard.png" "$shot"
  say "dashboard screenshot: $shot ($(stat -c %s "$shot") bytes)"
else
  say "chromium missing (scripts/web-tools.sh installs it): no screenshot"
fi

step "monitoring profile: Prometheus on 127.0.0.1:$PROMETHEUS_PORT scrapes every service, loads every rule"
dc --profile monitoring up -d --wait --wait-timeout 120 prometheus || fail "Prometheus did not become healthy"
prom() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT$1"; }
want_rules="$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)"
deadline=$((SECONDS + 90))
while :; do
  # The targets' health after their first scrape (15 s interval), and the alerting rules loaded.
  read -r up total rules < <(prom /api/v1/targets | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
w = [x for x in t if x["labels"]["job"].startswith("weatherflow-")]
print(sum(x["health"] == "up" for x in w), len(w), end=" ")' && prom /api/v1/rules | python3 -c '
import json, sys
g = json.load(sys.stdin)["data"]["groups"]
print(sum(r["type"] == "alerting" for x in g for r in x["rules"]))') || true
  if [ "${total:-0}" = 3 ] && [ "$up" = 3 ] && [ "$rules" = "$want_rules" ]; then break; fi
  [ $SECONDS -lt $deadline ] || fail "Prometheus: ${up:-?} of ${total:-?} weatherflow targets up, ${rules:-?} of $want_rules alerting rules loaded"
  sleep 3
done
firing="$(prom '/api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%7D' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))')"
say "Prometheus: 3 of 3 weatherflow targets up, $rules alerting rules loaded, $firing firing"

step "notebook: APP_MODE=jupyter with its token, and without one"
dc --profile analysis up -d notebook
deadline=$((SECONDS + 120))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$JUPYTER_PORT/api/status?token=$JUPYTER_TOKEN")" = 200 ]; do
  [ $SECONDS -lt $deadline ] || { dc logs --tail 30 notebook; fail "JupyterLab did not answer with its token"; }
  sleep 2
done
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$JUPYTER_PORT/api/status")"
[ "$code" = 403 ] || fail "JupyterLab answered $code without the token, not 403"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$JUPYTER_PORT/api/status?token=wrong$JUPYTER_TOKEN")"
[ "$code" = 403 ] || fail "JupyterLab answered $code to a wrong token, not 403"
say "JupyterLab: 200 with its token, 403 without or with a wrong one"
set +e
out="$(dc --profile analysis run --rm -T --no-deps -e JUPYTER_TOKEN_FILE= notebook 2>&1)"; rc=$?
set -e
[ $rc = 64 ] || fail "the notebook container with an empty token exited $rc, not 64: $out"
grep -q 'refuses to start without JUPYTER_TOKEN' <<<"$out" || fail "no refusal message: $out"
say "without a token the notebook container refuses to start (exit 64)"
dc --profile analysis rm -sf notebook >/dev/null

step "backlog: stop consumer, fetch, start consumer; nothing lost, nothing twice"
dc stop consumer
fetch --backfill-hours 24 --seed 8 --location "Backlog Alpha" --location "Backlog Beta" \
  --location "Backlog Gamma"
read -r committed end _ < <(group_offsets)
# end - committed, not the tool's LAG column: a partition the group never committed on shows "-".
lag=$((end - committed))
[ "$(rows_of Backlog)" = 0 ] || fail "backlog rows stored while the consumer was stopped"
say "while stopped: $end messages on the topic, $committed committed, backlog $lag, no backlog row stored"
[ "$lag" -ge "$PRODUCED" ] || fail "the stopped consumer left a backlog of $lag, not at least $PRODUCED"
dc start consumer
wait_drained 300
backlog="$(rows_of Backlog)"
[ "$backlog" = "$PRODUCED" ] || fail "$PRODUCED backlog messages but $backlog of their observations stored"
[ "$(rows_of Compose)" = "$first" ] || fail "the first fetch's rows changed under the backlog"
say "after start: all $backlog backlog observations stored, each once (rows = messages)"

step "down, then up: observations and the group's offsets survive (the volumes work)"
rows_before="$(observations)" ours_before="$(( $(rows_of Compose) + $(rows_of Backlog) ))"
read -r committed_before _ _ < <(group_offsets)
dc down
dc up -d --wait --wait-timeout 300 || fail "the services did not come back healthy after down/up"
rows_after="$(observations)" ours_after="$(( $(rows_of Compose) + $(rows_of Backlog) ))"
read -r committed_after end_after lag_after < <(group_offsets)
say "before: $rows_before rows, $committed_before committed; after: $rows_after rows, $committed_after committed of $end_after"
[ "$ours_after" = "$ours_before" ] || fail "down/up lost observations ($ours_before -> $ours_after of the stage's places)"
[ "$rows_after" -ge "$rows_before" ] || fail "down/up lost observations ($rows_before -> $rows_after)"
# At least as far as before (the scheduler's cron may have fetched since), never back to 0.
[ "$committed_after" -ge "$committed_before" ] && [ "$committed_after" -gt 0 ] \
  || fail "down/up lost the group's offsets ($committed_before -> $committed_after)"

step "down -v removes the volumes"
# With every profile the stage started: a profile's volumes (prometheus-data) are only its own.
dc --profile analysis --profile monitoring down -v
left="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$left" ] || fail "volumes left after down -v: $left"
say "no volume of project $PROJECT left"

# A fetch -> persist cycle against a broker of another compose file: a PostgreSQL container and the
# weatherflow image on that project's network.
cycle_on() {
  local project="$1" bootstrap="$2" rf="$3" net="$1_default"
  local pg="$project-pg"
  docker run -d --name "$pg" --network "$net" -e POSTGRES_USER=weatherflow -e POSTGRES_DB=weatherflow \
    -e POSTGRES_PASSWORD="$PG_PASSWORD" postgres:15 >/dev/null
  local deadline=$((SECONDS + 60))
  until docker exec "$pg" pg_isready -q -U weatherflow -d weatherflow; do
    [ $SECONDS -lt $deadline ] || fail "PostgreSQL of $project did not start"; sleep 1
  done
  wf() {
    docker run --rm --network "$net" -e "DATABASE_URL=postgres://weatherflow:$PG_PASSWORD@$pg:5432/weatherflow" \
      -e "KAFKA_BOOTSTRAP_SERVERS=$bootstrap" -e WEATHERFLOW_KAFKA_REPLICATION_FACTOR="$rf" \
      -e RUST_LOG=warn weatherflow:latest "$@"
  }
  wf migrate up >/dev/null
  wf run fetch --source simulated --backfill-hours 6 --seed 9 | tail -n 2
  wf run persist --until-idle | tail -n 2
  local rows; rows="$(docker exec "$pg" psql -t -A -U weatherflow -d weatherflow -c 'select count(*) from observations')"
  [ "$rows" -gt 0 ] || fail "no observation stored through $project"
  say "$project: $rows observations stored through $bootstrap"
  docker rm -f -v "$pg" >/dev/null
}

step "docker-compose.cluster.yml: 3 brokers, fetch -> persist"
KAFKA_PORT_1=$((BASE + 192)) KAFKA_PORT_2=$((BASE + 194)) KAFKA_PORT_3=$((BASE + 196))
printf 'KAFKA_PORT_1=%s\nKAFKA_PORT_2=%s\nKAFKA_PORT_3=%s\n' "$KAFKA_PORT_1" "$KAFKA_PORT_2" "$KAFKA_PORT_3" >>"$ENV_FILE"
compose_in "$PROJECT-cluster" -f docker-compose.cluster.yml up -d --wait --wait-timeout 300 \
  || fail "the cluster did not become healthy"
brokers="$(compose_in "$PROJECT-cluster" -f docker-compose.cluster.yml exec -T kafka-1 \
  /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server kafka-1:29092 2>/dev/null | grep -c '^kafka-[0-9]:29092' || true)"
say "brokers answering: $brokers"
[ "$brokers" = 3 ] || fail "the cluster has $brokers brokers, not 3"
cycle_on "$PROJECT-cluster" kafka-1:29092,kafka-2:29092,kafka-3:29092 3
compose_in "$PROJECT-cluster" -f docker-compose.cluster.yml down -v

step "docker-compose.zookeeper.yml: ZooKeeper and one broker, fetch -> persist"
sed -i "s/^KAFKA_PORT=.*/KAFKA_PORT=$((BASE + 292))/" "$ENV_FILE"
compose_in "$PROJECT-zk" -f docker-compose.zookeeper.yml up -d --wait --wait-timeout 300 \
  || fail "ZooKeeper and its broker did not become healthy"
cycle_on "$PROJECT-zk" kafka:29092 1
compose_in "$PROJECT-zk" -f docker-compose.zookeeper.yml down -v

step "done"
