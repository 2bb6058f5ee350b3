// Key schedule and chunk records: known-answer vectors computed independently (Python's
// `cryptography` package following docs/FORMAT.md), round trips, and every way a record can be
// altered or misplaced.
#include "format/chunk.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"

namespace lazycrypt::format {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;

std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

LayerKey KatKey() {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(i);
  return LayerKey(k);
}
Salt KatSalt() {
  Salt s;
  for (int i = 0; i < 32; ++i) s[i] = static_cast<uint8_t>(32 + i);
  return s;
}

TEST(KeySchedule, KnownAnswer) {
  auto keys = DeriveKeys(KatKey(), KatSalt());
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(crypto::HexEncode(keys->chunk_key.span()),
            "71db23031cb9ef2f4840f1cbe21d3b1a3dd0fe6878b0d9388fab1a55f13db4af");
  EXPECT_EQ(crypto::HexEncode(keys->toc_key.span()),
            "b3076325f313b336cee592cf770d66b0ba4fc6d6cd89bddf3a9594e27acb5f7d");
  EXPECT_EQ(crypto::HexEncode(keys->commitment),
            "2d26d0fa9a0ef185e075308cf6a102cbfc3ccafbe6bfc1ec23daf607b6a33f9d");
}

TEST(KeySchedule, WrongKeyFailsTheCommitment) {
  BlobHeader header;
  header.salt = KatSalt();
  header.commitment = DeriveKeys(KatKey(), KatSalt())->commitment;
  EXPECT_TRUE(DeriveAndCheckKeys(KatKey(), header).ok());
  LayerKey other = KatKey().Clone();
  other.data()[31] ^= 1;
  auto r = DeriveAndCheckKeys(other, header);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(r.status().message(), HasSubstr("wrong layer key"));
  EXPECT_EQ(DeriveKeys(LayerKey(std::vector<uint8_t>(16)), KatSalt()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(KeySchedule, NewLayerKeysAreRandom) {
  auto a = NewLayerKey(), b = NewLayerKey();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(crypto::HexEncode(a->span()), crypto::HexEncode(b->span()));
}

constexpr std::string_view kKatRaw = "lazycrypt known-answer chunk\n";
constexpr std::string_view kKatRecord =
    "1d0000001d000000030000006246b99a71a61298f80d93068ec61a41a23493f552329bb70bae2529042798e7933"
    "7e02d940a70cc09ee42e183";

struct Fixture {
  Fixture() {
    keys = std::move(DeriveKeys(KatKey(), KatSalt())).value();
    sealer = std::move(ChunkSealer::FromKeys(keys, KatSalt())).value();
    opener = std::move(ChunkOpener::FromKeys(keys, KatSalt())).value();
  }
  DerivedKeys keys;
  std::unique_ptr<ChunkSealer> sealer;
  std::shared_ptr<const ChunkOpener> opener;
  compress::ZstdCompressor compressor{3};
};

TEST(ChunkRecord, KnownAnswerStoredLastChunk) {
  Fixture f;
  std::vector<uint8_t> record;
  ASSERT_TRUE(f.sealer->Seal(5, /*last=*/true, AsBytes(kKatRaw), f.compressor, record).ok());
  EXPECT_EQ(crypto::HexEncode(record), kKatRecord);  // too short to compress: stored
  std::vector<uint8_t> raw(kKatRaw.size());
  ASSERT_TRUE(f.opener->Open(5, FromHex(kKatRecord), raw).ok());
  EXPECT_EQ(AsStringView(raw), kKatRaw);
}

TEST(ChunkRecord, KnownAnswerTocSeal) {
  // The TOC construction: nonce 0, AAD "lazycrypt/v1 toc" || header || u64 LE sealed size.
  Fixture f;
  BlobHeader header;
  header.salt = KatSalt();
  header.commitment = f.keys.commitment;
  std::string_view pt = "toc plaintext for a known-answer test";
  auto gcm = crypto::AesGcm::Create(f.keys.toc_key.span());
  ASSERT_TRUE(gcm.ok());
  std::vector<uint8_t> sealed(pt.size() + 16);
  TocAad aad = MakeTocAad(EncodeBlobHeader(header), sealed.size());
  ASSERT_TRUE(gcm->Seal(TocNonce(), aad, AsBytes(pt), MutableByteSpan(sealed).first(pt.size()),
                        MutableByteSpan(sealed).subspan(pt.size()))
                  .ok());
  EXPECT_EQ(crypto::HexEncode(sealed),
            "022f73c4057f0dd5509cb1f416011539a277a5fec68d1016ca1b2adacd64c85151c8812828a5e287d9aa"
            "acbc72f83869eea47b6a83");
}

std::vector<uint8_t> Compressible(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>("abcabcabd"[i % 9]);
  return v;
}
std::vector<uint8_t> Incompressible(size_t n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(ChunkRecord, CompressibleIsCompressedIncompressibleIsStored) {
  Fixture f;
  std::vector<uint8_t> record;
  auto text = Compressible(100000);
  ASSERT_TRUE(f.sealer->Seal(0, false, text, f.compressor, record).ok());
  auto h = ParseRecordHeader(ByteSpan(record).first(12));
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->stored);
  EXPECT_LT(h->payload_size, 10000u);
  std::vector<uint8_t> out(text.size());
  ASSERT_TRUE(f.opener->Open(0, record, out).ok());
  EXPECT_EQ(out, text);

  auto noise = Incompressible(100000);
  ASSERT_TRUE(f.sealer->Seal(1, true, noise, f.compressor, record).ok());
  h = ParseRecordHeader(ByteSpan(record).first(12));
  EXPECT_TRUE(h->stored);
  EXPECT_TRUE(h->last);
  EXPECT_EQ(record.size(), 12u + 100000 + 16);
  out.assign(noise.size(), 0);
  ASSERT_TRUE(f.opener->Open(1, record, out).ok());
  EXPECT_EQ(out, noise);
}

TEST(ChunkRecord, StoreThresholdIsAboutThreePercent) {
  EXPECT_FALSE(ChunkSealer::ShouldStore(1000, 900));
  EXPECT_FALSE(ChunkSealer::ShouldStore(32000, 31000));  // saves exactly 1/32
  EXPECT_TRUE(ChunkSealer::ShouldStore(32000, 31001));
  EXPECT_TRUE(ChunkSealer::ShouldStore(1000, 1010));
}

TEST(ChunkRecord, OpenPayloadGivesTheFrameForPassThrough) {
  Fixture f;
  std::vector<uint8_t> record;
  auto text = Compressible(50000);
  ASSERT_TRUE(f.sealer->Seal(3, false, text, f.compressor, record).ok());
  auto h = ParseRecordHeader(ByteSpan(record).first(12));
  std::vector<uint8_t> frame(h->payload_size);
  auto opened = f.opener->OpenPayload(3, record, frame);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, *h);
  std::vector<uint8_t> raw(text.size());
  compress::ZstdDecompressor d;
  ASSERT_TRUE(d.DecompressExact(frame, raw).ok());
  EXPECT_EQ(raw, text);
}

// Every tamper must fail with no plaintext in the output buffer (pre-filled with 0xAA: must end
// all zero).
void ExpectRejectedAndZeroed(const ChunkOpener& opener, uint64_t index, ByteSpan record,
                             size_t raw_size, StatusCode code, const std::string& what) {
  std::vector<uint8_t> out(raw_size, 0xAA);
  Status s = opener.Open(index, record, out);
  ASSERT_FALSE(s.ok()) << what;
  EXPECT_EQ(s.code(), code) << what << ": " << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("chunk " + std::to_string(index))) << what;
  EXPECT_THAT(out, Each(0)) << what;
}

TEST(ChunkRecord, RejectsEveryFlippedBit) {
  Fixture f;
  for (bool compressible : {true, false}) {
    auto raw = compressible ? Compressible(3000) : Incompressible(3000);
    std::vector<uint8_t> record;
    ASSERT_TRUE(f.sealer->Seal(7, false, raw, f.compressor, record).ok());
    // Header bytes: either malformed (Corruption) or authenticated (AuthFailed); ciphertext and
    // tag bytes: AuthFailed. Every byte position, one bit each.
    for (size_t i = 0; i < record.size(); ++i) {
      std::vector<uint8_t> bad = record;
      bad[i] ^= static_cast<uint8_t>(1 << (i % 8));
      std::vector<uint8_t> out(raw.size(), 0xAA);
      Status s = f.opener->Open(7, bad, out);
      ASSERT_FALSE(s.ok()) << "byte " << i;
      if (i >= kRecordHeaderSize) {
        ASSERT_EQ(s.code(), StatusCode::kAuthFailed) << "byte " << i;
      }
      ASSERT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }))
          << "byte " << i;
    }
  }
}

