#include "crypto/process_hardening.h"

#include <openssl/crypto.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace lazycrypt::crypto {
namespace {

// OpenSSL's secure heap: big enough for the private parts of a few dozen RSA-4096 / EC keys (a
// node key directory); when it is full OpenSSL falls back to its ordinary heap.
constexpr size_t kSecureHeapBytes = 256 * 1024;
constexpr size_t kSecureHeapMinBlockBytes = 32;

}  // namespace

void HardenProcess(const char* program_name) {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    std::fprintf(stderr, "%s: warning: prctl(PR_SET_DUMPABLE, 0): %s\n", program_name,
                 std::strerror(errno));
  }
  struct rlimit no_core = {0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    std::fprintf(stderr, "%s: warning: setrlimit(RLIMIT_CORE, 0): %s\n", program_name,
                 std::strerror(errno));
  }
  // 1 = heap locked in memory; 2 = heap made but mlock failed (RLIMIT_MEMLOCK): still usable.
  const int secure_heap = CRYPTO_secure_malloc_init(kSecureHeapBytes, kSecureHeapMinBlockBytes);
  if (secure_heap == 0) {
    std::fprintf(stderr, "%s: warning: OpenSSL secure heap unavailable; private keys stay in "
                 "ordinary memory\n", program_name);
  } else if (secure_heap == 2) {
    std::fprintf(stderr, "%s: warning: could not lock OpenSSL's secure heap in memory "
                 "(RLIMIT_MEMLOCK); private keys may be swapped out\n", program_name);
  }
}

}  // namespace lazycrypt::crypto
