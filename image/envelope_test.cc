#include "image/envelope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "tests/test_util.h"

namespace lazycrypt::image {
namespace {

using ::lazycrypt::testing::RunCommand;
using ::lazycrypt::testing::ShellQuote;
using ::lazycrypt::testing::TempDir;
using ::testing::HasSubstr;

struct Keys {
  std::vector<keywrap::PublicKey> pub;
  std::vector<keywrap::PrivateKey> priv;
};

// Generates key pairs with the openssl CLI (kinds as for `openssl genpkey`).
Keys MakeKeys(const TempDir& tmp, const std::vector<std::string>& names) {
  Keys keys;
  for (const std::string& name : names) {
    std::string algo = name.starts_with("rsa") ? "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"
                                               : "-algorithm EC -pkeyopt ec_paramgen_curve:P-256";
    std::string priv = (tmp / (name + ".pem")).string();
    std::string pub = (tmp / (name + ".pub")).string();
    auto r = RunCommand("openssl genpkey " + algo + " -out " + ShellQuote(priv) +
                        " && openssl pkey -in " + ShellQuote(priv) + " -pubout -out " + ShellQuote(pub));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    keys.pub.push_back(std::move(keywrap::PublicKey::Load(pub)).value());
    keys.priv.push_back(std::move(keywrap::PrivateKey::Load(priv)).value());
  }
  return keys;
}

format::LayerKey TestKey(uint8_t fill = 0xab) {
  std::vector<uint8_t> bytes(32, fill);
  return format::LayerKey(bytes);
}

crypto::Sha256Digest TestDigest(uint8_t fill = 0x11) {
  crypto::Sha256Digest d;
  d.fill(fill);
  return d;
}

format::KeyCommitment TestCommitment() {
  format::KeyCommitment c;
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(i);
  return c;
}

Descriptor LazycryptDescriptor(const LazycryptAnnotations& a) {
  Descriptor d;
  d.media_type = std::string(kMediaTypeLazycryptLayer);
  d.digest = "sha256:" + std::string(64, 'c');
  d.size = 1000;
  d.annotations[std::string(kAnnotationEncKeysJwe)] = a.keys_jwe;
  d.annotations[std::string(kAnnotationEncPubopts)] = a.pubopts;
  d.annotations[std::string(kAnnotationLazycryptTocDigest)] = a.toc_digest;
  return d;
}

TEST(Envelope, PrivoptsHasTheDocumentedShapeAndStaysUnder190Bytes) {
  auto privopts = SerializeLazycryptPrivopts(TestKey(0xff), TestDigest(0xee));
  ASSERT_TRUE(privopts.ok()) << privopts.status().ToString();
  std::string json(reinterpret_cast<const char*>(privopts->data()), privopts->size());
  std::string expected = R"({"symkey":")" + keywrap::Base64Encode(std::vector<uint8_t>(32, 0xff)) +
                         R"(","cipher":"LAZYCRYPT_GCM_V1","digest":"sha256:)" + std::string(64, 'e') +
                         R"(","cipheroptions":{}})";
  EXPECT_EQ(json, expected);
  EXPECT_EQ(privopts->size(), 187u);  // docs/FORMAT.md, section 6
  EXPECT_LT(privopts->size(), kMaxPrivoptsBytes);
  EXPECT_LT(privopts->size(), 190u);
  // ocicrypt's own parser reads the members it knows from it.
  auto parsed = keywrap::ParsePrivateLayerOptions(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->symkey.size(), 32u);
  EXPECT_EQ(parsed->digest, "sha256:" + std::string(64, 'e'));
  EXPECT_TRUE(parsed->cipher_options.empty());

  auto short_key = SerializeLazycryptPrivopts(format::LayerKey(std::vector<uint8_t>(16, 1)), TestDigest());
  EXPECT_EQ(short_key.status().code(), StatusCode::kInvalidArgument);
}

