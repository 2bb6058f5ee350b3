#include "keywrap/base64.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lazycrypt::keywrap {
namespace {

std::string Decoded(const Result<std::vector<uint8_t>>& r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return "<error>";
  return std::string(r->begin(), r->end());
}

// RFC 4648 §10.
TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(AsBytes(plain)), encoded);
    EXPECT_EQ(Decoded(Base64Decode(encoded)), plain);
    std::string url = encoded;
    while (!url.empty() && url.back() == '=') url.pop_back();
    EXPECT_EQ(Base64UrlEncode(AsBytes(plain)), url);
    EXPECT_EQ(Decoded(Base64UrlDecode(url)), plain);
  }
}

TEST(Base64, AlphabetsDifferInTheLastTwoSymbols) {
  const std::vector<uint8_t> bytes = {0xfb, 0xff, 0xbf};
  EXPECT_EQ(Base64Encode(bytes), "+/+/");
  EXPECT_EQ(Base64UrlEncode(bytes), "-_-_");
  EXPECT_FALSE(Base64Decode("-_-_").ok());
  EXPECT_FALSE(Base64UrlDecode("+/+/").ok());
}

TEST(Base64, RoundTripsEveryLengthAndByte) {
  std::vector<uint8_t> data;
  for (int n = 0; n < 300; ++n) {
    auto std_back = Base64Decode(Base64Encode(data));
    auto url_back = Base64UrlDecode(Base64UrlEncode(data));
    ASSERT_TRUE(std_back.ok()) << n;
    ASSERT_TRUE(url_back.ok()) << n;
    EXPECT_EQ(*std_back, data);
    EXPECT_EQ(*url_back, data);
    data.push_back(static_cast<uint8_t>(n * 37 + 11));
  }
}

TEST(Base64, StandardRejectsMalformedInput) {
  for (const char* bad : {"Zg", "Zg=", "Zg===", "Z===", "=Zg=", "Zm9v Zg==", "Zm9v\nZg==", "Zh==",
                          "Zm9=", "Zm!v", "Zg==Zg==", "Z"}) {
    auto r = Base64Decode(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << bad;
      EXPECT_NE(r.status().message().find("not base64"), std::string::npos);
    }
  }
}

TEST(Base64, UrlRejectsPaddingAndNonCanonicalInput) {
  for (const char* bad : {"Zg==", "Zg=", "Z", "Zh", "Zm9", "Zm9v!", "Zm 9v", "Zm9vY"}) {
    auto r = Base64UrlDecode(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << bad;
    }
  }
}

TEST(Base64, ErrorsDoNotEchoTheInput) {
  auto r = Base64Decode("c2VjcmV0LXNlY3JldA=!");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("c2VjcmV0"), std::string::npos);
}

TEST(Base64, DecodeSecretMatchesDecode) {
  auto secret = Base64DecodeSecret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
  ASSERT_TRUE(secret.ok());
  ASSERT_EQ(secret->size(), 32u);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(secret->data()[i], i);
  EXPECT_FALSE(Base64DecodeSecret("AAEC AwQF").ok());
}

}  // namespace
}  // namespace lazycrypt::keywrap
