#include "format/chunk.h"

#include <openssl/crypto.h>

#include <cstring>
#include <string>

#include "compress/compress.h"

namespace lazycrypt::format {
namespace {

std::string ChunkName(uint64_t index) { return "chunk " + std::to_string(index); }

void Zero(MutableByteSpan out) {
  if (!out.empty()) OPENSSL_cleanse(out.data(), out.size());
}

// Per-thread state for opening compressed chunks: the decrypted frame and a zstd context. Reused
// across calls so the hot path allocates nothing once warm. The frame is plaintext (compressed):
// it is wiped after each use, and its block before it is given back (growth, thread exit).
struct OpenScratch {
  std::vector<uint8_t> frame;
  compress::ZstdDecompressor decompressor;

  OpenScratch() = default;
  OpenScratch(const OpenScratch&) = delete;
  OpenScratch& operator=(const OpenScratch&) = delete;
  ~OpenScratch() { Zero(MutableByteSpan(frame.data(), frame.size())); }

  // The first `size` bytes of a frame buffer of at least that size.
  MutableByteSpan Frame(size_t size) {
    if (frame.size() < size) {
      Zero(MutableByteSpan(frame.data(), frame.size()));  // the old block is freed next
      std::vector<uint8_t>(size).swap(frame);
    }
    return MutableByteSpan(frame.data(), size);
  }
};
OpenScratch& ThreadScratch() {
  thread_local OpenScratch scratch;
  return scratch;
}

// Parses the record's header and checks the record's total size against it.
Result<RecordHeader> ParseRecord(uint64_t index, ByteSpan record) {
  if (record.size() < kRecordHeaderSize) {
    return Status::Corruption(ChunkName(index) + ": record is " + std::to_string(record.size()) +
                              " bytes, shorter than its header");
  }
  auto header = ParseRecordHeader(record.first(kRecordHeaderSize));
  if (!header.ok()) return header.status().WithContext(ChunkName(index));
  if (record.size() != header->record_size()) {
    return Status::Corruption(ChunkName(index) + ": record is " + std::to_string(record.size()) +
                              " bytes but its header says " +
                              std::to_string(header->record_size()));
  }
  return *header;
}

Status AuthError(uint64_t index) {
  return Status::AuthFailed(ChunkName(index) +
                            ": authentication failed (the record was altered, moved to another "
                            "position, or belongs to another blob)");
}

}  // namespace

// ---- ChunkOpener -------------------------------------------------------------------------------

Result<std::shared_ptr<const ChunkOpener>> ChunkOpener::Create(const LayerKey& key,
                                                               const BlobHeader& header) {
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveAndCheckKeys(key, header));
  return FromKeys(keys, header.salt);
}

Result<std::shared_ptr<const ChunkOpener>> ChunkOpener::FromKeys(const DerivedKeys& keys,
                                                                 const Salt& salt) {
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(keys.chunk_key.span()));
  return std::shared_ptr<const ChunkOpener>(new ChunkOpener(std::move(gcm), salt));
}

Result<RecordHeader> ChunkOpener::OpenPayload(uint64_t index, ByteSpan record,
                                              MutableByteSpan payload_out) const {
  auto header = ParseRecord(index, record);
  if (!header.ok()) {
    Zero(payload_out);
    return header.status();
  }
  if (payload_out.size() != header->payload_size) {
    Zero(payload_out);
    return Status::InvalidArgument(ChunkName(index) + ": payload buffer is " +
                                   std::to_string(payload_out.size()) + " bytes, need " +
                                   std::to_string(header->payload_size));
  }
  Nonce nonce = ChunkNonce(index);
  ChunkAad aad = MakeChunkAad(salt_, index, record.first(kRecordHeaderSize));
  ByteSpan ciphertext = record.subspan(kRecordHeaderSize, header->payload_size);
  ByteSpan tag = record.subspan(kRecordHeaderSize + header->payload_size, kTagSize);
  Status s = gcm_.Open(nonce, aad, ciphertext, tag, payload_out);  // zeroes payload_out on error
  if (!s.ok()) {
    Zero(payload_out);
    return s.code() == StatusCode::kAuthFailed ? AuthError(index) : s.WithContext(ChunkName(index));
  }
  return *header;
}

