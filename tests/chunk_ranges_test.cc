// cache::ChunksOfRanges (cache/chunk_ranges.h): the chunks a prefetch loads, the union of its
// files' chunk ranges. The files' data ranges may overlap: a key holder's core (zindex) or TOC
// may mark a million entries covering the whole tar each, and expanding each range before
// deduplicating costs the sum of their lengths (10^11 for 1 Mi marks over 64 Ki chunks:
// std::bad_alloc on the prefetch thread, std::terminate, the node's snapshotter gone).
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <gtest/gtest.h>

#include "cache/chunk_ranges.h"
#include "format/layer_index.h"

namespace lazycrypt {
namespace {

// The process's address space now (bytes), from /proc/self/statm.
uint64_t AddressSpaceBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long pages = 0;
  if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
  std::fclose(f);
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// 1 Mi marks each covering all 64 Ki chunks: the result is every chunk once, in order, computed
// in a child whose address space may grow by 256 MiB only (the ranges take 16 MiB, the result
// 512 KiB; expanding each mark would need 512 GiB). Before cache::ChunksOfRanges the callers
// (MountedIndexedLayer::Prefetch, CachedLayer's ChunksOfFiles) expanded each mark: with that
// body this child dies of std::bad_alloc.
[[noreturn]] void MergeAMillionWholeLayerMarksUnderAnAddressSpaceLimit() {
  constexpr uint64_t kChunks = uint64_t{64} << 10;
  constexpr size_t kMarks = size_t{1} << 20;
  const uint64_t limit = AddressSpaceBytes() + (uint64_t{256} << 20);
  const rlimit rl{limit, limit};
  if (setrlimit(RLIMIT_AS, &rl) != 0) std::_Exit(3);
  std::vector<format::ChunkRange> ranges(kMarks, format::ChunkRange{0, kChunks});
  const std::vector<uint32_t> chunks = cache::ChunksOfRanges<uint32_t>(std::move(ranges), kChunks);
  if (chunks.size() != kChunks) std::_Exit(1);
  for (uint32_t c = 0; c < kChunks; ++c) {
    if (chunks[c] != c) std::_Exit(2);
  }
  std::_Exit(0);
}

TEST(ChunkRanges, AMillionOverlappingWholeLayerMarksGiveEachChunkOnceWithinBoundedMemory) {
  EXPECT_EXIT(MergeAMillionWholeLayerMarksUnderAnAddressSpaceLimit(),
              ::testing::ExitedWithCode(0), "");
}

// Overlapping, adjacent, nested, unordered, empty and out-of-range ranges.
TEST(ChunkRanges, RangesAreMergedClippedAndExpandedInOrder) {
  const std::vector<format::ChunkRange> ranges = {
      {10, 5}, {0, 2}, {12, 1}, {2, 1}, {14, 3}, {30, 0}, {40, 100}, {200, 5}, {20, 1}};
  const std::vector<uint64_t> got = cache::ChunksOfRanges(ranges, 45);
  const std::vector<uint64_t> want = {0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 20, 40, 41, 42, 43, 44};
  EXPECT_EQ(got, want);
  EXPECT_TRUE(cache::ChunksOfRanges({}, 45).empty());
  EXPECT_TRUE(cache::ChunksOfRanges({{0, 3}}, 0).empty());
}

}  // namespace
}  // namespace lazycrypt
