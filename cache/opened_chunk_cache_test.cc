// OpenedChunkCache: one LRU budget across layers, under concurrency, pins that outlive eviction,
// wipes, a zero budget, chunks larger than the budget; and two CachedLayers sharing one budget.
#include "cache/opened_chunk_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <optional>
#include <vector>

#include "cache/cached_layer.h"
#include "format/layer_index.h"
#include "format/writer.h"
#include "tar/tar_writer.h"

namespace lazycrypt::cache {
namespace {

OpenedChunkPtr Chunk(size_t size, uint8_t fill) {
  auto c = std::make_shared<OpenedChunk>(size);
  std::memset(c->data(), fill, size);
  return c;
}

std::shared_ptr<OpenedChunkCache> CacheOf(uint64_t budget_bytes) {
  OpenedChunkCacheOptions o;
  o.budget_bytes = budget_bytes;
  return OpenedChunkCache::Create(o);
}

TEST(OpenedChunkCache, OneLruAcrossLayers) {
  auto cache = CacheOf(3000);
  auto a = cache->OpenSlot();
  auto b = cache->OpenSlot();
  ASSERT_TRUE(a->Insert(0, Chunk(1000, 1)));
  ASSERT_TRUE(a->Insert(1, Chunk(1000, 2)));
  ASSERT_TRUE(b->Insert(0, Chunk(1000, 3)));  // same chunk index, other layer: its own entry
  EXPECT_EQ(a->Lookup(0)->data()[0], 1);      // a:0 most recent now; a:1 is the oldest
  EXPECT_EQ(b->Lookup(0)->data()[0], 3);
  ASSERT_TRUE(b->Insert(1, Chunk(1000, 4)));  // evicts a:1, the least recently used of the node
  EXPECT_FALSE(a->Contains(1));
  EXPECT_TRUE(a->Contains(0));
  EXPECT_TRUE(b->Contains(0));
  EXPECT_TRUE(b->Contains(1));
  EXPECT_EQ(a->bytes_held(), 1000u);
  EXPECT_EQ(b->bytes_held(), 2000u);
  OpenedChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.budget_bytes, 3000u);
  EXPECT_EQ(s.bytes_held, 3000u);
  EXPECT_EQ(s.chunks_held, 3u);
  EXPECT_EQ(s.layers, 2u);
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.evicted_bytes, 1000u);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(a->Lookup(1), nullptr);
  EXPECT_EQ(cache->stats().misses, 1u);
}

TEST(OpenedChunkCache, ClosingASlotDropsItsEntriesOnly) {
  auto cache = CacheOf(10000);
  auto a = cache->OpenSlot();
  auto b = cache->OpenSlot();
  ASSERT_TRUE(a->Insert(0, Chunk(1000, 1)));
  ASSERT_TRUE(a->Insert(7, Chunk(2000, 1)));
  ASSERT_TRUE(b->Insert(0, Chunk(500, 2)));
  a.reset();
  OpenedChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.bytes_held, 500u);
  EXPECT_EQ(s.chunks_held, 1u);
  EXPECT_EQ(s.layers, 1u);
  EXPECT_EQ(s.evictions, 0u);  // closing is not evicting
  EXPECT_EQ(b->Lookup(0)->data()[0], 2);
  // A new slot never sees a closed one's chunks.
  auto c = cache->OpenSlot();
  EXPECT_FALSE(c->Contains(0));
  EXPECT_FALSE(c->Contains(7));
}

TEST(OpenedChunkCache, APinnedChunkOutlivesItsEvictionAndItsSlot) {
  auto cache = CacheOf(1000);
  auto a = cache->OpenSlot();
  ASSERT_TRUE(a->Insert(0, Chunk(1000, 0x5a)));
  OpenedChunkPtr pinned = a->Lookup(0);
  ASSERT_TRUE(a->Insert(1, Chunk(1000, 0x11)));  // evicts chunk 0
  EXPECT_FALSE(a->Contains(0));
  a.reset();
  cache.reset();
  ASSERT_EQ(pinned->size(), 1000u);
  for (uint8_t byte : pinned->span()) ASSERT_EQ(byte, 0x5a);
}

// Released chunks, as the observer saw them (after the wipe, before the free).
std::mutex released_mu;
std::vector<std::vector<uint8_t>>* released_chunks = nullptr;
void RecordRelease(const uint8_t* data, size_t size) {
  std::lock_guard lock(released_mu);
  if (released_chunks) released_chunks->emplace_back(data, data + size);
}

