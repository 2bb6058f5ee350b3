// Caps on how many recipients one layer's keys annotation may name (and how many packets one
// key-provider annotation may hold): refused on read before any decryption, refused on write.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/jwe.h"
#include "keywrap/keys.h"
#include "keywrap/test_util.h"

namespace lazycrypt::keywrap {
namespace {

using ::testing::HasSubstr;

PublicKey EcPublic() {
  auto k = PublicKey::Load(testing::EcKeyFiles("P-256").public_pem);
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  return std::move(*k);
}

PrivateKey EcPrivate() {
  auto k = PrivateKey::LoadFile(testing::EcKeyFiles("P-256").private_pem, std::nullopt);
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  return std::move(*k);
}

// A general-serialization JWE naming `n` recipients (not decryptable: only counted).
std::string JweWithRecipients(size_t n) {
  std::string j = R"({"protected":"eyJlbmMiOiJBMjU2R0NNIn0","iv":"AAAAAAAAAAAAAAAA","ciphertext":"","tag":"AAAAAAAAAAAAAAAAAAAAAA","recipients":[)";
  for (size_t i = 0; i < n; ++i) j += std::string(i ? "," : "") + R"({"header":{"alg":"RSA-OAEP"},"encrypted_key":"AAAA"})";
  return j + "]}";
}

TEST(RecipientLimits, CountsRecipientsOfEachSerialization) {
  EXPECT_EQ(*CountJweRecipients(JweWithRecipients(3)), 3u);
  EXPECT_EQ(*CountJweRecipients(R"({"protected":"x","encrypted_key":"y"})"), 1u);
  EXPECT_EQ(*CountJweRecipients("a.b.c.d.e"), 1u);
  EXPECT_FALSE(CountJweRecipients(R"({"recipients":5})").ok());
}

TEST(RecipientLimits, TooManyJweEntriesAreRefusedBeforeDecrypting) {
  std::string annotation;
  for (size_t i = 0; i <= kMaxLayerRecipients; ++i) {
    annotation += std::string(i ? "," : "") + Base64Encode(AsBytes(JweWithRecipients(1)));
  }
  std::vector<PrivateKey> keys;
  keys.push_back(EcPrivate());
  auto r = UnwrapLayerKeys(annotation, keys);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("more than 256 entries"));
}

TEST(RecipientLimits, TooManyRecipientsOverAllEntriesAreRefused) {
  // Three JWEs of 100 recipients each: each within the per-JWE limit, 300 in all.
  std::string one = Base64Encode(AsBytes(JweWithRecipients(100)));
  std::string annotation = one + "," + one + "," + one;
  std::vector<PrivateKey> keys;
  keys.push_back(EcPrivate());
  auto r = UnwrapLayerKeys(annotation, keys);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("names more than 256 recipients"));
  EXPECT_TRUE(CheckLayerRecipientCount(one + "," + one).ok());
}

TEST(RecipientLimits, WritingMoreRecipientsThanAReaderAcceptsIsRefused) {
  std::vector<PublicKey> keys;
  for (size_t i = 0; i <= kMaxJweRecipients; ++i) keys.push_back(EcPublic());
  PrivateLayerOptions options;
  options.symkey = crypto::SecureBuffer(std::vector<uint8_t>(32, 1));
  options.digest = "sha256:" + std::string(64, 'a');
  auto wrapped = WrapLayerKeys(options, keys);
  ASSERT_FALSE(wrapped.ok());
  EXPECT_EQ(wrapped.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(wrapped.status().message(), HasSubstr("(at most 128)"));
  keys.pop_back();
  EXPECT_TRUE(WrapLayerKeys(options, keys).ok());
}

TEST(RecipientLimits, SplitAnnotationEntriesNamesTheLimit) {
  EXPECT_EQ(SplitAnnotationEntries("a,b,c", 3, "x")->size(), 3u);
  EXPECT_EQ(SplitAnnotationEntries("", 1, "x")->size(), 1u);
  auto r = SplitAnnotationEntries("a,b,c,d", 3, "org.opencontainers.image.enc.keys.provider.kms");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("org.opencontainers.image.enc.keys.provider.kms has more than 3 entries"));
}

}  // namespace
}  // namespace lazycrypt::keywrap
