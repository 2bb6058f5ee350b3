#include "keywrap/envelope.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "keywrap/base64.h"
#include "keywrap/jwe.h"
#include "keywrap/test_util.h"

namespace lazycrypt::keywrap {
namespace {

using nlohmann::json;
using testing::EcKeyFiles;
using testing::RsaKeyFiles;

std::vector<uint8_t> Iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i);
  return v;
}

PrivateLayerOptions SampleOptions() {
  PrivateLayerOptions o;
  o.symkey = crypto::SecureBuffer(Iota(32));
  o.digest = "sha256:" + std::string(64, 'a');
  o.cipher_options["nonce"] = Iota(16);
  return o;
}

const char kSampleJson[] =
    R"({"symkey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",)"
    R"("digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",)"
    R"("cipheroptions":{"nonce":"AAECAwQFBgcICQoLDA0ODw=="}})";

std::string Str(const crypto::SecureBuffer& b) { return std::string(AsStringView(b.span())); }

TEST(PrivateLayerOptions, SerializesExactlyLikeGoEncodingJson) {
  auto json_bytes = SerializePrivateLayerOptions(SampleOptions());
  ASSERT_TRUE(json_bytes.ok()) << json_bytes.status().ToString();
  EXPECT_EQ(Str(*json_bytes), kSampleJson);
}

TEST(PrivateLayerOptions, GoSpellingsOfEdgeCases) {
  PrivateLayerOptions o;
  o.digest = R"(a<b>&"\)";
  o.cipher_options["b"] = {};
  o.cipher_options["a"] = {0xff};
  o.previous_layers_digest = "sha256:01";
  auto text = SerializePrivateLayerOptions(o);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(Str(*text),
            R"({"symkey":null,"digest":"a\u003cb\u003e\u0026\"\\",)"
            R"("cipheroptions":{"a":"/w==","b":""},"previouslayersdigest":"sha256:01"})");
  o.digest = "caf\xc3\xa9";
  auto bad = SerializePrivateLayerOptions(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(PrivateLayerOptions, ParsesWhatOcicryptWrites) {
  auto parsed = ParsePrivateLayerOptions(kSampleJson);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(std::vector<uint8_t>(parsed->symkey.span().begin(), parsed->symkey.span().end()),
            Iota(32));
  EXPECT_EQ(parsed->digest, "sha256:" + std::string(64, 'a'));
  ASSERT_EQ(parsed->cipher_options.size(), 1u);
  EXPECT_EQ(parsed->cipher_options.at("nonce"), Iota(16));
  EXPECT_FALSE(parsed->previous_layers_digest.has_value());
  // And back, byte for byte.
  auto again = SerializePrivateLayerOptions(*parsed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Str(*again), kSampleJson);
}

TEST(PrivateLayerOptions, NullsUnknownMembersAndNewerFields) {
  auto parsed = ParsePrivateLayerOptions(
      R"({"symkey":null,"digest":null,"cipheroptions":null,"previouslayersdigest":"sha256:ab",)"
      R"("future":{"x":[1,2]}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(parsed->symkey.empty());
  EXPECT_TRUE(parsed->digest.empty());
  EXPECT_TRUE(parsed->cipher_options.empty());
  EXPECT_EQ(parsed->previous_layers_digest.value_or(""), "sha256:ab");
}

TEST(PrivateLayerOptions, RejectsMalformedMembersByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"symkey":"not base64!"})", "'symkey'"},
      {R"({"symkey":12})", "'symkey'"},
      {R"({"digest":["x"]})", "'digest'"},
      {R"({"cipheroptions":"nonce"})", "'cipheroptions'"},
      {R"({"cipheroptions":{"nonce":5}})", "'cipheroptions'"},
      {R"({"cipheroptions":{"nonce":"AA="}})", "'nonce'"},
      {R"([1])", "not a JSON object"},
      {R"({"symkey":"AAAA")", "not valid JSON"},
      {R"({"digest":"a","digest":"b"})", "duplicate member 'digest'"},
  };
  for (const auto& [text, needle] : cases) {
    auto parsed = ParsePrivateLayerOptions(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kCorruption) << text;
    EXPECT_NE(parsed.status().message().find(needle), std::string::npos)
        << text << " -> " << parsed.status().ToString();
  }
  auto secret = ParsePrivateLayerOptions(R"({"symkey":"c2VjcmV0c2VjcmV0!"})");
  ASSERT_FALSE(secret.ok());
  EXPECT_EQ(secret.status().message().find("c2VjcmV0"), std::string::npos) << "key echoed";
}

// The pubopts annotation skopeo 1.9.3 wrote for a real layer: decoding and re-encoding must give
// the same bytes.
TEST(PublicLayerOptions, RoundTripsSkopeosAnnotationByteForByte) {
  const std::string annotation =
      "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJOM2VWS1NUT2d6Wlo5MGRoRkVraklqV3Fn"
      "UG1VVWZsQmNTbkpNcjdqR0xFPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==";
  auto pub = DecodePubOptsAnnotation(annotation);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->cipher, kOcicryptAes256CtrCipher);
  EXPECT_EQ(pub->hmac.size(), 32u);
  EXPECT_TRUE(pub->cipher_options.empty());
  auto again = EncodePubOptsAnnotation(*pub);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, annotation);
}

