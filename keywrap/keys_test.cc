#include "keywrap/keys.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "keywrap/test_util.h"

namespace lazycrypt::keywrap {
namespace {

using testing::EcKeyFiles;
using testing::RsaKeyFiles;
using testing::RunOk;
using testing::TempDir;

bool SameKey(EVP_PKEY* a, EVP_PKEY* b) { return EVP_PKEY_eq(a, b) == 1; }

void ExpectRsa2048(const Result<PrivateKey>& key, const std::string& label) {
  ASSERT_TRUE(key.ok()) << label << ": " << key.status().ToString();
  EXPECT_EQ(key->kind(), KeyKind::kRsa) << label;
  EXPECT_EQ(key->bits(), 2048) << label;
  EXPECT_TRUE(key->curve().empty()) << label;
}

class PrivateKeyFormats : public ::testing::Test {
 protected:
  void SetUp() override {
    pkcs8_ = RsaKeyFiles(2048).private_pem;
    auto base = [&](const char* n) { return (dir_ / n).string(); };
    pkcs1_ = base("pkcs1.pem");
    pkcs1_der_ = base("pkcs1.der");
    pkcs8_der_ = base("pkcs8.der");
    encrypted_ = base("encrypted-pkcs8.pem");
    encrypted_der_ = base("encrypted-pkcs8.der");
    legacy_ = base("legacy-encrypted.pem");
    RunOk({"openssl", "rsa", "-in", pkcs8_.string(), "-traditional", "-out", pkcs1_});
    RunOk({"openssl", "rsa", "-in", pkcs8_.string(), "-traditional", "-outform", "DER", "-out",
           pkcs1_der_});
    RunOk({"openssl", "pkcs8", "-topk8", "-nocrypt", "-in", pkcs8_.string(), "-outform", "DER",
           "-out", pkcs8_der_});
    RunOk({"openssl", "pkcs8", "-topk8", "-in", pkcs8_.string(), "-v2", "aes-256-cbc", "-passout",
           std::string("pass:") + "secret", "-out", encrypted_});
    RunOk({"openssl", "pkcs8", "-topk8", "-in", pkcs8_.string(), "-v2", "aes-256-cbc", "-passout",
           "pass:secret", "-outform", "DER", "-out", encrypted_der_});
    RunOk({"openssl", "rsa", "-in", pkcs8_.string(), "-traditional", "-aes256", "-passout",
           "pass:secret", "-out", legacy_});
    ASSERT_NE(testing::ReadFile(pkcs1_).find("BEGIN RSA PRIVATE KEY"), std::string::npos);
    ASSERT_NE(testing::ReadFile(encrypted_).find("BEGIN ENCRYPTED PRIVATE KEY"), std::string::npos);
    ASSERT_NE(testing::ReadFile(legacy_).find("Proc-Type: 4,ENCRYPTED"), std::string::npos);
    auto reference = PrivateKey::Load(pkcs8_.string());
    ASSERT_TRUE(reference.ok()) << reference.status().ToString();
    reference_ = std::make_unique<PrivateKey>(std::move(*reference));
  }

  void ExpectSameAsReference(const Result<PrivateKey>& key, const std::string& label) {
    ExpectRsa2048(key, label);
    if (key.ok()) {
      EXPECT_TRUE(SameKey(key->evp_pkey(), reference_->evp_pkey())) << label;
    }
  }

  TempDir dir_;
  std::filesystem::path pkcs8_;
  std::string pkcs1_, pkcs1_der_, pkcs8_der_, encrypted_, encrypted_der_, legacy_;
  std::unique_ptr<PrivateKey> reference_;
};

TEST_F(PrivateKeyFormats, LoadsPlainRsaInEveryEncoding) {
  ExpectSameAsReference(PrivateKey::Load(pkcs1_), "PKCS#1 PEM");
  ExpectSameAsReference(PrivateKey::Load(pkcs1_der_), "PKCS#1 DER");
  ExpectSameAsReference(PrivateKey::Load(pkcs8_der_), "PKCS#8 DER");
}

TEST_F(PrivateKeyFormats, LoadsEncryptedKeysWithPathColonPassword) {
  ExpectSameAsReference(PrivateKey::Load(encrypted_ + ":secret"), "encrypted PKCS#8 PEM");
  ExpectSameAsReference(PrivateKey::Load(encrypted_der_ + ":secret"), "encrypted PKCS#8 DER");
  ExpectSameAsReference(PrivateKey::Load(legacy_ + ":secret"), "legacy encrypted PEM");
  ExpectSameAsReference(PrivateKey::Load(encrypted_ + ":pass=secret"), "pass= form");
}

TEST_F(PrivateKeyFormats, PasswordFromFileIsTheWholeFileAsInOcicrypt) {
  auto exact = dir_ / "pw";
  auto with_newline = dir_ / "pw-newline";
  testing::WriteFile(exact, "secret");
  testing::WriteFile(with_newline, "secret\n");
  for (const auto& pw : {exact, with_newline}) {  // password files are secrets too
    std::filesystem::permissions(pw, std::filesystem::perms::owner_read,
                                 std::filesystem::perm_options::replace);
  }
  ExpectSameAsReference(PrivateKey::Load(encrypted_ + ":file=" + exact.string()), "file=");
  auto key = PrivateKey::Load(encrypted_ + ":file=" + with_newline.string());
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), StatusCode::kPermissionDenied);
}

