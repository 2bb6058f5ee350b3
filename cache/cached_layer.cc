#include "cache/cached_layer.h"

#include <openssl/crypto.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "cache/chunk_ranges.h"
#include "crypto/digest.h"
#include "format/toc_tar_match.h"

namespace lazycrypt::cache {
namespace {

using Clock = std::chrono::steady_clock;

// Opened chunks live in the node-wide OpenedChunkCache (cache/opened_chunk_cache.h).
using PlainChunk = OpenedChunk;
using PlainPtr = OpenedChunkPtr;

// One fetch (or disk read) of one chunk in progress; readers that miss the same chunk wait on it.
struct Flight {
  bool done = false;  // guarded by Impl::mu
  Status status;
  PlainPtr plain;     // set when status is OK
};

// kVerify: the background verification. Like kBackground it keeps nothing in the memory cache;
// unlike it, it asks for the plaintext, and its reads count neither as hits nor as misses.
enum class Purpose { kForeground, kPrefetch, kBackground, kVerify };

std::string ChunkName(uint64_t i) { return "chunk " + std::to_string(i); }

// Read-ahead opens waiting for a worker at most; more read-ahead is skipped (the reader opens
// those chunks itself when it gets there).
constexpr size_t kMaxQueuedOpens = 32;

}  // namespace

struct CachedLayer::Impl {
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<const format::ChunkOpener> opener;
  std::shared_ptr<BlobSource> source;
  MultiRangeBlobSource* multi = nullptr;  // source, when it reads several ranges at once
  ChunkStore* store = nullptr;
  CachedLayerOptions options;
  std::string key;

  mutable std::mutex mu;
  std::condition_variable flight_cv;  // a flight completed
  std::unordered_map<uint64_t, std::shared_ptr<Flight>> flights;
  // This layer's part of the opened-chunk memory cache (node-wide LRU, or one of its own).
  std::unique_ptr<OpenedChunkCache::LayerSlot> mem;
  // Where the next sequential read of a file would start (read-ahead trigger).
  std::unordered_map<uint32_t, uint64_t> next_offset;  // by entry index
  // Background fetch.
  std::condition_variable bg_cv;  // stop requested or foreground fetches finished
  int foreground_fetches = 0;
  Clock::time_point last_foreground_end{};  // guarded by mu: when the last foreground fetch ended
  bool bg_stop = false;
  bool bg_started = false;
  std::thread bg_thread;
  std::atomic<bool> bg_done{false};
  // Asynchronous prefetch (StartPrefetchMarked); the background fetch waits for it.
  bool prefetch_started = false;  // guarded by mu
  bool prefetch_running = false;  // guarded by mu; bg_cv is notified when it ends
  std::thread prefetch_thread;
  // Read-ahead opens: chunks a sequential reader will want next, already on disk, are read and
  // opened by these workers while the reader is served (so disk reads and decrypts overlap and
  // both cores work on one stream). Each queued chunk has a flight, so a reader that reaches it
  // waits for the worker instead of opening it again.
  struct OpenTask {
    uint64_t chunk;
    std::shared_ptr<Flight> flight;
  };
  std::deque<OpenTask> open_queue;  // guarded by mu
  std::condition_variable open_cv;  // a task queued or stop requested
  bool open_stop = false;           // guarded by mu
  std::vector<std::thread> open_workers;

  // Background verification (StartVerification). The state is written under mu (with
  // verify_failure) and read without it.
  std::atomic<VerificationState> verify_state{VerificationState::kOff};
  bool verify_started = false;  // guarded by mu
  Status verify_failure;        // guarded by mu: why it failed
  Status verify_last_error;     // guarded by mu: the last failed batch while pending
  std::thread verify_thread;

  std::atomic<uint64_t> blob_bytes_fetched{0}, fetch_requests{0}, chunks_fetched{0},
      chunks_opened{0}, cache_hits{0}, cache_misses{0}, auth_failures{0}, fetch_nanos{0},
      disk_corrupt{0}, fetch_errors{0}, verified_chunks{0}, verification_retries{0},
      quarantined_reads{0};

  ~Impl() {
    StopBackground();
    StopOpenWorkers();
  }

  // Starts options.open_threads workers; with none (0, or no thread could start) read-ahead
  // chunks on disk are left to the reader itself, as before.
  void StartOpenWorkers() {
    for (unsigned t = 0; t < options.open_threads; ++t) {
      try {
        open_workers.emplace_back([this] { OpenWorkerLoop(); });
      } catch (const std::system_error&) {
        break;
      }
    }
  }
  void StopOpenWorkers() {
    std::deque<OpenTask> left;
    {
      std::lock_guard lock(mu);
      open_stop = true;
      left.swap(open_queue);
    }
    open_cv.notify_all();
    for (std::thread& t : open_workers) t.join();
    open_workers.clear();
    for (OpenTask& task : left) {
      Complete(task.chunk, task.flight, Status::Unavailable("the layer is closing"), nullptr);
    }
  }
  void OpenWorkerLoop() {
    for (;;) {
      OpenTask task;
      {
        std::unique_lock lock(mu);
        open_cv.wait(lock, [&] { return open_stop || !open_queue.empty(); });
        if (open_stop) return;
        task = std::move(open_queue.front());
        open_queue.pop_front();
      }
      if (!OpenFromStore(task.chunk, task.flight, /*count_hit=*/false)) {
        // Evicted or damaged meanwhile: fetch it like a prefetch would.
        (void)FetchRuns({Run{{task.chunk, task.flight}}}, Purpose::kPrefetch);
      }
    }
  }

  // ---- memory cache ----
  // Kept before its flight completes (Complete takes mu after this): a reader that misses it in
  // ClaimChunks (under mu) still finds the flight. REQUIRES mu not held: evicted chunks (of any
  // layer) are wiped on this thread.
  void MemInsert(uint64_t i, PlainPtr plain) { (void)mem->Insert(i, std::move(plain)); }

