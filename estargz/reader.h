// Reads an eStargz blob lazily (docs/FORMAT.md §10): footer -> TOC member -> the TOC JSON,
// checked against a pinned digest before it is parsed, then validated into an Index of entries
// and chunks; each chunk is read by inflating its own gzip member and checked against its
// SHA-256 before a byte of it is returned.
//
// For lazycrypt's ocicrypt-estargz layers the blob is ciphertext (ocicrypt AES-256-CTR):
// CtrPlaintextView gives the plaintext view of any range without reading the rest, so the lazy
// side reads the footer (51 bytes), the TOC member and then only the chunks it needs. Nothing
// here checks the layer's HMAC (it covers the whole blob); the TOC digest pinned in the manifest
// and the chunk digests in the TOC are what authenticate each byte served.
//
// Thread-safety: Index is immutable after Open and safe to share; ReadChunk and
// CtrPlaintextView::ReadAt may run concurrently (BlobSource is thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "estargz/toc.h"

namespace lazycrypt::estargz {

struct ReaderLimits {
  TocLimits toc;                                      // JSON bytes and entries
  uint64_t max_toc_member_bytes = 256ull << 20;       // compressed TOC member
  uint64_t max_chunk_bytes = 64ull << 20;             // uncompressed bytes of one chunk
  uint64_t max_inner_offset_bytes = 64ull << 20;      // bytes inflated before a chunk starts
};

enum class EntryType { kRegular, kDirectory, kSymlink, kHardlink, kCharDevice, kBlockDevice, kFifo };

// One file of the layer (TOC entries other than "chunk").
struct Entry {
  std::string name;  // normalized (format::NormalizeEntryName): no leading "/" or "./"; root "."
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;  // 07777
  uint64_t uid = 0, gid = 0;
  std::string uname, gname;  // eStargz's per-id convention already applied
  std::string modtime;       // RFC 3339 as in the TOC ("" = zero)
  uint64_t size = 0;         // regular files
  std::string link_name;     // symlink: target as given; hardlink: normalized name of an earlier entry
  uint32_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;
  crypto::Sha256Digest file_digest{};  // regular files: SHA-256 of the whole content
  uint32_t first_chunk = 0;  // regular files with size > 0: their chunks are
  uint32_t chunk_count = 0;  // chunks()[first_chunk, first_chunk + chunk_count), in file order
};

// Where one chunk of file data is and what it must hash to.
struct ChunkRef {
  uint32_t entry = 0;              // index into entries()
  uint64_t compressed_offset = 0;  // blob offset of the gzip member holding it
  uint64_t compressed_size = 0;    // up to the next member with data, or the TOC member
  uint64_t inner_offset = 0;       // uncompressed bytes of that member before the chunk
  uint64_t file_offset = 0;        // offset of the chunk in its file
  uint64_t size = 0;               // uncompressed bytes (> 0)
  crypto::Sha256Digest digest{};   // SHA-256 of those bytes (chunkDigest)
};

class Index {
 public:
  // Validates a TOC (already checked against its pinned digest): names normalize, types are
  // known, every regular file's chunks tile it exactly (chunkOffset/chunkSize, a chunkDigest on
  // each), chunk offsets increase strictly in TOC order (with innerOffset) and lie before
  // toc_offset, hard links name an earlier entry. Corruption "estargz TOC: entry N: ...".
  static Result<std::shared_ptr<const Index>> Build(const Toc& toc, uint64_t toc_offset,
                                                    const crypto::Sha256Digest& toc_digest,
                                                    const ReaderLimits& limits = {});

  const std::vector<Entry>& entries() const { return entries_; }
  const std::vector<ChunkRef>& chunks() const { return chunks_; }
  std::span<const ChunkRef> ChunksOf(uint32_t entry) const {
    const Entry& e = entries_.at(entry);
    return std::span<const ChunkRef>(chunks_).subspan(e.first_chunk, e.chunk_count);
  }
  // Regular files with data before `.prefetch.landmark` (eStargz's prefetch set), in TOC order;
  // empty when the layer has `.no.prefetch.landmark` or no landmark.
  const std::vector<uint32_t>& prefetch_entries() const { return prefetch_; }
  bool has_prefetch_landmark() const { return has_prefetch_landmark_; }
  uint64_t toc_offset() const { return toc_offset_; }
  const crypto::Sha256Digest& toc_digest() const { return toc_digest_; }
  // `stargz.index.json` and the landmarks are entries of the TOC only when a converter put them
  // there; an eager unpack of the layer also creates `stargz.index.json` and the landmark file.
  static bool IsEstargzMetadataName(std::string_view normalized_name);

 private:
  Index() = default;
  std::vector<Entry> entries_;
  std::vector<ChunkRef> chunks_;
  std::vector<uint32_t> prefetch_;
  bool has_prefetch_landmark_ = false;
  uint64_t toc_offset_ = 0;
  crypto::Sha256Digest toc_digest_{};
};

// The TOC JSON from the TOC member's bytes: inflates it (one gzip member) and takes the content of
// its first tar entry, which must be a regular file named stargz.index.json. Bounded by limits.
Result<std::vector<uint8_t>> ExtractTocJson(ByteSpan toc_member, const ReaderLimits& limits = {});

// Footer -> TOC member -> JSON (two ReadAt calls on `plain`, the plaintext view of the blob),
// the JSON's SHA-256 compared with `pinned_toc_digest` BEFORE it is parsed (AuthFailed
// "estargz TOC digest mismatch" otherwise), then Index::Build.
Result<std::shared_ptr<const Index>> OpenIndex(BlobSource& plain,
                                               const crypto::Sha256Digest& pinned_toc_digest,
                                               const ReaderLimits& limits = {});

// Reads one chunk from `plain`: inflates its member from compressed_offset (reading only as much
// of [compressed_offset, compressed_offset + compressed_size) as needed), skips inner_offset
// bytes, and fills `out` (REQUIRES out.size() == chunk.size). AuthFailed "estargz chunk N: digest
// mismatch" unless the bytes hash to chunk.digest; `out` is then unspecified and must not be used.
Status ReadChunk(BlobSource& plain, const ChunkRef& chunk, MutableByteSpan out);

// The plaintext view of an ocicrypt AES_256_CTR blob: ReadAt(offset, n) reads those n bytes of
// ciphertext from `ciphertext` and XORs the key stream at that offset (crypto::AesCtrXorAt).
// Unauthenticated by itself (see above). The key is copied and wiped on destruction.
class CtrPlaintextView final : public BlobSource {
 public:
  // REQUIRES: key 32 bytes, nonce 16 bytes (InvalidArgument otherwise). `ciphertext` is not owned
  // and must outlive the view.
  static Result<std::unique_ptr<CtrPlaintextView>> Create(BlobSource& ciphertext,
                                                          std::span<const uint8_t> key,
                                                          std::span<const uint8_t> nonce);
  uint64_t size() const override { return ciphertext_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;

 private:
  CtrPlaintextView(BlobSource& ciphertext, crypto::SecureBuffer key, std::vector<uint8_t> nonce)
      : ciphertext_(ciphertext), key_(std::move(key)), nonce_(std::move(nonce)) {}
  BlobSource& ciphertext_;
  crypto::SecureBuffer key_;
  std::vector<uint8_t> nonce_;
};

}  // namespace lazycrypt::estargz
