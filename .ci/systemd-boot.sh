#!/usr/bin/env bash
# CI step: the ternd package under a real systemd (252, Debian 12) as PID 1.
#
# Boots a Debian 12 root twice with `systemd-nspawn --boot` (no network:
# --private-network). In each boot a check unit runs this same script
# (--inside PHASE); its SuccessAction=/FailureAction=exit make the
# container's exit status the verdict, and it writes one line per check to
# /ternd-ci/PHASE.results in the root, printed here afterwards.
#
#   boot1: apt-get install of the package with systemd running (nothing
#          enabled or started); systemctl enable --now ternd.socket
#          ternd.service; ternctl health, info, infer; the daemon's user,
#          capabilities, no_new_privs, seccomp; the socket's owner, group,
#          mode and who may connect; the state and cache directories;
#          systemd-analyze security (online); reload (same MainPID, logged)
#          and a refused reload (systemctl reload fails, back to running); socket activation after
#          `systemctl stop ternd.service`; restart after kill -9; the
#          watchdog armed and restarting a frozen (SIGSTOP) daemon, with
#          WatchdogSec=3s from a drop-in to keep the test short; a clean
#          stop with the drain in the journal.
#   boot2: the enabled units come up serving at boot; apt-get install
#          --reinstall restarts the running daemon; apt-get remove stops
#          both units and keeps configuration, state and user; apt-get
#          purge deletes configuration and state and keeps the user.
#
# Usage: .ci/systemd-boot.sh ROOT DEB   (as root)
#   ROOT: a Debian 12 root (not in use, nothing mounted in it) with the
#         dependencies of the ternd package installed and the package
#         itself not installed: .ci/package.sh's root after its purge.
#   DEB:  the ternd package (amd64) to install.
# Every wait is a bounded loop that fails with what it waited for.
set -euo pipefail

# ---------------------------------------------------------------- helpers

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# wait_until WHAT SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
  local what=$1 secs=$2
  shift 2
  local deadline=$(($(now_ms) + secs * 1000))
  until "$@" >/dev/null 2>&1; do
    (($(now_ms) < deadline)) || fail "$what: not within $secs s"
    sleep 0.1
  done
}

# ------------------------------------------------- inside the container

prop() { systemctl show -p "$1" --value "${2:-ternd.service}"; }
is_prop() { [[ $(prop "$2" "${3:-ternd.service}") == "$1" ]]; }
# Messages of ternd.service in this boot's journal that match a pattern.
journal_count() { journalctl -b -u ternd.service -o cat --no-pager | grep -cE "$1" || true; }
journal_grown() { (($(journal_count "$1") > $2)); }
main_pid() { prop MainPID; }
serving_new_pid() {  # old-pid: active with a MainPID other than old-pid
  local pid
  pid=$(main_pid)
  [[ $pid != 0 && $pid != "$1" ]] && is_prop active ActiveState
}
status_clean() { [[ $(prop StatusText) == "Serving model"* && $(prop StatusText) != *failed* ]] && is_prop running SubState; }
model_in_journal() { [[ -n $(journalctl -b -u ternd TERND_MODEL=digits -o cat --no-pager) ]]; }

# The first image of scikit-learn's digits set, a handwritten 0 (as in
# .ci/package.sh).
zero="0 0 5 13 9 1 0 0 0 0 13 15 10 15 5 0 0 3 15 2 0 11 8 0 0 4 12 0 0 8 8 0 0 5 8 0 0 9 8 0 0 4 11 0 1 12 7 0 0 2 14 5 10 12 0 0 0 0 6 13 10 0 0 0"

check_serving() {  # what
  local out
  out=$(ternctl health 2>&1) || fail "$1: ternctl health: $out"
  [[ $out == *"ready yes"* ]] || fail "$1: ternctl health says '$out', expected ready yes"
  out=$(ternctl info 2>&1) || fail "$1: ternctl info: $out"
  grep -q digits <<<"$out" || fail "$1: ternctl info does not name the model digits: $out"
  # shellcheck disable=SC2086
  out=$(ternctl infer --values $zero 2>&1) || fail "$1: ternctl infer: $out"
  grep -A1 '^class' <<<"$out" | tail -n1 | grep -qx ' *0' ||
    fail "$1: ternctl infer classified the image of a 0 as: $out"
}

