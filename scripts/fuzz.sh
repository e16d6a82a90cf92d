#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; the signed-
# metadata targets get half)
# Crashes are written to build-fuzz/artifacts/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scripts/deps.sh test

cmake -S . -B build-fuzz -G Ninja -DTERND_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-fuzz -j2 $(cd tests/fuzz && ls *_fuzz.cc | sed 's/\.cc$//')

mkdir -p build-fuzz/artifacts
status=0
# The signed-metadata targets (small inputs through one trust function each)
# run for half the time, which keeps the whole step near five minutes in CI.
half_time=" envelope_fuzz root_fuzz release_fuzz timestamp_fuzz bundle_fuzz "
for src in tests/fuzz/*_fuzz.cc; do
  name=$(basename "$src" .cc)
  seeds="tests/fuzz/corpus/${name%_fuzz}"
  work="build-fuzz/corpus/$name"
  mkdir -p "$work"
  t=$seconds
  [[ $half_time == *" $name "* ]] && t=$(((seconds + 1) / 2))
  echo "fuzz: $name for ${t}s (seeds: $seeds)"
  if ! "build-fuzz/tests/fuzz/$name" -max_total_time="$t" \
      -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1 \
      "$work" "$seeds" > "build-fuzz/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; last lines of build-fuzz/$name.log:"
    tail -40 "build-fuzz/$name.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "build-fuzz/$name.log" | tail -2
  fi
done
exit $status
