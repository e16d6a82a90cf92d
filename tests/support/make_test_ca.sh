#!/usr/bin/env bash
# Makes a throw-away certificate authority for the integration tests, the
# way a fleet operator provisions one: a CA, a server certificate for
# localhost / 127.0.0.1 (the broker and the artifact server), a device client
# certificate, and an unrelated second CA whose certificates must be refused.
#
# Usage: make_test_ca.sh DIR [DEVICE_ID]
# Writes into DIR: ca.pem ca.key server.pem server.key client.pem client.key
#                  other-ca.pem other-server.pem other-server.key
# EC P-256 keys: quick to make, and what small devices use.
set -euo pipefail
dir=$1
device=${2:-test-device}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # ca NAME SUBJECT
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem" 2>/dev/null
}

leaf() {  # leaf NAME CA SUBJECT EXTFILE-CONTENT
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1'
client_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

ca ca "/CN=ternd test fleet CA"
leaf server ca "/CN=localhost" "$server_ext"
leaf client ca "/CN=$device" "$client_ext"
ca other-ca "/CN=unrelated CA"
leaf other-server other-ca "/CN=localhost" "$server_ext"
rm -f ./*.srl
# Servers run as the test's user; keys stay 0600, certificates world-readable.
chmod 0644 ./*.pem
