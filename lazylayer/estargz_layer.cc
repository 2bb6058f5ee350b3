#include "lazylayer/estargz_layer.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

#include "cache/chunk_ranges.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "estargz/reader.h"
#include "estargz/toc.h"
#include "format/layer_index.h"
#include "format/toc_tar_match.h"
#include "image/layer.h"
#include "tar/tar_reader.h"

namespace lazycrypt::lazylayer {
namespace {

// A compressed range larger than this is refused before it is fetched (a chunk holds at most
// ReaderLimits::max_chunk_bytes uncompressed bytes; deflate expands incompressible data by well
// under 1%).
constexpr uint64_t kMaxChunkFetchBytes = uint64_t{96} << 20;
// Serves reads inside [base, base + bytes.size()) of a blob from memory, and forwards the rest to
// `fallback` (null: Corruption). One ranged fetch then serves the many small reads of a gzip
// member (estargz::ReadChunk) or of footer + TOC (estargz::OpenIndex).
class WindowSource final : public BlobSource {
 public:
  WindowSource(uint64_t blob_size, uint64_t base, std::vector<uint8_t> bytes,
               BlobSource* fallback)
      : blob_size_(blob_size), base_(base), bytes_(std::move(bytes)), fallback_(fallback) {}
  uint64_t size() const override { return blob_size_; }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (offset >= base_ && out.size() <= bytes_.size() &&
        offset - base_ <= bytes_.size() - out.size()) {
      if (!out.empty()) std::memcpy(out.data(), bytes_.data() + (offset - base_), out.size());
      return Status::Ok();
    }
    if (fallback_ != nullptr) return fallback_->ReadAt(offset, out);
    return Status::Corruption("estargz: a read outside the fetched member");
  }

