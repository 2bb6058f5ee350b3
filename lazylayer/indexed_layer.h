// A standard ocicrypt AES-CTR layer (skopeo, buildah, ctr-imgcrypt: a gzip tar under
// AES_256_CTR_HMAC_SHA256, unmodified) served lazily with FUSE through its seekable index
// (zindex/zindex.h, docs/FORMAT.md §11, made by `lazycrypt index`): chunk i of the mount is span
// i of the index; a read fetches exactly the ciphertext its spans need, checks each span's
// ciphertext against the SHA-256 the index pins, decrypts it with CTR and inflates it from the
// span's checkpoint (zindex::OpenedIndex::DecodeSpan) before a byte is served. The span's
// sealed window (zindex v2: not in the core the mount opened) comes from the index blob by range,
// fetched in parallel with the span's ciphertext (CtrLayerData side bytes), authenticated by
// DecodeSpan, and kept with the span's ciphertext in the chunk store (in a bounded memory cache
// without one), so a span opened again from disk needs no network.
//
// Each window is pinned by the core (its SHA-256, checked by DecodeSpan before it is opened): the
// mount and the verification decode a span with the same window bytes, whatever the registry
// serves to either.
//
// The index is made by a key holder and sealed with a key derived from the layer key; the
// ciphertext digests it pins are only as good as its maker. So the background verification
// (lazylayer/ctr_layer.h, shared with the ocicrypt-estargz layer) reads the whole blob once and
// checks ocicrypt's HMAC, the blob digest and privopts' plaintext digest, recomputes the diff_id
// (which must be the index's and give the snapshot's chain ID), matches every entry of the index
// against the real tar stream (TocTarMatcher: names, types, modes, owners, times, sizes, data
// offsets, links, xattrs, nothing after the end) and every span against the real stream (span i
// decoded from the real ciphertext must be the stream's bytes [out_i, out_{i+1})): a fabricated
// table of contents, checkpoint or window cannot serve other bytes than an eager node unpacks.
// Any failure quarantines the layer: every later read of its files is EIO.
//
// Thread-safe as its parts. Destruction stops the background work and unmounts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/io.h"
#include "common/status.h"
#include "fusefs/fuse_fs.h"
#include "image/layer.h"
#include "image/oci.h"
#include "lazylayer/ctr_layer.h"
#include "zindex/zindex.h"

namespace lazycrypt::lazylayer {

// The ChunkStore key of an indexed layer's cached spans: "zidx-<blob hex>-idx-<first 48 hex of
// `core_digest`>" (122 characters), never a GCM or eStargz layer's key; `core_digest` is the
// SHA-256 of the header and core the layer opened with (which lays the records out: two cores
// never share a key). Each stored span (its ciphertext, then its sealed window) is checked
// against the index on every use.
std::string IndexedStoreKey(std::string_view layer_digest, std::string_view core_digest);

// What this layer can serve, as OpenedIndex::Open's limits: a sealed index of at most
// `max_sealed_bytes` (and the format's maximum), its serialized plaintext at most 4x that, and no
// span whose ciphertext the mount would refuse to fetch (the snapshotter then unpacks the layer,
// where a larger span would mount and answer EIO for good).
zindex::Limits IndexedLayerLimits(uint64_t max_sealed_bytes);

// The CTR layers' options (lazylayer/ctr_layer.h). With `prefetch`, the files the index marks
// (zindex core field `prefetch`, `lazycrypt index --prefetch-list`) are loaded once mounted: the
// spans holding their data, claimed at once, read in runs (CtrLayerData::LoadRuns, several in
// flight) with their windows read in groups from the index blob alongside each run.
struct IndexedMountOptions : CtrLayerOptions {};

class MountedIndexedLayer final : public CtrMountedLayer {
 public:
  // `ciphertext` is the blob `descriptor` describes (an ocicrypt AES-CTR layer), `sealed_index`
  // the whole sealed index blob (its windows are read from it by range; its size must be
  // index->sealed_size()), `cipher` its unwrapped key (image::UnwrapOcicryptLayer), `index` its
  // opened index (zindex::OpenedIndex::Open with the same descriptor and cipher), `store_key`
  // IndexedStoreKey. Errors: Corruption when the blob size is not the descriptor's or the
  // index's, or the index blob's not the index's; the mount's.
  // With `resumed` (a FuseMount::Resume of the mount a previous daemon left at `mountpoint`),
  // nothing is mounted: the layer is given to it (Provide: the same entries give the same inode
  // numbers) and it becomes this layer's mount; on failure it stays the caller's.
  static Result<std::unique_ptr<MountedIndexedLayer>> Mount(
      const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> ciphertext,
      std::shared_ptr<BlobSource> sealed_index, const image::Descriptor& descriptor,
      image::OcicryptLayerCipher cipher, std::shared_ptr<const zindex::OpenedIndex> index,
      std::string store_key,
      const IndexedMountOptions& options, std::unique_ptr<fusefs::FuseMount>* resumed = nullptr);
  ~MountedIndexedLayer() override;

  const zindex::OpenedIndex& index() const { return *index_; }

 private:
  class Data;
  MountedIndexedLayer() = default;
  // The marked files' spans (IndexedMountOptions), on the background thread.
  void Prefetch(const std::function<bool()>& stopped) override;
  Result<std::string> VerifyContent(InputStream& plain, LargeReadStream& ciphertext) override;
  std::shared_ptr<const zindex::OpenedIndex> index_;
  std::shared_ptr<Data> indexed_data_;  // = data_ (the verification reads windows through it)
};

}  // namespace lazycrypt::lazylayer
