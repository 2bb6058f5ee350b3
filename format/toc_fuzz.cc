// libFuzzer target: the TOC decoder, fed what a reader has after a successful GCM open, minus
// the crypto. Input byte 0 selects the path: even → the serialized protobuf straight into
// ParseToc (where the interesting structure is); odd → the rest as a sealed-TOC plaintext
// (u64 LE size || zstd frame) into DecodeTocPlaintext. A validated TOC must satisfy the
// invariants Toc documents.
#include <cstdint>
#include <cstdlib>

#include "format/toc.h"

using namespace lazycrypt;
using namespace lazycrypt::format;

namespace {

void CheckInvariants(const Toc& toc) {
  if (toc.chunks.empty()) std::abort();
  uint64_t blob = kBlobHeaderSize, tar = 0;
  for (size_t i = 0; i < toc.chunks.size(); ++i) {
    const ChunkInfo& c = toc.chunks[i];
    if (c.index != i || c.blob_offset != blob || c.tar_offset != tar) std::abort();
    if (c.raw_size == 0 || c.raw_size > toc.target_chunk_size) std::abort();
    if (c.last != (i + 1 == toc.chunks.size())) std::abort();
    if (!ParseRecordHeader(EncodeRecordHeader(c.record_header())).ok()) std::abort();
    blob += c.record_size();
    tar += c.raw_size;
  }
  if (tar != toc.tar_size || blob != toc.records_end()) std::abort();
  for (const Entry& e : toc.entries) {
    if (!IsNormalizedName(e.name)) std::abort();
    if (!ValidateEntry(e, toc.tar_size).ok()) std::abort();
    if (e.type == EntryType::kRegular && e.data_offset + e.size > toc.tar_size) std::abort();
  }
  for (size_t i = 0; i < toc.prefetch.size(); ++i) {
    if (toc.prefetch[i] >= toc.entries.size()) std::abort();
    if (i > 0 && toc.prefetch[i] <= toc.prefetch[i - 1]) std::abort();
    if (toc.entries[toc.prefetch[i]].type != EntryType::kRegular) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ByteSpan in(data + 1, size - 1);
  Result<Toc> toc = (data[0] & 1) == 0 ? ParseToc(in) : DecodeTocPlaintext(in);
  if (toc.ok()) CheckInvariants(*toc);
  return 0;
}