TEST(PublicLayerOptions, SerializesEmptyFieldsTheGoWay) {
  PublicLayerOptions o;
  o.cipher = "LAZYCRYPT";
  auto text = SerializePublicLayerOptions(o);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, R"({"cipher":"LAZYCRYPT","hmac":null,"cipheroptions":{}})");
  auto bad = DecodePubOptsAnnotation("e30=!");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(kPubOptsAnnotation), std::string::npos);
  auto hmac = ParsePublicLayerOptions(R"({"cipher":"x","hmac":7})");
  ASSERT_FALSE(hmac.ok());
  EXPECT_NE(hmac.status().message().find("'hmac'"), std::string::npos);
}

class LayerKeys : public ::testing::Test {
 protected:
  static std::vector<PublicKey> Publics(std::initializer_list<const testing::KeyPairFiles*> fs) {
    std::vector<PublicKey> keys;
    for (const auto* f : fs) {
      auto k = PublicKey::Load(f->public_pem);
      EXPECT_TRUE(k.ok()) << k.status().ToString();
      keys.push_back(std::move(*k));
    }
    return keys;
  }
  static std::vector<PrivateKey> Privates(std::initializer_list<const testing::KeyPairFiles*> fs) {
    std::vector<PrivateKey> keys;
    for (const auto* f : fs) {
      auto k = PrivateKey::Load(f->private_pem.string());
      EXPECT_TRUE(k.ok()) << k.status().ToString();
      keys.push_back(std::move(*k));
    }
    return keys;
  }
  static void ExpectSample(const Result<PrivateLayerOptions>& r) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(r->symkey.span().begin(), r->symkey.span().end()), Iota(32));
    EXPECT_EQ(r->digest, "sha256:" + std::string(64, 'a'));
    EXPECT_EQ(r->cipher_options.at("nonce"), Iota(16));
  }
};

TEST_F(LayerKeys, WrapForRsaAndEcThenUnwrapWithEither) {
  auto annotation =
      WrapLayerKeys(SampleOptions(), Publics({&RsaKeyFiles(2048), &EcKeyFiles("P-256")}));
  ASSERT_TRUE(annotation.ok()) << annotation.status().ToString();
  EXPECT_EQ(annotation->find(','), std::string::npos) << "one JWE for all recipients";
  // The annotation is standard base64 of a go-jose general-serialization JWE.
  auto jwe_text = Base64Decode(*annotation);
  ASSERT_TRUE(jwe_text.ok());
  json jwe = json::parse(AsStringView(*jwe_text));
  ASSERT_EQ(jwe["recipients"].size(), 2u);
  EXPECT_EQ(jwe["recipients"][0]["header"]["alg"], "RSA-OAEP");
  EXPECT_EQ(jwe["recipients"][1]["header"]["alg"], "ECDH-ES+A256KW");

  ExpectSample(UnwrapLayerKeys(*annotation, Privates({&RsaKeyFiles(2048)})));
  ExpectSample(UnwrapLayerKeys(*annotation, Privates({&EcKeyFiles("P-256")})));
  ExpectSample(
      UnwrapLayerKeys(*annotation, Privates({&testing::OtherRsaKeyFiles(), &EcKeyFiles("P-256")})));
}

TEST_F(LayerKeys, SingleRecipientIsFlattenedAndPlaintextIsThePrivopts) {
  auto annotation = WrapLayerKeys(SampleOptions(), Publics({&EcKeyFiles("P-384")}));
  ASSERT_TRUE(annotation.ok());
  auto jwe_text = Base64Decode(*annotation);
  ASSERT_TRUE(jwe_text.ok());
  json jwe = json::parse(AsStringView(*jwe_text));
  EXPECT_FALSE(jwe.contains("recipients"));
  auto key = PrivateKey::Load(EcKeyFiles("P-384").private_pem.string());
  ASSERT_TRUE(key.ok());
  auto plain = DecryptJwe(AsStringView(*jwe_text), *key);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Str(*plain), kSampleJson);
}

TEST_F(LayerKeys, CommaSeparatedEntriesAreAllTried) {
  auto first = WrapLayerKeys(SampleOptions(), Publics({&RsaKeyFiles(2048)}));
  auto second = WrapLayerKeys(SampleOptions(), Publics({&EcKeyFiles("P-521")}));
  ASSERT_TRUE(first.ok() && second.ok());
  std::string both = *first + "," + *second;
  ExpectSample(UnwrapLayerKeys(both, Privates({&EcKeyFiles("P-521")})));
  ExpectSample(UnwrapLayerKeys(both, Privates({&RsaKeyFiles(2048)})));
  ExpectSample(UnwrapLayerKeys("!!!!," + *second, Privates({&EcKeyFiles("P-521")})));
}

