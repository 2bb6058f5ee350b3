// `lazycrypt index` end to end with real components: images encrypted by the real skopeo
// (ocicrypt AES_256_CTR_HMAC_SHA256, JWE for RSA and EC recipients) in a real docker-registry 2.8
// (no Referrers API: the referrers tag fallback), the real `lazycrypt` binary, and the artifact
// read back with image/referrers.h and opened with zindex::OpenedIndex like the snapshotter will.
#include <functional>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "crypto/digest.h"
#include "image/layer.h"
#include "image/layout.h"
#include "image/referrers.h"
#include "keywrap/envelope.h"
#include "keywrap/keyring.h"
#include "registry/registry.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "zindex/zindex.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class ZindexCli : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeBusyboxImage(tmp_ / "src");
    // A second layer large enough for several spans at --span-size 64KiB (incompressible data,
    // plus a compressible file).
    fs::path extra = tmp_ / "extra";
    fs::create_directories(extra / "opt" / "app");
    std::string noise;
    uint32_t x = 12345;
    for (size_t i = 0; i < 600000; ++i) {
      x = x * 1103515245u + 12345u;
      noise.push_back(static_cast<char>(x >> 24));
    }
    WriteFileString(extra / "opt" / "app" / "noise.bin", noise);
    WriteFileString(extra / "opt" / "app" / "text.txt", std::string(300000, 'z'));
    auto r = RunCommand("tar --sort=name --format=pax -C " + ShellQuote(extra.string()) + " -cf " +
                        ShellQuote((tmp_ / "extra.tar").string()) + " . && umoci raw add-layer --image " +
                        ShellQuote((tmp_ / "src").string() + ":latest") + " " +
                        ShellQuote((tmp_ / "extra.tar").string()));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    registry::ClientOptions options;
    options.plain_http = true;
    auto client = registry::Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
  }

  std::string Ref(const std::string& tag) const {
    return "docker://" + registry_->host() + "/lazycrypt/app:" + tag;
  }
  registry::Reference Repo() const { return {registry_->host(), "lazycrypt/app", "", ""}; }

  // skopeo encrypts the source layout for `pub` straight into the registry; `extra` are more
  // skopeo flags (e.g. --encrypt-layer -1).
  void SkopeoPush(const KeyPair& key, const std::string& tag, const std::string& extra = "") {
    auto r = RunCommand("skopeo copy -q --dest-tls-verify=false --encryption-key " +
                        ShellQuote("jwe:" + key.pub.string()) + " " + extra + " " +
                        ShellQuote("oci:" + (tmp_ / "src").string() + ":latest") + " " +
                        ShellQuote(Ref(tag)));
    ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  }

  CommandResult Index(const KeyPair& key, const std::string& tag, const std::string& extra = "") {
    return Lazycrypt("-q index --plain-http --key " + ShellQuote(key.priv.string()) + " " + extra +
                     " " + ShellQuote(Ref(tag)));
  }

  // The image manifest the tag (or "sha256:..." digest) names, parsed.
  image::LoadedImage Image(const std::string& tag) {
    image::LoadedImage out;
    const bool digest = tag.rfind("sha256:", 0) == 0;
    auto m = client_->GetManifest(
        {registry_->host(), "lazycrypt/app", digest ? "" : tag, digest ? tag : ""});
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return out;
    out.manifest_descriptor.media_type = m->media_type;
    out.manifest_descriptor.digest = m->digest;
    out.manifest_descriptor.size = m->bytes.size();
    out.manifest_bytes = m->bytes;
    auto parsed = image::ParseManifest(m->bytes);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    if (parsed.ok()) out.manifest = std::move(parsed).value();
    MemoryOutputStream config;
    EXPECT_TRUE(client_->GetBlob(Repo(), out.manifest.config.digest, config).ok());
    auto c = image::ParseImageConfig(config.bytes());
    EXPECT_TRUE(c.ok());
    if (c.ok()) out.config = std::move(c).value();
    return out;
  }

  std::vector<image::Descriptor> Referrers(const std::string& subject) {
    auto listed = image::ListReferrers(*client_, Repo(), subject, zindex::kArtifactType);
    EXPECT_TRUE(listed.ok()) << listed.status().ToString();
    return listed.ok() ? *listed : std::vector<image::Descriptor>{};
  }

  // Every index blob of the artifact opens for the layer it names, with the layer's key, from
  // only its header and core (as many bytes as its kAnnotationCoreBytes says), and claims the
  // config's diff_id; span 0 and the last span (with its window, by range) decode from the
  // registry's bytes. Returns the layer digests indexed.
  std::set<std::string> ExpectIndexesOpen(const image::LoadedImage& img,
                                          const image::Descriptor& listed, const KeyPair& key) {
    std::set<std::string> indexed;
    auto artifact = image::FetchReferrerManifest(*client_, Repo(), listed,
                                                 img.manifest_descriptor.digest, zindex::kArtifactType);
    EXPECT_TRUE(artifact.ok()) << artifact.status().ToString();
    if (!artifact.ok()) return indexed;
    auto priv = keywrap::PrivateKey::Load(key.priv.string());
    EXPECT_TRUE(priv.ok());
    keywrap::KeyRing keys;
    keys.AddKey(std::move(priv).value());
    for (const image::Descriptor& blob : artifact->manifest.layers) {
      EXPECT_EQ(blob.media_type, zindex::kSealedIndexMediaType);
      const std::string layer_digest = blob.Annotation(zindex::kAnnotationLayerDigest);
      size_t i = 0;
      while (i < img.manifest.layers.size() && img.manifest.layers[i].digest != layer_digest) ++i;
      EXPECT_LT(i, img.manifest.layers.size()) << "the index names a layer not in the image";
      if (i == img.manifest.layers.size()) continue;
      const image::Descriptor& layer = img.manifest.layers[i];
      MemoryOutputStream sealed;
      EXPECT_TRUE(client_->GetBlob(Repo(), blob.digest, sealed).ok());
      auto cipher = image::UnwrapOcicryptLayer(layer, keys);
      EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
      if (!cipher.ok()) continue;
      const std::string hint = blob.Annotation(zindex::kAnnotationCoreBytes);
      EXPECT_FALSE(hint.empty()) << "no " << zindex::kAnnotationCoreBytes << " on " << blob.digest;
      const uint64_t core = hint.empty() ? sealed.bytes().size() : std::stoull(hint);
      EXPECT_LE(core, sealed.bytes().size());
      if (core > sealed.bytes().size()) continue;
      auto opened = zindex::OpenedIndex::Open(ByteSpan(sealed.bytes()).first(core),
                                              sealed.bytes().size(), layer, *cipher);
      EXPECT_TRUE(opened.ok()) << "layer " << i << ": " << opened.status().ToString();
      if (!opened.ok()) continue;
      EXPECT_EQ((*opened)->sealed_core_bytes(), core);
      EXPECT_EQ((*opened)->diff_id(), img.config.diff_ids[i]) << "layer " << i;
      EXPECT_GE((*opened)->span_count(), 1u);
      for (size_t s : {size_t{0}, (*opened)->span_count() - 1}) {
        auto range = (*opened)->span_ciphertext(s);
        auto bytes = client_->GetBlobRange(Repo(), layer.digest, range.offset, range.size);
        EXPECT_TRUE(bytes.ok());
        const auto w = (*opened)->span_window(s);
        std::vector<uint8_t> window;
        if (w.size > 0) {
          auto got = client_->GetBlobRange(Repo(), blob.digest, w.offset, w.size);
          EXPECT_TRUE(got.ok()) << got.status().ToString();
          if (got.ok()) window = std::move(got).value();
        }
        if (bytes.ok()) {
          auto span = (*opened)->DecodeSpan(s, *bytes, window);
          EXPECT_TRUE(span.ok()) << "span " << s << ": " << span.status().ToString();
        }
      }
      indexed.insert(layer_digest);
    }
    return indexed;
  }

  TempDir tmp_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
};

