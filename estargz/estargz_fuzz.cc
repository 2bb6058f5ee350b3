// libFuzzer target for the eStargz reader: any input must parse or fail with a Status, never
// crash, hang or overrun. The first byte picks what the rest is: 0 = a whole blob (footer ->
// TOC member -> JSON -> Index, as OpenIndex does but with the digest check skipped so the
// fuzzer reaches the parser), 1 = TOC JSON alone (ParseToc -> Index::Build), 2 = a blob whose
// chunks are then read (ReadChunk over every chunk the index names).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "estargz/reader.h"
#include "estargz/toc.h"

namespace {

using namespace lazycrypt;
using namespace lazycrypt::estargz;

void Check(bool ok) {
  if (!ok) abort();
}

ReaderLimits SmallLimits() {
  ReaderLimits limits;
  limits.toc.max_json_bytes = 1 << 20;
  limits.toc.max_entries = 1 << 14;
  limits.max_toc_member_bytes = 1 << 20;
  limits.max_chunk_bytes = 1 << 20;
  limits.max_inner_offset_bytes = 1 << 20;
  return limits;
}

void CheckIndex(const Index& index, uint64_t blob_size) {
  for (const ChunkRef& c : index.chunks()) {
    Check(c.entry < index.entries().size());
    Check(c.size > 0);
    Check(c.compressed_offset < index.toc_offset());
    Check(c.compressed_offset + c.compressed_size <= index.toc_offset());
    Check(blob_size == 0 || index.toc_offset() <= blob_size);
  }
  for (uint32_t i : index.prefetch_entries()) Check(i < index.entries().size());
}

std::shared_ptr<const Index> OpenBlob(BlobSource& blob, const ReaderLimits& limits) {
  if (blob.size() < kFooterSize) return nullptr;
  std::vector<uint8_t> footer(kFooterSize);
  if (!blob.ReadAt(blob.size() - kFooterSize, footer).ok()) return nullptr;
  auto toc_offset = ParseFooter(footer);
  if (!toc_offset.ok() || *toc_offset > blob.size() - kFooterSize) return nullptr;
  std::vector<uint8_t> member(blob.size() - kFooterSize - *toc_offset);
  if (!blob.ReadAt(*toc_offset, member).ok()) return nullptr;
  auto json = ExtractTocJson(member, limits);
  if (!json.ok()) return nullptr;
  auto toc = ParseToc(AsStringView(*json), limits.toc);
  if (!toc.ok()) return nullptr;
  auto index = Index::Build(*toc, *toc_offset, crypto::Sha256::Of(*json), limits);
  if (!index.ok()) return nullptr;
  CheckIndex(**index, blob.size());
  return *index;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 3;
  ByteSpan rest(data + 1, size - 1);
  ReaderLimits limits = SmallLimits();
  if (mode == 1) {
    auto toc = ParseToc(AsStringView(rest), limits.toc);
    if (toc.ok()) {
      auto index = Index::Build(*toc, 1 << 30, {}, limits);
      if (index.ok()) CheckIndex(**index, 0);
    }
    return 0;
  }
  MemoryBlobSource blob(std::vector<uint8_t>(rest.begin(), rest.end()));
  auto index = OpenBlob(blob, limits);
  if (mode == 2 && index) {
    size_t budget = 16 << 20;  // bytes of chunk reads per input
    for (const ChunkRef& c : index->chunks()) {
      if (c.size > budget) break;
      budget -= c.size;
      std::vector<uint8_t> out(c.size);
      (void)ReadChunk(blob, c, out);
    }
  }
  return 0;
}
