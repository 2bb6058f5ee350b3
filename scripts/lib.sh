#!/usr/bin/env bash
# Shell functions shared by scripts/demo.sh and bench/coldstart/run.sh (source it; defines
# functions only). Messages name the caller by LC_LOG_PREFIX (default "lazycrypt").

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mib() { awk -v n="$1" 'BEGIN { printf "%.1f MiB", n / 1048576 }'; }

free_port() {  # a TCP port on 127.0.0.1 nobody listens on
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

wait_for() {  # wait_for "what" seconds command...
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "${LC_LOG_PREFIX:-lazycrypt}: $what did not come up in $seconds s" >&2
  return 1
}

# write_registry_config FILE STORAGE_DIR ADDR: a docker-registry config with its access log on
# (registry_blob_bytes reads it).
write_registry_config() {
  cat >"$1" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $2
http:
  addr: $3
EOF
}

# registry_blob_bytes LOG: bytes the registry has sent in blob GET responses so far (an integer:
# awk's default output format would print large sums in exponent notation).
registry_blob_bytes() {
  awk '$6 == "\"GET" && $7 ~ /\/blobs\/sha256:/ && ($9 == 200 || $9 == 206) { n += $10 } END { printf "%.0f\n", n }' \
    "$1"
}

# write_snapshotter_config FILE SOCKET ROOT KEYS_DIR HOSTS_DIR [EXTRA_TOML]
write_snapshotter_config() {
  cat >"$1" <<EOF
address = "$2"
root = "$3"
${6:-}
[keys]
dirs = ["$4"]
[registry]
hosts_dir = "$5"
EOF
}

# write_hosts_toml HOSTS_DIR REGISTRY_HOST: plain-HTTP access to REGISTRY_HOST (host:port).
write_hosts_toml() {
  mkdir -p "$1/$2"
  printf 'server = "http://%s"\n' "$2" >"$1/$2/hosts.toml"
}

# write_containerd_config FILE DIR [EXTRA_TOML] [CONFIG_VERSION]: containerd with its own root,
# state and sockets under DIR (socket DIR/containerd.sock), CRI off; EXTRA_TOML is appended
# (proxy_plugins, stream_processors). CONFIG_VERSION: 2 (containerd 1.x, the default) or 3
# (containerd 2.x, which also has NRI on by default, listening on the machine-wide
# /var/run/nri/nri.sock: off here).
write_containerd_config() {
  local disabled='"io.containerd.grpc.v1.cri"'
  if [ "${4:-2}" = 3 ]; then disabled='"io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"'; fi
  cat >"$1" <<EOF
version = ${4:-2}
root = "$2/root"
state = "$2/state"
disabled_plugins = [$disabled]
[grpc]
  address = "$2/containerd.sock"
[ttrpc]
  address = "$2/containerd.sock.ttrpc"
[debug]
  address = "$2/debug.sock"
[metrics]
  address = ""
${3:-}
EOF
}

# containerd_major BINARY: the major version `BINARY --version` reports (1, 2).
containerd_major() {
  "$1" --version | awk '{ v = $3; sub(/^v/, "", v); split(v, p, "."); print p[1] }'
}

# kill_ctr_tasks SOCKET NAMESPACE: SIGKILL every task containerd runs in NAMESPACE.
kill_ctr_tasks() {
  [ -S "$1" ] || return 0
  local id
  for id in $(ctr -a "$1" -n "$2" tasks ls -q 2>/dev/null); do
    ctr -a "$1" -n "$2" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
}

# stop_pids PID...: SIGTERM in reverse order, up to 5 s each to exit, then SIGKILL.
stop_pids() {
  local pids=("$@") i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# umount_under DIR: lazily unmounts whatever is mounted under DIR, deepest first.
umount_under() {
  awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
