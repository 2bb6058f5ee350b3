// Interop with the real skopeo (ocicrypt inside), both directions, for RSA 2048, RSA 4096 and
// EC P-256 key pairs made by `openssl genpkey`:
//  - skopeo encrypts (AES_256_CTR_HMAC_SHA256, JWE-wrapped keys); lazycrypt unwraps, decrypts with
//    the HMAC verified and gets back exactly the original layer blob;
//  - lazycrypt encrypts in ocicrypt format; skopeo decrypts and gets back exactly the original.
// And the failure paths: wrong keys and tampered ciphertext are named errors that write nothing.
// Through a real docker-registry too: skopeo encrypts into it and lazycrypt decrypts from it; and
// lazycrypt's own format in a registry, which skopeo inspects but cannot decrypt (documented below).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "image/convert.h"
#include "image/envelope.h"
#include "image/layer.h"
#include "image/layout.h"
#include "keywrap/base64.h"
#include "keywrap/keys.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

void SkopeoEncrypt(const fs::path& src, const fs::path& dst, const fs::path& pub) {
  auto r = RunCommand("skopeo copy -q --encryption-key " + ShellQuote("jwe:" + pub.string()) +
                      " " + ShellQuote("oci:" + src.string() + ":latest") + " " +
                      ShellQuote("oci:" + dst.string() + ":latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

std::vector<keywrap::PrivateKey> LoadPrivateKeys(const std::vector<fs::path>& paths) {
  std::vector<keywrap::PrivateKey> keys;
  for (const auto& p : paths) {
    auto k = keywrap::PrivateKey::Load(p.string());
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    if (k.ok()) keys.push_back(std::move(k).value());
  }
  return keys;
}

// Layers equal in media type, digest and size, and their blob files byte-identical.
void ExpectSameLayers(const fs::path& a_dir, const fs::path& b_dir) {
  image::LoadedImage a = LoadLayoutImage(a_dir);
  image::LoadedImage b = LoadLayoutImage(b_dir);
  ASSERT_EQ(a.manifest.layers.size(), b.manifest.layers.size());
  ASSERT_FALSE(a.manifest.layers.empty());
  for (size_t i = 0; i < a.manifest.layers.size(); ++i) {
    const auto& la = a.manifest.layers[i];
    const auto& lb = b.manifest.layers[i];
    EXPECT_EQ(la.media_type, lb.media_type) << "layer " << i;
    EXPECT_EQ(la.digest, lb.digest) << "layer " << i;
    EXPECT_EQ(la.size, lb.size) << "layer " << i;
    EXPECT_EQ(ReadFileString(BlobPath(a_dir, la.digest)), ReadFileString(BlobPath(b_dir, lb.digest)))
        << "layer " << i;
  }
  EXPECT_EQ(a.config.diff_ids, b.config.diff_ids);
}

// Replaces layer `index` of the image tagged latest with `bytes` (descriptor digest and size
// updated, manifest and index.json rewritten): a consistent layout around a tampered blob.
void ReaddressLayer(const fs::path& dir, size_t index, const std::string& bytes) {
  image::LoadedImage loaded = LoadLayoutImage(dir);
  auto writer = image::ImageWriter::Begin(dir);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  auto blob = (*writer)->PutBlob(loaded.manifest.layers[index].media_type, AsBytes(bytes));
  ASSERT_TRUE(blob.ok());
  image::Manifest m = loaded.manifest;
  m.layers[index].digest = blob->digest;
  m.layers[index].size = blob->size;
  auto manifest = (*writer)->PutBlob(std::string(image::kMediaTypeOciManifest),
                                     AsBytes(image::SerializeManifest(m)));
  ASSERT_TRUE(manifest.ok());
  ASSERT_TRUE((*writer)->Commit("latest", *manifest).ok());
}

class SkopeoInterop : public ::testing::TestWithParam<std::string> {};

TEST_P(SkopeoInterop, SkopeoEncryptedLayerDecryptsToTheOriginalBlob) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), GetParam());
  SkopeoEncrypt(tmp / "src", tmp / "enc", key.pub);

  image::LoadedImage src = LoadLayoutImage(tmp / "src");
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  ASSERT_EQ(enc.manifest.layers.size(), 1u);
  const image::Descriptor& original = src.manifest.layers[0];
  const image::Descriptor& encrypted = enc.manifest.layers[0];
  EXPECT_EQ(encrypted.media_type, std::string(image::kMediaTypeOcicryptLayerTarGzip));
  EXPECT_NE(encrypted.digest, original.digest);

  // Unwrap the JWE: ocicrypt's privopts for AES-CTR.
  auto keys = LoadPrivateKeys({key.priv});
  auto unwrapped = image::UnwrapPrivopts(encrypted.Annotation(image::kAnnotationEncKeysJwe), keys);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status().ToString();
  EXPECT_EQ(unwrapped->options.digest, original.digest);
  EXPECT_EQ(unwrapped->options.symkey.size(), 32u);
  ASSERT_TRUE(unwrapped->options.cipher_options.contains("nonce"));
  EXPECT_EQ(unwrapped->options.cipher_options.at("nonce").size(), 16u);
  EXPECT_EQ(unwrapped->key_name, key.priv.string());

  // Decrypt the blob: HMAC verified, digest equal to privopts' and to the source layer's, bytes
  // equal to the source blob.
  auto in = FdInputStream::Open(BlobPath(tmp / "enc", encrypted.digest));
  ASSERT_TRUE(in.ok());
  MemoryOutputStream plain;
  auto decrypted = image::DecryptOcicryptLayer(**in, encrypted, plain, keys);
  ASSERT_TRUE(decrypted.ok()) << decrypted.status().ToString();
  EXPECT_EQ(decrypted->original.digest, original.digest);
  EXPECT_EQ(decrypted->original.size, original.size);
  EXPECT_EQ(decrypted->original.media_type, original.media_type);
  EXPECT_TRUE(decrypted->original.annotations.empty());
  EXPECT_EQ(std::string(plain.bytes().begin(), plain.bytes().end()),
            ReadFileString(BlobPath(tmp / "src", original.digest)));

  // The whole image through the CLI.
  auto r = Lazycrypt("decrypt --key " + ShellQuote(key.priv.string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()) + " " +
                     ShellQuote("oci:" + (tmp / "dec").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("decrypted (ocicrypt)"));
  ExpectSameLayers(tmp / "src", tmp / "dec");
  image::LoadedImage dec = LoadLayoutImage(tmp / "dec");
  EXPECT_EQ(dec.manifest.config.digest, enc.manifest.config.digest);  // config untouched
  for (const auto& [k, v] : dec.manifest.layers[0].annotations) {
    EXPECT_FALSE(k.starts_with("org.opencontainers.image.enc.")) << k;
  }
}

TEST_P(SkopeoInterop, LazycryptOcicryptImageDecryptsWithSkopeo) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), GetParam());
  auto r = Lazycrypt("encrypt --format ocicrypt --recipient " + ShellQuote("jwe:" + key.pub.string()) +
                     " " + ShellQuote("oci:" + (tmp / "src").string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  ASSERT_EQ(enc.manifest.layers.size(), 1u);
  const image::Descriptor& layer = enc.manifest.layers[0];
  EXPECT_EQ(layer.media_type, std::string(image::kMediaTypeOcicryptLayerTarGzip));
  // pubopts exactly as ocicrypt writes it: {"cipher":..,"hmac":"<32 bytes b64>","cipheroptions":{}}
  auto pubopts = keywrap::Base64Decode(layer.Annotation(image::kAnnotationEncPubopts));
  ASSERT_TRUE(pubopts.ok());
  std::string pub_json(pubopts->begin(), pubopts->end());
  EXPECT_THAT(pub_json, ::testing::StartsWith(R"({"cipher":"AES_256_CTR_HMAC_SHA256","hmac":")"));
  EXPECT_THAT(pub_json, ::testing::EndsWith(R"(","cipheroptions":{}})"));
  auto pub = nlohmann::json::parse(pub_json);
  auto hmac = keywrap::Base64Decode(pub["hmac"].get<std::string>());
  ASSERT_TRUE(hmac.ok());
  EXPECT_EQ(hmac->size(), 32u);

  auto s = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(key.priv.string()) + " " +
                      ShellQuote("oci:" + (tmp / "enc").string() + ":latest") + " " +
                      ShellQuote("oci:" + (tmp / "dec").string() + ":latest"));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  ExpectSameLayers(tmp / "src", tmp / "dec");
}

INSTANTIATE_TEST_SUITE_P(Keys, SkopeoInterop, ::testing::Values("rsa2048", "rsa4096", "ec256"));

// `lazycrypt recipients add` appends one JWE per new recipient with a "kid" in its unprotected
// header: ocicrypt (skopeo) must still find the key in it; after `recipients remove` it must not.
TEST(SkopeoInteropRecipients, SkopeoDecryptsWithAnAddedRecipientUntilItIsRemoved) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair first = GenerateKeyPair(tmp.path(), "ec256", "first");
  KeyPair added = GenerateKeyPair(tmp.path(), "rsa2048", "added");
  auto oci = [&](const std::string& name) { return ShellQuote("oci:" + (tmp / name).string() + ":latest"); };
  auto r = Lazycrypt("encrypt --format ocicrypt -r " + ShellQuote("jwe:" + first.pub.string()) + " " +
                     oci("src") + " " + oci("enc"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto add = Lazycrypt("recipients add -k " + ShellQuote(first.priv.string()) + " -r " +
                       ShellQuote("jwe:" + added.pub.string()) + " " + oci("enc") + " " + oci("two"));
  ASSERT_EQ(add.exit_code, 0) << add.output;
  auto s = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(added.priv.string()) + " " +
                      oci("two") + " " + oci("dec"));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  ExpectSameLayers(tmp / "src", tmp / "dec");

  auto remove = Lazycrypt("recipients remove -k " + ShellQuote(first.priv.string()) + " -r " +
                          ShellQuote("jwe:" + added.pub.string()) + " " + oci("two") + " " + oci("one"));
  ASSERT_EQ(remove.exit_code, 0) << remove.output;
  auto denied = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(added.priv.string()) + " " +
                           oci("one") + " " + oci("dec2"));
  EXPECT_NE(denied.exit_code, 0) << denied.output;
  auto still = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(first.priv.string()) + " " +
                          oci("one") + " " + oci("dec3"));
  EXPECT_EQ(still.exit_code, 0) << still.output;
}

