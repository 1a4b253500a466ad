#!/usr/bin/env bash
# A Docker engine for the compose stage (scripts/test-compose.sh) and for trying the compose files by
# hand, on a machine that has none:
#
#   scripts/docker.sh up       install what is missing, start dockerd if none answers, wait for it
#   scripts/docker.sh down     stop the dockerd this script started (never one it did not start)
#   scripts/docker.sh status   say whether an engine answers and who started it; exit 1 when none
#
# What `up` installs when missing: Debian's docker.io (dockerd 20.10, containerd, runc) with apt-get,
# and the compose v2 plugin (`docker compose`) built from the Go module proxy
# (github.com/docker/compose/v2 at COMPOSE_VERSION) into the cache, linked into
# ~/.docker/cli-plugins. Idempotent: a second `up` only checks. The engine's state (images, volumes,
# BuildKit's cache mounts) lives under SERVICES_CACHE (default ~/.cache/weatherflow)/docker, outside
# the checkout, so it survives between runs; `docker system prune` or removing that folder frees it.
set -euo pipefail

CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
STATE="$CACHE/docker"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
COMPOSE_VERSION="${COMPOSE_VERSION:-v2.29.7}"
PLUGIN="$STATE/cli-plugins/docker-compose-$COMPOSE_VERSION"

log() { printf '[docker] %s\n' "$*" >&2; }
die() { printf '[docker] error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

install_engine() {
  if command -v dockerd >/dev/null && command -v docker >/dev/null; then return; fi
  log "installing Debian's docker.io"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
}

# The v2 plugin, built once with the Go toolchain; Debian's docker-compose 1.29 does not read every
# field our files use the way v2 does (depends_on conditions, profiles, `docker compose run --rm`).
install_compose() {
  if docker compose version >/dev/null 2>&1; then return; fi
  if [ ! -x "$PLUGIN" ]; then
    command -v go >/dev/null || die "go not found: the compose v2 plugin is built from the Go module proxy"
    log "building docker compose $COMPOSE_VERSION from the Go module proxy (about 2-5 minutes)"
    local t=$SECONDS gobin; gobin="$(mktemp -d)"
    GOBIN="$gobin" go install "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION" \
      || die "go install github.com/docker/compose/v2/cmd@$COMPOSE_VERSION failed"
    mkdir -p "$(dirname "$PLUGIN")"
    mv "$gobin/cmd" "$PLUGIN"; rmdir "$gobin"
    log "built in $((SECONDS - t)) s: $PLUGIN"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sfn "$PLUGIN" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null || die "docker compose does not answer after installing $PLUGIN"
}

start_engine() {
  if answers; then
    if our_pid >/dev/null; then log "dockerd already running (pid $(our_pid), started by this script)"
    else log "a Docker engine already answers (not started by this script)"; fi
    return
  fi
  mkdir -p "$STATE/data" "$STATE/exec"
  log "starting dockerd (state $STATE/data, log $LOG)"
  # setsid: the engine outlives this script's process group (a CI step that ends does not take it).
  setsid nohup dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$PIDFILE" \
    >>"$LOG" 2>&1 </dev/null &
  local deadline=$((SECONDS + 60))
  until answers; do
    if [ $SECONDS -ge $deadline ]; then tail -n 30 "$LOG" >&2; die "dockerd did not answer in 60 s"; fi
    sleep 1
  done
  log "dockerd $(docker version --format '{{.Server.Version}}') answers (pid $(our_pid || echo ?))"
}

stop_engine() {
  local pid
  if ! pid="$(our_pid)"; then log "no dockerd started by this script runs"; return; fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "dockerd did not stop in 30 s; killing it"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) install_engine; install_compose; start_engine ;;
  down) stop_engine ;;
  status)
    if ! answers; then echo "docker: no engine answers"; exit 1; fi
    if pid="$(our_pid)"; then echo "docker: dockerd pid $pid, started by scripts/docker.sh (state $STATE)"
    else echo "docker: an engine answers (not started by scripts/docker.sh)"; fi
    docker compose version 2>/dev/null || echo "docker compose: missing (scripts/docker.sh up builds it)"
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
