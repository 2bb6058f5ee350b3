#include "format/layer_index.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <string>

#include "crypto/aes_gcm.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::format {

namespace internal {

Result<Toc> OpenSealedToc(ByteSpan sealed, const DerivedKeys& keys,
                          const BlobHeaderBytes& header_bytes,
                          const crypto::Sha256Digest* pinned_toc_digest,
                          const TocLimits& limits) {
  if (sealed.size() <= kTagSize) {
    return Status::Corruption("TOC: " + std::to_string(sealed.size()) +
                              " sealed bytes, not more than a tag");
  }
  // The digest is compared before a byte is decrypted: the manifest pins exactly these bytes.
  if (pinned_toc_digest != nullptr) {
    crypto::Sha256Digest actual = crypto::Sha256::Of(sealed);
    if (actual != *pinned_toc_digest) {
      return Status::AuthFailed("TOC digest mismatch: pinned " +
                                crypto::OciDigest(*pinned_toc_digest) + ", blob has " +
                                crypto::OciDigest(actual));
    }
  }
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(keys.toc_key.span()));
  const size_t plaintext_size = sealed.size() - kTagSize;
  std::vector<uint8_t> plaintext(plaintext_size);
  crypto::ScopedWipe wipe_plaintext(plaintext);  // the TOC's names are confidential
  TocAad aad = MakeTocAad(header_bytes, sealed.size());
  Status s = gcm.Open(TocNonce(), aad, sealed.first(plaintext_size),
                      sealed.subspan(plaintext_size, kTagSize), plaintext);
  if (s.code() == StatusCode::kAuthFailed) {
    return Status::AuthFailed(
        "TOC: authentication failed (the TOC, the blob header or the footer was altered)");
  }
  LC_RETURN_IF_ERROR(s.WithContext("TOC"));
  return DecodeTocPlaintext(plaintext, limits);
}

}  // namespace internal

Result<std::shared_ptr<const LayerIndex>> LayerIndex::Open(
    BlobSource& blob, const LayerKey& key, const crypto::Sha256Digest& pinned_toc_digest,
    const TocLimits& limits, const TailReadOptions& tail) {
  const uint64_t blob_size = blob.size();
  constexpr uint64_t kMinBlobSize = kBlobHeaderSize + kMinRecordSize + kTagSize + 1 + kFooterSize;
  if (blob_size < kMinBlobSize) {
    return Status::Corruption("blob is " + std::to_string(blob_size) +
                              " bytes, smaller than the smallest lazycrypt blob (" +
                              std::to_string(kMinBlobSize) + ")");
  }
  // The footer and, with a good guess, the whole sealed TOC in front of it: one read.
  const uint64_t max_tail = limits.MaxSealedBytes() + kFooterSize;
  uint64_t tail_size = tail.toc_size_hint > 0 && tail.toc_size_hint <= max_tail - kFooterSize
                           ? tail.toc_size_hint + kFooterSize
                           : tail.tail_guess_bytes;
  tail_size = std::min({std::max<uint64_t>(tail_size, kFooterSize), max_tail, blob_size});
  const uint64_t tail_offset = blob_size - tail_size;
  std::vector<uint8_t> tail_bytes(tail_size);
  LC_RETURN_IF_ERROR(blob.ReadAt(tail_offset, tail_bytes).WithContext("footer"));
  LC_ASSIGN_OR_RETURN(Footer footer,
                      ParseFooter(ByteSpan(tail_bytes).last(kFooterSize), blob_size));
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveAndCheckKeys(key, footer.header));

  if (footer.toc_size > limits.MaxSealedBytes()) {
    return Status::Corruption("TOC: the footer claims " + std::to_string(footer.toc_size) +
                              " sealed bytes, over the " + std::to_string(limits.MaxSealedBytes()) +
                              " that a TOC of at most " + std::to_string(limits.max_serialized_bytes) +
                              " bytes (limit) can take");
  }
  // ParseFooter checked toc_offset + toc_size + kFooterSize == blob_size, so the TOC ends where
  // the tail's footer begins.
  std::vector<uint8_t> sealed(footer.toc_size);
  if (footer.toc_offset >= tail_offset) {
    std::memcpy(sealed.data(), tail_bytes.data() + (footer.toc_offset - tail_offset),
                sealed.size());
  } else {
    const uint64_t missing = tail_offset - footer.toc_offset;
    LC_RETURN_IF_ERROR(blob.ReadAt(footer.toc_offset, MutableByteSpan(sealed).first(missing))
                           .WithContext("TOC"));
    std::memcpy(sealed.data() + missing, tail_bytes.data(), sealed.size() - missing);
  }
  tail_bytes = {};
  LC_ASSIGN_OR_RETURN(Toc toc, internal::OpenSealedToc(sealed, keys, footer.header_bytes,
                                                       &pinned_toc_digest, limits));
  if (toc.records_end() != footer.toc_offset) {
    return Status::Corruption("TOC: its chunk table ends at blob offset " +
                              std::to_string(toc.records_end()) + " but the footer puts the TOC at " +
                              std::to_string(footer.toc_offset));
  }

  std::shared_ptr<LayerIndex> index(new LayerIndex());
  index->header_ = footer.header;
  index->header_bytes_ = footer.header_bytes;
  index->blob_size_ = blob_size;
  index->toc_offset_ = footer.toc_offset;
  index->toc_size_ = footer.toc_size;
  index->toc_digest_ = pinned_toc_digest;  // equal to the actual digest, checked above
  LC_RETURN_IF_ERROR(index->TakeToc(std::move(toc)));
  return std::shared_ptr<const LayerIndex>(std::move(index));
}

