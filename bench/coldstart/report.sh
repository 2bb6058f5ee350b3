#!/usr/bin/env bash
# bench/coldstart/report.sh OUT_DIR PLOT_PNG RATE_MBIT RTT_MS — renders the cold-start results
# (OUT_DIR/results.tsv, images.tsv, meta.txt written by run.sh) as the markdown section printed on
# stdout, and the plot (gnuplot, PNG). Called by run.sh; can be re-run on kept results.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 OUT_DIR PLOT_PNG RATE_MBIT RTT_MS" >&2; exit 2; }
out=$1 plot=$2 rate=$3 rtt=$4
meta() { sed -n "s/^$1=//p" "$out/meta.txt"; }

# Medians (and min/max) per net/workload/path of every numeric column, one line per key:
# net wl path n  total_med total_min total_max  pull_med  fetched_med  snap_med  ctd_med  cpu_med
#   manifest_med keys_med mount_med reads_med read_ms_med requests_med
awk -F'\t' '
  function med(key, col,   n, i, j, t, v) {
    n = cnt[key]; m = 0
    for (i = 1; i <= n; i++) { v = val[key, col, i]; if (v == "-" || v == "") continue; a[++m] = v + 0 }
    if (m == 0) return "-"
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    lo = a[1]; hi = a[m]
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  NR == 1 { next }
  { key = $1 SUBSEP $2 SUBSEP $3
    if (!(key in cnt)) order[++nk] = key
    cnt[key]++
    for (c = 5; c <= 16; c++) val[key, c, cnt[key]] = $c }
  END {
    for (k = 1; k <= nk; k++) {
      key = order[k]; split(key, p, SUBSEP)
      t = med(key, 5); tlo = lo; thi = hi
      printf "%s\t%s\t%s\t%d\t%.2f\t%.2f\t%.2f", p[1], p[2], p[3], cnt[key], t, tlo, thi
      for (c = 6; c <= 16; c++) printf "\t%s", med(key, c)
      printf "\n"
    }
  }' "$out/results.tsv" >"$out/summary.tsv"

paths=$(cut -f3 "$out/summary.tsv" | awk '!seen[$0]++' | tr '\n' ' ')
nets=$(cut -f1 "$out/summary.tsv" | awk '!seen[$0]++' | tr '\n' ' ')
wls=$(cut -f2 "$out/summary.tsv" | awk '!seen[$0]++' | tr '\n' ' ')
get() {  # get NET WL PATH FIELD(1-based in summary.tsv)
  awk -F'\t' -v n="$1" -v w="$2" -v p="$3" -v f="$4" '$1 == n && $2 == w && $3 == p { print $f; exit }' \
    "$out/summary.tsv"
}
ratio() {  # ratio A B: A / B with one decimal, "-" when either is missing
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.1f", a / b }'
}
ratio2() {  # ratio2 A B: A / B with two decimals (targets at 1.0x need them), "-" when either is missing
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
label() {
  case "$1" in
    lazy) echo "lazycrypt lazy" ;; lazy-prefetch) echo "lazycrypt lazy + prefetch" ;;
    imgcrypt) echo "imgcrypt ctd-decoder (eager, encrypted)" ;; plain) echo "overlayfs (eager, plain)" ;;
    decoder) echo "lazycrypt-decoder (eager)" ;;
    stargz) echo "stargz-snapshotter (eStargz)" ;; stargz-optimized) echo "stargz-snapshotter (eStargz, optimized)" ;;
    ocicrypt-estargz) echo "lazycrypt, ocicrypt-estargz image (lazy)" ;;
    ocicrypt-estargz-prefetch) echo "lazycrypt, ocicrypt-estargz image, start-up files marked (lazy + prefetch)" ;;
    ocicrypt-indexed) echo "lazycrypt, skopeo image + lazycrypt index (lazy)" ;;
    ocicrypt-indexed-prefetch) echo "lazycrypt, skopeo image + lazycrypt index, start-up files marked (lazy + prefetch)" ;;
    ocicrypt-eager) echo "lazycrypt, skopeo image, no index (eager)" ;;
    *) echo "$1" ;;
  esac
}
netlabel() {
  case "$1" in
    shaped) echo "shaped ($rate Mbit/s, $rtt ms RTT)" ;;
    shaped-*) echo "shaped ($rate Mbit/s, ${1#shaped-} ms RTT)" ;;
    *) echo "$1" ;;
  esac
}