TEST_F(PrivateKeyFormats, PasswordFromDescriptorIsReadOnceAndClosed) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "secret", 6), 6);
  ::close(fds[1]);
  ExpectSameAsReference(PrivateKey::Load(encrypted_ + ":fd=" + std::to_string(fds[0])), "fd=");
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1) << "the descriptor should have been closed";
  auto bad = PrivateKey::Load(encrypted_ + ":fd=x1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(PrivateKeyFormats, EncryptedKeyWithoutPasswordNamesTheFix) {
  auto key = PrivateKey::Load(encrypted_);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(key.status().message(), encrypted_ + ": encrypted private key needs a password (use " +
                                        encrypted_ + ":password)");
  auto legacy = PrivateKey::Load(legacy_);
  ASSERT_FALSE(legacy.ok());
  EXPECT_NE(legacy.status().message().find("needs a password"), std::string::npos);
}

TEST_F(PrivateKeyFormats, WrongPasswordIsNamed) {
  for (const auto& spec : {encrypted_ + ":wrong", legacy_ + ":wrong", encrypted_ + ":"}) {
    auto key = PrivateKey::Load(spec);
    ASSERT_FALSE(key.ok()) << spec;
    EXPECT_EQ(key.status().code(), StatusCode::kPermissionDenied) << spec;
    EXPECT_NE(key.status().message().find("wrong password"), std::string::npos) << spec;
    EXPECT_EQ(key.status().message().find("wrong:"), std::string::npos) << "password echoed";
  }
}

TEST_F(PrivateKeyFormats, MoreThanOneColonMeansNoPasswordAsInOcicrypt) {
  // strings.Split(spec, ":") with three parts: ocicrypt uses the first part, without password.
  ExpectSameAsReference(PrivateKey::Load(pkcs1_ + ":a:b"), "plain key, two colons");
  auto encrypted = PrivateKey::Load(encrypted_ + ":sec:ret");
  ASSERT_FALSE(encrypted.ok());
  EXPECT_NE(encrypted.status().message().find("needs a password"), std::string::npos);
}

TEST_F(PrivateKeyFormats, LoadFileTakesAnExplicitPassword) {
  std::string password = "secret";
  ExpectSameAsReference(PrivateKey::LoadFile(encrypted_, AsBytes(password)), "LoadFile");
  auto none = PrivateKey::LoadFile(encrypted_, std::nullopt);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
}

TEST(PrivateKey, LoadsEcKeysOnEveryCurveInSec1AndPkcs8) {
  TempDir dir;
  for (const char* curve : {"P-256", "P-384", "P-521"}) {
    const auto& files = EcKeyFiles(curve);
    ASSERT_NE(testing::ReadFile(files.private_pem).find("BEGIN EC PRIVATE KEY"), std::string::npos);
    auto pkcs8 = dir / (std::string(curve) + ".p8");
    auto sec1_der = dir / (std::string(curve) + ".der");
    RunOk({"openssl", "pkcs8", "-topk8", "-nocrypt", "-in", files.private_pem.string(), "-out",
           pkcs8.string()});
    RunOk({"openssl", "ec", "-in", files.private_pem.string(), "-outform", "DER", "-out",
           sec1_der.string()});
    int bits = std::string(curve) == "P-256" ? 256 : std::string(curve) == "P-384" ? 384 : 521;
    for (const auto& path : {files.private_pem, pkcs8, sec1_der}) {
      auto key = PrivateKey::Load(path.string());
      ASSERT_TRUE(key.ok()) << path << ": " << key.status().ToString();
      EXPECT_EQ(key->kind(), KeyKind::kEc);
      EXPECT_EQ(key->curve(), curve);
      EXPECT_EQ(key->bits(), bits);
      EXPECT_EQ(key->name(), path.string());
    }
  }
}

