#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine. Idempotent: does nothing when
# everything is present. Called by .ci/run and by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required but not installed" >&2; exit 1; }
}
need_cmd cargo
need_cmd rustc

missing=()
while read -r pkg _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < scripts/packages.txt

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# PyPI tools (schemathesis) in the project's own virtual environment, made with Debian's
# interpreter (named explicitly: `python3` on PATH may be another one). Recreated when
# scripts/requirements-test.txt changes.
venv=.venv
stamp="$venv/requirements-test.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s scripts/requirements-test.txt "$stamp"; then
  echo "setup: installing the Python test tools into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt "$stamp"
else
  echo "setup: Python test tools present in $venv"
fi

# Debian packages do not start their services here; the tests start what they need
# themselves on loopback, with their own config and data directories.