TEST(OpenedChunkCache, EvictedAndDroppedChunksAreWipedWhenTheLastPinGoes) {
  std::vector<std::vector<uint8_t>> seen;
  {
    std::lock_guard lock(released_mu);
    released_chunks = &seen;
  }
  OpenedChunk::SetReleaseObserverForTesting(RecordRelease);
  {
    auto cache = CacheOf(1000);
    auto a = cache->OpenSlot();
    ASSERT_TRUE(a->Insert(0, Chunk(1000, 0xa1)));
    OpenedChunkPtr pinned = a->Lookup(0);
    ASSERT_TRUE(a->Insert(1, Chunk(1000, 0xb2)));  // evicts 0: pinned, not released yet
    {
      std::lock_guard lock(released_mu);
      EXPECT_TRUE(seen.empty());
    }
    pinned.reset();  // released now, by the last reader
    {
      std::lock_guard lock(released_mu);
      ASSERT_EQ(seen.size(), 1u);
    }
    a.reset();  // chunk 1 dropped with its slot
  }
  OpenedChunk::SetReleaseObserverForTesting(nullptr);
  std::lock_guard lock(released_mu);
  released_chunks = nullptr;
  ASSERT_EQ(seen.size(), 2u);
  for (const auto& bytes : seen) {
    EXPECT_EQ(bytes.size(), 1000u);
    EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; }));
  }
}

TEST(OpenedChunkCache, ZeroBudgetKeepsNothing) {
  auto cache = CacheOf(0);
  auto a = cache->OpenSlot();
  OpenedChunkPtr c = Chunk(100, 7);
  EXPECT_FALSE(a->Insert(0, c));
  EXPECT_FALSE(a->Contains(0));
  EXPECT_EQ(a->Lookup(0), nullptr);
  EXPECT_EQ(c->data()[0], 7);  // still the caller's to serve
  EXPECT_EQ(cache->stats().bytes_held, 0u);
  EXPECT_EQ(cache->stats().not_kept, 1u);
}

TEST(OpenedChunkCache, AChunkLargerThanTheBudgetIsServedNotKeptAndEvictsNothing) {
  auto cache = CacheOf(1000);
  auto a = cache->OpenSlot();
  ASSERT_TRUE(a->Insert(0, Chunk(600, 1)));
  OpenedChunkPtr big = Chunk(1001, 2);
  EXPECT_FALSE(a->Insert(1, big));
  EXPECT_TRUE(a->Contains(0));  // nothing was evicted for it
  EXPECT_FALSE(a->Contains(1));
  EXPECT_EQ(big->data()[1000], 2);
  EXPECT_EQ(cache->stats().not_kept, 1u);
  EXPECT_EQ(cache->stats().evictions, 0u);
}

TEST(OpenedChunkCache, BudgetHoldsUnderConcurrentLayers) {
  constexpr uint64_t kBudget = 64 * 1024;
  auto cache = CacheOf(kBudget);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> max_seen{0};
  std::thread watcher([&] {
    while (!done.load()) {
      const uint64_t held = cache->stats().bytes_held;
      uint64_t m = max_seen.load();
      while (held > m && !max_seen.compare_exchange_weak(m, held)) {
      }
    }
  });
  std::vector<std::thread> threads;
  std::atomic<int> bad_bytes{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto slot = cache->OpenSlot();
      std::mt19937 rng(t);
      for (int n = 0; n < 3000; ++n) {
        const uint64_t chunk = rng() % 64;
        const auto fill = static_cast<uint8_t>(t * 64 + chunk);
        if (OpenedChunkPtr p = slot->Lookup(chunk)) {
          if (p->data()[0] != fill || p->data()[p->size() - 1] != fill) ++bad_bytes;
        } else {
          slot->Insert(chunk, Chunk(1024 + rng() % 4096, fill));
        }
      }
      EXPECT_LE(slot->bytes_held(), kBudget);
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  watcher.join();
  EXPECT_EQ(bad_bytes.load(), 0);
  EXPECT_LE(max_seen.load(), kBudget);
  OpenedChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.layers, 0u);  // every slot closed
  EXPECT_EQ(s.bytes_held, 0u);
  EXPECT_GT(s.evictions, 0u);
}

// ---- Two CachedLayers on one budget ------------------------------------------------------------

constexpr size_t kChunk = format::kMinChunkSizeBytes;  // 64 KiB

struct Blob {
  std::vector<uint8_t> bytes;
  crypto::Sha256Digest toc_digest{};
  std::vector<uint8_t> data;  // the one file, "f"
};

