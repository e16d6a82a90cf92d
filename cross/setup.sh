#!/usr/bin/env bash
# Installs what cross-building ternd (the runtime and its tests, and the full
# daemon for the Debian package) and running it under qemu-user needs, from
# Debian only: the cross compilers, qemu-user, and the multiarch -dev
# packages of the libraries ternd links.
#
#   cross/setup.sh [arm64] [armhf]      (default: arm64 armhf; needs root)
#   cross/setup.sh --sysroot DIR ARCH   (runtime-only builds; see below)
#
# Idempotent: a second run installs nothing new. Only the architectures
# asked for are added to dpkg: a foreign architecture whose index fails to
# download makes apt ignore that whole suite (e.g. the security updates) for
# every architecture, and then the multiarch versions no longer match.
#
# --sysroot DIR: installs only the host's packages (cross compiler, qemu-user,
# protoc, ...) and unpacks the target libraries that the runtime and its
# unit tests need (glibc, libstdc++, zlib, protobuf, gtest, pcre2) from Debian's
# ARCH packages into DIR, without installing them: no foreign architecture in
# dpkg, and no lock-step with the versions of the host's own packages (which
# multiarch needs, and which breaks whenever the host has a security update
# that ARCH's index does not show yet). Configure with -DTERND_SYSROOT=DIR
# and -DTERND_RUNTIME_ONLY=ON (cross/debian-multiarch.cmake).
set -euo pipefail

sysroot=
if [ "${1:-}" = --sysroot ]; then
  if [ $# -ne 3 ]; then
    echo "usage: cross/setup.sh --sysroot DIR ARCH" >&2
    exit 1
  fi
  sysroot=$(realpath -m "$2")
  shift 2
fi
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
  if [ -n "$sysroot" ]; then continue; fi
  # Multiarch libraries the runtime (protobuf; the tokenizer: pcre2) and its
  # tests (gtest) link.
  pkgs+=("libprotobuf-dev:$arch" "libgtest-dev:$arch" "libpcre2-dev:$arch")
  # The full build (daemon, OTA, telemetry, MQTT: what the Debian package
  # holds; scripts/package.sh) links these too.
  pkgs+=("libsystemd-dev:$arch" "libsqlite3-dev:$arch" "libssl-dev:$arch"
         "libcurl4-openssl-dev:$arch" "libmosquitto-dev:$arch"
         "libzstd-dev:$arch" "libtomlplusplus-dev:$arch" "libgmock-dev:$arch"
         "libmicrohttpd-dev:$arch")
done

if [ -z "$sysroot" ]; then
  for arch in "${arches[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      dpkg --add-architecture "$arch"
    fi
  done
fi

# Unpacks the runtime's target libraries into $sysroot (--sysroot). apt runs
# with its own lists and cache under $sysroot/.apt and with ARCH as its only
# architecture, so the host's apt state is neither read nor changed. The
# stamp file names the packages and versions unpacked; the same list again
# unpacks nothing.
make_sysroot() {
  local arch=$1 dir=$2
  local libs=(libc6 libgcc-s1 libstdc++6 zlib1g zlib1g-dev libprotobuf32
              libprotobuf-dev libgtest-dev libpcre2-8-0 libpcre2-dev)
  if [ "$dir" = / ] || { [ -n "$(ls -A "$dir" 2>/dev/null)" ] &&
                         [ ! -d "$dir/.apt" ]; }; then
    echo "cross/setup.sh: $dir is not a sysroot made by cross/setup.sh" >&2
    return 1
  fi
  mkdir -p "$dir/.apt/lists/partial" "$dir/.apt/cache/archives/partial" \
    "$dir/.apt/debs"
  : >"$dir/.apt/status"
  local apt=(apt-get -q -o "Dir::State::Lists=$dir/.apt/lists"
             -o "Dir::Cache=$dir/.apt/cache"
             -o "Dir::State::status=$dir/.apt/status"
             -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
             -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  # An index that fails to download (a mirror mid-sync) only drops that
  # suite: the packages then come from the others (e.g. the point release
  # instead of the security suite), which is fine for running tests.
  "${apt[@]}" update >"$dir/.apt/update.log" 2>&1 || true
  if grep -q "^E: " "$dir/.apt/update.log"; then
    echo "cross/setup.sh: some $arch indexes failed to download; the" \
         "sysroot takes its packages from the other suites:" >&2
    grep "^E: " "$dir/.apt/update.log" >&2
  fi
  local want
  want=$("${apt[@]}" download --print-uris "${libs[@]}" |
         sed -n "s/^'[^']*' \([^ ]*\.deb\) .*/\1/p" | sort)
  if [ "$(echo "$want" | grep -c .)" -ne ${#libs[@]} ]; then
    echo "cross/setup.sh: found only these $arch packages of" \
         "${libs[*]}: $want" >&2
    return 1
  fi
  if [ "$(cat "$dir/.apt/stamp" 2>/dev/null)" = "$want" ]; then
    echo "cross/setup.sh: sysroot $dir is up to date"
    return 0
  fi
  # New versions: unpack into an empty tree (only .apt is kept).
  find "$dir" -mindepth 1 -maxdepth 1 ! -name .apt -exec rm -rf {} +
  rm -f "$dir/.apt/stamp" "$dir/.apt/debs/"*.deb
  (cd "$dir/.apt/debs" && "${apt[@]}" download "${libs[@]}" >/dev/null)
  for deb in "$dir/.apt/debs/"*.deb; do dpkg-deb -x "$deb" "$dir"; done
  echo "$want" >"$dir/.apt/stamp"
  echo "cross/setup.sh: unpacked into $dir: $(echo "$want" | tr '\n' ' ')"
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "cross/setup.sh: everything is installed"
  if [ -n "$sysroot" ]; then make_sysroot "${arches[0]}" "$sysroot"; fi
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
if [ -n "$sysroot" ]; then make_sysroot "${arches[0]}" "$sysroot"; fi
