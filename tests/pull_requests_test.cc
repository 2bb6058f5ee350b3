// Registry requests of a lazy pull through containerd (issue 19, "All layers at once" and its
// acceptance line "pulling a lazycrypt image with N lazycrypt layers costs one manifest fetch and
// at most one request per layer before the first container starts; a second pull of the same
// image costs none for its layers"), counted in a real docker-registry's access log: a real
// containerd (the system's 1.6) pulls an image of three lazycrypt layers with stargz's
// `ctr-remote images rpull` through a real lazycrypt-snapshotter, then runs a container from it.
// The snapshotter's requests are told from containerd's (and `lazycrypt pull`'s) by their
// User-Agent (lazycrypt-snapshotter/…; containerd sends containerd/…, lazycrypt pull lazycrypt/…).
//   - first pull: exactly one manifest request by the snapshotter, at most one blob request per
//     layer (footer and sealed TOC in one range), nothing else; the second and third layers were
//     opened ahead of their Prepares by the warm-up the first layer's Prepare started (the
//     snapshotter logs "opened ahead of its Prepare" for each);
//   - "second pull": (a) a pull of another reference to the same image while the node has its
//     snapshots: containerd finds the chain IDs and asks the snapshotter nothing; (b) after
//     `ctr images rm` of both references (containerd's GC removes the snapshots and unmounts the
//     layers) and a restart of the snapshotter: the layers are prepared and mounted again from
//     the chunk store, no blob request (the restarted process asks for the manifest once).
// The background verification is delayed past the test and the image marks no prefetch files,
// so that every blob request counted is a mount's own. Needs root.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "image/oci.h"
#include "lazylayer/labels.h"
#include "lazylayer/snapshot_handler.h"
#include "snapshotter/types.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using harness::CommandResult;
using testing::Describe;
using testing::MustRun;
using ::testing::HasSubstr;

// Requests in a registry access log line set, by the client that sent them.
struct Requests {
  int manifests = 0;                 // GET/HEAD .../manifests/...
  std::map<std::string, int> blobs;  // GET/HEAD .../blobs/<digest>, by digest
  int other = 0;                     // anything else under /v2/ (not the sentinels)
  int total() const {
    int n = manifests + other;
    for (const auto& [d, c] : blobs) n += c;
    return n;
  }
};

struct Layer {
  std::string digest;
  std::string toc_digest;
  std::string chain_id;
  std::string parent_chain_id;
};