class ZindexCliKeys : public ZindexCli, public ::testing::WithParamInterface<std::string> {};

// Every layer of a skopeo-encrypted image (RSA or EC recipient) indexed, one artifact for the
// manifest, found through the referrers tag fallback, each sealed index opening with the layer
// key; the second layer (1 MB of tar) makes several spans at --span-size 64KiB.
TEST_P(ZindexCliKeys, IndexesEverySkopeoEncryptedLayerAndTheSealedIndexesOpen) {
  KeyPair key = GenerateKeyPair(tmp_.path(), GetParam(), "key");
  SkopeoPush(key, "enc");
  image::LoadedImage img = Image("enc");
  ASSERT_EQ(img.manifest.layers.size(), 2u);
  EXPECT_TRUE(Referrers(img.manifest_descriptor.digest).empty());

  auto r = Index(key, "enc", "--span-size 64KiB --json");
  ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["manifests"].size(), 1u);
  EXPECT_EQ(j["manifests"][0]["digest"], img.manifest_descriptor.digest);
  EXPECT_EQ(j["manifests"][0]["status"], "pushed");
  ASSERT_EQ(j["manifests"][0]["layers"].size(), 2u);
  for (const auto& l : j["manifests"][0]["layers"]) {
    EXPECT_EQ(l["action"], "indexed") << l.dump();
    EXPECT_GT(l["sealedIndexSize"].get<uint64_t>(), 0u);
  }
  EXPECT_GT(j["manifests"][0]["layers"][1]["spans"].get<uint64_t>(), 4u);

  auto listed = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].digest, j["manifests"][0]["referrer"]);
  auto indexed = ExpectIndexesOpen(img, listed[0], key);
  EXPECT_EQ(indexed, (std::set<std::string>{img.manifest.layers[0].digest,
                                            img.manifest.layers[1].digest}));
}

