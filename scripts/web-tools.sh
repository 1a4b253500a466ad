#!/usr/bin/env bash
# Installs the tools the web tests and `weatherflow bench web` drive (docs/web.md): Debian's
# prometheus (and promtool), chromium, nginx and wrk. Idempotent; scripts/test.sh calls it.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "web tools present: prometheus, promtool, chromium, nginx, wrk"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing Debian's ${missing[*]}"
$SUDO apt-get update -qq
# policy-rc.d: the packages' own services (nginx on port 80, prometheus on 9090) are not started;
# the tests run their own instances on free ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
echo "installed ${missing[*]}"
