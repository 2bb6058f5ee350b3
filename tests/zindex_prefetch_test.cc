// Prefetch marks of an unmodified ocicrypt image's seekable index (issue 18; docs/FORMAT.md §11.2
// `prefetch`, §11.8 Prefetch): an image encrypted by the real skopeo (AES_256_CTR_HMAC_SHA256) in
// a real docker-registry, its application layer indexed in this process with three scattered
// files marked (zindex::BuildIndex(...).Seal(names)), the index pushed as a referrer of the
// manifest, and the layer prepared by the snapshotter's layer handler (lazylayer::SnapshotHandler,
// as containerd's Prepare asks it) with a real FUSE mount and its prefetch on:
//   - once mounted, the marked files' spans are fetched in the background, in fewer requests
//     (ciphertext runs and window groups of the index blob) than spans, and nothing else;
//   - the marked files then read whole, with the right bytes, with no further registry request.
// Needs root, /dev/fuse, skopeo.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/io.h"
#include "crypto/digest.h"
#include "image/layer.h"
#include "image/oci.h"
#include "image/referrers.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "lazylayer/labels.h"
#include "lazylayer/snapshot_handler.h"
#include "registry/registry.h"
#include "snapshotter/types.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tests/lazy_handler_util.h"
#include "tests/snapshotter_util.h"
#include "zindex/zindex.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::KeyPair;
using testing::MustRun;

constexpr uint64_t kSpanBytes = 256 << 10;

std::string Text(size_t bytes, const std::string& words) {
  std::string t;
  for (int i = 0; t.size() < bytes; ++i) t += "line " + std::to_string(i % 991) + ": " + words + "\n";
  return t;
}

