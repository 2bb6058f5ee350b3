// TimedBlobSource: counts the requests made to a multi-range blob source, their bytes and the
// time spent in them (the snapshotter's per-mount timing line, which bench/coldstart reads).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "cache/multi_range_source.h"

namespace lazycrypt::cache {

// Forwards everything to `inner` and stays a MultiRangeBlobSource, so CachedLayer still sends
// several ranges in one request through it. One ReadAt or one ReadRanges call counts as one
// read. Thread-safe (atomics) as far as `inner` is.
class TimedBlobSource final : public MultiRangeBlobSource {
 public:
  explicit TimedBlobSource(std::shared_ptr<MultiRangeBlobSource> inner) : inner_(std::move(inner)) {}

  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  Status ReadRanges(std::span<const RangeRead> ranges) override;

  uint64_t reads() const { return reads_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t millis() const { return micros_.load(std::memory_order_relaxed) / 1000; }

 private:
  void Count(uint64_t bytes, uint64_t micros);

  std::shared_ptr<MultiRangeBlobSource> inner_;
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> micros_{0};
};

}  // namespace lazycrypt::cache
