#include "crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <memory>
#include <string>
#include <vector>

namespace lazycrypt::crypto {
namespace {

struct KdfDeleter {
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
};
struct KdfCtxDeleter {
  void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }  // cleanses the key copy
};

// Fetched once; EVP_KDF objects are immutable and may be shared between threads.
EVP_KDF* HkdfKdf() {
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  return kdf;
}

const uint8_t kEmpty[1] = {0};

}  // namespace

Result<SecureBuffer> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                std::span<const uint8_t> info, size_t length_bytes) {
  if (length_bytes == 0 || length_bytes > 255 * 32) {
    return Status::InvalidArgument("HKDF-SHA256: output length " + std::to_string(length_bytes) +
                                   " is outside 1..8160 bytes");
  }
  EVP_KDF* kdf = HkdfKdf();
  if (kdf == nullptr) return Status::Internal("HKDF-SHA256: EVP_KDF_fetch(HKDF) failed");
  std::unique_ptr<EVP_KDF_CTX, KdfCtxDeleter> ctx(EVP_KDF_CTX_new(kdf));
  if (!ctx) return Status::Internal("HKDF-SHA256: EVP_KDF_CTX_new failed");

  char digest_name[] = "SHA256";
  std::vector<OSSL_PARAM> params;
  params.push_back(OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest_name, 0));
  // OpenSSL copies these octet strings; the const_casts are for its non-const param API only.
  params.push_back(OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.empty() ? kEmpty : ikm.data()), ikm.size()));
  // An absent salt is, per RFC 5869, HashLen zero bytes; OpenSSL does that when none is given.
  if (!salt.empty()) {
    params.push_back(OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size()));
  }
  if (!info.empty()) {
    params.push_back(OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(info.data()), info.size()));
  }
  params.push_back(OSSL_PARAM_construct_end());

  SecureBuffer out(length_bytes);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params.data()) != 1) {
    unsigned long err = ERR_get_error();
    ERR_clear_error();
    return Status::Internal("HKDF-SHA256: EVP_KDF_derive failed (OpenSSL error " +
                            std::to_string(err) + ")");
  }
  return out;
}

}  // namespace lazycrypt::crypto
