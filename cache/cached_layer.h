// CachedLayer: a LayerData that fetches chunk records lazily from a BlobSource, keeps their
// ciphertext in a ChunkStore (disk) and opened chunks in an OpenedChunkCache (memory: a budget
// shared with the daemon's other layers, or one of its own), prefetches chosen files and can
// complete the layer in the background.
//
// A chunk read goes: opened-chunk memory cache → disk store (record re-authenticated when opened)
// → fetch from the source. Concurrent misses of one chunk make one fetch (later readers wait for
// the first one's result, errors included); adjacent misses of one read are fetched with one
// ranged ReadAt, extended by read-ahead when the read continues the previous read of the file.
// No lock is held across a fetch, a disk read or a decrypt. No error is cached: the next read of
// a chunk that failed tries again. When the source is a MultiRangeBlobSource, the separate runs
// of missing records of one read (or prefetch, or background batch) go in one request.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/chunk_store.h"
#include "cache/layer_data.h"
#include "cache/multi_range_source.h"
#include "cache/opened_chunk_cache.h"
#include "common/io.h"
#include "common/status.h"
#include "format/chunk.h"
#include "format/keys.h"
#include "format/layer_index.h"

namespace lazycrypt::cache {

struct CachedLayerOptions {
  // Where opened (plaintext) chunks are kept: the node-wide budget shared with every other layer
  // of the daemon (cache/opened_chunk_cache.h). Null: a cache of this layer's own, of
  // memory_cache_bytes (lazycrypt mount, tools). Evicted buffers are wiped.
  std::shared_ptr<OpenedChunkCache> opened_cache;
  uint64_t memory_cache_bytes = uint64_t{32} << 20;
  // When a read starts a file (offset 0: an exec, a `cat`, a config being parsed) or continues
  // the previous read of the same file, up to this many raw bytes of the file's following chunks
  // are fetched in the same request (those already on disk are opened by the open_threads
  // workers instead): a file read whole costs one round trip, not one per chunk. 0 disables
  // read-ahead.
  uint64_t readahead_bytes = uint64_t{4} << 20;
  // Worker threads that read and open (authenticate, decrypt, decompress) the read-ahead chunks
  // of a sequential reader that are already in the disk store, in parallel with the reader.
  // 0: the reader opens every chunk itself when it reaches it.
  unsigned open_threads = 2;
  // Upper bound on one ranged request (a longer run of records is split).
  uint64_t max_request_bytes = uint64_t{32} << 20;
  // The blob's name in the ChunkStore; empty = "toc-<hex of the pinned TOC digest>", which names
  // exactly one blob because the sealed TOC is bound to the blob's salt.
  std::string store_key;
  // What Open accepts of the layer's TOC (size, chunks, entries); see format::TocLimits.
  format::TocLimits toc_limits;
  // A read (ReadFile, ViewFile) whose fetch fails transiently (Unavailable, IoError,
  // DeadlineExceeded: the registry is unreachable) is tried again, with backoff, until this long
  // after it began; then it fails. 0: it fails at once (after the source's own retries). A
  // mount that must ride out a registry outage waits rather than failing its readers.
  std::chrono::milliseconds read_retry_for{0};
};

// How CachedLayer::StartVerification runs.
struct VerifyOptions {
  // Bytes per second of blob read by the verification (0 = as fast as the source allows). It
  // always yields to on-demand reads: no request is sent while a read is fetching.
  uint64_t rate_bytes_per_sec = 0;
  // The diff_id the layer is used under (the image config's, from which the snapshotter computes
  // the chain ID), when known: the TOC's tar_sha256 must be this too (checked first, before any
  // fetch).
  std::optional<crypto::Sha256Digest> expected_diff_id;
  // A batch that cannot be fetched (a transient error: Unavailable, IoError, DeadlineExceeded) is
  // tried again after retry_initial, doubled after each failure up to retry_max: the
  // verification stays pending meanwhile, however long it takes. AuthFailed and Corruption are
  // final (the verification fails).
  // Begin this long after the start (and after the prefetch), so that the verification does not
  // compete with a container's first reads; it lengthens the window between mount and verdict
  // by as much (docs/FORMAT.md §8.4).
  std::chrono::milliseconds start_delay{0};
  // Each fetch of the verification waits until no on-demand read has been fetching for this
  // long: a container that is reading (a start, a scan) keeps the link; the verification uses the
  // pauses between its bursts. A read that arrives meanwhile waits for at most one batch.
  std::chrono::milliseconds foreground_quiet{500};
  // ...but for at most this long in all: a container (or an author's own workload) that reads
  // without pause must not keep a layer unverified, hence unquarantined, forever. Past it the
  // verification fetches at its rate whether or not reads are fetching.
  std::chrono::milliseconds max_total_yield{120000};
  std::chrono::milliseconds retry_initial{200};
  std::chrono::milliseconds retry_max{30000};
  // Run the verification thread at nice +10: hashing and decrypting a whole layer must not take
  // CPU from the containers reading it.
  bool lower_cpu_priority = true;
  // Called once when the verification ends (OK: verified; else the failure), on the verification
  // thread with no lock of the layer held. Not called when the layer is stopped or destroyed
  // before the end. Must not destroy the layer.
  std::function<void(const Status&)> on_done;
};

class CachedLayer final : public LayerData {
 public:
  // `index` and `opener` must belong to the same blob, which `source` serves (its size must be
  // the index's blob size): FailedPrecondition otherwise. `store` may be null (memory only) and
  // must outlive the layer. InvalidArgument for a bad store_key.
  static Result<std::shared_ptr<CachedLayer>> Create(std::shared_ptr<const format::LayerIndex> index,
                                                     std::shared_ptr<const format::ChunkOpener> opener,
                                                     std::shared_ptr<BlobSource> source,
                                                     ChunkStore* store,
                                                     const CachedLayerOptions& options = {});
  // Stops the background fetch and the prefetch (joins their threads, after the request they may
  // have in flight) and the read-ahead open workers. REQUIRES no call in progress.
  ~CachedLayer() override;
  CachedLayer(const CachedLayer&) = delete;
  CachedLayer& operator=(const CachedLayer&) = delete;

