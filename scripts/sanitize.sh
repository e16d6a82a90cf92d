#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the unit tests (CTest label "unit") and the daemon's integration tests
# (label "daemon-integration": socket, install, reload, hot and cold swap, updates, the
# abrupt-connection stress test) against the sanitized ternd. The daemon
# inherits the options below; a report in its log fails the test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTERND_SANITIZE=ON -DTERND_BUILD_BENCH=OFF >/dev/null
ninja -C build-asan -j2
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j2 -L unit --timeout 900
ctest --test-dir build-asan --output-on-failure -j2 -L daemon-integration --timeout 900
