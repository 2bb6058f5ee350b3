// What the lazily served ocicrypt AES-CTR layers share (docs/FORMAT.md §10 ocicrypt-estargz,
// §11 indexed ocicrypt): both fetch ciphertext ranges of a standard ocicrypt blob, decrypt them
// with CTR and serve chunks through the FUSE file system; both can authenticate a chunk only
// against a table the layer's key holder wrote (the eStargz TOC, the sealed index), so both
// read the whole blob once in the background and check ocicrypt's HMAC, the blob digest,
// privopts' plaintext digest and the diff_id (the chain ID binding) before the layer counts as
// verified; any failure quarantines the layer (every read of its files is EIO).
//
// Here: the blob source that counts what it reads (CountingSource), the LayerData part both
// share (CtrLayerData: verification state, quarantine, foreground fetch tracking, counters) and
// the mounted layer (CtrMountedLayer: the FUSE mount, the background thread that prefetches and
// verifies, with the yield bound below). A format supplies the chunk decoder (its LayerData)
// and the part of the verification that reads the decrypted stream (VerifyContent).
//
// Read-ahead: a read that starts a regular file (offset 0) or continues the previous read of it
// hands the chunks after the ones it needs (up to CtrLayerOptions::readahead_bytes of
// uncompressed bytes, never past the file's end) to a small pool of the layer's own workers,
// which load them in parallel while the reader loads its own; the chunks a read needs after its
// first are handed to them too, first. Each load is Chunk(j) (single-flight: a reader that
// reaches chunk j waits for that load instead of fetching again); the reader never waits for
// the pool. Read-ahead fetches are fetches (counted in the stats; the verification yields to
// them); a failed one is dropped (the reader that needs the chunk tries again).
//
// Verification yields to on-demand reads: it sends no request while a read is fetching a chunk.
// That yield is bounded (CtrLayerOptions::verify_max_yield_ms, summed over the layer's life):
// a container that keeps reading cannot keep a layer pending, and so unquarantined, forever;
// once the bound is spent the verification proceeds at its rate limit regardless of reads.
//
// Thread-safe as their parts.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/chunk_store.h"
#include "cache/layer_data.h"
#include "cache/opened_chunk_cache.h"
#include "common/io.h"
#include "common/status.h"
#include "fusefs/fuse_fs.h"
#include "image/layer.h"
#include "image/oci.h"
#include "lazylayer/held_bytes.h"
#include "lazylayer/mounted_layer.h"

namespace lazycrypt::lazylayer {

// Counts what is read from a blob source (a layer's stats). A small layer's blob read whole by
// its mount (CtrLayerOptions::whole_layer_bytes) is held here: reads inside it are served from
// memory, uncounted (its one request was counted), until Release.
class CountingSource final : public BlobSource {
 public:
  explicit CountingSource(std::shared_ptr<BlobSource> inner)
      : inner_(std::move(inner)), uncounted_(*this) {}
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  // The source's reads that are not the layer's fetches (the verification's): the held bytes,
  // else the inner source, uncounted.
  BlobSource& uncounted() { return uncounted_; }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  uint64_t nanos() const { return nanos_.load(std::memory_order_relaxed); }
  // `bytes`: the blob from offset 0 (the whole blob, read by the caller through this source),
  // served from memory from now on. Ciphertext: dropped by Release, not wiped.
  void Hold(std::vector<uint8_t> bytes) { held_.Hold(std::move(bytes)); }
  void Release() { held_.Release(); }
  bool holding() const { return held_.holding(); }

 private:
  class Uncounted final : public BlobSource {
   public:
    explicit Uncounted(CountingSource& c) : c_(c) {}
    uint64_t size() const override { return c_.size(); }
    Status ReadAt(uint64_t offset, MutableByteSpan out) override {
      if (c_.held_.Serve(offset, out)) return Status::Ok();
      return c_.inner_->ReadAt(offset, out);
    }

   private:
    CountingSource& c_;
  };

