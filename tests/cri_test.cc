// The Kubernetes path end to end, without a kubelet: our CRI client (lc_cri_client, generated from
// the CRI api.proto of Debian 13's golang-github-kubernetes-cri-api-dev) drives containerd's CRI
// plugin the way the kubelet does -- PullImage with the pod's sandbox config and runtime handler,
// RunPodSandbox (host network: no CNI; a busybox-based pause-like sandbox image from the test's
// registry), CreateContainer, StartContainer, ContainerStatus, the CRI log file, StopPodSandbox,
// RemovePodSandbox -- against a real lazycrypt-snapshotter (FUSE layers), a real docker-registry
// behind a byte-counting FaultProxy, and runc.
//   - containerd 1.6 (Debian 12), lazycrypt as the CRI snapshotter with snapshot annotations on: a
//     pod reads a file from an encrypted layer into its log; the layer is mounted lazily.
//   - containerd 1.7 (Debian 13, unpacked into the build tree): runtime handler `lazycrypt` names
//     the lazycrypt snapshotter, the default handler keeps overlayfs, on the same containerd.
//   - a pod whose image needs a key the node lacks fails, naming the layer and the keys tried, and
//     nothing is left mounted.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cri/cri_client.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using testing::CountFuseMounts;
using testing::Describe;
using testing::MountsUnder;
using testing::MustRun;
using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr int kDataMiB = 24;  // random, incompressible: what a lazy mount must not download

// What one pod run produced.
struct PodRun {
  Status status;                 // the first CRI call that failed, if any
  cri::ContainerState container;
  std::string log;               // the container's log text (stdout + stderr)
  std::string snapshotter;       // from containerd's container info
  std::string snapshot_key;
};

