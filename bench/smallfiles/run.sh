#!/usr/bin/env bash
# bench/smallfiles/run.sh BUILD_DIR — many small files (issue 19): metadata and small reads through
# a container's overlayfs whose lower layer is a lazycrypt FUSE mount, next to the same tree
# unpacked on the local disk under overlayfs. Root (mounts, drop_caches, tracefs). Not in CI.
#
#   1. builds a node_modules-like layer once (bench/smallfiles/make_tree.py: SF_FILES files of
#      100 B - 8 KiB, log-uniform sizes, deterministic from SF_SEED), makes a one-layer OCI image
#      of it (umoci), encrypts it with `lazycrypt encrypt`, and unpacks the same tar into a plain
#      directory (the overlayfs baseline);
#   2. for each target (lazycrypt: `lazycrypt mount --daemon` of the layer, chunk cache on disk,
#      no background verification; plain: the unpacked directory) and each of SF_RUNS runs:
#        bare    a fresh mount (lazycrypt) and dropped caches, then `find LOWER` twice: cold, warm;
#        overlay a fresh mount and dropped caches, then `find` through overlayfs #1 (cold), through
#                a new overlayfs #2 over the same lower (warm: what the next container sees),
#                reading every file through #2 (read cold: fetches/decrypts chunks for lazycrypt),
#                and reading every file through a new overlayfs #3 (read warm);
#      each overlay is mounted as containerd mounts a container's rootfs (lowerdir=LOWER, an
#      upperdir and workdir on the local disk, index=off);
#   3. counts the FUSE requests of every step by opcode with the kernel's fuse_request_send
#      tracepoint (a tracefs instance of its own, filtered on the mount's connection) and records
#      the daemon's RSS after the mount, after the finds and after reading every file;
#   4. writes SF_OUT/results.tsv and SF_OUT/smallfiles.md (medians; per step the FUSE requests by
#      opcode of the last run), also printed to stdout.
# Nothing is asserted about timing. Every mount and process it made is removed on exit (by PID).
#
# Knobs (environment): SF_FILES=100000 SF_RUNS=3 SF_SEED=1 SF_TARGETS="lazycrypt plain"
#   SF_XATTR=0 (1: one file of the layer carries an xattr, user.bench, so the layer "has xattrs"
#   and the daemon must answer overlayfs' per-file xattr questions itself)
#   SF_OUT=BUILD_DIR/bench-results/smallfiles SF_WORK= (reuse a work dir, e.g. to keep the
#   generated layer across runs; default: a fresh one, removed on exit unless SF_KEEP=1)
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "smallfiles: no build directory '$1'" >&2; exit 1; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLI="$BUILD/bin/lazycrypt"

FILES="${SF_FILES:-100000}"
RUNS="${SF_RUNS:-3}"
SEED="${SF_SEED:-1}"
TARGETS="${SF_TARGETS:-lazycrypt plain}"
OUT="${SF_OUT:-$BUILD/bench-results/smallfiles}"
KEEP="${SF_KEEP:-0}"
XATTR="${SF_XATTR:-0}"

die() { echo "smallfiles: $*" >&2; exit 1; }
log() { echo "smallfiles: $*" >&2; }

for v in FILES RUNS SEED; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "SF_$v must be a whole number (got '${!v}')"
done
[ "$(id -u)" -eq 0 ] || die "needs root (mounts, drop_caches, tracefs)"
[ -x "$CLI" ] || die "$CLI is not built (make build)"
for tool in umoci openssl python3 tar find awk; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [ -n "${SF_WORK:-}" ]; then
  WORK="$SF_WORK"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d /var/tmp/lazycrypt-smallfiles.XXXXXX)"
fi
mkdir -p "$OUT"
TRACE=""
DAEMON_PID=""

