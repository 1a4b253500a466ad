#!/usr/bin/env bash
# Local base images for the compose files and Dockerfiles, for machines that cannot pull from Docker
# Hub (scripts/test-compose.sh runs it). Each is built under the exact name our files use, and only
# when no image of that name exists, so a machine with Docker Hub keeps the official images:
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, imported
#   rust:1.95-bookworm     the machine's Rust toolchain on it       (deploy/standin/rust)
#   python:3.11-slim       Debian's Python 3.11 and pip             (deploy/standin/python)
#   nginx:1.27             Debian's nginx                           (deploy/standin/nginx)
#   prom/prometheus:v2.42.0 Debian's Prometheus 2.42                (deploy/standin/prometheus)
#   postgres:15            Debian's PostgreSQL 15                   (deploy/standin/postgres)
#   apache/kafka:4.4.0, confluentinc/cp-kafka:7.9.0, confluentinc/cp-zookeeper:7.9.0
#                          Debian's Java 17 and the Kafka jars from Maven Central (deploy/standin/kafka)
# deploy/standin/README.md says what each honours. Every stand-in trusts the machine's CA bundle, so
# builds inside them reach the package registries through the same TLS as the machine, and carries the
# label org.weatherflow.standin. The jars come from the same cache as scripts/services.sh's.
#   scripts/images.sh          build what is missing     scripts/images.sh list   show the stand-ins
#   scripts/images.sh remove   remove the stand-ins (not an official image: only labelled ones)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
JARS="${SERVICES_JARS:-$CACHE}"
WORK="$CACHE/docker/standin"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL=org.weatherflow.standin

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

debian_base() {
  local name=debian:bookworm-slim
  if have "$name"; then log "$name present"; return; fi
  command -v debootstrap >/dev/null || {
    log "installing Debian's debootstrap"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null
  }
  local t=$SECONDS root="$WORK/rootfs"
  as_root rm -rf "$root"; mkdir -p "$WORK"
  log "debootstrap --variant=minbase bookworm ($MIRROR)"
  as_root debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  as_root tee "$root/etc/apt/sources.list" >/dev/null <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
SOURCES
  # The official image's apt habits: no recommends kept, no package cache left in layers.
  printf 'APT::Install-Recommends "false";\n' | as_root tee "$root/etc/apt/apt.conf.d/docker-no-recommends" >/dev/null
  printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' \
    | as_root tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null
  # The machine's CA bundle: as the bundle itself (no ca-certificates package in minbase), and where
  # update-ca-certificates keeps it when an image installs that package.
  as_root mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
  as_root cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  as_root cp "$CA_BUNDLE" "$root/usr/local/share/ca-certificates/machine-bundle.crt"
  as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  as_root tar -C "$root" -c . | docker import -c 'CMD ["bash"]' -c "LABEL $LABEL=$name" - "$name" >/dev/null
  as_root rm -rf "$root"
  log "$name imported in $((SECONDS - t)) s"
}

# A Maven Central jar set, the way scripts/services.sh fetches it (same cache, same marker).
jars() {
  local pom="$1" version; version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
  local libs="$JARS/kafka-$version/libs"
  if [ ! -f "$libs/.complete" ]; then
    command -v mvn >/dev/null || die "mvn not found: it fetches the Kafka $version jars from Maven Central"
    log "fetching Kafka $version jars from Maven Central into $libs"
    rm -rf "$libs"; mkdir -p "$libs"
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$JARS/m2" -f "$pom" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >&2 || die "mvn could not fetch Kafka $version"
    touch "$libs/.complete"
  fi
  echo "$libs"
}

# A build context of its own: the stand-in's folder, plus what standin_extra puts beside it.
context() {
  local ctx="$WORK/context/$1"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -a "deploy/standin/$2/." "$ctx/"
  echo "$ctx"
}