TEST(SkopeoInteropErrors, WrongKeysAreNamedAndNothingIsWritten) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair right = GenerateKeyPair(tmp.path(), "ec256", "right");
  KeyPair wrong_rsa = GenerateKeyPair(tmp.path(), "rsa2048", "wrong-rsa");
  KeyPair wrong_ec = GenerateKeyPair(tmp.path(), "ec256", "wrong-ec");
  SkopeoEncrypt(tmp / "src", tmp / "enc", right.pub);
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  std::string layer_name = image::LayerName(0, enc.manifest.layers[0]);

  auto r = Lazycrypt("decrypt --key " + ShellQuote(wrong_rsa.priv.string()) + " --key " +
                     ShellQuote(wrong_ec.priv.string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()) + " " +
                     ShellQuote("oci:" + (tmp / "dec").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("lazycrypt: " + layer_name + ": none of the keys [" +
                                  wrong_rsa.priv.string() + ", " + wrong_ec.priv.string() +
                                  "] is a recipient"));
  EXPECT_FALSE(fs::exists(tmp / "dec"));

  // Into an existing layout: it stays exactly as it was.
  MakeBusyboxImage(tmp / "existing");
  std::string index_before = ReadFileString(tmp / "existing" / "index.json");
  auto files_before = ListFiles(tmp / "existing");
  auto r2 = Lazycrypt("decrypt --key " + ShellQuote(wrong_ec.priv.string()) + " " +
                      ShellQuote("oci:" + (tmp / "enc").string()) + " " +
                      ShellQuote("oci:" + (tmp / "existing").string() + ":decrypted"));
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_EQ(ReadFileString(tmp / "existing" / "index.json"), index_before);
  EXPECT_EQ(ListFiles(tmp / "existing"), files_before);
}