class ZindexPrefetch : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    ASSERT_EQ(testing::RunCommand("skopeo --version").exit_code, 0)
        << "skopeo is missing: scripts/setup.sh installs it";
    auto tmp = harness::TempDir::Create("zindex-prefetch");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    key_ = testing::GenerateKeyPair(root, "ec256", "ec");
    fs::copy_file(key_.priv, root / "keys" / "node.pem");

    // busybox, and an application layer whose three marked files lie apart in the tar (3 MiB of
    // random bytes between them): text that needs its spans' windows, and random bytes; an
    // unmarked file far from them.
    const fs::path layout = root / "src";
    testing::MakeBusyboxImage(layout);
    app_ = root / "app";
    fs::create_directories(app_ / "srv");
    testing::WriteFileString(app_ / "srv" / "a.txt",
                             Text(900 << 10, "the same few words, again and again"));
    testing::WriteFileString(app_ / "srv" / "b.txt",
                             Text(700 << 10, "other words for the second marked file"));
    for (const char* name : {"fill1.bin", "fill2.bin", "fill3.bin"}) {
      MustRun({"dd", "if=/dev/urandom", "of=" + (app_ / "srv" / name).string(), "bs=1M",
               "count=3", "status=none"});
    }
    MustRun({"dd", "if=/dev/urandom", "of=" + (app_ / "srv" / "c.bin").string(), "bs=64k",
             "count=10", "status=none"});
    testing::WriteFileString(app_ / "srv" / "hello.txt", "not marked\n");
    MustRun({"tar", "--numeric-owner", "--no-recursion", "-C", app_.string(), "-cf",
             (root / "app.tar").string(), "srv", "srv/a.txt", "srv/fill1.bin", "srv/hello.txt",
             "srv/fill2.bin", "srv/b.txt", "srv/fill3.bin", "srv/c.bin"});
    MustRun({"umoci", "raw", "add-layer", "--image", layout.string() + ":latest",
             (root / "app.tar").string()});

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    auto client = registry::Client::Create(ClientOptions());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
  }

  void TearDown() override {
    handler_.reset();  // unmounts
    if (tmp_) testing::AbortFuseConnectionsUnder(tmp_->path());
    for (const fs::path& target : targets_) (void)lazylayer::DetachStaleMount(target);
  }

  registry::ClientOptions ClientOptions() const {
    registry::ClientOptions o;
    o.plain_http = true;
    o.hosts_dir.clear();
    o.auth_files = {tmp_->path() / "no-auth.json"};
    return o;
  }

  registry::Reference Ref(const std::string& ref) {
    auto r = registry::Reference::Parse(ref);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return *r;
  }

  std::string SkopeoPush(const std::string& tag) {
    const std::string ref = registry_->host() + "/app:" + tag;
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "--encryption-key",
             "jwe:" + key_.pub.string(), "oci:" + (tmp_->path() / "src").string() + ":latest",
             "docker://" + ref},
            300s);
    return ref;
  }

  void StartHandler(uint64_t whole_layer_bytes = 0) {
    lazylayer::SnapshotHandlerOptions o;
    o.layer.whole_layer_bytes = whole_layer_bytes;
    o.key_dirs = {tmp_->path() / "keys"};
    o.registry = ClientOptions();
    o.layer.prefetch = true;
    // Delayed past the test: every byte counted is the prefetch's or a read's.
    o.layer.verify_start_delay_ms = 3600 * 1000;
    o.log = [this](snapshotter::LogLevel, std::string_view line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.append(line);
      log_ += '\n';
    };
    auto h = lazylayer::SnapshotHandler::Create(std::move(o));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    handler_ = std::move(*h);
  }

  std::string Log() {
    std::lock_guard<std::mutex> lock(log_mu_);
    return log_;
  }

  // The skopeo image pushed as `tag`, its app layer indexed with `marked` files marked and the
  // index pushed as a referrer of its manifest (the artifact the snapshotter looks up).
  struct Indexed {
    std::string ref;
    image::Descriptor layer;
    std::string base_chain, app_chain;
    std::shared_ptr<const zindex::OpenedIndex> opened;
  };
  Indexed PushIndexed(const std::string& tag, const std::vector<std::string>& marked) {
    Indexed x;
    x.ref = SkopeoPush(tag);
    auto got = client_->GetManifest(Ref(x.ref));
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    if (!got.ok()) return x;
    const nlohmann::json m = nlohmann::json::parse(AsStringView(got->bytes));
    EXPECT_EQ(m["layers"].size(), 2u);
    MemoryOutputStream config_bytes;
    EXPECT_TRUE(
        client_->GetBlob(Ref(x.ref), m["config"]["digest"].get<std::string>(), config_bytes).ok());
    const nlohmann::json config = nlohmann::json::parse(AsStringView(config_bytes.bytes()));
    x.base_chain = lazylayer::ChainIdOf("", config["rootfs"]["diff_ids"][0].get<std::string>());
    x.app_chain =
        lazylayer::ChainIdOf(x.base_chain, config["rootfs"]["diff_ids"][1].get<std::string>());

    // The app layer, its key, and its index.
    const nlohmann::json& l = m["layers"][1];
    x.layer.media_type = l["mediaType"].get<std::string>();
    x.layer.digest = l["digest"].get<std::string>();
    x.layer.size = l["size"].get<uint64_t>();
    for (auto& [k, v] : l["annotations"].items()) x.layer.annotations[k] = v;
    auto node = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
    EXPECT_TRUE(node.ok()) << node.status().ToString();
    if (!node.ok()) return x;
    keywrap::KeyRing keys;
    keys.AddKey(std::move(*node));
    auto cipher = image::UnwrapOcicryptLayer(x.layer, keys);
    EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
    if (!cipher.ok()) return x;
    MemoryOutputStream blob;
    EXPECT_TRUE(client_->GetBlob(Ref(x.ref), x.layer.digest, blob).ok());
    MemoryInputStream ciphertext(blob.bytes());
    zindex::BuildOptions build;
    build.span_bytes = kSpanBytes;
    auto unsealed = zindex::BuildIndex(ciphertext, x.layer, *cipher, build);
    EXPECT_TRUE(unsealed.ok()) << unsealed.status().ToString();
    if (!unsealed.ok()) return x;
    auto sealed = std::move(*unsealed).Seal(marked);
    EXPECT_TRUE(sealed.ok()) << sealed.status().ToString();
    if (!sealed.ok()) return x;
    auto core_bytes = zindex::SealedCoreBytes(*sealed);
    EXPECT_TRUE(core_bytes.ok()) << core_bytes.status().ToString();
    auto opened = zindex::OpenedIndex::Open(*sealed, sealed->size(), x.layer, *cipher);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    if (!core_bytes.ok() || !opened.ok()) return x;
    x.opened = *opened;

    image::Descriptor subject;
    subject.media_type = got->media_type;
    subject.digest = got->digest;
    subject.size = got->bytes.size();
    image::ArtifactBlob index_blob{std::string(zindex::kSealedIndexMediaType), *sealed,
                                   {{std::string(zindex::kAnnotationLayerDigest), x.layer.digest},
                                    {std::string(zindex::kAnnotationCoreBytes),
                                     std::to_string(*core_bytes)}}};
    auto pushed =
        image::PushReferrer(*client_, Ref(x.ref), subject, zindex::kArtifactType, {index_blob});
    EXPECT_TRUE(pushed.ok()) << pushed.status().ToString();
    return x;
  }

  // The app layer prepared as containerd would (its parent unpacked or not: the handler mounts
  // the layer) as snapshot 1; its mount point.
  fs::path PrepareApp(const Indexed& x) {
    const fs::path target = tmp_->path() / "snapshots" / "1" / "fs";
    fs::create_directories(target);
    targets_.push_back(target);
    snapshotter::PrepareRequest req;
    req.key = "prepare-1";
    req.parent = x.base_chain;
    req.snapshot_id = 1;
    req.target_dir = target;
    req.labels[std::string(snapshotter::kTargetSnapshotLabel)] = x.app_chain;
    req.labels[std::string(lazylayer::kLabelStargzReference)] = x.ref;
    req.labels[std::string(lazylayer::kLabelStargzDigest)] = x.layer.digest;
    auto mounted = handler_->TryMount(req);
    EXPECT_TRUE(mounted.ok()) << mounted.status().ToString() << Log();
    EXPECT_TRUE(mounted.ok() && *mounted);
    EXPECT_TRUE(testing::StatusOf(*handler_, 1).has_value()) << "not mounted lazily:\n" << Log();
    return target;
  }

  std::unique_ptr<harness::TempDir> tmp_;
  KeyPair key_;
  fs::path app_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
  std::unique_ptr<lazylayer::SnapshotHandler> handler_;
  std::vector<fs::path> targets_;
  std::mutex log_mu_;
  std::string log_;
};

