#!/usr/bin/env bash
# Smoke test of bench/coldstart/run.sh: the whole benchmark at a tiny size (one 8 MiB large
# workload and the small one), one run, loopback only; checks that it produced its table, one row
# per workload with a time for every path, and the plot. Asserts nothing about timing.
#   usage: smoke_test.sh BUILD_DIR        exit 77 (skipped) without root or /dev/fuse
set -euo pipefail
build=$1
if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/fuse ]; then
  echo "skipped: needs root and /dev/fuse (containerd, FUSE, overlayfs)"
  exit 77
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/lc-coldstart-smoke-XXXXXX")
trap 'rm -rf "$out"' EXIT
CS_LARGE_MIB=8 CS_FILES=40 CS_SHARES=5 CS_RUNS=1 CS_NETS=loopback CS_OUT="$out" \
  CS_PLOT="$out/coldstart.png" CS_DOC= \
  bash "$(dirname "$0")/run.sh" "$build" >"$out/stdout" 2>"$out/stderr" || {
  cat "$out/stderr" >&2
  echo "FAIL: run.sh exited non-zero" >&2
  exit 1
}
md=$out/coldstart.md
fail() { echo "FAIL: $*" >&2; cat "$md" >&2 || true; exit 1; }
grep -q '^## 7\. Cold start' "$md" || fail "no section heading"
for wl in small large-5; do
  row=$(grep "^| loopback | $wl |" "$md" | head -1) || fail "no row for $wl"
  # five paths, each "**median** (min–max)"
  [ "$(grep -o '\*\*[0-9.]*\*\*' <<<"$row" | wc -l)" -eq 5 ] || fail "row for $wl lacks a path: $row"
done
grep -q '^TARGET not checked' "$md" || fail "no target line"
[ -s "$out/coldstart.png" ] || fail "no plot"
[ "$(awk 'NR > 1' "$out/results.tsv" | wc -l)" -eq 10 ] || fail "results.tsv does not hold 10 runs"
echo "PASS: coldstart table with $(awk 'NR > 1' "$out/results.tsv" | wc -l) runs"
