#!/usr/bin/env bash
# The README's run command: installs what is missing (Debian 12, as root),
# builds ternd and answers an inference call with the bundled demo model.
# Everything stays under the working tree (build/, .state/); no network is
# used beyond apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j2 ternd ternctl

ternctl=build/tools/ternctl/ternctl
# Under the working tree: no config file, so the daemon runs its embedded
# default (models/digits.tern, socket ./ternd.sock, no network).
export TERND_SOCKET="$PWD/ternd.sock"
echo
echo "== starting build/daemon/ternd on its embedded default"
build/daemon/ternd > ternd.log 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
for _ in $(seq 100); do
  $ternctl health > /dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { cat ternd.log; exit 1; }
  sleep 0.1
done
sed 's/^<[0-9]>//' ternd.log
echo
echo "== ternctl health"
$ternctl health
echo
# The first image of scikit-learn's 8x8 digits set: a handwritten 0
# (pixel intensities 0..16, row by row).
values="0 0 5 13 9 1 0 0  0 0 13 15 10 15 5 0  0 3 15 2 0 11 8 0  0 4 12 0 0 8 8 0
        0 5 8 0 0 9 8 0  0 4 11 0 1 12 7 0  0 2 14 5 10 12 0 0  0 0 6 13 10 0 0 0"
echo "== ternctl infer --values <an 8x8 image of a handwritten 0>"
$ternctl infer --values $values
