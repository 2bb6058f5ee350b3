// CtrLayerData::LoadRuns (lazylayer/ctr_layer.h), the prefetch of the lazily served ocicrypt
// AES-CTR layers, over a fake layer behind CtrLayerData's interfaces: chunk i is a range of an
// in-memory blob (and, for chunks with side bytes, a range of a second blob, as the indexed
// format's windows lie in the index blob), "opened" by checking that its record is exactly its
// bytes. Both blobs can hold their requests (never timed: the tests wait for requests to be in
// flight, and count them):
//   - chunks with side bytes are loaded, their sides fetched in parallel with the run's
//     ciphertext, each chunk opened once from its record (ciphertext, then side bytes);
//   - scattered runs have several requests in flight at once (at most kLoadRunsInFlight);
//   - a reader racing the prefetch waits for its claim instead of fetching again;
//   - a failing side fetch fails only its run's chunks, which a reader then fetches again;
//   - a stopped prefetch sends nothing and leaves no reader waiting;
//   - a run's ciphertext and side bytes together keep to max_request_bytes;
//   - a throw while claiming leaves no chunk claimed;
//   - a reader whose wait ends with the prefetch's failure loads the chunk itself.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache/layer_data.h"
#include "cache/opened_chunk_cache.h"
#include "common/io.h"
#include "common/status.h"
#include "lazylayer/ctr_layer.h"

namespace lazycrypt {
namespace {

using namespace std::chrono_literals;

// A blob in memory whose requests, once Hold() is called, wait until Release() (at most 30 s, so
// that a failing test does not hang); counts requests, those in flight and the most at once.
class HoldingSource final : public BlobSource {
 public:
  explicit HoldingSource(std::vector<uint8_t> bytes) : inner_(std::move(bytes)) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++requests_;
      max_read_bytes_ = std::max<uint64_t>(max_read_bytes_, out.size());
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      cv_.notify_all();
      if (holding_) cv_.wait_for(lock, 30s, [&] { return !holding_; });
    }
    Status s = inner_.ReadAt(offset, out);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_all();
    return s;
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      holding_ = false;
    }
    cv_.notify_all();
  }
  // Waits (up to 10 s) until `n` requests are in flight at once; false if never.
  bool WaitForInFlight(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return in_flight_ >= n; });
  }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }
  uint64_t requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  uint64_t max_read_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_read_bytes_;
  }

 private:
  MemoryBlobSource inner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool holding_ = false;
  int in_flight_ = 0, max_in_flight_ = 0;
  uint64_t requests_ = 0, max_read_bytes_ = 0;
};

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> v(size);
  for (size_t k = 0; k < size; ++k) v[k] = static_cast<uint8_t>(seed + k * 7 + (k >> 8));
  return v;
}

// Chunk i: `size` bytes at `offset` of the blob, and `side_size` bytes at `side_offset` of the
// side blob.
struct FakeChunk {
  uint64_t offset = 0, size = 0, side_offset = 0, side_size = 0;
};

class FakeCtrData final : public lazylayer::CtrLayerData {
 public:
  FakeCtrData(std::shared_ptr<HoldingSource> blob, std::shared_ptr<HoldingSource> sides,
              std::vector<FakeChunk> chunks)
      : CtrLayerData(std::make_shared<lazylayer::CountingSource>(blob),
                     lazylayer::OpenedChunkSlot(lazylayer::CtrLayerOptions{}), nullptr, "t"),
        blob_(std::move(blob)),
        sides_(std::move(sides)),
        chunks_(std::move(chunks)) {}
  ~FakeCtrData() override { StopReadAhead(); }

  const format::LayerIndex& index() const override { std::abort(); }  // never asked here
  Result<size_t> ReadFile(format::EntryView, uint64_t, MutableByteSpan) override {
    return Status::Unsupported("not a file system");
  }
  cache::LayerStats stats() const override { return {}; }

