// Standard ocicrypt images (what `skopeo copy --encryption-key` makes: every layer +encrypted,
// AES_256_CTR_HMAC_SHA256, JWE-wrapped keys) through lazycrypt's snapshotter on containerd 2.1,
// driven like the kubelet by our CRI client. Plain 2.1 cannot run them through the transfer-service
// pull at all, and decrypts them on the local pull only with imgcrypt's ctd-decoder installed
// (Cri2.PlainContainerd21WithImgcryptDecryptsAnOcicryptImageOnlyWithTheLocalPull). lazycrypt's
// snapshotter unpacks them itself (lazylayer/ocicrypt_unpack.h): no ctd-decoder anywhere here.
// Needs root (containerd, overlayfs, runc).
#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "crypto/digest.h"
#include "tests/containerd_peers.h"
#include "tests/cri_fixture.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using cri_testing::kDataMiB;
using cri_testing::PodRun;
using testing::CountFuseMounts;
using testing::Describe;
using testing::MustRun;
using ::testing::HasSubstr;

class Cri2Ocicrypt : public cri_testing::Cri {
 protected:
  void SetUp() override {
    Cri::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto binary = testing::Containerd21Binary();
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
    binary_ = *binary;
  }

  void Start(harness::CriPluginConfig cri, std::map<std::string, std::string> exports = {}) {
    StartContainerd(binary_, std::move(cri), std::move(exports));
    ASSERT_FALSE(HasFailure());
    ASSERT_THAT(version_, HasSubstr("2.1.")) << version_;
  }

  // The app image encrypted by skopeo for both node keys' public halves (an RSA and an EC
  // recipient), as an OCI layout in the work dir.
  fs::path EncryptToLayout(const std::string& name) {
    const fs::path dir = work_->path() / name;
    MustRun({"skopeo", "copy", "-q", "--encryption-key", "jwe:" + node_key_.pub.string(),
             "--encryption-key", "jwe:" + other_key_.pub.string(),
             "oci:" + (work_->path() / "image").string() + ":latest", "oci:" + dir.string() + ":latest"});
    return dir;
  }

  // Pushes an OCI layout to the registry; the reference names the proxy (which counts bytes).
  std::string Push(const fs::path& layout, const std::string& tag) {
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:" + layout.string() + ":latest",
             "docker://" + registry_->host() + "/lazycrypt/ocicrypt:" + tag});
    return proxy_->host() + "/lazycrypt/ocicrypt:" + tag;
  }

  // How often the snapshotter's log has `text`.
  size_t SnapshotterLogCount(const std::string& text) const {
    const std::string log = harness::ReadFileOrEmpty(work_->path() / "snapshotter.log");
    size_t n = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  }

  // Only `key` in the node's key directory.
  void NodeKeysAre(const fs::path& key) {
    const fs::path dir = work_->path() / "keys";
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms::owner_all);
    if (key.empty()) return;
    fs::copy_file(key, dir / key.filename());
    fs::permissions(dir / key.filename(), fs::perms::owner_read | fs::perms::owner_write);
  }

  void RestartSnapshotter(int signal) {
    ASSERT_TRUE(snapshotter_);
    ASSERT_TRUE(snapshotter_->Signal(signal).ok());
    (void)snapshotter_->Wait(std::chrono::seconds(20));
    snapshotter_ = testing::StartSnapshotterProcess(LAZYCRYPT_SNAPSHOTTER_BIN,
                                                    work_->path() / "snapshotter.toml",
                                                    work_->path() / "snapshotter.log");
    ASSERT_TRUE(snapshotter_);
  }

  std::string binary_;
};

