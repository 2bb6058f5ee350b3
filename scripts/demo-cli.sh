#!/usr/bin/env bash
# The lazycrypt demo, offline: build a busybox image, encrypt it for an RSA and an EC key, inspect
# it, read one file lazily out of the encrypted layer, decrypt it back and check that the diff_ids
# (the SHA-256 of each layer's tar) are unchanged.
#   usage: scripts/demo-cli.sh BUILD_DIR    (run by `make demo-cli`; no root, no daemons)
# Exits non-zero on any failure. Works in a temporary directory that it removes.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
lazycrypt=$build/bin/lazycrypt
if [ ! -x "$lazycrypt" ]; then
  echo "demo: $lazycrypt not found; build first (make)" >&2
  exit 1
fi
for tool in umoci openssl jq tar; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing (make setup)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-demo-XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -t 1 ]; then
  bold=$'\e[1m' dim=$'\e[2m' green=$'\e[32m' red=$'\e[31m' reset=$'\e[0m'
else
  bold="" dim="" green="" red="" reset=""
fi
step_no=0
total_start=$(date +%s.%N)

# step "title" [--show "shown command"] command...: runs the command, shows it (or the --show
# text), its output indented, and its duration.
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
  printf '%s   $ %s%s\n' "$dim" "$(sed "s|$work/||g; s|$build/bin/||g" <<<"$shown")" "$reset"
  local start end status=0
  start=$(date +%s.%N)
  "$@" >"$work/step.out" 2>&1 || status=$?
  end=$(date +%s.%N)
  sed "s|$work/||g; s/^/   /" "$work/step.out"
  if [ "$status" -ne 0 ]; then
    printf '%s   failed (exit %d)%s\n' "$red" "$status" "$reset"
    exit "$status"
  fi
  printf '%s   done in %s s%s\n' "$green" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')" "$reset"
}

check() {  # check "what" condition...
  local what=$1
  shift
  if "$@"; then
    printf '   %s✓%s %s\n' "$green" "$reset" "$what"
  else
    printf '   %s✗ %s%s\n' "$red" "$what" "$reset"
    exit 1
  fi
}

diff_ids() {  # the rootfs.diff_ids of an OCI layout's "latest" image, one per line
  local dir=$1 manifest config
  manifest=$(jq -r '.manifests[] | select(.annotations."org.opencontainers.image.ref.name"=="latest") | .digest' \
    "$dir/index.json" | cut -d: -f2)
  config=$(jq -r '.config.digest' "$dir/blobs/sha256/$manifest" | cut -d: -f2)
  jq -r '.rootfs.diff_ids[]' "$dir/blobs/sha256/$config"
}

layer_digests() {  # the layer digests of an OCI layout's "latest" image
  local dir=$1 manifest
  manifest=$(jq -r '.manifests[] | select(.annotations."org.opencontainers.image.ref.name"=="latest") | .digest' \
    "$dir/index.json" | cut -d: -f2)
  jq -r '.layers[].digest' "$dir/blobs/sha256/$manifest"
}

printf '%slazycrypt demo%s  (build: %s, work dir: %s)\n' "$bold" "$reset" "$build" "$work"

step "Build the busybox sample image offline (umoci, busybox-static)" \
  --show "tests/data/make-busybox-image.sh busybox" \
  bash "$repo/tests/data/make-busybox-image.sh" "$work/busybox"
printf '   image oci:busybox:latest, layer %s\n' "$(layer_digests "$work/busybox" | cut -c1-19)"

