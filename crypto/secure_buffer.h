// Key material lives in SecureBuffers: move-only, in memory of their own that is locked (mlock:
// never swapped out) and excluded from core dumps (MADV_DONTDUMP), and wiped (OPENSSL_cleanse)
// when released.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace lazycrypt::crypto {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  // Zero-filled. The bytes get pages of their own (rounded up to the page size), locked and
  // marked MADV_DONTDUMP. A failure to lock (RLIMIT_MEMLOCK without CAP_IPC_LOCK) never fails
  // the buffer: the process prints one warning on stderr and goes on unlocked. Throws
  // std::bad_alloc when no memory can be mapped, as a std::vector would.
  explicit SecureBuffer(size_t size);
  explicit SecureBuffer(std::span<const uint8_t> bytes);  // copies
  SecureBuffer(SecureBuffer&& other) noexcept;
  SecureBuffer& operator=(SecureBuffer&& other) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;
  ~SecureBuffer();

  // An explicit copy, so copies of keys are visible in code review.
  SecureBuffer Clone() const { return SecureBuffer(span()); }

  uint8_t* data() { return data_; }  // null when empty
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  // Wipes, unlocks and unmaps; the buffer is empty afterwards.
  void Wipe();

  // Test seam: called with the bytes of every buffer released from now on, after they were
  // wiped and before their pages are unmapped (so a test can see that they were wiped). Null
  // removes the observer. Not for production code; not synchronized with concurrent releases.
  using ReleaseObserver = void (*)(const uint8_t* data, size_t size);
  static void SetReleaseObserverForTesting(ReleaseObserver observer);

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_bytes_ = 0;  // whole pages; 0 when empty
};

// Wipes an ordinary byte vector that holds plaintext (a decrypted TOC, file data) when the scope
// ends, whatever way it ends; the vector itself stays usable (zeroed). For buffers too large or too
// short-lived for a SecureBuffer. `bytes` must outlive this object and not be reallocated
// meanwhile (a reallocation would leave the old block unwiped).
class ScopedWipe {
 public:
  explicit ScopedWipe(std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  ~ScopedWipe();
  ScopedWipe(const ScopedWipe&) = delete;
  ScopedWipe& operator=(const ScopedWipe&) = delete;

 private:
  std::vector<uint8_t>& bytes_;
};

// Constant-time comparison of equal-length byte strings (false if lengths differ).
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace lazycrypt::crypto
