#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — lazycrypt's benchmarks, reported next to `openssl speed` measured in
# the same run. `make bench` builds BUILD_DIR and calls this. It:
#   1. measures `openssl speed -evp aes-256-gcm [-decrypt] -bytes N -seconds S` at every chunk size;
#   2. runs BUILD_DIR/bin/format_bench (JSON, repetitions, medians);
#   3. measures the target — ChunkOpener::Open on incompressible data at the default chunk size
#      >= 90 % of openssl's -decrypt figure — as 3 alternating pairs (openssl, then Open), so that
#      a change in the machine's load hits both sides; prints a summary ending with a line saying
#      whether the target holds;
#   4. when BUILD_DIR/bin/lazycrypt, skopeo and umoci are there: times `lazycrypt encrypt` against
#      `skopeo copy --encryption-key jwe:pub.pem` on the same layer in an OCI layout;
#   5. regenerates docs/BENCHMARKS.md (machine, tables, the command that produced them).
# Raw results stay in BUILD_DIR/bench-results/. Needs openssl, jq and awk (no python).
#
# Knobs (environment; the defaults are what docs/BENCHMARKS.md is generated with):
#   BENCH_OPENSSL_SECONDS=2  BENCH_REPETITIONS=3  BENCH_MIN_TIME=0.3  LAZYCRYPT_BENCH_TAR_MIB=256
#   BENCH_DOC=<path>   write the document elsewhere (e.g. for a trial run); default docs/BENCHMARKS.md
#   BENCH_SKIP_SKOPEO=1  skip step 4
#   BENCH_REPORT_ONLY=1  measure nothing: regenerate the document and summary from the results of
#                        the last run in BUILD_DIR/bench-results (after editing bench/report.jq)
# Exit status: 0 when the run completed (whether or not the target holds), 1 when it could not run
# or a benchmark failed its data check.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "bench: no build directory '$1' (run make build)" >&2; exit 1; }
BENCH_BIN="$BUILD/bin/format_bench"
REPORT_JQ="$ROOT/bench/report.jq"
OUT_DIR="$BUILD/bench-results"
DOC="${BENCH_DOC:-$ROOT/docs/BENCHMARKS.md}"

OSSL_SECONDS="${BENCH_OPENSSL_SECONDS:-2}"
REPETITIONS="${BENCH_REPETITIONS:-3}"
MIN_TIME="${BENCH_MIN_TIME:-0.3}"
TAR_MIB="${LAZYCRYPT_BENCH_TAR_MIB:-256}"
export LAZYCRYPT_BENCH_TAR_MIB="$TAR_MIB"
SIZES=(65536 131072 262144 524288 1048576 2097152 4194304)

die() { echo "bench: $*" >&2; exit 1; }

# ---- 0. Tools ---------------------------------------------------------------------------------
for tool in openssl jq awk nproc; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (scripts/setup.sh installs it)"
done
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN is missing: build first (make build, or cmake --build $BUILD --target format_bench)"
[ -f "$REPORT_JQ" ] || die "$REPORT_JQ is missing"
[[ "$REPETITIONS" =~ ^[0-9]+$ ]] && [ "$REPETITIONS" -ge 2 ] || die "BENCH_REPETITIONS must be >= 2 (medians)"
[[ "$OSSL_SECONDS" =~ ^[0-9]+$ ]] && [ "$OSSL_SECONDS" -ge 1 ] || die "BENCH_OPENSSL_SECONDS must be a whole number >= 1"
mkdir -p "$OUT_DIR"