// A docker-registry holding a lazycrypt image of three layers (busybox and two small application
// layers), encrypted for the node key in work/keys.
class ThreeLayerImage : public ::testing::Test {
 protected:
  void SetUpImage() {
    auto work = harness::TempDir::Create("lc-pull-requests");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();
    node_key_ = testing::GenerateKeyPair(w, "ec256", "node");
    fs::create_directories(w / "keys");
    fs::copy_file(node_key_.priv, w / "keys" / "node.pem");
    fs::permissions(w / "keys" / "node.pem", fs::perms::owner_read | fs::perms::owner_write);

    // Three layers: busybox, then two small application layers.
    testing::MakeBusyboxImage(w / "image");
    ASSERT_FALSE(HasFailure());
    for (int i = 1; i <= 2; ++i) {
      const fs::path dir = w / ("app" + std::to_string(i));
      fs::create_directories(dir / "srv");
      ASSERT_TRUE(harness::WriteFile(dir / "srv" / ("layer" + std::to_string(i) + ".txt"),
                                     "layer " + std::to_string(i) + "\n")
                      .ok());
      const fs::path tar = w / ("app" + std::to_string(i) + ".tar");
      MustRun({"tar", "--numeric-owner", "-C", dir.string(), "-cf", tar.string(), "srv"});
      MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
               tar.string()});
    }

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    fs::create_directories(w / "hosts" / registry_->host());
    ASSERT_TRUE(harness::WriteFile(w / "hosts" / registry_->host() / "hosts.toml",
                                   "server = \"http://" + registry_->host() + "\"\n")
                    .ok());
    ref_ = registry_->host() + "/lazycrypt/three:1";
    MustRun({LAZYCRYPT_BIN, "-q", "encrypt", "--plain-http", "-r", "jwe:" + node_key_.pub.string(),
             "oci:" + (w / "image").string() + ":latest", "docker://" + ref_},
            300s);
    ReadLayers();
    ASSERT_EQ(layers_.size(), 3u);
  }

  std::string Get(const std::string& path, const std::string& accept = "") {
    std::vector<std::string> argv = {"curl", "-sf"};
    if (!accept.empty()) argv.insert(argv.end(), {"-H", "Accept: " + accept});
    argv.push_back(registry_->url() + path);
    auto got = harness::RunCommand(argv, 30s);
    EXPECT_TRUE(got.ok() && got->exit_code == 0) << (got.ok() ? testing::Describe(*got) : "");
    return got.ok() ? got->stdout_text : "";
  }

  // The manifest's layers, bottom first, with the chain IDs containerd prepares them under.
  void ReadLayers() {
    auto manifest = nlohmann::json::parse(
        Get("/v2/lazycrypt/three/manifests/1", "application/vnd.oci.image.manifest.v1+json"));
    auto config = nlohmann::json::parse(
        Get("/v2/lazycrypt/three/blobs/" + manifest["config"]["digest"].get<std::string>()));
    std::string parent;
    for (size_t i = 0; i < manifest["layers"].size(); ++i) {
      const auto& l = manifest["layers"][i];
      Layer layer;
      layer.digest = l["digest"].get<std::string>();
      layer.toc_digest =
          l["annotations"].value(std::string(image::kAnnotationLazycryptTocDigest), "");
      layer.parent_chain_id = parent;
      layer.chain_id =
          lazylayer::ChainIdOf(parent, config["rootfs"]["diff_ids"][i].get<std::string>());
      parent = layer.chain_id;
      layers_.push_back(layer);
    }
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  testing::KeyPair node_key_;
  std::string ref_;
  std::vector<Layer> layers_;
};

class PullRequests : public ThreeLayerImage {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    SetUpImage();
    ASSERT_FALSE(HasFatalFailure());
    const fs::path& w = work_->path();
    socket_ = w / "run" / "snapshotter.sock";
    root_ = w / "state";

    auto ctr_remote = harness::RunCommand(
        {(testing::SourceDir() / "tests/data/fetch-trixie-package.sh").string(),
         LAZYCRYPT_TEST_CACHE "/stargz", "stargz-snapshotter", "usr/bin/ctr-remote"},
        300s);
    ASSERT_TRUE(ctr_remote.ok()) << ctr_remote.status().ToString();
    ASSERT_EQ(ctr_remote->exit_code, 0) << Describe(*ctr_remote);
    ctr_remote_ = ctr_remote->stdout_text.substr(0, ctr_remote->stdout_text.find('\n'));

