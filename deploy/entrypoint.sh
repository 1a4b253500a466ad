#!/bin/sh
# Entrypoint of both images (Dockerfile: weatherflow; Dockerfile.notebook: JupyterLab). APP_MODE says
# what the container is:
#   scheduler  weatherflow scheduler [ARGS]     consumer  weatherflow consumer [ARGS]
#   web        weatherflow serve [ARGS]         migrate   weatherflow migrate up [ARGS]
#   jupyter    JupyterLab on port 8888 (Dockerfile.notebook), token from JUPYTER_TOKEN
#   unset      the given command: a weatherflow subcommand (`run fetch`, `status`, …) or any program
# ARGS are the container's command, appended (e.g. APP_MODE=scheduler with command `--no-consumer`).
# Secrets come as files (compose `secrets:`, mounted under /run/secrets), never as environment
# values that `docker compose config` or `docker inspect` would show: NAME_FILE names the file and
# NAME is set from it, for the variables below. PGPASSWORD is the database password: weatherflow's
# PostgreSQL driver and libpq (the notebook) take it when DATABASE_URL holds none.
set -eu

for name in PGPASSWORD JUPYTER_TOKEN WEATHERFLOW_WEB_TOKEN; do
  eval "file=\${${name}_FILE:-}"
  [ -n "$file" ] || continue
  if [ ! -r "$file" ]; then
    echo "entrypoint: ${name}_FILE=$file is not a readable file (a compose secret must be readable by uid $(id -u))" >&2
    exit 64
  fi
  # The value without its trailing newline, as `printf %s "$(cat file)"` gives it.
  value="$(cat "$file")"
  export "$name=$value"
  unset "${name}_FILE"
done

# Fails with a message naming the image a mode needs, instead of "not found".
need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "entrypoint: APP_MODE=$APP_MODE needs $1, which this image lacks (use the $2 image)" >&2
  exit 64
}

case "${APP_MODE:-}" in
  scheduler) need weatherflow weatherflow; exec weatherflow scheduler "$@" ;;
  consumer)  need weatherflow weatherflow; exec weatherflow consumer "$@" ;;
  web)
    # On the container's network, where nginx reaches it; compose publishes nothing but nginx.
    need weatherflow weatherflow; exec weatherflow serve --listen "${WEB_LISTEN:-0.0.0.0:8080}" "$@" ;;
  migrate)   need weatherflow weatherflow; exec weatherflow migrate up "$@" ;;
  jupyter)
    need jupyter "weatherflow-notebook (Dockerfile.notebook)"
    if [ -z "${JUPYTER_TOKEN:-}" ]; then
      echo "entrypoint: APP_MODE=jupyter refuses to start without JUPYTER_TOKEN (compose: the jupyter_token secret, docs/deploy.md)" >&2
      exit 64
    fi
    # 0.0.0.0 inside the container, so the published port reaches it; compose publishes it on
    # 127.0.0.1 only. Jupyter reads the token from JUPYTER_TOKEN, which keeps it off the command line.
    exec jupyter lab --no-browser --ip 0.0.0.0 --port 8888 \
      --ServerApp.root_dir="${NOTEBOOK_DIR:-$HOME/notebooks}" "$@"
    ;;
  "")
    if [ $# -eq 0 ]; then
      exec weatherflow --help
    fi
    case "$1" in
      -*|help|migrate|check|schedules|run|runs|results|status|scheduler|consumer|serve|bench|config)
        exec weatherflow "$@" ;;
      *) exec "$@" ;;
    esac
    ;;
  *)
    echo "entrypoint: unknown APP_MODE=$APP_MODE (expected scheduler, consumer, web, migrate, jupyter, or unset)" >&2
    exit 64
    ;;
esac
