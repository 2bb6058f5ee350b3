// The fixed-size byte structures of a lazycrypt blob (docs/FORMAT.md, "Byte layout"): blob
// header, chunk record header, footer, and the nonces and AADs built from them.
//
// Everything here is pure parsing and encoding, no cryptography, so the parsers can be fuzzed on
// their own (format/footer_fuzz.cc). Every parser checks every field it reads; a Status from here
// is Corruption naming the field ("footer: end magic is wrong").
// All functions are thread-safe (no shared state).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::format {

// ---- Constants of format version 1 -------------------------------------------------------------

inline constexpr std::array<uint8_t, 8> kBlobMagic = {'l', 'z', 'c', 'r', 'y', 'p', 't', 0x01};
inline constexpr std::array<uint8_t, 8> kFooterMagic = {'l', 'z', 'c', 'f', 'o', 'o', 't', 0x01};
inline constexpr uint32_t kFormatVersion = 1;

inline constexpr size_t kSaltSize = 32;
inline constexpr size_t kCommitmentSize = 32;
inline constexpr size_t kBlobHeaderSize = 80;    // magic 8, version 4, flags 4, salt 32, commitment 32
inline constexpr size_t kRecordHeaderSize = 12;  // payload_size 4, raw_size 4, flags 1, reserved 3
inline constexpr size_t kTagSize = 16;           // AES-256-GCM tag
inline constexpr size_t kFooterSize = kBlobHeaderSize + 8 + 8 + 8;  // 104
inline constexpr size_t kNonceSize = 12;

// Chunk record flags.
inline constexpr uint8_t kRecordFlagLast = 0x01;
inline constexpr uint8_t kRecordFlagStored = 0x02;

// Chunking. The writer's default target chunk size (re-chosen by measurement in bench/).
inline constexpr size_t kDefaultChunkSizeBytes = size_t{1} << 20;  // 1 MiB
// The writer's file-aligned chunking (§5): files from 64 KiB get chunks of their own, smaller
// ones share chunks of up to 256 KiB. A lazy start reads scattered files: on a link with 20 ms
// of round trip, one request costs as much time as ~0.5 MiB of transfer, so a file's neighbours
// are worth fetching with it only while they are small.
inline constexpr size_t kDefaultOwnChunkFromBytes = size_t{64} << 10;
inline constexpr size_t kDefaultPackChunkBytes = size_t{256} << 10;
// zstd level of the writer's chunks and TOC. Level 2 makes blobs about 1.5 % larger than level 3
// (zstd's own default) for about a fifth less compression CPU, the writer's largest cost
// (docs/BENCHMARKS.md, section 4: conversion at levels 2 and 3 in the same run).
inline constexpr int kDefaultZstdLevel = 2;
inline constexpr size_t kMinChunkSizeBytes = size_t{64} << 10;     // 64 KiB
inline constexpr size_t kMaxChunkSizeBytes = size_t{16} << 20;     // 16 MiB: also max raw_size

// A record holds at least one raw byte: header + 1-byte payload + tag.
inline constexpr size_t kMinRecordSize = kRecordHeaderSize + 1 + kTagSize;

// The TOC: its serialized protobuf is at most this large, and holds at most this many entries and
// chunks. The sealed TOC plaintext is an 8-byte little-endian length followed by one zstd frame.
inline constexpr uint64_t kMaxTocSerializedSize = uint64_t{256} << 20;  // 256 MiB
inline constexpr uint64_t kMaxTocEntries = uint64_t{8} << 20;           // 8 Mi entries
inline constexpr uint64_t kMaxChunks = uint64_t{16} << 20;              // 16 Mi chunks
inline constexpr size_t kTocSizePrefixSize = 8;

// Largest sealed TOC (ciphertext + tag) a reader accepts.
uint64_t MaxSealedTocSize();
// Largest payload a record with raw_size raw bytes may carry when compressed (zstd's bound).
uint64_t MaxCompressedPayloadSize(uint32_t raw_size);

// Domain-separation strings (HKDF infos and AAD prefixes). Never change them within v1.
inline constexpr std::string_view kChunkKeyInfo = "lazycrypt/v1 chunk key";
inline constexpr std::string_view kTocKeyInfo = "lazycrypt/v1 toc key";
inline constexpr std::string_view kCommitmentInfo = "lazycrypt/v1 key commitment";
inline constexpr std::string_view kChunkAadPrefix = "lazycrypt/v1 chunk";  // 18 bytes
inline constexpr std::string_view kTocAadPrefix = "lazycrypt/v1 toc";      // 16 bytes

