#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — lazycrypt's benchmarks, reported next to `openssl speed` measured in
# the same run. `make bench` builds BUILD_DIR and calls this. It:
#   1. measures `openssl speed -evp aes-256-gcm [-decrypt] -bytes N -seconds S` at every chunk size;
#   2. runs BUILD_DIR/bin/format_bench (JSON, repetitions, medians);
#   3. measures the target — ChunkOpener::Open on incompressible data at the default chunk size
#      >= 90 % of openssl's -decrypt figure — as 3 alternating pairs (openssl, then Open), so that
#      a change in the machine's load hits both sides; prints a summary ending with a line saying
#      whether the target holds;
#   4. when BUILD_DIR/bin/lazycrypt, skopeo and docker-registry are there: times `lazycrypt encrypt`
#      against `skopeo copy --encryption-key jwe:pub.pem` converting the same multi-layer image
#      (>= 500 MiB of tar) from an OCI layout into a local registry, for gzip and for
#      uncompressed source layers;
#   5. regenerates docs/BENCHMARKS.md (machine, tables, the command that produced them).
# Raw results stay in BUILD_DIR/bench-results/. Needs openssl, jq and awk (no python).
#
# Knobs (environment; the defaults are what docs/BENCHMARKS.md is generated with):
#   BENCH_OPENSSL_SECONDS=2  BENCH_REPETITIONS=3  BENCH_MIN_TIME=0.3  LAZYCRYPT_BENCH_TAR_MIB=256
#   BENCH_DOC=<path>   write the document elsewhere (e.g. for a trial run); default docs/BENCHMARKS.md
#   BENCH_SKIP_SKOPEO=1  skip step 4
#   BENCH_SKIP_FUSE=1    skip step 6 (reads through FUSE mounts; keeps an earlier fuse.md)
#   BENCH_SKIP_FORMAT=1  skip steps 1-3 and reuse their last results from BUILD_DIR/bench-results
#                        (for iterating on step 4: sections 1-3 then show the earlier run)
#   LAZYCRYPT_BENCH_IMAGE_LAYERS=4  LAZYCRYPT_BENCH_LAYER_MIB=144  BENCH_CONVERT_RUNS=5  (step 4)
#   BENCH_REGISTRY_TMPFS=1  step 4's registry stores blobs under /dev/shm when it has 4 GiB free
#                          (0: under TMPDIR), so that disk writeback does not decide the timings
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
  fuse_section >>"$DOC.tmp"
  coldstart_section >>"$DOC.tmp"
  mv "$DOC.tmp" "$DOC"
  echo "bench: wrote $DOC (raw results in $OUT_DIR)" >&2
  report summary  # its last line says whether the target holds
}
# Section 7 (cold start) is written by bench/coldstart/run.sh (`make bench-coldstart`, tens of
# minutes): kept as it stands in the current document.
coldstart_section() {
  [ -f "$DOC" ] || return 0
  awk '/^## 7\. / { keep = 1; print ""; print ""; } keep && /^## / && !/^## 7\. / { keep = 0 } keep' "$DOC"
}
# Section 6, from bench/fuse/run.sh's table (BUILD_DIR/bench-results/fuse.md) when it ran.
fuse_section() {
  [ -f "$OUT_DIR/fuse.md" ] || return 0
  cat <<'EOF'

## 6. Reading through the mount (FUSE): lazycrypt vs a do-nothing FUSE filesystem and gocryptfs

`bench/fuse/run.sh BUILD_DIR` (step 6 of this script; root). The same dataset is served by
`lazycrypt-bench-noopfs --backing-dir` (**passthrough**: a do-nothing FUSE filesystem that forwards
every read to the dataset's files on the same disk, so it pays the same cold page cache: the
denominator of the ratio), by `lazycrypt-bench-noopfs` without it (answers from memory: the FUSE
ceiling, no disk at all), by gocryptfs (an encrypting FUSE filesystem over local files), and by
`lazycrypt mount --cache-dir` of the dataset encrypted as one lazycrypt layer in an OCI layout,
its chunk cache warmed by one read of every file; fio reads through each mount with the page
cache dropped first. Then `bench/fuse/ttfb_registry.sh`: time to first byte from a local registry.

EOF
  cat "$OUT_DIR/fuse.md"
  cat <<'EOF'

Targets (issue 4): sequential reads >= 85 % of the do-nothing (passthrough) filesystem, and
faster than gocryptfs. The test suite asserts none of this.

Reading the table:
- Sequential: lazycrypt's chunk cache holds compressed ciphertext (fewer bytes off the disk than the
  passthrough reads for the compressible part of the dataset), and chunks ahead of a sequential
  reader that are already on disk are opened by worker threads while the reader consumes the
  current one; replies go straight from the opened chunk to the kernel (no copy).
