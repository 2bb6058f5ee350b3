#!/usr/bin/env bash
# Unpacks one Debian package of another suite (trixie = Debian 13, sid = unstable) into a
# project-local folder without touching the system's apt sources: a private apt configuration (its
# own sources list, lists and cache under DIR), `apt-get download`, `dpkg -x`. Test-only peers
# come this way: imgcrypt's ctr-imgcrypt, stargz's ctr-remote, containerd 1.7 (trixie) and
# containerd 2.1 (sid); their binaries need only libc >= 2.34 and run on bookworm. Idempotent:
# exits at once when DIR/root/BINARY exists.
#   usage: fetch-debian-package.sh SUITE DIR PACKAGE BINARY   (BINARY relative to the package
#          root, e.g. usr/bin/ctr-remote)
# Prints the absolute path of BINARY on success.
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "usage: $0 SUITE DIR PACKAGE BINARY" >&2
  exit 2
fi
suite=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
package=$3
binary="$dir/root/$4"
# One fetch at a time per DIR (concurrent test runs share the build tree's cache).
exec 9>"$dir/.lock"
flock 9
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/debs" "$dir/cache"
cat > "$dir/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
SRC
apt_opts=(
  -o "Dir::Etc::SourceList=$dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$dir/lists"
  -o "Dir::Cache=$dir/cache"
  -o "Dir::Cache::archives=$dir/archives"
  -o "APT::Get::List-Cleanup=0"
)
apt-get "${apt_opts[@]}" update >"$dir/apt-update.log" 2>&1 || {
  echo "$0: apt-get update ($suite) failed; see $dir/apt-update.log" >&2
  exit 1
}
(cd "$dir/debs" && apt-get "${apt_opts[@]}" download "$package" >"$dir/apt-download.log" 2>&1) || {
  echo "$0: apt-get download $package ($suite) failed; see $dir/apt-download.log" >&2
  exit 1
}
for deb in "$dir"/debs/*.deb; do
  dpkg -x "$deb" "$dir/root"
done
if [ ! -x "$binary" ]; then
  echo "$0: no $4 in the $package package ($suite); contents:" >&2
  find "$dir/root" -type f >&2
  exit 1
fi
echo "$binary"
