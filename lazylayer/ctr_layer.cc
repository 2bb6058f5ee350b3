#include "lazylayer/ctr_layer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <functional>
#include <future>
#include <deque>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <system_error>
#include <thread>

#include "crypto/secure_buffer.h"

namespace lazycrypt::lazylayer {
namespace {

// The verification reads the blob in pieces of this size (one ranged request each).
constexpr size_t kVerifyReadBytes = size_t{4} << 20;
// Read-ahead: loads in parallel per layer (each a ranged request, two for an indexed span), the
// most chunks queued for them (more is dropped: the readers load it), the files whose next
// sequential offset is remembered (then forgotten at once, as cache/cached_layer.cc does).
constexpr size_t kReadAheadWorkers = 4;
constexpr size_t kReadAheadMaxQueued = 64;
constexpr size_t kReadAheadFilesTracked = 4096;

}  // namespace

Status CountingSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  if (held_.Serve(offset, out)) return Status::Ok();
  const auto start = std::chrono::steady_clock::now();
  Status s = inner_->ReadAt(offset, out);
  nanos_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - start)
                       .count(),
                   std::memory_order_relaxed);
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (s.ok()) {
    bytes_.fetch_add(out.size(), std::memory_order_relaxed);
  } else {
    errors_.fetch_add(1, std::memory_order_relaxed);
  }
  return s;
}

bool ReadWholeAtMount(const CtrLayerOptions& options, uint64_t blob_size,
                      const std::string& store_key) {
  return blob_size > 0 && blob_size <= options.whole_layer_bytes &&
         (options.store == nullptr || options.store->ChunksPresent(store_key) == 0);
}

Result<size_t> LargeReadStream::Read(MutableByteSpan out) {
  if (pos_ == filled_) {
    if (offset_ >= blob_.size()) return size_t{0};
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(buffer_.size(), blob_.size() - offset_));
    if (!before_read_(want)) return Status::Unavailable("stopped");
    LC_RETURN_IF_ERROR(blob_.ReadAt(offset_, MutableByteSpan(buffer_).first(want)));
    if (on_piece_) LC_RETURN_IF_ERROR(on_piece_(offset_, ByteSpan(buffer_).first(want)));
    offset_ += want;
    pos_ = 0;
    filled_ = want;
  }
  const size_t n = std::min(out.size(), filled_ - pos_);
  std::memcpy(out.data(), buffer_.data() + pos_, n);
  pos_ += n;
  return n;
}

Status CtrLayerData::CheckNotQuarantined() {
  if (!quarantined()) return Status::Ok();
  quarantined_reads_.fetch_add(1, std::memory_order_relaxed);
  return Status::AuthFailed("layer quarantined: it failed its verification");
}

bool CtrLayerData::WaitWhileFetching(std::chrono::milliseconds at_most) {
  std::unique_lock<std::mutex> lock(fetch_mu_);
  if (fetches_ == 0) return false;
  fetch_cv_.wait_for(lock, at_most, [&] { return fetches_ == 0; });
  return true;
}

void CtrLayerData::Finish(Verification v, Status status) {
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    verification_status_ = std::move(status);
  }
  verification_.store(v);
}

Status CtrLayerData::verification_status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return verification_status_;
}

std::unique_ptr<cache::OpenedChunkCache::LayerSlot> OpenedChunkSlot(
    const CtrLayerOptions& options) {
  std::shared_ptr<cache::OpenedChunkCache> opened = options.opened_cache;
  if (!opened) {
    opened = cache::OpenedChunkCache::Create({.budget_bytes = options.opened_chunk_cache_bytes});
  }
  return opened->OpenSlot();
}