system_up() {
  local state
  state=$(timeout 90 systemctl is-system-running --wait 2>&1) || true
  case "$state" in
    running) ok "boot: systemd is running" ;;
    degraded) ok "boot: systemd is running, degraded by: $(systemctl --failed --plain --no-legend | awk '{print $1}' | xargs)" ;;
    *) fail "boot: systemctl is-system-running --wait says '$state' (bounded at 90 s)" ;;
  esac
}

proc_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }

boot1() {
  system_up
  local out pid pid0 n0 t0 uid

  # The package installed while systemd runs: postinst reloads systemd and
  # enables and starts nothing.
  out=$(cd /ternd-ci && apt-get install -y -q ./"$(basename "$deb_in_root")" 2>&1) ||
    fail "apt-get install of the package with systemd running: $out"
  getent passwd ternd >/dev/null || fail "install: no user ternd"
  for u in ternd.service ternd.socket; do
    is_prop loaded LoadState "$u" || fail "install: $u is $(prop LoadState "$u"), expected loaded"
    is_prop disabled UnitFileState "$u" || fail "install: $u is $(prop UnitFileState "$u"), expected disabled"
    is_prop inactive ActiveState "$u" || fail "install: $u is $(prop ActiveState "$u"), expected inactive"
  done
  ok "install with systemd running: user ternd, units loaded, disabled and inactive"

  out=$(systemctl enable --now ternd.socket ternd.service 2>&1) ||
    fail "systemctl enable --now ternd.socket ternd.service: $out"
  for u in ternd.service ternd.socket; do
    is_prop enabled UnitFileState "$u" || fail "enable --now: $u is $(prop UnitFileState "$u"), expected enabled"
  done
  is_prop running SubState || fail "enable --now: ternd.service is $(prop ActiveState)/$(prop SubState), expected active/running"
  is_prop active ActiveState ternd.socket || fail "enable --now: ternd.socket is $(prop ActiveState ternd.socket), expected active"
  # Type=notify: the start job ends at READY=1, so it serves at once.
  check_serving "right after enable --now"
  out=$(prop StatusText)
  [[ $out == "Serving model"* ]] || fail "STATUS= is '$out', expected 'Serving model ...'"
  ok "systemctl enable --now ternd.socket ternd.service; enabled; ternctl health, info, infer (a 0 is class 0); STATUS=$out"
  out=$(systemctl status --no-pager ternd 2>&1) || fail "systemctl status ternd: $out"
  grep -q 'Status: "Serving model' <<<"$out" || fail "systemctl status ternd shows no 'Status: \"Serving model': $out"
  wait_until "journal entries with TERND_MODEL=digits (journalctl -u ternd TERND_MODEL=digits)" 10 \
    model_in_journal
  ok "systemctl status ternd shows the STATUS= line; journalctl -u ternd TERND_MODEL=digits: $(journalctl -b -u ternd TERND_MODEL=digits -o cat --no-pager | head -n1)"

  pid=$(main_pid)
  uid=$(id -u ternd)
  [[ $(proc_field "$pid" Uid) == "$uid"$'\t'"$uid"$'\t'"$uid"$'\t'"$uid" ]] ||
    fail "daemon $pid: Uid '$(proc_field "$pid" Uid)', expected ternd ($uid) four times"
  [[ $(stat -c %U "/proc/$pid") == ternd ]] || fail "daemon $pid runs as $(stat -c %U "/proc/$pid")"
  for f in CapInh CapPrm CapEff CapBnd CapAmb; do
    [[ $(proc_field "$pid" $f) == 0000000000000000 ]] || fail "daemon $pid: $f $(proc_field "$pid" $f), expected 0"
  done
  [[ $(proc_field "$pid" NoNewPrivs) == 1 ]] || fail "daemon $pid: NoNewPrivs $(proc_field "$pid" NoNewPrivs), expected 1"
  [[ $(proc_field "$pid" Seccomp) == 2 ]] || fail "daemon $pid: Seccomp $(proc_field "$pid" Seccomp), expected 2 (filter)"
  ok "daemon (pid $pid) runs as ternd; CapEff, CapPrm, CapBnd, CapInh, CapAmb 0; NoNewPrivs 1; Seccomp 2"
  for d in /var/lib/ternd /var/cache/ternd; do
    out=$(stat -c '%U %G %a' "$d")
    [[ $out == "ternd ternd 750" ]] || fail "$d is '$out', expected 'ternd ternd 750' (StateDirectory=, CacheDirectory=)"
  done
  ok "/var/lib/ternd and /var/cache/ternd (StateDirectory=, CacheDirectory=): ternd:ternd 0750"

  out=$(stat -c '%U %G %a %F' /run/ternd/ternd.sock)
  [[ $out == "ternd ternd 660 socket" ]] || fail "/run/ternd/ternd.sock is '$out', expected 'ternd ternd 660 socket'"
  id ternd-ci-member >/dev/null 2>&1 || useradd --system --no-create-home --groups ternd ternd-ci-member
  out=$(runuser -u ternd-ci-member -- ternctl health 2>&1) || fail "a member of the group ternd cannot call the socket: $out"
  if out=$(runuser -u nobody -- ternctl health 2>&1); then
    fail "nobody (not in the group ternd) could call the socket: $out"
  fi
  ok "socket /run/ternd/ternd.sock: owner ternd, group ternd, mode 0660; a member of ternd connects, nobody is refused"

  out=$(prop WatchdogUSec)
  [[ $out == 10s ]] || fail "WatchdogUSec is '$out', expected 10s (ternd.service)"
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'WATCHDOG_USEC=10000000' ||
    fail "the daemon's environment has no WATCHDOG_USEC=10000000"
  ok "watchdog armed: WatchdogUSec=10s, WATCHDOG_USEC=10000000 in the daemon's environment"

  out=$(systemd-analyze security --no-pager ternd.service 2>&1) || true
  local exposure
  exposure=$(sed -n 's/.*Overall exposure level for ternd.service: \([0-9.]*\).*/\1/p' <<<"$out")
  [[ -n $exposure ]] || fail "systemd-analyze security ternd.service: no exposure level: $out"
  grep '✗' <<<"$out" || true
  awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "systemd-analyze security ternd.service (online): exposure $exposure > 2.0"
  ok "systemd-analyze security ternd.service (online, running service): exposure $exposure"

  # Reload: SIGHUP, RELOADING=1 ... READY=1, same process.
  pid0=$(main_pid)
  n0=$(journal_count 'configuration reloaded from /etc/ternd/ternd.toml')
  out=$(systemctl reload ternd 2>&1) || fail "systemctl reload ternd: $out"
  wait_until "reload logged ('configuration reloaded from /etc/ternd/ternd.toml')" 20 \
    journal_grown 'configuration reloaded from /etc/ternd/ternd.toml' "$n0"
  wait_until "active/running after the reload" 20 is_prop running SubState
  [[ $(main_pid) == "$pid0" ]] || fail "reload changed MainPID from $pid0 to $(main_pid)"
  check_serving "after reload"
  ok "systemctl reload ternd: MainPID $pid0 kept, reload logged, serving"

  # A refused reload: RELOADING=1 must still end with READY=1, or systemd
  # would keep the unit in "reloading".
  cp /etc/ternd/ternd.toml /ternd-ci/ternd.toml.good
  sed -i 's/^log_level = .*/log_level = "not-a-level"/' /etc/ternd/ternd.toml
  if out=$(ternd --check-config -c /etc/ternd/ternd.toml 2>&1); then
    fail "ternd --check-config accepted log_level = \"not-a-level\": $out"
  fi
  n0=$(journal_count 'reload refused')
  # ExecReload= is `ternctl reload`: the refused reload fails the command.
  if out=$(systemctl reload ternd 2>&1); then
    fail "systemctl reload ternd with a bad configuration succeeded: $out"
  fi
  wait_until "'reload refused' in the journal" 20 journal_grown 'reload refused' "$n0"
  wait_until "active/running after the refused reload (not stuck in reloading)" 20 is_prop running SubState
  [[ $(main_pid) == "$pid0" ]] || fail "the refused reload changed MainPID from $pid0 to $(main_pid)"
  local refused_status
  refused_status=$(prop StatusText)
  [[ $refused_status == *"last reload failed"* ]] ||
    fail "after a refused reload STATUS= is '$refused_status', expected '... last reload failed: ...'"
  check_serving "after a refused reload"
  cp /ternd-ci/ternd.toml.good /etc/ternd/ternd.toml
  n0=$(journal_count 'configuration reloaded from /etc/ternd/ternd.toml')
  out=$(systemctl reload ternd 2>&1) || fail "systemctl reload ternd with the configuration restored: $out"
  wait_until "reload of the restored configuration logged" 20 \
    journal_grown 'configuration reloaded from /etc/ternd/ternd.toml' "$n0"
  wait_until "STATUS= without 'last reload failed' after the good reload" 20 status_clean
  ok "a refused reload (log_level = \"not-a-level\"): systemctl reload fails, logged, still active/running with MainPID $pid0, STATUS=$refused_status; the restored file reloads and clears it"

  # Socket activation: the socket unit stays, a connection starts ternd.
  out=$(systemctl stop ternd.service 2>&1) || fail "systemctl stop ternd.service: $out"
  is_prop inactive ActiveState || fail "stop: ternd.service is $(prop ActiveState)"
  is_prop listening SubState ternd.socket || fail "ternd.socket is $(prop SubState ternd.socket) after stopping the service, expected listening"
  [[ -S /run/ternd/ternd.sock ]] || fail "/run/ternd/ternd.sock is gone after stopping the service"
  t0=$(now_ms)
  out=$(ternctl health 2>&1) || fail "socket activation: the first ternctl health after the stop: $out"
  [[ $out == *"ready yes"* ]] || fail "socket activation: the first ternctl health says '$out'"
  is_prop active ActiveState || fail "socket activation: ternd.service is $(prop ActiveState) after a client's call"
  [[ $(main_pid) != "$pid0" ]] || fail "socket activation: MainPID is still $pid0"
  check_serving "after socket activation"
  ok "socket activation: ternd.service stopped, ternd.socket listening; ternctl health started it (pid $(main_pid)) and was answered 'ready yes' in $(($(now_ms) - t0)) ms"

  # kill -9: Restart=on-failure.
  pid0=$(main_pid)
  kill -KILL "$pid0"
  t0=$(now_ms)
  wait_until "restart after kill -9 of $pid0 (RestartSec=2s)" 30 serving_new_pid "$pid0"
  (($(prop NRestarts) >= 1)) || fail "kill -9: NRestarts is $(prop NRestarts)"
  check_serving "after the restart that followed kill -9"
  ok "kill -9: restarted in $(($(now_ms) - t0)) ms (pid $pid0 -> $(main_pid)), NRestarts $(prop NRestarts), serving"

  # The watchdog firing on a frozen daemon, with WatchdogSec=3s from a
  # drop-in (ternd.service ships 10s) to keep the test short.
  mkdir -p /etc/systemd/system/ternd.service.d
  printf '[Service]\nWatchdogSec=3s\n' >/etc/systemd/system/ternd.service.d/ci-watchdog.conf
  systemctl daemon-reload
  systemctl reset-failed ternd.service
  out=$(systemctl restart ternd.service 2>&1) || fail "restart with WatchdogSec=3s: $out"
  [[ $(prop WatchdogUSec) == 3s ]] || fail "WatchdogUSec is $(prop WatchdogUSec) with the drop-in, expected 3s"
  pid0=$(main_pid)
  tr '\0' '\n' <"/proc/$pid0/environ" | grep -qx 'WATCHDOG_USEC=3000000' ||
    fail "with the drop-in the daemon's environment has no WATCHDOG_USEC=3000000"
  # A serving daemon pings: no restart over two periods.
  local until_ms=$(($(now_ms) + 6000))
  while (($(now_ms) < until_ms)); do
    { [[ $(main_pid) == "$pid0" ]] && is_prop running SubState; } ||
      fail "WatchdogSec=3s: the idle daemon $pid0 was restarted or stopped ($(prop ActiveState)/$(prop SubState), Result $(prop Result)): its loop did not ping"
    sleep 0.5
  done
  n0=$(prop NRestarts)
  local w0
  w0=$(journal_count 'Watchdog timeout')
  kill -STOP "$pid0"
  t0=$(now_ms)
  wait_until "restart of the frozen daemon $pid0 by the watchdog (WatchdogSec=3s)" 60 serving_new_pid "$pid0"
  local took=$(($(now_ms) - t0))
  (($(prop NRestarts) > n0)) || fail "watchdog: NRestarts $(prop NRestarts), was $n0"
  journal_grown 'Watchdog timeout' "$w0" || fail "watchdog: no 'Watchdog timeout' for ternd.service in the journal"
  check_serving "after the watchdog restart"
  ok "watchdog (WatchdogSec=3s drop-in): no restart of the serving daemon over 6 s; kill -STOP $pid0 -> 'Watchdog timeout', new pid $(main_pid) after $took ms, NRestarts $n0 -> $(prop NRestarts)"
  rm -rf /etc/systemd/system/ternd.service.d
  systemctl daemon-reload
  systemctl reset-failed ternd.service
  out=$(systemctl restart ternd.service 2>&1) || fail "restart without the drop-in: $out"
  [[ $(prop WatchdogUSec) == 10s ]] || fail "WatchdogUSec is $(prop WatchdogUSec) after removing the drop-in"

  # A clean stop: SIGTERM, drain logged, exit 0.
  pid0=$(main_pid)
  n0=$(journal_count 'SIGTERM: draining')
  t0=$(now_ms)
  out=$(systemctl stop ternd.service 2>&1) || fail "systemctl stop ternd.service: $out"
  took=$(($(now_ms) - t0))
  is_prop inactive ActiveState || fail "stop: ternd.service is $(prop ActiveState)"
  [[ $(prop Result) == success ]] || fail "stop: Result is $(prop Result), expected success"
  [[ $(prop ExecMainCode) == 1 && $(prop ExecMainStatus) == 0 ]] ||
    fail "stop: the daemon ended with code $(prop ExecMainCode) status $(prop ExecMainStatus), expected exited (1) with 0"
  wait_until "the drain in the journal ('SIGTERM: draining')" 10 journal_grown 'SIGTERM: draining' "$n0"
  ok "systemctl stop ternd.service: $took ms, exit status 0, Result success; journal: $(journalctl -b -u ternd.service -o cat --no-pager | grep 'SIGTERM: draining' | tail -n1)"

  # The remaining (systemd) commands of docs/operations.md, as written.
  out=$(systemctl start ternd.service 2>&1) || fail "systemctl start ternd.service: $out"
  check_serving "after systemctl start ternd.service"
  out=$(journalctl -u ternd --no-pager 2>&1) || fail "journalctl -u ternd: $out"
  grep -q 'configuration reloaded' <<<"$out" || fail "journalctl -u ternd does not show the daemon's log: $out"
  ok "systemctl start ternd.service: serving; journalctl -u ternd shows the daemon's log ($(wc -l <<<"$out") lines)"
}

