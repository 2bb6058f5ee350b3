// Fuzzes the parsers of registry-supplied text. The first byte picks the parser; the rest is input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "registry/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using namespace lazycrypt;
  using namespace lazycrypt::registry;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto parts = ParseMultipartByteranges(AsBytes(text), "B");
      if (parts.ok()) {
        for (const auto& p : *parts) {
          if (p.bytes.size() > text.size()) __builtin_trap();
        }
      }
      break;
    }
    case 1:
      (void)ParseAuthChallenge(text);
      break;
    case 2:
      (void)CredentialsFromDockerConfig(text, "127.0.0.1:5000");
      break;
    case 3:
      (void)ParseHostsToml(text, "h:1", "http://h:1");
      break;
    case 4: {
      auto r = Reference::Parse(text);
      if (r.ok()) {
        auto again = Reference::Parse(r->ToString());
        if (!again.ok() || again->ToString() != r->ToString()) __builtin_trap();
      }
      break;
    }
  }
  return 0;
}
