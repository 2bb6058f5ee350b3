// ChunkStore on its own: round trips, keys, slot validation after reopen, torn slots, eviction
// order and accounting, hole punching, removal, directory and file modes.
#include "cache/chunk_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <random>

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

std::unique_ptr<ChunkStore> OpenStore(const std::filesystem::path& dir, uint64_t cap = 1 << 20) {
  ChunkStoreOptions o;
  o.capacity_bytes = cap;
  auto s = ChunkStore::Open(dir, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(ChunkStore, PutGetRoundTripAndExactMatchOnly) {
  TempDir tmp("cache-store");
  auto store = OpenStore(tmp / "store");
  ASSERT_TRUE(store);
  auto rec = Bytes(5000, 1);
  auto put = store->Put("blob-a", 3, 123456, rec);
  ASSERT_TRUE(put.ok() && *put) << put.status().ToString();
  EXPECT_TRUE(store->Contains("blob-a", 3));
  EXPECT_FALSE(store->Contains("blob-a", 2));
  EXPECT_FALSE(store->Contains("blob-b", 3));
  std::vector<uint8_t> out(5000);
  auto got = store->Get("blob-a", 3, 123456, out);
  ASSERT_TRUE(got.ok() && *got);
  EXPECT_EQ(out, rec);
  // Another offset or size than stored: absent, not a wrong record.
  EXPECT_FALSE(*store->Get("blob-a", 3, 123457, out));
  std::vector<uint8_t> shorter(4999);
  EXPECT_FALSE(*store->Get("blob-a", 3, 123456, shorter));
  EXPECT_EQ(store->ChunksPresent("blob-a"), 1u);
  EXPECT_EQ(store->BytesPresent("blob-a"), 5000u);
  EXPECT_EQ(store->stats().usage_bytes, 5000u);
}

TEST(ChunkStore, RejectsBadKeys) {
  TempDir tmp("cache-store");
  auto store = OpenStore(tmp / "store");
  ASSERT_TRUE(store);
  auto rec = Bytes(10, 1);
  for (std::string bad : {std::string(""), std::string("../x"), std::string(".hidden"),
                          std::string("a/b"), std::string("sha256:ab"), std::string(129, 'a')}) {
    auto r = store->Put(bad, 0, 0, rec);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
  EXPECT_TRUE(ValidateBlobKey("toc-0123abcdef").ok());
}

TEST(ChunkStore, DirIs0700FilesAre0600AndModeIsRepairedOnReopen) {
  TempDir tmp("cache-store");
  auto dir = tmp / "state" / "chunks";
  {
    auto store = OpenStore(dir);
    ASSERT_TRUE(store);
    ASSERT_TRUE(*store->Put("b", 0, 0, Bytes(100, 2)));
  }
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  for (auto& f : lazycrypt::testing::ListFiles(dir)) {
    ASSERT_EQ(stat((dir / f).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << f;
  }
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  auto store = OpenStore(dir);
  ASSERT_TRUE(store);
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST(ChunkStore, ReopenFindsRecordsAndIgnoresTornSlots) {
  TempDir tmp("cache-store");
  auto dir = tmp / "store";
  auto r0 = Bytes(700, 10), r1 = Bytes(800, 11), r2 = Bytes(900, 12);
  {
    auto store = OpenStore(dir);
    ASSERT_TRUE(store);
    ASSERT_TRUE(*store->Put("b", 0, 0, r0));
    ASSERT_TRUE(*store->Put("b", 1, 700, r1));
    ASSERT_TRUE(*store->Put("b", 2, 1500, r2));
  }
  // A torn slot (chunk 1's crc no longer matches) reads as absent after a restart.
  lazycrypt::testing::FlipBit(dir / "b.slots", 16 * 1 + 13);
  auto store = OpenStore(dir);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->ChunksPresent("b"), 2u);
  EXPECT_EQ(store->BytesPresent("b"), 1600u);
  EXPECT_FALSE(store->Contains("b", 1));
  std::vector<uint8_t> out(900);
  ASSERT_TRUE(*store->Get("b", 2, 1500, out));
  EXPECT_EQ(out, r2);
}

TEST(ChunkStore, EvictsLeastRecentlyUsedAndPunchesHoles) {
  TempDir tmp("cache-store");
  auto dir = tmp / "store";
  const size_t rec = 64 * 1024;
  auto store = OpenStore(dir, 4 * rec);
  ASSERT_TRUE(store);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(*store->Put("b", i, i * rec, Bytes(rec, i)));
  // Touch chunk 0 so that chunk 1 is the least recently used.
  std::vector<uint8_t> out(rec);
  ASSERT_TRUE(*store->Get("b", 0, 0, out));
  ASSERT_TRUE(*store->Put("b", 4, 4 * rec, Bytes(rec, 4)));
  EXPECT_TRUE(store->Contains("b", 0));
  EXPECT_FALSE(store->Contains("b", 1));
  EXPECT_TRUE(store->Contains("b", 4));
  auto st = store->stats();
  EXPECT_EQ(st.usage_bytes, 4 * rec);
  EXPECT_EQ(st.evictions, 1u);
  // The evicted record's blocks are gone from the data file.
  struct stat fst {};
  ASSERT_EQ(stat((dir / "b.data").c_str(), &fst), 0);
  EXPECT_LE(static_cast<uint64_t>(fst.st_blocks) * 512, 4 * rec + 8192);
  // A record bigger than the whole cap is refused, nothing evicted for it.
  auto big = store->Put("b", 9, 0, Bytes(5 * rec, 9));
  ASSERT_TRUE(big.ok());
  EXPECT_FALSE(*big);
  EXPECT_EQ(store->stats().chunks_present, 4u);
  // A smaller cap on reopen evicts down to it.
  store.reset();
  store = OpenStore(dir, 2 * rec);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->stats().usage_bytes, 2 * rec);
}

TEST(ChunkStore, OpenSurvivesJunkAndRemovesOrphans) {
  TempDir tmp("cache-store");
  auto dir = tmp / "store";
  {
    auto store = OpenStore(dir);
    ASSERT_TRUE(store);
    ASSERT_TRUE(*store->Put("good", 0, 0, Bytes(100, 1)));
  }
  std::filesystem::create_directory(dir / "weird.slots");            // unreadable as slots
  lazycrypt::testing::WriteFileString(dir / "notes.txt", "not ours");  // left alone
  lazycrypt::testing::WriteFileString(dir / "orphan.data", "x");      // no slots: removed
  auto store = OpenStore(dir);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Contains("good", 0));
  EXPECT_EQ(store->stats().chunks_present, 1u);
  EXPECT_TRUE(std::filesystem::exists(dir / "notes.txt"));
  EXPECT_FALSE(std::filesystem::exists(dir / "orphan.data"));
}

TEST(ChunkStore, DropAndRemoveBlob) {
  TempDir tmp("cache-store");
  auto dir = tmp / "store";
  auto store = OpenStore(dir);
  ASSERT_TRUE(store);
  ASSERT_TRUE(*store->Put("b", 0, 0, Bytes(100, 1)));
  ASSERT_TRUE(*store->Put("b", 1, 100, Bytes(100, 2)));
  ASSERT_TRUE(store->Drop("b", 0).ok());
  EXPECT_FALSE(store->Contains("b", 0));
  EXPECT_EQ(store->stats().usage_bytes, 100u);
  store.reset();
  store = OpenStore(dir);
  EXPECT_FALSE(store->Contains("b", 0));  // the drop was persisted
  EXPECT_TRUE(store->Contains("b", 1));
  ASSERT_TRUE(store->RemoveBlob("b").ok());
  EXPECT_EQ(store->stats().usage_bytes, 0u);
  EXPECT_TRUE(lazycrypt::testing::ListFiles(dir).empty());
}

}  // namespace
}  // namespace lazycrypt::cache
