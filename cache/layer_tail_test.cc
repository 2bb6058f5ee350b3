// The stored tail of a blob (footer and sealed TOC, issue 19): ChunkStore::PutTail/GetTail/
// DropTail and TailCachingSource, on a real store directory and a counting in-memory blob.
#include "cache/layer_tail.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "cache/chunk_store.h"
#include "tests/test_util.h"

namespace lazycrypt::cache {
namespace {

using lazycrypt::testing::TempDir;

std::vector<uint8_t> Bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class CountingSource final : public BlobSource {
 public:
  explicit CountingSource(std::vector<uint8_t> bytes) : inner_(std::move(bytes)) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    ++reads;
    return inner_.ReadAt(offset, out);
  }
  int reads = 0;

 private:
  MemoryBlobSource inner_;
};

std::unique_ptr<ChunkStore> OpenStore(const std::filesystem::path& dir) {
  auto s = ChunkStore::Open(dir);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(ChunkStoreTail, RoundTripSurvivesReopenAndGoesWithTheBlob) {
  TempDir tmp("tail-store");
  auto store = OpenStore(tmp / "store");
  ASSERT_TRUE(store);
  auto got = store->GetTail("blob-a");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  const auto bytes = Bytes(3000, 1);
  ASSERT_TRUE(store->PutTail("blob-a", 7000, bytes).ok());
  ASSERT_TRUE(*store->Put("blob-a", 0, 0, Bytes(100, 2)));
  store.reset();
  store = OpenStore(tmp / "store");  // a restarted daemon
  got = store->GetTail("blob-a");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->blob_offset, 7000u);
  EXPECT_EQ((*got)->bytes, bytes);
  EXPECT_TRUE(store->Contains("blob-a", 0));
  EXPECT_EQ(store->PutTail("blob-a", 0, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PutTail("../x", 0, bytes).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(store->RemoveBlob("blob-a").ok());
  EXPECT_FALSE(store->GetTail("blob-a")->has_value());
  EXPECT_TRUE(lazycrypt::testing::ListFiles(tmp / "store").empty());
}

TEST(ChunkStoreTail, DamagedTailIsAbsentAndRemoved) {
  TempDir tmp("tail-store");
  auto store = OpenStore(tmp / "store");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->PutTail("b", 10, Bytes(500, 3)).ok());
  const auto path = tmp / "store" / "b.tail";
  ASSERT_TRUE(std::filesystem::exists(path));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto got = store->GetTail("b");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(TailCachingSource, KeepsTheTailReadsAndServesThemFromTheStoreNextTime) {
  TempDir tmp("tail-source");
  auto store = OpenStore(tmp / "store");
  ASSERT_TRUE(store);
  const auto blob = Bytes(10000, 4);
  CountingSource inner(blob);
  std::vector<uint8_t> out;
  {
    TailCachingSource first(inner, store.get(), "k");
    EXPECT_EQ(first.stored_bytes(), 0u);
    out.resize(1000);  // the tail read
    ASSERT_TRUE(first.ReadAt(9000, out).ok());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), blob.begin() + 9000));
    out.resize(500);  // the rest of a larger TOC, just before it
    ASSERT_TRUE(first.ReadAt(8500, out).ok());
    out.resize(100);  // inside what was read: no second request
    ASSERT_TRUE(first.ReadAt(8900, out).ok());
    EXPECT_EQ(inner.reads, 2);
    EXPECT_EQ(first.reads_from_inner(), 2u);
    // Nothing read from 8000: cannot be stored.
    EXPECT_EQ(first.Persist(8000).code(), StatusCode::kFailedPrecondition);
    ASSERT_TRUE(first.Persist(8600).ok());
  }
  {
    TailCachingSource again(inner, store.get(), "k");
    EXPECT_EQ(again.stored_bytes(), 1400u);
    out.resize(1400);
    ASSERT_TRUE(again.ReadAt(8600, out).ok());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), blob.begin() + 8600));
    EXPECT_EQ(inner.reads, 2) << "served from the store";
    EXPECT_EQ(again.reads_from_store(), 1u);
    EXPECT_EQ(again.reads_from_inner(), 0u);
    ASSERT_TRUE(again.Persist(8600).ok());  // there already: nothing to do
    // Before the stored bytes: from the source.
    out.resize(10);
    ASSERT_TRUE(again.ReadAt(100, out).ok());
    EXPECT_EQ(inner.reads, 3);
    // Dropped (it did not open the layer): from the source again, and gone from the store.
    ASSERT_TRUE(again.Drop().ok());
    out.resize(1400);
    ASSERT_TRUE(again.ReadAt(8600, out).ok());
    EXPECT_EQ(inner.reads, 4);
  }
  EXPECT_FALSE(store->GetTail("k")->has_value());
  // A stored tail that does not end where this blob ends is not used.
  ASSERT_TRUE(store->PutTail("k", 9000, Bytes(500, 5)).ok());
  TailCachingSource other(inner, store.get(), "k");
  EXPECT_EQ(other.stored_bytes(), 0u);
  // Without a store: a pass-through.
  TailCachingSource none(inner, nullptr, "k");
  out.resize(104);
  ASSERT_TRUE(none.ReadAt(10000 - 104, out).ok());
  EXPECT_TRUE(none.Persist(9896).ok());
}

}  // namespace
}  // namespace lazycrypt::cache