  void Complete(uint64_t i, const std::shared_ptr<Flight>& flight, Status status, PlainPtr plain) {
    std::lock_guard lock(mu);
    flight->status = std::move(status);
    flight->plain = std::move(plain);
    flight->done = true;
    auto it = flights.find(i);
    if (it != flights.end() && it->second == flight) flights.erase(it);
    flight_cv.notify_all();
  }

  // Authenticates and opens a record of chunk i.
  Result<PlainPtr> Open(uint64_t i, ByteSpan record) {
    const format::ChunkInfo& chunk = index->chunks()[i];
    auto plain = std::make_shared<PlainChunk>(chunk.raw_size);
    LC_RETURN_IF_ERROR(opener->Open(chunk, record, plain->mutable_span()));
    chunks_opened.fetch_add(1, std::memory_order_relaxed);
    return PlainPtr(std::move(plain));
  }

  // Completes the led `flight` of chunk i from the disk store when it holds a record that opens
  // (kept in memory too) and returns true; false when the chunk must be fetched (absent, or
  // damaged: then dropped from the store). REQUIRES mu not held.
  bool OpenFromStore(uint64_t i, const std::shared_ptr<Flight>& flight, bool count_hit,
                     bool keep_in_memory = true) {
    if (store == nullptr) return false;
    const format::ChunkInfo& chunk = index->chunks()[i];
    std::vector<uint8_t> record(chunk.record_size());
    Result<bool> got = store->Get(key, i, chunk.blob_offset, record);
    if (!got.ok() || !*got) return false;
    Result<PlainPtr> plain = Open(i, record);
    if (!plain.ok()) {
      // Damaged on disk (or torn by a crash): drop it and fetch it once more.
      disk_corrupt.fetch_add(1, std::memory_order_relaxed);
      (void)store->Drop(key, i);
      return false;
    }
    if (count_hit) cache_hits.fetch_add(1, std::memory_order_relaxed);
    if (keep_in_memory) MemInsert(i, *plain);
    Complete(i, flight, Status::Ok(), *std::move(plain));
    return true;
  }

  Status Acquire(const std::vector<uint64_t>& wanted, const std::vector<uint64_t>& extra,
                 Purpose purpose, std::vector<PlainPtr>* out, Status* extra_status);
  // Acquire in two steps: ClaimChunks takes the flights (under mu, no I/O), so that readers
  // arriving later wait for them; Serve fetches what was claimed and collects. Every claimed
  // flight is completed by Serve, which must be called exactly once per claim.
  struct Led {
    uint64_t chunk;
    std::shared_ptr<Flight> flight;
    bool is_extra;
    size_t pos;  // in `wanted` unless is_extra
  };
  struct Claim {
    std::vector<Led> led;
    std::vector<std::pair<size_t, std::shared_ptr<Flight>>> follow;  // (position in wanted, flight)
  };
  Claim ClaimChunks(const std::vector<uint64_t>& wanted, const std::vector<uint64_t>& extra,
                    Purpose purpose, std::vector<PlainPtr>* out);
  Status Serve(Claim& claim, Purpose purpose, std::vector<PlainPtr>* out, Status* extra_status);
  // The chunks of `files` (regular entries; others ignored), sorted, each once; InvalidArgument
  // for an entry that is not this layer's.
  Result<std::vector<uint64_t>> ChunksOfFiles(const std::vector<format::EntryView>& files);
  std::vector<format::EntryView> MarkedFiles() const;
  using Run = std::vector<std::pair<uint64_t, std::shared_ptr<Flight>>>;  // adjacent chunks
  Status FetchRuns(const std::vector<Run>& runs, Purpose purpose);

  // The chunks covering [offset, offset+n) of `entry`, all opened (n = bytes to read).
  Status AcquireRange(format::EntryView entry, uint64_t offset, size_t n,
                      std::vector<uint64_t>* wanted, std::vector<PlainPtr>* plains);
  // AcquireRange, tried again on a transient failure until options.read_retry_for has passed.
  Status AcquireRangeRetrying(format::EntryView entry, uint64_t offset, size_t n,
                              std::vector<uint64_t>* wanted, std::vector<PlainPtr>* plains);
  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset, MutableByteSpan out);
  Result<FileView> ViewFile(format::EntryView entry, uint64_t offset, size_t size);
  Status Prefetch(const std::vector<format::EntryView>& files);
  void BackgroundLoop(uint64_t rate_bytes_per_sec);
  void VerifyLoop(const VerifyOptions& o);
  // Records the end of the verification and tells options.on_done (unless stopping).
  void EndVerification(const VerifyOptions& o, Status result);
  // Waits until no foreground read is fetching (false: stop requested).
  bool YieldToForeground() {
    std::unique_lock lock(mu);
    bg_cv.wait(lock, [&] { return bg_stop || foreground_fetches == 0; });
    return !bg_stop;
  }
  // Waits until no foreground read has been fetching for `quiet`, or until `*yield_left` (the
  // time this caller may still spend waiting, reduced by what this call waits) is used up
  // (false: stop requested).
  bool WaitForForegroundQuiet(std::chrono::milliseconds quiet, Clock::duration* yield_left) {
    std::unique_lock lock(mu);
    const auto began = Clock::now();
    const auto give_up = began + std::max(*yield_left, Clock::duration::zero());
    const auto charge = [&] { *yield_left -= Clock::now() - began; };
    for (;;) {
      if (!bg_cv.wait_until(lock, give_up,
                            [&] { return bg_stop || foreground_fetches == 0; })) {
        charge();
        return true;  // out of patience: go on while reads are fetching
      }
      if (bg_stop) return false;
      const auto quiet_from = last_foreground_end + quiet;
      const auto now = Clock::now();
      if (now >= quiet_from || now >= give_up) {
        charge();
        return true;
      }
      bg_cv.wait_until(lock, std::min(quiet_from, give_up),
                       [&] { return bg_stop || foreground_fetches > 0; });
    }
  }
  // Sleeps until `due` (false: stop requested meanwhile).
  bool SleepUntil(Clock::time_point due) {
    std::unique_lock lock(mu);
    return !bg_cv.wait_until(lock, due, [&] { return bg_stop; });
  }
  // AuthFailed while the layer is quarantined (its verification failed), counted.
  Status CheckNotQuarantined() {
    if (verify_state.load(std::memory_order_acquire) != VerificationState::kFailed) {
      return Status::Ok();
    }
    quarantined_reads.fetch_add(1, std::memory_order_relaxed);
    return Status::AuthFailed("the layer is quarantined: its content failed verification");
  }
  void StopBackground() {
    {
      std::lock_guard lock(mu);
      bg_stop = true;
    }
    bg_cv.notify_all();
    if (bg_thread.joinable()) bg_thread.join();
    if (prefetch_thread.joinable()) prefetch_thread.join();
    if (verify_thread.joinable()) verify_thread.join();
  }
  bool Stopping() {
    std::lock_guard lock(mu);
    return bg_stop;
  }
  // Completes every flight of `runs` with `status` (nothing fetched).
  void Fail(const std::vector<Run>& runs, const Status& status) {
    for (const Run& run : runs) {
      for (const auto& [i, flight] : run) Complete(i, flight, status, nullptr);
    }
  }
  Status CheckEntry(format::EntryView entry) const {
    // The entry's index, never its name: names in a TOC are confidential (FORMAT.md §4).
    if (!index->Holds(entry)) {
      return Status::InvalidArgument("entry " + std::to_string(entry.index()) +
                                     " is not one of this layer's");
    }
    if (entry.type() != format::EntryType::kRegular) {
      return Status::InvalidArgument("entry " + std::to_string(entry.index()) + " is a " +
                                     std::string(format::EntryTypeName(entry.type())) +
                                     ", not a regular file");
    }
    return Status::Ok();
  }
};

