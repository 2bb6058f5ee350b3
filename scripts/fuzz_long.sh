#!/usr/bin/env bash
# Runs every libFuzzer target of a LAZYCRYPT_FUZZ build for a long time (not in CI; `make
# fuzz-long`). Per target: FUZZ_JOBS processes (default: one per core) fuzz together for
# FUZZ_SECONDS (default 600) over a working corpus in <fuzz build>/corpus/<target> (kept between
# runs, never the committed seeds, which are only read), with artifacts (crash-*, leak-*,
# timeout-*, oom-*) in <fuzz build>/artifacts/<target>. Prints executions, crashes and seconds per
# target from libFuzzer's final statistics, and exits non-zero if any target crashed.
#
#   scripts/fuzz_long.sh <fuzz build dir> [target...]     (default: every target)
# Environment: FUZZ_SECONDS, FUZZ_JOBS, FUZZ_NICE (default 10), FUZZ_RSS_MB (default 2048).
set -euo pipefail

build=${1:?usage: fuzz_long.sh <fuzz build dir> [target...]}
shift
build=$(cd "$build" && pwd)
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-$(nproc)}
niceness=${FUZZ_NICE:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
list="$build/fuzz_targets.txt"
[[ -f $list ]] || { echo "no $list: configure and build the fuzz build first (make fuzz)" >&2; exit 2; }

declare -A seeds
order=()
while read -r name corpus; do
  [[ -n $name ]] || continue
  seeds[$name]=$corpus
  order+=("$name")
done <"$list"
if (($# > 0)); then order=("$@"); fi

printf '%-22s %5s %14s %8s %8s\n' target jobs executions crashes seconds
failed=0
for t in "${order[@]}"; do
  bin="$build/bin/$t"
  [[ -x $bin ]] || { echo "$t: $bin missing (build it first)" >&2; failed=1; continue; }
  work="$build/corpus/$t" art="$build/artifacts/$t" logs="$build/fuzz-logs/$t"
  mkdir -p "$work" "$art" "$logs"
  rm -f "$logs"/fuzz-*.log
  before=$(find "$art" -maxdepth 1 -type f | wc -l)
  start=$(date +%s)
  # -jobs=N -workers=N: N processes, each with the whole time budget, logging to fuzz-<i>.log.
  (cd "$logs" && nice -n "$niceness" "$bin" -jobs="$jobs" -workers="$jobs" \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb="$rss_mb" -print_final_stats=1 \
      -artifact_prefix="$art/" "$work" ${seeds[$t]:+"${seeds[$t]}"} >/dev/null 2>&1) || true
  elapsed=$(($(date +%s) - start))
  # Executions: stat::number_of_executed_units of each process (or its "Done N runs" line).
  execs=0
  for log in "$logs"/fuzz-*.log; do
    [[ -f $log ]] || continue
    n=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    [[ -n $n ]] || n=$(grep -ao 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]\+' || true)
    execs=$((execs + ${n:-0}))
  done
  after=$(find "$art" -maxdepth 1 -type f | wc -l)
  crashes=$((after - before))
  printf '%-22s %5d %14d %8d %8d\n' "$t" "$jobs" "$execs" "$crashes" "$elapsed"
  if ((crashes > 0)); then
    failed=1
    find "$art" -maxdepth 1 -type f -newer "$list" -printf '  %p\n' | tail -5
    echo "  logs: $logs" >&2
  fi
done
exit "$failed"
