#!/usr/bin/env bash
# bench/memory/run.sh BUILD_DIR — the node-wide plaintext budget (issue 19): the snapshotter's
# memory with many large lazycrypt layers mounted and read through containerd. Root. Not in CI.
#
#   1. makes MEM_LAYERS images (busybox + one data layer of MEM_LAYER_MIB MiB in 16 MiB files:
#      half AES-CTR keystream, incompressible; half base64 of keystream, ~1.3x), each data layer
#      encrypted with `lazycrypt encrypt` straight into one docker-registry (the plain layer tar is
#      deleted once pushed: disk holds the encrypted layers only); the time of each step is logged;
#   2. for each budget in MEM_BUDGETS (MiB): a fresh lazycrypt-snapshotter with
#      `[cache] plaintext_budget` = that budget and a fresh containerd; `lazycrypt pull` of every
#      image (every data layer FUSE-mounted lazily, all at once); then one `ctr run` per image, one
#      after the other, that reads every file of its data layer (`cat /data/lN/*`), while the
#      snapshotter's VmRSS is sampled every 0.2 s; then MEM_SETTLE_S seconds of idle;
#   3. records the snapshotter's VmRSS after the pulls (mounted), the highest sample while reading,
#      VmRSS after reading and after the idle, VmHWM, and what the node-wide cache holds
#      (/metrics lazycrypt_plaintext_bytes), in MEM_OUT/results.tsv and MEM_OUT/memory.md.
# The background verification is held off (verify_delay 1 hour, the most the config takes) so
# that the numbers are those of reads; MEM_VERIFY=1 lets it start 5 s after each mount. Nothing is asserted. Every daemon and
# mount it made is stopped and removed on exit (by PID).
#
# Knobs (environment): MEM_LAYERS=20 MEM_LAYER_MIB=1024 MEM_BUDGETS="64 256" MEM_SETTLE_S=5
#   MEM_STORE_MIB=4096 (the ciphertext chunk store's bound on disk) MEM_VERIFY=0
#   MEM_OUT=BUILD_DIR/bench-results/memory MEM_WORK= (reuse a work dir: its registry storage and
#   images are kept and reused; default: a fresh one, removed on exit unless MEM_KEEP=1)
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "memory: no build directory '$1'" >&2; exit 1; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
LC_LOG_PREFIX=memory

LAYERS="${MEM_LAYERS:-20}"
LAYER_MIB="${MEM_LAYER_MIB:-1024}"
BUDGETS="${MEM_BUDGETS:-64 256}"
SETTLE_S="${MEM_SETTLE_S:-5}"
STORE_MIB="${MEM_STORE_MIB:-4096}"
VERIFY="${MEM_VERIFY:-0}"
OUT="${MEM_OUT:-$BUILD/bench-results/memory}"
KEEP="${MEM_KEEP:-0}"

die() { echo "memory: $*" >&2; exit 1; }
log() { echo "memory: $(date +%T) $*" >&2; }

for v in LAYERS LAYER_MIB SETTLE_S STORE_MIB; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "MEM_$v must be a whole number (got '${!v}')"
done
[ "$LAYER_MIB" -ge 16 ] || die "MEM_LAYER_MIB must be >= 16"
[ "$(id -u)" -eq 0 ] || die "needs root (FUSE mounts, containerd)"
for tool in openssl python3 tar base64 containerd ctr runc docker-registry busybox curl umoci; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [ -n "${MEM_WORK:-}" ]; then
  work="$MEM_WORK"
  mkdir -p "$work"
else
  work="$(mktemp -d /var/tmp/lazycrypt-memory.XXXXXX)"
fi
mkdir -p "$OUT"
# The binaries the run uses, copied: a rebuild meanwhile does not change them under it.
BIN="$work/bin"
mkdir -p "$BIN"
for b in lazycrypt lazycrypt-snapshotter lazycrypt-fdholder; do
  if [ -x "$BUILD/bin/$b" ]; then cp --remove-destination "$BUILD/bin/$b" "$BIN/$b"
  elif [ ! -x "$BIN/$b" ]; then die "$BUILD/bin/$b is not built (make build)"; fi
done

