// lazycrypt-snapshotter end to end: a real containerd 1.6 with [proxy_plugins.lazycrypt] pointing
// at a real lazycrypt-snapshotter process pulls a busybox image (built offline, pushed to a real
// docker-registry) with `--snapshotter lazycrypt`, runs it with runc, lists the snapshots, and
// runs a new container after the snapshotter was stopped (SIGTERM) and after it was killed
// (SIGKILL) and started again. Ordinary (non-remote) layers only: the FUSE path is wired later.
//
// Needs root (containerd, overlayfs, runc).
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

#include "tests/command_util.h"
#include "tests/containerd_peers.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using harness::CommandResult;
using testing::Describe;
using testing::MustRun;
using testing::SourceDir;
using ::testing::HasSubstr;
using ::testing::Not;

// The snippet shipped in deploy/ is valid containerd configuration and says what it should.
TEST(SnapshotterDeploy, ConfigSnippetIsReadBackByContainerd) {
  auto dump = harness::RunCommand(
      {"containerd", "--config", (SourceDir() / "deploy/containerd/config-snippet.toml").string(),
       "config", "dump"},
      std::chrono::seconds(30));
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  ASSERT_EQ(dump->exit_code, 0) << Describe(*dump);
  EXPECT_THAT(dump->stdout_text, HasSubstr("[proxy_plugins.lazycrypt]"));
  EXPECT_THAT(dump->stdout_text, HasSubstr("address = \"/run/lazycrypt/snapshotter.sock\""));
  EXPECT_THAT(dump->stdout_text, HasSubstr("type = \"snapshot\""));
  EXPECT_THAT(dump->stdout_text, HasSubstr("snapshotter = \"lazycrypt\""));
  EXPECT_THAT(dump->stdout_text, HasSubstr("disable_snapshot_annotations = false"));
}

// The 2.x snippet is valid containerd 2.1 configuration and says what it should: the proxy
// plugin with its exports, and the transfer service unpacking into overlayfs and lazycrypt.
TEST(SnapshotterDeploy, ConfigSnippetV3IsReadBackByContainerd21) {
  auto binary = testing::Containerd21Binary();
  ASSERT_TRUE(binary.ok()) << binary.status().ToString();
  auto dump = harness::RunCommand(
      {*binary, "--config", (SourceDir() / "deploy/containerd/config-snippet-v3.toml").string(),
       "config", "dump"},
      std::chrono::seconds(30));
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  ASSERT_EQ(dump->exit_code, 0) << Describe(*dump);
  std::string text = dump->stdout_text;
  std::replace(text.begin(), text.end(), '\'', '"');
  EXPECT_THAT(text, HasSubstr("version = 3"));
  EXPECT_THAT(text, HasSubstr("[proxy_plugins.lazycrypt]\n    type = \"snapshot\"\n    address = "
                              "\"/run/lazycrypt/snapshotter.sock\""))
      << text;
  EXPECT_THAT(text, HasSubstr("enable_remote_snapshot_annotations = \"true\""));
  EXPECT_THAT(text, HasSubstr("root = \"/var/lib/lazycrypt\""));
  const std::string entry = "[[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n"
                            "      platform = \"linux/amd64\"\n      snapshotter = ";
  const size_t overlay = text.find(entry + "\"overlayfs\"");
  const size_t lazy = text.find(entry + "\"lazycrypt\"");
  EXPECT_NE(overlay, std::string::npos) << text;
  EXPECT_NE(lazy, std::string::npos) << text;
  EXPECT_LT(overlay, lazy) << text;
}

// The harness's proxy plugin entry is what containerd reads back.
TEST(SnapshotterDeploy, HarnessProxyPluginEntryIsReadBackByContainerd) {
  auto dir = harness::TempDir::Create("lc-ctd-proxy-config");
  ASSERT_TRUE(dir.ok());
  harness::ContainerdOptions options;
  options.proxy_plugins.push_back({"lazycrypt", "snapshot", "/tmp/x y/snap.sock"});
  ASSERT_TRUE(harness::WriteFile(*dir / "config.toml",
                                 harness::ContainerdConfigToml(dir->path(), options))
                  .ok());
  auto dump = harness::RunCommand(
      {"containerd", "--config", (*dir / "config.toml").string(), "config", "dump"},
      std::chrono::seconds(30));
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  ASSERT_EQ(dump->exit_code, 0) << Describe(*dump);
  EXPECT_THAT(dump->stdout_text, HasSubstr("[proxy_plugins.lazycrypt]"));
  EXPECT_THAT(dump->stdout_text, HasSubstr("address = \"/tmp/x y/snap.sock\""));
}

