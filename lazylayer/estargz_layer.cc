#include "lazylayer/estargz_layer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <future>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

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
// The verification reads the blob in pieces of this size (one ranged request each).
constexpr size_t kVerifyReadBytes = size_t{4} << 20;

// Counts what is read from the blob source (the layer's stats).
class CountingSource final : public BlobSource {
 public:
  explicit CountingSource(std::shared_ptr<BlobSource> inner) : inner_(std::move(inner)) {}
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    const auto start = std::chrono::steady_clock::now();
    Status s = inner_->ReadAt(offset, out);
    nanos_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - start)
                         .count(),
                     std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
    if (s.ok()) {
      bytes_.fetch_add(out.size(), std::memory_order_relaxed);
    } else {
      errors_.fetch_add(1, std::memory_order_relaxed);
    }
    return s;
  }
  BlobSource& inner() { return *inner_; }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  uint64_t nanos() const { return nanos_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<BlobSource> inner_;
  std::atomic<uint64_t> bytes_{0}, requests_{0}, errors_{0}, nanos_{0};
};

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

// Reads a BlobSource from start to end in pieces of `piece_bytes` (one ranged request each);
// before each request `before_read(bytes)` may wait (yield to readers, pace the rate) and
// returns false to stop (Unavailable "stopped").
class LargeReadStream final : public InputStream {
 public:
  LargeReadStream(BlobSource& blob, size_t piece_bytes, std::function<bool(size_t)> before_read)
      : blob_(blob), before_read_(std::move(before_read)), buffer_(piece_bytes) {}
  Result<size_t> Read(MutableByteSpan out) override {
    if (pos_ == filled_) {
      if (offset_ >= blob_.size()) return size_t{0};
      const size_t want =
          static_cast<size_t>(std::min<uint64_t>(buffer_.size(), blob_.size() - offset_));
      if (!before_read_(want)) return Status::Unavailable("stopped");
      LC_RETURN_IF_ERROR(blob_.ReadAt(offset_, MutableByteSpan(buffer_).first(want)));
      offset_ += want;
      pos_ = 0;
      filled_ = want;
    }
    const size_t n = std::min(out.size(), filled_ - pos_);
    std::memcpy(out.data(), buffer_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  BlobSource& blob_;
  std::function<bool(size_t)> before_read_;
  std::vector<uint8_t> buffer_;
  uint64_t offset_ = 0;
  size_t pos_ = 0, filled_ = 0;
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

namespace {
// The layer's part of the opened-chunk memory: the node-wide budget when the daemon gives one,
// else a cache of its own of opened_chunk_cache_bytes.
std::unique_ptr<cache::OpenedChunkCache::LayerSlot> OpenedChunkSlot(
    const EstargzMountOptions& options) {
  std::shared_ptr<cache::OpenedChunkCache> opened = options.opened_cache;
  if (!opened) {
    opened = cache::OpenedChunkCache::Create({.budget_bytes = options.opened_chunk_cache_bytes});
  }
  return opened->OpenSlot();
}
}  // namespace

// The layer's data for the FUSE file system: chunks fetched by ciphertext range, decrypted with
// CTR, inflated and verified (estargz::ReadChunk), kept in an LRU of opened chunks; concurrent
// readers of one chunk share one fetch.
class MountedEstargzLayer::Data final : public cache::LayerData {
 public:
  Data(std::shared_ptr<CountingSource> ciphertext, crypto::SecureBuffer key,
       std::vector<uint8_t> nonce, std::shared_ptr<const estargz::Index> ez,
       std::shared_ptr<const format::LayerIndex> index, crypto::SecureBuffer toc_json,
       std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened, cache::ChunkStore* store,
       std::string store_key)
      : ciphertext_(std::move(ciphertext)),
        store_(store),
        store_key_(std::move(store_key)),
        key_(std::move(key)),
        nonce_(std::move(nonce)),
        ez_(std::move(ez)),
        index_(std::move(index)),
        toc_json_(std::move(toc_json)),
        opened_(std::move(opened)) {}

  const format::LayerIndex& index() const override { return *index_; }
  const estargz::Index& ez() const { return *ez_; }
  CountingSource& ciphertext() { return *ciphertext_; }
  std::span<const uint8_t> key() const { return key_.span(); }
  const std::vector<uint8_t>& nonce() const { return nonce_; }

  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override {
    if (quarantined()) {
      quarantined_reads_.fetch_add(1, std::memory_order_relaxed);
      return Status::AuthFailed("layer quarantined: it failed its verification");
    }
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
    auto it = std::upper_bound(chunks.begin(), chunks.end(), offset,
                               [](uint64_t off, const estargz::ChunkRef& c) {
                                 return off < c.file_offset;
                               });
    size_t done = 0;
    for (--it; done < n; ++it) {
      const uint32_t chunk_index = e.first_chunk + static_cast<uint32_t>(it - chunks.begin());
      LC_ASSIGN_OR_RETURN(cache::OpenedChunkPtr plain, Chunk(chunk_index));
      const uint64_t at = offset + done - it->file_offset;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, it->size - at));
      std::memcpy(out.data() + done, plain->data() + at, take);
      done += take;
    }
    return done;
  }

  // The opened chunk `i` (cached, or fetched once however many readers ask).
  Result<cache::OpenedChunkPtr> Chunk(uint32_t i) {
    using Opened = Result<cache::OpenedChunkPtr>;
    std::promise<Opened> promise;
    std::shared_future<Opened> waiting;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cache::OpenedChunkPtr hit = opened_->Lookup(i)) {
        cache_hits_.fetch_add(1, std::memory_order_relaxed);
        return hit;
      }
      if (auto f = inflight_.find(i); f != inflight_.end()) {
        waiting = f->second;
      } else {
        inflight_[i] = promise.get_future().share();
      }
    }
    if (waiting.valid()) {
      cache_hits_.fetch_add(1, std::memory_order_relaxed);
      return waiting.get();
    }
    cache_misses_.fetch_add(1, std::memory_order_relaxed);
    Opened opened = Open(i);
    // Kept (node-wide budget) before the flight ends, so a reader finds it in one or the other;
    // outside mu_: evicted chunks of any layer are wiped on this thread.
    if (opened.ok()) (void)opened_->Insert(i, *opened);
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_.erase(i);
    }
    promise.set_value(opened);
    return opened;
  }

  cache::LayerStats stats() const override {
    cache::LayerStats s;
    s.blob_bytes_fetched = ciphertext_->bytes();
    s.fetch_requests = ciphertext_->requests();
    s.fetch_errors = ciphertext_->errors();
    s.fetch_nanos = ciphertext_->nanos();
    s.chunks_fetched = chunks_fetched_.load(std::memory_order_relaxed);
    s.chunks_opened = chunks_opened_.load(std::memory_order_relaxed);
    s.cache_hits = cache_hits_.load(std::memory_order_relaxed);
    s.cache_misses = cache_misses_.load(std::memory_order_relaxed);
    s.auth_failures = auth_failures_.load(std::memory_order_relaxed);
    s.chunk_count = ez_->chunks().size();
    s.quarantined_reads = quarantined_reads_.load(std::memory_order_relaxed);
    s.disk_corrupt = disk_corrupt_.load(std::memory_order_relaxed);
    if (store_ != nullptr) {
      s.chunks_present = store_->ChunksPresent(store_key_);
      s.bytes_present = store_->BytesPresent(store_key_);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      s.memory_cache_bytes = opened_->bytes_held();
    }
    switch (verification_.load()) {
      case Verification::kPending: s.verification = verify_on_ ? cache::VerificationState::kPending
                                                               : cache::VerificationState::kOff;
        break;
      case Verification::kVerified: s.verification = cache::VerificationState::kVerified; break;
      case Verification::kFailed:
        s.verification = cache::VerificationState::kFailed;
        s.verification_failures = 1;
        break;
    }
    return s;
  }
  bool quarantined() const override { return verification_.load() == Verification::kFailed; }

  void set_verify_on() { verify_on_ = true; }
  // Waits until no read is fetching a chunk, or for `at_most`; false when none is fetching.
  bool WaitWhileFetching(std::chrono::milliseconds at_most) {
    std::unique_lock<std::mutex> lock(fetch_mu_);
    if (fetches_ == 0) return false;
    fetch_cv_.wait_for(lock, at_most, [&] { return fetches_ == 0; });
    return true;
  }
  void Finish(Verification v, Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      verification_status_ = std::move(status);
    }
    verification_.store(v);
  }
  Verification verification() const { return verification_.load(); }
  Status verification_status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return verification_status_;
  }

 private:
  Result<cache::OpenedChunkPtr> Open(uint32_t i) {
    const estargz::ChunkRef& c = ez_->chunks()[i];
    const uint64_t blob_size = ciphertext_->size();
    if (c.compressed_offset > blob_size || c.compressed_size > blob_size - c.compressed_offset ||
        c.compressed_size > kMaxChunkFetchBytes) {
      return Status::Corruption("estargz chunk " + std::to_string(i) +
                                ": its member lies outside the blob or is too large");
    }
    std::vector<uint8_t> ciphertext(static_cast<size_t>(c.compressed_size));
    // The disk store first (ciphertext as fetched; checked below exactly as fresh bytes are).
    if (store_ != nullptr) {
      auto got = store_->Get(store_key_, i, c.compressed_offset, ciphertext);
      if (got.ok() && *got) {
        auto opened = OpenCiphertext(i, ciphertext);
        if (opened.ok()) return opened;
        // Damaged on disk (or not this blob's): dropped and fetched again.
        disk_corrupt_.fetch_add(1, std::memory_order_relaxed);
        (void)store_->Drop(store_key_, i);
      }
    }
    {
      std::lock_guard<std::mutex> lock(fetch_mu_);
      ++fetches_;
    }
    Status fetched = ciphertext_->ReadAt(c.compressed_offset, ciphertext);
    {
      std::lock_guard<std::mutex> lock(fetch_mu_);
      --fetches_;
    }
    fetch_cv_.notify_all();
    LC_RETURN_IF_ERROR(fetched.WithContext("estargz chunk " + std::to_string(i)));
    chunks_fetched_.fetch_add(1, std::memory_order_relaxed);
    auto opened = OpenCiphertext(i, ciphertext);
    if (!opened.ok()) {
      // A chunk that does not inflate or hash to its pinned digest: EIO for its readers.
      auth_failures_.fetch_add(1, std::memory_order_relaxed);
      return opened;
    }
    // Kept only once verified (a failure to store costs a later fetch, nothing else).
    if (store_ != nullptr) (void)store_->Put(store_key_, i, c.compressed_offset, ciphertext);
    return opened;
  }

  // Decrypts, inflates and verifies chunk `i` from its member's ciphertext.
  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext) {
    const estargz::ChunkRef& c = ez_->chunks()[i];
    WindowSource window(ciphertext_->size(), c.compressed_offset,
                        std::vector<uint8_t>(ciphertext.begin(), ciphertext.end()), nullptr);
    LC_ASSIGN_OR_RETURN(auto plain, estargz::CtrPlaintextView::Create(window, key_.span(), nonce_));
    auto out = std::make_shared<cache::OpenedChunk>(static_cast<size_t>(c.size));
    Status s = estargz::ReadChunk(*plain, c, out->mutable_span());
    if (!s.ok()) return s.WithContext("estargz chunk " + std::to_string(i));
    chunks_opened_.fetch_add(1, std::memory_order_relaxed);
    return cache::OpenedChunkPtr(std::move(out));
  }

  std::shared_ptr<CountingSource> ciphertext_;
  cache::ChunkStore* store_ = nullptr;  // may be null; outlives this
  std::string store_key_;
  crypto::SecureBuffer key_;
  std::vector<uint8_t> nonce_;
  std::shared_ptr<const estargz::Index> ez_;
  std::shared_ptr<const format::LayerIndex> index_;
  const crypto::SecureBuffer toc_json_;
  // This layer's part of the opened-chunk memory (the node-wide budget, or one of its own).
  const std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened_;

  mutable std::mutex mu_;
  std::unordered_map<uint32_t, std::shared_future<Result<cache::OpenedChunkPtr>>> inflight_;
  Status verification_status_ = Status::Unavailable("verification pending");
  // Chunk fetches running now (the verification sends no request meanwhile).
  std::mutex fetch_mu_;
  std::condition_variable fetch_cv_;
  int fetches_ = 0;

  std::atomic<Verification> verification_{Verification::kPending};
  std::atomic<bool> verify_on_{false};
  std::atomic<uint64_t> chunks_fetched_{0}, chunks_opened_{0}, cache_hits_{0}, cache_misses_{0},
      auth_failures_{0}, quarantined_reads_{0}, disk_corrupt_{0};
};