cleanup() {
  set +e
  awk -v p="$WORK/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ -n "$DAEMON_PID" ]; then kill -TERM "$DAEMON_PID" 2>/dev/null; fi
  if [ -n "$TRACE" ] && [ -d "$TRACE" ]; then
    echo 0 >"$TRACE/events/fuse/fuse_request_send/enable"
    rmdir "$TRACE"
  fi
  if [ -z "${SF_WORK:-}" ] && [ "$KEEP" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- 1. The layer ----------------------------------------------------------------------------------
if [ ! -f "$WORK/enc/index.json" ] || [ ! -d "$WORK/plain" ]; then
  log "making $FILES files (seed $SEED) in $WORK"
  rm -rf "$WORK/tree" "$WORK/src" "$WORK/enc" "$WORK/plain"
  python3 "$ROOT/bench/smallfiles/make_tree.py" "$WORK/tree" "$FILES" "$SEED"
  if [ "$XATTR" = 1 ]; then
    setfattr -n user.bench -v 1 "$WORK/tree/node_modules/pkg00001/f0000.js"
  fi
  tar --format=pax --xattrs --xattrs-include='user.*' --numeric-owner -C "$WORK/tree" -cf "$WORK/layer.tar" .
  mkdir -p "$WORK/plain"
  tar --xattrs --xattrs-include='user.*' --numeric-owner -C "$WORK/plain" -xf "$WORK/layer.tar"
  rm -rf "$WORK/tree"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
  openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem"
  umoci init --layout "$WORK/src"
  umoci new --image "$WORK/src:bench"
  umoci raw add-layer --no-history --image "$WORK/src:bench" "$WORK/layer.tar"
  rm -f "$WORK/layer.tar"
  log "encrypting the layer (lazycrypt encrypt)"
  "$CLI" encrypt -r "jwe:$WORK/pub.pem" "oci:$WORK/src:bench" "oci:$WORK/enc:bench" >/dev/null
fi
ENTRIES=$(find "$WORK/plain" | wc -l)

# ---- Helpers ----------------------------------------------------------------------------------------
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# A tracefs instance of our own: the global buffer and other users' events stay untouched.
TRACEFS=/sys/kernel/tracing
if [ ! -d "$TRACEFS/events" ]; then mount -t tracefs nodev "$TRACEFS" 2>/dev/null || true; fi
if [ -d "$TRACEFS/events/fuse/fuse_request_send" ]; then
  TRACE="$TRACEFS/instances/lazycrypt-smallfiles-$$"
  mkdir "$TRACE"
  echo 131072 >"$TRACE/buffer_size_kb"  # per CPU; no event may be lost
else
  log "no fuse tracepoints (Linux < 6.14 or no tracefs): FUSE requests are not counted"
fi

# trace_start CONNECTION: counts the FUSE requests of connection (device minor) CONNECTION.
trace_start() {
  [ -n "$TRACE" ] || return 0
  echo 0 >"$TRACE/events/fuse/fuse_request_send/enable"
  echo "connection == $1" >"$TRACE/events/fuse/fuse_request_send/filter"
  echo >"$TRACE/trace"
  echo 1 >"$TRACE/events/fuse/fuse_request_send/enable"
}
# trace_stop: prints "TOTAL OP=N OP=N ..." (opcode names without FUSE_), or "-" when not traced.
trace_stop() {
  [ -n "$TRACE" ] || { echo "-"; return 0; }
  echo 0 >"$TRACE/events/fuse/fuse_request_send/enable"
  local lost
  lost=$(cat "$TRACE"/per_cpu/cpu*/stats | awk '/^overrun:/ { n += $2 } END { print n + 0 }')
  [ "$lost" -eq 0 ] || log "warning: $lost trace events lost (counts are low)"
  { grep -o 'opcode [0-9]* ([A-Z_]*)' "$TRACE/trace" || true; } | awk '
    { sub(/^\(FUSE_/, "", $3); sub(/\)$/, "", $3); n[$3]++; total++ }
    END { printf "%d", total; for (k in n) printf " %s=%d", k, n[k]; printf "\n" }'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# lc_mount MNT: mounts the layer at MNT (daemon), sets DAEMON_PID and CONN.
lc_mount() {
  local mnt=$1 p
  mkdir -p "$mnt" "$WORK/cache"
  "$CLI" mount --key "$WORK/key.pem" --cache-dir "$WORK/cache" --no-verify \
    --stats-file "$WORK/stats.json" --log "$WORK/daemon.log" --daemon "oci:$WORK/enc:bench" "$mnt" \
    >/dev/null
  DAEMON_PID=""
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF "$mnt"; then DAEMON_PID=${p#/proc/}; break; fi
  done
  [ -n "$DAEMON_PID" ] || die "no daemon serves $mnt"
  CONN=$(mountpoint -d "$mnt" | cut -d: -f2)
}
lc_umount() {
  "$CLI" umount "$1" >/dev/null 2>&1 || { umount -l "$1"; kill -TERM "$DAEMON_PID" 2>/dev/null || true; }
  DAEMON_PID=""
}

# overlay_mount LOWER N: a container-like overlayfs over LOWER at $WORK/ovl/N/merged; echoes it.
overlay_mount() {
  local d="$WORK/ovl/$2"
  rm -rf "$d"
  mkdir -p "$d/upper" "$d/work" "$d/merged"
  mount -t overlay overlay -o "lowerdir=$1,upperdir=$d/upper,workdir=$d/work,index=off" "$d/merged"
  echo "$d/merged"
}
overlay_umount() { umount "$WORK/ovl/$1/merged"; rm -rf "$WORK/ovl/$1"; }

RESULTS="$OUT/results.tsv"
printf 'target\trun\tstep\tseconds\tfuse_requests\tby_opcode\n' >"$RESULTS"
RSSFILE="$OUT/rss.tsv"
printf 'target\trun\tpoint\trss_kib\tchunk_cache_kib\n' >"$RSSFILE"

# step TARGET RUN NAME COMMAND...: times COMMAND (its output discarded), counting FUSE requests.
step() {
  local target=$1 run=$2 name=$3 t0 t1 counts
  shift 3
  if [ "$target" = lazycrypt ]; then trace_start "$CONN"; fi
  t0=$(now)
  "$@" >/dev/null
  t1=$(now)
  counts="-"
  if [ "$target" = lazycrypt ]; then counts=$(trace_stop); fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$run" "$name" "$(secs "$t0" "$t1")" \
    "${counts%% *}" "$( [ "$counts" = "${counts#* }" ] && echo - || echo "${counts#* }")" >>"$RESULTS"
  log "$target run $run: $name $(secs "$t0" "$t1") s, FUSE requests: $counts"
}
# rss TARGET RUN POINT: the daemon's VmRSS and the plaintext chunk cache it holds then
# (memory_cache_bytes of its stats file, rewritten every second: read after 1.5 s), so that the
# rest, what the layer's metadata and the allocator keep, can be told apart from the chunk budget.
rss() {
  [ "$1" = lazycrypt ] || return 0
  sleep 1.5
  local cache_kib
  cache_kib=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("memory_cache_bytes", 0) // 1024)' \
    "$WORK/stats.json" 2>/dev/null || echo 0)
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(rss_kib "$DAEMON_PID")" "$cache_kib" >>"$RSSFILE"
}
# Stats every entry as busybox find (and ls -l, du, node's module resolution) does; GNU find
# without predicates would go by d_type alone.
find_all() { find "$1" -printf '%s\n' >/dev/null; }
read_all() { find "$1" -type f -exec cat {} + >/dev/null; }

# ---- 2. Runs -----------------------------------------------------------------------------------------
for run in $(seq "$RUNS"); do
  for target in $TARGETS; do
    case "$target" in
      lazycrypt)
        lower="$WORK/lc-mnt"
        lc_mount "$lower"; drop_caches; rss "$target" "$run" mounted
        step "$target" "$run" bare-find-cold find_all "$lower"
        step "$target" "$run" bare-find-warm find_all "$lower"
        lc_umount "$lower"
        lc_mount "$lower"; drop_caches ;;
      plain)
        lower="$WORK/plain"
        drop_caches
        step "$target" "$run" bare-find-cold find_all "$lower"
        step "$target" "$run" bare-find-warm find_all "$lower"
        drop_caches ;;
      *) die "SF_TARGETS: unknown target '$target' (lazycrypt plain)" ;;
    esac
    m=$(overlay_mount "$lower" 1)
    step "$target" "$run" overlay-find-cold find_all "$m"
    overlay_umount 1
    m=$(overlay_mount "$lower" 2)
    step "$target" "$run" overlay-find-warm find_all "$m"
    rss "$target" "$run" after-find
    step "$target" "$run" overlay-read-cold read_all "$m"
    overlay_umount 2
    m=$(overlay_mount "$lower" 3)
    step "$target" "$run" overlay-read-warm read_all "$m"
    overlay_umount 3
    rss "$target" "$run" after-read-all
    if [ "$target" = lazycrypt ]; then lc_umount "$lower"; fi
  done