TEST(ChunkRecord, RejectsFlippedLastAndStoredFlags) {
  Fixture f;
  auto raw = Incompressible(2000);
  std::vector<uint8_t> record;
  ASSERT_TRUE(f.sealer->Seal(2, /*last=*/true, raw, f.compressor, record).ok());
  std::vector<uint8_t> bad = record;
  bad[8] ^= kRecordFlagLast;
  ExpectRejectedAndZeroed(*f.opener, 2, bad, raw.size(), StatusCode::kAuthFailed, "last flag");
}

TEST(ChunkRecord, RejectsWrongIndex) {
  Fixture f;
  auto raw = Compressible(2000);
  std::vector<uint8_t> record;
  ASSERT_TRUE(f.sealer->Seal(2, false, raw, f.compressor, record).ok());
  ExpectRejectedAndZeroed(*f.opener, 3, record, raw.size(), StatusCode::kAuthFailed, "index 3");
  ExpectRejectedAndZeroed(*f.opener, 2 + (uint64_t{1} << 32), record, raw.size(),
                          StatusCode::kAuthFailed, "index 2^32+2");
}

TEST(ChunkRecord, RejectsRecordOfAnotherBlobWithTheSameKey) {
  Fixture f;
  Salt other_salt = KatSalt();
  other_salt[0] ^= 1;
  auto other_keys = DeriveKeys(KatKey(), other_salt);
  auto other_sealer = ChunkSealer::FromKeys(*other_keys, other_salt);
  auto raw = Compressible(2000);
  std::vector<uint8_t> record;
  ASSERT_TRUE((*other_sealer)->Seal(0, false, raw, f.compressor, record).ok());
  ExpectRejectedAndZeroed(*f.opener, 0, record, raw.size(), StatusCode::kAuthFailed,
                          "other blob");
}

