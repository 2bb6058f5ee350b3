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
  EXPECT_THAT(r.status().message(), HasSubstr("5 entries (limit 4)"));

  TocLimits chunks;
  chunks.max_chunks = chunks_ - 1;
  r = Open(chunks);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("(limit)"));
  EXPECT_THAT(r.status().message(), HasSubstr("1.." + std::to_string(chunks_ - 1)));
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

}  // namespace
}  // namespace lazycrypt::format
