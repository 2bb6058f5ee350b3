// AES-256-GCM (OpenSSL EVP) with 96-bit nonces and 128-bit tags.
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::crypto {

inline constexpr size_t kAes256KeySize = 32;
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

// Holds a copy of the key (wiped on destruction). Thread-safe: Seal/Open are const and create
// their cipher context per call, so one AesGcm serves many threads.
class AesGcm {
 public:
  // InvalidArgument unless key is 32 bytes.
  static Result<AesGcm> Create(std::span<const uint8_t> key);

  // Encrypts plaintext into ciphertext (same size; may alias plaintext exactly) and writes the tag.
  // REQUIRES: nonce.size() == kGcmNonceSize, tag.size() == kGcmTagSize,
  //           ciphertext.size() == plaintext.size().
  Status Seal(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
              std::span<const uint8_t> plaintext, std::span<uint8_t> ciphertext,
              std::span<uint8_t> tag) const;

  // Decrypts and authenticates. On AuthFailed the plaintext buffer is zeroed: no unauthenticated
  // byte ever leaves. plaintext may alias ciphertext exactly.
  // REQUIRES: sizes as for Seal.
  Status Open(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
              std::span<const uint8_t> ciphertext, std::span<const uint8_t> tag,
              std::span<uint8_t> plaintext) const;

 private:
  explicit AesGcm(SecureBuffer key) : key_(std::move(key)) {}
  SecureBuffer key_;
};

}  // namespace lazycrypt::crypto
