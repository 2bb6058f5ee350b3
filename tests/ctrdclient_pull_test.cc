// `lazycrypt pull` (ctrdclient::PullImage) end to end: a real containerd 1.6 and a real
// docker-registry holding plain busybox images built offline (tests/data/make-busybox-image.sh,
// pushed with skopeo). With containerd's builtin "overlayfs" snapshotter (no remote snapshots)
// every layer takes the ordinary path: content store, diff service, commit; `ctr run` must then
// run the image from what PullImage left behind, with no lease remaining.
//
// Needs root (containerd, overlayfs, runc).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "ctrdclient/pull.h"
#include "tests/command_util.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using ctrdclient::LayerOutcome;
using harness::CommandResult;
using testing::Describe;
using testing::MustRun;
using testing::SourceDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kNamespace[] = "lc-pull-test";

class CtrdclientPull : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, overlayfs snapshots and runc";
    auto work = harness::TempDir::Create("lc-pull");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    MustRun({(SourceDir() / "tests/data/make-busybox-image.sh").string(),
             (work_->path() / "plain").string(), "latest"});
    ASSERT_FALSE(HasFailure());
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    auto containerd = harness::ContainerdProcess::Start();
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    containerd_ = std::move(*containerd);
  }

  // Pushes an OCI layout's tag to the registry; returns the reference.
  std::string Push(const fs::path& layout, const std::string& repo_tag) {
    const std::string ref = registry_->host() + "/" + repo_tag;
    MustRun({"skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             "oci:" + layout.string() + ":latest", "docker://" + ref});
    return ref;
  }

  ctrdclient::PullOptions Options(const std::string& ref) {
    ctrdclient::PullOptions o;
    o.address = containerd_->socket().string();
    o.ns = kNamespace;
    o.ref = ref;
    o.snapshotter = "overlayfs";
    o.registry.plain_http = true;
    o.registry.max_attempts = 2;
    o.progress = [this](const ctrdclient::PullEvent& e) {
      stages_.push_back(e.stage);
      EXPECT_FALSE(e.message.empty());
      EXPECT_EQ(e.layer != nullptr, e.stage == "layer") << e.stage;
    };
    return o;
  }

  CommandResult Ctr(const std::vector<std::string>& args) {
    std::vector<std::string> full = {"--namespace", kNamespace};
    full.insert(full.end(), args.begin(), args.end());
    auto r = containerd_->Ctr(full);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CommandResult{};
  }

  void ExpectNoLeases() {
    CommandResult leases = Ctr({"leases", "ls", "-q"});
    EXPECT_EQ(leases.exit_code, 0) << Describe(leases);
    EXPECT_EQ(leases.stdout_text, "") << "leases left behind";
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<harness::ContainerdProcess> containerd_;
  std::vector<std::string> stages_;
};

TEST_F(CtrdclientPull, AppliesRunsAndSecondPullFindsEverythingPresent) {
  const std::string ref = Push(work_->path() / "plain", "lazycrypt/busybox:latest");
  ASSERT_FALSE(HasFailure());

  auto first = ctrdclient::PullImage(Options(ref));
  ASSERT_TRUE(first.ok()) << first.status().ToString() << "\ncontainerd log:\n"
                          << containerd_->Log();
  EXPECT_EQ(first->image_name, ref);
  ASSERT_EQ(first->layers.size(), 1u);
  const auto& layer = first->layers[0];
  EXPECT_EQ(layer.outcome, LayerOutcome::kApplied);
  EXPECT_EQ(layer.bytes_fetched, layer.size);
  EXPECT_GT(layer.size, 100000u);  // busybox-static
  EXPECT_EQ(layer.chain_id, layer.diff_id);  // one layer: chain ID = diff ID
  EXPECT_EQ(first->chain_id, layer.chain_id);
  EXPECT_GT(first->bytes_fetched, layer.size);  // + manifest + config
  EXPECT_EQ(first->target.digest, first->manifest_digest);  // skopeo pushed a manifest, no index
  EXPECT_EQ(stages_, (std::vector<std::string>{"resolved", "layer", "image"}));
  ExpectNoLeases();

  // containerd sees the image and its snapshot, and runs it.
  CommandResult images = Ctr({"images", "ls", "-q"});
  EXPECT_THAT(images.stdout_text, HasSubstr(ref + "\n"));
  CommandResult snaps = Ctr({"snapshots", "--snapshotter", "overlayfs", "ls"});
  EXPECT_THAT(snaps.stdout_text, HasSubstr(layer.chain_id)) << Describe(snaps);
  // The GC labels: the config keeps the snapshot, the manifest keeps config and layer.
  CommandResult content = Ctr({"content", "ls"});
  EXPECT_THAT(content.stdout_text,
              HasSubstr("containerd.io/gc.ref.snapshot.overlayfs=" + layer.chain_id));
  EXPECT_THAT(content.stdout_text,
              HasSubstr("containerd.io/gc.ref.content.config=" + first->config_digest));
  EXPECT_THAT(content.stdout_text, HasSubstr("containerd.io/gc.ref.content.l.0=" + layer.digest));
  EXPECT_THAT(content.stdout_text, HasSubstr("containerd.io/uncompressed=" + layer.diff_id));

  const std::string id = "lc-pull-" + std::to_string(getpid());
  CommandResult run = Ctr({"run", "--rm", "--snapshotter", "overlayfs", ref, id, "/bin/busybox",
                           "cat", "/etc/hostname"});
  EXPECT_EQ(run.exit_code, 0) << Describe(run) << "\ncontainerd log:\n" << containerd_->Log();
  EXPECT_EQ(run.stdout_text, "lazycrypt-sample\n");

  // Again: everything is present, no layer is fetched.
  stages_.clear();
  auto second = ctrdclient::PullImage(Options(ref));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_EQ(second->layers.size(), 1u);
  EXPECT_EQ(second->layers[0].outcome, LayerOutcome::kPresent);
  EXPECT_EQ(second->layers[0].bytes_fetched, 0u);
  EXPECT_EQ(second->target, first->target);
  EXPECT_EQ(second->bytes_fetched, first->bytes_fetched - layer.size);
  ExpectNoLeases();
}

TEST_F(CtrdclientPull, MissingImageIsAClearErrorAndLeavesNoLease) {
  auto r = ctrdclient::PullImage(Options(registry_->host() + "/lazycrypt/nosuch:latest"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr("lazycrypt/nosuch"));
  ExpectNoLeases();
  CommandResult images = Ctr({"images", "ls", "-q"});
  EXPECT_EQ(images.stdout_text, "");
}

TEST_F(CtrdclientPull, UnreachableContainerdIsUnavailable) {
  auto o = Options(registry_->host() + "/lazycrypt/busybox:latest");
  o.address = (work_->path() / "no-such.sock").string();
  o.call_timeout = std::chrono::seconds(3);
  auto r = ctrdclient::PullImage(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr("create lease"));
}

// Three layers: busybox, a file, then a layer replacing the file and deleting /etc/hostname with
// a whiteout. The diff service applies them in order onto each parent.
TEST_F(CtrdclientPull, MultiLayerImageWithWhiteoutRuns) {
  const fs::path& w = work_->path();
  const fs::path layout = w / "multi";
  fs::copy(w / "plain", layout, fs::copy_options::recursive);
  fs::create_directories(w / "l2/etc");
  fs::create_directories(w / "l3/etc");
  ASSERT_TRUE(harness::WriteFile(w / "l2/etc/extra.txt", "layer two\n").ok());
  ASSERT_TRUE(harness::WriteFile(w / "l3/etc/extra.txt", "layer three\n").ok());
  ASSERT_TRUE(harness::WriteFile(w / "l3/etc/.wh.hostname", "").ok());
  for (const char* l : {"l2", "l3"}) {
    const std::string tar = (w / (std::string(l) + ".tar")).string();
    MustRun({"tar", "--format=pax", "--numeric-owner", "--owner=0", "--group=0", "-C",
             (w / l).string(), "-cf", tar, "."});
    MustRun({"umoci", "raw", "add-layer", "--image", layout.string() + ":latest", tar});
  }
  ASSERT_FALSE(HasFailure());
  const std::string ref = Push(layout, "lazycrypt/multi:3");
  ASSERT_FALSE(HasFailure());

  auto r = ctrdclient::PullImage(Options(ref));
  ASSERT_TRUE(r.ok()) << r.status().ToString() << "\ncontainerd log:\n" << containerd_->Log();
  ASSERT_EQ(r->layers.size(), 3u);
  for (const auto& l : r->layers) {
    EXPECT_EQ(l.outcome, LayerOutcome::kApplied) << l.index;
    EXPECT_EQ(l.bytes_fetched, l.size) << l.index;
  }
  EXPECT_EQ(r->layers[0].chain_id, r->layers[0].diff_id);
  EXPECT_NE(r->layers[1].chain_id, r->layers[1].diff_id);
  EXPECT_EQ(r->chain_id, r->layers[2].chain_id);
  ExpectNoLeases();

  const std::string id = "lc-pull-multi-" + std::to_string(getpid());
  CommandResult run = Ctr({"run", "--rm", "--snapshotter", "overlayfs", ref, id, "/bin/busybox",
                           "sh", "-c", "cat /etc/extra.txt; ls /etc/hostname || echo gone"});
  EXPECT_EQ(run.exit_code, 0) << Describe(run) << "\ncontainerd log:\n" << containerd_->Log();
  EXPECT_THAT(run.stdout_text, HasSubstr("layer three\n"));
  EXPECT_THAT(run.stdout_text, HasSubstr("gone\n"));
  EXPECT_THAT(run.stdout_text, Not(HasSubstr("layer two")));

  // The single-layer busybox shares the base layer: pulled afterwards, it is present already.
  const std::string base = Push(w / "plain", "lazycrypt/busybox:base");
  ASSERT_FALSE(HasFailure());
  auto b = ctrdclient::PullImage(Options(base));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(b->layers.size(), 1u);
  EXPECT_EQ(b->layers[0].outcome, LayerOutcome::kPresent);
}

// The reported failure: `lazycrypt pull` right after `ctr images rm` found the blobs still in the
// content store, only updated their labels, and the garbage collection the removal triggered
// removed them under it ("content digest ... not found"). containerd collects at a moment of its
// own choosing, so here the removal and a synchronous collection (`ctr images rm --sync`) happen
// at the worst moment instead: during the pull, after it found everything present and before it
// labels the config and writes the image record. A pull that holds what it relies on in its
// lease survives it.
TEST_F(CtrdclientPull, ImageRemovedAndCollectedDuringPullKeepsWhatThePullUses) {
  const std::string ref = Push(work_->path() / "plain", "lazycrypt/busybox:gc");
  ASSERT_FALSE(HasFailure());
  auto first = ctrdclient::PullImage(Options(ref));
  ASSERT_TRUE(first.ok()) << first.status().ToString();

  auto o = Options(ref);
  int collections = 0;
  o.progress = [&](const ctrdclient::PullEvent& e) {
    if (e.stage != "layer") return;
    CommandResult removed = Ctr({"images", "rm", "--sync", ref});
    EXPECT_EQ(removed.exit_code, 0) << Describe(removed);
    ++collections;
  };
  auto second = ctrdclient::PullImage(o);
  EXPECT_EQ(collections, 1);
  ASSERT_TRUE(second.ok()) << second.status().ToString() << "\ncontainerd log:\n"
                           << containerd_->Log();
  ASSERT_EQ(second->layers.size(), 1u);
  EXPECT_EQ(second->layers[0].outcome, LayerOutcome::kPresent);
  ExpectNoLeases();

  // What the pull relied on is still there (also after the lease is gone and another collection
  // ran), and the image runs.
  CommandResult lease = Ctr({"leases", "create", "--id", "lc-gc-trigger"});
  EXPECT_EQ(lease.exit_code, 0) << Describe(lease);
  CommandResult gc = Ctr({"leases", "delete", "--sync", "lc-gc-trigger"});
  EXPECT_EQ(gc.exit_code, 0) << Describe(gc);
  CommandResult content = Ctr({"content", "ls", "-q"});
  EXPECT_THAT(content.stdout_text, HasSubstr(first->config_digest));
  EXPECT_THAT(content.stdout_text, HasSubstr(first->manifest_digest));
  EXPECT_THAT(content.stdout_text, HasSubstr(first->layers[0].digest));
  const std::string id = "lc-pull-gc-" + std::to_string(getpid());
  CommandResult run = Ctr({"run", "--rm", "--snapshotter", "overlayfs", ref, id, "/bin/busybox",
                           "cat", "/etc/hostname"});
  EXPECT_EQ(run.exit_code, 0) << Describe(run) << "\ncontainerd log:\n" << containerd_->Log();
  EXPECT_EQ(run.stdout_text, "lazycrypt-sample\n");
}

// Writes `bytes` as a blob of the layout; returns its digest.
std::string PutLayoutBlob(const fs::path& layout, const std::string& bytes) {
  const std::string digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(bytes)));
  EXPECT_TRUE(harness::WriteFile(layout / "blobs/sha256" / digest.substr(7), bytes).ok());
  return digest;
}

nlohmann::json ReadJson(const fs::path& path) {
  auto bytes = ReadFileBytes(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? nlohmann::json::parse(AsStringView(*bytes)) : nlohmann::json();
}

// The config names a diff ID the layer does not unpack to: the pull fails naming both, removes
// the active (extract) snapshot, commits nothing, creates no image and leaves no lease.
TEST_F(CtrdclientPull, WrongDiffIdIsRefusedAndCleanedUp) {
  const fs::path& w = work_->path();
  const fs::path layout = w / "lying";
  fs::copy(w / "plain", layout, fs::copy_options::recursive);
  nlohmann::json index = ReadJson(layout / "index.json");
  const std::string manifest_digest = index["manifests"][0]["digest"];
  nlohmann::json manifest = ReadJson(layout / "blobs/sha256" / manifest_digest.substr(7));
  const std::string config_digest = manifest["config"]["digest"];
  nlohmann::json config = ReadJson(layout / "blobs/sha256" / config_digest.substr(7));
  const std::string wrong = crypto::OciDigest(crypto::Sha256::Of(AsBytes("not the layer")));
  config["rootfs"]["diff_ids"][0] = wrong;
  const std::string config_bytes = config.dump();
  manifest["config"]["digest"] = PutLayoutBlob(layout, config_bytes);
  manifest["config"]["size"] = config_bytes.size();
  const std::string manifest_bytes = manifest.dump();
  index["manifests"][0]["digest"] = PutLayoutBlob(layout, manifest_bytes);
  index["manifests"][0]["size"] = manifest_bytes.size();
  ASSERT_TRUE(harness::WriteFile(layout / "index.json", index.dump()).ok());
  const std::string ref = Push(layout, "lazycrypt/lying:1");
  ASSERT_FALSE(HasFailure());

  auto r = ctrdclient::PullImage(Options(ref));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr("layer 0"));
  EXPECT_THAT(r.status().message(), HasSubstr("the image config says " + wrong));
  CommandResult snaps = Ctr({"snapshots", "--snapshotter", "overlayfs", "ls"});
  EXPECT_EQ(snaps.exit_code, 0) << Describe(snaps);
  EXPECT_THAT(snaps.stdout_text, Not(HasSubstr("extract-")));
  EXPECT_THAT(snaps.stdout_text, Not(HasSubstr(wrong)));
  EXPECT_EQ(Ctr({"images", "ls", "-q"}).stdout_text, "");
  ExpectNoLeases();
}

// An image whose layer annotations carry containerd.io/snapshot/cri.* and .../remote/stargz.*
// labels naming another image: the snapshots lazycrypt pull makes carry the pull's own values
// (the reference it was given, the layer's digest, the manifest it resolved), never the image's.
TEST_F(CtrdclientPull, ImageProvidedSourceLabelsAreReplacedByThePulls) {
  const fs::path& w = work_->path();
  const fs::path layout = w / "labelled";
  fs::copy(w / "plain", layout, fs::copy_options::recursive);
  nlohmann::json index = ReadJson(layout / "index.json");
  const std::string old_manifest = index["manifests"][0]["digest"];
  nlohmann::json manifest = ReadJson(layout / "blobs/sha256" / old_manifest.substr(7));
  const std::string planted_digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes("victim")));
  manifest["layers"][0]["annotations"] = {
      {"containerd.io/snapshot/cri.image-ref", "registry.victim.example/private/app:1"},
      {"containerd.io/snapshot/cri.layer-digest", planted_digest},
      {"containerd.io/snapshot/cri.manifest-digest", planted_digest},
      {"containerd.io/snapshot/remote/stargz.reference", "registry.victim.example/private/app:1"},
      {"containerd.io/snapshot/remote/stargz.digest", planted_digest},
      {"containerd.io/snapshot/harmless", "kept"}};
  const std::string manifest_bytes = manifest.dump();
  index["manifests"][0]["digest"] = PutLayoutBlob(layout, manifest_bytes);
  index["manifests"][0]["size"] = manifest_bytes.size();
  ASSERT_TRUE(harness::WriteFile(layout / "index.json", index.dump()).ok());
  const std::string ref = Push(layout, "lazycrypt/labelled:1");
  ASSERT_FALSE(HasFailure());

  auto r = ctrdclient::PullImage(Options(ref));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->layers.size(), 1u);
  CommandResult info =
      Ctr({"snapshots", "--snapshotter", "overlayfs", "info", r->layers[0].chain_id});
  ASSERT_EQ(info.exit_code, 0) << Describe(info);
  const nlohmann::json labels = nlohmann::json::parse(info.stdout_text)["Labels"];
  EXPECT_EQ(labels.value("containerd.io/snapshot/cri.image-ref", ""), ref) << labels.dump();
  EXPECT_EQ(labels.value("containerd.io/snapshot/cri.layer-digest", ""), r->layers[0].digest);
  EXPECT_EQ(labels.value("containerd.io/snapshot/cri.manifest-digest", ""), r->manifest_digest);
  EXPECT_EQ(labels.value("containerd.io/snapshot/remote/stargz.reference", ""), ref);
  EXPECT_EQ(labels.value("containerd.io/snapshot/remote/stargz.digest", ""), r->layers[0].digest);
  EXPECT_EQ(labels.value("containerd.io/snapshot/harmless", ""), "kept");
  EXPECT_THAT(info.stdout_text, Not(HasSubstr("victim")));
  EXPECT_THAT(info.stdout_text, Not(HasSubstr(planted_digest)));
}

}  // namespace
}  // namespace lazycrypt