Result<cache::OpenedChunkPtr> CtrLayerData::LoadChunk(uint32_t i, bool reader) {
  using Opened = Result<cache::OpenedChunkPtr>;
  if (cache::OpenedChunkPtr hit = opened_->Lookup(i)) {
    cache_hits_.fetch_add(1, std::memory_order_relaxed);
    return hit;
  }
  std::promise<Opened> promise;
  // A reader whose wait ended with a prefetch's or read-ahead's failure (stopped on hand-over, a
  // failed run: FORMAT.md §10.7, §11.8) goes round once more, loading the chunk itself unless
  // another load has it in flight by then.
  for (bool tried_again = false;; tried_again = true) {
    InFlight waiting;
    {
      std::lock_guard<std::mutex> lock(inflight_mu_);
      if (auto f = inflight_.find(i); f != inflight_.end()) {
        waiting = f->second;
      } else {
        // Inserted before the flight ends (below): looked up again under the lock, so a reader
        // finds it in one or the other.
        if (cache::OpenedChunkPtr hit = opened_->Lookup(i)) {
          cache_hits_.fetch_add(1, std::memory_order_relaxed);
          return hit;
        }
        inflight_[i] = InFlight{promise.get_future().share(), reader};
      }
    }
    if (!waiting.answer.valid()) break;  // this load leads the flight
    cache_hits_.fetch_add(1, std::memory_order_relaxed);
    Opened answer = waiting.answer.get();
    if (answer.ok() || !reader || waiting.by_reader || tried_again) return answer;
  }
  cache_misses_.fetch_add(1, std::memory_order_relaxed);
  // Whatever happens, the flight ends with an answer: a throw (std::bad_alloc for a span's
  // buffers) left in flight would leave every later reader of this chunk waiting on a promise
  // nobody sets. The error is not cached: the next reader tries again.
  Opened opened = Status::Internal("chunk " + std::to_string(i) + ": not opened");
  try {
    opened = Load(i);
    // Kept (node-wide budget) before the flight ends; outside the lock: evicted chunks of any
    // layer are wiped on this thread.
    if (opened.ok()) (void)opened_->Insert(i, *opened);
  } catch (const std::bad_alloc&) {
    opened = Status::Unavailable("chunk " + std::to_string(i) + ": out of memory opening it");
  } catch (const std::exception& e) {
    opened = Status::Internal("chunk " + std::to_string(i) + ": " + e.what());
  }
  {
    std::lock_guard<std::mutex> lock(inflight_mu_);
    inflight_.erase(i);
  }
  promise.set_value(opened);
  return opened;
}

CtrLayerData::~CtrLayerData() { StopReadAhead(); }

bool CtrLayerData::OpenedOrLoading(uint32_t i) {
  if (opened_->Contains(i)) return true;
  std::lock_guard<std::mutex> lock(inflight_mu_);
  return inflight_.count(i) != 0;
}

void CtrLayerData::ReadAhead(uint32_t entry, uint64_t offset, uint64_t bytes, uint32_t first,
                             uint32_t next, uint32_t end) {
  const uint64_t budget = readahead_bytes_.load();
  if (budget == 0 || quarantined()) return;
  bool sequential = false;
  {
    std::lock_guard<std::mutex> lock(ra_mu_);
    if (ra_stop_) return;
    auto it = ra_next_offset_.find(entry);
    // A read from a file's start is taken as the start of a sequential read (exec'd binaries and
    // the files a start reads are read whole).
    sequential = offset == 0 || (it != ra_next_offset_.end() && it->second == offset);
    if (ra_next_offset_.size() >= kReadAheadFilesTracked) ra_next_offset_.clear();
    ra_next_offset_[entry] = offset + bytes;
  }
  // The read's own chunks after its first (its reader loads the first meanwhile), then the
  // file's next ones within the budget; none already opened or loading.
  std::vector<uint32_t> own, ahead;
  for (uint32_t j = first + 1; j < next; ++j) {
    if (!OpenedOrLoading(j)) own.push_back(j);
  }
  if (sequential) {
    const auto chunks = index().chunks();
    uint64_t total = 0;
    for (uint32_t j = next; j < end && j < chunks.size(); ++j) {
      // What loading it costs: its tar bytes, or what is fetched for them when that is more (a
      // key holder's index may give a span of 1 tar byte 64 MiB of ciphertext).
      const Result<CiphertextRange> range = ChunkCiphertext(j);
      if (!range.ok()) break;
      total += std::max<uint64_t>(chunks[j].raw_size, range->size + range->side_size);
      if (total > budget) break;
      if (!OpenedOrLoading(j)) ahead.push_back(j);
    }
  }
  if (own.empty() && ahead.empty()) return;
  std::lock_guard<std::mutex> lock(ra_mu_);
  if (ra_stop_) return;
  // The read's own chunks go first, in order.
  for (auto j = own.rbegin(); j != own.rend(); ++j) {
    if (ra_queue_.size() >= kReadAheadMaxQueued) break;
    if (!ra_pending_.insert(*j).second) continue;
    ra_queue_.push_front(*j);
    readahead_chunks_.fetch_add(1);
  }
  for (uint32_t j : ahead) {
    if (ra_queue_.size() >= kReadAheadMaxQueued) break;
    if (!ra_pending_.insert(j).second) continue;
    ra_queue_.push_back(j);
    readahead_chunks_.fetch_add(1);
  }
  while (ra_idle_ < ra_queue_.size() && ra_workers_.size() < kReadAheadWorkers) {
    try {
      ra_workers_.emplace_back([this] { ReadAheadWorker(); });
    } catch (const std::system_error&) {
      break;  // no thread to spare: what no worker takes, the readers load
    }
  }
  if (ra_workers_.empty()) {
    for (uint32_t j : ra_queue_) ra_pending_.erase(j);
    ra_queue_.clear();
    return;
  }
  ra_cv_.notify_all();
}

