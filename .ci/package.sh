#!/usr/bin/env bash
# Package CI step: builds the Debian packages for amd64 and arm64
# (scripts/package.sh) and checks them the way an integrator uses them.
#
#   1. dpkg-deb --info/--contents: expected files and modes, the conffile,
#      maintainer scripts, Architecture, Version, and a Depends: that names
#      the package of every library the binaries link (readelf NEEDED ->
#      dpkg -S); no build paths in any file; no install rule outside a
#      packaged component.
#   2. lintian: no errors.
#   3. A fresh Debian 12 root (debootstrap --variant=minbase, cached as a
#      tarball), where apt-get resolves the dependencies from the mirror of
#      this machine's apt sources, then every command of docs/operations.md
#      that runs without systemd as PID 1: install a previous version, check
#      that nothing is enabled, configure, provision, start the daemon as the
#      ternd user, ternctl health/info/stats/infer, the Python client, a
#      C++ program built with `pkg-config ternd-client`; upgrade (edited
#      config and /var/lib/ternd kept); ternd --version and ternctl run
#      --golden;
#      systemd-analyze verify and security on the installed units; enable;
#      backup and restore the state directory; roll back the package by
#      hand; remove (config and state kept); purge (removed).
#   4. The same root booted twice with systemd as PID 1 (systemd-nspawn,
#      .ci/systemd-boot.sh): the package installed, enabled, served, reloaded,
#      socket-activated, restarted after kill -9 and by the watchdog,
#      stopped, booted again, reinstalled, removed and purged under a
#      running systemd.
#   5. arm64: ELF machine of every binary, Depends against the arm64
#      libraries, ternd --version and ternctl run --golden under qemu-aarch64.
#
# Usage: bash .ci/package.sh   (from the repository root, as root)
# Environment: TERND_CI_CACHE (default /var/cache/ternd-ci) keeps the base
# tarball and downloaded .debs between runs; the Debian mirror is the one
# this machine's apt sources use for bookworm main (and bookworm-security
# main), or TERND_DEBIAN_MIRROR (and TERND_DEBIAN_SECURITY_MIRROR);
# TERND_CI_REUSE_PACKAGES=1 checks the packages of the previous run instead
# of building them again.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
t0=$(date +%s)
phase() { echo; echo "== $* ($(($(date +%s) - t0)) s)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

if [[ $(id -u) -ne 0 ]]; then fail "needs root (debootstrap, chroot, mount)"; fi
scripts/deps.sh build
for tool in lintian debootstrap; do
  command -v "$tool" >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "$tool" >/dev/null
  }
done

cache=${TERND_CI_CACHE:-/var/cache/ternd-ci}

# The first URI that this machine's apt sources give for Debian's SUITE with
# the component main: one-line sources (/etc/apt/sources.list,
# sources.list.d/*.list) and deb822 ones (sources.list.d/*.sources).
apt_source_uri() {  # suite
  local f files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  for f in "${files[@]}"; do
    case "$f" in
      *.sources)
        # Paragraphs of "Field: value" lines (continuation lines start with
        # a blank); a paragraph with "Enabled: no" is skipped.
        awk -v suite="$1" '
          function has(list, word,   n, i, a) {
            n = split(list, a, /[ \t]+/)
            for (i = 1; i <= n; i++) if (a[i] == word) return 1
            return 0
          }
          function flush() {
            if (has(f["types"], "deb") && has(f["suites"], suite) &&
                has(f["components"], "main") && tolower(f["enabled"]) != "no" && f["uris"] != "") {
              split(f["uris"], u, /[ \t]+/); sub(/\/+$/, "", u[1]); print u[1]; found = 1; exit
            }
            delete f; key = ""
          }
          /^#/ { next }
          /^[ \t]*$/ { flush(); next }
          /^[ \t]/ { if (key != "") { f[key] = f[key] " " $0; sub(/^[ \t]+/, "", f[key]) }; next }
          {
            key = tolower(substr($0, 1, index($0, ":") - 1))
            f[key] = substr($0, index($0, ":") + 1)
            sub(/^[ \t]+/, "", f[key])
          }
          END { if (!found) flush() }' "$f"
        ;;
      *)
        # deb [options] URI SUITE COMPONENT...
        sed -E 's/#.*//; s/\[[^]]*\]//' "$f" | awk -v suite="$1" '
          $1 == "deb" && $3 == suite {
            for (i = 4; i <= NF; i++) if ($i == "main") { sub(/\/+$/, "", $2); print $2; exit }
          }'
        ;;
    esac
  done | sed -n '1p' || true
}
mirror=${TERND_DEBIAN_MIRROR:-$(apt_source_uri bookworm)}
[[ -n $mirror ]] ||
  fail "no Debian bookworm main source in /etc/apt/sources.list or /etc/apt/sources.list.d/*.list, *.sources: set TERND_DEBIAN_MIRROR to a Debian mirror's URI"
