// Interop with the real ocicrypt, through skopeo: skopeo encrypts a small OCI image (built with
// umoci) for RSA and EC keys and lazycrypt unwraps the layer key; then lazycrypt rewraps that key
// for other recipients and skopeo decrypts the image with them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "crypto/digest.h"
#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/jwe.h"
#include "keywrap/test_util.h"

namespace lazycrypt::keywrap {
namespace {

using nlohmann::json;
using testing::EcKeyFiles;
using testing::ReadFile;
using testing::RsaKeyFiles;
using testing::RunOk;
using testing::TempDir;
using testing::WriteFile;

constexpr char kTag[] = "t";

std::filesystem::path BlobPath(const std::filesystem::path& layout, std::string_view digest) {
  EXPECT_EQ(digest.substr(0, 7), "sha256:");
  return layout / "blobs" / "sha256" / std::string(digest.substr(7));
}

bool IsTagged(const json& descriptor) {
  return descriptor.value("annotations", json::object())
             .value("org.opencontainers.image.ref.name", "") == kTag;
}

json ReadManifest(const std::filesystem::path& layout) {
  json index = json::parse(ReadFile(layout / "index.json"));
  for (const auto& m : index["manifests"]) {
    if (IsTagged(m)) {
      return json::parse(ReadFile(BlobPath(layout, m["digest"].get<std::string>())));
    }
  }
  ADD_FAILURE() << "no manifest tagged " << kTag << " in " << layout;
  return json::object();
}

std::string Sha256Digest(std::string_view bytes) {
  return crypto::OciDigest(crypto::Sha256::Of(AsBytes(bytes)));
}

// Replaces the tagged manifest of an OCI layout (content-addressed: new blob, new index entry).
void WriteManifest(const std::filesystem::path& layout, const json& manifest) {
  std::string text = manifest.dump();
  std::string digest = Sha256Digest(text);
  WriteFile(BlobPath(layout, digest), text);
  json index = json::parse(ReadFile(layout / "index.json"));
  for (auto& m : index["manifests"]) {
    if (IsTagged(m)) {
      m["digest"] = digest;
      m["size"] = text.size();
    }
  }
  WriteFile(layout / "index.json", index.dump());
}

class SkopeoInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    plain_ = dir_ / "plain";
    auto bundle = dir_ / "bundle";
    std::string ref = plain_.string() + ":" + kTag;
    ASSERT_TRUE(RunOk({"umoci", "init", "--layout", plain_.string()}));
    ASSERT_TRUE(RunOk({"umoci", "new", "--image", ref}));
    ASSERT_TRUE(RunOk({"umoci", "unpack", "--rootless", "--image", ref, bundle.string()}));
    auto rootfs = bundle / "rootfs";
    std::filesystem::create_directories(rootfs / "etc");
    WriteFile(rootfs / "etc" / "motd", "lazycrypt keywrap interop test\n");
    WriteFile(rootfs / "data.bin", std::string(100000, 'z') + "tail");
    ASSERT_TRUE(RunOk({"umoci", "repack", "--image", ref, bundle.string()}));
    json manifest = ReadManifest(plain_);
    ASSERT_EQ(manifest["layers"].size(), 1u);
    plain_layer_ = manifest["layers"][0];
  }

  // skopeo copy --encryption-key jwe:<pub> ... for every given public key file.
  std::filesystem::path Encrypt(const std::string& name,
                                const std::vector<std::filesystem::path>& public_keys) {
    auto out = dir_ / name;
    std::vector<std::string> argv = {"skopeo", "copy"};
    for (const auto& k : public_keys) {
      argv.push_back("--encryption-key");
      argv.push_back("jwe:" + k.string());
    }
    argv.push_back("oci:" + plain_.string() + ":" + kTag);
    argv.push_back("oci:" + out.string() + ":" + kTag);
    RunOk(argv);
    return out;
  }

