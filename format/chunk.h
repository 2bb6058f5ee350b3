// Sealing and opening one chunk record (docs/FORMAT.md, "Chunk record"):
//
//   record = header (12 bytes) || AES-256-GCM(chunk_key, nonce_i, aad_i, payload) || tag (16)
//   payload = one zstd frame of the raw bytes, or the raw bytes themselves ("stored")
//   nonce_i = 4 zero bytes || u64 BE i;  aad_i = "lazycrypt/v1 chunk" || salt || u64 LE i || header
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/aes_gcm.h"
#include "format/keys.h"
#include "format/layout.h"
#include "format/toc.h"

namespace lazycrypt::compress {
class ZstdCompressor;
}

namespace lazycrypt::format {

// Authenticates, decrypts and decompresses chunk records of one blob. Holds the chunk key.
// Thread-safe: Open may be called concurrently (scratch buffers and zstd contexts are per thread).
class ChunkOpener {
 public:
  // Derives the chunk key for header.salt and checks header.commitment:
  // AuthFailed("wrong layer key: ...") if the key is not the blob's.
  static Result<std::shared_ptr<const ChunkOpener>> Create(const LayerKey& key,
                                                           const BlobHeader& header);
  // From already derived (and checked) keys.
  static Result<std::shared_ptr<const ChunkOpener>> FromKeys(const DerivedKeys& keys,
                                                             const Salt& salt);

  const Salt& salt() const { return salt_; }

  // Opens `record` (header || ciphertext || tag) as chunk number `index` and writes its raw bytes
  // into raw_out. REQUIRES raw_out.size() == the header's raw_size (else InvalidArgument).
  // Errors: Corruption for a malformed header or a record whose size disagrees with it;
  // AuthFailed for a failed tag (the record was altered, moved to another index, or comes from
  // another blob). On any error raw_out is zeroed: no unauthenticated byte is ever left in it.
  // The header's flags are authenticated but not interpreted here: callers that know the chunk
  // table use the ChunkInfo overload, the stream decoder checks `last` itself.
  Status Open(uint64_t index, ByteSpan record, MutableByteSpan raw_out) const;

  // Same, after checking that the record header is exactly the one the (verified) chunk table
  // promises for chunk.index (sizes, stored flag, last flag): Corruption otherwise; and that the
  // record's SHA-256 is the one the TOC pins (CheckRecordDigest) before decrypting a byte of it.
  // Every lazy read (LayerReader, CachedLayer: fresh from the source or from the disk cache)
  // opens records through this overload.
  Status Open(const ChunkInfo& chunk, ByteSpan record, MutableByteSpan raw_out) const;

  // Authenticates and decrypts only: writes the payload (a zstd frame, or the raw bytes when
  // stored) into payload_out, which must be the header's payload_size bytes. Returns the header.
  // Same error contract as Open (payload_out zeroed on error).
  Result<RecordHeader> OpenPayload(uint64_t index, ByteSpan record,
                                   MutableByteSpan payload_out) const;

 private:
  ChunkOpener(crypto::AesGcm gcm, const Salt& salt) : gcm_(std::move(gcm)), salt_(salt) {}
  crypto::AesGcm gcm_;
  Salt salt_;
};

// AuthFailed("chunk i: record does not match the digest pinned in the TOC") unless
// SHA-256(record) == chunk.record_sha256. GCM proves only that some holder of the layer key sealed
// a record (every recipient and the author hold it); the pin proves it is the record the TOC, and
// so the manifest, names. Callers check it before opening the record.
Status CheckRecordDigest(const ChunkInfo& chunk, ByteSpan record);

// Builds chunk records (used by the writer; public so tests and tools can craft records).
// Thread-safe: Seal is const; the caller supplies a compressor per thread.
class ChunkSealer {
 public:
  static Result<std::unique_ptr<ChunkSealer>> FromKeys(const DerivedKeys& keys, const Salt& salt);

  // A chunk is stored (not compressed) unless zstd saves at least 1/32 (~3 %) of its size:
  // incompressible data then opens at AES speed with no decompression copy.
  static bool ShouldStore(size_t raw_size, size_t compressed_size) {
    return compressed_size > raw_size - raw_size / 32;
  }

  // Seals raw bytes as chunk `index` into `record` (resized to the record size; its capacity is
  // reused across calls). REQUIRES 1 <= raw.size() <= kMaxChunkSizeBytes.
  // force_stored skips compression (for tests and already-compressed data).
  Status Seal(uint64_t index, bool last, ByteSpan raw, compress::ZstdCompressor& compressor,
              std::vector<uint8_t>& record, bool force_stored = false) const;

  // Seals an explicit payload with an explicit header, with no checks at all. For tests that
  // must build well-authenticated but malformed records (a missing last flag, a bad frame).
  Status SealRaw(uint64_t index, const RecordHeader& header, ByteSpan payload,
                 std::vector<uint8_t>& record) const;

 private:
  ChunkSealer(crypto::AesGcm gcm, const Salt& salt) : gcm_(std::move(gcm)), salt_(salt) {}
  crypto::AesGcm gcm_;
  Salt salt_;
};

}  // namespace lazycrypt::format
