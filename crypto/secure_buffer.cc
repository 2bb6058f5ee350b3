#include "crypto/secure_buffer.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

namespace lazycrypt::crypto {
namespace {

// The test seam's observer (SetReleaseObserverForTesting); null in production.
std::atomic<SecureBuffer::ReleaseObserver> g_release_observer{nullptr};
// One warning per process when key memory cannot be locked: a node with a low RLIMIT_MEMLOCK
// would otherwise log it for every key.
std::atomic<bool> g_lock_warning_printed{false};

size_t PageBytes() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

void WarnOnceCannotLock(int err) {
  if (g_lock_warning_printed.exchange(true)) return;
  std::fprintf(stderr,
               "lazycrypt: warning: cannot lock key memory (mlock: %s; raise RLIMIT_MEMLOCK or "
               "grant CAP_IPC_LOCK): keys may be swapped out; going on without the lock\n",
               std::strerror(err));
}

}  // namespace

SecureBuffer::SecureBuffer(size_t size) {
  if (size == 0) return;
  const size_t page = PageBytes();
  const size_t mapped = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Before a byte is written: a core dump never includes these pages, and (when the lock works)
  // the kernel never swaps them out. Anonymous pages start zeroed.
  (void)::madvise(p, mapped, MADV_DONTDUMP);
  if (::mlock(p, mapped) != 0) WarnOnceCannotLock(errno);
  data_ = static_cast<uint8_t*>(p);
  size_ = size;
  mapped_bytes_ = mapped;
}

SecureBuffer::SecureBuffer(std::span<const uint8_t> bytes) : SecureBuffer(bytes.size()) {
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

// A move hands over the mapping itself: no second copy of the key exists, and the source is left
// empty.
SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
  if (this != &other) {
    Wipe();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
  }
  return *this;
}

SecureBuffer::~SecureBuffer() { Wipe(); }

void SecureBuffer::Wipe() {
  if (data_ == nullptr) return;
  OPENSSL_cleanse(data_, mapped_bytes_);
  if (ReleaseObserver observer = g_release_observer.load()) observer(data_, size_);
  (void)::munlock(data_, mapped_bytes_);
  (void)::munmap(data_, mapped_bytes_);
  data_ = nullptr;
  size_ = 0;
  mapped_bytes_ = 0;
}

void SecureBuffer::SetReleaseObserverForTesting(ReleaseObserver observer) {
  g_release_observer.store(observer);
}

ScopedWipe::~ScopedWipe() {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace lazycrypt::crypto
