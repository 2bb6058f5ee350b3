#!/usr/bin/env bash
# bench/stargz/build.sh BUILD_DIR — stargz-snapshotter for bench/coldstart, from Debian 13 (trixie)
# packages only: the library golang-github-containerd-stargz-snapshotter-dev, the Go -dev packages
# it Depends on (transitively), Go 1.24 (golang-1.24-go, -src) and ctr-remote (stargz-snapshotter),
# fetched with a private apt configuration (own sources list, lists and cache under the build tree),
# `apt-get download` and `dpkg -x`: nothing is installed system-wide. Then builds this folder's
# main.go (our daemon: the library on a unix socket as a containerd proxy snapshotter) in GOPATH mode
# (GO111MODULE=off) against the packages' /usr/share/gocode, offline.
#
# Idempotent and cached under BUILD_DIR/cache/stargz-bench: the fetch runs once (root/.complete;
# offline after it), the build again only when main.go or the toolchain changed. Go builds are
# heavy on this shared 2-core machine: under flock /tmp/lc-build.lock, GOMAXPROCS=2, -p 2.
# Prints two lines: the daemon's path, ctr-remote's path. versions.tsv lists every package used.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "stargz: no build directory '$1'" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")" && pwd)"
cache=$BUILD/cache/stargz-bench
root=$cache/root
suite=trixie
library=golang-github-containerd-stargz-snapshotter-dev
goroot_rel=usr/lib/go-1.24
daemon=$cache/bin/lazycrypt-bench-stargz
ctr_remote=$root/usr/bin/ctr-remote
die() { echo "stargz: $*" >&2; exit 1; }

mkdir -p "$cache"
exec 9>"$cache/.lock"  # one fetch/build at a time per build tree
flock 9

# ---- fetch (once) ----------------------------------------------------------------------------------
if [ ! -e "$root/.complete" ]; then
  rm -rf "$root" "$cache/debs"
  mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/cache" "$cache/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
    >"$cache/sources.list"
  apt_opts=(
    -o "Dir::Etc::SourceList=$cache/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$cache/lists"
    -o "Dir::State::status=/dev/null"  # resolve as on an empty system, not against bookworm's
    -o "Dir::Cache=$cache/cache"
    -o "Dir::Cache::archives=$cache/archives"
    -o "APT::Get::List-Cleanup=0"
  )
  apt-get "${apt_opts[@]}" update >"$cache/apt-update.log" 2>&1 ||
    die "apt-get update ($suite) failed; see $cache/apt-update.log"
  # The Depends closure of the library; its Go packages (golang-*: the -dev sources and the
  # toolchain golang-go -> golang-1.24-go, golang-src) are what the build uses. C libraries in the
  # closure (libbtrfs-dev, libseccomp-dev, ...) serve cgo parts of containerd that main.go does not
  # import. <virtual> names are provided by real packages listed in the same closure.
  apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends "$library" >"$cache/closure.txt" ||
    die "apt-cache depends $library ($suite) failed"
  grep -E '^golang-' "$cache/closure.txt" | sort -u >"$cache/packages.txt"
  grep -qx "$library" "$cache/packages.txt" || die "$library is not in $suite"
  grep -qx "golang-1.24-go" "$cache/packages.txt" || echo golang-1.24-go >>"$cache/packages.txt"
  echo stargz-snapshotter >>"$cache/packages.txt"  # ctr-remote
  (cd "$cache/debs" && xargs apt-get "${apt_opts[@]}" download <"$cache/packages.txt") \
    >"$cache/apt-download.log" 2>&1 ||
    die "apt-get download ($suite) failed; see $cache/apt-download.log"
  mkdir -p "$root"
  for deb in "$cache"/debs/*.deb; do
    dpkg -x "$deb" "$root"
    dpkg-deb -f "$deb" Package Version | sed 's/^[A-Za-z]*: //' | paste -sd '\t'
  done >"$cache/versions.tsv"
  [ -x "$root/$goroot_rel/bin/go" ] || die "no Go toolchain at $goroot_rel in the fetched packages"
  [ -x "$ctr_remote" ] || die "no usr/bin/ctr-remote in stargz-snapshotter ($suite)"
  touch "$root/.complete"
fi

# ---- build (when main.go or the toolchain changed) -------------------------------------------------
stamp=$( { sha256sum "$SRC/main.go" | cut -d' ' -f1; cat "$root/$goroot_rel/VERSION"; } | sha256sum | cut -d' ' -f1)
if [ ! -x "$daemon" ] || [ "$(cat "$daemon.stamp" 2>/dev/null)" != "$stamp" ]; then
  gopath=$cache/gopath
  rm -rf "$gopath"
  mkdir -p "$gopath/src/lazycrypt-bench-stargz" "$cache/bin"
  cp "$SRC/main.go" "$gopath/src/lazycrypt-bench-stargz/"
  # A clean environment: no GOFLAGS/GOPROXY/module settings of the caller's leak in; offline.
  flock /tmp/lc-build.lock env -i PATH="$root/$goroot_rel/bin:/usr/bin:/bin" HOME="$cache" \
    GOROOT="$root/$goroot_rel" GOPATH="$gopath:$root/usr/share/gocode" GO111MODULE=off \
    GOCACHE="$cache/gocache" GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOMAXPROCS=2 CGO_ENABLED=0 \
    go build -p 2 -trimpath -o "$daemon.tmp" lazycrypt-bench-stargz >"$cache/build.log" 2>&1 || {
    cat "$cache/build.log" >&2
    die "go build failed; see $cache/build.log"
  }
  mv "$daemon.tmp" "$daemon"
  echo "$stamp" >"$daemon.stamp"
fi
echo "$daemon"
echo "$ctr_remote"