  const format::LayerIndex& index() const override;
  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override;
  // Spans straight into the opened chunks (no copy); the view pins them.
  Result<FileView> ViewFile(format::EntryView entry, uint64_t offset, size_t size) override;
  LayerStats stats() const override;

  // Fetches every chunk of `files` (regular entries of index(); others are ignored) that is not
  // already cached, with one ranged request per contiguous run of missing records; each record is
  // authenticated, stored, and its opened chunk kept in memory (as far as the memory cache
  // holds). Blocks until done. Returns the first error (the other runs are still fetched).
  Status Prefetch(const std::vector<format::EntryView>& files);
  // Prefetch of the files marked at conversion time (index().prefetch_entries()); OK when none.
  Status PrefetchMarked();
  // Prefetch of every chunk of the layer (as Prefetch: one request per contiguous run of missing
  // records).
  Status PrefetchAll();
  // PrefetchMarked on a thread of its own; returns at once. The marked chunks are claimed first
  // (in microseconds), so a read that needs one waits for the prefetch's request instead of
  // fetching it again, and reads of unmarked files proceed meanwhile. A background fetch started
  // later begins when the prefetch has ended. StopBackgroundFetch and destruction stop it between
  // requests (chunks it has not fetched then fail their waiting reads with Unavailable).
  // FailedPrecondition when already started.
  Status StartPrefetchMarked();
  // StartPrefetchMarked for every chunk of the layer (for a small layer whose whole blob the
  // mount already holds: lazylayer/mounted_layer.cc serves those reads from memory); `on_done`,
  // when set, is called on the prefetch's thread when it has ended (also when stopped).
  Status StartPrefetchAll(std::function<void()> on_done = nullptr);
  // True once a prefetch started by StartPrefetchMarked has ended (done, failed or stopped).
  bool prefetch_done() const;

  // Starts a thread that fetches every chunk not yet on disk, in blob order, into the store, at
  // most rate_bytes_per_sec (0 = unbounded), pausing while a foreground read is fetching.
  // A failed request is retried a few times with backoff, then skipped. Ends when every chunk has
  // been tried, on Stop, or on destruction. FailedPrecondition without a store or when already
  // started.
  Status StartBackgroundFetch(uint64_t rate_bytes_per_sec);
  // Stops the background fetch, a started prefetch and the verification promptly and waits for
  // their threads.
  // Idempotent.
  void StopBackgroundFetch();
  // True once a background fetch has finished its pass over the layer (not when stopped).
  bool background_fetch_done() const;

  // Starts the background verification of the whole layer (docs/FORMAT.md §8.4) on a thread of
  // its own: every chunk in order (from memory, the store, or fetched, and then stored),
  // SHA-256 of the tar stream against the TOC's tar_sha256 (and options.expected_diff_id), and
  // the TOC against the tar stream (format::TocTarMatcher). Begins when a started prefetch has
  // ended. On failure the layer is quarantined: every later ReadFile/ViewFile fails with
  // AuthFailed (EIO through FUSE) and counts in stats().quarantined_reads. A chunk that fails
  // to authenticate (AuthFailed: its pinned record SHA-256 or GCM) or is malformed (Corruption)
  // fails the verification at once, naming the chunk index. A batch that fails transiently
  // (Unavailable, IoError, DeadlineExceeded) is retried with backoff (the state stays pending; it
  // never becomes verified without every byte hashed). StopBackgroundFetch and destruction stop it.
  // FailedPrecondition when already started.
  Status StartVerification(VerifyOptions options = {});
  VerificationState verification() const;
  bool quarantined() const override { return verification() == VerificationState::kFailed; }
  // OK when verified; Unavailable while off or pending (with the progress and the last error);
  // the failure (AuthFailed or Corruption; never a file name) when failed.
  Status verification_status() const;

  // The key of this layer's records in the ChunkStore.
  const std::string& store_key() const;

  // Convenience for mounts: LayerIndex::Open on `source` (footer, key commitment, pinned TOC
  // digest, TOC: two ReadAt), ChunkOpener::Create, then Create. Errors as theirs.
  static Result<std::shared_ptr<CachedLayer>> Open(std::shared_ptr<BlobSource> source,
                                                   const format::LayerKey& key,
                                                   const crypto::Sha256Digest& pinned_toc_digest,
                                                   ChunkStore* store,
                                                   const CachedLayerOptions& options = {});

 private:
  struct Impl;
  explicit CachedLayer(std::unique_ptr<Impl> impl);
  // StartPrefetchMarked's and StartPrefetchAll's body: claims `chunks`, serves them on a thread.
  Status StartPrefetch(std::vector<uint64_t> chunks, std::function<void()> on_done);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lazycrypt::cache
