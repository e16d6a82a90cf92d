#!/usr/bin/env bash
# Regenerates the signed-metadata fuzz fixture and seed corpora with the real
# fleet tools: tests/fuzz/fleet_fixture/ (test-only keys that sign nothing
# but these seeds, and root-1.pb, the root the fuzz targets pin) and
# tests/fuzz/corpus/{envelope,root,release,timestamp,bundle}/.
# Usage: tests/fuzz/make_fleet_fixture.sh path/to/ternctl
#
# Seeds of the root, release and timestamp targets start with a mode byte
# (fleet_fuzz_fixture.h): 0 = the file as is, 1 = its payload re-signed by
# the fixture's keys inside the target.
set -euo pipefail
ternctl=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
fix="$here/fleet_fixture"
corpus="$here/corpus"
work=$(mktemp -d "${TMPDIR:-/tmp}/ternd-fleet-fixture-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

for k in root1 root2 release timestamp; do "$ternctl" keygen --out "$k" >/dev/null; done
"$ternctl" root --fleet fuzz --expires 2036-01-01 --root-key root1.pub \
  --release-key release.pub --timestamp-key timestamp.pub --sign root1.key \
  --out root-1.pb >/dev/null
"$ternctl" root --previous root-1.pb --expires 2036-01-01 --root-key root1.pub \
  --root-key root2.pub --root-threshold 2 --release-key release.pub \
  --timestamp-key timestamp.pub --sign root1.key --sign root2.key \
  --out root-2.pb >/dev/null
"$ternctl" sign "$here/../../models/demo.tern" --url https://u.example/m/ \
  --target-device fuzz-device --target-group fuzz-group --sequence 7 \
  --expires 2036-01-01 --chunk-size 4096 --key release.key --out-dir out \
  >/dev/null
"$ternctl" timestamp --release out/demo-sensor-1.release.pb --key timestamp.key \
  --expires 2036-01-01 --out timestamp.pb >/dev/null
"$ternctl" bundle --root root-1.pb --root root-2.pb \
  --release out/demo-sensor-1.release.pb --timestamp timestamp.pb \
  --artifact out/demo-sensor-1.tern.zst --out update.ternbundle >/dev/null

rm -rf "$corpus"/{envelope,root,release,timestamp,bundle}
rm -f "$fix"/*.key "$fix"/*.pb
mkdir -p "$fix" "$corpus"/{envelope,root,release,timestamp,bundle}
cp root1.key root2.key release.key timestamp.key root-1.pb "$fix/"
cp out/demo-sensor-1.release.pb "$fix/release.pb"
cp root-1.pb "$corpus/envelope/root"
cp out/demo-sensor-1.release.pb "$corpus/envelope/release"
cp timestamp.pb "$corpus/envelope/timestamp"
seed() {  # seed MODE FILE OUT
  { printf "\\x$1"; cat "$2"; } > "$3"
}
seed 00 root-2.pb "$corpus/root/rotation"
seed 01 root-2.pb "$corpus/root/rotation_resigned"
seed 00 out/demo-sensor-1.release.pb "$corpus/release/release"
seed 01 out/demo-sensor-1.release.pb "$corpus/release/release_resigned"
seed 00 timestamp.pb "$corpus/timestamp/timestamp"
seed 01 timestamp.pb "$corpus/timestamp/timestamp_resigned"
cp update.ternbundle "$corpus/bundle/update.ternbundle"
echo "wrote $fix and seeds in $corpus"
