// One ocicrypt-estargz layer (docs/FORMAT.md §10, `lazycrypt encrypt --format ocicrypt-estargz`)
// served lazily with FUSE: the layer key is unwrapped from the ocicrypt descriptor, the eStargz
// footer and TOC are decrypted by CTR ranges and the TOC is checked against the digest pinned in
// the descriptor before it is parsed (estargz::OpenIndex); each file read fetches only the
// ciphertext of the chunks it needs, decrypts and inflates them and checks each chunk's SHA-256
// from the pinned TOC before a byte is served (a chunk that fails is EIO, never wrong bytes).
//
// The FUSE file system (fusefs/) is reused unchanged: the eStargz entries are mapped to
// format::Entry and given to it through format::LayerIndex::FromVerifiedForeignToc, with chunk i
// of that index = chunk i of the eStargz TOC.
//
// Background work after the mount: the files before `.prefetch.landmark` are fetched first, then
// (verify) the whole blob is read once: ocicrypt's HMAC, the blob digest and privopts' plaintext
// digest are checked and the SHA-256 of the decompressed tar stream (the diff_id) is handed to
// check_diff_id (the snapshotter: it must give the snapshot's chain ID). Any failure quarantines
// the layer: every later read of its files (and its metadata) is EIO.
//
// Thread-safe as its parts. Destruction stops the background work and unmounts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "cache/chunk_store.h"
#include "cache/layer_data.h"
#include "cache/opened_chunk_cache.h"
#include "common/io.h"
#include "common/status.h"
#include "fusefs/fuse_fs.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "lazylayer/mounted_layer.h"

namespace lazycrypt::lazylayer {

// True when `descriptor` is an ocicrypt layer carrying the ocicrypt-estargz TOC pin
// (estargz::kAnnotationTocDigest): the snapshotter mounts it lazily instead of unpacking it.
bool IsEstargzOcicryptLayer(const image::Descriptor& descriptor);

// The ChunkStore key of an ocicrypt-estargz layer's cached chunk members: "esgz-<blob hex>-toc-
// <first 48 hex of the pinned TOC digest>" (122 characters), never a GCM layer's key
// (LayerStoreKey). Each stored member is checked against its chunk digest on every use.
std::string EstargzStoreKey(std::string_view layer_digest, std::string_view toc_digest);

struct EstargzMountOptions {
  fusefs::MountOptions mount;
  // Ciphertext of fetched (and verified) chunk members on local disk, shared by layers; null =
  // memory only. Must outlive the layer.
  cache::ChunkStore* store = nullptr;
  // Where opened (decrypted, inflated, verified) chunks are kept, wiped when dropped: the
  // node-wide budget shared with the daemon's other layers (cache/opened_chunk_cache.h); null = a
  // cache of this layer's own of opened_chunk_cache_bytes.
  std::shared_ptr<cache::OpenedChunkCache> opened_cache;
  uint64_t opened_chunk_cache_bytes = uint64_t{64} << 20;
  // Fetch the files before `.prefetch.landmark` in the background once mounted.
  bool prefetch = true;
  // Verify the whole layer in the background once mounted (see above).
  bool verify = true;
  uint32_t verify_start_delay_ms = 0;
  // The verification's fetch rate (bytes/s; 0 = as fast as the source allows). Either way it
  // sends no request while a read is fetching a chunk, and runs at a lower CPU priority.
  uint64_t verify_rate_bytes_per_sec = 0;
  // Given the verified layer's diff_id ("sha256:<hex>" of its tar stream): OK when the layer may
  // be used under it; an error quarantines the layer. Null: any diff_id is accepted.
  std::function<Status(const std::string& diff_id)> check_diff_id;
  // Called once when the verification ends (OK or the failure naming the layer, never a file),
  // on the verification thread; must not destroy the layer. Not called when the layer is
  // destroyed first.
  std::function<void(const Status&)> on_verified;
};

class MountedEstargzLayer {
 public:
  // `ciphertext` is the encrypted blob `descriptor` (from the manifest, with its ocicrypt and
  // eStargz annotations) describes. Errors: NotFound/PermissionDenied from the key unwrap,
  // AuthFailed "estargz TOC digest mismatch ..." when the TOC is not the pinned one, Corruption
  // for a malformed footer or TOC, the mount's errors.
  // With `resumed` (a FuseMount::Resume of the mount a previous daemon left at `mountpoint`),
  // nothing is mounted: the layer is given to it (Provide: the same entries give the same inode
  // numbers) and it becomes this layer's mount; on failure it stays the caller's.
  static Result<std::unique_ptr<MountedEstargzLayer>> Mount(
      const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> ciphertext,
      const image::Descriptor& descriptor, const keywrap::KeyRing& keys,
      const EstargzMountOptions& options,
      std::unique_ptr<fusefs::FuseMount>* resumed = nullptr);
  ~MountedEstargzLayer();
  MountedEstargzLayer(const MountedEstargzLayer&) = delete;
  MountedEstargzLayer& operator=(const MountedEstargzLayer&) = delete;

  // Unmounts (FailedPrecondition "busy" while in use). Idempotent.
  Status Unmount();
  // Stops the background work and leaves the mount to the next daemon
  // (FuseMount::LeaveMounted); destruction then leaves the mount alone.
  void LeaveMounted();
  const fusefs::FuseMount& fuse() const { return *mount_; }
  const std::filesystem::path& mountpoint() const { return mount_->mountpoint(); }
  const std::string& digest() const { return digest_; }
  const std::string& key_name() const { return key_name_; }
  uint64_t blob_size() const { return blob_size_; }
  uint64_t chunk_count() const;
  const std::string& store_key() const;  // EstargzStoreKey
  // Counters of on-demand reads and prefetch (blob_bytes_fetched does not include the
  // verification's full read).
  cache::LayerStats stats() const;
  Verification verification() const;
  // OK once verified; Unavailable while pending; the failure once failed.
  Status verification_status() const;

 private:
  class Data;
  struct Background;
  MountedEstargzLayer() = default;
  void RunBackground(EstargzMountOptions options);
  void StopBackground();
  Status VerifyOnce(const EstargzMountOptions& options);
  std::shared_ptr<Data> data_;
  std::unique_ptr<fusefs::FuseMount> mount_;
  image::Descriptor descriptor_;
  std::unique_ptr<image::OcicryptLayerCipher> cipher_;  // for the verification's full read
  std::unique_ptr<Background> background_;
  std::string digest_;
  std::string store_key_;
  std::string key_name_;
  uint64_t blob_size_ = 0;
};

}  // namespace lazycrypt::lazylayer
