#include "image/oci.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace lazycrypt::image {
namespace {

using ::testing::HasSubstr;

constexpr char kDigestA[] = "sha256:570c0954fdf66cba5af09275eb0ec0d9e6d588ca54b4937ac0e1ee42b11a52bc";
constexpr char kDigestB[] = "sha256:d4ebd6477a86cf75125a0f63fc4ebbf13f7440b3fe55453a70eaa21c8bcf5520";

// A manifest as umoci writes it, plus members lazycrypt does not model.
std::string UmociManifest() {
  return std::string(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)") +
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kDigestB +
         R"(","size":269},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)" +
         R"("digest":")" + kDigestA + R"(","size":1088512,"annotations":{"a":"b"},"data":"AA=="}],)" +
         R"("annotations":{"org.opencontainers.image.created":"2024"},"artifactType":"x/y",)" +
         R"("subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
         kDigestA + R"(","size":7}})";
}

std::string ManifestWithLayerField(const std::string& field_json) {
  return std::string(R"({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")") +
         kDigestB + R"(","size":269},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar",)" +
         field_json + "}]}";
}

TEST(Oci, ParsesUmociManifest) {
  auto m = ParseManifest(AsBytes(UmociManifest()));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->schema_version, 2);
  EXPECT_EQ(m->media_type, kMediaTypeOciManifest);
  EXPECT_EQ(m->config.digest, kDigestB);
  EXPECT_EQ(m->config.size, 269u);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].media_type, kMediaTypeOciLayerTarGzip);
  EXPECT_EQ(m->layers[0].size, 1088512u);
  EXPECT_EQ(m->layers[0].Annotation("a"), "b");
  EXPECT_EQ(m->layers[0].Annotation("missing"), "");
  EXPECT_EQ(m->annotations.at("org.opencontainers.image.created"), "2024");
}

TEST(Oci, RewriteKeepsUnknownMembers) {
  auto m = ParseManifest(AsBytes(UmociManifest()));
  ASSERT_TRUE(m.ok());
  m->layers[0].media_type = std::string(kMediaTypeLazycryptLayer);
  std::string out = SerializeManifest(*m);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["artifactType"], "x/y");
  EXPECT_EQ(j["subject"]["size"], 7);
  EXPECT_EQ(j["layers"][0]["data"], "AA==");
  EXPECT_EQ(j["layers"][0]["mediaType"], kMediaTypeLazycryptLayer);
  // And it parses back to the same thing.
  auto again = ParseManifest(AsBytes(out));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->layers, m->layers);
  EXPECT_EQ(again->config, m->config);
  EXPECT_EQ(SerializeManifest(*again), out);
}

TEST(Oci, ParsesDockerSchema2Manifest) {
  std::string docker = std::string(R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",)") +
                       R"("config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":")" +
                       kDigestB + R"("},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":")" +
                       kDigestA + R"("}]})";
  auto m = ParseManifest(AsBytes(docker));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, kMediaTypeDockerManifest);
  EXPECT_EQ(ClassifyLayer(m->layers[0].media_type), LayerKind::kPlain);
  EXPECT_EQ(OciLayerMediaType(m->layers[0].media_type), kMediaTypeOciLayerTarGzip);
}

TEST(Oci, RejectsInvalidJsonByName) {
  auto m = ParseManifest(AsBytes(R"({"schemaVersion":2,)"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(m.status().message(), HasSubstr("manifest: invalid JSON"));
  auto arr = ParseManifest(AsBytes("[1,2]"));
  ASSERT_FALSE(arr.ok());
  EXPECT_THAT(arr.status().message(), HasSubstr("not a JSON object"));
}

TEST(Oci, RejectsBadSchemaVersion) {
  auto m = ParseManifest(AsBytes(R"({"schemaVersion":1,"config":{},"layers":[]})"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(m.status().message(), HasSubstr("schemaVersion 1"));
}

TEST(Oci, RejectsBadDigests) {
  struct Case {
    std::string digest;
    StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"sha256:abc", StatusCode::kCorruption, "is not a sha256 digest"},
      {std::string("sha256:") + std::string(64, 'A'), StatusCode::kCorruption, "lowercase hex"},
      {std::string("sha256:") + std::string(63, 'a') + "g", StatusCode::kCorruption, "not a sha256"},
      {std::string("sha512:") + std::string(128, 'a'), StatusCode::kUnsupported, "'sha512'"},
      {std::string(64, 'a'), StatusCode::kCorruption, "is not a digest"},
  };
  for (const Case& c : cases) {
    auto m = ParseManifest(AsBytes(ManifestWithLayerField(R"("size":1,"digest":")" + c.digest + "\"")));
    ASSERT_FALSE(m.ok()) << c.digest;
    EXPECT_EQ(m.status().code(), c.code) << c.digest;
    EXPECT_THAT(m.status().message(), HasSubstr("layers[0].digest")) << c.digest;
    EXPECT_THAT(m.status().message(), HasSubstr(c.message)) << c.digest;
  }
}

TEST(Oci, RejectsBadSizes) {
  for (std::string size : {"-1", "1.5", "\"12\"", "null", "18446744073709551615"}) {
    auto m = ParseManifest(
        AsBytes(ManifestWithLayerField(std::string(R"("digest":")") + kDigestA + R"(","size":)" + size)));
    ASSERT_FALSE(m.ok()) << size;
    EXPECT_EQ(m.status().code(), StatusCode::kCorruption) << size;
    EXPECT_THAT(m.status().message(), HasSubstr("layers[0]")) << size;
  }
}

TEST(Oci, RejectsMissingAndMistypedMembers) {
  auto no_config = ParseManifest(AsBytes(R"({"schemaVersion":2,"layers":[]})"));
  ASSERT_FALSE(no_config.ok());
  EXPECT_THAT(no_config.status().message(), HasSubstr("missing \"config\""));

  auto layers_obj = ParseManifest(AsBytes(std::string(R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")") +
                                          kDigestA + R"(","size":1},"layers":{}})"));
  ASSERT_FALSE(layers_obj.ok());
  EXPECT_THAT(layers_obj.status().message(), HasSubstr("manifest.layers: not an array"));

  auto bad_annotation = ParseManifest(AsBytes(ManifestWithLayerField(
      std::string(R"("digest":")") + kDigestA + R"(","size":1,"annotations":{"k":3})")));
  ASSERT_FALSE(bad_annotation.ok());
  EXPECT_THAT(bad_annotation.status().message(), HasSubstr("annotations['k']: not a string"));

  auto no_media_type = ParseManifest(AsBytes(std::string(R"({"schemaVersion":2,"config":{"digest":")") +
                                             kDigestA + R"(","size":1},"layers":[]})"));
  ASSERT_FALSE(no_media_type.ok());
  EXPECT_THAT(no_media_type.status().message(), HasSubstr("manifest.config: missing \"mediaType\""));
}

TEST(Oci, RejectsIndexAsManifestAndViceVersa) {
  std::string index = std::string(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})");
  auto m = ParseManifest(AsBytes(index));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("not an image manifest"));
  auto i = ParseIndex(AsBytes(UmociManifest()));
  ASSERT_FALSE(i.ok());
  EXPECT_THAT(i.status().message(), HasSubstr("not an image index"));
}

