#!/usr/bin/env bash
# bench/fuse/ttfb_registry.sh BUILD_DIR — time to first byte of cold files of a lazycrypt layer
# served from a real local registry, with an empty chunk cache. Called by bench/fuse/run.sh, or alone.
# Needs root (mounts, drop_caches), docker-registry, umoci, openssl, jq, curl, fusermount3.
#
#   1. generates FUSE_TTFB_GROUPS directories g00.., each with FUSE_TTFB_SMALL_PER_GROUP small files
#      (1-64 KiB) and one big file (FUSE_TTFB_BIG_MIB MiB), all pseudo-random, packed in name
#      order, so that files of different groups never share a chunk;
#   2. starts docker-registry on 127.0.0.1 (its own config, storage and port; killed by PID on exit)
#      and pushes the dataset as a one-layer image with `lazycrypt encrypt -r jwe:pub.pem oci:...
#      docker://127.0.0.1:PORT/ttfb:enc`;
#   3. FUSE_TTFB_ROUNDS times: a fresh, empty --cache-dir; `lazycrypt mount --daemon --no-prefetch`
#      from the registry, timed until it returns with the layer mounted (manifest + key unwrap +
#      footer + sealed TOC + FUSE mount); the page cache dropped; then lazycrypt-bench-ttfb (open +
#      read of 1 byte) of one small file of every group, then of every group's big file: each one
#      a file whose chunk has not been fetched yet; unmount;
#   4. for scale, the eager alternative: `lazycrypt decrypt` of the same image from the registry
#      into an OCI layout (fetch + verify + decrypt of the whole layer), page cache dropped first;
#   5. writes BUILD_DIR/bench-results/ttfb-registry.json and ttfb-registry.md (also on stdout).
# Nothing is asserted about timing. Exit 0 when the run completed, 1 otherwise.
#
# Knobs: FUSE_TTFB_GROUPS=9 FUSE_TTFB_SMALL_PER_GROUP=40 FUSE_TTFB_BIG_MIB=16 FUSE_TTFB_ROUNDS=3
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "ttfb-registry: no build directory '$1'" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
LC_LOG_PREFIX=ttfb-registry
# shellcheck source=../../scripts/lib.sh
source "$HERE/../../scripts/lib.sh"
CLI="$BUILD/bin/lazycrypt"
TTFB="$BUILD/bin/lazycrypt-bench-ttfb"
OUT_DIR="$BUILD/bench-results"
GROUPS_N="${FUSE_TTFB_GROUPS:-9}"
SMALL_PER_GROUP="${FUSE_TTFB_SMALL_PER_GROUP:-40}"
BIG_MIB="${FUSE_TTFB_BIG_MIB:-16}"
ROUNDS="${FUSE_TTFB_ROUNDS:-3}"

die() { echo "ttfb-registry: $*" >&2; exit 1; }
log() { echo "ttfb-registry: $*" >&2; }
for v in GROUPS_N SMALL_PER_GROUP BIG_MIB ROUNDS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a whole number >= 1 (got '${!v}')"
done
[ "$GROUPS_N" -le 99 ] || die "FUSE_TTFB_GROUPS must be at most 99"
[ "$(id -u)" = 0 ] || die "needs root (mounts, /proc/sys/vm/drop_caches)"
for tool in docker-registry umoci openssl jq curl tar fusermount3; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (scripts/setup.sh installs it)"
done
[ -c /dev/fuse ] || die "/dev/fuse is absent"
[ -x "$CLI" ] && [ -x "$TTFB" ] || die "build first: cmake --build $BUILD --target lazycrypt lazycrypt-bench-ttfb"
mkdir -p "$OUT_DIR"

