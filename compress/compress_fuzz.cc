// libFuzzer target for the decompressors: the streaming readers (auto-detected, and the explicit
// gzip and zstd readers) and one-shot DecompressExact. Nothing may crash, hang or overrun; every
// failure must be a Status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "compress/compress.h"

namespace {

using lazycrypt::ByteSpan;
using lazycrypt::InputStream;
using lazycrypt::MemoryInputStream;

// Drains a stream, bounding the output so a decompression bomb cannot exhaust memory/time.
void Drain(InputStream& in) {
  std::vector<uint8_t> buf(4093);
  size_t total = 0;
  for (;;) {
    auto r = in.Read(buf);
    if (!r.ok()) {
      if (r.status().ok()) abort();  // a failed Result must carry a non-OK status
      return;
    }
    if (*r == 0) return;
    if (*r > buf.size()) abort();
    total += *r;
    if (total > (64u << 20)) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan input(data, size);
  {
    MemoryInputStream src(input);
    auto s = lazycrypt::compress::NewDecompressingStream(src);
    if (s.ok()) Drain(**s);
  }
  {
    MemoryInputStream src(input);
    auto s = lazycrypt::compress::NewGzipInputStream(src);
    Drain(*s);
  }
  {
    MemoryInputStream src(input);
    auto s = lazycrypt::compress::NewZstdInputStream(src);
    Drain(*s);
  }
  {
    // Expected size taken from the first two bytes so the fuzzer can steer it.
    size_t expect = size >= 2 ? (size_t{data[0]} << 8 | data[1]) : 0;
    std::vector<uint8_t> out(expect);
    lazycrypt::compress::ZstdDecompressor d;
    lazycrypt::Status st = d.DecompressExact(input, out);
    (void)st;
  }
  return 0;
}