TEST(SkopeoInteropErrors, TamperedCiphertextIsNamedAndNothingIsWritten) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), "rsa2048");
  SkopeoEncrypt(tmp / "src", tmp / "enc", key.pub);
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  const image::Descriptor layer = enc.manifest.layers[0];
  std::string decrypt = "decrypt --key " + ShellQuote(key.priv.string()) + " " +
                        ShellQuote("oci:" + (tmp / "enc").string()) + " " +
                        ShellQuote("oci:" + (tmp / "dec").string());

  // A flipped byte in the blob file: its digest no longer matches the descriptor.
  fs::path blob = BlobPath(tmp / "enc", layer.digest);
  std::string pristine = ReadFileString(blob);
  FlipBit(blob, pristine.size() / 2, 0x10);
  auto r = Lazycrypt(decrypt);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(image::LayerName(0, layer)));
  EXPECT_THAT(r.output, HasSubstr("digest mismatch"));
  EXPECT_FALSE(fs::exists(tmp / "dec"));

  // The same tampered bytes under a consistent descriptor: only the HMAC can tell.
  std::string tampered = ReadFileString(blob);
  WriteFileString(blob, pristine);
  ReaddressLayer(tmp / "enc", 0, tampered);
  image::LoadedImage readdressed = LoadLayoutImage(tmp / "enc");
  auto r2 = Lazycrypt(decrypt);
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_THAT(r2.output, HasSubstr(image::LayerName(0, readdressed.manifest.layers[0])));
  EXPECT_THAT(r2.output, HasSubstr("HMAC mismatch"));
  EXPECT_FALSE(fs::exists(tmp / "dec"));
}