Status ChunkOpener::Open(uint64_t index, ByteSpan record, MutableByteSpan raw_out) const {
  auto header = ParseRecord(index, record);
  if (!header.ok()) {
    Zero(raw_out);
    return header.status();
  }
  if (raw_out.size() != header->raw_size) {
    Zero(raw_out);
    return Status::InvalidArgument(ChunkName(index) + ": output buffer is " +
                                   std::to_string(raw_out.size()) + " bytes, the chunk holds " +
                                   std::to_string(header->raw_size));
  }
  if (header->stored) {
    // Decrypt straight into the caller's buffer: the whole cost is the GCM pass.
    return OpenPayload(index, record, raw_out).status();
  }
  OpenScratch& scratch = ThreadScratch();
  MutableByteSpan frame = scratch.Frame(header->payload_size);
  auto opened = OpenPayload(index, record, frame);
  if (!opened.ok()) {
    Zero(frame);
    Zero(raw_out);
    return opened.status();
  }
  Status s = scratch.decompressor.DecompressExact(frame, raw_out);
  Zero(frame);  // the plaintext lives on in raw_out only
  if (!s.ok()) {
    // Authenticated but undecodable: only a holder of the key can produce this.
    Zero(raw_out);
    return s.WithContext(ChunkName(index));
  }
  return Status::Ok();
}

Status ChunkOpener::Open(const ChunkInfo& chunk, ByteSpan record, MutableByteSpan raw_out) const {
  RecordHeaderBytes expected = EncodeRecordHeader(chunk.record_header());
  if (record.size() < kRecordHeaderSize ||
      std::memcmp(record.data(), expected.data(), kRecordHeaderSize) != 0) {
    Zero(raw_out);
    return Status::Corruption(ChunkName(chunk.index) +
                              ": record header does not match the chunk table");
  }
  if (Status s = CheckRecordDigest(chunk, record); !s.ok()) {
    Zero(raw_out);
    return s;
  }
  return Open(chunk.index, record, raw_out);
}

Status CheckRecordDigest(const ChunkInfo& chunk, ByteSpan record) {
  if (crypto::Sha256::Of(record) != chunk.record_sha256) {
    return Status::AuthFailed(ChunkName(chunk.index) +
                              ": record does not match the digest pinned in the TOC");
  }
  return Status::Ok();
}

// ---- ChunkSealer -------------------------------------------------------------------------------

Result<std::unique_ptr<ChunkSealer>> ChunkSealer::FromKeys(const DerivedKeys& keys,
                                                           const Salt& salt) {
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(keys.chunk_key.span()));
  return std::unique_ptr<ChunkSealer>(new ChunkSealer(std::move(gcm), salt));
}

Status ChunkSealer::SealRaw(uint64_t index, const RecordHeader& header, ByteSpan payload,
                            std::vector<uint8_t>& record) const {
  record.resize(kRecordHeaderSize + payload.size() + kTagSize);
  RecordHeaderBytes hb = EncodeRecordHeader(header);
  std::memcpy(record.data(), hb.data(), kRecordHeaderSize);
  Nonce nonce = ChunkNonce(index);
  ChunkAad aad = MakeChunkAad(salt_, index, hb);
  MutableByteSpan body(record.data() + kRecordHeaderSize, payload.size());
  MutableByteSpan tag(record.data() + kRecordHeaderSize + payload.size(), kTagSize);
  return gcm_.Seal(nonce, aad, payload, body, tag);
}

Status ChunkSealer::Seal(uint64_t index, bool last, ByteSpan raw,
                         compress::ZstdCompressor& compressor, std::vector<uint8_t>& record,
                         bool force_stored) const {
  if (raw.empty() || raw.size() > kMaxChunkSizeBytes) {
    return Status::InvalidArgument(ChunkName(index) + ": " + std::to_string(raw.size()) +
                                   " raw bytes, need 1.." + std::to_string(kMaxChunkSizeBytes));
  }
  RecordHeader header;
  header.raw_size = static_cast<uint32_t>(raw.size());
  header.last = last;
  size_t compressed_size = raw.size();
  if (!force_stored) {
    // Compress straight into the record body; seal it in place if it is worth keeping.
    record.resize(kRecordHeaderSize + compress::ZstdCompressor::Bound(raw.size()) + kTagSize);
    LC_ASSIGN_OR_RETURN(compressed_size,
                        compressor.Compress(raw, MutableByteSpan(record).subspan(
                                                     kRecordHeaderSize,
                                                     compress::ZstdCompressor::Bound(raw.size()))));
  }
  header.stored = force_stored || ShouldStore(raw.size(), compressed_size);
  header.payload_size = static_cast<uint32_t>(header.stored ? raw.size() : compressed_size);
  record.resize(header.record_size());
  RecordHeaderBytes hb = EncodeRecordHeader(header);
  std::memcpy(record.data(), hb.data(), kRecordHeaderSize);
  Nonce nonce = ChunkNonce(index);
  ChunkAad aad = MakeChunkAad(salt_, index, hb);
  MutableByteSpan body(record.data() + kRecordHeaderSize, header.payload_size);
  MutableByteSpan tag(record.data() + kRecordHeaderSize + header.payload_size, kTagSize);
  if (header.stored) return gcm_.Seal(nonce, aad, raw, body, tag);
  return gcm_.Seal(nonce, aad, body, body, tag);
}

}  // namespace lazycrypt::format
