// MultiRangeBlobSource: the optional extension of BlobSource that reads several ranges with one
// request. CachedLayer uses it when its source implements it (see cache/registry_source.h).
#pragma once

#include <cstdint>
#include <span>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::cache {

// One range of a multi-range read: exactly out.size() bytes at `offset` land in `out`.
struct RangeRead {
  uint64_t offset = 0;
  MutableByteSpan out;
};

// A BlobSource that can read several ranges with one request (HTTP multipart/byteranges).
// CachedLayer sends every run of missing records of one read, prefetch or background batch in
// one ReadRanges call when its source is one of these. Thread-safe like BlobSource.
class MultiRangeBlobSource : public BlobSource {
 public:
  // REQUIRES ranges sorted by offset, not overlapping, each non-empty. Same error contract as
  // ReadAt; on error the contents of every `out` are unspecified.
  virtual Status ReadRanges(std::span<const RangeRead> ranges) = 0;
};

}  // namespace lazycrypt::cache
