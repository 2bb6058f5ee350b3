#!/usr/bin/env bash
# Unpacks one Debian 13 (trixie) package into a project-local folder (fetch-debian-package.sh with
# SUITE=trixie; nothing system-wide).
#   usage: fetch-trixie-package.sh DIR PACKAGE BINARY   (BINARY relative to the package root,
#          e.g. usr/bin/ctr-remote)
# Prints the absolute path of BINARY on success.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 DIR PACKAGE BINARY" >&2
  exit 2
fi
exec "$(dirname "$0")/fetch-debian-package.sh" trixie "$@"
