// ocicrypt key providers through the real `lazycrypt` binary and our test provider
// (lazycrypt-test-key-provider, a subprocess: as a command, and as a gRPC server on a unix
// socket): encrypt --recipient provider:NAME, decrypt/inspect/verify --key provider:NAME, mixed
// JWE + provider recipients, and the errors when nothing can unwrap the layer key.
//
// Not here: interop with skopeo. Debian 12's skopeo 1.9.3 is built against Debian's ocicrypt
// 1.0.3, which predates the keyprovider protocol (`--encryption-key provider:NAME` is refused).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr std::string_view kProviderAnnotation = "org.opencontainers.image.enc.keys.provider.test";
constexpr std::string_view kJweAnnotation = "org.opencontainers.image.enc.keys.jwe";

std::string Oci(const fs::path& dir) { return ShellQuote("oci:" + dir.string()); }

class KeyProviderCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeBusyboxImage(dir_->path() / "plain");
    std::ofstream(dir_->path() / "kek", std::ios::binary) << std::string(32, '\x5a');
    WriteConfig("cmd.conf", R"({"cmd":{"path":")" + std::string(TEST_KEY_PROVIDER) +
                                R"(","args":["--key-file",")" + (dir_->path() / "kek").string() +
                                "\"]}}");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static void WriteConfig(const std::string& name, const std::string& test_attrs) {
    WriteFileString(dir_->path() / name, R"({"key-providers":{"test":)" + test_attrs + "}}");
  }
  static fs::path Path(const std::string& name) { return dir_->path() / name; }
  // `lazycrypt <args>` with OCICRYPT_KEYPROVIDER_CONFIG naming `config` (none if empty).
  static CommandResult Run(const std::string& config, const std::string& args) {
    std::string env = config.empty() ? "env -u OCICRYPT_KEYPROVIDER_CONFIG "
                                     : "OCICRYPT_KEYPROVIDER_CONFIG=" + ShellQuote(Path(config).string()) + " ";
    return RunCommand(env + ShellQuote(LazycryptBin()) + " " + args);
  }
  static void ExpectPlainImage(const fs::path& decrypted) {
    image::LoadedImage plain = LoadLayoutImage(Path("plain"));
    image::LoadedImage out = LoadLayoutImage(decrypted);
    ASSERT_EQ(out.manifest.layers.size(), plain.config.diff_ids.size());
    for (size_t i = 0; i < out.manifest.layers.size(); ++i) {
      EXPECT_EQ(out.manifest.layers[i].media_type.find("encrypted"), std::string::npos);
      // A decrypted lazycrypt layer keeps its salt header (docs/FORMAT.md §5.1): its own diff_id,
      // and the plain layer's tar after the header.
      EXPECT_EQ(DecompressedSha256(BlobPath(decrypted, out.manifest.layers[i].digest)),
                out.config.diff_ids[i]);
      EXPECT_EQ(SourceTarSha256(BlobPath(decrypted, out.manifest.layers[i].digest)),
                plain.config.diff_ids[i]);
    }
  }
  static TempDir* dir_;
};
TempDir* KeyProviderCli::dir_ = nullptr;

