// The snapshotter's RemoteLayerHandler for lazycrypt layers: on Prepare with a lazycrypt layer's
// labels it resolves the image's manifest from the registry (the ocicrypt key annotations never
// reach a snapshotter through containerd), checks the layer there against the labels, unwraps the
// layer key with the node's keys, verifies the sealed TOC against the pinned digest and mounts the
// layer with FUSE at the snapshot's directory. Layers without the lazycrypt labels are declined
// at once, without any network request, and containerd pulls them as usual.
//
// Before the snapshotter commits a mounted layer under the chain ID containerd asked for, the
// chain ID must be the one the layer's own TOC gives (ChainIdOf(parent, TOC tar_sha256)): an
// image cannot mount content under a chain ID computed from diff_ids it merely claims.
//
// Check (every use of a committed layer, remote.h): refused when the layer is quarantined (its
// background verification found content that does not match its diff_id) or when the node's
// current keys no longer unwrap its layer key. The unwrap result is cached per key-set
// generation: a fingerprint of the key directories (every entry's name, inode, size, mtime,
// ctime, also through symlinks) and the password files, recomputed on each Check; the layer key
// is unwrapped again only when the fingerprint changed. (The key providers are configured once,
// at start: a restart, which starts with an empty cache, is what applies a new provider config.
// A provider's answer is cached like a key file's; an error from a provider is not.) A container
// already running keeps its overlay mount of the layer and keeps reading it after its key is
// removed (revocation stops new uses, not running ones; purge unmounts what no container uses).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/chunk_store.h"
#include "common/status.h"
#include "fdstore/fd_store.h"
#include "lazylayer/layer_warmup.h"
#include "lazylayer/mounted_layer.h"
#include "registry/registry.h"
#include "snapshotter/log.h"
#include "keywrap/keyring.h"
#include "snapshotter/remote.h"

