#!/usr/bin/env bash
# Smoke test of the stargz paths of bench/coldstart/run.sh: builds bench/stargz (the first time:
# fetches ~150 MB of Debian 13 packages and compiles for ~35 s on 2 cores, so it is not in ctest),
# then the benchmark at a tiny size (the small workload and one 8 MiB large one), one run, paths
# stargz and stargz-optimized, on CS_NETS (default loopback). Checks that every run produced a
# time and the lazycrypt-vs-stargz table; asserts nothing about timing.
#   usage: bench/stargz/smoke_test.sh BUILD_DIR        exit 77 (skipped) without root or /dev/fuse
set -euo pipefail
build=$1
if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/fuse ]; then
  echo "skipped: needs root and /dev/fuse (containerd, FUSE, overlayfs)"
  exit 77
fi
nets=${CS_NETS:-loopback}
out=$(mktemp -d "${TMPDIR:-/tmp}/lc-stargz-smoke-XXXXXX")
trap 'rm -rf "$out"' EXIT
CS_PATHS="stargz stargz-optimized" CS_LARGE_MIB=8 CS_FILES=50 CS_SHARES=30 CS_RUNS=1 CS_NETS="$nets" \
  CS_OUT="$out" CS_PLOT=none CS_DOC= \
  bash "$(dirname "$0")/../coldstart/run.sh" "$build" >"$out/stdout" 2>"$out/stderr" || {
  cat "$out/stderr" >&2
  echo "FAIL: run.sh exited non-zero" >&2
  exit 1
}
fail() { echo "FAIL: $*" >&2; cat "$out/results.tsv" "$out/coldstart.md" >&2 || true; exit 1; }
want=$((2 * 2 * $(wc -w <<<"$nets")))  # workloads x paths x networks
[ "$(awk -F'\t' 'NR > 1 && $5 > 0 && $16 > 0' "$out/results.tsv" | wc -l)" -eq "$want" ] ||
  fail "results.tsv does not hold $want runs with a time and registry requests"
grep -q '^lazycrypt against stargz-snapshotter' "$out/coldstart.md" || fail "no lazycrypt-vs-stargz table"
grep 'coldstart: .* run 1:' "$out/stderr"
echo "PASS: stargz paths, $want runs"