  // Times chunk i was opened (from fetched bytes), and FetchSides / FetchSide calls.
  int opens(uint32_t i) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = opens_.find(i);
    return it == opens_.end() ? 0 : it->second;
  }
  int total_opens() const {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& [i, k] : opens_) n += k;
    return n;
  }
  int fetch_sides_calls() const { return fetch_sides_calls_.load(); }
  int fetch_side_calls() const { return fetch_side_calls_.load(); }
  uint64_t chunks_fetched() const { return chunks_fetched_.load(); }
  // FetchSides fails (once) for a call that includes chunk `i`.
  void FailSidesOnceFor(uint32_t i) { fail_sides_for_ = static_cast<int64_t>(i); }
  // ChunkCiphertext throws (once) when asked for chunk `i`.
  void ThrowOnceFor(uint32_t i) { throw_for_ = static_cast<int64_t>(i); }
  // The most side bytes one FetchSides call was given.
  uint64_t max_sides_bytes() const { return max_sides_bytes_.load(); }
  // Chunk's answers that came from another load's flight (or the cache).
  uint64_t waits() const { return cache_hits_.load(); }

 protected:
  Result<CiphertextRange> ChunkCiphertext(uint32_t i) const override {
    if (i >= chunks_.size()) return Status::InvalidArgument("no such chunk");
    int64_t want = static_cast<int64_t>(i);
    if (throw_for_.compare_exchange_strong(want, -1)) throw std::runtime_error("format: boom");
    CiphertextRange r{chunks_[i].offset, chunks_[i].size};
    r.side_size = chunks_[i].side_size;
    return r;
  }
  Status FetchSide(uint32_t i, const CiphertextRange& range, MutableByteSpan out) override {
    fetch_side_calls_.fetch_add(1);
    EXPECT_EQ(out.size(), range.side_size);
    return sides_->ReadAt(chunks_[i].side_offset, out);
  }
  Status FetchSides(std::span<const uint32_t> chunks, std::span<const CiphertextRange> ranges,
                    std::span<const MutableByteSpan> outs) override {
    fetch_sides_calls_.fetch_add(1);
    uint64_t bytes = 0;
    for (const MutableByteSpan& out : outs) bytes += out.size();
    for (uint64_t seen = max_sides_bytes_.load();
         bytes > seen && !max_sides_bytes_.compare_exchange_weak(seen, bytes);) {
    }
    EXPECT_EQ(chunks.size(), ranges.size());
    EXPECT_EQ(chunks.size(), outs.size());
    for (uint32_t i : chunks) {
      EXPECT_GT(chunks_[i].side_size, 0u) << "FetchSides given chunk " << i << " without side";
      int64_t want = static_cast<int64_t>(i);
      if (fail_sides_for_.compare_exchange_strong(want, -1)) {
        return Status::Unavailable("side blob: connection reset");
      }
    }
    return CtrLayerData::FetchSides(chunks, ranges, outs);  // FetchSide each
  }
  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext,
                                               ByteSpan side) override {
    const FakeChunk& c = chunks_[i];
    const ByteSpan want = ByteSpan(blob_bytes()).subspan(c.offset, c.size);
    if (!std::equal(ciphertext.begin(), ciphertext.end(), want.begin(), want.end())) {
      return Status::AuthFailed("chunk " + std::to_string(i) + ": not its ciphertext");
    }
    const ByteSpan want_side = ByteSpan(side_bytes()).subspan(c.side_offset, c.side_size);
    if (!std::equal(side.begin(), side.end(), want_side.begin(), want_side.end())) {
      return Status::AuthFailed("chunk " + std::to_string(i) + ": not its side bytes");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++opens_[i];
    }
    auto out = std::make_shared<cache::OpenedChunk>(ciphertext.size());
    std::memcpy(out->data(), ciphertext.data(), ciphertext.size());
    return cache::OpenedChunkPtr(std::move(out));
  }

 public:
  // The bytes both blobs hold (set by the test before any load).
  std::vector<uint8_t> blob_bytes_, side_bytes_;
  const std::vector<uint8_t>& blob_bytes() const { return blob_bytes_; }
  const std::vector<uint8_t>& side_bytes() const { return side_bytes_; }

 private:
  std::shared_ptr<HoldingSource> blob_, sides_;
  std::vector<FakeChunk> chunks_;
  mutable std::mutex mu_;
  std::map<uint32_t, int> opens_;
  std::atomic<int> fetch_sides_calls_{0}, fetch_side_calls_{0};
  std::atomic<int64_t> fail_sides_for_{-1};
  mutable std::atomic<int64_t> throw_for_{-1};
  std::atomic<uint64_t> max_sides_bytes_{0};
};

constexpr uint64_t kChunkBytes = 16 << 10;
constexpr uint64_t kSideBytes = 3000;
constexpr uint64_t kFarApart = 1 << 20;  // more than LoadRuns' 64 KiB gap: a run of its own

