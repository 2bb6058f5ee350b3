// Internal to lc_format (not part of its API): a bounded pool of workers whose results are
// consumed in submission order. The writer seals chunks with it; the decoders open them with it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"

namespace lazycrypt::format::internal {

// Recycles chunk-sized buffers between producer, workers and emitter, so a multi-GiB layer does
// not cost one allocation (and its page faults) per chunk. Get() returns an empty vector whose
// capacity is reused. Thread-safe.
class BufferPool {
 public:
  std::vector<uint8_t> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return {};
    std::vector<uint8_t> b = std::move(free_.back());
    free_.pop_back();
    b.clear();
    return b;
  }
  void Put(std::vector<uint8_t> b) {
    if (b.capacity() == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(b));
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_;
};

// Number of worker threads for a `threads` option: 0 means one per core.
inline int ResolveThreads(int threads) {
  if (threads > 0) return threads;
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 64u));
}

// Runs work(worker_id, item) on `threads` threads and emit(result) for the results strictly in
// submission order, one emit at a time (on whichever worker finished the next item), so emit may
// use non-thread-safe sinks. At most max_in_flight items are submitted but not yet emitted:
// Submit blocks beyond that, which bounds memory. Errors are taken in submission order too: the
// pipeline stops with the error of the first item (in order) whose work or emit failed, whatever
// thread finished first, so the error reported is deterministic. Later Submits return it, Finish
// returns it.
//
// Thread-safety: Submit and Finish are called from one producer thread.
template <typename In, typename Out>
class OrderedPipeline {
 public:
  using Work = std::function<Result<Out>(int worker, In& item)>;
  using Emit = std::function<Status(Out& result)>;

  OrderedPipeline(int threads, size_t max_in_flight, Work work, Emit emit)
      : max_in_flight_(std::max<size_t>(max_in_flight, 1)),
        work_(std::move(work)),
        emit_(std::move(emit)) {
    threads = std::max(threads, 1);
    workers_.reserve(threads);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
  OrderedPipeline(const OrderedPipeline&) = delete;
  OrderedPipeline& operator=(const OrderedPipeline&) = delete;

  // Abandons whatever is still queued and joins the workers.
  ~OrderedPipeline() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_.ok() && !finished_) error_ = Status::Internal("pipeline abandoned");
      closing_ = true;
    }
    cv_.notify_all();
    Join();
  }

  Status Submit(In item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !error_.ok() || next_submit_ - next_emit_ < max_in_flight_; });
    if (!error_.ok()) return error_;
    queue_.emplace_back(next_submit_++, std::move(item));
    lock.unlock();
    cv_.notify_all();
    return Status::Ok();
  }

  // Waits until every submitted item is emitted (or the first error), then joins the workers.
  Status Finish() {
    std::unique_lock<std::mutex> lock(mu_);
    closing_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !error_.ok() || next_emit_ == next_submit_; });
    finished_ = true;
    Status result = error_;
    lock.unlock();
    cv_.notify_all();
    Join();
    return result;
  }

 private:
  void Join() {
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  void Fail(Status s) {  // REQUIRES mu_ held
    if (error_.ok()) error_ = std::move(s);
    queue_.clear();
    ready_.clear();
  }

  void WorkerLoop(int id) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] {
        return !error_.ok() || !queue_.empty() || (closing_ && next_emit_ == next_submit_);
      });
      if (!error_.ok() || queue_.empty()) return;
      auto [index, item] = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      Result<Out> result = work_(id, item);
      lock.lock();
      if (!error_.ok()) return;
      ready_.emplace(index, std::move(result));  // a failure waits for its turn like a result
      if (emitting_) continue;
      // Become the emitter: drain results in order while the next one is ready.
      emitting_ = true;
      while (error_.ok() && !ready_.empty() && ready_.begin()->first == next_emit_) {
        Result<Out> out = std::move(ready_.begin()->second);
        ready_.erase(ready_.begin());
        if (!out.ok()) {
          Fail(std::move(out).status());
          break;
        }
        lock.unlock();
        Status s = emit_(*out);
        lock.lock();
        if (!s.ok()) {
          Fail(std::move(s));
          break;
        }
        ++next_emit_;
        cv_.notify_all();  // frees a Submit slot; may complete Finish
      }
      emitting_ = false;
      cv_.notify_all();
    }
  }

  const size_t max_in_flight_;
  Work work_;
  Emit emit_;
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<uint64_t, In>> queue_;  // submitted, not yet taken by a worker
  std::map<uint64_t, Result<Out>> ready_;      // worked, waiting for their turn to be emitted
  uint64_t next_submit_ = 0;
  uint64_t next_emit_ = 0;
  bool emitting_ = false;
  bool closing_ = false;
  bool finished_ = false;
  Status error_;
};

}  // namespace lazycrypt::format::internal