struct MountedEstargzLayer::Background {
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  std::thread thread;
  // Sleeps up to `ms` or until stopped; true when stopped.
  bool SleepFor(std::chrono::milliseconds ms) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, ms, [&] { return stop.load(); });
  }
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
  // Footer and TOC in one ranged request when the descriptor's size hint is right (a hint: a
  // wrong one costs a second request, never a check).
  uint64_t tail = estargz::kFooterSize;
  if (auto h = descriptor.annotations.find(std::string(estargz::kAnnotationTocSize));
      h != descriptor.annotations.end()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(h->second.c_str(), &end, 10);
    if (end != h->second.c_str() && *end == '\0' && v <= (uint64_t{256} << 20)) tail += v;
  }
  tail = std::min(tail, blob_size);
  std::vector<uint8_t> tail_bytes(static_cast<size_t>(tail));
  LC_RETURN_IF_ERROR(
      counting->ReadAt(blob_size - tail, tail_bytes).WithContext(what + ": footer and TOC"));
  std::shared_ptr<const estargz::Index> ez;
  crypto::SecureBuffer toc_json;  // names are confidential: wiped when dropped
  {
    WindowSource window(blob_size, blob_size - tail, std::move(tail_bytes), counting.get());
    LC_ASSIGN_OR_RETURN(auto plain,
                        estargz::CtrPlaintextView::Create(window, cipher->key.span(),
                                                          cipher->nonce));
    auto opened = estargz::OpenIndex(*plain, *pinned);
    if (!opened.ok()) return opened.status().WithContext(what);
    ez = std::move(*opened);
    // The JSON again, for /stargz.index.json (from the same window: no request when the size
    // hint was right), and checked against the pin again: these are the bytes served.
    std::vector<uint8_t> member(
        static_cast<size_t>(blob_size - estargz::kFooterSize - ez->toc_offset()));
    LC_RETURN_IF_ERROR(plain->ReadAt(ez->toc_offset(), member).WithContext(what + ": TOC"));
    auto json = estargz::ExtractTocJson(member);
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
  layer->store_key_ = EstargzStoreKey(descriptor.digest, pin_it->second);
  layer->key_name_ = cipher->key_name;  // before the cipher moves below
  layer->blob_size_ = blob_size;
  layer->descriptor_ = descriptor;
  layer->cipher_ = std::make_unique<image::OcicryptLayerCipher>(std::move(*cipher));
  layer->data_ = std::make_shared<Data>(
      counting, layer->cipher_->key.Clone(), layer->cipher_->nonce, ez, std::move(*index),
      std::move(toc_json), OpenedChunkSlot(options), options.store, layer->store_key_);
  if (options.verify) layer->data_->set_verify_on();
  fusefs::MountOptions mount_options = options.mount;
  if (mount_options.layer_name == "layer") mount_options.layer_name = "layer " + descriptor.digest;
  if (resumed != nullptr && *resumed != nullptr) {
    LC_RETURN_IF_ERROR((*resumed)->Provide(layer->data_).WithContext(what));
    layer->mount_ = std::move(*resumed);
  } else {
    auto mount = fusefs::FuseMount::Mount(mountpoint, layer->data_, mount_options);
    if (!mount.ok()) return mount.status().WithContext(what);
    layer->mount_ = std::move(*mount);
  }
  if (options.prefetch || options.verify) {
    layer->background_ = std::make_unique<Background>();
    MountedEstargzLayer* self = layer.get();
    layer->background_->thread = std::thread([self, options] { self->RunBackground(options); });
  }
  return layer;
}

