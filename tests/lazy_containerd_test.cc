// Lazy start of lazycrypt images end to end: a real docker-registry holds an image whose layers
// are lazycrypt's; a real lazycrypt-snapshotter (FUSE layers, node key directory, hosts.toml)
// serves a real containerd, which pulls the image with stargz's `ctr-remote images rpull`
// (Debian 13's stargz-snapshotter package, unpacked into the build tree) or `lazycrypt pull` and
// runs containers with runc. The scenarios that depend on containerd (lazy pull and run, mixed
// images, missing key, tampered chunk, kill -9 of the snapshotter, `lazycrypt pull`) run on each
// release the suite tests: Debian 12's 1.6, Debian 13's 1.7 and unstable's 2.1 (config version
// 3), as Peers/LazyContainerdOn.*/containerd_1_6 etc.; the snapshotter-only ones (metrics,
// prefetch, key providers) on 1.6; LazyContainerd21Transfer*: what 2.1's own `ctr images pull`
// (transfer service, or --local) does with lazycrypt layers. Checks: the layers are mounted, not downloaded; the container reads files from encrypted
// layers and writes to its own upper layer; two containers share the mounted layers; no
// plaintext under the snapshotter's state and cache; mixed plain + lazycrypt images; a node
// without the key refuses the layer with an error naming it and keeps no snapshot; a tampered
// chunk is EIO inside the container; after kill -9 and a restart the layers are mounted again.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/containerd_peers.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using harness::CommandResult;
using testing::Describe;
using testing::CountFuseMounts;
using testing::MountsUnder;
using testing::MustRun;
using ::testing::HasSubstr;
using ::testing::Not;

// Every regular file under `dir` on the same file system as `dir` (mounted layers, which serve
// plaintext by design, are not the node's disk) whose bytes contain `needle`.
std::vector<std::string> FilesContaining(const fs::path& dir, const std::string& needle) {
  std::vector<std::string> hits;
  struct stat root_st;
  if (::lstat(dir.c_str(), &root_st) != 0) return hits;
  std::vector<fs::path> stack = {dir};
  while (!stack.empty()) {
    fs::path d = stack.back();
    stack.pop_back();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      struct stat st;
      if (::lstat(e.path().c_str(), &st) != 0 || st.st_dev != root_st.st_dev) continue;
      if (S_ISDIR(st.st_mode)) {
        stack.push_back(e.path());
      } else if (S_ISREG(st.st_mode)) {
        std::ifstream in(e.path(), std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (bytes.find(needle) != std::string::npos) hits.push_back(e.path().string());
      }
    }
  }
  return hits;
}

class LazyContainerdFixture : public ::testing::Test {
 protected:
  // The containerd binary the fixture starts ("containerd" = the system's 1.6).
  void SetUpWith(const std::string& containerd_binary) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    auto work = harness::TempDir::Create("lc-lazy-ctd");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();
    socket_ = w / "run" / "snapshotter.sock";
    root_ = w / "state";

    auto ctr_remote = harness::RunCommand(
        {(testing::SourceDir() / "tests/data/fetch-trixie-package.sh").string(),
         LAZYCRYPT_TEST_CACHE "/stargz", "stargz-snapshotter", "usr/bin/ctr-remote"},
        std::chrono::seconds(300));
    ASSERT_TRUE(ctr_remote.ok()) << ctr_remote.status().ToString();
    ASSERT_EQ(ctr_remote->exit_code, 0) << Describe(*ctr_remote);
    ctr_remote_ = ctr_remote->stdout_text.substr(0, ctr_remote->stdout_text.find('\n'));

    node_key_ = testing::GenerateKeyPair(w, "rsa2048", "node");
    other_key_ = testing::GenerateKeyPair(w, "ec256", "other");
    fs::create_directories(w / "keys");
    fs::copy_file(node_key_.priv, w / "keys" / "node.pem");
    fs::permissions(w / "keys" / "node.pem", fs::perms::owner_read | fs::perms::owner_write);

