#include "lazylayer/indexed_layer.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "compress/compress.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "format/layer_index.h"
#include "format/toc_tar_match.h"

namespace lazycrypt::lazylayer {
namespace {

// A span's ciphertext larger than this is refused before it is fetched (a span yields at most
// zindex::kMaxSpanBytes; deflate expands incompressible data by well under 1%).
constexpr uint64_t kMaxSpanFetchBytes = zindex::kMaxSpanBytes + (zindex::kMaxSpanBytes >> 4);

std::string Hex(std::string_view digest) {
  const size_t colon = digest.find(':');
  return std::string(colon == std::string_view::npos ? digest : digest.substr(colon + 1));
}

}  // namespace

zindex::Limits IndexedLayerLimits(uint64_t max_sealed_bytes) {
  zindex::Limits limits;
  limits.max_sealed_bytes = std::min(max_sealed_bytes, zindex::kMaxSealedIndexBytes);
  limits.max_plaintext_bytes = std::min(zindex::kMaxIndexPlaintextBytes,
                                        std::max<uint64_t>(limits.max_sealed_bytes, 1) * 4);
  limits.max_span_ciphertext_bytes = kMaxSpanFetchBytes;
  return limits;
}

std::string IndexedStoreKey(std::string_view layer_digest, std::string_view sealed_index_digest) {
  return "zidx-" + Hex(layer_digest) + "-idx-" + Hex(sealed_index_digest).substr(0, 48);
}

// The layer's data for the FUSE file system: chunk i = span i, fetched by its ciphertext range
// (CtrLayerData: opened-chunk cache, disk store, one fetch per span however many readers ask),
// checked against the index's span digest, decrypted and inflated (DecodeSpan).
class MountedIndexedLayer::Data final : public CtrLayerData {
 public:
  Data(std::shared_ptr<CountingSource> ciphertext,
       std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened, cache::ChunkStore* store,
       std::string store_key, std::shared_ptr<const zindex::OpenedIndex> zi)
      : CtrLayerData(std::move(ciphertext), std::move(opened), store, std::move(store_key)),
        zi_(std::move(zi)),
        index_(zi_->layer_index()) {}

  const format::LayerIndex& index() const override { return *index_; }

  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override {
    LC_RETURN_IF_ERROR(CheckNotQuarantined());
    if (!index_->Holds(entry)) {
      return Status::InvalidArgument("indexed layer: not an entry of this layer");
    }
    if (entry.type() != format::EntryType::kRegular) {
      return Status::InvalidArgument("indexed layer: not a regular file");
    }
    const uint64_t size = entry.size();
    if (offset >= size || out.empty()) return size_t{0};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
    const auto chunks = index_->chunks();
    size_t done = 0;
    while (done < n) {
      const uint64_t at_tar = entry.data_offset() + offset + done;
      const uint64_t c = index_->ChunkForTarOffset(at_tar);
      LC_ASSIGN_OR_RETURN(cache::OpenedChunkPtr plain, Chunk(static_cast<uint32_t>(c)));
      const uint64_t at = at_tar - chunks[c].tar_offset;
      if (at >= plain->size()) return Status::Internal("indexed layer: span shorter than its chunk");
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, plain->size() - at));
      std::memcpy(out.data() + done, plain->data() + at, take);
      done += take;
    }
    return done;
  }

  cache::LayerStats stats() const override {
    cache::LayerStats s;
    FillStats(s);
    return s;
  }

 private:
  Result<CiphertextRange> ChunkCiphertext(uint32_t i) const override {
    if (i >= zi_->span_count()) return Status::InvalidArgument("span out of range");
    const zindex::OpenedIndex::Range r = zi_->span_ciphertext(i);
    const uint64_t blob_size = ciphertext_->size();
    if (r.offset > blob_size || r.size > blob_size - r.offset || r.size > kMaxSpanFetchBytes) {
      return Status::Corruption("span " + std::to_string(i) +
                                ": its ciphertext lies outside the blob or is too large");
    }
    return CiphertextRange{r.offset, r.size};
  }

  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext) override {
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer plain, zi_->DecodeSpan(i, ciphertext));
    if (plain.size() != index_->chunks()[i].raw_size) {
      return Status::Corruption("span " + std::to_string(i) + " is not its chunk's size");
    }
    auto out = std::make_shared<cache::OpenedChunk>(plain.size());
    if (plain.size() > 0) std::memcpy(out->data(), plain.data(), plain.size());
    return cache::OpenedChunkPtr(std::move(out));
  }

  const std::shared_ptr<const zindex::OpenedIndex> zi_;
  const std::shared_ptr<const format::LayerIndex> index_;
};

