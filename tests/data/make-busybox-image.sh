#!/usr/bin/env bash
# Builds a small OCI image layout offline: one layer holding busybox-static, its applet symlinks
# and a few /etc files, tagged TAG (default "latest"). Uses umoci (layers are tar+gzip).
#   usage: make-busybox-image.sh [--umoci-insert] DIR [TAG]
#          make-busybox-image.sh --rootfs DIR     (only the root file system tree, no image)
# By default the layer is a GNU tar archive of the tree added with `umoci raw add-layer` (as
# docker/buildkit layers, it ends with the tar end-of-archive marker). With --umoci-insert, umoci
# generates the layer itself (`umoci insert`): umoci's archives stop after the last entry, WITHOUT
# the end-of-archive marker (umoci issue #436) -- real images like that exist and must work too.
# DIR must not exist yet (or be an empty directory).
set -euo pipefail

rootfs_only=0
umoci_insert=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rootfs) rootfs_only=1; shift ;;
    --umoci-insert) umoci_insert=1; shift ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [TAG] | $0 --rootfs DIR" >&2
  exit 2
fi
dir=$1
tag=${2:-latest}
busybox_bin=$(command -v busybox || true)
if [ -z "$busybox_bin" ]; then
  echo "$0: busybox not found (apt-get install busybox-static)" >&2
  exit 1
fi
if ! file -L "$busybox_bin" 2>/dev/null | grep -q 'statically linked'; then
  # `file` may be missing; ldd is the fallback check.
  if ldd "$busybox_bin" >/dev/null 2>&1; then
    echo "$0: $busybox_bin is not statically linked (apt-get install busybox-static)" >&2
    exit 1
  fi
fi

if [ "$rootfs_only" = 1 ]; then
  root=$dir
  mkdir "$root"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  root=$work/rootfs
fi
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,var/log,proc,sys,dev}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox_bin" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet, where busybox --list-full puts it (bin/sh, usr/bin/env, ...).
while read -r applet; do
  [ -n "$applet" ] || continue
  [ "$applet" = "bin/busybox" ] && continue
  adir=${applet%/*}
  [ -d "$root/$adir" ] || mkdir -p "$root/$adir"
  slashes=${applet//[^\/]/}
  rel=""
  for ((i = 0; i < ${#slashes}; i++)); do rel="../$rel"; done
  if [ "$adir" = "bin" ]; then rel=""; else rel="${rel}bin/"; fi
  ln -s "${rel}busybox" "$root/$applet"
done < <("$busybox_bin" --list-full)
cat >"$root/etc/os-release" <<'OSR'
NAME="lazycrypt busybox sample"
ID=lazycrypt-busybox
VERSION_ID=1
PRETTY_NAME="lazycrypt busybox sample image"
OSR
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo "lazycrypt-sample" >"$root/etc/hostname"
# Stable timestamps so two runs produce the same tree (the layer digest still varies with umoci).
find "$root" -exec touch -h -d '2024-01-01T00:00:00Z' {} +
if [ "$rootfs_only" = 1 ]; then
  exit 0
fi

umoci init --layout "$dir"
umoci new --image "$dir:$tag"
if [ "$umoci_insert" = 1 ]; then
  umoci insert --image "$dir:$tag" "$root" /
else
  tar --format=pax --numeric-owner --sort=name -C "$root" -cf "$work/layer.tar" .
  umoci raw add-layer --image "$dir:$tag" --history.created_by "make-busybox-image.sh" \
    "$work/layer.tar"
fi
umoci config --image "$dir:$tag" --config.cmd /bin/sh \
  --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --os linux --architecture amd64
umoci gc --layout "$dir"