TEST(ChunkRecord, RejectsTruncatedAndExtendedRecords) {
  Fixture f;
  auto raw = Compressible(2000);
  std::vector<uint8_t> record;
  ASSERT_TRUE(f.sealer->Seal(0, false, raw, f.compressor, record).ok());
  std::vector<uint8_t> shorter(record.begin(), record.end() - 1);
  ExpectRejectedAndZeroed(*f.opener, 0, shorter, raw.size(), StatusCode::kCorruption, "short");
  std::vector<uint8_t> longer = record;
  longer.push_back(0);
  ExpectRejectedAndZeroed(*f.opener, 0, longer, raw.size(), StatusCode::kCorruption, "long");
  ExpectRejectedAndZeroed(*f.opener, 0, ByteSpan(record).first(5), raw.size(),
                          StatusCode::kCorruption, "header only");
  // A wrong-sized output buffer is the caller's error, and still zeroed.
  ExpectRejectedAndZeroed(*f.opener, 0, record, raw.size() + 1, StatusCode::kInvalidArgument,
                          "out size");
}

TEST(ChunkRecord, RejectsAuthenticatedButUndecodableFrame) {
  // Only a holder of the key can build this; the opener still must not return its bytes.
  Fixture f;
  std::vector<uint8_t> record;
  std::vector<uint8_t> not_a_frame(100, 0x55);
  ASSERT_TRUE(f.sealer->SealRaw(0, {100, 200, false, false}, not_a_frame, record).ok());
  ExpectRejectedAndZeroed(*f.opener, 0, record, 200, StatusCode::kCorruption, "bad frame");
}

TEST(ChunkRecord, OpenAgainstChunkTableChecksTheHeader) {
  Fixture f;
  auto raw = Compressible(2000);
  std::vector<uint8_t> record;
  ASSERT_TRUE(f.sealer->Seal(4, false, raw, f.compressor, record).ok());
  auto h = *ParseRecordHeader(ByteSpan(record).first(12));
  ChunkInfo info;
  info.index = 4;
  info.payload_size = h.payload_size;
  info.raw_size = h.raw_size;
  info.stored = h.stored;
  info.last = false;
  info.record_sha256 = crypto::Sha256::Of(record);
  std::vector<uint8_t> out(raw.size());
  ASSERT_TRUE(f.opener->Open(info, record, out).ok());
  EXPECT_EQ(out, raw);
  // A record that authenticates but is not the one the TOC pins: refused, output zeroed.
  info.record_sha256[0] ^= 1;
  std::fill(out.begin(), out.end(), 0xAA);
  Status pinned = f.opener->Open(info, record, out);
  EXPECT_EQ(pinned.code(), StatusCode::kAuthFailed);
  EXPECT_EQ(pinned.message(), "chunk 4: record does not match the digest pinned in the TOC");
  EXPECT_THAT(out, Each(0));
  info.record_sha256[0] ^= 1;
  info.last = true;  // the table says this is the final chunk; the record says otherwise
  std::fill(out.begin(), out.end(), 0xAA);
  Status s = f.opener->Open(info, record, out);
  EXPECT_THAT(s.message(), HasSubstr("does not match the chunk table"));
  EXPECT_THAT(out, Each(0));
}

TEST(ChunkRecord, OpenIsThreadSafe) {
  Fixture f;
  std::vector<std::vector<uint8_t>> raws, records;
  for (int i = 0; i < 8; ++i) {
    raws.push_back(i % 2 ? Compressible(70000 + i) : Incompressible(70000 + i, i));
    records.emplace_back();
    ASSERT_TRUE(f.sealer->Seal(i, false, raws.back(), f.compressor, records.back()).ok());
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        int i = (t + round) % 8;
        std::vector<uint8_t> out(raws[i].size());
        if (!f.opener->Open(i, records[i], out).ok() || out != raws[i]) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace lazycrypt::format