runs=$(awk -F'\t' 'NR > 1 { print $4 }' "$out/results.tsv" | sort -n | tail -1)
large_mib=$(meta params | sed -E 's/.*CS_LARGE_MIB=([0-9]+).*/\1/')
cat <<EOF
## 7. Cold start: lazy encrypted start vs what users run today

\`bash bench/coldstart/run.sh BUILD_DIR\` (root; \`make bench-coldstart\` runs it at full size and
writes this section and [coldstart.png](coldstart.png)). Each start is from a cold node: a fresh
containerd 1.6 (and lazycrypt-snapshotter) with empty state, the same registry (one storage,
served on loopback, and from a network namespace behind a veth pair for the shaped link). Time =
from the pull command to the container's first output line. Workloads, built offline from a seed:
\`large-S\` = busybox + one $large_mib MiB layer of a few thousand files (mixed sizes; keystream, base64
and text), whose start reads S % of the layer's bytes and prints a line; \`small\` = busybox alone.

Run: $(meta date); $(meta machine); load average $(meta load_start) at the start, $(meta load_end) at
the end (a VM that may be shared: the load averages show whether other work ran; absolute times
are indicative, the ratios are the result); paths are interleaved within each run so that load
drift hits all alike.
Parameters: \`$(meta params)\`; $runs run(s) per path, workload and network.
EOF
link=$(meta link)
if [ -n "$link" ] && [ "$link" != " " ]; then
  read -r link_rtt link_mbit <<<"$link"
  echo "Shaped link as measured: ${link_rtt} ms from request to first byte of a tiny response, ${link_mbit} Mbit/s on one blob download."
fi
cat <<EOF

Paths: **lazy** = \`lazycrypt pull\` + \`ctr run\` through lazycrypt-snapshotter (no prefetch marks);
**lazy + prefetch** = the same image encrypted with \`--prefetch-list\` naming the start-up files;
**imgcrypt** = \`skopeo copy --encryption-key jwe:\` image, \`ctr-imgcrypt images pull\` unpacking
through imgcrypt's \`ctd-decoder\` stream processor (Debian 13's imgcrypt 1.1.11), then \`ctr run\`;
**plain** = the unencrypted image, \`ctr images pull\` (overlayfs) + \`ctr run\`; **decoder** =
the lazycrypt image pulled eagerly through \`lazycrypt-decoder\` as the stream processor;
**stargz** = the plain image converted by \`ctr-remote image convert --oci --estargz\` (unencrypted),
\`ctr-remote images rpull\` + \`ctr run\` through stargz-snapshotter 0.14.3 (Debian 13's library in a
daemon of ours, bench/stargz, upstream's default settings); **stargz-optimized** = the same with
the \`ctr-remote image optimize\` image (the start run once, the files it opened put before the
prefetch landmark, which the snapshotter prefetches at mount).

Time to the first output line, seconds: median (min–max)

EOF
header="| network | workload |"
sep="|---|---|"
for p in $paths; do header="$header $(label "$p") |"; sep="$sep---|"; done
echo "$header"
echo "$sep"
for n in $nets; do
  for w in $wls; do
    row="| $(netlabel "$n") | $w |"
    for p in $paths; do
      m=$(get "$n" "$w" "$p" 5)
      if [ -z "$m" ]; then row="$row - |"; else row="$row **$m** ($(get "$n" "$w" "$p" 6)–$(get "$n" "$w" "$p" 7)) |"; fi
    done
    echo "$row"
  done
done

echo
echo "Ratios of medians (how many times sooner lazycrypt's first output line comes; > 1 = lazycrypt sooner)"
echo
echo "| network | workload | imgcrypt / lazy | imgcrypt / lazy+prefetch | plain / lazy | plain / lazy+prefetch | decoder / lazy | imgcrypt / plain |"
echo "|---|---|---|---|---|---|---|---|"
for n in $nets; do
  for w in $wls; do
    L=$(get "$n" "$w" lazy 5) LP=$(get "$n" "$w" lazy-prefetch 5) I=$(get "$n" "$w" imgcrypt 5)
    P=$(get "$n" "$w" plain 5) D=$(get "$n" "$w" decoder 5)
    echo "| $(netlabel "$n") | $w | $(ratio "$I" "$L") | $(ratio "$I" "$LP") | $(ratio "$P" "$L") | $(ratio "$P" "$LP") | $(ratio "$D" "$L") | $(ratio "$I" "$P") |"
  done
done

if [[ " $paths " == *" stargz"* ]]; then
  echo
  echo "lazycrypt against stargz-snapshotter (issue 19's bar: lazy <= 1.0x stargz, lazy+prefetch <= 1.0x stargz-optimized; < 1 = lazycrypt sooner), seconds (medians), and the registry requests from the pull command to the first output line (medians; each one a round trip)"
  echo
  echo "| network | workload | lazy | stargz | lazy / stargz | lazy+prefetch | stargz-optimized | lazy+prefetch / stargz-optimized | requests: lazy · lazy+prefetch · stargz · stargz-optimized |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for n in $nets; do
    for w in $wls; do
      L=$(get "$n" "$w" lazy 5) LP=$(get "$n" "$w" lazy-prefetch 5) S=$(get "$n" "$w" stargz 5) SO=$(get "$n" "$w" stargz-optimized 5)
      req=""
      for p in lazy lazy-prefetch stargz stargz-optimized; do r=$(get "$n" "$w" "$p" 18); req="$req${req:+ · }${r:--}"; done
      echo "| $(netlabel "$n") | $w | ${L:--} | ${S:--} | $(ratio2 "$L" "$S") | ${LP:--} | ${SO:--} | $(ratio2 "$LP" "$SO") | $req |"
    done
  done
fi

echo
echo "Bytes fetched from the registry (median, MiB; the image's layers in brackets) and registry requests up to the first output line, peak RSS (VmHWM, MiB) of the snapshotter (lazycrypt's or stargz's) / containerd, CPU seconds (daemons incl. stream processors, and clients)"
echo
header="| network | workload |"
sep="|---|---|"
for p in $paths; do header="$header $p: fetched · requests · RSS · CPU |"; sep="$sep---|"; done
echo "$header"
echo "$sep"
for n in $nets; do
  for w in $wls; do
    row="| $(netlabel "$n") | $w |"
    for p in $paths; do
      case "$p" in lazy | decoder) tag=lazy ;; lazy-prefetch) tag=lazy-prefetch ;; imgcrypt) tag=ocicrypt ;;
        stargz) tag=stargz ;; stargz-optimized) tag=stargz-optimized ;; *) tag=plain ;; esac
      size=$(awk -F'\t' -v w="$w" -v t="$tag" '$1 == w && $2 == t { print $3 }' "$out/images.tsv")
      f=$(get "$n" "$w" "$p" 9)
      [ -n "$f" ] || { row="$row - |"; continue; }
      snap=$(get "$n" "$w" "$p" 10) ctd=$(get "$n" "$w" "$p" 11) cpu=$(get "$n" "$w" "$p" 12) req=$(get "$n" "$w" "$p" 18)
      row="$row $(awk -v f="$f" -v s="$size" 'BEGIN { printf "%.1f [%.0f]", f / 1048576, s / 1048576 }') · $req · $(awk -v a="$snap" -v b="$ctd" 'BEGIN { if (a + 0 > 0) printf "%.0f / ", a / 1024; printf "%.0f", b / 1024 }') · $(printf '%.1f' "$cpu") |"
    done
    echo "$row"
  done
done

echo
echo "### Where the time goes in the lazy path"
echo
echo "Medians over the runs. \`pull\` = \`lazycrypt pull\` (manifest, config, containerd's Prepare of each"
echo "layer, which the snapshotter answers by mounting); inside the mount of the application layer"
echo "(the snapshotter's debug log, \`mount timing\` lines): manifest fetch, node keys loaded, then"
echo "\`MountedLayer::Mount\` = key unwrap + blob header and sealed TOC fetch + verification + FUSE"
echo "mount, of which the registry reads are shown apart; \`run\` = \`ctr run\` to the first output"
echo "line (container setup, then the start's first reads through FUSE). The prefetch of the marked"
echo "files starts in the background when the layer is mounted, so its time overlaps the rest of the"
echo "pull and the container setup, and what is left of it shows in the first reads (which wait for it)."
echo
echo "| network | workload | path | total s | pull s | · manifest ms | · node keys ms | · mount ms | · · registry reads in mount (n, ms) | run → first line s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $nets; do
  for w in $wls; do
    for p in lazy lazy-prefetch; do
      t=$(get "$n" "$w" "$p" 5)
      [ -n "$t" ] || continue
      pull=$(get "$n" "$w" "$p" 8)
      echo "| $(netlabel "$n") | $w | $p | $t | $(printf '%.2f' "$pull") | $(get "$n" "$w" "$p" 13) | $(get "$n" "$w" "$p" 14) | $(get "$n" "$w" "$p" 15) | $(get "$n" "$w" "$p" 16), $(get "$n" "$w" "$p" 17) | $(awk -v a="$t" -v b="$pull" 'BEGIN { printf "%.2f", a - b }') |"
    done
  done
done

# The phases of the lazy start of each large workload, largest first: the container's own start
# (setup, exec) is taken from the small workload's run (it only echoes), the first reads are the
# rest of the large workload's run.
echo
for n in $nets; do
  for w in $wls; do
    [ "$w" != small ] || continue
    for p in lazy lazy-prefetch; do
      t=$(get "$n" "$w" "$p" 5)
      [ -n "$t" ] || continue
      small_run=$(awk -v a="$(get "$n" small "$p" 5)" -v b="$(get "$n" small "$p" 8)" 'BEGIN { if (a == "") print ""; else printf "%.3f", a - b }')
      awk -v n="$(netlabel "$n")" -v w="$w" -v p="$p" -v t="$t" -v pull="$(get "$n" "$w" "$p" 8)" \
        -v man="$(get "$n" "$w" "$p" 13)" -v keys="$(get "$n" "$w" "$p" 14)" -v mnt="$(get "$n" "$w" "$p" 15)" \
        -v rd="$(get "$n" "$w" "$p" 17)" -v srun="$small_run" -v fetched="$(get "$n" "$w" "$p" 9)" \
        -v read_mib="$(awk -v w="$w" -v m="$large_mib" 'BEGIN { sub(/^large-/, "", w); printf "%.1f", m * w / 100 }')" 'BEGIN {
          if (man == "-" || mnt == "-") exit
          run = t - pull
          ph["manifest fetch (snapshotter)"] = man / 1000
          ph["node keys"] = keys / 1000
          ph["blob header + sealed TOC fetch"] = rd / 1000
          ph["key unwrap + TOC verify + FUSE mount"] = (mnt - rd) / 1000
          ph["rest of the pull (client, config, other layers, containerd)"] = pull - (man + keys + mnt) / 1000
          if (srun != "" && srun < run) {
            ph["container setup (ctr run of the small image)"] = srun
            ph["first reads through FUSE" (p == "lazy-prefetch" ? " (and the prefetch they wait for)" : "")] = run - srun
          } else ph["ctr run to first line (setup + first reads)"] = run
          line = ""
          for (i = 0; i < 8; i++) {
            best = ""; for (k in ph) if (!(k in used) && (best == "" || ph[k] > ph[best])) best = k
            if (best == "") break
            used[best] = 1
            line = line (line == "" ? "" : "; ") sprintf("%s %.2f s (%.0f %%)", best, ph[best], 100 * ph[best] / t)
            if (i == 0) top = best
          }
          printf "- %s, %s, %s (%.2f s): %s. **Next bottleneck: %s.** Fetched %.0f MiB for the %.0f MiB the start reads (plus busybox).\n", n, w, p, t, line, top, fetched / 1048576, read_mib
        }'
    done
  done
done

# ---- targets ---------------------------------------------------------------------------------------
echo
echo "### Targets"
echo
verdict() { if [ "$1" = 1 ]; then echo "TARGET MET"; else echo "TARGET NOT MET"; fi; }
targets=""
if [[ " $nets " == *" shaped "* ]]; then
  for w in $wls; do
    [ "$w" != small ] || continue
    for p in lazy lazy-prefetch; do
      L=$(get shaped "$w" "$p" 5) I=$(get shaped "$w" imgcrypt 5) P=$(get shaped "$w" plain 5)
      [ -n "$L" ] || continue
      if [ -n "$I" ]; then
        r=$(ratio "$I" "$L")
        ok=$(awk -v i="$I" -v l="$L" 'BEGIN { print (i >= 10 * l) ? 1 : 0 }')
        targets="$targets
TARGET $w, $p: >= 10x sooner than imgcrypt: ${r}x ($L s vs $I s): $(verdict "$ok")"
      fi
      if [ -n "$P" ]; then
        ok=$(awk -v p="$P" -v l="$L" 'BEGIN { print (l < p) ? 1 : 0 }')
        targets="$targets
TARGET $w, $p: sooner than eager plain: $L s vs $P s ($(ratio "$P" "$L")x): $(verdict "$ok")"
      fi
    done
  done
  for p in lazy lazy-prefetch; do
    L=$(get shaped small "$p" 5) P=$(get shaped small plain 5)
    [ -n "$L" ] && [ -n "$P" ] || continue
    ok=$(awk -v p="$P" -v l="$L" 'BEGIN { print (l <= 1.10 * p) ? 1 : 0 }')
    pct=$(awk -v p="$P" -v l="$L" 'BEGIN { printf "%+.0f", (l / p - 1) * 100 }')
    targets="$targets
TARGET small, $p: <= 10 % slower than eager plain: $L s vs $P s ($pct %): $(verdict "$ok")"
  done
fi
# Issue 19: lazycrypt at least as soon as stargz-snapshotter, on every link and workload.
for n in $nets; do
  for w in $wls; do
    for pair in lazy:stargz lazy-prefetch:stargz-optimized; do
      L=$(get "$n" "$w" "${pair%%:*}" 5) S=$(get "$n" "$w" "${pair#*:}" 5)
      [ -n "$L" ] && [ -n "$S" ] || continue
      ok=$(awk -v l="$L" -v s="$S" 'BEGIN { print (l <= s) ? 1 : 0 }')
      targets="$targets
TARGET $n $w, ${pair%%:*}: <= 1.0x ${pair#*:}: $(ratio2 "$L" "$S")x ($L s vs $S s): $(verdict "$ok")"
    done
  done
done
# Issue 18: standard ocicrypt (AES-CTR) images served lazily: within 1.3x of the GCM format's
# lazy start, and >= 5x sooner than imgcrypt for the large workloads, on the shaped links.
for n in $nets; do
  [[ "$n" == shaped* ]] || continue
  for w in $wls; do
    for p in ocicrypt-estargz ocicrypt-indexed ocicrypt-estargz-prefetch ocicrypt-indexed-prefetch; do
      base=lazy
      [[ "$p" != *-prefetch ]] || base=lazy-prefetch
      O=$(get "$n" "$w" "$p" 5) L=$(get "$n" "$w" "$base" 5) I=$(get "$n" "$w" imgcrypt 5)
      [ -n "$O" ] || continue
      if [ -n "$L" ]; then
        ok=$(awk -v o="$O" -v l="$L" 'BEGIN { print (o <= 1.3 * l) ? 1 : 0 }')
        targets="$targets
TARGET $n $w, $p: <= 1.3x $base (GCM format): $(ratio2 "$O" "$L")x ($O s vs $L s): $(verdict "$ok")"
      fi
      if [ -n "$I" ] && [ "$w" != small ]; then
        ok=$(awk -v o="$O" -v i="$I" 'BEGIN { print (i >= 5 * o) ? 1 : 0 }')
        targets="$targets
TARGET $n $w, $p: >= 5x sooner than imgcrypt: $(ratio "$I" "$O")x ($O s vs $I s): $(verdict "$ok")"
      fi
    done
  done
done
if [ -z "$targets" ]; then
  echo "TARGET not checked: the targets compare a lazy path with imgcrypt or plain on the shaped link, or with stargz, and this run measured no such pair"
else
  echo '```'
  echo "${targets#?}"
  echo '```'
  # What the link allows: a start cannot come sooner than the bytes it reads take to arrive.
  read -r _ link_mbit_measured <<<"$(meta link)"
  if [[ "$link_mbit_measured" =~ ^[0-9.]+$ ]]; then
    echo
    for w in $wls; do
      [ "$w" != small ] || continue
      I=$(get shaped "$w" imgcrypt 5)
      [ -n "$I" ] || continue
      awk -v w="$w" -v m="$large_mib" -v mbit="$link_mbit_measured" -v i="$I" 'BEGIN {
        s = w; sub(/^large-/, "", s); read_mib = m * s / 100
        floor = read_mib * 1048576 * 8 / (mbit * 1e6); need = i / 10
        printf "- %s: the start reads %.0f MiB, at least %.1f s on the link as measured (%s Mbit/s); %s needs <= %.2f s, %s.\n", \
          w, read_mib, floor, mbit, ">= 10x imgcrypt", need, \
          (floor > need ? "which no lazy path can reach on this link (the bytes alone take longer)" : "which the link allows")
      }'
    done
  fi