build() {
  local name="$1" ctx="$2"; shift 2
  local t=$SECONDS
  log "building stand-in $name"
  # The classic builder: the stand-ins need no BuildKit feature, and it needs no buildx plugin.
  DOCKER_BUILDKIT=0 docker build -q --label "$LABEL=$name" -t "$name" "$@" "$ctx" >/dev/null \
    || die "building $name failed (rerun: DOCKER_BUILDKIT=0 docker build -t $name $* $ctx)"
  rm -rf "$ctx"
  log "$name built in $((SECONDS - t)) s"
}

# What a stand-in is built from: its folder's files and the build's arguments. An image built from
# other inputs (an older entrypoint) is rebuilt; an image without our label is an official one, kept.
definition() {
  local dir="$1"; shift
  { (cd "deploy/standin/$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); echo "$*"; } \
    | sha256sum | cut -c1-16
}

standin() {
  local name="$1" dir="$2"; shift 2
  local want; want="$(definition "$dir" "$@")"
  if have "$name"; then
    local own built
    own="$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$name")"
    built="$(docker image inspect --format "{{index .Config.Labels \"$LABEL.definition\"}}" "$name")"
    if [ "$own" != "$name" ] || [ "$built" = "$want" ]; then log "$name present"; return; fi
    log "$name: deploy/standin/$dir changed since it was built; rebuilding"
  fi
  local ctx; ctx="$(context "$(echo "$name" | tr '/:' '__')" "$dir")"
  case "$dir" in
    rust)
      local sysroot; sysroot="$(rustc --print sysroot)" || die "rustc not found: the rust stand-in copies the machine's toolchain"
      # Hard links when the cache and the toolchain share a file system; the docs stay behind.
      mkdir -p "$ctx/toolchain"
      for part in bin lib libexec etc; do
        [ -e "$sysroot/$part" ] || continue
        cp -al "$sysroot/$part" "$ctx/toolchain/" 2>/dev/null || cp -a "$sysroot/$part" "$ctx/toolchain/"
      done ;;
    kafka)
      local libs tools; libs="$(jars "$1")"; shift
      cp -al "$libs" "$ctx/libs" 2>/dev/null || cp -a "$libs" "$ctx/libs"
      rm -f "$ctx/libs/.complete"
      mkdir -p "$ctx/tools"
      # The admin tools (kafka-topics, ...) of Kafka 4.4.0, which the 3.9.2 jar set lacks.
      tools="$(jars scripts/kafka/pom.xml)"
      if [ "$tools" != "$libs" ]; then
        cp -al "$tools/." "$ctx/tools/" 2>/dev/null || cp -a "$tools/." "$ctx/tools/"
        rm -f "$ctx/tools/.complete"
      fi ;;
  esac
  build "$name" "$ctx" --label "$LABEL.definition=$want" "$@"
}

# The stand-ins themselves: images built FROM one inherit its label, so the label's value (the name it
# was built under) must be the image's own name.
standins() {
  docker images --filter "label=$LABEL" --format '{{.Repository}}:{{.Tag}} {{.ID}}' | while read -r name id; do
    value="$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$id")"
    if [ "$value" = "$name" ]; then echo "$name"; fi
  done
}

case "${1:-build}" in
  build)
    docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/docker.sh up)"
    [ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (set CA_BUNDLE)"
    start=$SECONDS
    debian_base
    standin rust:1.95-bookworm rust
    standin python:3.11-slim python
    standin nginx:1.27 nginx
    standin prom/prometheus:v2.42.0 prometheus
    standin postgres:15 postgres
    standin apache/kafka:4.4.0 kafka scripts/kafka/pom.xml --build-arg FLAVOR=apache
    standin confluentinc/cp-kafka:7.9.0 kafka scripts/kafka/zookeeper/pom.xml --build-arg FLAVOR=cp-kafka
    standin confluentinc/cp-zookeeper:7.9.0 kafka scripts/kafka/zookeeper/pom.xml --build-arg FLAVOR=cp-zookeeper
    log "base images ready in $((SECONDS - start)) s"
    ;;
  list) standins | while read -r name; do docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' "$name"; done ;;
  remove) standins | xargs -r docker rmi ;;
  *) echo "usage: $0 [build|list|remove]" >&2; exit 2 ;;
esac