Blob MakeBlob(uint32_t seed, size_t chunks) {
  Blob b;
  b.data.resize(chunks * kChunk);
  std::mt19937 rng(seed);
  for (auto& byte : b.data) byte = static_cast<uint8_t>(rng());
  MemoryOutputStream tar;
  tar::TarWriter w(tar);
  tar::Entry e;
  e.name = "f";
  e.type = tar::EntryType::kRegular;
  e.mode = 0644;
  e.size = b.data.size();
  EXPECT_TRUE(w.AppendEntry(e, b.data).ok());
  EXPECT_TRUE(w.Finish().ok());
  MemoryInputStream in(tar.bytes());
  MemoryOutputStream out;
  format::WriterOptions o;
  o.chunk_size_bytes = kChunk;
  o.threads = 1;
  auto r = format::WriteLayer(in, format::LayerKey(std::vector<uint8_t>(32, 0x5a)), out, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  b.bytes = out.Take();
  b.toc_digest = r->toc_digest;
  return b;
}

std::optional<format::EntryView> FileF(const CachedLayer& layer) {
  for (format::EntryView e : layer.index().entries()) {
    if (e.type() == format::EntryType::kRegular) return e;
  }
  return std::nullopt;
}

TEST(OpenedChunkCache, TwoCachedLayersShareOneBudget) {
  const uint64_t budget = 6 * kChunk;
  auto shared = CacheOf(budget);
  CachedLayerOptions o;
  o.opened_cache = shared;
  o.readahead_bytes = 0;
  o.open_threads = 0;
  o.memory_cache_bytes = uint64_t{1} << 30;  // ignored: the shared budget applies
  std::vector<Blob> blobs{MakeBlob(1, 8), MakeBlob(2, 8)};
  std::vector<std::shared_ptr<CachedLayer>> layers;
  for (const Blob& b : blobs) {
    auto layer = CachedLayer::Open(std::make_shared<MemoryBlobSource>(b.bytes),
                                   format::LayerKey(std::vector<uint8_t>(32, 0x5a)), b.toc_digest,
                                   nullptr, o);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    layers.push_back(*layer);
  }
  // Read both layers whole, alternately, chunk by chunk: each alone would fit 6 of its 8 chunks,
  // together they must stay within 6 chunks.
  std::vector<uint8_t> buf(kChunk);
  for (size_t c = 0; c < 8; ++c) {
    for (size_t l = 0; l < 2; ++l) {
      auto n = layers[l]->ReadFile(*FileF(*layers[l]), c * kChunk, buf);
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      ASSERT_EQ(*n, kChunk);
      ASSERT_EQ(0, std::memcmp(buf.data(), blobs[l].data.data() + c * kChunk, kChunk));
      const uint64_t held = shared->stats().bytes_held;
      ASSERT_LE(held, budget);
      ASSERT_EQ(layers[0]->stats().memory_cache_bytes + layers[1]->stats().memory_cache_bytes,
                held);
    }
  }
  EXPECT_GT(layers[0]->stats().memory_cache_bytes, 0u);
  EXPECT_GT(layers[1]->stats().memory_cache_bytes, 0u);
  EXPECT_EQ(shared->stats().layers, 2u);
  EXPECT_GT(shared->stats().evictions, 0u);
  // The most recent chunks are hits; the first ones of layer 0 were evicted for layer 1's.
  const uint64_t hits_before = layers[1]->stats().cache_hits;
  ASSERT_TRUE(layers[1]->ReadFile(*FileF(*layers[1]), 7 * kChunk, buf).ok());
  EXPECT_EQ(layers[1]->stats().cache_hits, hits_before + 1);
  const uint64_t opened_before = layers[0]->stats().chunks_opened;
  ASSERT_TRUE(layers[0]->ReadFile(*FileF(*layers[0]), 0, buf).ok());
  EXPECT_EQ(layers[0]->stats().chunks_opened, opened_before + 1);
  // An unmounted (destroyed) layer gives its share back.
  const uint64_t layer1_bytes = layers[1]->stats().memory_cache_bytes;
  layers[1].reset();
  EXPECT_EQ(shared->stats().bytes_held, layers[0]->stats().memory_cache_bytes);
  EXPECT_EQ(shared->stats().layers, 1u);
  EXPECT_GT(layer1_bytes, 0u);
}

TEST(OpenedChunkCache, ALayerWithoutASharedCacheKeepsItsOwnBudget) {
  Blob b = MakeBlob(3, 4);
  CachedLayerOptions o;
  o.memory_cache_bytes = 2 * kChunk;
  o.readahead_bytes = 0;
  o.open_threads = 0;
  auto layer = CachedLayer::Open(std::make_shared<MemoryBlobSource>(b.bytes),
                                 format::LayerKey(std::vector<uint8_t>(32, 0x5a)), b.toc_digest,
                                 nullptr, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::vector<uint8_t> buf(4 * kChunk);
  ASSERT_TRUE((*layer)->ReadFile(*FileF(**layer), 0, buf).ok());
  EXPECT_LE((*layer)->stats().memory_cache_bytes, 2 * kChunk);
  EXPECT_GT((*layer)->stats().memory_cache_bytes, 0u);
}

}  // namespace
}  // namespace lazycrypt::cache
