#include "format/layout.h"

#include <cstring>
#include <string>

#include "compress/compress.h"

namespace lazycrypt::format {

void StoreLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void StoreLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t LoadLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t MaxSealedTocSize() {
  static const uint64_t max = kTocSizePrefixSize +
                              compress::ZstdCompressor::Bound(kMaxTocSerializedSize) + kTagSize;
  return max;
}

uint64_t MaxCompressedPayloadSize(uint32_t raw_size) {
  return compress::ZstdCompressor::Bound(raw_size);
}

// ---- Blob header -------------------------------------------------------------------------------

BlobHeaderBytes EncodeBlobHeader(const BlobHeader& header) {
  BlobHeaderBytes b{};
  std::memcpy(b.data(), kBlobMagic.data(), 8);
  StoreLe32(b.data() + 8, header.version);
  StoreLe32(b.data() + 12, header.flags);
  std::memcpy(b.data() + 16, header.salt.data(), kSaltSize);
  std::memcpy(b.data() + 48, header.commitment.data(), kCommitmentSize);
  return b;
}

Result<BlobHeader> ParseBlobHeader(ByteSpan bytes) {
  if (bytes.size() != kBlobHeaderSize) {
    return Status::Corruption("blob header: " + std::to_string(bytes.size()) + " bytes, need " +
                              std::to_string(kBlobHeaderSize));
  }
  if (std::memcmp(bytes.data(), kBlobMagic.data(), kBlobMagic.size()) != 0) {
    return Status::Corruption("blob header: bad magic (not a lazycrypt blob)");
  }
  BlobHeader h;
  h.version = LoadLe32(bytes.data() + 8);
  h.flags = LoadLe32(bytes.data() + 12);
  if (h.version != kFormatVersion) {
    return Status::Corruption("blob header: format version " + std::to_string(h.version) +
                              " is not supported (this reader knows version 1)");
  }
  if (h.flags != 0) {
    return Status::Corruption("blob header: reserved flags are " + std::to_string(h.flags) +
                              ", must be 0");
  }
  std::memcpy(h.salt.data(), bytes.data() + 16, kSaltSize);
  std::memcpy(h.commitment.data(), bytes.data() + 48, kCommitmentSize);
  return h;
}

// ---- Record header -----------------------------------------------------------------------------

RecordHeaderBytes EncodeRecordHeader(const RecordHeader& header) {
  RecordHeaderBytes b{};
  StoreLe32(b.data(), header.payload_size);
  StoreLe32(b.data() + 4, header.raw_size);
  b[8] = static_cast<uint8_t>((header.last ? kRecordFlagLast : 0) |
                              (header.stored ? kRecordFlagStored : 0));
  return b;
}

Result<RecordHeader> ParseRecordHeader(ByteSpan bytes) {
  if (bytes.size() != kRecordHeaderSize) {
    return Status::Corruption("record header: " + std::to_string(bytes.size()) + " bytes, need " +
                              std::to_string(kRecordHeaderSize));
  }
  RecordHeader h;
  h.payload_size = LoadLe32(bytes.data());
  h.raw_size = LoadLe32(bytes.data() + 4);
  uint8_t flags = bytes[8];
  if ((flags & ~(kRecordFlagLast | kRecordFlagStored)) != 0) {
    return Status::Corruption("record header: flags byte " + std::to_string(flags) +
                              " has bits other than last (1) and stored (2) set");
  }
  if (bytes[9] != 0 || bytes[10] != 0 || bytes[11] != 0) {
    return Status::Corruption("record header: reserved bytes are not zero");
  }
  h.last = (flags & kRecordFlagLast) != 0;
  h.stored = (flags & kRecordFlagStored) != 0;
  if (h.raw_size == 0 || h.raw_size > kMaxChunkSizeBytes) {
    return Status::Corruption("record header: raw size " + std::to_string(h.raw_size) +
                              " is outside 1.." + std::to_string(kMaxChunkSizeBytes));
  }
  if (h.stored) {
    if (h.payload_size != h.raw_size) {
      return Status::Corruption("record header: stored chunk has payload size " +
                                std::to_string(h.payload_size) + " != raw size " +
                                std::to_string(h.raw_size));
    }
  } else if (h.payload_size == 0 || h.payload_size > MaxCompressedPayloadSize(h.raw_size)) {
    return Status::Corruption("record header: compressed payload size " +
                              std::to_string(h.payload_size) + " is outside 1.." +
                              std::to_string(MaxCompressedPayloadSize(h.raw_size)) +
                              " for raw size " + std::to_string(h.raw_size));
  }
  return h;
}

// ---- Footer ------------------------------------------------------------------------------------

FooterBytes EncodeFooter(const BlobHeader& header, uint64_t toc_offset, uint64_t toc_size) {
  FooterBytes b{};
  BlobHeaderBytes hb = EncodeBlobHeader(header);
  std::memcpy(b.data(), hb.data(), kBlobHeaderSize);
  StoreLe64(b.data() + kBlobHeaderSize, toc_offset);
  StoreLe64(b.data() + kBlobHeaderSize + 8, toc_size);
  std::memcpy(b.data() + kBlobHeaderSize + 16, kFooterMagic.data(), kFooterMagic.size());
  return b;
}

Result<Footer> ParseFooter(ByteSpan bytes, uint64_t blob_size) {
  if (bytes.size() != kFooterSize) {
    return Status::Corruption("footer: " + std::to_string(bytes.size()) + " bytes, need " +
                              std::to_string(kFooterSize));
  }
  if (std::memcmp(bytes.data() + kBlobHeaderSize + 16, kFooterMagic.data(),
                  kFooterMagic.size()) != 0) {
    return Status::Corruption("footer: bad end magic (not a lazycrypt blob, or truncated)");
  }
  Footer f;
  auto header = ParseBlobHeader(bytes.first(kBlobHeaderSize));
  if (!header.ok()) return header.status().WithContext("footer");
  f.header = *header;
  std::memcpy(f.header_bytes.data(), bytes.data(), kBlobHeaderSize);
  f.toc_offset = LoadLe64(bytes.data() + kBlobHeaderSize);
  f.toc_size = LoadLe64(bytes.data() + kBlobHeaderSize + 8);

  if (f.toc_size <= kTagSize || f.toc_size > MaxSealedTocSize()) {
    return Status::Corruption("footer: TOC size " + std::to_string(f.toc_size) +
                              " is outside " + std::to_string(kTagSize + 1) + ".." +
                              std::to_string(MaxSealedTocSize()));
  }
  if (f.toc_offset < kBlobHeaderSize + kMinRecordSize) {
    return Status::Corruption("footer: TOC offset " + std::to_string(f.toc_offset) +
                              " leaves no room for the blob header and a chunk");
  }
  // toc_size is bounded above, so only toc_offset can overflow the sum.
  if (f.toc_offset > UINT64_MAX - f.toc_size - kFooterSize ||
      f.toc_offset + f.toc_size + kFooterSize != blob_size) {
    return Status::Corruption("footer: TOC offset " + std::to_string(f.toc_offset) + " + size " +
                              std::to_string(f.toc_size) + " + footer " +
                              std::to_string(kFooterSize) + " != blob size " +
                              std::to_string(blob_size));
  }
  return f;
}

// ---- Nonces and AADs ---------------------------------------------------------------------------

Nonce ChunkNonce(uint64_t index) {
  Nonce n{};
  for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<uint8_t>(index >> (8 * (7 - i)));
  return n;
}

Nonce TocNonce() { return Nonce{}; }

ChunkAad MakeChunkAad(const Salt& salt, uint64_t index, ByteSpan record_header) {
  static_assert(kChunkAadPrefix.size() == 18);
  ChunkAad aad{};
  uint8_t* p = aad.data();
  std::memcpy(p, kChunkAadPrefix.data(), kChunkAadPrefix.size());
  p += kChunkAadPrefix.size();
  std::memcpy(p, salt.data(), kSaltSize);
  p += kSaltSize;
  StoreLe64(p, index);
  p += 8;
  // REQUIRES-style guard: a wrong-size header simply leaves zeros (callers pass 12 bytes).
  if (record_header.size() == kRecordHeaderSize) {
    std::memcpy(p, record_header.data(), kRecordHeaderSize);
  }
  return aad;
}

TocAad MakeTocAad(const BlobHeaderBytes& header_bytes, uint64_t sealed_toc_size) {
  static_assert(kTocAadPrefix.size() == 16);
  TocAad aad{};
  uint8_t* p = aad.data();
  std::memcpy(p, kTocAadPrefix.data(), kTocAadPrefix.size());
  p += kTocAadPrefix.size();
  std::memcpy(p, header_bytes.data(), kBlobHeaderSize);
  p += kBlobHeaderSize;
  StoreLe64(p, sealed_toc_size);
  return aad;
}

}  // namespace lazycrypt::format
