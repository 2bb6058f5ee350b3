// Test-only: the co-recipient's attack of issue 15 part 3. Whoever holds a key that unwraps a
// lazycrypt layer's key (every recipient, and the author) can open a chunk record, change its
// bytes and seal it again with the right chunk key, nonce and AAD for its index: GCM accepts it.
// Only the record's SHA-256, pinned in the sealed TOC (docs/FORMAT.md §4), tells it apart.
// Header-only; used by trust_chunk_pin_test and trust_containerd_attack_test.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "format/chunk.h"
#include "format/keys.h"
#include "format/layer_index.h"
#include "image/envelope.h"
#include "image/oci.h"
#include "keywrap/keyring.h"

namespace lazycrypt::testing {

struct ResealedChunk {
  std::vector<uint8_t> blob;  // the layer blob with that one record replaced
  uint64_t chunk_index = 0;   // the record replaced
};

// In `blob`, the lazycrypt layer `layer` describes (its key unwrapped with `ring`): the record
// holding `file`'s first bytes, which must be `original`, re-sealed with `forged` (the same size)
// in their place. The chunk must be stored (not compressed), so the forged record keeps the
// original's size and record header, as a forgery that leaves the TOC alone needs. Checks that
// GCM accepts the forged record.
inline Result<ResealedChunk> ResealFileChunk(std::vector<uint8_t> blob,
                                             const image::Descriptor& layer,
                                             const keywrap::KeyRing& ring, std::string_view file,
                                             std::string_view original, std::string_view forged) {
  if (original.size() != forged.size() || original.empty()) {
    return Status::InvalidArgument("ResealFileChunk: the forged text must have the original's size");
  }
  LC_ASSIGN_OR_RETURN(auto secret, image::UnwrapLazycryptLayer(layer, ring));
  MemoryBlobSource source(blob);
  LC_ASSIGN_OR_RETURN(auto index, format::LayerIndex::Open(source, secret.key, secret.toc_digest));
  std::optional<format::EntryView> entry = index->Find(file);
  if (!entry) return Status::NotFound("ResealFileChunk: no such file in the TOC");
  const format::ChunkInfo chunk =
      index->chunks()[index->ChunksForRange(*entry, 0, original.size()).first];
  if (!chunk.stored) {
    return Status::FailedPrecondition(
        "ResealFileChunk: the file's chunk is compressed; a same-size forgery needs a stored one "
        "(incompressible data around the text)");
  }
  LC_ASSIGN_OR_RETURN(format::DerivedKeys keys, format::DeriveKeys(secret.key, index->header().salt));
  LC_ASSIGN_OR_RETURN(auto opener, format::ChunkOpener::FromKeys(keys, index->header().salt));
  LC_ASSIGN_OR_RETURN(auto sealer, format::ChunkSealer::FromKeys(keys, index->header().salt));
  const ByteSpan record = ByteSpan(blob).subspan(chunk.blob_offset, chunk.record_size());
  std::vector<uint8_t> payload(chunk.payload_size);
  LC_RETURN_IF_ERROR(opener->OpenPayload(chunk.index, record, payload).status());
  const uint64_t at = entry->data_offset() - chunk.tar_offset;
  if (at + original.size() > payload.size() ||
      std::memcmp(payload.data() + at, original.data(), original.size()) != 0) {
    return Status::FailedPrecondition("ResealFileChunk: the file does not start with the original");
  }
  std::memcpy(payload.data() + at, forged.data(), forged.size());
  std::vector<uint8_t> forged_record;
  LC_RETURN_IF_ERROR(sealer->SealRaw(chunk.index, chunk.record_header(), payload, forged_record));
  if (forged_record.size() != chunk.record_size()) {
    return Status::Internal("ResealFileChunk: the forged record changed size");
  }
  std::vector<uint8_t> raw(chunk.raw_size);
  LC_RETURN_IF_ERROR(opener->Open(chunk.index, forged_record, raw));  // GCM accepts it
  std::copy(forged_record.begin(), forged_record.end(), blob.begin() + chunk.blob_offset);
  return ResealedChunk{std::move(blob), chunk.index};
}

}  // namespace lazycrypt::testing
