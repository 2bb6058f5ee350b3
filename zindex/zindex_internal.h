// The sealing layer of the zindex on its own, for tests and the fuzz target (a crafted index is
// made by editing the Index proto between Unseal and Seal). Not for production callers: they use
// BuildSealedIndex and OpenedIndex::Open (zindex.h).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::zindex::internal {

// Sealed layout (FORMAT.md §11.1): magic 8 | version u32 LE | nonce 12 | GCM(plaintext) | tag 16.
inline constexpr size_t kSealedHeaderBytes = 8 + 4 + 12;
inline constexpr size_t kSealedOverheadBytes = kSealedHeaderBytes + 16;

// serialized Index proto → sealed blob for the layer (digest, size) under the layer's CTR key.
// InvalidArgument when the result would exceed kMaxSealedIndexBytes.
Result<std::vector<uint8_t>> SealSerializedIndex(ByteSpan serialized, std::string_view layer_digest,
                                                 uint64_t blob_size, std::span<const uint8_t> ctr_key,
                                                 int zstd_level = 3);
// The inverse: authenticates and decompresses (bounded by max_plaintext_bytes) the serialized
// Index proto. Nothing is parsed.
Result<std::vector<uint8_t>> UnsealSerializedIndex(ByteSpan sealed, std::string_view layer_digest,
                                                   uint64_t blob_size,
                                                   std::span<const uint8_t> ctr_key,
                                                   uint64_t max_sealed_bytes,
                                                   uint64_t max_plaintext_bytes);

}  // namespace lazycrypt::zindex::internal
