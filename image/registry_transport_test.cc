// docker:// transport against a real docker-registry on 127.0.0.1 (started and stopped by the
// test, see tests/harness/registry_process.h).
#include <cstring>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "image/convert.h"
#include "image/envelope.h"
#include "image/recipients.h"
#include "image/transport.h"
#include "image/verify.h"
#include "format/writer.h"
#include "registry/registry.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "image/image_testing.h"
#include "tests/test_util.h"

namespace lazycrypt::image {
namespace {

using namespace testing_util;  // image/image_testing.h

namespace fs = std::filesystem;
using ::lazycrypt::testing::ReadFileString;
using ::lazycrypt::testing::RunCommand;
using ::lazycrypt::testing::ShellQuote;
using ::lazycrypt::testing::TempDir;
using ::lazycrypt::testing::WriteFileString;
using ::testing::HasSubstr;

// The decrypted form of a lazycrypt layer is its converted tar stream: the salt header
// (FORMAT.md 5.1), then the source tar byte for byte.
void ExpectDecryptedIsSourceTar(const fs::path& layout, const std::string& digest,
                                const std::string& tar) {
  std::string decrypted = ReadFileString(layout / "blobs" / "sha256" / digest.substr(7));
  ASSERT_EQ(decrypted.size(), tar.size() + format::kLayerSaltHeaderSize);
  EXPECT_TRUE(decrypted.substr(format::kLayerSaltHeaderSize) == tar);
}

std::string MakeTar(const TempDir& tmp, const std::string& name) {
  fs::path tree = tmp / ("tree-" + name);
  fs::create_directories(tree / "etc");
  std::string big;
  uint32_t x = 777;
  for (size_t i = 0; i < 200000; ++i) {
    x = x * 1103515245u + 12345u;
    big.push_back(static_cast<char>(x >> 24));
  }
  WriteFileString(tree / "etc" / "big", big);
  WriteFileString(tree / "name", name + "\n");
  fs::path tar = tmp / (name + ".tar");
  auto r = RunCommand("tar --format=pax --numeric-owner --mtime=@0 -C " + ShellQuote(tree.string()) +
                      " -cf " + ShellQuote(tar.string()) + " .");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return ReadFileString(tar);
}

Descriptor PutImage(ImageWriter& writer, const std::string& tar, const std::string& arch) {
  Manifest m;
  m.media_type = std::string(kMediaTypeOciManifest);
  m.layers = {*writer.PutBlob(std::string(kMediaTypeOciLayerTar), AsBytes(tar))};
  std::string config = R"({"architecture":")" + arch +
                       R"(","os":"linux","rootfs":{"type":"layers","diff_ids":[")" + Sha(tar) +
                       R"("]}})";
  m.config = *writer.PutBlob(std::string(kMediaTypeOciConfig), AsBytes(config));
  return *writer.PutBlob(m.media_type, AsBytes(SerializeManifest(m)));
}

registry::ClientOptions PlainHttp() {
  registry::ClientOptions options;
  options.plain_http = true;
  return options;
}

DecryptOptions Uncompressed() {
  DecryptOptions options;
  options.compression = LayerCompression::kNone;
  return options;
}

ImageReference Docker(const std::string& ref) { return *ImageReference::Parse("docker://" + ref); }

class RegistryTransport : public ::testing::Test {
 protected:
  void SetUp() override {
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    plain_.plain_http = true;
  }
  std::unique_ptr<harness::RegistryProcess> registry_;
  TransportOptions plain_;
  TempDir tmp_;
};

TEST_F(RegistryTransport, EncryptPushInspectVerifyDecryptPull) {
  std::string tar = MakeTar(tmp_, "one");
  {
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Commit("latest", PutImage(**writer, tar, "amd64")).ok());
  }
  Keys alice = MakeKey(tmp_, "alice"), bob = MakeKey(tmp_, "bob");
  const std::string ref = registry_->host() + "/team/app:v1";

  auto src = OpenImageSource(OciRef(tmp_ / "src"));
  auto dst = OpenImageDestination(Docker(ref), plain_);
  ASSERT_TRUE(src.ok() && dst.ok());
  EncryptOptions options;
  options.writer.chunk_size_bytes = 64 << 10;
  auto enc = EncryptImage(**src, **dst, alice.pub, options);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString() << registry_->Log();
  EXPECT_EQ(enc->tag, "v1");

  auto remote = OpenImageSource(Docker(ref), plain_);
  ASSERT_TRUE(remote.ok());
  auto info = InspectImage(**remote, alice.priv);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_EQ(info->layers.size(), 1u);
  EXPECT_EQ(info->layers[0].kind, LayerKind::kLazycrypt);
  EXPECT_TRUE(info->layers[0].opened) << info->layers[0].open_error;
  // Opening the index lazily read only part of the blob (Range requests).
  EXPECT_LT(info->layers[0].blob_bytes_read, info->layers[0].descriptor.size);

  auto verified = VerifyImage(**remote, alice.priv);
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();

  // Re-wrap for bob in the registry: a new tag, the same layer blob.
  {
    auto s = OpenImageSource(Docker(ref), plain_);
    auto d = OpenImageDestination(Docker(registry_->host() + "/team/app:v2"), plain_);
    auto added = ChangeRecipients(**s, **d, alice.priv, bob.pub, RecipientChange::kAdd);
    ASSERT_TRUE(added.ok()) << added.status().ToString();
    EXPECT_EQ(added->layers[0].source.digest, added->layers[0].result.digest);
  }

  auto v2 = OpenImageSource(Docker(registry_->host() + "/team/app:v2"), plain_);
  auto out = OpenImageDestination(OciRef(tmp_ / "dec"));
  auto dec = DecryptImage(**v2, **out, bob.priv, Uncompressed());
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  ExpectDecryptedIsSourceTar(tmp_ / "dec", dec->layers[0].result.digest, tar);
}

