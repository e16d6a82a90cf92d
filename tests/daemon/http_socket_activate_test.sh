#!/bin/bash
# The HTTP face socket-activated by the real systemd-socket-activate (the
# tool systemd ships for testing socket units): it listens on the main
# socket, an HTTP unix socket and an HTTP TCP port on loopback, names them
# as ternd.socket and ternd-http.socket do (ternd, http, http), and starts
# ternd at the first connection. curl must be answered on both HTTP
# listeners and ternctl on the main socket; the [http] addresses of the
# configuration must stay unbound.
#
# Usage: http_socket_activate_test.sh TERND TERNCTL MODEL
set -euo pipefail
ternd=$1 ternctl=$2 model=$3
dir=$(mktemp -d)
activator=
cleanup() {
  if [[ -n $activator ]]; then kill "$activator" 2>/dev/null || true; wait "$activator" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- ternd's log"; cat "$dir/ternd.log" 2>/dev/null || true; exit 1; }

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(port)
config_port=$(port)
cat > "$dir/ternd.toml" <<TOML
[server]
socket = "$dir/configured-main.sock"
[runtime]
model = "$model"
[http]
socket = "$dir/configured-http.sock"
port = $config_port
TOML

systemd-socket-activate -l "$dir/main.sock" -l "$dir/http.sock" -l "127.0.0.1:$http_port" \
  --fdname=ternd:http:http "$ternd" --config "$dir/ternd.toml" 2>"$dir/ternd.log" &
activator=$!
for _ in $(seq 100); do [[ -S $dir/http.sock ]] && break; sleep 0.05; done
[[ -S $dir/http.sock ]] || fail "systemd-socket-activate did not listen"

# The first connection starts ternd; curl waits in the backlog meanwhile.
out=$(curl -sS --max-time 20 --unix-socket "$dir/http.sock" http://localhost/health) ||
  fail "curl over the passed unix socket: $out"
[[ $out == *'"live":true'* ]] || fail "/health over the passed unix socket says '$out'"
out=$(curl -sS --max-time 20 "http://127.0.0.1:$http_port/v1/models") ||
  fail "curl over the passed TCP socket: $out"
[[ $out == *'"object":"list"'* ]] || fail "/v1/models over the passed TCP socket says '$out'"
out=$("$ternctl" health --socket "$dir/main.sock" 2>&1) || fail "ternctl on the passed main socket: $out"
[[ -e $dir/configured-http.sock ]] && fail "http.socket of the configuration was bound"
[[ -e $dir/configured-main.sock ]] && fail "server.socket of the configuration was bound"
if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$config_port/health"; then
  fail "http.port of the configuration was bound"
fi
grep -q "which are not bound" "$dir/ternd.log" || fail "no log line about the configuration's addresses"
echo "socket activation: /health over the unix socket, /v1/models over TCP 127.0.0.1:$http_port, ternctl health over the main socket"
echo "1 passed, 0 failed"
