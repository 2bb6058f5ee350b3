// SHA-256 and HMAC-SHA256 (OpenSSL EVP), streaming and one-shot; OCI digest strings.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lazycrypt::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

// Streaming SHA-256. Not thread-safe. Move-only.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void Update(std::span<const uint8_t> data);
  // Finishes; the object may then be reused only after Reset().
  Sha256Digest Finish();
  void Reset();

  static Sha256Digest Of(std::span<const uint8_t> data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Streaming HMAC-SHA256. Not thread-safe. Move-only. The key is copied and wiped on destruction.
class HmacSha256 {
 public:
  explicit HmacSha256(std::span<const uint8_t> key);
  ~HmacSha256();
  HmacSha256(HmacSha256&&) noexcept;
  HmacSha256& operator=(HmacSha256&&) noexcept;
  void Update(std::span<const uint8_t> data);
  Sha256Digest Finish();

  static Sha256Digest Of(std::span<const uint8_t> key, std::span<const uint8_t> data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string HexEncode(std::span<const uint8_t> bytes);
// "sha256:<64 lowercase hex>"
std::string OciDigest(const Sha256Digest& digest);
// Parses "sha256:<64 hex>"; Corruption naming the string otherwise.
Result<Sha256Digest> ParseOciDigest(std::string_view text);

}  // namespace lazycrypt::crypto
