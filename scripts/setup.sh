#!/usr/bin/env bash
# Installs every Debian 12 package lazycrypt needs to build, test and run its demo.
# Idempotent: installs only what is missing. Needs root (or sudo) the first time.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake pkg-config clang libclang-rt-14-dev
  # libraries
  libssl-dev libzstd-dev zlib1g-dev libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc libcurl4-openssl-dev libfuse3-dev fuse3
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libsqlite3-dev libmicrohttpd-dev
  # fdstore/: systemd's file-descriptor store (sd_pid_notify_with_fds, sd_listen_fds_with_names, sd-bus)
  libsystemd-dev
  # ISA-L's igzip: inflating gzip layers when converting them
  libisal-dev
  # containerd's API protos (the snapshotter's gRPC service is generated from them)
  golang-github-containerd-containerd-dev
  # test and benchmark peers
  skopeo umoci busybox-static tar attr openssl jq zstd libcap2-bin docker-registry apache2-utils
  # pigz: multi-member and independent-block gzip layers for the seekable-index tests
  pigz
  containerd runc
  # containerd 1.7 / 2.1 peers and the demo's containerd 2.x: Debian 13 / unstable packages fetched
  # with a private apt configuration (tests/data/fetch-debian-package.sh) signed by this keyring
  debian-archive-keyring
  # deploy/kubernetes manifest check (tests/deploy_manifests_test.cc)
  libyaml-cpp-dev
  # make deb and the package/image tests (tests/package_test.sh): Debian's packaging tools, man
  # pages from --help, lintian
  debhelper dpkg-dev fakeroot help2man lintian
  # read-throughput peers for bench/ (a mature encrypting FUSE filesystem, the I/O load generator)
  gocryptfs fio
  # conversion benchmark's reference pass for igzip, the inflater lazycrypt uses
  isal
  # cold-start benchmark (bench/coldstart): its plot, network namespaces and tc
  gnuplot-nox iproute2 curl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
