#!/usr/bin/env bash
# Installs what cross-building ternd (the runtime and its tests, and the full
# daemon for the Debian package) and running it under qemu-user needs, from
# Debian only: the cross compilers, qemu-user, and the multiarch -dev
# packages of the libraries ternd links.
#
#   cross/setup.sh [arm64] [armhf]      (default: arm64 armhf; needs root)
#
# Idempotent: a second run installs nothing new. Only the architectures
# asked for are added to dpkg: a foreign architecture whose index fails to
# download makes apt ignore that whole suite (e.g. the security updates) for
# every architecture, and then the multiarch versions no longer match.
set -euo pipefail

arches=("$@")
if [ ${#arches[@]} -eq 0 ]; then arches=(arm64 armhf); fi

if [ "$(id -u)" -ne 0 ]; then
  echo "cross/setup.sh: needs root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

pkgs=(cmake ninja-build ccache protobuf-compiler libeigen3-dev libcli11-dev
      qemu-user)
for arch in "${arches[@]}"; do
  case "$arch" in
    arm64) pkgs+=(g++-aarch64-linux-gnu) ;;
    armhf) pkgs+=(g++-arm-linux-gnueabihf) ;;
    *) echo "cross/setup.sh: unknown architecture '$arch'" >&2; exit 1 ;;
  esac
  # Multiarch libraries the runtime (protobuf) and its tests (gtest) link.
  pkgs+=("libprotobuf-dev:$arch" "libgtest-dev:$arch")
  # The full build (daemon, OTA, telemetry, MQTT: what the Debian package
  # holds; scripts/package.sh) links these too.
  pkgs+=("libsystemd-dev:$arch" "libsqlite3-dev:$arch" "libssl-dev:$arch"
         "libcurl4-openssl-dev:$arch" "libmosquitto-dev:$arch"
         "libzstd-dev:$arch" "libtomlplusplus-dev:$arch" "libgmock-dev:$arch")
done

for arch in "${arches[@]}"; do
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
  fi
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "cross/setup.sh: everything is installed"
  exit 0
fi
# Fresh lists for every architecture: a multiarch library must have the
# same version for the host and the foreign architecture, so apt may also
# upgrade the host's copy (e.g. from the security suite) to match. A
# third-party source without the foreign architecture only warns.
# A mirror caught mid-sync fails an index ("File has unexpected size"), and
# apt then drops that suite for every architecture: retry a few times.
for try in 1 2 3 4; do
  apt-get -o DPkg::Lock::Timeout=900 update -q >/tmp/ternd-apt-update.log 2>&1 || true
  if grep -q "^E: Failed to fetch" /tmp/ternd-apt-update.log; then
    grep "^E: " /tmp/ternd-apt-update.log >&2
    echo "cross/setup.sh: apt-get update failed (try $try), retrying" >&2
    sleep $((try * 10))
  else
    break
  fi
done
echo "cross/setup.sh: installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