TEST_F(ZindexPrefetch, MarkedFilesArePrefetchedInFewerRequestsThanSpansThenReadWithoutAny) {
  const std::vector<std::string> marked = {"srv/a.txt", "srv/b.txt", "srv/c.bin"};
  const Indexed x = PushIndexed("marked", marked);
  ASSERT_FALSE(HasFailure());

  // The marked files' spans, as the mount's index lists them.
  const format::LayerIndex& li = *x.opened->layer_index();
  ASSERT_EQ(li.prefetch_entries().size(), 3u);
  std::set<uint64_t> spans;
  for (uint32_t e : li.prefetch_entries()) {
    const format::ChunkRange r = li.ChunksForRange(li.entries()[e], 0, ~uint64_t{0});
    for (uint64_t c = r.first; c < r.first + r.count; ++c) spans.insert(c);
  }
  std::printf("%zu spans in the layer, %zu of them the marked files'\n",
              x.opened->span_count(), spans.size());
  ASSERT_GE(spans.size(), 8u);

  StartHandler();
  const fs::path target = PrepareApp(x);
  ASSERT_FALSE(HasFailure());

  // The prefetch: every marked span opened (up to 30 s), nothing else fetched.
  std::optional<lazylayer::MountedLayerStatus> s;
  for (int i = 0; i < 300; ++i) {
    s = testing::StatusOf(*handler_, 1);
    ASSERT_TRUE(s.has_value());
    if (s->stats.chunks_opened >= spans.size()) break;
    std::this_thread::sleep_for(100ms);
  }
  std::this_thread::sleep_for(200ms);  // nothing more comes
  s = testing::StatusOf(*handler_, 1);
  ASSERT_TRUE(s.has_value());
  const cache::LayerStats prefetched = s->stats;
  std::printf("prefetch: %llu spans opened, %llu requests (%llu of them for windows), %llu bytes\n",
              static_cast<unsigned long long>(prefetched.chunks_opened),
              static_cast<unsigned long long>(prefetched.fetch_requests),
              static_cast<unsigned long long>(prefetched.index_fetch_requests),
              static_cast<unsigned long long>(prefetched.blob_bytes_fetched));
  EXPECT_EQ(prefetched.chunks_opened, spans.size()) << "the marked files were not prefetched";
  EXPECT_EQ(prefetched.chunks_fetched, spans.size());
  EXPECT_EQ(prefetched.auth_failures, 0u);
  EXPECT_EQ(prefetched.fetch_errors, 0u);
  EXPECT_GT(prefetched.fetch_requests, 0u);
  EXPECT_LT(prefetched.fetch_requests, spans.size())
      << "the prefetch took a request per span (or more)";
  // One ciphertext run and one window group per marked file at most (they lie apart).
  EXPECT_LE(prefetched.fetch_requests - prefetched.index_fetch_requests, marked.size());
  EXPECT_LE(prefetched.index_fetch_requests, marked.size());

  // The marked files read whole, right, with no further request.
  for (const std::string& name : marked) {
    EXPECT_EQ(testing::FileSha256(target / name), testing::FileSha256(app_ / name)) << name;
  }
  s = testing::StatusOf(*handler_, 1);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->stats.fetch_requests, prefetched.fetch_requests)
      << "a marked file's read fetched again";
  EXPECT_EQ(s->stats.chunks_fetched, prefetched.chunks_fetched);
  // An unmarked file is fetched on demand.
  EXPECT_EQ(testing::ReadFileString(target / "srv" / "hello.txt"), "not marked\n");
  s = testing::StatusOf(*handler_, 1);
  ASSERT_TRUE(s.has_value());
  EXPECT_GT(s->stats.fetch_requests, prefetched.fetch_requests);
}