INSTANTIATE_TEST_SUITE_P(Recipients, ZindexCliKeys, ::testing::Values("rsa2048", "ec256"));

// Without --span-size, spans of 512 KiB (zindex v2's default): the second layer (~900 KB of tar)
// has several; the report gives each sealed index's core size, which its descriptor carries.
TEST_F(ZindexCli, DefaultSpansAre512KiBAndTheCoreSizeIsAnnotated) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "ec256", "key");
  SkopeoPush(key, "enc");
  image::LoadedImage img = Image("enc");
  auto r = Index(key, "enc", "--json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  const auto& layers = j["manifests"][0]["layers"];
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_GE(layers[1]["spans"].get<uint64_t>(), 2u) << "spans of more than 512 KiB";
  auto listed = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(listed.size(), 1u);
  auto artifact = image::FetchReferrerManifest(*client_, Repo(), listed[0],
                                               img.manifest_descriptor.digest, zindex::kArtifactType);
  ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
  ASSERT_EQ(artifact->manifest.layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const image::Descriptor& blob = artifact->manifest.layers[i];
    const uint64_t core = layers[i]["sealedCoreSize"].get<uint64_t>();
    EXPECT_EQ(blob.Annotation(zindex::kAnnotationCoreBytes), std::to_string(core));
    EXPECT_EQ(blob.size, layers[i]["sealedIndexSize"].get<uint64_t>());
    EXPECT_LT(core, blob.size) << "layer " << i << ": no windows after the core";
  }
  EXPECT_EQ(ExpectIndexesOpen(img, listed[0], key).size(), 2u);
}

// A key that unwraps none of the layers: the error names the layer, and nothing is pushed
// (no referrer, no referrers tag).
TEST_F(ZindexCli, WrongKeyNamesTheLayerAndPushesNothing) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
  KeyPair other = GenerateKeyPair(tmp_.path(), "ec256", "other");
  SkopeoPush(key, "enc");
  image::LoadedImage img = Image("enc");
  auto r = Index(other, "enc");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("layer 0 (" + img.manifest.layers[0].digest.substr(0, 19)));
  EXPECT_THAT(r.output, HasSubstr("cannot unwrap its key"));
  EXPECT_TRUE(Referrers(img.manifest_descriptor.digest).empty());
  auto tag = client_->GetManifest(
      {registry_->host(), "lazycrypt/app", image::ReferrersTag(img.manifest_descriptor.digest), ""});
  EXPECT_EQ(tag.status().code(), StatusCode::kNotFound) << "a referrers tag was pushed";
}

// A second run changes nothing and says so; --force pushes another one.
TEST_F(ZindexCli, SecondRunSaysAnIndexExistsAndSkipsUnlessForced) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "ec256", "key");
  SkopeoPush(key, "enc");
  image::LoadedImage img = Image("enc");
  auto first = Index(key, "enc");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("pushed index"));
  auto listed = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(listed.size(), 1u);

  auto second = Index(key, "enc");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_THAT(second.output, HasSubstr("an index already exists for " + img.manifest_descriptor.digest));
  EXPECT_THAT(second.output, Not(HasSubstr("pushed index")));
  EXPECT_THAT(second.output, Not(HasSubstr("indexed:")));  // not even read
  auto again = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].digest, listed[0].digest);

  auto json = Index(key, "enc", "--json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  EXPECT_EQ(nlohmann::json::parse(json.output)["manifests"][0]["status"], "exists");

  auto forced = Index(key, "enc", "--force --span-size 128KiB");
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_THAT(forced.output, HasSubstr("pushed index"));
  EXPECT_EQ(Referrers(img.manifest_descriptor.digest).size(), 2u);
}