WORK=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/lazycrypt-ttfb-registry-XXXXXX")")
PIDS=()
MNT="$WORK/mnt"
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
cleanup() {
  local rc=$? p
  set +e
  is_mounted "$MNT" && { timeout 20 "$CLI" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT"; }
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  is_mounted "$MNT" && { log "still mounted: $MNT (left $WORK)"; exit "$rc"; }
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f\n", v[int((NR + 1) / 2)]; else print "null" }'; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 1. Dataset -----------------------------------------------------------------------------------
log "dataset: $GROUPS_N groups of $SMALL_PER_GROUP small files + one $BIG_MIB MiB file"
DATA="$WORK/data"
for ((g = 0; g < GROUPS_N; g++)); do
  dir="$DATA/$(printf 'g%02d' "$g")"
  mkdir -p "$dir"
  head -c $((BIG_MIB << 20)) /dev/urandom >"$dir/big.bin"
  for ((i = 0; i < SMALL_PER_GROUP; i++)); do
    head -c $(( (1 + (g * 31 + i * 7919) % 64) * 1024 - i % 3 )) /dev/urandom >"$dir/$(printf 'small-%03d.dat' "$i")"
  done
done
SMALL_PICK=$((SMALL_PER_GROUP / 2))

# ---- 2. Registry and the encrypted image ------------------------------------------------------------
port=$(free_port)
REGISTRY="127.0.0.1:$port"
mkdir -p "$WORK/registry"
write_registry_config "$WORK/registry/config.yml" "$WORK/registry/storage" "$REGISTRY"
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
wait_for "the registry" 20 curl -sf "http://$REGISTRY/v2/" || die "docker-registry did not start"
log "docker-registry on $REGISTRY (pid ${PIDS[-1]}); encrypting the dataset into it"
REF="docker://$REGISTRY/ttfb:enc"
{
  tar --sort=name -C "$DATA" -cf "$WORK/layer.tar" . &&
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" &&
    openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" &&
    umoci init --layout "$WORK/src" &&
    umoci new --image "$WORK/src:ttfb" &&
    umoci raw add-layer --no-history --image "$WORK/src:ttfb" "$WORK/layer.tar" &&
    rm -f "$WORK/layer.tar" &&
    "$CLI" encrypt --plain-http -r "jwe:$WORK/pub.pem" "oci:$WORK/src:ttfb" "$REF"
} >"$WORK/prepare.log" 2>&1 || { cat "$WORK/prepare.log" >&2; die "building or pushing the image failed"; }
layer_bytes=$(du -sb "$WORK/registry/storage" | cut -f1)

# ---- 3. Mount + time to first byte, ROUNDS times, each with an empty chunk cache ----------------------
mkdir -p "$MNT"
: >"$WORK/mount_ms"
: >"$WORK/small_us"
: >"$WORK/big_us"
for ((r = 0; r < ROUNDS; r++)); do
  rm -rf "$WORK/cache"
  drop_caches
  t0=$(now)
  "$CLI" mount --key "$WORK/key.pem" --plain-http --no-prefetch --cache-dir "$WORK/cache" \
    --stats-file "$WORK/stats.json" --daemon --log "$WORK/mount.log" "$REF" "$MNT" >>"$WORK/mount.out" 2>&1 ||
    { cat "$WORK/mount.out" "$WORK/mount.log" >&2; die "lazycrypt mount failed"; }
  ms_since "$t0" >>"$WORK/mount_ms"
  is_mounted "$MNT" || die "lazycrypt mount returned but $MNT is not mounted"
  drop_caches
  small=() big=()
  for ((g = 0; g < GROUPS_N; g++)); do
    small+=("$MNT/$(printf 'g%02d/small-%03d.dat' "$g" "$SMALL_PICK")")
    big+=("$MNT/$(printf 'g%02d/big.bin' "$g")")
  done
  "$TTFB" "${small[@]}" | awk '{ printf "%.1f\n", $1 / 1000 }' >>"$WORK/small_us" || die "ttfb of small files failed"
  "$TTFB" "${big[@]}" | awk '{ printf "%.1f\n", $1 / 1000 }' >>"$WORK/big_us" || die "ttfb of big files failed"
  sleep 1.2  # the mount rewrites its statistics file every second
  fetched=$(jq .blob_bytes_fetched "$WORK/stats.json" 2>/dev/null || echo null)
  timeout 30 "$CLI" umount "$MNT" >/dev/null 2>&1 || fusermount3 -u "$MNT" || die "cannot unmount $MNT"
  for _ in $(seq 1 50); do is_mounted "$MNT" || break; sleep 0.1; done
  log "round $((r + 1))/$ROUNDS: mount $(tail -1 "$WORK/mount_ms") ms; blob bytes fetched for $((2 * GROUPS_N)) files: $fetched"
done

# ---- 4. The eager alternative: decrypt the whole image ------------------------------------------------
drop_caches
t0=$(now)
"$CLI" decrypt --key "$WORK/key.pem" --plain-http "$REF" "oci:$WORK/decrypted:ttfb" >"$WORK/decrypt.log" 2>&1 ||
  { cat "$WORK/decrypt.log" >&2; die "lazycrypt decrypt failed"; }
decrypt_ms=$(ms_since "$t0")

# ---- 5. Results ------------------------------------------------------------------------------------
jq -n --arg date "$(date -u '+%Y-%m-%d %H:%M')" --arg load_start "$LOAD_START" \
  --arg load_end "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson groups "$GROUPS_N" \
  --argjson small_per_group "$SMALL_PER_GROUP" --argjson big_mib "$BIG_MIB" --argjson rounds "$ROUNDS" \
  --argjson registry_bytes "$layer_bytes" \
  --argjson mount_ms "$(median <"$WORK/mount_ms")" \
  --argjson small_us "$(median <"$WORK/small_us")" --argjson big_us "$(median <"$WORK/big_us")" \
  --argjson small_n "$(wc -l <"$WORK/small_us")" --argjson big_n "$(wc -l <"$WORK/big_us")" \
  --argjson decrypt_ms "$decrypt_ms" \
  '{date: $date, load_start: $load_start, load_end: $load_end,
    dataset: {groups: $groups, small_per_group: $small_per_group, big_mib: $big_mib},
    registry_storage_bytes: $registry_bytes, rounds: $rounds,
    mount_median_ms: $mount_ms, ttfb_small_median_us: $small_us, ttfb_small_samples: $small_n,
    ttfb_big_median_us: $big_us, ttfb_big_samples: $big_n, decrypt_whole_image_ms: $decrypt_ms}' \
  >"$OUT_DIR/ttfb-registry.json"
jq -r '
  "Time to first byte from a local registry (\(.date) UTC; load average \(.load_start) at the start, \(.load_end) at the end)",
  "Image: one lazycrypt layer of \(.dataset.groups) groups x (\(.dataset.small_per_group) small files + one \(.dataset.big_mib) MiB file), \(.registry_storage_bytes / 1048576 | . * 10 | round / 10) MiB in the registry; docker-registry on 127.0.0.1; empty chunk cache and dropped page cache in each of \(.rounds) rounds.",
  "",
  "| what | median |",
  "|---|---|",
  "| `lazycrypt mount --daemon` from the registry (manifest, key unwrap, footer, sealed TOC, FUSE mount) | \(.mount_median_ms) ms |",
  "| time to first byte, not-yet-fetched small file (open + 1-byte read; \(.ttfb_small_samples) files) | \(.ttfb_small_median_us) µs |",
  "| time to first byte, not-yet-fetched big file (\(.ttfb_big_samples) files) | \(.ttfb_big_median_us) µs |",
  "| for scale: `lazycrypt decrypt` of the whole image from the registry (eager; one run) | \(.decrypt_whole_image_ms) ms |"
' "$OUT_DIR/ttfb-registry.json" | tee "$OUT_DIR/ttfb-registry.md"
