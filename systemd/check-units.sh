#!/bin/sh
# Checks the systemd units the way CI does:
#   - systemd-analyze verify reports nothing for ternd.service, ternd.socket
#     and ternd-http.socket
#   - systemd-analyze security --offline=yes rates ternd.service at an
#     exposure of MAX_EXPOSURE (default 2.0) or lower
#
# Usage: systemd/check-units.sh [TERND_BINARY]
# verify insists that ExecStart= and ExecReload= name executables; the units
# name the installed /usr/sbin/ternd and /usr/bin/ternctl, so a copy is
# checked with those paths replaced by TERND_BINARY (default: the first of
# build*/daemon/ternd, else /bin/true) and the ternctl built beside it.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
max_exposure=${MAX_EXPOSURE:-2.0}
binary=${1:-}
if [ -z "$binary" ]; then
  for candidate in "$here"/../build*/daemon/ternd /bin/true; do
    if [ -x "$candidate" ]; then binary=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate"); break; fi
  done
fi

case "$binary" in
  /*) ;;
  *) binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary") ;;
esac
if [ ! -x "$binary" ]; then
  echo "FAIL: $binary is not an executable"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# ExecReload= names the installed /usr/bin/ternctl: the one built beside
# the daemon, else /bin/true.
ternctl=$(dirname "$binary")/../tools/ternctl/ternctl
if [ -x "$ternctl" ]; then
  ternctl=$(cd "$(dirname "$ternctl")" && pwd)/ternctl
else
  ternctl=/bin/true
fi
sed -e "s|/usr/sbin/ternd|$binary|" -e "s|/usr/bin/ternctl|$ternctl|" \
  "$here/ternd.service" > "$work/ternd.service"
cp "$here/ternd.socket" "$work/ternd.socket"
cp "$here/ternd-http.socket" "$work/ternd-http.socket"

status=0
echo "== systemd-analyze verify"
if ! out=$(systemd-analyze verify "$work/ternd.service" "$work/ternd.socket" \
  "$work/ternd-http.socket" 2>&1) || [ -n "$out" ]; then
  echo "$out"
  echo "FAIL: systemd-analyze verify reported problems"
  status=1
else
  echo "OK"
fi

echo "== systemd-analyze security --offline=yes"
report=$(systemd-analyze security --offline=yes "$work/ternd.service" 2>&1 || true)
exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for ternd.service: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ]; then
  printf '%s\n' "$report"
  echo "FAIL: no exposure level in the report"
  status=1
elif awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
  echo "OK: exposure $exposure <= $max_exposure"
else
  printf '%s\n' "$report" | grep '✗' || true
  echo "FAIL: exposure $exposure > $max_exposure"
  status=1
fi
exit $status
