#!/usr/bin/env bash
# The lazycrypt demo: lazy start of an encrypted image under containerd, on this machine, offline.
#   1. builds an image offline (busybox + a DEMO_LAYER_MIB MiB layer of application data);
#   2. starts its own docker-registry, lazycrypt-snapshotter and containerd (own config and dirs
#      in a temporary directory, never the system's), each killed by PID on exit; the containerd
#      is 2.x by default: Debian unstable's package, unpacked once into BUILD_DIR/demo/containerd-2.x
#      (private apt config, `apt-get download`, `dpkg -x`; nothing installed, the system's
#      containerd neither used nor touched);
#   3. encrypts the image into the registry with `lazycrypt encrypt`;
#   4. lazily pulls it into containerd with `lazycrypt pull` and runs it: `ctr run` prints a file
#      from the encrypted layer; prints the start time and the bytes fetched from the registry
#      against the image's size;
#   5. does the same start the eager way (download everything, decrypt, unpack, run) to compare.
#   usage: scripts/demo.sh BUILD_DIR        (run by `make demo`; needs root for containerd)
# Knobs: DEMO_LAYER_MIB (default 256), DEMO_KEEP=1 (keep the work dir), DEMO_CONTAINERD: 2 (the
# default, as above), system (the containerd on PATH, e.g. Debian 12's 1.6), or the path of a
# containerd binary (its ctr and containerd-shim-runc-v2 beside it).
# Exits non-zero on any failure.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
LC_LOG_PREFIX=demo
bin=$build/bin
layer_mib=${DEMO_LAYER_MIB:-256}
for b in lazycrypt lazycrypt-snapshotter; do
  [ -x "$bin/$b" ] || { echo "demo: $bin/$b not found; build first (make)" >&2; exit 1; }
done
for tool in umoci openssl jq tar runc docker-registry busybox; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing (make setup)" >&2; exit 1; }
done
containerd_choice=${DEMO_CONTAINERD:-2}
case $containerd_choice in
  system)
    for tool in containerd ctr; do
      command -v "$tool" >/dev/null || { echo "demo: $tool is missing (make setup)" >&2; exit 1; }
    done
    containerd_bin=$(command -v containerd) ;;
  2) containerd_bin="" ;;  # fetched below
  *)
    [ -x "$containerd_choice" ] || { echo "demo: DEMO_CONTAINERD=$containerd_choice is not an executable" >&2; exit 1; }
    containerd_bin=$(cd "$(dirname "$containerd_choice")" && pwd)/$(basename "$containerd_choice") ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: containerd, FUSE and overlayfs need root; run it as root (sudo make demo)," >&2
  echo "      or try the CLI-only demo without root: make demo-cli" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-demo-XXXXXX")