class Cri : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    auto work = harness::TempDir::Create("lc-cri");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();
    root_ = w / "state";

    node_key_ = testing::GenerateKeyPair(w, "rsa2048", "node");
    other_key_ = testing::GenerateKeyPair(w, "ec256", "other");
    fs::create_directories(w / "keys");
    fs::permissions(w / "keys", fs::perms::owner_all);
    fs::copy_file(node_key_.priv, w / "keys" / "node.pem");
    fs::permissions(w / "keys" / "node.pem", fs::perms::owner_read | fs::perms::owner_write);

    // The application image: busybox plus a layer with a marker and incompressible data.
    std::mt19937_64 rng(std::random_device{}());
    marker_ = "lazycrypt-cri-marker-" + std::to_string(rng());
    testing::MakeBusyboxImage(w / "image");
    ASSERT_FALSE(HasFailure());
    fs::create_directories(w / "data-root" / "data");
    ASSERT_TRUE(harness::WriteFile(w / "data-root" / "data" / "marker.txt", marker_ + "\n").ok());
    MustRun({"dd", "if=/dev/urandom", "of=" + (w / "data-root" / "data" / "big.bin").string(),
             "bs=1M", "count=" + std::to_string(kDataMiB), "status=none"});
    MustRun({"tar", "--numeric-owner", "-C", (w / "data-root").string(), "-cf",
             (w / "data.tar").string(), "data"});
    MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
             (w / "data.tar").string()});
    // The pause-like sandbox image: busybox sleeping (plain layers).
    testing::MakeBusyboxImage(w / "pause");
    ASSERT_FALSE(HasFailure());
    MustRun({"umoci", "config", "--image", (w / "pause").string() + ":latest",
             "--config.entrypoint", "/bin/sleep", "--config.cmd", "3600"});
    ASSERT_FALSE(HasFailure());

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    auto proxy = harness::FaultProxy::Start(registry_->port());
    ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
    proxy_ = std::move(*proxy);
    for (const std::string& host : {registry_->host(), proxy_->host()}) {
      fs::create_directories(w / "hosts" / host);
      ASSERT_TRUE(harness::WriteFile(w / "hosts" / host / "hosts.toml",
                                     "server = \"http://" + host + "\"\n")
                      .ok());
    }
    // Straight into the registry: the proxy counts only what pulls of the app image fetch.
    sandbox_image_ = registry_->host() + "/lazycrypt/pause:1";
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false",
             "oci:" + (w / "pause").string() + ":latest", "docker://" + sandbox_image_});
    plain_image_ = registry_->host() + "/lazycrypt/plain:1";
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false",
             "oci:" + (w / "image").string() + ":latest", "docker://" + plain_image_});
    ASSERT_FALSE(HasFailure());

    socket_ = w / "run" / "snapshotter.sock";
    ASSERT_TRUE(harness::WriteFile(
                    w / "snapshotter.toml",
                    "address = \"" + socket_.string() + "\"\nroot = \"" + root_.string() +
                        "\"\nlog_level = \"debug\"\n[keys]\ndirs = [\"" + (w / "keys").string() +
                        "\"]\n[registry]\nhosts_dir = \"" + (w / "hosts").string() + "\"\n")
                    .ok());
    snapshotter_ = testing::StartSnapshotterProcess(LAZYCRYPT_SNAPSHOTTER_BIN,
                                                    w / "snapshotter.toml", w / "snapshotter.log");
  }

  void TearDown() override {
    if (client_) {
      for (const auto& id : pods_) {
        (void)client_->StopPodSandbox(id);
        (void)client_->RemovePodSandbox(id);
      }
    }
    client_.reset();
    if (ctd_) ctd_->Stop();
    testing::StopSnapshotterAndDetachMounts(snapshotter_, work_ ? work_->path() : fs::path());
  }

  // containerd (`binary`) with the CRI plugin and lazycrypt as a proxy snapshotter.
  void StartContainerd(const std::string& binary, harness::CriPluginConfig cri) {
    cri.sandbox_image = sandbox_image_;
    cri.registry_config_path = work_->path() / "hosts";
    harness::ContainerdOptions options;
    options.binary = binary;
    options.cri = cri;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string()});
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
    auto client = cri::CriClient::Connect(ctd_->socket());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    auto version = client_->Version();
    ASSERT_TRUE(version.ok()) << version.status().ToString() << Logs();
    version_ = *version;
  }

  // Encrypts the app image for `recipient` into the registry; the reference names the proxy.
  std::string Publish(const std::string& tag, const fs::path& recipient) {
    MustRun({LAZYCRYPT_BIN, "encrypt", "--plain-http", "-r", "jwe:" + recipient.string(),
             "oci:" + (work_->path() / "image").string() + ":latest",
             "docker://" + registry_->host() + "/lazycrypt/app:" + tag});
    return proxy_->host() + "/lazycrypt/app:" + tag;
  }

  // Like the kubelet: pull (with the sandbox config), run the sandbox, create and start one
  // container running `command`, wait for it to exit, read its log and containerd's info.
  PodRun RunPod(const std::string& name, const std::string& image, const std::string& handler,
                const std::vector<std::string>& command, bool handler_annotation = true) {
    PodRun run;
    cri::PodSpec pod;
    pod.name = name;
    pod.uid = name + "-" + std::to_string(getpid());
    pod.runtime_handler = handler;
    pod.runtime_handler_annotation = handler_annotation;
    pod.log_directory = work_->path() / "pods" / name;
    fs::create_directories(pod.log_directory);
    auto pulled = client_->PullImage(image, &pod);
    if (!pulled.ok()) {
      run.status = pulled.status();
      return run;
    }
    auto pod_id = client_->RunPodSandbox(pod);
    if (!pod_id.ok()) {
      run.status = pod_id.status();
      return run;
    }
    pods_.push_back(*pod_id);
    auto id = client_->CreateContainer(
        *pod_id, pod, {.name = "main", .image = image, .command = command, .args = {},
                       .log_path = "main.log"});
    if (!id.ok()) {
      run.status = id.status();
      return run;
    }
    run.status = client_->StartContainer(*id);
    if (!run.status.ok()) return run;
    auto state = client_->WaitForExit(*id, std::chrono::seconds(60));
    if (!state.ok()) {
      run.status = state.status();
      return run;
    }
    run.container = *state;
    auto log = harness::ReadFileOrEmpty(state->log_path);
    auto text = cri::ParseCriLog(log);
    EXPECT_TRUE(text.ok()) << text.status().ToString() << "\n" << log;
    if (text.ok()) run.log = *text;
    auto info = nlohmann::json::parse(state->info_json, nullptr, false);
    EXPECT_FALSE(info.is_discarded()) << state->info_json;
    if (info.is_object()) {
      run.snapshotter = info.value("snapshotter", "");
      run.snapshot_key = info.value("snapshotKey", "");
    }
    return run;
  }

  // `ctr -n k8s.io snapshots --snapshotter S info KEY` succeeds.
  bool SnapshotExists(const std::string& snapshotter, const std::string& key) {
    auto r = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", snapshotter, "info", key});
    return r.ok() && r->exit_code == 0;
  }

  std::string Logs() const {
    return "\ncontainerd log:\n" + (ctd_ ? ctd_->Log() : std::string()) +
           "\nsnapshotter log:\n" + harness::ReadFileOrEmpty(work_->path() / "snapshotter.log");
  }

  // Response body bytes the proxy relayed for blob requests (layers and config).
  uint64_t BlobBytesFetched() const {
    uint64_t n = 0;
    for (const auto& r : proxy_->Requests()) {
      if (r.request_line.find("/blobs/") != std::string::npos) n += r.response_body_bytes;
    }
    return n;
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<harness::FaultProxy> proxy_;
  std::unique_ptr<harness::Subprocess> snapshotter_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  std::unique_ptr<cri::CriClient> client_;
  std::vector<std::string> pods_;
  testing::KeyPair node_key_, other_key_;
  fs::path root_, socket_;
  std::string marker_, sandbox_image_, plain_image_, version_;
};