// The shipped per-pod drop-in (local pull): a pod with runtime handler `lazycrypt` runs a
// skopeo-encrypted image that the node holds the RSA key of; lazycrypt downloaded and unpacked
// every layer itself (eagerly: the whole layer is needed before its HMAC can be checked), nothing
// is FUSE-mounted, and containerd's Usage of each layer is what was unpacked.
TEST_F(Cri2Ocicrypt, ShippedDropInRunsASkopeoEncryptedImageThroughLazycryptsSnapshotter) {
  ImportShippedDropIn();
  ASSERT_FALSE(HasFailure());
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  Start(cri);
  ASSERT_FALSE(HasFailure());
  const std::string ref = Push(EncryptToLayout("enc"), "1");
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("ocicrypt", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(run.status.ok()) << run.status.ToString() << Logs();
  EXPECT_EQ(run.log, marker_ + "\n");
  EXPECT_EQ(run.snapshotter, "lazycrypt");
  EXPECT_EQ(CountFuseMounts(root_), 0u) << Logs();
  // Both layers (busybox, data) unpacked by lazycrypt, with the node's RSA key.
  EXPECT_EQ(SnapshotterLogCount("unpacked ocicrypt layer"), 2u) << Logs();
  EXPECT_EQ(SnapshotterLogCount("node.pem; fetch"), 2u) << Logs();
  EXPECT_GE(BlobBytesFetched(), uint64_t{kDataMiB} << 20);
  // The data layer's Usage is its files (the 24 MiB file and the marker), not zero.
  const std::string parent = SnapshotParent("lazycrypt", run.snapshot_key);
  ASSERT_FALSE(parent.empty());
  auto usage = SnapshotUsageBytes("lazycrypt", parent);
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_GE(*usage, int64_t{kDataMiB} << 20);

  // A second pod of the same image reuses the unpacked layers: nothing downloaded again.
  const uint64_t before = BlobBytesFetched();
  PodRun again = RunPod("again", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(again.status.ok()) << again.status.ToString() << Logs();
  EXPECT_EQ(again.log, marker_ + "\n");
  EXPECT_LT(BlobBytesFetched() - before, uint64_t{1} << 20);
}

// 2.1's default pull, the transfer service, which gives a stream processor no keys: lazycrypt
// unpacks the image itself, here with the EC key (the other recipient). Its unpacked layers stay
// authorized by the node's keys on every use, across a kill -9 of the snapshotter: a new pod
// runs after the restart; once the key is gone, a new pod is refused, naming the layer.
TEST_F(Cri2Ocicrypt, TransferServicePullRunsItWithoutImgcryptAndEveryUseNeedsTheKey) {
  NodeKeysAre(other_key_.priv);
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  cri.runtimes = {{"runc", ""}, {"lazycrypt", "lazycrypt"}};
  cri.runtime_platforms = {{"lazycrypt", "lazycrypt", ""}};
  cri.transfer_unpack_snapshotters = {"overlayfs", "lazycrypt"};
  Start(cri, {{"root", root_.string()}, {"enable_remote_snapshot_annotations", "true"}});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(ctd_->Log().find("Falling back to local image pull mode") == std::string::npos);
  const std::string ref = Push(EncryptToLayout("enc"), "1");
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("transfer", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(run.status.ok()) << run.status.ToString() << Logs();
  EXPECT_EQ(run.log, marker_ + "\n");
  EXPECT_EQ(run.snapshotter, "lazycrypt");
  EXPECT_EQ(SnapshotterLogCount("unpacked ocicrypt layer"), 2u) << Logs();
  EXPECT_EQ(SnapshotterLogCount("other.pem; fetch"), 2u) << Logs();

  RestartSnapshotter(SIGKILL);
  ASSERT_FALSE(HasFailure());
  PodRun after = RunPod("after-restart", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(after.status.ok()) << after.status.ToString() << Logs();
  EXPECT_EQ(after.log, marker_ + "\n");
  // (The restarted daemon's log is a new file.) Nothing downloaded or unpacked again.
  EXPECT_EQ(SnapshotterLogCount("unpacked ocicrypt layer"), 0u) << "unpacked again" << Logs();

  NodeKeysAre(fs::path());
  PodRun refused = RunPod("no-key", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_FALSE(refused.status.ok()) << "an unpacked encrypted layer was used without its key";
  EXPECT_THAT(refused.status.message(), HasSubstr("no key on this node unwraps it"))
      << refused.status.message();
}

// A registry or mirror serving a layer whose ciphertext was altered (a consistent manifest: the
// new blob's digest and size; the image's own pubopts HMAC): lazycrypt refuses the pull naming
// the HMAC before it parses any of that layer's plaintext; nothing is committed. The same with
// the bottom layer's key missing on the node: refused before any layer is downloaded.
TEST_F(Cri2Ocicrypt, AlteredCiphertextOrAMissingKeyIsRefusedAndNothingIsCommitted) {
  ImportShippedDropIn();
  ASSERT_FALSE(HasFailure());
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  Start(cri);
  ASSERT_FALSE(HasFailure());
  const fs::path layout = EncryptToLayout("enc");
  ASSERT_FALSE(HasFailure());

  // Flip one byte in the middle of the bottom layer's ciphertext; fix up manifest and index.
  auto blob = [&](const std::string& digest) {
    return layout / "blobs" / "sha256" / digest.substr(std::string("sha256:").size());
  };
  auto write_blob = [&](const std::string& bytes) {
    const std::string digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(bytes)));
    EXPECT_TRUE(harness::WriteFile(blob(digest), bytes).ok());
    return digest;
  };
  auto index = nlohmann::json::parse(harness::ReadFileOrEmpty(layout / "index.json"));
  auto manifest_digest = index["manifests"][0]["digest"].get<std::string>();
  auto manifest = nlohmann::json::parse(harness::ReadFileOrEmpty(blob(manifest_digest)));
  auto& bottom = manifest["layers"][0];
  ASSERT_THAT(bottom["mediaType"].get<std::string>(), HasSubstr("+encrypted"));
  std::string cipher = harness::ReadFileOrEmpty(blob(bottom["digest"].get<std::string>()));
  ASSERT_GT(cipher.size(), 1000u);
  cipher[cipher.size() / 2] ^= 0x01;
  bottom["digest"] = write_blob(cipher);
  const std::string manifest_text = manifest.dump();
  index["manifests"][0]["digest"] = write_blob(manifest_text);
  index["manifests"][0]["size"] = manifest_text.size();
  ASSERT_TRUE(harness::WriteFile(layout / "index.json", index.dump()).ok());
  const std::string tampered = Push(layout, "tampered");
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("tampered", tampered, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_FALSE(run.status.ok()) << "an altered ocicrypt layer was unpacked" << Logs();
  EXPECT_THAT(run.status.message(), HasSubstr("HMAC mismatch")) << run.status.message();
  EXPECT_EQ(SnapshotCount("lazycrypt"), 0u) << Logs();
  EXPECT_EQ(SnapshotterLogCount("unpacked ocicrypt layer"), 0u) << Logs();

  // No key: refused before the download, naming the layer.
  NodeKeysAre(fs::path());
  const std::string ref = Push(EncryptToLayout("enc2"), "2");
  ASSERT_FALSE(HasFailure());
  const uint64_t before = BlobBytesFetched();
  PodRun no_key = RunPod("no-key", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_FALSE(no_key.status.ok());
  EXPECT_THAT(no_key.status.message(), HasSubstr("no key on this node unwraps it"))
      << no_key.status.message();
  EXPECT_EQ(SnapshotCount("lazycrypt"), 0u) << Logs();
  // The image config is fetched by containerd; no layer.
  EXPECT_LT(BlobBytesFetched() - before, uint64_t{1} << 20);
}

}  // namespace
}  // namespace lazycrypt
