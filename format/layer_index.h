// The verified table of contents of one blob: the only way a reader learns what a blob holds.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "format/entry_table.h"
#include "format/keys.h"
#include "format/layout.h"
#include "format/toc.h"

namespace lazycrypt::format {

// Chunks [first, first + count) of a blob.
struct ChunkRange {
  uint64_t first = 0;
  uint64_t count = 0;
  bool empty() const { return count == 0; }
  bool operator==(const ChunkRange&) const = default;
};

// How LayerIndex::Open reads the end of a blob (footer and sealed TOC): one ReadAt of its last
// max(kFooterSize, guess) bytes, guess = toc_size_hint + kFooterSize when the caller knows the
// TOC's size (the descriptor's toc-size annotation, docs/FORMAT.md §6), else tail_guess_bytes;
// a second ReadAt only for the part of a larger TOC the first did not hold. On a network each
// ReadAt is a round trip: with the right guess, opening a layer costs one. The hint is not
// trusted: a wrong one costs a second read or extra bytes, never a check (the footer, the TOC
// digest pin and the GCM tag decide as before). Both are capped by the limits' largest TOC.
struct TailReadOptions {
  uint64_t toc_size_hint = 0;  // 0 = unknown
  uint64_t tail_guess_bytes = uint64_t{64} << 10;
};

// Immutable, hence thread-safe. Obtainable only through Open, which verifies the TOC's digest
// against the pinned one and its GCM tag before parsing a byte of it, then validates it.
class LayerIndex {
 public:
  // Reads the footer and as much of the sealed TOC as the tail read holds (one ReadAt, see
  // TailReadOptions) and checks the footer; derives the keys and checks the key commitment
  // (AuthFailed "wrong layer key"); reads the rest of the sealed TOC if any (a second ReadAt);
  // compares its SHA-256 with pinned_toc_digest (AuthFailed "TOC digest mismatch: pinned
  // sha256:..., blob has sha256:..."); decrypts, decompresses, parses and validates it
  // (Corruption naming the problem); checks the chunk table ends exactly where the TOC starts.
  // Never reads the blob header at offset 0 (the footer holds its copy); DecryptLayer does.
  // `limits` bound the TOC's size (checked against the footer before the TOC is read), chunk
  // count and entry count (TocLimits; defaults: the format's maxima).
  static Result<std::shared_ptr<const LayerIndex>> Open(BlobSource& blob, const LayerKey& key,
                                                        const crypto::Sha256Digest& pinned_toc_digest,
                                                        const TocLimits& limits = {},
                                                        const TailReadOptions& tail = {});

  // An index over another format's table of contents that the caller has verified already (the
  // eStargz TOC of an ocicrypt-estargz layer, checked against the digest pinned in its descriptor:
  // lazylayer/estargz_layer.h), so that the FUSE file system (which reads entries(),
  // ChunksForRange, tar_size) serves it unchanged. `toc.entries` are validated as Open validates
  // them (ValidateEntry, hardlinks name an earlier non-directory); `toc.chunks` must tile
  // [0, toc.tar_size) in order (tar_offset cumulative, raw_size >= 1), each regular entry's
  // [data_offset, +size) inside it: the "tar stream" here is the caller's own numbering of file
  // data, and chunk i is the caller's chunk i. No blob header, footer or record fields:
  // header(), header_bytes() and the chunks' blob offsets and record digests are zero, and
  // diff_id() is toc.diff_id as given (not verified by this index). Corruption naming the entry
  // index (never a name).
  static Result<std::shared_ptr<const LayerIndex>> FromVerifiedForeignToc(
      Toc toc, const crypto::Sha256Digest& toc_digest, uint64_t blob_size);

