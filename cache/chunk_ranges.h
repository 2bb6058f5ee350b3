// The chunks a prefetch loads: the union of the chunk ranges of the files it names.
//
// Files' data ranges need not be disjoint (a key holder's index may give a million marked files
// the whole tar each): expanding each range and deduplicating afterwards costs the sum of their
// lengths (10^11 pushes for 1 Mi marks over 64 Ki chunks: std::bad_alloc on a background thread),
// merging the ranges first costs O(n log n) in the ranges and the chunk count in the result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "format/layer_index.h"

namespace lazycrypt::cache {

// The chunks of `ranges` ([first, first + count) each, overlapping or not, in any order),
// ascending, each once; those at or past `chunk_count` left out. Memory: the ranges and the
// result (at most chunk_count entries). Index: the caller's chunk number type.
template <typename Index = uint64_t>
std::vector<Index> ChunksOfRanges(std::vector<format::ChunkRange> ranges, uint64_t chunk_count) {
  // Clipped to the layer's chunks; empty ones dropped.
  std::erase_if(ranges, [&](format::ChunkRange& r) {
    if (r.first >= chunk_count) return true;
    r.count = std::min(r.count, chunk_count - r.first);
    return r.count == 0;
  });
  std::sort(ranges.begin(), ranges.end(), [](const format::ChunkRange& a,
                                             const format::ChunkRange& b) {
    return a.first < b.first;
  });
  // Merged in place: [0, merged) are disjoint, ascending, not adjacent.
  size_t merged = 0;
  uint64_t total = 0;
  for (const format::ChunkRange& r : ranges) {
    if (merged > 0) {
      format::ChunkRange& last = ranges[merged - 1];
      const uint64_t last_end = last.first + last.count;
      if (r.first <= last_end) {
        const uint64_t end = std::max(last_end, r.first + r.count);
        total += end - last_end;
        last.count = end - last.first;
        continue;
      }
    }
    ranges[merged++] = r;
    total += r.count;
  }
  std::vector<Index> chunks;
  chunks.reserve(static_cast<size_t>(total));  // <= chunk_count
  for (size_t k = 0; k < merged; ++k) {
    for (uint64_t c = ranges[k].first; c < ranges[k].first + ranges[k].count; ++c) {
      chunks.push_back(static_cast<Index>(c));
    }
  }
  return chunks;
}

}  // namespace lazycrypt::cache
