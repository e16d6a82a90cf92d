#!/usr/bin/env bash
# Static throughput estimates of the kernels' batch-1 inner loops with
# llvm-mca (Debian's llvm-19): for each variant and core, the cycles one
# iteration of the loop takes in steady state, the cycles per 256 weights,
# and the GFLOPS that implies at a stated clock (2 operations per weight).
# For the ARM variants, for which no hardware is at hand, this is the
# estimate docs/performance.md reports; the x86 rows are there to check the
# model against the measured numbers of bench/ternary_kernels_bench.
#
# Usage: bench/mca.sh [CLOCK_GHZ]    (default 2.4 for the ARM cores; x86
#        rows use 3.7, the measuring machine's boost clock)
# Needs clang++-19, llvm-mca-19 and the aarch64 cross headers
# (cross/setup.sh arm64, or g++-aarch64-linux-gnu).
set -euo pipefail
cd "$(dirname "$0")/.."
arm_ghz=${1:-2.4}
x86_ghz=3.7
clang=${CLANG:-clang++-19}
mca=${LLVM_MCA:-llvm-mca-19}
for tool in "$clang" "$mca"; do
  command -v "$tool" >/dev/null ||
    { echo "bench/mca.sh: $tool not found (Debian packages clang-19, llvm-19)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# variant | source | target flags | weights per loop iteration | cores
rows=(
  "avx512vnni|ternary_gemm_avx512vnni.cc|-mavx512f -mavx512bw -mavx512vl -mavx512vnni -mprefer-vector-width=512|2048|znver4 icelake-server"
  "avx512vnni-1.6|ternary_gemm_avx512vnni_tq1.cc|-mavx512f -mavx512bw -mavx512vl -mavx512vnni -mprefer-vector-width=512|2560|znver4 icelake-server"
  "neondot|ternary_gemm_neondot.cc|--target=aarch64-linux-gnu -march=armv8.2-a+dotprod|256|cortex-a76 neoverse-n1"
  "neondot-1.6|ternary_gemm_neondot_tq1.cc|--target=aarch64-linux-gnu -march=armv8.2-a+dotprod|1280|cortex-a76 neoverse-n1"
  "neon|ternary_gemm_neon.cc|--target=aarch64-linux-gnu|64|cortex-a55 cortex-a76 neoverse-n1"
  "neon-1.6|ternary_gemm_neon_tq1.cc|--target=aarch64-linux-gnu|1280|cortex-a55 cortex-a76 neoverse-n1"
)
printf "%-15s %-15s %12s %14s %14s %10s\n" variant core "cycles/iter" "weights/iter" "cycles/256 w" "GFLOPS"
for row in "${rows[@]}"; do
  IFS='|' read -r name src flags weights cores <<<"$row"
  asm=$tmp/$name.s
  # shellcheck disable=SC2086
  "$clang" -std=c++20 -O2 -DNDEBUG -DTERND_MCA $flags -I. -S \
    "runtime/kernels/$src" -o "$asm"
  triple=x86_64
  ghz=$x86_ghz
  if [[ $flags == *aarch64* ]]; then
    triple=aarch64
    ghz=$arm_ghz
    # clang prints the markers as "//" comments there; llvm-mca reads "#".
    sed -i 's|// LLVM-MCA-|# LLVM-MCA-|' "$asm"
  fi
  for core in $cores; do
    out=$("$mca" -mtriple="$triple" -mcpu="$core" -iterations=200 \
      -skip-unsupported-instructions=lack-sched "$asm" 2>/dev/null || true)
    # The region named after the variant: Total Cycles / Iterations.
    read -r cycles iters < <(awk -v r="[0] Code Region - $name" '
      index($0, r) == 1 { on = 1; next }
      on && /^Iterations:/ { it = $2 }
      on && /^Total Cycles:/ { print $3, it; exit }' <<<"$out")
    if [[ -z ${cycles:-} ]]; then
      # A single region is not numbered.
      read -r cycles iters < <(awk '/^Iterations:/ { it = $2 }
        /^Total Cycles:/ { print $3, it; exit }' <<<"$out")
    fi
    # The region must be straight-line code (the loop body fully unrolled):
    # a branch inside it would be counted once per iteration.
    if awk '/LLVM-MCA-BEGIN/ { on = 1 } on && /^[ \t]+(b\.|cbn?z|tbn?z|j[a-z]+[ \t])/ { found = 1 }
            /LLVM-MCA-END/ { on = 0 } END { exit !found }' "$asm"; then
      echo "bench/mca.sh: the $name loop body has a branch: unroll it" >&2
      exit 1
    fi
    per_iter=$(awk -v c="$cycles" -v i="$iters" 'BEGIN { printf "%.2f", c / i }')
    per256=$(awk -v p="$per_iter" -v w="$weights" 'BEGIN { printf "%.2f", p * 256 / w }')
    gflops=$(awk -v p="$per_iter" -v w="$weights" -v g="$ghz" 'BEGIN { printf "%.0f", 2 * w * g / p }')
    printf "%-15s %-15s %12s %14s %14s %10s\n" "$name" "$core" "$per_iter" "$weights" "$per256" "$gflops @ ${ghz} GHz"
    unset cycles iters
  done
done
