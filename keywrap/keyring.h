// What unwraps a layer key: private key files and ocicrypt key providers (a KMS or an attestation
// agent reached through the keyprovider protocol, keywrap/keyprovider.h), tried in the order they
// were added. KeyProvider is the seam: lc_keywrap and lc_image know only this interface; the
// command and gRPC transports live in lc_keyprovider so that libraries without a provider stay
// free of gRPC.
//
// Thread-safety: a KeyRing is immutable once built; its keys and providers are const and may be
// used from several threads (KeyProvider implementations must allow concurrent calls).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "keywrap/keys.h"

namespace lazycrypt::keywrap {

// One ocicrypt key provider, as the keyprovider protocol names it.
class KeyProvider {
 public:
  virtual ~KeyProvider() = default;
  // The provider's name in OCICRYPT_KEYPROVIDER_CONFIG (and in "provider:NAME[:params]").
  virtual const std::string& name() const = 0;
  // "keywrap": wraps `optsdata` (the privopts JSON) and returns the provider's annotation packet,
  // which callers store base64-encoded in KeyProviderAnnotation(name()).
  virtual Result<std::vector<uint8_t>> WrapKey(ByteSpan optsdata) const = 0;
  // "keyunwrap": the privopts JSON from one annotation packet (base64-decoded), in wiped memory.
  virtual Result<crypto::SecureBuffer> UnwrapKey(ByteSpan annotation_packet) const = 0;
};

// "org.opencontainers.image.enc.keys.provider.<name>" (ocicrypt's annotation for a provider).
std::string KeyProviderAnnotation(std::string_view provider_name);

// Private keys and providers that may unwrap a layer key. Move-only (owns the private keys).
class KeyRing {
 public:
  KeyRing() = default;
  // Implicit on purpose: every function that used to take the private keys alone takes a KeyRing,
  // and callers holding only keys keep passing them. The const& form shares the keys (the
  // EVP_PKEYs are reference-counted and immutable); the caller's vector stays usable.
  KeyRing(std::vector<PrivateKey>&& keys);       // NOLINT(google-explicit-constructor)
  KeyRing(const std::vector<PrivateKey>& keys);  // NOLINT(google-explicit-constructor)
  KeyRing(KeyRing&&) noexcept = default;
  KeyRing& operator=(KeyRing&&) noexcept = default;
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

  void AddKey(PrivateKey key) { keys_.push_back(std::move(key)); }
  void AddProvider(std::shared_ptr<const KeyProvider> provider) {
    providers_.push_back(std::move(provider));
  }

  const std::vector<PrivateKey>& keys() const { return keys_; }
  const std::vector<std::shared_ptr<const KeyProvider>>& providers() const { return providers_; }
  bool empty() const { return keys_.empty() && providers_.empty(); }

  // For messages: "[a.pem, b.pem, provider:kms]" (key names, then providers).
  std::string Describe() const;

 private:
  std::vector<PrivateKey> keys_;
  std::vector<std::shared_ptr<const KeyProvider>> providers_;
};

// Whom a layer key is wrapped for: public keys (JWE, org.opencontainers.image.enc.keys.jwe) and
// providers (one org.opencontainers.image.enc.keys.provider.<name> annotation each). Implicit
// from the public keys alone, like KeyRing. Move-only.
class Recipients {
 public:
  Recipients() = default;
  Recipients(std::vector<PublicKey>&& keys) : public_keys_(std::move(keys)) {}  // NOLINT
  Recipients(const std::vector<PublicKey>& keys);                              // NOLINT
  Recipients(Recipients&&) noexcept = default;
  Recipients& operator=(Recipients&&) noexcept = default;

  void AddKey(PublicKey key) { public_keys_.push_back(std::move(key)); }
  void AddProvider(std::shared_ptr<const KeyProvider> provider) {
    providers_.push_back(std::move(provider));
  }
  const std::vector<PublicKey>& public_keys() const { return public_keys_; }
  const std::vector<std::shared_ptr<const KeyProvider>>& providers() const { return providers_; }
  bool empty() const { return public_keys_.empty() && providers_.empty(); }

 private:
  std::vector<PublicKey> public_keys_;
  std::vector<std::shared_ptr<const KeyProvider>> providers_;
};

}  // namespace lazycrypt::keywrap
