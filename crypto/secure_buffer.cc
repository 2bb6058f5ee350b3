#include "crypto/secure_buffer.h"

#include <openssl/crypto.h>

#include <utility>

namespace lazycrypt::crypto {

SecureBuffer::SecureBuffer(size_t size) : bytes_(size, 0) {}

SecureBuffer::SecureBuffer(std::span<const uint8_t> bytes) : bytes_(bytes.begin(), bytes.end()) {}

// std::vector's move hands over the heap block itself, so no copy of the key is left behind in
// `other`; we still wipe whatever `other` holds afterwards (nothing, for a conforming vector) so the
// moved-from object is guaranteed empty.
SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept : bytes_(std::move(other.bytes_)) {
  other.Wipe();
}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
  if (this != &other) {
    Wipe();
    bytes_ = std::move(other.bytes_);
    other.Wipe();
  }
  return *this;
}

SecureBuffer::~SecureBuffer() { Wipe(); }

void SecureBuffer::Wipe() {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
  bytes_.shrink_to_fit();  // release the (wiped) block now rather than at destruction
}

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace lazycrypt::crypto
