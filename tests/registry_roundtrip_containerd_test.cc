// Issue 3's publisher round trip, end to end with the real things: a busybox image built offline
// in an OCI layout is encrypted by the `lazycrypt` binary into a real docker-registry, inspected
// there, decrypted back into the registry (docker://) and into an OCI layout, and the decrypted
// image is pulled from the registry by a real containerd 1.6 (`ctr images pull --plain-http`) and
// run with runc (`ctr run --rm`), printing the marker the image was built with
// (tests/data/make-busybox-image.sh writes "lazycrypt-sample" to /etc/hostname).
//
// Needs root (containerd, overlayfs snapshots, runc).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "image/oci.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kMarker = "lazycrypt-sample\n";  // /etc/hostname of the busybox image

// `lazycrypt <args>` against the plain-HTTP test registry; stdout and stderr kept apart.
harness::CommandResult LazycryptMustRun(std::vector<std::string> args) {
  args.insert(args.begin(), LAZYCRYPT_BIN);
  return MustRun(args, std::chrono::seconds(300));
}

nlohmann::json ParseJson(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON:\n" << text;
  return j;
}

TEST(RegistryRoundTripContainerd, EncryptInspectDecryptAndRunWithContainerd) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, overlayfs snapshots and runc";
  TempDir tmp;
  const fs::path& w = tmp.path();
  MakeBusyboxImage(w / "plain");
  KeyPair key = GenerateKeyPair(w, "rsa2048", "publisher");
  ASSERT_FALSE(HasFailure());
  image::LoadedImage original = LoadLayoutImage(w / "plain");
  ASSERT_EQ(original.config.diff_ids.size(), 1u);

  auto registry = harness::RegistryProcess::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  const std::string repo = (*registry)->host() + "/lazycrypt/busybox";
  const std::string enc_ref = "docker://" + repo + ":enc";
  const std::string dec_ref = "docker://" + repo + ":dec";

  // 1. Encrypt from the OCI layout into the registry.
  LazycryptMustRun({"encrypt", "--quiet", "--plain-http", "--recipient", "jwe:" + key.pub.string(),
                    "oci:" + (w / "plain").string() + ":latest", enc_ref});
  ASSERT_FALSE(HasFailure()) << (*registry)->Log();

  // 2. Inspect it there: without a key (what anyone sees) and with it (the TOC opens).
  auto anyone = ParseJson(
      LazycryptMustRun({"inspect", "--json", "--plain-http", enc_ref}).stdout_text);
  ASSERT_EQ(anyone["layers"].size(), 1u);
  EXPECT_EQ(anyone["layers"][0]["kind"], "lazycrypt");
  EXPECT_EQ(anyone["layers"][0]["mediaType"], std::string(image::kMediaTypeLazycryptLayer));
  // A diff_id of its own (docs/FORMAT.md §5.1): never the plain original's chain ID.
  EXPECT_NE(anyone["layers"][0]["diffID"], original.config.diff_ids[0]);
  const std::string enc_diff_id = anyone["layers"][0]["diffID"].get<std::string>();
  EXPECT_THAT(anyone["layers"][0]["tocDigest"].get<std::string>(), ::testing::StartsWith("sha256:"));
  EXPECT_FALSE(anyone["layers"][0].contains("openedWith"));
  auto keyed = ParseJson(
      LazycryptMustRun({"inspect", "--json", "--plain-http", "--key", key.priv.string(), enc_ref})
          .stdout_text);
  EXPECT_EQ(keyed["layers"][0]["openedWith"], key.priv.string());
  EXPECT_GT(keyed["layers"][0]["fileCount"].get<int>(), 100);
  LazycryptMustRun({"verify", "--plain-http", "--key", key.priv.string(), enc_ref});

  // 3. Decrypt back into the registry and into an OCI layout.
  LazycryptMustRun({"decrypt", "--quiet", "--plain-http", "--key", key.priv.string(), enc_ref,
                    dec_ref});
  LazycryptMustRun({"decrypt", "--quiet", "--plain-http", "--key", key.priv.string(), enc_ref,
                    "oci:" + (w / "dec").string() + ":latest"});
  ASSERT_FALSE(HasFailure()) << (*registry)->Log();

  // The decrypted images' layers are plain again and hold the encrypted layer's tar stream: the
  // salt header (docs/FORMAT.md §5.1), then exactly the original tar stream. The config (the
  // encrypted image's) names its diff_id; after the header the SHA-256 is the original diff_id.
  image::LoadedImage layout_dec = LoadLayoutImage(w / "dec");
  EXPECT_EQ(layout_dec.config.diff_ids, std::vector<std::string>{enc_diff_id});
  ASSERT_EQ(layout_dec.manifest.layers.size(), 1u);
  EXPECT_EQ(layout_dec.manifest.layers[0].media_type, std::string(image::kMediaTypeOciLayerTarZstd));
  EXPECT_EQ(DecompressedSha256(BlobPath(w / "dec", layout_dec.manifest.layers[0].digest)),
            enc_diff_id);
  EXPECT_EQ(SourceTarSha256(BlobPath(w / "dec", layout_dec.manifest.layers[0].digest)),
            original.config.diff_ids[0]);
  auto registry_dec = ParseJson(
      LazycryptMustRun({"inspect", "--json", "--plain-http", dec_ref}).stdout_text);
  ASSERT_EQ(registry_dec["layers"].size(), 1u);
  const auto& dec_layer = registry_dec["layers"][0];
  EXPECT_NE(dec_layer["kind"], "lazycrypt");
  EXPECT_NE(dec_layer["kind"], "ocicrypt");
  EXPECT_EQ(dec_layer["diffID"], enc_diff_id);
  EXPECT_EQ(dec_layer["digest"], layout_dec.manifest.layers[0].digest);  // same bytes both ways
  EXPECT_EQ(SourceTarSha256(RegistryBlobPath((*registry)->storage_dir(),
                                             dec_layer["digest"].get<std::string>())),
            original.config.diff_ids[0]);

  // 4. containerd pulls the decrypted image from the registry and runc runs it.
  auto containerd = harness::ContainerdProcess::Start();
  ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
  harness::ContainerdProcess& ctd = **containerd;
  const std::string ctr_ref = repo + ":dec";
  auto pulled = ctd.Ctr({"images", "pull", "--plain-http", ctr_ref});
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n" << ctd.Log();
  const std::string id = "lc-roundtrip-" + std::to_string(getpid());
  auto run = ctd.Ctr({"run", "--rm", ctr_ref, id, "/bin/busybox", "cat", "/etc/hostname"});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->exit_code, 0) << Describe(*run) << "\ncontainerd log:\n" << ctd.Log();
  EXPECT_EQ(run->stdout_text, kMarker);
  // containerd checked the unpacked layer against the config's diff_id and committed it under the
  // chain ID, which for a one-layer image is that diff_id: the encrypted layer's, not the
  // original's (the salt header's tar record was ignored on extraction: the file printed above).
  auto snapshots = ctd.Ctr({"snapshots", "ls"});
  ASSERT_TRUE(snapshots.ok()) << snapshots.status().ToString();
  EXPECT_THAT(snapshots->stdout_text, HasSubstr(enc_diff_id)) << Describe(*snapshots);
  EXPECT_THAT(snapshots->stdout_text, Not(HasSubstr(original.config.diff_ids[0])))
      << Describe(*snapshots);
  auto check = ctd.Ctr({"images", "check"});
  ASSERT_TRUE(check.ok());
  EXPECT_THAT(check->stdout_text, HasSubstr(ctr_ref));
  EXPECT_THAT(check->stdout_text, HasSubstr("complete"));
}

}  // namespace
}  // namespace lazycrypt::testing