// Fetches runs of adjacent records with one request (ReadAt for one run, ReadRanges for
// several), then opens, stores and publishes each record. Completes every flight of `runs`.
Status CachedLayer::Impl::FetchRuns(const std::vector<Run>& runs, Purpose purpose) {
  auto chunks = index->chunks();
  std::vector<std::vector<uint8_t>> records(runs.size());
  std::vector<RangeRead> ranges;
  uint64_t total = 0, count = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    const uint64_t begin = chunks[runs[r].front().first].blob_offset;
    records[r].resize(chunks[runs[r].back().first].blob_end() - begin);
    ranges.push_back({begin, records[r]});
    total += records[r].size();
    count += runs[r].size();
  }
  if (purpose == Purpose::kForeground) {
    std::lock_guard lock(mu);
    ++foreground_fetches;
  }
  const auto start = Clock::now();
  Status fetched = ranges.size() == 1 || multi == nullptr
                       ? source->ReadAt(ranges[0].offset, ranges[0].out)
                       : multi->ReadRanges(ranges);
  fetch_nanos.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count(),
      std::memory_order_relaxed);
  fetch_requests.fetch_add(1, std::memory_order_relaxed);
  if (purpose == Purpose::kForeground) {
    {
      std::lock_guard lock(mu);
      --foreground_fetches;
      last_foreground_end = Clock::now();
    }
    bg_cv.notify_all();
  }
  if (!fetched.ok()) {
    fetch_errors.fetch_add(1, std::memory_order_relaxed);
    const uint64_t first = runs.front().front().first, last = runs.back().back().first;
    Status s = fetched.WithContext(first == last ? ChunkName(first)
                                                 : "chunks " + std::to_string(first) + ".." +
                                                       std::to_string(last));
    for (const Run& run : runs) {
      for (const auto& [i, flight] : run) Complete(i, flight, s, nullptr);
    }
    return s;
  }
  blob_bytes_fetched.fetch_add(total, std::memory_order_relaxed);
  chunks_fetched.fetch_add(count, std::memory_order_relaxed);
  Status first_error;
  for (size_t r = 0; r < runs.size(); ++r) {
    const uint64_t begin = ranges[r].offset;
    for (const auto& [i, flight] : runs[r]) {
      ByteSpan record(records[r].data() + (chunks[i].blob_offset - begin), chunks[i].record_size());
      Result<PlainPtr> plain = Open(i, record);
      if (!plain.ok()) {
        // Fresh from the source: the blob itself is bad. Not stored; the next read tries again.
        auth_failures.fetch_add(1, std::memory_order_relaxed);
        Status s = plain.status().WithContext(ChunkName(i));
        if (first_error.ok()) first_error = s;
        Complete(i, flight, s, nullptr);
        continue;
      }
      if (store != nullptr) {
        // A failed disk write costs only a later refetch; the read itself succeeded.
        (void)store->Put(key, i, chunks[i].blob_offset, record);
      }
      if (purpose != Purpose::kBackground && purpose != Purpose::kVerify) MemInsert(i, *plain);
      Complete(i, flight, Status::Ok(), *std::move(plain));
    }
  }
  return first_error;
}

Status CachedLayer::Impl::Acquire(const std::vector<uint64_t>& wanted,
                                  const std::vector<uint64_t>& extra, Purpose purpose,
                                  std::vector<PlainPtr>* out, Status* extra_status) {
  Claim claim = ClaimChunks(wanted, extra, purpose, out);
  return Serve(claim, purpose, out, extra_status);
}

CachedLayer::Impl::Claim CachedLayer::Impl::ClaimChunks(const std::vector<uint64_t>& wanted,
                                                        const std::vector<uint64_t>& extra,
                                                        Purpose purpose,
                                                        std::vector<PlainPtr>* out) {
  Claim claim;
  std::vector<Led>& led = claim.led;
  auto& follow = claim.follow;
  if (out) out->assign(wanted.size(), nullptr);
  {
    std::lock_guard lock(mu);
    for (size_t k = 0; k < wanted.size(); ++k) {
      const uint64_t i = wanted[k];
      if (PlainPtr p = mem->Lookup(i)) {
        if (purpose != Purpose::kVerify) cache_hits.fetch_add(1, std::memory_order_relaxed);
        if (out) (*out)[k] = std::move(p);
      } else if (auto it = flights.find(i); it != flights.end()) {
        follow.emplace_back(k, it->second);
      } else {
        auto flight = std::make_shared<Flight>();
        flights.emplace(i, flight);
        led.push_back({i, flight, false, k});
      }
    }
    bool queued = false;
    for (uint64_t i : extra) {
      if (flights.count(i) != 0 || mem->Contains(i)) continue;
      if (store != nullptr && store->Contains(key, i)) {
        // On disk already: a foreground reader's read-ahead is opened by the workers, if any.
        if (purpose != Purpose::kForeground || open_workers.empty() || open_stop ||
            open_queue.size() >= kMaxQueuedOpens) {
          continue;
        }
        auto flight = std::make_shared<Flight>();
        flights.emplace(i, flight);
        open_queue.push_back({i, std::move(flight)});
        queued = true;
        continue;
      }
      auto flight = std::make_shared<Flight>();
      flights.emplace(i, flight);
      led.push_back({i, flight, true, 0});
    }
    if (queued) open_cv.notify_all();
  }
  return claim;
}

