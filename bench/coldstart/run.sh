#!/usr/bin/env bash
# bench/coldstart/run.sh BUILD_DIR — cold start of encrypted images: lazycrypt's lazy start
# against the eager paths users run today, in one run, same machine, same registry. Root.
#
#   1. builds the workloads offline, deterministic from CS_SEED: "large-S" = busybox + one layer of
#      CS_LARGE_MIB MiB in CS_FILES files (mixed sizes; keystream, base64 and text content) whose
#      start (/app/start.sh) reads S % of the layer's bytes (S in CS_SHARES), then prints one line;
#      "small" = busybox alone, whose start is `echo`;
#   2. pushes each into one docker-registry (one storage, served on loopback and, for the shaped
#      link, from a network namespace of its own behind a veth pair: tbf limits the rate to
#      CS_RATE_MBIT, lazycrypt-bench-delay-proxy adds CS_RTT_MS of round trip (this kernel may
#      lack sch_netem)): plain (skopeo), ocicrypt (`skopeo copy --encryption-key jwe:`), lazycrypt
#      (`lazycrypt encrypt`), and lazycrypt with the start-up files marked for prefetch
#      (`--prefetch-list`, the list the workload defines); for the stargz paths, eStargz images
#      converted from the plain one with Debian 13's ctr-remote (`image convert --estargz`, and
#      `image optimize`, which runs the workload's start once and marks the files it read for
#      prefetch), in a containerd of their own;
#   3. for each network, workload and run, each path from a cold node (a fresh containerd, and
#      snapshotter, with empty state dirs):
#        lazy           lazycrypt pull + ctr run through lazycrypt-snapshotter
#        lazy-prefetch  the same, image with the start-up files marked for prefetch
#        imgcrypt       containerd 1.6 + imgcrypt's ctd-decoder stream processor (Debian 13's
#                       imgcrypt), `ctr-imgcrypt images pull` (unpacks through the processor),
#                       ctr run; the ocicrypt image
#        plain          ctr images pull (overlayfs) + ctr run; the unencrypted image
#        decoder        lazycrypt-decoder as the stream processor, ctr-imgcrypt pull, ctr run
#        stargz         stargz-snapshotter 0.14.3 (Debian 13's library, our daemon: bench/stargz)
#                       as a proxy snapshotter, `ctr-remote images rpull` + ctr run; the
#                       `image convert --estargz` image (unencrypted)
#        stargz-optimized  the same, the `image optimize` image (start-up files prefetched)
#      time = from the pull command to the container's first output line; also bytes fetched
#      from the registry and its requests (round trips) up to that line (its access log), peak RSS (VmHWM) of the snapshotter and of containerd,
#      CPU seconds (the daemons, their reaped children: stream processors; and the clients);
#   4. writes CS_OUT/results.tsv, CS_OUT/coldstart.md (tables: medians, min/max, ratios, target
#      summary, where the time goes in the lazy path) and a PNG plot (gnuplot); with CS_DOC, puts
#      the table into that document as section 7 (replacing an earlier one).
# Nothing is asserted about timing; the last line says TARGET MET / NOT MET per target. Exit 0
# when the run completed. Every daemon, mount, namespace and veth is removed on exit (by PID).
#
# Knobs (environment): CS_LARGE_MIB=1024 CS_FILES=3000 CS_SHARES="5 30" CS_RUNS=5
#   CS_NETS="loopback shaped" (also shaped-N: the same link with N ms of round trip, e.g.
#   "loopback shaped shaped-50") CS_RATE_MBIT=200 CS_RTT_MS=20 CS_SEED=1
#   CS_PATHS="lazy lazy-prefetch imgcrypt plain decoder" (also: stargz stargz-optimized, which
#   build bench/stargz once; ocicrypt-estargz, ocicrypt-estargz-prefetch (the same image with the
#   start-up files marked), ocicrypt-indexed, ocicrypt-indexed-prefetch (a second skopeo image,
#   indexed with `lazycrypt index --prefetch-list`), ocicrypt-eager) CS_SMALL=1 (0: no small workload)
#   CS_CHUNK= (lazycrypt encrypt --chunk-size for the lazy images; default: the format's)
#   CS_SPAN= (lazycrypt index --span-size for ocicrypt-indexed; default: the index's)
#   CS_OUT=BUILD_DIR/bench-results/coldstart CS_PLOT=CS_OUT/coldstart.png CS_DOC= (a document to
#   update) CS_KEEP=0 (1: keep the work dir)
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "coldstart: no build directory '$1'" >&2; exit 1; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$BUILD/bin"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
LC_LOG_PREFIX=coldstart

LARGE_MIB="${CS_LARGE_MIB:-1024}"
FILES="${CS_FILES:-3000}"
SHARES="${CS_SHARES:-5 30}"
RUNS="${CS_RUNS:-5}"
NETS="${CS_NETS:-loopback shaped}"
RATE_MBIT="${CS_RATE_MBIT:-200}"
RTT_MS="${CS_RTT_MS:-20}"
SEED="${CS_SEED:-1}"
PATHS="${CS_PATHS:-lazy lazy-prefetch imgcrypt plain decoder}"
SMALL="${CS_SMALL:-1}"
OUT="${CS_OUT:-$BUILD/bench-results/coldstart}"
PLOT="${CS_PLOT:-$OUT/coldstart.png}"
DOC="${CS_DOC:-}"