TEST_F(RegistryTransport, MultiPlatformIndexIsPushedAsAnIndex) {
  {
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    Descriptor a = PutImage(**writer, MakeTar(tmp_, "amd"), "amd64");
    Descriptor b = PutImage(**writer, MakeTar(tmp_, "arm"), "arm64");
    a.platform = LinuxPlatform("amd64");
    b.platform = LinuxPlatform("arm64");
    Index index;
    index.manifests = {a, b};
    auto root = (*writer)->PutBlob(std::string(kMediaTypeOciIndex), AsBytes(SerializeIndex(index)));
    ASSERT_TRUE((*writer)->Commit("latest", *root).ok());
  }
  Keys keys = MakeKey(tmp_, "k");
  const std::string ref = registry_->host() + "/multi:latest";
  auto src = OpenImageSource(OciRef(tmp_ / "src"));
  auto dst = OpenImageDestination(Docker(ref), plain_);
  auto enc = EncryptImage(**src, **dst, keys.pub, {});
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  EXPECT_EQ(enc->platform_count, 2u);

  auto client = registry::Client::Create(PlainHttp());
  ASSERT_TRUE(client.ok());
  auto manifest = (*client)->GetManifest(*registry::Reference::Parse(ref));
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ(manifest->media_type, std::string(kMediaTypeOciIndex));
  EXPECT_EQ(manifest->digest, enc->manifest.digest);

  auto remote = OpenImageSource(Docker(ref), plain_);
  auto verified = VerifyImage(**remote, keys.priv);
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  EXPECT_EQ(verified->platform_count, 2u);
}

TEST_F(RegistryTransport, FailedConversionTagsNothing) {
  std::string tar = MakeTar(tmp_, "bad");
  {
    // The config's diff_id is wrong: encryption fails after the layer blob was pushed.
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    Manifest m;
    m.media_type = std::string(kMediaTypeOciManifest);
    m.layers = {*(*writer)->PutBlob(std::string(kMediaTypeOciLayerTar), AsBytes(tar))};
    std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
                         Sha("not the tar") + R"("]}})";
    m.config = *(*writer)->PutBlob(std::string(kMediaTypeOciConfig), AsBytes(config));
    auto d = (*writer)->PutBlob(m.media_type, AsBytes(SerializeManifest(m)));
    ASSERT_TRUE((*writer)->Commit("latest", *d).ok());
  }
  Keys keys = MakeKey(tmp_, "k");
  const std::string ref = registry_->host() + "/broken:v1";
  auto src = OpenImageSource(OciRef(tmp_ / "src"));
  auto dst = OpenImageDestination(Docker(ref), plain_);
  auto enc = EncryptImage(**src, **dst, keys.pub, {});
  ASSERT_FALSE(enc.ok());
  EXPECT_THAT(enc.status().message(), HasSubstr("diff_id"));
  auto client = registry::Client::Create(PlainHttp());
  auto manifest = (*client)->GetManifest(*registry::Reference::Parse(ref));
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kNotFound) << manifest.status().ToString();
}