Status CachedLayer::Impl::Serve(Claim& claim, Purpose purpose, std::vector<PlainPtr>* out,
                                Status* extra_status) {
  std::vector<Led>& led = claim.led;
  const auto& follow = claim.follow;
  // Every led flight completes exactly once, whatever happens below.
  std::vector<std::pair<uint64_t, std::shared_ptr<Flight>>> to_fetch;
  // The chunks fetched for nobody in particular (prefetch, read-ahead, background): their flights
  // are handed over to the requests, so each is released once its request has completed and no
  // reader waits on it; a prefetch of hundreds of MiB then does not hold their plaintext.
  std::unordered_set<uint64_t> extras;
  auto chunks = index->chunks();
  for (Led& l : led) {
    if (l.is_extra) {
      extras.insert(l.chunk);
      to_fetch.emplace_back(l.chunk, std::move(l.flight));
      continue;
    }
    const bool verify = purpose == Purpose::kVerify;
    if (OpenFromStore(l.chunk, l.flight, /*count_hit=*/!verify, /*keep_in_memory=*/!verify)) {
      if (out) (*out)[l.pos] = l.flight->plain;  // set before Complete published it; ours alone
      continue;
    }
    if (!verify) cache_misses.fetch_add(1, std::memory_order_relaxed);
    to_fetch.emplace_back(l.chunk, l.flight);
  }
  std::sort(to_fetch.begin(), to_fetch.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // Adjacent records, up to max_request_bytes, go in one run; each run is one request, or, when
  // the source reads several ranges at once, runs totalling up to max_request_bytes are.
  std::vector<Run> runs;
  for (size_t b = 0; b < to_fetch.size();) {
    size_t e = b + 1;
    const uint64_t begin = chunks[to_fetch[b].first].blob_offset;
    while (e < to_fetch.size() && to_fetch[e].first == to_fetch[e - 1].first + 1 &&
           chunks[to_fetch[e].first].blob_end() - begin <= options.max_request_bytes) {
      ++e;
    }
    runs.emplace_back(std::make_move_iterator(to_fetch.begin() + b),
                      std::make_move_iterator(to_fetch.begin() + e));
    b = e;
  }
  to_fetch.clear();
  std::vector<Run> batch;
  uint64_t batch_bytes = 0;
  auto send = [&] {
    // A prefetch or background fetch stops between requests when the layer is closing.
    if (purpose != Purpose::kForeground && Stopping()) {
      Fail(batch, Status::Unavailable("the layer is closing"));
    } else {
      (void)FetchRuns(batch, purpose);  // outcomes are read from the flights below
    }
    // Every flight of the batch is complete now (by this thread).
    for (const Run& run : batch) {
      for (const auto& [i, flight] : run) {
        if (extra_status && extra_status->ok() && extras.count(i) != 0 && !flight->status.ok()) {
          *extra_status = flight->status;
        }
      }
    }
    batch.clear();
    batch_bytes = 0;
  };
  for (Run& run : runs) {
    const uint64_t bytes =
        chunks[run.back().first].blob_end() - chunks[run.front().first].blob_offset;
    if (!batch.empty() && (multi == nullptr || batch_bytes + bytes > options.max_request_bytes)) {
      send();
    }
    batch.push_back(std::move(run));
    batch_bytes += bytes;
  }
  if (!batch.empty()) send();

  // Collect: our own flights are done; wait for the others'.
  Status first_error;
  std::unique_lock lock(mu);
  for (const Led& l : led) {
    if (l.is_extra) continue;  // handed to its request above, its outcome taken there
    if (!l.flight->status.ok()) {
      if (first_error.ok()) first_error = l.flight->status;
      continue;
    }
    if (out) (*out)[l.pos] = l.flight->plain;
  }
  for (auto& [k, flight] : follow) {
    flight_cv.wait(lock, [&] { return flight->done; });
    if (!flight->status.ok()) {
      if (first_error.ok()) first_error = flight->status;
      continue;
    }
    // Served by another reader's fetch.
    if (purpose != Purpose::kVerify) cache_hits.fetch_add(1, std::memory_order_relaxed);
    if (out) (*out)[k] = flight->plain;
  }
  return first_error;
}

Status CachedLayer::Impl::AcquireRange(format::EntryView entry, uint64_t offset, size_t n,
                                       std::vector<uint64_t>* wanted_out,
                                       std::vector<PlainPtr>* plains) {
  const format::ChunkRange range = index->ChunksForRange(entry, offset, n);
  std::vector<uint64_t>& wanted = *wanted_out;
  for (uint64_t i = range.first; i < range.first + range.count; ++i) wanted.push_back(i);

  bool sequential = false;
  {
    std::lock_guard lock(mu);
    auto it = next_offset.find(entry.index());
    // A read from a file's start is taken as the start of a sequential read (as the kernel's
    // initial read-ahead does): exec'd binaries and the files a start reads are read whole.
    sequential = offset == 0 || (it != next_offset.end() && it->second == offset);
    if (next_offset.size() >= 4096) next_offset.clear();
    next_offset[entry.index()] = offset + n;
  }
  std::vector<uint64_t> extra;
  if (sequential && options.readahead_bytes > 0) {
    const format::ChunkRange whole = index->ChunksForRange(entry, 0, entry.size());
    const uint64_t file_last = whole.first + whole.count - 1;
    uint64_t bytes = 0;
    auto chunks = index->chunks();
    for (uint64_t i = range.first + range.count; i <= file_last; ++i) {
      bytes += chunks[i].raw_size;
      if (bytes > options.readahead_bytes) break;
      extra.push_back(i);
    }
  }

  return Acquire(wanted, extra, Purpose::kForeground, plains, nullptr);
}

Status CachedLayer::Impl::AcquireRangeRetrying(format::EntryView entry, uint64_t offset,
                                               size_t n, std::vector<uint64_t>* wanted,
                                               std::vector<PlainPtr>* plains) {
  const auto deadline = std::chrono::steady_clock::now() + options.read_retry_for;
  auto backoff = std::chrono::milliseconds(200);
  for (;;) {
    Status s = AcquireRange(entry, offset, n, wanted, plains);
    const bool transient = s.code() == StatusCode::kUnavailable ||
                           s.code() == StatusCode::kIoError ||
                           s.code() == StatusCode::kDeadlineExceeded;
    const auto now = std::chrono::steady_clock::now();
    if (s.ok() || !transient || now >= deadline) return s;
    LC_RETURN_IF_ERROR(CheckNotQuarantined());
    wanted->clear();
    plains->clear();
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

Result<size_t> CachedLayer::Impl::ReadFile(format::EntryView entry, uint64_t offset,
                                           MutableByteSpan out) {
  LC_RETURN_IF_ERROR(CheckNotQuarantined());
  LC_RETURN_IF_ERROR(CheckEntry(entry).WithContext("ReadFile"));
  const uint64_t entry_size = entry.size();
  if (offset >= entry_size || out.empty()) return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), entry_size - offset));
  std::vector<uint64_t> wanted;
  std::vector<PlainPtr> plains;
  LC_RETURN_IF_ERROR(AcquireRangeRetrying(entry, offset, n, &wanted, &plains));
  // Every chunk is verified whole; only now is any byte copied out.
  const uint64_t want_begin = entry.data_offset() + offset;
  const uint64_t want_end = want_begin + n;
  auto chunks = index->chunks();
  for (size_t k = 0; k < wanted.size(); ++k) {
    const format::ChunkInfo& chunk = chunks[wanted[k]];
    const uint64_t from = std::max(chunk.tar_offset, want_begin);
    const uint64_t to = std::min(chunk.tar_end(), want_end);
    std::memcpy(out.data() + (from - want_begin), plains[k]->span().data() + (from - chunk.tar_offset),
                to - from);
  }
  return n;
}

