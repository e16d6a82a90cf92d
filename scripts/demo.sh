#!/usr/bin/env bash
# The README's run command: installs what is missing (Debian 12, as root),
# builds ternd and answers an inference call with the bundled demo model.
# Everything stays under the working tree (build/, .state/); no network is
# used beyond apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j2 ternctl

model=models/digits.tern
echo
echo "== ternctl inspect $model (first lines)"
build/tools/ternctl/ternctl inspect "$model" | head -8
echo
echo "== health check: the model's own golden input/output pair"
build/tools/ternctl/ternctl run --golden "$model"
echo
# The first image of scikit-learn's 8x8 digits set: a handwritten 0
# (pixel intensities 0..16, row by row).
values="0 0 5 13 9 1 0 0  0 0 13 15 10 15 5 0  0 3 15 2 0 11 8 0  0 4 12 0 0 8 8 0
        0 5 8 0 0 9 8 0  0 4 11 0 1 12 7 0  0 2 14 5 10 12 0 0  0 0 6 13 10 0 0 0"
echo "== ternctl run $model --values <an 8x8 image of a handwritten 0>"
build/tools/ternctl/ternctl run "$model" --values $values
