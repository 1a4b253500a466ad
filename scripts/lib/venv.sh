# shellcheck shell=bash
# A Python venv outside the checkout, from PyPI, for the scripts that need one (scripts/notebook.sh:
# Jupyter; scripts/test-openapi.sh: schemathesis). Sourced; CACHE must be set.
#
#   cached_venv NAME REQUIREMENTS   prints $CACHE/NAME-<hash of REQUIREMENTS>, building it first when
#                                   no complete venv of that file exists
#
# One build at a time (another run may be building the same venv, under a lock beside it); the
# marker file is written last, so an interrupted install is rebuilt, never reused. PYTHON picks the
# interpreter (default python3, at least 3.11).
cached_venv() {
  local name="$1" requirements="$2" dir python
  dir="$CACHE/$name-$(sha256sum "$requirements" | cut -c1-16)"
  if [ -f "$dir/.complete" ]; then
    echo "$dir"
    return
  fi
  python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
    echo "venv: $python is older than Python 3.11 (set PYTHON=python3.11)" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  exec 9>"$dir.lock"
  flock 9
  if [ ! -f "$dir/.complete" ]; then
    echo "venv: building $dir from $requirements (once per version of that file)" >&2
    rm -rf "$dir"
    "$python" -m venv "$dir" >&2
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
    touch "$dir/.complete"
  fi
  exec 9>&-
  echo "$dir"
}
