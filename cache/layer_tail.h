// The end of a lazycrypt blob (footer and sealed TOC: what format::LayerIndex::Open reads) kept
// in the ChunkStore beside the layer's records, so that a layer the node has seen opens again
// without a registry request (a second snapshot of the layer, a re-pull, a restarted daemon).
//
// The stored bytes are ciphertext exactly as the registry served them, and they are not trusted
// more than the registry: whoever opens the layer from them checks them as fresh bytes (footer
// bounds, the key commitment, the TOC digest pinned by the manifest on every use, the TOC's GCM
// tag). Only bytes that opened the layer are stored (Persist after a successful open), and a
// stored tail that fails to open it is dropped (Drop) and fetched again.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cache/chunk_store.h"
#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::cache {

// A BlobSource for opening one layer: reads that fall inside the stored tail are served from the
// store; others go to `inner`, and those that end at the end of the blob (or where the bytes kept
// so far begin) are kept for Persist. Not thread-safe (one opener). `inner` and `store` must
// outlive it; `store` may be null (reads then pass through and Persist does nothing).
class TailCachingSource final : public BlobSource {
 public:
  TailCachingSource(BlobSource& inner, ChunkStore* store, std::string blob_key);

  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;

  // Bytes of the stored tail (0 when the store has none for this blob): an opener that reads
  // exactly this many at the end is served without a request (format::TailReadOptions).
  uint64_t stored_bytes();
  // Reads served from the store, and sent to `inner`, so far.
  uint64_t reads_from_store() const { return reads_from_store_; }
  uint64_t reads_from_inner() const { return reads_from_inner_; }

  // Stores blob bytes [from, size()) — call it once the layer has opened from them, with `from`
  // = the sealed TOC's offset — unless every byte of that range came from the store already.
  // FailedPrecondition when the bytes read from `inner` do not cover the range.
  Status Persist(uint64_t from);
  // Deletes the stored tail (it did not open the layer) and serves every later read from
  // `inner`.
  Status Drop();

 private:
  void LoadStored();
  bool Serve(const std::vector<uint8_t>& bytes, uint64_t bytes_offset, uint64_t offset,
             MutableByteSpan out) const;

  BlobSource& inner_;
  ChunkStore* const store_;
  const std::string blob_key_;
  bool loaded_ = false;
  std::optional<StoredTail> stored_;
  // Contiguous bytes read from inner that end at the blob's end: [kept_offset_, size()).
  std::vector<uint8_t> kept_;
  uint64_t kept_offset_ = 0;
  uint64_t reads_from_store_ = 0;
  uint64_t reads_from_inner_ = 0;
};

}  // namespace lazycrypt::cache