  std::shared_ptr<BlobSource> inner_;
  Uncounted uncounted_;
  std::atomic<uint64_t> bytes_{0}, requests_{0}, errors_{0}, nanos_{0};
  HeldBytes held_;
};

// Reads a BlobSource from start to end in pieces of `piece_bytes` (one ranged request each);
// before each request `before_read(bytes)` may wait (yield to readers, pace the rate) and
// returns false to stop (Unavailable "stopped"). `on_piece`, when set, sees every piece read,
// with its blob offset, before it is handed on.
class LargeReadStream final : public InputStream {
 public:
  LargeReadStream(BlobSource& blob, size_t piece_bytes, std::function<bool(size_t)> before_read)
      : blob_(blob), before_read_(std::move(before_read)), buffer_(piece_bytes) {}
  Result<size_t> Read(MutableByteSpan out) override;
  void set_on_piece(std::function<Status(uint64_t offset, ByteSpan piece)> f) {
    on_piece_ = std::move(f);
  }

 private:
  BlobSource& blob_;
  std::function<bool(size_t)> before_read_;
  std::function<Status(uint64_t, ByteSpan)> on_piece_;
  std::vector<uint8_t> buffer_;
  uint64_t offset_ = 0;
  size_t pos_ = 0, filled_ = 0;
};

struct CtrLayerOptions {
  fusefs::MountOptions mount;
  // Ciphertext of fetched (and verified) chunks on local disk, shared by layers; null = memory
  // only. Must outlive the layer.
  cache::ChunkStore* store = nullptr;
  // Where opened (decrypted, inflated, verified) chunks are kept, wiped when dropped: the
  // node-wide budget shared with the daemon's other layers (cache/opened_chunk_cache.h); null = a
  // cache of this layer's own of opened_chunk_cache_bytes.
  std::shared_ptr<cache::OpenedChunkCache> opened_cache;
  uint64_t opened_chunk_cache_bytes = uint64_t{64} << 20;
  // Fetch the files the layer marks for prefetch in the background once mounted.
  bool prefetch = true;
  // A layer whose blob is at most this many bytes, and of which the chunk store holds nothing, is
  // read whole by the one request its mount makes anyway (instead of its tail): the background
  // thread then opens every chunk from those bytes (no request but the indexed format's windows)
  // and the verification reads them too; they are dropped when both are done. 0 = never (the
  // snapshotter's [fetch] whole_layer_bytes, as for the GCM format).
  uint64_t whole_layer_bytes = 0;
  // Read-ahead (above): bytes of a file's following chunks a sequential read starts loading in
  // the background, each chunk counted as the larger of its uncompressed size and what is
  // fetched for it. 0 = no read-ahead (and a read loads its chunks one by one).
  uint64_t readahead_bytes = uint64_t{4} << 20;
  // Verify the whole layer in the background once mounted (see above).
  bool verify = true;
  uint32_t verify_start_delay_ms = 0;
  // The verification's fetch rate (bytes/s; 0 = as fast as the source allows). It sends no
  // request while a read is fetching a chunk (up to verify_max_yield_ms in all), and runs at a
  // lower CPU priority.
  uint64_t verify_rate_bytes_per_sec = 0;
  // The most time the verification spends waiting for reads' fetches, over the layer's life;
  // then it no longer waits for them (only for its rate). 0 = it never waits for reads.
  uint32_t verify_max_yield_ms = 120 * 1000;
  // Given the verified layer's diff_id ("sha256:<hex>" of its tar stream): OK when the layer may
  // be used under it; an error quarantines the layer. Null: any diff_id is accepted.
  std::function<Status(const std::string& diff_id)> check_diff_id;
  // Called once when the verification ends (OK or the failure naming the layer, never a file),
  // on the verification thread; must not destroy the layer. Not called when the layer is
  // destroyed first.
  std::function<void(const Status&)> on_verified;
};

// True when a layer of `blob_size` bytes is read whole (or loaded whole) at mount: no larger
// than options.whole_layer_bytes, and new to this node (the chunk store holds none of its chunks
// under `store_key`).
bool ReadWholeAtMount(const CtrLayerOptions& options, uint64_t blob_size,
                      const std::string& store_key);

// The layer's part of the opened-chunk memory: options.opened_cache when the daemon gives one,
// else a cache of its own of options.opened_chunk_cache_bytes.
std::unique_ptr<cache::OpenedChunkCache::LayerSlot> OpenedChunkSlot(const CtrLayerOptions& options);

// The LayerData part the CTR layers share: chunk i read as opened-chunk cache → disk store
// (ciphertext, opened again exactly as fresh bytes are; a damaged one is dropped and fetched
// again) → fetch of its ciphertext range (one fetch however many readers ask; no error is
// cached), verification state and quarantine, tracking of on-demand fetches (which the
// verification yields to), counters.
class CtrLayerData : public cache::LayerData {
 public:
  // `store` may be null (memory only); it outlives this.
  CtrLayerData(std::shared_ptr<CountingSource> ciphertext,
               std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened,
               cache::ChunkStore* store, std::string store_key)
      : ciphertext_(std::move(ciphertext)),
        store_(store),
        store_key_(std::move(store_key)),
        opened_(std::move(opened)) {}
  // Stops the read-ahead workers (a derived class's destructor must have called
  // StopReadAhead: they call its virtual functions).
  ~CtrLayerData() override;
  CountingSource& ciphertext() { return *ciphertext_; }