security_mirror=${TERND_DEBIAN_SECURITY_MIRROR:-$(apt_source_uri bookworm-security)}
[[ -n $security_mirror ]] ||
  fail "no Debian bookworm-security main source in /etc/apt/sources.list or /etc/apt/sources.list.d/*.list, *.sources: set TERND_DEBIAN_SECURITY_MIRROR to a Debian security mirror's URI"
work=$(mktemp -d "${TMPDIR:-/tmp}/ternd-package-ci.XXXXXX")
chroot_dir=$work/root
daemon_pid=
cleanup() {
  if [[ -n $daemon_pid ]]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  for m in var/cache/apt/archives dev/pts dev proc; do
    if mountpoint -q "$chroot_dir/$m" 2>/dev/null; then umount -l "$chroot_dir/$m"; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

version=$(sed -n 's/^project(ternd VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[[ -n $version ]] || fail "no project version in CMakeLists.txt"
# "~" sorts before anything: the previous version is lower than $version.
old_version="${version}~ci.previous"

# --- build ------------------------------------------------------------------
phase "build: previous version $old_version (amd64), then $version (amd64, arm64)"
mkdir -p "$work/old" "$work/new"
# TERND_CI_REUSE_PACKAGES=1 skips the build and checks the packages of the
# last run (build-pkg/previous, build-pkg/packages, build-pkg-arm64/packages).
if [[ ${TERND_CI_REUSE_PACKAGES:-0} != 1 ]]; then
  TERND_PACKAGE_VERSION=$old_version scripts/package.sh amd64
  rm -rf build-pkg/previous
  cp -r build-pkg/packages build-pkg/previous
  scripts/package.sh all
fi
cp build-pkg/previous/*.deb "$work/old/"
cp build-pkg/packages/*.deb build-pkg-arm64/packages/*.deb "$work/new/"
ls -l "$work/old" "$work/new"

deb() {  # dir package arch -> path of the .deb
  local f="$1/${2}_${3}_${4}.deb"
  [[ -f $f ]] || fail "missing package $f"
  echo "$f"
}
ternd_amd64=$(deb "$work/new" ternd "$version" amd64)
dev_amd64=$(deb "$work/new" ternd-dev "$version" amd64)
py_all=$(deb "$work/new" python3-ternd "$version" all)
ternd_arm64=$(deb "$work/new" ternd "$version" arm64)
dev_arm64=$(deb "$work/new" ternd-dev "$version" arm64)
ternd_old=$(deb "$work/old" ternd "$old_version" amd64)

# --- static checks ----------------------------------------------------------
phase "dpkg-deb --info / --contents"

field() { dpkg-deb --field "$1" "$2"; }

check_fields() {  # deb package version arch
  local f=$1
  [[ $(field "$f" Package) == "$2" ]] || fail "$f: Package is '$(field "$f" Package)', expected '$2'"
  [[ $(field "$f" Version) == "$3" ]] || fail "$f: Version is '$(field "$f" Version)', expected '$3'"
  [[ $(field "$f" Architecture) == "$4" ]] || fail "$f: Architecture is '$(field "$f" Architecture)', expected '$4'"
  local depends
  depends=$(field "$f" Depends)
  [[ -n $depends ]] || fail "$f: empty Depends"
  # Sane: every entry is "name" or "name (op version)", no duplicates.
  local names
  names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/ *(.*//; s/ *$//')
  if grep -qvE '^[a-z0-9][a-z0-9+.-]+$' <<<"$names"; then
    fail "$f: malformed Depends '$depends'"
  fi
  [[ -z $(sort <<<"$names" | uniq -d) ]] || fail "$f: duplicate entries in Depends '$depends'"
  [[ -n $(field "$f" Maintainer) ]] || fail "$f: no Maintainer"
  ok "$(basename "$f"): Package $2, Version $3, Architecture $4, Depends: $depends"
}

# Every line "MODE PATH" of $2 must be in the package with that mode, files
# and directories owned by root:root, nothing setuid or world-writable.
check_contents() {  # deb expected-list
  local f=$1 listing
  listing=$(dpkg-deb --contents "$f")
  while read -r mode path; do
    [[ -z $mode ]] && continue
    grep -qE "^$mode root/root .* \./${path#/}\$" <<<"$listing" ||
      fail "$(basename "$f"): expected $mode root/root ./${path#/}; the package has: $(grep -F "./${path#/}" <<<"$listing" || echo nothing)"
  done <<<"$2"
  if grep -vE '^[-dl]r[-w][-x]r-[-x]r-[-x] root/root ' <<<"$listing"; then
    fail "$(basename "$f"): entries above are not root/root or have unexpected modes"
  fi
  ok "$(basename "$f"): $(wc -l <<<"$listing") entries, expected files present with their modes, all root/root"
}

# No file of the package contains the build tree's path.
check_no_build_paths() {  # deb
  local x
  x=$work/x/$(basename "$1" .deb)
  mkdir -p "$x"
  dpkg-deb -x "$1" "$x"
  local hits
  hits=$(grep -rlaF "$src" "$x" || true)
  [[ -z $hits ]] || fail "$(basename "$1"): build path $src found in: ${hits//$x/}"
  ok "$(basename "$1"): no build paths"
}

# Depends names the package of every shared library the ELF files need.
check_shlib_depends() {  # deb triplet
  local f=$1 triplet=$2 x depends
  x=$work/x/$(basename "$1" .deb)
  depends=" $(field "$f" Depends | tr ',' ' ') "
  local elf lib pkg checked=0
  while read -r elf; do
    for lib in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      pkg=$(dpkg -S "/lib/$triplet/$lib" "/usr/lib/$triplet/$lib" 2>/dev/null |
            head -n1 | sed 's/:.*//') || true
      [[ -n $pkg ]] || fail "$(basename "$f"): ${elf#"$x"} needs $lib, which no installed package for $triplet holds"
      [[ $depends == *" $pkg "* ]] ||
        fail "$(basename "$f"): ${elf#"$x"} needs $lib from $pkg, but Depends is '$(field "$f" Depends)'"
      checked=$((checked + 1))
    done
  done < <(find "$x" -type f -exec sh -c 'file -b "$1" | grep -q "^ELF" && echo "$1"' _ {} \;)
  ((checked > 0)) || fail "$(basename "$f"): no ELF file with NEEDED entries found"
  ok "$(basename "$f"): Depends covers all $checked NEEDED libraries"
}

check_control() {  # deb
  local c
  c=$work/control/$(basename "$1" .deb)
  mkdir -p "$c"
  dpkg-deb --control "$1" "$c"
  local s
  for s in postinst prerm postrm; do
    [[ $(stat -c %a "$c/$s") == 755 ]] || fail "$(basename "$1"): $s mode $(stat -c %a "$c/$s"), expected 755"
    sh -n "$c/$s" || fail "$(basename "$1"): $s is not valid sh"
  done
  [[ $(cat "$c/conffiles") == /etc/ternd/ternd.toml ]] ||
    fail "$(basename "$1"): conffiles is '$(cat "$c/conffiles")', expected /etc/ternd/ternd.toml"
  ok "$(basename "$1"): conffiles /etc/ternd/ternd.toml; postinst, prerm, postrm 0755"
}

ternd_files() {  # triplet
  cat <<EOF
-rwxr-xr-x /usr/sbin/ternd
-rwxr-xr-x /usr/bin/ternctl
-rw-r--r-- /lib/systemd/system/ternd.service
-rw-r--r-- /lib/systemd/system/ternd.socket
-rw-r--r-- /lib/systemd/system/ternd-http.socket
-rw-r--r-- /usr/lib/sysusers.d/ternd.conf
-rw-r--r-- /usr/lib/tmpfiles.d/ternd.conf
-rw-r--r-- /etc/ternd/ternd.toml
-rw-r--r-- /usr/share/ternd/models/digits.tern
-rw-r--r-- /usr/share/ternd/models/vibration.tern
-rw-r--r-- /usr/share/ternd/models/demo.tern
-rw-r--r-- /usr/share/doc/ternd/copyright
-rw-r--r-- /usr/share/doc/ternd/changelog.gz
-rw-r--r-- /usr/share/doc/ternd/operations.md
EOF
}
dev_files() {  # triplet
  cat <<EOF
-rw-r--r-- /usr/lib/$1/libternd_client.a
-rw-r--r-- /usr/lib/$1/libternd_wire.a
-rw-r--r-- /usr/lib/$1/libternd_wire_proto.a
-rw-r--r-- /usr/lib/$1/libternd_base.a
-rw-r--r-- /usr/lib/$1/pkgconfig/ternd-client.pc
-rw-r--r-- /usr/include/ternd/daemon/client/client.h
-rw-r--r-- /usr/include/ternd/daemon/frame.h
-rw-r--r-- /usr/include/ternd/daemon/protocol.pb.h
-rw-r--r-- /usr/include/ternd/base/status.h
-rw-r--r-- /usr/share/ternd/proto/daemon/protocol.proto
-rw-r--r-- /usr/share/ternd/proto/runtime/model.proto
-rw-r--r-- /usr/share/ternd/proto/ota/metadata.proto
-rw-r--r-- /usr/share/doc/ternd-dev/copyright
EOF
}
py_files="-rw-r--r-- /usr/lib/python3/dist-packages/ternd_client/__init__.py
-rw-r--r-- /usr/lib/python3/dist-packages/ternd_client/client.py
-rw-r--r-- /usr/lib/python3/dist-packages/ternd_client/protocol_pb2.py
-rw-r--r-- /usr/lib/python3/dist-packages/ternd/__init__.py
-rw-r--r-- /usr/lib/python3/dist-packages/ternd/model_pb2.py
-rw-r--r-- /usr/share/doc/python3-ternd/copyright"

check_fields "$ternd_amd64" ternd "$version" amd64
check_fields "$dev_amd64" ternd-dev "$version" amd64
check_fields "$py_all" python3-ternd "$version" all
check_fields "$ternd_arm64" ternd "$version" arm64
check_fields "$dev_arm64" ternd-dev "$version" arm64
check_fields "$ternd_old" ternd "$old_version" amd64
for f in "$ternd_amd64" "$ternd_arm64"; do
  [[ " $(field "$f" Depends | tr ',' ' ') " == *" systemd "* ]] ||
    fail "$(basename "$f"): Depends lacks systemd (postinst runs systemd-sysusers)"
  [[ " $(field "$f" Depends | tr ',' ' ') " == *" procps "* ]] ||
    fail "$(basename "$f"): Depends lacks procps (ternd.service runs /bin/kill)"
done
check_contents "$ternd_amd64" "$(ternd_files x86_64-linux-gnu)"
check_contents "$ternd_arm64" "$(ternd_files aarch64-linux-gnu)"
check_contents "$dev_amd64" "$(dev_files x86_64-linux-gnu)"
check_contents "$dev_arm64" "$(dev_files aarch64-linux-gnu)"
check_contents "$py_all" "$py_files"
check_control "$ternd_amd64"
check_control "$ternd_arm64"
for f in "$ternd_amd64" "$dev_amd64" "$py_all" "$ternd_arm64" "$dev_arm64"; do
  check_no_build_paths "$f"
done
check_shlib_depends "$ternd_amd64" x86_64-linux-gnu
check_shlib_depends "$ternd_arm64" aarch64-linux-gnu

# An install() rule without COMPONENT would silently miss every package.
DESTDIR=$work/unspecified cmake --install build-pkg --component Unspecified >/dev/null
stray=$(find "$work/unspecified" -type f 2>/dev/null || true)
[[ -z $stray ]] || fail "install() rules without a packaged COMPONENT (ternd, dev, python) install: ${stray//$work\/unspecified/}"
ok "every install() rule belongs to a packaged component"

phase "lintian"
lintian_out=$(lintian --tag-display-limit 0 "$work"/new/*.deb "$ternd_old" 2>&1 | grep -v "running with root privileges" || true)
printf '%s\n' "$lintian_out"
if grep -q '^E: ' <<<"$lintian_out"; then fail "lintian reports errors"; fi
ok "lintian: no errors ($(grep -c '^W: ' <<<"$lintian_out" || true) warnings)"

# --- a fresh Debian root ----------------------------------------------------
phase "fresh Debian 12 root (debootstrap minbase, cached in $cache)"
mkdir -p "$cache/archives/partial"
base=$cache/bookworm-minbase-amd64.tar.gz
if [[ ! -f $base ]]; then
  debootstrap --variant=minbase bookworm "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; fail "debootstrap from $mirror failed"; }
  tar -C "$work/base" --numeric-owner -czf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$work/base"
  ok "debootstrap done at $(($(date +%s) - t0)) s; cached as $base"
fi
mkdir -p "$chroot_dir"
tar -C "$chroot_dir" --numeric-owner -xzpf "$base"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
cat >"$chroot_dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
EOF
# Unattended apt, and no Recommends: python3-ternd recommends python3-torch.
cat >"$chroot_dir/etc/apt/apt.conf.d/99ternd-ci" <<'EOF'
APT::Get::Assume-Yes "true";
APT::Install-Recommends "false";
quiet "1";
Dpkg::Use-Pty "0";
EOF
# As in any chroot: maintainer scripts must not start services.
printf '#!/bin/sh\nexit 101\n' >"$chroot_dir/usr/sbin/policy-rc.d"
chmod 755 "$chroot_dir/usr/sbin/policy-rc.d"
mount -t proc proc "$chroot_dir/proc"
mount --bind /dev "$chroot_dir/dev"
mount --bind "$cache/archives" "$chroot_dir/var/cache/apt/archives"

# The operator's working directory: the packages and the files a fleet
# operator hands over (a CA, the device's certificate and key, root.pb).
ops_dir=$chroot_dir/root/ops
mkdir -p "$ops_dir"
cp "$work"/old/*.deb "$work"/new/*_amd64.deb "$work"/new/*_all.deb "$ops_dir/"
tests/support/make_test_ca.sh "$work/ca" robot-17 >/dev/null
cp "$work/ca/ca.pem" "$ops_dir/fleet-ca.pem"
cp "$work/ca/client.pem" "$ops_dir/device.pem"
cp "$work/ca/client.key" "$ops_dir/device.key"
# A real root of trust for the fleet "default" (the shipped device.fleet),
# made the way docs/ota.md tells the fleet operator, with the ternctl just
# built.
mkdir -p "$work/keys"
(
  cd "$work/keys"
  ternctl=$src/build-pkg/tools/ternctl/ternctl
  for k in root-a release ts; do "$ternctl" keygen --out "$k" >/dev/null; done
  "$ternctl" root --fleet default --version 1 --days 365 --root-key root-a.pub \
    --root-threshold 1 --release-key release.pub --timestamp-key ts.pub \
    --sign root-a.key --out root.pb >/dev/null
) || fail "ternctl keygen/root could not make a root of trust"
cp "$work/keys/root.pb" "$ops_dir/root.pb"
cp "$ops_dir/root.pb" "$work/root.pb"

in_root() {
  chroot "$chroot_dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
# Runs one command of docs/operations.md as written, in /root/ops, and
# records it (package file names normalized) for the coverage check at the
# end. Output goes to $work/ops.log; on failure it is shown.
normalize() { sed -E 's#\./[A-Za-z0-9_.~+-]+\.deb#./PKG.deb#g; s/[[:space:]]+/ /g; s/ $//'; }
ops() {
  echo "\$ $1" >>"$work/ops.log"
  printf '%s\n' "$1" | normalize >>"$work/ops-run.txt"
  in_root sh -c "cd /root/ops && $1" >>"$work/ops.log" 2>&1 ||
    { tail -30 "$work/ops.log"; fail "docs/operations.md command failed in the fresh root: $1"; }
}
ops_out() {  # like ops, and prints the command's stdout
  printf '%s\n' "$1" | normalize >>"$work/ops-run.txt"
  in_root sh -c "cd /root/ops && $1" 2>>"$work/ops.log"
}
status() { in_root dpkg-query -W -f '${Version} ${db:Status-Abbrev}' "$1" 2>/dev/null || true; }

in_root apt-get update >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get update in the fresh root"; }

phase "install the previous version ($old_version): apt-get resolves the dependencies"
ops "apt-get install ./$(basename "$ternd_old")"
[[ $(status ternd) == "$old_version ii " ]] || fail "ternd $old_version is not installed: '$(status ternd)'"
echo "ok: apt-get set up $(grep -c '^Setting up' "$work/ops.log") packages (ternd and its dependencies)"
in_root getent passwd ternd >/dev/null || fail "postinst did not create the user ternd"
in_root getent group ternd >/dev/null || fail "postinst did not create the group ternd"
[[ $(in_root stat -c '%a %U' /etc/ternd/keys) == "755 root" ]] ||
  fail "postinst: /etc/ternd/keys is $(in_root stat -c '%a %U' /etc/ternd/keys), expected 755 root"
enabled=$(find "$chroot_dir/etc/systemd/system" -name 'ternd.*' 2>/dev/null || true)
[[ -z $enabled ]] || fail "installing enabled units by surprise: $enabled"
ok "user and group ternd, /etc/ternd/keys; nothing enabled"

phase "configure and provision"
ops "sed -i 's/^log_level = \"info\"/log_level = \"debug\"/' /etc/ternd/ternd.toml"
out=$(ops_out "ternd --check-config -c /etc/ternd/ternd.toml") || fail "--check-config refused the edited file: $out"
[[ $out == *OK* ]] || fail "ternd --check-config says '$out'"
ops "sed -i 's/^#id = \"robot-17\"/id = \"robot-17\"/' /etc/ternd/ternd.toml"
ops "install -m 0644 -o root -g root fleet-ca.pem /etc/ternd/fleet-ca.pem"
ops "install -m 0644 -o root -g root device.pem /etc/ternd/device.pem"
ops "install -m 0640 -o root -g ternd device.key /etc/ternd/device.key"
ops "sed -i 's/^#cert_file/cert_file/; s/^#key_file/key_file/' /etc/ternd/ternd.toml"
ops "install -m 0644 -o root -g root root.pb /etc/ternd/keys/root.pb"
out=$(ops_out "ternctl root show /etc/ternd/keys/root.pb") || fail "ternctl root show on the device: $out"
grep -q '^fleet *default' <<<"$out" || fail "ternctl root show does not show fleet default: $out"
ops "ternd --check-config -c /etc/ternd/ternd.toml"
grep -q '^id = "robot-17"' "$chroot_dir/etc/ternd/ternd.toml" || fail "the device id edit did not apply"
grep -q '^cert_file = "/etc/ternd/device.pem"' "$chroot_dir/etc/ternd/ternd.toml" || fail "the cert_file edit did not apply"
[[ $(in_root stat -c '%a %U %G' /etc/ternd/device.key) == "640 root ternd" ]] ||
  fail "device.key is $(in_root stat -c '%a %U %G' /etc/ternd/device.key), expected 640 root ternd"
ok "device id, TLS files, root.pb provisioned; the configuration passes ternd --check-config"

# Starts the installed daemon as systemd would (user ternd, /run/ternd,
# /var/lib/ternd as working directory) and waits until it serves.
start_daemon() {
  in_root install -d -o ternd -g ternd -m 0755 /run/ternd
  in_root install -d -o ternd -g ternd -m 0750 /var/lib/ternd
  chroot "$chroot_dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    setpriv --reuid=ternd --regid=ternd --init-groups \
    sh -c 'cd /var/lib/ternd && exec /usr/sbin/ternd --config /etc/ternd/ternd.toml' \
    >"$work/ternd.log" 2>&1 &
  daemon_pid=$!
  local deadline=$(($(date +%s) + 60))
  until in_root ternctl health >/dev/null 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/ternd.log"; fail "the installed ternd exited at start"; }
    (($(date +%s) < deadline)) || { cat "$work/ternd.log"; fail "the installed ternd was not ready within 60 s"; }
    sleep 0.2
  done
}
stop_daemon() {
  kill -TERM "$daemon_pid"
  local rc=0
  wait "$daemon_pid" || rc=$?
  daemon_pid=
  ((rc == 0)) || { cat "$work/ternd.log"; fail "ternd exited with $rc on SIGTERM"; }
}

# The first image of scikit-learn's digits set, a handwritten 0.
zero="0 0 5 13 9 1 0 0 0 0 13 15 10 15 5 0 0 3 15 2 0 11 8 0 0 4 12 0 0 8 8 0 0 5 8 0 0 9 8 0 0 4 11 0 1 12 7 0 0 2 14 5 10 12 0 0 0 0 6 13 10 0 0 0"

observe() {
  local out
  out=$(ops_out "ternctl health") || fail "ternctl health: $out"
  [[ $out == *"ready yes"* ]] || fail "ternctl health says '$out', expected ready yes"
  out=$(ops_out "ternctl info") || fail "ternctl info: $out"
  grep -q "digits" <<<"$out" || fail "ternctl info does not name the model digits: $out"
  out=$(ops_out "ternctl infer --values $zero") || fail "ternctl infer: $out"
  grep -A1 '^class' <<<"$out" | tail -n1 | grep -qx ' *0' || fail "ternctl infer classified the image of a 0 as: $out"
  out=$(ops_out "ternctl stats") || fail "ternctl stats: $out"
  [[ -n $out ]] || fail "ternctl stats printed nothing"
  out=$(ops_out "ternctl stats --prometheus") || fail "ternctl stats --prometheus: $out"
  grep -q '^ternd_' <<<"$out" || fail "ternctl stats --prometheus has no ternd_ metric: $out"
  ok "ternctl health, info, infer (a 0 is class 0), stats, stats --prometheus against the installed daemon"
}

phase "run the installed daemon (previous version) as the ternd user"
start_daemon
observe
echo "state written by the previous version $RANDOM" >"$work/marker"
cp "$work/marker" "$chroot_dir/var/lib/ternd/marker"
in_root chown ternd:ternd /var/lib/ternd/marker
stop_daemon
ok "SIGTERM: ternd exited 0"

# --- upgrade ----------------------------------------------------------------
phase "upgrade to $version"
cp "$chroot_dir/etc/ternd/ternd.toml" "$work/ternd.toml.edited"
ops "apt-get install ./$(basename "$ternd_amd64")"
[[ $(status ternd) == "$version ii " ]] || fail "ternd was not upgraded to $version: '$(status ternd)'"
cmp -s "$work/ternd.toml.edited" "$chroot_dir/etc/ternd/ternd.toml" || fail "upgrade changed the edited /etc/ternd/ternd.toml"
cmp -s "$work/marker" "$chroot_dir/var/lib/ternd/marker" || fail "upgrade lost /var/lib/ternd/marker"
cmp -s "$work/root.pb" "$chroot_dir/etc/ternd/keys/root.pb" || fail "upgrade lost /etc/ternd/keys/root.pb"
ok "upgraded; edited ternd.toml, /etc/ternd/keys/root.pb and /var/lib/ternd kept"
ops "apt-get install ./$(basename "$dev_amd64") ./$(basename "$py_all")"
[[ $(status ternd-dev) == "$version ii " ]] || fail "ternd-dev not installed: '$(status ternd-dev)'"
[[ $(status python3-ternd) == "$version ii " ]] || fail "python3-ternd not installed: '$(status python3-ternd)'"

out=$(in_root ternd --version)
[[ $out == "ternd $version" ]] || fail "ternd --version says '$out', expected 'ternd $version'"
golden=$(in_root ternctl run /usr/share/ternd/models/digits.tern --golden) || fail "ternctl run --golden: $golden"
[[ $golden == "golden check passed"* ]] || fail "ternctl run --golden says '$golden'"
ok "ternd --version: $out; ternctl run --golden: $golden"

start_daemon
observe
# The Python client from python3-ternd (Depends: python3, python3-protobuf).
out=$(in_root python3 -c '
import ternd_client
with ternd_client.Client("/run/ternd/ternd.sock") as c:
    h = c.health()
    print("live", h.live, "ready", h.ready)
' 2>&1) || fail "the Python client of python3-ternd: $out"
[[ $out == "live True ready True" ]] || fail "Python client health says '$out'"
ok "python3-ternd: ternd_client.Client health: $out"

# A C++ program built against ternd-dev with pkg-config, calling the daemon.
cat >"$work/client_check.cc" <<'EOF'
#include <cstdio>

#include "daemon/client/client.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto client = ternd::client::Client::Connect(argv[1]);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", client.status().message());
    return 1;
  }
  auto info = (*client)->ModelInfo();
  if (!info.ok()) {
    std::fprintf(stderr, "model info: %s\n", info.status().message());
    return 1;
  }
  std::printf("%s %llu\n", info->name().c_str(),
              static_cast<unsigned long long>(info->version()));
  return 0;
}
EOF
dev_x=$work/x/$(basename "$dev_amd64" .deb)
flags=$(PKG_CONFIG_PATH="$dev_x/usr/lib/x86_64-linux-gnu/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dev_x" \
        pkg-config --cflags --libs ternd-client) || fail "pkg-config ternd-client from ternd-dev"
# shellcheck disable=SC2086
g++ -o "$work/client_check" "$work/client_check.cc" $flags ||
  fail "a program using the ternd-dev client does not build with: pkg-config --cflags --libs ternd-client ($flags)"
out=$("$work/client_check" "$chroot_dir/run/ternd/ternd.sock") || fail "client built against ternd-dev: $out"
[[ $out == "digits 1" ]] || fail "client built against ternd-dev says '$out', expected 'digits 1'"
ok "C++ client built with pkg-config ternd-client ($flags): ModelInfo $out"
stop_daemon

phase "systemd-analyze on the installed units"
out=$(in_root systemd-analyze verify /lib/systemd/system/ternd.service /lib/systemd/system/ternd.socket \
  /lib/systemd/system/ternd-http.socket 2>&1) ||
  fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify reports: $out"
report=$(in_root systemd-analyze security --offline=yes /lib/systemd/system/ternd.service 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for ternd.service: \([0-9.]*\).*/\1/p' <<<"$report")
[[ -n $exposure ]] || { printf '%s\n' "$report"; fail "no exposure level from systemd-analyze security"; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "installed ternd.service exposure $exposure > 2.0"
ok "verify clean; security --offline=yes exposure $exposure <= 2.0"

phase "enable (no systemd as PID 1 here: links only, no --now)"
in_root useradd --create-home robot
ops "systemctl enable ternd.socket ternd.service"
for link in sockets.target.wants/ternd.socket multi-user.target.wants/ternd.service; do
  [[ -L $chroot_dir/etc/systemd/system/$link ]] || fail "systemctl enable made no /etc/systemd/system/$link"
done
ops "usermod -aG ternd robot"
in_root id -nG robot | grep -qw ternd || fail "usermod did not add robot to the group ternd"
ok "ternd.socket and ternd.service enabled; robot is in the group ternd"

phase "back up and restore the state and the configuration"
ops "tar -C /var/lib --numeric-owner -czpf /root/ternd-state.tar.gz ternd"
ops "tar -C /etc --numeric-owner -czpf /root/ternd-etc.tar.gz ternd"
ops "rm -rf /var/lib/ternd"
[[ ! -e $chroot_dir/var/lib/ternd ]] || fail "rm -rf /var/lib/ternd left it"
rm -f "$chroot_dir/etc/ternd/keys/root.pb"
ops "tar -C /var/lib --numeric-owner -xzpf /root/ternd-state.tar.gz"
ops "tar -C /etc --numeric-owner -xzpf /root/ternd-etc.tar.gz"
ops "chown -R ternd:ternd /var/lib/ternd"
cmp -s "$work/marker" "$chroot_dir/var/lib/ternd/marker" || fail "restore did not bring back /var/lib/ternd/marker"
cmp -s "$work/root.pb" "$chroot_dir/etc/ternd/keys/root.pb" || fail "restore did not bring back /etc/ternd/keys/root.pb"
[[ $(in_root stat -c '%U:%G %a' /var/lib/ternd) == "ternd:ternd 750" ]] ||
  fail "restored /var/lib/ternd is $(in_root stat -c '%U:%G %a' /var/lib/ternd), expected ternd:ternd 750"
ok "restored /var/lib/ternd (ternd:ternd 0750) and /etc/ternd/keys/root.pb"

phase "roll back the package by hand, then update again"
ops "apt-get install --allow-downgrades ./$(basename "$ternd_old")"
[[ $(status ternd) == "$old_version ii " ]] || fail "downgrade did not install $old_version: '$(status ternd)'"
cmp -s "$work/ternd.toml.edited" "$chroot_dir/etc/ternd/ternd.toml" || fail "downgrade changed the edited ternd.toml"
ops "apt-get install ./$(basename "$ternd_amd64")"
[[ $(status ternd) == "$version ii " ]] || fail "update after the rollback did not install $version"
ok "rolled back to $old_version and updated to $version again; configuration kept"

phase "remove (configuration and state stay), then purge (they go)"
ops "apt-get remove ternd"
[[ $(status ternd) == "$version rc " ]] || fail "after remove ternd is '$(status ternd)', expected state rc"
[[ ! -e $chroot_dir/usr/sbin/ternd ]] || fail "remove left /usr/sbin/ternd"
cmp -s "$work/ternd.toml.edited" "$chroot_dir/etc/ternd/ternd.toml" || fail "remove deleted or changed /etc/ternd/ternd.toml"
cmp -s "$work/marker" "$chroot_dir/var/lib/ternd/marker" || fail "remove deleted /var/lib/ternd"
ok "removed; /etc/ternd/ternd.toml and /var/lib/ternd kept"
in_root apt-get remove ternd-dev python3-ternd >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; fail "apt-get remove ternd-dev python3-ternd"; }
[[ ! -e $chroot_dir/usr/lib/python3/dist-packages/ternd_client ]] || fail "removing python3-ternd left ternd_client/ behind"
ops "apt-get purge ternd"
for gone in /etc/ternd /var/lib/ternd /etc/systemd/system/sockets.target.wants/ternd.socket \
            /etc/systemd/system/multi-user.target.wants/ternd.service; do
  [[ ! -e $chroot_dir$gone && ! -L $chroot_dir$gone ]] || fail "purge left $gone"
done
[[ -z $(status ternd) ]] || fail "purge left ternd in the dpkg database: '$(status ternd)'"
ok "purged: /etc/ternd, /var/lib/ternd and the enable links are gone"

phase "every command of docs/operations.md ran (except those marked (systemd))"
# Commands are the lines of its ```sh blocks, without trailing comments.
awk '/^```sh/ { on = 1; next } /^```/ { on = 0 } on' docs/operations.md |
  grep -v '(systemd)' | sed -E 's/[[:space:]]{2,}#.*$//' | grep -v '^[[:space:]]*$' |
  normalize | sort -u >"$work/ops-doc.txt"
sort -u "$work/ops-run.txt" >"$work/ops-ran.txt"
missing=$(comm -23 "$work/ops-doc.txt" "$work/ops-ran.txt")
[[ -z $missing ]] || fail "docs/operations.md commands the CI did not run: $missing"
ok "$(wc -l <"$work/ops-doc.txt") commands of docs/operations.md ran in the fresh root"

# --- systemd as PID 1 -------------------------------------------------------
phase "the same root under systemd as PID 1: two boots with systemd-nspawn (.ci/systemd-boot.sh)"
for m in var/cache/apt/archives dev/pts dev proc; do
  if mountpoint -q "$chroot_dir/$m"; then umount "$chroot_dir/$m"; fi
done
bash .ci/systemd-boot.sh "$chroot_dir" "$ternd_amd64"

# --- arm64 ------------------------------------------------------------------
phase "arm64 package: architecture of the binaries, qemu-aarch64"
arm_x=$work/x/$(basename "$ternd_arm64" .deb)
for b in usr/sbin/ternd usr/bin/ternctl; do
  desc=$(file -b "$arm_x/$b")
  [[ $desc == *"ARM aarch64"* ]] || fail "$b in $(basename "$ternd_arm64") is not an aarch64 binary: $desc"
  machine=$(readelf -h "$arm_x/$b" | sed -n 's/^ *Machine: *//p')
  [[ $machine == AArch64 ]] || fail "$b: readelf Machine is '$machine', expected AArch64"
done
ok "ternd and ternctl: $desc"
qemu=(qemu-aarch64 -L /)
out=$("${qemu[@]}" "$arm_x/usr/sbin/ternd" --version) || fail "arm64 ternd --version under qemu: $out"
[[ $out == "ternd $version" ]] || fail "arm64 ternd --version says '$out'"
out=$("${qemu[@]}" "$arm_x/usr/bin/ternctl" run "$arm_x/usr/share/ternd/models/digits.tern" --golden) ||
  fail "arm64 ternctl run --golden under qemu: $out"
[[ $out == "golden check passed"* ]] || fail "arm64 ternctl run --golden says '$out'"
ok "under qemu-aarch64: ternd --version 'ternd $version'; ternctl: $out"

phase "package checks passed"