TEST_F(Cri, Containerd16PodReadsAnEncryptedFileIntoItsLogFromALazyMount) {
  harness::CriPluginConfig cri;
  cri.snapshotter = "lazycrypt";
  StartContainerd("containerd", cri);
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(version_, HasSubstr("1.6.")) << version_;
  const std::string ref = Publish("1", node_key_.pub);
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("reader", ref, "", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(run.status.ok()) << run.status.ToString() << Logs();
  EXPECT_EQ(run.container.exit_code, 0) << run.container.reason << " " << run.container.message;
  EXPECT_EQ(run.log, marker_ + "\n") << Logs();
  EXPECT_EQ(run.snapshotter, "lazycrypt");
  EXPECT_TRUE(SnapshotExists("lazycrypt", run.snapshot_key)) << run.snapshot_key;
  // Both lazycrypt layers are FUSE mounts; far less than the data layer was fetched.
  EXPECT_EQ(CountFuseMounts(root_), 2u) << Logs();
  const uint64_t fetched = BlobBytesFetched();
  EXPECT_LT(fetched, (uint64_t{kDataMiB} << 20) / 4) << "fetched " << fetched << " bytes";
  EXPECT_GT(fetched, 0u);
  RecordProperty("blob_bytes_fetched", std::to_string(fetched));
}

TEST_F(Cri, Containerd17RuntimeHandlerLazycryptUsesLazycryptAndTheDefaultKeepsOverlayfs) {
  auto fetched = harness::RunCommand(
      {(testing::SourceDir() / "tests/data/fetch-trixie-package.sh").string(),
       LAZYCRYPT_TEST_CACHE "/containerd17", "containerd", "usr/bin/containerd"},
      std::chrono::seconds(300));
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  ASSERT_EQ(fetched->exit_code, 0) << Describe(*fetched);
  const std::string binary = fetched->stdout_text.substr(0, fetched->stdout_text.find('\n'));
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  cri.runtimes = {{"runc", ""}, {"lazycrypt", "lazycrypt"}};
  StartContainerd(binary, cri);
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(version_, HasSubstr("1.7.")) << version_;
  const std::string ref = Publish("rc", node_key_.pub);
  ASSERT_FALSE(HasFailure());

  // containerd 1.7 ignores ImageSpec.runtime_handler: without the sandbox annotation
  // io.containerd.cri.runtime-handler the pull goes to the default snapshotter (overlayfs), which
  // cannot apply a lazycrypt layer. docs/KUBERNETES.md tells operators to set the annotation.
  const std::string ref2 = Publish("rc-no-annotation", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  PodRun unannotated =
      RunPod("unannotated", ref2, "lazycrypt", {"/bin/cat", "/data/marker.txt"}, false);
  ASSERT_FALSE(unannotated.status.ok()) << "containerd 1.7 pulled through the runtime handler";
  EXPECT_THAT(unannotated.status.message(), HasSubstr("failed to extract layer"))
      << unannotated.status.message();
  {
    auto ls = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", "lazycrypt", "ls"});
    ASSERT_TRUE(ls.ok());
    EXPECT_EQ(std::count(ls->stdout_text.begin(), ls->stdout_text.end(), '\n'), 1)
        << "lazycrypt got snapshots from an unannotated pull: " << ls->stdout_text;
  }

  PodRun lazy = RunPod("lazy", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(lazy.status.ok()) << lazy.status.ToString() << Logs();
  EXPECT_EQ(lazy.log, marker_ + "\n") << Logs();
  EXPECT_EQ(lazy.snapshotter, "lazycrypt");
  EXPECT_TRUE(SnapshotExists("lazycrypt", lazy.snapshot_key)) << lazy.snapshot_key;
  EXPECT_EQ(CountFuseMounts(root_), 2u) << Logs();

  PodRun plain = RunPod("plain", plain_image_, "", {"/bin/echo", "plain"});
  ASSERT_TRUE(plain.status.ok()) << plain.status.ToString() << Logs();
  EXPECT_EQ(plain.log, "plain\n");
  EXPECT_EQ(plain.snapshotter, "overlayfs");
  EXPECT_TRUE(SnapshotExists("overlayfs", plain.snapshot_key)) << plain.snapshot_key;
  EXPECT_FALSE(SnapshotExists("lazycrypt", plain.snapshot_key)) << plain.snapshot_key;
}

TEST_F(Cri, PodWhoseImageNeedsAKeyTheNodeLacksFailsNamingItAndLeavesNothingMounted) {
  harness::CriPluginConfig cri;
  cri.snapshotter = "lazycrypt";
  StartContainerd("containerd", cri);
  ASSERT_FALSE(HasFailure());
  const std::string ref = Publish("other", other_key_.pub);
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("nokey", ref, "", {"/bin/cat", "/data/marker.txt"});
  ASSERT_FALSE(run.status.ok()) << "a pod ran without the key";
  const std::string message = run.status.message();
  EXPECT_THAT(message, HasSubstr("PullImage")) << message;
  EXPECT_THAT(message, HasSubstr("layer sha256:")) << message;
  EXPECT_THAT(message, HasSubstr("none of the keys")) << message;
  EXPECT_THAT(message, HasSubstr("node.pem")) << message;
  EXPECT_EQ(CountFuseMounts(root_), 0u);
  EXPECT_THAT(MountsUnder(root_), ::testing::IsEmpty());
  auto snapshots = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(snapshots.ok());
  // Only the header line: no layer of the image was committed.
  EXPECT_EQ(std::count(snapshots->stdout_text.begin(), snapshots->stdout_text.end(), '\n'), 1)
      << snapshots->stdout_text;
}

}  // namespace
}  // namespace lazycrypt
