#include "lazylayer/indexed_layer.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "cache/chunk_ranges.h"
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
// A sealed window larger than this is refused before it is fetched (Open allows at most
// ZSTD_compressBound(32 KiB) + 16 bytes).
constexpr uint64_t kMaxWindowFetchBytes = 2 * zindex::kWindowBytes;
// The verification reads the index blob's windows area in pieces of at least this size.
constexpr uint64_t kVerifyWindowReadBytes = uint64_t{1} << 20;

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

std::string IndexedStoreKey(std::string_view layer_digest, std::string_view core_digest) {
  return "zidx-" + Hex(layer_digest) + "-idx-" + Hex(core_digest).substr(0, 48);
}

// The layer's data for the FUSE file system: chunk i = span i, fetched by its ciphertext range
// with its sealed window as side bytes (CtrLayerData: opened-chunk cache, disk store, one fetch
// per span however many readers ask), checked against the index's span digest and window seal,
// decrypted and inflated (DecodeSpan).
class MountedIndexedLayer::Data final : public CtrLayerData {
 public:
  Data(std::shared_ptr<CountingSource> ciphertext, std::shared_ptr<CountingSource> windows,
       std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened, cache::ChunkStore* store,
       std::string store_key, std::shared_ptr<const zindex::OpenedIndex> zi)
      : CtrLayerData(std::move(ciphertext), std::move(opened), store, std::move(store_key)),
        windows_(std::move(windows)),
        has_store_(store != nullptr),
        zi_(std::move(zi)),
        index_(zi_->layer_index()),
        windows_before_(zi_->span_count()) {
    uint64_t before = 0;
    for (size_t i = 0; i < zi_->span_count(); ++i) {
      windows_before_[i] = before;
      before += zi_->span_window(i).size;
    }
  }
  ~Data() override { StopReadAhead(); }  // its workers call this class's functions

  const format::LayerIndex& index() const override { return *index_; }