void CtrLayerData::ReadAheadWorker() {
  std::unique_lock<std::mutex> lock(ra_mu_);
  while (true) {
    ++ra_idle_;
    ra_cv_.wait(lock, [&] { return ra_stop_ || !ra_queue_.empty(); });
    --ra_idle_;
    if (ra_stop_) return;
    const uint32_t j = ra_queue_.front();
    ra_queue_.pop_front();
    lock.unlock();
    // Errors are dropped (not cached: the reader that needs the chunk tries again). A quarantined
    // layer loads nothing more; a chunk a reader got to first is left to it.
    try {
      if (!quarantined() && !OpenedOrLoading(j)) (void)LoadChunk(j, /*reader=*/false);
    } catch (...) {
    }
    lock.lock();
    ra_pending_.erase(j);
  }
}

bool CtrLayerData::readahead_idle() const {
  std::lock_guard<std::mutex> lock(ra_mu_);
  return ra_pending_.empty();
}

void CtrLayerData::StopReadAhead() {
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(ra_mu_);
    ra_stop_ = true;
    for (uint32_t j : ra_queue_) ra_pending_.erase(j);
    ra_queue_.clear();
    workers.swap(ra_workers_);
  }
  ra_cv_.notify_all();
  // A worker ends once its load in flight does (the source's own timeouts bound it).
  for (std::thread& t : workers) t.join();
}

Status CtrLayerData::FetchSide(uint32_t i, const CiphertextRange&, MutableByteSpan) {
  return Status::Internal("chunk " + std::to_string(i) + ": this format has no side bytes");
}

Status CtrLayerData::FetchSides(std::span<const uint32_t> chunks,
                                std::span<const CiphertextRange> ranges,
                                std::span<const MutableByteSpan> outs) {
  for (size_t k = 0; k < chunks.size(); ++k) {
    LC_RETURN_IF_ERROR(FetchSide(chunks[k], ranges[k], outs[k]));
  }
  return Status::Ok();
}

CtrLayerData::FetchInFlight::FetchInFlight(CtrLayerData& data) : d_(data) {
  std::lock_guard<std::mutex> lock(d_.fetch_mu_);
  ++d_.fetches_;
}

CtrLayerData::FetchInFlight::~FetchInFlight() {
  {
    std::lock_guard<std::mutex> lock(d_.fetch_mu_);
    --d_.fetches_;
  }
  d_.fetch_cv_.notify_all();
}

Result<cache::OpenedChunkPtr> CtrLayerData::Load(uint32_t i) {
  LC_ASSIGN_OR_RETURN(CiphertextRange range, ChunkCiphertext(i));
  // One record: the ciphertext, then the side bytes (if any), as the store keeps it.
  std::vector<uint8_t> record(static_cast<size_t>(range.size + range.side_size));
  const MutableByteSpan ciphertext = MutableByteSpan(record).first(static_cast<size_t>(range.size));
  const MutableByteSpan side = MutableByteSpan(record).subspan(static_cast<size_t>(range.size));
  const uint64_t store_offset = range.store_offset.value_or(range.offset);
  // The disk store first (as fetched; opened below exactly as fresh bytes are).
  if (store_ != nullptr) {
    auto got = store_->Get(store_key_, i, store_offset, record);
    if (got.ok() && *got) {
      auto opened = OpenCiphertext(i, ciphertext, side);
      if (opened.ok()) {
        chunks_opened_.fetch_add(1, std::memory_order_relaxed);
        return opened;
      }
      // Damaged on disk (or not this blob's): dropped and fetched again.
      disk_corrupt_.fetch_add(1, std::memory_order_relaxed);
      (void)store_->Drop(store_key_, i);
    }
  }
  Status fetched, side_status;
  {
    FetchInFlight in_flight(*this);
    // The side bytes are fetched while the ciphertext is (a chunk costs one round trip), and
    // joined before anything is opened or returned (`side` is this frame's). Without a thread
    // to spare, after it.
    std::future<Status> side_fetched;
    if (range.side_size > 0) {
      try {
        side_fetched = std::async(std::launch::async,
                                  [this, i, &range, side] { return FetchSide(i, range, side); });
      } catch (const std::system_error&) {
      }
    }
    fetched = ciphertext_->ReadAt(range.offset, ciphertext);
    if (side_fetched.valid()) {
      side_status = side_fetched.get();  // rethrows what FetchSide threw (Chunk catches it)
    } else if (range.side_size > 0) {
      side_status = FetchSide(i, range, side);
    }
  }
  LC_RETURN_IF_ERROR(fetched.WithContext("chunk " + std::to_string(i)));
  LC_RETURN_IF_ERROR(side_status.WithContext("chunk " + std::to_string(i)));
  return OpenFetched(i, range, record);
}