  // The opened chunk `i` (cached, or fetched and opened once however many readers ask). A reader
  // that waited for a prefetch's or read-ahead's load of it that failed (stopped, a failed run)
  // then loads it itself, once (single-flight as any load); another reader's failure is its
  // answer too.
  Result<cache::OpenedChunkPtr> Chunk(uint32_t i) { return LoadChunk(i, /*reader=*/true); }
  // Loads `chunks` (a prefetch: ascending) with as few requests as their ciphertext allows: each
  // chunk not opened, loading or on disk is claimed first, all of them before any request (a
  // reader that needs one waits for this load instead of fetching it again), then the claimed
  // chunks' ciphertext is read in runs of at most `max_request_bytes` (gaps of at most 64 KiB
  // read through) with one request each, up to kLoadRunsInFlight runs at once (this thread and
  // up to 3 of its own: the marked files of an unmodified layer lie scattered over the blob, one
  // run each, and a round trip each in a row would cost what the marks save). The side bytes of
  // a run's chunks (the indexed format's windows) are fetched by FetchSides on a thread of their
  // own while the run's ciphertext is (no round trip of their own), and each chunk is opened
  // from its record (ciphertext, then side bytes) as a reader's fetch would be (authenticated,
  // stored, kept). A run that fails (its request, its side bytes, memory) fails only its own
  // chunks (those with side bytes when only FetchSides failed); every claimed chunk's waiting
  // readers get an answer whatever ends the load (errors are not kept: they try again). Each
  // run's requests count as a fetch in flight (the verification yields to them); `stopped` is
  // asked before each run's request (the runs not yet sent fail "stopped"; their readers then
  // load their chunks themselves, see Chunk). The claim is all or nothing: what throws before or
  // while chunks are claimed (memory, the format's ChunkCiphertext) leaves none claimed. A run's
  // ciphertext (gaps included) and its chunks' side bytes together are at most
  // `max_request_bytes`; a chunk bigger than that on its own is not claimed (its readers load
  // it). Returns the first failed run's error (in blob order). Memory: up to kLoadRunsInFlight
  // runs at once, each holding at most max_request_bytes of ciphertext and side bytes and the
  // record of the chunk it is opening (at most as much again), besides the opened chunks kept in
  // the opened-chunk budget.
  static constexpr size_t kLoadRunsInFlight = 4;
  Status LoadRuns(const std::vector<uint32_t>& chunks, const std::function<bool()>& stopped,
                  uint64_t max_request_bytes = uint64_t{32} << 20);

