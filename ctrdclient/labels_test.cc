#include "ctrdclient/labels.h"

#include <ctime>
#include <regex>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "crypto/digest.h"

namespace lazycrypt::ctrdclient {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::string FakeDigest(int n) {
  // "sha256:" + 64 hex: a distinct, well-formed digest per n.
  return crypto::OciDigest(crypto::Sha256::Of(AsBytes("layer " + std::to_string(n))));
}

// The vectors of opencontainers/image-spec identity/chainid_test.go: ChainID(a) = a,
// ChainID(a|b) = digest.FromString("sha256:a sha256:b"), ChainID(a|b|c) =
// digest.FromString(ChainID(a|b) + " sha256:c"). The hex values are sha256sum of those strings.
TEST(ChainIds, MatchesImageSpecIdentityVectors) {
  EXPECT_THAT(ChainIds({}), ElementsAre());
  EXPECT_THAT(ChainIds({"sha256:a"}), ElementsAre("sha256:a"));
  EXPECT_THAT(
      ChainIds({"sha256:a", "sha256:b", "sha256:c"}),
      ElementsAre("sha256:a",
                  "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8",
                  "sha256:dee159b33409cefa3f6eda71539f006014283e9d9130c18a1dea7bd8a33c9b1b"));
}

TEST(ChainIds, DependsOnOrder) {
  auto ab = ChainIds({FakeDigest(1), FakeDigest(2)});
  auto ba = ChainIds({FakeDigest(2), FakeDigest(1)});
  EXPECT_NE(ab[1], ba[1]);
  EXPECT_EQ(ab[0], FakeDigest(1));
}

TEST(StargzLayersLabel, JoinsTheLayersFromTheGivenOne) {
  std::vector<std::string> layers = {FakeDigest(0), FakeDigest(1), FakeDigest(2)};
  EXPECT_EQ(StargzLayersLabel(layers, 0), layers[0] + "," + layers[1] + "," + layers[2]);
  EXPECT_EQ(StargzLayersLabel(layers, 1), layers[1] + "," + layers[2]);
  EXPECT_EQ(StargzLayersLabel(layers, 2), layers[2]);
}

// 100 layers: each digest is 71 bytes + ",": the key (43 bytes) plus "d1,...,dn," must stay within
// 4096 bytes as stargz checks it (with the trailing comma), so 56 fit: 43 + 56*72 = 4075,
// 43 + 57*72 = 4147.
TEST(StargzLayersLabel, CutsWholeDigestsToFit4096Bytes) {
  std::vector<std::string> layers;
  for (int i = 0; i < 100; ++i) layers.push_back(FakeDigest(i));
  const std::string value = StargzLayersLabel(layers, 0);
  EXPECT_LE(kLabelStargzLayers.size() + value.size(), kMaxLabelBytes);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t comma = value.find(',', start);
    parts.push_back(value.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  ASSERT_EQ(parts.size(), 56u);
  for (size_t i = 0; i < parts.size(); ++i) EXPECT_EQ(parts[i], layers[i]) << i;
  // One more digest would break the limit.
  EXPECT_GT(kLabelStargzLayers.size() + value.size() + 1 + layers[56].size() + 1, kMaxLabelBytes);
  // From layer 50 on, all 50 fit.
  EXPECT_EQ(StargzLayersLabel(layers, 50).size(), 50u * 72 - 1);
}

TEST(SnapshotLabels, CarriesRefStargzLabelsAndOnlySnapshotAnnotations) {
  std::vector<image::Descriptor> layers(3);
  for (int i = 0; i < 3; ++i) {
    layers[i].media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    layers[i].digest = FakeDigest(i);
  }
  layers[1].annotations = {
      {std::string(image::kAnnotationLazycryptTocDigest), FakeDigest(99)},
      {"org.opencontainers.image.enc.keys.jwe", "secret-wrapped-key"},
      {"containerd.io/snapshotter", "not inherited: no slash after snapshot"},
  };
  const std::string chain = FakeDigest(42);
  auto labels = SnapshotLabels("127.0.0.1:5000/app:1", layers, 1, chain);
  EXPECT_THAT(labels,
              UnorderedElementsAre(
                  Pair(std::string(image::kAnnotationLazycryptTocDigest), FakeDigest(99)),
                  Pair("containerd.io/snapshot/remote/stargz.reference", "127.0.0.1:5000/app:1"),
                  Pair("containerd.io/snapshot/remote/stargz.digest", layers[1].digest),
                  Pair("containerd.io/snapshot/remote/stargz.layers",
                       layers[1].digest + "," + layers[2].digest),
                  Pair("containerd.io/snapshot/cri.image-ref", "127.0.0.1:5000/app:1"),
                  Pair("containerd.io/snapshot/cri.layer-digest", layers[1].digest),
                  Pair("containerd.io/snapshot/cri.image-layers",
                       layers[1].digest + "," + layers[2].digest),
                  Pair("containerd.io/snapshot.ref", chain)));
  for (const auto& [k, v] : labels) {
    EXPECT_LE(k.size() + v.size(), kMaxLabelBytes) << k;
  }
}

// An image must not choose which manifest or layer the node fetches with its credentials: its
// own cri.* and stargz.* annotations are dropped, whatever their names, and the pull's values set.
TEST(SnapshotLabels, DropsTheImagesOwnSourceLabels) {
  std::vector<image::Descriptor> layers(2);
  for (int i = 0; i < 2; ++i) layers[i].digest = FakeDigest(i);
  layers[0].annotations = {
      {std::string(image::kAnnotationLazycryptTocDigest), FakeDigest(99)},
      {"containerd.io/snapshot/cri.image-ref", "registry.victim/private:1"},
      {"containerd.io/snapshot/cri.layer-digest", FakeDigest(66)},
      {"containerd.io/snapshot/cri.manifest-digest", FakeDigest(67)},
      {"containerd.io/snapshot/cri.some-future-label", "x"},
      {"containerd.io/snapshot/remote/stargz.reference", "registry.victim/private:1"},
      {"containerd.io/snapshot/remote/stargz.digest", FakeDigest(66)},
      {"containerd.io/snapshot/remote/stargz.anything", "x"},
      {"containerd.io/snapshot/other.label", "kept"},
  };
  const std::string manifest = FakeDigest(50);
  auto labels = SnapshotLabels("127.0.0.1:5000/app:1", layers, 0, FakeDigest(42), manifest);
  EXPECT_EQ(labels.at("containerd.io/snapshot/cri.image-ref"), "127.0.0.1:5000/app:1");
  EXPECT_EQ(labels.at("containerd.io/snapshot/cri.layer-digest"), FakeDigest(0));
  EXPECT_EQ(labels.at("containerd.io/snapshot/cri.manifest-digest"), manifest);
  EXPECT_EQ(labels.at("containerd.io/snapshot/remote/stargz.reference"), "127.0.0.1:5000/app:1");
  EXPECT_EQ(labels.at("containerd.io/snapshot/remote/stargz.digest"), FakeDigest(0));
  EXPECT_EQ(labels.count("containerd.io/snapshot/cri.some-future-label"), 0u);
  EXPECT_EQ(labels.count("containerd.io/snapshot/remote/stargz.anything"), 0u);
  EXPECT_EQ(labels.at("containerd.io/snapshot/other.label"), "kept");
  EXPECT_EQ(labels.at(std::string(image::kAnnotationLazycryptTocDigest)), FakeDigest(99));
  for (const auto& [k, v] : labels) {
    EXPECT_NE(v, "registry.victim/private:1") << k;
    EXPECT_NE(v, FakeDigest(66)) << k;
    EXPECT_NE(v, FakeDigest(67)) << k;
  }
  EXPECT_TRUE(IsSourceLabel("containerd.io/snapshot/cri.image-ref"));
  EXPECT_TRUE(IsSourceLabel("containerd.io/snapshot/remote/stargz.digest"));
  EXPECT_FALSE(IsSourceLabel(std::string(image::kAnnotationLazycryptTocDigest)));
}

TEST(GcLabels, ManifestNamesConfigAndEveryLayerIndex) {
  image::Manifest m;
  m.config.digest = FakeDigest(100);
  for (int i = 0; i < 12; ++i) {
    image::Descriptor l;
    l.digest = FakeDigest(i);
    m.layers.push_back(l);
  }
  auto labels = ManifestGcLabels(m);
  EXPECT_EQ(labels.size(), 13u);
  EXPECT_EQ(labels.at("containerd.io/gc.ref.content.config"), FakeDigest(100));
  EXPECT_EQ(labels.at("containerd.io/gc.ref.content.l.0"), FakeDigest(0));
  EXPECT_EQ(labels.at("containerd.io/gc.ref.content.l.11"), FakeDigest(11));
  EXPECT_EQ(labels.count("containerd.io/gc.ref.content.l.12"), 0u);

  EXPECT_THAT(IndexGcLabels({FakeDigest(7)}),
              ElementsAre(Pair("containerd.io/gc.ref.content.m.0", FakeDigest(7))));
}

TEST(UnpackKey, HasContainerdsFormat) {
  EXPECT_EQ(UnpackKey("12-AbC_", "sha256:abc"), "extract-12-AbC_ sha256:abc");
  const std::regex unique("^[0-9]{1,9}-[A-Za-z0-9_-]{4}$");
  std::set<std::string> seen;
  for (int i = 0; i < 8; ++i) {
    std::string u = NewUniquePart();
    EXPECT_TRUE(std::regex_match(u, unique)) << u;
    seen.insert(u);
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST(Platform, ParsesAndMatches) {
  auto p = ParsePlatform("linux/amd64");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->os, "linux");
  EXPECT_EQ(p->architecture, "amd64");
  EXPECT_EQ(p->variant, "");
  auto v = ParsePlatform("linux/arm64/v8");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->variant, "v8");
  for (const char* bad : {"", "linux", "linux/", "/amd64", "linux/arm/v7/x", "linux//v7"}) {
    auto r = ParsePlatform(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }

  image::Platform amd64{"amd64", "linux", "", {}, ""};
  image::Platform arm64v8{"arm64", "linux", "", {}, "v8"};
  image::Platform windows{"amd64", "windows", "", {}, ""};
  EXPECT_TRUE(PlatformMatches(*p, amd64));
  EXPECT_FALSE(PlatformMatches(*p, arm64v8));
  EXPECT_FALSE(PlatformMatches(*p, windows));
  EXPECT_TRUE(PlatformMatches(*ParsePlatform("linux/arm64"), arm64v8));
  EXPECT_FALSE(PlatformMatches(*ParsePlatform("linux/arm64/v7"), arm64v8));
}

TEST(ExpiryTimestamp, IsRfc3339UtcAtTheRequestedOffset) {
  const std::string ts = ExpiryTimestamp(3600);
  ASSERT_TRUE(std::regex_match(ts, std::regex("^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z$")))
      << ts;
  std::tm tm{};
  ASSERT_NE(strptime(ts.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm), nullptr);
  const long long diff = static_cast<long long>(timegm(&tm)) - std::time(nullptr);
  EXPECT_GE(diff, 3595);
  EXPECT_LE(diff, 3600);
}

}  // namespace
}  // namespace lazycrypt::ctrdclient
