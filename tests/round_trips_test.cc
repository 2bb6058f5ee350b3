// Registry round trips of a lazy mount (issue 19, "Round trips per pull" and "Mount once,
// remember"), counted in a real docker-registry's access log: the snapshotter's layer handler
// (lazylayer::SnapshotHandler, in this process) mounts the lazycrypt layers of a two-layer image
// with FUSE, as containerd's Prepares ask it to.
//   - a first mount of a layer costs one blob request (footer and sealed TOC in one range);
//   - a second snapshot of the same layer, and a handler restarted on the same chunk store,
//     cost none (footer and TOC from the store);
//   - a stored TOC that does not match the manifest's pin is not used: the layer is fetched
//     again and mounts;
//   - the registry client reuses one connection for every request to the registry (plain HTTP
//     and TLS).
// Prefetch and the background verification are off (verification delayed past the test), so
// that every blob request counted is the mount's own. Needs root and /dev/fuse.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/chunk_store.h"
#include "common/io.h"
#include "crypto/digest.h"
#include "image/oci.h"
#include "lazylayer/labels.h"
#include "lazylayer/mounted_layer.h"
#include "lazylayer/snapshot_handler.h"
#include "registry/registry.h"
#include "snapshotter/types.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::KeyPair;
using testing::MustRun;

struct Layer {
  std::string digest;
  std::string toc_digest;
  std::string toc_size;  // the annotation ("" when absent)
  std::string chain_id;
  std::string parent_chain_id;
};