  // Read-ahead (above) of up to `bytes` per read; 0 = none. Set before the layer is mounted.
  void set_readahead_bytes(uint64_t bytes) { readahead_bytes_.store(bytes); }
  // Drops the queued read-ahead, waits for the loads in flight and joins the workers; later
  // read-ahead is dropped. Idempotent. Derived classes call it first in their destructors.
  void StopReadAhead();
  // Chunks handed to the read-ahead workers so far (each at most once while queued or loading).
  uint64_t readahead_chunks() const { return readahead_chunks_.load(); }
  // True when no read-ahead is queued or loading.
  bool readahead_idle() const;

  bool quarantined() const override { return verification_.load() == Verification::kFailed; }
  // AuthFailed (counted) when quarantined; OK otherwise. Every read calls it first.
  Status CheckNotQuarantined();

  void set_verify_on() { verify_on_ = true; }
  // Waits until no read is fetching a chunk, or for `at_most`; false when none is fetching.
  bool WaitWhileFetching(std::chrono::milliseconds at_most);
  void Finish(Verification v, Status status);
  Verification verification() const { return verification_.load(); }
  Status verification_status() const;

 protected:
  struct CiphertextRange {
    CiphertextRange() = default;
    CiphertextRange(uint64_t offset_in, uint64_t size_in) : offset(offset_in), size(size_in) {}
    uint64_t offset = 0, size = 0;
    // Bytes chunk i needs besides its ciphertext, from elsewhere (the indexed format: the span's
    // sealed window, in the index blob): FetchSide gets them on a thread of its own while the
    // ciphertext is fetched (no round trip of their own), and the store keeps them after the
    // ciphertext in the chunk's record. 0 = none (FetchSide is not called).
    uint64_t side_size = 0;
    // Where the store keeps the record (ciphertext, then side bytes) in its sparse file, when not
    // at `offset` (records must not overlap: ChunkStore).
    std::optional<uint64_t> store_offset;
  };
  // The blob bytes chunk i needs, checked to lie inside the blob and to be of a size worth
  // fetching (Corruption otherwise).
  virtual Result<CiphertextRange> ChunkCiphertext(uint32_t i) const = 0;
  // Chunk i's side bytes (range.side_size of them) into `out`. Called concurrently with the
  // ciphertext's fetch, only when range.side_size > 0. Default: Internal (no format has them).
  virtual Status FetchSide(uint32_t i, const CiphertextRange& range, MutableByteSpan out);
  // The side bytes of several chunks of one LoadRuns run (ascending, each with side_size > 0):
  // chunk chunks[k]'s into outs[k] (ranges[k].side_size bytes), in as few requests as the format
  // can make of them; called on a thread of its own while the run's ciphertext is fetched (and
  // concurrently with other runs' calls). An error fails every chunk given. Default: FetchSide
  // for each, in order.
  virtual Status FetchSides(std::span<const uint32_t> chunks,
                            std::span<const CiphertextRange> ranges,
                            std::span<const MutableByteSpan> outs);
  // Chunk i opened (decrypted, decoded, verified against the format's table) from exactly the
  // ChunkCiphertext(i) bytes and its side bytes (empty when it has none); AuthFailed/Corruption
  // when they are not the chunk's.
  virtual Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t i, ByteSpan ciphertext,
                                                       ByteSpan side) = 0;
  // The counters this class keeps, the verification state, the opened chunks held and the
  // store's presence.
  void FillStats(cache::LayerStats& s) const;
  // ReadFile's part of the read-ahead, called before it loads the chunks of a read of `bytes` at
  // `offset` of regular file `entry` (its index): the read needs chunks [first, next) and the file
  // ends with chunk end - 1. Hands the read's chunks after `first` to the workers, and, when the
  // read starts the file or continues its previous read, the file's chunks from `next` on, up to
  // readahead_bytes (index().chunks()[j].raw_size each). Never waits for a load.
  void ReadAhead(uint32_t entry, uint64_t offset, uint64_t bytes, uint32_t first, uint32_t next,
                 uint32_t end);

