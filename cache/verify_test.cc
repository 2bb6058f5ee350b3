// CachedLayer's background verification (docs/FORMAT.md §8.4): an honest layer becomes verified;
// a layer whose TOC claims another tar_sha256, or whose TOC disagrees with its tar stream,
// becomes failed and quarantined (every later read fails); a source that cannot serve keeps the
// verification pending, retrying, never verified.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "cache/cached_layer.h"
#include "cache/chunk_store.h"
#include "format/writer.h"
#include "tar/tar_writer.h"
#include "tests/forged_layer.h"
#include "tests/test_util.h"

namespace lazycrypt::cache {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

format::LayerKey Key() {
  format::LayerKey k(format::kLayerKeySize);
  for (size_t i = 0; i < k.size(); ++i) k.data()[i] = static_cast<uint8_t>(0x21 + i);
  return k;
}

// A blob in memory whose reads can be made to fail (all, or the next n), counted.
class FlakySource final : public BlobSource {
 public:
  explicit FlakySource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    {
      std::unique_lock lock(mu_);
      ++reads_;
      if (hold_next_) {
        hold_next_ = false;
        holding_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !holding_; });
      }
      if (down_) return Status::Unavailable("flaky source: down");
      if (fail_next_ > 0) {
        --fail_next_;
        return Status::Unavailable("flaky source: injected failure");
      }
    }
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return Status::Corruption("flaky source: read past the end");
    }
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    std::lock_guard lock(mu_);
    if (flip_at_ && *flip_at_ >= offset && *flip_at_ - offset < out.size()) {
      out.data()[*flip_at_ - offset] ^= 0x01;
    }
    return Status::Ok();
  }
  void set_down(bool down) { std::lock_guard l(mu_); down_ = down; }
  // Serves the byte at blob offset `at` with its low bit flipped, on every read.
  void flip_byte(uint64_t at) { std::lock_guard l(mu_); flip_at_ = at; }
  void fail_next(int n) { std::lock_guard l(mu_); fail_next_ = n; }
  int reads() const { std::lock_guard l(mu_); return reads_; }
  // The next read blocks (until release()) once it began: a fetch that stays in flight.
  void hold_next_read() { std::lock_guard l(mu_); hold_next_ = true; }
  bool WaitUntilHolding() {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(20), [&] { return holding_; });
  }
  void release() {
    std::lock_guard l(mu_);
    holding_ = false;
    cv_.notify_all();
  }

 private:
  const std::vector<uint8_t> bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool hold_next_ = false;
  bool holding_ = false;
  bool down_ = false;
  std::optional<uint64_t> flip_at_;
  int fail_next_ = 0;
  int reads_ = 0;
};

// Records on_done calls.
struct DoneLog {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Status> calls;
  std::function<void(const Status&)> Callback() {
    return [this](const Status& s) {
      std::lock_guard l(mu);
      calls.push_back(s);
      cv.notify_all();
    };
  }
  bool WaitForCall(std::chrono::seconds timeout = std::chrono::seconds(20)) {
    std::unique_lock l(mu);
    return cv.wait_for(l, timeout, [&] { return !calls.empty(); });
  }
};

tar::Entry File(std::string name, uint64_t size) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = tar::EntryType::kRegular;
  e.mode = 0644;
  e.mtime_sec = 1700000000;
  e.size = size;
  return e;
}