TEST_F(RegistryTransport, FailedBackgroundUploadFailsTheConversionNamingTheBlob) {
  // Blobs are uploaded on a thread of their own while the next layer converts. When an upload
  // fails for good, the conversion fails naming the blob, and no manifest is pushed or tagged.
  std::string tar = MakeTar(tmp_, "up");
  {
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Commit("latest", PutImage(**writer, tar, "amd64")).ok());
  }
  auto proxy = harness::FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  (*proxy)->AddFault({.fault = harness::Fault::kHttp500, .count = -1, .match = "/blobs/uploads/"});
  Keys keys = MakeKey(tmp_, "k");
  auto src = OpenImageSource(OciRef(tmp_ / "src"));
  auto dst = OpenImageDestination(Docker((*proxy)->host() + "/up:v1"), plain_);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto enc = EncryptImage(**src, **dst, keys.pub, {});
  ASSERT_FALSE(enc.ok());
  // The first failure is the layer's (uploaded in the background), reported before the
  // rewritten config is pushed.
  EXPECT_THAT(enc.status().message(), HasSubstr("push of layer 0 (sha256:")) << enc.status().ToString();
  EXPECT_THAT(enc.status().message(), HasSubstr("500")) << enc.status().ToString();
  for (const std::string& line : (*proxy)->RequestLines()) {
    EXPECT_EQ(line.find("/manifests/"), std::string::npos) << "a manifest went out: " << line;
  }
  auto client = registry::Client::Create(PlainHttp());
  auto manifest = (*client)->GetManifest(*registry::Reference::Parse(registry_->host() + "/up:v1"));
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kNotFound) << manifest.status().ToString();
}

// A layer whose blob is several upload chunks (16 MiB each) long: random bytes, stored as they
// are, so the blob is about as large as the tar.
std::string MakeBigTar(const TempDir& tmp) {
  fs::path tree = tmp / "tree-big";
  fs::create_directories(tree);
  std::string big(40u << 20, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i + 8 <= big.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(big.data() + i, &x, 8);
  }
  WriteFileString(tree / "random", big);
  fs::path tar = tmp / "big.tar";
  auto r = RunCommand("tar --format=pax --numeric-owner --mtime=@0 -C " + ShellQuote(tree.string()) +
                      " -cf " + ShellQuote(tar.string()) + " .");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return ReadFileString(tar);
}

TEST_F(RegistryTransport, LayersStreamUpInPatchesThatAreRetriedAndAFailedOneNamesTheLayer) {
  // The blob goes up as it is written: PATCHes of 16 MiB, then the PUT with the digest. A PATCH
  // refused once is sent again; one refused for good fails the conversion naming the layer, and
  // nothing is tagged.
  std::string tar = MakeBigTar(tmp_);
  {
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Commit("latest", PutImage(**writer, tar, "amd64")).ok());
  }
  auto proxy = harness::FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  Keys keys = MakeKey(tmp_, "k");
  {
    (*proxy)->AddFault({.fault = harness::Fault::kHttp500, .count = 1, .match = "PATCH "});
    auto src = OpenImageSource(OciRef(tmp_ / "src"));
    auto dst = OpenImageDestination(Docker((*proxy)->host() + "/big:v1"), plain_);
    ASSERT_TRUE(src.ok() && dst.ok());
    auto enc = EncryptImage(**src, **dst, keys.pub, {});
    ASSERT_TRUE(enc.ok()) << enc.status().ToString();
    EXPECT_EQ((*proxy)->faults_injected(), 1);
    int patches = 0;
    for (const std::string& line : (*proxy)->RequestLines()) {
      if (line.rfind("PATCH /v2/big/blobs/uploads/", 0) == 0) ++patches;
    }
    // 40 MiB and more of blob: two full chunks PATCHed (one of them twice), the rest in the PUT.
    EXPECT_EQ(patches, 3);
    auto remote = OpenImageSource(Docker(registry_->host() + "/big:v1"), plain_);
    ASSERT_TRUE(remote.ok());
    auto verified = VerifyImage(**remote, keys.priv);
    ASSERT_TRUE(verified.ok()) << verified.status().ToString();
    auto out = OpenImageDestination(OciRef(tmp_ / "dec"));
    auto dec = DecryptImage(**remote, **out, keys.priv, Uncompressed());
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    ExpectDecryptedIsSourceTar(tmp_ / "dec", dec->layers[0].result.digest, tar);
  }
  (*proxy)->AddFault({.fault = harness::Fault::kHttp500, .count = -1, .match = "PATCH "});
  const size_t seen_before = (*proxy)->RequestLines().size();
  auto src = OpenImageSource(OciRef(tmp_ / "src"));
  auto dst = OpenImageDestination(Docker((*proxy)->host() + "/big:v2"), plain_);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto enc = EncryptImage(**src, **dst, keys.pub, {});
  ASSERT_FALSE(enc.ok());
  EXPECT_THAT(enc.status().message(), HasSubstr("push of layer 0 (sha256:")) << enc.status().ToString();
  EXPECT_THAT(enc.status().message(), HasSubstr("PATCH upload at byte 0 (gave up after"))
      << enc.status().ToString();
  EXPECT_THAT(enc.status().message(), HasSubstr("HTTP 500")) << enc.status().ToString();
  const std::vector<std::string> lines = (*proxy)->RequestLines();
  for (size_t i = seen_before; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].find("/manifests/"), std::string::npos) << "a manifest went out: " << lines[i];
  }
  auto client = registry::Client::Create(PlainHttp());
  auto manifest = (*client)->GetManifest(*registry::Reference::Parse(registry_->host() + "/big:v2"));
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kNotFound) << manifest.status().ToString();
}

