// `lazycrypt index --prefetch-list` end to end with real components: an image encrypted by the real
// skopeo (ocicrypt AES_256_CTR_HMAC_SHA256) in a real docker-registry 2.8, indexed by the real
// `lazycrypt` binary with a list of paths; the report checked per path, and the pushed artifact
// read back (referrers tag fallback) and opened with zindex::OpenedIndex, as the snapshotter will,
// to check which entries each layer's index marks (layer_index()->prefetch_entries()).
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "image/layer.h"
#include "image/layout.h"
#include "image/referrers.h"
#include "keywrap/keyring.h"
#include "registry/registry.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "zindex/zindex.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class IndexPrefetch : public ::testing::Test {
 protected:
  // Layer 0: busybox (bin/sh -> busybox, etc/passwd, ...). Layer 1: opt/app/{noise.bin, text.txt}
  // and opt/app/run, a symlink to /etc/passwd, which layer 0 holds.
  void SetUp() override {
    MakeBusyboxImage(tmp_ / "src");
    const fs::path extra = tmp_ / "extra";
    fs::create_directories(extra / "opt" / "app");
    WriteFileString(extra / "opt" / "app" / "noise.bin", std::string(200000, 'n'));
    WriteFileString(extra / "opt" / "app" / "text.txt", std::string(300000, 'z'));
    fs::create_symlink("/etc/passwd", extra / "opt" / "app" / "run");
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
    key_ = GenerateKeyPair(tmp_.path(), "ec256", "key");
  }

  std::string Ref(const std::string& tag) const {
    return "docker://" + registry_->host() + "/lazycrypt/app:" + tag;
  }
  registry::Reference Repo() const { return {registry_->host(), "lazycrypt/app", "", ""}; }

  void SkopeoPush(const std::string& tag, const std::string& extra = "") {
    auto r = RunCommand("skopeo copy -q --dest-tls-verify=false --encryption-key " +
                        ShellQuote("jwe:" + key_.pub.string()) + " " + extra + " " +
                        ShellQuote("oci:" + (tmp_ / "src").string() + ":latest") + " " +
                        ShellQuote(Ref(tag)));
    ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  }

  CommandResult Index(const std::string& tag, const std::vector<std::string>& paths,
                      const std::string& extra = "") {
    const fs::path list = tmp_ / "prefetch.list";
    std::string text = "# start-up files\n";
    for (const std::string& p : paths) text += p + "\n";
    WriteFileString(list, text);
    return Lazycrypt("-q index --plain-http --key " + ShellQuote(key_.priv.string()) +
                     " --prefetch-list " + ShellQuote(list.string()) + " " + extra + " " +
                     ShellQuote(Ref(tag)));
  }

  struct Manifest {
    image::Descriptor descriptor;
    image::Manifest manifest;
  };
  Manifest Get(const std::string& tag) {
    Manifest out;
    auto m = client_->GetManifest({registry_->host(), "lazycrypt/app", tag, ""});
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return out;
    out.descriptor.media_type = m->media_type;
    out.descriptor.digest = m->digest;
    out.descriptor.size = m->bytes.size();
    auto parsed = image::ParseManifest(m->bytes);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    if (parsed.ok()) out.manifest = std::move(parsed).value();
    return out;
  }

  // Per layer position: the entry names its pushed index marks for prefetch, opened from the
  // registry's bytes with the layer key (layers without an index are absent).
  std::map<size_t, std::set<std::string>> MarkedByLayer(const Manifest& img) {
    std::map<size_t, std::set<std::string>> out;
    auto listed = image::ListReferrers(*client_, Repo(), img.descriptor.digest, zindex::kArtifactType);
    EXPECT_TRUE(listed.ok()) << listed.status().ToString();
    if (!listed.ok() || listed->size() != 1) {
      ADD_FAILURE() << "expected one index artifact";
      return out;
    }
    auto artifact = image::FetchReferrerManifest(*client_, Repo(), listed->front(),
                                                 img.descriptor.digest, zindex::kArtifactType);
    EXPECT_TRUE(artifact.ok()) << artifact.status().ToString();
    if (!artifact.ok()) return out;
    auto priv = keywrap::PrivateKey::Load(key_.priv.string());
    EXPECT_TRUE(priv.ok());
    keywrap::KeyRing keys;
    keys.AddKey(std::move(priv).value());
    for (const image::Descriptor& blob : artifact->manifest.layers) {
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
      auto opened =
          zindex::OpenedIndex::Open(sealed.bytes(), sealed.bytes().size(), layer, *cipher);
      EXPECT_TRUE(opened.ok()) << "layer " << i << ": " << opened.status().ToString();
      if (!opened.ok()) continue;
      const format::LayerIndex& index = *(*opened)->layer_index();
      std::set<std::string>& names = out[i];
      for (uint32_t m : index.prefetch_entries()) names.insert(std::string(index.entries()[m].name()));
    }
    return out;
  }

  TempDir tmp_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
  KeyPair key_;
};

