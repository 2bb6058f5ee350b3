#include "keywrap/jwe.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/jwe_internal.h"
#include "keywrap/openssl_util.h"
#include "keywrap/test_util.h"
#include "keywrap/testdata/fuzz_keys.h"

namespace lazycrypt::keywrap {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
using testing::EcKeyFiles;
using testing::RsaKeyFiles;

std::string Str(const crypto::SecureBuffer& b) { return std::string(AsStringView(b.span())); }

std::vector<uint8_t> B64u(std::string_view text) {
  auto r = Base64UrlDecode(text);
  EXPECT_TRUE(r.ok()) << text;
  return r.ok() ? *r : std::vector<uint8_t>{};
}

PrivateKey Priv(const testing::KeyPairFiles& files) {
  auto key = PrivateKey::Load(files.private_pem.string());
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(*key);
}

PublicKey Pub(const testing::KeyPairFiles& files) {
  auto key = PublicKey::Load(files.public_pem);
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(*key);
}

// Builds a key from JWK members with OpenSSL's EVP_PKEY_fromdata and returns it as PEM.
std::string PemFromParams(const char* type, int selection, OSSL_PARAM_BLD* builder) {
  internal::OsslParamPtr params(OSSL_PARAM_BLD_to_param(builder));
  internal::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  EXPECT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_fromdata(ctx.get(), &raw, selection, params.get()), 1);
  internal::EvpPkeyPtr key(raw);
  BIO* bio = BIO_new(BIO_s_mem());
  if (selection == EVP_PKEY_KEYPAIR) {
    EXPECT_EQ(PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr), 1);
  } else {
    EXPECT_EQ(PEM_write_bio_PUBKEY(bio, key.get()), 1);
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

BIGNUM* Bn(std::string_view b64url, std::vector<internal::BignumPtr>& keep) {
  auto bytes = B64u(b64url);
  keep.emplace_back(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
  return keep.back().get();
}

// RFC 7516 Appendix A.1.
constexpr char kA1Compact[] =
    "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ."
    "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe"
    "ipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDb"
    "Sv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaV"
    "mqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je8"
    "1860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi"
    "6UklfCpIMfIjf7iGdXKHzg."
    "48V1_ALb6US04U3b."
    "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji"
    "SdiwkIr3ajwQzaBtQD_A."
    "XFBoMYUZodetZdvTiFvSkQ";
constexpr char kA1Plaintext[] = "The true sign of intelligence is not knowledge but imagination.";

std::string Rfc7516A1KeyPem() {
  const char* n =
      "oahUIoWw0K0usKNuOR6H4wkf4oBUXHTxRvgb48E-BVvxkeDNjbC4he8rUWcJoZmds2h7M70imEVhRU5djINXtqllXI4D"
      "FqcI1DgjT9LewND8MW2Krf3Spsk_ZkoFnilakGygTwpZ3uesH-PFABNIUYpOiN15dsQRkgr0vEhxN92i2asbOenSZey"
      "axziK72UwxrrKoExv6kc5twXTq4h-QChLOln0_mtUZwfsRaMStPs6mS6XrgxnxbWhojf663tuEQueGC-FCMfra36C9k"
      "nDFGzKsNa7LZK2djYgyD3JR_MB_4NUJW_TqOQtwHYbxevoJArm-L5StowjzGy-_bq6Gw";
  const char* d =
      "kLdtIj6GbDks_ApCSTYQtelcNttlKiOyPzMrXHeI-yk1F7-kpDxY4-WY5NWV5KntaEeXS1j82E375xxhWMHXyvjYecPT"
      "9fpwR_M9gV8n9Hrh2anTpTD93Dt62ypW3yDsJzBnTnrYu1iwWRgBKrEYY46qAZIrA2xAwnm2X7uGR1hghkqDp0Vqj3k"
      "bSCz1XyfCs6_LehBwtxHIyh8Ripy40p24moOAbgxVw3rxT_vlt3UVe4WO3JkJOzlpUf-KTVI2Ptgm-dARxTEtE-id-4"
      "OJr0h-K-VFs3VSndVTIznSxfyrj8ILL6MG_Uv8YAu7VILSB3lOW085-4qE3DzgrTjgyQ";
  const char* p =
      "1r52Xk46c-LsfB5P442p7atdPUrxQSy4mti_tZI3Mgf2EuFVbUoDBvaRQ-SWxkbkmoEzL7JXroSBjSrK3YIQgYdMgyAE"
      "PTPjXv_hI2_1eTSPVZfzL0lffNn03IXqWF5MDFuoUYE0hzb2vhrlN_rKrbfDIwUbTrjjgieRbwC6Cl0";
  const char* q =
      "wLb35x7hmQWZsWJmB_vle87ihgZ19S8lBEROLIsZG4ayZVe9Hi9gDVCOBmUDdaDYVTSNx_8Fyw1YYa9XGrGnDew00J28"
      "cRUoeBB_jKI1oma0Orv1T9aXIWxKwd4gvxFImOWr3QRL9KEBRzk2RatUBnmDZJTIAfwTs0g68UZHvtc";
  const char* dp =
      "ZK-YwE7diUh0qR1tR7w8WHtolDx3MZ_OTowiFvgfeQ3SiresXjm9gZ5KLhMXvo-uz-KUJWDxS5pFQ_M0evdo1dKiRTjV"
      "w_x4NyqyXPM5nULPkcpU827rnpZzAJKpdhWAgqrXGKAECQH0Xt4taznjnd_zVpAmZZq60WPMBMfKcuE";
  const char* dq =
      "Dq0gfgJ1DdFGXiLvQEZnuKEN0UUmsJBxkjydc3j4ZYdBiMRAy86x0vHCjywcMlYYg4yoC4YZa9hNVcsjqA3FeiL19rk8"
      "g6Qn29Tt0cj8qqyFpz9vNDBUfCAiJVeESOjJDZPYHdHY8v1b-o-Z2X5tvLx-TCekf7oxyeKDUqKWjis";
  const char* qi =
      "VIMpMYbPf47dT1w_zDUXfPimsSegnMOA1zTaX7aGk_8urY6R8-ZW1FxU7AlWAyLWybqq6t16VFd7hQd0y6flUK4SlOyd"
      "B61gwanOsXGOAOv82cHq0E3eL4HrtZkUuKvnPrMnsUUFlfUdybVzxyjz9JF_XyaY14ardLSjf4L_FNY";
  std::vector<internal::BignumPtr> keep;
  internal::OsslParamBldPtr b(OSSL_PARAM_BLD_new());
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_N, Bn(n, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_E, Bn("AQAB", keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_D, Bn(d, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, Bn(p, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, Bn(q, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1, Bn(dp, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2, Bn(dq, keep));
  OSSL_PARAM_BLD_push_BN(b.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1, Bn(qi, keep));
  return PemFromParams("RSA", EVP_PKEY_KEYPAIR, b.get());
}

PrivateKey Rfc7516A1Key() {
  std::string pem = Rfc7516A1KeyPem();
  auto key = PrivateKey::Parse(AsBytes(pem), std::nullopt, "rfc7516-a1");
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(*key);
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = s.find(sep, start);
    out.emplace_back(s.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

std::string CompactToFlattened(std::string_view compact) {
  auto p = Split(compact, '.');
  ordered_json j;
  j["protected"] = p[0];
  j["encrypted_key"] = p[1];
  j["iv"] = p[2];
  j["ciphertext"] = p[3];
  j["tag"] = p[4];
  return j.dump();
}

TEST(JweKnownAnswer, Rfc7516AppendixA1Compact) {
  PrivateKey key = Rfc7516A1Key();
  EXPECT_EQ(key.bits(), 2048);
  auto plain = DecryptJwe(kA1Compact, key);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(Str(*plain), kA1Plaintext);
}

TEST(JweKnownAnswer, Rfc7516AppendixA1AsFlattenedAndGeneralJson) {
  PrivateKey key = Rfc7516A1Key();
  std::string flattened = CompactToFlattened(kA1Compact);
  auto plain = DecryptJwe(flattened, key);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(Str(*plain), kA1Plaintext);

  json general = json::parse(flattened);
  general["recipients"] = json::array({{{"encrypted_key", general["encrypted_key"]}}});
  general.erase("encrypted_key");
  auto plain2 = DecryptJwe(general.dump(), key);
  ASSERT_TRUE(plain2.ok()) << plain2.status().ToString();
  EXPECT_EQ(Str(*plain2), kA1Plaintext);
}

TEST(JweKnownAnswer, Rfc7516AppendixA1TamperedTagFails) {
  PrivateKey key = Rfc7516A1Key();
  std::string compact = kA1Compact;
  compact.back() = compact.back() == 'Q' ? 'g' : 'Q';  // still canonical base64url
  auto plain = DecryptJwe(compact, key);
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.status().code(), StatusCode::kAuthFailed) << plain.status().ToString();
}

// RFC 7518 Appendix C: ECDH-ES key agreement with the Concat KDF.
TEST(JweKnownAnswer, Rfc7518AppendixCEcdhAndConcatKdf) {
  std::vector<internal::BignumPtr> keep;
  internal::OsslParamBldPtr bob(OSSL_PARAM_BLD_new());
  auto point = [](std::string_view x, std::string_view y) {
    std::vector<uint8_t> p = {0x04};
    auto xb = B64u(x), yb = B64u(y);
    p.insert(p.end(), xb.begin(), xb.end());
    p.insert(p.end(), yb.begin(), yb.end());
    return p;
  };
  auto bob_point = point("weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
                         "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck");
  OSSL_PARAM_BLD_push_utf8_string(bob.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
  OSSL_PARAM_BLD_push_octet_string(bob.get(), OSSL_PKEY_PARAM_PUB_KEY, bob_point.data(),
                                   bob_point.size());
  OSSL_PARAM_BLD_push_BN(bob.get(), OSSL_PKEY_PARAM_PRIV_KEY,
                         Bn("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw", keep));
  std::string bob_pem = PemFromParams("EC", EVP_PKEY_KEYPAIR, bob.get());
  auto bob_key = PrivateKey::Parse(AsBytes(bob_pem), std::nullopt, "bob");
  ASSERT_TRUE(bob_key.ok()) << bob_key.status().ToString();

  internal::OsslParamBldPtr alice(OSSL_PARAM_BLD_new());
  auto alice_point = point("gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
                           "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps");
  OSSL_PARAM_BLD_push_utf8_string(alice.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
  OSSL_PARAM_BLD_push_octet_string(alice.get(), OSSL_PKEY_PARAM_PUB_KEY, alice_point.data(),
                                   alice_point.size());
  std::string alice_pem = PemFromParams("EC", EVP_PKEY_PUBLIC_KEY, alice.get());
  auto alice_key = PublicKey::Parse(AsBytes(alice_pem), "alice-epk");
  ASSERT_TRUE(alice_key.ok()) << alice_key.status().ToString();

  auto z = internal::EcdhSharedSecret(bob_key->evp_pkey(), alice_key->evp_pkey());
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  const std::vector<uint8_t> expected_z = {158, 86,  217, 29,  129, 113, 53,  211, 114, 131, 66,
                                           131, 191, 132, 38,  156, 251, 49,  110, 163, 218, 128,
                                           106, 72,  246, 218, 167, 121, 140, 254, 144, 196};
  EXPECT_EQ(std::vector<uint8_t>(z->span().begin(), z->span().end()), expected_z);

  auto derived =
      internal::ConcatKdfSha256(z->span(), "A128GCM", AsBytes("Alice"), AsBytes("Bob"), 16);
  ASSERT_TRUE(derived.ok()) << derived.status().ToString();
  EXPECT_EQ(Base64UrlEncode(derived->span()), "VqqN6vgjbSBcIijNcacQGg");
  auto other =
      internal::ConcatKdfSha256(z->span(), "A128GCM", AsBytes("Alice"), AsBytes("Bob!"), 16);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(Base64UrlEncode(other->span()), "VqqN6vgjbSBcIijNcacQGg");
}

std::vector<uint8_t> Hex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK.
TEST(JweKnownAnswer, Rfc3394Section46KeyWrap) {
  auto kek = Hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
  auto data = Hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
  auto expected =
      Hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
  auto wrapped = internal::AesKeyWrap256(kek, data);
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().ToString();
  EXPECT_EQ(*wrapped, expected);
  auto unwrapped = internal::AesKeyUnwrap256(kek, expected);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status().ToString();
  EXPECT_EQ(std::vector<uint8_t>(unwrapped->span().begin(), unwrapped->span().end()), data);

  auto flipped = expected;
  flipped[17] ^= 0x01;
  auto bad = internal::AesKeyUnwrap256(kek, flipped);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kAuthFailed);
  auto wrong_kek = kek;
  wrong_kek[0] ^= 0x80;
  auto bad2 = internal::AesKeyUnwrap256(wrong_kek, expected);
  ASSERT_FALSE(bad2.ok());
  EXPECT_EQ(bad2.status().code(), StatusCode::kAuthFailed);
  auto shorter = internal::AesKeyUnwrap256(kek, std::span(expected).first(16));
  ASSERT_FALSE(shorter.ok());
  EXPECT_EQ(shorter.status().code(), StatusCode::kAuthFailed);
}

// ---------------------------------------------------------------------------------------------

struct Case {
  const char* label;
  JweKeyAlgorithm algorithm;
  const testing::KeyPairFiles* (*files)();
};

const Case kCases[] = {
    {"RSA-OAEP/2048", JweKeyAlgorithm::kRsaOaep, [] { return &RsaKeyFiles(2048); }},
    {"RSA-OAEP-256/2048", JweKeyAlgorithm::kRsaOaep256, [] { return &RsaKeyFiles(2048); }},
    {"RSA-OAEP/3072", JweKeyAlgorithm::kRsaOaep, [] { return &RsaKeyFiles(3072); }},
    {"ECDH-ES+A256KW/P-256", JweKeyAlgorithm::kEcdhEsA256kw, [] { return &EcKeyFiles("P-256"); }},
    {"ECDH-ES+A256KW/P-384", JweKeyAlgorithm::kEcdhEsA256kw, [] { return &EcKeyFiles("P-384"); }},
    {"ECDH-ES+A256KW/P-521", JweKeyAlgorithm::kEcdhEsA256kw, [] { return &EcKeyFiles("P-521"); }},
};

class JweRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(JweRoundTrip, SingleRecipientIsGoJoseFlattened) {
  const Case& c = GetParam();
  PublicKey pub = Pub(*c.files());
  PrivateKey priv = Priv(*c.files());
  const std::string message = R"({"symkey":"c2VjcmV0","digest":"sha256:00"})";
  auto jwe = EncryptJwe(AsBytes(message), std::vector<JweRecipient>{{&pub, c.algorithm}});
  ASSERT_TRUE(jwe.ok()) << jwe.status().ToString();

  // go-jose's flattened FullSerialize: these members, in this order, nothing else.
  std::regex shape(R"(^\{"protected":"[-_A-Za-z0-9]+","encrypted_key":"[-_A-Za-z0-9]+",)"
                   R"("iv":"[-_A-Za-z0-9]{16}","ciphertext":"[-_A-Za-z0-9]+",)"
                   R"("tag":"[-_A-Za-z0-9]{22}"\}$)");
  EXPECT_TRUE(std::regex_match(*jwe, shape)) << *jwe;
  json parsed = json::parse(*jwe);
  std::string header(AsStringView(B64u(parsed["protected"].get<std::string>())));
  std::string alg(JweKeyAlgorithmName(c.algorithm));
  if (c.algorithm == JweKeyAlgorithm::kEcdhEsA256kw) {
    std::regex epk(R"(^\{"alg":"ECDH-ES\+A256KW","enc":"A256GCM","epk":\{"kty":"EC","crv":")" +
                   pub.curve() + R"(","x":"[-_A-Za-z0-9]+","y":"[-_A-Za-z0-9]+"\}\}$)");
    EXPECT_TRUE(std::regex_match(header, epk)) << header;
    json e = json::parse(header)["epk"];
    size_t coordinate = pub.curve() == "P-256" ? 32 : pub.curve() == "P-384" ? 48 : 66;
    EXPECT_EQ(B64u(e["x"].get<std::string>()).size(), coordinate);
    EXPECT_EQ(B64u(e["y"].get<std::string>()).size(), coordinate);
    EXPECT_EQ(B64u(parsed["encrypted_key"].get<std::string>()).size(), 40u);
  } else {
    EXPECT_EQ(header, R"({"alg":")" + alg + R"(","enc":"A256GCM"})");
    EXPECT_EQ(B64u(parsed["encrypted_key"].get<std::string>()).size(),
              static_cast<size_t>(pub.bits() / 8));
  }

  auto plain = DecryptJwe(*jwe, priv);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(Str(*plain), message);
}

TEST_P(JweRoundTrip, FreshCekAndIvEveryTime) {
  const Case& c = GetParam();
  PublicKey pub = Pub(*c.files());
  std::vector<JweRecipient> r = {{&pub, c.algorithm}};
  std::string message(64, 'x');
  auto a = EncryptJwe(AsBytes(message), r);
  auto b = EncryptJwe(AsBytes(message), r);
  ASSERT_TRUE(a.ok() && b.ok());
  json ja = json::parse(*a), jb = json::parse(*b);
  EXPECT_NE(ja["iv"], jb["iv"]);
  EXPECT_NE(ja["ciphertext"], jb["ciphertext"]);
  EXPECT_NE(ja["encrypted_key"], jb["encrypted_key"]);
}

TEST_P(JweRoundTrip, WrongKeyOfTheSameKindIsNoMatch) {
  const Case& c = GetParam();
  PublicKey pub = Pub(*c.files());
  const auto& other_files =
      pub.kind() == KeyKind::kRsa ? testing::OtherRsaKeyFiles() : testing::OtherEcKeyFiles();
  PrivateKey other = Priv(other_files);
  auto jwe = EncryptJwe(AsBytes("m"), std::vector<JweRecipient>{{&pub, c.algorithm}});
  ASSERT_TRUE(jwe.ok());
  auto plain = DecryptJwe(*jwe, other);
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(plain.status().message(),
            "no recipient of this JWE matches key " + other_files.private_pem.string());
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, JweRoundTrip, ::testing::ValuesIn(kCases),
                         [](const auto& info) {
                           std::string name = info.param.label;
                           for (char& ch : name) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

class JweMulti : public ::testing::Test {
 protected:
  void SetUp() override {
    rsa_pub_ = std::make_unique<PublicKey>(Pub(RsaKeyFiles(2048)));
    rsa3072_pub_ = std::make_unique<PublicKey>(Pub(RsaKeyFiles(3072)));
    p256_pub_ = std::make_unique<PublicKey>(Pub(EcKeyFiles("P-256")));
    p384_pub_ = std::make_unique<PublicKey>(Pub(EcKeyFiles("P-384")));
    recipients_ = {{rsa_pub_.get(), JweKeyAlgorithm::kRsaOaep},
                   {rsa3072_pub_.get(), JweKeyAlgorithm::kRsaOaep256},
                   {p256_pub_.get(), JweKeyAlgorithm::kEcdhEsA256kw},
                   {p384_pub_.get(), JweKeyAlgorithm::kEcdhEsA256kw}};
    auto jwe = EncryptJwe(AsBytes(kMessage), recipients_);
    ASSERT_TRUE(jwe.ok()) << jwe.status().ToString();
    jwe_ = *jwe;
  }
  static constexpr char kMessage[] = "layer key options";
  std::unique_ptr<PublicKey> rsa_pub_, rsa3072_pub_, p256_pub_, p384_pub_;
  std::vector<JweRecipient> recipients_;
  std::string jwe_;
};

TEST_F(JweMulti, EveryRecipientDecrypts) {
  for (const auto* files :
       {&RsaKeyFiles(2048), &RsaKeyFiles(3072), &EcKeyFiles("P-256"), &EcKeyFiles("P-384")}) {
    auto plain = DecryptJwe(jwe_, Priv(*files));
    ASSERT_TRUE(plain.ok()) << files->private_pem << ": " << plain.status().ToString();
    EXPECT_EQ(Str(*plain), kMessage);
  }
}

TEST_F(JweMulti, IsGoJoseGeneralSerialization) {
  std::regex shape(
      R"(^\{"protected":"eyJlbmMiOiJBMjU2R0NNIn0","recipients":\[)"
      R"(\{"header":\{"alg":"RSA-OAEP"\},"encrypted_key":"[-_A-Za-z0-9]+"\},)"
      R"(\{"header":\{"alg":"RSA-OAEP-256"\},"encrypted_key":"[-_A-Za-z0-9]+"\},)"
      R"(\{"header":\{"alg":"ECDH-ES\+A256KW","epk":\{"kty":"EC","crv":"P-256",)"
      R"("x":"[-_A-Za-z0-9]+","y":"[-_A-Za-z0-9]+"\}\},"encrypted_key":"[-_A-Za-z0-9]+"\},)"
      R"(\{"header":\{"alg":"ECDH-ES\+A256KW","epk":\{"kty":"EC","crv":"P-384",)"
      R"("x":"[-_A-Za-z0-9]+","y":"[-_A-Za-z0-9]+"\}\},"encrypted_key":"[-_A-Za-z0-9]+"\}\],)"
      R"("encrypted_key":"[-_A-Za-z0-9]+","iv":"[-_A-Za-z0-9]{16}",)"
      R"("ciphertext":"[-_A-Za-z0-9]+","tag":"[-_A-Za-z0-9]{22}"\}$)");
  EXPECT_TRUE(std::regex_match(jwe_, shape)) << jwe_;
  EXPECT_EQ(std::string(AsStringView(B64u("eyJlbmMiOiJBMjU2R0NNIn0"))), R"({"enc":"A256GCM"})");
  json j = json::parse(jwe_);
  // go-jose copies the first recipient's key to the top level.
  EXPECT_EQ(j["encrypted_key"], j["recipients"][0]["encrypted_key"]);
}

TEST_F(JweMulti, ARecipientTakenAloneAsFlattenedStillDecrypts) {
  json j = json::parse(jwe_);
  for (int i : {0, 2}) {
    json flat = j;
    flat.erase("recipients");
    flat["header"] = j["recipients"][i]["header"];
    flat["encrypted_key"] = j["recipients"][i]["encrypted_key"];
    const auto& files = i == 0 ? RsaKeyFiles(2048) : EcKeyFiles("P-256");
    auto plain = DecryptJwe(flat.dump(), Priv(files));
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    EXPECT_EQ(Str(*plain), kMessage);
  }
}

TEST_F(JweMulti, SplicedRecipientFromAnotherJweFailsAuthentication) {
  auto other = EncryptJwe(AsBytes(kMessage), recipients_);
  ASSERT_TRUE(other.ok());
  json j = json::parse(jwe_), o = json::parse(*other);
  // The other JWE's wrapped CEK (and epk) unwraps fine, but to a different CEK.
  j["recipients"][0] = o["recipients"][0];
  j["recipients"][2] = o["recipients"][2];
  for (const auto* files : {&RsaKeyFiles(2048), &EcKeyFiles("P-256")}) {
    auto plain = DecryptJwe(j.dump(), Priv(*files));
    ASSERT_FALSE(plain.ok());
    EXPECT_EQ(plain.status().code(), StatusCode::kAuthFailed) << plain.status().ToString();
    EXPECT_NE(plain.status().message().find("JWE authentication failed"), std::string::npos);
  }
  // Recipients that were not swapped still work.
  EXPECT_TRUE(DecryptJwe(j.dump(), Priv(RsaKeyFiles(3072))).ok());
}

TEST_F(JweMulti, SwappingTwoRecipientsKeysBreaksOnlyThoseTwo) {
  json j = json::parse(jwe_);
  std::swap(j["recipients"][0]["encrypted_key"], j["recipients"][1]["encrypted_key"]);
  auto rsa = DecryptJwe(j.dump(), Priv(RsaKeyFiles(2048)));
  ASSERT_FALSE(rsa.ok());
  EXPECT_EQ(rsa.status().code(), StatusCode::kNotFound) << rsa.status().ToString();
  auto ec = DecryptJwe(j.dump(), Priv(EcKeyFiles("P-256")));
  EXPECT_TRUE(ec.ok()) << ec.status().ToString();
}

TEST_F(JweMulti, ACorruptRecipientDoesNotHideTheOthers) {
  json j = json::parse(jwe_);
  auto x = B64u(j["recipients"][2]["header"]["epk"]["x"].get<std::string>());
  x[0] ^= 0x01;  // off the curve
  j["recipients"][2]["header"]["epk"]["x"] = Base64UrlEncode(x);
  auto p256 = DecryptJwe(j.dump(), Priv(EcKeyFiles("P-256")));
  ASSERT_FALSE(p256.ok());
  EXPECT_EQ(p256.status().code(), StatusCode::kCorruption) << p256.status().ToString();
  EXPECT_NE(p256.status().message().find("recipient 3: epk is not a point on P-256"),
            std::string::npos)
      << p256.status().ToString();
  auto rsa = DecryptJwe(j.dump(), Priv(RsaKeyFiles(2048)));
  ASSERT_TRUE(rsa.ok()) << rsa.status().ToString();
  EXPECT_EQ(Str(*rsa), kMessage);
}

TEST_F(JweMulti, KeyOnAnotherCurveOrOfAnotherKindMatchesNoRecipient) {
  auto p521 = DecryptJwe(jwe_, Priv(EcKeyFiles("P-521")));
  ASSERT_FALSE(p521.ok());
  EXPECT_EQ(p521.status().code(), StatusCode::kNotFound);
  auto ec_only = EncryptJwe(AsBytes("m"), std::vector<JweRecipient>{recipients_[2]});
  ASSERT_TRUE(ec_only.ok());
  auto rsa = DecryptJwe(*ec_only, Priv(RsaKeyFiles(2048)));
  ASSERT_FALSE(rsa.ok());
  EXPECT_EQ(rsa.status().code(), StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// Hostile input. One RSA and one EC single-recipient JWE, mutated member by member.

class JweHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    rsa_pub_ = std::make_unique<PublicKey>(Pub(RsaKeyFiles(2048)));
    ec_pub_ = std::make_unique<PublicKey>(Pub(EcKeyFiles("P-256")));
    rsa_ = std::make_unique<PrivateKey>(Priv(RsaKeyFiles(2048)));
    ec_ = std::make_unique<PrivateKey>(Priv(EcKeyFiles("P-256")));
    auto r = EncryptJwe(AsBytes(kMessage),
                        std::vector<JweRecipient>{{rsa_pub_.get(), JweKeyAlgorithm::kRsaOaep}});
    auto e = EncryptJwe(AsBytes(kMessage),
                        std::vector<JweRecipient>{{ec_pub_.get(), JweKeyAlgorithm::kEcdhEsA256kw}});
    ASSERT_TRUE(r.ok() && e.ok());
    rsa_jwe_ = ordered_json::parse(*r);
    ec_jwe_ = ordered_json::parse(*e);
  }

  Status Decrypt(const ordered_json& j, const PrivateKey& key) {
    return DecryptJwe(j.dump(), key).status();
  }
  static void ExpectCode(const Status& s, StatusCode code, std::string_view needle) {
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos)
        << "'" << needle << "' not in: " << s.ToString();
  }
  // Flips one bit of a binary member, keeping it canonical base64url.
  static void FlipBit(ordered_json& j, const char* member, size_t byte, uint8_t mask) {
    auto bytes = B64u(j[member].get<std::string>());
    bytes.at(byte) ^= mask;
    j[member] = Base64UrlEncode(bytes);
  }
  static ordered_json Header(const ordered_json& j) {
    return ordered_json::parse(AsStringView(B64u(j["protected"].get<std::string>())));
  }
  static void SetHeader(ordered_json& j, const ordered_json& header) {
    j["protected"] = Base64UrlEncode(AsBytes(header.dump()));
  }

  static constexpr char kMessage[] = R"({"symkey":"AAAA"})";
  std::unique_ptr<PublicKey> rsa_pub_, ec_pub_;
  std::unique_ptr<PrivateKey> rsa_, ec_;
  ordered_json rsa_jwe_, ec_jwe_;
};

TEST_F(JweHostile, UntouchedJwesDecrypt) {
  EXPECT_TRUE(Decrypt(rsa_jwe_, *rsa_).ok());
  EXPECT_TRUE(Decrypt(ec_jwe_, *ec_).ok());
  std::string spaced = "\n  " + rsa_jwe_.dump(2) + "\n";
  EXPECT_TRUE(DecryptJwe(spaced, *rsa_).ok());
}

TEST_F(JweHostile, BitFlipsInContentIvTagOrHeaderFailAuthentication) {
  for (auto* base : {&rsa_jwe_, &ec_jwe_}) {
    const PrivateKey& key = base == &rsa_jwe_ ? *rsa_ : *ec_;
    for (const char* member : {"ciphertext", "iv", "tag"}) {
      for (size_t byte : {size_t{0}, size_t{5}}) {
        ordered_json j = *base;
        FlipBit(j, member, byte, 0x10);
        ExpectCode(Decrypt(j, key), StatusCode::kAuthFailed, "authentication failed");
      }
    }
    ordered_json j = *base;
    ordered_json header = Header(j);
    header["kid"] = "added";  // the protected header is AAD
    SetHeader(j, header);
    ExpectCode(Decrypt(j, key), StatusCode::kAuthFailed, "authentication failed");
    ordered_json aad = *base;
    aad["aad"] = Base64UrlEncode(AsBytes("extra"));
    ExpectCode(Decrypt(aad, key), StatusCode::kAuthFailed, "authentication failed");
  }
}

TEST_F(JweHostile, BitFlipInEncryptedKeyIsNoMatch) {
  ordered_json j = rsa_jwe_;
  FlipBit(j, "encrypted_key", 100, 0x01);
  ExpectCode(Decrypt(j, *rsa_), StatusCode::kNotFound, "no recipient of this JWE matches key");
  ordered_json e = ec_jwe_;
  FlipBit(e, "encrypted_key", 3, 0x01);
  ExpectCode(Decrypt(e, *ec_), StatusCode::kNotFound, "no recipient of this JWE matches key");
}

TEST_F(JweHostile, EveryTruncationIsMalformed) {
  for (const auto* base : {&rsa_jwe_, &ec_jwe_}) {
    std::string text = base->dump();
    const PrivateKey& key = base == &rsa_jwe_ ? *rsa_ : *ec_;
    for (size_t n = 0; n < text.size(); ++n) {
      auto r = DecryptJwe(std::string_view(text).substr(0, n), key);
      ASSERT_FALSE(r.ok()) << n;
      ASSERT_EQ(r.status().code(), StatusCode::kCorruption) << n << ": " << r.status().ToString();
      ASSERT_EQ(r.status().message().rfind("JWE is malformed: ", 0), 0u) << r.status().message();
    }
  }
}

TEST_F(JweHostile, BadBase64InAnyMemberIsNamed) {
  for (const char* member : {"protected", "encrypted_key", "iv", "ciphertext", "tag"}) {
    ordered_json j = rsa_jwe_;
    std::string v = j[member].get<std::string>();
    v.insert(4, "!");
    j[member] = v;
    ExpectCode(Decrypt(j, *rsa_), StatusCode::kCorruption, std::string("'") + member + "'");
  }
  ordered_json padded = rsa_jwe_;
  padded["tag"] = padded["tag"].get<std::string>() + "==";
  ExpectCode(Decrypt(padded, *rsa_), StatusCode::kCorruption, "'tag'");
}

TEST_F(JweHostile, MissingOrMistypedMembersAreNamed) {
  for (const char* member : {"iv", "ciphertext", "tag"}) {
    ordered_json j = rsa_jwe_;
    j.erase(member);
    ExpectCode(Decrypt(j, *rsa_), StatusCode::kCorruption, std::string("no '") + member + "'");
    ordered_json t = rsa_jwe_;
    t[member] = 42;
    ExpectCode(Decrypt(t, *rsa_), StatusCode::kCorruption, "is not a string");
  }
  ordered_json no_key = rsa_jwe_;
  no_key.erase("encrypted_key");
  ExpectCode(Decrypt(no_key, *rsa_), StatusCode::kCorruption, "no encrypted key");
  ordered_json header = rsa_jwe_;
  header["header"] = "alg";
  ExpectCode(Decrypt(header, *rsa_), StatusCode::kCorruption, "'header' is not a JSON object");
  ExpectCode(DecryptJwe("[]", *rsa_).status(), StatusCode::kCorruption, "not a JSON object");
  ExpectCode(DecryptJwe("", *rsa_).status(), StatusCode::kCorruption, "empty");
  ExpectCode(DecryptJwe("a.b.c", *rsa_).status(), StatusCode::kCorruption, "five");
  ExpectCode(DecryptJwe(rsa_jwe_.dump() + "x", *rsa_).status(), StatusCode::kCorruption,
             "not valid JSON");
}

TEST_F(JweHostile, WrongSizedIvAndTagAreMalformed) {
  ordered_json iv = rsa_jwe_;
  iv["iv"] = Base64UrlEncode(std::vector<uint8_t>(16, 1));
  ExpectCode(Decrypt(iv, *rsa_), StatusCode::kCorruption, "'iv' is 16 bytes");
  ordered_json tag = rsa_jwe_;
  tag["tag"] = Base64UrlEncode(std::vector<uint8_t>(12, 1));
  ExpectCode(Decrypt(tag, *rsa_), StatusCode::kCorruption, "'tag' is 12 bytes");
  ordered_json ek = ec_jwe_;
  ek["encrypted_key"] = Base64UrlEncode(std::vector<uint8_t>(48, 1));
  ExpectCode(Decrypt(ek, *ec_), StatusCode::kCorruption, "48 bytes, not 40");
}

TEST_F(JweHostile, UnknownAlgorithmsAreRejectedByName) {
  for (const char* alg : {"RSA1_5", "dir", "A256KW", "ECDH-ES", "ECDH-ES+A128KW", "none"}) {
    ordered_json j = rsa_jwe_;
    ordered_json h = Header(j);
    h["alg"] = alg;
    SetHeader(j, h);
    ExpectCode(Decrypt(j, *rsa_), StatusCode::kUnsupported,
               std::string("JWE key algorithm '") + alg + "'");
  }
  for (const char* enc : {"A128GCM", "A256CBC-HS512", "a256gcm"}) {
    ordered_json j = rsa_jwe_;
    ordered_json h = Header(j);
    h["enc"] = enc;
    SetHeader(j, h);
    ExpectCode(Decrypt(j, *rsa_), StatusCode::kUnsupported,
               std::string("JWE content encryption '") + enc + "'");
  }
  ordered_json no_enc = rsa_jwe_;
  ordered_json h = Header(no_enc);
  h.erase("enc");
  SetHeader(no_enc, h);
  ExpectCode(Decrypt(no_enc, *rsa_), StatusCode::kCorruption, "no 'enc'");
}

TEST_F(JweHostile, ZipAndCritAreRejected) {
  ordered_json zip = rsa_jwe_;
  ordered_json h = Header(zip);
  h["zip"] = "DEF";
  SetHeader(zip, h);
  ExpectCode(Decrypt(zip, *rsa_), StatusCode::kUnsupported, "zip");
  ordered_json crit = rsa_jwe_;
  ordered_json c = Header(crit);
  c["crit"] = {"exp", "b64"};
  c["exp"] = 1;
  SetHeader(crit, c);
  ExpectCode(Decrypt(crit, *rsa_), StatusCode::kUnsupported, "'exp', 'b64'");
  ordered_json crit_unprotected = rsa_jwe_;
  crit_unprotected["unprotected"] = {{"crit", {"x"}}};
  ExpectCode(Decrypt(crit_unprotected, *rsa_), StatusCode::kUnsupported, "'x'");
}

TEST_F(JweHostile, HeaderParameterInTwoHeadersIsMalformed) {
  ordered_json j = rsa_jwe_;
  j["unprotected"] = {{"alg", "RSA-OAEP"}};
  ExpectCode(Decrypt(j, *rsa_), StatusCode::kCorruption, "'alg' appears in more than one header");
  ordered_json k = rsa_jwe_;
  k["header"] = {{"enc", "A256GCM"}};
  ExpectCode(Decrypt(k, *rsa_), StatusCode::kCorruption, "'enc' appears in more than one header");
}

TEST_F(JweHostile, DuplicateMembersAreMalformed) {
  std::string text = rsa_jwe_.dump();
  std::string dup = text.substr(0, text.size() - 1) + R"(,"iv":"AAAAAAAAAAAAAAAA"})";
  ExpectCode(DecryptJwe(dup, *rsa_).status(), StatusCode::kCorruption, "duplicate member 'iv'");
  ordered_json j = rsa_jwe_;
  j["protected"] =
      Base64UrlEncode(AsBytes(R"({"alg":"RSA-OAEP","enc":"A256GCM","alg":"RSA-OAEP-256"})"));
  ExpectCode(Decrypt(j, *rsa_), StatusCode::kCorruption, "duplicate member 'alg'");
}

TEST_F(JweHostile, EpkOffTheCurveOrMisshapenIsMalformed) {
  ordered_json j = ec_jwe_;
  ordered_json h = Header(j);
  auto x = B64u(h["epk"]["x"].get<std::string>());
  x[31] ^= 0x01;
  h["epk"]["x"] = Base64UrlEncode(x);
  SetHeader(j, h);
  ExpectCode(Decrypt(j, *ec_), StatusCode::kCorruption, "epk is not a point on P-256");

  ordered_json shortx = ec_jwe_;
  ordered_json hs = Header(shortx);
  hs["epk"]["x"] = Base64UrlEncode(std::vector<uint8_t>(31, 7));
  SetHeader(shortx, hs);
  ExpectCode(Decrypt(shortx, *ec_), StatusCode::kCorruption, "epk 'x' is 31 bytes");

  ordered_json kty = ec_jwe_;
  ordered_json hk = Header(kty);
  hk["epk"]["kty"] = "RSA";
  SetHeader(kty, hk);
  ExpectCode(Decrypt(kty, *ec_), StatusCode::kCorruption, "kty");

  ordered_json curve = ec_jwe_;
  ordered_json hc = Header(curve);
  hc["epk"]["crv"] = "secp256k1";
  SetHeader(curve, hc);
  ExpectCode(Decrypt(curve, *ec_), StatusCode::kUnsupported, "'secp256k1'");

  ordered_json none = ec_jwe_;
  ordered_json hn = Header(none);
  hn.erase("epk");
  SetHeader(none, hn);
  ExpectCode(Decrypt(none, *ec_), StatusCode::kCorruption, "without 'epk'");
}

TEST_F(JweHostile, RecipientsArrayMustBeSane) {
  ordered_json empty = rsa_jwe_;
  empty["recipients"] = ordered_json::array();
  ExpectCode(Decrypt(empty, *rsa_), StatusCode::kCorruption, "'recipients' is empty");
  ordered_json both = rsa_jwe_;
  both["recipients"] = {{{"encrypted_key", rsa_jwe_["encrypted_key"]}}};
  both["header"] = ordered_json::object();
  ExpectCode(Decrypt(both, *rsa_), StatusCode::kCorruption, "both 'recipients'");
  ordered_json many = rsa_jwe_;
  many["recipients"] = ordered_json::array();
  for (int i = 0; i < 129; ++i) {
    many["recipients"].push_back({{"encrypted_key", rsa_jwe_["encrypted_key"]}});
  }
  ExpectCode(Decrypt(many, *rsa_), StatusCode::kCorruption, "129 recipients");
  ordered_json not_object = rsa_jwe_;
  not_object["recipients"] = {1};
  ExpectCode(Decrypt(not_object, *rsa_), StatusCode::kCorruption, "recipient 1: not a JSON object");
}

TEST_F(JweHostile, HugeOrDeeplyNestedInputIsRefused) {
  std::string huge(kMaxJweBytes + 1, ' ');
  ExpectCode(DecryptJwe(huge, *rsa_).status(), StatusCode::kCorruption, "limit");
  std::string deep = rsa_jwe_.dump();
  deep.pop_back();
  deep += R"(,"x":)" + std::string(100, '[') + std::string(100, ']') + "}";
  ExpectCode(DecryptJwe(deep, *rsa_).status(), StatusCode::kCorruption, "deeper");
}

TEST_F(JweHostile, UnknownMembersAreIgnored) {
  ordered_json j = rsa_jwe_;
  j["future"] = {{"a", 1}};
  j["unprotected"] = {{"kid", "key-1"}};
  EXPECT_TRUE(Decrypt(j, *rsa_).ok());
}

TEST(JweEncrypt, RejectsBadRecipients) {
  PublicKey rsa = Pub(RsaKeyFiles(2048));
  PublicKey ec = Pub(EcKeyFiles("P-256"));
  auto none = EncryptJwe(AsBytes("m"), {});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  auto rsa_on_ec =
      EncryptJwe(AsBytes("m"), std::vector<JweRecipient>{{&ec, JweKeyAlgorithm::kRsaOaep}});
  ASSERT_FALSE(rsa_on_ec.ok());
  EXPECT_NE(rsa_on_ec.status().message().find("RSA-OAEP needs an RSA key"), std::string::npos);
  auto ec_on_rsa =
      EncryptJwe(AsBytes("m"), std::vector<JweRecipient>{{&rsa, JweKeyAlgorithm::kEcdhEsA256kw}});
  ASSERT_FALSE(ec_on_rsa.ok());
  EXPECT_NE(ec_on_rsa.status().message().find("needs an EC key"), std::string::npos);
  auto null_key =
      EncryptJwe(AsBytes("m"), std::vector<JweRecipient>{{nullptr, JweKeyAlgorithm::kRsaOaep}});
  EXPECT_FALSE(null_key.ok());
}

TEST(JweEncrypt, DefaultAlgorithmsAreOcicrypts) {
  EXPECT_EQ(DefaultJweKeyAlgorithm(Pub(RsaKeyFiles(2048))), JweKeyAlgorithm::kRsaOaep);
  EXPECT_EQ(DefaultJweKeyAlgorithm(Pub(EcKeyFiles("P-384"))), JweKeyAlgorithm::kEcdhEsA256kw);
}

TEST(JweEncrypt, EmptyPlaintextRoundTrips) {
  PublicKey ec = Pub(EcKeyFiles("P-256"));
  auto jwe = EncryptJwe({}, std::vector<JweRecipient>{{&ec, JweKeyAlgorithm::kEcdhEsA256kw}});
  ASSERT_TRUE(jwe.ok());
  auto plain = DecryptJwe(*jwe, Priv(EcKeyFiles("P-256")));
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->size(), 0u);
}

// The committed fuzz seeds are real JWEs: they must stay decryptable with the fuzz keys.
TEST(JweFuzzSeeds, SeedsDecryptWithTheFuzzKeys) {
  auto dir = testing::SourceDir() / "fuzz_corpus" / "jwe";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  auto rsa = PrivateKey::Parse(AsBytes(testdata::kFuzzRsa2048Pem), std::nullopt, "fuzz rsa");
  auto ec = PrivateKey::Parse(AsBytes(testdata::kFuzzP256Pem), std::nullopt, "fuzz p256");
  ASSERT_TRUE(rsa.ok() && ec.ok());
  int decrypted = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string text = testing::ReadFile(entry.path());
    auto a = DecryptJwe(text, *rsa);
    auto b = DecryptJwe(text, *ec);
    if (!a.ok() && !b.ok()) continue;
    ++decrypted;
    auto options = ParsePrivateLayerOptions(AsStringView((a.ok() ? *a : *b).span()));
    EXPECT_TRUE(options.ok()) << entry.path() << ": " << options.status().ToString();
  }
  // Ours in flattened, general and compact form, and two written by skopeo.
  EXPECT_GE(decrypted, 7);
}

}  // namespace
}  // namespace lazycrypt::keywrap
