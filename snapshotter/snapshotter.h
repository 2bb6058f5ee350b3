// Snapshotter: containerd's overlayfs snapshotter semantics (snapshots/overlay/overlay.go of
// containerd 1.6 over snapshots/storage), plus lazycrypt's remote-layer hook (remote.h). No gRPC
// here: service.h translates.
//
// Layout under root (created 0700): metadata.db (MetadataStore), snapshots/<id>/fs (the upper
// dir of an active snapshot, the layer contents of a committed one, or the mount point of a
// remote layer) and snapshots/<id>/work (overlay workdir, active snapshots only).
//
// Mounts: no parent -> bind mount of fs ("rw" for active, "ro" for view, plus "rbind"); a view
// with one parent -> read-only bind of the parent's fs; otherwise one overlay mount with
// ["index=off" when the kernel knows it,] "workdir=", "upperdir=" (active only) and
// "lowerdir=" (parents' fs, nearest first, ':'-joined).
//
// Errors (as containerd's errdefs): NotFound, AlreadyExists, FailedPrecondition, InvalidArgument
// where containerd's overlayfs snapshotter returns them; IoError for the disk.
//
// Authorization: every use of a committed remote snapshot is checked with the remote handler
// (remote.h, "Authorization on every use"); a refused one answers FailedPrecondition.
//
// Thread-safety: all methods are thread-safe (one internal mutex; the remote handler's TryMount,
// Check and Restore retries run outside it).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "snapshotter/log.h"
#include "snapshotter/remote.h"
#include "snapshotter/types.h"

namespace lazycrypt::snapshotter {

struct SnapshotterOptions {
  std::filesystem::path root;                   // state dir; created 0700 if missing
  std::shared_ptr<RemoteLayerHandler> remote;   // null: no remote snapshots
  LogSink log = NullLogSink();
  // Add "index=off" to overlay options. Unset: as containerd 1.6, when
  // /sys/module/overlay/parameters/index exists.
  std::optional<bool> overlay_index_off;
  // A remote snapshot whose Restore failed is retried by a later use no sooner than this after
  // the previous attempt (each attempt may reach the registry and the key providers).
  std::chrono::milliseconds restore_retry_interval{3000};
};

// What Snapshotter::Purge did.
struct PurgeReport {
  struct Removed {
    std::string snapshot;       // the committed name (chain ID)
    std::string layer_digest;
    std::string reason;         // why it was purged (the refusal: no key, quarantined)
    uint64_t bytes_freed = 0;   // cached ciphertext removed
    std::string note;
  };
  struct Kept {
    std::string snapshot;
    std::string reason;         // why it was a candidate
    std::string why_kept;       // e.g. "3 snapshots are based on it: ..."
  };
  std::vector<Removed> removed;
  std::vector<Kept> kept;
  uint64_t bytes_freed = 0;
};

class Snapshotter {
 public:
  // Opens the store under options.root and restores remote snapshots (a failed restore is
  // logged; the snapshot stays, as stargz-snapshotter's allow_invalid_mounts_on_restart).
  static Result<std::unique_ptr<Snapshotter>> Open(SnapshotterOptions options);
  virtual ~Snapshotter() = default;

  virtual Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                             const Labels& labels) = 0;
  virtual Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                          const Labels& labels) = 0;
  // FailedPrecondition for a committed snapshot (containerd: "not active or view").
  virtual Result<std::vector<Mount>> Mounts(const std::string& key) = 0;
  virtual Status Commit(const std::string& name, const std::string& key,
                        const Labels& labels) = 0;
  virtual Status Remove(const std::string& key) = 0;
  virtual Result<SnapshotInfo> Stat(const std::string& key) = 0;
  virtual Result<SnapshotInfo> Update(const SnapshotInfo& info,
                                      const std::vector<std::string>& field_paths) = 0;
  // Calls fn for each snapshot matching any of `filters` (containerd filter syntax, filters.h),
  // ordered by name. fn runs without the lock held on a snapshot of the list.
  virtual Status Walk(const std::vector<std::string>& filters,
                      const std::function<Status(const SnapshotInfo&)>& fn) = 0;
  // Active: real disk use of fs (st_blocks * 512 of distinct inodes, and their count); committed
  // remote (lazily mounted): the handler's CachedUsage, what is cached on disk for its layer now;
  // other committed: as stored at commit; view: zero.
  virtual Result<SnapshotUsage> Usage(const std::string& key) = 0;
  // Removes directories under snapshots/ that belong to no snapshot in the store.
  virtual Status Cleanup() = 0;
  // Removes the remote snapshots the node may no longer use because the handler says no key
  // unwraps their layer or their layer is quarantined: unmounts them, drops their cached
  // ciphertext and their snapshots. A snapshot that other snapshots in the store are based on (a
  // container's, or a layer above it) is kept and reported with the reason. Snapshots refused for
  // other reasons (registry down) are neither removed nor reported. containerd's own records of
  // removed snapshots stay until their images are removed (`ctr images rm`, `crictl rmi`).
  virtual Result<PurgeReport> Purge() = 0;

  // The directory of snapshot `id` (snapshots/<id>), for tests and the remote handler.
  virtual std::filesystem::path SnapshotDir(int64_t id) const = 0;
};

// Disk usage of a tree as containerd's fs.DiskUsage: distinct inodes and the sum of their
// st_blocks * 512, the root included; does not cross into other filesystems.
Result<SnapshotUsage> DiskUsage(const std::filesystem::path& root);

}  // namespace lazycrypt::snapshotter