  std::shared_ptr<CountingSource> ciphertext_;
  std::atomic<uint64_t> chunks_fetched_{0}, chunks_opened_{0}, cache_hits_{0}, cache_misses_{0},
      auth_failures_{0}, quarantined_reads_{0}, disk_corrupt_{0};

 private:
  // A fetch counted while in flight, whatever ends it (the verification yields to it): Load's
  // and LoadRuns' requests.
  class FetchInFlight {
   public:
    explicit FetchInFlight(CtrLayerData& data);
    ~FetchInFlight();
    FetchInFlight(const FetchInFlight&) = delete;
    FetchInFlight& operator=(const FetchInFlight&) = delete;

   private:
    CtrLayerData& d_;
  };
  // Chunk (`reader`) and the read-ahead workers' loads (not `reader`: no second try).
  Result<cache::OpenedChunkPtr> LoadChunk(uint32_t i, bool reader);
  // Chunk's miss: the store, else a fetch (counted; the verification yields to it).
  Result<cache::OpenedChunkPtr> Load(uint32_t i);
  // LoadRuns' claimed chunk: its range and the promise its waiting readers hold.
  struct Claimed;
  // One run of LoadRuns (consecutive claimed chunks): fetched, opened, and every chunk's promise
  // fulfilled, whatever ends the request (stop, error, exception, std::bad_alloc). Its first
  // error, or OK. (Throws only when out of memory for an error message; LoadRuns then answers
  // the chunks left.)
  Status LoadRun(std::span<Claimed> run, const std::function<bool()>& stopped);
  // A claimed chunk's flight ended with `opened` (kept when OK).
  void FinishClaimed(Claimed& c, Result<cache::OpenedChunkPtr> opened);
  // The part of Load after its fetch: chunk i opened from `record` (its ciphertext, then its
  // side bytes), counted, and stored once it opened.
  Result<cache::OpenedChunkPtr> OpenFetched(uint32_t i, const CiphertextRange& range,
                                            MutableByteSpan record);
  // Held opened, or being loaded by a reader or a worker.
  bool OpenedOrLoading(uint32_t i);
  // A read-ahead worker: loads queued chunks until StopReadAhead.
  void ReadAheadWorker();

  cache::ChunkStore* const store_;
  const std::string store_key_;
  const std::unique_ptr<cache::OpenedChunkCache::LayerSlot> opened_;
  std::mutex inflight_mu_;
  // A chunk's load in flight: its answer, and whether a reader's own (not a prefetch's or a
  // read-ahead's, whose failures its waiting readers do not take as theirs).
  struct InFlight {
    std::shared_future<Result<cache::OpenedChunkPtr>> answer;
    bool by_reader = false;
  };
  std::unordered_map<uint32_t, InFlight> inflight_;
  mutable std::mutex status_mu_;
  Status verification_status_ = Status::Unavailable("verification pending");
  std::mutex fetch_mu_;
  std::condition_variable fetch_cv_;
  int fetches_ = 0;
  std::atomic<Verification> verification_{Verification::kPending};
  std::atomic<bool> verify_on_{false};

  std::atomic<uint64_t> readahead_bytes_{0}, readahead_chunks_{0};
  mutable std::mutex ra_mu_;
  std::condition_variable ra_cv_;
  std::deque<uint32_t> ra_queue_;            // chunks for the workers, next first
  std::unordered_set<uint32_t> ra_pending_;  // queued or being loaded by a worker
  std::vector<std::thread> ra_workers_;
  size_t ra_idle_ = 0;  // workers waiting for a chunk
  bool ra_stop_ = false;
  // Where the next sequential read of a file would start, by entry index (bounded: cleared when
  // it holds kReadAheadFilesTracked files).
  std::unordered_map<uint32_t, uint64_t> ra_next_offset_;
};

// A CTR layer mounted with FUSE, with its background prefetch and verification.
class CtrMountedLayer {
 public:
  virtual ~CtrMountedLayer();
  CtrMountedLayer(const CtrMountedLayer&) = delete;
  CtrMountedLayer& operator=(const CtrMountedLayer&) = delete;

