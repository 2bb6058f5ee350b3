// Known-answer and hostile tests for the primitives: SHA-256, HMAC-SHA256, digests, HKDF,
// randomness, constant-time compare and AES-256-GCM.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "common/io.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"
#include "crypto/hkdf.h"
#include "crypto/random.h"
#include "crypto/secure_buffer.h"
#include "crypto/test_util.h"

namespace lazycrypt::crypto {
namespace {

using testing::Hex;
using testing::PatternBytes;
using testing::ToHex;

// ---- SHA-256 (FIPS 180-2 examples) ---------------------------------------------------------

TEST(Sha256, KnownAnswers) {
  EXPECT_EQ(ToHex(Sha256::Of({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ToHex(Sha256::Of(AsBytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ToHex(Sha256::Of(AsBytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, MillionAsStreamedInOddPiecesAndReset) {
  std::string a(1000000, 'a');
  Sha256 h;
  h.Update(AsBytes("garbage that Reset must discard"));
  h.Reset();
  ByteSpan rest = AsBytes(a);
  size_t piece = 1;
  while (!rest.empty()) {
    size_t n = std::min(rest.size(), piece);
    h.Update(rest.first(n));
    rest = rest.subspan(n);
    piece = piece * 3 + 1;  // 1, 4, 13, 40, ... odd sizes crossing block boundaries
  }
  EXPECT_EQ(ToHex(h.Finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  h.Reset();
  h.Update(AsBytes("abc"));
  EXPECT_EQ(ToHex(h.Finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, MovedObjectKeepsState) {
  Sha256 h;
  h.Update(AsBytes("ab"));
  Sha256 moved(std::move(h));
  moved.Update(AsBytes("c"));
  EXPECT_EQ(ToHex(moved.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// ---- HMAC-SHA256 (RFC 4231) ------------------------------------------------------------------

struct HmacVector {
  const char* name;
  std::vector<uint8_t> key;
  std::string data;
  const char* mac;
};

std::vector<HmacVector> Rfc4231() {
  return {
      {"case1", std::vector<uint8_t>(20, 0x0b), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"case2", {'J', 'e', 'f', 'e'}, "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"case3", std::vector<uint8_t>(20, 0xaa), std::string(50, '\xdd'),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"case6", std::vector<uint8_t>(131, 0xaa),
       "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {"case7", std::vector<uint8_t>(131, 0xaa),
       "This is a test using a larger than block-size key and a larger than block-size data. "
       "The key needs to be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
}

TEST(HmacSha256, Rfc4231OneShot) {
  for (const auto& v : Rfc4231()) {
    SCOPED_TRACE(v.name);
    EXPECT_EQ(ToHex(HmacSha256::Of(v.key, AsBytes(v.data))), v.mac);
  }
}

TEST(HmacSha256, Rfc4231StreamedByteByByte) {
  for (const auto& v : Rfc4231()) {
    SCOPED_TRACE(v.name);
    HmacSha256 mac(v.key);
    for (char c : v.data) mac.Update(AsBytes(std::string_view(&c, 1)));
    EXPECT_EQ(ToHex(mac.Finish()), v.mac);
  }
}

TEST(HmacSha256, KeyAndDataMatter) {
  auto key = Hex("000102030405060708090a0b0c0d0e0f");
  auto base = HmacSha256::Of(key, AsBytes("message"));
  auto key2 = key;
  key2[15] ^= 1;
  EXPECT_NE(base, HmacSha256::Of(key2, AsBytes("message")));
  EXPECT_NE(base, HmacSha256::Of(key, AsBytes("messagf")));
  // Empty key and empty data are legal HMAC inputs (value from `openssl dgst -sha256 -hmac ''`
  // on empty input).
  EXPECT_EQ(ToHex(HmacSha256::Of({}, {})),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

// ---- Hex and OCI digests ---------------------------------------------------------------------

TEST(Digest, HexAndOciDigestRoundTrip) {
  EXPECT_EQ(HexEncode(Hex("00ff10ab")), "00ff10ab");
  EXPECT_EQ(HexEncode({}), "");
  Sha256Digest d = Sha256::Of(AsBytes("abc"));
  std::string text = OciDigest(d);
  EXPECT_EQ(text, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto parsed = ParseOciDigest(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, d);
}

TEST(Digest, ParseRejectsMalformed) {
  const std::string good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  std::string upper = good;
  upper[0] = 'B';
  const std::vector<std::string> bad = {
      "",
      good,                                 // no algorithm
      "sha512:" + good,                     // wrong algorithm
      "SHA256:" + good,                     // algorithm is case-sensitive
      "sha256:" + good.substr(1),           // 63 digits
      "sha256:" + good + "0",               // 65 digits
      "sha256:" + upper,                    // uppercase hex is not canonical in OCI
      "sha256:" + good.substr(0, 63) + "g",
      "sha256:" + good.substr(0, 63) + " ",
      "sha256: " + good.substr(1),
  };
  for (const auto& s : bad) {
    SCOPED_TRACE(s);
    auto r = ParseOciDigest(s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
    EXPECT_NE(r.status().message().find("digest"), std::string::npos);
  }
}

TEST(Digest, ParseErrorQuotesOnlyAPrefixOfHugeInput) {
  std::string huge = "sha256:" + std::string(10000, 'a');
  auto r = ParseOciDigest(huge);
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 300u);
}

// ---- HKDF-SHA256 (RFC 5869 appendix A, cases 1-3) -------------------------------------------

TEST(HkdfSha256, Rfc5869Case1) {
  auto okm = HkdfSha256(std::vector<uint8_t>(22, 0x0b), Hex("000102030405060708090a0b0c"),
                        Hex("f0f1f2f3f4f5f6f7f8f9"), 42);
  ASSERT_TRUE(okm.ok()) << okm.status().ToString();
  EXPECT_EQ(ToHex(okm->span()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(HkdfSha256, Rfc5869Case2LongInputs) {
  std::vector<uint8_t> ikm(80), salt(80), info(80);
  for (int i = 0; i < 80; ++i) {
    ikm[i] = static_cast<uint8_t>(i);
    salt[i] = static_cast<uint8_t>(0x60 + i);
    info[i] = static_cast<uint8_t>(0xb0 + i);
  }
  auto okm = HkdfSha256(ikm, salt, info, 82);
  ASSERT_TRUE(okm.ok()) << okm.status().ToString();
  EXPECT_EQ(ToHex(okm->span()),
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
            "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
            "cc30c58179ec3e87c14c01d5c1f3434f1d87");
}

TEST(HkdfSha256, Rfc5869Case3EmptySaltAndInfo) {
  auto okm = HkdfSha256(std::vector<uint8_t>(22, 0x0b), {}, {}, 42);
  ASSERT_TRUE(okm.ok()) << okm.status().ToString();
  EXPECT_EQ(ToHex(okm->span()),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(HkdfSha256, LengthLimitsAndDomainSeparation) {
  auto ikm = std::vector<uint8_t>(32, 7);
  for (size_t bad : {size_t{0}, size_t{255 * 32 + 1}}) {
    auto r = HkdfSha256(ikm, {}, {}, bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  auto max = HkdfSha256(ikm, {}, {}, 255 * 32);
  ASSERT_TRUE(max.ok()) << max.status().ToString();
  EXPECT_EQ(max->size(), 255u * 32);
  // A shorter output is a prefix of a longer one (same PRK, same info).
  auto short_okm = HkdfSha256(ikm, {}, {}, 16);
  ASSERT_TRUE(short_okm.ok());
  EXPECT_TRUE(std::equal(short_okm->span().begin(), short_okm->span().end(), max->data()));
  // Different info strings give unrelated keys.
  auto a = HkdfSha256(ikm, {}, AsBytes("lazycrypt chunk"), 32);
  auto b = HkdfSha256(ikm, {}, AsBytes("lazycrypt toc"), 32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(ConstantTimeEquals(a->span(), b->span()));
  // An empty IKM is allowed by RFC 5869.
  auto empty_ikm = HkdfSha256({}, AsBytes("salt"), AsBytes("info"), 32);
  ASSERT_TRUE(empty_ikm.ok()) << empty_ikm.status().ToString();
}

// ---- Random, ConstantTimeEquals ------------------------------------------------------------

TEST(Random, KeysHaveTheRightSizeAndDiffer) {
  auto a = RandomKey(32);
  auto b = RandomKey(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_FALSE(ConstantTimeEquals(a->span(), b->span()));
  EXPECT_FALSE(ConstantTimeEquals(a->span(), SecureBuffer(32).span()));  // not all zero
  std::vector<uint8_t> big(1 << 20, 0);
  ASSERT_TRUE(RandomBytes(big).ok());
  // A 1 MiB random buffer has every byte value (probability of failure ~ 256 * e^-4096).
  std::vector<bool> seen(256);
  for (uint8_t v : big) seen[v] = true;
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 256);
  EXPECT_TRUE(RandomBytes({}).ok());
  auto empty = RandomKey(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(ConstantTimeEquals, ComparesContentAndLength) {
  auto a = Hex("0011223344");
  EXPECT_TRUE(ConstantTimeEquals(a, Hex("0011223344")));
  EXPECT_FALSE(ConstantTimeEquals(a, Hex("0011223345")));
  EXPECT_FALSE(ConstantTimeEquals(a, Hex("8011223344")));
  EXPECT_FALSE(ConstantTimeEquals(a, Hex("00112233")));
  EXPECT_FALSE(ConstantTimeEquals(a, Hex("001122334400")));
  EXPECT_TRUE(ConstantTimeEquals({}, {}));
}

// ---- AES-256-GCM (McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13-16;
//      also NIST's gcmEncryptExtIV256 examples) ---------------------------------------------

struct GcmVector {
  const char* name;
  const char* key;
  const char* nonce;
  const char* aad;
  const char* plaintext;
  const char* ciphertext;
  const char* tag;
};

const GcmVector kGcmVectors[] = {
    {"TC13 empty plaintext, no AAD",
     "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {"TC14 one zero block",
     "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "", "00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18",
     "d0d1c8a799996bf0265b98b5d48ab919"},
    {"TC15 four blocks",
     "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"TC16 partial block with AAD",
     "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

AesGcm MakeGcm(std::span<const uint8_t> key) {
  auto g = AesGcm::Create(key);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return std::move(g).value();
}

TEST(AesGcm, CreateRejectsWrongKeySizes) {
  for (size_t n : {0, 16, 24, 31, 33, 64}) {
    auto g = AesGcm::Create(std::vector<uint8_t>(n, 1));
    ASSERT_FALSE(g.ok()) << n;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(AesGcm, KnownAnswerSealAndOpen) {
  for (const auto& v : kGcmVectors) {
    SCOPED_TRACE(v.name);
    auto key = Hex(v.key), nonce = Hex(v.nonce), aad = Hex(v.aad), pt = Hex(v.plaintext);
    AesGcm gcm = MakeGcm(key);
    std::vector<uint8_t> ct(pt.size()), tag(kGcmTagSize);
    ASSERT_TRUE(gcm.Seal(nonce, aad, pt, ct, tag).ok());
    EXPECT_EQ(ToHex(ct), v.ciphertext);
    EXPECT_EQ(ToHex(tag), v.tag);

    std::vector<uint8_t> out(ct.size(), 0xee);
    Status s = gcm.Open(nonce, aad, Hex(v.ciphertext), Hex(v.tag), out);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(out, pt);
  }
}

TEST(AesGcm, InPlaceSealAndOpen) {
  const auto& v = kGcmVectors[3];
  AesGcm gcm = MakeGcm(Hex(v.key));
  auto buf = Hex(v.plaintext);
  std::vector<uint8_t> tag(kGcmTagSize);
  ASSERT_TRUE(gcm.Seal(Hex(v.nonce), Hex(v.aad), buf, buf, tag).ok());
  EXPECT_EQ(ToHex(buf), v.ciphertext);
  EXPECT_EQ(ToHex(tag), v.tag);
  ASSERT_TRUE(gcm.Open(Hex(v.nonce), Hex(v.aad), buf, tag, buf).ok());
  EXPECT_EQ(buf, Hex(v.plaintext));
}

TEST(AesGcm, LargeInPlaceRoundTrip) {
  auto key = RandomKey(32);
  ASSERT_TRUE(key.ok());
  AesGcm gcm = MakeGcm(key->span());
  std::vector<uint8_t> nonce(kGcmNonceSize, 9), tag(kGcmTagSize);
  const auto original = PatternBytes((4 << 20) + 3, 1);
  auto buf = original;
  ASSERT_TRUE(gcm.Seal(nonce, AsBytes("aad"), buf, buf, tag).ok());
  EXPECT_NE(buf, original);
  ASSERT_TRUE(gcm.Open(nonce, AsBytes("aad"), buf, tag, buf).ok());
  EXPECT_EQ(buf, original);
}

// Opens (ct, tag) with every single-bit change to one input class and expects each to fail
// with AuthFailed and an all-zero output.
TEST(AesGcm, EveryFlippedBitFailsAndZeroesOutput) {
  const auto& v = kGcmVectors[3];
  AesGcm gcm = MakeGcm(Hex(v.key));
  const auto nonce = Hex(v.nonce), aad = Hex(v.aad), ct = Hex(v.ciphertext), tag = Hex(v.tag);
  auto expect_fail = [&](std::span<const uint8_t> n, std::span<const uint8_t> a,
                         std::span<const uint8_t> c, std::span<const uint8_t> t) {
    std::vector<uint8_t> out(c.size(), 0xee);
    Status s = gcm.Open(n, a, c, t, out);
    EXPECT_EQ(s.code(), StatusCode::kAuthFailed) << s.ToString();
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }))
        << "unauthenticated plaintext left in the output";
  };
  for (size_t bit = 0; bit < ct.size() * 8; ++bit) {
    auto c = ct;
    c[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    expect_fail(nonce, aad, c, tag);
  }
  for (size_t bit = 0; bit < tag.size() * 8; ++bit) {
    auto t = tag;
    t[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    expect_fail(nonce, aad, ct, t);
  }
  for (size_t bit = 0; bit < aad.size() * 8; ++bit) {
    auto a = aad;
    a[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    expect_fail(nonce, a, ct, tag);
  }
  for (size_t bit = 0; bit < nonce.size() * 8; ++bit) {
    auto n = nonce;
    n[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    expect_fail(n, aad, ct, tag);
  }
  // Dropped AAD, truncated and extended ciphertext, wrong key.
  expect_fail(nonce, {}, ct, tag);
  expect_fail(nonce, aad, std::span(ct).first(ct.size() - 1), tag);
  auto longer = ct;
  longer.push_back(0);
  expect_fail(nonce, aad, longer, tag);
  auto key2 = Hex(v.key);
  key2[31] ^= 0x80;
  AesGcm other = MakeGcm(key2);
  std::vector<uint8_t> out(ct.size(), 0xee);
  EXPECT_EQ(other.Open(nonce, aad, ct, tag, out).code(), StatusCode::kAuthFailed);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }));
}

TEST(AesGcm, InPlaceOpenFailureZeroesTheBuffer) {
  const auto& v = kGcmVectors[2];
  AesGcm gcm = MakeGcm(Hex(v.key));
  auto buf = Hex(v.ciphertext);
  auto tag = Hex(v.tag);
  tag[0] ^= 1;
  EXPECT_EQ(gcm.Open(Hex(v.nonce), {}, buf, tag, buf).code(), StatusCode::kAuthFailed);
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
}

TEST(AesGcm, RejectsBadArgumentsWithoutTouchingCrypto) {
  AesGcm gcm = MakeGcm(std::vector<uint8_t>(32, 1));
  std::vector<uint8_t> nonce(12), tag(16), in(64), out(64);
  EXPECT_EQ(gcm.Seal(std::vector<uint8_t>(16), {}, in, out, tag).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gcm.Seal(nonce, {}, in, out, std::span(tag).first(12)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gcm.Seal(nonce, {}, in, std::span(out).first(63), tag).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gcm.Open(nonce, {}, in, tag, std::span(out).first(65 - 2)).code(),
            StatusCode::kInvalidArgument);
  // Partial overlap (output shifted by one byte inside the input) is refused, exact aliasing is
  // fine (tested above).
  std::vector<uint8_t> big(80);
  EXPECT_EQ(gcm.Seal(nonce, {}, std::span(big).first(64), std::span(big).subspan(1, 64), tag)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gcm.Open(nonce, {}, std::span(big).subspan(8, 64), tag, std::span(big).first(64))
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(AesGcm, SharedAcrossThreads) {
  AesGcm gcm = MakeGcm(std::vector<uint8_t>(32, 3));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::vector<uint8_t> nonce(12, static_cast<uint8_t>(t)), tag(16);
        nonce[0] = static_cast<uint8_t>(i);
        auto pt = PatternBytes(1000 + i, t * 1000 + i);
        auto buf = pt;
        if (!gcm.Seal(nonce, {}, buf, buf, tag).ok() || !gcm.Open(nonce, {}, buf, tag, buf).ok() ||
            buf != pt) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace lazycrypt::crypto