// A small layer (no larger than [fetch] whole_layer_bytes) new to the node: every span and window
// is loaded at mount, in one request each for the spans' run and the windows' group, so the
// container's reads find them and fetch nothing.
TEST_F(ZindexPrefetch, SmallLayerIsLoadedWholeAtMountThenReadWithoutAnyRequest) {
  const Indexed x = PushIndexed("small", {});
  ASSERT_FALSE(HasFailure());
  StartHandler(/*whole_layer_bytes=*/x.layer.size);
  const fs::path target = PrepareApp(x);
  ASSERT_FALSE(HasFailure());
  const uint64_t span_count = x.opened->span_count();
  std::optional<lazylayer::MountedLayerStatus> s;
  for (int i = 0; i < 300; ++i) {  // up to 30 s
    s = testing::StatusOf(*handler_, 1);
    ASSERT_TRUE(s.has_value());
    if (s->stats.chunks_opened >= span_count) break;
    std::this_thread::sleep_for(100ms);
  }
  std::this_thread::sleep_for(200ms);  // nothing more comes
  s = testing::StatusOf(*handler_, 1);
  ASSERT_TRUE(s.has_value());
  const cache::LayerStats loaded = s->stats;
  EXPECT_EQ(loaded.chunks_opened, span_count) << "the spans were not loaded at mount";
  EXPECT_EQ(loaded.auth_failures, 0u);
  // The layer (11 MiB) in one run, the windows in one group.
  EXPECT_EQ(loaded.fetch_requests - loaded.index_fetch_requests, 1u);
  EXPECT_EQ(loaded.index_fetch_requests, 1u);
  for (const char* name : {"srv/a.txt", "srv/hello.txt", "srv/b.txt", "srv/c.bin", "srv/fill2.bin"}) {
    EXPECT_EQ(testing::FileSha256(target / name), testing::FileSha256(app_ / name)) << name;
  }
  s = testing::StatusOf(*handler_, 1);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->stats.fetch_requests, loaded.fetch_requests) << "a read fetched again";
}

}  // namespace
}  // namespace lazycrypt