  // The index blob, uncounted (the verification's reads, as its layer blob reads).
  BlobSource& windows_uncounted() { return windows_->uncounted(); }

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
    // The read's spans after its first and the file's next ones load meanwhile (read-ahead).
    const uint64_t start = entry.data_offset();
    ReadAhead(entry.index(), offset, n,
              static_cast<uint32_t>(index_->ChunkForTarOffset(start + offset)),
              static_cast<uint32_t>(index_->ChunkForTarOffset(start + offset + n - 1)) + 1,
              static_cast<uint32_t>(index_->ChunkForTarOffset(start + size - 1)) + 1);
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
    // The windows are part of what a read fetches.
    s.index_bytes_fetched = windows_->bytes();
    s.index_fetch_requests = windows_->requests();
    s.blob_bytes_fetched += windows_->bytes();
    s.fetch_requests += windows_->requests();
    s.fetch_errors += windows_->errors();
    s.fetch_nanos += windows_->nanos();
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
    const zindex::OpenedIndex::Range w = zi_->span_window(i);
    const uint64_t sealed_size = windows_->size();
    if (w.size > 0 &&
        (w.offset > sealed_size || w.size > sealed_size - w.offset ||
         w.size > kMaxWindowFetchBytes)) {
      return Status::Corruption("span " + std::to_string(i) +
                                ": its window lies outside the index blob or is too large");
    }
    CiphertextRange range{r.offset, r.size};
    range.side_size = w.size;
    // The record (ciphertext, then window) at its ciphertext's offset moved on by the windows
    // before it and one byte per span before it: spans overlap their neighbours by at most a
    // byte, so no two records overlap in the store's file.
    range.store_offset = r.offset + windows_before_[i] + i;
    return range;
  }

  Status FetchSide(uint32_t i, const CiphertextRange& range, MutableByteSpan out) override {
    if (TakeKeptWindow(i, out)) return Status::Ok();
    return windows_->ReadAt(zi_->span_window(i).offset, out)
        .WithContext("span " + std::to_string(i) + " window (" + std::to_string(range.side_size) +
                     " bytes of the index blob)");
  }

  // A prefetch run's windows: those kept in memory from there, the others read from the index
  // blob in groups of windows that lie together (the windows area is in span order; gaps of at
  // most kWindowGapBytes read through), one request per group.
  Status FetchSides(std::span<const uint32_t> spans, std::span<const CiphertextRange>,
                    std::span<const MutableByteSpan> outs) override {
    std::vector<size_t> left;  // positions in `spans` still to read, in window order
    for (size_t k = 0; k < spans.size(); ++k) {
      if (!TakeKeptWindow(spans[k], outs[k])) left.push_back(k);
    }
    std::vector<uint8_t> group;
    for (size_t g = 0; g < left.size();) {
      const uint64_t lo = zi_->span_window(spans[left[g]]).offset;
      uint64_t hi = lo + outs[left[g]].size();
      size_t end = g + 1;
      while (end < left.size()) {
        const uint64_t at = zi_->span_window(spans[left[end]]).offset;
        const uint64_t size = outs[left[end]].size();
        // Out of order or overlapping (no index made by BuildIndex): a group of its own.
        if (at < hi || at - hi > kWindowGapBytes || at + size - lo > kMaxWindowGroupBytes) break;
        hi = at + size;
        ++end;
      }
      group.resize(static_cast<size_t>(hi - lo));
      LC_RETURN_IF_ERROR(
          windows_->ReadAt(lo, group).WithContext(
              "windows of spans " + std::to_string(spans[left[g]]) + ".." +
              std::to_string(spans[left[end - 1]]) + " (" + std::to_string(hi - lo) +
              " bytes of the index blob)"));
      for (; g < end; ++g) {
        const uint64_t at = zi_->span_window(spans[left[g]]).offset;
        std::memcpy(outs[left[g]].data(), group.data() + (at - lo), outs[left[g]].size());
      }
    }
    return Status::Ok();
  }

  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext,
                                               ByteSpan sealed_window) override {
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer plain,
                        zi_->DecodeSpan(i, ciphertext, sealed_window));
    if (plain.size() != index_->chunks()[i].raw_size) {
      return Status::Corruption("span " + std::to_string(i) + " is not its chunk's size");
    }
    if (!has_store_) KeepWindow(i, sealed_window);
    auto out = std::make_shared<cache::OpenedChunk>(plain.size());
    if (plain.size() > 0) std::memcpy(out->data(), plain.data(), plain.size());
    return cache::OpenedChunkPtr(std::move(out));
  }

  // Without a chunk store, authenticated windows are kept in memory (sealed: ciphertext), up to
  // kKeptWindowBytes, oldest dropped first: a span evicted from the opened chunks is fetched
  // again without its window.
  void KeepWindow(uint32_t i, ByteSpan sealed_window) {
    if (sealed_window.empty()) return;
    std::lock_guard<std::mutex> lock(kept_mu_);
    if (kept_.count(i) != 0) return;
    kept_[i] = std::vector<uint8_t>(sealed_window.begin(), sealed_window.end());
    kept_order_.push_back(i);
    kept_bytes_ += sealed_window.size();
    while (kept_bytes_ > kKeptWindowBytes && !kept_order_.empty()) {
      auto it = kept_.find(kept_order_.front());
      kept_order_.pop_front();
      if (it == kept_.end()) continue;
      kept_bytes_ -= it->second.size();
      kept_.erase(it);
    }
  }
  bool TakeKeptWindow(uint32_t i, MutableByteSpan out) {
    std::lock_guard<std::mutex> lock(kept_mu_);
    auto it = kept_.find(i);
    if (it == kept_.end() || it->second.size() != out.size()) return false;
    std::memcpy(out.data(), it->second.data(), out.size());
    return true;
  }

  static constexpr uint64_t kKeptWindowBytes = uint64_t{4} << 20;
  // FetchSides: gaps between windows read through (as LoadRuns' ciphertext gaps), and the most
  // one request reads.
  static constexpr uint64_t kWindowGapBytes = uint64_t{64} << 10;
  static constexpr uint64_t kMaxWindowGroupBytes = uint64_t{16} << 20;

  const std::shared_ptr<CountingSource> windows_;  // the sealed index blob
  const bool has_store_;
  const std::shared_ptr<const zindex::OpenedIndex> zi_;
  const std::shared_ptr<const format::LayerIndex> index_;
  std::vector<uint64_t> windows_before_;  // sealed window bytes of the spans before span i
  std::mutex kept_mu_;
  std::unordered_map<uint32_t, std::vector<uint8_t>> kept_;
  std::deque<uint32_t> kept_order_;
  uint64_t kept_bytes_ = 0;
};

