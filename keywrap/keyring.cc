#include "keywrap/keyring.h"

#include "keywrap/envelope.h"

namespace lazycrypt::keywrap {

std::string KeyProviderAnnotation(std::string_view provider_name) {
  return std::string(kKeyProviderAnnotationPrefix) + std::string(provider_name);
}

KeyRing::KeyRing(std::vector<PrivateKey>&& keys) : keys_(std::move(keys)) {}

KeyRing::KeyRing(const std::vector<PrivateKey>& keys) {
  keys_.reserve(keys.size());
  for (const PrivateKey& key : keys) keys_.push_back(key.Share());
}

Recipients::Recipients(const std::vector<PublicKey>& keys) {
  public_keys_.reserve(keys.size());
  for (const PublicKey& key : keys) public_keys_.push_back(key.Share());
}

std::string KeyRing::Describe() const {
  std::string out = "[";
  bool first = true;
  auto add = [&](std::string_view name) {
    if (!first) out += ", ";
    first = false;
    out += name;
  };
  for (const PrivateKey& key : keys_) add(key.name());
  for (const auto& provider : providers_) add("provider:" + provider->name());
  return out + "]";
}

}  // namespace lazycrypt::keywrap