chmod 0700 "$work"
pids=()
cleanup() {
  local status=$?
  kill_ctr_tasks "$work/containerd/containerd.sock" demo
  [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
  # Whatever is still mounted under the work dir (container rootfs, layers), deepest first.
  umount_under "$work"
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "demo: kept $work"
  else
    rm -rf "$work"
  fi
  exit $status
}
trap cleanup EXIT

if [ -t 1 ]; then
  bold=$'\e[1m' dim=$'\e[2m' green=$'\e[32m' red=$'\e[31m' reset=$'\e[0m'
else
  bold="" dim="" green="" red="" reset=""
fi
step_no=0

# step "title" [--show "shown command"] command...: runs it, shows its output indented and its
# duration; stops the demo on failure.
step() {
  local title=$1 shown=""
  shift
  if [ "$1" = "--show" ]; then
    shown=$2
    shift 2
  else
    shown=$(printf '%q ' "$@")
  fi
  step_no=$((step_no + 1))
  printf '\n%s%d. %s%s\n' "$bold" "$step_no" "$title" "$reset"
  printf '%s   $ %s%s\n' "$dim" "$(sed "s|$work/||g; s|$bin/||g" <<<"$shown")" "$reset"
  local start end status=0
  start=$(now)
  "$@" >"$work/step.out" 2>&1 || status=$?
  end=$(now)
  sed "s|$work/||g; s/^/   /" "$work/step.out" | head -40
  if [ "$status" -ne 0 ]; then
    printf '%s   failed (exit %d)%s\n' "$red" "$status" "$reset"
    exit "$status"
  fi
  printf '%s   done in %s s%s\n' "$green" "$(elapsed "$start" "$end")" "$reset"
}

printf '%slazycrypt demo%s: lazy start of an encrypted image under containerd (work dir %s)\n' \
  "$bold" "$reset" "$work"

# ---- the image ---------------------------------------------------------------------------------
make_image() {
  bash "$repo/tests/data/make-busybox-image.sh" "$work/image" >/dev/null
  mkdir -p "$work/app-root/app/assets"
  echo "Hello from inside an encrypted layer: this line was fetched, authenticated and decrypted on demand." \
    >"$work/app-root/app/hello.txt"
  head -c "$((layer_mib * 1048576 * 3 / 4))" /dev/urandom >"$work/app-root/app/model.bin"
  local i
  for i in $(seq 1 "$((layer_mib / 4))"); do
    # Compressible assets: text-like data.
    yes "asset $i: lazycrypt serves each chunk of this file only when it is read" |
      head -c 1048576 >"$work/app-root/app/assets/asset-$i.txt"
  done
  tar --numeric-owner -C "$work/app-root" -cf "$work/app.tar" app
  umoci raw add-layer --image "$work/image:latest" "$work/app.tar"
  rm -f "$work/app.tar"
  du -sh --apparent-size "$work/app-root/app" | awk '{ print "application layer: " $1 " (model.bin, " '"$((layer_mib / 4))"' " assets, hello.txt)" }'
}
step "Build an image offline: busybox + a ${layer_mib} MiB application layer (umoci)" \
  --show "tests/data/make-busybox-image.sh image; umoci raw add-layer --image image:latest app.tar" \
  make_image

make_keys() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$work/node.pem" 2>/dev/null
  openssl pkey -in "$work/node.pem" -pubout -out "$work/node.pub.pem"
  mkdir -p "$work/keys"
  install -m 0600 "$work/node.pem" "$work/keys/node.pem"
  echo "node key: keys/node.pem (the node's key directory, as imgcrypt's); recipient: node.pub.pem"
}
step "Generate the node's key pair (RSA-3072)" \
  --show "openssl genpkey -algorithm RSA ...; openssl pkey -pubout ..." make_keys

# ---- the daemons ---------------------------------------------------------------------------------
containerd_source=""
fetch_containerd() {
  local dir=$build/demo/containerd-2.x
  containerd_bin=$(bash "$repo/tests/data/fetch-debian-package.sh" sid "$dir" containerd \
    usr/bin/containerd) || {
    echo "the containerd 2.x package could not be fetched from deb.debian.org (sid); offline," >&2
    echo "run the demo on the system's containerd: DEMO_CONTAINERD=system make demo" >&2
    return 1
  }
  local deb
  deb=$(basename "$(ls "$dir"/debs/containerd_*.deb 2>/dev/null | head -1)")
  containerd_source="Debian sid's ${deb:-containerd package}, unpacked into ${dir#"$build"/} (nothing installed)"
  echo "containerd: $containerd_bin"
  echo "from $containerd_source"
}
if [ -z "$containerd_bin" ]; then
  step "Fetch containerd 2.x (Debian unstable's package) into the demo's own directory" \
    --show "tests/data/fetch-debian-package.sh sid $build/demo/containerd-2.x containerd usr/bin/containerd" \
    fetch_containerd
  # step runs it in this shell: containerd_bin and containerd_source are set.
fi
# This containerd's ctr and shim (beside it) go first in PATH: the demo's `ctr` is its client.
[ "$containerd_choice" = system ] || export PATH="$(dirname "$containerd_bin"):$PATH"
containerd_version=$("$containerd_bin" --version | awk '{ print $3 }')
containerd_config_version=2
[ "$(containerd_major "$containerd_bin")" -ge 2 ] && containerd_config_version=3