report() {  # report MODE: renders bench/report.jq over the results in $OUT_DIR
  jq -n -r --slurpfile gb "$OUT_DIR/format_bench.json" --slurpfile ossl "$OUT_DIR/openssl.json" \
    --slurpfile meta "$OUT_DIR/meta.json" --slurpfile peers "$OUT_DIR/peers.json" \
    --slurpfile target "$OUT_DIR/target.json" --arg mode "$1" -f "$REPORT_JQ"
}
write_report() {
  report doc >"$DOC.tmp" || { rm -f "$DOC.tmp"; die "bench/report.jq failed"; }
  mv "$DOC.tmp" "$DOC"
  echo "bench: wrote $DOC (raw results in $OUT_DIR)" >&2
  report summary  # its last line says whether the target holds
}
if [ "${BENCH_REPORT_ONLY:-0}" = 1 ]; then
  for f in format_bench openssl meta peers target; do
    [ -f "$OUT_DIR/$f.json" ] || die "$OUT_DIR/$f.json is missing: run the benchmarks first"
  done
  write_report
  exit 0
fi

START_S=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 1. openssl speed -------------------------------------------------------------------------
# -mr prints "+F:<n>:AES-256-GCM:<bytes per second>"; openssl divides by user CPU time.
openssl_bps() {  # openssl_bps SIZE [-decrypt]
  local size=$1; shift
  openssl speed -mr -evp aes-256-gcm "$@" -bytes "$size" -seconds "$OSSL_SECONDS" 2>/dev/null |
    awk -F: '/^\+F:/ { v = $4 } END { if (v == "") exit 1; printf "%.0f\n", v }'
}

echo "bench: openssl speed -evp aes-256-gcm, ${#SIZES[@]} sizes x encrypt/decrypt x ${OSSL_SECONDS}s" >&2
enc_json="{}"
dec_json="{}"
for size in "${SIZES[@]}"; do
  enc=$(openssl_bps "$size") || die "openssl speed failed at $size bytes"
  dec=$(openssl_bps "$size" -decrypt) || die "openssl speed -decrypt failed at $size bytes"
  enc_json=$(jq -c --arg s "$size" --argjson v "$enc" '. + {($s): $v}' <<<"$enc_json")
  dec_json=$(jq -c --arg s "$size" --argjson v "$dec" '. + {($s): $v}' <<<"$dec_json")
done
jq -n --argjson enc "$enc_json" --argjson dec "$dec_json" --argjson seconds "$OSSL_SECONDS" \
  '{seconds: $seconds, enc: $enc, dec: $dec}' >"$OUT_DIR/openssl.json"

# ---- 2. format_bench --------------------------------------------------------------------------
echo "bench: format_bench (${REPETITIONS} repetitions, ${TAR_MIB} MiB mixed layer; a few minutes)" >&2
bench_rc=0
"$BENCH_BIN" --benchmark_format=json --benchmark_repetitions="$REPETITIONS" \
  --benchmark_report_aggregates_only=true --benchmark_min_time="$MIN_TIME" \
  >"$OUT_DIR/format_bench.json" 2>"$OUT_DIR/format_bench.stderr" || bench_rc=$?
jq -e '.benchmarks | length > 0' "$OUT_DIR/format_bench.json" >/dev/null 2>&1 ||
  die "format_bench produced no results (see $OUT_DIR/format_bench.stderr)"
failed=$(jq -r '[.benchmarks[] | select(.error_occurred == true) | "\(.run_name): \(.error_message)"] | unique | .[]' \
  "$OUT_DIR/format_bench.json")
if [ -n "$failed" ] || [ "$bench_rc" -ne 0 ]; then
  echo "bench: format_bench failed (exit $bench_rc):" >&2
  [ -n "$failed" ] && echo "$failed" >&2
  exit 1
fi

# ---- 3. The target, in alternating pairs -------------------------------------------------------
DEF_CHUNK=$(jq -r '.context.default_chunk_size_bytes' "$OUT_DIR/format_bench.json")
[[ "$DEF_CHUNK" =~ ^[0-9]+$ ]] || die "format_bench did not report its default chunk size"
echo "bench: target pairs (openssl speed -decrypt vs open/random at $DEF_CHUNK bytes, 3 rounds)" >&2
pairs="[]"
for round in 1 2 3; do
  o=$(openssl_bps "$DEF_CHUNK" -decrypt) || die "openssl speed -decrypt failed"
  b=$("$BENCH_BIN" --benchmark_filter="^open/random/chunk:${DEF_CHUNK}\$" --benchmark_min_time=1 \
        --benchmark_format=json 2>>"$OUT_DIR/format_bench.stderr" |
      jq -e '.benchmarks[0] | select(.error_occurred != true) | .bytes_per_second') ||
    die "format_bench open/random failed (see $OUT_DIR/format_bench.stderr)"
  pairs=$(jq -c --argjson o "$o" --argjson b "$b" '. + [{openssl_decrypt: $o, open: $b}]' <<<"$pairs")