boot2() {
  system_up
  local out pid0 n0 u
  for u in ternd.service ternd.socket; do
    is_prop enabled UnitFileState "$u" || fail "second boot: $u is $(prop UnitFileState "$u"), expected enabled"
  done
  is_prop active ActiveState ternd.socket || fail "second boot: ternd.socket is $(prop ActiveState ternd.socket), expected active"
  is_prop running SubState || fail "second boot: ternd.service is $(prop ActiveState)/$(prop SubState) (Result $(prop Result)), expected started at boot"
  check_serving "second boot"
  ok "second boot: ternd.socket active and ternd.service running from boot (pid $(main_pid)); ternctl health, info, infer"

  pid0=$(main_pid)
  out=$(cd /ternd-ci && apt-get install -y -q --reinstall ./"$(basename "$deb_in_root")" 2>&1) ||
    fail "apt-get install --reinstall with systemd running: $out"
  wait_until "ternd.service running again after the reinstall" 30 serving_new_pid "$pid0"
  for u in ternd.service ternd.socket; do
    is_prop enabled UnitFileState "$u" || fail "reinstall: $u is $(prop UnitFileState "$u"), expected enabled"
  done
  check_serving "after the reinstall"
  ok "apt-get install --reinstall: the running daemon restarted on the package's binary (pid $pid0 -> $(main_pid)), units still enabled, serving"

  out=$(apt-get remove -y -q ternd 2>&1) || fail "apt-get remove ternd with systemd running: $out"
  for u in ternd.service ternd.socket; do
    is_prop inactive ActiveState "$u" || fail "remove: $u is $(prop ActiveState "$u"), expected inactive"
    is_prop not-found LoadState "$u" || fail "remove: $u is $(prop LoadState "$u"), expected not-found (units gone, systemd reloaded)"
  done
  if pgrep -u ternd >/dev/null; then fail "remove: processes of ternd remain: $(pgrep -a -u ternd)"; fi
  [[ ! -e /run/ternd/ternd.sock ]] || fail "remove: /run/ternd/ternd.sock remains"
  [[ -f /etc/ternd/ternd.toml ]] || fail "remove: /etc/ternd/ternd.toml is gone"
  [[ -d /var/lib/ternd ]] || fail "remove: /var/lib/ternd is gone"
  getent passwd ternd >/dev/null || fail "remove: the user ternd is gone"
  ok "apt-get remove ternd: ternd.service and ternd.socket stopped and gone, no ternd process, socket removed; /etc/ternd, /var/lib/ternd and the user kept"

  out=$(apt-get purge -y -q ternd 2>&1) || fail "apt-get purge ternd with systemd running: $out"
  for gone in /etc/ternd /var/lib/ternd /var/cache/ternd \
              /etc/systemd/system/sockets.target.wants/ternd.socket \
              /etc/systemd/system/multi-user.target.wants/ternd.service; do
    [[ ! -e $gone && ! -L $gone ]] || fail "purge left $gone"
  done
  getent passwd ternd >/dev/null || fail "purge: the user ternd is gone (docs/operations.md: it stays)"
  getent group ternd >/dev/null || fail "purge: the group ternd is gone (docs/operations.md: it stays)"
  if systemctl --failed --plain --no-legend | grep -q ternd; then fail "purge: failed ternd units: $(systemctl --failed --plain --no-legend)"; fi
  ok "apt-get purge ternd: /etc/ternd, /var/lib/ternd, /var/cache/ternd and the enable links gone; user and group ternd kept"
}