Result<cache::OpenedChunkPtr> CtrLayerData::OpenFetched(uint32_t i, const CiphertextRange& range,
                                                        MutableByteSpan record) {
  chunks_fetched_.fetch_add(1, std::memory_order_relaxed);
  const ByteSpan ciphertext = ByteSpan(record).first(static_cast<size_t>(range.size));
  const ByteSpan side = ByteSpan(record).subspan(static_cast<size_t>(range.size));
  auto opened = OpenCiphertext(i, ciphertext, side);
  if (!opened.ok()) {
    // A chunk that does not decode or hash to its pinned digest: EIO for its readers.
    auth_failures_.fetch_add(1, std::memory_order_relaxed);
    return opened;
  }
  chunks_opened_.fetch_add(1, std::memory_order_relaxed);
  // Kept only once verified (a failure to store costs a later fetch, nothing else).
  if (store_ != nullptr) {
    (void)store_->Put(store_key_, i, range.store_offset.value_or(range.offset), record);
  }
  return opened;
}

struct CtrLayerData::Claimed {
  uint32_t i = 0;
  CiphertextRange range;
  std::promise<Result<cache::OpenedChunkPtr>> promise;
  bool finished = false;
  bool in_flight = false;  // its answer is in inflight_ (claimed by this load)
};

void CtrLayerData::FinishClaimed(Claimed& c, Result<cache::OpenedChunkPtr> opened) {
  if (c.finished) return;
  c.finished = true;
  // Kept (node-wide budget) before the flight ends, as Chunk does.
  if (opened.ok()) {
    try {
      (void)opened_->Insert(c.i, *opened);
    } catch (...) {  // not kept: served to the waiting readers all the same
    }
  }
  {
    std::lock_guard<std::mutex> lock(inflight_mu_);
    inflight_.erase(c.i);
  }
  c.promise.set_value(std::move(opened));
}