// The harness's config for each containerd release (version 2 for 1.x, version 3 for 2.x) starts
// that containerd with the proxy plugin and the CRI plugin, and is what it reads back.
class HarnessConfig : public ::testing::TestWithParam<testing::ContainerdPeer> {};

TEST_P(HarnessConfig, StartsContainerdWithTheProxyPluginAndCri) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd";
  auto binary = GetParam().binary();
  ASSERT_TRUE(binary.ok()) << binary.status().ToString();
  harness::ContainerdOptions options;
  options.binary = *binary;
  options.proxy_plugins.push_back(
      {"lazycrypt", "snapshot", "/tmp/lc-no-such-dir/snap.sock", {{"root", "/tmp/lc-root"}}});
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  cri.runtimes = {{"runc", ""}, {"lazycrypt", "lazycrypt"}};
  options.cri = cri;
  auto ctd = harness::ContainerdProcess::Start(options);
  ASSERT_TRUE(ctd.ok()) << ctd.status().ToString();
  EXPECT_EQ((*ctd)->version().text.rfind(GetParam().version_prefix, 0), 0u)
      << (*ctd)->version().text;
  auto dump = harness::RunCommand(
      {*binary, "--config", (*ctd)->config_path().string(), "config", "dump"},
      std::chrono::seconds(30));
  ASSERT_TRUE(dump.ok()) << dump.status().ToString();
  ASSERT_EQ(dump->exit_code, 0) << Describe(*dump);
  // 2.x writes TOML literal strings ('...'), 1.x basic ones ("...").
  std::string text = dump->stdout_text;
  std::replace(text.begin(), text.end(), '\'', '"');
  EXPECT_THAT(text, HasSubstr("address = \"/tmp/lc-no-such-dir/snap.sock\""));
  if ((*ctd)->version().major >= 2) {
    EXPECT_THAT(text, HasSubstr("version = 3"));
    EXPECT_THAT(text, HasSubstr("root = \"/tmp/lc-root\""));
    EXPECT_THAT(text, HasSubstr("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes."
                                "lazycrypt]\n          runtime_type = \"io.containerd.runc.v2\""));
  } else {
    EXPECT_THAT(text, HasSubstr("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes."
                                "lazycrypt]"));
  }
  // The CRI plugin is up: its service answers on the socket.
  EXPECT_THAT((*ctd)->Log(), Not(HasSubstr("failed to load plugin io.containerd.grpc.v1.cri")));
  auto plugins = (*ctd)->Ctr({"plugins", "ls"});
  ASSERT_TRUE(plugins.ok());
  EXPECT_THAT(plugins->stdout_text, ::testing::ContainsRegex("io.containerd.grpc.v1 +cri .* ok"))
      << plugins->stdout_text;
}

INSTANTIATE_TEST_SUITE_P(Peers, HarnessConfig, ::testing::ValuesIn(testing::AllContainerdPeers()),
                         testing::ContainerdPeerName);

