// The sealing layer of the zindex on its own, for tests and the fuzz target (a crafted index is
// made by editing the Index proto between UnsealIndex and SealIndex, and crafted windows with
// SealWindow). Not for production callers: they use BuildSealedIndex and OpenedIndex::Open
// (zindex.h).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "zindex/zindex.h"

namespace lazycrypt::zindex::internal {

// Sealed layout v2 (FORMAT.md §11.1): magic 8 | version u32 LE | salt 32 | n u64 LE | nonce 12 |
// core ciphertext n | tag 16 | windows area.
inline constexpr size_t kSaltBytes = 32;
inline constexpr size_t kCoreOverheadBytes = kSealedHeaderBytes + 16;  // SealedCoreBytes - n
using Salt = std::array<uint8_t, kSaltBytes>;

// A sealed blob's parts, with the core unsealed: what a key holder can edit and seal again.
struct UnsealedIndex {
  std::vector<uint8_t> serialized;    // the Index proto (plaintext: the caller wipes it)
  Salt salt{};                        // the seal's salt (the window key depends on it)
  std::vector<uint8_t> windows_area;  // the sealed windows, as they were in the blob
};

// The whole sealed blob → its core authenticated and decompressed (bounded by
// max_plaintext_bytes), nothing parsed, and its windows area as it is.
Result<UnsealedIndex> UnsealIndex(ByteSpan sealed, std::string_view layer_digest,
                                  uint64_t blob_size, std::span<const uint8_t> ctr_key,
                                  uint64_t max_sealed_bytes = kMaxSealedIndexBytes,
                                  uint64_t max_plaintext_bytes = kMaxIndexPlaintextBytes);

// header + the core of `serialized` sealed under `salt` (fresh random nonce) + `windows_area`
// verbatim: the whole sealed blob. InvalidArgument when it would exceed kMaxSealedIndexBytes.
Result<std::vector<uint8_t>> SealIndex(ByteSpan serialized, const Salt& salt,
                                       ByteSpan windows_area, std::string_view layer_digest,
                                       uint64_t blob_size, std::span<const uint8_t> ctr_key,
                                       int zstd_level = 3);

// Span `span`'s sealed window (zstd(window) || tag) under the window key of `salt`.
Result<std::vector<uint8_t>> SealWindow(ByteSpan window, uint32_t span, const Salt& salt,
                                        std::string_view layer_digest, uint64_t blob_size,
                                        std::span<const uint8_t> ctr_key, int zstd_level = 3);

}  // namespace lazycrypt::zindex::internal