// `runs` runs of `per_run` contiguous chunks, runs kFarApart apart in the blob; every chunk
// but those listed in `no_side` has side bytes, the sides contiguous in the side blob (as the
// indexed format's windows are).
struct Layout {
  std::vector<FakeChunk> chunks;
  std::vector<uint8_t> blob, sides;
};
Layout MakeLayout(size_t runs, size_t per_run, const std::set<uint32_t>& no_side = {}) {
  Layout l;
  uint64_t side_at = 0;
  for (size_t r = 0; r < runs; ++r) {
    for (size_t k = 0; k < per_run; ++k) {
      FakeChunk c;
      c.offset = r * kFarApart + k * kChunkBytes;
      c.size = kChunkBytes;
      if (no_side.count(static_cast<uint32_t>(l.chunks.size())) == 0) {
        c.side_offset = side_at;
        c.side_size = kSideBytes;
        side_at += kSideBytes;
      }
      l.chunks.push_back(c);
    }
  }
  l.blob = Pattern(runs * kFarApart, 1);
  l.sides = Pattern(std::max<uint64_t>(side_at, 1), 99);
  return l;
}

struct Fixture {
  std::shared_ptr<HoldingSource> blob, sides;
  std::unique_ptr<FakeCtrData> data;
  std::vector<uint32_t> all;
};
Fixture Make(const Layout& l) {
  Fixture f;
  f.blob = std::make_shared<HoldingSource>(l.blob);
  f.sides = std::make_shared<HoldingSource>(l.sides);
  f.data = std::make_unique<FakeCtrData>(f.blob, f.sides, l.chunks);
  f.data->blob_bytes_ = l.blob;
  f.data->side_bytes_ = l.sides;
  for (uint32_t i = 0; i < l.chunks.size(); ++i) f.all.push_back(i);
  return f;
}

// Chunks with side bytes (and one without, in the same run) are loaded by one ciphertext
// request, their sides by one FetchSides call, each chunk opened once from exactly its record;
// readers afterwards are served without any request. The side request is in flight together
// with the ciphertext's. (Before: chunks with side bytes were skipped, left to the readers: one
// request and one side fetch each.)
TEST(CtrLayerLoadRuns, ChunksWithSideBytesAreLoadedWithTheirSidesFetchedAlongside) {
  const Layout l = MakeLayout(1, 6, {2});
  Fixture f = Make(l);
  f.blob->Hold();
  f.sides->Hold();
  auto load = std::async(std::launch::async, [&] { return f.data->LoadRuns(f.all, nullptr); });
  EXPECT_TRUE(f.blob->WaitForInFlight(1));
  EXPECT_TRUE(f.sides->WaitForInFlight(1)) << "the side bytes were not fetched alongside the run";
  f.blob->Release();
  f.sides->Release();
  const Status s = load.get();
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (uint32_t i : f.all) EXPECT_EQ(f.data->opens(i), 1) << "chunk " << i;
  EXPECT_EQ(f.blob->requests(), 1u);
  EXPECT_EQ(f.data->fetch_sides_calls(), 1);
  EXPECT_EQ(f.data->fetch_side_calls(), 5);  // the default FetchSides: FetchSide each
  EXPECT_EQ(f.data->chunks_fetched(), 6u);
  for (uint32_t i : f.all) {
    auto chunk = f.data->Chunk(i);
    ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
    EXPECT_EQ(std::memcmp((*chunk)->data(), l.blob.data() + l.chunks[i].offset, kChunkBytes), 0);
  }
  EXPECT_EQ(f.blob->requests(), 1u) << "a reader fetched a prefetched chunk again";
  EXPECT_EQ(f.data->total_opens(), 6);
}

// Six scattered runs (a marked file each): up to kLoadRunsInFlight requests in flight at once,
// never more; each run one request, each chunk opened once. (Before: one run after the other.)
TEST(CtrLayerLoadRuns, ScatteredRunsHaveSeveralRequestsInFlightAtOnce) {
  static_assert(lazylayer::CtrLayerData::kLoadRunsInFlight == 4);
  const Layout l = MakeLayout(6, 2);
  Fixture f = Make(l);
  f.blob->Hold();
  auto load = std::async(std::launch::async, [&] { return f.data->LoadRuns(f.all, nullptr); });
  EXPECT_TRUE(f.blob->WaitForInFlight(4))
      << "at most " << f.blob->max_in_flight() << " run request(s) in flight at once";
  f.blob->Release();
  const Status s = load.get();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(f.blob->max_in_flight(), 4);
  EXPECT_EQ(f.blob->requests(), 6u);
  EXPECT_EQ(f.data->fetch_sides_calls(), 6);
  for (uint32_t i : f.all) EXPECT_EQ(f.data->opens(i), 1) << "chunk " << i;
}