  // Unmounts (FailedPrecondition "busy" while in use). Idempotent.
  Status Unmount();
  // Stops the background work and leaves the mount to the next daemon
  // (FuseMount::LeaveMounted); destruction then leaves the mount alone.
  void LeaveMounted();
  const fusefs::FuseMount& fuse() const { return *mount_; }
  const std::filesystem::path& mountpoint() const { return mount_->mountpoint(); }
  const std::string& digest() const { return digest_; }
  const std::string& key_name() const { return key_name_; }
  uint64_t blob_size() const { return blob_size_; }
  const std::string& store_key() const { return store_key_; }
  uint64_t chunk_count() const { return data_->index().chunks().size(); }
  // Counters of on-demand reads and prefetch (blob_bytes_fetched does not include the
  // verification's full read).
  cache::LayerStats stats() const { return data_->stats(); }
  Verification verification() const { return data_->verification(); }
  // OK once verified; Unavailable while pending; the failure once failed.
  Status verification_status() const { return data_->verification_status(); }
  // Time the verification has spent waiting for reads' fetches so far (bounded by
  // CtrLayerOptions::verify_max_yield_ms).
  std::chrono::milliseconds verification_yielded() const {
    return std::chrono::milliseconds(yielded_ms_.load());
  }
  // Chunks handed to read-ahead so far, and whether none is queued or loading now.
  uint64_t readahead_chunks() const { return data_->readahead_chunks(); }
  bool readahead_idle() const { return data_->readahead_idle(); }

 protected:
  CtrMountedLayer();
  // Mounts `data` at `mountpoint` (or gives it to `resumed`, see MountedEstargzLayer::Mount),
  // then starts the background work when options.prefetch, options.verify or load_all_.
  Status MountAndStart(const std::filesystem::path& mountpoint,
                       std::shared_ptr<CtrLayerData> data, const CtrLayerOptions& options,
                       std::unique_ptr<fusefs::FuseMount>* resumed);
  // Prefetch of the format's marked files (on the background thread; `stopped` says when to
  // give up). Errors are left to the readers.
  virtual void Prefetch(const std::function<bool()>& stopped) = 0;
  // The format's part of the verification: `plain` is the decrypted (gzip) stream of the whole
  // blob, whose end checks the HMAC, blob digest and plaintext digest; `ciphertext` is the
  // stream under it (set_on_piece sees the ciphertext as it is read). Reads `plain` to its end,
  // checks the tar stream against what the mount serves, and returns the tar stream's diff_id
  // ("sha256:<hex>"). Errors name the problem, never a file.
  virtual Result<std::string> VerifyContent(InputStream& plain, LargeReadStream& ciphertext) = 0;
  // Stops the background thread and the read-ahead workers (before the derived layer's members
  // go: derived destructors call it first).
  void StopBackground();

  std::shared_ptr<CtrLayerData> data_;
  std::unique_ptr<fusefs::FuseMount> mount_;
  image::Descriptor descriptor_;
  std::unique_ptr<image::OcicryptLayerCipher> cipher_;  // for the verification's full read
  std::string digest_;
  std::string store_key_;
  std::string key_name_;
  uint64_t blob_size_ = 0;
  // Set by the format's Mount before MountAndStart for a small layer
  // (CtrLayerOptions::whole_layer_bytes): the background thread loads every chunk at once (from
  // the bytes its CountingSource holds, when the mount read the blob whole), instead of the
  // marked ones.
  bool load_all_ = false;

 private:
  struct Background;
  // The background thread's body: nothing escapes it (std::terminate would take the daemon down);
  // the prefetch's errors are left to the readers, the verification's exceptions are its errors.
  void RunBackground(CtrLayerOptions options);
  void RunBackgroundWork(const CtrLayerOptions& options);
  Status VerifyOnce(const CtrLayerOptions& options);
  std::unique_ptr<Background> background_;
  std::atomic<int64_t> yielded_ms_{0};
};

}  // namespace lazycrypt::lazylayer
