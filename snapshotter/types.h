// Domain types shared by the snapshotter's metadata store, logic and gRPC edge: containerd's
// snapshots.Info / Usage / mount.Mount, without any protobuf.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lazycrypt::snapshotter {

// Numbers match containerd.services.snapshots.v1.Kind.
enum class SnapshotKind { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };

// "view", "active", "committed" (containerd's String()), "unknown".
std::string_view SnapshotKindName(SnapshotKind kind);

using Labels = std::map<std::string, std::string>;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, std::chrono::nanoseconds>;

// containerd's snapshots.Info.
struct SnapshotInfo {
  std::string name;    // the key (active/view) or the committed name
  std::string parent;  // the parent's name, empty for none
  SnapshotKind kind = SnapshotKind::kUnknown;
  Labels labels;
  TimePoint created{};
  TimePoint updated{};

  bool operator==(const SnapshotInfo&) const = default;
};

// containerd's snapshots.Usage.
struct SnapshotUsage {
  int64_t size_bytes = 0;
  int64_t inodes = 0;
  bool operator==(const SnapshotUsage&) const = default;
};

// containerd's mount.Mount (the target is always empty in snapshotter replies).
struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;
  bool operator==(const Mount&) const = default;
};

// The label containerd sets on Prepare to ask a remote snapshotter for a layer: the name (chain ID)
// the layer should be committed under.
inline constexpr std::string_view kTargetSnapshotLabel = "containerd.io/snapshot.ref";
// The label lazycrypt adds to snapshots it committed from a remote (FUSE-mounted) layer.
inline constexpr std::string_view kRemoteLabel = "containerd.io/snapshot/lazycrypt.remote";
// containerd's limit on len(key)+len(value) of one label.
inline constexpr size_t kMaxLabelBytes = 4096;

}  // namespace lazycrypt::snapshotter
