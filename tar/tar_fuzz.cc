// libFuzzer target for TarReader: any input must parse or fail with a Status, never crash, hang
// or overrun, and the reader's byte accounting must hold on the way: the tee sees the input's
// bytes in order, exactly once; an entry is returned when exactly data_offset bytes were teed;
// after the end marker, DrainToEnd brings the total to the input size.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tar/tar_reader.h"

namespace {

using lazycrypt::ByteSpan;
using lazycrypt::MemoryInputStream;
using lazycrypt::Status;

void Check(bool ok) {
  if (!ok) abort();
}

// read_piece 0: skip data through Next(); otherwise read it in pieces of that size.
void ParseOnce(ByteSpan input, size_t read_piece) {
  MemoryInputStream in(input);
  uint64_t teed = 0;
  lazycrypt::tar::TarReader reader(in, [&](ByteSpan raw) {
    Check(teed + raw.size() <= input.size());
    Check(raw.empty() || std::memcmp(raw.data(), input.data() + teed, raw.size()) == 0);
    teed += raw.size();
    return Status::Ok();
  });
  std::vector<uint8_t> buf(read_piece > 0 ? read_piece : 1);
  for (int entries = 0;; ++entries) {
    auto e = reader.Next();
    if (!e.ok()) {
      Check(!e.status().ok());
      return;
    }
    if (!e->has_value()) break;
    const auto& entry = **e;
    Check(teed == entry.data_offset);
    Check(reader.offset() == teed);
    Check(entry.header_offset + 512 <= entry.data_offset);
    Check(!entry.name.empty());
    Check(entry.mtime_nsec < 1000000000u);
    if (read_piece > 0) {
      uint64_t got = 0;
      for (;;) {
        auto n = reader.ReadData(buf);
        if (!n.ok()) return;
        if (*n == 0) break;
        Check(*n <= buf.size());
        got += *n;
      }
      Check(got == entry.size);
    }
  }
  auto drained = reader.DrainToEnd();
  Check(drained.ok());
  Check(teed == input.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan input(data, size);
  ParseOnce(input, 0);
  ParseOnce(input, 37);
  return 0;
}