make_keys() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$work/rsa.pem" 2>/dev/null
  openssl pkey -in "$work/rsa.pem" -pubout -out "$work/rsa.pub.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.pem"
  openssl pkey -in "$work/ec.pem" -pubout -out "$work/ec.pub.pem"
  (cd "$work" && ls -1 ./*.pem | cut -c3-)
}
step "Generate an RSA-3072 and an EC P-256 key pair (openssl)" \
  --show "openssl genpkey -algorithm RSA|EC ...; openssl pkey -pubout ..." make_keys

step "Encrypt it in the lazycrypt format for both keys (256 KiB chunks)" \
  "$lazycrypt" encrypt --recipient "jwe:$work/rsa.pub.pem" --recipient "jwe:$work/ec.pub.pem" \
  --chunk-size 256KiB "oci:$work/busybox" "oci:$work/encrypted"

step "Inspect it without a key: media types, cipher, recipients, TOC digest" \
  "$lazycrypt" inspect "oci:$work/encrypted"

step "Inspect it with the EC key: the TOC is opened (footer + sealed TOC read only)" \
  "$lazycrypt" inspect --key "$work/ec.pem" "oci:$work/encrypted"
info=$("$lazycrypt" inspect --json --key "$work/ec.pem" "oci:$work/encrypted")
files=$(jq '.layers[0].fileCount' <<<"$info")
chunks=$(jq '.layers[0].chunkCount' <<<"$info")
check "the sealed TOC lists $files files in $chunks chunks" test "$files" -gt 250 -a "$chunks" -gt 4

list_some() {
  "$lazycrypt" layer ls --long --key "$work/rsa.pem" "oci:$work/encrypted" >"$work/ls.txt"
  head -8 "$work/ls.txt"
  echo "... ($(wc -l <"$work/ls.txt") entries in all)"
}
step "List the first files of the encrypted layer" \
  --show "lazycrypt layer ls --long --key rsa.pem oci:encrypted | head -8" list_some

step "Read /etc/os-release lazily: only the chunk that holds it is fetched and decrypted" \
  "$lazycrypt" layer cat --stats --key "$work/rsa.pem" "oci:$work/encrypted" /etc/os-release

cat_busybox() {
  "$lazycrypt" layer cat --stats --key "$work/ec.pem" "oci:$work/encrypted" bin/busybox >"$work/busybox.out"
  cmp "$work/busybox.out" "$(command -v busybox)"
  echo "identical to $(command -v busybox)"
}
step "Read bin/busybox lazily and compare it with the original binary" \
  --show "lazycrypt layer cat --stats --key ec.pem oci:encrypted bin/busybox > busybox.out; cmp ..." \
  cat_busybox

# Decrypted lazycrypt layers are tar+zstd by default; without the zstd CLI to check them, ask for
# tar+gzip instead.
compression=zstd
command -v zstd >/dev/null || compression=gzip
step "Decrypt the image back (eager: every chunk and the TOC authenticated; tar+$compression layers)" \
  "$lazycrypt" decrypt --key "$work/rsa.pem" --layer-compression "$compression" \
  "oci:$work/encrypted" "oci:$work/decrypted"

printf '\n%s%d. Check that the decrypted image is the original%s\n' "$bold" $((step_no + 1)) "$reset"
original_ids=$(diff_ids "$work/busybox")
decrypted_ids=$(diff_ids "$work/decrypted")
printf '   original  diff_ids: %s\n   decrypted diff_ids: %s\n' "$original_ids" "$decrypted_ids"
check "the config's diff_ids are unchanged" test "$original_ids" = "$decrypted_ids"
layer=$(layer_digests "$work/decrypted" | head -1 | cut -d: -f2)
if [ "$compression" = zstd ]; then
  actual=sha256:$(zstd -q -dc "$work/decrypted/blobs/sha256/$layer" | sha256sum | cut -d' ' -f1)
else
  actual=sha256:$(gzip -dc "$work/decrypted/blobs/sha256/$layer" | sha256sum | cut -d' ' -f1)
fi
check "the decrypted tar+$compression layer decompresses to exactly the diff_id" \
  test "$actual" = "$(head -1 <<<"$original_ids")"

if "$lazycrypt" decrypt --key "$work/busybox/oci-layout" "oci:$work/encrypted" "oci:$work/x" >/dev/null 2>&1; then
  check "a bad key is refused" false
fi
check "a bad key is refused and nothing is written" test ! -e "$work/x"

total_end=$(date +%s.%N)
printf '\n%sAll steps passed%s in %s s.\n' "$green$bold" "$reset" \
  "$(awk -v a="$total_start" -v b="$total_end" 'BEGIN { printf "%.1f", b - a }')"