fi

# ---- plot ------------------------------------------------------------------------------------------
if [ "$plot" != none ]; then
  data=$out/plot.dat
  {
    # case, then median, min, max per path (no header row: gnuplot would plot it)
    for n in $nets; do
      for w in $wls; do
        printf '%s/%s' "$n" "$w"
        for p in $paths; do
          m=$(get "$n" "$w" "$p" 5)
          if [ -z "$m" ]; then printf '\t-\t-\t-'; else printf '\t%s\t%s\t%s' "$m" "$(get "$n" "$w" "$p" 6)" "$(get "$n" "$w" "$p" 7)"; fi
        done
        printf '\n'
      done
    done
  } >"$data"
  plotcmd=""
  i=0
  for p in $paths; do
    c=$((2 + 3 * i))
    plotcmd="$plotcmd${plotcmd:+, }'$data' using $c:$((c + 1)):$((c + 2)):xtic(1) title '$(label "$p")'"
    i=$((i + 1))
  done
  gnuplot <<EOF
set terminal pngcairo size 1200,600 font ",10"
set output '$plot'
set title "Cold start: pull command to the container's first output line (median, min-max bars; lower is better)"
set ylabel "seconds (log scale)"
set logscale y
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set datafile separator "\t"
set datafile missing "-"
set key top left
set grid ytics
set xtics noenhanced
set key noenhanced
plot $plotcmd
EOF
  echo
  echo "![cold start per path and workload]($(basename "$plot"))"
