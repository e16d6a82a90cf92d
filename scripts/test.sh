#!/usr/bin/env bash
# The README's test command: installs what is missing (Debian 12, as root),
# builds everything with warnings as errors and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTERND_WERROR=ON >/dev/null
ninja -C build -j2
ctest --test-dir build --output-on-failure -j2 --timeout 600
