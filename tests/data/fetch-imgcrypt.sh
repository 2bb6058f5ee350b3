#!/usr/bin/env bash
# Unpacks Debian 13 (trixie)'s imgcrypt -- ctr-imgcrypt (upstream's ctr-enc) and ctd-decoder --
# into DIR (see fetch-trixie-package.sh). Idempotent.
#   usage: fetch-imgcrypt.sh DIR        (e.g. build/cache/imgcrypt)
# Prints the path of the usr/bin directory holding ctr-imgcrypt on success.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
bin=$("$(dirname "${BASH_SOURCE[0]}")/fetch-trixie-package.sh" "$1" imgcrypt usr/bin/ctr-imgcrypt)
dirname "$bin"
