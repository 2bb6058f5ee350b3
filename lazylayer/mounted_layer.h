// One lazycrypt layer opened for lazy reads and mounted with FUSE: the steps `lazycrypt mount`
// and the snapshotter share. Key unwrap, TOC verification and key commitment come from
// image::OpenLayerIndex; chunk fetching and caching from cache::CachedLayer; the file system
// from fusefs::FuseMount.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cached_layer.h"
#include "cache/chunk_store.h"
#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "fusefs/fuse_fs.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::lazylayer {

// The ChunkStore key of a lazycrypt layer's cached records: "sha256-<blob hex>-toc-<first 48 hex
// of the pinned TOC digest>" (124 characters) from the layer's digest and its TOC digest (both
// "sha256:<hex>"). The lazy path never hashes a whole blob, so the key names the TOC too, which
// pins every record (docs/FORMAT.md §4): records cached for one image are never looked up for
// another image's blob or TOC (and a record that fails its pin is refused when opened anyway).
std::string LayerStoreKey(std::string_view layer_digest, std::string_view toc_digest);

// Background verification of a lazily mounted layer (docs/FORMAT.md §8.4): once mounted, every
// chunk is fetched and opened in order, the SHA-256 of the tar stream is compared with the TOC's
// tar_sha256 (the diff_id the chain ID was computed from) and the TOC is matched against the tar
// stream entry by entry (format/toc_tar_match.h).
//   kPending:  not every byte has been hashed yet (also while the registry is unreachable: it
//              retries with backoff and never becomes kVerified without hashing every byte);
//   kVerified: the content is the diff_id's and the TOC describes it exactly;
//   kFailed:   it is not; the layer is quarantined: every later read of any of its files is EIO.
enum class Verification { kPending, kVerified, kFailed };

struct MountLayerOptions {
  // Ciphertext cache shared by layers; null = memory only. Must outlive the mounted layer.
  cache::ChunkStore* store = nullptr;
  cache::CachedLayerOptions cache;
  // Fetch the files the layer's TOC marks for prefetch (lazycrypt encrypt --prefetch-list)
  // before Mount returns, in as few ranged requests as possible.
  bool prefetch = true;
  // A layer whose blob is at most this many bytes is read whole by the mount's one request
  // (footer, TOC and every chunk; its chunks are then authenticated, opened and stored before
  // Mount returns), so that no first read of its files waits for a fetch; 0 = never. Not when
  // the store already holds the layer's footer and TOC (a node that has seen it).
  uint64_t whole_layer_bytes = 0;
  // Complete the layer in the background at this rate (bytes/s) once mounted; 0 = off.
  // Needs a store. With verify, the verification does this (at this rate when it is not 0).
  uint64_t background_rate_bytes_per_sec = 0;
  fusefs::MountOptions mount;
  // Verify the layer in the background once mounted (see Verification). Off only for tools that
  // look at a layer once (the snapshotter and `lazycrypt mount` keep it on).
  bool verify = true;
  // Fetch rate of the verification when background_rate_bytes_per_sec is 0 (bytes/s; 0 = as
  // fast as the source allows). Either way it yields to on-demand reads: it sends no request
  // while a read is fetching, and runs at a lower CPU priority.
  uint64_t verify_rate_bytes_per_sec = 0;
  // Start the verification this long after the mount (and its prefetch): the first reads of a
  // starting container then have the link to themselves. Lengthens the window (FORMAT.md §8.4).
  uint32_t verify_start_delay_ms = 0;
  // The diff_id this layer is used under (the image config's: the chain ID is computed from it),
  // when the caller knows it: the TOC's tar_sha256 must equal it, or the verification fails at
  // once (before any fetch) and the layer is quarantined.
  std::optional<crypto::Sha256Digest> expected_diff_id;
  // Called exactly once when the verification ends: OK when verified, else the failure (naming
  // the layer digest, never a file name). Called on the verification thread, with no lock of the
  // MountedLayer or its cache held; it may call verification() and verification_status(), but
  // must not destroy the MountedLayer. Not called when the layer is destroyed (or unmounted and
  // destroyed) before the verification ends, nor when verify is false.
  std::function<void(const Status&)> on_verified;
};

