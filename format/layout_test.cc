// The fixed byte structures: exact byte positions (against docs/FORMAT.md's tables), round trips,
// and every rejection ParseBlobHeader / ParseRecordHeader / ParseFooter promise.
#include "format/layout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "compress/compress.h"

namespace lazycrypt::format {
namespace {

using ::testing::HasSubstr;

BlobHeader SampleHeader() {
  BlobHeader h;
  for (size_t i = 0; i < kSaltSize; ++i) h.salt[i] = static_cast<uint8_t>(0x20 + i);
  for (size_t i = 0; i < kCommitmentSize; ++i) h.commitment[i] = static_cast<uint8_t>(0xc0 + i);
  return h;
}

TEST(BlobHeader, BytesAreAtTheDocumentedOffsets) {
  BlobHeaderBytes b = EncodeBlobHeader(SampleHeader());
  ASSERT_EQ(b.size(), 80u);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 8), std::string("lzcrypt\x01", 8));
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + 8, b.begin() + 16),
            (std::vector<uint8_t>{1, 0, 0, 0, 0, 0, 0, 0}));  // version 1 LE, flags 0
  EXPECT_EQ(b[16], 0x20);
  EXPECT_EQ(b[47], 0x20 + 31);
  EXPECT_EQ(b[48], 0xc0);
  EXPECT_EQ(b[79], 0xc0 + 31);
}

TEST(BlobHeader, RoundTrips) {
  BlobHeader h = SampleHeader();
  auto parsed = ParseBlobHeader(EncodeBlobHeader(h));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, h);
}

TEST(BlobHeader, RejectsBadMagicVersionFlagsAndSize) {
  BlobHeaderBytes good = EncodeBlobHeader(SampleHeader());
  for (size_t i = 0; i < 8; ++i) {
    BlobHeaderBytes b = good;
    b[i] ^= 0x01;
    auto r = ParseBlobHeader(b);
    ASSERT_FALSE(r.ok()) << "magic byte " << i;
    EXPECT_THAT(r.status().message(), HasSubstr("magic"));
  }
  BlobHeaderBytes v2 = good;
  v2[8] = 2;
  EXPECT_THAT(ParseBlobHeader(v2).status().message(), HasSubstr("version 2"));
  BlobHeaderBytes flags = good;
  flags[15] = 0x80;
  EXPECT_THAT(ParseBlobHeader(flags).status().message(), HasSubstr("reserved flags"));
  EXPECT_EQ(ParseBlobHeader(ByteSpan(good).first(79)).status().code(), StatusCode::kCorruption);
}

TEST(RecordHeader, BytesAndFlags) {
  RecordHeader h{0x01020304, 0x00050607, true, false};
  RecordHeaderBytes b = EncodeRecordHeader(h);
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()),
            (std::vector<uint8_t>{4, 3, 2, 1, 7, 6, 5, 0, 1, 0, 0, 0}));
  h.stored = true;
  h.last = false;
  EXPECT_EQ(EncodeRecordHeader(h)[8], 2);
  EXPECT_EQ(h.record_size(), 12u + 0x01020304u + 16u);
}

TEST(RecordHeader, RoundTripsEveryFlagCombination) {
  for (bool last : {false, true}) {
    for (bool stored : {false, true}) {
      RecordHeader h{stored ? 1000u : 900u, 1000u, last, stored};
      auto parsed = ParseRecordHeader(EncodeRecordHeader(h));
      ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
      EXPECT_EQ(*parsed, h);
    }
  }
}

TEST(RecordHeader, RejectsUnknownFlagsAndReservedBytes) {
  RecordHeaderBytes good = EncodeRecordHeader({100, 200, false, false});
  for (int bit = 2; bit < 8; ++bit) {
    RecordHeaderBytes b = good;
    b[8] |= static_cast<uint8_t>(1 << bit);
    EXPECT_THAT(ParseRecordHeader(b).status().message(), HasSubstr("flags")) << bit;
  }
  for (int i = 9; i < 12; ++i) {
    RecordHeaderBytes b = good;
    b[i] = 1;
    EXPECT_THAT(ParseRecordHeader(b).status().message(), HasSubstr("reserved")) << i;
  }
}

TEST(RecordHeader, RejectsImpossibleSizesBeforeAllocating) {
  // raw_size 0 and > 16 MiB.
  EXPECT_THAT(ParseRecordHeader(EncodeRecordHeader({1, 0, false, false})).status().message(),
              HasSubstr("raw size 0"));
  EXPECT_FALSE(ParseRecordHeader(EncodeRecordHeader(
                   {1, static_cast<uint32_t>(kMaxChunkSizeBytes + 1), false, false}))
                   .ok());
  EXPECT_TRUE(ParseRecordHeader(EncodeRecordHeader(
                  {100, static_cast<uint32_t>(kMaxChunkSizeBytes), false, false}))
                  .ok());
  // Stored: payload must equal raw.
  EXPECT_THAT(ParseRecordHeader(EncodeRecordHeader({99, 100, false, true})).status().message(),
              HasSubstr("stored"));
  // Compressed: 1..zstd bound.
  EXPECT_FALSE(ParseRecordHeader(EncodeRecordHeader({0, 100, false, false})).ok());
  uint32_t bound = static_cast<uint32_t>(compress::ZstdCompressor::Bound(100));
  EXPECT_TRUE(ParseRecordHeader(EncodeRecordHeader({bound, 100, false, false})).ok());
  EXPECT_FALSE(ParseRecordHeader(EncodeRecordHeader({bound + 1, 100, false, false})).ok());
  EXPECT_FALSE(ParseRecordHeader(EncodeRecordHeader({0xffffffffu, 100, false, false})).ok());
}

