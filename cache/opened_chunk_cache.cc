#include "cache/opened_chunk_cache.h"

#include <string.h>  // explicit_bzero

#include <atomic>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lazycrypt::cache {

namespace {
std::atomic<OpenedChunk::ReleaseObserver> release_observer{nullptr};
}  // namespace

void OpenedChunk::SetReleaseObserverForTesting(ReleaseObserver observer) {
  release_observer.store(observer);
}

OpenedChunk::OpenedChunk(size_t size_bytes)
    : bytes_(std::make_unique_for_overwrite<uint8_t[]>(size_bytes)), size_(size_bytes) {}

OpenedChunk::~OpenedChunk() {
  if (size_ != 0) explicit_bzero(bytes_.get(), size_);
  if (ReleaseObserver observer = release_observer.load(std::memory_order_relaxed)) {
    observer(bytes_.get(), size_);
  }
}

namespace {

struct Key {
  uint64_t layer;
  uint64_t chunk;
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    return std::hash<uint64_t>()(k.layer * 0x9e3779b97f4a7c15ULL ^ k.chunk);
  }
};

using Clock = std::chrono::steady_clock;

}  // namespace

struct OpenedChunkCache::Impl {
  explicit Impl(const OpenedChunkCacheOptions& o) : options(o) {}
  const OpenedChunkCacheOptions options;

  mutable std::mutex mu;
  std::list<Key> lru;  // front = most recently used
  struct Entry {
    OpenedChunkPtr plain;
    std::list<Key>::iterator pos;
  };
  std::unordered_map<Key, Entry, KeyHash> entries;
  std::unordered_map<uint64_t, uint64_t> layer_bytes;  // open slots → bytes held
  uint64_t next_layer = 1;
  OpenedChunkCacheStats counters;  // bytes_held etc. kept current; budget/layers filled in stats()
  // Released since the last trim (evictions, closed slots), and when that trim was.
  uint64_t released_since_trim = 0;
  Clock::time_point last_trim{};

  // Removes the entry at `it` (REQUIRES mu), moving its pointer to `released`, which the caller
  // lets go after unlocking (the wipe runs outside the lock).
  void EraseLocked(std::unordered_map<Key, Entry, KeyHash>::iterator it,
                   std::vector<OpenedChunkPtr>& released) {
    const uint64_t size = it->second.plain->size();
    counters.bytes_held -= size;
    --counters.chunks_held;
    layer_bytes[it->first.layer] -= size;
    released_since_trim += size;
    lru.erase(it->second.pos);
    released.push_back(std::move(it->second.plain));
    entries.erase(it);
  }

  // After `released` was let go: asks the allocator to return free memory when enough was
  // released since the last time, at most once per trim_interval. REQUIRES mu not held.
  void MaybeTrim() {
    if (options.trim_after_released_bytes == 0) return;
    {
      std::lock_guard lock(mu);
      const auto now = Clock::now();
      if (released_since_trim < options.trim_after_released_bytes ||
          now - last_trim < options.trim_interval) {
        return;
      }
      released_since_trim = 0;
      last_trim = now;
      ++counters.trims;
    }
#if defined(__GLIBC__)
    // Freed plaintext and ciphertext buffers sit in glibc's arenas (its mmap threshold grows to
    // the largest block freed, so chunk-sized buffers come from the heap); this returns their
    // pages. Measured in docs/BENCHMARKS.md (memory budget).
    ::malloc_trim(0);
#endif
  }
};

void ReturnChunkBuffersToTheKernel() {
#if defined(__GLIBC__)
  // Setting it also fixes M_TRIM_THRESHOLD at its default (128 KiB) instead of twice the
  // dynamic threshold, so the main heap's free top is returned too.
  (void)::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
}

std::shared_ptr<OpenedChunkCache> OpenedChunkCache::Create(const OpenedChunkCacheOptions& options) {
  return std::shared_ptr<OpenedChunkCache>(new OpenedChunkCache(options));
}