done
jq -n --argjson pairs "$pairs" --argjson chunk "$DEF_CHUNK" '{chunk: $chunk, pairs: $pairs}' \
  >"$OUT_DIR/target.json"

# ---- 4. Conversion vs skopeo (optional peer) ---------------------------------------------------
# Both convert the same image: one layer, the mixed tar, gzip-compressed by umoci. skopeo encrypts
# the gzip blob as it is (AES-256-CTR + HMAC, ocicrypt); lazycrypt decompresses, chunks,
# recompresses with zstd and seals. Each whole command is timed (wall, and user+sys CPU of the
# process and its children), 3 runs each, alternating; medians are reported.
WORK=""
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
CLI="$BUILD/bin/lazycrypt"
peer_status() { jq -n --arg status "$1" --arg reason "$2" '{status: $status, reason: $reason}' >"$OUT_DIR/peers.json"; }
# timed FILE CMD...: runs CMD (output to the peer log) and appends "wall user sys" seconds to FILE.
timed() {
  local file=$1; shift
  local TIMEFORMAT='%R %U %S'
  { time "$@" >>"$peer_log" 2>&1; } 2>>"$file"
}
# median_of FILE: medians of wall and of user+sys over FILE's lines, as "wall cpu".
median_of() {
  local wall cpu
  wall=$(awk '{ print $1 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  cpu=$(awk '{ print $2 + $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "$wall $cpu"
}
if [ "${BENCH_SKIP_SKOPEO:-0}" = 1 ]; then
  peer_status skipped "BENCH_SKIP_SKOPEO=1"
elif ! command -v skopeo >/dev/null 2>&1 || ! command -v umoci >/dev/null 2>&1; then
  peer_status skipped "skopeo or umoci is not installed (scripts/setup.sh installs them)"
elif [ ! -x "$CLI" ]; then
  peer_status skipped "$CLI is not built"
else
  echo "bench: lazycrypt encrypt vs skopeo copy --encryption-key (3 runs each)" >&2
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-bench-XXXXXX")
  peer_log="$OUT_DIR/peers.log"
  : >"$peer_log"
  peer_ok=1
  {
    LAZYCRYPT_BENCH_WRITE_TAR="$WORK/layer.tar" "$BENCH_BIN" &&
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" &&
      openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" &&
      umoci init --layout "$WORK/src" &&
      umoci new --image "$WORK/src:bench" &&
      umoci raw add-layer --no-history --image "$WORK/src:bench" "$WORK/layer.tar"
  } >>"$peer_log" 2>&1 || peer_ok=0
  if [ "$peer_ok" = 1 ]; then
    : >"$WORK/skopeo.times"
    : >"$WORK/lazycrypt.times"
    for run in 1 2 3; do
      rm -rf "$WORK/out-skopeo" "$WORK/out-lazycrypt"
      timed "$WORK/skopeo.times" skopeo --insecure-policy copy --quiet \
        --encryption-key "jwe:$WORK/pub.pem" "oci:$WORK/src:bench" "oci:$WORK/out-skopeo:bench" ||
        { peer_ok=0; break; }
      timed "$WORK/lazycrypt.times" "$CLI" encrypt -r "jwe:$WORK/pub.pem" \
        "oci:$WORK/src:bench" "oci:$WORK/out-lazycrypt:bench" || { peer_ok=0; break; }
    done
  fi
  if [ "$peer_ok" = 1 ]; then
    read -r sk_wall sk_cpu < <(median_of "$WORK/skopeo.times")
    read -r lc_wall lc_cpu < <(median_of "$WORK/lazycrypt.times")
    tar_bytes=$(stat -c %s "$WORK/layer.tar")
    # Each layout's layer blob is its largest blob (config, manifest and index are tiny).
    largest_blob() { find "$1/blobs" -type f -printf '%s\n' | sort -n | tail -1; }
    jq -n --argjson tar "$tar_bytes" --argjson gz "$(largest_blob "$WORK/src")" \
      --argjson os "$(largest_blob "$WORK/out-skopeo")" \
      --argjson ol "$(largest_blob "$WORK/out-lazycrypt")" \
      --argjson sk_wall "$sk_wall" --argjson sk_cpu "$sk_cpu" \
      --argjson lc_wall "$lc_wall" --argjson lc_cpu "$lc_cpu" \
      --arg skopeo_version "$(skopeo --version)" \
      '{status: "measured", tar_bytes: $tar, gzip_bytes: $gz, skopeo_blob_bytes: $os,
        lazycrypt_blob_bytes: $ol, skopeo_wall_s: $sk_wall, skopeo_cpu_s: $sk_cpu,
        lazycrypt_wall_s: $lc_wall, lazycrypt_cpu_s: $lc_cpu, skopeo_version: $skopeo_version}' \
      >"$OUT_DIR/peers.json"
  else
    peer_status failed "a step failed; see <build dir>/bench-results/peers.log"
    echo "bench: the skopeo comparison failed (see $peer_log); continuing without it" >&2
  fi
  cleanup
  WORK=""
fi

# ---- 5. Run metadata --------------------------------------------------------------------------
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu" ] || cpu=$(uname -m)
commit="unknown (not a git checkout)"
if command -v git >/dev/null 2>&1 && git -C "$ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
  commit=$(git -C "$ROOT" rev-parse --short HEAD)
  if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (plus uncommitted changes)"
  fi
fi
# The command that produced the numbers: `make bench` (make sets MAKELEVEL), else this script.
if [ -n "${MAKELEVEL:-}" ]; then command_line="make bench"; else command_line="bash bench/run.sh $1"; fi
NICENESS=$(nice)
[ "$NICENESS" = 0 ] || command_line="nice -n $NICENESS $command_line"
# With autogroup scheduling, nice only ranks processes within a session; a session's own weight
# is its autogroup nice. Both are recorded, so a run given priority over other load says so.
AUTOGROUP_NICE=$(awk '{ print $NF }' /proc/self/autogroup 2>/dev/null || echo "n/a")
[ "$OSSL_SECONDS" = 2 ] || command_line="BENCH_OPENSSL_SECONDS=$OSSL_SECONDS $command_line"
[ "$REPETITIONS" = 3 ] || command_line="BENCH_REPETITIONS=$REPETITIONS $command_line"
[ "$MIN_TIME" = 0.3 ] || command_line="BENCH_MIN_TIME=$MIN_TIME $command_line"
[ "$TAR_MIB" = 256 ] || command_line="LAZYCRYPT_BENCH_TAR_MIB=$TAR_MIB $command_line"
jq -n \
  --arg cpu "$cpu" --arg cores "$(nproc)" --arg kernel "$(uname -sr)" \
  --arg openssl_version "$(openssl version)" --arg date "$(date -u '+%Y-%m-%d %H:%M')" \
  --arg commit "$commit" --arg load_start "$LOAD_START" \
  --arg load_end "$(cut -d' ' -f1-3 /proc/loadavg)" --arg command "$command_line" \
  --arg tar_mib "$TAR_MIB" --arg min_time "$MIN_TIME" --arg repetitions "$REPETITIONS" \
  --arg duration_s "$(( $(date +%s) - START_S ))" --arg niceness "$NICENESS" \
  --arg autogroup_nice "$AUTOGROUP_NICE" \
  '$ARGS.named' >"$OUT_DIR/meta.json"

# ---- 5. Report ------------------------------------------------------------------------------
write_report