// On each containerd release the suite tests (Peers/SnapshotterContainerd.*/containerd_2_1 etc.).
class SnapshotterContainerd : public ::testing::TestWithParam<testing::ContainerdPeer> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, overlayfs snapshots and runc";
    auto binary = GetParam().binary();
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
    auto work = harness::TempDir::Create("lc-snap-ctd");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();
    socket_ = w / "run" / "snapshotter.sock";
    root_ = w / "state";

    MustRun({(SourceDir() / "tests/data/make-busybox-image.sh").string(), (w / "image").string(),
             "latest"});
    ASSERT_FALSE(HasFailure());
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    ref_ = registry_->host() + "/lazycrypt/busybox:latest";
    MustRun({"skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             "oci:" + (w / "image").string() + ":latest", "docker://" + ref_});
    ASSERT_FALSE(HasFailure()) << registry_->Log();

    if (UseFakeRemote()) {
      // The "remote" layer: the image's tree plus a file the registry's layer does not have.
      MustRun({(SourceDir() / "tests/data/make-busybox-image.sh").string(), "--rootfs",
               (w / "remote-rootfs").string()});
      ASSERT_TRUE(harness::WriteFile(w / "remote-rootfs" / "etc" / "remote-marker",
                                     "served by the remote layer handler\n").ok());
      binary_ = LAZYCRYPT_SNAPSHOTTER_FAKE_REMOTE_BIN;
      env_ = {"LAZYCRYPT_FAKE_REMOTE_ROOTFS=" + (w / "remote-rootfs").string()};
    }
    StartSnapshotter();
    ASSERT_FALSE(HasFailure());
    harness::ContainerdOptions options;
    options.binary = *binary;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string()});
    // 2.x: `ctr images pull` goes through the transfer service, which unpacks only into the
    // snapshotters it is configured for (ignored for 1.x).
    options.transfer_unpack_snapshotters = {"lazycrypt"};
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
    ASSERT_EQ(ctd_->version().text.rfind(GetParam().version_prefix, 0), 0u)
        << ctd_->version().text;
  }

  virtual bool UseFakeRemote() const { return false; }

  void TearDown() override {
    if (ctd_) ctd_->Stop();  // kills tasks, detaches mounts under containerd's dir
    if (snapshotter_) snapshotter_->Stop();
    // Mounts the fake remote handler left in our state dir (the real daemon leaves none).
    if (work_) {
      for (const auto& m : MountsUnder(work_->path())) umount2(m.c_str(), MNT_DETACH);
    }
  }

  // Mount points under `dir`, deepest first (from /proc/self/mountinfo).
  static std::vector<std::string> MountsUnder(const fs::path& dir) {
    std::vector<std::string> out;
    std::istringstream info(harness::ReadFileOrEmpty("/proc/self/mountinfo"));
    std::string line;
    const std::string prefix = dir.string() + "/";
    while (std::getline(info, line)) {
      std::istringstream fields(line);
      std::string id, parent, devno, root, mount_point;
      fields >> id >> parent >> devno >> root >> mount_point;
      if (mount_point.rfind(prefix, 0) == 0) out.push_back(mount_point);
    }
    std::sort(out.rbegin(), out.rend());
    return out;
  }

  std::string SnapshotterLog() const {
    return harness::ReadFileOrEmpty(work_->path() / ("snapshotter-" + std::to_string(starts_) +
                                                     ".log"));
  }

  // Starts binary_ (the real daemon, or the fake-remote test build with env_).
  void StartSnapshotter() {
    ++starts_;
    auto proc = harness::Subprocess::Start(
        {binary_, "--address", socket_.string(), "--root", root_.string(), "--log-level",
         "debug"},
        env_, work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log"),
        work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log"));
    ASSERT_TRUE(proc.ok()) << proc.status().ToString();
    snapshotter_ = std::move(*proc);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (SnapshotterLog().find("lazycrypt-snapshotter ready") == std::string::npos) {
      ASSERT_TRUE(snapshotter_->Running()) << "snapshotter exited:\n" << SnapshotterLog();
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << SnapshotterLog();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  void WaitForContainerdToReconnect() {
    testing::WaitForContainerdToReachSnapshotter(*ctd_, "lazycrypt");
  }

  // `ctr run --rm --snapshotter lazycrypt REF ID args...`
  CommandResult Run(const std::string& id, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"run", "--rm", "--snapshotter", "lazycrypt", ref_, id};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = ctd_->Ctr(argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    EXPECT_EQ(r->exit_code, 0) << Describe(*r) << "\ncontainerd log:\n"
                               << ctd_->Log() << "\nsnapshotter log:\n" << SnapshotterLog();
    return *r;
  }

  std::string binary_ = LAZYCRYPT_SNAPSHOTTER_BIN;
  std::vector<std::string> env_;
  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<harness::Subprocess> snapshotter_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  fs::path socket_;
  fs::path root_;
  std::string ref_;
  int starts_ = 0;
};

INSTANTIATE_TEST_SUITE_P(Peers, SnapshotterContainerd,
                         ::testing::ValuesIn(testing::AllContainerdPeers()),
                         testing::ContainerdPeerName);

TEST_P(SnapshotterContainerd, PullRunListAndRunAgainAfterRestarts) {
  struct stat st;
  ASSERT_EQ(lstat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto pulled = ctd_->Ctr({"images", "pull", "--plain-http", "--snapshotter", "lazycrypt", ref_});
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n"
                                  << ctd_->Log() << "\nsnapshotter log:\n" << SnapshotterLog();
  // containerd unpacked the layer into OUR snapshot directory.
  EXPECT_TRUE(fs::exists(root_ / "snapshots" / "1" / "fs" / "bin" / "busybox"))
      << SnapshotterLog();

  const std::string id = "lc-snap-" + std::to_string(getpid());
  EXPECT_EQ(Run(id + "-1", {"/bin/busybox", "echo", "hello"}).stdout_text, "hello\n");
  // The container writes to its own upper layer, the image layer stays untouched.
  EXPECT_EQ(Run(id + "-w", {"/bin/sh", "-c", "echo x > /etc/written && cat /etc/written"})
                .stdout_text,
            "x\n");
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "1" / "fs" / "etc" / "written"));

  auto ls = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(ls.ok());
  ASSERT_EQ(ls->exit_code, 0) << Describe(*ls);
  EXPECT_THAT(ls->stdout_text, HasSubstr("sha256:"));
  EXPECT_THAT(ls->stdout_text, HasSubstr("Committed")) << ls->stdout_text;
  // Usage goes through containerd to our Usage (committed: as measured at commit).
  auto usage = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "usage"});
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->exit_code, 0) << Describe(*usage);
  EXPECT_THAT(usage->stdout_text, HasSubstr("sha256:"));
  EXPECT_THAT(usage->stdout_text, ::testing::ContainsRegex("[0-9.]+ ?[kKM]i?B")) << usage->stdout_text;

  // A clean stop (SIGTERM) and a restart: containerd reconnects and a new container runs.
  ASSERT_TRUE(snapshotter_->Signal(SIGTERM).ok());
  auto code = snapshotter_->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << SnapshotterLog();
  EXPECT_FALSE(fs::exists(socket_));
  StartSnapshotter();
  ASSERT_FALSE(HasFailure());
  // containerd's channel is in reconnect backoff after the old socket went away: a call made
  // before it dials again fails with "connection refused" (seen once in CI).
  WaitForContainerdToReconnect();
  ASSERT_FALSE(HasFailure());
  auto cat = Run(id + "-2", {"/bin/busybox", "cat", "/etc/passwd"});
  EXPECT_THAT(cat.stdout_text, HasSubstr("root:"));

  // kill -9 leaves a stale socket and an unclean store; the restart copes with both.
  ASSERT_TRUE(snapshotter_->Signal(SIGKILL).ok());
  (void)snapshotter_->Wait(std::chrono::seconds(20));
  EXPECT_TRUE(fs::exists(socket_));
  StartSnapshotter();
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(SnapshotterLog(), HasSubstr("removing stale socket"));
  WaitForContainerdToReconnect();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Run(id + "-3", {"/bin/busybox", "echo", "again"}).stdout_text, "again\n");
  auto ls2 = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(ls2.ok());
  EXPECT_THAT(ls2->stdout_text, HasSubstr("Committed")) << ls2->stdout_text;

  // Removing the image lets containerd's GC remove the layer snapshot through us.
  auto rm = ctd_->Ctr({"images", "rm", "--sync", ref_});
  ASSERT_TRUE(rm.ok());
  EXPECT_EQ(rm->exit_code, 0) << Describe(*rm);
  auto ls3 = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(ls3.ok());
  EXPECT_THAT(ls3->stdout_text, ::testing::Not(HasSubstr("Committed"))) << ls3->stdout_text;
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "1")) << SnapshotterLog();
}

