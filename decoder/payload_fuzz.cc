// libFuzzer target: ParseStreamPayload on arbitrary bytes (the fd-3 payload), then key loading
// from whatever it yields. Must never crash, leak or throw.
#include <cstddef>
#include <cstdint>

#include "decoder/decoder.h"
#include "decoder/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto payload = lazycrypt::decoder::ParseStreamPayload({data, size});
  if (payload.ok()) (void)lazycrypt::decoder::LoadPayloadKeys(*payload);
  return 0;
}
