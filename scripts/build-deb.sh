#!/usr/bin/env bash
# Builds lazycrypt_<version>_amd64.deb with Debian's tools (dpkg-buildpackage, debhelper; the
# packaging is in debian/). `make deb` runs it.
#
#   scripts/build-deb.sh OUT_DIR              a full build (configure + compile the shipped
#                                             binaries in a staged copy of the tree)
#   scripts/build-deb.sh OUT_DIR BUILD_DIR    package the existing, built CMake directory
#                                             BUILD_DIR; nothing is compiled (CI, package_test.sh)
#
# dpkg-buildpackage writes its products next to the source tree, and debhelper its work files
# into debian/: the tree is staged into OUT_DIR/lazycrypt-<version> (files git tracks or would
# track, so uncommitted work is packaged too) and the .deb lands in OUT_DIR, never beside the
# checkout. debian/changelog is written here from CMake's project(VERSION), the one place the
# version is set; --version prints the same version and the commit this script passes down.
set -euo pipefail

die() { echo "build-deb: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT_DIR [BUILD_DIR]"
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "$1")
build=""
if [ $# -eq 2 ]; then build=$(realpath "$2"); fi

version=$(sed -n 's/^project(lazycrypt VERSION \([0-9][0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$version" ] || die "no project(lazycrypt VERSION x.y.z) in $src/CMakeLists.txt"
if [ -n "$build" ]; then
  built=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
  [ "$built" = "$version" ] ||
    die "$build is configured for version '${built}', the source says $version: rebuild it first"
fi

commit=unknown
date_epoch=$(date +%s)
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git -C "$src" rev-parse --short=7 HEAD)
  if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then commit+="-dirty"; fi
  date_epoch=$(git -C "$src" log -1 --format=%ct)
fi

stage="$out/lazycrypt-$version"
rm -rf "$stage"
mkdir -p "$stage"
# OUT_DIR may lie inside the tree (make deb: build/deb): never copy it into itself.
out_rel=none
case "$out/" in "$src/"*) out_rel=${out#"$src/"} ;; esac
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  # Tracked and untracked-but-not-ignored files that exist (build/ is ignored), without
  # debhelper's leftovers from an in-tree dpkg-buildpackage.
  (cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$src" && while IFS= read -r -d '' f; do
       case "$f" in debian/tmp/*|debian/lazycrypt/*|debian/.debhelper/*|debian/files|obj-*|"$out_rel"/*) continue;; esac
       [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
     done) |
    tar -C "$src" --null --no-recursion -T - -cf - | tar -C "$stage" -xf -
else
  tar -C "$src" --exclude=./build --exclude='./build-*' --exclude='./obj-*' --exclude="./$out_rel" \
    -cf - . | tar -C "$stage" -xf -
fi

maintainer=$(sed -n 's/^Maintainer: //p' "$src/debian/control")
cat > "$stage/debian/changelog" <<CHANGELOG
lazycrypt ($version) bookworm; urgency=medium

  * Release $version (commit $commit).
  * Release notes: /usr/share/doc/lazycrypt/CHANGELOG.md.

 -- $maintainer  $(date -R -u -d "@$date_epoch")
CHANGELOG

export LAZYCRYPT_COMMIT="$commit"
if [ -n "$build" ]; then export LAZYCRYPT_BUILD_DIR="$build"; else unset LAZYCRYPT_BUILD_DIR; fi
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }nocheck parallel=$(nproc)"
(cd "$stage" && dpkg-buildpackage -b -us -uc)
deb="$out/lazycrypt_${version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb"
[ -f "$deb" ] || die "dpkg-buildpackage did not produce $deb"
echo "build-deb: $deb"