die() { echo "coldstart: $*" >&2; exit 1; }
log() { echo "coldstart: $*" >&2; }

# ---- 0. Preconditions ------------------------------------------------------------------------------
for v in LARGE_MIB FILES RUNS RATE_MBIT RTT_MS SEED; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "CS_$v must be a whole number (got '${!v}')"
done
[ "$RUNS" -ge 1 ] || die "CS_RUNS must be >= 1"
[ "$LARGE_MIB" -ge 1 ] && [ "$FILES" -ge 10 ] || die "need CS_LARGE_MIB >= 1 and CS_FILES >= 10"
[ $((RTT_MS % 2)) -eq 0 ] || die "CS_RTT_MS must be even (half is added in each direction)"
for s in $SHARES; do
  [[ "$s" =~ ^[0-9]+$ ]] && [ "$s" -ge 1 ] && [ "$s" -le 100 ] || die "CS_SHARES: '$s' is not a percentage 1..100"
done
SHAPED_RTTS=()  # the shaped links' round trips, ms: shaped first, then each shaped-N
for n in $NETS; do
  case "$n" in
    loopback) ;;
    shaped) SHAPED_RTTS+=("$RTT_MS") ;;
    shaped-*)
      [[ "${n#shaped-}" =~ ^[0-9]+$ ]] && [ $((${n#shaped-} % 2)) -eq 0 ] ||
        die "CS_NETS: '$n': shaped-N needs an even number of ms"
      SHAPED_RTTS+=("${n#shaped-}") ;;
    *) die "CS_NETS: unknown network '$n' (loopback, shaped, shaped-N)" ;;
  esac
done
net_is_shaped() { [[ "$1" == shaped || "$1" == shaped-* ]]; }
any_shaped=0
[ ${#SHAPED_RTTS[@]} -eq 0 ] || any_shaped=1
for p in $PATHS; do
  case "$p" in lazy | lazy-prefetch | imgcrypt | plain | decoder | stargz | stargz-optimized) ;;
    ocicrypt-estargz | ocicrypt-estargz-prefetch | ocicrypt-indexed | ocicrypt-indexed-prefetch | ocicrypt-eager) ;;
    *) die "CS_PATHS: unknown path '$p' (lazy lazy-prefetch imgcrypt plain decoder stargz stargz-optimized ocicrypt-estargz ocicrypt-estargz-prefetch ocicrypt-indexed ocicrypt-indexed-prefetch ocicrypt-eager)" ;; esac
done
[ "$(id -u)" = 0 ] || die "needs root (containerd, FUSE, overlayfs, network namespaces)"
[ -c /dev/fuse ] || die "/dev/fuse is absent"
for tool in umoci skopeo openssl jq awk containerd ctr runc docker-registry busybox curl gnuplot; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (scripts/setup.sh installs it)"
done
for b in lazycrypt lazycrypt-snapshotter lazycrypt-decoder lazycrypt-bench-delay-proxy; do
  [ -x "$BIN/$b" ] || die "$BIN/$b not found; build first (cmake --build $BUILD --target $b)"
done
if [ "$any_shaped" = 1 ]; then
  for tool in ip tc; do command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (iproute2)"; done
fi
if [[ " $PATHS " == *" imgcrypt "* || " $PATHS " == *" decoder "* ]]; then
  IMGCRYPT_BIN=$(bash "$ROOT/tests/data/fetch-imgcrypt.sh" "$BUILD/cache/imgcrypt") ||
    die "could not fetch Debian 13's imgcrypt (tests/data/fetch-imgcrypt.sh)"
  [ -x "$IMGCRYPT_BIN/ctd-decoder" ] || die "no ctd-decoder in $IMGCRYPT_BIN"
fi
STARGZ=0
if [[ " $PATHS " == *" stargz "* || " $PATHS " == *" stargz-optimized "* ]]; then
  STARGZ=1
  # Fetches Debian 13's packages once (into BUILD/cache/stargz-bench) and builds the daemon.
  stargz_bins=$(bash "$ROOT/bench/stargz/build.sh" "$BUILD") ||
    die "could not build stargz-snapshotter (bench/stargz/build.sh)"
  STARGZ_DAEMON=$(sed -n 1p <<<"$stargz_bins")
  CTR_REMOTE=$(sed -n 2p <<<"$stargz_bins")
  [ -x "$STARGZ_DAEMON" ] && [ -x "$CTR_REMOTE" ] || die "bench/stargz/build.sh gave no daemon/ctr-remote"
fi

mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/lazycrypt-coldstart-XXXXXX")
chmod 0700 "$work"
pids=()        # long-lived: registries, delay proxy
run_pids=()    # per run: containerd, snapshotter
netns=""
veth=""
cleanup() {
  local status=$?
  kill_ctr_tasks "$work/node/containerd/containerd.sock" cs
  [ ${#run_pids[@]} -eq 0 ] || stop_pids "${run_pids[@]}"
  [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
  umount_under "$work"
  [ -z "$veth" ] || ip link del "$veth" 2>/dev/null || true
  [ -z "$netns" ] || ip netns del "$netns" 2>/dev/null || true
  if [ "${CS_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
log "work dir $work; load average $load_start"

# ---- 1. Workloads ----------------------------------------------------------------------------------
# The file list of a large workload: "path size kind" per line, and what /app/start.sh reads (S %
# of the layer's bytes), from a MINSTD generator seeded by CS_SEED (exact in awk's doubles, the
# same with mawk and gawk). Small files log-uniform 1 KiB..512 KiB (scaled down when they would
# exceed half the layer), the rest of the bytes in files of at most 48 MiB. The start reads, like
# an application loading its modules and part of its data: small files, in a seeded shuffled
# order, up to 60 % of its bytes (whole files: STARTUP_OUT), then big files, the last one partly
# ("path bytes": PARTIAL_OUT).
plan_files() {  # plan_files SEED MIB FILES SHARE LIST_OUT STARTUP_OUT PARTIAL_OUT
  : >"$6"
  : >"$7"
  awk -v seed="$1" -v mib="$2" -v files="$3" -v share="$4" -v list="$5" -v startup="$6" -v partial="$7" '
    function rnd() { state = (state * 48271) % 2147483647; return state / 2147483647 }
    BEGIN {
      state = (seed * 7919 + 12345) % 2147483647; if (state == 0) state = 1
      total = mib * 1048576
      big_max = 48 * 1048576
      nsmall = files
      for (i = 0; i < nsmall; i++) { size[i] = int(1024 * exp(rnd() * log(512))); sum += size[i] }
      if (sum > total / 2) {
        f = (total / 2) / sum; sum = 0
        for (i = 0; i < nsmall; i++) { size[i] = int(size[i] * f); if (size[i] < 1) size[i] = 1; sum += size[i] }
      }
      rest = total - sum
      nbig = int((rest + big_max - 1) / big_max); if (nbig < 1) nbig = 1
      n = nsmall + nbig
      for (i = nsmall; i < n; i++) { size[i] = int(rest / nbig) }
      size[n - 1] += rest - int(rest / nbig) * nbig
      for (i = 0; i < n; i++) {
        r = rnd(); kind[i] = (r < 0.4) ? "bin" : (r < 0.7) ? "b64" : "txt"
        name[i] = sprintf("/app/data/d%02d/f%05d.%s", i % 50, i, kind[i])
        print name[i], size[i], kind[i] > list
      }
      for (i = 0; i < n; i++) order[i] = i
      for (i = n - 1; i > 0; i--) { j = int(rnd() * (i + 1)); t = order[i]; order[i] = order[j]; order[j] = t }
      target = total * share / 100; got = 0
      for (k = 0; k < n; k++) {  # small files, up to 60 % of the start-up bytes
        i = order[k]
        if (i < nsmall && got + size[i] <= 0.6 * target) { print name[i] > startup; got += size[i] }
      }
      for (k = 0; k < n && got < target; k++) {  # then big files; the last one partly
        i = order[k]
        if (i < nsmall) continue
        if (got + size[i] <= target) { print name[i] > startup; got += size[i] }
        else { print name[i], int(target - got) > partial; got = target }
      }
      for (k = 0; k < n && got < target; k++) {  # few big files (tiny layers): more small ones
        i = order[k]
        if (i < nsmall && got + size[i] > 0.6 * target && got + size[i] <= target) { print name[i] > startup; got += size[i] }
      }
    }'
}

# make_tree DIR LIST SEED: writes the files of LIST under DIR, content by kind: bin = AES-CTR
# keystream (incompressible), b64 = base64 of keystream (compresses ~1.3x), txt = generated text
# (compresses well); each kind is one seeded stream cut into consecutive files.
make_tree() {
  local dir=$1 list=$2 seed=$3 key
  key=$(printf 'lazycrypt-coldstart-%s' "$seed" | sha256sum | cut -c1-64)
  exec 3< <(openssl enc -aes-256-ctr -nosalt -K "$key" -iv 00000000000000000000000000000001 -in /dev/zero 2>/dev/null)
  exec 4< <(openssl enc -aes-256-ctr -nosalt -K "$key" -iv 00000000000000000000000000000002 -in /dev/zero 2>/dev/null | base64 -w 76)
  exec 5< <(awk -v seed="$seed" 'BEGIN { s = seed % 2147483647 + 1
      split("alpha beta gamma delta layer chunk cache fetch mount start read config service value", w, " ")
      for (;;) { s = (s * 48271) % 2147483647
        printf "%08d %s=%s %s %d\n", NR++, w[s % 14 + 1], w[int(s / 14) % 14 + 1], w[int(s / 196) % 14 + 1], s % 100000 } }')
  local path size kind
  while read -r path size kind; do
    mkdir -p "$dir$(dirname "$path")"
    case "$kind" in
      bin) head -c "$size" <&3 >"$dir$path" ;;
      b64) head -c "$size" <&4 >"$dir$path" ;;
      txt) head -c "$size" <&5 >"$dir$path" ;;
    esac
  done <"$list"
  exec 3<&- 4<&- 5<&-
}

make_workloads() {
  bash "$ROOT/tests/data/make-busybox-image.sh" "$work/img/small" latest >/dev/null
  echo "/bin/busybox" >"$work/img/small.startup"
  local share wl
  for share in $SHARES; do
    wl=large-$share
    log "workload $wl: $LARGE_MIB MiB in $FILES+ files, start reads $share %"
    plan_files "$SEED" "$LARGE_MIB" "$FILES" "$share" "$work/img/$wl.files" "$work/img/$wl.whole" \
      "$work/img/$wl.partial"
    # The prefetch list (file granularity, as `lazycrypt record` would give): every file read.
    { cat "$work/img/$wl.whole"; cut -d' ' -f1 "$work/img/$wl.partial"; } >"$work/img/$wl.startup"
    rm -rf "$work/tree"
    mkdir -p "$work/tree/app"
    make_tree "$work/tree" "$work/img/$wl.files" "$SEED"
    cp "$work/img/$wl.whole" "$work/tree/app/startup.list"
    cp "$work/img/$wl.partial" "$work/tree/app/startup.partial"
    cat >"$work/tree/app/start.sh" <<'EOF'
#!/bin/sh
# Reads the start-up files (whole ones, then the first bytes of others), then says so: the
# benchmark times this first output line.
n=$(xargs cat </app/startup.list | wc -c)
while read -r f b; do
  m=$(head -c "$b" "$f" | wc -c)
  n=$((n + m))
done </app/startup.partial
echo "app started: read $n bytes"
EOF
    chmod 0755 "$work/tree/app/start.sh"
    find "$work/tree" -exec touch -h -d '2024-01-01T00:00:00Z' {} +
    tar --format=pax --numeric-owner --sort=name -C "$work/tree" -cf "$work/app.tar" app
    cp -a "$work/img/small" "$work/img/$wl"
    umoci raw add-layer --image "$work/img/$wl:latest" "$work/app.tar"
    umoci config --image "$work/img/$wl:latest" --config.cmd /app/start.sh
    rm -rf "$work/app.tar" "$work/tree"
  done
}

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$work/node.pem" 2>/dev/null
openssl pkey -in "$work/node.pem" -pubout -out "$work/node.pub.pem"
mkdir -p "$work/keys"
install -m 0600 "$work/node.pem" "$work/keys/node.pem"
make_workloads
WORKLOADS=""
[ "$SMALL" = 1 ] && WORKLOADS="small"
for share in $SHARES; do WORKLOADS="$WORKLOADS large-$share"; done

# ---- 2. Registry (one storage), pushes, the shaped link ------------------------------------------
reg_port=$(free_port)
REG_LOOP=127.0.0.1:$reg_port
mkdir -p "$work/registry"
write_registry_config "$work/registry/loop.yml" "$work/registry/storage" "$REG_LOOP"
docker-registry serve "$work/registry/loop.yml" >"$work/registry/loop.log" 2>&1 &
pids+=($!)
wait_for "the registry" 20 curl -sf "http://$REG_LOOP/v2/"

# stargz_convert WL: the plain image as eStargz (TAG stargz) and optimized for its start (TAG
# stargz-optimized: `ctr-remote image optimize` runs the start in a container, records the files
# it opens and puts them first in the layer, before the prefetch landmark), pushed to the registry.
# In a containerd of its own (the conversion reads and writes its content store), stopped after.
stargz_convert() {
  local wl=$1 conv=$work/convert src ctr_c args=()
  mkdir -p "$conv"
  write_containerd_config "$conv/config.toml" "$conv"
  containerd --config "$conv/config.toml" >"$conv/log" 2>&1 &
  run_pids=($!)
  wait_for "containerd (conversion)" 30 ctr -a "$conv/containerd.sock" version
  ctr_c=("$CTR_REMOTE" -a "$conv/containerd.sock" -n cs)
  src=$REG_LOOP/cs/$wl:plain
  # The same start the runs time: the small workload's `echo`, the large ones' /app/start.sh (cmd).
  [ "$wl" != small ] || args=(--args '["/bin/echo", "app started"]')
  { "${ctr_c[@]}" images pull --plain-http "$src" &&
    "${ctr_c[@]}" image convert --oci --estargz "$src" "$REG_LOOP/cs/$wl:stargz" &&
    "${ctr_c[@]}" images push --plain-http "$REG_LOOP/cs/$wl:stargz" &&
    "${ctr_c[@]}" image optimize --oci --period 60 "${args[@]}" "$src" "$REG_LOOP/cs/$wl:stargz-optimized" &&
    "${ctr_c[@]}" images push --plain-http "$REG_LOOP/cs/$wl:stargz-optimized"; } >"$conv/convert.log" 2>&1 || {
    tail -30 "$conv/convert.log" >&2
    die "$wl: ctr-remote conversion to eStargz failed (log above)"
  }
  kill_ctr_tasks "$conv/containerd.sock" cs
  stop_pids "${run_pids[@]}"
  run_pids=()
  umount_under "$conv"
  rm -rf "$conv"
}

declare -A image_bytes
TAGS="plain ocicrypt lazy lazy-prefetch"
[[ " $PATHS " != *" ocicrypt-estargz "* ]] || TAGS="$TAGS ocicrypt-estargz"
[[ " $PATHS " != *" ocicrypt-estargz-prefetch "* ]] || TAGS="$TAGS ocicrypt-estargz-prefetch"
[[ " $PATHS " != *" ocicrypt-indexed-prefetch "* ]] || TAGS="$TAGS ocicrypt-marked"
[ "$STARGZ" = 0 ] || TAGS="$TAGS stargz stargz-optimized"
for wl in $WORKLOADS; do
  log "pushing $wl: plain, ocicrypt (skopeo --encryption-key), lazycrypt, lazycrypt + prefetch list"
  skopeo copy --quiet --dest-tls-verify=false "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:plain"
  skopeo copy --quiet --dest-tls-verify=false --encryption-key "jwe:$work/node.pub.pem" \
    "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:ocicrypt"
  "$BIN/lazycrypt" encrypt --plain-http ${CS_CHUNK:+--chunk-size "$CS_CHUNK"} --recipient "jwe:$work/node.pub.pem" \
    "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:lazy" >/dev/null
  "$BIN/lazycrypt" encrypt --plain-http ${CS_CHUNK:+--chunk-size "$CS_CHUNK"} --prefetch-list "$work/img/$wl.startup" \
    --recipient "jwe:$work/node.pub.pem" \
    "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:lazy-prefetch" >/dev/null
  if [ "$STARGZ" = 1 ]; then
    log "converting $wl to eStargz: ctr-remote image convert --estargz, image optimize"
    stargz_convert "$wl"
  fi
  if [[ " $PATHS " == *" ocicrypt-estargz "* ]]; then
    log "pushing $wl: ocicrypt-estargz (lazycrypt encrypt --format ocicrypt-estargz)"
    "$BIN/lazycrypt" encrypt --plain-http --format ocicrypt-estargz \
      --recipient "jwe:$work/node.pub.pem" \
      "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:ocicrypt-estargz" >/dev/null
  fi
  if [[ " $PATHS " == *" ocicrypt-estargz-prefetch "* ]]; then
    log "pushing $wl: ocicrypt-estargz with the start-up files marked (--prefetch-list)"
    "$BIN/lazycrypt" encrypt --plain-http --format ocicrypt-estargz \
      --prefetch-list "$work/img/$wl.startup" --recipient "jwe:$work/node.pub.pem" \
      "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:ocicrypt-estargz-prefetch" >/dev/null
  fi
  if [[ " $PATHS " == *" ocicrypt-indexed "* ]]; then
    log "indexing $wl's ocicrypt image (lazycrypt index)"
    "$BIN/lazycrypt" index --plain-http ${CS_SPAN:+--span-size "$CS_SPAN"} --key "$work/node.pem" \
      "docker://$REG_LOOP/cs/$wl:ocicrypt" >"$work/index-$wl.log" 2>&1 || {
      cat "$work/index-$wl.log" >&2
      die "$wl: lazycrypt index failed (above)"
    }
  fi
  if [[ " $PATHS " == *" ocicrypt-indexed-prefetch "* ]]; then
    # A second skopeo image (its own manifest: the index artifact names its subject), indexed
    # with the start-up files marked in the sealed index core.
    log "pushing $wl: a second ocicrypt image, indexed with the start-up files marked"
    skopeo copy --quiet --dest-tls-verify=false --encryption-key "jwe:$work/node.pub.pem" \
      "oci:$work/img/$wl:latest" "docker://$REG_LOOP/cs/$wl:ocicrypt-marked"
    "$BIN/lazycrypt" index --plain-http ${CS_SPAN:+--span-size "$CS_SPAN"} --key "$work/node.pem" \
      --prefetch-list "$work/img/$wl.startup" \
      "docker://$REG_LOOP/cs/$wl:ocicrypt-marked" >"$work/index-marked-$wl.log" 2>&1 || {
      cat "$work/index-marked-$wl.log" >&2
      die "$wl: lazycrypt index --prefetch-list failed (above)"
    }
  fi
  for tag in $TAGS; do
    image_bytes[$wl:$tag]=$(skopeo inspect --raw --tls-verify=false "docker://$REG_LOOP/cs/$wl:$tag" |
      jq '[.layers[].size] | add')
  done
  rm -rf "$work/img/$wl"
done

REG_SHAPED=""
declare -A REG_BY_NET=()  # shaped, shaped-N -> host:port of its delay proxy
if [ "$any_shaped" = 1 ]; then
  netns="lccs$$"
  veth="lccs$$h"
  subnet="10.213.$(($$ % 250))"
  ip netns add "$netns"
  ip link add "$veth" type veth peer name "lccs$$n"
  ip link set "lccs$$n" netns "$netns"
  ip addr add "$subnet.1/30" dev "$veth"
  ip link set "$veth" up
  ip -n "$netns" addr add "$subnet.2/30" dev "lccs$$n"
  ip -n "$netns" link set "lccs$$n" up
  ip -n "$netns" link set lo up
  # Rate in both directions; the burst covers one GSO super-packet (tbf segments larger ones).
  tc qdisc add dev "$veth" root tbf rate "${RATE_MBIT}mbit" burst 128kb latency 50ms
  ip netns exec "$netns" tc qdisc add dev "lccs$$n" root tbf rate "${RATE_MBIT}mbit" burst 128kb latency 50ms
  write_registry_config "$work/registry/shaped.yml" "$work/registry/storage" "127.0.0.1:5000"
  ip netns exec "$netns" docker-registry serve "$work/registry/shaped.yml" >"$work/registry/shaped.log" 2>&1 &
  pids+=($!)
  # One delay proxy per round trip, all in front of the same registry behind the same tbf.
  port=5000
  for n in $NETS; do
    net_is_shaped "$n" || continue
    if [ "$n" = shaped ]; then rtt=$RTT_MS; else rtt=${n#shaped-}; fi
    ip netns exec "$netns" "$BIN/lazycrypt-bench-delay-proxy" "$subnet.2:$port" 127.0.0.1:5000 \
      $((rtt / 2)) >"$work/registry/proxy-$n.log" 2>&1 &
    pids+=($!)
    REG_BY_NET[$n]=$subnet.2:$port
    [ -n "$REG_SHAPED" ] || REG_SHAPED=$subnet.2:$port  # the link check's
    wait_for "the shaped registry ($n)" 20 curl -sf "http://${REG_BY_NET[$n]}/v2/"
    port=$((port + 1))
  done
  # Check the link: one RTT for a tiny request, and the rate on a large blob.
  digest=$(skopeo inspect --raw --tls-verify=false "docker://$REG_LOOP/cs/${WORKLOADS##* }:plain" |
    jq -r '.layers | max_by(.size) | .digest')
  link_check=$(curl -s -o /dev/null -w '%{time_starttransfer} %{size_download} %{time_total}' \
    "http://$REG_SHAPED/v2/cs/${WORKLOADS##* }/blobs/$digest")
  link_rtt_ms=$(curl -s -o /dev/null -w '%{time_connect} %{time_starttransfer}' "http://$REG_SHAPED/v2/" |
    awk '{ printf "%.1f", ($2 - $1) * 1000 }')
  link_mbit=$(awk '{ printf "%.0f", $2 * 8 / ($3 - $1) / 1e6 }' <<<"$link_check")
  log "shaped link: request->first byte $link_rtt_ms ms, $link_mbit Mbit/s on a $(awk '{ printf "%.0f", $2 / 1048576 }' <<<"$link_check") MiB blob"
fi

# ---- 3. Runs ---------------------------------------------------------------------------------------
node=$work/node
ctd_sock=$node/containerd/containerd.sock
CLK_TCK=$(getconf CLK_TCK)

proc_cpu_s() {  # utime+stime+cutime+cstime of PID in seconds
  awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13 + $14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
proc_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds of this shell's reaped children so far. `times` must run in this shell itself (a
# command substitution is a fresh process with no children), so it writes to a file.
children_cpu_mark() { times >"$1"; }
children_cpu_s() {
  awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$1"
}

start_node() {  # start_node PATH REGISTRY_HOST: a fresh containerd (+ snapshotter) for one run
  local path=$1 host=$2 extra=""
  rm -rf "$node"
  mkdir -p "$node/containerd" "$node/hosts"
  run_pids=()
  snap_pid=""
  case "$path" in
    lazy | lazy-prefetch | ocicrypt-*)
      write_hosts_toml "$node/hosts" "$host"
      # ocicrypt-eager: the skopeo image (which has an index, for ocicrypt-indexed) unpacked
      # eagerly by the snapshotter, as a node without indexes does it.
      local snap_extra='log_level = "debug"'
      [ "$path" != ocicrypt-eager ] || snap_extra=$'log_level = "debug"\n[ocicrypt]\nlazy_index = false'
      write_snapshotter_config "$node/snapshotter.toml" "$node/run/snapshotter.sock" \
        "$node/snapshotter" "$work/keys" "$node/hosts" "$snap_extra"
      "$BIN/lazycrypt-snapshotter" --config "$node/snapshotter.toml" >"$node/snapshotter.log" 2>&1 &
      snap_pid=$!
      run_pids+=("$snap_pid")
      wait_for "lazycrypt-snapshotter" 30 grep -q "lazycrypt-snapshotter ready" "$node/snapshotter.log"
      extra="[proxy_plugins]
  [proxy_plugins.lazycrypt]
    type = \"snapshot\"
    address = \"$node/run/snapshotter.sock\""
      ;;
    stargz | stargz-optimized)
      # Upstream's defaults but for the registry: plain HTTP to it (127.0.0.1 is that already).
      cat >"$node/stargz.toml" <<EOF
[[resolver.host."$host".mirrors]]
host = "$host"
insecure = true
EOF
      "$STARGZ_DAEMON" --address "$node/run/stargz.sock" --root "$node/stargz" \
        --config "$node/stargz.toml" --log-level debug >"$node/snapshotter.log" 2>&1 &
      snap_pid=$!
      run_pids+=("$snap_pid")
      wait_for "stargz-snapshotter" 30 grep -q "lazycrypt-bench-stargz ready" "$node/snapshotter.log"
      extra="[proxy_plugins]
  [proxy_plugins.stargz]
    type = \"snapshot\"
    address = \"$node/run/stargz.sock\""
      ;;
    imgcrypt)
      # imgcrypt's documented stream processor entry; its payload (the layer descriptor with the
      # wrapped keys) reaches only processors of these names. No key provider here (private key
      # files), so no OCICRYPT_KEYPROVIDER_CONFIG.
      extra="[stream_processors]
  [stream_processors.\"io.containerd.ocicrypt.decoder.v1.tar.gzip\"]
    accepts = [\"application/vnd.oci.image.layer.v1.tar+gzip+encrypted\"]
    returns = \"application/vnd.oci.image.layer.v1.tar+gzip\"
    path = \"$IMGCRYPT_BIN/ctd-decoder\"
    args = [\"--decryption-keys-path\", \"$work/keys\"]"
      ;;
    decoder)
      extra="[stream_processors]
  [stream_processors.\"io.containerd.ocicrypt.decoder.v1.tar.gzip\"]
    accepts = [\"application/vnd.oci.image.layer.v1.tar+lazycrypt+encrypted\"]
    returns = \"application/vnd.oci.image.layer.v1.tar+gzip\"
    path = \"$BIN/lazycrypt-decoder\"
    args = [\"--decryption-keys-path\", \"$work/keys\"]"
      ;;
  esac
  write_containerd_config "$node/containerd/config.toml" "$node/containerd" "$extra"
  containerd --config "$node/containerd/config.toml" >"$node/containerd/log" 2>&1 &
  ctd_pid=$!
  run_pids+=("$ctd_pid")
  wait_for "containerd" 30 ctr -a "$ctd_sock" version
}

stop_node() {
  kill_ctr_tasks "$ctd_sock" cs
  stop_pids "${run_pids[@]}"
  run_pids=()
  umount_under "$node"
  rm -rf "$node"
}

# registry_requests_since LOG LINES: requests in the registry's access log after its first LINES
# lines (every method and path: each is one round trip the pull or the first reads waited on).
registry_requests_since() {
  tail -n +$(($2 + 1)) "$1" | awk '$6 ~ /^"[A-Z]+$/ && $7 ~ /^\/v2\// { n++ } END { print n + 0 }'
}

results=$OUT/results.tsv
printf 'net\tworkload\tpath\trun\ttotal_s\tpull_s\tfetched_bytes\tsnap_hwm_kb\tctd_hwm_kb\tcpu_s\tmanifest_ms\tkeys_ms\tmount_ms\tblob_reads\tblob_read_ms\tregistry_requests\n' >"$results"
run_no=0

run_one() {  # run_one NET WORKLOAD PATH RUN
  local net=$1 wl=$2 path=$3 run=$4 host reglog tag ref snap_flag=() cmd expect
  if net_is_shaped "$net"; then host=${REG_BY_NET[$net]} reglog=$work/registry/shaped.log
  else host=$REG_LOOP reglog=$work/registry/loop.log; fi
  case "$path" in
    lazy | decoder) tag=lazy ;;
    lazy-prefetch) tag=lazy-prefetch ;;
    imgcrypt) tag=ocicrypt ;;
    plain) tag=plain ;;
    stargz) tag=stargz ;;
    stargz-optimized) tag=stargz-optimized ;;
    ocicrypt-estargz) tag=ocicrypt-estargz ;;
    ocicrypt-estargz-prefetch) tag=ocicrypt-estargz-prefetch ;;
    ocicrypt-indexed | ocicrypt-eager) tag=ocicrypt ;;
    ocicrypt-indexed-prefetch) tag=ocicrypt-marked ;;
  esac
  ref=$host/cs/$wl:$tag
  if [ "$wl" = small ]; then cmd=(/bin/echo "app started"); else cmd=(/app/start.sh); fi
  start_node "$path" "$host"
  run_no=$((run_no + 1))
  local before before_lines t0 t1 t_pulled status=0
  before=$(registry_blob_bytes "$reglog")
  before_lines=$(wc -l <"$reglog")
  children_cpu_mark "$node/cpu.before"
  t0=$(now)
  case "$path" in
    lazy | lazy-prefetch | ocicrypt-*)
      "$BIN/lazycrypt" pull --address "$ctd_sock" --namespace cs --snapshotter lazycrypt \
        --plain-http "$ref" >"$node/pull.log" 2>&1 || status=$?
      snap_flag=(--snapshotter lazycrypt) ;;
    imgcrypt | decoder)
      "$IMGCRYPT_BIN/ctr-imgcrypt" -a "$ctd_sock" -n cs images pull --plain-http "$ref" \
        >"$node/pull.log" 2>&1 || status=$? ;;
    plain)
      ctr -a "$ctd_sock" -n cs images pull --plain-http "$ref" >"$node/pull.log" 2>&1 || status=$? ;;
    stargz | stargz-optimized)
      "$CTR_REMOTE" -a "$ctd_sock" -n cs images rpull --plain-http --snapshotter stargz "$ref" \
        >"$node/pull.log" 2>&1 || status=$?
      snap_flag=(--snapshotter stargz) ;;
  esac
  t_pulled=$(now)
  if [ "$status" -ne 0 ]; then
    cat "$node/pull.log" >&2
    tail -20 "$node/containerd/log" >&2
    die "$net/$wl/$path: pull failed (exit $status)"
  fi
  ctr -a "$ctd_sock" -n cs run --rm "${snap_flag[@]}" "$ref" "cs-$run_no" "${cmd[@]}" 2>"$node/run.err" |
    { IFS= read -r line || true; now >"$node/t1"; printf '%s\n' "$line" >"$node/out"; cat >/dev/null; } ||
    status=$?
  t1=$(cat "$node/t1")
  if [ "$status" -ne 0 ] || ! grep -q "^app started" "$node/out"; then
    cat "$node/run.err" "$node/out" >&2
    tail -20 "$node/containerd/log" >&2
    [ -z "$snap_pid" ] || tail -20 "$node/snapshotter.log" >&2
    die "$net/$wl/$path: the container did not print its start line (exit $status)"
  fi
  local fetched requests snap_hwm=0 ctd_hwm cpu timing
  fetched=$(($(registry_blob_bytes "$reglog") - before))
  requests=$(registry_requests_since "$reglog" "$before_lines")
  children_cpu_mark "$node/cpu.after"
  ctd_hwm=$(proc_hwm_kb "$ctd_pid")
  cpu=$(awk -v a="$(children_cpu_s "$node/cpu.before")" -v b="$(children_cpu_s "$node/cpu.after")" \
    -v c="$(proc_cpu_s "$ctd_pid")" \
    'BEGIN { printf "%.2f", b - a + c }')
  timing="-	-	-	-	-"
  if [ -n "$snap_pid" ]; then
    snap_hwm=$(proc_hwm_kb "$snap_pid")
    cpu=$(awk -v a="$cpu" -v b="$(proc_cpu_s "$snap_pid")" 'BEGIN { printf "%.2f", a + b }')
    # The app layer's mount (the largest blob read at mount, i.e. the last layer of the image).
    timing=$({ grep 'mount timing' "$node/snapshotter.log" || true; } | tail -1 |  # lazycrypt's only
      sed -E 's/.*manifest_ms=([0-9]+) keys_ms=([0-9]+) mount_ms=([0-9]+) blob_reads=([0-9]+) blob_read_bytes=[0-9]+ blob_read_ms=([0-9]+).*/\1\t\2\t\3\t\4\t\5/')
    [[ "$timing" == *$'\t'* ]] || timing="-	-	-	-	-"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$net" "$wl" "$path" "$run" \
    "$(elapsed "$t0" "$t1")" "$(elapsed "$t0" "$t_pulled")" "$fetched" "$snap_hwm" "$ctd_hwm" \
    "$cpu" "$timing" "$requests" >>"$results"
  log "$net $wl $path run $run: $(elapsed "$t0" "$t1") s (pull $(elapsed "$t0" "$t_pulled") s), fetched $(mib "$fetched") in $requests registry requests"
  stop_node
}

