#!/usr/bin/env bash
# The Debian package and the snapshotter's OCI image, from an existing build (nothing compiled).
#
#   tests/package_test.sh deb   BUILD_DIR OUT_DIR   ctest package.deb
#   tests/package_test.sh image BUILD_DIR OUT_DIR   ctest package.image (after package.deb)
#
# deb: scripts/build-deb.sh OUT_DIR BUILD_DIR (dpkg-buildpackage + debhelper, packaging the built
#   binaries of BUILD_DIR); dpkg-deb --info/--contents carry what an operator needs (binaries,
#   unit, conffile, man pages, containerd drop-ins as examples, Depends from dpkg-shlibdeps);
#   lintian reports no error and no warning; apt resolves its Depends as on a fresh Debian 12
#   (apt-get -s install ./deb onto an empty dpkg status); then scripts/build-image.sh unpacks it into a throwaway root with
#   only the libraries of the packages its Depends pulls in, and each binary's --version runs there
#   (chroot) and prints the build's version and commit.
# image: the OCI image scripts/build-image.sh made from that .deb is unpacked with umoci and its
#   entrypoint run with runc the way deploy/kubernetes/daemonset.yaml runs it (privileged,
#   /dev/fuse, host directories for socket, state and keys, host network, the config of the
#   manifest's ConfigMap); the snapshotter's socket appears on the host side and the daemon
#   answers on its admin socket. Before it, lazycrypt-fdholder runs from the same image in a
#   container of its own (unprivileged, the host's /run/lazycrypt) as the lazycrypt-fdholder
#   DaemonSet runs it: its socket appears in /run/lazycrypt/fdholder (0700), `--wait` sees it, the
#   snapshotter uses it (no holder of its own in its container), and it outlives the snapshotter.
# Root only (chroot, runc); exit 77 (skip) otherwise.
set -euo pipefail

mode=${1:?usage: $0 deb|image BUILD_DIR OUT_DIR}
build=$(realpath "${2:?BUILD_DIR}")
out=$(realpath -m "${3:?OUT_DIR}")
src=$(cd "$(dirname "$0")/.." && pwd)

