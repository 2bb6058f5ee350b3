#include "lazylayer/layer_warmup.h"

#include <algorithm>

namespace lazycrypt::lazylayer {

std::string WarmKey(const std::string& image_ref, const std::string& layer_digest,
                    const std::string& toc_digest) {
  // '\n' appears in none of the three (a reference, two digests).
  return image_ref + "\n" + layer_digest + "\n" + toc_digest;
}

LayerWarmup::LayerWarmup(LayerWarmupOptions options, OpenFn open, snapshotter::LogSink log)
    : options_(options), open_(std::move(open)), log_(std::move(log)) {}

LayerWarmup::~LayerWarmup() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  std::map<std::string, Entry> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gone.swap(entries_);
  }
  gone.clear();  // opened layers destroyed: their keys wiped, their prefetch stopped
}

size_t LayerWarmup::Start(std::vector<WarmRequest> requests) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return 0;
  size_t held = 0;
  for (const auto& [key, e] : entries_) held += e.state != State::kFailed;
  const auto now = std::chrono::steady_clock::now();
  size_t queued = 0;
  for (WarmRequest& r : requests) {
    if (entries_.count(r.key) != 0) continue;
    if (held >= options_.max_layers) {
      ++stats_.skipped;
      continue;
    }
    const std::string key = r.key;
    Entry& e = entries_[key];
    e.request = std::move(r);
    e.since = now;
    queue_.push_back(key);
    ++held;
    ++queued;
    ++stats_.queued;
  }
  if (queued == 0) return 0;
  // A thread per queued layer while there are fewer than `workers`; they stay (idle ones
  // expire unclaimed layers) until the warm-up is destroyed.
  while (threads_.size() < options_.workers && idle_ < queue_.size()) {
    threads_.emplace_back([this] { Work(); });
    ++idle_;  // counted idle until it takes work (Work decrements it at once)
  }
  cv_.notify_all();
  return queued;
}

std::optional<WarmLayer> LayerWarmup::Claim(const std::string& key, bool* waited) {
  if (waited != nullptr) *waited = false;
  std::unique_lock<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (it->second.state == State::kOpening) {
    if (waited != nullptr) *waited = true;
    cv_.wait(lock, [&] {
      it = entries_.find(key);
      return stopping_ || it == entries_.end() || it->second.state != State::kOpening;
    });
    if (it == entries_.end()) return std::nullopt;
  }
  std::optional<WarmLayer> out;
  switch (it->second.state) {
    case State::kQueued:
      // Not started: the Prepare opens it now rather than wait for a worker.
      queue_.erase(std::remove(queue_.begin(), queue_.end(), key), queue_.end());
      break;
    case State::kReady:
      out = std::move(it->second.layer);
      ++(waited != nullptr && *waited ? stats_.claimed_waited : stats_.claimed_ready);
      break;
    case State::kOpening:  // stopping
    case State::kFailed:
      break;
  }
  entries_.erase(it);
  return out;
}

LayerWarmupStats LayerWarmup::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<WarmLayer> LayerWarmup::ExpireLocked(std::chrono::steady_clock::time_point now) {
  std::vector<WarmLayer> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (e.state == State::kOpening || now - e.since < options_.keep_for) {
      ++it;
      continue;
    }
    if (e.state == State::kReady && e.layer) {
      ++stats_.expired;
      Log(snapshotter::LogLevel::kInfo,
          "layer " + e.request.descriptor.digest + " of " + e.request.source.image_ref +
              ": opened ahead but not prepared by containerd within " +
              std::to_string(options_.keep_for.count() / 1000) + " s; closed");
      out.push_back(std::move(*e.layer));
    }
    if (e.state == State::kQueued) {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), it->first), queue_.end());
    }
    it = entries_.erase(it);
  }
  return out;
}

void LayerWarmup::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  --idle_;
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    std::vector<WarmLayer> expired = ExpireLocked(now);
    if (!expired.empty()) {
      lock.unlock();
      expired.clear();
      lock.lock();
      continue;
    }
    if (queue_.empty()) {
      auto next = std::chrono::steady_clock::time_point::max();
      for (const auto& [key, e] : entries_) {
        if (e.state != State::kOpening) next = std::min(next, e.since + options_.keep_for);
      }
      ++idle_;
      if (next == std::chrono::steady_clock::time_point::max()) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, next);
      }
      --idle_;
      continue;
    }
    const std::string key = queue_.front();
    queue_.pop_front();
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.state != State::kQueued) continue;
    it->second.state = State::kOpening;
    const WarmRequest request = it->second.request;
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    Result<WarmLayer> opened = open_(request);
    const int64_t open_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count();
    lock.lock();
    // An entry being opened is neither claimed (a claimant waits) nor expired: it is still here
    // unless a claimant gave up on it because the warm-up is stopping.
    it = entries_.find(key);
    if (it == entries_.end()) {
      lock.unlock();
      opened = Status::Unavailable("stopping");  // the opened layer destroyed outside the lock
      lock.lock();
      continue;
    }
    Entry& e = it->second;
    e.since = std::chrono::steady_clock::now();
    if (opened.ok()) {
      ++stats_.opened;
      e.state = State::kReady;
      opened->open_ms = open_ms;
      e.layer = std::move(*opened);
    } else {
      ++stats_.failed;
      e.state = State::kFailed;
      // Not an error of anyone's: the layer's own Prepare tries again and reports its failure.
      Log(snapshotter::LogLevel::kDebug, "layer " + request.descriptor.digest + " of " +
                                             request.source.image_ref +
                                             ": not opened ahead (its Prepare opens it): " +
                                             opened.status().ToString());
    }
    cv_.notify_all();
  }
}

}  // namespace lazycrypt::lazylayer