for net in $NETS; do
  for wl in $WORKLOADS; do
    for run in $(seq "$RUNS"); do
      for path in $PATHS; do  # paths interleaved: load drift on the shared machine hits all alike
        run_one "$net" "$wl" "$path" "$run"
      done
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 4. Report -------------------------------------------------------------------------------------
for wl in $WORKLOADS; do
  for tag in $TAGS; do printf '%s\t%s\t%s\n' "$wl" "$tag" "${image_bytes[$wl:$tag]}"; done
done >"$OUT/images.tsv"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
  echo "date=$date_start"
  echo "machine=$cpu_model, $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); Linux $(uname -r); containerd $(containerd --version | awk '{ print $3 }'); imgcrypt (ctd-decoder) from Debian 13; skopeo $(skopeo --version | awk '{ print $3 }')"
  echo "load_start=$load_start"
  echo "load_end=$load_end"
  echo "params=CS_LARGE_MIB=$LARGE_MIB CS_FILES=$FILES CS_SHARES=\"$SHARES\" CS_RUNS=$RUNS CS_NETS=\"$NETS\" CS_RATE_MBIT=$RATE_MBIT CS_RTT_MS=$RTT_MS CS_SEED=$SEED"
  echo "link=${link_rtt_ms:-} ${link_mbit:-}"
} >"$OUT/meta.txt"
bash "$ROOT/bench/coldstart/report.sh" "$OUT" "$PLOT" "$RATE_MBIT" "$RTT_MS" >"$OUT/coldstart.md"
cat "$OUT/coldstart.md"
if [ -n "$DOC" ]; then
  # Section 7 of the document: replaced when present, else appended.
  awk -v section="$OUT/coldstart.md" '
    /^## 7\. / { skip = 1; while ((getline l < section) > 0) print l; done = 1; next }
    skip && /^## / { skip = 0 }
    !skip { print }
    END { if (!done) { print ""; while ((getline l < section) > 0) print l } }' "$DOC" >"$DOC.tmp"
  mv "$DOC.tmp" "$DOC"
  log "wrote section 7 of $DOC"
fi
grep '^TARGET' "$OUT/coldstart.md" | sed 's/^/coldstart: /' >&2 || true