pids=()
node="$work/node"
ctd_sock="$node/containerd/containerd.sock"
cleanup() {
  set +e
  kill_ctr_tasks "$ctd_sock" mem
  [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
  umount_under "$work"
  # The fd holder the snapshotter started (it outlives it by design), found by its binary.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$BIN/lazycrypt-fdholder" ] && kill "${p#/proc/}"
  done
  rm -rf "$node"
  if [ -z "${MEM_WORK:-}" ] && [ "$KEEP" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- 1. Registry and images ----------------------------------------------------------------------
reg_port=$(free_port)
REG=127.0.0.1:$reg_port
mkdir -p "$work/registry"
write_registry_config "$work/registry/config.yml" "$work/registry/storage" "$REG"
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
reg_pid=$!
pids+=("$reg_pid")
wait_for "the registry" 20 curl -sf "http://$REG/v2/"

if [ ! -f "$work/node.pem" ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/node.pem" 2>/dev/null
  openssl pkey -in "$work/node.pem" -pubout -out "$work/node.pub.pem"
fi
mkdir -p "$work/keys"
install -m 0600 "$work/node.pem" "$work/keys/node.pem"

# gen_tree DIR N: MEM_LAYER_MIB MiB in 16 MiB files under DIR/data/lN, deterministic from N: odd
# files AES-CTR keystream (incompressible), even ones base64 of keystream (compresses ~1.3x).
gen_tree() {
  local dir=$1 n=$2 key f files=$((LAYER_MIB / 16))
  key=$(printf 'lazycrypt-memory-%s' "$n" | sha256sum | cut -c1-64)
  mkdir -p "$dir/data/l$n"
  exec 3< <(openssl enc -aes-256-ctr -nosalt -K "$key" -iv 00000000000000000000000000000001 -in /dev/zero 2>/dev/null)
  exec 4< <(openssl enc -aes-256-ctr -nosalt -K "$key" -iv 00000000000000000000000000000002 -in /dev/zero 2>/dev/null | base64 -w 76)
  for ((f = 0; f < files; f++)); do
    if ((f % 2)); then head -c 16777216 <&3 >"$dir/data/l$n/f$f.bin"
    else head -c 16777216 <&4 >"$dir/data/l$n/f$f.txt"; fi
  done
  exec 3<&- 4<&-
  find "$dir" -exec touch -h -d '2024-01-01T00:00:00Z' {} +
}

[ -d "$work/base" ] || bash "$ROOT/tests/data/make-busybox-image.sh" "$work/base" latest >/dev/null
gen_total=0
for ((i = 1; i <= LAYERS; i++)); do
  [ -f "$work/pushed.$i.$LAYER_MIB" ] && continue
  t0=$(now)
  rm -rf "$work/tree" "$work/img"
  gen_tree "$work/tree" "$i"
  tar --numeric-owner --sort=name -C "$work/tree" -cf "$work/layer.tar" data
  rm -rf "$work/tree"
  cp -a "$work/base" "$work/img"
  python3 "$ROOT/bench/memory/add_tar_layer.py" "$work/img" latest "$work/layer.tar"
  t1=$(now)
  "$BIN/lazycrypt" encrypt --plain-http --layers 1 --recipient "jwe:$work/node.pub.pem" \
    "oci:$work/img:latest" "docker://$REG/mem/l$i:latest" >"$work/encrypt.log" 2>&1 ||
    { cat "$work/encrypt.log" >&2; die "encrypting image $i failed"; }
  t2=$(now)
  rm -rf "$work/img"
  touch "$work/pushed.$i.$LAYER_MIB"
  log "image $i/$LAYERS: generated $LAYER_MIB MiB in $(elapsed "$t0" "$t1") s, encrypted and pushed in $(elapsed "$t1" "$t2") s"
  gen_total=$(awk -v a="$gen_total" -v b="$(elapsed "$t0" "$t2")" 'BEGIN { print a + b }')
done
[ "$gen_total" = 0 ] || log "images made in $gen_total s"
stored_kib=$(du -sk "$work/registry/storage" | cut -f1)
log "registry holds $((stored_kib / 1024)) MiB"

# ---- 2. Runs -------------------------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
plaintext_held() {
  curl -sf "http://127.0.0.1:$metrics_port/metrics" |
    awk '$1 == "lazycrypt_plaintext_bytes" { printf "%.0f\n", $2 / 1024 }'
}

results="$OUT/results.tsv"
printf 'budget_mib\tlayers\tlayer_mib\tmounted_rss_kib\treading_max_rss_kib\tread_rss_kib\tsettled_rss_kib\thwm_kib\tcache_held_kib\tread_s\tpull_s\n' >"$results"

for budget in $BUDGETS; do
  [[ "$budget" =~ ^[0-9]+$ ]] || die "MEM_BUDGETS: '$budget' is not a whole number of MiB"
  rm -rf "$node"
  mkdir -p "$node/containerd" "$node/hosts"
  write_hosts_toml "$node/hosts" "$REG"
  metrics_port=$(free_port)
  verify_delay=3600000
  [ "$VERIFY" = 1 ] && verify_delay=5000
  write_snapshotter_config "$node/snapshotter.toml" "$node/run/snapshotter.sock" \
    "$node/snapshotter" "$work/keys" "$node/hosts" "[cache]
max_bytes = $((STORE_MIB << 20))
plaintext_budget = $((budget << 20))
[fetch]
verify_delay_ms = $verify_delay
[metrics]
address = \"127.0.0.1:$metrics_port\"
[restart]
unmount_on_exit = true"
  "$BIN/lazycrypt-snapshotter" --config "$node/snapshotter.toml" >"$node/snapshotter.log" 2>&1 &
  snap_pid=$!
  pids+=("$snap_pid")
  wait_for "lazycrypt-snapshotter" 30 grep -q "lazycrypt-snapshotter ready" "$node/snapshotter.log"
  write_containerd_config "$node/containerd/config.toml" "$node/containerd" "[proxy_plugins]
  [proxy_plugins.lazycrypt]
    type = \"snapshot\"
    address = \"$node/run/snapshotter.sock\""
  containerd --config "$node/containerd/config.toml" >"$node/containerd/log" 2>&1 &
  ctd_pid=$!
  pids+=("$ctd_pid")
  wait_for "containerd" 30 ctr -a "$ctd_sock" version

  t0=$(now)
  for ((i = 1; i <= LAYERS; i++)); do
    "$BIN/lazycrypt" pull --address "$ctd_sock" --namespace mem --snapshotter lazycrypt \
      --plain-http "$REG/mem/l$i:latest" >"$node/pull.log" 2>&1 ||
      { cat "$node/pull.log" >&2; tail -20 "$node/snapshotter.log" >&2; die "pull of image $i failed"; }
  done
  t1=$(now)
  pull_s=$(elapsed "$t0" "$t1")
  mounts=$(awk -v p="$node/" 'index($5, p) == 1 && $0 ~ / - fuse/ { n++ } END { print n + 0 }' /proc/self/mountinfo)
  sleep 2
  mounted=$(rss_kib "$snap_pid")
  log "budget $budget MiB: $LAYERS images pulled in $(elapsed "$t0" "$t1") s, $mounts FUSE mounts, snapshotter VmRSS $((mounted / 1024)) MiB"
  [ "$mounts" -ge "$LAYERS" ] || die "expected $LAYERS lazily mounted layers, found $mounts FUSE mounts"

  # Samples VmRSS every 0.2 s while the containers read.
  : >"$node/samples"
  ( while kill -0 "$snap_pid" 2>/dev/null; do rss_kib "$snap_pid" >>"$node/samples"; sleep 0.2; done ) &
  sampler=$!
  t0=$(now)
  for ((i = 1; i <= LAYERS; i++)); do
    ctr -a "$ctd_sock" -n mem run --rm --snapshotter lazycrypt "$REG/mem/l$i:latest" "mem-$i" \
      sh -c "cat /data/l$i/* | wc -c" >"$node/run.out" 2>"$node/run.err" ||
      { cat "$node/run.err" >&2; tail -20 "$node/snapshotter.log" >&2; die "reading layer $i failed"; }
    [ "$(cat "$node/run.out")" -eq $((LAYER_MIB << 20)) ] ||
      die "layer $i: read $(cat "$node/run.out") bytes, expected $((LAYER_MIB << 20))"
  done
  t1=$(now)
  read_rss=$(rss_kib "$snap_pid")
  sleep "$SETTLE_S"
  settled=$(rss_kib "$snap_pid")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  reading_max=$(sort -n "$node/samples" | tail -1)
  hwm=$(hwm_kib "$snap_pid")
  held=$(plaintext_held || echo -)
  curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep '^lazycrypt_plaintext_' >"$OUT/metrics.$budget.txt" || true
  log "budget $budget MiB: read $((LAYERS * LAYER_MIB)) MiB in $(elapsed "$t0" "$t1") s; VmRSS max $((reading_max / 1024)) MiB while reading, $((read_rss / 1024)) MiB after, $((settled / 1024)) MiB after ${SETTLE_S} s; VmHWM $((hwm / 1024)) MiB; cache holds ${held} KiB"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$budget" "$LAYERS" "$LAYER_MIB" "$mounted" \
    "$reading_max" "$read_rss" "$settled" "$hwm" "$held" "$(elapsed "$t0" "$t1")" "$pull_s" >>"$results"

  kill_ctr_tasks "$ctd_sock" mem
  stop_pids "$ctd_pid" "$snap_pid"
  pids=("$reg_pid")
  umount_under "$node"
  rm -rf "$node"
done

# ---- 3. Report -----------------------------------------------------------------------------------
{
  echo "| budget | mounted (after pull) | max while reading | after reading | after ${SETTLE_S} s idle | VmHWM | cache holds | read time |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {
    printf "| %d MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %s | %s s |\n",
      $1, $4 / 1024, $5 / 1024, $6 / 1024, $7 / 1024, $8 / 1024,
      ($9 == "-" ? "-" : sprintf("%.0f MiB", $9 / 1024)), $10 }' "$results"
  echo
  echo "$LAYERS layers of $LAYER_MIB MiB, snapshotter VmRSS; machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
} | tee "$OUT/memory.md"
