#!/usr/bin/env bash
# Unpacks Debian 13 (trixie)'s imgcrypt -- ctr-imgcrypt (upstream's ctr-enc) and ctd-decoder --
# into a project-local folder without touching the system's apt sources: a private apt
# configuration (its own sources list, lists and cache under DIR), `apt-get download`, `dpkg -x`.
# The binaries need only libc >= 2.34 and run on bookworm. Idempotent: exits at once when
# DIR/root/usr/bin/ctr-imgcrypt exists.
#   usage: fetch-imgcrypt.sh DIR        (e.g. build/cache/imgcrypt)
# Prints the path of the usr/bin directory holding ctr-imgcrypt on success.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)
bin="$dir/root/usr/bin"
# One fetch at a time per DIR (concurrent test runs share the build tree's cache).
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin/ctr-imgcrypt" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/debs"
cat > "$dir/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
apt_opts=(
  -o "Dir::Etc::SourceList=$dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$dir/lists"
  -o "Dir::Cache=$dir/cache"
  -o "Dir::Cache::archives=$dir/archives"
  -o "APT::Get::List-Cleanup=0"
)
mkdir -p "$dir/cache"
apt-get "${apt_opts[@]}" update >"$dir/apt-update.log" 2>&1 || {
  echo "$0: apt-get update (trixie) failed; see $dir/apt-update.log" >&2
  exit 1
}
(cd "$dir/debs" && apt-get "${apt_opts[@]}" download imgcrypt >"$dir/apt-download.log" 2>&1) || {
  echo "$0: apt-get download imgcrypt failed; see $dir/apt-download.log" >&2
  exit 1
}
for deb in "$dir"/debs/*.deb; do
  dpkg -x "$deb" "$dir/root"
done
if [ ! -x "$bin/ctr-imgcrypt" ]; then
  echo "$0: no usr/bin/ctr-imgcrypt in the imgcrypt package; contents:" >&2
  find "$dir/root" -type f >&2
  exit 1
fi
echo "$bin"