TEST_F(KeyProviderCli, EncryptForACommandProviderThenDecryptWithIt) {
  auto enc = Run("cmd.conf", "encrypt --recipient provider:test " + Oci(Path("plain")) + " " +
                                 Oci(Path("enc-cmd")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  image::LoadedImage encrypted = LoadLayoutImage(Path("enc-cmd"));
  for (const auto& layer : encrypted.manifest.layers) {
    EXPECT_FALSE(layer.Annotation(kProviderAnnotation).empty()) << layer.digest;
    EXPECT_TRUE(layer.Annotation(kJweAnnotation).empty()) << layer.digest;
  }
  auto dec = Run("cmd.conf", "decrypt --key provider:test " + Oci(Path("enc-cmd")) + " " +
                                 Oci(Path("dec-cmd")));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  ExpectPlainImage(Path("dec-cmd"));
  auto verify = Run("cmd.conf", "verify --key provider:test " + Oci(Path("enc-cmd")));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  auto inspect = Run("cmd.conf", "inspect --files --key provider:test " + Oci(Path("enc-cmd")));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_THAT(inspect.output, HasSubstr("bin/busybox"));
}

TEST_F(KeyProviderCli, WithoutTheProviderDecryptFailsNamingWhatWasTried) {
  auto enc = Run("cmd.conf", "encrypt --recipient provider:test " + Oci(Path("plain")) + " " +
                                 Oci(Path("enc-only")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  KeyPair stranger = GenerateKeyPair(dir_->path(), "ec256", "stranger");
  auto with_key = Run("", "decrypt --key " + ShellQuote(stranger.priv.string()) + " " +
                              Oci(Path("enc-only")) + " " + Oci(Path("dec-x")));
  EXPECT_EQ(with_key.exit_code, 1) << with_key.output;
  EXPECT_THAT(with_key.output, HasSubstr("wrapped only for key providers [provider:test]"));
  EXPECT_THAT(with_key.output, HasSubstr("stranger.pem"));
  EXPECT_FALSE(fs::exists(Path("dec-x") / "index.json"));

  auto no_config = Run("", "decrypt --key provider:test " + Oci(Path("enc-only")) + " " +
                               Oci(Path("dec-y")));
  EXPECT_EQ(no_config.exit_code, 1);
  EXPECT_THAT(no_config.output, HasSubstr("OCICRYPT_KEYPROVIDER_CONFIG"));

  auto no_key = Run("cmd.conf", "decrypt " + Oci(Path("enc-only")) + " " + Oci(Path("dec-z")));
  EXPECT_EQ(no_key.exit_code, 1);
  EXPECT_THAT(no_key.output, HasSubstr("--key is required"));

  // A provider that answers garbage: the error names it.
  WriteConfig("garbage.conf", R"({"cmd":{"path":")" + std::string(TEST_KEY_PROVIDER) +
                                  R"(","args":["--key-file",")" + Path("kek").string() +
                                  R"(","--garbage"]}})");
  auto garbage = Run("garbage.conf", "decrypt --key provider:test " + Oci(Path("enc-only")) + " " +
                                         Oci(Path("dec-w")));
  EXPECT_EQ(garbage.exit_code, 1);
  EXPECT_THAT(garbage.output, HasSubstr("key provider 'test'"));
  EXPECT_THAT(garbage.output, HasSubstr("not valid JSON"));
}

TEST_F(KeyProviderCli, MixedRecipientsOpenWithEitherKeyOrProvider) {
  KeyPair pair = GenerateKeyPair(dir_->path(), "rsa2048", "mixed");
  auto enc = Run("cmd.conf", "encrypt --recipient jwe:" + ShellQuote(pair.pub.string()) +
                                 " --recipient provider:test " + Oci(Path("plain")) + " " +
                                 Oci(Path("enc-mixed")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto by_key = Run("", "decrypt --key " + ShellQuote(pair.priv.string()) + " " +
                            Oci(Path("enc-mixed")) + " " + Oci(Path("dec-mixed-key")));
  ASSERT_EQ(by_key.exit_code, 0) << by_key.output;
  ExpectPlainImage(Path("dec-mixed-key"));
  auto by_provider = Run("cmd.conf", "decrypt --key provider:test " + Oci(Path("enc-mixed")) + " " +
                                         Oci(Path("dec-mixed-provider")));
  ASSERT_EQ(by_provider.exit_code, 0) << by_provider.output;
  ExpectPlainImage(Path("dec-mixed-provider"));
}

TEST_F(KeyProviderCli, OcicryptFormatLayersUseProvidersToo) {
  auto enc = Run("cmd.conf", "encrypt --format ocicrypt --recipient provider:test " +
                                 Oci(Path("plain")) + " " + Oci(Path("enc-ocicrypt")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto dec = Run("cmd.conf", "decrypt --key provider:test " + Oci(Path("enc-ocicrypt")) + " " +
                                 Oci(Path("dec-ocicrypt")));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  ExpectPlainImage(Path("dec-ocicrypt"));
}

TEST_F(KeyProviderCli, GrpcProviderOnAUnixSocket) {
  const fs::path socket = Path("kp.sock");
  auto server = harness::Subprocess::Start({TEST_KEY_PROVIDER, "--key-file", Path("kek").string(),
                                            "--grpc", "unix://" + socket.string()});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  for (int i = 0; i < 100 && !fs::exists(socket); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(socket));
  WriteConfig("grpc.conf", R"({"grpc":"unix://)" + socket.string() + "\"}");
  // Wrapped through gRPC, unwrapped through the command: the same provider either way.
  auto enc = Run("grpc.conf", "encrypt --recipient provider:test " + Oci(Path("plain")) + " " +
                                  Oci(Path("enc-grpc")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto dec = Run("cmd.conf", "decrypt --key provider:test " + Oci(Path("enc-grpc")) + " " +
                                 Oci(Path("dec-grpc")));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  ExpectPlainImage(Path("dec-grpc"));
  auto dec2 = Run("grpc.conf", "decrypt --key provider:test " + Oci(Path("enc-grpc")) + " " +
                                   Oci(Path("dec-grpc2")));
  ASSERT_EQ(dec2.exit_code, 0) << dec2.output;
  (*server)->Stop();
  auto gone = Run("grpc.conf", "decrypt --key provider:test " + Oci(Path("enc-grpc")) + " " +
                                   Oci(Path("dec-grpc3")));
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_THAT(gone.output, HasSubstr("key provider 'test' (grpc unix://"));
}

}  // namespace
}  // namespace lazycrypt::testing