Status CtrLayerData::LoadRun(std::span<Claimed> run, const std::function<bool()>& stopped) {
  using Opened = Result<cache::OpenedChunkPtr>;
  const uint64_t lo = run.front().range.offset;
  uint64_t hi = lo;
  for (const Claimed& c : run) hi = std::max(hi, c.range.offset + c.range.size);
  Status fetched, side_status;
  std::vector<uint8_t> bytes;
  // The side bytes of the run's chunks that have them (k-th: side_chunks[k]), each buffer its
  // own; declared before the side thread's future, which joins it (it writes into them).
  std::vector<uint32_t> side_chunks;
  std::vector<CiphertextRange> side_ranges;
  std::vector<std::vector<uint8_t>> sides;
  std::vector<MutableByteSpan> side_outs;
  std::vector<size_t> side_of(run.size(), SIZE_MAX);  // run position -> index in sides
  try {
    if (stopped && stopped()) {
      fetched = Status::Unavailable("the prefetch was stopped");
    } else {
      bytes.resize(static_cast<size_t>(hi - lo));
      for (size_t k = 0; k < run.size(); ++k) {
        if (run[k].range.side_size == 0) continue;
        side_of[k] = sides.size();
        side_chunks.push_back(run[k].i);
        side_ranges.push_back(run[k].range);
        sides.emplace_back(static_cast<size_t>(run[k].range.side_size));
      }
      for (std::vector<uint8_t>& side : sides) side_outs.emplace_back(side);
      FetchInFlight in_flight(*this);
      // As Load: the side bytes are fetched while the ciphertext is, and joined before anything
      // is opened or returned. Without a thread to spare, after it.
      std::future<Status> side_fetched;
      if (!sides.empty()) {
        try {
          side_fetched = std::async(std::launch::async, [&] {
            return FetchSides(side_chunks, side_ranges, side_outs);
          });
        } catch (const std::system_error&) {
        }
      }
      try {
        fetched = ciphertext_->ReadAt(lo, bytes);
      } catch (...) {
        if (side_fetched.valid()) side_fetched.wait();
        throw;
      }
      if (side_fetched.valid()) {
        try {
          side_status = side_fetched.get();
        } catch (const std::bad_alloc&) {
          side_status = Status::Unavailable("prefetch: out of memory fetching side bytes");
        } catch (const std::exception& e) {
          side_status = Status::Internal(std::string("prefetch: side bytes: ") + e.what());
        }
      } else if (!sides.empty()) {
        side_status = FetchSides(side_chunks, side_ranges, side_outs);
      }
    }
  } catch (const std::bad_alloc&) {
    fetched = Status::Unavailable("prefetch: out of memory for a run of " +
                                  std::to_string(hi - lo) + " bytes");
  } catch (const std::exception& e) {
    fetched = Status::Internal(std::string("prefetch: ") + e.what());
  }
  if (!side_status.ok() && !side_chunks.empty()) {
    side_status = side_status.WithContext(
        "side bytes of chunks " + std::to_string(side_chunks.front()) + ".." +
        std::to_string(side_chunks.back()));
  }
  Status first_error;
  for (size_t k = 0; k < run.size(); ++k) {
    Claimed& c = run[k];
    Status failed = fetched.WithContext("chunk " + std::to_string(c.i));
    if (failed.ok() && side_of[k] != SIZE_MAX) failed = side_status;
    Opened opened = failed;
    if (failed.ok()) {
      try {
        // One record: the ciphertext, then the side bytes, as Load builds it.
        const size_t at = static_cast<size_t>(c.range.offset - lo);
        const size_t size = static_cast<size_t>(c.range.size);
        std::vector<uint8_t> record(size + static_cast<size_t>(c.range.side_size));
        std::memcpy(record.data(), bytes.data() + at, size);
        if (side_of[k] != SIZE_MAX) {
          const std::vector<uint8_t>& side = sides[side_of[k]];
          std::memcpy(record.data() + size, side.data(), side.size());
        }
        opened = OpenFetched(c.i, c.range, record);
      } catch (const std::bad_alloc&) {
        opened = Status::Unavailable("chunk " + std::to_string(c.i) + ": out of memory opening it");
      } catch (const std::exception& e) {
        opened = Status::Internal("chunk " + std::to_string(c.i) + ": " + e.what());
      }
    }
    if (!opened.ok() && first_error.ok()) first_error = opened.status();
    FinishClaimed(c, std::move(opened));
  }
  return first_error;
}

