// Helpers for integration tests that run a real lazycrypt-snapshotter (FUSE layers) under a real
// containerd: the mounts under a directory and starting the daemon until it says it is ready.
// Header-only; tests linking lc_testharness only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <algorithm>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/mount.h>
#include <unistd.h>

#include "tests/harness/containerd_process.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::testing {

// Mount points strictly under `dir` (from /proc/self/mountinfo), with their fs types.
inline std::vector<std::pair<std::string, std::string>> MountsUnder(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream info(harness::ReadFileOrEmpty("/proc/self/mountinfo"));
  std::string line;
  const std::string prefix = dir.string() + "/";
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, options, field;
    fields >> id >> parent >> devno >> root >> mount_point >> options;
    while (fields >> field && field != "-") {
    }
    std::string fstype;
    fields >> fstype;
    if (mount_point.rfind(prefix, 0) == 0) out.emplace_back(mount_point, fstype);
  }
  return out;
}

inline size_t CountFuseMounts(const std::filesystem::path& dir) {
  size_t n = 0;
  for (const auto& [path, type] : MountsUnder(dir)) n += type.rfind("fuse", 0) == 0;
  return n;
}

// Starts `lazycrypt-snapshotter --config config` with stdout/stderr in `log` and waits (30 s)
// for its "ready" line. Fails the test (returning null) when it exits or does not get ready.
inline std::unique_ptr<harness::Subprocess> StartSnapshotterProcess(
    const std::string& binary, const std::filesystem::path& config,
    const std::filesystem::path& log) {
  auto proc = harness::Subprocess::Start({binary, "--config", config.string()}, {}, log, log);
  EXPECT_TRUE(proc.ok()) << proc.status().ToString();
  if (!proc.ok()) return nullptr;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (harness::ReadFileOrEmpty(log).find("lazycrypt-snapshotter ready") == std::string::npos) {
    if (!(*proc)->Running()) {
      ADD_FAILURE() << "snapshotter exited:\n" << harness::ReadFileOrEmpty(log);
      return nullptr;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "snapshotter not ready after 30 s:\n" << harness::ReadFileOrEmpty(log);
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::move(*proc);
}

// After the proxy snapshotter restarted: waits until containerd's gRPC channel to it works again
// (it fails calls with UNAVAILABLE and the last dial error during grpc's reconnect backoff). The
// probe is a `ctr snapshots prepare` of a throwaway active snapshot, then its `rm`: both reach the
// snapshotter itself, unlike `ls`, which containerd answers from its own metadata when it holds no
// snapshot of that snapshotter.
inline void WaitForContainerdToReachSnapshotter(harness::ContainerdProcess& ctd,
                                                const std::string& snapshotter) {
  static int probes = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const std::string key = "reconnect-probe-" + std::to_string(::getpid()) + "-" + std::to_string(++probes);
    auto prepared = ctd.Ctr({"snapshots", "--snapshotter", snapshotter, "prepare", key},
                            std::chrono::seconds(10));
    if (prepared.ok() && prepared->exit_code == 0) {
      auto removed = ctd.Ctr({"snapshots", "--snapshotter", snapshotter, "rm", key},
                             std::chrono::seconds(10));
      if (removed.ok() && removed->exit_code == 0) return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "containerd did not reach snapshotter " << snapshotter << " again: "
                    << (prepared.ok() ? prepared->stdout_text + prepared->stderr_text
                                      : prepared.status().ToString());
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// Aborts the FUSE connections of the FUSE mounts under `dir` (/sys/fs/fuse/connections/N/abort):
// a stopped snapshotter leaves its lazy mounts to the next one (their fds in an fd holder), and
// nothing may wait on them once the test is over. The holder then drops the ended connections and
// exits when idle.
inline void AbortFuseConnectionsUnder(const std::filesystem::path& dir) {
  std::istringstream info(harness::ReadFileOrEmpty("/proc/self/mountinfo"));
  std::string line;
  const std::string prefix = dir.string() + "/";
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    const size_t dash = line.find(" - fuse");
    if (dash == std::string::npos || mount_point.rfind(prefix, 0) != 0) continue;
    const size_t colon = devno.find(':');
    if (colon == std::string::npos) continue;
    std::ofstream abort_file("/sys/fs/fuse/connections/" + devno.substr(colon + 1) + "/abort");
    abort_file << "1";
  }
}

// Test teardown: stops the snapshotter (SIGTERM, 20 s), aborts the FUSE connections it left under
// `dir` and detaches whatever is still mounted there, deepest first, so the temp dir can be
// removed. Either may be null / empty.
inline void StopSnapshotterAndDetachMounts(std::unique_ptr<harness::Subprocess>& snapshotter,
                                           const std::filesystem::path& dir) {
  if (snapshotter) {
    (void)snapshotter->Signal(SIGTERM);
    (void)snapshotter->Wait(std::chrono::seconds(20));
    snapshotter.reset();
  }
  if (dir.empty()) return;
  AbortFuseConnectionsUnder(dir);
  auto mounts = MountsUnder(dir);
  std::sort(mounts.rbegin(), mounts.rend());
  for (const auto& m : mounts) umount2(m.first.c_str(), MNT_DETACH);
}

}  // namespace lazycrypt::testing
