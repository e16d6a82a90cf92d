#!/usr/bin/env bash
# ARM CI step: installs the cross toolchain and qemu-user (cross/setup.sh),
# cross-builds the runtime and its unit tests for aarch64, and runs them
# under qemu-aarch64 twice: once as dispatch chooses on qemu's CPU (which has
# the dot-product extension: "neondot"), once forcing plain NEON with
# TERND_KERNEL=neon. Then it cross-builds for armhf (32-bit: reference
# kernel only) against a sysroot unpacked from Debian's armhf packages
# (cross/setup.sh --sysroot) and runs the same tests under qemu-arm: about
# 70 s more with a warm ccache on two cores (about 4 min the first time:
# compiler install, sysroot, cold ccache). TERND_CI_ARMHF=0 skips armhf.
# Each run ends with a ctest summary.
#
# Usage: bash .ci/arm.sh   (from the repository root; needs root for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

armhf=${TERND_CI_ARMHF:-1}
armhf_sysroot=$PWD/build-armhf-sysroot

bash cross/setup.sh arm64

jobs=$(nproc)

# The runtime's unit tests. ternctl_test and demo_model_test are left out:
# they exec host tools built for the target, which only work where
# binfmt_misc hands foreign binaries to qemu.
tests=(ternary_kernels_test ternary_pack_test format_test planner_test
       ops_test runtime_test no_alloc_test status_test
       tokenizer_test tokenizer_no_alloc_test)

cross_build() {  # build-dir toolchain-file [more cmake arguments]
  # TERND_RUNTIME_ONLY (when the top-level CMakeLists.txt has it) skips the
  # parts whose dependencies are not cross-installed.
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_TOOLCHAIN_FILE="$2" -DTERND_BUILD_BENCH=OFF -DTERND_WERROR=ON \
    -DTERND_RUNTIME_ONLY=ON -Wno-dev "${@:3}"
  local targets=()
  for t in "${tests[@]}"; do
    targets+=("$(ninja -C "$1" -t targets all |
                 sed -n "s|^\(tests/[^:]*/$t\): .*|\1|p" | head -n1)")
  done
  ninja -C "$1" -j"$jobs" "${targets[@]}"
}

run_tests() {  # build-dir title [extra ctest -E regex]
  echo "=== $2 ==="
  local exclude="TernctlTest|DemoModelTest"
  if [ -n "${3:-}" ]; then exclude="$exclude|$3"; fi
  # ctest runs each test binary through the toolchain's qemu emulator.
  ctest --test-dir "$1" -L unit -E "$exclude" -j"$jobs" --timeout 900 \
    --output-on-failure
}

start=$(date +%s)
cross_build build-aarch64 cross/aarch64-linux-gnu.cmake
# 1. As dispatch chooses: qemu's default CPU has asimddp, so "auto" is
#    neondot; the kernel tests cover every variant (neondot, neon, ref).
TERND_KERNEL='' run_tests build-aarch64 \
  "aarch64 under qemu-aarch64: all variants, auto dispatch (neondot)"
# 2. Forcing plain NEON: everything that goes through dispatch (format,
#    runtime, zero-allocation, ...); the per-variant kernel tests do not
#    depend on dispatch and ran above, nor does the tokenizer.
TERND_KERNEL=neon run_tests build-aarch64 \
  "aarch64 under qemu-aarch64: forced TERND_KERNEL=neon" \
  'Variants/|Tokenizer|tokenizer_fixtures'

echo "arm.sh: aarch64 done in $(( $(date +%s) - start )) s after setup"

if [ "$armhf" = 1 ]; then
  armhf_start=$(date +%s)
  # Only the host's packages are installed; the armhf libraries are unpacked
  # into the sysroot, so no armhf multiarch package has to match the host.
  bash cross/setup.sh --sysroot "$armhf_sysroot" armhf
  cross_build build-armhf cross/arm-linux-gnueabihf.cmake \
    -DTERND_SYSROOT="$armhf_sysroot"
  TERND_KERNEL='' run_tests build-armhf "armhf under qemu-arm (reference kernel)"
  echo "arm.sh: armhf done in $(( $(date +%s) - armhf_start )) s with its setup"
fi
echo "arm.sh: done in $(( $(date +%s) - start )) s after the arm64 setup"