Result<FileView> CachedLayer::Impl::ViewFile(format::EntryView entry, uint64_t offset,
                                             size_t size) {
  LC_RETURN_IF_ERROR(CheckNotQuarantined());
  LC_RETURN_IF_ERROR(CheckEntry(entry).WithContext("ViewFile"));
  FileView view;
  const uint64_t entry_size = entry.size();
  const uint64_t data_offset = entry.data_offset();
  if (offset >= entry_size || size == 0) return view;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(size, entry_size - offset));
  std::vector<uint64_t> wanted;
  std::vector<PlainPtr> plains;
  LC_RETURN_IF_ERROR(AcquireRangeRetrying(entry, offset, n, &wanted, &plains));
  // Every chunk is verified whole; only now is any byte lent out.
  const uint64_t want_begin = entry.data_offset() + offset;
  const uint64_t want_end = want_begin + n;
  auto chunks = index->chunks();
  for (size_t k = 0; k < wanted.size(); ++k) {
    const format::ChunkInfo& chunk = chunks[wanted[k]];
    const uint64_t from = std::max(chunk.tar_offset, want_begin);
    const uint64_t to = std::min(chunk.tar_end(), want_end);
    view.spans.push_back(plains[k]->span().subspan(from - chunk.tar_offset, to - from));
    // The whole chunk, as far as it holds this file's bytes.
    const uint64_t file_begin = std::max(chunk.tar_offset, data_offset);
    const uint64_t file_end = std::min(chunk.tar_end(), data_offset + entry_size);
    view.around.push_back({file_begin - data_offset,
                           plains[k]->span().subspan(file_begin - chunk.tar_offset,
                                                     file_end - file_begin)});
    view.pins.push_back(std::move(plains[k]));
  }
  return view;
}

Result<std::vector<uint64_t>> CachedLayer::Impl::ChunksOfFiles(
    const std::vector<format::EntryView>& files) {
  // One range per file, merged, then expanded (at most the chunk count): files' data ranges may
  // overlap (a key holder's TOC may mark a million files covering the whole tar each).
  std::vector<format::ChunkRange> ranges;
  ranges.reserve(files.size());
  for (format::EntryView e : files) {
    if (e.table() == nullptr || e.type() != format::EntryType::kRegular || e.size() == 0) continue;
    LC_RETURN_IF_ERROR(CheckEntry(e).WithContext("Prefetch"));
    ranges.push_back(index->ChunksForRange(e, 0, e.size()));
  }
  return ChunksOfRanges(std::move(ranges), index->chunks().size());
}

std::vector<format::EntryView> CachedLayer::Impl::MarkedFiles() const {
  const auto& entries = index->entries();
  std::vector<format::EntryView> files;
  for (uint32_t i : index->prefetch_entries()) {
    if (i < entries.size()) files.push_back(entries[i]);
  }
  return files;
}

Status CachedLayer::Impl::Prefetch(const std::vector<format::EntryView>& files) {
  LC_ASSIGN_OR_RETURN(std::vector<uint64_t> all, ChunksOfFiles(files));
  Status extra_status;
  LC_RETURN_IF_ERROR(Acquire({}, all, Purpose::kPrefetch, nullptr, &extra_status));
  return extra_status;
}

