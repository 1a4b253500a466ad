#!/bin/sh
# The image's entry point. APP_MODE=web starts the web application (listening on the container's
# network, where nginx reaches it); otherwise the arguments are a weatherflow command.
set -eu
if [ "${APP_MODE:-}" = "web" ]; then
  exec weatherflow serve --listen "${WEB_LISTEN:-0.0.0.0:8080}"
fi
exec weatherflow "$@"