fail() { echo "FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs root (chroot, runc)"; exit 77; fi

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || fail "no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt"
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="$out/lazycrypt_${version}_${arch}.deb"
shipped=(lazycrypt lazycrypt-snapshotter lazycrypt-decoder lazycrypt-fdholder)

# "NAME VERSION (commit abc1234[-dirty])": checks a --version line.
check_version_line() {
  local name=$1 line=$2
  [[ "$line" =~ ^$name\ ([0-9]+\.[0-9]+\.[0-9]+)\ \(commit\ ([0-9a-f]{7,}(-dirty)?|unknown)\)$ ]] ||
    fail "$name --version printed '$line', not '$name <version> (commit <hash>)'"
  [ "${BASH_REMATCH[1]}" = "$version" ] || fail "$name --version says ${BASH_REMATCH[1]}, CMake says $version"
  [ "${BASH_REMATCH[2]}" != unknown ] || fail "$name --version does not know its commit"
}

test_deb() {
  rm -rf "$out"
  mkdir -p "$out"
  # noddebs: the -dbgsym package is `make deb`'s business; compressing it takes a minute.
  DEB_BUILD_OPTIONS=noddebs bash "$src/scripts/build-deb.sh" "$out" "$build" > "$out/build-deb.log" 2>&1 ||
    { tail -40 "$out/build-deb.log"; fail "scripts/build-deb.sh failed (log: $out/build-deb.log)"; }
  [ -f "$deb" ] || fail "no $deb"
  echo "built $deb"

  # --info: name, version from CMake, the library Depends dpkg-shlibdeps computed.
  dpkg-deb --info "$deb"
  [ "$(dpkg-deb -f "$deb" Package)" = lazycrypt ] || fail "Package is not lazycrypt"
  [ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not CMake's $version"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "Architecture is not $arch"
  local depends
  depends=$(dpkg-deb -f "$deb" Depends)
  for lib in libc6 'libstdc\+\+6' libssl3 libfuse3-3 libprotobuf32 'libgrpc\+\+1\.51' libcurl4 libzstd1 fuse3; do
    grep -Eq "(^|, )$lib( |,|$)" <<<"$depends" || fail "Depends lacks $lib: $depends"
  done

  # --contents: what an operator installs.
  local contents
  contents=$(dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\./|/|')
  for path in /usr/bin/lazycrypt /usr/bin/lazycrypt-snapshotter /usr/bin/lazycrypt-decoder \
              /usr/bin/lazycrypt-fdholder \
              /lib/systemd/system/lazycrypt-snapshotter.service /etc/lazycrypt/config.toml \
              /usr/share/man/man1/lazycrypt.1.gz /usr/share/man/man1/lazycrypt-decoder.1.gz \
              /usr/share/man/man8/lazycrypt-snapshotter.8.gz \
              /usr/share/man/man8/lazycrypt-fdholder.8.gz \
              /usr/share/doc/lazycrypt/copyright \
              /usr/share/doc/lazycrypt/README.md.gz \
              /usr/share/doc/lazycrypt/examples/config-snippet.toml \
              /usr/share/doc/lazycrypt/examples/config-snippet-v3.toml \
              /usr/share/doc/lazycrypt/examples/stream-processor.toml \
              /usr/share/doc/lazycrypt/examples/containerd/containerd-1.6.toml \
              /usr/share/doc/lazycrypt/examples/containerd/containerd-1.7.toml \
              /usr/share/doc/lazycrypt/examples/containerd/containerd-2.x.toml \
              /usr/share/doc/lazycrypt/examples/daemonset.yaml \
              /usr/share/doc/lazycrypt/examples/node-keys.yaml \
              /usr/share/doc/lazycrypt/examples/runtimeclass.yaml; do
    grep -qx "$path" <<<"$contents" || fail "the package has no $path"
  done
  # dh_compress gzips documents over 4 KiB (Debian policy 12.3): either form.
  grep -qxE '/usr/share/doc/lazycrypt/CHANGELOG\.md(\.gz)?' <<<"$contents" ||
    fail "the package has no /usr/share/doc/lazycrypt/CHANGELOG.md(.gz)"
  if grep -E '^/usr/bin/.*(test|fake|bench|cri)' <<<"$contents"; then
    fail "a test-only binary is packaged"
  fi
  local control
  control=$(mktemp -d)
  dpkg-deb --control "$deb" "$control"
  grep -qx /etc/lazycrypt/config.toml "$control/conffiles" || fail "/etc/lazycrypt/config.toml is not a conffile"
  # An upgrade restarts the daemon after unpacking and never stops it first: on systemd 252 a
  # stop drops the fd store and with it the lazy mounts of running containers (issue 17).
  if [ -f "$control/preinst" ] && grep -q 'lazycrypt-snapshotter' "$control/preinst" &&
     grep -q 'stop' "$control/preinst"; then
    fail "the preinst stops lazycrypt-snapshotter before an upgrade: $(cat "$control/preinst")"
  fi
  grep -q 'try-restart' "$control/postinst" ||
    fail "the postinst does not restart a running lazycrypt-snapshotter after an upgrade"
  rm -rf "$control"
  # The packaged unit and stream-processor example name the packaged binaries, not /usr/local.
  local unit
  unit=$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./lib/systemd/system/lazycrypt-snapshotter.service)
  grep -qx 'ExecStart=/usr/bin/lazycrypt-snapshotter --config /etc/lazycrypt/config.toml' <<<"$unit" ||
    fail "the packaged unit does not start /usr/bin/lazycrypt-snapshotter: $(grep ExecStart= <<<"$unit")"
  dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/doc/lazycrypt/examples/stream-processor.toml |
    grep -q 'path = "/usr/bin/lazycrypt-decoder"' || fail "the stream-processor example does not name /usr/bin/lazycrypt-decoder"
  # The man pages came from --help: each documents --version.
  for page in man1/lazycrypt.1 man1/lazycrypt-decoder.1 man8/lazycrypt-snapshotter.8 man8/lazycrypt-fdholder.8; do
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "./usr/share/man/$page.gz" | zcat | grep -q -- 'version' ||
      fail "$page does not document --version"
  done

  # lintian: no error, no warning (info tags, e.g. hardening of a build not made by
  # dpkg-buildflags, are printed and allowed). No overrides.
  lintian --fail-on error,warning --info "$deb" || fail "lintian reports errors or warnings"
  echo "lintian: no errors or warnings"

  # apt resolves the Depends as on a fresh Debian 12: a simulated install of the file onto a
  # system with nothing installed (an empty dpkg status; this machine's apt lists as the archive)
  # brings every library package the Depends names.
  : > "$out/empty-dpkg-status"
  apt-get -s -o Debug::NoLocking=1 -o Dir::State::status="$out/empty-dpkg-status" \
    --no-install-recommends install "$deb" > "$out/apt-simulate.log" 2>&1 ||
    { cat "$out/apt-simulate.log"; fail "apt-get -s install $deb onto an empty system failed (apt lists present? apt-get update)"; }
  grep -q '^Inst lazycrypt ' "$out/apt-simulate.log" ||
    { cat "$out/apt-simulate.log"; fail "apt-get -s install did not install lazycrypt"; }
  local pkg
  for pkg in $(tr ',' '\n' <<<"$depends" | sed 's/(.*)//; s/|.*//; s/ //g'); do
    grep -q "^Inst $pkg " "$out/apt-simulate.log" || fail "apt would not install $pkg on a fresh system"
  done
  echo "apt-get -s install onto an empty system: $(grep -c '^Inst ' "$out/apt-simulate.log") packages, Depends resolve"
  grep -q "packaging the existing build in $build; nothing to compile" "$out/build-deb.log" ||
    fail "the package was not made from $build without compiling"

  # A throwaway root holding only the package and the libraries of its Depends.
  bash "$src/scripts/build-image.sh" "$deb" "$out/image" > "$out/build-image.log" 2>&1 ||
    { tail -20 "$out/build-image.log"; fail "scripts/build-image.sh failed"; }
  for b in "${shipped[@]}"; do
    local line
    line=$(chroot "$out/image/rootfs" "/usr/bin/$b" --version) || fail "$b --version failed in the throwaway root"
    echo "installed: $line"
    check_version_line "$b" "$line"
  done
  echo "PASS package.deb"
}

test_image() {
  local layout="$out/image/oci"
  [ -d "$layout" ] || fail "no image at $layout (package.deb makes it)"
  command -v runc >/dev/null || fail "runc is missing (scripts/setup.sh installs it)"
  # Global: the EXIT trap uses them after this function returns.
  ctd_pid=""
  tmp=$(mktemp -d /tmp/lazycrypt-image-test.XXXXXX)
  id="lazycrypt-image-test-$$"
  holder_id="lazycrypt-image-test-holder-$$"
  cleanup() {
    runc kill "$id" KILL >/dev/null 2>&1 || true
    runc delete --force "$id" >/dev/null 2>&1 || true
    runc kill "$holder_id" KILL >/dev/null 2>&1 || true
    runc delete --force "$holder_id" >/dev/null 2>&1 || true
    rm -rf "$tmp"
  }
  trap cleanup EXIT
  umoci unpack --image "$layout:$version" "$tmp/bundle" >/dev/null
  mkdir -p "$tmp/host/run" "$tmp/host/state" "$tmp/host/keys" "$tmp/host/config" "$tmp/holder"
  # The config the DaemonSet's ConfigMap gives the snapshotter (its config.toml block).
  awk '/^  config.toml: \|$/ {on = 1; next}
       on && /^    / {print substr($0, 5); next}
       on && /^$/ {print ""; next}
       on {exit}' "$src/deploy/kubernetes/daemonset.yaml" > "$tmp/host/config/config.toml"
  grep -q '^holder_socket = "/run/lazycrypt/fdholder/fdholder.sock"$' "$tmp/host/config/config.toml" ||
    { cat "$tmp/host/config/config.toml"; fail "no [restart] holder_socket in the DaemonSet's ConfigMap"; }
  # The lazycrypt-fdholder DaemonSet's pod: the same image's root (read-only), no capabilities,
  # the host's /run/lazycrypt. It creates fdholder/ there 0700 and listens on the socket.
  jq --arg root "$tmp/bundle/rootfs" --arg run "$tmp/host/run" '
    .process.terminal = false
    | .process.args = ["/usr/bin/lazycrypt-fdholder", "--socket", "/run/lazycrypt/fdholder/fdholder.sock", "--idle-exit", "0"]
    | .process.capabilities = {bounding: [], effective: [], permitted: [], inheritable: [], ambient: []}
    | .process.noNewPrivileges = true
    | .root = {path: $root, readonly: true}
    | .mounts += [{destination: "/run/lazycrypt", type: "bind", source: $run, options: ["rbind", "rw"]}]
  ' "$tmp/bundle/config.json" > "$tmp/holder/config.json"
  runc run --detach --bundle "$tmp/holder" "$holder_id" < /dev/null > "$tmp/holder.log" 2>&1 ||
    { cat "$tmp/holder.log"; fail "runc could not start lazycrypt-fdholder from the image"; }
  local holder_socket="$tmp/host/run/fdholder/fdholder.sock"
  for _ in $(seq 1 50); do
    [ -S "$holder_socket" ] && break
    runc state "$holder_id" 2>/dev/null | jq -e '.status == "running"' >/dev/null ||
      { cat "$tmp/holder.log"; fail "lazycrypt-fdholder exited in its container"; }
    sleep 0.2
  done
  [ -S "$holder_socket" ] || { cat "$tmp/holder.log"; fail "no holder socket at $holder_socket after 10 s"; }
  [ "$(stat -c %a "$tmp/host/run/fdholder")" = 700 ] ||
    fail "the holder's directory is mode $(stat -c %a "$tmp/host/run/fdholder"), not 0700"
  # What the snapshotter pod's init container runs.
  timeout 10 "$tmp/bundle/rootfs/usr/bin/lazycrypt-fdholder" --socket "$holder_socket" --wait ||
    fail "lazycrypt-fdholder --wait did not see the holder"
  echo "holder socket: $holder_socket"
  # The DaemonSet's pod: privileged (every capability, /dev/fuse), host network, the socket,
  # state (shared propagation) and key directories from the host.
  local caps
  caps=$(sed -n 's/^\s*\(CAP_[A-Z_]*\).*/\1/p' /usr/include/linux/capability.h 2>/dev/null | sort -u | jq -R . | jq -s .)
  [ "$(jq length <<<"$caps")" -gt 30 ] ||
    caps='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_KILL","CAP_SETGID","CAP_SETUID","CAP_SYS_ADMIN","CAP_SYS_CHROOT","CAP_MKNOD","CAP_NET_BIND_SERVICE","CAP_AUDIT_WRITE"]'
  jq --argjson caps "$caps" --arg run "$tmp/host/run" --arg state "$tmp/host/state" --arg keys "$tmp/host/keys" \
     --arg config "$tmp/host/config" '
    .process.terminal = false
    | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps, inheritable: $caps, ambient: $caps}
    | .process.noNewPrivileges = false
    | .linux.namespaces |= map(select(.type != "network"))
    | .linux.devices += [{path: "/dev/fuse", type: "c", major: 10, minor: 229, fileMode: 438, uid: 0, gid: 0}]
    | .linux.resources.devices = [{allow: true, access: "rwm"}]
    | .mounts += [
        {destination: "/run/lazycrypt", type: "bind", source: $run, options: ["rbind", "rw"]},
        {destination: "/var/lib/lazycrypt", type: "bind", source: $state, options: ["rbind", "rw", "rshared"]},
        {destination: "/etc/containerd/ocicrypt/keys", type: "bind", source: $keys, options: ["rbind", "ro"]},
        {destination: "/etc/lazycrypt", type: "bind", source: $config, options: ["rbind", "ro"]}]
  ' "$tmp/bundle/config.json" > "$tmp/config.json"
  mv "$tmp/config.json" "$tmp/bundle/config.json"
  jq -r '.process.args | join(" ")' "$tmp/bundle/config.json"
  # The shared propagation needs a shared source: make the state directory its own mount point.
  mount --bind "$tmp/host/state" "$tmp/host/state"
  mount --make-rshared "$tmp/host/state"
  cleanup() {
    if [ -n "$ctd_pid" ]; then kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null || true; fi
    runc kill "$id" KILL >/dev/null 2>&1 || true
    runc delete --force "$id" >/dev/null 2>&1 || true
    runc kill "$holder_id" KILL >/dev/null 2>&1 || true
    runc delete --force "$holder_id" >/dev/null 2>&1 || true
    umount -l "$tmp/host/state" 2>/dev/null || true
    rm -rf "$tmp"
  }

  runc run --detach --bundle "$tmp/bundle" "$id" < /dev/null > "$tmp/daemon.log" 2>&1 ||
    { cat "$tmp/daemon.log"; fail "runc could not start the image's entrypoint"; }
  local socket="$tmp/host/run/snapshotter.sock"
  for _ in $(seq 1 150); do
    [ -S "$socket" ] && [ -S "$socket.admin" ] && break
    if ! runc state "$id" 2>/dev/null | jq -e '.status == "running"' >/dev/null; then
      cat "$tmp/daemon.log"; fail "the snapshotter exited in the container"
    fi
    sleep 0.2
  done
  [ -S "$socket" ] || { cat "$tmp/daemon.log"; fail "no socket at $socket after 30 s"; }
  [ -S "$socket.admin" ] || { cat "$tmp/daemon.log"; fail "no admin socket at $socket.admin after 30 s"; }
  echo "socket: $socket"
  # The daemon answers (admin socket, from the host side of the hostPath, with the packaged
  # client): an empty node has nothing to purge.
  local answer
  answer=$("$out/image/rootfs/usr/bin/lazycrypt-snapshotter" purge --address "$socket" --json) ||
    { cat "$tmp/daemon.log"; fail "the daemon in the container did not answer on its admin socket"; }
  echo "admin answer: $answer"
  jq -e '.ok == true' <<<"$answer" >/dev/null || fail "admin answer is not ok: $answer"
  grep -q 'ready' "$tmp/daemon.log" || { cat "$tmp/daemon.log"; fail "the daemon did not log that it is ready"; }
  # It keeps its FUSE fds in the holder's container, and started no holder in its own.
  grep -q 'kept in the holder fd store' "$tmp/daemon.log" ||
    { cat "$tmp/daemon.log"; fail "the snapshotter does not use the fd holder"; }
  local pid
  for pid in $(runc ps --format json "$id" | jq -r '.[]'); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != lazycrypt-fdhol ] ||
      fail "the snapshotter started a holder in its own container (pid $pid)"
  done

  # containerd on the host, with the proxy plugin of the containerd drop-ins, reaches the daemon
  # in the container through the hostPath socket: a snapshot prepared, listed and removed (each
  # a call on the Snapshots gRPC service in the container).
  local ctd="$tmp/containerd"
  mkdir -p "$ctd"
  cat > "$ctd/config.toml" <<TOML
version = 2
root = "$ctd/root"
state = "$ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd/containerd.sock"
[ttrpc]
  address = "$ctd/containerd.sock.ttrpc"
[debug]
  address = "$ctd/debug.sock"
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.lazycrypt]
    type = "snapshot"
    address = "$socket"
