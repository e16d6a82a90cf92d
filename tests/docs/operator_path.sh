#!/usr/bin/env bash
# The operator's path, run from the docs' own commands: the command blocks
# (```sh) of docs/fleet-certificates.md, docs/mqtt.md, docs/ota.md and
# docs/training.md, the broker configuration of docs/mqtt.md, the nginx
# blocks of docs/artifact-server.md and the Python examples of
# docs/training.md, run as written in a scratch directory against a
# mosquitto broker, an nginx artifact server and a ternd device, all on
# loopback. Registered with CTest as docs_operator_path (labels integration
# and docs):
#
#   tests/docs/operator_path.sh TERND TERNCTL PYTHON
#
# Each command is looked up in its page by a piece of its text (`run`), so
# the page is the source: a command that fails fails the test with the
# command. Every command of those pages is either run or listed with the
# reason it is not (`skip`); one that is neither fails the test at the end,
# and so does a `run` or `skip` that no longer finds its command.
#
# What a page leaves to the reader's machine is mapped by the table `subst`
# below (host names, ports, /etc and /srv), as is what makes the test quick:
# the training scripts' --epochs and ternctl bench's --seconds/--warmup, both
# documented in docs/training.md. What a page leaves to the operator's hands
# (copying certificates into place, uploading an artifact, the device's
# configuration file, starting the servers) is done here, each step named.
#
# No root, no network beyond 127.0.0.1 (free ports), nothing written outside
# a fresh temporary directory, which is removed at the end
# (TERND_KEEP_SCRATCH=1 keeps it and prints where).
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 TERND TERNCTL PYTHON" >&2; exit 2; }
ternd_bin=$(realpath "$1")
ternctl_bin=$(realpath "$2")
python_bin=$(command -v "$3") || { echo "$0: no Python '$3'" >&2; exit 2; }
src=$(cd "$(dirname "$0")/../.." && pwd)
docs=$src/docs

t0=$SECONDS
pids=()  # what this script started, stopped at the end
w=
cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ ${TERND_KEEP_SCRATCH:-} == 1 ]]; then
    echo "scratch directory kept: $w"
  elif [[ -n $w ]]; then
    rm -rf "$w"
  fi
  exit "$rc"
}
trap cleanup EXIT
w=$(mktemp -d "${TMPDIR:-/tmp}/ternd-operator-path.XXXXXX")
[[ $w != *[[:space:]]* ]] || { echo "$0: scratch path '$w' has spaces" >&2; exit 2; }
root=$w/root  # the machines' file systems: /etc, /srv, /var, /run
ops=$w/ops    # the operator's working directory (a source checkout)
logs=$w/logs
mkdir -p "$root" "$ops" "$logs" "$w/bin" "$w/home"
log=$logs/commands.log  # every command run, with its output
ran=$w/ran.txt
skipped=$w/skipped.txt
: >"$ran"
: >"$skipped"