class RoundTrips : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    auto tmp = harness::TempDir::Create("round-trips");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    key_ = testing::GenerateKeyPair(root / "keys", "ec256", "node");
    fs::rename(key_.pub, root / "node.pub.pem");  // the key directory holds private keys only
    key_.pub = root / "node.pub.pem";

    // Two layers: busybox, and a small application layer on top.
    const fs::path layout = root / "src";
    testing::MakeBusyboxImage(layout);
    fs::create_directories(root / "app" / "srv");
    testing::WriteFileString(root / "app" / "srv" / "hello.txt", "hello from the second layer\n");
    MustRun({"tar", "-C", (root / "app").string(), "-cf", (root / "app.tar").string(), "srv"});
    MustRun({"umoci", "raw", "add-layer", "--image", layout.string() + ":latest",
             (root / "app.tar").string()});

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    image_ref_ = registry_->host() + "/app:1";
    MustRun({testing::LazycryptBin(), "-q", "encrypt", "-r", "jwe:" + key_.pub.string(),
             "--plain-http", "--hosts-dir", "", "oci:" + layout.string(), "docker://" + image_ref_},
            300s);
    ReadImage();
    ASSERT_EQ(layers_.size(), 2u);

    auto store = cache::ChunkStore::Open(root / "store");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::shared_ptr<cache::ChunkStore>(std::move(*store));
  }

  void TearDown() override {
    handler_.reset();  // unmounts (keep_mounts_on_exit is off)
    if (tmp_) testing::AbortFuseConnectionsUnder(tmp_->path());
    for (const auto& [id, target] : targets_) (void)lazylayer::DetachStaleMount(target);
  }

  registry::ClientOptions ClientOptions() const {
    registry::ClientOptions o;
    o.plain_http = true;
    o.hosts_dir.clear();
    o.auth_files = {tmp_->path() / "no-auth.json"};
    return o;
  }

  // The manifest's lazycrypt layers and the chain IDs containerd would prepare them under.
  void ReadImage() {
    auto client = registry::Client::Create(ClientOptions());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    auto ref = registry::Reference::Parse(image_ref_);
    ASSERT_TRUE(ref.ok());
    auto manifest = (*client)->GetManifest(*ref);
    ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
    auto m = nlohmann::json::parse(AsStringView(manifest->bytes));
    MemoryOutputStream config;
    ASSERT_TRUE((*client)->GetBlob(*ref, m["config"]["digest"].get<std::string>(), config).ok());
    auto c = nlohmann::json::parse(AsStringView(config.bytes()));
    const auto& diff_ids = c["rootfs"]["diff_ids"];
    std::string parent;
    for (size_t i = 0; i < m["layers"].size(); ++i) {
      const auto& l = m["layers"][i];
      const std::string diff_id = diff_ids[i].get<std::string>();
      const std::string chain = lazylayer::ChainIdOf(parent, diff_id);
      Layer layer;
      layer.digest = l["digest"].get<std::string>();
      const auto& a = l["annotations"];
      layer.toc_digest = a.value(std::string(image::kAnnotationLazycryptTocDigest), "");
      layer.toc_size = a.value(std::string(image::kAnnotationLazycryptTocSize), "");
      layer.chain_id = chain;
      layer.parent_chain_id = parent;
      ASSERT_FALSE(layer.toc_digest.empty()) << "layer " << i << " is not a lazycrypt layer";
      layers_.push_back(layer);
      parent = chain;
    }
  }

  void StartHandler(uint64_t whole_layer_bytes = 0) {
    lazylayer::SnapshotHandlerOptions o;
    o.layer.whole_layer_bytes = whole_layer_bytes;
    o.key_dirs = {tmp_->path() / "keys"};
    o.registry = ClientOptions();
    o.store = store_;
    o.layer.prefetch = false;
    o.layer.verify_start_delay_ms = 3600 * 1000;  // the mount's own requests only
    o.keep_mounts_on_exit = false;
    auto h = lazylayer::SnapshotHandler::Create(std::move(o));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    handler_ = std::move(*h);
  }

  // Mounts layer i as snapshot `id`; the snapshot directory is fresh.
  void Mount(size_t i, int64_t id) {
    const Layer& l = layers_[i];
    const fs::path target = tmp_->path() / "snapshots" / std::to_string(id) / "fs";
    fs::create_directories(target);
    snapshotter::PrepareRequest req;
    req.key = "prepare-" + std::to_string(id);
    req.parent = l.parent_chain_id;
    req.snapshot_id = id;
    req.target_dir = target;
    req.labels[std::string(snapshotter::kTargetSnapshotLabel)] = l.chain_id;
    req.labels[std::string(lazylayer::kLabelStargzReference)] = image_ref_;
    req.labels[std::string(lazylayer::kLabelStargzDigest)] = l.digest;
    req.labels[std::string(image::kAnnotationLazycryptTocDigest)] = l.toc_digest;
    auto mounted = handler_->TryMount(req);
    ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
    ASSERT_TRUE(*mounted);
    targets_[id] = target;
  }

  // Requests in the registry's access log so far whose request line contains `what`. A sentinel
  // request, sent after every request of the mount has been answered, marks the end: once it is
  // in the log, so are they.
  int Logged(const std::string& what) {
    const std::string sentinel = "/v2/sentinel-" + std::to_string(++sentinels_) + "/";
    EXPECT_TRUE(harness::HttpGetStatus(registry_->port(), sentinel).ok());
    std::string log;
    for (int i = 0; i < 200; ++i) {
      log = registry_->Log();
      if (log.find(sentinel) != std::string::npos) break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_NE(log.find(sentinel), std::string::npos) << log;
    int n = 0;
    for (size_t pos = log.find(what); pos != std::string::npos; pos = log.find(what, pos + 1)) {
      // Access log lines only ("GET /v2/... HTTP/1.1"), not the application log's lines.
      const size_t line = log.rfind('\n', pos);
      const std::string_view head(log.data() + (line == std::string::npos ? 0 : line + 1),
                                  pos - (line == std::string::npos ? 0 : line + 1));
      if (head.find("\"GET ") != std::string_view::npos) ++n;
    }
    return n;
  }
  int BlobGets(size_t i) { return Logged("/blobs/" + layers_[i].digest + " "); }
  int ManifestGets() { return Logged("/manifests/"); }

  std::string ReadInMount(int64_t id, const std::string& path) {
    return testing::ReadFileString(targets_.at(id) / path);
  }

  std::unique_ptr<harness::TempDir> tmp_;
  KeyPair key_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::string image_ref_;
  std::vector<Layer> layers_;
  std::shared_ptr<cache::ChunkStore> store_;
  std::unique_ptr<lazylayer::SnapshotHandler> handler_;
  std::map<int64_t, fs::path> targets_;
  int sentinels_ = 0;
};

TEST_F(RoundTrips, EncryptPinsTheTocSizeNextToItsDigest) {
  for (const Layer& l : layers_) {
    EXPECT_FALSE(l.toc_size.empty()) << l.digest << ": no toc-size annotation";
    EXPECT_EQ(l.toc_size.find_first_not_of("0123456789"), std::string::npos) << l.toc_size;
  }
}