TEST_F(RegistryTransport, VerifiedBlobHasTheStoredBytesAndATamperedOneIsRefused) {
  std::string tar = MakeTar(tmp_, "one");
  {
    auto writer = ImageWriter::Begin(tmp_ / "src");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Commit("latest", PutImage(**writer, tar, "amd64")).ok());
  }
  const std::string ref = registry_->host() + "/team/verified:v1";
  {
    auto src = OpenImageSource(OciRef(tmp_ / "src"));
    auto dst = OpenImageDestination(Docker(ref), plain_);
    ASSERT_TRUE(src.ok() && dst.ok());
    Keys alice = MakeKey(tmp_, "alice");
    ASSERT_TRUE(EncryptImage(**src, **dst, alice.pub, EncryptOptions{}).ok());
  }
  auto remote = OpenImageSource(Docker(ref), plain_);
  ASSERT_TRUE(remote.ok());
  auto root = LoadRoot(**remote);
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  const Descriptor layer = root->images.at(0).manifest.layers.at(0);

  auto blob = (*remote)->OpenVerifiedBlob(layer);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  ASSERT_EQ((*blob)->size(), layer.size);
  std::vector<uint8_t> bytes(layer.size);
  ASSERT_TRUE((*blob)->ReadAt(0, bytes).ok());
  EXPECT_EQ(crypto::OciDigest(crypto::Sha256::Of(bytes)), layer.digest);

  // One byte changed in the registry's storage: the download's digest check refuses it.
  const std::string hex = layer.digest.substr(7);
  const auto stored = registry_->storage_dir() / "docker/registry/v2/blobs/sha256" /
                      hex.substr(0, 2) / hex / "data";
  {
    std::fstream f(stored, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << stored;
    f.seekp(static_cast<std::streamoff>(layer.size / 2));
    f.put(static_cast<char>(bytes[layer.size / 2] ^ 1));
  }
  auto tampered = (*remote)->OpenVerifiedBlob(layer);
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.status().code(), StatusCode::kAuthFailed) << tampered.status().ToString();
}

TEST(RegistryTransportAuth, CredentialsFromAnAuthFileAndWrongOnesNamed) {
  harness::RegistryOptions with_auth;
  with_auth.username = "alice";
  with_auth.password = "s3cret-pw";
  auto registry = harness::RegistryProcess::Start(with_auth);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  TempDir tmp;
  std::string tar = MakeTar(tmp, "auth");
  {
    auto writer = ImageWriter::Begin(tmp / "src");
    ASSERT_TRUE((*writer)->Commit("latest", PutImage(**writer, tar, "amd64")).ok());
  }
  Keys keys = MakeKey(tmp, "k");
  const std::string ref = (*registry)->host() + "/private:v1";
  auto write_auth = [&](const fs::path& path, const std::string& userpass) {
    auto r = RunCommand("printf %s " + ShellQuote(userpass) + " | base64 -w0");
    WriteFileString(path, R"({"auths":{")" + (*registry)->host() + R"(":{"auth":")" + r.output + R"("}}})");
  };
  write_auth(tmp / "good.json", "alice:s3cret-pw");
  write_auth(tmp / "bad.json", "alice:wrong-pw");

  TransportOptions bad;
  bad.plain_http = true;
  bad.authfile = tmp / "bad.json";
  auto src = OpenImageSource(OciRef(tmp / "src"));
  auto dst = OpenImageDestination(Docker(ref), bad);
  auto denied = EncryptImage(**src, **dst, keys.pub, {});
  ASSERT_FALSE(denied.ok());
  EXPECT_THAT(denied.status().message(), ::testing::Not(HasSubstr("wrong-pw")));
  EXPECT_THAT(denied.status().message(), HasSubstr((*registry)->host()));

  TransportOptions good;
  good.plain_http = true;
  good.authfile = tmp / "good.json";
  auto src2 = OpenImageSource(OciRef(tmp / "src"));
  auto dst2 = OpenImageDestination(Docker(ref), good);
  auto enc = EncryptImage(**src2, **dst2, keys.pub, {});
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  auto remote = OpenImageSource(Docker(ref), good);
  EXPECT_TRUE(VerifyImage(**remote, keys.priv).ok());
}

}  // namespace
}  // namespace lazycrypt::image
