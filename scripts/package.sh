#!/usr/bin/env bash
# Builds ternd's Debian packages (README "Install from packages",
# docs/operations.md):
#
#   scripts/package.sh [amd64|arm64|all]      (default: amd64; needs root
#                                              the first time, for apt-get)
#
#   amd64: build-pkg/packages/ternd_<version>_amd64.deb
#                             ternd-dev_<version>_amd64.deb
#                             python3-ternd_<version>_all.deb
#   arm64: build-pkg-arm64/packages/ternd_<version>_arm64.deb
#                                   ternd-dev_<version>_arm64.deb
#          (cross-built with g++-aarch64-linux-gnu; cross/setup.sh installs
#          the toolchain and the arm64 libraries)
#
# Release build (-O3), binaries stripped (no debug symbol package). The
# version is the project's; TERND_PACKAGE_VERSION=V overrides it (the package
# CI builds a lower one to test upgrades). Depends: is computed by
# dpkg-shlibdeps from the libraries the binaries link.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

arches=()
case "${1:-amd64}" in
  amd64) arches=(amd64) ;;
  arm64) arches=(arm64) ;;
  all) arches=(amd64 arm64) ;;
  *) echo "usage: $0 [amd64|arm64|all]" >&2; exit 2 ;;
esac

scripts/deps.sh build
if [[ " ${arches[*]} " == *" arm64 "* ]]; then
  bash cross/setup.sh arm64 >/dev/null
fi

package() {  # arch build-dir triplet [toolchain-file]
  local arch=$1 dir=$2 triplet=$3 toolchain=${4:-}
  local args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr
    -DTERND_SYSTEMD_UNIT_DIR=/lib/systemd/system -DTERND_WERROR=ON
    -DTERND_BUILD_TESTS=OFF -DTERND_BUILD_BENCH=OFF
    # Debian multiarch; GNUInstallDirs picks it only for native builds.
    "-DCMAKE_INSTALL_LIBDIR=lib/$triplet"
    "-DTERND_PACKAGE_VERSION=${TERND_PACKAGE_VERSION:-}"
    # No build paths in the binaries (assertion messages name source files).
    "-DCMAKE_C_FLAGS=-ffile-prefix-map=$root/=" "-DCMAKE_CXX_FLAGS=-ffile-prefix-map=$root/=")
  if [[ -n $toolchain ]]; then args+=("-DCMAKE_TOOLCHAIN_FILE=$toolchain"); fi
  echo "package.sh: $arch in $dir"
  cmake -S . -B "$dir" "${args[@]}" -Wno-dev --no-warn-unused-cli >/dev/null
  ninja -C "$dir" -j"${TERND_JOBS:-2}" --quiet
  rm -rf "$dir/packages"
  # For a cross build dpkg-shlibdeps must read the target's libraries
  # (/usr/lib/aarch64-linux-gnu, installed by cross/setup.sh) with the
  # target's objdump: both follow DEB_HOST_ARCH.
  (cd "$dir" && DEB_HOST_ARCH=$arch cpack -G DEB >cpack.log 2>&1) || {
    cat "$dir/cpack.log" >&2
    echo "package.sh: cpack failed for $arch" >&2
    exit 1
  }
  ls -1 "$dir"/packages/*.deb
}

for arch in "${arches[@]}"; do
  case "$arch" in
    amd64) package amd64 build-pkg x86_64-linux-gnu ;;
    arm64) package arm64 build-pkg-arm64 aarch64-linux-gnu cross/aarch64-linux-gnu.cmake ;;
  esac
done
