// The eager fallback end to end: a real containerd 1.6 with lazycrypt-decoder configured as a
// stream processor pulls an encrypted busybox image from a real docker-registry and runs it with
// runc. The image is built offline (tests/data/make-busybox-image.sh), encrypted with the
// `lazycrypt` CLI and pushed with skopeo.
//
// Which client: containerd hands a stream processor the layer descriptor (and so the wrapped keys)
// only in imgcrypt's payload, only for processors named io.containerd.ocicrypt.decoder.v1.tar
// [.gzip], and only when the client asks for it: CRI with key_model "node", or imgcrypt's ctr
// (Debian 13's `ctr-imgcrypt`, fetched by tests/data/fetch-imgcrypt.sh into the build tree).
// Plain `ctr pull` sends no payload; the test checks that the decoder then says so.
//
// Needs root (containerd, overlayfs, runc).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "decoder/payload.h"
#include "image/oci.h"
#include "tests/command_util.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using harness::CommandResult;
using testing::Describe;
using testing::MustRun;
using testing::SourceDir;
using ::testing::HasSubstr;

// The harness's config is what containerd itself reads back (`containerd config dump` merges it
// with the defaults; no daemon, no root needed).
TEST(ContainerdConfig, StreamProcessorEntryIsReadBackByContainerd) {
  auto dir = harness::TempDir::Create("lc-ctd-config");
  ASSERT_TRUE(dir.ok());
  harness::ContainerdOptions options;
  options.stream_processors.push_back(harness::StreamProcessorConfig{
      std::string(decoder::kPayloadToolIdTarGzip),
      {std::string(image::kMediaTypeLazycryptLayer), "a \"quoted\" type"},
      std::string(image::kMediaTypeOciLayerTarGzip),
      "/opt/lazycrypt decoder",
      {"--decryption-keys-path", "/etc/keys"}});
  ASSERT_TRUE(harness::WriteFile(*dir / "config.toml",
                                 harness::ContainerdConfigToml(dir->path(), options))
                  .ok());
  auto dump = harness::RunCommand(
      {"containerd", "--config", (*dir / "config.toml").string(), "config", "dump"},
      std::chrono::seconds(30));
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  ASSERT_EQ(dump->exit_code, 0) << Describe(*dump);
  EXPECT_THAT(dump->stdout_text, HasSubstr("[stream_processors.\"io.containerd.ocicrypt.decoder.v1.tar.gzip\"]"));
  EXPECT_THAT(dump->stdout_text, HasSubstr("path = \"/opt/lazycrypt decoder\""));
  EXPECT_THAT(dump->stdout_text, HasSubstr("a \\\"quoted\\\" type"));
  EXPECT_THAT(dump->stdout_text, HasSubstr("root = \"" + (*dir / "root").string() + "\""));
  EXPECT_THAT(dump->stdout_text, HasSubstr("io.containerd.grpc.v1.cri"));  // disabled_plugins
}