registry_port=$(free_port)
registry=127.0.0.1:$registry_port
start_registry() {
  mkdir -p "$work/registry"
  write_registry_config "$work/registry/config.yml" "$work/registry/storage" "$registry"
  docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
  pids+=($!)
  wait_for "the registry" 20 curl -sf "http://$registry/v2/"
  echo "docker-registry on http://$registry (pid ${pids[-1]})"
}
step "Start a local registry" --show "docker-registry serve registry/config.yml" start_registry

start_snapshotter() {
  write_hosts_toml "$work/hosts" "$registry"
  write_snapshotter_config "$work/snapshotter.toml" "$work/run/snapshotter.sock" \
    "$work/snapshotter" "$work/keys" "$work/hosts"
  "$bin/lazycrypt-snapshotter" --config "$work/snapshotter.toml" >"$work/snapshotter.log" 2>&1 &
  pids+=($!)
  wait_for "lazycrypt-snapshotter" 30 grep -q "lazycrypt-snapshotter ready" "$work/snapshotter.log"
  echo "lazycrypt-snapshotter on run/snapshotter.sock (pid ${pids[-1]}), state in snapshotter/"
}
step "Start lazycrypt-snapshotter (node keys: keys/, registry hosts: hosts/)" \
  --show "lazycrypt-snapshotter --config snapshotter.toml" start_snapshotter

ctd_sock=$work/containerd/containerd.sock
start_containerd() {
  mkdir -p "$work/containerd"
  write_containerd_config "$work/containerd/config.toml" "$work/containerd" "[proxy_plugins]
  [proxy_plugins.lazycrypt]
    type = \"snapshot\"
    address = \"$work/run/snapshotter.sock\"" "$containerd_config_version"
  "$containerd_bin" --config "$work/containerd/config.toml" >"$work/containerd/log" 2>&1 &
  pids+=($!)
  wait_for "containerd" 30 ctr -a "$ctd_sock" version
  echo "containerd $containerd_version (config version $containerd_config_version) on containerd/containerd.sock (pid ${pids[-1]}), proxy snapshotter 'lazycrypt'"
}
step "Start containerd with lazycrypt as a proxy snapshotter (its own config and dirs)" \
  --show "$(sed "s|^$build/||" <<<"$containerd_bin") --config containerd/config.toml" start_containerd

# ---- encrypt, lazy start -------------------------------------------------------------------------
ref=$registry/demo/app:encrypted
step "Encrypt every layer in the lazycrypt format into the registry" \
  "$bin/lazycrypt" encrypt --plain-http --recipient "jwe:$work/node.pub.pem" \
  "oci:$work/image:latest" "docker://$ref"

image_bytes=$("$bin/lazycrypt" inspect --plain-http --json "docker://$ref" |
  jq '[.layers[].size] | add')


lazy_start() {
  local before start pulled first
  before=$(registry_blob_bytes "$work/registry/log")
  start=$(now)
  "$bin/lazycrypt" pull --address "$ctd_sock" --namespace demo --snapshotter lazycrypt \
    --plain-http "$ref"
  pulled=$(now)
  ctr -a "$ctd_sock" -n demo run --rm --snapshotter lazycrypt "$ref" demo-lazy \
    /bin/cat /app/hello.txt | tee "$work/lazy.out"
  first=$(now)
  lazy_pull_s=$(elapsed "$start" "$pulled")
  lazy_total_s=$(elapsed "$start" "$first")
  lazy_fetched=$(($(registry_blob_bytes "$work/registry/log") - before))
  echo "pull ${lazy_pull_s} s, pull + run to first output ${lazy_total_s} s"
  echo "fetched from the registry: $(mib "$lazy_fetched") of the image's $(mib "$image_bytes") of layers"
  printf 'lazy_pull_s=%s\nlazy_total_s=%s\nlazy_fetched=%s\n' "$lazy_pull_s" "$lazy_total_s" \
    "$lazy_fetched" >"$work/lazy.vars"
}
step "Pull it lazily through the snapshotter and run it (ctr run prints a file from the encrypted layer)" \
  --show "lazycrypt pull --snapshotter lazycrypt $ref && ctr run --rm --snapshotter lazycrypt $ref demo-lazy /bin/cat /app/hello.txt" \
  lazy_start
# shellcheck disable=SC1091
source "$work/lazy.vars"
grep -q "Hello from inside an encrypted layer" "$work/lazy.out"