  // Checks the encrypted layer skopeo wrote and returns its annotations.
  json CheckEncryptedLayer(const std::filesystem::path& layout) {
    json manifest = ReadManifest(layout);
    EXPECT_EQ(manifest["layers"].size(), 1u);
    json layer = manifest["layers"][0];
    EXPECT_EQ(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip+encrypted");
    std::string blob = ReadFile(BlobPath(layout, layer["digest"].get<std::string>()));
    EXPECT_EQ(blob.size(), layer["size"].get<size_t>());
    EXPECT_EQ(Sha256Digest(blob), layer["digest"]);
    // AES-CTR does not change the size; the digest of course changes.
    EXPECT_EQ(layer["size"], plain_layer_["size"]);
    EXPECT_NE(layer["digest"], plain_layer_["digest"]);
    EXPECT_TRUE(layer["annotations"].contains(std::string(kJweKeysAnnotation)));
    EXPECT_TRUE(layer["annotations"].contains(std::string(kPubOptsAnnotation)));
    return layer["annotations"];
  }

  void CheckUnwrapped(const json& annotations, const std::vector<PrivateKey>& keys) {
    std::string value = annotations[std::string(kJweKeysAnnotation)].get<std::string>();
    auto opts = UnwrapLayerKeys(value, keys);
    ASSERT_TRUE(opts.ok()) << opts.status().ToString();
    EXPECT_EQ(opts->symkey.size(), 32u);
    EXPECT_EQ(opts->digest, plain_layer_["digest"].get<std::string>());
    ASSERT_TRUE(opts->cipher_options.count("nonce"));
    EXPECT_EQ(opts->cipher_options.at("nonce").size(), 16u);

    // Our Go encoding/json emulation reproduces ocicrypt's privopts byte for byte.
    auto jwe = Base64Decode(value);
    ASSERT_TRUE(jwe.ok());
    auto plaintext = DecryptJwe(AsStringView(*jwe), keys.back());
    ASSERT_TRUE(plaintext.ok()) << plaintext.status().ToString();
    auto ours = SerializePrivateLayerOptions(*opts);
    ASSERT_TRUE(ours.ok());
    EXPECT_EQ(AsStringView(ours->span()), AsStringView(plaintext->span()));

    auto pub =
        DecodePubOptsAnnotation(annotations[std::string(kPubOptsAnnotation)].get<std::string>());
    ASSERT_TRUE(pub.ok()) << pub.status().ToString();
    EXPECT_EQ(pub->cipher, kOcicryptAes256CtrCipher);
    EXPECT_EQ(pub->hmac.size(), 32u);
  }

  static PrivateKey Priv(const std::filesystem::path& path) {
    auto key = PrivateKey::Load(path.string());
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return std::move(*key);
  }
  static PublicKey Pub(const std::filesystem::path& path) {
    auto key = PublicKey::Load(path);
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return std::move(*key);
  }

  void UnwrapSingleRecipient(const testing::KeyPairFiles& files, const char* expected_alg) {
    auto enc = Encrypt("enc-" + files.public_pem.stem().string(), {files.public_pem});
    json annotations = CheckEncryptedLayer(enc);
    std::vector<PrivateKey> keys;
    keys.push_back(Priv(files.private_pem));
    CheckUnwrapped(annotations, keys);
    // go-jose's flattened serialization with alg in the protected header.
    auto jwe = Base64Decode(annotations[std::string(kJweKeysAnnotation)].get<std::string>());
    ASSERT_TRUE(jwe.ok());
    json j = json::parse(AsStringView(*jwe));
    EXPECT_FALSE(j.contains("recipients"));
    auto header = Base64UrlDecode(j["protected"].get<std::string>());
    ASSERT_TRUE(header.ok());
    json h = json::parse(AsStringView(*header));
    EXPECT_EQ(h["alg"], expected_alg);
    EXPECT_EQ(h["enc"], "A256GCM");

    std::vector<PrivateKey> wrong;
    wrong.push_back(Priv(files.private_pem.string().find("ec-") != std::string::npos
                             ? testing::OtherEcKeyFiles().private_pem
                             : testing::OtherRsaKeyFiles().private_pem));
    auto none =
        UnwrapLayerKeys(annotations[std::string(kJweKeysAnnotation)].get<std::string>(), wrong);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  }

  // Replaces the layer's JWE annotation with one we wrap for `recipients`, then lets skopeo
  // decrypt the image with `decryption_key`. Returns skopeo's exit status.
  int RewrapAndDecryptWithSkopeo(const std::filesystem::path& enc, const PrivateLayerOptions& opts,
                                 const std::vector<std::filesystem::path>& recipients,
                                 const std::filesystem::path& decryption_key,
                                 const std::string& out_name, std::string* output) {
    std::vector<PublicKey> keys;
    for (const auto& r : recipients) keys.push_back(Pub(r));
    auto wrapped = WrapLayerKeys(opts, keys);
    EXPECT_TRUE(wrapped.ok()) << wrapped.status().ToString();
    if (!wrapped.ok()) return -1;
    json manifest = ReadManifest(enc);
    manifest["layers"][0]["annotations"][std::string(kJweKeysAnnotation)] = *wrapped;
    WriteManifest(enc, manifest);
    auto out = dir_ / out_name;
    return testing::Run({"skopeo", "copy", "--decryption-key", decryption_key.string(),
                         "oci:" + enc.string() + ":" + kTag, "oci:" + out.string() + ":" + kTag},
                        output);
  }

  // ocicrypt reads EC private keys as PKCS#8 PEM or DER only (its PEM path never tries SEC1),
  // so skopeo gets a PKCS#8 copy of the SEC1 files the tests generate.
  std::filesystem::path Pkcs8Copy(const std::filesystem::path& sec1) {
    auto out = dir_ / (sec1.stem().string() + ".p8.pem");
    RunOk({"openssl", "pkcs8", "-topk8", "-nocrypt", "-in", sec1.string(), "-out", out.string()});
    return out;
  }

  void CheckDecryptedBySkopeo(const std::filesystem::path& layout) {
    json manifest = ReadManifest(layout);
    ASSERT_EQ(manifest["layers"].size(), 1u);
    json layer = manifest["layers"][0];
    EXPECT_EQ(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    EXPECT_EQ(layer["digest"], plain_layer_["digest"]);
    EXPECT_EQ(ReadFile(BlobPath(layout, layer["digest"].get<std::string>())),
              ReadFile(BlobPath(plain_, plain_layer_["digest"].get<std::string>())));
  }

  TempDir dir_;
  std::filesystem::path plain_;
  json plain_layer_;
};

TEST_F(SkopeoInterop, UnwrapsSkopeoJweForRsa2048) {
  UnwrapSingleRecipient(RsaKeyFiles(2048), "RSA-OAEP");
}

TEST_F(SkopeoInterop, UnwrapsSkopeoJweForRsa4096) {
  UnwrapSingleRecipient(RsaKeyFiles(4096), "RSA-OAEP");
}

TEST_F(SkopeoInterop, UnwrapsSkopeoJweForEcP256) {
  UnwrapSingleRecipient(EcKeyFiles("P-256"), "ECDH-ES+A256KW");
}

TEST_F(SkopeoInterop, UnwrapsSkopeoJweForEcP384AndP521) {
  UnwrapSingleRecipient(EcKeyFiles("P-384"), "ECDH-ES+A256KW");
  UnwrapSingleRecipient(EcKeyFiles("P-521"), "ECDH-ES+A256KW");
}

TEST_F(SkopeoInterop, UnwrapsSkopeoMultiRecipientJweWithEachKey) {
  auto enc = Encrypt("enc", {RsaKeyFiles(2048).public_pem, EcKeyFiles("P-256").public_pem,
                             RsaKeyFiles(4096).public_pem});
  json annotations = CheckEncryptedLayer(enc);
  auto jwe = Base64Decode(annotations[std::string(kJweKeysAnnotation)].get<std::string>());
  ASSERT_TRUE(jwe.ok());
  json j = json::parse(AsStringView(*jwe));
  ASSERT_EQ(j["recipients"].size(), 3u);
  // go-jose's general serialization keeps a top-level copy of the first encrypted key.
  EXPECT_EQ(j["encrypted_key"], j["recipients"][0]["encrypted_key"]);
  for (const auto* files : {&RsaKeyFiles(2048), &EcKeyFiles("P-256"), &RsaKeyFiles(4096)}) {
    std::vector<PrivateKey> keys;
    keys.push_back(Priv(files->private_pem));
    CheckUnwrapped(annotations, keys);
  }
}

TEST_F(SkopeoInterop, SkopeoDecryptsWhatWeWrapForRsa) {
  auto enc = Encrypt("enc", {RsaKeyFiles(2048).public_pem});
  std::vector<PrivateKey> keys;
  keys.push_back(Priv(RsaKeyFiles(2048).private_pem));
  auto opts = UnwrapLayerKeys(
      CheckEncryptedLayer(enc)[std::string(kJweKeysAnnotation)].get<std::string>(), keys);
  ASSERT_TRUE(opts.ok()) << opts.status().ToString();

  const auto& other = testing::OtherRsaKeyFiles();
  std::string output;
  ASSERT_EQ(
      RewrapAndDecryptWithSkopeo(enc, *opts, {other.public_pem}, other.private_pem, "dec", &output),
      0)
      << output;
  CheckDecryptedBySkopeo(dir_ / "dec");
  // The original recipient is gone: skopeo really used our JWE.
  int rc = testing::Run(
      {"skopeo", "copy", "--decryption-key", RsaKeyFiles(2048).private_pem,
       "oci:" + enc.string() + ":" + kTag, "oci:" + (dir_ / "dec2").string() + ":" + kTag},
      &output);
  EXPECT_NE(rc, 0) << output;
}

TEST_F(SkopeoInterop, SkopeoDecryptsWhatWeWrapForSeveralRecipients) {
  auto enc = Encrypt("enc", {EcKeyFiles("P-256").public_pem});
  std::vector<PrivateKey> keys;
  keys.push_back(Priv(EcKeyFiles("P-256").private_pem));
  auto opts = UnwrapLayerKeys(
      CheckEncryptedLayer(enc)[std::string(kJweKeysAnnotation)].get<std::string>(), keys);
  ASSERT_TRUE(opts.ok()) << opts.status().ToString();

  // General serialization: an RSA-4096 recipient, a P-384 and a P-521 one; skopeo decrypts with
  // each EC key (the second and third recipients).
  std::vector<std::filesystem::path> recipients = {
      RsaKeyFiles(4096).public_pem, EcKeyFiles("P-384").public_pem, EcKeyFiles("P-521").public_pem};
  std::string output;
  ASSERT_EQ(
      RewrapAndDecryptWithSkopeo(enc, *opts, recipients, Pkcs8Copy(EcKeyFiles("P-384").private_pem),
                                 "dec384", &output),
      0)
      << output;
  CheckDecryptedBySkopeo(dir_ / "dec384");
  ASSERT_EQ(
      RewrapAndDecryptWithSkopeo(enc, *opts, recipients, Pkcs8Copy(EcKeyFiles("P-521").private_pem),
                                 "dec521", &output),
      0)
      << output;
  CheckDecryptedBySkopeo(dir_ / "dec521");
  ASSERT_EQ(
      RewrapAndDecryptWithSkopeo(enc, *opts, {EcKeyFiles("P-256").public_pem},
                                 Pkcs8Copy(EcKeyFiles("P-256").private_pem), "dec256", &output),
      0)
      << output;
  CheckDecryptedBySkopeo(dir_ / "dec256");
}

TEST_F(SkopeoInterop, SkopeoRejectsOurJweWhenTampered) {
  auto enc = Encrypt("enc", {RsaKeyFiles(2048).public_pem});
  std::vector<PrivateKey> keys;
  keys.push_back(Priv(RsaKeyFiles(2048).private_pem));
  auto opts = UnwrapLayerKeys(
      CheckEncryptedLayer(enc)[std::string(kJweKeysAnnotation)].get<std::string>(), keys);
  ASSERT_TRUE(opts.ok());
  // A wrong layer key: skopeo unwraps it fine, but the layer HMAC check must fail.
  PrivateLayerOptions wrong;
  wrong.symkey = crypto::SecureBuffer(32);
  wrong.digest = opts->digest;
  wrong.cipher_options = opts->cipher_options;
  std::string output;
  int rc = RewrapAndDecryptWithSkopeo(enc, wrong, {RsaKeyFiles(2048).public_pem},
                                      RsaKeyFiles(2048).private_pem, "dec", &output);
  EXPECT_NE(rc, 0) << output;
}

}  // namespace
}  // namespace lazycrypt::keywrap
