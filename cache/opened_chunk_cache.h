// OpenedChunkCache: the node-wide memory budget for opened chunks (authenticated, decrypted,
// decompressed plaintext), one LRU shared by every layer a daemon serves (issue 19): 20 mounted
// layers hold at most the budget together, not 32 or 64 MiB each.
//
// Every layer kind (cache::CachedLayer, the ocicrypt-estargz layer, the zindex layer) keeps its
// opened chunks here through a LayerSlot, keyed by chunk index within the layer; the slot's
// destruction (an unmounted layer) drops its entries. Values are shared pointers to OpenedChunk
// buffers that are wiped when the last reference goes: a FileView pinning a chunk keeps it valid
// after eviction, and evicted plaintext is wiped once its last reader is done. The budget counts
// what the cache holds, not what readers still pin.
//
// Thread-safe: every method may be called concurrently. No plaintext is wiped or freed under the
// cache's lock (evicted buffers are released after it is dropped).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "common/io.h"

namespace lazycrypt::cache {

// The plaintext of one opened chunk, in memory of its own (not initialized: the opener writes
// every byte), wiped when destroyed. Move-free, copy-free: held by shared_ptr.
class OpenedChunk {
 public:
  // Throws std::bad_alloc when the memory cannot be had, as new does.
  explicit OpenedChunk(size_t size_bytes);
  // explicit_bzero: a wipe the compiler may not elide, at memset speed (OPENSSL_cleanse's byte
  // loop cost ~10 % of a sequential read of 1 MiB chunks).
  ~OpenedChunk();
  OpenedChunk(const OpenedChunk&) = delete;
  OpenedChunk& operator=(const OpenedChunk&) = delete;

  uint8_t* data() { return bytes_.get(); }
  const uint8_t* data() const { return bytes_.get(); }
  size_t size() const { return size_; }
  MutableByteSpan mutable_span() { return {bytes_.get(), size_}; }
  ByteSpan span() const { return {bytes_.get(), size_}; }

  // Test seam (as crypto::SecureBuffer's): called with the bytes of every chunk released from
  // now on, after the wipe and before they are freed. Null removes it. Not for production code.
  using ReleaseObserver = void (*)(const uint8_t* data, size_t size);
  static void SetReleaseObserverForTesting(ReleaseObserver observer);

 private:
  std::unique_ptr<uint8_t[]> bytes_;
  size_t size_;
};
using OpenedChunkPtr = std::shared_ptr<const OpenedChunk>;

// Node-wide counters (the snapshotter's /metrics). A snapshot, read under the cache's lock.
struct OpenedChunkCacheStats {
  uint64_t budget_bytes = 0;   // the configured budget
  uint64_t bytes_held = 0;     // plaintext bytes the cache holds now (<= budget_bytes)
  uint64_t chunks_held = 0;    // chunks the cache holds now
  uint64_t layers = 0;         // layer slots open now
  uint64_t hits = 0;           // lookups that found their chunk
  uint64_t misses = 0;         // lookups that did not
  uint64_t insertions = 0;     // chunks kept
  uint64_t evictions = 0;      // chunks dropped to make room (not those of a closed slot)
  uint64_t evicted_bytes = 0;  // their bytes
  uint64_t not_kept = 0;       // chunks offered but larger than the whole budget (served, not kept)
  uint64_t trims = 0;          // times the allocator was asked to return freed memory
};

struct OpenedChunkCacheOptions {
  // Plaintext bytes kept for the whole node. 0 keeps nothing (every read opens its chunks).
  uint64_t budget_bytes = uint64_t{256} << 20;
  // After this many bytes were released by evictions and closed slots (and at most once per
  // trim_interval), the allocator is asked to give freed memory back to the kernel (glibc
  // malloc_trim): glibc keeps freed chunk-sized blocks in its arenas otherwise, so the daemon's
  // RSS would stay at its peak after a scan of a large layer. 0 = never.
  uint64_t trim_after_released_bytes = uint64_t{64} << 20;
  std::chrono::milliseconds trim_interval{1000};
};

class OpenedChunkCache : public std::enable_shared_from_this<OpenedChunkCache> {
 public:
  static std::shared_ptr<OpenedChunkCache> Create(const OpenedChunkCacheOptions& options = {});
  ~OpenedChunkCache();
  OpenedChunkCache(const OpenedChunkCache&) = delete;
  OpenedChunkCache& operator=(const OpenedChunkCache&) = delete;

  // One layer's view of the cache. Thread-safe. Destroying it drops the layer's entries (pinned
  // ones live on with their readers). Keeps the cache alive.
  class LayerSlot {
   public:
    ~LayerSlot();
    LayerSlot(const LayerSlot&) = delete;
    LayerSlot& operator=(const LayerSlot&) = delete;
    // The chunk, made most recently used; null when not held. Counts a hit or a miss.
    OpenedChunkPtr Lookup(uint64_t chunk);
    // True when held (no LRU change, not counted).
    bool Contains(uint64_t chunk) const;
    // Keeps `plain` as this layer's `chunk`, evicting least recently used chunks of any layer
    // until it fits. Not kept (false) when larger than the whole budget; an existing entry for
    // `chunk` is left as it is (true).
    bool Insert(uint64_t chunk, OpenedChunkPtr plain);
    // Plaintext bytes the cache holds for this layer now (LayerStats.memory_cache_bytes).
    uint64_t bytes_held() const;
    OpenedChunkCache& cache() const { return *cache_; }

   private:
    friend class OpenedChunkCache;
    LayerSlot(std::shared_ptr<OpenedChunkCache> cache, uint64_t id)
        : cache_(std::move(cache)), id_(id) {}
    std::shared_ptr<OpenedChunkCache> cache_;
    uint64_t id_;
  };
  std::unique_ptr<LayerSlot> OpenSlot();

  uint64_t budget_bytes() const;
  OpenedChunkCacheStats stats() const;

 private:
  struct Impl;
  explicit OpenedChunkCache(const OpenedChunkCacheOptions& options);
  std::unique_ptr<Impl> impl_;
};

// Makes the allocator (glibc malloc) serve every block of 128 KiB or more (opened chunks, record
// and request buffers) with a mapping of its own, returned to the kernel when freed. By default
// glibc raises that threshold to the largest block freed so far (up to 32 MiB), after which
// chunk-sized buffers come from its heaps and stay in the process once released: a daemon that
// read a large layer stayed near its peak (measured: 2 layers of 64 MiB read with a 16 MiB budget
// left 99 MiB of RSS, 53 MiB with this; docs/BENCHMARKS.md "Memory budget"). Process-wide: call
// once at start, from a daemon's main. No effect with another allocator.
void ReturnChunkBuffersToTheKernel();

}  // namespace lazycrypt::cache