inside() {  # phase
  local phase=$1
  results=/ternd-ci/$phase.results
  : >"$results"
  export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
  ok() { echo "ok: $*" >>"$results"; echo "ok: $*"; }
  fail() {
    echo "FAIL: $*" >>"$results"
    echo "FAIL: $*"
    {
      systemctl status --no-pager ternd.service ternd.socket
      journalctl -b -u ternd.service -u ternd.socket --no-pager | tail -n 60
      systemctl --failed --no-pager
    } 2>&1 || true
    exit 1
  }
  deb_in_root=$(find /ternd-ci -maxdepth 1 -name 'ternd_*.deb' | head -n1)
  [[ -n $deb_in_root ]] || fail "no ternd_*.deb in /ternd-ci"
  PS4='+ $(date +%T.%3N) '
  set -x
  case "$phase" in
    boot1) boot1 ;;
    boot2) boot2 ;;
    *) fail "unknown phase $phase" ;;
  esac
  set +x
  echo "passed: $phase" >>"$results"
  echo "-- the journal of ternd.service and ternd.socket in this boot"
  journalctl -b -u ternd.service -u ternd.socket --no-pager
}

if [[ ${1:-} == --inside ]]; then
  inside "$2"
  exit 0
fi

# ---------------------------------------------------------------- host