// A reader that needs a chunk the prefetch has claimed (its request held in the source) waits
// for the prefetch's load: no request of its own, the chunk opened once.
TEST(CtrLayerLoadRuns, AReaderRacingThePrefetchGetsTheChunkWithoutASecondFetch) {
  const Layout l = MakeLayout(2, 3);
  Fixture f = Make(l);
  f.blob->Hold();
  auto load = std::async(std::launch::async, [&] { return f.data->LoadRuns(f.all, nullptr); });
  ASSERT_TRUE(f.blob->WaitForInFlight(2));  // every chunk claimed (before any request)
  auto reader = std::async(std::launch::async, [&] { return f.data->Chunk(4); });
  EXPECT_EQ(reader.wait_for(200ms), std::future_status::timeout)
      << "the reader did not wait for the prefetch's load";
  EXPECT_EQ(f.blob->requests(), 2u);
  f.blob->Release();
  auto chunk = reader.get();
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(std::memcmp((*chunk)->data(), l.blob.data() + l.chunks[4].offset, kChunkBytes), 0);
  EXPECT_TRUE(load.get().ok());
  EXPECT_EQ(f.blob->requests(), 2u);
  EXPECT_EQ(f.data->opens(4), 1);
  EXPECT_EQ(f.data->total_opens(), 6);
}

// The side fetch of one run fails: LoadRuns returns that error, the other runs' chunks are
// loaded, the failed run's chunks with side bytes are not (not opened, no error kept), and a
// reader of one fetches it again itself (its ciphertext and its side), successfully.
TEST(CtrLayerLoadRuns, AFailingSideFetchFailsOnlyItsRunsChunksWhichReadersFetchAgain) {
  const Layout l = MakeLayout(3, 2);
  Fixture f = Make(l);
  f.data->FailSidesOnceFor(3);  // run 1: chunks 2 and 3
  const Status s = f.data->LoadRuns(f.all, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("connection reset"), std::string::npos) << s.ToString();
  for (uint32_t i : {0u, 1u, 4u, 5u}) EXPECT_EQ(f.data->opens(i), 1) << "chunk " << i;
  EXPECT_EQ(f.data->opens(2), 0);
  EXPECT_EQ(f.data->opens(3), 0);
  EXPECT_EQ(f.blob->requests(), 3u);
  auto chunk = f.data->Chunk(3);
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(f.data->opens(3), 1);
  EXPECT_EQ(f.blob->requests(), 4u) << "the reader's fetch of the failed chunk";
  for (uint32_t i : {0u, 1u, 4u, 5u}) ASSERT_TRUE(f.data->Chunk(i).ok());
  EXPECT_EQ(f.blob->requests(), 4u) << "a loaded chunk was fetched again";
}

// A prefetch stopped before it starts sends nothing, and every chunk it claimed is answered: a
// reader afterwards loads its chunk itself.
TEST(CtrLayerLoadRuns, AStoppedPrefetchSendsNothingAndLeavesNoReaderWaiting) {
  const Layout l = MakeLayout(5, 2);
  Fixture f = Make(l);
  const Status s = f.data->LoadRuns(f.all, [] { return true; });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(f.blob->requests(), 0u);
  EXPECT_EQ(f.sides->requests(), 0u);
  auto reader = std::async(std::launch::async, [&] { return f.data->Chunk(7); });
  ASSERT_EQ(reader.wait_for(10s), std::future_status::ready) << "a reader waits for ever";
  auto chunk = reader.get();
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(f.blob->requests(), 1u);
  EXPECT_EQ(f.data->total_opens(), 1);
}

