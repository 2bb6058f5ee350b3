// libFuzzer target: the bearer-token server's JSON answer (ParseTokenResponse). A token that
// parses is never empty, and the parser never crashes or throws on any bytes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto token = lazycrypt::registry::ParseTokenResponse(text);
  if (token.ok() && token->empty()) std::abort();
  if (!token.ok() && token.status().ok()) std::abort();
  return 0;
}