done

# ---- 3. Report ---------------------------------------------------------------------------------------
{
  echo "Many small files: $FILES files ($ENTRIES entries with directories; layer xattrs: $([ "$XATTR" = 1 ] && echo one || echo none)), $RUNS runs, medians (seconds);"
  echo "kernel $(uname -r), $(nproc) CPUs. FUSE requests (per step, last run) from the fuse_request_send tracepoint."
  echo
  echo "| step | $(echo "$TARGETS" | sed 's/ / | /g') | FUSE requests (lazycrypt) |"
  echo "|---|$(for _ in $TARGETS; do printf -- '---|'; done)---|"
  for s in bare-find-cold bare-find-warm overlay-find-cold overlay-find-warm overlay-read-cold overlay-read-warm; do
    printf '| %s |' "$s"
    for t in $TARGETS; do
      awk -F'\t' -v t="$t" -v s="$s" '$1 == t && $3 == s { print $4 }' "$RESULTS" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) printf " - |"; else printf " %s |", v[int((NR + 1) / 2)] }'
    done
    awk -F'\t' -v s="$s" -v r="$RUNS" '$1 == "lazycrypt" && $3 == s && $2 == r { printf " %s (%s) |", $5, $6; f = 1 }
      END { if (!f) printf " - |" }' "$RESULTS"
    echo
  done
  if grep -q '^lazycrypt' "$RSSFILE"; then
    echo
    echo "lazycrypt daemon RSS (median of the runs): $(for p in mounted after-find after-read-all; do
      awk -F'\t' -v p="$p" '$1 == "lazycrypt" && $3 == p { print $4 }' "$RSSFILE" | sort -n |
        awk -v p="$p" -v f="$ENTRIES" '{ v[NR] = $1 } END { if (NR) printf "%s %.1f MiB (%.0f B/entry); ", p, v[int((NR + 1) / 2)] / 1024, v[int((NR + 1) / 2)] * 1024 / f }'
    done)"
    echo "the same less the plaintext chunk cache it held (median): $(for p in mounted after-find after-read-all; do
      awk -F'\t' -v p="$p" '$1 == "lazycrypt" && $3 == p { print $4 - $5 }' "$RSSFILE" | sort -n |
        awk -v p="$p" -v f="$ENTRIES" '{ v[NR] = $1 } END { if (NR) printf "%s %.1f MiB (%.0f B/entry); ", p, v[int((NR + 1) / 2)] / 1024, v[int((NR + 1) / 2)] * 1024 / f }'
    done)"
  fi
} | tee "$OUT/smallfiles.md"