namespace lazycrypt::lazylayer {

struct SnapshotHandlerOptions {
  // Node key directories (containerd/imgcrypt's convention: every file a private key). Read at
  // each mount, so keys added to a directory apply without a restart. Missing directories are
  // skipped; none holding a key → every lazycrypt layer is refused.
  std::vector<std::filesystem::path> key_dirs;
  // Password files of password-protected keys in key_dirs (key file → password file, 0600 and
  // owned by the daemon's user). An encrypted key without one is skipped with a warning.
  std::map<std::filesystem::path, std::filesystem::path> key_passwords;
  // ocicrypt key providers tried after the key files, in order (keywrap/keyprovider.h).
  std::vector<std::shared_ptr<const keywrap::KeyProvider>> key_providers;
  registry::ClientOptions registry;
  // Ciphertext chunk cache shared by every layer; null = memory only.
  std::shared_ptr<cache::ChunkStore> store;
  MountLayerOptions layer;  // prefetch, background fetch, cache and FUSE options (store ignored)
  // A layer whose background verification is still pending this long after its mount is
  // refused to new uses (Check) until it ends: a source that keeps failing, or reads that keep
  // the verification waiting, cannot keep a layer unverified and usable forever. 0 = no bound.
  std::chrono::milliseconds verify_deadline{std::chrono::minutes(30)};
  // Mounts, unmounts and restores at info level; never keys or file contents.
  snapshotter::LogSink log;
  // Restarts (README "Restarts and upgrades"). Each mounted layer's /dev/fuse fd is kept here
  // (named lcfuse.<snapshot id>.<connection>), so that the connection outlives this process; a
  // Restore finds the one its snapshot left and resumes that mount (running containers keep
  // their files; nothing is mounted twice). Null: mounts end with the daemon, and a Restore
  // mounts afresh. layer.mount.clone_fd must be off with a store (fusefs/fuse_fs.h).
  std::shared_ptr<fdstore::FdStore> fd_store;
  // Standard ocicrypt layers (skopeo, buildah, ctr-imgcrypt) are unpacked by the snapshotter
  // itself (lazylayer/ocicrypt_unpack.h): fetched, their HMAC checked, decrypted and unpacked
  // before anything is committed, so an encrypted image runs on any containerd and pull path.
  // Costs one manifest request per pull for images whose layers are not lazycrypt's (to learn
  // each layer's media type; shared by the pull's layers). false: containerd pulls them itself
  // (a stream processor such as imgcrypt's ctd-decoder must decrypt them).
  bool unpack_ocicrypt = true;
  // With unpack_ocicrypt: a layer with a usable seekable index (a sealed zindex referrer of its
  // image manifest, `lazycrypt index`, docs/FORMAT.md §11) is mounted lazily instead
  // (lazylayer/indexed_layer.h) and verified in the background; without one, unpacked. The
  // referrers are asked once per pull, beside the manifests.
  bool lazy_index = true;
  // The largest index core (header, TOC and span table) fetched at mount and kept on disk (at
  // most zindex::kMaxSealedIndexBytes, which alone bounds the whole index blob).
  uint64_t index_max_bytes = uint64_t{64} << 20;
  // A Prepare's index lookup (referrers, artifact manifests, sealed blobs) starts no request
  // after this long: then the layer is unpacked (a registry that lists much, or answers slowly,
  // cannot hold a Prepare for hours). 0 = no bound.
  std::chrono::milliseconds index_lookup_timeout{std::chrono::seconds(60)};
  // A Prepare of a lazycrypt layer opens the image's later lazycrypt layers ahead, in parallel
  // (lazylayer/layer_warmup.h), so that containerd's Prepares of them, which come one after
  // another, find them opened and only mount them. warmup.workers = 0: each Prepare opens its
  // own layer.
  LayerWarmupOptions warmup;
  // Destruction (a clean stop) leaves the mounts to the next daemon; false unmounts them.
  bool keep_mounts_on_exit = true;
  // A resumed mount whose layer cannot be restored yet (registry unreachable) is retried in the
  // background this long (its uncached reads wait, layer.mount.pending_wait at a time); then
  // given up: every read of it fails with EIO and it is reported in /status.
  std::chrono::seconds restore_retry_for{300};
};

// What `lazycrypt status` and the metrics endpoint show per mounted layer.
struct MountedLayerStatus {
  int64_t snapshot_id = 0;
  std::string image_ref;
  std::string layer_digest;
  std::filesystem::path mountpoint;
  uint64_t blob_size = 0;
  cache::LayerStats stats;
  Verification verification = Verification::kPending;
  // A resumed mount after a restart: "restoring" or "failed" (snapshotter::RemoteLayerInfo).
  std::string restore_state;
  std::string restore_error;
};

// Thread-safe.
class SnapshotHandler final : public snapshotter::RemoteLayerHandler {
 public:
  static Result<std::unique_ptr<SnapshotHandler>> Create(SnapshotHandlerOptions options);
  ~SnapshotHandler() override;

  Result<bool> TryMount(const snapshotter::PrepareRequest& info) override;
  Status Unmount(int64_t snapshot_id, const std::filesystem::path& target_dir) override;
  Status Restore(const snapshotter::RestoreRequest& info) override;
  Status Check(const snapshotter::CheckRequest& info) override;
  Result<snapshotter::PurgedLayer> Purge(const snapshotter::CheckRequest& info) override;
  void RestoreFinished() override;
  snapshotter::RestartInfo Restarts() const override;
  // The node-wide opened-chunk budget (options.layer.cache.opened_cache), when there is one.
  snapshotter::PlaintextCacheInfo PlaintextCache() const override;

  std::vector<MountedLayerStatus> Layers() const;
  // The warm-up's counters (zero when it is off).
  LayerWarmupStats Warmup() const;
  // Layers() mapped to the snapshotter's RemoteLayerInfo (for its metrics endpoint).
  std::vector<snapshotter::RemoteLayerInfo> MountedLayers() const override;
  // A mounted layer's cached ciphertext; an unpacked ocicrypt layer's files.
  std::optional<snapshotter::SnapshotUsage> CachedUsage(int64_t snapshot_id) const override;

 private:
  struct Impl;
  explicit SnapshotHandler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Detaches whatever is mounted at `dir` (MNT_DETACH), e.g. a FUSE mount whose daemon died.
// OK when nothing is mounted there.
Status DetachStaleMount(const std::filesystem::path& dir);

// The key-set generation: a fingerprint of everything the node's keys are read from (see
// SnapshotHandler). Equal fingerprints = nothing a key load would see has changed.
std::string KeySetFingerprint(const SnapshotHandlerOptions& options);

}  // namespace lazycrypt::lazylayer