- Random reads do *not* do the same work per request on every column. lazycrypt must authenticate
  a whole chunk (1 MiB by default) before serving any byte of it; after a small read it hands the
  rest of that chunk to the kernel's page cache (FUSE notify_store), so later reads that land in an
  already-opened chunk are page-cache hits. fio's uniform random reads over 1 GiB hit each 1 MiB
  chunk many times within the run, so lazycrypt's 4 KiB figures exceed even the memory ceiling;
  the other filesystems read only the 4 KiB asked for. A program whose random reads do not
  cluster within chunks sees about one chunk open per read (the "time to first byte, cold" rows:
  one open, authenticate and decrypt of a chunk from the warm chunk cache).
- Time to first byte from a registry: the chunk is fetched by one ranged GET, then opened; the
  eager alternative has to fetch and decrypt the whole image first.
EOF
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

if [ "${BENCH_SKIP_FORMAT:-0}" = 1 ]; then
  # Steps 1-3 skipped: the document reuses their results from the last run in $OUT_DIR.
  for f in format_bench openssl target; do
    [ -f "$OUT_DIR/$f.json" ] || die "BENCH_SKIP_FORMAT=1 needs $OUT_DIR/$f.json from an earlier full run"
  done
  echo "bench: BENCH_SKIP_FORMAT=1: reusing openssl/format_bench/target results from $OUT_DIR" >&2
else
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

fi  # BENCH_SKIP_FORMAT

