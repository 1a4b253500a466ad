# Multi-stage build of the `weatherflow` binary. Used by docker-compose.yml; CI builds and runs it
# (scripts/test-compose.sh, docs/deploy.md). Build with BuildKit (`docker compose build` does): the
# cargo registry and target directory are cache mounts, kept between builds.
FROM rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka-sys (make, a C/C++ toolchain, cmake for aws-lc), with TLS
# and SASL against the system OpenSSL (libssl-dev, pkg-config).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The commit `--version` and /healthz name: the build context has no .git (jobs/build.rs).
ARG BUILD_GIT_COMMIT=""
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weatherflow \
 && cp target/release/weatherflow /usr/local/bin/weatherflow

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 weatherflow
COPY --from=build /usr/local/bin/weatherflow /usr/local/bin/weatherflow
COPY schedules.toml /app/schedules.toml
COPY deploy/entrypoint.sh /usr/local/bin/entrypoint
WORKDIR /app
USER weatherflow
# curl: the compose healthchecks ask /readyz.
# APP_MODE (scheduler, consumer, web, migrate) picks the service; unset, the command runs as given
# (`docker run weatherflow run fetch`). No CMD: it would be appended to every mode.
ENTRYPOINT ["entrypoint"]
