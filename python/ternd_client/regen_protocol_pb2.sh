#!/bin/sh
# Regenerates protocol_pb2.py from daemon/protocol.proto with protoc (Debian's
# protobuf-compiler). Run after changing the schema; the test
# test_protocol_pb2_matches_the_schema fails until you do.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc -I"$root" --python_out="$tmp" "$root/daemon/protocol.proto"
cp "$tmp/daemon/protocol_pb2.py" "$root/python/ternd_client/protocol_pb2.py"
echo "wrote python/ternd_client/protocol_pb2.py"