    // The image: busybox, plus a layer with a marker file and 12 MiB of random data.
    std::mt19937_64 rng(std::random_device{}());
    marker_ = "lazycrypt-marker-" + std::to_string(rng()) + "-" + std::to_string(rng());
    testing::MakeBusyboxImage(w / "image");
    ASSERT_FALSE(HasFailure());
    fs::create_directories(w / "data-root" / "data");
    ASSERT_TRUE(harness::WriteFile(w / "data-root" / "data" / "marker.txt", marker_ + "\n").ok());
    MustRun({"dd", "if=/dev/urandom", "of=" + (w / "data-root" / "data" / "big.bin").string(),
             "bs=1M", "count=12", "status=none"});
    MustRun({"tar", "--numeric-owner", "-C", (w / "data-root").string(), "-cf",
             (w / "data.tar").string(), "data"});
    MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
             (w / "data.tar").string()});
    big_sha256_ = testing::FileSha256(w / "data-root" / "data" / "big.bin");
    ASSERT_FALSE(HasFailure());

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    fs::create_directories(w / "hosts" / registry_->host());
    ASSERT_TRUE(harness::WriteFile(w / "hosts" / registry_->host() / "hosts.toml",
                                   "server = \"http://" + registry_->host() + "\"\n")
                    .ok());

    auto metrics_port = harness::PickFreePort();
    ASSERT_TRUE(metrics_port.ok()) << metrics_port.status().ToString();
    metrics_address_ = "127.0.0.1:" + std::to_string(*metrics_port);
    ASSERT_TRUE(harness::WriteFile(
                    w / "config.toml",
                    "address = \"" + socket_.string() + "\"\nroot = \"" + root_.string() +
                        "\"\nlog_level = \"debug\"\n[keys]\ndirs = [\"" + (w / "keys").string() +
                        "\"]\n[registry]\nhosts_dir = \"" + (w / "hosts").string() +
                        "\"\n[metrics]\naddress = \"" + metrics_address_ + "\"\n")
                    .ok());
    StartSnapshotter();
    ASSERT_FALSE(HasFailure());
    harness::ContainerdOptions options;
    options.binary = containerd_binary;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string(), proxy_exports_});
    options.transfer_unpack_snapshotters = transfer_unpack_snapshotters_;
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
  }

  void TearDownFixture() {
    if (ctd_) ctd_->Stop();
    testing::StopSnapshotterAndDetachMounts(snapshotter_, work_ ? work_->path() : fs::path());
  }

  // Encrypts the image (default: the fixture's) into the registry as `tag`, for `recipient`;
  // extra flags e.g. --layers.
  std::string Publish(const std::string& tag, const fs::path& recipient,
                      const std::vector<std::string>& extra = {}, const fs::path& image = {}) {
    const std::string ref = registry_->host() + "/lazycrypt/app:" + tag;
    std::vector<std::string> argv = {LAZYCRYPT_BIN, "encrypt", "--plain-http", "-r",
                                     "jwe:" + recipient.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("oci:" + (image.empty() ? work_->path() / "image" : image).string() + ":latest");
    argv.push_back("docker://" + ref);
    MustRun(argv);
    return ref;
  }

  std::string SnapshotterLog() const {
    return harness::ReadFileOrEmpty(work_->path() /
                                    ("snapshotter-" + std::to_string(starts_) + ".log"));
  }
  std::string Logs() const {
    return "\ncontainerd log:\n" + ctd_->Log() + "\nsnapshotter log:\n" + SnapshotterLog();
  }

  void StartSnapshotter() {
    ++starts_;
    snapshotter_ = testing::StartSnapshotterProcess(
        LAZYCRYPT_SNAPSHOTTER_BIN, work_->path() / "config.toml",
        work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log"));
  }

  void WaitForContainerdToReconnect() {
    testing::WaitForContainerdToReachSnapshotter(*ctd_, "lazycrypt");
  }

  Result<CommandResult> RemotePull(const std::string& ref) {
    return ctd_->Client(ctr_remote_, {"images", "rpull", "--plain-http", "--snapshotter",
                                      "lazycrypt", ref},
                        std::chrono::seconds(180));
  }

  // `ctr run --rm --snapshotter lazycrypt REF ID args...` (exit status not checked).
  CommandResult Run(const std::string& ref, const std::string& id,
                    const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"run", "--rm", "--snapshotter", "lazycrypt", ref, id};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = ctd_->Ctr(argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CommandResult{};
  }

  static constexpr int kPrefetchFiles = 6;

  std::string Id(const std::string& suffix) const {
    return "lc-lazy-" + std::to_string(getpid()) + "-" + suffix;
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<harness::Subprocess> snapshotter_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  testing::KeyPair node_key_, other_key_;
  fs::path socket_, root_;
  std::string ctr_remote_;
  std::string marker_;
  std::string big_sha256_;
  std::string metrics_address_;  // the snapshotter's [metrics] address
  int starts_ = 0;
  std::map<std::string, std::string> proxy_exports_;  // [proxy_plugins.lazycrypt.exports]
  std::vector<std::string> transfer_unpack_snapshotters_;  // containerd 2.x's transfer service
};

// On the system's containerd (1.6): what does not depend on containerd's release.
class LazyContainerd : public LazyContainerdFixture {
 protected:
  void SetUp() override { SetUpWith("containerd"); }
  void TearDown() override { TearDownFixture(); }
};

// On each containerd release the suite tests.
class LazyContainerdOn : public LazyContainerdFixture,
                         public ::testing::WithParamInterface<testing::ContainerdPeer> {
 protected:
  void SetUp() override {
    auto binary = GetParam().binary();
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
    SetUpWith(*binary);
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_EQ(ctd_->version().text.rfind(GetParam().version_prefix, 0), 0u)
        << ctd_->version().text;
  }
  void TearDown() override { TearDownFixture(); }
};

INSTANTIATE_TEST_SUITE_P(Peers, LazyContainerdOn,
                         ::testing::ValuesIn(testing::AllContainerdPeers()),
                         testing::ContainerdPeerName);

TEST_P(LazyContainerdOn, LazyPullRunsSharesLayersLeavesNoPlaintextAndSurvivesKill9) {
  const std::string ref = Publish("1", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  // Both layers were mounted by the snapshotter, none was downloaded and unpacked.
  const std::string log = SnapshotterLog();
  EXPECT_EQ(CountFuseMounts(root_), 2u) << log;
  size_t mounted = 0;
  for (size_t pos = 0; (pos = log.find("mounted layer sha256:", pos)) != std::string::npos; ++pos) {
    ++mounted;
  }
  EXPECT_EQ(mounted, 2u) << log;

  // Reads from both encrypted layers, a write to the container's own upper layer.
  auto cat = Run(ref, Id("cat"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.exit_code, 0) << Describe(cat) << Logs();
  EXPECT_EQ(cat.stdout_text, marker_ + "\n");
  auto sum = Run(ref, Id("sum"), {"/bin/busybox", "sha256sum", "/data/big.bin"});
  EXPECT_EQ(sum.exit_code, 0) << Describe(sum) << Logs();
  EXPECT_THAT(sum.stdout_text, HasSubstr(big_sha256_.substr(big_sha256_.find(':') + 1)));
  auto write = Run(ref, Id("write"), {"/bin/sh", "-c", "echo written > /data/new && cat /data/new"});
  EXPECT_EQ(write.stdout_text, "written\n") << Describe(write) << Logs();

  // Two containers at once share the mounted layers (still exactly two FUSE mounts).
  auto started = ctd_->Ctr({"run", "-d", "--snapshotter", "lazycrypt", ref, Id("bg"), "/bin/sleep",
                            "60"});
  ASSERT_TRUE(started.ok());
  EXPECT_EQ(started->exit_code, 0) << Describe(*started) << Logs();
  auto second = Run(ref, Id("second"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(second.stdout_text, marker_ + "\n") << Describe(second);
  EXPECT_EQ(CountFuseMounts(root_), 2u);
  (void)ctd_->Ctr({"task", "kill", "-s", "SIGKILL", Id("bg")});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  (void)ctd_->Ctr({"task", "rm", "-f", Id("bg")});
  (void)ctd_->Ctr({"container", "rm", Id("bg")});

  // No plaintext on the node's disk through us: the marker is nowhere in the state and cache
  // (the mounted layers themselves are skipped: they are not disk).
  EXPECT_THAT(FilesContaining(root_, marker_), ::testing::IsEmpty());

  // kill -9: the restarted daemon mounts the layers again and new containers start.
  ASSERT_TRUE(snapshotter_->Signal(SIGKILL).ok());
  (void)snapshotter_->Wait(std::chrono::seconds(20));
  StartSnapshotter();
  ASSERT_FALSE(HasFailure());
  WaitForContainerdToReconnect();
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(SnapshotterLog(), HasSubstr("restored remote snapshot")) << SnapshotterLog();
  auto again = Run(ref, Id("again"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(again.stdout_text, marker_ + "\n") << Describe(again) << Logs();
  EXPECT_EQ(CountFuseMounts(root_), 2u) << "stale mounts were not replaced";
}

TEST_P(LazyContainerdOn, MixedPlainAndLazycryptLayersRun) {
  // Only the data layer (index 1) is lazycrypt's; busybox stays a plain gzip layer.
  const std::string ref = Publish("mixed", node_key_.pub, {"--layers", "1"});
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  EXPECT_EQ(CountFuseMounts(root_), 1u) << SnapshotterLog();
  auto cat = Run(ref, Id("mixed"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.stdout_text, marker_ + "\n") << Describe(cat) << Logs();
}

TEST_P(LazyContainerdOn, WithoutTheKeyThePullFailsNamingTheLayerAndLeavesNoSnapshot) {
  const std::string ref = Publish("other", other_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto before = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(before.ok());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  EXPECT_NE(pulled->exit_code, 0) << Describe(*pulled);
  const std::string out = pulled->stdout_text + pulled->stderr_text;
  EXPECT_THAT(out, HasSubstr("layer sha256:")) << out;
  EXPECT_THAT(SnapshotterLog(), HasSubstr("none of the")) << SnapshotterLog();
  EXPECT_EQ(CountFuseMounts(root_), 0u);
  auto after = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->stdout_text, before->stdout_text) << "a snapshot was left behind";
}

TEST_P(LazyContainerdOn, TamperedChunkIsAnIoErrorInTheContainer) {
  const std::string ref = Publish("tampered", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  // The data layer's blob: the largest blob in the registry. Flip a byte in its middle, which is
  // inside a chunk record of big.bin (12 of the layer's ~13 chunks).
  fs::path blob;
  uintmax_t largest = 0;
  for (const auto& e : fs::recursive_directory_iterator(registry_->storage_dir())) {
    if (e.is_regular_file() && e.path().filename() == "data" && e.file_size() > largest) {
      largest = e.file_size();
      blob = e.path();
    }
  }
  ASSERT_GT(largest, 12u << 20);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(largest / 2));
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(static_cast<std::streamoff>(largest / 2));
    f.write(&c, 1);
  }
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  auto bad = Run(ref, Id("bad"), {"/bin/sh", "-c", "cat /data/big.bin > /dev/null"});
  EXPECT_NE(bad.exit_code, 0) << "a tampered chunk was served";
  EXPECT_THAT(bad.stdout_text + bad.stderr_text, ::testing::ContainsRegex("I/O error|Input/output"))
      << Describe(bad);
  auto good = Run(ref, Id("good"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(good.stdout_text, marker_ + "\n") << Describe(good) << Logs();
}

TEST_F(LazyContainerd, MetricsEndpointAndStatusShowTheLayerAContainerRead) {
  const std::string ref = Publish("metrics", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  auto sum = Run(ref, Id("metrics"), {"/bin/busybox", "sha256sum", "/data/big.bin"});
  EXPECT_EQ(sum.exit_code, 0) << Describe(sum) << Logs();
  EXPECT_THAT(sum.stdout_text, HasSubstr(big_sha256_.substr(big_sha256_.find(':') + 1)));

  // /status: both layers; the data layer (the larger blob) was fetched and read.
  auto json = MustRun({LAZYCRYPT_BIN, "status", "--json", "--address", metrics_address_});
  nlohmann::json doc = nlohmann::json::parse(json.stdout_text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << json.stdout_text;
  EXPECT_EQ(doc.value("mounted_layers", -1), 2) << json.stdout_text;
  EXPECT_EQ(doc.value("mounts_total", -1), 2) << json.stdout_text;
  ASSERT_TRUE(doc.contains("layers") && doc["layers"].size() == 2u) << json.stdout_text;
  nlohmann::json data = doc["layers"][0];
  for (const auto& l : doc["layers"]) {
    if (l.value("blob_size_bytes", 0ull) > data.value("blob_size_bytes", 0ull)) data = l;
  }
  const std::string digest = data.value("layer", "");
  ASSERT_EQ(digest.rfind("sha256:", 0), 0u) << json.stdout_text;
  EXPECT_THAT(data.value("image", ""), HasSubstr("lazycrypt/app:metrics"));
  EXPECT_THAT(data.value("mountpoint", ""), HasSubstr(root_.string())) << json.stdout_text;
  EXPECT_GT(data.value("blob_size_bytes", 0ull), 12ull << 20);
  EXPECT_GE(data.value("bytes_fetched", 0ull), 12ull << 20) << "big.bin was read in full";
  EXPECT_GT(data.value("chunks_opened", 0ull), 0u);
  EXPECT_GT(data.value("cache_misses", 0ull), 0u);
  EXPECT_GT(data.value("present_percent", 0.0), 50.0);
  EXPECT_EQ(data.value("auth_failures", 1ull), 0u);
  EXPECT_THAT(json.stdout_text, Not(HasSubstr(marker_)));

  // /metrics in Prometheus text format with the layer's labels and non-zero counters.
  auto scrape = MustRun({"busybox", "wget", "-q", "-O", "-", "http://" + metrics_address_ + "/metrics"});
  const std::string& text = scrape.stdout_text;
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_layer_fetched_bytes_total counter\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_mounted_layers 2\n"));
  const std::string labels = "{layer=\"" + digest + "\",image=\"" + data.value("image", "") + "\"}";
  for (const char* family : {"lazycrypt_layer_fetched_bytes_total", "lazycrypt_layer_chunks_opened_total",
                             "lazycrypt_layer_cache_misses_total", "lazycrypt_layer_fetch_requests_total",
                             "lazycrypt_layer_present_bytes", "lazycrypt_layer_chunks"}) {
    const std::string prefix = "\n" + std::string(family) + labels + " ";
    const size_t at = text.find(prefix);
    ASSERT_NE(at, std::string::npos) << family << " missing:\n" << text;
    const std::string value = text.substr(at + prefix.size(), text.find('\n', at + 1) - at - prefix.size());
    EXPECT_GT(std::stod(value), 0.0) << family;
  }
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_layer_auth_failures_total" + labels + " 0\n"));

  // The table names the layer (short digest) and the image.
  auto table = MustRun({LAZYCRYPT_BIN, "status", "--config", (work_->path() / "config.toml").string()});
  EXPECT_THAT(table.stdout_text, HasSubstr(digest.substr(0, 19))) << table.stdout_text;
  EXPECT_THAT(table.stdout_text, HasSubstr("lazycrypt/app:metrics")) << table.stdout_text;
  EXPECT_THAT(table.stdout_text, HasSubstr("PRESENT")) << table.stdout_text;
}

TEST_F(LazyContainerd, MarkedFilesArePrefetchedInOneMultiRangeRequest) {
  // The files marked for prefetch lie apart in the blob (1 MiB unmarked between each two): the
  // snapshotter fetches them all with one multi-range request before the layer is mounted, and
  // nothing else; the container then reads them without another request.
  const fs::path& w = work_->path();
  const fs::path root = w / "pf-root";
  fs::create_directories(root / "pf");
  const fs::path list = w / "startup.list";
  std::string paths, names;
  for (int i = 0; i < kPrefetchFiles; ++i) {
    // In name order: marked pfN.bin (64 KiB), then pfN.pad (1 MiB, unmarked).
    const std::string base = (root / "pf" / ("pf" + std::to_string(i))).string();
    MustRun({"dd", "if=/dev/urandom", "of=" + base + ".bin", "bs=64K", "count=1", "status=none"});
    MustRun({"dd", "if=/dev/urandom", "of=" + base + ".pad", "bs=1M", "count=1", "status=none"});
    paths += "/pf/pf" + std::to_string(i) + ".bin\n";
    names += " /pf/pf" + std::to_string(i) + ".bin";
  }
  ASSERT_TRUE(harness::WriteFile(list, paths).ok());
  testing::MakeBusyboxImage(w / "pf-image");
  ASSERT_FALSE(HasFailure());
  MustRun({"tar", "--numeric-owner", "--sort=name", "-C", root.string(), "-cf",
           (w / "pf.tar").string(), "pf"});
  MustRun({"umoci", "raw", "add-layer", "--image", (w / "pf-image").string() + ":latest",
           (w / "pf.tar").string()});
  const std::string ref =
      Publish("prefetch", node_key_.pub, {"--prefetch-list", list.string()}, w / "pf-image");
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();

  auto data_layer = [&]() -> nlohmann::json {
    auto json = MustRun({LAZYCRYPT_BIN, "status", "--json", "--address", metrics_address_});
    nlohmann::json doc = nlohmann::json::parse(json.stdout_text, nullptr, false);
    EXPECT_TRUE(!doc.is_discarded() && doc.contains("layers")) << json.stdout_text;
    nlohmann::json data = nlohmann::json::object();
    if (doc.is_discarded() || !doc.contains("layers")) return data;
    for (const auto& l : doc["layers"]) {
      if (l.value("blob_size_bytes", 0ull) > data.value("blob_size_bytes", 0ull)) data = l;
    }
    return data;
  };
  nlohmann::json data = data_layer();
  EXPECT_EQ(data.value("fetch_requests", 0ull), 1u) << data.dump() << Logs();
  const uint64_t marked = uint64_t{kPrefetchFiles} << 16;
  EXPECT_GE(data.value("bytes_fetched", 0ull), marked) << data.dump();
  EXPECT_LT(data.value("bytes_fetched", 0ull), marked + (1u << 20))
      << "fetched more than the marked files (the 1 MiB between them?): " << data.dump();

  auto read = Run(ref, Id("prefetch"), {"/bin/sh", "-c", "cat" + names + " | wc -c"});
  EXPECT_EQ(read.exit_code, 0) << Describe(read) << Logs();
  EXPECT_THAT(read.stdout_text, HasSubstr(std::to_string(marked)));
  EXPECT_EQ(data_layer().value("fetch_requests", 0ull), 1u) << "the reads fetched again";
}

TEST_P(LazyContainerdOn, LazycryptPullMountsLazycryptLayersAndAppliesPlainOnes) {
  // `lazycrypt pull` instead of ctr-remote: the same labels, containerd's own API.
  const std::string ref = Publish("pull", node_key_.pub, {"--layers", "1"});
  ASSERT_FALSE(HasFailure());
  auto pulled = harness::RunCommand({LAZYCRYPT_BIN, "pull", "--address", ctd_->socket().string(),
                                     "--namespace", "default", "--snapshotter", "lazycrypt",
                                     "--plain-http", "--hosts-dir", "", ref},
                                    std::chrono::seconds(180));
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  EXPECT_THAT(pulled->stdout_text,
              HasSubstr("1 layers mounted lazily by lazycrypt, 1 downloaded and unpacked"))
      << pulled->stdout_text;
  EXPECT_THAT(pulled->stderr_text, HasSubstr("layer 1 sha256:")) << pulled->stderr_text;
  EXPECT_EQ(CountFuseMounts(root_), 1u) << SnapshotterLog();
  auto cat = Run(ref, Id("pull"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.stdout_text, marker_ + "\n") << Describe(cat) << Logs();
  // A second pull finds both layers present and fetches no layer.
  auto again = harness::RunCommand({LAZYCRYPT_BIN, "pull", "--address", ctd_->socket().string(),
                                    "--snapshotter", "lazycrypt", "--plain-http", "--hosts-dir",
                                    "", ref},
                                   std::chrono::seconds(180));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->exit_code, 0) << Describe(*again);
  EXPECT_THAT(again->stdout_text, HasSubstr("2 already present")) << again->stdout_text;
  if (ctd_->version().major >= 2) {
    // containerd 2.x records the use of deprecated APIs and configuration: `lazycrypt pull`
    // (ctrdclient over gRPC) and the harness's config use none.
    auto deprecations = ctd_->Ctr({"deprecations", "list"});
    ASSERT_TRUE(deprecations.ok());
    EXPECT_EQ(deprecations->exit_code, 0) << Describe(*deprecations);
    EXPECT_THAT(deprecations->stdout_text, Not(HasSubstr("io.containerd.deprecation")))
        << deprecations->stdout_text;
  }
}

// containerd 2.x's `ctr images pull` goes through the transfer service (core/transfer/local/
// pull.go): it unpacks only into the snapshotters of its unpack_config (default: overlayfs; the
// harness adds lazycrypt) and labels snapshots for a remote snapshotter (the containerd.io/
// snapshot/cri.* labels) only when the snapshotter exports enable_remote_snapshot_annotations =
// "true". With both, the plain `ctr images pull` mounts lazycrypt layers lazily; without the
// export the snapshotter refuses the unlabelled lazycrypt layer, naming what is missing.
class LazyContainerd21Transfer : public LazyContainerdFixture {
 protected:
  void SetUpExported(bool exported) {
    auto binary = testing::Containerd21Binary();
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
    if (exported) proxy_exports_ = {{"enable_remote_snapshot_annotations", "true"}};
    transfer_unpack_snapshotters_ = {"lazycrypt"};
    SetUpWith(*binary);
  }
  void TearDown() override { TearDownFixture(); }

  Result<CommandResult> CtrPull(const std::string& ref) {
    return ctd_->Ctr({"images", "pull", "--plain-http", "--snapshotter", "lazycrypt", ref},
                     std::chrono::seconds(180));
  }
};

class LazyContainerd21TransferExported : public LazyContainerd21Transfer {
 protected:
  void SetUp() override { SetUpExported(true); }
};
class LazyContainerd21TransferNotExported : public LazyContainerd21Transfer {
 protected:
  void SetUp() override { SetUpExported(false); }
};

TEST_F(LazyContainerd21TransferExported, CtrImagesPullMountsTheLayersLazily) {
  ASSERT_EQ(ctd_->version().major, 2) << ctd_->version().text;
  const std::string ref = Publish("transfer", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = CtrPull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  EXPECT_EQ(CountFuseMounts(root_), 2u) << SnapshotterLog();
  const std::string log = SnapshotterLog();
  size_t mounted = 0;
  for (size_t pos = 0; (pos = log.find("mounted layer sha256:", pos)) != std::string::npos; ++pos) {
    ++mounted;
  }
  EXPECT_EQ(mounted, 2u) << log;
  auto cat = Run(ref, Id("transfer"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.exit_code, 0) << Describe(cat) << Logs();
  EXPECT_EQ(cat.stdout_text, marker_ + "\n");
}

// `ctr images pull --local` (2.x's client-side pull, what 1.x's ctr does) sends no layer labels
// at all, not even lazycrypt's toc-digest: the snapshotter cannot recognise the layer, containerd
// applies the encrypted blob as a tar and fails. Only the transfer-service pull (above),
// `lazycrypt pull`, `ctr-remote images rpull` and the CRI plugin mount lazycrypt layers.
TEST_F(LazyContainerd21TransferExported, CtrImagesPullLocalFailsToApplyTheEncryptedLayer) {
  const std::string ref = Publish("local", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = ctd_->Ctr({"images", "pull", "--local", "--plain-http", "--snapshotter",
                           "lazycrypt", ref},
                          std::chrono::seconds(180));
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  EXPECT_NE(pulled->exit_code, 0) << Describe(*pulled);
  EXPECT_THAT(pulled->stderr_text, HasSubstr("failed to extract layer")) << Describe(*pulled);
  EXPECT_EQ(CountFuseMounts(root_), 0u);
}

TEST_F(LazyContainerd21TransferNotExported, CtrImagesPullIsRefusedNamingTheMissingLabels) {
  ASSERT_EQ(ctd_->version().major, 2) << ctd_->version().text;
  const std::string ref = Publish("transfer", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  auto pulled = CtrPull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  EXPECT_NE(pulled->exit_code, 0) << Describe(*pulled);
  EXPECT_THAT(pulled->stderr_text,
              HasSubstr("came without the image reference and layer digest labels"))
      << Describe(*pulled);
  EXPECT_THAT(pulled->stderr_text, HasSubstr("enable_remote_snapshot_annotations"))
      << Describe(*pulled);
  EXPECT_EQ(CountFuseMounts(root_), 0u);
  auto ls = ctd_->Ctr({"snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(ls.ok());
  EXPECT_EQ(std::count(ls->stdout_text.begin(), ls->stdout_text.end(), '\n'), 1)
      << "a snapshot was left behind: " << ls->stdout_text;
}

// keyprovider: a password-protected node key (refused naming the file without its password, used
// with it) and a layer whose key only an ocicrypt key provider can unwrap (our test provider, run
// by the snapshotter as a command).
TEST_F(LazyContainerd, PasswordProtectedNodeKeyAndKeyProviderLayers) {
  const fs::path& w = work_->path();
  auto restart_with = [&](const std::string& keys_toml) {
    (void)snapshotter_->Signal(SIGTERM);
    (void)snapshotter_->Wait(std::chrono::seconds(20));
    ASSERT_TRUE(harness::WriteFile(
                    w / "config.toml",
                    "address = \"" + socket_.string() + "\"\nroot = \"" + root_.string() +
                        "\"\nlog_level = \"debug\"\n[registry]\nhosts_dir = \"" +
                        (w / "hosts").string() + "\"\n[keys]\ndirs = [\"" + (w / "keys").string() +
                        "\"]\n" + keys_toml)
                    .ok());
    StartSnapshotter();
    WaitForContainerdToReconnect();
  };
  // The node key, now encrypted; its password in a 0600 file.
  fs::remove(w / "keys" / "node.pem");
  MustRun({"openssl", "pkey", "-in", node_key_.priv.string(), "-aes256", "-passout", "pass:n0de",
           "-out", (w / "keys" / "node.pem").string()});
  ASSERT_TRUE(harness::WriteFile(w / "node.pass", "n0de\n").ok());
  fs::permissions(w / "node.pass", fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);
  const std::string ref = Publish("locked", node_key_.pub);
  ASSERT_FALSE(HasFailure());

  restart_with("");
  ASSERT_FALSE(HasFailure());
  auto refused = RemotePull(ref);
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_NE(refused->exit_code, 0) << Describe(*refused);
  // The refusal names the encrypted key (the daemon's log line may land just after the reply).
  const std::string locked_key = (w / "keys" / "node.pem").string();
  for (int i = 0; i < 50 && SnapshotterLog().find(locked_key) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(SnapshotterLog(), HasSubstr(locked_key)) << Describe(*refused) << SnapshotterLog();
  EXPECT_EQ(CountFuseMounts(root_), 0u);

  // With the password and a key provider configured.
  std::ofstream(w / "kek", std::ios::binary) << std::string(32, '\x33');
  ASSERT_TRUE(harness::WriteFile(w / "kp.conf",
                                 R"({"key-providers":{"test":{"cmd":{"path":")" +
                                     std::string(TEST_KEY_PROVIDER) + R"(","args":["--key-file",")" +
                                     (w / "kek").string() + "\"]}}}}")
                  .ok());
  restart_with("provider_config = \"" + (w / "kp.conf").string() + "\"\n[keys.passwords]\n\"" +
               (w / "keys" / "node.pem").string() + "\" = \"" + (w / "node.pass").string() + "\"\n");
  ASSERT_FALSE(HasFailure());
  auto pulled = RemotePull(ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  auto cat = Run(ref, Id("locked"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(cat.stdout_text, marker_ + "\n") << Describe(cat) << Logs();

  // A different image (fresh layer key) wrapped for the provider only.
  ASSERT_TRUE(harness::WriteFile(w / "data-root" / "data" / "marker.txt", "kms-" + marker_ + "\n").ok());
  MustRun({"tar", "--numeric-owner", "-C", (w / "data-root").string(), "-cf",
           (w / "data2.tar").string(), "data"});
  MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
           "--tag", "kms", (w / "data2.tar").string()});
  const std::string kms_ref = registry_->host() + "/lazycrypt/app:kms";
  MustRun({"env", "OCICRYPT_KEYPROVIDER_CONFIG=" + (w / "kp.conf").string(), LAZYCRYPT_BIN,
           "encrypt", "--plain-http", "-r", "provider:test", "--layers", "2",
           "oci:" + (w / "image").string() + ":kms", "docker://" + kms_ref});
  auto kms_pulled = RemotePull(kms_ref);
  ASSERT_TRUE(kms_pulled.ok()) << kms_pulled.status().ToString();
  ASSERT_EQ(kms_pulled->exit_code, 0) << Describe(*kms_pulled) << Logs();
  auto kms_cat = Run(kms_ref, Id("kms"), {"/bin/cat", "/data/marker.txt"});
  EXPECT_EQ(kms_cat.stdout_text, "kms-" + marker_ + "\n") << Describe(kms_cat) << Logs();
  // The "locked" image's two lazycrypt layers (which the kms image shares by chain ID) plus the
  // provider's layer are FUSE mounts: the provider's layer was served lazily too.
  EXPECT_EQ(CountFuseMounts(root_), 3u) << SnapshotterLog();
  EXPECT_THAT(SnapshotterLog(), Not(HasSubstr("n0de")));
}

}  // namespace
}  // namespace lazycrypt