// Tiny chunks with big side bytes (the indexed format's 32 KiB windows on small spans): a run
// ends where its ciphertext and side bytes together would pass max_request_bytes, so a run
// never holds more than that; a chunk bigger than the bound on its own is not claimed (its
// reader loads it). (Before: the bound counted ciphertext only: one run of 8 chunks, 8 KiB of
// ciphertext and 256 KiB of side bytes at once; the big chunk was claimed past the bound.)
TEST(CtrLayerLoadRuns, ARunsCiphertextAndSideBytesTogetherKeepToTheRequestBound) {
  constexpr uint64_t kTiny = 1 << 10, kWindow = 32 << 10, kBound = 70 << 10;
  Layout l;
  for (uint64_t k = 0; k < 8; ++k) {
    l.chunks.push_back(FakeChunk{k * kTiny, kTiny, k * kWindow, kWindow});
  }
  l.chunks.push_back(FakeChunk{8 * kTiny, kTiny, 8 * kWindow, 80 << 10});  // over the bound alone
  l.blob = Pattern(9 * kTiny, 1);
  l.sides = Pattern(8 * kWindow + (80 << 10), 99);
  Fixture f = Make(l);
  const Status s = f.data->LoadRuns(f.all, nullptr, kBound);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_LE(f.blob->max_read_bytes() + f.data->max_sides_bytes(), kBound)
      << "a run held " << f.blob->max_read_bytes() << " ciphertext and "
      << f.data->max_sides_bytes() << " side bytes";
  EXPECT_EQ(f.blob->requests(), 4u);  // two chunks a run (66 KiB)
  for (uint32_t i = 0; i < 8; ++i) EXPECT_EQ(f.data->opens(i), 1) << "chunk " << i;
  EXPECT_EQ(f.data->opens(8), 0) << "a chunk over the bound on its own was prefetched";
  auto chunk = f.data->Chunk(8);
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(f.data->opens(8), 1);
  EXPECT_EQ(f.blob->requests(), 5u);
}

// The format's ChunkCiphertext throws for the fourth chunk: LoadRuns returns an error (no
// throw) and leaves nothing claimed, so the readers of the earlier chunks get an answer and load
// them (the fourth too). (Before: chunks 0-2 were claimed when the throw left LoadRuns, their
// promises broken in inflight_: every reader of them got std::future_error, for ever.)
TEST(CtrLayerLoadRuns, AThrowWhileClaimingLeavesNoChunkClaimed) {
  const Layout l = MakeLayout(2, 3);
  Fixture f = Make(l);
  f.data->ThrowOnceFor(3);
  bool threw = false;
  Status s;
  try {
    s = f.data->LoadRuns(f.all, nullptr);
  } catch (...) {
    threw = true;
  }
  EXPECT_FALSE(threw) << "LoadRuns let the format's exception out";
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(f.blob->requests(), 0u);
  for (uint32_t i : f.all) {
    auto reader = std::async(std::launch::async, [&f, i] { return f.data->Chunk(i); });
    ASSERT_EQ(reader.wait_for(10s), std::future_status::ready) << "chunk " << i << ": waits";
    try {
      auto chunk = reader.get();
      ASSERT_TRUE(chunk.ok()) << "chunk " << i << ": " << chunk.status().ToString();
      EXPECT_EQ(std::memcmp((*chunk)->data(), l.blob.data() + l.chunks[i].offset, kChunkBytes), 0);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "chunk " << i << ": the reader got " << e.what();
    }
  }
  EXPECT_EQ(f.data->total_opens(), 6);
}

// A reader waits for a chunk of the prefetch's fifth run (not yet sent: four are in flight);
// the prefetch is then stopped (as on LeaveMounted's hand-over), so that run fails "stopped":
// the waiting reader loads the chunk itself and gets its bytes (FORMAT.md 11.8: the readers
// fetch again). (Before: the reader returned the prefetch's "stopped", EIO to the container.)
TEST(CtrLayerLoadRuns, AReaderWaitingOnAStoppedPrefetchLoadsTheChunkItself) {
  const Layout l = MakeLayout(5, 2);
  Fixture f = Make(l);
  std::atomic<bool> stop{false};
  f.blob->Hold();
  auto load = std::async(std::launch::async,
                         [&] { return f.data->LoadRuns(f.all, [&] { return stop.load(); }); });
  ASSERT_TRUE(f.blob->WaitForInFlight(4));  // every chunk claimed; runs 0-3 sent
  auto reader = std::async(std::launch::async, [&] { return f.data->Chunk(8); });
  for (int k = 0; k < 1000 && f.data->waits() == 0; ++k) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(f.data->waits(), 1u) << "the reader did not wait for the prefetch's claim";
  stop = true;
  f.blob->Release();
  const Status s = load.get();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  auto chunk = reader.get();
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(std::memcmp((*chunk)->data(), l.blob.data() + l.chunks[8].offset, kChunkBytes), 0);
  EXPECT_EQ(f.data->opens(8), 1);
  EXPECT_EQ(f.data->opens(9), 0);
  EXPECT_EQ(f.blob->requests(), 5u);  // four runs and the reader's own
}

}  // namespace
}  // namespace lazycrypt
