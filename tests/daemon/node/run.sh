#!/usr/bin/env bash
# Runs openai_test.mjs with the openai npm package that package-lock.json
# pins, installed from the npm registry into WORK (a build directory) on
# first use, or when the lock file changed.
# Usage: run.sh WORK   (with TERND_PATH, TERNCTL_PATH, PYTHON and
# GGUF_WRITER_PATH set, as ctest sets them)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$1"
mkdir -p "$work"
if ! cmp -s "$here/package-lock.json" "$work/package-lock.json" ||
   [[ ! -d $work/node_modules/openai ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
fi
cp "$here/openai_test.mjs" "$work/"
cd "$work"
exec node --test openai_test.mjs