TEST_F(RoundTrips, FirstMountOneRequestAgainNone) {
  StartHandler();
  const int manifests_before = ManifestGets();
  const int before0 = BlobGets(0), before1 = BlobGets(1);
  Mount(0, 1);
  Mount(1, 2);
  const int first0 = BlobGets(0) - before0, first1 = BlobGets(1) - before1;
  std::printf("first mount: %d + %d blob requests for footer+TOC, %d manifest requests\n", first0,
              first1, ManifestGets() - manifests_before);
  EXPECT_EQ(first0, 1) << "footer and TOC of layer 0 in one request\n" << registry_->Log();
  EXPECT_EQ(first1, 1) << "footer and TOC of layer 1 in one request";
  EXPECT_EQ(ReadInMount(2, "srv/hello.txt"), "hello from the second layer\n");  // one chunk

  // A second snapshot of the same layers (another image sharing them, a re-pull).
  const int again0 = BlobGets(0), again1 = BlobGets(1);
  Mount(0, 3);
  Mount(1, 4);
  EXPECT_EQ(BlobGets(0) - again0, 0) << "second snapshot of layer 0";
  EXPECT_EQ(BlobGets(1) - again1, 0) << "second snapshot of layer 1";
  // The chunk read before comes from the store too.
  EXPECT_EQ(ReadInMount(4, "srv/hello.txt"), "hello from the second layer\n");
  EXPECT_EQ(BlobGets(1) - again1, 0);

  // A restarted handler (a restarted daemon) on the same store.
  handler_.reset();
  StartHandler();
  const int restart0 = BlobGets(0), restart1 = BlobGets(1);
  Mount(0, 5);
  Mount(1, 6);
  EXPECT_EQ(BlobGets(0) - restart0, 0) << "after a restart, layer 0";
  EXPECT_EQ(BlobGets(1) - restart1, 0) << "after a restart, layer 1";
  EXPECT_EQ(ReadInMount(6, "srv/hello.txt"), "hello from the second layer\n");
}

// A layer no larger than whole_layer_bytes is read whole by its mount's one request: the
// container's first reads of its files wait for no fetch, and a second mount costs nothing.
TEST_F(RoundTrips, SmallLayerIsReadWholeByItsMountsOneRequest) {
  StartHandler(/*whole_layer_bytes=*/64 << 20);
  const int before0 = BlobGets(0), before1 = BlobGets(1);
  Mount(0, 1);
  Mount(1, 2);
  EXPECT_EQ(BlobGets(0) - before0, 1) << "layer 0: one request\n" << registry_->Log();
  EXPECT_EQ(BlobGets(1) - before1, 1) << "layer 1: one request";
  EXPECT_EQ(ReadInMount(2, "srv/hello.txt"), "hello from the second layer\n");
  const std::string busybox = testing::ReadFileString(targets_.at(1) / "bin" / "busybox");
  EXPECT_GT(busybox.size(), 100000u);
  EXPECT_EQ(BlobGets(0) - before0, 1) << "reading busybox fetched again";
  EXPECT_EQ(BlobGets(1) - before1, 1) << "reading hello.txt fetched again";

  // The same layers again (the store holds footer, TOC and chunks): no request.
  Mount(0, 3);
  Mount(1, 4);
  EXPECT_EQ(ReadInMount(4, "srv/hello.txt"), "hello from the second layer\n");
  EXPECT_EQ(testing::ReadFileString(targets_.at(3) / "bin" / "busybox"), busybox);
  EXPECT_EQ(BlobGets(0) - before0, 1);
  EXPECT_EQ(BlobGets(1) - before1, 1);
}

// Over the bound, only footer and TOC: the read of a file is a request of its own.
TEST_F(RoundTrips, LayerOverTheWholeLayerBoundIsNotReadWhole) {
  StartHandler(/*whole_layer_bytes=*/1);
  const int before1 = BlobGets(1);
  Mount(1, 1);
  EXPECT_EQ(BlobGets(1) - before1, 1);
  EXPECT_EQ(ReadInMount(1, "srv/hello.txt"), "hello from the second layer\n");
  EXPECT_EQ(BlobGets(1) - before1, 2);
}

