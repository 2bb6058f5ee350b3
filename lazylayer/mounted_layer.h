// One lazycrypt layer opened for lazy reads and mounted with FUSE: the steps `lazycrypt mount`
// and the snapshotter share. Key unwrap, TOC verification and key commitment come from
// image::OpenLayerIndex; chunk fetching and caching from cache::CachedLayer; the file system
// from fusefs::FuseMount.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cache/cached_layer.h"
#include "cache/chunk_store.h"
#include "common/io.h"
#include "common/status.h"
#include "fusefs/fuse_fs.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::lazylayer {

struct MountLayerOptions {
  // Ciphertext cache shared by layers; null = memory only. Must outlive the mounted layer.
  cache::ChunkStore* store = nullptr;
  cache::CachedLayerOptions cache;
  // Fetch the files the layer's TOC marks for prefetch (lazycrypt encrypt --prefetch-list)
  // before Mount returns, in as few ranged requests as possible.
  bool prefetch = true;
  // Complete the layer in the background at this rate (bytes/s) once mounted; 0 = off.
  // Needs a store.
  uint64_t background_rate_bytes_per_sec = 0;
  fusefs::MountOptions mount;
};

// Thread-safe as its parts. Destruction stops the background fetch and unmounts.
class MountedLayer {
 public:
  // `keepalive` is whatever `source` needs to stay valid (e.g. the registry client or image
  // source it reads through); it is destroyed after the mount and the cache. The layer's
  // descriptor (with its lazycrypt annotations) must describe `source`'s blob.
  static Result<std::unique_ptr<MountedLayer>> Mount(const std::filesystem::path& mountpoint,
                                                     std::shared_ptr<BlobSource> source,
                                                     std::shared_ptr<void> keepalive,
                                                     const image::Descriptor& descriptor,
                                                     const keywrap::KeyRing& keys,
                                                     const MountLayerOptions& options);
  ~MountedLayer();
  MountedLayer(const MountedLayer&) = delete;
  MountedLayer& operator=(const MountedLayer&) = delete;

  // Unmounts (FailedPrecondition "busy" while in use; see FuseMount::Unmount). Idempotent.
  Status Unmount();

  const std::filesystem::path& mountpoint() const { return mount_->mountpoint(); }
  const std::string& digest() const { return digest_; }
  const std::string& key_name() const { return key_name_; }
  uint64_t blob_size() const { return blob_size_; }
  cache::LayerStats stats() const { return layer_->stats(); }
  const cache::CachedLayer& layer() const { return *layer_; }

 private:
  MountedLayer() = default;
  std::shared_ptr<void> keepalive_;
  std::shared_ptr<BlobSource> source_;
  std::shared_ptr<cache::CachedLayer> layer_;
  std::unique_ptr<fusefs::FuseMount> mount_;
  std::string digest_;
  std::string key_name_;
  uint64_t blob_size_ = 0;
};

}  // namespace lazycrypt::lazylayer