 private:
  uint64_t blob_size_, base_;
  std::vector<uint8_t> bytes_;  // ciphertext
  BlobSource* fallback_;
};

// RFC 3339 ("2023-11-14T22:13:20Z", fractions and offsets accepted) → seconds and nanoseconds.
Status ParseModtime(const std::string& text, int64_t& sec, uint32_t& nsec) {
  sec = 0;
  nsec = 0;
  if (text.empty()) return Status::Ok();
  int y, mo, d, h, mi, s, used = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s,
                  &used) != 6 ||
      used == 0) {
    return Status::Corruption("modtime is not RFC 3339");
  }
  std::string_view rest = std::string_view(text).substr(static_cast<size_t>(used));
  if (!rest.empty() && rest[0] == '.') {
    size_t i = 1;
    uint32_t scale = 100000000;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
      nsec += static_cast<uint32_t>(rest[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    rest.remove_prefix(i);
  }
  int64_t offset_sec = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = (rest[1] - '0') * 10 + (rest[2] - '0'), om = (rest[4] - '0') * 10 + (rest[5] - '0');
    offset_sec = (rest[0] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
  } else {
    return Status::Corruption("modtime is not RFC 3339");
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  sec = static_cast<int64_t>(::timegm(&tm)) - offset_sec;
  return Status::Ok();
}

// An entry as served (from the TOC) against the same entry of the tar stream (TocEntryFromTar):
// what a container sees must not depend on whether its node unpacked the layer or mounts it.
// The TOC holds mtimes rounded to the second (FORMAT.md §10.1), the epoch as no time.
Status SameMetadata(const format::Entry& served, const format::Entry& tar, size_t k) {
  const char* field = nullptr;
  int64_t tar_sec = tar.mtime_sec;
  if (tar.mtime_nsec >= 500000000) ++tar_sec;
  if (tar.mtime_sec == 0) tar_sec = 0;
  if (served.name != tar.name) field = "name";
  else if (served.type != tar.type) field = "type";
  else if (served.mode != tar.mode) field = "mode";
  else if (served.uid != tar.uid || served.gid != tar.gid) field = "owner";
  else if (served.mtime_sec != tar_sec) field = "mtime";
  else if (served.size != tar.size) field = "size";
  else if (served.link_target != tar.link_target) field = "link target";
  else if (served.dev_major != tar.dev_major || served.dev_minor != tar.dev_minor) field = "device";
  else if (served.xattrs != tar.xattrs) field = "xattrs";
  if (field == nullptr) return Status::Ok();
  // By index and field, never by name (names are confidential, FORMAT.md §4).
  return Status::Corruption("the TOC does not match the tar stream: entry " + std::to_string(k) +
                            ": " + field + " differs");
}

format::EntryType MapType(estargz::EntryType t) {
  switch (t) {
    case estargz::EntryType::kRegular: return format::EntryType::kRegular;
    case estargz::EntryType::kDirectory: return format::EntryType::kDirectory;
    case estargz::EntryType::kSymlink: return format::EntryType::kSymlink;
    case estargz::EntryType::kHardlink: return format::EntryType::kHardlink;
    case estargz::EntryType::kCharDevice: return format::EntryType::kCharDevice;
    case estargz::EntryType::kBlockDevice: return format::EntryType::kBlockDevice;
    case estargz::EntryType::kFifo: return format::EntryType::kFifo;
  }
  return format::EntryType::kRegular;
}

// The FUSE file system's view of a verified eStargz index: entry i = eStargz entry i, chunk i =
// eStargz chunk i; file data numbered as if the regular files' bytes were one stream.
// Then one more regular file, /stargz.index.json (`toc_json_size` bytes: the pinned TOC JSON),
// as an eager unpack of the layer creates it (its tar header is not pinned, so its metadata is
// what FORMAT.md §10.1 says the writer puts there: mode 0, uid/gid 0, mtime 0).
Result<std::shared_ptr<const format::LayerIndex>> ToLayerIndex(const estargz::Index& ez,
                                                              uint64_t blob_size,
                                                              uint64_t toc_json_size) {
  format::Toc toc;
  toc.entries.reserve(ez.entries().size());
  toc.chunks.reserve(ez.chunks().size());
  uint64_t data = 0;
  for (size_t i = 0; i < ez.entries().size(); ++i) {
    const estargz::Entry& in = ez.entries()[i];
    format::Entry e;
    e.name = in.name;
    e.type = MapType(in.type);
    e.mode = in.mode;
    e.uid = in.uid;
    e.gid = in.gid;
    e.uname = in.uname;
    e.gname = in.gname;
    if (Status s = ParseModtime(in.modtime, e.mtime_sec, e.mtime_nsec); !s.ok()) {
      return Status::Corruption("estargz TOC: entry " + std::to_string(i) + ": " + s.message());
    }
    e.link_target = in.link_name;
    e.dev_major = in.dev_major;
    e.dev_minor = in.dev_minor;
    e.xattrs = in.xattrs;
    if (in.type == estargz::EntryType::kRegular) {
      e.size = in.size;
      e.data_offset = data;
      if (in.chunk_count > 0 && in.first_chunk != toc.chunks.size()) {
        return Status::Corruption("estargz TOC: entry " + std::to_string(i) +
                                  ": its chunks are not in entry order");
      }
      for (const estargz::ChunkRef& c : ez.ChunksOf(static_cast<uint32_t>(i))) {
        if (c.size > UINT32_MAX) {
          return Status::Corruption("estargz TOC: entry " + std::to_string(i) +
                                    ": a chunk over 4 GiB");
        }
        format::ChunkInfo info;
        info.index = toc.chunks.size();
        info.raw_size = static_cast<uint32_t>(c.size);
        info.tar_offset = data + c.file_offset;
        toc.chunks.push_back(info);
      }
      data += in.size;
    }
    toc.entries.push_back(std::move(e));
  }
  if (toc.chunks.size() != ez.chunks().size()) {
    return Status::Corruption("estargz TOC: chunks that belong to no file");
  }
  format::Entry json = format::Entry();
  json.name = std::string(estargz::kTocTarName);
  json.type = format::EntryType::kRegular;
  json.size = toc_json_size;
  json.data_offset = data;
  toc.entries.push_back(std::move(json));
  if (toc_json_size > 0) {
    if (toc_json_size > UINT32_MAX) return Status::Corruption("estargz TOC: over 4 GiB");
    format::ChunkInfo info;
    info.index = toc.chunks.size();
    info.raw_size = static_cast<uint32_t>(toc_json_size);
    info.tar_offset = data;
    toc.chunks.push_back(info);
    data += toc_json_size;
  }
  if (!toc.chunks.empty()) toc.chunks.back().last = true;
  toc.tar_size = data;
  toc.prefetch = ez.prefetch_entries();
  return format::LayerIndex::FromVerifiedForeignToc(std::move(toc), ez.toc_digest(), blob_size);
}

}  // namespace

std::string EstargzStoreKey(std::string_view layer_digest, std::string_view toc_digest) {
  auto hex = [](std::string_view digest) {
    const size_t colon = digest.find(':');
    return std::string(colon == std::string_view::npos ? digest : digest.substr(colon + 1));
  };
  return "esgz-" + hex(layer_digest) + "-toc-" + hex(toc_digest).substr(0, 48);
}

bool IsEstargzOcicryptLayer(const image::Descriptor& descriptor) {
  return image::ClassifyLayer(descriptor.media_type) == image::LayerKind::kOcicrypt &&
         descriptor.annotations.count(std::string(estargz::kAnnotationTocDigest)) != 0;
}

// The layer's data for the FUSE file system: chunks fetched by ciphertext range (CtrLayerData:
// opened-chunk cache, disk store, one fetch per chunk however many readers ask), decrypted with
// CTR, inflated and verified (estargz::ReadChunk).
class MountedEstargzLayer::Data final : public CtrLayerData {
 public:
  Data(std::shared_ptr<CountingSource> ciphertext, crypto::SecureBuffer key,
       std::vector<uint8_t> nonce, std::shared_ptr<const estargz::Index> ez,
       std::shared_ptr<const format::LayerIndex> index, crypto::SecureBuffer toc_json,
       std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened, cache::ChunkStore* store,
       std::string store_key)
      : CtrLayerData(std::move(ciphertext), std::move(opened), store, std::move(store_key)),
        key_(std::move(key)),
        nonce_(std::move(nonce)),
        ez_(std::move(ez)),
        index_(std::move(index)),
        toc_json_(std::move(toc_json)) {}
  ~Data() override { StopReadAhead(); }  // its workers call this class's functions

  const format::LayerIndex& index() const override { return *index_; }
  const estargz::Index& ez() const { return *ez_; }

  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override {
    LC_RETURN_IF_ERROR(CheckNotQuarantined());
    if (!index_->Holds(entry)) {
      return Status::InvalidArgument("estargz layer: not an entry of this layer");
    }
    const uint32_t i = entry.index();
    if (i == ez_->entries().size()) {  // /stargz.index.json: the pinned TOC JSON
      if (offset >= toc_json_.size()) return size_t{0};
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(out.size(), toc_json_.size() - offset));
      std::memcpy(out.data(), toc_json_.data() + offset, n);
      return n;
    }
    const estargz::Entry& e = ez_->entries()[i];
    if (e.type != estargz::EntryType::kRegular) {
      return Status::InvalidArgument("estargz layer: not a regular file");
    }
    if (offset >= e.size || out.empty()) return size_t{0};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), e.size - offset));
    auto chunks = ez_->ChunksOf(i);
    auto chunk_at = [&chunks](uint64_t off) {
      return std::upper_bound(chunks.begin(), chunks.end(), off,
                              [](uint64_t o, const estargz::ChunkRef& c) {
                                return o < c.file_offset;
                              }) -
             1;
    };
    auto it = chunk_at(offset);
    // The read's chunks after its first and the file's next ones load meanwhile (read-ahead).
    const auto first = static_cast<uint32_t>(it - chunks.begin());
    const auto next = static_cast<uint32_t>(chunk_at(offset + n - 1) - chunks.begin()) + 1;
    ReadAhead(i, offset, n, e.first_chunk + first, e.first_chunk + next,
              e.first_chunk + static_cast<uint32_t>(chunks.size()));
    size_t done = 0;
    for (; done < n; ++it) {
      const uint32_t chunk_index = e.first_chunk + static_cast<uint32_t>(it - chunks.begin());
      LC_ASSIGN_OR_RETURN(cache::OpenedChunkPtr plain, Chunk(chunk_index));
      const uint64_t at = offset + done - it->file_offset;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, it->size - at));
      std::memcpy(out.data() + done, plain->data() + at, take);
      done += take;
    }
    return done;
  }

  cache::LayerStats stats() const override {
    cache::LayerStats s;
    FillStats(s);
    s.chunk_count = ez_->chunks().size();
    return s;
  }

 private:
  Result<CiphertextRange> ChunkCiphertext(uint32_t i) const override {
    const estargz::ChunkRef& c = ez_->chunks()[i];
    const uint64_t blob_size = ciphertext_->size();
    if (c.compressed_offset > blob_size || c.compressed_size > blob_size - c.compressed_offset ||
        c.compressed_size > kMaxChunkFetchBytes) {
      return Status::Corruption("estargz chunk " + std::to_string(i) +
                                ": its member lies outside the blob or is too large");
    }
    return CiphertextRange{c.compressed_offset, c.compressed_size};
  }

  // Decrypts, inflates and verifies chunk `i` from its member's ciphertext (no side bytes).
  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext,
                                               ByteSpan /*side*/) override {
    const estargz::ChunkRef& c = ez_->chunks()[i];
    WindowSource window(ciphertext_->size(), c.compressed_offset,
                        std::vector<uint8_t>(ciphertext.begin(), ciphertext.end()), nullptr);
    LC_ASSIGN_OR_RETURN(auto plain, estargz::CtrPlaintextView::Create(window, key_.span(), nonce_));
    auto out = std::make_shared<cache::OpenedChunk>(static_cast<size_t>(c.size));
    Status s = estargz::ReadChunk(*plain, c, out->mutable_span());
    if (!s.ok()) return s.WithContext("estargz chunk " + std::to_string(i));
    return cache::OpenedChunkPtr(std::move(out));
  }

  crypto::SecureBuffer key_;
  std::vector<uint8_t> nonce_;
  std::shared_ptr<const estargz::Index> ez_;
  std::shared_ptr<const format::LayerIndex> index_;
  const crypto::SecureBuffer toc_json_;
};