show_mounts() {
  grep "mounted layer" "$work/snapshotter.log" | sed 's/^[^ ]* [^ ]* //' | cut -c1-160
  echo "FUSE mounts of layers: $(grep ' - fuse\.lazycrypt ' /proc/self/mountinfo |
    awk -v p="$work/" 'index($5, p) == 1' | wc -l)"
}
step "What the snapshotter did: one FUSE mount per encrypted layer, nothing downloaded whole" \
  --show "grep 'mounted layer' snapshotter.log" show_mounts

read_more() {
  ctr -a "$ctd_sock" -n demo run --rm --snapshotter lazycrypt "$ref" demo-read \
    /bin/sh -c 'head -c 4096 /app/model.bin | sha256sum; wc -c /app/assets/asset-1.txt'
  echo "expected sha256 of the first 4 KiB: $(head -c 4096 "$work/app-root/app/model.bin" | sha256sum | cut -d' ' -f1)"
}
step "Read a little more: 4 KiB of model.bin and one asset, in a second container sharing the layers" \
  --show "ctr run --rm --snapshotter lazycrypt $ref demo-read sh -c 'head -c 4096 /app/model.bin | sha256sum; ...'" \
  read_more

no_plaintext() {
  local marker="this line was fetched, authenticated and decrypted on demand"
  if grep -rqsF --devices=skip -D skip "$marker" "$work/snapshotter" --exclude-dir=fs 2>/dev/null; then
    echo "plaintext found in the snapshotter's state"
    return 1
  fi
  echo "the text of hello.txt appears nowhere in the snapshotter's state and chunk cache (ciphertext only)"
}
step "Check: no plaintext on the node's disk" --show "grep -r '<hello.txt text>' snapshotter/" no_plaintext

# ---- the eager path, for comparison --------------------------------------------------------------
eager_start() {
  local before start first
  before=$(registry_blob_bytes "$work/registry/log")
  start=$(now)
  "$bin/lazycrypt" decrypt --plain-http --key "$work/node.pem" "docker://$ref" \
    "oci:$work/eager:latest" >/dev/null
  tar -C "$work/eager" -cf "$work/eager.tar" .
  ctr -a "$ctd_sock" -n eager images import --snapshotter overlayfs --base-name demo/app \
    "$work/eager.tar" >/dev/null
  ctr -a "$ctd_sock" -n eager run --rm --snapshotter overlayfs demo/app:latest demo-eager \
    /bin/cat /app/hello.txt
  first=$(now)
  eager_total_s=$(elapsed "$start" "$first")
  eager_fetched=$(($(registry_blob_bytes "$work/registry/log") - before))
  echo "download + decrypt + unpack + run to first output: ${eager_total_s} s, fetched $(mib "$eager_fetched")"
  printf 'eager_total_s=%s\neager_fetched=%s\n' "$eager_total_s" "$eager_fetched" >"$work/eager.vars"
}
step "The same start the eager way: fetch and decrypt every layer, unpack, run (overlayfs)" \
  --show "lazycrypt decrypt --key node.pem docker://$ref oci:eager && ctr images import ... && ctr run ..." \
  eager_start
# shellcheck disable=SC1091
source "$work/eager.vars"

printf '\n%sResult%s (image: %s of encrypted layers; containerd %s)\n' "$bold" "$reset" \
  "$(mib "$image_bytes")" "$containerd_version"
printf '   lazy  (lazycrypt-snapshotter): first output after %6s s, fetched %s (%s %% of the layers)\n' \
  "$lazy_total_s" "$(mib "$lazy_fetched")" \
  "$(awk -v a="$lazy_fetched" -v b="$image_bytes" 'BEGIN { printf "%.1f", 100 * a / b }')"
printf '   eager (decrypt, unpack, run):    first output after %6s s, fetched %s\n' \
  "$eager_total_s" "$(mib "$eager_fetched")"
printf '   %slazy start is %sx sooner%s (one run on loopback; bench/ measures it properly)\n' \
  "$green$bold" "$(awk -v a="$eager_total_s" -v b="$lazy_total_s" 'BEGIN { printf "%.1f", a / b }')" "$reset"
