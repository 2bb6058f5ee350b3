#!/usr/bin/env bash
# bench/fuse/run.sh BUILD_DIR — FUSE read throughput: lazycrypt's mount next to a do-nothing
# passthrough FUSE filesystem (lazycrypt-bench-noopfs --backing-dir: forwards every read to the
# dataset's files on the same disk, so it pays the same cold page cache: the denominator), the same
# do-nothing filesystem serving from memory (the FUSE ceiling) and gocryptfs, all serving the same
# names and sizes, in one run, plus the plain dataset directory for orientation. Called by
# bench/run.sh or alone.
# Needs root (mounts, drop_caches, read_ahead_kb), fio, jq, fusermount3; gocryptfs is optional.
#
#   1. generates a deterministic dataset once into a temp dir: FUSE_BENCH_BIG_FILES files of
#      FUSE_BENCH_BIG_MIB MiB (16 MiB segments: AES-CTR keystream, base64 text, repetitive text,
#      keystream) and FUSE_BENCH_SMALL_FILES small files (1-64 KiB keystream), all in one directory;
#   2. for each target (plain dir, passthrough, noopfs, gocryptfs, lazycrypt), mounted in its own temp dir, one
#      at a time, with the same read_ahead_kb on every FUSE mount (FUSE_BENCH_READ_AHEAD_KB):
#      makes the data cold before every job (FUSE_BENCH_COLD), then runs fio (psync, direct=0): sequential 1 MiB
#      reads of the big files (1 job), random 4 KiB and 128 KiB reads over the big files (1 and 4
#      jobs on disjoint quarters; each block read at most once, so every read misses the page
#      cache; at most FUSE_BENCH_RUNTIME_S each); then time to first byte of cold files;
#   3. writes BUILD_DIR/bench-results/fuse.json and fuse.md (the table, also printed to stdout);
#   4. unless skipped (FUSE_BENCH_SKIP=registry), bench/fuse/ttfb_registry.sh: time to first byte of
#      cold files of a layer served from a local docker-registry with an empty chunk cache, mount
#      time, and `lazycrypt decrypt` of the same image; its table is appended to fuse.md.
# Nothing is asserted about timing. Everything mounted or started is unmounted / killed by PID on
# any exit. Exit status 0 when the run completed (a peer may be "not available"), 1 otherwise.
#
# The lazycrypt column: see lazycrypt_mount below. It is measured when LAZYCRYPT_MOUNT_CMD (or the
# default LAZYCRYPT_DEFAULT_MOUNT_CMD below) is set and BUILD_DIR/bin/lazycrypt has a `mount`
# subcommand. The command may stay in the foreground or daemonize. Placeholders:
#   {cli} BUILD_DIR/bin/lazycrypt  {key} private key (PEM)  {layout} encrypted OCI layout dir
#   {ref} oci:{layout}:bench       {mnt} mount point         {state} a fresh state/cache dir
# e.g. LAZYCRYPT_MOUNT_CMD='{cli} mount --key {key} --daemon {ref} {mnt}'
#
# Knobs (environment): FUSE_BENCH_BIG_FILES=4 FUSE_BENCH_BIG_MIB=256 FUSE_BENCH_SMALL_FILES=2000
#   FUSE_BENCH_RUNTIME_S=10 FUSE_BENCH_READ_AHEAD_KB=1024 FUSE_BENCH_TTFB_FILES=9
#   FUSE_BENCH_SKIP=list of targets to skip (plain,passthrough,noopfs,gocryptfs,lazycrypt,registry)
#   FUSE_BENCH_COLD=all   what "cold" means before each job: `all` drops the whole page cache
#                         (echo 3 > drop_caches: the files read, and whatever backs them: the
#                         dataset, gocryptfs' ciphertext, lazycrypt's chunk cache); `files` evicts
#                         only the files read (posix_fadvise DONTNEED: fio --invalidate=1, dd
#                         iflag=nocache), so backing files stay cached and the FUSE path is compared
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage

BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "fuse-bench: no build directory '$1'" >&2; exit 1; }
OUT_DIR="$BUILD/bench-results"
RAW_DIR="$OUT_DIR/fuse-raw"
NOOPFS="$BUILD/bin/lazycrypt-bench-noopfs"
TTFB="$BUILD/bin/lazycrypt-bench-ttfb"
CLI="$BUILD/bin/lazycrypt"

BIG_FILES="${FUSE_BENCH_BIG_FILES:-4}"
BIG_MIB="${FUSE_BENCH_BIG_MIB:-256}"
SMALL_FILES="${FUSE_BENCH_SMALL_FILES:-2000}"
RUNTIME_S="${FUSE_BENCH_RUNTIME_S:-10}"
READ_AHEAD_KB="${FUSE_BENCH_READ_AHEAD_KB:-1024}"
TTFB_FILES="${FUSE_BENCH_TTFB_FILES:-9}"
SKIP="${FUSE_BENCH_SKIP:-}"
COLD="${FUSE_BENCH_COLD:-all}"
SEGMENT_MIB=16

die() { echo "fuse-bench: $*" >&2; exit 1; }
log() { echo "fuse-bench: $*" >&2; }

# ---- 0. Preconditions -----------------------------------------------------------------------------
for v in BIG_FILES BIG_MIB SMALL_FILES RUNTIME_S READ_AHEAD_KB TTFB_FILES; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
[ "$BIG_FILES" -ge 1 ] || die "FUSE_BENCH_BIG_FILES must be >= 1"
[ $((BIG_MIB % SEGMENT_MIB)) -eq 0 ] && [ "$BIG_MIB" -ge "$SEGMENT_MIB" ] ||
  die "FUSE_BENCH_BIG_MIB must be a multiple of $SEGMENT_MIB"
[ "$SMALL_FILES" -ge "$TTFB_FILES" ] && [ "$TTFB_FILES" -ge 1 ] ||
  die "need FUSE_BENCH_SMALL_FILES >= FUSE_BENCH_TTFB_FILES >= 1"
[ "$COLD" = all ] || [ "$COLD" = files ] || die "FUSE_BENCH_COLD must be 'all' or 'files'"
[ "$(id -u)" = 0 ] || die "needs root (mounts, /proc/sys/vm/drop_caches, read_ahead_kb)"
for tool in fio jq awk openssl base64 fusermount3 mountpoint; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (scripts/setup.sh installs it)"
done
[ -c /dev/fuse ] || die "/dev/fuse is absent"
[ -x "$NOOPFS" ] && [ -x "$TTFB" ] ||
  die "build first: cmake --build $BUILD --target lazycrypt-bench-noopfs lazycrypt-bench-ttfb"
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
mkdir -p "$OUT_DIR"
rm -rf "$RAW_DIR"
mkdir -p "$RAW_DIR"