show_logs() {
  local f
  for f in "$logs"/*.log; do
    echo "---- ${f#"$w"/} (last lines)"
    tail -n 25 "$f"
  done
}
fail() {
  echo "FAIL: $*" >&2
  show_logs >&2
  exit 1
}
phase() { echo "== $* ($((SECONDS - t0)) s)"; }
ok() { echo "ok: $*"; }

# --- the pages ----------------------------------------------------------------

# Every command of PAGE's ```sh blocks, one per line: comment lines and
# trailing comments dropped, continuation lines joined.
doc_commands() {
  awk '
    /^```/ {
      if (fence) { fence = 0; sh = 0 } else { fence = 1; sh = ($0 ~ /^```sh[ \t]*$/) }
      next
    }
    fence && sh {
      line = $0
      if (line ~ /^[ \t]*#/) next
      sub(/[ \t]+#([ \t].*)?$/, "", line)
      cont = (line ~ /\\$/)
      if (cont) sub(/[ \t]*\\$/, "", line)
      sub(/^[ \t]+/, "", line)
      sub(/[ \t]+$/, "", line)
      cmd = (cmd == "" ? line : cmd " " line)
      if (!cont) { if (cmd != "") print cmd; cmd = "" }
    }' "$docs/$1"
}

# The text of the one fenced block of PAGE opened by ```LANG (LANG may be
# empty) that contains TEXT.
doc_block() {
  awk -v want="$2" -v text="$3" '
    /^```/ {
      if (fence) {
        fence = 0
        if (lang == want && index(body, text)) { out = body; n++ }
      } else {
        fence = 1; body = ""; lang = substr($0, 4); sub(/[ \t]+$/, "", lang)
      }
      next
    }
    fence { body = body $0 "\n" }
    END { if (n != 1) exit 1; printf "%s", out }' "$docs/$1" ||
    fail "docs/$1 has no single \`\`\`$2 block containing '$3' (the page changed: update this test)"
}

# The one command of PAGE that is TEXT, else the one that contains TEXT.
doc_cmd() {
  local m
  m=$(doc_commands "$1" | grep -Fx -- "$2" || doc_commands "$1" | grep -F -- "$2" || true)
  [[ -n $m ]] || fail "docs/$1 has no command containing '$2' (the page changed: update this test)"
  [[ $m != *$'\n'* ]] || fail "docs/$1 has several commands containing '$2': $m"
  printf '%s\n' "$m"
}

# What the pages name and this machine has instead: pairs of (text in the
# page, replacement), applied in order to every command and block.
subst=()
make_subst() {
  subst=(
    # Host names: everything is on 127.0.0.1; certificates name the address.
    "mqtt.acme.example:8883" "127.0.0.1:$mqtt_port"
    "-h mqtt.acme.example -p 8883" "-h 127.0.0.1 -p $mqtt_port"
    "--dns mqtt.acme.example" "--ip 127.0.0.1"
    "--dns updates.acme.example" "--ip 127.0.0.1"
    "https://updates.acme.example/" "https://127.0.0.1:$https_port/"
    "listener 8883" "listener $mqtt_port 127.0.0.1"
    "listen 443 ssl;" "listen 127.0.0.1:$https_port ssl;"
    # The machines' file systems.
    " /etc/" " $root/etc/"
    " /srv/" " $root/srv/"
    # Quicker: fewer epochs (accuracy still above the scripts' bars) and
    # shorter measurements.
    "models/train_digits.py" "models/train_digits.py --epochs 5"
    "models/train_vibration.py" "models/train_vibration.py --epochs 3"
    "models/train_digits_cnn.py" "models/train_digits_cnn.py --epochs 3 --min-accuracy 0.9"
    "ternctl bench " "ternctl bench --seconds 0.2 --warmup 0.05 "
  )
}
substitute() {
  local s=$1 i
  for ((i = 0; i < ${#subst[@]}; i += 2)); do
    s=${s//"${subst[i]}"/"${subst[i + 1]}"}
  done
  printf '%s\n' "$s"
}

# run PAGE TEXT: runs the command of PAGE containing TEXT as written (after
# `subst`) in this shell, in the operator's directory, so that what it
# exports stays for the next ones, as in the operator's shell. Its output is
# in $last afterwards.
last=$logs/last.out
run() {
  local cmd line rc=0
  cmd=$(doc_cmd "$1" "$2")
  printf '%s: %s\n' "$1" "$cmd" >>"$ran"
  line=$(substitute "$cmd")
  printf '\n$ %s\n' "$line" >>"$log"
  local start=${EPOCHREALTIME/[.,]/}
  eval "$line" >"$last" 2>&1 || rc=$?
  cat "$last" >>"$log"
  local us=$((${EPOCHREALTIME/[.,]/} - start))
  printf '(exit %d, %d.%d s)\n' "$rc" $((us / 1000000)) $((us / 100000 % 10)) >>"$log"
  if ((rc != 0)); then
    echo "---- output of the command"
    tail -n 30 "$last"
    fail "docs/$1: exit status $rc from: $cmd"
  fi
}

# run_bg PAGE TEXT NAME: starts the command (one that runs until stopped)
# in the background; output in $logs/NAME.log, pid in bg_pid.
bg_pid=
run_bg() {
  local cmd line
  cmd=$(doc_cmd "$1" "$2")
  printf '%s: %s\n' "$1" "$cmd" >>"$ran"
  line=$(substitute "$cmd")
  printf '\n$ %s &   (output: %s.log)\n' "$line" "$3" >>"$log"
  eval "exec $line" >"$logs/$3.log" 2>&1 &
  bg_pid=$!
  pids+=("$bg_pid")
}

# skip PAGE TEXT REASON: a command that is not run, and why.
skip() {
  local cmd
  cmd=$(doc_cmd "$1" "$2")
  printf '%s: %s\n' "$1" "$cmd" >>"$skipped"
  echo "skipped: docs/$1: $cmd ($3)"
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what: not within the time allowed"
    sleep 0.1
  done
}

free_port() {
  "$python_bin" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
alive() { kill -0 "$1" 2>/dev/null; }

# --- the operator's checkout and the tools on PATH ----------------------------

phase "scratch directory $w"
# The operator works in a checkout: the Python package, the training
# scripts and the shipped models (copies: the scripts write models/*.tern),
# and the ternctl of the build at build/tools/ternctl/ternctl.
ln -s "$src/python" "$ops/python"
mkdir -p "$ops/models" "$ops/build/tools/ternctl"
for f in "$src"/models/*.py; do ln -s "$f" "$ops/models/"; done
cp "$src"/models/*.tern "$ops/models/"
ln -s "$ternctl_bin" "$ops/build/tools/ternctl/ternctl"
# ternctl, ternd and ternd-fleet-certs as installed by the package; the
# Python with the toolkit's dependencies as python3.
ln -s "$ternctl_bin" "$w/bin/ternctl"
ln -s "$ternd_bin" "$w/bin/ternd"
ln -s "$src/tools/ternd-fleet-certs" "$w/bin/ternd-fleet-certs"
printf '#!/bin/sh\nexec %s "$@"\n' "$python_bin" >"$w/bin/python3"
chmod +x "$w/bin/python3"
export PATH=$w/bin:$PATH HOME=$w/home
export PYTHONDONTWRITEBYTECODE=1  # nothing written into the source tree
# docs/training.md: "nothing is downloaded" (pip must not need an index).
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The device's socket, for the ternctl commands run "on the device".
export TERND_SOCKET=$root/run/ternd/ternd.sock
unset PYTHONPATH TERND_TERNCTL
cd "$ops"

mqtt_port=$(free_port)
https_port=$(free_port)
make_subst

# --- docs/fleet-certificates.md: the fleet's certificates and ACL -------------

phase "fleet certificates (docs/fleet-certificates.md)"
mkdir -p "$root/etc/mosquitto/certs" "$root/etc/mosquitto/conf.d" \
  "$root/etc/nginx" "$root/srv/ternd/models"
run fleet-certificates.md "ternd-fleet-certs ca /srv/fleet-pki"
run fleet-certificates.md "server /srv/fleet-pki broker"
run fleet-certificates.md "server /srv/fleet-pki updates"
run fleet-certificates.md "client /srv/fleet-pki robot-9"
run fleet-certificates.md "client /srv/fleet-pki fleet-controller"
run fleet-certificates.md "ternd-fleet-certs acl"
pki=$root/srv/fleet-pki
for f in ca.pem ca.key broker.pem broker.key updates.pem updates.key \
  robot-9.pem robot-9.key fleet-controller.pem fleet-controller.key; do
  [[ -s $pki/$f ]] || fail "ternd-fleet-certs did not write $f"
done
[[ $(stat -c %a "$pki/ca.key") == 600 ]] || fail "ca.key is not mode 0600"
ok "fleet CA, broker and artifact server, device robot-9, operator fleet-controller"

# --- docs/mqtt.md: the broker -------------------------------------------------

phase "mosquitto with the configuration of docs/mqtt.md"
run mqtt.md "ternd-fleet-certs acl"  # the page's ACL replaces the one above
grep -qx 'user robot-9' "$root/etc/mosquitto/fleet.acl" || fail "fleet.acl has no user robot-9"
# "Where each file goes" (docs/fleet-certificates.md), by hand.
cp "$pki/ca.pem" "$root/etc/mosquitto/certs/fleet-ca.pem"
cp "$pki/broker.pem" "$pki/broker.key" "$root/etc/mosquitto/certs/"
# What Debian's /etc/mosquitto/mosquitto.conf does around conf.d, for a
# broker that stays this user (as root it would switch to the user
# mosquitto) and logs to stderr.
cat >"$root/etc/mosquitto/mosquitto.conf" <<EOF
user $(id -un)
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
persistence false
include_dir $root/etc/mosquitto/conf.d
EOF
fleet_conf=$(doc_block mqtt.md "" "per_listener_settings false")
for attempt in 1 2 3; do
  substitute "$fleet_conf" >"$root/etc/mosquitto/conf.d/fleet.conf"
  mosquitto -c "$root/etc/mosquitto/mosquitto.conf" >"$logs/mosquitto.log" 2>&1 &
  broker_pid=$!
  # Its listener is open once it says "running" (a port taken meanwhile by
  # another test: it says why and exits).
  until grep -q ' running$' "$logs/mosquitto.log" || ! alive "$broker_pid"; do sleep 0.05; done
  alive "$broker_pid" && break
  wait "$broker_pid" || true
  if ! grep -q 'in use' "$logs/mosquitto.log" || ((attempt == 3)); then
    fail "mosquitto did not start"
  fi
  mqtt_port=$(free_port)  # taken meanwhile by another test: another one
  make_subst
done
pids+=("$broker_pid")
# (As root, the harness's "user root" earns a warning of its own.)
! grep -i 'warning' "$logs/mosquitto.log" | grep -v 'should not be run as root' ||
  fail "mosquitto warns about the documented configuration or ACL"
ok "mosquitto on 127.0.0.1:$mqtt_port: TLS, client certificates required, the generated ACL, no warning"

# --- docs/artifact-server.md: nginx -------------------------------------------

phase "nginx with the server block of docs/artifact-server.md"
cp "$pki/updates.pem" "$pki/updates.key" "$root/etc/nginx/"
location=$(doc_block artifact-server.md nginx "location /models/")
server=$(doc_block artifact-server.md "" "listen 443 ssl;")
[[ $server == *"# (the location block above)"* ]] || fail "artifact-server.md: the server block no longer says where the location block goes"
server=${server/"# (the location block above)"/$location}
mkdir -p "$w/nginx/temp"
for attempt in 1 2 3; do
  # The harness's part of nginx.conf: no root, logs and temp files here.
  cat >"$w/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $w/nginx/nginx.pid;
error_log $logs/nginx-error.log info;
events { worker_connections 64; }
http {
  access_log $logs/nginx-access.log;
  client_body_temp_path $w/nginx/temp/body;
  proxy_temp_path $w/nginx/temp/proxy;
  fastcgi_temp_path $w/nginx/temp/fastcgi;
  uwsgi_temp_path $w/nginx/temp/uwsgi;
  scgi_temp_path $w/nginx/temp/scgi;
$(substitute "$server")
}
EOF
  nginx -p "$w/nginx/" -c "$w/nginx/nginx.conf" -e "$logs/nginx-error.log" \
    >"$logs/nginx.log" 2>&1 &
  nginx_pid=$!
  # Ours once it shows a certificate of the fleet CA on the port.
  until curl -s -o /dev/null --cacert "$pki/ca.pem" "https://127.0.0.1:$https_port/" ||
    ! alive "$nginx_pid"; do sleep 0.05; done
  alive "$nginx_pid" && break
  wait "$nginx_pid" || true
  if ! grep -q 'in use' "$logs/nginx-error.log" || ((attempt == 3)); then
    fail "nginx did not start"
  fi
  https_port=$(free_port)
  make_subst
done
pids+=("$nginx_pid")
ok "nginx on 127.0.0.1:$https_port serving $root/srv/ternd/models/"

# --- docs/ota.md: the fleet's keys and root 1; a device ----------------------

phase "keys and root 1 (docs/ota.md), a device that trusts them"
run ota.md "ternctl keygen --out alice"
run ota.md "ternctl keygen --out bob"
run ota.md "ternctl keygen --out carol"
run ota.md "ternctl keygen --out release"
run ota.md "ternctl keygen --out ts"
run ota.md "ternctl root --fleet acme --version 1"
# The device, provisioned as docs/fleet-certificates.md ("Where each file
# goes") and docs/ota.md ("installed on every device as
# /etc/ternd/keys/root.pb") say; the operator's files beside the keys.
mkdir -p "$root/etc/ternd/keys" "$root/var/lib/ternd" "$root/run/ternd"
cp "$pki/ca.pem" "$root/etc/ternd/fleet-ca.pem"
cp "$pki/robot-9.pem" "$root/etc/ternd/device.pem"
cp "$pki/robot-9.key" "$root/etc/ternd/device.key"
cp root-1.pb "$root/etc/ternd/keys/root.pb"
cp "$pki/ca.pem" fleet-ca.pem
cp "$pki/fleet-controller.pem" "$pki/fleet-controller.key" .
# The device's configuration (docs/configuration.md): robot-9 of the
# groups line-3 and north in the fleet acme (the ACL of docs/mqtt.md),
# serving the packaged model (digits, version 1), telemetry every second.
cat >"$root/etc/ternd/ternd.toml" <<EOF
[daemon]
state_directory = "$root/var/lib/ternd"
[server]
socket = "$TERND_SOCKET"
[runtime]
model = "$src/models/digits.tern"
arena_mb = 16
workers = 1
[device]
id = "robot-9"
fleet = "acme"
groups = ["line-3", "north"]
[mqtt]
broker = "127.0.0.1:$mqtt_port"
ca_file = "$root/etc/ternd/fleet-ca.pem"
cert_file = "$root/etc/ternd/device.pem"
key_file = "$root/etc/ternd/device.key"
[ota]
root_file = "$root/etc/ternd/keys/root.pb"
[telemetry]
interval_s = 1
EOF
(cd "$root/var/lib/ternd" && exec "$ternd_bin" --config "$root/etc/ternd/ternd.toml") \
  >"$logs/ternd.log" 2>&1 &
ternd_pid=$!
pids+=("$ternd_pid")
wait_for 30 "ternd ready (ternctl health)" ternctl health
ok "ternd robot-9 serves digits version 1"

# The operator follows the fleet from now on (docs/ota.md, "Follow it").
run_bg ota.md "ternctl watch" watch
watch_pid=$bg_pid
wait_for 30 "ternctl watch shows robot-9 online" grep -q '^robot-9  *online ' "$logs/watch.log"
ok "ternctl watch: robot-9 online"

# --- docs/training.md: train, export, check, sign, publish --------------------

phase "docs/training.md: set up"
skip training.md "apt-get install" "needs root and the network; scripts/deps.sh test installs these packages before the suite runs"
run training.md "export PYTHONPATH=\$PWD/python"
run training.md "import ternd; print(ternd.__version__)"
grep -qx '[0-9][0-9.]*' "$last" || fail "ternd.__version__ printed '$(cat "$last")'"
version=$(cat "$last")
run training.md "python3 -m venv --system-site-packages .venv"
run training.md ".venv/bin/pip install ./python"
(unset PYTHONPATH && cd "$w" && "$ops/.venv/bin/python" -c 'import ternd') ||
  fail "the package installed into .venv does not import"
ok "ternd $version from the tree and installed into .venv"

phase "docs/training.md: the model (sections 2, 3 and 5), trained briefly"
python_blocks=$(awk '/^```python/ { n++ } END { print n + 0 }' "$docs/training.md")
[[ $python_blocks == 3 ]] || fail "docs/training.md has $python_blocks Python blocks, this test runs 3: update it"
{
  echo 'import sys; sys.path.insert(0, "models"); import training; training.make_deterministic(11)'
  doc_block training.md python "model = nn.Sequential("
  # Section 3 ("Train as usual") in code: the vibration data set of
  # models/datasets.py, a few epochs of the shipped models' training loop
  # on the logits (model[:-1]).
  cat <<'EOF'
import datasets
data = datasets.vibration()
x_test = data.x_test
training.fit(model[:-1], data.x_train, data.y_train, epochs=3, lr=3e-3, batch=64, seed=11)
model.eval()
EOF
  doc_block training.md python "export(model,"
} >"$w/training_example.py"
echo "training.md: the Python blocks of sections 2 and 5" >>"$log"
python3 "$w/training_example.py" >>"$log" 2>&1 || fail "docs/training.md's Python blocks failed: $(tail -n 5 "$log")"
[[ -s models/vibration.tern ]] || fail "the export example wrote no models/vibration.tern"
ok "exported models/vibration.tern"
# The convolutional model of section 2 builds, runs and exports.
{
  echo 'import torch'
  doc_block training.md python "image=nn.Unflatten(1, (1, 8, 8))"
  cat <<'EOF'
from ternd import export
cnn.eval()
assert cnn(torch.rand(4, 64) * 16).shape == (4, 10)
export(cnn, "cnn_example.tern", torch.rand(4, 64) * 16, name="cnn_example")
EOF
} >"$w/training_cnn_example.py"
echo "training.md: the Python block of the convolutional model" >>"$log"
python3 "$w/training_cnn_example.py" >>"$log" 2>&1 || fail "docs/training.md's CNN block failed: $(tail -n 5 "$log")"
ok "the convolutional model of section 2 exports"

phase "docs/training.md: check the file (section 6)"
run training.md "ternctl inspect models/vibration.tern"
if ! grep -q '^model *vibration$' "$last" || ! grep -q '^version *2$' "$last"; then
  fail "ternctl inspect: not vibration version 2: $(head -n 3 "$last")"
fi
run training.md "ternctl run --golden models/vibration.tern"
grep -q "golden check passed" "$last" || fail "ternctl run --golden: $(cat "$last")"
run training.md "ternctl run models/digits.tern --json --values"
grep -q '"class"' "$last" || fail "ternctl run --json: no class in $(cat "$last")"
run training.md "python3 -m ternd inspect models/vibration.tern"
run training.md "python3 models/evaluate.py"
grep -q "C++ runtime accuracy" "$last" || fail "evaluate.py: $(cat "$last")"
ok "inspect, golden check, a digit classified, the Python reader, accuracy on the held-out splits"

phase "docs/training.md: sign and publish (section 7)"
run training.md "ternctl sign models/vibration.tern"
[[ -s dist/vibration-2.tern.zst && -s dist/vibration-2.release.pb ]] ||
  fail "ternctl sign did not write dist/vibration-2.tern.zst and .release.pb: $(ls dist)"
# Upload the artifact to the --url location (docs/artifact-server.md).
cp dist/vibration-2.tern.zst "$root/srv/ternd/models/"
run training.md "ternctl publish"
run ota.md "ternctl status"
active() { ternctl status | grep -q "^update *active (7) '$1' version $2"; }
wait_for 60 "vibration version 2 active on robot-9 (ternctl status)" active vibration 2
ok "robot-9 downloaded, checked and activated vibration version 2"

phase "docs/training.md: the shipped models and ternctl bench"
mkdir -p new
cp models/vibration.tern new/  # the new model, for bench --compare
run training.md "models/train_digits.py"
run training.md "models/train_vibration.py"
run training.md "models/train_digits_cnn.py"
skip training.md "models/make_keywords_data.py" "a minute of espeak-ng on 2 cores; python_crosscheck regenerates the small test set and checks the committed keywords.tern"
skip training.md "models/train_keywords.py" "needs the generated data set and minutes of CPU; python_crosscheck checks the committed keywords.tern"
run training.md "ternctl bench models/vibration.tern --batch 1,8,64"
run training.md "ternctl bench models/vibration.tern --batch 1 --profile"
run training.md "ternctl bench --compare"
grep -q 'B/A' "$last" || fail "ternctl bench --compare printed no ratio B/A: $(cat "$last")"
ok "retrained both shipped models; bench, --profile, --compare"

# --- docs/ota.md: rotate the release key, sign and publish --------------------

phase "docs/ota.md: root 2 replaces the release key"
run ota.md "ternctl keygen --out release-2"
run ota.md "ternctl root --previous root-1.pb"
run ota.md "--key fleet-controller.key --root root-2.pb"

phase "docs/ota.md: digits version 3, signed with the new release key"
run ota.md "models/train_digits.py --version 3"
run ota.md "--key release-2.key --root root-2.pb --out-dir dist/"
[[ -s dist/digits-3.tern.zst && -s dist/digits-3.release.pb ]] || fail "ternctl sign did not write dist/digits-3.*"
run ota.md "--wave 0:1 --wave 2h:10 --wave 1d:100"
grep -q "^waves        from " "$last" || fail "ternctl sign --wave did not show the schedule: $(cat "$last")"
cp dist/digits-3.tern.zst "$root/srv/ternd/models/"
run ota.md "--group line-3 dist/digits-3.release.pb"
# A device that had not rotated to root 2 would refuse this release
# (bad_signature): its activation shows the rotation too.
wait_for 60 "digits version 3 active on robot-9 (ternctl status)" active digits 3
run ota.md "ternctl status"
grep -q "^installed *'digits' version 3" "$last" || fail "ternctl status: $(cat "$last")"
grep -q "^rollback to 'vibration' version 2" "$last" || fail "ternctl status: $(cat "$last")"
ok "robot-9 rotated to root 2 and activated digits version 3 (rollback target vibration 2)"

phase "docs/ota.md: timestamp and offline bundle"
run ota.md "ternctl timestamp"
run ota.md "ternctl bundle --root root-1.pb"
run ota.md "ternctl bundle show"
grep -q '^verified *yes' "$last" || fail "ternctl bundle show: $(cat "$last")"
ok "digits-3.ternbundle carries roots 1 and 2, the release, the timestamp and the artifact"

# --- what the device and the operator saw -------------------------------------

phase "docs/mqtt.md: the device's view; the operator's ternctl watch"
run_bg mqtt.md "mosquitto_sub" device-view
sub_pid=$bg_pid
wait_for 20 "mosquitto_sub with the device's certificate receives the group release" \
  grep -q "^ternd/v1/acme/groups/line-3/update/release [0-9]* bytes" "$logs/device-view.log"
wait_for 20 "mosquitto_sub with the device's certificate receives the root" \
  grep -q "^ternd/v1/acme/trust/root [0-9]* bytes" "$logs/device-view.log"
kill -TERM "$sub_pid"
wait "$sub_pid" || true
! grep -q '/presence\|/telemetry\|/update/state' "$logs/device-view.log" ||
  fail "the device's certificate may read another device's or its own outgoing topics: $(cat "$logs/device-view.log")"
ok "the device reads its group's release and the root, nothing it only writes"

watch_row() { grep '^robot-9 ' "$logs/watch.log" | tail -n 1; }
watch_shows() {
  local r
  r=$(watch_row)
  [[ -n $r ]] && awk '$2 == "online" && $5 == "digits@3" && $8 > 0 && $(NF - 1) == "active" && $NF == "v3" { ok = 1 } END { exit !ok }' <<<"$r"
}
wait_for 20 "ternctl watch shows robot-9 online, digits@3, telemetry batches, update active" watch_shows
kill -TERM "$watch_pid"
wait "$watch_pid" || fail "ternctl watch exited with $? on SIGTERM"
ok "ternctl watch: $(watch_row | tr -s ' ')"

phase "stop the device cleanly"
kill -TERM "$ternd_pid"
wait "$ternd_pid" || fail "ternd exited with $? on SIGTERM"

# --- every command of the pages ran or is listed as skipped -------------------

phase "every command of the pages ran or was skipped with its reason"
skip mqtt.md "ninja -C build net_mqtt_session_test" "the developer's commands for the MQTT tests: CTest runs those tests itself"
skip mqtt.md "ctest --test-dir build -R" "the developer's commands for the MQTT tests: CTest runs those tests itself"
for page in fleet-certificates.md mqtt.md ota.md training.md; do
  doc_commands "$page" | sed "s/^/$page: /"
done | sort -u >"$w/documented.txt"
sort -u "$ran" "$skipped" >"$w/done.txt"
missing=$(comm -23 "$w/documented.txt" "$w/done.txt")
[[ -z $missing ]] || fail "commands of the pages neither run nor skipped by this test: $missing"
ok "$(sort -u "$ran" | wc -l) commands run, $(sort -u "$skipped" | wc -l) skipped, of $(wc -l <"$w/documented.txt") in the pages"
echo "PASS in $((SECONDS - t0)) s"
