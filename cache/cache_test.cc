// CachedLayer over a real lazycrypt blob (format::WriteLayer) and a fake BlobSource that counts,
// delays, fails and corrupts: correctness of random reads, one fetch per chunk under concurrency,
// coalescing, read-ahead, the disk store across restarts, eviction, corrupt and tampered records,
// uncached errors, prefetch, background fetch, and that no plaintext reaches the store.
#include "cache/cached_layer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cache/chunk_store.h"
#include "cache/multi_range_source.h"
#include "cache/timed_source.h"
#include "common/file_io.h"
#include "format/layer_index.h"
#include "format/writer.h"
#include "tar/tar_writer.h"
#include "tests/test_util.h"

namespace lazycrypt::cache {
namespace {

using lazycrypt::testing::TempDir;
constexpr size_t kChunk = format::kMinChunkSizeBytes;  // 64 KiB
const std::string kMarker = "PLAINTEXT-MARKER-7f3a9c2e-lazycrypt-cache-test";

// A BlobSource over the blob's bytes that records every ReadAt and can be slowed down, made to
// fail a number of times, or made to serve one flipped byte.
class FakeSource final : public BlobSource {
 public:
  explicit FakeSource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    int delay_ms;
    bool fail = false;
    {
      std::lock_guard lock(mu_);
      calls_.push_back({offset, out.size()});
      delay_ms = delay_ms_;
      if (fail_next_ > 0) {
        --fail_next_;
        fail = true;
      }
    }
    if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    {
      std::unique_lock lock(mu_);
      held_cv_.wait(lock, [&] { return !held_; });
    }
    if (fail) return Status::Unavailable("fake source: injected failure");
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return Status::Corruption("fake source: read past the end");
    }
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    std::lock_guard lock(mu_);
    if (corrupt_at_ >= offset && corrupt_at_ < offset + out.size()) out[corrupt_at_ - offset] ^= 0x40;
    return Status::Ok();
  }

  void set_delay_ms(int ms) { std::lock_guard l(mu_); delay_ms_ = ms; }
  // While held, every ReadAt blocks (after being recorded) until released.
  void set_held(bool held) {
    {
      std::lock_guard l(mu_);
      held_ = held;
    }
    held_cv_.notify_all();
  }
  void fail_next(int n) { std::lock_guard l(mu_); fail_next_ = n; }
  void corrupt_at(uint64_t offset) { std::lock_guard l(mu_); corrupt_at_ = offset; }
  std::vector<std::pair<uint64_t, uint64_t>> calls() const { std::lock_guard l(mu_); return calls_; }
  size_t call_count() const { std::lock_guard l(mu_); return calls_.size(); }
  // How many requests covered blob bytes [begin, end) in part.
  size_t CallsOverlapping(uint64_t begin, uint64_t end) const {
    std::lock_guard l(mu_);
    size_t n = 0;
    for (auto [o, len] : calls_) n += (o < end && begin < o + len) ? 1 : 0;
    return n;
  }

 private:
  const std::vector<uint8_t> bytes_;
  mutable std::mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> calls_;
  int delay_ms_ = 0;
  bool held_ = false;
  std::condition_variable held_cv_;
  int fail_next_ = 0;
  uint64_t corrupt_at_ = UINT64_MAX;
};