Result<std::shared_ptr<const LayerIndex>> LayerIndex::FromVerifiedForeignToc(
    Toc toc, const crypto::Sha256Digest& toc_digest, uint64_t blob_size) {
  uint64_t tar_offset = 0;
  for (size_t i = 0; i < toc.chunks.size(); ++i) {
    const ChunkInfo& c = toc.chunks[i];
    if (c.tar_offset != tar_offset || c.raw_size == 0 || c.index != i ||
        c.last != (i + 1 == toc.chunks.size())) {
      return Status::Corruption("foreign TOC: chunk " + std::to_string(i) +
                                " does not continue the chunk table");
    }
    tar_offset += c.raw_size;
  }
  if (tar_offset != toc.tar_size) {
    return Status::Corruption("foreign TOC: its chunks hold " + std::to_string(tar_offset) +
                              " bytes, not " + std::to_string(toc.tar_size));
  }
  std::map<std::string_view, EntryType> seen;
  for (size_t i = 0; i < toc.entries.size(); ++i) {
    const Entry& e = toc.entries[i];
    if (Status s = ValidateEntry(e, toc.tar_size); !s.ok()) {
      // ValidateEntry's messages may name the entry; names are confidential (§4).
      return Status::Corruption("foreign TOC: entry " + std::to_string(i) + " is not valid");
    }
    if (e.type == EntryType::kHardlink) {
      auto target = seen.find(e.link_target);
      if (target == seen.end() || target->second == EntryType::kDirectory) {
        return Status::Corruption("foreign TOC: entry " + std::to_string(i) +
                                  ": hardlink target is not an earlier non-directory entry");
      }
    }
    seen[e.name] = e.type;
  }
  for (uint32_t p : toc.prefetch) {
    if (p >= toc.entries.size() || toc.entries[p].type != EntryType::kRegular) {
      return Status::Corruption("foreign TOC: a prefetch mark is not a regular entry");
    }
  }
  std::shared_ptr<LayerIndex> index(new LayerIndex());
  index->blob_size_ = blob_size;
  index->toc_digest_ = toc_digest;
  LC_RETURN_IF_ERROR(index->TakeToc(std::move(toc)));
  return std::shared_ptr<const LayerIndex>(std::move(index));
}

Status LayerIndex::TakeToc(Toc toc) {
  LC_ASSIGN_OR_RETURN(entries_, EntryTable::Pack(toc.entries));
  toc.entries = {};  // the parse type's copy, freed before the name index is built
  diff_id_ = toc.diff_id;
  tar_size_ = toc.tar_size;
  target_chunk_size_ = toc.target_chunk_size;
  chunks_ = std::move(toc.chunks);
  chunks_.shrink_to_fit();
  prefetch_ = std::move(toc.prefetch);
  prefetch_.shrink_to_fit();
  by_name_.resize(entries_.size());
  std::iota(by_name_.begin(), by_name_.end(), 0u);
  std::stable_sort(by_name_.begin(), by_name_.end(), [&](uint32_t a, uint32_t b) {
    return entries_[a].name() < entries_[b].name();
  });
  return Status::Ok();
}

std::optional<EntryView> LayerIndex::Find(std::string_view name) const {
  auto upper = std::upper_bound(
      by_name_.begin(), by_name_.end(), name,
      [&](std::string_view n, uint32_t i) { return n < entries_[i].name(); });
  if (upper == by_name_.begin()) return std::nullopt;
  const EntryView candidate = entries_[*(upper - 1)];
  if (candidate.name() != name) return std::nullopt;
  return candidate;
}

size_t LayerIndex::memory_bytes() const {
  return entries_.memory_bytes() + by_name_.capacity() * sizeof(uint32_t) +
         chunks_.capacity() * sizeof(ChunkInfo) + prefetch_.capacity() * sizeof(uint32_t);
}

uint64_t LayerIndex::ChunkForTarOffset(uint64_t tar_offset) const {
  const auto& chunks = chunks_;
  auto it = std::upper_bound(chunks.begin(), chunks.end(), tar_offset,
                             [](uint64_t off, const ChunkInfo& c) { return off < c.tar_offset; });
  // chunks[0].tar_offset == 0, so `it` is past the first chunk.
  return static_cast<uint64_t>((it - chunks.begin()) - 1);
}

ChunkRange LayerIndex::ChunksForRange(EntryView entry, uint64_t offset, uint64_t length) const {
  return ChunksForData(entry.type(), entry.data_offset(), entry.size(), offset, length);
}

ChunkRange LayerIndex::ChunksForRange(const Entry& entry, uint64_t offset, uint64_t length) const {
  return ChunksForData(entry.type, entry.data_offset, entry.size, offset, length);
}

ChunkRange LayerIndex::ChunksForData(EntryType type, uint64_t data_offset, uint64_t size,
                                     uint64_t offset, uint64_t length) const {
  if (type != EntryType::kRegular || offset >= size || length == 0) return {};
  uint64_t end = offset + std::min(length, size - offset);
  uint64_t first = ChunkForTarOffset(data_offset + offset);
  uint64_t last = ChunkForTarOffset(data_offset + end - 1);
  return {first, last - first + 1};
}

}  // namespace lazycrypt::format