void CachedLayer::Impl::BackgroundLoop(uint64_t rate) {
  {
    // The prefetch goes first: it fetches what a start needs.
    std::unique_lock lock(mu);
    bg_cv.wait(lock, [&] { return bg_stop || !prefetch_running; });
    if (bg_stop) return;
  }
  auto chunks = index->chunks();
  uint64_t batch_bytes = std::min<uint64_t>(options.max_request_bytes, uint64_t{4} << 20);
  if (rate > 0) batch_bytes = std::min<uint64_t>(batch_bytes, std::max<uint64_t>(rate / 4, 1));
  const auto start = Clock::now();
  uint64_t sent = 0;
  uint64_t i = 0;
  while (i < chunks.size()) {
    {
      std::unique_lock lock(mu);
      // Yield to foreground reads that are fetching.
      bg_cv.wait(lock, [&] { return bg_stop || foreground_fetches == 0; });
      if (bg_stop) return;
    }
    if (store->Contains(key, i)) {
      ++i;
      continue;
    }
    std::vector<uint64_t> batch{i};
    uint64_t bytes = chunks[i].record_size();
    for (uint64_t j = i + 1; j < chunks.size() && !store->Contains(key, j); ++j) {
      if (bytes + chunks[j].record_size() > batch_bytes) break;
      bytes += chunks[j].record_size();
      batch.push_back(j);
    }
    Status s;
    for (int attempt = 0; attempt < 4; ++attempt) {
      s = Status::Ok();
      (void)Acquire({}, batch, Purpose::kBackground, nullptr, &s);
      if (s.ok() || s.code() == StatusCode::kAuthFailed || s.code() == StatusCode::kCorruption) {
        break;  // a bad record does not get better by asking again
      }
      std::unique_lock lock(mu);
      if (bg_cv.wait_for(lock, std::chrono::milliseconds(100 << attempt), [&] { return bg_stop; })) {
        return;
      }
    }
    sent += bytes;
    i = batch.back() + 1;
    if (rate > 0) {
      const auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(
                                   static_cast<long double>(sent) * 1e9L / rate));
      std::unique_lock lock(mu);
      if (bg_cv.wait_until(lock, due, [&] { return bg_stop; })) return;
    }
  }
  bg_done.store(true);
}

void CachedLayer::Impl::EndVerification(const VerifyOptions& o, Status result) {
  {
    std::lock_guard lock(mu);
    if (result.ok()) {
      verify_state.store(VerificationState::kVerified, std::memory_order_release);
    } else {
      verify_failure = result;
      verify_state.store(VerificationState::kFailed, std::memory_order_release);
    }
  }
  if (o.on_done && !Stopping()) o.on_done(result);
}

// One pass over the layer, in chunk order, in batches of adjacent chunks (one request for those
// not on disk); a batch that fails transiently (Unavailable, IoError, DeadlineExceeded) is tried
// again, with backoff, until it succeeds or the layer stops: the state can only become verified
// after every chunk was hashed. A chunk that fails to authenticate (AuthFailed) or is malformed
// (Corruption) ends the verification as failed.
void CachedLayer::Impl::VerifyLoop(const VerifyOptions& o) {
  {
    // The prefetch goes first: it fetches what a start needs.
    std::unique_lock lock(mu);
    bg_cv.wait(lock, [&] { return bg_stop || !prefetch_running; });
    if (bg_stop) return;
  }
  if (o.start_delay.count() > 0 && !SleepUntil(Clock::now() + o.start_delay)) return;
  if (o.lower_cpu_priority) {
    // Linux: the nice value is per thread. Failure only means normal priority.
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  }
  if (o.expected_diff_id && *o.expected_diff_id != index->diff_id()) {
    EndVerification(o, Status::AuthFailed("the TOC's tar_sha256 is " +
                                          crypto::OciDigest(index->diff_id()) +
                                          ", the layer is used as diff_id " +
                                          crypto::OciDigest(*o.expected_diff_id)));
    return;
  }
  format::TocTarMatcher matcher(index->entries());
  crypto::Sha256 hash;
  auto chunks = index->chunks();
  uint64_t batch_bytes = std::min<uint64_t>(options.max_request_bytes, uint64_t{4} << 20);
  const uint64_t rate = o.rate_bytes_per_sec;
  if (rate > 0) batch_bytes = std::min<uint64_t>(batch_bytes, std::max<uint64_t>(rate / 4, 1));
  const auto start = Clock::now();
  uint64_t sent = 0;
  auto backoff = std::max(o.retry_initial, std::chrono::milliseconds(1));
  Clock::duration yield_left = o.max_total_yield;
  uint64_t i = 0;
  while (i < chunks.size()) {
    if (!WaitForForegroundQuiet(o.foreground_quiet, &yield_left)) return;
    std::vector<uint64_t> batch{i};
    uint64_t bytes = chunks[i].record_size();
    for (uint64_t j = i + 1; j < chunks.size(); ++j) {
      if (bytes + chunks[j].record_size() > batch_bytes) break;
      bytes += chunks[j].record_size();
      batch.push_back(j);
    }
    std::vector<PlainPtr> plains;
    // The rate bounds what is fetched, not what is read back from the disk store.
    const uint64_t fetched_before = blob_bytes_fetched.load(std::memory_order_relaxed);
    Status s = Acquire(batch, {}, Purpose::kVerify, &plains, nullptr);
    sent += blob_bytes_fetched.load(std::memory_order_relaxed) - fetched_before;
    if (!s.ok()) {
      if (Stopping()) return;
      if (s.code() == StatusCode::kAuthFailed || s.code() == StatusCode::kCorruption) {
        // A record that fails its pin or GCM does not get better by asking again (as in
        // BackgroundLoop): retrying would let an author keep a lying layer pending forever.
        // The status names the chunk index, never a file.
        EndVerification(o, s);
        return;
      }
      verification_retries.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(mu);
        verify_last_error = s;
      }
      if (!SleepUntil(Clock::now() + backoff)) return;
      backoff = std::min(backoff * 2, std::max(o.retry_max, backoff));
      continue;
    }
    backoff = std::max(o.retry_initial, std::chrono::milliseconds(1));
    for (const PlainPtr& plain : plains) {
      hash.Update(plain->span());
      if (Status m = matcher.Feed(plain->span()); !m.ok()) {
        EndVerification(o, m);
        return;
      }
      verified_chunks.fetch_add(1, std::memory_order_relaxed);
    }
    plains.clear();  // wiped now, not with the next batch
    i = batch.back() + 1;
    if (rate > 0) {
      const auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(
                                   static_cast<long double>(sent) * 1e9L / rate));
      if (!SleepUntil(due)) return;
    }
  }
  const crypto::Sha256Digest digest = hash.Finish();
  if (digest != index->diff_id()) {
    EndVerification(o, Status::AuthFailed("the tar stream hashes to " + crypto::OciDigest(digest) +
                                          ", the TOC's tar_sha256 (the diff_id) is " +
                                          crypto::OciDigest(index->diff_id())));
    return;
  }
  EndVerification(o, matcher.Finish());
}