// A FakeSource that also reads several ranges at once, counting those calls separately.
class FakeMultiSource final : public MultiRangeBlobSource {
 public:
  explicit FakeMultiSource(std::vector<uint8_t> bytes) : single_(std::move(bytes)) {}
  uint64_t size() const override { return single_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override { return single_.ReadAt(offset, out); }
  Status ReadRanges(std::span<const RangeRead> ranges) override {
    {
      std::lock_guard lock(mu_);
      multi_calls_.emplace_back();
      for (const auto& r : ranges) multi_calls_.back().push_back({r.offset, r.out.size()});
    }
    for (const auto& r : ranges) {
      Status s = single_.ReadAt(r.offset, r.out);
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }
  FakeSource& single() { return single_; }
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> multi_calls() const {
    std::lock_guard lock(mu_);
    return multi_calls_;
  }

 private:
  FakeSource single_;  // its calls() also record the ranges read for ReadRanges
  mutable std::mutex mu_;
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> multi_calls_;
};

std::vector<uint8_t> Random(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

struct TestLayer {
  std::vector<uint8_t> blob;
  crypto::Sha256Digest toc_digest{};
  std::map<std::string, std::vector<uint8_t>> files;  // name as in the index → data
};

// A layer with: "a" (5 chunks), "b" (2 chunks), "big" (20 chunks), "marker" (text with a unique
// marker, compressible), in that order in the blob. Chunks never straddle files here because
// every file is a multiple of the chunk size or followed by a large one — the test does not rely
// on it except where said.
const TestLayer& Layer() {
  static const TestLayer* layer = [] {
    auto* l = new TestLayer;
    l->files["a"] = Random(5 * kChunk - 1000, 1);
    l->files["b"] = Random(2 * kChunk - 700, 2);
    l->files["big"] = Random(20 * kChunk + 333, 3);
    std::string text;
    while (text.size() < 200 * 1024) text += kMarker + " line " + std::to_string(text.size()) + "\n";
    l->files["marker"] = std::vector<uint8_t>(text.begin(), text.end());
    MemoryOutputStream tar;
    tar::TarWriter w(tar);
    for (const char* name : {"a", "b", "big", "marker"}) {
      tar::Entry e;
      e.name = name;
      e.type = tar::EntryType::kRegular;
      e.mode = 0644;
      e.size = l->files[name].size();
      EXPECT_TRUE(w.AppendEntry(e, l->files[name]).ok());
    }
    EXPECT_TRUE(w.Finish().ok());
    MemoryInputStream in(tar.bytes());
    MemoryOutputStream out;
    format::WriterOptions o;
    o.chunk_size_bytes = kChunk;
    o.threads = 1;
    o.prefetch_paths = {"b", "marker"};
    auto key = format::LayerKey(std::vector<uint8_t>(32, 0x5a));
    auto r = format::WriteLayer(in, key, out, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    l->blob = out.Take();
    l->toc_digest = r->toc_digest;
    return l;
  }();
  return *layer;
}

format::LayerKey Key() { return format::LayerKey(std::vector<uint8_t>(32, 0x5a)); }

class CachedLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = std::make_shared<FakeSource>(Layer().blob);
    MemoryBlobSource mem(Layer().blob);
    auto index = format::LayerIndex::Open(mem, Key(), Layer().toc_digest);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    index_ = *index;
    auto opener = format::ChunkOpener::Create(Key(), index_->header());
    ASSERT_TRUE(opener.ok());
    opener_ = *opener;
  }

  std::unique_ptr<ChunkStore> OpenStore(uint64_t cap = uint64_t{1} << 30) {
    ChunkStoreOptions o;
    o.capacity_bytes = cap;
    auto s = ChunkStore::Open(tmp_ / "chunks", o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  std::shared_ptr<CachedLayer> Make(ChunkStore* store, CachedLayerOptions o = {},
                                    std::shared_ptr<BlobSource> source = nullptr) {
    auto l = CachedLayer::Create(index_, opener_, source ? source : source_, store, o);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return l.ok() ? *l : nullptr;
  }

  format::EntryView E(const std::string& name) {
    auto e = index_->Find(name);
    EXPECT_TRUE(e) << name;
    return e.value_or(format::EntryView());
  }

  // Reads [offset, offset+len) of a file and checks it against the original.
  void ExpectRead(LayerData& layer, const std::string& name, uint64_t offset, size_t len) {
    std::vector<uint8_t> out(len, 0xEE);
    auto n = layer.ReadFile(E(name), offset, out);
    ASSERT_TRUE(n.ok()) << name << "@" << offset << ": " << n.status().ToString();
    const auto& data = Layer().files.at(name);
    const size_t want = offset >= data.size() ? 0 : std::min<size_t>(len, data.size() - offset);
    ASSERT_EQ(*n, want);
    ASSERT_TRUE(std::equal(out.begin(), out.begin() + want, data.begin() + offset))
        << name << "@" << offset << "+" << len;
  }

  // Chunks holding some file's data (ReadAll touches exactly these).
  uint64_t FileChunks() {
    std::set<uint64_t> all;
    for (const auto& [name, data] : Layer().files) {
      auto r = index_->ChunksForRange(E(name), 0, data.size());
      for (uint64_t i = r.first; i < r.first + r.count; ++i) all.insert(i);
    }
    return all.size();
  }

  void ReadAll(LayerData& layer) {
    for (const auto& [name, data] : Layer().files) ExpectRead(layer, name, 0, data.size());
  }

  // Blob bytes of the records covering a file range.
  std::pair<uint64_t, uint64_t> Records(const std::string& name, uint64_t offset, uint64_t len) {
    auto r = index_->ChunksForRange(E(name), offset, len);
    return {index_->RecordsBegin(r), index_->RecordsEnd(r)};
  }

  TempDir tmp_{"cache-test"};
  std::shared_ptr<FakeSource> source_;
  std::shared_ptr<const format::LayerIndex> index_;
  std::shared_ptr<const format::ChunkOpener> opener_;
};

TEST_F(CachedLayerTest, RandomRangesMatchTheOriginalWithAndWithoutStore) {
  auto store = OpenStore();
  CachedLayerOptions small;
  small.memory_cache_bytes = 3 * kChunk;  // force memory evictions and disk hits
  for (ChunkStore* s : {static_cast<ChunkStore*>(nullptr), store.get()}) {
    auto layer = Make(s, small);
    ASSERT_TRUE(layer);
    std::mt19937 rng(42);
    std::vector<std::string> names = {"a", "b", "big", "marker"};
    for (int i = 0; i < 300; ++i) {
      const std::string& name = names[rng() % names.size()];
      const size_t size = Layer().files.at(name).size();
      const uint64_t off = rng() % (size + 100);
      const size_t len = 1 + rng() % (3 * kChunk);
      ExpectRead(*layer, name, off, len);
    }
    ReadAll(*layer);
  }
  // Past the end and empty buffers.
  auto layer = Make(nullptr);
  std::vector<uint8_t> buf(10);
  EXPECT_EQ(*layer->ReadFile(E("a"), Layer().files.at("a").size(), buf), 0u);
  EXPECT_EQ(*layer->ReadFile(E("a"), 0, MutableByteSpan()), 0u);
}

TEST_F(CachedLayerTest, RejectsForeignEntriesAndMismatchedParts) {
  auto layer = Make(nullptr);
  // A view of another index's entries (the same layer opened twice), and no entry at all.
  MemoryBlobSource again(Layer().blob);
  auto other = format::LayerIndex::Open(again, Key(), Layer().toc_digest);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  std::vector<uint8_t> buf(10);
  EXPECT_EQ(layer->ReadFile(*(*other)->Find("a"), 0, buf).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(layer->ReadFile(format::EntryView(), 0, buf).status().code(),
            StatusCode::kInvalidArgument);
  auto short_source = std::make_shared<MemoryBlobSource>(std::vector<uint8_t>(100));
  EXPECT_EQ(CachedLayer::Create(index_, opener_, short_source, nullptr, {}).status().code(),
            StatusCode::kFailedPrecondition);
  CachedLayerOptions bad_key;
  bad_key.store_key = "../escape";
  EXPECT_EQ(CachedLayer::Create(index_, opener_, source_, nullptr, bad_key).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(CachedLayerTest, AdjacentMissesAreOneReadAt) {
  auto layer = Make(nullptr);
  // Bytes from inside chunk 0 of "a" to inside its last chunk: 5 missing chunks.
  const uint64_t off = 100, len = Layer().files.at("a").size() - 200;
  ASSERT_EQ(index_->ChunksForRange(E("a"), off, len).count, 5u);
  ExpectRead(*layer, "a", off, len);
  auto calls = source_->calls();
  ASSERT_EQ(calls.size(), 1u);
  auto [begin, end] = Records("a", off, len);
  EXPECT_EQ(calls[0].first, begin);
  EXPECT_EQ(calls[0].second, end - begin);
  auto st = layer->stats();
  EXPECT_EQ(st.fetch_requests, 1u);
  EXPECT_EQ(st.chunks_fetched, 5u);
  EXPECT_EQ(st.cache_misses, 5u);
  EXPECT_EQ(st.blob_bytes_fetched, end - begin);
  EXPECT_EQ(st.chunks_opened, 5u);
  // Again: served from memory, no fetch, no open.
  ExpectRead(*layer, "a", off, len);
  EXPECT_EQ(source_->call_count(), 1u);
  EXPECT_EQ(layer->stats().chunks_opened, 5u);
  EXPECT_EQ(layer->stats().cache_hits, 5u);
}

TEST_F(CachedLayerTest, OneFetchPerChunkWithSixteenConcurrentReaders) {
  auto layer = Make(nullptr);
  source_->set_delay_ms(150);  // every reader arrives while the first fetch is in flight
  const uint64_t off = 3 * kChunk + 10, len = 4 * kChunk;
  std::vector<std::thread> readers;
  std::atomic<int> ok{0};
  for (int t = 0; t < 16; ++t) {
    readers.emplace_back([&] {
      std::vector<uint8_t> out(len);
      auto n = layer->ReadFile(E("big"), off, out);
      const auto& data = Layer().files.at("big");
      if (n.ok() && *n == len && std::equal(out.begin(), out.end(), data.begin() + off)) ++ok;
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(ok.load(), 16);
  auto r = index_->ChunksForRange(E("big"), off, len);
  for (uint64_t i = r.first; i < r.first + r.count; ++i) {
    const auto& c = index_->chunks()[i];
    EXPECT_EQ(source_->CallsOverlapping(c.blob_offset, c.blob_end()), 1u) << "chunk " << i;
  }
  EXPECT_EQ(layer->stats().chunks_fetched, r.count);
  EXPECT_EQ(layer->stats().chunks_opened, r.count);
}

TEST_F(CachedLayerTest, ConcurrentReadersShareAFailureAndTheNextReadRetries) {
  auto layer = Make(nullptr);
  source_->set_delay_ms(150);
  source_->fail_next(1);
  std::vector<std::thread> readers;
  std::atomic<int> unavailable{0};
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&] {
      std::vector<uint8_t> out(1000);
      auto n = layer->ReadFile(E("b"), 5, out);
      if (!n.ok() && n.status().code() == StatusCode::kUnavailable) ++unavailable;
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(unavailable.load(), 8);
  EXPECT_EQ(source_->call_count(), 1u);
  EXPECT_EQ(layer->stats().fetch_errors, 1u);
  source_->set_delay_ms(0);
  ExpectRead(*layer, "b", 5, 1000);  // the error was not cached
  EXPECT_EQ(source_->call_count(), 2u);
}

TEST_F(CachedLayerTest, SequentialReadsReadAhead) {
  CachedLayerOptions o;
  o.readahead_bytes = 4 * kChunk;
  auto layer = Make(nullptr, o);
  // A file's first read, not at its start: only its own chunk.
  ExpectRead(*layer, "big", 8 * kChunk, kChunk);
  ASSERT_EQ(source_->call_count(), 1u);
  auto own8 = Records("big", 8 * kChunk, kChunk);
  EXPECT_EQ(source_->calls()[0].first, own8.first);
  EXPECT_EQ(source_->calls()[0].second, own8.second - own8.first);
  // A read from the file's start (an exec, a cat) starts a sequential read: its chunk and the
  // next ones, one request, at most readahead_bytes beyond it.
  ExpectRead(*layer, "big", 0, 100);
  ASSERT_EQ(source_->call_count(), 2u);
  EXPECT_EQ(source_->calls()[1].first, Records("big", 0, 100).first);
  const uint64_t end1 = source_->calls()[1].first + source_->calls()[1].second;
  EXPECT_GE(end1, Records("big", 0, 4 * kChunk).second);  // at least 3 chunks ahead
  EXPECT_LE(end1, Records("big", 0, 5 * kChunk + 1).second);
  // Continuing it: what was read ahead is not fetched again (being sequential, the read may
  // read further ahead, past it, in one request).
  ExpectRead(*layer, "big", 100, 3 * kChunk);
  ASSERT_LE(source_->call_count(), 3u);
  if (source_->call_count() == 3u) EXPECT_EQ(source_->calls()[2].first, end1);
  // A jump elsewhere is not sequential: only its own chunk.
  ExpectRead(*layer, "big", 15 * kChunk + 5, 100);
  auto last = source_->calls().back();
  auto own = Records("big", 15 * kChunk + 5, 100);
  EXPECT_EQ(last.first, own.first);
  EXPECT_EQ(last.second, own.second - own.first);
  // Read-ahead stops at the file's end.
  auto small = Make(nullptr, o, std::make_shared<FakeSource>(Layer().blob));
  ExpectRead(*small, "b", 0, 100);
  EXPECT_EQ(small->stats().chunks_fetched, 2u);  // "b" has 2 chunks, no more
  ExpectRead(*small, "b", 100, 100);
  EXPECT_EQ(small->stats().chunks_fetched, 2u);
}

TEST_F(CachedLayerTest, DiskStoreServesANewLayerAfterRestartWithZeroFetches) {
  {
    auto store = OpenStore();
    auto layer = Make(store.get());
    ReadAll(*layer);
    auto st = layer->stats();
    EXPECT_EQ(st.chunks_present, FileChunks());
    EXPECT_LT(st.chunks_present, st.chunk_count);  // the archive's tail holds no file data
    EXPECT_GT(st.bytes_present, 0u);
  }
  auto store = OpenStore();  // the daemon restarts
  auto fresh_source = std::make_shared<FakeSource>(Layer().blob);
  auto layer = Make(store.get(), {}, fresh_source);
  EXPECT_EQ(layer->stats().chunks_present, FileChunks());
  ReadAll(*layer);
  EXPECT_EQ(fresh_source->call_count(), 0u);
  EXPECT_EQ(layer->stats().cache_misses, 0u);
  EXPECT_GT(layer->stats().cache_hits, 0u);
}

TEST_F(CachedLayerTest, EvictionKeepsUsageUnderTheCap) {
  const uint64_t cap = 6 * kChunk;
  auto store = OpenStore(cap);
  CachedLayerOptions o;
  o.memory_cache_bytes = kChunk;
  auto layer = Make(store.get(), o);
  ReadAll(*layer);
  auto st = store->stats();
  EXPECT_LE(st.usage_bytes, cap);
  EXPECT_GT(st.evictions, 0u);
  EXPECT_LT(layer->stats().chunks_present, index_->chunks().size());
  struct stat fst {};
  ASSERT_EQ(stat((tmp_ / "chunks" / (layer->store_key() + ".data")).c_str(), &fst), 0);
  EXPECT_LE(static_cast<uint64_t>(fst.st_blocks) * 512, cap + 64 * 1024);
  ReadAll(*layer);  // still correct, refetching what was evicted
  EXPECT_LE(store->stats().usage_bytes, cap);
}

TEST_F(CachedLayerTest, CorruptRecordInTheStoreIsDroppedAndRefetched) {
  {
    auto store = OpenStore();
    auto layer = Make(store.get());
    ReadAll(*layer);
  }
  const auto& chunk = index_->chunks()[E("b").data_offset() / kChunk + 1];
  auto data_file = tmp_ / "chunks" / ("toc-" + crypto::HexEncode(index_->toc_digest()) + ".data");
  lazycrypt::testing::FlipBit(data_file, chunk.blob_offset + 40);
  auto store = OpenStore();
  auto src = std::make_shared<FakeSource>(Layer().blob);
  auto layer = Make(store.get(), {}, src);
  ExpectRead(*layer, "b", 0, Layer().files.at("b").size());
  EXPECT_EQ(layer->stats().disk_corrupt, 1u);
  ASSERT_EQ(src->call_count(), 1u);
  EXPECT_EQ(src->calls()[0].first, chunk.blob_offset);
  EXPECT_EQ(src->calls()[0].second, chunk.record_size());
  EXPECT_EQ(layer->stats().auth_failures, 0u);
  // The refetched record replaced the bad one on disk.
  auto src2 = std::make_shared<FakeSource>(Layer().blob);
  auto again = Make(store.get(), {}, src2);
  ExpectRead(*again, "b", 0, Layer().files.at("b").size());
  EXPECT_EQ(src2->call_count(), 0u);
  EXPECT_EQ(again->stats().disk_corrupt, 0u);
}

TEST_F(CachedLayerTest, TamperedSourceChunkFailsAloneAndIsNeverStored) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  const uint64_t bad = E("big").data_offset() / kChunk + 7;  // a chunk inside "big"
  const auto& chunk = index_->chunks()[bad];
  source_->corrupt_at(chunk.blob_offset + chunk.record_size() / 2);
  const uint64_t off = chunk.tar_offset - E("big").data_offset();
  std::vector<uint8_t> out(100, 0xAB);
  auto n = layer->ReadFile(E("big"), off + 10, out);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kAuthFailed) << n.status().ToString();
  EXPECT_EQ(std::count(out.begin(), out.end(), 0xAB), 100);  // nothing written
  EXPECT_EQ(layer->stats().auth_failures, 1u);
  EXPECT_FALSE(store->Contains(layer->store_key(), bad));
  // Not cached: the next read fetches again and fails again.
  const size_t calls = source_->call_count();
  EXPECT_EQ(layer->ReadFile(E("big"), off + 10, out).status().code(), StatusCode::kAuthFailed);
  EXPECT_EQ(source_->call_count(), calls + 1);
  // Every other file and the rest of "big" read fine.
  ExpectRead(*layer, "a", 0, Layer().files.at("a").size());
  ExpectRead(*layer, "big", 0, off);
  ExpectRead(*layer, "big", off + chunk.raw_size, 2 * kChunk);
  ExpectRead(*layer, "marker", 0, Layer().files.at("marker").size());
  // A read spanning the bad chunk and good ones fails as a whole.
  EXPECT_FALSE(layer->ReadFile(E("big"), off - 10, out).ok());
}

TEST_F(CachedLayerTest, PrefetchFetchesOneRequestPerContiguousRun) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  // "a" and "marker" are not adjacent ("b" and "big" lie between): two requests.
  ASSERT_TRUE(layer->Prefetch({E("a"), E("marker")}).ok());
  auto calls = source_->calls();
  ASSERT_EQ(calls.size(), 2u);
  auto ra = Records("a", 0, Layer().files.at("a").size());
  auto rm = Records("marker", 0, Layer().files.at("marker").size());
  // The chunk shared by two files' boundaries may belong to either run; the runs cover the files.
  EXPECT_LE(calls[0].first, ra.first);
  EXPECT_GE(calls[0].first + calls[0].second, ra.second);
  EXPECT_LE(calls[1].first, rm.first);
  EXPECT_EQ(calls[1].first + calls[1].second, rm.second);
  // Reading them now fetches nothing; prefetching again fetches nothing.
  ExpectRead(*layer, "a", 0, Layer().files.at("a").size());
  ExpectRead(*layer, "marker", 0, Layer().files.at("marker").size());
  ASSERT_TRUE(layer->Prefetch({E("a"), E("marker")}).ok());
  EXPECT_EQ(source_->call_count(), 2u);
  // Adjacent files "b" and "big" together: one request.
  ASSERT_TRUE(layer->Prefetch({E("big"), E("b")}).ok());
  EXPECT_EQ(source_->call_count(), 3u);
  // A failing source is reported.
  auto failing = std::make_shared<FakeSource>(Layer().blob);
  failing->fail_next(1);
  auto f = Make(nullptr, {}, failing);
  EXPECT_EQ(f->Prefetch({E("b")}).code(), StatusCode::kUnavailable);
  EXPECT_TRUE(f->Prefetch({E("b")}).ok());
}

TEST_F(CachedLayerTest, PrefetchMarkedFetchesTheFilesMarkedAtConversion) {
  ASSERT_EQ(index_->prefetch_entries().size(), 2u);
  auto layer = Make(nullptr);
  ASSERT_TRUE(layer->PrefetchMarked().ok());
  // "b" and "marker" are not adjacent: two requests, then reading them fetches nothing.
  EXPECT_EQ(source_->call_count(), 2u);
  ExpectRead(*layer, "b", 0, Layer().files.at("b").size());
  ExpectRead(*layer, "marker", 0, Layer().files.at("marker").size());
  EXPECT_EQ(source_->call_count(), 2u);
  ExpectRead(*layer, "a", 0, 10);
  EXPECT_EQ(source_->call_count(), 3u);
}

TEST_F(CachedLayerTest, StartedPrefetchClaimsTheMarkedChunksAtOnceAndReadsWaitForIt) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  source_->set_held(true);
  ASSERT_TRUE(layer->StartPrefetchMarked().ok());
  EXPECT_EQ(layer->StartPrefetchMarked().code(), StatusCode::kFailedPrecondition);
  // A reader of a marked file, arriving after the start, waits for the prefetch's request.
  std::thread reader([&] { ExpectRead(*layer, "b", 0, Layer().files.at("b").size()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(layer->prefetch_done());
  source_->set_held(false);
  reader.join();
  for (int i = 0; i < 1000 && !layer->prefetch_done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(layer->prefetch_done());
  // "b" and "marker" are not adjacent: two requests, each chunk of them fetched once.
  EXPECT_EQ(source_->call_count(), 2u);
  for (const char* name : {"b", "marker"}) {
    auto r = Records(name, 0, Layer().files.at(name).size());
    EXPECT_EQ(source_->CallsOverlapping(r.first, r.second), 1u) << name;
  }
  ExpectRead(*layer, "marker", 0, Layer().files.at("marker").size());
  EXPECT_EQ(source_->call_count(), 2u);
  EXPECT_EQ(layer->stats().chunks_present, layer->stats().chunks_fetched);
}

TEST_F(CachedLayerTest, PrefetchAllFetchesEveryChunkInOneRequest) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  const auto chunks = index_->chunks();
  ASSERT_TRUE(layer->PrefetchAll().ok());
  ASSERT_EQ(source_->call_count(), 1u);
  EXPECT_EQ(source_->calls()[0].first, chunks.front().blob_offset);
  EXPECT_EQ(source_->calls()[0].second, chunks.back().blob_end() - chunks.front().blob_offset);
  EXPECT_EQ(layer->stats().chunks_present, chunks.size());
  ReadAll(*layer);  // nothing more fetched
  EXPECT_EQ(source_->call_count(), 1u);
  ASSERT_TRUE(layer->PrefetchAll().ok());
  EXPECT_EQ(source_->call_count(), 1u);
}

TEST_F(CachedLayerTest, StartedPrefetchAllClaimsEveryChunkAndSaysWhenItEnds) {
  auto layer = Make(nullptr);
  source_->set_held(true);
  std::atomic<int> done{0};
  ASSERT_TRUE(layer->StartPrefetchAll([&] { ++done; }).ok());
  // A reader of any file, arriving after the start, waits for the prefetch's one request.
  std::thread reader([&] { ExpectRead(*layer, "a", 0, Layer().files.at("a").size()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(done.load(), 0);
  source_->set_held(false);
  reader.join();
  for (int i = 0; i < 1000 && !layer->prefetch_done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(layer->prefetch_done());
  EXPECT_EQ(done.load(), 1);
  EXPECT_EQ(source_->call_count(), 1u);
  ReadAll(*layer);
  EXPECT_EQ(source_->call_count(), 1u);
}

TEST_F(CachedLayerTest, StoppingAStartedPrefetchEndsItBetweenRequests) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  source_->set_held(true);
  ASSERT_TRUE(layer->StartPrefetchMarked().ok());
  ASSERT_TRUE(layer->StartBackgroundFetch(0).ok());  // waits for the prefetch
  for (int i = 0; i < 1000 && source_->call_count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(source_->call_count(), 1u) << "the prefetch's first request is in flight";
  std::thread stopper([&] { layer->StopBackgroundFetch(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  source_->set_held(false);
  stopper.join();
  EXPECT_TRUE(layer->prefetch_done());
  EXPECT_FALSE(layer->background_fetch_done());
  // The second marked run and the background fetch never went out; what they claimed was
  // released, so a read fetches it now.
  EXPECT_EQ(source_->call_count(), 1u);
  ExpectRead(*layer, "marker", 0, Layer().files.at("marker").size());
  ExpectRead(*layer, "b", 0, Layer().files.at("b").size());
  EXPECT_EQ(source_->call_count(), 2u);
}

TEST_F(CachedLayerTest, MultiRangeSourceGetsAllRunsInOneRequest) {
  auto multi = std::make_shared<FakeMultiSource>(Layer().blob);
  auto layer = Make(nullptr, {}, multi);
  ASSERT_TRUE(layer->Prefetch({E("a"), E("marker")}).ok());
  auto calls = multi->multi_calls();
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_EQ(calls[0].size(), 2u);
  auto ra = Records("a", 0, Layer().files.at("a").size());
  auto rm = Records("marker", 0, Layer().files.at("marker").size());
  EXPECT_LE(calls[0][0].first, ra.first);
  EXPECT_GE(calls[0][0].first + calls[0][0].second, ra.second);
  EXPECT_EQ(calls[0][1].first + calls[0][1].second, rm.second);
  EXPECT_EQ(layer->stats().fetch_requests, 1u);
  // A read whose middle chunk is cached: its two missing runs in one request.
  auto reader = Make(nullptr, {}, multi);
  ExpectRead(*reader, "big", 4 * kChunk + 100, 10);  // caches the chunk at 4 * kChunk
  const auto mid = Records("big", 4 * kChunk + 100, 10);
  ExpectRead(*reader, "big", 2 * kChunk, 5 * kChunk);
  calls = multi->multi_calls();
  ASSERT_EQ(calls.size(), 2u);
  ASSERT_EQ(calls[1].size(), 2u);
  EXPECT_EQ(calls[1][0].first + calls[1][0].second, mid.first);
  EXPECT_EQ(calls[1][1].first, mid.second);
  EXPECT_EQ(reader->stats().fetch_requests, 2u);
}

TEST_F(CachedLayerTest, TimedSourceKeepsMultiRangeRequestsAndCountsThem) {
  // The snapshotter times its blob source; the timing wrapper must not hide ReadRanges, or every
  // run of a prefetch becomes a request of its own (one round trip each on a real link).
  auto multi = std::make_shared<FakeMultiSource>(Layer().blob);
  auto timed = std::make_shared<TimedBlobSource>(multi);
  EXPECT_EQ(timed->size(), Layer().blob.size());
  auto layer = Make(nullptr, {}, timed);
  ASSERT_TRUE(layer->Prefetch({E("a"), E("marker")}).ok());
  const auto calls = multi->multi_calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].size(), 2u);
  EXPECT_EQ(multi->single().call_count(), 2u) << "ReadRanges reads each range once";
  EXPECT_EQ(timed->reads(), 1u);
  uint64_t bytes = 0;
  for (const auto& [offset, n] : calls[0]) bytes += n;
  EXPECT_EQ(timed->bytes(), bytes);
  // A single run is a ReadAt, counted too; a failing read still counts and passes its error.
  ExpectRead(*layer, "big", 0, 10);
  EXPECT_EQ(timed->reads(), 2u);
  multi->single().fail_next(1);
  std::vector<uint8_t> buf(16);
  EXPECT_EQ(timed->ReadAt(0, buf).code(), StatusCode::kUnavailable);
  EXPECT_EQ(timed->reads(), 3u);
}

TEST_F(CachedLayerTest, BackgroundFetchCompletesTheLayer) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  EXPECT_EQ(Make(nullptr)->StartBackgroundFetch(0).code(), StatusCode::kFailedPrecondition);
  ExpectRead(*layer, "big", 5 * kChunk, 10);  // one chunk present already: skipped
  ASSERT_TRUE(layer->StartBackgroundFetch(0).ok());
  EXPECT_EQ(layer->StartBackgroundFetch(0).code(), StatusCode::kFailedPrecondition);
  for (int i = 0; i < 1000 && !layer->background_fetch_done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(layer->background_fetch_done());
  EXPECT_EQ(layer->stats().chunks_present, index_->chunks().size());
  // Every chunk was fetched exactly once in total.
  for (const auto& c : index_->chunks()) {
    EXPECT_EQ(source_->CallsOverlapping(c.blob_offset, c.blob_end()), 1u) << "chunk " << c.index;
  }
  // In blob order.
  auto calls = source_->calls();
  for (size_t i = 2; i < calls.size(); ++i) EXPECT_GT(calls[i].first, calls[i - 1].first);
  auto src2 = std::make_shared<FakeSource>(Layer().blob);
  auto again = Make(store.get(), {}, src2);
  ReadAll(*again);
  EXPECT_EQ(src2->call_count(), 0u);
}

TEST_F(CachedLayerTest, BackgroundFetchWaitsForForegroundFetches) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  source_->set_held(true);
  std::thread reader([&] { ExpectRead(*layer, "marker", 0, 100); });
  for (int i = 0; i < 2000 && source_->call_count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(source_->call_count(), 1u);  // the foreground fetch is in flight (held)
  ASSERT_TRUE(layer->StartBackgroundFetch(0).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(source_->call_count(), 1u);  // background has not started fetching meanwhile
  source_->set_held(false);
  reader.join();
  for (int i = 0; i < 1000 && !layer->background_fetch_done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(layer->background_fetch_done());
  EXPECT_EQ(layer->stats().chunks_present, index_->chunks().size());
}

TEST_F(CachedLayerTest, BackgroundFetchIsRateBoundedAndStops) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  source_->set_delay_ms(5);
  // 64 KiB/s: a couple of chunks before we stop it.
  ASSERT_TRUE(layer->StartBackgroundFetch(kChunk).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  layer->StopBackgroundFetch();
  const size_t calls = source_->call_count();
  EXPECT_GE(calls, 1u);
  EXPECT_LT(layer->stats().chunks_present, index_->chunks().size() / 2);
  EXPECT_FALSE(layer->background_fetch_done());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(source_->call_count(), calls);  // nothing after Stop returned
  layer->StopBackgroundFetch();             // idempotent
  // Destruction stops a running fetch too.
  auto other = Make(store.get(), {}, std::make_shared<FakeSource>(Layer().blob));
  ASSERT_TRUE(other->StartBackgroundFetch(kChunk).ok());
  other.reset();
}

TEST_F(CachedLayerTest, StoreDirIsPrivateAndHoldsNoPlaintext) {
  auto store = OpenStore();
  auto layer = Make(store.get());
  ReadAll(*layer);
  ASSERT_GT(store->stats().usage_bytes, 0u);
  struct stat st {};
  ASSERT_EQ(stat((tmp_ / "chunks").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  auto files = lazycrypt::testing::ListFiles(tmp_ / "chunks");
  ASSERT_FALSE(files.empty());
  uint64_t total = 0;
  for (const auto& f : files) {
    ASSERT_EQ(stat((tmp_ / "chunks" / f).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << f;
    auto bytes = ReadFileBytes(tmp_ / "chunks" / f);
    ASSERT_TRUE(bytes.ok());
    total += bytes->size();
    std::string_view s = AsStringView(*bytes);
    EXPECT_EQ(s.find(kMarker), std::string_view::npos) << f;
    EXPECT_EQ(s.find("PLAINTEXT-MARKER"), std::string_view::npos) << f;
  }
  EXPECT_GT(total, Layer().files.at("marker").size());
  // The test would catch plaintext: the marker is in the file we read.
  ExpectRead(*layer, "marker", 0, kMarker.size());
}


// ---- Read-ahead opens on worker threads, lent views (bench: FUSE read path) -------------------

// Waits (bounded) until `done` holds; the bound only keeps a broken build from hanging.
template <typename Pred>
bool EventuallyTrue(Pred done) {
  for (int i = 0; i < 1000 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST_F(CachedLayerTest, SequentialReadAheadFromTheStoreIsOpenedByWorkersOncePerChunk) {
  {
    auto store = OpenStore();
    auto warm = Make(store.get());
    ReadAll(*warm);
  }
  auto store = OpenStore();
  auto src = std::make_shared<FakeSource>(Layer().blob);
  CachedLayerOptions o;
  o.readahead_bytes = 4 * kChunk;
  o.open_threads = 2;
  auto layer = Make(store.get(), o, src);
  ExpectRead(*layer, "big", 0, kChunk);       // not sequential yet: its own chunk(s) only
  ExpectRead(*layer, "big", kChunk, kChunk);  // sequential: the next 4 chunks go to the workers
  const auto covered = index_->ChunksForRange(E("big"), 0, 2 * kChunk);
  const uint64_t ahead_end = std::min<uint64_t>(
      covered.first + covered.count + 4,
      index_->ChunksForRange(E("big"), 0, E("big").size()).first +
          index_->ChunksForRange(E("big"), 0, E("big").size()).count);
  // The workers open the read-ahead chunks without anybody reading them.
  ASSERT_TRUE(EventuallyTrue([&] { return layer->stats().chunks_opened >= ahead_end - covered.first; }))
      << layer->stats().chunks_opened;
  const uint64_t opened_before = layer->stats().chunks_opened;
  // Reading them now opens nothing again: they are served from memory.
  int read_ahead_reads = 0;
  for (uint64_t off = 2 * kChunk + 1; off < E("big").size(); off += kChunk) {
    const auto r = index_->ChunksForRange(E("big"), off, 100);
    if (r.first + r.count > ahead_end) break;
    ExpectRead(*layer, "big", off, 100);  // not the continuation: no new read-ahead
    ++read_ahead_reads;
  }
  EXPECT_GE(read_ahead_reads, 3);
  EXPECT_EQ(layer->stats().chunks_opened, opened_before);
  // The whole file, sequentially: right bytes, nothing fetched, each chunk opened once.
  for (uint64_t off = 0; off < E("big").size(); off += kChunk) ExpectRead(*layer, "big", off, kChunk);
  EXPECT_EQ(src->call_count(), 0u);
  EXPECT_EQ(layer->stats().cache_misses, 0u);
  const auto all = index_->ChunksForRange(E("big"), 0, E("big").size());
  EXPECT_EQ(layer->stats().chunks_opened, all.count);
}

TEST_F(CachedLayerTest, ReadAheadWorkerRefetchesADamagedRecordAndReadersGetGoodBytes) {
  {
    auto store = OpenStore();
    auto warm = Make(store.get());
    ReadAll(*warm);
  }
  const uint64_t bad = E("big").data_offset() / kChunk + 3;  // read ahead, never read first
  const auto& chunk = index_->chunks()[bad];
  auto data_file = tmp_ / "chunks" / ("toc-" + crypto::HexEncode(index_->toc_digest()) + ".data");
  lazycrypt::testing::FlipBit(data_file, chunk.blob_offset + 40);
  auto store = OpenStore();
  auto src = std::make_shared<FakeSource>(Layer().blob);
  CachedLayerOptions o;
  o.readahead_bytes = 4 * kChunk;
  o.open_threads = 2;
  auto layer = Make(store.get(), o, src);
  for (uint64_t off = 0; off < E("big").size(); off += kChunk / 2) ExpectRead(*layer, "big", off, kChunk / 2);
  EXPECT_EQ(layer->stats().disk_corrupt, 1u);
  ASSERT_EQ(src->call_count(), 1u);  // the damaged record alone
  EXPECT_EQ(src->calls()[0].first, chunk.blob_offset);
  EXPECT_EQ(src->calls()[0].second, chunk.record_size());
  EXPECT_EQ(layer->stats().auth_failures, 0u);
}

TEST_F(CachedLayerTest, DestroyingALayerWithReadAheadQueuedDoesNotHang) {
  {
    auto store = OpenStore();
    auto warm = Make(store.get());
    ReadAll(*warm);
  }
  auto store = OpenStore();
  for (int round = 0; round < 20; ++round) {
    CachedLayerOptions o;
    o.readahead_bytes = 16 * kChunk;
    o.open_threads = 1;
    auto layer = Make(store.get(), o);
    ExpectRead(*layer, "big", 0, kChunk);
    ExpectRead(*layer, "big", kChunk, kChunk);  // queues up to 16 opens
  }  // each layer is destroyed with work queued or running
}

// Reassembles a view and checks it against the original bytes.
void ExpectView(const Result<FileView>& view, const std::vector<uint8_t>& data, uint64_t offset,
                size_t len) {
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  const size_t want = offset >= data.size() ? 0 : std::min<size_t>(len, data.size() - offset);
  std::vector<uint8_t> got;
  for (ByteSpan s : view->spans) got.insert(got.end(), s.begin(), s.end());
  ASSERT_EQ(got.size(), want);
  ASSERT_EQ(view->size(), want);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + offset)) << "@" << offset << "+" << len;
  // Pieces around the view (whole opened chunks) are the file's bytes at their offsets and
  // cover what the view returned.
  uint64_t covered_begin = UINT64_MAX, covered_end = 0;
  for (const FileView::Piece& p : view->around) {
    ASSERT_LE(p.file_offset + p.bytes.size(), data.size());
    EXPECT_TRUE(std::equal(p.bytes.begin(), p.bytes.end(), data.begin() + p.file_offset));
    covered_begin = std::min<uint64_t>(covered_begin, p.file_offset);
    covered_end = std::max<uint64_t>(covered_end, p.file_offset + p.bytes.size());
  }
  if (!view->around.empty() && want > 0) {
    EXPECT_LE(covered_begin, offset);
    EXPECT_GE(covered_end, offset + want);
  }
}

TEST_F(CachedLayerTest, ViewFileLendsTheBytesReadFileCopies) {
  auto store = OpenStore();
  auto cached = Make(store.get());
  MemoryBlobSource mem(Layer().blob);
  auto reader = format::LayerReader::Open(mem, Key(), Layer().toc_digest);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  auto direct = DirectLayerData(std::move(*reader));  // the default (copying) ViewFile
  std::mt19937_64 rng(7);
  for (LayerData* layer : {static_cast<LayerData*>(cached.get()), direct.get()}) {
    for (const auto& [name, data] : Layer().files) {
      const format::EntryView entry = *layer->index().Find(name);  // views are per index
      for (int k = 0; k < 12; ++k) {
        const uint64_t off = rng() % (data.size() + 10);
        const size_t len = 1 + rng() % (3 * kChunk);
        ExpectView(layer->ViewFile(entry, off, len), data, off, len);
      }
      ExpectView(layer->ViewFile(entry, 0, data.size()), data, 0, data.size());
      ExpectView(layer->ViewFile(entry, data.size(), 10), data, data.size(), 10);
    }
  }
}

TEST_F(CachedLayerTest, AViewKeepsItsChunksAfterTheyAreEvicted) {
  CachedLayerOptions o;
  o.memory_cache_bytes = kChunk;  // one opened chunk in memory at a time
  auto layer = Make(nullptr, o);
  const auto& big = Layer().files.at("big");
  auto view = layer->ViewFile(E("big"), kChunk / 2, 2 * kChunk);
  ExpectRead(*layer, "a", 0, Layer().files.at("a").size());  // evicts the view's chunks
  ExpectRead(*layer, "big", 10 * kChunk, 3 * kChunk);
  EXPECT_LE(layer->stats().memory_cache_bytes, kChunk);
  ExpectView(view, big, kChunk / 2, 2 * kChunk);
}

TEST_F(CachedLayerTest, ViewOfATamperedChunkIsAnErrorWithNoBytes) {
  const uint64_t bad = E("big").data_offset() / kChunk + 7;
  source_->corrupt_at(index_->chunks()[bad].blob_offset + 50);
  auto layer = Make(nullptr);
  const uint64_t in_bad = index_->chunks()[bad].tar_offset - E("big").data_offset();
  auto view = layer->ViewFile(E("big"), in_bad - 100, 200);  // straddles a good and the bad chunk
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), StatusCode::kAuthFailed) << view.status().ToString();
  ExpectView(layer->ViewFile(E("big"), 0, kChunk), Layer().files.at("big"), 0, kChunk);
}

}  // namespace
}  // namespace lazycrypt::cache