void MountedEstargzLayer::RunBackground(EstargzMountOptions options) {
  Background& bg = *background_;
  Data& data = *data_;
  if (options.prefetch) {
    // Errors are left to the readers (they see them again, and the verification too).
    for (uint32_t entry : data.ez().prefetch_entries()) {
      const estargz::Entry& e = data.ez().entries()[entry];
      for (uint32_t c = 0; c < e.chunk_count && !bg.stop.load(); ++c) {
        (void)data.Chunk(e.first_chunk + c);
      }
    }
  }
  if (!options.verify) return;
  if (options.verify_start_delay_ms > 0 &&
      bg.SleepFor(std::chrono::milliseconds(options.verify_start_delay_ms))) {
    return;
  }
  // Linux: the nice value is per thread (as the GCM format's verification). Failure only means
  // normal priority.
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  auto backoff = std::chrono::milliseconds(500);
  Status result;
  while (true) {
    result = VerifyOnce(options);
    if (bg.stop.load()) return;  // stopped mid-read: no verdict
    const StatusCode code = result.code();
    const bool transient = code == StatusCode::kUnavailable ||
                           code == StatusCode::kDeadlineExceeded || code == StatusCode::kIoError;
    if (!transient) break;
    // The source is failing: try again from the start (it never becomes verified without
    // hashing every byte).
    if (bg.SleepFor(backoff)) return;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
  }
  if (result.ok()) {
    data.Finish(Verification::kVerified, Status::Ok());
  } else {
    result = Status(result.code(), "layer " + digest_ + ": " + result.message());
    data.Finish(Verification::kFailed, result);
    // The caller first (it records the quarantine on disk), then the kernel's cached pages.
    if (options.on_verified) options.on_verified(result);
    // Once per layer; the message names the layer, never a file.
    std::fprintf(stderr,
                 "lazycrypt: verification failed, layer quarantined (every read of its files "
                 "fails with EIO): %s\n",
                 result.message().c_str());
    std::fflush(stderr);
    mount_->InvalidateFileData();
    return;
  }
  if (options.on_verified) options.on_verified(result);
}