Status CtrLayerData::LoadRuns(const std::vector<uint32_t>& chunks,
                              const std::function<bool()>& stopped, uint64_t max_request_bytes) {
  constexpr uint64_t kMaxGapBytes = uint64_t{64} << 10;
  // Everything that can throw before the claim: the bookkeeping's buffers, each candidate's
  // range and promise (its shared state). A throw here has claimed nothing.
  std::vector<Claimed> claimed;
  std::vector<size_t> runs;
  std::vector<Status> results;
  std::vector<std::thread> helpers;
  try {
    claimed.reserve(chunks.size());
    runs.reserve(chunks.size() + 1);
    results.reserve(chunks.size());
    helpers.reserve(kLoadRunsInFlight);
    for (uint32_t i : chunks) {
      if (opened_->Contains(i)) continue;  // asked again under the lock
      Result<CiphertextRange> range = ChunkCiphertext(i);
      if (!range.ok() || range->size == 0) continue;
      // Bigger than a request on its own: left to its readers (each run keeps to the bound).
      if (range->size > max_request_bytes || range->side_size > max_request_bytes - range->size) {
        continue;
      }
      if (store_ != nullptr && store_->Contains(store_key_, i)) continue;  // Chunk: from disk
      if (!claimed.empty() && range->offset < claimed.back().range.offset) continue;  // ascending
      claimed.push_back(Claimed{i, *range, {}, false, false});
    }
  } catch (const std::bad_alloc&) {
    return Status::Unavailable("prefetch: out of memory before claiming any chunk");
  } catch (const std::exception& e) {
    return Status::Internal(std::string("prefetch: before claiming any chunk: ") + e.what());
  }
  // Claimed before any request (a reader that comes meanwhile waits for this load), all or
  // nothing: should an insertion throw, those made are taken back before the lock is released,
  // so no reader has seen them (their promises, never waited on, go unanswered).
  bool claim_failed = false;
  {
    std::lock_guard<std::mutex> lock(inflight_mu_);
    try {
      for (Claimed& c : claimed) {
        if (inflight_.count(c.i) != 0 || opened_->Contains(c.i)) continue;
        inflight_.emplace(c.i, InFlight{c.promise.get_future().share(), false});
        c.in_flight = true;
      }
    } catch (...) {
      for (Claimed& c : claimed) {
        if (c.in_flight) inflight_.erase(c.i);
        c.in_flight = false;
      }
      claim_failed = true;
    }
  }
  if (claim_failed) return Status::Unavailable("prefetch: out of memory claiming chunks");
  // The candidates another load had, or that were opened meanwhile, go (moves: nothrow).
  std::erase_if(claimed, [](const Claimed& c) { return !c.in_flight; });
  // From here on nothing throws until every claimed chunk is answered. The runs:
  // claimed[runs[r], runs[r + 1]), each the next chunks whose ciphertext follows within
  // kMaxGapBytes, up to the bound on the run's ciphertext (gaps included) and side bytes.
  for (size_t k = 0; k < claimed.size();) {
    runs.push_back(k);
    const CiphertextRange& first = claimed[k].range;
    const uint64_t lo = first.offset;
    uint64_t hi = lo + first.size, side_bytes = first.side_size;
    ++k;
    while (k < claimed.size()) {
      const CiphertextRange& r = claimed[k].range;
      if (r.offset > hi + kMaxGapBytes) break;
      const uint64_t end = std::max(hi, r.offset + r.size);
      if (end - lo + side_bytes + r.side_size > max_request_bytes) break;
      hi = end;
      side_bytes += r.side_size;
      ++k;
    }
  }
  runs.push_back(claimed.size());
  const size_t run_count = runs.size() - 1;
  results.resize(run_count);
  std::atomic<size_t> next_run{0};
  // Takes the next run until none is left; never throws.
  auto work = [&] {
    for (size_t r = next_run.fetch_add(1); r < run_count; r = next_run.fetch_add(1)) {
      try {
        results[r] = LoadRun(
            std::span<Claimed>(claimed).subspan(runs[r], runs[r + 1] - runs[r]), stopped);
      } catch (...) {  // its unanswered chunks are answered below, once every run is done
        results[r] = Status(StatusCode::kUnavailable, std::string());  // allocates nothing
        try {
          results[r] = Status::Unavailable("prefetch: a run failed (out of memory?)");
        } catch (...) {
        }
      }
    }
  };
  try {
    while (helpers.size() + 1 < std::min(kLoadRunsInFlight, run_count)) helpers.emplace_back(work);
  } catch (...) {  // no thread to spare (or no memory for one): fewer runs at once
  }
  work();  // this thread takes runs too, so every run is loaded even without helpers
  for (std::thread& t : helpers) t.join();
  // Only when a run threw before answering all its chunks: no reader waits forever (and the
  // answer's message, when there is no memory for it, is left empty rather than thrown).
  for (Claimed& c : claimed) {
    if (c.finished) continue;
    Status unanswered(StatusCode::kUnavailable, std::string());
    try {
      unanswered = Status::Unavailable("chunk " + std::to_string(c.i) +
                                       ": the prefetch did not load it");
    } catch (...) {
    }
    FinishClaimed(c, std::move(unanswered));
  }
  for (const Status& s : results) {
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

void CtrLayerData::FillStats(cache::LayerStats& s) const {
  s.blob_bytes_fetched = ciphertext_->bytes();
  s.fetch_requests = ciphertext_->requests();
  s.fetch_errors = ciphertext_->errors();
  s.fetch_nanos = ciphertext_->nanos();
  s.chunks_fetched = chunks_fetched_.load(std::memory_order_relaxed);
  s.chunks_opened = chunks_opened_.load(std::memory_order_relaxed);
  s.cache_hits = cache_hits_.load(std::memory_order_relaxed);
  s.cache_misses = cache_misses_.load(std::memory_order_relaxed);
  s.auth_failures = auth_failures_.load(std::memory_order_relaxed);
  s.chunk_count = index().chunks().size();
  s.quarantined_reads = quarantined_reads_.load(std::memory_order_relaxed);
  s.disk_corrupt = disk_corrupt_.load(std::memory_order_relaxed);
  s.memory_cache_bytes = opened_->bytes_held();
  if (store_ != nullptr) {
    s.chunks_present = store_->ChunksPresent(store_key_);
    s.bytes_present = store_->BytesPresent(store_key_);
  }
  switch (verification_.load()) {
    case Verification::kPending:
      s.verification =
          verify_on_ ? cache::VerificationState::kPending : cache::VerificationState::kOff;
      break;
    case Verification::kVerified: s.verification = cache::VerificationState::kVerified; break;
    case Verification::kFailed:
      s.verification = cache::VerificationState::kFailed;
      s.verification_failures = 1;
      break;
  }
}

struct CtrMountedLayer::Background {
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  std::thread thread;
  // Sleeps up to `ms` or until stopped; true when stopped.
  bool SleepFor(std::chrono::milliseconds ms) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, ms, [&] { return stop.load(); });
  }
};

