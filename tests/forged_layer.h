// Test-only: a lazycrypt blob whose sealed TOC lists the entries a test chooses over a tar stream
// the test chooses, built from the format library's own primitives (ChunkSealer, the TOC
// plaintext encoding, the TOC's AAD and nonce, the footer). This is what any holder of a layer
// key can produce; the readers must refuse it where the TOC disagrees with the tar. Header-only.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"
#include "format/chunk.h"
#include "format/keys.h"
#include "format/layout.h"
#include "format/toc.h"
#include "format/toc.pb.h"
#include "format/toc_tar_match.h"
#include "tar/tar_reader.h"

namespace lazycrypt::testing {

namespace forged_internal {
// TOC version 2 pins every record's SHA-256 in the TOC (FORMAT.md §4, record_sha256). Detected
// from the generated message, so that this helper seals what the tree's readers accept on either
// side of that change (it landed in parallel with the tests that use this file).
template <typename Chunk, typename = void>
struct HasRecordPin : std::false_type {};
template <typename Chunk>
struct HasRecordPin<Chunk, std::void_t<decltype(std::declval<Chunk&>().set_record_sha256(
                               std::string()))>> : std::true_type {};

template <typename Chunk>
void PinRecord(Chunk* chunk, ByteSpan record) {
  if constexpr (HasRecordPin<Chunk>::value) {
    const crypto::Sha256Digest pin = crypto::Sha256::Of(record);
    chunk->set_record_sha256(pin.data(), pin.size());
  }
}
inline constexpr uint32_t kForgedTocVersion =
    HasRecordPin<format::v1::Chunk>::value ? 2 : 1;
}  // namespace forged_internal

struct ForgedLayer {
  std::vector<uint8_t> blob;
  crypto::Sha256Digest toc_digest{};  // pin this
  crypto::Sha256Digest listed_diff_id{};  // the TOC's tar_sha256
  format::KeyCommitment commitment{};
};

struct ForgeOptions {
  // The TOC's tar_sha256; default: the SHA-256 of the tar given.
  std::optional<crypto::Sha256Digest> listed_diff_id;
  size_t chunk_size_bytes = format::kMinChunkSizeBytes;
  uint8_t salt_seed = 0x90;
  // Edits the serialized TOC before it is compressed and sealed (what no honest writer does:
  // e.g. appends fields the schema allows but no reader should have to build).
  std::function<void(std::string& serialized)> tamper_serialized_toc;
};

// The entries an honest writer lists for `tar` (the TOC entries of its tar entries, in order).
inline Result<std::vector<format::Entry>> HonestTocEntries(ByteSpan tar) {
  MemoryInputStream in(tar);
  tar::TarReader reader(in);
  std::vector<format::Entry> entries;
  for (;;) {
    LC_ASSIGN_OR_RETURN(std::optional<tar::Entry> e, reader.Next());
    if (!e) break;
    LC_ASSIGN_OR_RETURN(format::Entry entry, format::TocEntryFromTar(*e));
    entries.push_back(std::move(entry));
  }
  return entries;
}

// Seals `tar` (cut into chunks of options.chunk_size_bytes) under `key`, with a TOC listing
// `entries` (which must pass the TOC's own validation: readers check it before anything else).
inline Result<ForgedLayer> ForgeLayer(ByteSpan tar, const std::vector<format::Entry>& entries,
                                      const format::LayerKey& key, const ForgeOptions& options = {}) {
  using namespace format;
  if (tar.empty()) return Status::InvalidArgument("ForgeLayer: empty tar");
  BlobHeader header;
  for (size_t i = 0; i < kSaltSize; ++i) header.salt[i] = static_cast<uint8_t>(options.salt_seed + i);
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveKeys(key, header.salt));
  header.commitment = keys.commitment;
  LC_ASSIGN_OR_RETURN(std::unique_ptr<ChunkSealer> sealer, ChunkSealer::FromKeys(keys, header.salt));
  const BlobHeaderBytes header_bytes = EncodeBlobHeader(header);
  ForgedLayer out;
  out.commitment = keys.commitment;
  out.blob.assign(header_bytes.begin(), header_bytes.end());

  v1::Toc toc;
  toc.set_version(forged_internal::kForgedTocVersion);
  toc.set_target_chunk_size(static_cast<uint32_t>(options.chunk_size_bytes));
  compress::ZstdCompressor compressor(3);
  std::vector<uint8_t> record;
  uint64_t index = 0;
  for (size_t pos = 0; pos < tar.size(); pos += options.chunk_size_bytes, ++index) {
    ByteSpan raw = tar.subspan(pos, std::min(options.chunk_size_bytes, tar.size() - pos));
    const bool last = pos + raw.size() == tar.size();
    LC_RETURN_IF_ERROR(sealer->Seal(index, last, raw, compressor, record));
    LC_ASSIGN_OR_RETURN(RecordHeader h, ParseRecordHeader(ByteSpan(record).first(kRecordHeaderSize)));
    v1::Chunk* c = toc.add_chunks();
    c->set_payload_size(h.payload_size);
    c->set_raw_size(h.raw_size);
    c->set_stored(h.stored);
    forged_internal::PinRecord(c, record);
    out.blob.insert(out.blob.end(), record.begin(), record.end());
  }
  toc.set_tar_size(tar.size());
  out.listed_diff_id = options.listed_diff_id.value_or(crypto::Sha256::Of(tar));
  toc.set_tar_sha256(out.listed_diff_id.data(), out.listed_diff_id.size());
  for (const Entry& e : entries) format::EntryToProto(e, toc.add_entries());

  std::string serialized = toc.SerializeAsString();
  if (options.tamper_serialized_toc) options.tamper_serialized_toc(serialized);
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> plaintext, EncodeTocPlaintext(AsBytes(serialized), 3));
  std::vector<uint8_t> sealed(plaintext.size() + kTagSize);
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(keys.toc_key.span()));
  LC_RETURN_IF_ERROR(gcm.Seal(TocNonce(), MakeTocAad(header_bytes, sealed.size()), plaintext,
                              MutableByteSpan(sealed).first(plaintext.size()),
                              MutableByteSpan(sealed).subspan(plaintext.size())));
  out.toc_digest = crypto::Sha256::Of(sealed);
  const uint64_t toc_offset = out.blob.size();
  out.blob.insert(out.blob.end(), sealed.begin(), sealed.end());
  FooterBytes footer = EncodeFooter(header, toc_offset, sealed.size());
  out.blob.insert(out.blob.end(), footer.begin(), footer.end());
  return out;
}

}  // namespace lazycrypt::testing