TEST(SkopeoInteropErrors, SkopeoRejectsTamperedLazycryptOcicryptLayer) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), "ec256");
  auto r = Lazycrypt("encrypt --format ocicrypt -r " + ShellQuote("jwe:" + key.pub.string()) + " " +
                     ShellQuote("oci:" + (tmp / "src").string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  std::string bytes = ReadFileString(BlobPath(tmp / "enc", enc.manifest.layers[0].digest));
  bytes[bytes.size() / 3] ^= 0x01;
  ReaddressLayer(tmp / "enc", 0, bytes);
  auto s = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(key.priv.string()) + " " +
                      ShellQuote("oci:" + (tmp / "enc").string() + ":latest") + " " +
                      ShellQuote("oci:" + (tmp / "dec").string() + ":latest"));
  EXPECT_NE(s.exit_code, 0) << s.output;
  EXPECT_THAT(s.output, HasSubstr("could not properly decrypt byte stream"));
}

// --- through a registry --------------------------------------------------------------------------

class SkopeoRegistryInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeBusyboxImage(tmp_ / "src");
    key_ = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
  }
  std::string Ref(const std::string& tag) const {
    return "docker://" + registry_->host() + "/lazycrypt/busybox:" + tag;
  }
  std::string Oci(const std::string& name) const {
    return ShellQuote("oci:" + (tmp_ / name).string() + ":latest");
  }

  TempDir tmp_;
  KeyPair key_;
  std::unique_ptr<harness::RegistryProcess> registry_;
};