// A layer of a few hundred KiB: several 64 KiB chunks.
std::vector<uint8_t> SampleTar() {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  tar::Entry dir;
  dir.name = "./";
  dir.type = tar::EntryType::kDirectory;
  dir.mode = 0755;
  EXPECT_TRUE(w.AppendEntry(dir).ok());
  std::mt19937 rng(3);
  for (int f = 0; f < 4; ++f) {
    std::vector<uint8_t> data(90000 + 1000 * f);
    for (auto& b : data) b = static_cast<uint8_t>(rng() % 7 + 'a');
    EXPECT_TRUE(w.AppendEntry(File("./file" + std::to_string(f), data.size()), data).ok());
  }
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

struct Blob {
  std::vector<uint8_t> bytes;
  crypto::Sha256Digest toc_digest{};
  crypto::Sha256Digest diff_id{};
};

// What the writer makes of SampleTar().
Blob HonestBlob() {
  auto tar = SampleTar();
  MemoryInputStream in(tar);
  MemoryOutputStream out;
  format::WriterOptions o;
  o.chunk_size_bytes = format::kMinChunkSizeBytes;
  auto w = format::WriteLayer(in, Key(), out, o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return {out.Take(), w->toc_digest, w->diff_id};
}

// SampleTar() sealed by a key holder with a TOC of their choosing.
Blob ForgedBlob(const std::function<void(std::vector<format::Entry>&)>& bend,
                std::optional<crypto::Sha256Digest> listed_diff_id = std::nullopt) {
  auto tar = SampleTar();
  auto entries = testing::HonestTocEntries(tar);
  EXPECT_TRUE(entries.ok());
  if (bend) bend(*entries);
  testing::ForgeOptions o;
  o.listed_diff_id = listed_diff_id;
  auto f = testing::ForgeLayer(tar, *entries, Key(), o);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return {f->blob, f->toc_digest, f->listed_diff_id};
}

class LayerVerification : public ::testing::Test {
 protected:
  std::shared_ptr<CachedLayer> Open(const Blob& blob, bool with_store = true) {
    source_ = std::make_shared<FlakySource>(blob.bytes);
    if (with_store && !store_) {
      auto store = ChunkStore::Open(tmp_.path() / "store", {});
      EXPECT_TRUE(store.ok()) << store.status().ToString();
      store_ = std::move(*store);
    }
    auto layer = CachedLayer::Open(source_, Key(), blob.toc_digest,
                                   with_store ? store_.get() : nullptr);
    EXPECT_TRUE(layer.ok()) << layer.status().ToString();
    return *layer;
  }
  VerifyOptions Fast() {
    VerifyOptions o;
    o.retry_initial = std::chrono::milliseconds(1);
    o.retry_max = std::chrono::milliseconds(20);
    o.on_done = done_.Callback();
    return o;
  }
  Result<size_t> ReadFirstFile(CachedLayer& layer) {
    std::optional<format::EntryView> e = layer.index().Find("file0");
    std::vector<uint8_t> buf(e->size(), 0xAA);
    auto n = layer.ReadFile(*e, 0, buf);
    if (!n.ok()) EXPECT_THAT(buf, ::testing::Each(0xAA));  // nothing written on failure
    return n;
  }

  testing::TempDir tmp_;
  std::unique_ptr<ChunkStore> store_;
  std::shared_ptr<FlakySource> source_;
  DoneLog done_;
};

TEST_F(LayerVerification, HonestLayerBecomesVerifiedAndStaysReadable) {
  for (bool with_store : {true, false}) {
    Blob blob = HonestBlob();
    auto layer = Open(blob, with_store);
    EXPECT_EQ(layer->verification(), VerificationState::kOff);
    ASSERT_TRUE(ReadFirstFile(*layer).ok());
    done_.calls.clear();
    ASSERT_TRUE(layer->StartVerification(Fast()).ok());
    EXPECT_EQ(layer->StartVerification(Fast()).code(), StatusCode::kFailedPrecondition);
    ASSERT_TRUE(done_.WaitForCall());
    EXPECT_TRUE(done_.calls[0].ok()) << done_.calls[0].ToString();
    EXPECT_EQ(layer->verification(), VerificationState::kVerified);
    EXPECT_TRUE(layer->verification_status().ok());
    LayerStats s = layer->stats();
    EXPECT_EQ(s.verification, VerificationState::kVerified);
    EXPECT_EQ(s.verified_chunks, s.chunk_count);
    EXPECT_EQ(s.verification_failures, 0u);
    if (with_store) EXPECT_EQ(s.chunks_present, s.chunk_count);  // completed on disk too
    ASSERT_TRUE(ReadFirstFile(*layer).ok());
    EXPECT_EQ(layer->stats().quarantined_reads, 0u);
    store_.reset();
  }
}

TEST_F(LayerVerification, TocClaimingAnotherTarSha256FailsAndQuarantinesTheLayer) {
  crypto::Sha256Digest claimed{};
  claimed.fill(0x11);  // e.g. a popular base layer's diff_id
  Blob blob = ForgedBlob(nullptr, claimed);
  auto layer = Open(blob);
  // Lazily, the forged layer reads fine: every chunk authenticates.
  ASSERT_TRUE(ReadFirstFile(*layer).ok());
  ASSERT_TRUE(layer->StartVerification(Fast()).ok());
  ASSERT_TRUE(done_.WaitForCall());
  ASSERT_EQ(done_.calls.size(), 1u);
  EXPECT_EQ(done_.calls[0].code(), StatusCode::kAuthFailed);
  EXPECT_THAT(done_.calls[0].message(),
              HasSubstr("the TOC's tar_sha256 (the diff_id) is " + crypto::OciDigest(claimed)));
  EXPECT_EQ(layer->verification(), VerificationState::kFailed);
  EXPECT_EQ(layer->verification_status().message(), done_.calls[0].message());

  auto r = ReadFirstFile(*layer);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(r.status().message(), HasSubstr("quarantined"));
  std::optional<format::EntryView> e = layer->index().Find("file1");
  EXPECT_FALSE(layer->ViewFile(*e, 0, 10).ok());
  LayerStats s = layer->stats();
  EXPECT_EQ(s.verification, VerificationState::kFailed);
  EXPECT_EQ(s.verification_failures, 1u);
  EXPECT_EQ(s.quarantined_reads, 2u);
}

TEST_F(LayerVerification, TocThatDisagreesWithItsTarFails) {
  Blob blob = ForgedBlob([](std::vector<format::Entry>& e) { e[2].mode = 04755; });
  auto layer = Open(blob);
  ASSERT_TRUE(ReadFirstFile(*layer).ok());
  ASSERT_TRUE(layer->StartVerification(Fast()).ok());
  ASSERT_TRUE(done_.WaitForCall());
  EXPECT_EQ(done_.calls[0].message(), "TOC does not match the tar stream: entry 2: mode differs");
  EXPECT_EQ(layer->verification(), VerificationState::kFailed);
  EXPECT_FALSE(ReadFirstFile(*layer).ok());
}

TEST_F(LayerVerification, DiffIdTheLayerIsUsedUnderMustBeTheTocs) {
  Blob blob = HonestBlob();
  auto layer = Open(blob);
  VerifyOptions o = Fast();
  o.expected_diff_id = crypto::Sha256Digest{};
  const int reads_before = source_->reads();
  ASSERT_TRUE(layer->StartVerification(o).ok());
  ASSERT_TRUE(done_.WaitForCall());
  EXPECT_THAT(done_.calls[0].message(), HasSubstr("the layer is used as diff_id sha256:0000"));
  EXPECT_EQ(source_->reads(), reads_before);  // refused before fetching anything
  EXPECT_FALSE(ReadFirstFile(*layer).ok());
}

TEST_F(LayerVerification, StartDelayDefersTheFirstFetchAndStopEndsTheWait) {
  Blob blob = HonestBlob();
  auto layer = Open(blob);
  VerifyOptions o = Fast();
  o.start_delay = std::chrono::hours(1);
  const int reads_before = source_->reads();
  ASSERT_TRUE(layer->StartVerification(o).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(source_->reads(), reads_before);
  EXPECT_EQ(layer->verification(), VerificationState::kPending);
  layer->StopBackgroundFetch();  // returns at once, not after an hour
  std::lock_guard l(done_.mu);
  EXPECT_TRUE(done_.calls.empty());
}

TEST_F(LayerVerification, FailingSourceIsRetriedAndNeverSkipped) {
  Blob blob = HonestBlob();
  auto layer = Open(blob);
  source_->fail_next(3);
  ASSERT_TRUE(layer->StartVerification(Fast()).ok());
  ASSERT_TRUE(done_.WaitForCall());
  EXPECT_TRUE(done_.calls[0].ok()) << done_.calls[0].ToString();
  EXPECT_GE(layer->stats().verification_retries, 3u);
  EXPECT_EQ(layer->stats().verified_chunks, layer->stats().chunk_count);
}

// The author (or the registry) serves one record that does not match the digest the TOC pins:
// no retry can make it match, so the verification fails at once instead of staying pending.
TEST_F(LayerVerification, RecordThatFailsItsPinFailsTheVerificationAtOnce) {
  Blob blob = HonestBlob();
  auto layer = Open(blob);
  auto chunks = layer->index().chunks();
  ASSERT_GE(chunks.size(), 4u);
  const format::ChunkInfo& bad = chunks[3];
  source_->flip_byte(bad.blob_offset + bad.record_size() / 2);
  ASSERT_TRUE(layer->StartVerification(Fast()).ok());
  ASSERT_TRUE(done_.WaitForCall(std::chrono::seconds(10)));
  ASSERT_EQ(done_.calls.size(), 1u);
  EXPECT_EQ(done_.calls[0].code(), StatusCode::kAuthFailed) << done_.calls[0].ToString();
  EXPECT_THAT(done_.calls[0].message(), HasSubstr("chunk 3"));
  EXPECT_THAT(done_.calls[0].message(), HasSubstr("pinned"));
  EXPECT_THAT(done_.calls[0].message(), Not(HasSubstr("file")));  // never a file name
  EXPECT_EQ(layer->verification(), VerificationState::kFailed);
  EXPECT_EQ(layer->verification_status().code(), StatusCode::kAuthFailed);
  EXPECT_EQ(layer->stats().verification_retries, 0u);
  EXPECT_EQ(layer->stats().verification_failures, 1u);
  // Quarantined: even file0, whose chunks are honest, is refused.
  auto r = ReadFirstFile(*layer);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("quarantined"));
}

TEST_F(LayerVerification, UnreachableSourceStaysPendingAndStopsQuietly) {
  Blob blob = HonestBlob();
  auto layer = Open(blob);
  source_->set_down(true);
  ASSERT_TRUE(layer->StartVerification(Fast()).ok());
  for (int i = 0; i < 2000 && layer->stats().verification_retries < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(layer->stats().verification_retries, 5u);
  EXPECT_EQ(layer->verification(), VerificationState::kPending);
  Status pending = layer->verification_status();
  EXPECT_EQ(pending.code(), StatusCode::kUnavailable);
  EXPECT_THAT(pending.message(), HasSubstr("verification pending (0 of "));
  EXPECT_THAT(pending.message(), HasSubstr("flaky source: down"));
  layer->StopBackgroundFetch();
  EXPECT_EQ(layer->verification(), VerificationState::kPending);
  std::lock_guard l(done_.mu);
  EXPECT_TRUE(done_.calls.empty());
}

}  // namespace
}  // namespace lazycrypt::cache

namespace lazycrypt::cache {
namespace {

// A reader whose fetch never ends (a slow link, or a workload reading without pause) must not
// keep the layer unverified forever: past max_total_yield the verification goes on regardless.
TEST_F(LayerVerification, ReadsThatNeverPauseDelayTheVerificationOnlyBoundedly) {
  Blob blob = HonestBlob();
  auto layer = Open(blob, /*with_store=*/false);
  std::optional<format::EntryView> last = layer->index().Find("file3");
  ASSERT_TRUE(last);
  source_->hold_next_read();
  std::thread reader([&] {
    std::vector<uint8_t> buf(last->size());
    (void)layer->ReadFile(*last, 0, buf);
  });
  ASSERT_TRUE(source_->WaitUntilHolding());
  VerifyOptions o = Fast();
  o.foreground_quiet = std::chrono::milliseconds(50);
  o.max_total_yield = std::chrono::milliseconds(300);
  // Small batches, so that the first ones do not include the chunks the held read is fetching
  // (a batch waits for a chunk already in flight).
  o.rate_bytes_per_sec = 4 * format::kMinChunkSizeBytes;
  ASSERT_TRUE(layer->StartVerification(o).ok());
  // The held read is in flight the whole time; the verification must still make progress.
  for (int i = 0; i < 2000 && layer->stats().verified_chunks == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(layer->stats().verified_chunks, 0u);
  source_->release();
  reader.join();
  ASSERT_TRUE(done_.WaitForCall());
  EXPECT_TRUE(done_.calls[0].ok()) << done_.calls[0].ToString();
}

}  // namespace
}  // namespace lazycrypt::cache