# ---- Cleanup: everything started or mounted is recorded here and undone on any exit -----------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-fuse-bench-XXXXXX")
WORK=$(realpath "$WORK")
PIDS=()    # daemons started, killed by PID
MOUNTS=()  # mount points, unmounted lazily if still mounted
# Mounted? Asked of /proc/self/mountinfo, never of the mount itself (a stuck daemon hangs stat()).
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
stop_pid() {  # TERM, up to 3 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}
unmount() {  # unmount MNT: polite, then lazy
  local mnt=$1
  is_mounted "$mnt" || return 0
  timeout 20 fusermount3 -u "$mnt" 2>/dev/null || timeout 20 umount "$mnt" 2>/dev/null ||
    umount -l "$mnt" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  local m p
  for m in "${MOUNTS[@]}"; do is_mounted "$m" && timeout 10 fusermount3 -u "$m" 2>/dev/null; done
  for p in "${PIDS[@]}"; do stop_pid "$p"; wait "$p" 2>/dev/null; done
  for m in "${MOUNTS[@]}"; do is_mounted "$m" && umount -l "$m" 2>/dev/null; done
  local still=0
  for m in "${MOUNTS[@]}"; do is_mounted "$m" && { log "still mounted: $m"; still=1; }; done
  if [ "$still" = 0 ]; then rm -rf "$WORK"; else log "left $WORK in place"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_mounted() {  # wait_mounted MNT PID: up to 30 s; fails if PID dies first (PID may be "")
  local mnt=$1 pid=$2
  for _ in $(seq 1 300); do
    is_mounted "$mnt" && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}
# The same read-ahead window for every FUSE mount (the kernel default is 128 KiB; a FUSE
# filesystem cannot raise it through INIT). Found via mountinfo, written to the mount's bdi.
set_read_ahead() {
  local dev
  dev=$(awk -v m="$1" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
  [ -n "$dev" ] && [ -w "/sys/class/bdi/$dev/read_ahead_kb" ] || { log "no bdi for $1"; return 0; }
  echo "$READ_AHEAD_KB" >"/sys/class/bdi/$dev/read_ahead_kb"
}
read_ahead_of() {
  local dev
  dev=$(awk -v m="$1" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
  cat "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || echo "n/a"
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
make_cold() {  # make_cold FILE...: per FUSE_BENCH_COLD
  if [ "$COLD" = all ]; then drop_caches; return; fi
  sync  # dirty pages (a freshly written dataset) cannot be evicted
  local f
  for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 1. Dataset ---------------------------------------------------------------------------------------
DATA="$WORK/dataset"
mkdir -p "$DATA"
keystream() {  # keystream SEED BYTES: deterministic pseudo-random bytes (AES-256-CTR of zeros)
  local key iv
  key=$(printf 'lazycrypt-fuse-bench-%s' "$1" | openssl dgst -sha256 -r | cut -c1-64)
  iv=$(printf '%s' "$key" | cut -c1-32)
  head -c "$2" /dev/zero | openssl enc -aes-256-ctr -K "$key" -iv "$iv" -nosalt
}
segment() {  # segment FILE SEG: 16 MiB of one of four kinds
  local bytes=$((SEGMENT_MIB << 20))
  set +o pipefail  # `yes` and base64 die of SIGPIPE when head has enough; sizes are checked below
  case $(($2 % 4)) in
    0 | 3) keystream "big-$1-$2" "$bytes" ;;                                  # incompressible
    1) keystream "text-$1-$2" "$bytes" 2>/dev/null | base64 -w 76 | head -c "$bytes" ;;  # ~75 % entropy
    2) yes "lazycrypt fuse bench file $1 segment $2 0123456789" | head -c "$bytes" ;;  # repetitive
  esac
  set -o pipefail
}
log "dataset: $BIG_FILES x $BIG_MIB MiB + $SMALL_FILES small files in $DATA"
BIG_NAMES=()
for ((f = 0; f < BIG_FILES; f++)); do
  name="big-$f.bin"
  BIG_NAMES+=("$name")
  for ((s = 0; s < BIG_MIB / SEGMENT_MIB; s++)); do segment "$f" "$s"; done >"$DATA/$name"
  [ "$(stat -c %s "$DATA/$name")" = $((BIG_MIB << 20)) ] || die "generating $name failed"
done
keystream small-pool $((64 << 20)) >"$WORK/small-pool"
for ((i = 0; i < SMALL_FILES; i++)); do
  size=$(( (1 + (i * 7919) % 64) * 1024 - (i % 3) * 100 ))
  dd if="$WORK/small-pool" of="$DATA/$(printf 'small-%04d.dat' "$i")" iflag=skip_bytes,count_bytes \
    skip=$(( (i * 104729) % ((64 << 20) - 65536) )) count="$size" bs=65536 status=none
done
rm -f "$WORK/small-pool"
find "$DATA" -maxdepth 1 -type f -printf '%f:%s\n' | sort >"$WORK/files.txt"
BIG_LIST=$(IFS=:; echo "${BIG_NAMES[*]}")
# Cold files for time to first byte: small files spread over the set, and each big file.
TTFB_NAMES=()
for ((i = 0; i < TTFB_FILES; i++)); do TTFB_NAMES+=("$(printf 'small-%04d.dat' $((i * SMALL_FILES / TTFB_FILES)))"); done

# ---- 2. Measuring one target ------------------------------------------------------------------------
JOBS=(seq1m_j1 rand4k_j1 rand4k_j4 rand128k_j1 rand128k_j4)
job_title() {
  case $1 in
    seq1m_j1) echo "sequential read, 1 MiB blocks, 1 job" ;;
    rand4k_j1) echo "random read, 4 KiB, 1 job" ;;
    rand4k_j4) echo "random read, 4 KiB, 4 jobs" ;;
    rand128k_j1) echo "random read, 128 KiB, 1 job" ;;
    rand128k_j4) echo "random read, 128 KiB, 4 jobs" ;;
  esac
}
run_fio() {  # run_fio TARGET DIR JOB
  local target=$1 dir=$2 job=$3 args
  local invalidate=0
  [ "$COLD" = files ] && invalidate=1
  args=(--name="$job" --directory="$dir" --filename="$BIG_LIST" --ioengine=psync --direct=0
        --readonly --invalidate="$invalidate" --group_reporting --output-format=json)
  case $job in
    seq1m_j1) args+=(--rw=read --bs=1M --numjobs=1 --file_service_type=sequential --runtime="$RUNTIME_S") ;;
    rand4k_j*) args+=(--rw=randread --bs=4k --runtime="$RUNTIME_S") ;;
    rand128k_j*) args+=(--rw=randread --bs=128k --runtime="$RUNTIME_S") ;;
  esac
  # Random jobs read every block at most once (fio's random map, not time_based; the runtime caps
  # them), and 4 jobs read disjoint quarters of each file: every read is a page-cache miss served by
  # the filesystem, never a hit on what the job itself read before.
  case $job in
    *_j4) args+=(--numjobs=4 --size=25% --offset_increment=25%) ;;
    rand*) args+=(--numjobs=1) ;;
  esac
  # files: fio --invalidate=1 evicts the job's files (after a sync: dirty pages would stay)
  if [ "$COLD" = all ]; then drop_caches; else sync; fi
  fio "${args[@]}" >"$RAW_DIR/$target-$job.json" 2>"$RAW_DIR/$target-$job.stderr" ||
    { log "$target $job: fio failed (see $RAW_DIR/$target-$job.stderr)"; return 1; }
}
measure() {  # measure TARGET DIR: all jobs + TTFB → $RAW_DIR/TARGET.json
  local target=$1 dir=$2 job jobs_json="{}" ttfb
  for job in "${JOBS[@]}"; do
    log "$target: $(job_title "$job")"
    run_fio "$target" "$dir" "$job" || return 1
    jobs_json=$(jq -c --arg j "$job" --slurpfile r "$RAW_DIR/$target-$job.json" \
      '. + {($j): {bw_bytes: ($r[0].jobs[0].read.bw_bytes), iops: ($r[0].jobs[0].read.iops),
                   io_bytes: ($r[0].jobs[0].read.io_bytes),
                   lat_p99_us: (($r[0].jobs[0].read.clat_ns.percentile["99.000000"] // 0) / 1000)}}' \
      <<<"$jobs_json")
  done
  local paths=() n
  for n in "${TTFB_NAMES[@]}"; do paths+=("$dir/$n"); done
  make_cold "${paths[@]}"
  "$TTFB" "${paths[@]}" >"$RAW_DIR/$target-ttfb-small.txt" || { log "$target: ttfb failed"; return 1; }
  paths=()
  for n in "${BIG_NAMES[@]}"; do paths+=("$dir/$n"); done
  make_cold "${paths[@]}"
  "$TTFB" "${paths[@]}" >"$RAW_DIR/$target-ttfb-big.txt" || { log "$target: ttfb failed"; return 1; }
  median_us() { awk '{ print $1 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f\n", v[int((NR + 1) / 2)] / 1000 }'; }
  jq -n --argjson jobs "$jobs_json" --argjson small "$(median_us "$RAW_DIR/$target-ttfb-small.txt")" \
    --argjson big "$(median_us "$RAW_DIR/$target-ttfb-big.txt")" --arg ra "$(read_ahead_of "$dir")" \
    --arg notes "${3:-}" \
    '{status: "measured", jobs: $jobs, ttfb_small_median_us: $small, ttfb_big_median_us: $big,
      read_ahead_kb: $ra, notes: $notes}' >"$RAW_DIR/$target.json"
}
not_available() {  # not_available TARGET REASON
  log "$1: not available: $2"
  jq -n --arg reason "$2" '{status: "not available", reason: $reason}' >"$RAW_DIR/$1.json"
}
finish_mount() {  # finish_mount MNT PID: unmount, then make sure the daemon is gone
  unmount "$1"
  [ -z "$2" ] || { for _ in $(seq 1 50); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done; stop_pid "$2"; }
}

# ---- 2a. The plain directory (page cache cold; orientation only) -----------------------------------
if skipped plain; then not_available plain "skipped (FUSE_BENCH_SKIP)"; else
  measure plain "$DATA" "the dataset directory on $(df --output=source "$DATA" | tail -1)" ||
    not_available plain "a measurement failed (see $RAW_DIR)"
fi

# ---- 2b. passthrough: the do-nothing filesystem forwarding reads to the dataset's files -------------
# Same binary and FUSE settings as noopfs below, plus what lazycrypt mount does (one /dev/fuse clone
# per worker thread); every read is one read of the backing file on the same disk (spliced when the
# kernel allows). This is "a do-nothing FUSE filesystem serving the same bytes with a cold page
# cache": the denominator of the lazycrypt ratio.
if skipped passthrough; then not_available passthrough "skipped (FUSE_BENCH_SKIP)"; else
  mnt="$WORK/passthrough/mnt"
  mkdir -p "$mnt"
  MOUNTS+=("$mnt")
  "$NOOPFS" -f --clone-fd --files-from "$WORK/files.txt" --backing-dir "$DATA" \
    --read-ahead-kb "$READ_AHEAD_KB" "$mnt" 2>"$RAW_DIR/passthrough.log" &
  pid=$!
  PIDS+=("$pid")
  if wait_mounted "$mnt" "$pid"; then
    set_read_ahead "$mnt"
    measure passthrough "$mnt" "same files, each read forwarded to the dataset file on disk" ||
      not_available passthrough "a measurement failed (see $RAW_DIR)"
  else
    not_available passthrough "lazycrypt-bench-noopfs --backing-dir did not mount (see $RAW_DIR/passthrough.log)"
  fi
  finish_mount "$mnt" "$pid"
fi

# ---- 2c. noopfs (memory: the FUSE ceiling) ---------------------------------------------------------
if skipped noopfs; then not_available noopfs "skipped (FUSE_BENCH_SKIP)"; else
  mnt="$WORK/noopfs/mnt"
  mkdir -p "$mnt"
  MOUNTS+=("$mnt")
  "$NOOPFS" -f --files-from "$WORK/files.txt" --read-ahead-kb "$READ_AHEAD_KB" "$mnt" \
    2>"$RAW_DIR/noopfs.log" &
  pid=$!
  PIDS+=("$pid")
  if wait_mounted "$mnt" "$pid"; then
    set_read_ahead "$mnt"
    measure noopfs "$mnt" "same names and sizes; bytes from an in-memory pattern" ||
      not_available noopfs "a measurement failed (see $RAW_DIR)"
  else
    not_available noopfs "lazycrypt-bench-noopfs did not mount (see $RAW_DIR/noopfs.log)"
  fi
  finish_mount "$mnt" "$pid"
fi

# ---- 2d. gocryptfs (the dataset copied in, then unmounted and remounted cold) ----------------------
if skipped gocryptfs; then not_available gocryptfs "skipped (FUSE_BENCH_SKIP)"
elif ! command -v gocryptfs >/dev/null 2>&1; then not_available gocryptfs "gocryptfs is not installed"
else
  gdir="$WORK/gocryptfs"
  mnt="$gdir/mnt"
  mkdir -p "$gdir/cipher" "$mnt"
  MOUNTS+=("$mnt")
  glog="$RAW_DIR/gocryptfs.log"
  gocrypt_mount() {  # foreground in the background, so that its PID is ours
    gocryptfs -fg -q -extpass 'echo PASS' "$gdir/cipher" "$mnt" >>"$glog" 2>&1 &
    gpid=$!
    PIDS+=("$gpid")
    wait_mounted "$mnt" "$gpid"
  }
  if gocryptfs -init -q -extpass 'echo PASS' -scryptn 10 "$gdir/cipher" >>"$glog" 2>&1 && gocrypt_mount; then
    log "gocryptfs: copying the dataset in"
    cp -a "$DATA/." "$mnt/" && sync
    finish_mount "$mnt" "$gpid"
    if gocrypt_mount; then
      set_read_ahead "$mnt"
      measure gocryptfs "$mnt" "$(gocryptfs --version | head -1)" ||
        not_available gocryptfs "a measurement failed (see $RAW_DIR)"
    else
      not_available gocryptfs "the remount failed (see $glog)"
    fi
    finish_mount "$mnt" "$gpid"
  else
    not_available gocryptfs "gocryptfs -init or mount failed (see $glog)"
  fi
fi

# ---- 2e. lazycrypt ----------------------------------------------------------------------------------
# lazycrypt_mount WORKDIR MNT: makes an OCI image of the dataset (umoci, one layer), encrypts it with
# `lazycrypt encrypt`, mounts its layer at MNT with LAZYCRYPT_MOUNT_CMD and warms the chunk cache
# by reading every file once. Sets LC_PID (the daemon's PID: the command's own when it stays in the
# foreground, else the process whose command line names MNT). Returns 1 with LC_REASON set when it
# cannot.
# THE ONE LINE TO FILL IN once `lazycrypt mount` exists (LAZYCRYPT_MOUNT_CMD still overrides it):
#   LAZYCRYPT_DEFAULT_MOUNT_CMD='{cli} mount --key {key} --daemon {ref} {mnt}'
LAZYCRYPT_DEFAULT_MOUNT_CMD='{cli} mount --key {key} --cache-dir {state}/cache --stats-file {state}/stats.json --daemon {ref} {mnt}'
LAZYCRYPT_MOUNT_TEMPLATE="${LAZYCRYPT_MOUNT_CMD:-$LAZYCRYPT_DEFAULT_MOUNT_CMD}"
LC_PID=""
LC_REASON=""
lazycrypt_mount() {
  local work=$1 mnt=$2 llog="$RAW_DIR/lazycrypt.log" cmd
  if [ -z "$LAZYCRYPT_MOUNT_TEMPLATE" ]; then
    LC_REASON="LAZYCRYPT_MOUNT_CMD is not set (and bench/fuse/run.sh has no default yet)"; return 1
  fi
  if [ ! -x "$CLI" ]; then LC_REASON="$CLI is not built"; return 1; fi
  if ! "$CLI" mount --help >/dev/null 2>&1; then LC_REASON="$CLI has no mount subcommand"; return 1; fi
  command -v umoci >/dev/null 2>&1 || { LC_REASON="umoci is not installed"; return 1; }
  log "lazycrypt: building and encrypting an OCI image of the dataset"
  {
    tar -C "$DATA" -cf "$work/dataset.tar" . &&
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" &&
      openssl pkey -in "$work/key.pem" -pubout -out "$work/pub.pem" &&
      umoci init --layout "$work/src" &&
      umoci new --image "$work/src:bench" &&
      umoci raw add-layer --no-history --image "$work/src:bench" "$work/dataset.tar" &&
      rm -f "$work/dataset.tar" &&
      "$CLI" encrypt -r "jwe:$work/pub.pem" "oci:$work/src:bench" "oci:$work/enc:bench"
  } >>"$llog" 2>&1 || { LC_REASON="building or encrypting the image failed (see $llog)"; return 1; }
  mkdir -p "$work/state"
  cmd=$LAZYCRYPT_MOUNT_TEMPLATE
  cmd=${cmd//\{cli\}/$CLI}
  cmd=${cmd//\{key\}/$work/key.pem}
  cmd=${cmd//\{layout\}/$work/enc}
  cmd=${cmd//\{ref\}/oci:$work/enc:bench}
  cmd=${cmd//\{mnt\}/$mnt}
  cmd=${cmd//\{state\}/$work/state}
  echo "+ $cmd" >>"$llog"
  bash -c "$cmd" >>"$llog" 2>&1 &
  local launcher=$!
  PIDS+=("$launcher")
  if ! wait_mounted "$mnt" ""; then LC_REASON="the mount did not appear within 30 s (see $llog)"; return 1; fi
  if kill -0 "$launcher" 2>/dev/null; then
    LC_PID=$launcher
  else  # daemonized: the process whose argv names our (unique, mktemp) mount point
    local p
    for p in /proc/[0-9]*; do
      [ "${p#/proc/}" = "$$" ] && continue
      if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF "$mnt"; then LC_PID=${p#/proc/}; break; fi
    done
    [ -n "$LC_PID" ] && PIDS+=("$LC_PID")
  fi
  log "lazycrypt: warming the chunk cache (reading every file once)"
  find "$mnt" -type f -exec cat {} + >/dev/null || { LC_REASON="reading the mount failed (see $llog)"; return 1; }
  return 0
}
if skipped lazycrypt; then not_available lazycrypt "skipped (FUSE_BENCH_SKIP)"; else
  lwork="$WORK/lazycrypt"
  mnt="$lwork/mnt"
  mkdir -p "$mnt"
  MOUNTS+=("$mnt")
  if lazycrypt_mount "$lwork" "$mnt"; then
    set_read_ahead "$mnt"
    measure lazycrypt "$mnt" "warm chunk cache, cold page cache" ||
      not_available lazycrypt "a measurement failed (see $RAW_DIR)"
  else
    not_available lazycrypt "$LC_REASON"
  fi
  finish_mount "$mnt" "$LC_PID"
fi

# ---- 3. Results ---------------------------------------------------------------------------------------
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
jq -n \
  --slurpfile plain "$RAW_DIR/plain.json" --slurpfile passthrough "$RAW_DIR/passthrough.json" \
  --slurpfile noopfs "$RAW_DIR/noopfs.json" \
  --slurpfile gocryptfs "$RAW_DIR/gocryptfs.json" --slurpfile lazycrypt "$RAW_DIR/lazycrypt.json" \
  --arg date "$(date -u '+%Y-%m-%d %H:%M')" --arg kernel "$(uname -sr)" --arg cpu "$cpu" \
  --arg cores "$(nproc)" --arg fio "$(fio --version)" \
  --arg load_start "$LOAD_START" --arg load_end "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson big_files "$BIG_FILES" --argjson big_mib "$BIG_MIB" --argjson small_files "$SMALL_FILES" \
  --argjson runtime_s "$RUNTIME_S" --argjson read_ahead_kb "$READ_AHEAD_KB" --arg cold "$COLD" \
  '{meta: {date: $date, kernel: $kernel, cpu: $cpu, cores: $cores, fio: $fio,
           load_start: $load_start, load_end: $load_end,
           dataset: {big_files: $big_files, big_mib: $big_mib, small_files: $small_files},
           runtime_s: $runtime_s, fuse_read_ahead_kb: $read_ahead_kb, cold: $cold},
    targets: {plain: $plain[0], passthrough: $passthrough[0], noopfs: $noopfs[0], gocryptfs: $gocryptfs[0], lazycrypt: $lazycrypt[0]}}' \
  >"$OUT_DIR/fuse.json"

jq -r '
  def measured(t): .targets[t].status == "measured";
  def mbs(b): (b / 1e6 | . * 10 | round / 10);
  def cell(t; j): if measured(t) then .targets[t].jobs[j] as $r |
      "\(mbs($r.bw_bytes)) MB/s, \($r.iops | round) IOPS" else "n/a" end;
  def ratio(a; b; j): if measured(a) and measured(b) and (.targets[b].jobs[j].bw_bytes > 0) then
      "\((.targets[a].jobs[j].bw_bytes / .targets[b].jobs[j].bw_bytes * 100) | round) %" else "n/a" end;
  def ttfb(t; k): if measured(t) then "\(.targets[t][k]) µs" else "n/a" end;
  def title(j): {seq1m_j1: "sequential read, 1 MiB, 1 job", rand4k_j1: "random read, 4 KiB, 1 job",
                 rand4k_j4: "random read, 4 KiB, 4 jobs", rand128k_j1: "random read, 128 KiB, 1 job",
                 rand128k_j4: "random read, 128 KiB, 4 jobs"}[j];
  . as $all |
  "FUSE read throughput (\(.meta.date) UTC; \(.meta.cpu), \(.meta.cores) cores; \(.meta.kernel); \(.meta.fio); load average \(.meta.load_start) at the start, \(.meta.load_end) at the end)",
  "Dataset: \(.meta.dataset.big_files) files x \(.meta.dataset.big_mib) MiB (mixed compressibility) + \(.meta.dataset.small_files) small files. \(if .meta.cold == "all" then "Whole page cache dropped before every job (the files read and what backs them)" else "Only the files read evicted from the page cache before every job (backing files stay cached)" end); fio psync, buffered; random jobs read each block at most once (at most \(.meta.runtime_s) s); read_ahead_kb \(.meta.fuse_read_ahead_kb) on every FUSE mount.",
  "",
  "| job | plain dir (disk) | passthrough FUSE (do-nothing, disk) | noopfs (FUSE ceiling, memory) | gocryptfs | lazycrypt | lazycrypt / passthrough | lazycrypt / gocryptfs | lazycrypt / noopfs (memory) |",
  "|---|---|---|---|---|---|---|---|---|",
  (["seq1m_j1", "rand4k_j1", "rand4k_j4", "rand128k_j1", "rand128k_j4"][] as $j |
    "| \(title($j)) | \($all | cell("plain"; $j)) | \($all | cell("passthrough"; $j)) | \($all | cell("noopfs"; $j)) | \($all | cell("gocryptfs"; $j)) | \($all | cell("lazycrypt"; $j)) | \($all | ratio("lazycrypt"; "passthrough"; $j)) | \($all | ratio("lazycrypt"; "gocryptfs"; $j)) | \($all | ratio("lazycrypt"; "noopfs"; $j)) |"),
  "| time to first byte, cold small file (median) | \(ttfb("plain"; "ttfb_small_median_us")) | \(ttfb("passthrough"; "ttfb_small_median_us")) | \(ttfb("noopfs"; "ttfb_small_median_us")) | \(ttfb("gocryptfs"; "ttfb_small_median_us")) | \(ttfb("lazycrypt"; "ttfb_small_median_us")) | | | |",
  "| time to first byte, cold big file (median) | \(ttfb("plain"; "ttfb_big_median_us")) | \(ttfb("passthrough"; "ttfb_big_median_us")) | \(ttfb("noopfs"; "ttfb_big_median_us")) | \(ttfb("gocryptfs"; "ttfb_big_median_us")) | \(ttfb("lazycrypt"; "ttfb_big_median_us")) | | | |",
  "",
  (.targets | to_entries[] | select(.value.status != "measured") | "- \(.key): \(.value.status) (\(.value.reason))"),
  (if measured("lazycrypt") then "- lazycrypt: warm chunk cache, cold page cache; targets: sequential >= 85 % of the do-nothing passthrough, faster than gocryptfs." else empty end)
' "$OUT_DIR/fuse.json" | tee "$OUT_DIR/fuse.md"
log "wrote $OUT_DIR/fuse.json and $OUT_DIR/fuse.md (raw fio output in $RAW_DIR)"

# ---- 4. Time to first byte from a local registry ---------------------------------------------------
if ! skipped registry; then
  rm -f "$OUT_DIR/ttfb-registry.md"
  if bash "$(dirname "$0")/ttfb_registry.sh" "$BUILD" >/dev/null && [ -f "$OUT_DIR/ttfb-registry.md" ]; then
    { echo; cat "$OUT_DIR/ttfb-registry.md"; } | tee -a "$OUT_DIR/fuse.md"
  else
    log "ttfb_registry.sh failed (its messages are above); fuse.md has no registry table"
    printf '\n- time to first byte from a local registry: not measured (ttfb_registry.sh failed)\n' >>"$OUT_DIR/fuse.md"
  fi
fi
