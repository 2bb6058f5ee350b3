// Key material lives in SecureBuffers: move-only, wiped (OPENSSL_cleanse) when released.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace lazycrypt::crypto {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  explicit SecureBuffer(size_t size);                 // zero-filled
  explicit SecureBuffer(std::span<const uint8_t> bytes);  // copies
  SecureBuffer(SecureBuffer&& other) noexcept;
  SecureBuffer& operator=(SecureBuffer&& other) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;
  ~SecureBuffer();

  // An explicit copy, so copies of keys are visible in code review.
  SecureBuffer Clone() const { return SecureBuffer(span()); }

  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::span<uint8_t> span() { return bytes_; }
  std::span<const uint8_t> span() const { return bytes_; }

  // Wipes and empties.
  void Wipe();

 private:
  std::vector<uint8_t> bytes_;  // never reallocated after construction
};

// Constant-time comparison of equal-length byte strings (false if lengths differ).
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace lazycrypt::crypto