OpenedChunkCache::OpenedChunkCache(const OpenedChunkCacheOptions& options)
    : impl_(std::make_unique<Impl>(options)) {}

OpenedChunkCache::~OpenedChunkCache() = default;

std::unique_ptr<OpenedChunkCache::LayerSlot> OpenedChunkCache::OpenSlot() {
  uint64_t id;
  {
    std::lock_guard lock(impl_->mu);
    id = impl_->next_layer++;
    impl_->layer_bytes.emplace(id, 0);
  }
  return std::unique_ptr<LayerSlot>(new LayerSlot(shared_from_this(), id));
}

uint64_t OpenedChunkCache::budget_bytes() const { return impl_->options.budget_bytes; }

OpenedChunkCacheStats OpenedChunkCache::stats() const {
  std::lock_guard lock(impl_->mu);
  OpenedChunkCacheStats s = impl_->counters;
  s.budget_bytes = impl_->options.budget_bytes;
  s.layers = impl_->layer_bytes.size();
  return s;
}

OpenedChunkCache::LayerSlot::~LayerSlot() {
  Impl& m = *cache_->impl_;
  std::vector<OpenedChunkPtr> released;
  {
    std::lock_guard lock(m.mu);
    for (auto it = m.lru.begin(); it != m.lru.end();) {
      const Key key = *it++;  // EraseLocked erases the node `it` was on
      if (key.layer == id_) m.EraseLocked(m.entries.find(key), released);
    }
    m.layer_bytes.erase(id_);
  }
  released.clear();
  m.MaybeTrim();
}

OpenedChunkPtr OpenedChunkCache::LayerSlot::Lookup(uint64_t chunk) {
  Impl& m = *cache_->impl_;
  std::lock_guard lock(m.mu);
  auto it = m.entries.find(Key{id_, chunk});
  if (it == m.entries.end()) {
    ++m.counters.misses;
    return nullptr;
  }
  ++m.counters.hits;
  m.lru.splice(m.lru.begin(), m.lru, it->second.pos);
  return it->second.plain;
}

bool OpenedChunkCache::LayerSlot::Contains(uint64_t chunk) const {
  Impl& m = *cache_->impl_;
  std::lock_guard lock(m.mu);
  return m.entries.count(Key{id_, chunk}) != 0;
}

bool OpenedChunkCache::LayerSlot::Insert(uint64_t chunk, OpenedChunkPtr plain) {
  if (!plain) return false;
  Impl& m = *cache_->impl_;
  const uint64_t size = plain->size();
  std::vector<OpenedChunkPtr> released;
  {
    std::lock_guard lock(m.mu);
    if (size > m.options.budget_bytes) {
      ++m.counters.not_kept;
      return false;
    }
    const Key key{id_, chunk};
    if (m.entries.count(key) != 0) return true;
    while (m.counters.bytes_held + size > m.options.budget_bytes && !m.lru.empty()) {
      auto victim = m.entries.find(m.lru.back());
      ++m.counters.evictions;
      m.counters.evicted_bytes += victim->second.plain->size();
      m.EraseLocked(victim, released);
    }
    m.lru.push_front(key);
    m.entries.emplace(key, Impl::Entry{std::move(plain), m.lru.begin()});
    m.counters.bytes_held += size;
    ++m.counters.chunks_held;
    ++m.counters.insertions;
    m.layer_bytes[id_] += size;
  }
  if (!released.empty()) {
    released.clear();  // wiped here (unless a reader still pins them), not under the lock
    m.MaybeTrim();
  }
  return true;
}

uint64_t OpenedChunkCache::LayerSlot::bytes_held() const {
  Impl& m = *cache_->impl_;
  std::lock_guard lock(m.mu);
  auto it = m.layer_bytes.find(id_);
  return it == m.layer_bytes.end() ? 0 : it->second;
}

}  // namespace lazycrypt::cache