TEST(Envelope, AnnotationsRoundTripForEveryRecipient) {
  TempDir tmp;
  Keys keys = MakeKeys(tmp, {"rsa", "ec"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), keys.pub);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->toc_digest, crypto::OciDigest(TestDigest()));
  // pubopts as Go's encoding/json writes PublicLayerBlockCipherOptions with a nil Hmac.
  auto pubopts = keywrap::Base64Decode(a->pubopts);
  ASSERT_TRUE(pubopts.ok());
  EXPECT_EQ(std::string(pubopts->begin(), pubopts->end()),
            R"({"cipher":"LAZYCRYPT_GCM_V1","hmac":null,"cipheroptions":{"commitment":")" +
                keywrap::Base64Encode(TestCommitment()) + R"("}})");

  Descriptor d = LazycryptDescriptor(*a);
  auto pub = ParseLazycryptPublicInfo(d);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->toc_digest, TestDigest());
  EXPECT_EQ(pub->commitment, TestCommitment());

  for (size_t i = 0; i < keys.priv.size(); ++i) {
    std::vector<keywrap::PrivateKey> one;
    one.push_back(std::move(keys.priv[i]));
    auto secret = UnwrapLazycryptLayer(d, one);
    ASSERT_TRUE(secret.ok()) << secret.status().ToString();
    EXPECT_TRUE(crypto::ConstantTimeEquals(secret->key.span(), TestKey().span()));
    EXPECT_EQ(secret->toc_digest, TestDigest());
    EXPECT_EQ(secret->commitment, TestCommitment());
    EXPECT_EQ(secret->key_name, one[0].name());
    keys.priv[i] = std::move(one[0]);
  }

  auto recipients = ListJweRecipients(a->keys_jwe);
  ASSERT_TRUE(recipients.ok()) << recipients.status().ToString();
  ASSERT_EQ(recipients->size(), 2u);
  EXPECT_EQ((*recipients)[0].alg, "RSA-OAEP");
  EXPECT_EQ((*recipients)[0].crv, "");
  EXPECT_EQ((*recipients)[1].alg, "ECDH-ES+A256KW");
  EXPECT_EQ((*recipients)[1].crv, "P-256");
}

TEST(Envelope, WrongKeysAreListedByName) {
  TempDir tmp;
  Keys owner = MakeKeys(tmp, {"owner"});
  Keys strangers = MakeKeys(tmp, {"rsa-stranger", "ec-stranger"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), owner.pub);
  ASSERT_TRUE(a.ok());
  auto secret = UnwrapLazycryptLayer(LazycryptDescriptor(*a), strangers.priv);
  ASSERT_FALSE(secret.ok());
  EXPECT_EQ(secret.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(secret.status().message(), "none of the keys [" + (tmp / "rsa-stranger.pem").string() + ", " +
                                           (tmp / "ec-stranger.pem").string() + "] is a recipient");
  std::vector<keywrap::PrivateKey> none;
  EXPECT_EQ(UnwrapLazycryptLayer(LazycryptDescriptor(*a), none).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(Envelope, SeveralJweEntriesAreAllTried) {
  TempDir tmp;
  Keys first = MakeKeys(tmp, {"first"});
  Keys second = MakeKeys(tmp, {"second"});
  auto a1 = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), first.pub);
  auto a2 = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), second.pub);
  ASSERT_TRUE(a1.ok() && a2.ok());
  LazycryptAnnotations both = *a1;
  both.keys_jwe = a1->keys_jwe + "," + a2->keys_jwe;  // as ocicrypt appends a wrapping pass
  auto secret = UnwrapLazycryptLayer(LazycryptDescriptor(both), second.priv);
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_TRUE(crypto::ConstantTimeEquals(secret->key.span(), TestKey().span()));
  EXPECT_EQ(ListJweRecipients(both.keys_jwe)->size(), 2u);
}

