#!/usr/bin/env bash
# Generates a directory tree that exercises every tar feature a container layer can carry:
# regular files (empty, small, larger than a chunk, incompressible), directories, symlinks
# (relative, absolute, dangling, target > 100 bytes), hardlinks, character and block devices, a
# fifo, names longer than 100 and 255 bytes, user.* xattrs and a security.capability xattr,
# setuid/setgid/sticky modes, uids/gids above 2097151, nanosecond mtimes, and overlay whiteouts
# (.wh.name and .wh..wh..opq).
#   usage: make-feature-tree.sh DIR
# Needs root (mknod, chown to high ids, security.* xattrs). DIR is created; it must not exist.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$0: must run as root (mknod, chown, security.capability)" >&2
  exit 1
fi
d=$1
mkdir "$d"
cd "$d"

# Regular files.
: >empty
printf 'hello, lazycrypt\n' >small.txt
mkdir -p data/nested/deeper
seq 1 200000 >data/compressible.txt                     # ~1.2 MiB, compresses well
head -c 3145728 /dev/urandom >data/random-3MiB.bin      # larger than a 1 MiB chunk, incompressible
head -c 65537 /dev/urandom >data/nested/odd-size.bin
for i in $(seq 1 40); do printf 'tiny file %d\n' "$i" >"data/nested/deeper/tiny-$i"; done
printf '#!/bin/sh\necho hi\n' >data/script.sh
chmod 0755 data/script.sh

# Modes.
printf 'setuid\n' >data/setuid-bin && chmod 4755 data/setuid-bin
printf 'setgid\n' >data/setgid-bin && chmod 2711 data/setgid-bin
mkdir data/sticky && chmod 1777 data/sticky
printf 'private\n' >data/private && chmod 0600 data/private
mkdir data/noexec-dir && chmod 0700 data/noexec-dir

# Links.
ln -s small.txt rel-link
ln -s /etc/passwd abs-link
ln -s does/not/exist dangling-link
long_target=$(printf 'very-long-link-target-component-%03d/' $(seq 1 6))end
ln -s "$long_target" long-target-link
ln data/compressible.txt hardlink-to-compressible
ln small.txt data/nested/hardlink-to-small

# Special files.
mknod chardev c 1 3
mknod blockdev b 7 0
mkfifo fifo

# Long names: one component of 200 bytes (> 100), and a path of > 255 bytes.
long_name=$(printf 'n%.0s' $(seq 1 200))
printf 'long name\n' >"$long_name"
long_dir=$(printf 'directory-with-a-long-name-%02d/' $(seq 1 8))
mkdir -p "$long_dir"
printf 'deep\n' >"${long_dir}file-at-the-end-of-a-path-longer-than-255-bytes.txt"
ln -s "../$long_name" "${long_dir}link-to-long-name"

# Ownership, including ids that need PAX or base-256 (> 2097151 = 07777777).
chown 1000:1000 small.txt
chown 3000000:4000000 data/private
chown 65534:65534 data/sticky
chown -h 1234:5678 rel-link

# Extended attributes.
setfattr -n user.comment -v 'a user xattr' small.txt
setfattr -n user.binary -v 0x00ff10fe data/nested/odd-size.bin
setfattr -n user.empty data/nested
setfattr -n user.dir-attr -v 'on a directory' data
# security.capability as `setcap cap_net_raw+ep` writes it (VFS_CAP_REVISION_2), set raw so that
# libcap's tools are not needed.
setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= data/script.sh

# Overlay whiteouts.
mkdir -p whiteouts/opaque
: >whiteouts/.wh.deleted-file
: >whiteouts/opaque/.wh..wh..opq

# Nanosecond mtimes (set last: creating entries changes the parent directories' mtimes).
touch -h -d '2023-05-06 07:08:09.123456789 UTC' small.txt
touch -h -d '2021-01-02 03:04:05.000000001 UTC' data/random-3MiB.bin
touch -h -d '1999-12-31 23:59:59.999999999 UTC' rel-link
touch -h -d '2030-06-07 08:09:10.5 UTC' data/nested/deeper
touch -h -d '2022-02-22 22:22:22.222222222 UTC' .
