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
// is the handler's to detach first). A snapshot whose Restore failed is *unavailable*: every use
// of it is refused with the restore error, and a later use retries the Restore (at most once per
// SnapshotterOptions::restore_retry_interval), so it never serves the empty directory under it.
//
// Authorization on every use: containerd reuses a committed snapshot by its chain ID without
// asking the snapshotter whose it is (Stat(chainID) in the unpackers, AlreadyExists answered from
// containerd's own metadata, container Prepares on top). So before each use of a committed remote
// snapshot the Snapshotter calls Check: in Stat of it, in Prepare with it as the target (before
// answering AlreadyExists), and for every remote snapshot in the parent chain of a Prepare, a View
// and a Mounts. A failed Check is returned as FailedPrecondition with the handler's message (the
// layer digest and the reason), never as NotFound: containerd then fails the pull or the
// container's start with that message instead of pulling the layer again.
//
// Thread-safety: implementations must be thread-safe; TryMount for different keys may run
// concurrently, and concurrently with Unmount/Restore of other snapshots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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

// A committed remote snapshot about to be used (Check) or purged (Purge).
struct CheckRequest {
  std::string name;                     // the committed name (the chain ID)
  std::string parent;
  Labels labels;                        // as committed
  std::filesystem::path target_dir;     // snapshots/<id>/fs
  int64_t snapshot_id = 0;
};

// What Purge removed of one layer.
struct PurgedLayer {
  std::string layer_digest;             // "sha256:..." ("" if the labels name none)
  uint64_t bytes_freed = 0;             // ciphertext removed from the local chunk cache
  std::string note;                     // e.g. why the cache was kept (another snapshot uses it)
};

struct RestoreRequest {
  std::string name;                     // the committed name (the chain ID)
  std::string parent;
  Labels labels;                        // as committed (includes the Prepare labels)
  std::filesystem::path target_dir;     // snapshots/<id>/fs
  int64_t snapshot_id = 0;
};

// One mounted remote layer as the metrics endpoint and `lazycrypt status` show it: counters of
// cache::LayerStats copied out (the snapshotter library does not depend on the cache). Never any
// key or file data.
struct RemoteLayerInfo {
  int64_t snapshot_id = 0;
  std::string image_ref;                // e.g. "registry.example/app:1"
  std::string layer_digest;             // "sha256:..."
  std::filesystem::path mountpoint;
  uint64_t blob_size_bytes = 0;         // the layer blob in the registry
  uint64_t bytes_fetched = 0;           // bytes read from the registry
  uint64_t fetch_requests = 0;          // ranged requests
  uint64_t chunks_fetched = 0;
  uint64_t chunks_opened = 0;           // authenticated + decrypted
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;
  uint64_t auth_failures = 0;           // chunks that failed authentication
  uint64_t fetch_errors = 0;            // ranged requests that failed
  uint64_t fetch_nanos = 0;             // wall time spent fetching
  uint64_t bytes_present = 0;           // ciphertext of this layer on local disk now
  uint64_t chunks_present = 0;
  uint64_t chunk_count = 0;
  // Background verification of the whole layer against its diff_id: "pending", "verified",
  // "failed" ("" when the handler does not verify). A failed layer is quarantined: every use
  // of it is refused (Check).
  std::string verification;
  bool quarantined = false;
  // After a restart: "restoring" while the layer of a resumed mount is being restored (its reads
  // wait), "failed" once given up (its reads fail with EIO); "" when mounted and served.
  std::string restore_state;
  std::string restore_error;  // the last restore failure (names the layer, never a file)
};

// What restarts did (README "Restarts and upgrades"), for metrics and /status.
struct RestartInfo {
  std::string fd_store;             // "systemd", "holder", or "" (none: mounts die with the daemon)
  uint64_t fds_found = 0;           // FUSE connections the fd store held at this daemon's start
  uint64_t fds_resumed = 0;         // of them, served again (the same mount, nothing mounted twice)
  uint64_t resend_notifications = 0;  // resumed connections whose kernel took FUSE_NOTIFY_RESEND
  uint64_t layers_restored = 0;     // lazy layers served again after this daemon's start
  uint64_t layers_restore_failed = 0;  // resumed layers given up: their reads fail with EIO
  uint64_t layers_restoring = 0;    // resumed layers being restored now (their reads wait)
  uint64_t requests_waited = 0;     // FUSE requests that waited for a layer being restored
};

// The node-wide budget of opened (decrypted) chunks every mounted layer shares (issue 19,
// cache/opened_chunk_cache.h), for metrics and /status. present = false: the handler has none.
struct PlaintextCacheInfo {
  bool present = false;
  uint64_t budget_bytes = 0;
  uint64_t bytes_held = 0;
  uint64_t chunks_held = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t evicted_bytes = 0;
  uint64_t not_kept = 0;  // chunks larger than the whole budget: served, not kept
  uint64_t trims = 0;     // times freed memory was handed back to the kernel
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
  // Whether the committed remote snapshot `info` may be used now. It must be cheap (containerd
  // calls Stat often): the answer may be cached while nothing it depends on changed (e.g. the
  // node's key files). Errors, their message naming the layer digest and the snapshot:
  //   PermissionDenied  the node's keys no longer unwrap the layer's key ("no key ...");
  //   AuthFailed        the layer is quarantined (its content does not match its diff_id);
  //   anything else     not usable now (e.g. not mounted); a later Check may succeed.
  // Purge removes the first two kinds.
  virtual Status Check(const CheckRequest& info) = 0;
  // Unmounts the layer of a snapshot being purged and drops what the handler keeps of it (the
  // cached ciphertext), unless another mounted snapshot still uses it. The default: Unmount.
  virtual Result<PurgedLayer> Purge(const CheckRequest& info) {
    LC_RETURN_IF_ERROR(Unmount(info.snapshot_id, info.target_dir));
    return PurgedLayer{};
  }
  // The layers mounted now, for metrics and `lazycrypt status`. The default: none.
  virtual std::vector<RemoteLayerInfo> MountedLayers() const { return {}; }
  // Called once at start, after every committed remote snapshot was offered to Restore: what
  // the handler kept from a previous daemon and no snapshot claimed can go.
  virtual void RestoreFinished() {}
  virtual RestartInfo Restarts() const { return {}; }
  virtual PlaintextCacheInfo PlaintextCache() const { return {}; }
  // What the lazily mounted layer of snapshot `snapshot_id` occupies on local disk now: the
  // ciphertext records of its layer in the chunk cache (shared by every snapshot of the same
  // layer) and one inode (the mount point). containerd's Usage and, through it, the kubelet's
  // image-filesystem stats read this; the layer's full size would count bytes never fetched.
  // nullopt when that snapshot has no mounted layer. The default looks through MountedLayers().
  virtual std::optional<SnapshotUsage> CachedUsage(int64_t snapshot_id) const {
    for (const RemoteLayerInfo& layer : MountedLayers()) {
      if (layer.snapshot_id != snapshot_id) continue;
      return SnapshotUsage{static_cast<int64_t>(layer.bytes_present), 1};
    }
    return std::nullopt;
  }
};

}  // namespace lazycrypt::snapshotter
