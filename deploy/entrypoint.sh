#!/bin/sh
# Entrypoint of both images (Dockerfile: weatherflow; Dockerfile.notebook: JupyterLab). APP_MODE says
# what the container is:
#   scheduler  weatherflow scheduler [ARGS]     consumer  weatherflow consumer [ARGS]
#   web        weatherflow serve [ARGS]         migrate   weatherflow migrate up [ARGS]
#   jupyter    JupyterLab on port 8888 (Dockerfile.notebook), token from JUPYTER_TOKEN
#   unset      the given command: a weatherflow subcommand (`run fetch`, `status`, …) or any program
# ARGS are the container's command, appended (e.g. APP_MODE=scheduler with command `--no-consumer`).
set -eu

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
      echo "entrypoint: APP_MODE=jupyter refuses to start without JUPYTER_TOKEN (set it in .env)" >&2
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