Status CtrMountedLayer::MountAndStart(const std::filesystem::path& mountpoint,
                                      std::shared_ptr<CtrLayerData> data,
                                      const CtrLayerOptions& options,
                                      std::unique_ptr<fusefs::FuseMount>* resumed) {
  data_ = std::move(data);
  if (options.verify) data_->set_verify_on();
  data_->set_readahead_bytes(options.readahead_bytes);
  fusefs::MountOptions mount_options = options.mount;
  if (mount_options.layer_name == "layer") mount_options.layer_name = "layer " + digest_;
  if (resumed != nullptr && *resumed != nullptr) {
    LC_RETURN_IF_ERROR((*resumed)->Provide(data_));
    mount_ = std::move(*resumed);
  } else {
    LC_ASSIGN_OR_RETURN(mount_, fusefs::FuseMount::Mount(mountpoint, data_, mount_options));
  }
  if (options.prefetch || options.verify || load_all_) {
    background_ = std::make_unique<Background>();
    background_->thread = std::thread([this, options] { RunBackground(options); });
  }
  return Status::Ok();
}

void CtrMountedLayer::RunBackground(CtrLayerOptions options) {
  try {
    RunBackgroundWork(options);
  } catch (...) {  // out of memory for a message or a callback's throw: the thread just ends
  }
}

void CtrMountedLayer::RunBackgroundWork(const CtrLayerOptions& options) {
  Background& bg = *background_;
  // A small layer: every chunk loaded at once (the marked ones with them), from the bytes held
  // when its mount read it whole, which the verification reads too; they are dropped when both
  // are done, whatever ends this thread.
  struct ReleaseHeld {
    CountingSource& blob;
    ~ReleaseHeld() { blob.Release(); }
  } release_held{data_->ciphertext()};
  // Errors (and exceptions: std::bad_alloc for a crafted table's chunk list) are left to the
  // readers, which load what the prefetch did not.
  try {
    if (load_all_) {
      std::vector<uint32_t> all(data_->index().chunks().size());
      std::iota(all.begin(), all.end(), 0u);
      (void)data_->LoadRuns(all, [&bg] { return bg.stop.load(); });
    } else if (options.prefetch) {
      Prefetch([&bg] { return bg.stop.load(); });
    }
  } catch (...) {
  }
  if (!options.verify) return;
  if (options.verify_start_delay_ms > 0 &&
      bg.SleepFor(std::chrono::milliseconds(options.verify_start_delay_ms))) {
    return;
  }
  // Linux: the nice value is per thread (as the GCM format's verification). Failure only means
  // normal priority.
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  auto backoff = std::chrono::milliseconds(500);
  Status result;
  while (true) {
    try {
      result = VerifyOnce(options);
    } catch (const std::bad_alloc&) {
      result = Status::Unavailable("out of memory");  // transient: tried again
    } catch (const std::system_error& e) {
      result = Status::Unavailable(std::string("system error: ") + e.what());
    } catch (...) {
      // Not a verdict on the bytes, but none can be reached: fails closed. Its text is not
      // quoted (it could carry what the layer holds into the quarantine record).
      result = Status::Internal("the verification failed on an unexpected exception");
    }
    if (bg.stop.load()) return;  // stopped mid-read: no verdict
    const StatusCode code = result.code();
    const bool transient = code == StatusCode::kUnavailable ||
                           code == StatusCode::kDeadlineExceeded || code == StatusCode::kIoError;
    if (!transient) break;
    // The source is failing: try again from the start (it never becomes verified without
    // hashing every byte).
    if (bg.SleepFor(backoff)) return;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
  }
  if (result.ok()) {
    data_->Finish(Verification::kVerified, Status::Ok());
  } else {
    result = Status(result.code(), "layer " + digest_ + ": " + result.message());
    data_->Finish(Verification::kFailed, result);
    // The caller first (it records the quarantine on disk), then the kernel's cached pages.
    if (options.on_verified) options.on_verified(result);
    // Once per layer; the message names the layer, never a file.
    std::fprintf(stderr,
                 "lazycrypt: verification failed, layer quarantined (every read of its files "
                 "fails with EIO): %s\n",
                 result.message().c_str());
    std::fflush(stderr);
    mount_->InvalidateFileData();
    return;
  }
  if (options.on_verified) options.on_verified(result);
}

