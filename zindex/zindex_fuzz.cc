// libFuzzer target: OpenedIndex::Open and DecodeSpan on hostile index contents. The input is a
// serialized Index proto (zindex.proto), sealed by the harness with the fixed layer's key (what
// any key holder can do), then opened for that layer (zindex_fuzz_fixture.h). When it opens, each
// span's digest is replaced by the digest of what the layer holds at its range and the index is
// sealed and opened again, so hostile checkpoints (bits, windows, offsets) reach inflate.
// Seeds: fuzz_corpus/ (real indexes of the fixed layer, written by zindex_test's
// ZindexFuzzSeeds test with LAZYCRYPT_ZINDEX_WRITE_SEEDS=<dir>).
#include <cstdint>
#include <cstdlib>

#include "zindex/zindex.h"
#include "zindex/zindex.pb.h"
#include "zindex/zindex_fuzz_fixture.h"
#include "zindex/zindex_internal.h"

using namespace lazycrypt;
using namespace lazycrypt::zindex;

namespace {

const fuzzing::FuzzLayer& Layer() {
  static const fuzzing::FuzzLayer* layer = new fuzzing::FuzzLayer(fuzzing::MakeFuzzLayer());
  return *layer;
}

Result<std::shared_ptr<const OpenedIndex>> SealAndOpen(ByteSpan serialized) {
  const fuzzing::FuzzLayer& layer = Layer();
  auto sealed = internal::SealSerializedIndex(serialized, layer.encrypted.digest,
                                              layer.encrypted.size, layer.cipher.key.span());
  if (!sealed.ok()) return sealed.status();
  Limits limits;
  limits.max_spans = 4096;
  limits.max_entries = 4096;
  return OpenedIndex::Open(*sealed, layer.encrypted, layer.cipher, limits);
}

void CheckInvariants(const OpenedIndex& index) {
  const uint64_t blob_size = Layer().blob.size();
  uint64_t out = 0, end = 0;
  if (index.span_count() == 0) std::abort();
  for (size_t i = 0; i < index.span_count(); ++i) {
    OpenedIndex::Range c = index.span_ciphertext(i), u = index.span_uncompressed(i);
    if (u.offset != out || u.size == 0) std::abort();
    if (c.offset > end || c.offset + 1 < end || c.size == 0 || c.offset + c.size > blob_size) {
      std::abort();
    }
    out += u.size;
    end = c.offset + c.size;
  }
  if (out != index.tar_size() || end != blob_size) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto opened = SealAndOpen(ByteSpan(data, size));
  if (!opened.ok()) return 0;
  CheckInvariants(**opened);
  zindex::v1::Index proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) std::abort();  // Open parsed it
  const std::vector<uint8_t>& blob = Layer().blob;
  for (size_t i = 0; i < (*opened)->span_count(); ++i) {
    OpenedIndex::Range c = (*opened)->span_ciphertext(i);
    const crypto::Sha256Digest d = crypto::Sha256::Of(ByteSpan(blob).subspan(c.offset, c.size));
    proto.mutable_spans(static_cast<int>(i))->set_ciphertext_sha256(d.data(), d.size());
  }
  const std::string pinned = proto.SerializeAsString();
  auto reopened = SealAndOpen(AsBytes(pinned));
  if (!reopened.ok()) std::abort();  // only digests changed
  for (size_t i = 0; i < (*reopened)->span_count() && i < 16; ++i) {
    OpenedIndex::Range c = (*reopened)->span_ciphertext(i);
    auto plain = (*reopened)->DecodeSpan(i, ByteSpan(blob).subspan(c.offset, c.size));
    if (plain.ok() && plain->size() != (*reopened)->span_uncompressed(i).size) std::abort();
  }
  return 0;
}
