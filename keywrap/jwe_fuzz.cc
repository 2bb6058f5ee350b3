// libFuzzer target for everything keywrap parses from untrusted bytes: the JWE (all three
// serializations, every recipient, with an RSA and an EC key so that key unwrapping and GCM are
// reached for the seed corpus), the layer key options JSON, and the keys annotation value.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "keywrap/envelope.h"
#include "keywrap/jwe.h"
#include "keywrap/testdata/fuzz_keys.h"

namespace {

using lazycrypt::AsBytes;
using lazycrypt::AsStringView;
using lazycrypt::keywrap::PrivateKey;

const std::vector<PrivateKey>& FuzzKeys() {
  static const std::vector<PrivateKey>* keys = [] {
    auto* v = new std::vector<PrivateKey>();
    for (const char* pem : {lazycrypt::keywrap::testdata::kFuzzRsa2048Pem,
                            lazycrypt::keywrap::testdata::kFuzzP256Pem}) {
      auto key = PrivateKey::Parse(AsBytes(pem), std::nullopt, "fuzz key");
      if (!key.ok()) std::abort();
      v->push_back(std::move(*key));
    }
    return v;
  }();
  return *keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto& keys = FuzzKeys();
  for (const auto& key : keys) {
    auto plaintext = lazycrypt::keywrap::DecryptJwe(text, key);
    if (plaintext.ok()) {
      (void)lazycrypt::keywrap::ParsePrivateLayerOptions(AsStringView(plaintext->span()));
    }
  }
  (void)lazycrypt::keywrap::UnwrapLayerKeys(text, keys);
  (void)lazycrypt::keywrap::ParsePrivateLayerOptions(text);
  (void)lazycrypt::keywrap::ParsePublicLayerOptions(text);
  return 0;
}
