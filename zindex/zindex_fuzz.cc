// libFuzzer target: OpenedIndex::Open and DecodeSpan on hostile index contents. The input is a
// serialized Index proto (zindex.proto: the core of a v2 sealed index), sealed by the harness with
// the fixed layer's key (what any key holder can do) with a windows area of real sealed windows
// (SealFuzzIndex, zindex_fuzz_fixture.h), the proto's window offsets left as the input has them;
// then opened for that layer, also from its core prefix alone. When it opens, each span's digest
// is replaced by the digest of what the layer holds at its range, the window offsets are pinned,
// and the index is sealed and opened again, so hostile checkpoints (bits, window sizes, offsets)
// reach inflate; every window is also given for the wrong span and with a byte changed, which
// must never decode (the core pins each window by its SHA-256).
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

Limits FuzzLimits() {
  Limits limits;
  limits.max_spans = 4096;
  limits.max_entries = 4096;
  return limits;
}

Result<std::shared_ptr<const OpenedIndex>> Open(ByteSpan sealed) {
  const fuzzing::FuzzLayer& layer = Layer();
  return OpenedIndex::Open(sealed, sealed.size(), layer.encrypted, layer.cipher, FuzzLimits());
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
  auto sealed = fuzzing::SealFuzzIndex(Layer(), ByteSpan(data, size), /*pin_windows=*/false);
  if (!sealed.ok()) return 0;
  auto opened = Open(*sealed);
  if (!opened.ok()) return 0;
  CheckInvariants(**opened);
  // The core prefix alone opens the same index; one byte less never does.
  const uint64_t core = (*opened)->sealed_core_bytes();
  auto hinted = SealedCoreBytes(*sealed, FuzzLimits());
  if (!hinted.ok() || *hinted != core || core > sealed->size()) std::abort();
  if (!OpenedIndex::Open(ByteSpan(*sealed).first(core), sealed->size(), Layer().encrypted,
                         Layer().cipher, FuzzLimits())
           .ok()) {
    std::abort();
  }
  if (OpenedIndex::Open(ByteSpan(*sealed).first(core - 1), sealed->size(), Layer().encrypted,
                        Layer().cipher, FuzzLimits())
          .ok()) {
    std::abort();
  }
  zindex::v2::Index proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) std::abort();  // Open parsed it
  const std::vector<uint8_t>& blob = Layer().blob;
  for (size_t i = 0; i < (*opened)->span_count(); ++i) {
    OpenedIndex::Range c = (*opened)->span_ciphertext(i);
    const crypto::Sha256Digest d = crypto::Sha256::Of(ByteSpan(blob).subspan(c.offset, c.size));
    proto.mutable_spans(static_cast<int>(i))->set_ciphertext_sha256(d.data(), d.size());
  }
  const std::string pinned = proto.SerializeAsString();
  auto resealed = fuzzing::SealFuzzIndex(Layer(), AsBytes(pinned), /*pin_windows=*/true);
  if (!resealed.ok()) std::abort();
  auto reopened = Open(*resealed);
  if (!reopened.ok()) std::abort();  // only digests and window places changed
  const OpenedIndex& index = **reopened;
  for (size_t i = 0; i < index.span_count() && i < 16; ++i) {
    OpenedIndex::Range c = index.span_ciphertext(i), w = index.span_window(i);
    if (w.size != 0 &&
        (w.offset < index.sealed_core_bytes() || w.offset + w.size > resealed->size())) {
      std::abort();
    }
    const ByteSpan ciphertext = ByteSpan(blob).subspan(c.offset, c.size);
    auto plain = index.DecodeSpan(i, ciphertext, ByteSpan(*resealed).subspan(w.offset, w.size));
    if (plain.ok() && plain->size() != index.span_uncompressed(i).size) std::abort();
    // Span i's window with one byte changed (what another window of this seal for span i would
    // be to the core: other bytes) is refused by the core's digest before it is opened.
    if (w.size != 0) {
      std::vector<uint8_t> changed(resealed->begin() + static_cast<ptrdiff_t>(w.offset),
                                   resealed->begin() + static_cast<ptrdiff_t>(w.offset + w.size));
      changed[changed.size() / 2] ^= 0x01;
      auto refused = index.DecodeSpan(i, ciphertext, changed);
      if (refused.ok() || refused.status().code() != StatusCode::kAuthFailed) std::abort();
    }
    // Span i's neighbour's window, when it has the same size, is never accepted for span i.
    const size_t j = i + 1;
    if (j < index.span_count() && index.span_window(j).size == w.size && w.size != 0) {
      OpenedIndex::Range wj = index.span_window(j);
      auto swapped = index.DecodeSpan(i, ciphertext, ByteSpan(*resealed).subspan(wj.offset, wj.size));
      if (swapped.ok() || swapped.status().code() != StatusCode::kAuthFailed) std::abort();
    }
  }
  return 0;
}