TOML
  containerd --config "$ctd/config.toml" > "$ctd/containerd.log" 2>&1 &
  ctd_pid=$!
  for _ in $(seq 1 100); do
    ctr --address "$ctd/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  local ctr_=(ctr --address "$ctd/containerd.sock" --namespace lazycrypt-image-test snapshots --snapshotter lazycrypt)
  "${ctr_[@]}" prepare image-test-snapshot > /dev/null ||
    { cat "$ctd/containerd.log" "$tmp/daemon.log"; fail "containerd could not prepare a snapshot on the daemon in the container"; }
  "${ctr_[@]}" ls | grep -q image-test-snapshot || fail "ctr snapshots ls does not list the prepared snapshot"
  "${ctr_[@]}" rm image-test-snapshot || fail "containerd could not remove the snapshot"
  echo "containerd -> lazycrypt-snapshotter in the container: prepare, ls, rm answered"
  kill "$ctd_pid"; wait "$ctd_pid" 2>/dev/null || true
  ctd_pid=""
  # SIGTERM (what the kubelet sends) stops it cleanly.
  runc kill "$id" TERM
  for _ in $(seq 1 100); do
    runc state "$id" 2>/dev/null | jq -e '.status == "stopped"' >/dev/null && break
    sleep 0.2
  done
  runc state "$id" | jq -e '.status == "stopped"' >/dev/null || fail "the snapshotter did not stop on SIGTERM"
  cat "$tmp/daemon.log"
  # The holder outlives the snapshotter's container, and stops on SIGTERM (exit 0, socket gone).
  runc state "$holder_id" | jq -e '.status == "running"' >/dev/null ||
    { cat "$tmp/holder.log"; fail "the holder did not outlive the snapshotter"; }
  runc kill "$holder_id" TERM
  for _ in $(seq 1 50); do
    runc state "$holder_id" 2>/dev/null | jq -e '.status == "stopped"' >/dev/null && break
    sleep 0.2
  done
  runc state "$holder_id" | jq -e '.status == "stopped"' >/dev/null || fail "the holder did not stop on SIGTERM"
  [ ! -e "$holder_socket" ] || fail "the holder left its socket behind"
  echo "lazycrypt-fdholder from the image: served $holder_socket, outlived the snapshotter, stopped on SIGTERM"
  echo "PASS package.image"
}

case "$mode" in
  deb) test_deb ;;
  image) test_image ;;
  *) fail "unknown mode $mode" ;;
esac
