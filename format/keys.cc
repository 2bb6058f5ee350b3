#include "format/keys.h"

#include <cstring>

#include "crypto/hkdf.h"
#include "crypto/random.h"

namespace lazycrypt::format {

Result<LayerKey> NewLayerKey() { return crypto::RandomKey(kLayerKeySize); }

Result<DerivedKeys> DeriveKeys(const LayerKey& key, const Salt& salt) {
  if (key.size() != kLayerKeySize) {
    return Status::InvalidArgument("layer key is " + std::to_string(key.size()) +
                                   " bytes, need " + std::to_string(kLayerKeySize));
  }
  DerivedKeys keys;
  LC_ASSIGN_OR_RETURN(keys.chunk_key,
                      crypto::HkdfSha256(key.span(), salt, AsBytes(kChunkKeyInfo), 32));
  LC_ASSIGN_OR_RETURN(keys.toc_key, crypto::HkdfSha256(key.span(), salt, AsBytes(kTocKeyInfo), 32));
  LC_ASSIGN_OR_RETURN(crypto::SecureBuffer commitment,
                      crypto::HkdfSha256(key.span(), salt, AsBytes(kCommitmentInfo), 32));
  std::memcpy(keys.commitment.data(), commitment.data(), kCommitmentSize);
  return keys;
}

Result<DerivedKeys> DeriveAndCheckKeys(const LayerKey& key, const BlobHeader& header) {
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveKeys(key, header.salt));
  if (!crypto::ConstantTimeEquals(keys.commitment, header.commitment)) {
    return Status::AuthFailed(
        "wrong layer key: its commitment does not match the one in the blob header");
  }
  return keys;
}

}  // namespace lazycrypt::format