TEST(BlobFooter, BytesAtTheDocumentedOffsets) {
  FooterBytes f = EncodeFooter(SampleHeader(), 0x1122334455667788ull, 0x99aabbull);
  ASSERT_EQ(f.size(), 104u);
  BlobHeaderBytes hb = EncodeBlobHeader(SampleHeader());
  EXPECT_EQ(0, std::memcmp(f.data(), hb.data(), 80));
  EXPECT_EQ(LoadLe64(f.data() + 80), 0x1122334455667788ull);
  EXPECT_EQ(f[80], 0x88);
  EXPECT_EQ(LoadLe64(f.data() + 88), 0x99aabbull);
  EXPECT_EQ(std::string(f.begin() + 96, f.end()), std::string("lzcfoot\x01", 8));
}

TEST(BlobFooter, RoundTripsWhenSizesAddUp) {
  const uint64_t toc_offset = 5000, toc_size = 300;
  FooterBytes f = EncodeFooter(SampleHeader(), toc_offset, toc_size);
  auto parsed = ParseFooter(f, toc_offset + toc_size + kFooterSize);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->header, SampleHeader());
  EXPECT_EQ(parsed->header_bytes, EncodeBlobHeader(SampleHeader()));
  EXPECT_EQ(parsed->toc_offset, toc_offset);
  EXPECT_EQ(parsed->toc_size, toc_size);
}

TEST(BlobFooter, RejectsSizesThatDoNotAddUpToTheBlob) {
  FooterBytes f = EncodeFooter(SampleHeader(), 5000, 300);
  for (uint64_t blob_size : {uint64_t{5403}, uint64_t{5405}, uint64_t{0}, UINT64_MAX}) {
    auto r = ParseFooter(f, blob_size);
    ASSERT_FALSE(r.ok()) << blob_size;
    EXPECT_THAT(r.status().message(), HasSubstr("!= blob size"));
  }
}

TEST(BlobFooter, RejectsOverflowingOffset) {
  // toc_offset + toc_size + 104 wraps around to a small "blob size".
  const uint64_t toc_size = 300;
  const uint64_t toc_offset = UINT64_MAX - 200;
  FooterBytes f = EncodeFooter(SampleHeader(), toc_offset, toc_size);
  uint64_t wrapped = toc_offset + toc_size + kFooterSize;  // wraps around to 203
  EXPECT_EQ(wrapped, 203u);
  EXPECT_FALSE(ParseFooter(f, wrapped).ok());
}

TEST(BlobFooter, RejectsTocSizesOutsideBounds) {
  for (uint64_t toc_size : {uint64_t{0}, uint64_t{16}, MaxSealedTocSize() + 1}) {
    FooterBytes f = EncodeFooter(SampleHeader(), 5000, toc_size);
    auto r = ParseFooter(f, 5000 + toc_size + kFooterSize);
    ASSERT_FALSE(r.ok()) << toc_size;
    EXPECT_THAT(r.status().message(), HasSubstr("TOC size"));
  }
  // A TOC offset inside the blob header leaves no room for chunks.
  FooterBytes f = EncodeFooter(SampleHeader(), 80, 100);
  EXPECT_THAT(ParseFooter(f, 80 + 100 + kFooterSize).status().message(), HasSubstr("TOC offset"));
}

TEST(BlobFooter, RejectsBadEndMagicAndBadHeaderCopy) {
  FooterBytes good = EncodeFooter(SampleHeader(), 5000, 300);
  const uint64_t blob_size = 5000 + 300 + kFooterSize;
  for (size_t i = 96; i < 104; ++i) {
    FooterBytes f = good;
    f[i] ^= 0x40;
    EXPECT_THAT(ParseFooter(f, blob_size).status().message(), HasSubstr("end magic")) << i;
  }
  FooterBytes f = good;
  f[0] ^= 1;  // header copy's magic
  EXPECT_THAT(ParseFooter(f, blob_size).status().message(), HasSubstr("footer: blob header"));
}

TEST(FormatNonce, ChunkNonceIsFourZerosThenBigEndianIndex) {
  Nonce n = ChunkNonce(0x0102030405060708ull);
  EXPECT_EQ(std::vector<uint8_t>(n.begin(), n.end()),
            (std::vector<uint8_t>{0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_NE(ChunkNonce(1), ChunkNonce(256));
  EXPECT_EQ(TocNonce(), Nonce{});
}

TEST(FormatAad, ChunkAadBindsPrefixSaltIndexAndHeader) {
  Salt salt = SampleHeader().salt;
  RecordHeaderBytes hb = EncodeRecordHeader({10, 20, true, false});
  ChunkAad aad = MakeChunkAad(salt, 0x0102, hb);
  ASSERT_EQ(aad.size(), 70u);
  EXPECT_EQ(std::string(aad.begin(), aad.begin() + 18), "lazycrypt/v1 chunk");
  EXPECT_EQ(0, std::memcmp(aad.data() + 18, salt.data(), 32));
  EXPECT_EQ(LoadLe64(aad.data() + 50), 0x0102u);
  EXPECT_EQ(0, std::memcmp(aad.data() + 58, hb.data(), 12));
}

TEST(FormatAad, TocAadBindsPrefixHeaderAndSize) {
  BlobHeaderBytes hb = EncodeBlobHeader(SampleHeader());
  TocAad aad = MakeTocAad(hb, 12345);
  ASSERT_EQ(aad.size(), 104u);
  EXPECT_EQ(std::string(aad.begin(), aad.begin() + 16), "lazycrypt/v1 toc");
  EXPECT_EQ(0, std::memcmp(aad.data() + 16, hb.data(), 80));
  EXPECT_EQ(LoadLe64(aad.data() + 96), 12345u);
}

}  // namespace
}  // namespace lazycrypt::format
