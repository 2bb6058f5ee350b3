// The layer key and the keys derived from it (docs/FORMAT.md, "Key schedule").
//
//   chunk_key  = HKDF-SHA256(ikm = K, salt = S, info = "lazycrypt/v1 chunk key",      32 bytes)
//   toc_key    = HKDF-SHA256(ikm = K, salt = S, info = "lazycrypt/v1 toc key",        32 bytes)
//   commitment = HKDF-SHA256(ikm = K, salt = S, info = "lazycrypt/v1 key commitment", 32 bytes)
//
// K is the 32-byte layer key (ocicrypt privopts "symkey"), S the blob's random 32-byte salt.
#pragma once

#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "format/layout.h"

namespace lazycrypt::format {

// The 32-byte layer key. Key material: never log it.
using LayerKey = crypto::SecureBuffer;
inline constexpr size_t kLayerKeySize = 32;

// A fresh random layer key.
Result<LayerKey> NewLayerKey();

// Keys of one blob. Move-only (SecureBuffers).
struct DerivedKeys {
  crypto::SecureBuffer chunk_key;
  crypto::SecureBuffer toc_key;
  KeyCommitment commitment{};
};

// InvalidArgument unless key is kLayerKeySize bytes.
Result<DerivedKeys> DeriveKeys(const LayerKey& key, const Salt& salt);

// Derives the keys for header.salt and compares the commitment with header.commitment in constant
// time: AuthFailed("wrong layer key: ...") if they differ.
Result<DerivedKeys> DeriveAndCheckKeys(const LayerKey& key, const BlobHeader& header);

}  // namespace lazycrypt::format