# ---- 4. Conversion into a registry vs skopeo (optional peer) -----------------------------------
# The same image — LAYERS layers, each a different draw of the mixed tar (text, machine code,
# random bytes, zeros, many small files) — stored in an OCI layout two ways: (a) gzip layers, as
# umoci and registries hold them; (b) uncompressed tar layers. Both tools push it into one local
# docker-registry (filesystem storage in a temp dir, killed by PID on exit):
#   lazycrypt encrypt --plain-http -r jwe:pub.pem oci:SRC docker://127.0.0.1:PORT/lc-...:bench
#   skopeo copy --dest-tls-verify=false --encryption-key jwe:pub.pem oci:SRC docker://.../sk-...:bench
# Runs alternate (skopeo, lazycrypt; source kind a, then b); every push goes into an emptied
# registry (storage on tmpfs when there is room) with the source blobs just read; each whole
# command is timed (wall, user+sys CPU of the process and its children, and the registry's CPU
# during it); medians. In the first run `lazycrypt verify` checks the pushed lazycrypt image and
# `skopeo inspect` the skopeo one (its layer media types name what skopeo uploaded).
WORK=""
REG_ROOT=""
REGISTRY_PID=""
cleanup() {
  if [ -n "$REGISTRY_PID" ]; then kill "$REGISTRY_PID" 2>/dev/null || true; wait "$REGISTRY_PID" 2>/dev/null || true; fi
  REGISTRY_PID=""
  if [ -n "$REG_ROOT" ]; then rm -rf "$REG_ROOT"; fi
  REG_ROOT=""
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
  WORK=""
}
trap cleanup EXIT
CLI="$BUILD/bin/lazycrypt"
IMAGE_LAYERS="${LAZYCRYPT_BENCH_IMAGE_LAYERS:-4}"
LAYER_MIB="${LAZYCRYPT_BENCH_LAYER_MIB:-144}"
CONVERT_RUNS="${BENCH_CONVERT_RUNS:-5}"
[[ "$IMAGE_LAYERS" =~ ^[0-9]+$ ]] && [ "$IMAGE_LAYERS" -ge 1 ] || die "LAZYCRYPT_BENCH_IMAGE_LAYERS must be >= 1"
[[ "$LAYER_MIB" =~ ^[0-9]+$ ]] && [ "$LAYER_MIB" -ge 4 ] || die "LAZYCRYPT_BENCH_LAYER_MIB must be >= 4"
[[ "$CONVERT_RUNS" =~ ^[0-9]+$ ]] && [ "$CONVERT_RUNS" -ge 1 ] || die "BENCH_CONVERT_RUNS must be >= 1"
peer_status() { jq -n --arg status "$1" --arg reason "$2" '{status: $status, reason: $reason}' >"$OUT_DIR/peers.json"; }
# timed FILE CMD...: runs CMD (output to the peer log) and appends "wall user sys" seconds to FILE.
timed() {
  local file=$1; shift
  local TIMEFORMAT='%R %U %S'
  { time "$@" >>"$peer_log" 2>&1; } 2>>"$file"
}
# registry_cpu: CPU seconds (user+sys) the registry process has used so far.
registry_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$REGISTRY_PID/stat"
}
# timed_push FILE CMD...: timed, plus the registry's CPU seconds during CMD as a fourth field.
timed_push() {
  local file=$1 before line; shift
  before=$(registry_cpu)
  timed "$file.tmp" "$@" || { rm -f "$file.tmp"; return 1; }
  line=$(cat "$file.tmp"); rm -f "$file.tmp"
  echo "$line $(awk -v a="$before" -v b="$(registry_cpu)" 'BEGIN { printf "%.2f", b - a }')" >>"$file"
}
# median_of FILE: medians of wall, of user+sys and of the fourth field (0 without one) over FILE's
# lines, as "wall cpu registry_cpu".
median_of() {
  local wall cpu reg
  wall=$(awk '{ print $1 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  cpu=$(awk '{ print $2 + $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  reg=$(awk '{ print ($4 == "" ? 0 : $4) }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "$wall $cpu $reg"
}
# warm KIND: reads the source layout's blobs, so that every timed command starts with them in the
# page cache (this VM's kernel reclaims pages that were not touched for a few seconds, and
# reading them back from disk would be charged to whichever tool came first).
warm() { cat "$WORK/src-$1"/blobs/sha256/* >/dev/null; }
# wipe_registry: drops every repository and blob (between timed pushes: each push starts from an
# empty registry, and tmpfs storage holds one image at a time). The registry keeps no cache.
wipe_registry() { rm -rf "$REG_ROOT/storage/docker"; }
# add_blob LAYOUT FILE: moves FILE into LAYOUT's blobs, prints "sha256:<hex> <size>".
add_blob() {
  local hex size
  hex=$(sha256sum "$2" | cut -d' ' -f1)
  size=$(stat -c %s "$2")
  mv "$2" "$1/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
# make_layout DIR gzip|tar: an OCI layout (tag "bench") of the generated layers.
make_layout() {
  local dir=$1 kind=$2 media i digest size diff_ids="[]" layers="[]" cfg manifest
  mkdir -p "$dir/blobs/sha256"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  for ((i = 1; i <= IMAGE_LAYERS; i++)); do
    diff_ids=$(jq -c --arg d "sha256:$(cat "$WORK/layer$i.tar.sha256")" '. + [$d]' <<<"$diff_ids")
    if [ "$kind" = gzip ]; then
      media=application/vnd.oci.image.layer.v1.tar+gzip
      cp "$WORK/layer$i.tar.gz" "$dir/layer.tmp"
    else
      media=application/vnd.oci.image.layer.v1.tar
      cp "$WORK/layer$i.tar" "$dir/layer.tmp"
    fi
    read -r digest size < <(add_blob "$dir" "$dir/layer.tmp")
    layers=$(jq -c --arg m "$media" --arg d "$digest" --argjson s "$size" \
      '. + [{mediaType: $m, digest: $d, size: $s}]' <<<"$layers")
  done
  jq -cn --argjson diff_ids "$diff_ids" \
    '{architecture: "amd64", os: "linux", config: {}, rootfs: {type: "layers", diff_ids: $diff_ids}}' \
    >"$dir/config.tmp"
  read -r digest size < <(add_blob "$dir" "$dir/config.tmp")
  jq -cn --arg d "$digest" --argjson s "$size" --argjson layers "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
      layers: $layers}' >"$dir/manifest.tmp"
  read -r digest size < <(add_blob "$dir" "$dir/manifest.tmp")
  jq -cn --arg d "$digest" --argjson s "$size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
                   annotations: {"org.opencontainers.image.ref.name": "bench"}}]}' >"$dir/index.json"
}
# registry_answers PORT: GET /v2/ on 127.0.0.1:PORT answers 200 (bash's /dev/tcp, no curl).
registry_answers() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS= read -r -t 2 status_line <&3 || exit 1
    [[ "$status_line" == HTTP/1.?" 200"* ]]
  ) 2>/dev/null
}
# start_registry: docker-registry on a free 127.0.0.1 port; sets REGISTRY_PID and REGISTRY.
start_registry() {
  local port try
  for try in 1 2 3 4 5; do
    port=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue  # in use
    mkdir -p "$REG_ROOT"
    printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
      "$REG_ROOT/storage" "$port" >"$REG_ROOT/config.yml"
    docker-registry serve "$REG_ROOT/config.yml" >>"$REG_ROOT/log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 1 100); do
      if registry_answers "$port"; then
        REGISTRY="127.0.0.1:$port"
        return 0
      fi
      kill -0 "$REGISTRY_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=""
  done
  return 1
}
# layer_json REPO: the pushed manifest's layers (via skopeo inspect --raw) as a JSON array.
layer_json() {
  skopeo inspect --raw --tls-verify=false "docker://$REGISTRY/$1:bench" | jq -c '.layers'
}
if [ "${BENCH_SKIP_SKOPEO:-0}" = 1 ]; then
  peer_status skipped "BENCH_SKIP_SKOPEO=1"
elif ! command -v skopeo >/dev/null 2>&1 || ! command -v docker-registry >/dev/null 2>&1 ||
     ! command -v zstd >/dev/null 2>&1 || ! command -v gzip >/dev/null 2>&1; then
  peer_status skipped "skopeo, docker-registry, zstd or gzip is not installed (scripts/setup.sh installs them)"
elif [ ! -x "$CLI" ]; then
  peer_status skipped "$CLI is not built"
else
  echo "bench: lazycrypt encrypt vs skopeo copy --encryption-key into a local registry" \
       "($IMAGE_LAYERS layers x $LAYER_MIB MiB, gzip and uncompressed sources, $CONVERT_RUNS runs each)" >&2
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-bench-XXXXXX")
  peer_log="$OUT_DIR/peers.log"
  : >"$peer_log"
  peer_ok=1
  (
    for ((i = 1; i <= IMAGE_LAYERS; i++)); do
      LAZYCRYPT_BENCH_TAR_MIB="$LAYER_MIB" LAZYCRYPT_BENCH_TAR_SEED="$i" \
        LAZYCRYPT_BENCH_WRITE_TAR="$WORK/layer$i.tar" "$BENCH_BIN" || exit 1
      sha256sum "$WORK/layer$i.tar" | cut -d' ' -f1 >"$WORK/layer$i.tar.sha256"
    done
    # gzip -6 (what umoci and most builders use), two layers at a time.
    pids=()
    for ((i = 1; i <= IMAGE_LAYERS; i++)); do
      gzip -6 -n -c "$WORK/layer$i.tar" >"$WORK/layer$i.tar.gz" &
      pids+=($!)
      if [ "${#pids[@]}" -ge 2 ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
    make_layout "$WORK/src-gzip" gzip && make_layout "$WORK/src-tar" tar &&
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" &&
      openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem"
  ) >>"$peer_log" 2>&1 || peer_ok=0
  # The registry's storage: tmpfs when there is room, so that the timings are the tools' and the
  # registry's work rather than the disk's writeback (each push starts from an empty registry).
  reg_where="a temporary directory (TMPDIR)"
  REG_ROOT="$WORK/registry"
  if [ "${BENCH_REGISTRY_TMPFS:-1}" = 1 ] && [ -d /dev/shm ] && [ -w /dev/shm ] &&
     [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -ge $((4 * 1024 * 1024)) ]; then
    REG_ROOT=$(mktemp -d /dev/shm/lazycrypt-bench-registry-XXXXXX)
    reg_where="tmpfs (/dev/shm)"
  fi
  [ "$peer_ok" = 1 ] && { start_registry || { echo "bench: docker-registry did not start" >>"$peer_log"; peer_ok=0; }; }
  KINDS=(gzip tar)
  if [ "$peer_ok" = 1 ]; then
    for kind in "${KINDS[@]}"; do
      : >"$WORK/skopeo-$kind.times"; : >"$WORK/lazycrypt-$kind.times"; : >"$WORK/lazycrypt3-$kind.times"
      : >"$WORK/lazycrypt-layout-$kind.times"
    done
    for ((run = 1; run <= CONVERT_RUNS; run++)); do
      for kind in "${KINDS[@]}"; do
        warm "$kind"
        timed_push "$WORK/skopeo-$kind.times" skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
          --encryption-key "jwe:$WORK/pub.pem" "oci:$WORK/src-$kind:bench" \
          "docker://$REGISTRY/sk-$kind-$run:bench" || { peer_ok=0; break 2; }
        if [ "$run" = 1 ]; then
          # What skopeo pushed: its manifest must list encrypted layers.
          skopeo inspect --tls-verify=false "docker://$REGISTRY/sk-$kind-1:bench" >>"$peer_log" 2>&1 ||
            { echo "bench: skopeo inspect failed ($kind)" >>"$peer_log"; peer_ok=0; break 2; }
          layer_json "sk-$kind-1" >"$WORK/sk-$kind.layers" || { peer_ok=0; break 2; }
          jq -e --argjson n "$IMAGE_LAYERS" 'length == $n and all(.[]; .mediaType | endswith("+encrypted"))' \
            "$WORK/sk-$kind.layers" >/dev/null ||
            { echo "bench: skopeo's layers are not all encrypted ($kind)" >>"$peer_log"; peer_ok=0; break 2; }
        fi
        wipe_registry
        warm "$kind"
        timed_push "$WORK/lazycrypt-$kind.times" "$CLI" --quiet encrypt --plain-http -r "jwe:$WORK/pub.pem" \
          "oci:$WORK/src-$kind:bench" "docker://$REGISTRY/lc-$kind-$run:bench" || { peer_ok=0; break 2; }
        if [ "$run" = 1 ]; then
          # What lazycrypt pushed: verify fetches and authenticates every chunk.
          "$CLI" --quiet verify --plain-http --key "$WORK/key.pem" "docker://$REGISTRY/lc-$kind-1:bench" \
            >>"$peer_log" 2>&1 || { echo "bench: lazycrypt verify failed ($kind)" >>"$peer_log"; peer_ok=0; break 2; }
          layer_json "lc-$kind-1" >"$WORK/lc-$kind.layers" || { peer_ok=0; break 2; }
        fi
        wipe_registry
        # Not the default: zstd's own default level (an extra row, no verdict).
        warm "$kind"
        timed_push "$WORK/lazycrypt3-$kind.times" "$CLI" --quiet encrypt --plain-http --zstd-level 3 \
          -r "jwe:$WORK/pub.pem" "oci:$WORK/src-$kind:bench" "docker://$REGISTRY/lz3-$kind-$run:bench" ||
          { peer_ok=0; break 2; }
        if [ "$run" = 1 ]; then layer_json "lz3-$kind-1" >"$WORK/lz3-$kind.layers" || { peer_ok=0; break 2; }; fi
        wipe_registry
        # The same conversion into an OCI layout on local disk: no push (an extra row, no verdict).
        warm "$kind"
        timed "$WORK/lazycrypt-layout-$kind.times" "$CLI" --quiet encrypt -r "jwe:$WORK/pub.pem" \
          "oci:$WORK/src-$kind:bench" "oci:$WORK/out-layout:bench" || { peer_ok=0; break 2; }
        rm -rf "$WORK/out-layout"
      done
    done
  fi
  kinds_json="{}"
  if [ "$peer_ok" = 1 ]; then
    for kind in "${KINDS[@]}"; do
      read -r sk_wall sk_cpu sk_reg < <(median_of "$WORK/skopeo-$kind.times")
      read -r lc_wall lc_cpu lc_reg < <(median_of "$WORK/lazycrypt-$kind.times")
      read -r lz3_wall lz3_cpu lz3_reg < <(median_of "$WORK/lazycrypt3-$kind.times")
      read -r lzl_wall lzl_cpu _ < <(median_of "$WORK/lazycrypt-layout-$kind.times")
      src_bytes=$(jq '[.layers[].size] | add' "$WORK/src-$kind/blobs/sha256/$(jq -r '.manifests[0].digest | sub("sha256:"; "")' "$WORK/src-$kind/index.json")")
      kinds_json=$(jq -c --arg kind "$kind" --argjson src "$src_bytes" \
        --slurpfile sk_layers "$WORK/sk-$kind.layers" --slurpfile lc_layers "$WORK/lc-$kind.layers" \
        --slurpfile lz3_layers "$WORK/lz3-$kind.layers" \
        --argjson sk_wall "$sk_wall" --argjson sk_cpu "$sk_cpu" --argjson sk_reg "$sk_reg" \
        --argjson lc_wall "$lc_wall" --argjson lc_cpu "$lc_cpu" --argjson lc_reg "$lc_reg" \
        --argjson lz3_wall "$lz3_wall" --argjson lz3_cpu "$lz3_cpu" --argjson lz3_reg "$lz3_reg" \
        --argjson lzl_wall "$lzl_wall" --argjson lzl_cpu "$lzl_cpu" \
        --arg sk_runs "$(cat "$WORK/skopeo-$kind.times")" --arg lc_runs "$(cat "$WORK/lazycrypt-$kind.times")" \
        '. + {($kind): {source_layer_bytes: $src,
              skopeo: {wall_s: $sk_wall, cpu_s: $sk_cpu, registry_cpu_s: $sk_reg, runs: ($sk_runs | split("\n")),
                       blob_bytes: ([$sk_layers[0][].size] | add), media_types: ([$sk_layers[0][].mediaType] | unique)},
              lazycrypt: {wall_s: $lc_wall, cpu_s: $lc_cpu, registry_cpu_s: $lc_reg, runs: ($lc_runs | split("\n")),
                          blob_bytes: ([$lc_layers[0][].size] | add), media_types: ([$lc_layers[0][].mediaType] | unique)},
              lazycrypt_zstd3: {wall_s: $lz3_wall, cpu_s: $lz3_cpu, registry_cpu_s: $lz3_reg,
                                blob_bytes: ([$lz3_layers[0][].size] | add)},
              lazycrypt_to_layout: {wall_s: $lzl_wall, cpu_s: $lzl_cpu}}}' \
        <<<"$kinds_json")
    done
  fi
  if [ "$peer_ok" = 1 ]; then
    # Reference costs of single passes over the same image, one thread each, CPU time (user+sys):
    # what the work of each tool is made of (see the explanation under the table).
    : >"$WORK/ref.times"
    ref() { timed "$WORK/ref.times" bash -c "$1"; }
    gz_list="" tar_list=""
    for ((i = 1; i <= IMAGE_LAYERS; i++)); do gz_list+=" $WORK/layer$i.tar.gz"; tar_list+=" $WORK/layer$i.tar"; done
    ref "gzip -dc $gz_list >/dev/null" &&
      ref "openssl dgst -sha256 $tar_list >/dev/null" &&
      ref "zstd -q -T1 -3 -c $tar_list >/dev/null" &&
      ref "zstd -q -T1 -1 -c $tar_list >/dev/null" &&
      ref "gzip -6 -c $tar_list >/dev/null" &&
      ref "igzip -d -c $gz_list >/dev/null" &&
      ref "zstd -q -T1 -2 -c $tar_list >/dev/null" &&
      ref "openssl dgst -sha256 $gz_list >/dev/null" || peer_ok=0
    refs_json=$(awk '{ printf "%s%.2f", (NR > 1 ? "," : "["), $2 + $3 } END { print "]" }' "$WORK/ref.times")
  fi
  if [ "$peer_ok" = 1 ]; then
    tar_bytes=0
    for ((i = 1; i <= IMAGE_LAYERS; i++)); do tar_bytes=$(( tar_bytes + $(stat -c %s "$WORK/layer$i.tar") )); done
    jq -n --argjson tar "$tar_bytes" --argjson layers "$IMAGE_LAYERS" --argjson runs "$CONVERT_RUNS" \
      --argjson kinds "$kinds_json" --argjson refs "$refs_json" --arg skopeo_version "$(skopeo --version)" \
      --arg registry_version "$(docker-registry --version 2>/dev/null | head -1)" \
      --arg gzip_version "$(gzip --version | head -1)" \
      --arg registry_storage "$reg_where" \
      '{status: "measured", tar_bytes: $tar, layers: $layers, runs: $runs, kinds: $kinds,
        registry_storage: $registry_storage,
        reference_cpu_s: {gunzip: $refs[0], sha256: $refs[1], zstd3: $refs[2], zstd1: $refs[3], gzip6: $refs[4],
                          igzip: $refs[5], zstd2: $refs[6], sha256_gzip: $refs[7]},
        skopeo_version: $skopeo_version, registry_version: $registry_version, gzip_version: $gzip_version}' \
      >"$OUT_DIR/peers.json"
  else
    peer_status failed "a step failed; see <build dir>/bench-results/peers.log"
    echo "bench: the skopeo comparison failed (see $peer_log); continuing without it" >&2
  fi
  cleanup
fi

# ---- 6. Reads through FUSE mounts (bench/fuse/run.sh; needs root and /dev/fuse) ----------------
if [ "${BENCH_SKIP_FUSE:-0}" = 1 ]; then
  echo "bench: BENCH_SKIP_FUSE=1: section 6 reuses $OUT_DIR/fuse.md if an earlier run left one" >&2
elif [ "$(id -u)" -ne 0 ] || [ ! -e /dev/fuse ]; then
  echo "bench: skipping the FUSE read benchmark (needs root and /dev/fuse)" >&2
  rm -f "$OUT_DIR/fuse.md"
else
  bash "$ROOT/bench/fuse/run.sh" "$BUILD" || die "bench/fuse/run.sh failed"
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
[ "$IMAGE_LAYERS" = 4 ] || command_line="LAZYCRYPT_BENCH_IMAGE_LAYERS=$IMAGE_LAYERS $command_line"
[ "$LAYER_MIB" = 144 ] || command_line="LAZYCRYPT_BENCH_LAYER_MIB=$LAYER_MIB $command_line"
[ "$CONVERT_RUNS" = 5 ] || command_line="BENCH_CONVERT_RUNS=$CONVERT_RUNS $command_line"
[ "${BENCH_SKIP_FORMAT:-0}" = 1 ] && command_line="BENCH_SKIP_FORMAT=1 $command_line"
[ "${BENCH_SKIP_SKOPEO:-0}" = 1 ] && command_line="BENCH_SKIP_SKOPEO=1 $command_line"
[ "${BENCH_SKIP_FUSE:-0}" = 1 ] && command_line="BENCH_SKIP_FUSE=1 $command_line"
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