Status MountedEstargzLayer::VerifyOnce(const EstargzMountOptions& options) {
  // The whole ciphertext once: its digest, the HMAC and privopts' plaintext digest are checked by
  // the decrypting stream at its end (which the gzip reader reaches: it reads until its input
  // ends, to know no member follows); the decompressed tar is hashed on the way.
  // Reads yield to chunk fetches (no request while one runs) and keep to the rate, if any.
  const uint64_t rate = options.verify_rate_bytes_per_sec;
  const size_t piece = rate == 0 ? kVerifyReadBytes
                                 : static_cast<size_t>(std::clamp<uint64_t>(
                                       rate / 4, uint64_t{64} << 10, kVerifyReadBytes));
  const auto start = std::chrono::steady_clock::now();
  uint64_t sent = 0;
  Background& bg = *background_;
  Data& data = *data_;
  LargeReadStream in(data.ciphertext().inner(), piece, [&](size_t bytes) {
    while (!bg.stop.load() && data.WaitWhileFetching(std::chrono::milliseconds(50))) {
    }
    if (rate > 0) {
      const auto due = start + std::chrono::microseconds(sent * 1000000 / rate);
      const auto now = std::chrono::steady_clock::now();
      if (due > now &&
          bg.SleepFor(std::chrono::duration_cast<std::chrono::milliseconds>(due - now))) {
        return false;
      }
    }
    sent += bytes;
    return !bg.stop.load();
  });
  LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, descriptor_, *cipher_));
  auto tar_stream = compress::NewGzipInputStream(*plain);
  crypto::Sha256 sha;
  // The tar is parsed on the way, and each of its entries must be what the mount serves for it
  // (the TOC's, and /stargz.index.json's fixed metadata last): an eager node unpacks the tar's
  // headers, the lazy view shows the TOC.
  tar::TarReader reader(*tar_stream, [&sha](ByteSpan raw) {
    sha.Update(raw);
    return Status::Ok();
  });
  const auto& served = data_->index().entries();
  const estargz::Index& ez = data_->ez();
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
  std::vector<uint8_t> buffer(size_t{64} << 10);
  // Anything the gzip reader left unread is read, so the decrypting stream's checks run.
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, plain->Read(buffer));
    if (n == 0) break;
    return Status::Corruption("bytes after the last gzip member");
  }
  const std::string diff_id = crypto::OciDigest(sha.Finish());
  if (options.check_diff_id) LC_RETURN_IF_ERROR(options.check_diff_id(diff_id));
  return Status::Ok();
}

void MountedEstargzLayer::StopBackground() {
  if (!background_) return;
  {
    std::lock_guard<std::mutex> lock(background_->mu);
    background_->stop.store(true);
  }
  background_->cv.notify_all();
  if (background_->thread.joinable()) background_->thread.join();
}

MountedEstargzLayer::~MountedEstargzLayer() {
  StopBackground();
  mount_.reset();  // unmounts, unless left to the next daemon
}

Status MountedEstargzLayer::Unmount() { return mount_->Unmount(); }

void MountedEstargzLayer::LeaveMounted() {
  StopBackground();
  mount_->LeaveMounted();
}

uint64_t MountedEstargzLayer::chunk_count() const { return data_->ez().chunks().size(); }

const std::string& MountedEstargzLayer::store_key() const { return store_key_; }

cache::LayerStats MountedEstargzLayer::stats() const { return data_->stats(); }

Verification MountedEstargzLayer::verification() const { return data_->verification(); }

Status MountedEstargzLayer::verification_status() const { return data_->verification_status(); }

}  // namespace lazycrypt::lazylayer