  const BlobHeader& header() const { return header_; }
  const BlobHeaderBytes& header_bytes() const { return header_bytes_; }
  uint64_t blob_size() const { return blob_size_; }
  uint64_t toc_offset() const { return toc_offset_; }
  uint64_t toc_size() const { return toc_size_; }
  const crypto::Sha256Digest& toc_digest() const { return toc_digest_; }
  // SHA-256 of the uncompressed tar stream: the layer's diff_id.
  const crypto::Sha256Digest& diff_id() const { return diff_id_; }
  uint64_t tar_size() const { return tar_size_; }
  uint32_t target_chunk_size() const { return target_chunk_size_; }

  // In tar stream order. Names may repeat (a later entry replaces an earlier one on extraction).
  // Packed (entry_table.h): entries()[i] is an EntryView; .Materialize() gives a format::Entry.
  const EntryTable& entries() const { return entries_; }
  // Regular files marked for prefetch at conversion time: strictly increasing indexes into
  // entries(), each of a kRegular entry (validated). Empty for layers without marks.
  std::span<const uint32_t> prefetch_entries() const { return prefetch_; }
  // The last entry named `name` (normalized form, "." for the root), or nullopt.
  std::optional<EntryView> Find(std::string_view name) const;

  std::span<const ChunkInfo> chunks() const { return chunks_; }
  // The chunk holding tar stream byte `tar_offset`. REQUIRES tar_offset < tar_size().
  uint64_t ChunkForTarOffset(uint64_t tar_offset) const;
  // The chunks holding bytes [offset, offset + length) of a regular file's data, clipped to its
  // size (empty when nothing is left). REQUIRES entry is a regular entry of this index.
  ChunkRange ChunksForRange(EntryView entry, uint64_t offset, uint64_t length) const;
  ChunkRange ChunksForRange(const Entry& entry, uint64_t offset, uint64_t length) const;
  // Whether `entry` is a view of this index's entries (not of another layer's).
  bool Holds(EntryView entry) const { return entry.table() == &entries_ && entry.index() < entries_.size(); }
  // Blob bytes [begin, end) holding the records of `range`. REQUIRES !range.empty(), in bounds.
  uint64_t RecordsBegin(const ChunkRange& range) const { return chunks_[range.first].blob_offset; }
  uint64_t RecordsEnd(const ChunkRange& range) const {
    return chunks_[range.first + range.count - 1].blob_end();
  }
  // Heap bytes of the index's tables (entries, name index, chunks, marks): its own accounting.
  size_t memory_bytes() const;

 private:
  LayerIndex() = default;
  // Packs toc.entries (then freed) and keeps the rest of the TOC; fills by_name_.
  Status TakeToc(Toc toc);
  ChunkRange ChunksForData(EntryType type, uint64_t data_offset, uint64_t size, uint64_t offset,
                           uint64_t length) const;
  BlobHeader header_;
  BlobHeaderBytes header_bytes_{};
  uint64_t blob_size_ = 0;
  uint64_t toc_offset_ = 0;
  uint64_t toc_size_ = 0;
  crypto::Sha256Digest toc_digest_{};
  crypto::Sha256Digest diff_id_{};
  uint64_t tar_size_ = 0;
  uint32_t target_chunk_size_ = 0;
  std::vector<ChunkInfo> chunks_;
  std::vector<uint32_t> prefetch_;
  EntryTable entries_;             // never moved once the index is built (views point at it)
  std::vector<uint32_t> by_name_;  // entry indexes sorted by name (stable: equal names in order)
};

// What DecryptLayer and DecryptLayerStream need beyond the index: the verified pieces of a sealed
// TOC. Internal building block shared by the decoders; not for other folders.
namespace internal {
// Checks `sealed` (ciphertext || tag of the TOC, as read from the blob) against the pinned digest
// (if any), opens it with keys.toc_key and the footer's header bytes, and parses it.
Result<Toc> OpenSealedToc(ByteSpan sealed, const DerivedKeys& keys,
                          const BlobHeaderBytes& header_bytes,
                          const crypto::Sha256Digest* pinned_toc_digest,
                          const TocLimits& limits = {});
}  // namespace internal

}  // namespace lazycrypt::format