// An entry in the referrers tag that is not an index of this image (here: a zindex artifact of
// another subject, listed by anyone with push access) is not an existing index: the image is
// still indexed.
TEST_F(ZindexCli, AReferrersTagEntryForAnotherSubjectDoesNotCountAsAnIndex) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
  SkopeoPush(key, "enc");
  image::LoadedImage img = Image("enc");
  image::Descriptor other = img.manifest_descriptor;
  other.digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(std::string("another image"))));
  image::ArtifactBlob junk;
  junk.media_type = std::string(zindex::kSealedIndexMediaType);
  junk.bytes = {1, 2, 3};
  auto ghost = image::PushReferrer(*client_, Repo(), other, zindex::kArtifactType, {junk});
  ASSERT_TRUE(ghost.ok()) << ghost.status().ToString();
  auto ghost_manifest = client_->GetManifest(Repo().WithDigest(*ghost));
  ASSERT_TRUE(ghost_manifest.ok());
  nlohmann::json tag = {{"schemaVersion", 2},
                        {"mediaType", image::kMediaTypeOciIndex},
                        {"manifests",
                         {{{"mediaType", image::kMediaTypeOciManifest},
                           {"digest", *ghost},
                           {"size", ghost_manifest->bytes.size()},
                           {"artifactType", zindex::kArtifactType}}}}};
  const std::string bytes = tag.dump();
  ASSERT_TRUE(client_
                  ->PutManifest({registry_->host(), "lazycrypt/app",
                                 image::ReferrersTag(img.manifest_descriptor.digest), ""},
                                AsBytes(bytes), image::kMediaTypeOciIndex)
                  .ok());
  ASSERT_EQ(Referrers(img.manifest_descriptor.digest).size(), 1u);

  auto r = Lazycrypt("index --plain-http --key " + ShellQuote(key.priv.string()) + " " +
                     ShellQuote(Ref("enc")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("ignoring listed index " + *ghost));
  EXPECT_THAT(r.output, HasSubstr("pushed index"));
  auto listed = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].digest, *ghost);  // kept: the tag is not ours to prune
  EXPECT_EQ(ExpectIndexesOpen(img, listed[1], key).size(), 2u);
}

// An image whose first layer skopeo left plain (--encrypt-layer -1): only the encrypted layer is
// indexed, the plain one is reported as skipped.
TEST_F(ZindexCli, OnlyTheEncryptedLayerOfAMixedImageIsIndexed) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
  SkopeoPush(key, "mixed", "--encrypt-layer -1");
  image::LoadedImage img = Image("mixed");
  ASSERT_EQ(img.manifest.layers.size(), 2u);
  ASSERT_EQ(image::ClassifyLayer(img.manifest.layers[0].media_type), image::LayerKind::kPlain);
  ASSERT_EQ(image::ClassifyLayer(img.manifest.layers[1].media_type), image::LayerKind::kOcicrypt);

  auto r = Index(key, "mixed", "--json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  const auto& layers = j["manifests"][0]["layers"];
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0]["action"], "skipped");
  EXPECT_EQ(layers[0]["reason"], "not encrypted");
  EXPECT_EQ(layers[1]["action"], "indexed");

  auto listed = Referrers(img.manifest_descriptor.digest);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(ExpectIndexesOpen(img, listed[0], key),
            (std::set<std::string>{img.manifest.layers[1].digest}));
}