Result<std::unique_ptr<MountedIndexedLayer>> MountedIndexedLayer::Mount(
    const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> ciphertext,
    std::shared_ptr<BlobSource> sealed_index, const image::Descriptor& descriptor,
    image::OcicryptLayerCipher cipher, std::shared_ptr<const zindex::OpenedIndex> index,
    std::string store_key, const IndexedMountOptions& options,
    std::unique_ptr<fusefs::FuseMount>* resumed) {
  const std::string what = "indexed ocicrypt layer " + descriptor.digest;
  if (ciphertext->size() != descriptor.size || index->blob_size() != descriptor.size) {
    return Status::Corruption(what + ": the blob is " + std::to_string(ciphertext->size()) +
                              " bytes, the index says " + std::to_string(index->blob_size()) +
                              ", the manifest " + std::to_string(descriptor.size));
  }
  if (sealed_index->size() != index->sealed_size()) {
    return Status::Corruption(what + ": the index blob is " +
                              std::to_string(sealed_index->size()) + " bytes, the index says " +
                              std::to_string(index->sealed_size()));
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
  auto windows = std::make_shared<CountingSource>(std::move(sealed_index));
  std::unique_ptr<MountedIndexedLayer> layer(new MountedIndexedLayer());
  layer->digest_ = descriptor.digest;
  layer->store_key_ = std::move(store_key);
  layer->key_name_ = cipher.key_name;
  layer->blob_size_ = descriptor.size;
  layer->descriptor_ = descriptor;
  layer->cipher_ = std::make_unique<image::OcicryptLayerCipher>(std::move(cipher));
  layer->index_ = index;
  // A small layer new to this node: every span and window loaded at mount, in one request each
  // (the mount itself fetches nothing: its core came with the index lookup), so that the
  // container's first reads find them loaded or in flight instead of costing a round trip each.
  layer->load_all_ = ReadWholeAtMount(options, descriptor.size, layer->store_key_);
  auto data = std::make_shared<Data>(counting, std::move(windows), OpenedChunkSlot(options),
                                     options.store, layer->store_key_, std::move(index));
  layer->indexed_data_ = data;
  LC_RETURN_IF_ERROR(layer->MountAndStart(mountpoint, std::move(data), options, resumed)
                         .WithContext(what));
  return layer;
}

void MountedIndexedLayer::Prefetch(const std::function<bool()>& stopped) {
  // The spans holding every marked file's data, claimed at once and read in as few requests as
  // the blob allows, up to CtrLayerData::kLoadRunsInFlight at once (the marked files of an
  // unmodified layer lie where the tar put them: a run each), with their windows. Errors are
  // left to the readers (they see them again, and the verification too).
  // Marked files' data ranges may overlap (a key holder's core may mark a million entries
  // covering the whole tar each): one range per mark, merged, then expanded (at most the span
  // count), never each mark's spans one by one.
  const format::LayerIndex& li = *index_->layer_index();
  std::vector<format::ChunkRange> ranges;
  ranges.reserve(li.prefetch_entries().size());
  for (uint32_t entry : li.prefetch_entries()) {
    ranges.push_back(li.ChunksForRange(li.entries()[entry], 0, ~uint64_t{0}));
  }
  const std::vector<uint32_t> spans =
      cache::ChunksOfRanges<uint32_t>(std::move(ranges), li.chunks().size());
  if (!spans.empty()) (void)indexed_data_->LoadRuns(spans, stopped);
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

  // Each span decoded as the mount would (DecodeSpan: the index's span digest, its window's seal,
  // CTR, inflate from its checkpoint) from the real ciphertext, which the HMAC and blob digest
  // check at the end, and its window from the index blob (pinned by the core, as the mount's).
  std::vector<crypto::Sha256Digest> decoded(spans);
  std::vector<uint8_t> held;  // ciphertext from held_base on, as far as read
  uint64_t held_base = 0;
  size_t next_decode = 0;
  // The windows area, read on in pieces as the spans need it (the windows lie in span order).
  BlobSource& index_blob = indexed_data_->windows_uncounted();
  std::vector<uint8_t> windows;  // index blob bytes from windows_base on, as far as read
  uint64_t windows_base = 0;
  auto window_of = [&](size_t i) -> Result<ByteSpan> {
    const zindex::OpenedIndex::Range w = zi.span_window(i);
    if (w.size == 0) return ByteSpan();
    if (w.offset > index_blob.size() || w.size > index_blob.size() - w.offset) {
      return Status::Corruption("span " + std::to_string(i) +
                                ": its window lies outside the index blob");
    }
    if (windows.empty() || w.offset > windows_base + windows.size()) {
      windows.clear();
      windows_base = w.offset;
    }
    if (w.offset < windows_base) {
      return Status::Corruption("the index's windows are not in span order (span " +
                                std::to_string(i) + ")");
    }
    windows.erase(windows.begin(),
                  windows.begin() + static_cast<ptrdiff_t>(w.offset - windows_base));
    windows_base = w.offset;
    if (w.size > windows.size()) {
      const uint64_t from = windows_base + windows.size();
      const uint64_t to = std::min<uint64_t>(
          index_blob.size(), std::max<uint64_t>(w.offset + w.size, from + kVerifyWindowReadBytes));
      const size_t had = windows.size();
      windows.resize(static_cast<size_t>(to - windows_base));
      LC_RETURN_IF_ERROR(index_blob.ReadAt(from, MutableByteSpan(windows).subspan(had))
                             .WithContext("the index blob's windows"));
    }
    return ByteSpan(windows).first(static_cast<size_t>(w.size));
  };
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
      LC_ASSIGN_OR_RETURN(ByteSpan window, window_of(next_decode));
      auto span = zi.DecodeSpan(next_decode,
                                ByteSpan(held).subspan(static_cast<size_t>(r.offset - held_base),
                                                       static_cast<size_t>(r.size)),
                                window);
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