class DecoderContainerd : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, overlayfs snapshots and runc";
    auto work = harness::TempDir::Create("lc-decoder-ctd");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();

    // imgcrypt's ctr (the client that sends the payload), unpacked into the build tree once.
    auto fetched = harness::RunCommand(
        {(SourceDir() / "tests/data/fetch-imgcrypt.sh").string(), LAZYCRYPT_IMGCRYPT_CACHE},
        std::chrono::seconds(300));
    ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
    ASSERT_EQ(fetched->exit_code, 0) << "fetching Debian 13's imgcrypt failed: "
                                     << Describe(*fetched);
    std::string bin_dir = fetched->stdout_text;
    while (!bin_dir.empty() && (bin_dir.back() == '\n' || bin_dir.back() == '\r')) {
      bin_dir.pop_back();
    }
    ctr_imgcrypt_ = bin_dir + "/ctr-imgcrypt";

    // Keys and a plain busybox image; a registry to push the encrypted variants to.
    MustRun({(SourceDir() / "tests/data/make-busybox-image.sh").string(), (w / "plain").string(),
             "latest"});
    MustRun({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", (w / "node.pem").string()});
    MustRun({"openssl", "pkey", "-in", (w / "node.pem").string(), "-pubout", "-out",
             (w / "node.pub.pem").string()});
    MustRun({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", (w / "stranger.pem").string()});
    ASSERT_FALSE(HasFailure());
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    fs::create_directories(w / "keys");
  }

  // Encrypts the busybox image (`format`: lazycrypt or ocicrypt) and pushes it; returns the ref.
  std::string PushEncrypted(const std::string& format, const std::string& tag) {
    const fs::path& w = work_->path();
    const std::string layout = (w / ("enc-" + tag)).string();
    MustRun({LAZYCRYPT_BIN, "encrypt", "--format", format, "--recipient",
             "jwe:" + (w / "node.pub.pem").string(), "oci:" + (w / "plain").string() + ":latest",
             "oci:" + layout + ":latest"});
    const std::string ref = registry_->host() + "/lazycrypt/busybox:" + tag;
    MustRun({"skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":latest",
             "docker://" + ref});
    return ref;
  }

  // containerd with lazycrypt-decoder under the processor name that receives imgcrypt's payload;
  // it returns zstd while `returns` says gzip: containerd's decompressor detects the format.
  std::unique_ptr<harness::ContainerdProcess> StartContainerd() {
    harness::ContainerdOptions options;
    options.stream_processors.push_back(harness::StreamProcessorConfig{
        std::string(decoder::kPayloadToolIdTarGzip),
        {std::string(image::kMediaTypeOcicryptLayerTarGzip),
         std::string(image::kMediaTypeLazycryptLayer)},
        std::string(image::kMediaTypeOciLayerTarGzip),
        LAZYCRYPT_DECODER_BIN,
        {"--decryption-keys-path", (work_->path() / "keys").string()}});
    auto containerd = harness::ContainerdProcess::Start(options);
    EXPECT_TRUE(containerd.ok()) << containerd.status().ToString();
    return containerd.ok() ? std::move(*containerd) : nullptr;
  }

  // `ctr run --rm REF ID /bin/busybox echo hello` prints hello.
  void ExpectRunsHello(harness::ContainerdProcess& ctd, const std::string& ref,
                       const std::string& id) {
    auto run = ctd.Ctr({"run", "--rm", ref, id, "/bin/busybox", "echo", "hello"});
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    EXPECT_EQ(run->exit_code, 0) << Describe(*run) << "\ncontainerd log:\n" << ctd.Log();
    EXPECT_EQ(run->stdout_text, "hello\n");
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::string ctr_imgcrypt_;
};

TEST_F(DecoderContainerd, PullsAndRunsEncryptedBusyboxAndFailsWithoutTheKey) {
  const fs::path& w = work_->path();
  const std::string ref = PushEncrypted("lazycrypt", "enc");
  ASSERT_FALSE(HasFailure()) << registry_->Log();
  fs::copy_file(w / "stranger.pem", w / "keys" / "stranger.pem");
  auto ctd = StartContainerd();
  ASSERT_TRUE(ctd);

  // 1. The node's keys do not include a recipient: the pull fails, naming the problem.
  auto denied = ctd->Client(ctr_imgcrypt_, {"images", "pull", "--plain-http", ref});
  ASSERT_TRUE(denied.ok()) << denied.status().ToString();
  EXPECT_NE(denied->exit_code, 0) << Describe(*denied);
  EXPECT_THAT(denied->stderr_text, HasSubstr("lazycrypt-decoder"));
  EXPECT_THAT(denied->stderr_text, HasSubstr("is a recipient")) << Describe(*denied);
  EXPECT_THAT(denied->stderr_text, HasSubstr("stranger.pem"));

  // 2. Plain ctr sends no payload: the decoder explains which setups do.
  auto no_payload = ctd->Ctr({"images", "pull", "--plain-http", ref});
  ASSERT_TRUE(no_payload.ok()) << no_payload.status().ToString();
  EXPECT_NE(no_payload->exit_code, 0) << Describe(*no_payload);
  EXPECT_THAT(no_payload->stderr_text, HasSubstr("no payload on fd 3")) << Describe(*no_payload);

  // 3. With the node's key in the keys directory (CRI's key model "node" works the same way) the
  //    image is pulled through the decoder and runs.
  fs::copy_file(w / "node.pem", w / "keys" / "node.pem");
  auto pulled = ctd->Client(ctr_imgcrypt_, {"images", "pull", "--plain-http", ref});
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n" << ctd->Log();
  const std::string id = "lc-decoder-" + std::to_string(getpid());
  ExpectRunsHello(*ctd, ref, id);

  // The unpacked tree is the image's: a file from the layer reads back through the container.
  auto cat = ctd->Ctr({"run", "--rm", ref, id + "-cat", "/bin/busybox", "cat", "/etc/passwd"});
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(cat->exit_code, 0) << Describe(*cat);
  EXPECT_THAT(cat->stdout_text, HasSubstr("root:"));
}

// Keys given to the client (`ctr-imgcrypt --key`) travel in the payload, as Go's imgcrypt
// encodes it; the same processor entry also decrypts standard ocicrypt (tar+gzip+encrypted)
// layers. Each image gets its own containerd: both unpack to the same snapshot chain.
TEST_F(DecoderContainerd, KeysFromThePayloadAndOcicryptLayers) {
  const fs::path& w = work_->path();
  const std::string lazy_ref = PushEncrypted("lazycrypt", "lazy");
  const std::string std_ref = PushEncrypted("ocicrypt", "std");
  ASSERT_FALSE(HasFailure()) << registry_->Log();
  const std::string key_arg = (w / "node.pem").string();
  int n = 0;
  for (const std::string& ref : {lazy_ref, std_ref}) {
    SCOPED_TRACE(ref);
    auto ctd = StartContainerd();
    ASSERT_TRUE(ctd);
    auto pulled = ctd->Client(ctr_imgcrypt_, {"images", "pull", "--plain-http", "--key", key_arg,
                                              ref});
    ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
    ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n" << ctd->Log();
    ExpectRunsHello(*ctd, ref, "lc-decoder-" + std::to_string(getpid()) + "-" +
                                   std::to_string(n++));
  }
}

}  // namespace
}  // namespace lazycrypt
