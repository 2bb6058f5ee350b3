// libFuzzer target for the OCI JSON parsers fed by registries and layouts: manifests, indexes,
// image configs and descriptors. Input byte 0 selects the parser, the rest is the JSON. Every
// outcome must be a Status; what parses must serialize and parse again to the same bytes (the
// parsers keep unknown members, so a second round trip must be a fixed point).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "image/oci.h"

using namespace lazycrypt;
using namespace lazycrypt::image;

namespace {

template <typename T, typename Parse, typename Serialize>
void RoundTrip(ByteSpan json, Parse parse, Serialize serialize) {
  Result<T> first = parse(json);
  if (!first.ok()) {
    if (first.status().ok()) std::abort();
    return;
  }
  std::string once = serialize(*first);
  Result<T> second = parse(AsBytes(once));
  if (!second.ok()) std::abort();
  if (serialize(*second) != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ByteSpan json(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      RoundTrip<Manifest>(json, ParseManifest, SerializeManifest);
      break;
    case 1:
      RoundTrip<Index>(json, ParseIndex, SerializeIndex);
      break;
    case 2: {
      auto config = ParseImageConfig(json);
      if (!config.ok() && config.status().ok()) std::abort();
      break;
    }
    case 3:
      RoundTrip<Descriptor>(json, ParseDescriptor, SerializeDescriptor);
      break;
  }
  return 0;
}
