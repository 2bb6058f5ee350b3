#include "cache/timed_source.h"

#include <chrono>

namespace lazycrypt::cache {

namespace {

uint64_t MicrosSince(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now() - start)
                                   .count());
}

}  // namespace

Status TimedBlobSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  const auto start = std::chrono::steady_clock::now();
  Status s = inner_->ReadAt(offset, out);
  Count(out.size(), MicrosSince(start));
  return s;
}

Status TimedBlobSource::ReadRanges(std::span<const RangeRead> ranges) {
  const auto start = std::chrono::steady_clock::now();
  Status s = inner_->ReadRanges(ranges);
  uint64_t bytes = 0;
  for (const RangeRead& r : ranges) bytes += r.out.size();
  Count(bytes, MicrosSince(start));
  return s;
}

void TimedBlobSource::Count(uint64_t bytes, uint64_t micros) {
  reads_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(bytes, std::memory_order_relaxed);
  micros_.fetch_add(micros, std::memory_order_relaxed);
}

}  // namespace lazycrypt::cache