TEST(Oci, IndexRoundTripWithPlatforms) {
  std::string text = std::string(R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")") +
                     kDigestA + R"(","size":5,"platform":{"architecture":"arm64","os":"linux","variant":"v8","os.features":["f"]},)" +
                     R"("annotations":{"org.opencontainers.image.ref.name":"v1"}}],"annotations":{"x":"y"}})";
  auto index = ParseIndex(AsBytes(text));
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ASSERT_EQ(index->manifests.size(), 1u);
  ASSERT_TRUE(index->manifests[0].platform.has_value());
  EXPECT_EQ(index->manifests[0].platform->architecture, "arm64");
  EXPECT_EQ(index->manifests[0].platform->variant, "v8");
  EXPECT_EQ(index->manifests[0].platform->os_features, std::vector<std::string>{"f"});
  EXPECT_EQ(index->manifests[0].Annotation(kAnnotationRefName), "v1");
  auto again = ParseIndex(AsBytes(SerializeIndex(*index)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifests, index->manifests);
  EXPECT_EQ(again->annotations, index->annotations);
}

TEST(Oci, ImageConfigDiffIds) {
  std::string config = std::string(R"({"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[")") +
                       kDigestA + R"(",")" + kDigestB + R"("]}})";
  auto c = ParseImageConfig(AsBytes(config));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->diff_ids, (std::vector<std::string>{kDigestA, kDigestB}));

  auto bad = ParseImageConfig(AsBytes(R"({"rootfs":{"type":"layers","diff_ids":["sha256:00"]}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("rootfs.diff_ids[0]"));
  auto no_rootfs = ParseImageConfig(AsBytes(R"({"os":"linux"})"));
  ASSERT_FALSE(no_rootfs.ok());
  EXPECT_THAT(no_rootfs.status().message(), HasSubstr("rootfs"));
  auto bad_type = ParseImageConfig(AsBytes(R"({"rootfs":{"type":"zfs","diff_ids":[]}})"));
  ASSERT_FALSE(bad_type.ok());
  EXPECT_EQ(bad_type.status().code(), StatusCode::kUnsupported);
}

TEST(Oci, ClassifiesLayers) {
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar"), LayerKind::kPlain);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+gzip"), LayerKind::kPlain);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+zstd"), LayerKind::kPlain);
  EXPECT_EQ(ClassifyLayer("application/vnd.docker.image.rootfs.diff.tar.gzip"), LayerKind::kPlain);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+encrypted"), LayerKind::kOcicrypt);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            LayerKind::kOcicrypt);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+zstd+encrypted"),
            LayerKind::kOcicrypt);
  EXPECT_EQ(ClassifyLayer(kMediaTypeLazycryptLayer), LayerKind::kLazycrypt);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+bzip2"), LayerKind::kUnknown);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+bzip2+encrypted"),
            LayerKind::kUnknown);
  EXPECT_EQ(ClassifyLayer("application/vnd.oci.image.layer.v1.tar+encrypted+encrypted"),
            LayerKind::kUnknown);
  EXPECT_EQ(StripEncryptedSuffix("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            kMediaTypeOciLayerTarGzip);
  EXPECT_EQ(StripEncryptedSuffix(kMediaTypeLazycryptLayer), kMediaTypeLazycryptLayer);
  // lazycrypt's type must differ from every ocicrypt type while keeping the layer prefix and the
  // +encrypted suffix (docs/FORMAT.md).
  EXPECT_TRUE(std::string_view(kMediaTypeLazycryptLayer).starts_with("application/vnd.oci.image.layer."));
  EXPECT_TRUE(std::string_view(kMediaTypeLazycryptLayer).ends_with("+encrypted"));
}

TEST(Oci, DescriptorRoundTrip) {
  Descriptor d;
  d.media_type = "application/vnd.oci.image.layer.v1.tar";
  d.digest = kDigestA;
  d.size = 1ull << 40;
  d.annotations = {{"k", "v"}};
  d.urls = {"https://example.com/blob"};
  d.platform = Platform{"amd64", "linux", "", {}, ""};
  auto again = ParseDescriptor(AsBytes(SerializeDescriptor(d)));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, d);
}

}  // namespace
}  // namespace lazycrypt::image
