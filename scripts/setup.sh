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

# Debian packages do not start their services here; the tests start what they need
# themselves on loopback, with their own config and data directories.
