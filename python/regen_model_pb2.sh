#!/bin/sh
# Regenerates python/ternd/model_pb2.py from runtime/model.proto (protoc from
# Debian's protobuf-compiler). Run after changing the schema; the test
# test_model_pb2_is_generated_from_model_proto fails until you do.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc -I"$root" --python_out="$tmp" "$root/runtime/model.proto"
cp "$tmp/runtime/model_pb2.py" "$root/python/ternd/model_pb2.py"
echo "wrote python/ternd/model_pb2.py"