Status CtrMountedLayer::VerifyOnce(const CtrLayerOptions& options) {
  // The whole ciphertext once: its digest, the HMAC and privopts' plaintext digest are checked by
  // the decrypting stream at its end; the format checks the tar stream on the way.
  // Reads yield to chunk fetches (no request while one runs, up to the yield bound) and keep to
  // the rate, if any.
  const uint64_t rate = options.verify_rate_bytes_per_sec;
  const size_t piece = rate == 0 ? kVerifyReadBytes
                                 : static_cast<size_t>(std::clamp<uint64_t>(
                                       rate / 4, uint64_t{64} << 10, kVerifyReadBytes));
  const auto max_yield = std::chrono::milliseconds(options.verify_max_yield_ms);
  const auto start = std::chrono::steady_clock::now();
  uint64_t sent = 0;
  Background& bg = *background_;
  CtrLayerData& data = *data_;
  LargeReadStream in(data.ciphertext().uncounted(), piece, [&](size_t bytes) {
    // Bounded: reads that never pause (a container scanning its files, a reader in a loop) would
    // otherwise keep the layer pending, and a bad one unquarantined, for as long as they last.
    while (!bg.stop.load()) {
      const auto spent = std::chrono::milliseconds(yielded_ms_.load());
      if (spent >= max_yield) break;
      const auto t0 = std::chrono::steady_clock::now();
      const bool waited = data.WaitWhileFetching(
          std::min<std::chrono::milliseconds>(std::chrono::milliseconds(50), max_yield - spent));
      if (!waited) break;
      yielded_ms_.fetch_add(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - t0)
                                .count());
    }
    if (rate > 0) {
      const auto due = start + std::chrono::microseconds(sent * 1000000 / rate);
      const auto now = std::chrono::steady_clock::now();
      if (due > now &&
          bg.SleepFor(std::chrono::duration_cast<std::chrono::milliseconds>(due - now))) {
        return false;
      }
    }
    sent += bytes;
    return !bg.stop.load();
  });
  LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, descriptor_, *cipher_));
  LC_ASSIGN_OR_RETURN(std::string diff_id, VerifyContent(*plain, in));
  // Anything the format's reader left unread is read, so the decrypting stream's checks run
  // (plaintext: wiped when released).
  crypto::SecureBuffer buffer(size_t{64} << 10);
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, plain->Read(buffer.span()));
    if (n == 0) break;
    return Status::Corruption("bytes after the last gzip member");
  }
  if (options.check_diff_id) LC_RETURN_IF_ERROR(options.check_diff_id(diff_id));
  return Status::Ok();
}

void CtrMountedLayer::StopBackground() {
  if (data_) data_->StopReadAhead();
  if (!background_) return;
  {
    std::lock_guard<std::mutex> lock(background_->mu);
    background_->stop.store(true);
  }
  background_->cv.notify_all();
  if (background_->thread.joinable()) background_->thread.join();
}

CtrMountedLayer::CtrMountedLayer() = default;

CtrMountedLayer::~CtrMountedLayer() {
  StopBackground();
  mount_.reset();  // unmounts, unless left to the next daemon
}

Status CtrMountedLayer::Unmount() { return mount_ ? mount_->Unmount() : Status::Ok(); }

void CtrMountedLayer::LeaveMounted() {
  StopBackground();
  if (mount_) mount_->LeaveMounted();
}

}  // namespace lazycrypt::lazylayer