Result<std::unique_ptr<MountedEstargzLayer>> MountedEstargzLayer::Mount(
    const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> ciphertext,
    const image::Descriptor& descriptor, const keywrap::KeyRing& keys,
    const EstargzMountOptions& options, std::unique_ptr<fusefs::FuseMount>* resumed) {
  const std::string what = "ocicrypt-estargz layer " + descriptor.digest;
  auto pin_it = descriptor.annotations.find(std::string(estargz::kAnnotationTocDigest));
  if (pin_it == descriptor.annotations.end()) {
    return Status::InvalidArgument(what + ": no " + std::string(estargz::kAnnotationTocDigest) +
                                   " annotation");
  }
  auto pinned = crypto::ParseOciDigest(pin_it->second);
  if (!pinned.ok()) return pinned.status().WithContext(what + ": TOC digest annotation");
  if (ciphertext->size() != descriptor.size) {
    return Status::Corruption(what + ": the blob is " + std::to_string(ciphertext->size()) +
                              " bytes, the manifest says " + std::to_string(descriptor.size));
  }
  auto cipher = image::UnwrapOcicryptLayer(descriptor, keys);
  if (!cipher.ok()) return cipher.status();

  auto counting = std::make_shared<CountingSource>(std::move(ciphertext));
  const uint64_t blob_size = counting->size();
  const std::string store_key = EstargzStoreKey(descriptor.digest, pin_it->second);
  // Footer and TOC in one ranged request when the descriptor's size hint is right (a hint: a
  // wrong one costs a second request, never a check). A small layer new to this node: the whole
  // blob in that request (CtrLayerOptions::whole_layer_bytes), held for its chunks.
  const bool whole = ReadWholeAtMount(options, blob_size, store_key);
  uint64_t tail = estargz::kFooterSize;
  if (auto h = descriptor.annotations.find(std::string(estargz::kAnnotationTocSize));
      h != descriptor.annotations.end()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(h->second.c_str(), &end, 10);
    if (end != h->second.c_str() && *end == '\0' && v <= (uint64_t{256} << 20)) tail += v;
  }
  tail = whole ? blob_size : std::min(tail, blob_size);
  std::vector<uint8_t> tail_bytes(static_cast<size_t>(tail));
  LC_RETURN_IF_ERROR(counting->ReadAt(blob_size - tail, tail_bytes)
                         .WithContext(what + (whole ? ": reading it whole" : ": footer and TOC")));
  if (whole) counting->Hold(tail_bytes);  // a copy (the window below takes these)
  std::shared_ptr<const estargz::Index> ez;
  crypto::SecureBuffer toc_json;  // names are confidential: wiped when dropped
  {
    WindowSource window(blob_size, blob_size - tail, std::move(tail_bytes), counting.get());
    LC_ASSIGN_OR_RETURN(auto plain,
                        estargz::CtrPlaintextView::Create(window, cipher->key.span(),
                                                          cipher->nonce));
    auto opened = estargz::OpenIndex(*plain, *pinned, options.limits);
    if (!opened.ok()) return opened.status().WithContext(what);
    ez = std::move(*opened);
    // The JSON again, for /stargz.index.json (from the same window: no request when the size
    // hint was right), and checked against the pin again: these are the bytes served.
    std::vector<uint8_t> member(
        static_cast<size_t>(blob_size - estargz::kFooterSize - ez->toc_offset()));
    LC_RETURN_IF_ERROR(plain->ReadAt(ez->toc_offset(), member).WithContext(what + ": TOC"));
    auto json = estargz::ExtractTocJson(member, options.limits);
    if (!json.ok()) return json.status().WithContext(what);
    crypto::ScopedWipe wipe_json(*json);
    if (crypto::Sha256::Of(*json) != *pinned) {
      return Status::AuthFailed(what + ": estargz TOC digest mismatch on a second read");
    }
    toc_json = crypto::SecureBuffer(*json);
  }
  auto index = ToLayerIndex(*ez, blob_size, toc_json.size());
  if (!index.ok()) return index.status().WithContext(what);

  std::unique_ptr<MountedEstargzLayer> layer(new MountedEstargzLayer());
  layer->digest_ = descriptor.digest;
  layer->store_key_ = store_key;
  layer->load_all_ = whole;
  layer->key_name_ = cipher->key_name;  // before the cipher moves below
  layer->blob_size_ = blob_size;
  layer->descriptor_ = descriptor;
  layer->cipher_ = std::make_unique<image::OcicryptLayerCipher>(std::move(*cipher));
  layer->estargz_data_ = std::make_shared<Data>(
      counting, layer->cipher_->key.Clone(), layer->cipher_->nonce, ez, std::move(*index),
      std::move(toc_json), OpenedChunkSlot(options), options.store, layer->store_key_);
  LC_RETURN_IF_ERROR(
      layer->MountAndStart(mountpoint, layer->estargz_data_, options, resumed).WithContext(what));
  return layer;
}

