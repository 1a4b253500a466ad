#!/usr/bin/env bash
# The analysis notebook (notebooks/weather_analysis.ipynb), on the configured database and broker.
#
#   scripts/notebook.sh                  JupyterLab on 127.0.0.1:${NOTEBOOK_PORT:-8888}, with a fresh token
#                                        (printed once, in the URL)
#   scripts/notebook.sh run [--out DIR]  execute the notebook headless; writes DIR/weather_analysis.ipynb
#                                        (the executed copy) and DIR/figures/*.png; non-zero on any cell
#                                        error. DIR defaults to $CACHE/notebook-run.
#   scripts/notebook.sh venv             only build (or find) the venv and print its path
#
# The venv lives outside the checkout, in $CACHE/venv-<hash of notebooks/requirements.txt>, installed
# from PyPI; it is reused while that file is unchanged. CACHE is ${SERVICES_CACHE:-~/.cache/weatherflow}.
# The notebook reads DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS and WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC
# (defaults: the local services of scripts/services.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${SERVICES_CACHE:-$HOME/.cache/weatherflow}"
REQUIREMENTS=notebooks/requirements.txt
NOTEBOOK=notebooks/weather_analysis.ipynb

# shellcheck source=scripts/lib/venv.sh
. scripts/lib/venv.sh
# Prints the venv's path, building it first when no complete venv exists for this requirements file.
venv() { cached_venv venv "$REQUIREMENTS"; }

case "${1:-lab}" in
  venv)
    venv
    ;;
  run)
    shift
    out="$CACHE/notebook-run"
    while [ $# -gt 0 ]; do
      case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        *) echo "notebook.sh run: unknown argument $1 (expected --out DIR)" >&2; exit 2 ;;
      esac
    done
    dir="$(venv)"
    exec "$dir/bin/python" scripts/notebook_run.py "$NOTEBOOK" "$out"
    ;;
  lab)
    dir="$(venv)"
    port="${NOTEBOOK_PORT:-8888}"
    # The token goes to Jupyter through the environment, not the command line (ps shows arguments).
    JUPYTER_TOKEN="$("$dir/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
    export JUPYTER_TOKEN
    echo "JupyterLab: http://127.0.0.1:$port/lab/tree/weather_analysis.ipynb?token=$JUPYTER_TOKEN"
    root=()
    if [ "$(id -u)" = 0 ]; then root=(--allow-root); fi   # CI containers and our machines run as root
    exec "$dir/bin/jupyter" lab --no-browser --ip 127.0.0.1 --port "$port" "${root[@]}" \
      --ServerApp.root_dir="$PWD/notebooks"
    ;;
  -h|--help)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "notebook.sh: unknown command $1 (expected run, venv or nothing)" >&2
    exit 2
    ;;
esac