TEST_F(LayerKeys, AnErrorWithOneKeyDoesNotStopTheNext) {
  auto annotation =
      WrapLayerKeys(SampleOptions(), Publics({&EcKeyFiles("P-256"), &RsaKeyFiles(2048)}));
  ASSERT_TRUE(annotation.ok());
  auto text = Base64Decode(*annotation);
  ASSERT_TRUE(text.ok());
  json jwe = json::parse(AsStringView(*text));
  auto x = Base64UrlDecode(jwe["recipients"][0]["header"]["epk"]["x"].get<std::string>());
  ASSERT_TRUE(x.ok());
  (*x)[0] ^= 0x01;
  jwe["recipients"][0]["header"]["epk"]["x"] = Base64UrlEncode(*x);
  std::string corrupted = Base64Encode(AsBytes(jwe.dump()));
  ExpectSample(UnwrapLayerKeys(corrupted, Privates({&EcKeyFiles("P-256"), &RsaKeyFiles(2048)})));
  auto ec_only = UnwrapLayerKeys(corrupted, Privates({&EcKeyFiles("P-256")}));
  ASSERT_FALSE(ec_only.ok());
  EXPECT_EQ(ec_only.status().code(), StatusCode::kCorruption) << ec_only.status().ToString();
}

TEST_F(LayerKeys, NoMatchingKeyNamesTheKeysTried) {
  auto annotation = WrapLayerKeys(SampleOptions(), Publics({&RsaKeyFiles(2048)}));
  ASSERT_TRUE(annotation.ok());
  auto keys = Privates({&testing::OtherRsaKeyFiles(), &EcKeyFiles("P-256")});
  auto r = UnwrapLayerKeys(*annotation, keys);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "no private key given (" + keys[0].name() + ", " +
                                      keys[1].name() + ") matches a recipient of the layer's JWE");
}

TEST_F(LayerKeys, TamperingIsReportedAboveNoMatch) {
  auto annotation = WrapLayerKeys(SampleOptions(), Publics({&RsaKeyFiles(2048)}));
  ASSERT_TRUE(annotation.ok());
  auto jwe_text = Base64Decode(*annotation);
  ASSERT_TRUE(jwe_text.ok());
  json jwe = json::parse(AsStringView(*jwe_text));
  auto ct = Base64UrlDecode(jwe["ciphertext"].get<std::string>());
  ASSERT_TRUE(ct.ok());
  (*ct)[0] ^= 1;
  jwe["ciphertext"] = Base64UrlEncode(*ct);
  std::string tampered = Base64Encode(AsBytes(jwe.dump()));
  auto r = UnwrapLayerKeys(tampered, Privates({&testing::OtherRsaKeyFiles(), &RsaKeyFiles(2048)}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed) << r.status().ToString();
}

TEST_F(LayerKeys, MalformedAnnotationsAreNamed) {
  auto keys = Privates({&RsaKeyFiles(2048)});
  auto empty = UnwrapLayerKeys("", keys);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kCorruption);
  auto not_b64 = UnwrapLayerKeys("!!!!", keys);
  ASSERT_FALSE(not_b64.ok());
  EXPECT_EQ(not_b64.status().code(), StatusCode::kCorruption);
  EXPECT_NE(not_b64.status().message().find(kJweKeysAnnotation), std::string::npos);
  auto not_jwe = UnwrapLayerKeys(Base64Encode(AsBytes("{}")) + ",!!!!", keys);
  ASSERT_FALSE(not_jwe.ok());
  EXPECT_EQ(not_jwe.status().code(), StatusCode::kCorruption);
  EXPECT_NE(not_jwe.status().message().find("JWE entry 1 of 2"), std::string::npos)
      << not_jwe.status().ToString();
  auto no_keys = UnwrapLayerKeys("AAAA", {});
  ASSERT_FALSE(no_keys.ok());
  EXPECT_EQ(no_keys.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(WrapLayerKeys(SampleOptions(), {}).ok());
}

TEST_F(LayerKeys, GarbageInsideAnAuthenticJweIsCorruption) {
  auto pub = Publics({&RsaKeyFiles(2048)});
  std::vector<JweRecipient> r = {{&pub[0], JweKeyAlgorithm::kRsaOaep}};
  auto jwe = EncryptJwe(AsBytes(R"({"symkey":"**"})"), r);
  ASSERT_TRUE(jwe.ok());
  auto result = UnwrapLayerKeys(Base64Encode(AsBytes(*jwe)), Privates({&RsaKeyFiles(2048)}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kCorruption);
  EXPECT_NE(result.status().message().find("inside the layer's JWE"), std::string::npos);
  EXPECT_NE(result.status().message().find("'symkey'"), std::string::npos);
}

}  // namespace
}  // namespace lazycrypt::keywrap
