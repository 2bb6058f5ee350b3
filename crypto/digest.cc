#include "crypto/digest.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstdio>
#include <cstdlib>

namespace lazycrypt::crypto {
namespace {

// These primitives cannot fail on valid input; OpenSSL failing here means the library is broken
// or out of memory, which the void/value-returning interface cannot report: stop loudly.
[[noreturn]] void DieOpenSsl(const char* what) {
  std::fprintf(stderr, "lazycrypt: fatal: OpenSSL %s failed\n", what);
  std::abort();
}

// Fetched once, shared read-only by all threads (EVP_MD objects are immutable after fetch).
const EVP_MD* Sha256Md() {
  static EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) DieOpenSsl("EVP_MD_fetch(SHA256)");
    return m;
  }();
  return md;
}

EVP_MAC* HmacMac() {
  static EVP_MAC* mac = [] {
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (m == nullptr) DieOpenSsl("EVP_MAC_fetch(HMAC)");
    return m;
  }();
  return mac;
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct MacCtxDeleter {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }  // cleanses key state
};

// OpenSSL rejects a null pointer for an empty key in some paths; give it a valid address.
const uint8_t kEmpty[1] = {0};
const uint8_t* NonNull(std::span<const uint8_t> s) { return s.empty() ? kEmpty : s.data(); }

}  // namespace

struct Sha256::Impl {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx.reset(EVP_MD_CTX_new());
  if (!impl_->ctx) DieOpenSsl("EVP_MD_CTX_new");
  Reset();
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Reset() {
  if (EVP_DigestInit_ex2(impl_->ctx.get(), Sha256Md(), nullptr) != 1) {
    DieOpenSsl("EVP_DigestInit_ex2");
  }
}

void Sha256::Update(std::span<const uint8_t> data) {
  if (data.empty()) return;
  if (EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()) != 1) {
    DieOpenSsl("EVP_DigestUpdate");
  }
}

Sha256Digest Sha256::Finish() {
  Sha256Digest out;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    DieOpenSsl("EVP_DigestFinal_ex");
  }
  return out;
}

Sha256Digest Sha256::Of(std::span<const uint8_t> data) {
  Sha256Digest out;
  unsigned int len = 0;
  if (EVP_Digest(NonNull(data), data.size(), out.data(), &len, Sha256Md(), nullptr) != 1 ||
      len != out.size()) {
    DieOpenSsl("EVP_Digest");
  }
  return out;
}

struct HmacSha256::Impl {
  std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> ctx;
};

HmacSha256::HmacSha256(std::span<const uint8_t> key) : impl_(std::make_unique<Impl>()) {
  impl_->ctx.reset(EVP_MAC_CTX_new(HmacMac()));
  if (!impl_->ctx) DieOpenSsl("EVP_MAC_CTX_new");
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end(),
  };
  // The MAC context keeps its own (cleansed-on-free) copy of the key schedule.
  if (EVP_MAC_init(impl_->ctx.get(), NonNull(key), key.size(), params) != 1) {
    DieOpenSsl("EVP_MAC_init(HMAC-SHA256)");
  }
}
HmacSha256::~HmacSha256() = default;
HmacSha256::HmacSha256(HmacSha256&&) noexcept = default;
HmacSha256& HmacSha256::operator=(HmacSha256&&) noexcept = default;

void HmacSha256::Update(std::span<const uint8_t> data) {
  if (data.empty()) return;
  if (EVP_MAC_update(impl_->ctx.get(), data.data(), data.size()) != 1) {
    DieOpenSsl("EVP_MAC_update");
  }
}

Sha256Digest HmacSha256::Finish() {
  Sha256Digest out;
  size_t len = 0;
  if (EVP_MAC_final(impl_->ctx.get(), out.data(), &len, out.size()) != 1 || len != out.size()) {
    DieOpenSsl("EVP_MAC_final");
  }
  return out;
}

Sha256Digest HmacSha256::Of(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  HmacSha256 mac(key);
  mac.Update(data);
  return mac.Finish();
}

std::string HexEncode(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.resize(bytes.size() * 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0x0f];
  }
  return out;
}

std::string OciDigest(const Sha256Digest& digest) { return "sha256:" + HexEncode(digest); }

Result<Sha256Digest> ParseOciDigest(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  // Quote at most a prefix of untrusted input in the message.
  auto quoted = [&] {
    std::string shown(text.substr(0, 80));
    if (text.size() > 80) shown += "...";
    return "'" + shown + "'";
  };
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    return Status::Corruption("digest " + quoted() + ": algorithm is not sha256");
  }
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64) {
    return Status::Corruption("digest " + quoted() + ": expected 64 hex digits, got " +
                              std::to_string(hex.size()));
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;  // the OCI spec allows only lowercase [a-f0-9] for sha256
  };
  Sha256Digest out;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::Corruption("digest " + quoted() + ": invalid character at position " +
                                std::to_string(kPrefix.size() + 2 * i + (hi < 0 ? 0 : 1)) +
                                " (only lowercase hex allowed)");
    }
    out[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return out;
}

}  // namespace lazycrypt::crypto
