#!/usr/bin/env bash
# Builds the OCI image of lazycrypt-snapshotter from the Debian package, offline, with umoci.
#
#   scripts/build-image.sh DEB OUT_DIR
#
# writes the OCI layout OUT_DIR/oci, tag <version> (push it with
# `skopeo copy oci:OUT_DIR/oci:<version> docker://REGISTRY/lazycrypt/lazycrypt-snapshotter:<version>`),
# and leaves the image's root filesystem in OUT_DIR/rootfs.
#
# The root filesystem, with no network and no debootstrap (minutes, and a mirror):
#   - the .deb, unpacked (dpkg-deb -x): binaries, sample /etc/lazycrypt/config.toml;
#   - every file of the Debian packages that own the shared libraries its binaries load: ldd on
#     this machine names the libraries, dpkg -S their packages, dpkg -L the packages' files (the
#     installed versions, the ones dpkg-shlibdeps computed the .deb's Depends from); docs, man
#     pages and locales left out. Each library package the .deb depends on must be among them,
#     and each of them must be named by the .deb's Depends or be pulled in by one that is;
#   - /etc/ssl/certs/ca-certificates.crt from this machine (libcurl's CA bundle; registries are
#     reached over TLS), /etc/passwd and /etc/group with root, /tmp.
# Entrypoint: lazycrypt-snapshotter --config /etc/lazycrypt/config.toml (the DaemonSet,
# deploy/kubernetes/daemonset.yaml, mounts the socket, state and key directories).
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 DEB OUT_DIR"
deb=$(realpath "$1")
out=$(realpath -m "$2")
for tool in umoci dpkg-deb dpkg-query ldd apt-cache; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
version=$(dpkg-deb -f "$deb" Version)
tag="$version"

rm -rf "$out/rootfs" "$out/oci" "$out/bundle"
mkdir -p "$out/rootfs"
root="$out/rootfs"
# Debian 12's merged /usr: /bin, /lib, /lib64 and /sbin are links into /usr.
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" "$root/usr/sbin"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$root/$d"; done
dpkg-deb -x "$deb" "$root"

# The packages owning the libraries the binaries load (as this machine resolves them).
libs=$(for b in "$root"/usr/bin/*; do ldd "$b"; done |
       awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | sort -u)
[ -n "$libs" ] || die "ldd found no libraries"
packages=$(for l in $libs; do
             # dpkg knows the path as packaged (/lib/... or /usr/lib/...), ldd may print either.
             dpkg -S "$l" 2>/dev/null || dpkg -S "$(realpath "$l")" 2>/dev/null ||
               dpkg -S "${l#/usr}" 2>/dev/null || dpkg -S "/usr$l" 2>/dev/null ||
               die "no installed package owns $l"
           done | cut -d: -f1 | sort -u)

# Every library package the .deb depends on is in the image, and nothing else comes in that its
# Depends does not pull (the image has what `apt install ./lazycrypt.deb` would bring, no more).
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g' | grep '^lib' || true)
closure=$(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances $depends 2>/dev/null | grep '^[a-z0-9]' | sort -u)
for p in $depends; do
  grep -qx "$p" <<<"$packages" || die "the .deb depends on $p but no binary loads a library of it"
done
for p in $packages; do
  grep -qx "$p" <<<"$closure" ||
    die "$p provides a library the binaries load but the .deb's Depends does not pull it in"
done

for p in $packages; do
  dpkg-query -L "$p" | while IFS= read -r f; do
    case "$f" in /bin|/lib|/lib64|/sbin) continue;; esac  # the merged-/usr links made above
    case "$f" in /usr/share/doc/*|/usr/share/man/*|/usr/share/locale/*|/usr/share/lintian/*|/usr/share/info/*) continue;; esac
    if [ -L "$f" ] || [ -f "$f" ]; then printf '%s\0' "${f#/}"; fi
  done
done | tar -C / --null --no-recursion -T - -cf - | tar -C "$root" --keep-directory-symlink -xf -

mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/run/lazycrypt" "$root/var/lib/lazycrypt" \
         "$root/etc/containerd/ocicrypt/keys" "$root/etc/containerd/certs.d"
chmod 1777 "$root/tmp"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
else
  echo "build-image: warning: no /etc/ssl/certs/ca-certificates.crt here; the image has no CA bundle" >&2
fi
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

# The image: one layer holding the root filesystem.
umoci init --layout "$out/oci"
umoci new --image "$out/oci:$tag"
umoci unpack --image "$out/oci:$tag" "$out/bundle" >/dev/null
rmdir "$out/bundle/rootfs"
cp -a "$root" "$out/bundle/rootfs"
umoci repack --image "$out/oci:$tag" "$out/bundle"
rm -rf "$out/bundle"
umoci config --image "$out/oci:$tag" \
  --config.entrypoint /usr/bin/lazycrypt-snapshotter \
  --config.cmd --config --config.cmd /etc/lazycrypt/config.toml \
  --config.workingdir / \
  --config.label "org.opencontainers.image.title=lazycrypt-snapshotter" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.description=lazycrypt remote snapshotter for containerd"
umoci gc --layout "$out/oci"
echo "build-image: $out/oci:$tag ($(du -sh "$out/oci" | cut -f1))"
