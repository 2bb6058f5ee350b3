#include "crypto/random.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <string>

namespace lazycrypt::crypto {

Status RandomBytes(std::span<uint8_t> out) {
  // RAND_bytes takes an int length; feed it in pieces for (absurdly) large requests.
  constexpr size_t kMaxPiece = size_t{1} << 30;
  while (!out.empty()) {
    size_t n = std::min(out.size(), kMaxPiece);
    if (RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
      unsigned long err = ERR_get_error();
      ERR_clear_error();
      return Status::Internal("RAND_bytes failed (OpenSSL error " + std::to_string(err) + ")");
    }
    out = out.subspan(n);
  }
  return Status::Ok();
}

Result<SecureBuffer> RandomKey(size_t size_bytes) {
  SecureBuffer key(size_bytes);
  LC_RETURN_IF_ERROR(RandomBytes(key.span()));
  return key;
}

}  // namespace lazycrypt::crypto