// skopeo encrypts the source layout into the layout `enc`; `tamper` changes layer 1 (its blob
// bytes and/or descriptor); the layer is re-addressed, the manifest rewritten and the image pushed
// unchanged otherwise as `tag`. Returns layer 1's descriptor as pushed.
image::Descriptor PushTampered(const fs::path& tmp, const KeyPair& key, const std::string& ref,
                               const std::function<void(std::string&, image::Descriptor&)>& tamper) {
  auto enc = RunCommand("skopeo copy -q --encryption-key " + ShellQuote("jwe:" + key.pub.string()) +
                        " " + ShellQuote("oci:" + (tmp / "src").string() + ":latest") + " " +
                        ShellQuote("oci:" + (tmp / "enc").string() + ":latest"));
  EXPECT_EQ(enc.exit_code, 0) << enc.output;
  image::LoadedImage loaded = LoadLayoutImage(tmp / "enc");
  image::Manifest m = loaded.manifest;
  std::string bytes = ReadFileString(BlobPath(tmp / "enc", m.layers[1].digest));
  tamper(bytes, m.layers[1]);
  auto writer = image::ImageWriter::Begin(tmp / "enc");
  EXPECT_TRUE(writer.ok()) << writer.status().ToString();
  if (!writer.ok()) return {};
  auto blob = (*writer)->PutBlob(m.layers[1].media_type, AsBytes(bytes));
  EXPECT_TRUE(blob.ok());
  m.layers[1].digest = blob->digest;
  m.layers[1].size = blob->size;
  auto manifest = (*writer)->PutBlob(std::string(image::kMediaTypeOciManifest),
                                     AsBytes(image::SerializeManifest(m)));
  EXPECT_TRUE(manifest.ok());
  EXPECT_TRUE((*writer)->Commit("latest", *manifest).ok());
  auto push = RunCommand("skopeo copy -q --dest-tls-verify=false " +
                         ShellQuote("oci:" + (tmp / "enc").string() + ":latest") + " " +
                         ShellQuote(ref));
  EXPECT_EQ(push.exit_code, 0) << push.output;
  return m.layers[1];
}

// A layer whose ciphertext was changed (blob digest consistent with the manifest, the ciphertext
// not with its HMAC): refused, named, nothing pushed.
TEST_F(ZindexCli, LayerWithChangedCiphertextIsRefusedAndNothingIsPushed) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
  image::Descriptor layer = PushTampered(tmp_.path(), key, Ref("tampered"),
                                         [](std::string& bytes, image::Descriptor&) {
                                           bytes[bytes.size() / 2] ^= 0x01;
                                         });
  ASSERT_FALSE(HasFailure());
  image::LoadedImage img = Image("tampered");
  ASSERT_EQ(img.manifest.layers[1].digest, layer.digest);
  auto r = Index(key, "tampered");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("layer 1 (" + layer.digest.substr(0, 19)));
  EXPECT_THAT(r.output, HasSubstr("refused, nothing pushed"));
  EXPECT_TRUE(Referrers(img.manifest_descriptor.digest).empty());
  auto tag = client_->GetManifest(
      {registry_->host(), "lazycrypt/app", image::ReferrersTag(img.manifest_descriptor.digest), ""});
  EXPECT_EQ(tag.status().code(), StatusCode::kNotFound) << "a referrers tag was pushed";
}

// The ciphertext intact (it decrypts, inflates and parses to the end) but the HMAC in pubopts
// changed: only the HMAC check at the end can catch it. Refused, named, nothing pushed.
TEST_F(ZindexCli, LayerFailingItsHmacIsRefusedAndNothingIsPushed) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "ec256", "key");
  image::Descriptor layer = PushTampered(
      tmp_.path(), key, Ref("badhmac"), [](std::string&, image::Descriptor& d) {
        auto pub = keywrap::DecodePubOptsAnnotation(d.Annotation(image::kAnnotationEncPubopts));
        ASSERT_TRUE(pub.ok()) << pub.status().ToString();
        ASSERT_FALSE(pub->hmac.empty());
        pub->hmac[0] ^= 0x01;
        auto encoded = keywrap::EncodePubOptsAnnotation(*pub);
        ASSERT_TRUE(encoded.ok());
        d.annotations[std::string(image::kAnnotationEncPubopts)] = *encoded;
      });
  ASSERT_FALSE(HasFailure());
  image::LoadedImage img = Image("badhmac");
  ASSERT_EQ(img.manifest.layers[1].Annotation(image::kAnnotationEncPubopts),
            layer.Annotation(image::kAnnotationEncPubopts));
  auto r = Index(key, "badhmac");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("layer 1 (" + layer.digest.substr(0, 19)));
  EXPECT_THAT(r.output, HasSubstr("refused, nothing pushed"));
  EXPECT_THAT(r.output, HasSubstr("does not authenticate (HMAC"));
  EXPECT_TRUE(Referrers(img.manifest_descriptor.digest).empty());
  auto tag = client_->GetManifest(
      {registry_->host(), "lazycrypt/app", image::ReferrersTag(img.manifest_descriptor.digest), ""});
  EXPECT_EQ(tag.status().code(), StatusCode::kNotFound) << "a referrers tag was pushed";
}

