#!/usr/bin/env bash
# Delta downloads, measured: what `ternctl delta` says a device holding one
# version downloads of the next (docs/ota.md "Delta downloads",
# docs/performance.md).
#
#   bench/delta_models.sh BUILD_DIR [--lm]
#
# 1. A classifier whose new version only retrains its output head: an MLP
#    784-2048-2048-2048-2048-10 of BitLinear layers (about 4 MiB), exported,
#    then exported again with a new head (same seed for everything else).
# 2. With --lm: the BitNet 2B4T shapes written twice with random ternary
#    weights of different seeds (every weight "retrained"; the tokenizer and
#    the norms' layout stay), converted with `ternctl convert`: about 2.4 GB
#    of GGUF and 2.2 GB of .tern in a temporary directory, a few minutes.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 BUILD_DIR [--lm]" >&2; exit 2; }
build=$(realpath "$1")
lm=${2:-}
src=$(cd "$(dirname "$0")/.." && pwd)
ternctl=$build/tools/ternctl/ternctl
py=/usr/bin/python3
w=$(mktemp -d "${TMPDIR:-/tmp}/ternd-delta.XXXXXX")
trap 'rm -rf "$w"' EXIT

PYTHONPATH=$src/python "$py" - "$w" <<'PY'
import sys
import torch
from torch import nn
from ternd.export import export
from ternd.nn import BitLinear

w = sys.argv[1]
def model(head_seed):
    torch.manual_seed(0)
    layers, d = [], 784
    for _ in range(4):
        layers += [BitLinear(d, 2048), nn.ReLU()]
        d = 2048
    body = nn.Sequential(*layers)
    torch.manual_seed(head_seed)
    return nn.Sequential(*body, BitLinear(d, 10)).eval()
x = torch.randn(4, 784, generator=torch.Generator().manual_seed(1))
for v, seed in ((1, 100), (2, 200)):
    export(model(seed), f"{w}/mlp-v{v}.tern", x, name="mlp", version=v)
PY
echo "== a classifier whose new version retrains its output head"
"$ternctl" delta "$w/mlp-v1.tern" "$w/mlp-v2.tern"

# What a device holding v1 downloads of v2 when both are signed with
# `sign --content-chunks`: the compressed chunks of v2 whose hash v1's
# release lacks, read from the signed releases (the device asks for exactly
# these, tests/daemon/fleet_update_test.cc DeltaUpdate...), against v2's
# artifact and v2 signed as one zstd stream.
"$ternctl" keygen --out "$w/rel" >/dev/null
for v in 1 2; do
  "$ternctl" sign "$w/mlp-v$v.tern" --content-chunks --url https://x.example/ \
    --target-group g --key "$w/rel.key" --out-dir "$w/cc" >/dev/null
  "$ternctl" sign "$w/mlp-v$v.tern" --url https://x.example/ \
    --target-group g --key "$w/rel.key" --out-dir "$w/whole" >/dev/null
done
protoc -I "$src/ota" --python_out="$w" "$src/ota/metadata.proto"
PYTHONPATH=$w "$py" - "$w" <<'PY'
import os, sys
import metadata_pb2 as m
w = sys.argv[1]
def release(path):
    env = m.SignedEnvelope(); env.ParseFromString(open(path, "rb").read())
    r = m.Release(); r.ParseFromString(env.payload); return r
old, new = release(f"{w}/cc/mlp-1.release.pb"), release(f"{w}/cc/mlp-2.release.pb")
have = set(old.chunk_sha256)
missing = [(h, n) for h, n in zip(new.chunk_sha256, new.chunk_length) if h not in have]
fetch = sum(n for _, n in missing)
whole = os.path.getsize(f"{w}/whole/mlp-2.tern.zst")
print(f"content-chunked artifact {new.artifact_length} bytes ({len(new.chunk_length)} chunks); "
      f"one-stream artifact {whole} bytes")
print(f"device holding v1 downloads {len(missing)} chunks, {fetch} bytes: "
      f"{100.0 * fetch / new.artifact_length:.1f}% of the content-chunked artifact, "
      f"{100.0 * fetch / whole:.1f}% of the one-stream artifact")
PY

if [[ $lm == --lm ]]; then
  echo "== BitNet 2B4T shapes, every ternary weight retrained"
  for s in 1 2; do
    PYTHONPATH=$src/python "$py" -m ternd.make_2b4t 2b4t -o "$w/lm$s.gguf" --seed "$s"
    "$ternctl" convert "$w/lm$s.gguf" -o "$w/lm$s.tern" >/dev/null
    rm -f "$w/lm$s.gguf"
  done
  "$ternctl" delta "$w/lm1.tern" "$w/lm2.tern"
fi