// skopeo encrypts straight into the registry (ocicrypt, AES-256-CTR + HMAC); lazycrypt decrypts
// from the registry into a layout and gets the original layer blob back, byte for byte.
TEST_F(SkopeoRegistryInterop, LazycryptDecryptsWhatSkopeoPushedEncrypted) {
  auto s = RunCommand("skopeo copy -q --dest-tls-verify=false --encryption-key " +
                      ShellQuote("jwe:" + key_.pub.string()) + " " + Oci("src") + " " +
                      ShellQuote(Ref("skopeo-enc")));
  ASSERT_EQ(s.exit_code, 0) << s.output << registry_->Log();
  auto info = Lazycrypt("inspect --json --plain-http " + ShellQuote(Ref("skopeo-enc")));
  ASSERT_EQ(info.exit_code, 0) << info.output;
  auto j = nlohmann::json::parse(info.output);
  EXPECT_EQ(j["layers"][0]["kind"], "ocicrypt");
  EXPECT_EQ(j["layers"][0]["mediaType"], std::string(image::kMediaTypeOcicryptLayerTarGzip));

  auto r = Lazycrypt("decrypt --plain-http --key " + ShellQuote(key_.priv.string()) + " " +
                     ShellQuote(Ref("skopeo-enc")) + " " + Oci("dec"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("decrypted (ocicrypt)"));
  ExpectSameLayers(tmp_ / "src", tmp_ / "dec");

  // And back into the registry, where skopeo (no key needed now) copies it out unchanged.
  auto back = Lazycrypt("decrypt --plain-http --key " + ShellQuote(key_.priv.string()) + " " +
                        ShellQuote(Ref("skopeo-enc")) + " " + ShellQuote(Ref("plain")));
  ASSERT_EQ(back.exit_code, 0) << back.output;
  auto out = RunCommand("skopeo copy -q --src-tls-verify=false " + ShellQuote(Ref("plain")) + " " +
                        Oci("pulled"));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  ExpectSameLayers(tmp_ / "src", tmp_ / "pulled");
}

// lazycrypt's format in a registry, seen by skopeo 1.9.3 (ocicrypt inside):
//  - `skopeo inspect` works: --raw prints our manifest (layer media type
//    application/vnd.oci.image.layer.v1.tar+lazycrypt+encrypted, the JWE, pubopts and TOC digest
//    annotations); the normal form shows the manifest digest and the layer digests (1.9.3 prints
//    no per-layer media types there);
//  - `skopeo copy --decryption-key priv.pem` fails with exit status 1. ocicrypt recognizes the
//    "+encrypted" layer, unwraps our JWE envelope with the key (it is ocicrypt's own), and then
//    stops at the cipher named in pubopts: "decrypting layer sha256:<digest>: unsupported cipher
//    type: LAZYCRYPT_GCM_V1". With a key that is not a recipient it stops earlier: "no suitable
//    key unwrapper found or none of the private keys could be used for decryption". It never
//    copies the encrypted layer through as if it were plain.
TEST_F(SkopeoRegistryInterop, SkopeoInspectsLazycryptImagesButCannotDecryptThem) {
  auto r = Lazycrypt("encrypt --quiet --plain-http -r " + ShellQuote("jwe:" + key_.pub.string()) +
                     " " + Oci("src") + " " + ShellQuote(Ref("lazy")));
  ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  ASSERT_THAT(r.output, ::testing::MatchesRegex("sha256:[0-9a-f]{64}\n"));
  const std::string manifest_digest = r.output.substr(0, 71);

  // skopeo inspect --raw: our manifest, byte for byte what lazycrypt pushed.
  auto raw = RunCommand("skopeo inspect --raw --tls-verify=false " + ShellQuote(Ref("lazy")));
  ASSERT_EQ(raw.exit_code, 0) << raw.output;
  EXPECT_EQ(PipelineSha256("skopeo inspect --raw --tls-verify=false " + ShellQuote(Ref("lazy"))),
            manifest_digest);
  auto m = nlohmann::json::parse(raw.output);
  ASSERT_EQ(m["layers"].size(), 1u);
  const auto& layer = m["layers"][0];
  EXPECT_EQ(layer["mediaType"], std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+lazycrypt+encrypted");
  const auto& annotations = layer["annotations"];
  EXPECT_TRUE(annotations.contains(std::string(image::kAnnotationEncKeysJwe))) << annotations;
  EXPECT_TRUE(annotations.contains(std::string(image::kAnnotationEncPubopts))) << annotations;
  EXPECT_THAT(annotations.value(std::string(image::kAnnotationLazycryptTocDigest), ""),
              ::testing::StartsWith("sha256:"));
  auto pubopts = keywrap::Base64Decode(annotations[std::string(image::kAnnotationEncPubopts)]
                                           .get<std::string>());
  ASSERT_TRUE(pubopts.ok());
  EXPECT_THAT(std::string(pubopts->begin(), pubopts->end()), HasSubstr("LAZYCRYPT_GCM_V1"));

  // skopeo inspect (normal form): the manifest digest and the layer digest.
  auto normal = RunCommand("skopeo inspect --tls-verify=false " + ShellQuote(Ref("lazy")));
  ASSERT_EQ(normal.exit_code, 0) << normal.output;
  auto n = nlohmann::json::parse(normal.output);
  EXPECT_EQ(n["Digest"], manifest_digest);
  EXPECT_EQ(n["Layers"], nlohmann::json::array({layer["digest"]}));

  // skopeo copy --decryption-key: fails at our cipher, after unwrapping the key.
  auto copy = RunCommand("skopeo copy -q --src-tls-verify=false --decryption-key " +
                         ShellQuote(key_.priv.string()) + " " + ShellQuote(Ref("lazy")) + " " +
                         Oci("out"));
  EXPECT_EQ(copy.exit_code, 1) << copy.output;
  EXPECT_THAT(copy.output, HasSubstr("decrypting layer " + layer["digest"].get<std::string>() +
                                     ": unsupported cipher type: LAZYCRYPT_GCM_V1"));
  // skopeo wrote no image (no index.json naming a manifest).
  EXPECT_FALSE(fs::exists(tmp_ / "out" / "index.json"));
  KeyPair stranger = GenerateKeyPair(tmp_.path(), "rsa2048", "stranger");
  auto denied = RunCommand("skopeo copy -q --src-tls-verify=false --decryption-key " +
                           ShellQuote(stranger.priv.string()) + " " + ShellQuote(Ref("lazy")) + " " +
                           Oci("out2"));
  EXPECT_EQ(denied.exit_code, 1) << denied.output;
  EXPECT_THAT(denied.output, HasSubstr("none of the private keys could be used for decryption"));

  // lazycrypt itself decrypts it from the registry.
  auto dec = Lazycrypt("decrypt --plain-http -k " + ShellQuote(key_.priv.string()) + " " +
                       ShellQuote(Ref("lazy")) + " " + Oci("dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  // Decrypted lazycrypt layers: the salt header (docs/FORMAT.md §5.1), then the source tar.
  image::LoadedImage dec_image = LoadLayoutImage(tmp_ / "dec");
  image::LoadedImage src_image = LoadLayoutImage(tmp_ / "src");
  ASSERT_EQ(dec_image.manifest.layers.size(), src_image.config.diff_ids.size());
  for (size_t i = 0; i < dec_image.manifest.layers.size(); ++i) {
    EXPECT_EQ(SourceTarSha256(BlobPath(tmp_ / "dec", dec_image.manifest.layers[i].digest)),
              src_image.config.diff_ids[i]);
  }
}

}  // namespace
}  // namespace lazycrypt::testing