t0=$(date +%s)
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
[[ $# -eq 2 ]] || { echo "usage: $0 ROOT DEB" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || fail "needs root (systemd-nspawn)"
root=$(cd "$1" && pwd)
deb=$2
[[ -f $deb ]] || fail "no package $deb"
[[ -x $root/lib/systemd/systemd ]] || fail "$root has no systemd (/lib/systemd/systemd): install the ternd package's dependencies in it first"
if findmnt -rn -o TARGET | grep -q "^$root/"; then
  fail "file systems are mounted under $root: $(findmnt -rn -o TARGET | grep "^$root/" | xargs)"
fi
if ! command -v systemd-nspawn >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd-container >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd-container >/dev/null
  }
fi

# Maintainer scripts must start and stop units here: no policy-rc.d.
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root/ternd-ci"
mkdir -p "$root/ternd-ci"
cp "$deb" "$root/ternd-ci/"
cp "$0" "$root/ternd-ci/systemd-boot.sh"
logs=$(mktemp -d "${TMPDIR:-/tmp}/ternd-systemd-boot.XXXXXX")
trap 'rm -rf "$logs"' EXIT

check_unit=$root/etc/systemd/system/ternd-ci-check.service
boot() {  # phase
  local phase=$1 rc=0 start
  cat >"$check_unit" <<EOF
[Unit]
Description=ternd CI checks ($phase)
SuccessAction=exit
FailureAction=exit
SuccessActionExitStatus=0
FailureActionExitStatus=1

[Service]
Type=exec
ExecStart=/bin/bash /ternd-ci/systemd-boot.sh --inside $phase
StandardOutput=append:/ternd-ci/$phase.log
StandardError=inherit
RuntimeMaxSec=150

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sfn ../ternd-ci-check.service "$root/etc/systemd/system/multi-user.target.wants/ternd-ci-check.service"
  rm -f "$root/ternd-ci/$phase.results" "$root/ternd-ci/$phase.log"
  start=$(date +%s)
  timeout -k 10s 200s systemd-nspawn --quiet --boot --register=no --keep-unit \
    --private-network --machine=ternd-ci --link-journal=no --resolv-conf=off --timezone=off \
    --console=read-only --directory="$root" </dev/null >"$logs/$phase.console" 2>&1 || rc=$?
  echo "-- $phase: container exited with $rc after $(($(date +%s) - start)) s; its checks:"
  cat "$root/ternd-ci/$phase.results" 2>/dev/null || echo "(no results file)"
  if ((rc != 0)) || ! grep -qx "passed: $phase" "$root/ternd-ci/$phase.results" 2>/dev/null; then
    echo "-- $phase: the check script's log (last 80 lines)"
    tail -n 80 "$root/ternd-ci/$phase.log" 2>/dev/null || true
    echo "-- $phase: the container's console (last 40 lines)"
    tail -n 40 "$logs/$phase.console"
    ((rc != 124)) || fail "$phase: the container did not exit within 200 s"
    fail "$phase: checks under systemd failed (container exit status $rc)"
  fi
}

boot boot1
boot boot2
rm -f "$check_unit" "$root/etc/systemd/system/multi-user.target.wants/ternd-ci-check.service"
ok "ternd under systemd as PID 1: two boots, every check passed in $(($(date +%s) - t0)) s"
