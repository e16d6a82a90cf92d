#!/usr/bin/env bash
# Installs the Debian 12 packages ternd needs to build and test.
# Usage: scripts/deps.sh [build|test|all]   (default: build)
# Only packages that are missing are installed; a second run is quick.
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  libprotobuf-dev protobuf-compiler
  libssl-dev libcurl4-openssl-dev libsqlite3-dev libsystemd-dev
  libmosquitto-dev libzstd-dev libeigen3-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libmicrohttpd-dev
  dpkg-dev file clang-19
)
test_pkgs=(
  clang libclang-rt-14-dev
  mosquitto mosquitto-clients nginx openssl sqlite3 systemd curl
  python3 python3-numpy python3-protobuf python3-torch python3-sklearn
  python3-pytest python3-venv python3-regex python3-scipy espeak-ng
  lintian debootstrap prometheus nodejs npm
)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  test | all) want+=("${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  # Node.js from elsewhere (e.g. NodeSource) brings its own npm and
  # conflicts with Debian's npm package: an npm on PATH is enough.
  if [[ $p == npm ]] && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
echo "ternd: installing ${#missing[@]} Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
