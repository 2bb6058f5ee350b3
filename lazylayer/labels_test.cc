#include "lazylayer/labels.h"

#include <gtest/gtest.h>

namespace lazycrypt::lazylayer {
namespace {

const std::string kToc = "sha256:" + std::string(64, 'a');
const std::string kLayer = "sha256:" + std::string(64, 'b');
const std::string kManifest = "sha256:" + std::string(64, 'c');
constexpr char kTocLabel[] = "containerd.io/snapshot/lazycrypt.toc-digest";

TEST(SourceFromLabels, NoTocDigestLabelIsNotOurs) {
  auto s = SourceFromLabels({{"containerd.io/snapshot.ref", "sha256:x"},
                             {std::string(kLabelStargzReference), "r/a:1"},
                             {std::string(kLabelStargzDigest), kLayer}});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_FALSE(s->has_value());
}

TEST(SourceFromLabels, StargzLabels) {
  auto s = SourceFromLabels({{kTocLabel, kToc},
                             {std::string(kLabelStargzReference), "127.0.0.1:5000/app:1"},
                             {std::string(kLabelStargzDigest), kLayer}});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ((*s)->image_ref, "127.0.0.1:5000/app:1");
  EXPECT_EQ((*s)->layer_digest, kLayer);
  EXPECT_EQ((*s)->toc_digest, kToc);
  EXPECT_EQ((*s)->manifest_digest, "");
}

TEST(SourceFromLabels, CriLabelsWinAndCarryTheManifestDigest) {
  auto s = SourceFromLabels({{kTocLabel, kToc},
                             {std::string(kLabelCriImageRef), "reg/app:2"},
                             {std::string(kLabelCriLayerDigest), kLayer},
                             {std::string(kLabelCriManifestDigest), kManifest},
                             {std::string(kLabelStargzReference), "other/x:1"},
                             {std::string(kLabelStargzDigest), kToc}});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ((*s)->image_ref, "reg/app:2");
  EXPECT_EQ((*s)->layer_digest, kLayer);
  EXPECT_EQ((*s)->manifest_digest, kManifest);
}

TEST(SourceFromLabels, LazycryptLayerWithoutImageLabelsIsAClearError) {
  auto s = SourceFromLabels({{kTocLabel, kToc}, {"containerd.io/snapshot.ref", "sha256:x"}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("lazycrypt pull"), std::string::npos) << s.status().message();
}

TEST(SourceFromLabels, MalformedDigestsNameTheLabel) {
  auto bad_toc = SourceFromLabels({{kTocLabel, "sha256:zz"},
                                   {std::string(kLabelStargzReference), "r/a:1"},
                                   {std::string(kLabelStargzDigest), kLayer}});
  ASSERT_FALSE(bad_toc.ok());
  EXPECT_NE(bad_toc.status().message().find(kTocLabel), std::string::npos);
  auto bad_layer = SourceFromLabels({{kTocLabel, kToc},
                                     {std::string(kLabelStargzReference), "r/a:1"},
                                     {std::string(kLabelStargzDigest), "md5:1"}});
  ASSERT_FALSE(bad_layer.ok());
  EXPECT_NE(bad_layer.status().message().find(kLabelStargzDigest), std::string::npos)
      << bad_layer.status().message();
}

// identity.ChainID (image-spec identity/chainid.go): the digest strings joined by one space.
// Vectors: `printf 'sha256:a sha256:b' | sha256sum` (also ctrdclient's ChainIds test) and the
// same for two full digests.
TEST(ChainIdOf, MatchesImageSpecIdentity) {
  EXPECT_EQ(ChainIdOf("", kLayer), kLayer);
  EXPECT_EQ(ChainIdOf("sha256:a", "sha256:b"),
            "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8");
  EXPECT_EQ(ChainIdOf(kToc, kLayer),
            "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
  EXPECT_NE(ChainIdOf(kLayer, kToc), ChainIdOf(kToc, kLayer));
}

TEST(ChainIdOfSnapshotName, StripsContainerdsNamespacePrefix) {
  EXPECT_EQ(*ChainIdOfSnapshotName(""), "");
  EXPECT_EQ(*ChainIdOfSnapshotName(kLayer), kLayer);               // committed by us (remote)
  EXPECT_EQ(*ChainIdOfSnapshotName("k8s.io/42/" + kLayer), kLayer);  // committed by containerd
  EXPECT_FALSE(ChainIdOfSnapshotName("k8s.io/x/" + kLayer).ok());
  EXPECT_FALSE(ChainIdOfSnapshotName("k8s.io/42/extract-1 " + kLayer).ok());
  EXPECT_FALSE(ChainIdOfSnapshotName("sha256:short").ok());
}

TEST(AnySourceFromLabels, NamesAnyLayerByCriOrStargzLabels) {
  auto cri = AnySourceFromLabels({{std::string(kLabelCriImageRef), "reg/app:2"},
                                  {std::string(kLabelCriLayerDigest), kLayer},
                                  {std::string(kLabelCriManifestDigest), kManifest}});
  ASSERT_TRUE(cri.ok()) << cri.status().ToString();
  ASSERT_TRUE(cri->has_value());
  EXPECT_EQ((*cri)->image_ref, "reg/app:2");
  EXPECT_EQ((*cri)->layer_digest, kLayer);
  EXPECT_EQ((*cri)->manifest_digest, kManifest);
  EXPECT_EQ((*cri)->toc_digest, "");
  auto stargz = AnySourceFromLabels({{std::string(kLabelStargzReference), "r/a:1"},
                                     {std::string(kLabelStargzDigest), kLayer}});
  ASSERT_TRUE(stargz.ok() && stargz->has_value());
  EXPECT_EQ((*stargz)->image_ref, "r/a:1");
}

TEST(AnySourceFromLabels, NoImageLabelsIsNothingAndABadDigestIsNamed) {
  auto none = AnySourceFromLabels({{"containerd.io/snapshot.ref", "sha256:x"}});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto bad = AnySourceFromLabels({{std::string(kLabelCriImageRef), "reg/app:2"},
                                  {std::string(kLabelCriLayerDigest), "sha256:zz"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(std::string(kLabelCriLayerDigest)), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace lazycrypt::lazylayer
