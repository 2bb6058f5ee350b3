// HKDF-SHA256 (RFC 5869) via OpenSSL's EVP_KDF "HKDF".
#pragma once

#include <span>

#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::crypto {

Result<SecureBuffer> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                std::span<const uint8_t> info, size_t length_bytes);

}  // namespace lazycrypt::crypto
