// Random-access reads of a layer's files: fetches only the chunk records that cover a range,
// authenticates and decrypts them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "format/chunk.h"
#include "format/layer_index.h"

namespace lazycrypt::format {

// Thread-safe (the index and opener are immutable/thread-safe; BlobSource::ReadAt is).
class LayerReader {
 public:
  // `blob` is not owned and must outlive the reader. FailedPrecondition unless the opener was
  // made for the index's blob (same salt).
  static Result<std::unique_ptr<LayerReader>> Create(BlobSource& blob,
                                                     std::shared_ptr<const LayerIndex> index,
                                                     std::shared_ptr<const ChunkOpener> opener);
  // Convenience: LayerIndex::Open + ChunkOpener::Create + Create.
  static Result<std::unique_ptr<LayerReader>> Open(BlobSource& blob, const LayerKey& key,
                                                   const crypto::Sha256Digest& pinned_toc_digest);

  const LayerIndex& index() const { return *index_; }
  const std::shared_ptr<const LayerIndex>& shared_index() const { return index_; }

  // Reads up to out.size() bytes of a regular file's data from `offset`; returns the count (0 at
  // or past the end of the file). Fetches the covering records with one ReadAt per call (they
  // are contiguous in the blob) and opens each; chunks wholly inside `out` are decrypted straight
  // into it. InvalidArgument unless entry is a regular file of this index. On any error `out`
  // is zeroed (never unauthenticated bytes).
  Result<size_t> ReadFile(EntryView entry, uint64_t offset, MutableByteSpan out) const;

  // The raw bytes of chunk `index` (for a chunk cache). One ReadAt of its record.
  Result<std::shared_ptr<const std::vector<uint8_t>>> ReadChunk(uint64_t index) const;

  // Opens an already fetched record of chunk `index` (e.g. from a ciphertext cache) into raw_out
  // (REQUIRES raw_out.size() == chunks()[index].raw_size). Same contract as ChunkOpener::Open.
  Status OpenRecord(uint64_t index, ByteSpan record, MutableByteSpan raw_out) const;

 private:
  LayerReader(BlobSource& blob, std::shared_ptr<const LayerIndex> index,
              std::shared_ptr<const ChunkOpener> opener)
      : blob_(blob), index_(std::move(index)), opener_(std::move(opener)) {}
  BlobSource& blob_;
  std::shared_ptr<const LayerIndex> index_;
  std::shared_ptr<const ChunkOpener> opener_;
};

}  // namespace lazycrypt::format