// ---- CachedLayer ------------------------------------------------------------------------------

CachedLayer::CachedLayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CachedLayer::~CachedLayer() {
  impl_->StopBackground();
  impl_->StopOpenWorkers();
}

Result<std::shared_ptr<CachedLayer>> CachedLayer::Create(
    std::shared_ptr<const format::LayerIndex> index,
    std::shared_ptr<const format::ChunkOpener> opener, std::shared_ptr<BlobSource> source,
    ChunkStore* store, const CachedLayerOptions& options) {
  if (!index || !opener || !source) {
    return Status::InvalidArgument("CachedLayer: null index, opener or source");
  }
  if (opener->salt() != index->header().salt) {
    return Status::FailedPrecondition("CachedLayer: the chunk opener belongs to another blob");
  }
  if (source->size() != index->blob_size()) {
    return Status::FailedPrecondition("CachedLayer: blob source is " +
                                      std::to_string(source->size()) +
                                      " bytes, the index was opened on " +
                                      std::to_string(index->blob_size()));
  }
  if (options.max_request_bytes == 0) {
    return Status::InvalidArgument("CachedLayer: max_request_bytes is 0");
  }
  auto impl = std::make_unique<Impl>();
  impl->key = options.store_key.empty() ? "toc-" + crypto::HexEncode(index->toc_digest())
                                        : options.store_key;
  LC_RETURN_IF_ERROR(ValidateBlobKey(impl->key).WithContext("CachedLayer"));
  impl->index = std::move(index);
  impl->opener = std::move(opener);
  impl->multi = dynamic_cast<MultiRangeBlobSource*>(source.get());
  impl->source = std::move(source);
  impl->store = store;
  impl->options = options;
  std::shared_ptr<OpenedChunkCache> opened = options.opened_cache;
  if (!opened) {
    // A layer of its own (lazycrypt mount, tools, tests): a budget of its own.
    OpenedChunkCacheOptions own;
    own.budget_bytes = options.memory_cache_bytes;
    opened = OpenedChunkCache::Create(own);
  }
  impl->mem = opened->OpenSlot();
  impl->StartOpenWorkers();
  return std::shared_ptr<CachedLayer>(new CachedLayer(std::move(impl)));
}

Result<std::shared_ptr<CachedLayer>> CachedLayer::Open(std::shared_ptr<BlobSource> source,
                                                       const format::LayerKey& key,
                                                       const crypto::Sha256Digest& pinned_toc_digest,
                                                       ChunkStore* store,
                                                       const CachedLayerOptions& options) {
  if (!source) return Status::InvalidArgument("CachedLayer: null source");
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const format::LayerIndex> index,
                      format::LayerIndex::Open(*source, key, pinned_toc_digest, options.toc_limits));
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const format::ChunkOpener> opener,
                      format::ChunkOpener::Create(key, index->header()));
  return Create(std::move(index), std::move(opener), std::move(source), store, options);
}

const format::LayerIndex& CachedLayer::index() const { return *impl_->index; }

Result<size_t> CachedLayer::ReadFile(format::EntryView entry, uint64_t offset,
                                     MutableByteSpan out) {
  return impl_->ReadFile(entry, offset, out);
}

Result<FileView> CachedLayer::ViewFile(format::EntryView entry, uint64_t offset, size_t size) {
  return impl_->ViewFile(entry, offset, size);
}

Status CachedLayer::Prefetch(const std::vector<format::EntryView>& files) {
  return impl_->Prefetch(files);
}

Status CachedLayer::PrefetchMarked() { return impl_->Prefetch(impl_->MarkedFiles()); }

Status CachedLayer::PrefetchAll() {
  std::vector<uint64_t> chunks(impl_->index->chunks().size());
  for (uint64_t i = 0; i < chunks.size(); ++i) chunks[i] = i;
  Status extra_status;
  LC_RETURN_IF_ERROR(impl_->Acquire({}, chunks, Purpose::kPrefetch, nullptr, &extra_status));
  return extra_status;
}

Status CachedLayer::StartPrefetchMarked() {
  Result<std::vector<uint64_t>> chunks = impl_->ChunksOfFiles(impl_->MarkedFiles());
  if (!chunks.ok()) {
    // Counts as a prefetch that started and ended: a background fetch need not wait for it.
    std::lock_guard lock(impl_->mu);
    if (impl_->prefetch_started) return Status::FailedPrecondition("prefetch already started");
    impl_->prefetch_started = true;
    return chunks.status();
  }
  return StartPrefetch(std::move(*chunks), nullptr);
}

Status CachedLayer::StartPrefetchAll(std::function<void()> on_done) {
  std::vector<uint64_t> chunks(impl_->index->chunks().size());
  for (uint64_t i = 0; i < chunks.size(); ++i) chunks[i] = i;
  return StartPrefetch(std::move(chunks), std::move(on_done));
}