// The remote-layer flow against real containerd, with a handler that bind-mounts a prepared tree
// instead of a FUSE layer: Prepare answers ALREADY_EXISTS, containerd accepts the committed
// target, the container sees the handler's tree; after kill -9 and a restart the layer is
// restored (mounted again) and a new container starts; removing the image unmounts it.
class SnapshotterContainerdRemote : public SnapshotterContainerd {
 protected:
  bool UseFakeRemote() const override { return true; }
};

// The chain ID of the single-layer image in the OCI layout at `layout` (= its only diff ID).
std::string SingleLayerChainId(const fs::path& layout) {
  auto blob = [&](const std::string& digest) {
    return nlohmann::json::parse(
        harness::ReadFileOrEmpty(layout / "blobs" / "sha256" / digest.substr(7)));
  };
  auto index = nlohmann::json::parse(harness::ReadFileOrEmpty(layout / "index.json"));
  auto manifest = blob(index["manifests"][0]["digest"].get<std::string>());
  auto config = blob(manifest["config"]["digest"].get<std::string>());
  const auto& diff_ids = config["rootfs"]["diff_ids"];
  EXPECT_EQ(diff_ids.size(), 1u);
  return diff_ids[0].get<std::string>();
}

INSTANTIATE_TEST_SUITE_P(Peers, SnapshotterContainerdRemote,
                         ::testing::ValuesIn(testing::AllContainerdPeers()),
                         testing::ContainerdPeerName);