// A two-platform image (skopeo --all): each platform's manifest gets its own artifact, found
// under that manifest's digest, and its indexes open.
TEST_F(ZindexCli, EveryPlatformOfAMultiPlatformImageIsIndexedUnderItsOwnManifest) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "ec256", "key");
  // The layout gets a second image (busybox alone) and an index naming both, tagged "multi".
  MakeBusyboxImage(tmp_ / "busy");
  auto copy = RunCommand("skopeo copy -q " + ShellQuote("oci:" + (tmp_ / "busy").string() + ":latest") +
                         " " + ShellQuote("oci:" + (tmp_ / "src").string() + ":busy"));
  ASSERT_EQ(copy.exit_code, 0) << copy.output;
  auto layout_index = nlohmann::json::parse(ReadFileString(tmp_ / "src" / "index.json"));
  nlohmann::json multi = {{"schemaVersion", 2},
                          {"mediaType", image::kMediaTypeOciIndex},
                          {"manifests", nlohmann::json::array()}};
  for (const auto& [tag, arch] : std::vector<std::pair<std::string, std::string>>{
           {"latest", "amd64"}, {"busy", "arm64"}}) {
    for (const auto& d : layout_index["manifests"]) {
      if (d["annotations"][std::string(image::kAnnotationRefName)] != tag) continue;
      multi["manifests"].push_back({{"mediaType", d["mediaType"]},
                                    {"digest", d["digest"]},
                                    {"size", d["size"]},
                                    {"platform", {{"architecture", arch}, {"os", "linux"}}}});
    }
  }
  ASSERT_EQ(multi["manifests"].size(), 2u);
  const std::string multi_bytes = multi.dump();
  const std::string multi_digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(multi_bytes)));
  WriteFileString(BlobPath(tmp_ / "src", multi_digest), multi_bytes);
  layout_index["manifests"].push_back(
      {{"mediaType", image::kMediaTypeOciIndex},
       {"digest", multi_digest},
       {"size", multi_bytes.size()},
       {"annotations", {{std::string(image::kAnnotationRefName), "multi"}}}});
  WriteFileString(tmp_ / "src" / "index.json", layout_index.dump());
  auto push = RunCommand("skopeo copy -q --all --dest-tls-verify=false --encryption-key " +
                         ShellQuote("jwe:" + key.pub.string()) + " " +
                         ShellQuote("oci:" + (tmp_ / "src").string() + ":multi") + " " +
                         ShellQuote(Ref("multi")));
  ASSERT_EQ(push.exit_code, 0) << push.output;

  auto r = Index(key, "multi", "--json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["manifests"].size(), 2u);
  std::set<std::string> platforms;
  for (const auto& m : j["manifests"]) {
    platforms.insert(m["platform"].get<std::string>());
    EXPECT_EQ(m["status"], "pushed") << m.dump();
    image::LoadedImage img = Image(m["digest"].get<std::string>());
    auto listed = Referrers(img.manifest_descriptor.digest);
    ASSERT_EQ(listed.size(), 1u) << m["platform"];
    EXPECT_EQ(listed[0].digest, m["referrer"]);
    std::set<std::string> all;
    for (const auto& l : img.manifest.layers) all.insert(l.digest);
    EXPECT_EQ(ExpectIndexesOpen(img, listed[0], key), all) << m["platform"];
  }
  EXPECT_EQ(platforms, (std::set<std::string>{"linux/amd64", "linux/arm64"}));
  // Nothing under the index's own digest: the snapshotter looks up platform manifests.
  auto root = client_->GetManifest({registry_->host(), "lazycrypt/app", "multi", ""});
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(Referrers(root->digest).empty());
}

// A span size the format does not allow is refused before anything is read or pushed.
TEST_F(ZindexCli, SpanSizeOutOfRangeIsRefusedUpFront) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "ec256", "key");
  SkopeoPush(key, "enc");
  for (std::string size : {"4KiB", "1GiB"}) {
    auto r = Index(key, "enc", "--span-size " + size);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("--span-size " + size + ": must be between 64 KiB and 32 MiB"));
  }
  EXPECT_TRUE(Referrers(Image("enc").manifest_descriptor.digest).empty());
}

// oci: layouts have nowhere for a referrer the snapshotter would find: refused by name.
TEST_F(ZindexCli, OciLayoutIsRefusedWithTheReason) {
  KeyPair key = GenerateKeyPair(tmp_.path(), "rsa2048", "key");
  auto r = Lazycrypt("index --key " + ShellQuote(key.priv.string()) + " " +
                     ShellQuote("oci:" + (tmp_ / "src").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("copy the image to a registry"));
}

}  // namespace
}  // namespace lazycrypt::testing
