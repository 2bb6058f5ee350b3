// TocLimits: a reader refuses a TOC over a configured limit, naming it, before allocating for it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "format/layer_index.h"
#include "format/toc.h"
#include "format/writer.h"

namespace lazycrypt::format {
namespace {

using ::testing::HasSubstr;

void AddFile(std::vector<uint8_t>& tar, const std::string& name, std::string_view data) {
  std::vector<uint8_t> h(512, 0);
  // ustar: a path over 100 bytes goes in prefix (155) + "/" + name (100).
  size_t slash = name.size() > 100 ? name.rfind('/') : std::string::npos;
  std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  std::memcpy(&h[0], base.data(), base.size());
  if (slash != std::string::npos) std::memcpy(&h[345], name.data(), slash);
  std::snprintf(reinterpret_cast<char*>(&h[100]), 8, "%07o", 0644);
  std::snprintf(reinterpret_cast<char*>(&h[108]), 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(&h[116]), 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(&h[124]), 12, "%011o", static_cast<unsigned>(data.size()));
  std::snprintf(reinterpret_cast<char*>(&h[136]), 12, "%011o", 1700000000u);
  h[156] = '0';
  std::memcpy(&h[257], "ustar\0" "00", 8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf(reinterpret_cast<char*>(&h[148]), 8, "%06o", sum);
  tar.insert(tar.end(), h.begin(), h.end());
  tar.insert(tar.end(), data.begin(), data.end());
  tar.resize((tar.size() + 511) / 512 * 512, 0);
}

// Counts the bytes read through it.
class CountingBlob final : public BlobSource {
 public:
  explicit CountingBlob(std::vector<uint8_t> bytes) : inner_(std::move(bytes)) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    bytes_read += out.size();
    return inner_.ReadAt(offset, out);
  }
  uint64_t bytes_read = 0;

 private:
  MemoryBlobSource inner_;
};

class TocLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<uint8_t> tar;
    // Long, alike names: the serialized TOC compresses well (see SerializedSizeLimit...).
    for (int i = 0; i < 5; ++i) {
      AddFile(tar, std::string(150, 'd') + "/" + std::string(90, 'f') + std::to_string(i),
              std::string(100000, 'a' + i));
    }
    tar.resize(tar.size() + 1024, 0);
    key_ = LayerKey(std::vector<uint8_t>(kLayerKeySize, 7));
    MemoryInputStream in(tar);
    MemoryOutputStream out;
    WriterOptions options;
    options.chunk_size_bytes = kMinChunkSizeBytes;  // several chunks
    auto written = WriteLayer(in, key_, out, options);
    ASSERT_TRUE(written.ok()) << written.status().ToString();
    toc_digest_ = written->toc_digest;
    chunks_ = written->chunk_count;
    entries_ = written->entry_count;
    blob_ = out.Take();
  }
  Result<std::shared_ptr<const LayerIndex>> Open(const TocLimits& limits) {
    MemoryBlobSource blob(blob_);
    return LayerIndex::Open(blob, key_, toc_digest_, limits);
  }
  LayerKey key_;
  crypto::Sha256Digest toc_digest_{};
  uint64_t chunks_ = 0, entries_ = 0;
  std::vector<uint8_t> blob_;
};

TEST_F(TocLimitsTest, DefaultsAndExactLimitsAccept) {
  ASSERT_GT(chunks_, 2u);
  ASSERT_EQ(entries_, 5u);
  EXPECT_TRUE(Open({}).ok());
  TocLimits exact;
  exact.max_chunks = chunks_;
  exact.max_entries = entries_;
  EXPECT_TRUE(Open(exact).ok());
}

TEST_F(TocLimitsTest, TooManyEntriesOrChunksAreRefusedNamingTheLimit) {
  TocLimits entries;
  entries.max_entries = entries_ - 1;
  auto r = Open(entries);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("more than 4 entries (limit)"));

  TocLimits chunks;
  chunks.max_chunks = chunks_ - 1;
  r = Open(chunks);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("more than " + std::to_string(chunks_ - 1) + " chunks (limit)"));
}

TEST_F(TocLimitsTest, OversizedTocIsRefusedBeforeItIsRead) {
  TocLimits small;
  small.max_serialized_bytes = 16;
  CountingBlob blob(blob_);
  auto r = LayerIndex::Open(blob, key_, toc_digest_, small);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("at most 16 bytes (limit)"));
  // The tail read (footer and TOC in one, issue 19) never asks for more than the largest TOC
  // the limits allow; the oversized TOC itself is never read.
  EXPECT_LE(blob.bytes_read, small.MaxSealedBytes() + kFooterSize);
}