// Every layer encrypted and indexed: a symlink (/bin/sh -> busybox), a regular file of the upper
// layer, a symlink of the upper layer to a file of the lower one, a missing path and a directory.
// Each path is reported; each file is marked in the index of the layer holding its data, and
// only those files.
TEST_F(IndexPrefetch, MarksEachResolvedFileInTheIndexOfItsLayerAndReportsEveryPath) {
  SkopeoPush("enc");
  const Manifest img = Get("enc");
  ASSERT_EQ(img.manifest.layers.size(), 2u);
  auto r = Index("enc", {"/bin/sh", "/opt/app/text.txt", "/opt/app/run", "/no/such/file", "/etc"});
  ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  EXPECT_THAT(r.output, HasSubstr("prefetch /bin/sh: marked /bin/busybox in layer 0 (via symlink)"));
  EXPECT_THAT(r.output, HasSubstr("prefetch /opt/app/text.txt: marked in layer 1\n"));
  EXPECT_THAT(r.output, HasSubstr("prefetch /opt/app/run: marked /etc/passwd in layer 0 (via symlink)"));
  EXPECT_THAT(r.output, HasSubstr("prefetch /no/such/file: not marked: not found"));
  EXPECT_THAT(r.output, HasSubstr("prefetch /etc: not marked: a directory"));
  EXPECT_THAT(r.output, HasSubstr("prefetch: 3 of 5 paths marked"));
  EXPECT_THAT(r.output, HasSubstr("2 files marked for prefetch"));
  EXPECT_THAT(r.output, HasSubstr("1 file marked for prefetch"));
  // No path reached the report of layers as a name the listing did not name.
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("noise.bin")));

  const auto marked = MarkedByLayer(img);
  EXPECT_EQ(marked, (std::map<size_t, std::set<std::string>>{
                        {0, {"bin/busybox", "etc/passwd"}}, {1, {"opt/app/text.txt"}}}));
}

// Only the upper layer encrypted (skopeo --encrypt-layer -1): the plain lower layer is read for
// the merged view, a file it holds is reported as not marked (its layer has no index), the
// encrypted layer's file is marked; the same report in --json.
TEST_F(IndexPrefetch, APathIntoAPlainLayerIsReportedNotMarkedAndJsonHasEveryPath) {
  SkopeoPush("mixed", "--encrypt-layer -1");
  const Manifest img = Get("mixed");
  ASSERT_EQ(img.manifest.layers.size(), 2u);
  auto r = Index("mixed", {"/bin/sh", "/opt/app/noise.bin"}, "--json");
  ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["manifests"].size(), 1u);
  const auto& m = j["manifests"][0];
  EXPECT_EQ(m["status"], "pushed");
  ASSERT_EQ(m["layers"].size(), 2u);
  EXPECT_EQ(m["layers"][0]["action"], "skipped");
  EXPECT_EQ(m["layers"][1]["action"], "indexed");
  EXPECT_EQ(m["layers"][1]["prefetchCount"], 1);
  const auto& paths = m["prefetch"]["paths"];
  ASSERT_EQ(paths.size(), 2u) << m.dump(2);
  EXPECT_EQ(paths[0]["path"], "/bin/sh");
  EXPECT_EQ(paths[0]["marked"], false);
  EXPECT_EQ(paths[0]["layer"], 0);
  EXPECT_EQ(paths[0]["file"], "/bin/busybox");
  EXPECT_EQ(paths[0]["viaSymlink"], true);
  // Worded for this command (the planner's words are encrypt's: "not written as a lazycrypt
  // layer").
  EXPECT_EQ(paths[0]["reason"], "in layer 0, which is not an ocicrypt layer this command indexes");
  EXPECT_EQ(paths[1]["path"], "/opt/app/noise.bin");
  EXPECT_EQ(paths[1]["marked"], true);
  EXPECT_EQ(paths[1]["layer"], 1);
  EXPECT_EQ(m["prefetch"]["marked"], 1);

  const auto marked = MarkedByLayer(img);
  EXPECT_EQ(marked, (std::map<size_t, std::set<std::string>>{{1, {"opt/app/noise.bin"}}}));
}

