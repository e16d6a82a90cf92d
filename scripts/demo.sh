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

model=models/demo.tern
echo
echo "== ternctl inspect $model (first lines)"
build/tools/ternctl/ternctl inspect "$model" | head -8
echo
echo "== health check: the model's own golden input/output pair"
build/tools/ternctl/ternctl run --golden "$model"
echo
values="0.5 -1 0.25 2 0 0 1 1 -0.5 0.3 0.7 -2 1.5 0 0.1 0.9"
echo "== ternctl run $model --values $values"
build/tools/ternctl/ternctl run "$model" --values $values