Result<std::unique_ptr<MountedIndexedLayer>> MountedIndexedLayer::Mount(
    const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> ciphertext,
    const image::Descriptor& descriptor, image::OcicryptLayerCipher cipher,
    std::shared_ptr<const zindex::OpenedIndex> index, std::string store_key,
    const IndexedMountOptions& options, std::unique_ptr<fusefs::FuseMount>* resumed) {
  const std::string what = "indexed ocicrypt layer " + descriptor.digest;
  if (ciphertext->size() != descriptor.size || index->blob_size() != descriptor.size) {
    return Status::Corruption(what + ": the blob is " + std::to_string(ciphertext->size()) +
                              " bytes, the index says " + std::to_string(index->blob_size()) +
                              ", the manifest " + std::to_string(descriptor.size));
  }
  if (index->layer_index()->chunks().size() != index->span_count()) {
    return Status::Corruption(what + ": the index's chunks are not its spans");
  }
  for (size_t i = 0; i < index->span_count(); ++i) {  // IndexedLayerLimits, checked again
    if (index->span_ciphertext(i).size > kMaxSpanFetchBytes) {
      return Status::Corruption(what + ": span " + std::to_string(i) + " needs " +
                                std::to_string(index->span_ciphertext(i).size) +
                                " ciphertext bytes, more than a span fetch (" +
                                std::to_string(kMaxSpanFetchBytes) + ")");
    }
  }
  auto counting = std::make_shared<CountingSource>(std::move(ciphertext));
  std::unique_ptr<MountedIndexedLayer> layer(new MountedIndexedLayer());
  layer->digest_ = descriptor.digest;
  layer->store_key_ = std::move(store_key);
  layer->key_name_ = cipher.key_name;
  layer->blob_size_ = descriptor.size;
  layer->descriptor_ = descriptor;
  layer->cipher_ = std::make_unique<image::OcicryptLayerCipher>(std::move(cipher));
  layer->index_ = index;
  auto data = std::make_shared<Data>(counting, OpenedChunkSlot(options), options.store,
                                     layer->store_key_, std::move(index));
  LC_RETURN_IF_ERROR(layer->MountAndStart(mountpoint, std::move(data), options, resumed)
                         .WithContext(what));
  return layer;
}

MountedIndexedLayer::~MountedIndexedLayer() {
  StopBackground();  // before the members its thread uses go
}

Result<std::string> MountedIndexedLayer::VerifyContent(InputStream& plain,
                                                       LargeReadStream& ciphertext) {
  const zindex::OpenedIndex& zi = *index_;
  const format::LayerIndex& layer_index = *zi.layer_index();
  const size_t spans = zi.span_count();
  const auto chunks = layer_index.chunks();

  // Each span decoded as the mount would (DecodeSpan: the index's span digest, CTR, inflate from
  // its checkpoint) from the real ciphertext, which the HMAC and blob digest check at the end.
  std::vector<crypto::Sha256Digest> decoded(spans);
  std::vector<uint8_t> held;  // ciphertext from held_base on, as far as read
  uint64_t held_base = 0;
  size_t next_decode = 0;
  ciphertext.set_on_piece([&](uint64_t offset, ByteSpan piece) -> Status {
    if (held_base + held.size() != offset) {
      return Status::Internal("the verification's ciphertext is not contiguous");
    }
    held.insert(held.end(), piece.begin(), piece.end());
    while (next_decode < spans) {
      const zindex::OpenedIndex::Range r = zi.span_ciphertext(next_decode);
      if (r.offset < held_base) {
        return Status::Corruption("the index's spans are not in blob order (span " +
                                  std::to_string(next_decode) + ")");
      }
      if (r.offset + r.size > held_base + held.size()) break;
      auto span = zi.DecodeSpan(next_decode, ByteSpan(held).subspan(
                                                 static_cast<size_t>(r.offset - held_base),
                                                 static_cast<size_t>(r.size)));
      if (!span.ok()) return span.status();
      decoded[next_decode] = crypto::Sha256::Of(span->span());
      ++next_decode;
      // What no later span needs is dropped.
      const uint64_t keep_from = next_decode < spans
                                     ? std::min(zi.span_ciphertext(next_decode).offset,
                                                held_base + held.size())
                                     : held_base + held.size();
      if (keep_from > held_base) {
        held.erase(held.begin(), held.begin() + static_cast<ptrdiff_t>(keep_from - held_base));
        held_base = keep_from;
      }
    }
    return Status::Ok();
  });

  // The real tar stream: its SHA-256 (the diff_id), each entry against the index's (an eager
  // node unpacks the tar's headers; the lazy view shows the index's) and its bytes cut at the
  // span boundaries.
  auto tar_stream = compress::NewGzipInputStream(plain);
  format::TocTarMatcher matcher(layer_index.entries());
  crypto::Sha256 whole;
  std::vector<crypto::Sha256Digest> real(spans);
  crypto::Sha256 span_hash;
  size_t span = 0;
  uint64_t pos = 0;
  std::vector<uint8_t> buffer(size_t{256} << 10);
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, tar_stream->Read(buffer));
    if (n == 0) break;
    ByteSpan bytes(buffer.data(), n);
    whole.Update(bytes);
    LC_RETURN_IF_ERROR(matcher.Feed(bytes));
    while (!bytes.empty()) {
      if (span >= spans) {
        return Status::Corruption("the tar stream is longer than the index's spans");
      }
      const uint64_t end = chunks[span].tar_offset + chunks[span].raw_size;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(bytes.size(), end - pos));
      span_hash.Update(bytes.first(take));
      bytes = bytes.subspan(take);
      pos += take;
      if (pos == end) {
        real[span++] = span_hash.Finish();
        span_hash.Reset();
      }
    }
  }
  // The decrypting stream to its end, so that its checks (HMAC, blob digest, plaintext digest)
  // have run before anything below is believed.
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, plain.Read(buffer));
    if (n == 0) break;
    return Status::Corruption("bytes after the last gzip member");
  }
  if (span != spans || pos != zi.tar_size()) {
    return Status::Corruption("the tar stream is shorter than the index's spans");
  }
  LC_RETURN_IF_ERROR(matcher.Finish());
  if (next_decode != spans) {
    return Status::Corruption("the index's spans do not lie inside the blob");
  }
  for (size_t i = 0; i < spans; ++i) {
    if (decoded[i] != real[i]) {
      return Status::Corruption("span " + std::to_string(i) +
                                " decodes to other bytes than the tar stream holds there");
    }
  }
  const std::string diff_id = crypto::OciDigest(whole.Finish());
  if (diff_id != zi.diff_id()) {
    return Status::Corruption("the tar stream's diff_id " + diff_id + " is not the index's " +
                              zi.diff_id());
  }
  return diff_id;
}

}  // namespace lazycrypt::lazylayer