// A list none of whose paths is a file of an indexed layer (one only in the plain layer, one
// missing): the index is pushed without marks and exit 0, as `encrypt --prefetch-list` does, but
// stderr says clearly that the list marked nothing (even with -q).
TEST_F(IndexPrefetch, AListThatMarksNothingIsWarnedAboutAndTheIndexHasNoMarks) {
  SkopeoPush("mixed", "--encrypt-layer -1");
  const Manifest img = Get("mixed");
  ASSERT_EQ(img.manifest.layers.size(), 2u);
  auto r = Index("mixed", {"/bin/sh", "/no/such/file"});
  ASSERT_EQ(r.exit_code, 0) << r.output << registry_->Log();
  EXPECT_THAT(r.output, HasSubstr("--prefetch-list: none of the 2 paths is a file of an indexed "
                                  "layer; the index has no marks"));
  EXPECT_THAT(r.output, HasSubstr("prefetch /bin/sh: not marked: /bin/busybox is in layer 0, "
                                  "which is not an ocicrypt layer this command indexes"));
  EXPECT_THAT(r.output, HasSubstr("prefetch: 0 of 2 paths marked"));
  const auto marked = MarkedByLayer(img);
  EXPECT_EQ(marked, (std::map<size_t, std::set<std::string>>{{1, {}}}));
}

// Every image skipped because an index exists (no --force): the list is not applied, and stderr
// says so instead of exiting 0 in silence; with --force it is applied.
TEST_F(IndexPrefetch, AListIgnoredBecauseAnIndexExistsIsWarnedAbout) {
  SkopeoPush("enc");
  const Manifest img = Get("enc");
  auto first = Index("enc", {"/opt/app/text.txt"});
  ASSERT_EQ(first.exit_code, 0) << first.output << registry_->Log();
  EXPECT_THAT(first.output, ::testing::Not(HasSubstr("--prefetch-list:")));
  auto again = Index("enc", {"/bin/sh"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("--prefetch-list: nothing indexed, nothing marked; use "
                                      "--force to replace the existing index"));
  EXPECT_THAT(again.output, HasSubstr("an index already exists"));
  auto forced = Index("enc", {"/bin/sh"}, "--force");
  ASSERT_EQ(forced.exit_code, 0) << forced.output << registry_->Log();
  EXPECT_THAT(forced.output, ::testing::Not(HasSubstr("--prefetch-list:")));
  EXPECT_THAT(forced.output, HasSubstr("prefetch /bin/sh: marked /bin/busybox in layer 0"));
}

// A list that does not parse is refused before anything is read or pushed, naming the line.
TEST_F(IndexPrefetch, AnUnsafeListIsRefusedUpFrontNamingTheLine) {
  SkopeoPush("enc");
  const Manifest img = Get("enc");
  auto r = Index("enc", {"/bin/sh", "/etc/../../x"});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--prefetch-list"));
  EXPECT_THAT(r.output, HasSubstr("line 3"));
  auto listed = image::ListReferrers(*client_, Repo(), img.descriptor.digest, zindex::kArtifactType);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_TRUE(listed->empty());
}

}  // namespace
}  // namespace lazycrypt::testing
