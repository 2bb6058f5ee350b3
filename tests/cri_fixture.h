// The fixture of the CRI integration tests (cri_test.cc: containerd 1.6 and 1.7; cri2_test.cc:
// containerd 2.1): our CRI client (lc_cri_client) drives a real containerd's CRI plugin the way the
// kubelet does -- PullImage with the pod's sandbox config and runtime handler, RunPodSandbox (host
// network: no CNI; a busybox-based pause-like sandbox image from the test's registry),
// CreateContainer, StartContainer, ContainerStatus, the CRI log file, StopPodSandbox,
// RemovePodSandbox -- against a real lazycrypt-snapshotter (FUSE layers), a real docker-registry
// behind a byte-counting FaultProxy, and runc. Needs root (containerd, FUSE, overlayfs, runc).
#pragma once

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
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
#include "tests/test_util.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt::cri_testing {

namespace fs = std::filesystem;
using lazycrypt::testing::CountFuseMounts;
using lazycrypt::testing::Describe;
using lazycrypt::testing::MountsUnder;
using lazycrypt::testing::MustRun;

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

    node_key_ = lazycrypt::testing::GenerateKeyPair(w, "rsa2048", "node");
    other_key_ = lazycrypt::testing::GenerateKeyPair(w, "ec256", "other");
    fs::create_directories(w / "keys");
    fs::permissions(w / "keys", fs::perms::owner_all);
    fs::copy_file(node_key_.priv, w / "keys" / "node.pem");
    fs::permissions(w / "keys" / "node.pem", fs::perms::owner_read | fs::perms::owner_write);

    // The application image: busybox plus a layer with a marker and incompressible data.
    std::mt19937_64 rng(std::random_device{}());
    marker_ = "lazycrypt-cri-marker-" + std::to_string(rng());
    lazycrypt::testing::MakeBusyboxImage(w / "image");
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
    lazycrypt::testing::MakeBusyboxImage(w / "pause");
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
                        "\"]\n[registry]\nhosts_dir = \"" + (w / "hosts").string() + "\"\n" +
                        snapshotter_extra_toml_)
                    .ok());
    snapshotter_ = lazycrypt::testing::StartSnapshotterProcess(LAZYCRYPT_SNAPSHOTTER_BIN,
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
    lazycrypt::testing::StopSnapshotterAndDetachMounts(snapshotter_, work_ ? work_->path() : fs::path());
  }

  // containerd (`binary`) with the CRI plugin and lazycrypt as a proxy snapshotter (with these
  // [proxy_plugins.lazycrypt.exports]; `with_lazycrypt` false: no lazycrypt at all) and these
  // [stream_processors].
  void StartContainerd(const std::string& binary, harness::CriPluginConfig cri,
                       std::map<std::string, std::string> exports = {},
                       bool with_lazycrypt = true,
                       std::vector<harness::StreamProcessorConfig> stream_processors = {}) {
    cri.sandbox_image = sandbox_image_;
    cri.registry_config_path = work_->path() / "hosts";
    harness::ContainerdOptions options;
    options.binary = binary;
    options.cri = cri;
    options.stream_processors = std::move(stream_processors);
    options.imports = imports_;
    if (with_lazycrypt) {
      options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string(), exports});
    }
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
  // `extra` e.g. {"--layers", "1"}: only the data layer is lazycrypt's (a mixed image).
  std::string Publish(const std::string& tag, const fs::path& recipient,
                      const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {LAZYCRYPT_BIN, "encrypt", "--plain-http", "-r",
                                     "jwe:" + recipient.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("oci:" + (work_->path() / "image").string() + ":latest");
    argv.push_back("docker://" + registry_->host() + "/lazycrypt/app:" + tag);
    MustRun(argv);
    return proxy_->host() + "/lazycrypt/app:" + tag;
  }

  // A standard ocicrypt image of the app image (what `skopeo copy --encryption-key` and buildah
  // make: every layer +encrypted, AES-256-CTR + HMAC, JWE-wrapped keys) in the registry.
  std::string PublishOcicrypt(const std::string& tag, const fs::path& recipient) {
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "--encryption-key",
             "jwe:" + recipient.string(), "oci:" + (work_->path() / "image").string() + ":latest",
             "docker://" + registry_->host() + "/lazycrypt/ocicrypt:" + tag});
    return proxy_->host() + "/lazycrypt/ocicrypt:" + tag;
  }

  // Lines of `ctr snapshots --snapshotter S ls`, the header excluded.
  size_t SnapshotCount(const std::string& snapshotter) {
    auto ls = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", snapshotter, "ls"});
    EXPECT_TRUE(ls.ok() && ls->exit_code == 0);
    if (!ls.ok()) return 0;
    const auto lines = std::count(ls->stdout_text.begin(), ls->stdout_text.end(), '\n');
    return lines > 0 ? static_cast<size_t>(lines - 1) : 0;
  }

  // Makes the next Start import deploy/kubernetes/containerd/containerd-2.x.toml as shipped, with
  // only its two paths replaced by this test's: the snapshotter's socket and state directory.
  // (`name`: another drop-in of that directory; paths it does not hold are left alone.)
  void ImportShippedDropIn(const std::string& name = "containerd-2.x.toml") {
    auto text =
        harness::ReadFileOrEmpty(lazycrypt::testing::SourceDir() / "deploy/kubernetes/containerd" /
                                 name);
    ASSERT_FALSE(text.empty());
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"\"/run/lazycrypt/snapshotter.sock\"", "\"" + socket_.string() + "\""},
             {"\"/var/lib/lazycrypt\"", "\"" + root_.string() + "\""}}) {
      const size_t at = text.find(from);
      if (name == "containerd-2.x.toml") ASSERT_NE(at, std::string::npos) << from;
      if (at != std::string::npos) text.replace(at, from.size(), to);
    }
    const fs::path copy = work_->path() / name;
    ASSERT_TRUE(harness::WriteFile(copy, text).ok());
    imports_ = {copy.string()};
  }

  // `ctr snapshots --snapshotter S usage -b KEY`: containerd's Usage of that snapshot (bytes).
  Result<int64_t> SnapshotUsageBytes(const std::string& snapshotter, const std::string& key) {
    LC_ASSIGN_OR_RETURN(auto r, ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter",
                                           snapshotter, "usage", "-b", key}));
    if (r.exit_code != 0) return Status::Internal("ctr snapshots usage: " + Describe(r));
    std::istringstream lines(r.stdout_text);
    std::string line;
    std::getline(lines, line);  // the header
    std::string name;
    int64_t size = -1;
    if (!(lines >> name >> size)) return Status::Internal("ctr snapshots usage: " + r.stdout_text);
    return size;
  }

  // The parent of snapshot `key` (`ctr snapshots info`), "" if none or unknown.
  std::string SnapshotParent(const std::string& snapshotter, const std::string& key) {
    auto r = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", snapshotter, "info", key});
    if (!r.ok() || r->exit_code != 0) return "";
    auto info = nlohmann::json::parse(r->stdout_text, nullptr, false);
    if (!info.is_object()) return "";
    return info.value("Parent", "");
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
  std::vector<std::string> imports_;  // config files the next StartContainerd imports
  // Appended to the snapshotter's config (set it in the test's constructor, before SetUp).
  std::string snapshotter_extra_toml_;
  lazycrypt::testing::KeyPair node_key_, other_key_;
  fs::path root_, socket_;
  std::string marker_, sandbox_image_, plain_image_, version_;
};

}  // namespace lazycrypt::cri_testing
