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
// Background work after the mount (lazylayer/ctr_layer.h, shared with the indexed ocicrypt
// layer): the files before `.prefetch.landmark` are fetched first, then (verify) the whole blob
// is read once: ocicrypt's HMAC, the blob digest and privopts' plaintext
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
#include "common/io.h"
#include "common/status.h"
#include "estargz/reader.h"
#include "fusefs/fuse_fs.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "lazylayer/ctr_layer.h"
#include "lazylayer/mounted_layer.h"

namespace lazycrypt::lazylayer {

// True when `descriptor` is an ocicrypt layer carrying the ocicrypt-estargz TOC pin
// (estargz::kAnnotationTocDigest): the snapshotter mounts it lazily instead of unpacking it.
bool IsEstargzOcicryptLayer(const image::Descriptor& descriptor);

// The ChunkStore key of an ocicrypt-estargz layer's cached chunk members: "esgz-<blob hex>-toc-
// <first 48 hex of the pinned TOC digest>" (122 characters), never a GCM layer's key
// (LayerStoreKey). Each stored member is checked against its chunk digest on every use.
std::string EstargzStoreKey(std::string_view layer_digest, std::string_view toc_digest);

// The CTR layers' options (lazylayer/ctr_layer.h); prefetch: the files before
// `.prefetch.landmark`.
struct EstargzMountOptions : CtrLayerOptions {
  // What the TOC may hold (the snapshotter sets the node's [limits] toc_max_entries and
  // toc_max_bytes here).
  estargz::ReaderLimits limits;
};

class MountedEstargzLayer final : public CtrMountedLayer {
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
  ~MountedEstargzLayer() override;

 private:
  class Data;
  MountedEstargzLayer() = default;
  void Prefetch(const std::function<bool()>& stopped) override;
  Result<std::string> VerifyContent(InputStream& plain, LargeReadStream& ciphertext) override;
  std::shared_ptr<Data> estargz_data_;
};

}  // namespace lazycrypt::lazylayer