using Salt = std::array<uint8_t, kSaltSize>;
using KeyCommitment = std::array<uint8_t, kCommitmentSize>;
using BlobHeaderBytes = std::array<uint8_t, kBlobHeaderSize>;
using RecordHeaderBytes = std::array<uint8_t, kRecordHeaderSize>;
using FooterBytes = std::array<uint8_t, kFooterSize>;
using Nonce = std::array<uint8_t, kNonceSize>;

// ---- Blob header -------------------------------------------------------------------------------

struct BlobHeader {
  uint32_t version = kFormatVersion;
  uint32_t flags = 0;  // reserved, must be 0
  Salt salt{};
  KeyCommitment commitment{};

  bool operator==(const BlobHeader&) const = default;
};

BlobHeaderBytes EncodeBlobHeader(const BlobHeader& header);
// Corruption unless bytes is exactly kBlobHeaderSize bytes with the magic, version 1, flags 0.
Result<BlobHeader> ParseBlobHeader(ByteSpan bytes);

// ---- Chunk record header -----------------------------------------------------------------------

struct RecordHeader {
  uint32_t payload_size = 0;  // bytes of ciphertext (= bytes of plaintext payload)
  uint32_t raw_size = 0;      // bytes of the tar stream the chunk holds
  bool last = false;          // the last chunk of the blob
  bool stored = false;        // payload is the raw bytes (else one zstd frame of them)

  // Header + payload + tag.
  uint64_t record_size() const { return kRecordHeaderSize + uint64_t{payload_size} + kTagSize; }
  bool operator==(const RecordHeader&) const = default;
};

RecordHeaderBytes EncodeRecordHeader(const RecordHeader& header);
// Corruption unless: exactly kRecordHeaderSize bytes; only the last/stored flag bits set; reserved
// bytes zero; 1 <= raw_size <= kMaxChunkSizeBytes; stored: payload_size == raw_size; compressed:
// 1 <= payload_size <= MaxCompressedPayloadSize(raw_size). Checked before anything is allocated
// from these sizes.
Result<RecordHeader> ParseRecordHeader(ByteSpan bytes);

// ---- Footer ------------------------------------------------------------------------------------

struct Footer {
  BlobHeader header;           // the parsed copy of the blob header
  BlobHeaderBytes header_bytes{};  // its exact bytes (the TOC's AAD binds them)
  uint64_t toc_offset = 0;     // blob offset of the sealed TOC
  uint64_t toc_size = 0;       // ciphertext + tag
};

FooterBytes EncodeFooter(const BlobHeader& header, uint64_t toc_offset, uint64_t toc_size);
// Parses the last kFooterSize bytes of a blob of blob_size bytes. Corruption unless the header
// copy parses, the end magic matches, toc_offset + toc_size + kFooterSize == blob_size (no
// overflow), toc_offset leaves room for the blob header and one record, and
// kTagSize < toc_size <= MaxSealedTocSize().
Result<Footer> ParseFooter(ByteSpan bytes, uint64_t blob_size);

// ---- Nonces and AADs ---------------------------------------------------------------------------

// Chunk i: 4 zero bytes || u64 big-endian i.
Nonce ChunkNonce(uint64_t index);
// The TOC: 12 zero bytes (its key is used for nothing else).
Nonce TocNonce();

inline constexpr size_t kChunkAadSize = 18 + kSaltSize + 8 + kRecordHeaderSize;  // 70
using ChunkAad = std::array<uint8_t, kChunkAadSize>;
// "lazycrypt/v1 chunk" || salt || u64 LE index || record header bytes.
ChunkAad MakeChunkAad(const Salt& salt, uint64_t index, ByteSpan record_header);

inline constexpr size_t kTocAadSize = 16 + kBlobHeaderSize + 8;  // 104
using TocAad = std::array<uint8_t, kTocAadSize>;
// "lazycrypt/v1 toc" || blob header bytes || u64 LE sealed TOC size (ciphertext + tag).
TocAad MakeTocAad(const BlobHeaderBytes& header_bytes, uint64_t sealed_toc_size);

// ---- Little-endian helpers (exposed for tests and tools) ---------------------------------------
void StoreLe32(uint8_t* p, uint32_t v);
void StoreLe64(uint8_t* p, uint64_t v);
uint32_t LoadLe32(const uint8_t* p);
uint64_t LoadLe64(const uint8_t* p);

}  // namespace lazycrypt::format