TEST(Envelope, TocDigestAnnotationMustMatchTheWrappedOne) {
  TempDir tmp;
  Keys keys = MakeKeys(tmp, {"k"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(0x11), TestCommitment(), keys.pub);
  ASSERT_TRUE(a.ok());
  LazycryptAnnotations swapped = *a;
  swapped.toc_digest = crypto::OciDigest(TestDigest(0x22));
  auto secret = UnwrapLazycryptLayer(LazycryptDescriptor(swapped), keys.priv);
  ASSERT_FALSE(secret.ok());
  EXPECT_EQ(secret.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(secret.status().message(), HasSubstr("disagrees with the wrapped TOC digest"));
}

TEST(Envelope, MissingOrForeignAnnotationsAreNamed) {
  TempDir tmp;
  Keys keys = MakeKeys(tmp, {"k"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), keys.pub);
  ASSERT_TRUE(a.ok());
  for (std::string_view name : {kAnnotationEncKeysJwe, kAnnotationEncPubopts, kAnnotationLazycryptTocDigest}) {
    Descriptor d = LazycryptDescriptor(*a);
    d.annotations.erase(std::string(name));
    auto secret = UnwrapLazycryptLayer(d, keys.priv);
    ASSERT_FALSE(secret.ok()) << name;
    EXPECT_EQ(secret.status().code(), StatusCode::kCorruption) << name;
    EXPECT_THAT(secret.status().message(), HasSubstr(std::string(name)));
  }
  // pubopts naming ocicrypt's cipher on a lazycrypt layer.
  keywrap::PublicLayerOptions ctr;
  ctr.cipher = "AES_256_CTR_HMAC_SHA256";
  Descriptor d = LazycryptDescriptor(*a);
  d.annotations[std::string(kAnnotationEncPubopts)] = *keywrap::EncodePubOptsAnnotation(ctr);
  auto foreign = UnwrapLazycryptLayer(d, keys.priv);
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(foreign.status().message(), HasSubstr("'AES_256_CTR_HMAC_SHA256' is not LAZYCRYPT_GCM_V1"));
  // A commitment of the wrong size.
  keywrap::PublicLayerOptions short_commitment;
  short_commitment.cipher = std::string(kLazycryptCipherName);
  short_commitment.cipher_options["commitment"] = std::vector<uint8_t>(31, 0);
  d.annotations[std::string(kAnnotationEncPubopts)] = *keywrap::EncodePubOptsAnnotation(short_commitment);
  auto bad = UnwrapLazycryptLayer(d, keys.priv);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("commitment must be 32 bytes"));
}

TEST(Envelope, PrivoptsWithoutLazycryptCipherIsRefused) {
  // An ocicrypt-style privopts (no "cipher") wrapped for the key: a key meant for another cipher
  // must not be used as a lazycrypt layer key.
  TempDir tmp;
  Keys keys = MakeKeys(tmp, {"k"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), keys.pub);
  ASSERT_TRUE(a.ok());
  keywrap::PrivateLayerOptions ocicrypt_style;
  ocicrypt_style.symkey = TestKey();
  ocicrypt_style.digest = crypto::OciDigest(TestDigest());
  Descriptor d = LazycryptDescriptor(*a);
  d.annotations[std::string(kAnnotationEncKeysJwe)] = *keywrap::WrapLayerKeys(ocicrypt_style, keys.pub);
  auto secret = UnwrapLazycryptLayer(d, keys.priv);
  ASSERT_FALSE(secret.ok());
  EXPECT_EQ(secret.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(secret.status().message(), HasSubstr("privopts cipher '' is not LAZYCRYPT_GCM_V1"));
}

TEST(Envelope, TamperedJweFails) {
  TempDir tmp;
  Keys keys = MakeKeys(tmp, {"k"});
  auto a = MakeLazycryptAnnotations(TestKey(), TestDigest(), TestCommitment(), keys.pub);
  ASSERT_TRUE(a.ok());
  // Flip one bit of the JWE's ciphertext (inside the base64 JSON).
  auto jwe = keywrap::Base64Decode(a->keys_jwe);
  ASSERT_TRUE(jwe.ok());
  auto j = nlohmann::json::parse(std::string(jwe->begin(), jwe->end()));
  std::string ciphertext = j["ciphertext"];
  ciphertext[3] = ciphertext[3] == 'A' ? 'B' : 'A';
  j["ciphertext"] = ciphertext;
  LazycryptAnnotations tampered = *a;
  tampered.keys_jwe = keywrap::Base64Encode(AsBytes(j.dump()));
  auto secret = UnwrapLazycryptLayer(LazycryptDescriptor(tampered), keys.priv);
  ASSERT_FALSE(secret.ok());
  EXPECT_EQ(secret.status().code(), StatusCode::kAuthFailed) << secret.status().ToString();

  LazycryptAnnotations garbage = *a;
  garbage.keys_jwe = "not base64!";
  auto bad = UnwrapLazycryptLayer(LazycryptDescriptor(garbage), keys.priv);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kCorruption);
  EXPECT_FALSE(ListJweRecipients("not base64!").ok());
}

}  // namespace
}  // namespace lazycrypt::image