    ASSERT_TRUE(harness::WriteFile(
                    w / "config.toml",
                    "address = \"" + socket_.string() + "\"\nroot = \"" + root_.string() +
                        "\"\nlog_level = \"debug\"\n[keys]\ndirs = [\"" + (w / "keys").string() +
                        "\"]\n[registry]\nhosts_dir = \"" + (w / "hosts").string() +
                        "\"\n[fetch]\nverify_delay_ms = 3600000\n")
                    .ok());
    StartSnapshotter();
    ASSERT_FALSE(HasFailure());
    harness::ContainerdOptions options;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string()});
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
  }

  void TearDown() override {
    if (ctd_) ctd_->Stop();
    testing::StopSnapshotterAndDetachMounts(snapshotter_, work_ ? work_->path() : fs::path());
  }

  void StartSnapshotter() {
    ++starts_;
    snapshotter_ = testing::StartSnapshotterProcess(LAZYCRYPT_SNAPSHOTTER_BIN,
                                                    work_->path() / "config.toml", SnapshotterLogPath());
  }
  fs::path SnapshotterLogPath() const {
    return work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log");
  }
  std::string SnapshotterLog() const { return harness::ReadFileOrEmpty(SnapshotterLogPath()); }
  std::string Logs() const {
    return "\ncontainerd log:\n" + ctd_->Log() + "\nsnapshotter log:\n" + SnapshotterLog();
  }

  Result<CommandResult> RemotePull(const std::string& ref) {
    return ctd_->Client(ctr_remote_, {"images", "rpull", "--plain-http", "--snapshotter",
                                      "lazycrypt", ref},
                        180s);
  }

  // The registry's access log once every request sent so far is in it: a sentinel request, sent
  // after them, is waited for.
  std::string AccessLog() {
    const std::string sentinel = "/v2/sentinel-" + std::to_string(++sentinels_) + "/";
    EXPECT_TRUE(harness::HttpGetStatus(registry_->port(), sentinel).ok());
    std::string log;
    for (int i = 0; i < 200; ++i) {
      log = registry_->Log();
      if (log.find(sentinel) != std::string::npos) break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_NE(log.find(sentinel), std::string::npos) << log;
    return log;
  }

  // The requests in `log` after byte `from` sent with `user_agent` (a prefix), from the
  // registry's "response completed" lines (logfmt: http.request.method=GET
  // http.request.uri="/v2/..." http.request.useragent=lazycrypt/0.1 ...).
  static Requests Count(const std::string& log, size_t from, const std::string& user_agent) {
    auto field = [](const std::string& line, const std::string& name) -> std::string {
      const std::string key = " " + name + "=";
      size_t at = line.find(key);
      if (at == std::string::npos) return "";
      at += key.size();
      if (at < line.size() && line[at] == '"') {
        const size_t close = line.find('"', at + 1);
        return line.substr(at + 1, close == std::string::npos ? std::string::npos : close - at - 1);
      }
      return line.substr(at, line.find(' ', at) - at);
    };
    Requests out;
    size_t pos = from;
    while (pos < log.size()) {
      size_t end = log.find('\n', pos);
      if (end == std::string::npos) end = log.size();
      const std::string line = log.substr(pos, end - pos);
      pos = end + 1;
      if (line.find("msg=\"response completed\"") == std::string::npos) continue;
      const std::string uri = field(line, "http.request.uri");
      if (uri.rfind("/v2/", 0) != 0 || uri.find("/v2/sentinel-") == 0) continue;
      if (field(line, "http.request.useragent").rfind(user_agent, 0) != 0) continue;
      if (uri.find("/manifests/") != std::string::npos) {
        ++out.manifests;
      } else if (size_t b = uri.find("/blobs/"); b != std::string::npos) {
        ++out.blobs[uri.substr(b + 7)];
      } else {
        ++out.other;
      }
    }
    return out;
  }

  static std::string Describe(const Requests& r) {
    std::string out = std::to_string(r.manifests) + " manifest, " + std::to_string(r.other) +
                      " other";
    for (const auto& [d, n] : r.blobs) out += ", " + std::to_string(n) + " x blob " + d;
    return out;
  }
  static std::string Describe(const CommandResult& r) { return testing::Describe(r); }

  static size_t Occurrences(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) {
      ++n;
    }
    return n;
  }

  std::string Id(const std::string& suffix) const {
    return "lc-pullreq-" + std::to_string(getpid()) + "-" + suffix;
  }

  // The snapshotter's registry client (lazycrypt pull, a client of containerd, sends lazycrypt/).
  static constexpr const char* kSnapshotterAgent = "lazycrypt-snapshotter/";

  std::unique_ptr<harness::Subprocess> snapshotter_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  fs::path socket_, root_;
  std::string ctr_remote_;
  int starts_ = 0;
  int sentinels_ = 0;

  // A first pull of the image, from byte `before` of the registry's log on: one manifest and at
  // most one request per layer by the snapshotter, the later layers opened ahead.
  void ExpectFirstPullCosts(size_t before) {
    const std::string after_pull = AccessLog();
    const Requests first = Count(after_pull, before, kSnapshotterAgent);
    std::printf("first pull, the snapshotter's requests: %s\n", Describe(first).c_str());
    EXPECT_EQ(first.manifests, 1) << Describe(first) << "\n" << after_pull.substr(before);
    EXPECT_EQ(first.other, 0) << Describe(first);
    for (const Layer& layer : layers_) {
      EXPECT_LE(first.blobs.count(layer.digest) ? first.blobs.at(layer.digest) : 0, 1)
          << "layer " << layer.digest;
    }
    for (const auto& [digest, n] : first.blobs) {
      EXPECT_TRUE(std::any_of(layers_.begin(), layers_.end(),
                              [&](const Layer& l) { return l.digest == digest; }))
          << "a blob that is no layer of the image: " << digest;
    }
    // The second and third layers were opened while containerd prepared the first: their
    // Prepares found them ready (or waited for the open already under way) and only mounted.
    const std::string log = SnapshotterLog();
    EXPECT_EQ(Occurrences(log, "opened ahead of its Prepare"), 2u) << log;
    for (size_t i = 1; i < layers_.size(); ++i) {
      EXPECT_THAT(log,
                  HasSubstr("layer " + layers_[i].digest + " of " + ref_ + ": opened ahead"))
          << "layer " << i;
    }
    EXPECT_EQ(Occurrences(log, "mounted layer sha256:"), 3u) << log;
  }
};