TEST_F(TocLimitsTest, SerializedSizeLimitAppliesAfterDecompression) {
  // A sealed TOC within MaxSealedBytes whose serialized form is over the limit: refused from the
  // size prefix, before the decompression buffer is allocated.
  auto footer = ParseFooter(ByteSpan(blob_).last(kFooterSize), blob_.size());
  ASSERT_TRUE(footer.ok());
  TocLimits limits;
  limits.max_serialized_bytes = footer->toc_size;  // the sealed TOC fits; its plaintext does not
  ASSERT_LE(footer->toc_size, limits.MaxSealedBytes());
  auto r = Open(limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("bytes (limit " + std::to_string(footer->toc_size) + ")"));
}

TEST(TocLimits, ValidateRefusesZeroAndMoreThanTheFormatAllows) {
  EXPECT_TRUE(TocLimits{}.Validate().ok());
  TocLimits zero;
  zero.max_entries = 0;
  EXPECT_THAT(zero.Validate("[limits]").message(), HasSubstr("[limits]: max_entries 0 is outside 1.."));
  TocLimits big;
  big.max_chunks = kMaxChunks + 1;
  EXPECT_EQ(big.Validate().code(), StatusCode::kInvalidArgument);
}


// The wire shape is bounded before ParseFromArray builds anything (format/wire_bounds.h): an
// author's few KiB of zstd must not become hundreds of MiB of parsed empty messages.
std::vector<uint8_t> Bytes(std::initializer_list<uint8_t> b) { return std::vector<uint8_t>(b); }

std::vector<uint8_t> Repeat(std::initializer_list<uint8_t> element, size_t n) {
  std::vector<uint8_t> out;
  out.reserve(element.size() * n);
  for (size_t i = 0; i < n; ++i) out.insert(out.end(), element.begin(), element.end());
  return out;
}

TEST(TocWireShape, EmptyEntriesBeyondTheLimitAreRefusedBeforeParsing) {
  TocLimits limits;
  limits.max_entries = 10;
  auto r = ParseToc(Repeat({0x32, 0x00}, 11), limits);  // field 6 (entries), empty, 11 times
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("TOC: more than 10 entries (limit)"));
  // The format's own maximum, through the decompressing path: 8 Mi + 1 empty entries are 16 MiB
  // of protobuf from a zstd frame of a few KiB.
  const std::vector<uint8_t> many = Repeat({0x32, 0x00}, kMaxTocEntries + 1);
  auto plaintext = EncodeTocPlaintext(many, 3);
  ASSERT_TRUE(plaintext.ok()) << plaintext.status().ToString();
  EXPECT_LT(plaintext->size(), 64u << 10);
  auto d = DecodeTocPlaintext(*plaintext);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              HasSubstr("more than " + std::to_string(kMaxTocEntries) + " entries (limit)"));
}

TEST(TocWireShape, ChunksPrefetchMarksAndXattrsAreCounted) {
  TocLimits limits;
  limits.max_chunks = 3;
  limits.max_entries = 3;
  auto r = ParseToc(Repeat({0x1a, 0x00}, 4), limits);  // field 3 (chunks)
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more than 3 chunks (limit)"));
  // Prefetch marks, packed (one field of 4 one-byte varints) or not (4 fields).
  r = ParseToc(Bytes({0x3a, 0x04, 0x01, 0x02, 0x03, 0x04}), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more than 3 prefetch marks (limit)"));
  r = ParseToc(Repeat({0x38, 0x01}, 4), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more than 3 prefetch marks (limit)"));
  // One entry with one xattr more than an entry may carry.
  std::vector<uint8_t> xattrs = Repeat({0x72, 0x00}, kMaxXattrsPerEntry + 1);  // field 14
  std::vector<uint8_t> entry = {0x32};
  uint64_t n = xattrs.size();
  while (n >= 0x80) {
    entry.push_back(static_cast<uint8_t>(n | 0x80));
    n >>= 7;
  }
  entry.push_back(static_cast<uint8_t>(n));
  entry.insert(entry.end(), xattrs.begin(), xattrs.end());
  r = ParseToc(entry, {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("more than " + std::to_string(kMaxXattrsPerEntry) + " xattrs in one (limit)"));
}

TEST(TocWireShape, UnknownFieldsWrongWireTypesAndBrokenInputAreRefused) {
  auto r = ParseToc(Bytes({0xa0, 0x06, 0x01}), {});  // field 100, varint
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("TOC: unknown field 100 in the TOC"));
  r = ParseToc(Bytes({0x32, 0x02, 0xa0, 0x01}), {});  // an entry holding field 20
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("unknown field 20 in an entry"));
  r = ParseToc(Bytes({0x32, 0x04, 0x72, 0x02, 0x18, 0x01}), {});  // an xattr holding field 3
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("unknown field 3 in an xattr"));
  r = ParseToc(Bytes({0x30, 0x01}), {});  // entries as a varint
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("field 6 of the TOC has the wrong wire type"));
  r = ParseToc(Bytes({0x32, 0x05, 0x0a}), {});  // an entry longer than the input
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("TOC: the protobuf does not parse"));
  r = ParseToc(Bytes({0x08, 0x80}), {});  // a truncated varint
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("TOC: the protobuf does not parse"));
}

}  // namespace
}  // namespace lazycrypt::format
