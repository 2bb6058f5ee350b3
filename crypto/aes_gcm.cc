#include "crypto/aes_gcm.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

namespace lazycrypt::crypto {
namespace {

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }  // cleanses key schedule
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// Fetched once and shared read-only: an explicitly fetched EVP_CIPHER avoids the implicit-fetch
// cost (a locked provider lookup) that EVP_aes_256_gcm() would pay on every EVP_CipherInit_ex2.
const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

// EVP_*Update take int lengths; chunk bodies are far smaller, but stay correct for any size.
constexpr size_t kMaxUpdate = size_t{1} << 30;

Status OpenSslFailure(const char* what) {
  unsigned long err = ERR_get_error();
  ERR_clear_error();
  return Status::Internal(std::string("AES-256-GCM: ") + what + " failed (OpenSSL error " +
                          std::to_string(err) + ")");
}

// Output must either be the input exactly or not overlap it at all (OpenSSL's rule).
bool BadOverlap(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (in.empty() || in.data() == out.data()) return false;
  auto in_begin = reinterpret_cast<uintptr_t>(in.data());
  auto out_begin = reinterpret_cast<uintptr_t>(out.data());
  return in_begin < out_begin + out.size() && out_begin < in_begin + in.size();
}

Status CheckArgs(std::span<const uint8_t> nonce, std::span<const uint8_t> tag,
                 std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (nonce.size() != kGcmNonceSize) {
    return Status::InvalidArgument("AES-256-GCM: nonce is " + std::to_string(nonce.size()) +
                                   " bytes, need 12");
  }
  if (tag.size() != kGcmTagSize) {
    return Status::InvalidArgument("AES-256-GCM: tag is " + std::to_string(tag.size()) +
                                   " bytes, need 16");
  }
  if (in.size() != out.size()) {
    return Status::InvalidArgument("AES-256-GCM: output is " + std::to_string(out.size()) +
                                   " bytes for " + std::to_string(in.size()) + " bytes of input");
  }
  if (BadOverlap(in, out)) {
    return Status::InvalidArgument("AES-256-GCM: output partially overlaps input");
  }
  return Status::Ok();
}

// Creates a context keyed for one message. enc: 1 = encrypt, 0 = decrypt.
Result<CipherCtxPtr> NewContext(const SecureBuffer& key, std::span<const uint8_t> nonce,
                                int enc) {
  const EVP_CIPHER* cipher = Aes256Gcm();
  if (cipher == nullptr) return OpenSslFailure("EVP_CIPHER_fetch(AES-256-GCM)");
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslFailure("EVP_CIPHER_CTX_new");
  // 12 bytes is GCM's default IV length, so no OSSL_CIPHER_PARAM_AEAD_IVLEN is needed.
  if (EVP_CipherInit_ex2(ctx.get(), cipher, key.data(), nonce.data(), enc, nullptr) != 1) {
    return OpenSslFailure("EVP_CipherInit_ex2");
  }
  return ctx;
}

Status FeedAad(EVP_CIPHER_CTX* ctx, std::span<const uint8_t> aad) {
  while (!aad.empty()) {
    size_t n = std::min(aad.size(), kMaxUpdate);
    int outl = 0;
    if (EVP_CipherUpdate(ctx, nullptr, &outl, aad.data(), static_cast<int>(n)) != 1) {
      return OpenSslFailure("EVP_CipherUpdate(AAD)");
    }
    aad = aad.subspan(n);
  }
  return Status::Ok();
}

// Transforms in → out (same size; exact aliasing allowed). GCM is a stream mode: output length
// equals input length for every update, so offsets stay in step.
Status Transform(EVP_CIPHER_CTX* ctx, std::span<const uint8_t> in, std::span<uint8_t> out) {
  size_t done = 0;
  while (done < in.size()) {
    size_t n = std::min(in.size() - done, kMaxUpdate);
    int outl = 0;
    if (EVP_CipherUpdate(ctx, out.data() + done, &outl, in.data() + done,
                         static_cast<int>(n)) != 1 ||
        static_cast<size_t>(outl) != n) {
      return OpenSslFailure("EVP_CipherUpdate");
    }
    done += n;
  }
  return Status::Ok();
}

}  // namespace

Result<AesGcm> AesGcm::Create(std::span<const uint8_t> key) {
  if (key.size() != kAes256KeySize) {
    return Status::InvalidArgument("AES-256-GCM: key is " + std::to_string(key.size()) +
                                   " bytes, need 32");
  }
  return AesGcm(SecureBuffer(key));
}

Status AesGcm::Seal(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
                    std::span<const uint8_t> plaintext, std::span<uint8_t> ciphertext,
                    std::span<uint8_t> tag) const {
  LC_RETURN_IF_ERROR(CheckArgs(nonce, tag, plaintext, ciphertext));
  if (key_.size() != kAes256KeySize) {
    return Status::FailedPrecondition("AES-256-GCM: used after move");
  }
  LC_ASSIGN_OR_RETURN(CipherCtxPtr ctx, NewContext(key_, nonce, 1));
  LC_RETURN_IF_ERROR(FeedAad(ctx.get(), aad));
  LC_RETURN_IF_ERROR(Transform(ctx.get(), plaintext, ciphertext));
  int outl = 0;
  uint8_t unused[16];
  if (EVP_EncryptFinal_ex(ctx.get(), unused, &outl) != 1 || outl != 0) {
    return OpenSslFailure("EVP_EncryptFinal_ex");
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag.data(), tag.size()),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_CIPHER_CTX_get_params(ctx.get(), params) != 1) {
    return OpenSslFailure("reading the GCM tag");
  }
  return Status::Ok();
}

Status AesGcm::Open(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
                    std::span<const uint8_t> ciphertext, std::span<const uint8_t> tag,
                    std::span<uint8_t> plaintext) const {
  LC_RETURN_IF_ERROR(CheckArgs(nonce, tag, ciphertext, plaintext));
  if (key_.size() != kAes256KeySize) {
    return Status::FailedPrecondition("AES-256-GCM: used after move");
  }
  // Any failure below leaves no unauthenticated byte in `plaintext`.
  auto fail = [&](Status s) {
    if (!plaintext.empty()) OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return s;
  };
  auto ctx_or = NewContext(key_, nonce, 0);
  if (!ctx_or.ok()) return fail(std::move(ctx_or).status());
  EVP_CIPHER_CTX* ctx = ctx_or->get();
  // Set the expected tag first, so the whole message is processed in one pass.
  uint8_t tag_copy[kGcmTagSize];
  std::memcpy(tag_copy, tag.data(), kGcmTagSize);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag_copy, kGcmTagSize),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_CIPHER_CTX_set_params(ctx, params) != 1) {
    return fail(OpenSslFailure("setting the GCM tag"));
  }
  if (Status s = FeedAad(ctx, aad); !s.ok()) return fail(std::move(s));
  if (Status s = Transform(ctx, ciphertext, plaintext); !s.ok()) return fail(std::move(s));
  int outl = 0;
  uint8_t unused[16];
  if (EVP_DecryptFinal_ex(ctx, unused, &outl) != 1) {
    ERR_clear_error();
    return fail(Status::AuthFailed("AES-256-GCM: tag mismatch (wrong key, or data altered)"));
  }
  return Status::Ok();
}

}  // namespace lazycrypt::crypto