TEST_F(PullRequests, ThreeLayerPullCostsOneManifestAndOneRequestPerLayerSecondPullNone) {
  // --- First pull: one manifest, at most one request per layer, later layers opened ahead.
  const size_t before = AccessLog().size();
  auto pulled = RemotePull(ref_);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  ExpectFirstPullCosts(before);
  ASSERT_FALSE(HasFatalFailure());

  // The container reads a file of every layer (fetching their chunks: after this count).
  auto run = ctd_->Ctr({"run", "--rm", "--snapshotter", "lazycrypt", ref_, Id("cat"), "/bin/cat",
                        "/srv/layer1.txt", "/srv/layer2.txt"});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->exit_code, 0) << Describe(*run) << Logs();
  EXPECT_EQ(run->stdout_text, "layer 1\nlayer 2\n");

  // --- (a) Another reference to the same image while the node has its snapshots.
  const std::string again_ref = registry_->host() + "/lazycrypt/three:again";
  MustRun({"skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           "docker://" + ref_, "docker://" + again_ref});
  const size_t before_again = AccessLog().size();
  auto again = RemotePull(again_ref);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_EQ(again->exit_code, 0) << Describe(*again) << Logs();
  const Requests second = Count(AccessLog(), before_again, kSnapshotterAgent);
  std::printf("second pull (snapshots present), the snapshotter's requests: %s\n",
              Describe(second).c_str());
  EXPECT_EQ(second.total(), 0) << Describe(second);

  // --- (b) The images removed (containerd's GC removes the snapshots: the layers are
  // unmounted), the snapshotter restarted, the image pulled again: footer and TOC of every layer
  // come from the chunk store.
  for (const std::string& r : {ref_, again_ref}) {
    auto rm = ctd_->Ctr({"images", "rm", "--sync", r});
    ASSERT_TRUE(rm.ok()) << rm.status().ToString();
    ASSERT_EQ(rm->exit_code, 0) << Describe(*rm);
  }
  for (int i = 0; i < 100 && testing::CountFuseMounts(root_) != 0; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(testing::CountFuseMounts(root_), 0u) << "the snapshots were not removed" << Logs();
  ASSERT_TRUE(snapshotter_->Signal(SIGTERM).ok());
  (void)snapshotter_->Wait(20s);
  StartSnapshotter();
  ASSERT_NE(snapshotter_, nullptr);
  testing::WaitForContainerdToReachSnapshotter(*ctd_, "lazycrypt");
  const size_t before_third = AccessLog().size();
  auto third = RemotePull(ref_);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  ASSERT_EQ(third->exit_code, 0) << Describe(*third) << Logs();
  const Requests restarted = Count(AccessLog(), before_third, kSnapshotterAgent);
  std::printf("pull after rm and a snapshotter restart, the snapshotter's requests: %s\n",
              Describe(restarted).c_str());
  EXPECT_TRUE(restarted.blobs.empty()) << Describe(restarted);
  EXPECT_EQ(restarted.manifests, 1) << Describe(restarted);  // a new process: asked once
  EXPECT_EQ(restarted.other, 0) << Describe(restarted);
  EXPECT_EQ(Occurrences(SnapshotterLog(), "mounted layer sha256:"), 3u) << SnapshotterLog();
  auto run_again = ctd_->Ctr({"run", "--rm", "--snapshotter", "lazycrypt", ref_, Id("again"),
                              "/bin/cat", "/srv/layer2.txt"});
  ASSERT_TRUE(run_again.ok()) << run_again.status().ToString();
  EXPECT_EQ(run_again->stdout_text, "layer 2\n") << Describe(*run_again) << Logs();
}


// The snapshotter's layer handler in this process, Prepare by Prepare as containerd sends them
// (stargz labels, as `ctr-remote images rpull`): what a layer opened ahead may and may not skip.
class OpenAhead : public ThreeLayerImage {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    SetUpImage();
    ASSERT_FALSE(HasFatalFailure());
    lazylayer::SnapshotHandlerOptions o;
    o.key_dirs = {work_->path() / "keys"};
    o.registry.plain_http = true;
    o.registry.hosts_dir.clear();
    o.registry.auth_files = {work_->path() / "no-auth.json"};
    o.layer.prefetch = false;
    o.layer.verify_start_delay_ms = 3600 * 1000;
    o.keep_mounts_on_exit = false;
    auto h = lazylayer::SnapshotHandler::Create(std::move(o));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    handler_ = std::move(*h);
  }
  void TearDown() override {
    handler_.reset();  // unmounts
    if (work_) testing::AbortFuseConnectionsUnder(work_->path());
    for (const fs::path& t : targets_) (void)lazylayer::DetachStaleMount(t);
  }

  // containerd's Prepare of layer i as snapshot `id`.
  Result<bool> Prepare(size_t i, int64_t id) {
    const Layer& l = layers_[i];
    const fs::path target = work_->path() / "snapshots" / std::to_string(id) / "fs";
    fs::create_directories(target);
    targets_.push_back(target);
    snapshotter::PrepareRequest req;
    req.key = "prepare-" + std::to_string(id);
    req.parent = l.parent_chain_id;
    req.snapshot_id = id;
    req.target_dir = target;
    req.labels[std::string(snapshotter::kTargetSnapshotLabel)] = l.chain_id;
    req.labels[std::string(lazylayer::kLabelStargzReference)] = ref_;
    req.labels[std::string(lazylayer::kLabelStargzDigest)] = l.digest;
    req.labels[std::string(image::kAnnotationLazycryptTocDigest)] = l.toc_digest;
    return handler_->TryMount(req);
  }

  void WaitForOpenedAhead(uint64_t opened, uint64_t failed = 0) {
    for (int i = 0; i < 400; ++i) {
      const lazylayer::LayerWarmupStats s = handler_->Warmup();
      if (s.opened + s.failed >= opened + failed) break;
      std::this_thread::sleep_for(25ms);
    }
    const lazylayer::LayerWarmupStats s = handler_->Warmup();
    ASSERT_EQ(s.opened, opened);
    ASSERT_EQ(s.failed, failed);
  }

  std::unique_ptr<lazylayer::SnapshotHandler> handler_;
  std::vector<fs::path> targets_;
};

// A layer opened ahead under the node's keys is not mounted once those keys changed: here the
// node key is replaced by a key that is no recipient, between the warm-up and the layer's own
// Prepare. The Prepare opens the layer itself and is refused ("no key"), as without a warm-up.
TEST_F(OpenAhead, KeysChangedSinceTheWarmUpTheLayerIsOpenedAgainAndRefused) {
  auto first = Prepare(0, 1);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(*first);
  WaitForOpenedAhead(2);
  const fs::path keys = work_->path() / "keys";
  const testing::KeyPair other = testing::GenerateKeyPair(work_->path(), "ec256", "other");
  fs::remove(keys / "node.pem");
  fs::copy_file(other.priv, keys / "other.pem");
  fs::permissions(keys / "other.pem", fs::perms::owner_read | fs::perms::owner_write);
  auto second = Prepare(1, 2);
  ASSERT_FALSE(second.ok()) << "a layer opened with a key the node no longer has was mounted";
  EXPECT_EQ(second.status().code(), StatusCode::kPermissionDenied) << second.status().ToString();
  EXPECT_THAT(second.status().message(), HasSubstr(layers_[1].digest));
  // (Taken from the warm-up, then dropped: its key set is not the node's any more.)
  EXPECT_EQ(testing::CountFuseMounts(work_->path()), 1u);
}

// A layer the warm-up could not open (its TOC in the registry is not the pinned one) is no
// error of the Prepare that started the warm-up; the layer's own Prepare fails with its own
// error, and the chain-ID check still decides for a layer opened ahead.
TEST_F(OpenAhead, AFailureAheadIsTheLayersOwnPrepareErrorAndTheChainIdStillDecides) {
  // Layer 1's sealed TOC damaged in the registry's storage (its last bytes hold footer + TOC).
  const fs::path blob = testing::RegistryBlobPath(registry_->storage_dir(), layers_[1].digest);
  std::string bytes = testing::ReadFileString(blob);
  ASSERT_GT(bytes.size(), 200u);
  bytes[bytes.size() - 150] ^= 0x20;
  ASSERT_TRUE(harness::WriteFile(blob, bytes).ok());

  auto first = Prepare(0, 1);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(*first);
  WaitForOpenedAhead(1, 1);
  auto second = Prepare(1, 2);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr(layers_[1].digest));

  // Layer 2, opened ahead, asked for under a chain ID its TOC does not give: refused.
  Layer& l = layers_[2];
  l.chain_id = layers_[1].chain_id;
  auto third = Prepare(2, 3);
  ASSERT_FALSE(third.ok()) << "mounted under a chain ID its TOC does not give";
  EXPECT_EQ(third.status().code(), StatusCode::kAuthFailed) << third.status().ToString();
  EXPECT_EQ(handler_->Warmup().claimed_ready + handler_->Warmup().claimed_waited, 1u);
  EXPECT_EQ(testing::CountFuseMounts(work_->path()), 1u);
}

// `lazycrypt pull` prepares the layers through the snapshotter one by one as containerd's
// unpacker does (each Prepare needs its parent committed): the warm-up opens the later layers
// for it too. Its labels name the manifest by digest (one request by the snapshotter).
TEST_F(PullRequests, LazycryptPullOpensTheLaterLayersAhead) {
  const size_t before = AccessLog().size();
  auto pulled = harness::RunCommand({LAZYCRYPT_BIN, "pull", "--address", ctd_->socket().string(),
                                     "--namespace", "default", "--snapshotter", "lazycrypt",
                                     "--plain-http", ref_},
                                    180s);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
  EXPECT_THAT(pulled->stdout_text, HasSubstr("3 layers mounted lazily")) << Describe(*pulled);
  ExpectFirstPullCosts(before);
}

}  // namespace
}  // namespace lazycrypt