TEST_P(SnapshotterContainerdRemote, RemoteLayerIsUsedRestoredAndUnmounted) {
  // containerd's unpacker (client.Pull with unpack: CRI, `ctr-remote images rpull`, `lazycrypt
  // pull`) prepares each layer with containerd.io/snapshot.ref = chain ID through containerd's
  // metadata layer. Plain `ctr images pull` unpacks without that label, so the test makes the
  // unpacker's call itself, through containerd's own Snapshots API (namespace "default", under a
  // lease so containerd's GC keeps the snapshot until the image references it).
  const std::string chain_id = SingleLayerChainId(work_->path() / "image");
  const std::string lease = "lc-remote-" + std::to_string(getpid());
  auto leased = ctd_->Ctr({"leases", "create", "--id", lease});
  ASSERT_TRUE(leased.ok());
  ASSERT_EQ(leased->exit_code, 0) << Describe(*leased);
  {
    auto channel = grpc::CreateChannel("unix:" + ctd_->socket().string(),
                                       grpc::InsecureChannelCredentials());
    auto stub = containerd::services::snapshots::v1::Snapshots::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("containerd-namespace", "default");
    ctx.AddMetadata("containerd-lease", lease);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    containerd::services::snapshots::v1::PrepareSnapshotRequest req;
    req.set_snapshotter("lazycrypt");
    req.set_key("extract-lc-test " + chain_id);
    (*req.mutable_labels())["containerd.io/snapshot.ref"] = chain_id;
    (*req.mutable_labels())["containerd.io/snapshot/cri.image-ref"] = ref_;
    containerd::services::snapshots::v1::PrepareSnapshotResponse resp;
    grpc::Status status = stub->Prepare(&ctx, req, &resp);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
        << status.error_message() << "\nsnapshotter log:\n" << SnapshotterLog();
    EXPECT_THAT(status.error_message(), HasSubstr("target snapshot \"" + chain_id + "\""));
  }
  EXPECT_THAT(SnapshotterLog(), HasSubstr("prepared remote snapshot " + chain_id));
  const fs::path layer_fs = root_ / "snapshots" / "1" / "fs";
  EXPECT_THAT(MountsUnder(work_->path()), ::testing::Contains(layer_fs.string()));

  // containerd's view: the chain ID is a committed snapshot of ours, the extraction key is gone.
  auto ls = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(ls.ok());
  EXPECT_THAT(ls->stdout_text, HasSubstr(chain_id));
  EXPECT_THAT(ls->stdout_text, HasSubstr("Committed")) << ls->stdout_text;
  EXPECT_THAT(ls->stdout_text, ::testing::Not(HasSubstr("extract-lc-test"))) << ls->stdout_text;

  // The pull finds the layer's snapshot and skips unpacking it.
  auto pulled = ctd_->Ctr({"images", "pull", "--plain-http", "--snapshotter", "lazycrypt", ref_});
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n"
                                  << ctd_->Log() << "\nsnapshotter log:\n" << SnapshotterLog();
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "2")) << "the layer was unpacked anyway";

  const std::string id = "lc-snap-remote-" + std::to_string(getpid());
  EXPECT_EQ(Run(id + "-1", {"/bin/busybox", "cat", "/etc/remote-marker"}).stdout_text,
            "served by the remote layer handler\n");

  // kill -9: the mount stays behind; the restarted daemon detaches and restores it.
  ASSERT_TRUE(snapshotter_->Signal(SIGKILL).ok());
  (void)snapshotter_->Wait(std::chrono::seconds(20));
  StartSnapshotter();
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(SnapshotterLog(), HasSubstr("restored remote snapshot sha256:"));
  WaitForContainerdToReconnect();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Run(id + "-2", {"/bin/busybox", "cat", "/etc/remote-marker"}).stdout_text,
            "served by the remote layer handler\n");
  const auto mounts = MountsUnder(work_->path());
  EXPECT_EQ(std::count(mounts.begin(), mounts.end(), layer_fs.string()), 1)
      << "the restore stacked a second mount";

  // Removing the image (and the lease): containerd's GC removes the snapshot through us, which
  // unmounts it.
  auto unleased = ctd_->Ctr({"leases", "rm", lease});
  ASSERT_TRUE(unleased.ok());
  EXPECT_EQ(unleased->exit_code, 0) << Describe(*unleased);
  auto rm = ctd_->Ctr({"images", "rm", "--sync", ref_});
  ASSERT_TRUE(rm.ok());
  EXPECT_EQ(rm->exit_code, 0) << Describe(*rm);
  EXPECT_THAT(MountsUnder(work_->path()), ::testing::Not(::testing::Contains(layer_fs.string())))
      << SnapshotterLog();
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "1")) << SnapshotterLog();
}

}  // namespace
}  // namespace lazycrypt