// Thread-safe as its parts. Destruction stops the background fetch and unmounts.
class MountedLayer {
 public:
  // `keepalive` is whatever `source` needs to stay valid (e.g. the registry client or image
  // source it reads through); it is destroyed after the mount and the cache. The layer's
  // descriptor (with its lazycrypt annotations) must describe `source`'s blob.
  // With `resumed` (a FuseMount::Resume of the mount a previous daemon left at `mountpoint`),
  // nothing is mounted: the layer is given to it (Provide) and it becomes this layer's mount;
  // on failure it stays the caller's, still waiting for a layer.
  static Result<std::unique_ptr<MountedLayer>> Mount(
      const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> source,
      std::shared_ptr<void> keepalive, const image::Descriptor& descriptor,
      const keywrap::KeyRing& keys, const MountLayerOptions& options,
      std::unique_ptr<fusefs::FuseMount>* resumed = nullptr);
  // Mount in two steps, for work done ahead of the mount (lazylayer/layer_warmup.h): Open
  // unwraps the key, opens footer and TOC (options.store, options.cache) and starts the prefetch
  // (options.prefetch), mounting nothing; Attach then mounts it at `mountpoint` (or gives it to
  // `resumed`, as Mount) and starts the verification (options.mount, verify...). Until Attach
  // succeeds, fuse() and mountpoint() must not be called. Mount = Open + Attach.
  static Result<std::unique_ptr<MountedLayer>> Open(std::shared_ptr<BlobSource> source,
                                                    std::shared_ptr<void> keepalive,
                                                    const image::Descriptor& descriptor,
                                                    const keywrap::KeyRing& keys,
                                                    const MountLayerOptions& options);
  Status Attach(const std::filesystem::path& mountpoint, const MountLayerOptions& options,
                std::unique_ptr<fusefs::FuseMount>* resumed = nullptr);
  bool attached() const { return mount_ != nullptr; }
  ~MountedLayer();
  MountedLayer(const MountedLayer&) = delete;
  MountedLayer& operator=(const MountedLayer&) = delete;

  // Unmounts (FailedPrecondition "busy" while in use; see FuseMount::Unmount). Idempotent.
  Status Unmount();
  // Stops serving and leaves the mount to the next daemon (FuseMount::LeaveMounted): the
  // background verification stops first. Destruction then leaves the mount alone.
  void LeaveMounted();
  const fusefs::FuseMount& fuse() const { return *mount_; }

  const std::filesystem::path& mountpoint() const { return mount_->mountpoint(); }
  const std::string& digest() const { return digest_; }
  const std::string& key_name() const { return key_name_; }
  uint64_t blob_size() const { return blob_size_; }
  cache::LayerStats stats() const { return layer_->stats(); }
  const cache::CachedLayer& layer() const { return *layer_; }
  // True when the footer and the sealed TOC came from the store (a layer this node opened
  // before): Mount then sent no request for them.
  bool opened_from_store() const { return opened_from_store_; }

  // Where the background verification stands (kPending until it has hashed every byte).
  // Thread-safe.
  Verification verification() const;
  // OK once verified; Unavailable ("layer sha256:...: verification pending ...") while pending;
  // the failure (AuthFailed or Corruption, "layer sha256:...: ...") once failed. Thread-safe.
  Status verification_status() const;

 private:
  MountedLayer() = default;
  // The end of the background verification (on its thread): logs a failure once and drops the
  // kernel's cached file data, so the quarantine covers pages already read.
  void OnVerified(const Status& result, const std::function<void(const Status&)>& user);
  std::shared_ptr<void> keepalive_;
  std::shared_ptr<BlobSource> source_;
  std::shared_ptr<cache::CachedLayer> layer_;
  std::unique_ptr<fusefs::FuseMount> mount_;
  std::string digest_;
  std::string key_name_;
  uint64_t blob_size_ = 0;
  bool opened_from_store_ = false;
};

}  // namespace lazycrypt::lazylayer
