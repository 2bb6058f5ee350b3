// Authorization of every use of a lazycrypt layer, end to end (issue 15 parts 1 and 4): a real
// docker-registry, a real lazycrypt-snapshotter (FUSE layers, node key directory), a real
// containerd 1.6 pulling with stargz's `ctr-remote images rpull` and running containers with
// runc. containerd reuses a committed snapshot by its chain ID (1.6's unpacker: Stat(chainID)
// first; `ctr run`: Stat of the top chain ID), so these tests check that each such reuse asks the
// snapshotter, which asks the node's current keys:
//   - a node without the key never runs the encrypted image, even with its plain original present;
//   - a key removed from the node: new pulls and containers are refused naming the layer and "no
//     key", a running container keeps reading, the key back makes it run again;
//   - restarted with the key gone: refused (never an empty layer), the key back makes it run;
//   - `lazycrypt-snapshotter purge` removes the revoked layers' mounts, snapshots and cache;
//   - a layer is never mounted under a chain ID that its TOC's diff_id does not give.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "image/oci.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"
#include "tests/trust_fixture.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using harness::CommandResult;
using testing::CountFuseMounts;
using testing::Describe;
using testing::MustRun;
using ::testing::HasSubstr;
using ::testing::Not;

// Allocated bytes (st_blocks) of the regular files under `dir`: what a cache holds on disk.
uint64_t AllocatedBytesUnder(const fs::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

class TrustSnapshot : public testing::TrustContainerdFixture {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    SetUpWork("lc-trust-snap");
    ASSERT_FALSE(HasFailure());
    const fs::path& w = work_->path();

    // busybox plus a layer with a marker file and 3 MiB of random data.
    std::mt19937_64 rng(std::random_device{}());
    marker_ = "lazycrypt-trust-" + std::to_string(rng()) + "-" + std::to_string(rng());
    testing::MakeBusyboxImage(w / "image");
    ASSERT_FALSE(HasFailure());
    fs::create_directories(w / "data-root" / "data");
    ASSERT_TRUE(harness::WriteFile(w / "data-root" / "data" / "marker.txt", marker_ + "\n").ok());
    MustRun({"dd", "if=/dev/urandom", "of=" + (w / "data-root" / "data" / "big.bin").string(),
             "bs=1M", "count=3", "status=none"});
    MustRun({"tar", "--numeric-owner", "-C", (w / "data-root").string(), "-cf",
             (w / "data.tar").string(), "data"});
    MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
             (w / "data.tar").string()});
    ASSERT_FALSE(HasFailure());
    StartDaemons();
  }

  // Takes the node key out of the key directory (kept aside) or puts it back.
  void RemoveKey() { fs::rename(KeyFile(), work_->path() / "node.pem.aside"); }
  void RestoreKey() { fs::rename(work_->path() / "node.pem.aside", KeyFile()); }

  // Encrypts the fixture's image into the registry as `tag` for `recipient`.
  std::string Publish(const std::string& tag, const fs::path& recipient) {
    const std::string ref = registry_->host() + "/lazycrypt/app:" + tag;
    MustRun({LAZYCRYPT_BIN, "encrypt", "--plain-http", "-r", "jwe:" + recipient.string(),
             "oci:" + (work_->path() / "image").string() + ":latest", "docker://" + ref});
    return ref;
  }

  // Runs `cat /data/marker.txt` in a new container until it prints the marker (a restore is
  // retried by the snapshotter at most every few seconds) or `timeout` passes.
  CommandResult RunUntilMarker(const std::string& ref, const std::string& id_prefix,
                               std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    CommandResult last;
    for (int i = 0;; ++i) {
      last = Run(ref, Id(id_prefix + std::to_string(i)), {"/bin/cat", "/data/marker.txt"});
      if (last.stdout_text == marker_ + "\n" || std::chrono::steady_clock::now() > deadline) {
        return last;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }

  // The snapshots the snapshotter itself holds (its List, not containerd's records).
  std::vector<std::string> BackendSnapshots() {
    auto channel = grpc::CreateChannel("unix:" + socket_.string(), grpc::InsecureChannelCredentials());
    auto stub = containerd::services::snapshots::v1::Snapshots::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    containerd::services::snapshots::v1::ListSnapshotsRequest req;
    auto reader = stub->List(&ctx, req);
    containerd::services::snapshots::v1::ListSnapshotsResponse resp;
    std::vector<std::string> names;
    while (reader->Read(&resp)) {
      for (const auto& info : resp.info()) names.push_back(info.name());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return names;
  }

  // containerd removes a deleted container's snapshot from the snapshotter in its garbage
  // collection, a moment after `ctr run --rm` returns: waits (10 s) until only `n` are left.
  void WaitForBackendSnapshots(size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::vector<std::string> names;
    while ((names = BackendSnapshots()).size() != n) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the snapshotter still holds " << names.size() << " snapshots, not " << n;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::string marker_;
};

// imgcrypt's CVE-2022-24778 class: the plain original is in the snapshotter; its encrypted copy,
// for a key this node does not hold, must not run from the plain snapshots. (Needs lazycrypt
// layers to have diff_ids of their own, engineer F's change: with shared diff_ids the chain IDs
// are the plain image's and containerd reuses its snapshots without asking.)
TEST_F(TrustSnapshot, NoKeyRefusedEvenWhenThePlainImageIsPresent) {
  const std::string plain = registry_->host() + "/lazycrypt/plain:1";
  MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false",
           "oci:" + (work_->path() / "image").string() + ":latest", "docker://" + plain});
  const std::string encrypted = Publish("other", other_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(plain);
  ASSERT_EQ(pulled.exit_code, 0) << Describe(pulled) << Logs();
  auto cat = Run(plain, Id("plain"), {"/bin/cat", "/data/marker.txt"});
  ASSERT_EQ(cat.stdout_text, marker_ + "\n") << Describe(cat) << Logs();

  auto refused = RemotePull(encrypted);
  auto run = Run(encrypted, Id("enc"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_NE(run.exit_code, 0) << "the encrypted image ran on a node without its key: "
                              << Describe(run) << "\npull: " << Describe(refused) << Logs();
  EXPECT_THAT(run.stdout_text, Not(HasSubstr(marker_)));
  EXPECT_NE(refused.exit_code, 0) << Describe(refused);
  EXPECT_THAT(refused.stdout_text + refused.stderr_text, HasSubstr("layer sha256:"))
      << Describe(refused);
  ExpectNoContainer(Id("enc"));
}

TEST_F(TrustSnapshot, KeyRemovedThenRestored) {
  const std::string ref = Publish("revoke", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_EQ(pulled.exit_code, 0) << Describe(pulled) << Logs();
  auto first = Run(ref, Id("first"), {"/bin/cat", "/data/marker.txt"});
  ASSERT_EQ(first.stdout_text, marker_ + "\n") << Describe(first) << Logs();
  // A container that keeps running across the revocation.
  auto started = ctd_->Ctr({"run", "-d", "--snapshotter", "lazycrypt", ref, Id("running"),
                            "/bin/sleep", "120"});
  ASSERT_TRUE(started.ok());
  ASSERT_EQ(started->exit_code, 0) << Describe(*started) << Logs();

  RemoveKey();
  // Pulling again: 1.6's unpacker Stats each chain ID; the snapshotter refuses, naming the layer.
  auto again = RemotePull(ref);
  EXPECT_NE(again.exit_code, 0) << "pulled with the key gone: " << Describe(again) << Logs();
  EXPECT_THAT(again.stdout_text + again.stderr_text, HasSubstr("layer sha256:")) << Describe(again);
  EXPECT_THAT(again.stdout_text + again.stderr_text, HasSubstr("no key")) << Describe(again);
  // Another namespace (another tenant's images): the Prepare that finds the layer committed.
  auto elsewhere = RemotePull(ref, "lc-other");
  EXPECT_NE(elsewhere.exit_code, 0) << "pulled with the key gone: " << Describe(elsewhere);
  EXPECT_THAT(elsewhere.stdout_text + elsewhere.stderr_text, HasSubstr("no key"))
      << Describe(elsewhere);
  // A new container: refused, never started.
  auto refused = Run(ref, Id("refused"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_NE(refused.exit_code, 0) << "a new container started with the key gone: "
                                  << Describe(refused) << Logs();
  EXPECT_THAT(refused.stdout_text, Not(HasSubstr(marker_)));
  EXPECT_THAT(refused.stdout_text + refused.stderr_text, HasSubstr("no key")) << Describe(refused);
  ExpectNoContainer(Id("refused"));
  // The running container keeps reading its files (revocation stops new uses only).
  auto exec = ctd_->Ctr({"tasks", "exec", "--exec-id", "read", Id("running"), "/bin/cat",
                         "/data/marker.txt"});
  ASSERT_TRUE(exec.ok());
  EXPECT_EQ(exec->stdout_text, marker_ + "\n") << Describe(*exec) << Logs();
  auto sum = ctd_->Ctr({"tasks", "exec", "--exec-id", "sum", Id("running"), "/bin/busybox",
                        "sha256sum", "/data/big.bin"});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->exit_code, 0) << Describe(*sum);

  RestoreKey();
  auto back = Run(ref, Id("back"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(back.stdout_text, marker_ + "\n") << Describe(back) << Logs();
  auto repulled = RemotePull(ref);
  EXPECT_EQ(repulled.exit_code, 0) << Describe(repulled) << Logs();
  auto repulled_elsewhere = RemotePull(ref, "lc-other");
  EXPECT_EQ(repulled_elsewhere.exit_code, 0) << Describe(repulled_elsewhere) << Logs();
  (void)ctd_->Ctr({"tasks", "kill", "-s", "SIGKILL", Id("running")});
}

TEST_F(TrustSnapshot, RestartWithKeyGoneFailsClosed) {
  const std::string ref = Publish("restart", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_EQ(pulled.exit_code, 0) << Describe(pulled) << Logs();
  StopSnapshotter();
  ASSERT_FALSE(HasFailure());
  RemoveKey();
  StartSnapshotter();
  ASSERT_FALSE(HasFailure());
  testing::WaitForContainerdToReachSnapshotter(*ctd_, "lazycrypt");
  ASSERT_FALSE(HasFailure());
  // The stopped daemon left its mounts to this one (issue 17), which cannot serve them without
  // the key: the same mounts, never mounted twice, and every read of them is EIO (not an empty
  // directory).
  EXPECT_EQ(CountFuseMounts(root_), 2u) << SnapshotterLog();
  for (const auto& [path, type] : testing::MountsUnder(root_)) {
    if (type.rfind("fuse", 0) != 0) continue;
    std::error_code ec;
    std::filesystem::directory_iterator listing(path, ec);
    EXPECT_EQ(ec, std::errc::io_error) << path << ": " << ec.message() << "\n" << SnapshotterLog();
  }

  // The snapshots are still committed, over empty directories: never served.
  auto refused = Run(ref, Id("refused"), {"/bin/ls", "-a", "/data"});
  EXPECT_NE(refused.exit_code, 0) << "a container started over an unrestored layer: "
                                  << Describe(refused) << Logs();
  EXPECT_THAT(refused.stdout_text + refused.stderr_text, HasSubstr("layer sha256:"))
      << Describe(refused);
  EXPECT_THAT(refused.stdout_text + refused.stderr_text, HasSubstr("no key")) << Describe(refused);
  ExpectNoContainer(Id("refused"));

  RestoreKey();
  auto back = RunUntilMarker(ref, "back", std::chrono::seconds(30));
  EXPECT_EQ(back.stdout_text, marker_ + "\n") << Describe(back) << Logs();
  EXPECT_EQ(CountFuseMounts(root_), 2u) << SnapshotterLog();
}

TEST_F(TrustSnapshot, PurgeRemovesMountsAndCache) {
  const std::string ref = Publish("purge", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_EQ(pulled.exit_code, 0) << Describe(pulled) << Logs();
  auto sum = Run(ref, Id("sum"), {"/bin/busybox", "sha256sum", "/data/big.bin"});
  ASSERT_EQ(sum.exit_code, 0) << Describe(sum) << Logs();
  ASSERT_EQ(CountFuseMounts(root_), 2u);
  const uint64_t cached = AllocatedBytesUnder(root_ / "cache");
  ASSERT_GT(cached, 2u << 20) << "big.bin was read through the cache";

  // Nothing to purge while the key is there.
  auto nothing = MustRun({LAZYCRYPT_SNAPSHOTTER_BIN, "purge", "--config", config_.string()});
  EXPECT_THAT(nothing.stdout_text, HasSubstr("nothing to purge")) << Describe(nothing);
  EXPECT_EQ(CountFuseMounts(root_), 2u);

  WaitForBackendSnapshots(2);  // the two layers; the container's snapshot is gone
  ASSERT_FALSE(HasFailure());
  RemoveKey();
  auto purged =
      MustRun({LAZYCRYPT_SNAPSHOTTER_BIN, "purge", "--json", "--config", config_.string()});
  nlohmann::json report = nlohmann::json::parse(purged.stdout_text, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << Describe(purged);
  ASSERT_TRUE(report.value("ok", false)) << purged.stdout_text;
  ASSERT_EQ(report["removed"].size(), 2u) << purged.stdout_text << SnapshotterLog();
  EXPECT_TRUE(report["kept"].empty()) << purged.stdout_text;
  EXPECT_GT(report.value("bytes_freed", 0ull), 2ull << 20) << purged.stdout_text;
  for (const auto& r : report["removed"]) {
    const std::string snapshot = r.value("snapshot", "");
    EXPECT_EQ(r.value("layer", "").rfind("sha256:", 0), 0u) << r.dump();
    EXPECT_THAT(r.value("reason", ""), HasSubstr("no key")) << r.dump();
    // The snapshot is gone from the snapshotter (containerd's record goes with the image).
    auto info = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "info", snapshot});
    ASSERT_TRUE(info.ok());
    EXPECT_NE(info->exit_code, 0) << "snapshot " << snapshot << " still there: " << Describe(*info);
  }
  EXPECT_EQ(CountFuseMounts(root_), 0u) << SnapshotterLog();
  EXPECT_EQ(AllocatedBytesUnder(root_ / "cache"), 0u) << "cached ciphertext left behind";
  EXPECT_THAT(SnapshotterLog(), HasSubstr("purged remote snapshot"));

  // The text form, from a second purge: nothing left.
  auto again = MustRun({LAZYCRYPT_SNAPSHOTTER_BIN, "purge", "--config", config_.string()});
  EXPECT_THAT(again.stdout_text, HasSubstr("nothing to purge")) << Describe(again);

  // The operator's way back (README): the key returns, the image is removed and pulled again.
  RestoreKey();
  auto removed = ctd_->Ctr({"images", "rm", "--sync", ref});
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->exit_code, 0) << Describe(*removed);
  auto repulled = RemotePull(ref);
  EXPECT_EQ(repulled.exit_code, 0) << Describe(repulled) << Logs();
  auto cat = Run(ref, Id("back"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.stdout_text, marker_ + "\n") << Describe(cat) << Logs();
}

// The snapshotter mounts a layer only under the chain ID its TOC gives (ChainID(parent, TOC
// tar_sha256)): a Prepare naming another chain ID for it (an image whose config claims another
// layer's diff_id) is refused and leaves nothing; the right one is mounted.
TEST_F(TrustSnapshot, MountRefusesChainIdNotMatchingToc) {
  const std::string ref = Publish("chain", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  const std::string docker_ref = "docker://" + ref;
  auto manifest_text =
      MustRun({"skopeo", "inspect", "--raw", "--tls-verify=false", docker_ref}).stdout_text;
  auto config_text =
      MustRun({"skopeo", "inspect", "--config", "--raw", "--tls-verify=false", docker_ref})
          .stdout_text;
  nlohmann::json manifest = nlohmann::json::parse(manifest_text, nullptr, false);
  nlohmann::json config = nlohmann::json::parse(config_text, nullptr, false);
  ASSERT_FALSE(manifest.is_discarded() || config.is_discarded()) << manifest_text << config_text;
  const nlohmann::json& layer = manifest["layers"][0];
  const std::string toc_label(image::kAnnotationLazycryptTocDigest);
  const std::string true_chain = config["rootfs"]["diff_ids"][0].get<std::string>();
  const std::string other_chain = config["rootfs"]["diff_ids"][1].get<std::string>();

  auto channel = grpc::CreateChannel("unix:" + socket_.string(), grpc::InsecureChannelCredentials());
  auto stub = containerd::services::snapshots::v1::Snapshots::NewStub(channel);
  auto prepare = [&](const std::string& key, const std::string& target) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    containerd::services::snapshots::v1::PrepareSnapshotRequest req;
    req.set_key(key);
    auto& labels = *req.mutable_labels();
    labels["containerd.io/snapshot.ref"] = target;
    labels["containerd.io/snapshot/remote/stargz.reference"] = ref;
    labels["containerd.io/snapshot/remote/stargz.digest"] = layer["digest"].get<std::string>();
    labels[toc_label] = layer["annotations"][toc_label].get<std::string>();
    containerd::services::snapshots::v1::PrepareSnapshotResponse resp;
    return stub->Prepare(&ctx, req, &resp);
  };
  grpc::Status wrong = prepare("extract-wrong " + other_chain, other_chain);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << wrong.error_message() << "\n" << SnapshotterLog();
  EXPECT_THAT(wrong.error_message(), HasSubstr("refusing to mount it as snapshot " + other_chain));
  EXPECT_THAT(wrong.error_message(), HasSubstr("layer " + layer["digest"].get<std::string>()));
  EXPECT_EQ(CountFuseMounts(root_), 0u);
  for (const std::string& key : {other_chain, "extract-wrong " + other_chain}) {
    grpc::ClientContext ctx;
    containerd::services::snapshots::v1::StatSnapshotRequest req;
    req.set_key(key);
    containerd::services::snapshots::v1::StatSnapshotResponse resp;
    EXPECT_EQ(stub->Stat(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND) << key;
  }

  grpc::Status right = prepare("extract-right " + true_chain, true_chain);
  EXPECT_EQ(right.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << right.error_message() << "\n" << SnapshotterLog();
  EXPECT_EQ(CountFuseMounts(root_), 1u);
}

}  // namespace
}  // namespace lazycrypt
