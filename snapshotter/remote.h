// RemoteLayerHandler: the seam between the Snapshotter and whatever makes a layer appear without
// containerd downloading it (lazycrypt's FUSE layers). The Snapshotter never sees FUSE, the
// registry or keys; tests plug in a fake.
//
// The flow (as stargz-snapshotter's snapshot.go): on Prepare(key, parent, labels) where labels
// hold containerd.io/snapshot.ref = <target>, the Snapshotter
//   1. answers AlreadyExists at once if <target> already exists;
//   2. creates the active snapshot `key` (directory snapshots/<id>/fs);
//   3. calls TryMount (without holding its lock): true = "the layer is now mounted at
//      target_dir"; false = "not mine" (plain or standard ocicrypt layer) -> ordinary Prepare,
//      containerd downloads and unpacks; an error -> `key` is removed and the error returned
//      (e.g. "layer sha256:...: no key for it"), nothing is left behind;
//   4. on true, commits `key` as <target> with all the Prepare labels plus kRemoteLabel, marks it
//      remote in the metadata, and answers AlreadyExists `target snapshot "<target>"`. If that
//      commit fails, Unmount is called and `key` removed.
// On Remove of a remote snapshot the Snapshotter calls Unmount before deleting its directory.
// On start (Snapshotter::Open) it calls Restore for every committed remote snapshot (after a
// restart or kill -9 the layer must be mounted again; a stale mount left at target_dir by a crash
// is the handler's to detach first).
//
// Thread-safety: implementations must be thread-safe; TryMount for different keys may run
// concurrently, and concurrently with Unmount/Restore of other snapshots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/status.h"
#include "snapshotter/types.h"

namespace lazycrypt::snapshotter {

struct PrepareRequest {
  std::string key;                      // the active snapshot's key
  std::string parent;                   // its parent's name ("" for the bottom layer)
  Labels labels;                        // all Prepare labels (containerd.io/snapshot.ref,
                                        // containerd.io/snapshot/cri.*, .../remote/stargz.*, ...)
  std::filesystem::path target_dir;     // snapshots/<id>/fs: an existing empty directory
  int64_t snapshot_id = 0;
};

struct RestoreRequest {
  std::string name;                     // the committed name (the chain ID)
  std::string parent;
  Labels labels;                        // as committed (includes the Prepare labels)
  std::filesystem::path target_dir;     // snapshots/<id>/fs
  int64_t snapshot_id = 0;
};

class RemoteLayerHandler {
 public:
  virtual ~RemoteLayerHandler() = default;
  // Mounts the layer named by info.labels at info.target_dir if it is one of ours.
  virtual Result<bool> TryMount(const PrepareRequest& info) = 0;
  // Detaches the layer mounted at target_dir for snapshot `snapshot_id`. OK if nothing is
  // mounted there.
  virtual Status Unmount(int64_t snapshot_id, const std::filesystem::path& target_dir) = 0;
  // Mounts a committed remote snapshot again after a restart.
  virtual Status Restore(const RestoreRequest& info) = 0;
};

}  // namespace lazycrypt::snapshotter