TEST(PrivateKey, PublicMatchesThePublicKeyFile) {
  for (const auto* files : {&RsaKeyFiles(2048), &EcKeyFiles("P-384")}) {
    auto priv = PrivateKey::Load(files->private_pem.string());
    auto pub = PublicKey::Load(files->public_pem);
    ASSERT_TRUE(priv.ok() && pub.ok());
    auto derived = priv->Public();
    ASSERT_TRUE(derived.ok()) << derived.status().ToString();
    EXPECT_TRUE(SameKey(derived->evp_pkey(), pub->evp_pkey()));
    EXPECT_EQ(derived->kind(), pub->kind());
    EXPECT_EQ(derived->curve(), pub->curve());
  }
}

TEST(PrivateKey, RejectsNonKeysAndPublicKeys) {
  TempDir dir;
  auto garbage = dir / "garbage.pem";
  testing::WriteFile(garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  auto key = PrivateKey::Load(garbage.string());
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(key.status().message(),
            garbage.string() + ": not a private key (PEM or DER; PKCS#1, PKCS#8, SEC1)");

  auto pub = PrivateKey::Load(RsaKeyFiles(2048).public_pem.string());
  ASSERT_FALSE(pub.ok());
  EXPECT_NE(pub.status().message().find("is a public key"), std::string::npos)
      << pub.status().ToString();

  auto missing = PrivateKey::Load((dir / "missing.pem").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing.pem"), std::string::npos);

  auto empty = PrivateKey::Parse({}, std::nullopt, "empty");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
}

TEST(PrivateKey, RejectsKeyTypesJweCannotUse) {
  TempDir dir;
  auto ed = dir / "ed25519.pem";
  auto k1 = dir / "secp256k1.pem";
  auto small = dir / "rsa512.pem";
  RunOk({"openssl", "genpkey", "-algorithm", "ED25519", "-out", ed.string()});
  RunOk({"openssl", "ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", k1.string()});
  RunOk({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out",
         small.string()});
  auto e = PrivateKey::Load(ed.string());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(e.status().message().find("ED25519"), std::string::npos) << e.status().ToString();
  auto c = PrivateKey::Load(k1.string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(c.status().message().find("secp256k1"), std::string::npos) << c.status().ToString();
  auto s = PrivateKey::Load(small.string());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(s.status().message().find("512"), std::string::npos);
}

TEST(PublicKey, LoadsSpkiPemPkcs1PemAndSpkiDer) {
  TempDir dir;
  const auto& files = RsaKeyFiles(2048);
  auto pkcs1 = dir / "rsa-pkcs1.pub";
  auto der = dir / "rsa.pub.der";
  RunOk({"openssl", "rsa", "-in", files.private_pem.string(), "-RSAPublicKey_out", "-out",
         pkcs1.string()});
  RunOk({"openssl", "pkey", "-in", files.private_pem.string(), "-pubout", "-outform", "DER", "-out",
         der.string()});
  ASSERT_NE(testing::ReadFile(pkcs1).find("BEGIN RSA PUBLIC KEY"), std::string::npos);
  auto spki = PublicKey::Load(files.public_pem);
  ASSERT_TRUE(spki.ok()) << spki.status().ToString();
  EXPECT_EQ(spki->kind(), KeyKind::kRsa);
  EXPECT_EQ(spki->bits(), 2048);
  for (const auto& path : {pkcs1, der}) {
    auto key = PublicKey::Load(path);
    ASSERT_TRUE(key.ok()) << path << ": " << key.status().ToString();
    EXPECT_TRUE(SameKey(key->evp_pkey(), spki->evp_pkey())) << path;
  }
  auto ec = PublicKey::Load(EcKeyFiles("P-521").public_pem);
  ASSERT_TRUE(ec.ok()) << ec.status().ToString();
  EXPECT_EQ(ec->kind(), KeyKind::kEc);
  EXPECT_EQ(ec->curve(), "P-521");
}

TEST(PublicKey, RejectsPrivateKeysAndGarbageByName) {
  auto priv = PublicKey::Load(RsaKeyFiles(2048).private_pem);
  ASSERT_FALSE(priv.ok());
  EXPECT_EQ(priv.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(priv.status().message().find("is a private key"), std::string::npos)
      << priv.status().ToString();
  auto garbage = PublicKey::Parse(AsBytes("not a key"), "recipient.pem");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().message(),
            "recipient.pem: not a public key (PEM or DER SubjectPublicKeyInfo, or PEM PKCS#1 "
            "RSA PUBLIC KEY)");
}

TEST(PublicKey, TruncatedPemIsRejected) {
  std::string pem = testing::ReadFile(RsaKeyFiles(2048).public_pem);
  for (size_t cut : {pem.size() / 2, pem.size() - 30, size_t{40}}) {
    auto key = PublicKey::Parse(AsBytes(std::string_view(pem).substr(0, cut)), "cut.pem");
    EXPECT_FALSE(key.ok()) << cut;
  }
}

}  // namespace
}  // namespace lazycrypt::keywrap