void MountedEstargzLayer::Prefetch(const std::function<bool()>& stopped) {
  Data& data = *estargz_data_;
  // Every marked file's chunks, claimed at once and read in as few requests as the blob allows
  // (eStargz puts the marked files first, before the landmark: one run), not one request per
  // chunk. Errors are left to the readers (they see them again, and the verification too).
  // One range per marked file, merged, then expanded (at most the chunk count), as the indexed
  // format's (cache/chunk_ranges.h), whatever the TOC makes the files share.
  std::vector<format::ChunkRange> ranges;
  ranges.reserve(data.ez().prefetch_entries().size());
  for (uint32_t entry : data.ez().prefetch_entries()) {
    const estargz::Entry& e = data.ez().entries()[entry];
    ranges.push_back({e.first_chunk, e.chunk_count});
  }
  const std::vector<uint32_t> chunks =
      cache::ChunksOfRanges<uint32_t>(std::move(ranges), data.ez().chunks().size());
  if (!chunks.empty()) (void)data.LoadRuns(chunks, stopped);
}

Result<std::string> MountedEstargzLayer::VerifyContent(InputStream& plain,
                                                       LargeReadStream& /*ciphertext*/) {
  // The decrypting stream's end (HMAC, blob and plaintext digests) is reached by the gzip
  // reader: it reads until its input ends, to know no member follows. The decompressed tar is
  // hashed on the way.
  auto tar_stream = compress::NewGzipInputStream(plain);
  crypto::Sha256 sha;
  // The tar is parsed on the way, and each of its entries must be what the mount serves for it
  // (the TOC's, and /stargz.index.json's fixed metadata last): an eager node unpacks the tar's
  // headers, the lazy view shows the TOC.
  tar::TarReader reader(*tar_stream, [&sha](ByteSpan raw) {
    sha.Update(raw);
    return Status::Ok();
  });
  const auto& served = estargz_data_->index().entries();
  const estargz::Index& ez = estargz_data_->ez();
  // Tar errors name the entry; the layer's names are confidential (they would reach the
  // quarantine record, Check's refusals and containerd's events): by number only.
  auto redacted = [&reader](const Status& s, size_t k) {
    return Status(s.code(), "the tar stream does not parse at entry " + std::to_string(k) +
                                " (" + std::string(StatusCodeName(s.code())) + " at tar offset " +
                                std::to_string(reader.offset()) + ")");
  };
  std::vector<uint8_t> piece_buffer(size_t{64} << 10);
  // The next `size` bytes of the current entry's data, hashed: what the mount serves for that
  // range must be these bytes (the diff_id covers them; an eager node unpacks them).
  auto hash_data = [&](uint64_t size, size_t k) -> Result<crypto::Sha256Digest> {
    crypto::Sha256 h;
    while (size > 0) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(size, piece_buffer.size()));
      auto n = reader.ReadData(MutableByteSpan(piece_buffer.data(), want));
      if (!n.ok()) return redacted(n.status(), k);
      if (*n == 0) {
        return Status::Corruption("the TOC does not match the tar stream: entry " +
                                  std::to_string(k) + " has less data than its chunks");
      }
      h.Update(ByteSpan(piece_buffer.data(), *n));
      size -= *n;
    }
    return h.Finish();
  };
  size_t k = 0;
  while (true) {
    auto next = reader.Next();
    if (!next.ok()) return redacted(next.status(), k);
    std::optional<tar::Entry>& e = *next;
    if (!e) break;
    if (k >= served.size()) {
      return Status::Corruption("the TOC does not match the tar stream: the tar has more entries");
    }
    auto got = format::TocEntryFromTar(*e);
    if (!got.ok()) return redacted(got.status(), k);
    LC_RETURN_IF_ERROR(SameMetadata(served[k].Materialize(), *got, k));
    // The data too: each chunk the mount serves is the bytes at that place in the tar, and the
    // synthesized /stargz.index.json is the tar's last file, the pinned TOC.
    if (k < ez.entries().size()) {
      for (const estargz::ChunkRef& c : ez.ChunksOf(static_cast<uint32_t>(k))) {
        LC_ASSIGN_OR_RETURN(crypto::Sha256Digest d, hash_data(c.size, k));
        if (d != c.digest) {
          return Status::Corruption("the TOC does not match the tar stream: entry " +
                                    std::to_string(k) + ": a chunk's bytes are not the tar's");
        }
      }
    } else {
      LC_ASSIGN_OR_RETURN(crypto::Sha256Digest d, hash_data(e->size, k));
      if (d != ez.toc_digest()) {
        return Status::Corruption("the TOC does not match the tar stream: its last file is not "
                                  "the pinned TOC");
      }
    }
    auto rest = reader.ReadData(MutableByteSpan(piece_buffer.data(), 1));
    if (!rest.ok()) return redacted(rest.status(), k);
    if (*rest != 0) {
      return Status::Corruption("the TOC does not match the tar stream: entry " +
                                std::to_string(k) + " has more data than its chunks");
    }
    ++k;
  }
  if (k != served.size()) {
    return Status::Corruption("the TOC does not match the tar stream: the TOC has more entries");
  }
  // Nothing but zeros after the end-of-archive marker (as lazycrypt's GCM format).
  LC_RETURN_IF_ERROR(reader.DrainZerosToEnd().status());
  return crypto::OciDigest(sha.Finish());
}

MountedEstargzLayer::~MountedEstargzLayer() {
  StopBackground();  // before the members its thread uses go
}

}  // namespace lazycrypt::lazylayer
