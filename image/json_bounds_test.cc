// Hostile nesting and recipient counts in what images carry: manifests, indexes, configs, JWE
// entries, key-provider annotations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "image/envelope.h"
#include "image/oci.h"
#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/keyring.h"

namespace lazycrypt::image {
namespace {

using ::testing::HasSubstr;

const std::string kDigest = "sha256:" + std::string(64, 'a');

// A valid document with a member nesting `levels` arrays deep.
std::string WithDeepMember(std::string doc, int levels) {
  doc.pop_back();  // '}'
  return doc + R"(,"x":)" + std::string(levels, '[') + std::string(levels, ']') + "}";
}

TEST(JsonBounds, DeeplyNestedManifestIndexAndConfigAreRefused) {
  const std::string manifest = R"({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                               kDigest + R"(","size":1},"layers":[]})";
  ASSERT_TRUE(ParseManifest(AsBytes(manifest)).ok());
  ASSERT_TRUE(ParseManifest(AsBytes(WithDeepMember(manifest, 60))).ok());
  auto deep = ParseManifest(AsBytes(WithDeepMember(manifest, 100000)));
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(deep.status().message(), HasSubstr("JSON nested deeper than 64 levels"));

  const std::string index = R"({"schemaVersion":2,"manifests":[]})";
  ASSERT_TRUE(ParseIndex(AsBytes(index)).ok());
  EXPECT_THAT(ParseIndex(AsBytes(WithDeepMember(index, 100000))).status().message(),
              HasSubstr("deeper than"));
  EXPECT_THAT(ParseImageConfig(AsBytes(std::string(100000, '['))).status().message(),
              HasSubstr("deeper than"));
  EXPECT_THAT(ParseDescriptor(AsBytes(std::string(100000, '{'))).status().message(),
              HasSubstr("deeper than"));
}

TEST(JsonBounds, DeeplyNestedJweEntryIsRefused) {
  std::string jwe = R"({"protected":"e30","recipients":[{"header":)" + std::string(100000, '[') +
                    std::string(100000, ']') + "}]}";
  auto r = ListJweRecipients(keywrap::Base64Encode(AsBytes(jwe)));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("deeper than"));
}

// A provider that must never be asked: the packet count is refused first.
class NeverCalledProvider final : public keywrap::KeyProvider {
 public:
  const std::string& name() const override { return name_; }
  Result<std::vector<uint8_t>> WrapKey(ByteSpan) const override {
    ADD_FAILURE() << "WrapKey called";
    return Status::Internal("unexpected");
  }
  Result<crypto::SecureBuffer> UnwrapKey(ByteSpan) const override {
    ++calls;
    return Status::NotFound("not mine");
  }
  mutable int calls = 0;

 private:
  std::string name_ = "kms";
};

TEST(JsonBounds, TooManyKeyProviderPacketsAreRefusedBeforeAnyCall) {
  auto provider = std::make_shared<NeverCalledProvider>();
  keywrap::KeyRing ring;
  ring.AddProvider(provider);
  Descriptor layer;
  layer.media_type = "application/vnd.oci.image.layer.v1.tar+zstd+lazycrypt";
  layer.digest = kDigest;
  std::string packets;
  for (size_t i = 0; i <= keywrap::kMaxKeyProviderPackets; ++i) packets += std::string(i ? "," : "") + "cGFja2V0";
  layer.annotations[keywrap::KeyProviderAnnotation("kms")] = packets;
  auto r = UnwrapLayerPrivopts(layer, ring);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("has more than 256 entries"));
  EXPECT_EQ(provider->calls, 0);
}

}  // namespace
}  // namespace lazycrypt::image