Status CachedLayer::StartPrefetch(std::vector<uint64_t> chunks, std::function<void()> on_done) {
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.mu);
    if (impl.prefetch_started) return Status::FailedPrecondition("prefetch already started");
    impl.prefetch_started = true;
    impl.prefetch_running = true;
  }
  auto finish = [&impl, on_done = std::move(on_done)] {
    {
      std::lock_guard lock(impl.mu);
      impl.prefetch_running = false;
    }
    impl.bg_cv.notify_all();
    if (on_done) on_done();
  };
  // Claimed here, before this returns: a read that comes after waits for these flights.
  auto claim =
      std::make_shared<Impl::Claim>(impl.ClaimChunks({}, chunks, Purpose::kPrefetch, nullptr));
  // Nothing escapes the thread (std::terminate would take the daemon down): a throw in Serve
  // (std::bad_alloc) completes the claimed flights it left with an error (the readers waiting on
  // them fetch again). Watched weakly: Serve hands the flights over to their requests, which
  // release them (and their plaintext) once done.
  auto serve = [&impl, claim, finish] {
    std::vector<std::pair<uint64_t, std::weak_ptr<Flight>>> led;
    try {
      led.reserve(claim->led.size());
      for (const Impl::Led& l : claim->led) led.emplace_back(l.chunk, l.flight);
      Status extra_status;  // a failed chunk is fetched again by the read that needs it
      (void)impl.Serve(*claim, Purpose::kPrefetch, nullptr, &extra_status);
    } catch (...) {
      // Only Serve completes its led flights: one not done now never will be. (Without the
      // list, for want of memory, the claim's own pointers are all there is.)
      auto fail = [&impl](uint64_t i, const std::shared_ptr<Flight>& flight) {
        if (!flight) return;
        {
          std::lock_guard lock(impl.mu);
          if (flight->done) return;
        }
        Status failed(StatusCode::kUnavailable, std::string());  // allocates nothing
        try {
          failed = Status::Unavailable("the prefetch failed (out of memory?)");
        } catch (...) {
        }
        impl.Complete(i, flight, std::move(failed), nullptr);
      };
      if (led.size() == claim->led.size()) {
        for (const auto& [i, weak] : led) fail(i, weak.lock());
      } else {
        for (const Impl::Led& l : claim->led) fail(l.chunk, l.flight);
      }
    }
    try {
      finish();
    } catch (...) {
    }
  };
  try {
    impl.prefetch_thread = std::thread(serve);
  } catch (...) {  // no thread (or no memory for one): served here, which completes the flights
    serve();
    return Status::Ok();
  }
  return Status::Ok();
}

bool CachedLayer::prefetch_done() const {
  std::lock_guard lock(impl_->mu);
  return impl_->prefetch_started && !impl_->prefetch_running;
}

Status CachedLayer::StartBackgroundFetch(uint64_t rate_bytes_per_sec) {
  if (impl_->store == nullptr) {
    return Status::FailedPrecondition("background fetch needs a chunk store");
  }
  std::lock_guard lock(impl_->mu);
  if (impl_->bg_started) return Status::FailedPrecondition("background fetch already started");
  impl_->bg_started = true;
  try {
    impl_->bg_thread = std::thread([impl = impl_.get(), rate_bytes_per_sec] {
      impl->BackgroundLoop(rate_bytes_per_sec);
    });
  } catch (const std::system_error& e) {
    impl_->bg_started = false;
    return Status::Internal(std::string("background fetch: cannot start a thread: ") + e.what());
  }
  return Status::Ok();
}

void CachedLayer::StopBackgroundFetch() { impl_->StopBackground(); }

Status CachedLayer::StartVerification(VerifyOptions options) {
  std::lock_guard lock(impl_->mu);
  if (impl_->verify_started) return Status::FailedPrecondition("verification already started");
  if (impl_->bg_stop) return Status::FailedPrecondition("the layer is stopping");
  impl_->verify_started = true;
  impl_->verify_state.store(VerificationState::kPending, std::memory_order_release);
  try {
    impl_->verify_thread = std::thread(
        [impl = impl_.get(), options = std::move(options)] { impl->VerifyLoop(options); });
  } catch (const std::system_error& e) {
    impl_->verify_started = false;
    impl_->verify_state.store(VerificationState::kOff, std::memory_order_release);
    return Status::Internal(std::string("verification: cannot start a thread: ") + e.what());
  }
  return Status::Ok();
}

VerificationState CachedLayer::verification() const {
  return impl_->verify_state.load(std::memory_order_acquire);
}

Status CachedLayer::verification_status() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  switch (m.verify_state.load(std::memory_order_acquire)) {
    case VerificationState::kVerified:
      return Status::Ok();
    case VerificationState::kFailed:
      return m.verify_failure;
    case VerificationState::kOff:
      return Status::Unavailable("not verified (no verification was started)");
    case VerificationState::kPending:
      break;
  }
  std::string msg = "verification pending (" +
                    std::to_string(m.verified_chunks.load(std::memory_order_relaxed)) + " of " +
                    std::to_string(m.index->chunks().size()) + " chunks hashed)";
  if (!m.verify_last_error.ok()) msg += "; last attempt: " + m.verify_last_error.ToString();
  return Status::Unavailable(msg);
}

bool CachedLayer::background_fetch_done() const { return impl_->bg_done.load(); }

const std::string& CachedLayer::store_key() const { return impl_->key; }

LayerStats CachedLayer::stats() const {
  const Impl& m = *impl_;
  LayerStats s;
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.blob_bytes_fetched = get(m.blob_bytes_fetched);
  s.fetch_requests = get(m.fetch_requests);
  s.chunks_fetched = get(m.chunks_fetched);
  s.chunks_opened = get(m.chunks_opened);
  s.cache_hits = get(m.cache_hits);
  s.cache_misses = get(m.cache_misses);
  s.auth_failures = get(m.auth_failures);
  s.fetch_nanos = get(m.fetch_nanos);
  s.disk_corrupt = get(m.disk_corrupt);
  s.fetch_errors = get(m.fetch_errors);
  s.verification = m.verify_state.load(std::memory_order_acquire);
  s.verified_chunks = get(m.verified_chunks);
  s.verification_retries = get(m.verification_retries);
  s.verification_failures = s.verification == VerificationState::kFailed ? 1 : 0;
  s.quarantined_reads = get(m.quarantined_reads);
  s.chunk_count = m.index->chunks().size();
  if (m.store != nullptr) {
    s.chunks_present = m.store->ChunksPresent(m.key);
    s.bytes_present = m.store->BytesPresent(m.key);
  }
  s.memory_cache_bytes = m.mem->bytes_held();
  return s;
}

}  // namespace lazycrypt::cache
