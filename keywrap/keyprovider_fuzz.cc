// libFuzzer target: what a key provider (a command's stdout, a gRPC answer) sends back, parsed
// as ocicrypt's keywrap and keyunwrap answers, and the layer options JSON an unwrap yields. Also
// the request parser of our test provider. Input byte 0 selects the parser.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "keywrap/envelope.h"
#include "keywrap/keyprovider.h"

using namespace lazycrypt;
using namespace lazycrypt::keywrap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto packet = keyprovider_protocol::ParseWrapResponse(text, "fuzz provider");
      if (packet.ok() && packet->empty()) std::abort();
      break;
    }
    case 1: {
      auto optsdata = keyprovider_protocol::ParseUnwrapResponse(text, "fuzz provider");
      if (optsdata.ok()) {
        if (optsdata->empty()) std::abort();
        (void)ParsePrivateLayerOptions(AsStringView(optsdata->span()));
      }
      break;
    }
    case 2:
      (void)keyprovider_protocol::ParseRequest(text, "fuzz");
      break;
  }
  return 0;
}