fi
echo
cat <<EOF
The eager encrypted path is configured as imgcrypt documents it for containerd 1.6:
\`[stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]\` with \`accepts =
["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]\`, \`returns =
"application/vnd.oci.image.layer.v1.tar+gzip"\`, \`path\` = ctd-decoder, \`args =
["--decryption-keys-path", KEYS_DIR]\` (\`env = ["OCICRYPT_KEYPROVIDER_CONFIG=..."]\` is only needed
for key-provider keys; these are private key files). containerd hands the processor the layer's
wrapped keys only in imgcrypt's payload, which plain \`ctr images pull\` does not send, so the pull
is \`ctr-imgcrypt images pull\` (imgcrypt's ctr; it unpacks during the pull, through the
processor). lazycrypt-decoder is registered the same way, accepting lazycrypt's media type.

Notes: the shaped link's rate is a tbf qdisc on both ends of the veth pair; its latency comes from
\`lazycrypt-bench-delay-proxy\` (a TCP relay in the registry's namespace adding half the RTT in each
direction) because this kernel has no \`sch_netem\`; TCP handshakes with the relay are therefore
not delayed (one RTT less per new connection than a real link). The registry's storage stays in
the page cache between runs (a warm registry); the node side is always cold (fresh containerd and
snapshotter state; the chunk cache is empty). Peak RSS is the daemons' VmHWM at the end of the run;
CPU seconds sum containerd and the snapshotter (lazycrypt's or stargz's; with reaped children:
stream processors) and the client commands (shims not included). Requests count every line of the
registry's access log from the pull command to the first output line (a background fetch still
running then is counted as far as it got).
EOF
