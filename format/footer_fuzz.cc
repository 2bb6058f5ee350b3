// libFuzzer target: the fixed-size parsers of untrusted blob bytes (footer, blob header, record
// header). Input: the bytes of a footer, optionally followed by 8 bytes giving the blob size
// (little-endian); the first kRecordHeaderSize and kBlobHeaderSize bytes are also parsed as
// those headers. Every outcome must be a Status, never a crash, and a parsed footer must satisfy
// the invariants ParseFooter promises.
#include <cstdint>
#include <algorithm>
#include <cstdlib>

#include "format/layout.h"

using namespace lazycrypt;
using namespace lazycrypt::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan in(data, size);
  if (size >= kRecordHeaderSize) {
    auto h = ParseRecordHeader(in.first(kRecordHeaderSize));
    if (h.ok()) {
      if (h->raw_size == 0 || h->raw_size > kMaxChunkSizeBytes) std::abort();
      if (h->stored && h->payload_size != h->raw_size) std::abort();
      if (EncodeRecordHeader(*h) != [&] {
            RecordHeaderBytes b;
            std::copy(data, data + kRecordHeaderSize, b.begin());
            return b;
          }()) {
        std::abort();  // parse → encode must round-trip exactly
      }
    }
  }
  if (size >= kBlobHeaderSize) {
    auto h = ParseBlobHeader(in.first(kBlobHeaderSize));
    if (h.ok() && (h->version != kFormatVersion || h->flags != 0)) std::abort();
  }
  if (size >= kFooterSize) {
    uint64_t blob_size = size >= kFooterSize + 8 ? LoadLe64(data + kFooterSize) : size;
    auto f = ParseFooter(in.first(kFooterSize), blob_size);
    if (f.ok()) {
      if (f->toc_offset + f->toc_size + kFooterSize != blob_size) std::abort();
      if (f->toc_size <= kTagSize || f->toc_size > MaxSealedTocSize()) std::abort();
      if (EncodeFooter(f->header, f->toc_offset, f->toc_size) !=
          [&] {
            FooterBytes b;
            std::copy(data, data + kFooterSize, b.begin());
            return b;
          }()) {
        std::abort();
      }
    }
  }
  return 0;
}
