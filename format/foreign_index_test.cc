// LayerIndex::FromVerifiedForeignToc: the index the eStargz lazy path (lazylayer/estargz_layer.h)
// hands the FUSE file system. The TOC it gets was pinned by the manifest, but its author is not
// trusted: every entry is validated as LayerIndex::Open validates one, the chunk table must tile
// the data exactly, and errors never carry a name (names are confidential, FORMAT.md §4).
#include <gtest/gtest.h>

#include "format/layer_index.h"

namespace lazycrypt::format {
namespace {

Entry Dir(std::string name) {
  Entry e;
  e.name = std::move(name);
  e.type = EntryType::kDirectory;
  e.mode = 0755;
  return e;
}

Entry File(std::string name, uint64_t data_offset, uint64_t size) {
  Entry e;
  e.name = std::move(name);
  e.type = EntryType::kRegular;
  e.mode = 0644;
  e.data_offset = data_offset;
  e.size = size;
  return e;
}

ChunkInfo Chunk(uint64_t index, uint64_t tar_offset, uint32_t raw_size) {
  ChunkInfo c;
  c.index = index;
  c.tar_offset = tar_offset;
  c.raw_size = raw_size;
  return c;
}

// ".", "secret/" (a dir), "secret/a" (3 chunks: 4 + 4 + 2 bytes), "secret/empty", "secret/b"
// (a hard link to a), "secret/c" (1 chunk of 5 bytes).
Toc Sample() {
  Toc toc;
  toc.entries = {Dir("."), Dir("secret"), File("secret/a", 0, 10), File("secret/empty", 10, 0)};
  Entry link;
  link.name = "secret/b";
  link.type = EntryType::kHardlink;
  link.link_target = "secret/a";
  toc.entries.push_back(link);
  toc.entries.push_back(File("secret/c", 10, 5));
  toc.chunks = {Chunk(0, 0, 4), Chunk(1, 4, 4), Chunk(2, 8, 2), Chunk(3, 10, 5)};
  toc.chunks.back().last = true;
  toc.tar_size = 15;
  return toc;
}

void ExpectCorruptionWithoutNames(const Result<std::shared_ptr<const LayerIndex>>& index) {
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), StatusCode::kCorruption) << index.status().ToString();
  EXPECT_EQ(index.status().message().find("secret"), std::string::npos)
      << "an error names an entry: " << index.status().ToString();
}

TEST(ForeignIndex, ServesEntriesAndMapsFileRangesToTheCallersChunks) {
  crypto::Sha256Digest digest{};
  digest[0] = 7;
  auto index = LayerIndex::FromVerifiedForeignToc(Sample(), digest, 12345);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  const LayerIndex& i = **index;
  EXPECT_EQ(i.entries().size(), 6u);
  EXPECT_EQ(i.tar_size(), 15u);
  EXPECT_EQ(i.blob_size(), 12345u);
  EXPECT_EQ(i.toc_digest(), digest);
  ASSERT_TRUE(i.Find("secret/c"));
  EXPECT_EQ(i.Find("secret/c")->size(), 5u);
  EXPECT_FALSE(i.Find("nope"));
  const EntryView a = i.entries()[2];
  EXPECT_EQ(i.ChunksForRange(a, 0, 10), (ChunkRange{0, 3}));
  EXPECT_EQ(i.ChunksForRange(a, 5, 1), (ChunkRange{1, 1}));
  EXPECT_EQ(i.ChunksForRange(a, 7, 100), (ChunkRange{1, 2}));  // clipped to the file
  EXPECT_TRUE(i.ChunksForRange(a, 10, 1).empty());
  EXPECT_EQ(i.ChunksForRange(i.entries()[5], 0, 5), (ChunkRange{3, 1}));
  EXPECT_TRUE(i.ChunksForRange(i.entries()[3], 0, 1).empty());  // empty file
}

TEST(ForeignIndex, AnEmptyLayerHasNoChunks) {
  Toc toc;
  toc.entries = {Dir(".")};
  EXPECT_TRUE(LayerIndex::FromVerifiedForeignToc(toc, {}, 0).ok());
}

TEST(ForeignIndex, RejectsAChunkTableWithAGapAnOverlapOrAWrongTotal) {
  Toc gap = Sample();
  gap.chunks[2].tar_offset = 9;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(gap, {}, 0));
  Toc empty_chunk = Sample();
  empty_chunk.chunks[1].raw_size = 0;
  empty_chunk.chunks[2].tar_offset = 4;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(empty_chunk, {}, 0));
  Toc total = Sample();
  total.tar_size = 16;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(total, {}, 0));
  Toc not_last = Sample();
  not_last.chunks.back().last = false;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(not_last, {}, 0));
}

TEST(ForeignIndex, RejectsEntriesOpenWouldReject) {
  Toc dotdot = Sample();
  dotdot.entries[5].name = "secret/../../etc/passwd";
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(dotdot, {}, 0));
  Toc outside = Sample();
  outside.entries[5].size = 6;  // data past the end
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(outside, {}, 0));
  Toc mode = Sample();
  mode.entries[1].mode = 010000;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(mode, {}, 0));
  Toc root_file = Sample();
  root_file.entries[0] = File(".", 0, 0);
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(root_file, {}, 0));
  Toc dir_with_data = Sample();
  dir_with_data.entries[1].size = 1;
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(dir_with_data, {}, 0));
}

TEST(ForeignIndex, RejectsHardLinksToLaterEntriesOrDirectories) {
  Toc later = Sample();
  later.entries[4].link_target = "secret/c";  // c comes after b
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(later, {}, 0));
  Toc dir = Sample();
  dir.entries[4].link_target = "secret";
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(dir, {}, 0));
}

TEST(ForeignIndex, RejectsPrefetchMarksThatAreNotRegularFiles) {
  Toc toc = Sample();
  toc.prefetch = {2, 5};
  EXPECT_TRUE(LayerIndex::FromVerifiedForeignToc(toc, {}, 0).ok());
  toc.prefetch = {1};
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(toc, {}, 0));
  toc.prefetch = {99};
  ExpectCorruptionWithoutNames(LayerIndex::FromVerifiedForeignToc(toc, {}, 0));
}

}  // namespace
}  // namespace lazycrypt::format