// The stored copy is checked on every use exactly as the registry's bytes: a stored TOC that is
// not the one the manifest pins is refused, dropped, and the layer is fetched and mounted.
TEST_F(RoundTrips, StoredTocThatIsNotThePinnedOneIsNotUsed) {
  StartHandler();
  Mount(1, 1);
  const std::string key = lazylayer::LayerStoreKey(layers_[1].digest, layers_[1].toc_digest);
  auto stored = store_->GetTail(key);
  ASSERT_TRUE(stored.ok() && stored->has_value()) << "the first mount stores footer and TOC";
  const std::vector<uint8_t> genuine = (*stored)->bytes;
  std::vector<uint8_t> tampered = genuine;
  tampered[tampered.size() / 3] ^= 0x40;  // inside the sealed TOC (valid store crc)
  ASSERT_TRUE(store_->PutTail(key, (*stored)->blob_offset, tampered).ok());

  const int before = BlobGets(1);
  Mount(1, 2);
  EXPECT_EQ(BlobGets(1) - before, 1) << "the tampered copy was used, or no fetch replaced it";
  EXPECT_EQ(ReadInMount(2, "srv/hello.txt"), "hello from the second layer\n");
  stored = store_->GetTail(key);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->bytes, genuine) << "the store holds the genuine bytes again";
}

TEST_F(RoundTrips, RegistryClientReusesOneConnection) {
  auto client = registry::Client::Create(ClientOptions());
  ASSERT_TRUE(client.ok());
  auto ref = registry::Reference::Parse(image_ref_);
  ASSERT_TRUE(ref.ok());
  ASSERT_TRUE((*client)->GetManifest(*ref).ok());
  for (const Layer& l : layers_) {
    auto blob = (*client)->OpenBlob(*ref, l.digest, 0);
    ASSERT_TRUE(blob.ok()) << blob.status().ToString();
    std::vector<uint8_t> tail(4096);
    const uint64_t size = (*blob)->size();
    ASSERT_TRUE((*blob)->ReadAt(size - std::min<uint64_t>(size, tail.size()),
                                MutableByteSpan(tail).first(std::min<uint64_t>(size, 4096)))
                    .ok());
    std::vector<uint8_t> head(80);
    ASSERT_TRUE((*blob)->ReadAt(0, head).ok());
  }
  std::printf("registry client: %llu requests over %llu connections\n",
              static_cast<unsigned long long>((*client)->RequestsSent()),
              static_cast<unsigned long long>((*client)->ConnectionsOpened()));
  EXPECT_GE((*client)->RequestsSent(), 7u);  // manifest, then HEAD + 2 ranges per layer
  EXPECT_EQ((*client)->ConnectionsOpened(), 1u);
}

// Over TLS (where a new connection costs a handshake of its own): ranged reads of two blobs, one
// connection. docker-registry's Go server offers HTTP/2 by ALPN and libcurl takes it; over HTTP/2
// even a transfer cut short resets only its stream, so this held before the plain-HTTP fix too.
TEST(RoundTripsTls, RegistryClientReusesOneTlsConnection) {
  harness::RegistryOptions ro;
  ro.tls = true;
  auto reg = harness::RegistryProcess::Start(ro);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto repo = registry::Reference::Parse((*reg)->host() + "/tls");
  ASSERT_TRUE(repo.ok());
  registry::ClientOptions o;
  o.ca_file = (*reg)->ca_file().string();
  o.hosts_dir.clear();
  std::vector<std::string> digests;
  {
    auto pusher = registry::Client::Create(o);
    ASSERT_TRUE(pusher.ok());
    for (uint8_t seed : {1, 2}) {
      std::vector<uint8_t> bytes(200000);
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 31 + seed);
      const std::string digest = crypto::OciDigest(crypto::Sha256::Of(bytes));
      MemoryBlobSource src(bytes);
      ASSERT_TRUE((*pusher)->PushBlob(*repo, digest, src).ok());
      digests.push_back(digest);
    }
  }
  auto client = registry::Client::Create(o);
  ASSERT_TRUE(client.ok());
  for (const std::string& digest : digests) {
    for (uint64_t offset : {uint64_t{0}, uint64_t{150000}, uint64_t{199000}}) {
      auto got = (*client)->GetBlobRange(*repo, digest, offset, 1000);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
    }
  }
  std::printf("registry client over TLS: %llu requests over %llu connections\n",
              static_cast<unsigned long long>((*client)->RequestsSent()),
              static_cast<unsigned long long>((*client)->ConnectionsOpened()));
  EXPECT_EQ((*client)->RequestsSent(), 6u);
  EXPECT_EQ((*client)->ConnectionsOpened(), 1u);
}

}  // namespace
}  // namespace lazycrypt
