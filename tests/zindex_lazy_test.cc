// Unmodified ocicrypt images served lazily by the snapshotter through their seekable index
// (issue 18 part 2, the serving side; docs/FORMAT.md §11): an image encrypted by the real skopeo
// (AES_256_CTR_HMAC_SHA256, JWE for an RSA and an EC recipient) in a real docker-registry 2.8 (no
// Referrers API: the tag fallback), indexed by the real `lazycrypt index`, prepared by the
// snapshotter's layer handler (lazylayer::SnapshotHandler, in this process, as containerd's
// Prepare asks it) with a real FUSE mount:
//   - with the index, the layer is mounted lazily: a small file reads while far fewer bytes than
//     the layer were fetched; the background verification reads the whole layer and marks it
//     verified (node key: the RSA recipient's, then the EC recipient's);
//   - without an index (an image nobody indexed, or [ocicrypt] lazy_index = false) the same
//     kind of layer is unpacked eagerly by the snapshotter (its unpacked record);
//   - a tampered sealed index (a byte flipped, pushed as a referrer) is refused and the layer is
//     unpacked instead; a layer whose ciphertext (HMAC) is wrong is refused outright (the real
//     blob's index, offered for it, does not open for another digest; the eager path then checks
//     the HMAC before anything is committed);
//   - a restart of the handler (its FUSE fd kept in an fd store) resumes the same mount and
//     re-opens the index from beside its restore record, with the registry stopped;
//   - a span damaged in the chunk store on disk is dropped and fetched again, never served;
//   - zindex v2: the mount fetches only the index blob's header and core (one ranged request,
//     the descriptor's core-bytes hint; only the core is kept for a restart), a read fetches its
//     spans' windows from the index blob by range; a window the registry alters is EIO for its
//     file, the others read.
// And through a real containerd 2.1 (CRI, the shipped drop-in, runc) with the snapshotter daemon:
//   - Cri2Zindex.IndexedSkopeoImageRunsLazilyThenVerifies: both layers of an indexed skopeo image
//     (RSA and EC recipients) are FUSE-mounted by lazycrypt, the container prints its marker with
//     far less than the 24 MiB data layer fetched by the reads, then both layers verify; an image
//     nobody indexed runs too, its new layer unpacked eagerly by the snapshotter.
// Needs root, /dev/fuse, skopeo.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/chunk_store.h"
#include "common/file_io.h"
#include "common/io.h"
#include "crypto/digest.h"
#include "fdstore/fd_store.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "image/referrers.h"
#include "lazylayer/labels.h"
#include "lazylayer/restore_record.h"
#include "lazylayer/snapshot_handler.h"
#include "registry/registry.h"
#include "snapshotter/types.h"
#include "tests/containerd_peers.h"
#include "tests/cri_fixture.h"
#include "tests/harness/fake_http_server.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/lazy_handler_util.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"
#include "zindex/zindex.h"
#include "zindex/zindex.pb.h"
#include "zindex/zindex_internal.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::CheckOf;
using testing::KeyPair;
using testing::MemoryFdStore;
using testing::MustRun;

constexpr char kHello[] = "hello from a lazily served, indexed ocicrypt layer\n";

struct Layer {
  std::string digest;
  uint64_t size = 0;
  std::string chain_id;
  std::string parent_chain_id;
};

class ZindexLazy : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    ASSERT_EQ(testing::RunCommand("skopeo --version").exit_code, 0)
        << "skopeo is missing: scripts/setup.sh installs it";
    auto tmp = harness::TempDir::Create("zindex-lazy");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    // Two recipients; the node holds the one the test parameter names.
    rsa_ = testing::GenerateKeyPair(root, "rsa2048", "rsa");
    ec_ = testing::GenerateKeyPair(root, "ec256", "ec");
    const KeyPair& node = GetParam() == "ec" ? ec_ : rsa_;
    fs::copy_file(node.priv, root / "keys" / "node.pem");

    // busybox, and an application layer: a small file and 6 MiB that does not compress.
    const fs::path layout = root / "src";
    testing::MakeBusyboxImage(layout);
    const fs::path app = root / "app";
    fs::create_directories(app / "srv");
    testing::WriteFileString(app / "srv" / "hello.txt", kHello);
    MustRun({"dd", "if=/dev/urandom", "of=" + (app / "srv" / "big.bin").string(), "bs=1M",
             "count=6", "status=none"});
    fs::create_symlink("hello.txt", app / "srv" / "link");
    big_sha256_ = testing::FileSha256(app / "srv" / "big.bin");
    // And 1 MiB of text that deflate compresses with back-references: its spans need their
    // windows (zindex v2: fetched from the index blob with the span).
    for (int i = 0; text_.size() < (size_t{1} << 20); ++i) {
      text_ += "line " + std::to_string(i % 997) + ": the same few words, again and again\n";
    }
    testing::WriteFileString(app / "srv" / "text.txt", text_);
    MustRun({"tar", "--numeric-owner", "--no-recursion", "-C", app.string(), "-cf",
             (root / "app.tar").string(), "srv", "srv/hello.txt", "srv/big.bin", "srv/link",
             "srv/text.txt"});
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

  // skopeo encrypts the layout for both recipients into the registry as `tag` (fresh layer keys
  // each time: another image).
  std::string SkopeoPush(const std::string& tag) {
    const std::string ref = registry_->host() + "/app:" + tag;
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "--encryption-key",
             "jwe:" + rsa_.pub.string(), "--encryption-key", "jwe:" + ec_.pub.string(),
             "oci:" + (tmp_->path() / "src").string() + ":latest", "docker://" + ref},
            300s);
    return ref;
  }

  void Index(const std::string& ref) {
    const KeyPair& node = GetParam() == "ec" ? ec_ : rsa_;
    MustRun({testing::LazycryptBin(), "-q", "index", "--plain-http", "--hosts-dir", "", "--key",
             node.priv.string(), "--span-size", "256KiB", "docker://" + ref},
            300s);
  }

  // The manifest's layers and the chain IDs containerd would prepare them under.
  std::vector<Layer> ReadImage(const std::string& ref, nlohmann::json* manifest = nullptr) {
    auto got = client_->GetManifest(Ref(ref));
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    nlohmann::json m = nlohmann::json::parse(AsStringView(got->bytes));
    if (manifest) *manifest = m;
    MemoryOutputStream config;
    EXPECT_TRUE(client_->GetBlob(Ref(ref), m["config"]["digest"].get<std::string>(), config).ok());
    auto c = nlohmann::json::parse(AsStringView(config.bytes()));
    std::string parent;
    std::vector<Layer> layers;
    for (size_t i = 0; i < m["layers"].size(); ++i) {
      const auto& l = m["layers"][i];
      EXPECT_NE(l["mediaType"].get<std::string>().find("+encrypted"), std::string::npos);
      const std::string chain =
          lazylayer::ChainIdOf(parent, c["rootfs"]["diff_ids"][i].get<std::string>());
      layers.push_back(Layer{l["digest"].get<std::string>(), l["size"].get<uint64_t>(), chain,
                             parent});
      parent = chain;
    }
    return layers;
  }

  void StartHandler(bool verify, std::shared_ptr<fdstore::FdStore> fd_store = nullptr,
                    std::shared_ptr<cache::ChunkStore> store = nullptr, bool lazy_index = true,
                    bool layer_verify = true, uint64_t index_max_bytes = 0) {
    lazylayer::SnapshotHandlerOptions o;
    o.store = std::move(store);
    if (fd_store) {
      o.fd_store = std::move(fd_store);
      o.layer.mount.clone_fd = false;  // a mount that survives its daemon (fusefs/fuse_fs.h)
    }
    o.key_dirs = {tmp_->path() / "keys"};
    o.registry = ClientOptions();
    o.layer.prefetch = false;
    o.layer.verify = layer_verify;
    if (index_max_bytes != 0) o.index_max_bytes = index_max_bytes;
    // Without verify: delayed past the test, so that every byte counted is a read's own.
    o.layer.verify_start_delay_ms = verify ? 0 : 3600 * 1000;
    o.keep_mounts_on_exit = o.fd_store != nullptr;
    o.lazy_index = lazy_index;
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

  snapshotter::PrepareRequest Request(const std::string& ref, const Layer& l, int64_t id) {
    const fs::path target = tmp_->path() / "snapshots" / std::to_string(id) / "fs";
    fs::create_directories(target);
    targets_.push_back(target);
    snapshotter::PrepareRequest req;
    req.key = "prepare-" + std::to_string(id);
    req.parent = l.parent_chain_id;
    req.snapshot_id = id;
    req.target_dir = target;
    req.labels[std::string(snapshotter::kTargetSnapshotLabel)] = l.chain_id;
    req.labels[std::string(lazylayer::kLabelStargzReference)] = ref;
    req.labels[std::string(lazylayer::kLabelStargzDigest)] = l.digest;
    return req;
  }

  snapshotter::RestoreRequest RestoreOf(const snapshotter::PrepareRequest& req) {
    snapshotter::RestoreRequest r;
    r.name = req.labels.at(std::string(snapshotter::kTargetSnapshotLabel));
    r.parent = req.parent;
    r.labels = req.labels;
    r.target_dir = req.target_dir;
    r.snapshot_id = req.snapshot_id;
    return r;
  }

  std::optional<lazylayer::MountedLayerStatus> StatusOf(int64_t id) {
    return testing::StatusOf(*handler_, id);
  }
  lazylayer::Verification WaitForVerification(int64_t id) {
    return testing::WaitForVerification(*handler_, id);
  }

  // Prepared and unpacked by the snapshotter (not mounted): its unpacked record and files.
  void ExpectUnpacked(const snapshotter::PrepareRequest& req) {
    EXPECT_FALSE(StatusOf(req.snapshot_id).has_value()) << "mounted lazily";
    EXPECT_TRUE(lazylayer::ReadUnpackedRecord(req.target_dir).ok()) << "no unpacked record";
    EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  }

  // Pushes an artifact listing `blobs` (as sealed indexes of `layer_digest`) as a zindex
  // referrer of `ref`'s manifest; returns its digest.
  std::string PushIndexArtifact(const std::string& ref, const std::string& layer_digest,
                                const std::vector<std::string>& blobs) {
    auto got = client_->GetManifest(Ref(ref));
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    image::Descriptor subject;
    subject.media_type = got->media_type;
    subject.digest = got->digest;
    subject.size = got->bytes.size();
    std::vector<image::ArtifactBlob> artifact;
    for (const std::string& b : blobs) {
      artifact.push_back(image::ArtifactBlob{std::string(zindex::kSealedIndexMediaType),
                                             std::vector<uint8_t>(b.begin(), b.end()),
                                             {{std::string(zindex::kAnnotationLayerDigest),
                                               layer_digest}}});
    }
    auto pushed =
        image::PushReferrer(*client_, Ref(ref), subject, zindex::kArtifactType, artifact);
    EXPECT_TRUE(pushed.ok()) << pushed.status().ToString();
    return pushed.ok() ? *pushed : "";
  }

  // The app layer's sealed index blob `lazycrypt index` pushed (the newest artifact's), with its
  // descriptor in the artifact manifest.
  struct IndexBlob {
    image::Descriptor descriptor;
    std::vector<uint8_t> bytes;
  };
  IndexBlob IndexBlobOf(const std::string& ref, const std::string& layer_digest) {
    IndexBlob out;
    auto manifest = client_->GetManifest(Ref(ref));
    EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
    if (!manifest.ok()) return out;
    auto listed = image::ListReferrers(*client_, Ref(ref), manifest->digest, zindex::kArtifactType);
    EXPECT_TRUE(listed.ok() && !listed->empty()) << "no index artifact";
    if (!listed.ok() || listed->empty()) return out;
    auto artifact = image::FetchReferrerManifest(*client_, Ref(ref), listed->back(),
                                                 manifest->digest, zindex::kArtifactType);
    EXPECT_TRUE(artifact.ok()) << artifact.status().ToString();
    if (!artifact.ok()) return out;
    for (const image::Descriptor& b : artifact->manifest.layers) {
      if (b.Annotation(zindex::kAnnotationLayerDigest) != layer_digest) continue;
      MemoryOutputStream bytes;
      EXPECT_TRUE(client_->GetBlob(Ref(ref), b.digest, bytes).ok());
      out.descriptor = b;
      out.bytes = bytes.bytes();
    }
    EXPECT_FALSE(out.bytes.empty()) << "no index blob for " << layer_digest;
    return out;
  }

  // Layer `i` of `ref`'s manifest as a descriptor, and its key unwrapped with the node's key.
  std::pair<image::Descriptor, image::OcicryptLayerCipher> LayerKey(const std::string& ref,
                                                                    size_t i) {
    nlohmann::json m;
    const std::vector<Layer> layers = ReadImage(ref, &m);
    image::Descriptor layer;
    layer.media_type = m["layers"][i]["mediaType"].get<std::string>();
    layer.digest = layers[i].digest;
    layer.size = layers[i].size;
    for (auto& [k, v] : m["layers"][i]["annotations"].items()) layer.annotations[k] = v;
    auto node = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
    EXPECT_TRUE(node.ok());
    keywrap::KeyRing keys;
    keys.AddKey(std::move(*node));
    auto cipher = image::UnwrapOcicryptLayer(layer, keys);
    EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
    return {layer, std::move(*cipher)};
  }

  // Pushes `bytes` as the sealed index of `layer_digest` (annotated with `core_bytes`) in an
  // artifact of its own, the newest referrer of `ref`'s manifest (the one the snapshotter tries
  // first); returns the artifact's digest.
  std::string PushIndexBlob(const std::string& ref, const std::string& layer_digest,
                            const std::vector<uint8_t>& bytes, const std::string& core_bytes) {
    auto got = client_->GetManifest(Ref(ref));
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    image::Descriptor subject;
    subject.media_type = got->media_type;
    subject.digest = got->digest;
    subject.size = got->bytes.size();
    image::ArtifactBlob blob{std::string(zindex::kSealedIndexMediaType), bytes,
                             {{std::string(zindex::kAnnotationLayerDigest), layer_digest},
                              {std::string(zindex::kAnnotationCoreBytes), core_bytes}}};
    auto pushed = image::PushReferrer(*client_, Ref(ref), subject, zindex::kArtifactType, {blob});
    EXPECT_TRUE(pushed.ok()) << pushed.status().ToString();
    return pushed.ok() ? *pushed : "";
  }

  std::unique_ptr<harness::TempDir> tmp_;
  KeyPair rsa_, ec_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
  std::string big_sha256_;
  std::string text_;
  std::unique_ptr<lazylayer::SnapshotHandler> handler_;
  std::vector<fs::path> targets_;
  std::mutex log_mu_;
  std::string log_;
};

INSTANTIATE_TEST_SUITE_P(Recipients, ZindexLazy, ::testing::Values("rsa", "ec"));

TEST_P(ZindexLazy, IndexedLayerRunsLazilyThenVerifies) {
  const std::string ref = SkopeoPush("indexed");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  ASSERT_EQ(layers.size(), 2u);
  StartHandler(/*verify=*/false);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString() << Log();
  ASSERT_TRUE(*mounted);
  ASSERT_TRUE(StatusOf(1).has_value()) << "not mounted lazily:\n" << Log();
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_EQ(fs::read_symlink(req.target_dir / "srv" / "link"), "hello.txt");
  auto after = StatusOf(1);
  ASSERT_TRUE(after.has_value());
  std::printf("layer %llu bytes; fetched %llu bytes in %llu requests to read one small file\n",
              static_cast<unsigned long long>(layers[1].size),
              static_cast<unsigned long long>(after->stats.blob_bytes_fetched),
              static_cast<unsigned long long>(after->stats.fetch_requests));
  EXPECT_GT(after->stats.blob_bytes_fetched, 0u);
  EXPECT_LT(after->stats.blob_bytes_fetched, layers[1].size / 8);
  EXPECT_EQ(after->stats.auth_failures, 0u);
  EXPECT_EQ(testing::FileSha256(req.target_dir / "srv" / "big.bin"), big_sha256_);
  EXPECT_TRUE(handler_->Check(CheckOf(req)).ok());

  // Verified in the background (HMAC, digests, diff_id, entries and spans against the tar).
  handler_.reset();
  StartHandler(/*verify=*/true);
  auto base = Request(ref, layers[0], 2);
  auto app = Request(ref, layers[1], 3);
  ASSERT_TRUE(handler_->TryMount(base).ok());
  ASSERT_TRUE(handler_->TryMount(app).ok());
  ASSERT_TRUE(StatusOf(2).has_value() && StatusOf(3).has_value()) << Log();
  EXPECT_EQ(WaitForVerification(2), lazylayer::Verification::kVerified)
      << handler_->Check(CheckOf(base)).ToString();
  EXPECT_EQ(WaitForVerification(3), lazylayer::Verification::kVerified)
      << handler_->Check(CheckOf(app)).ToString();
  EXPECT_EQ(testing::ReadFileString(app.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_TRUE(fs::exists(base.target_dir / "bin" / "busybox"));
}

TEST_P(ZindexLazy, WithoutAnIndexTheLayerIsUnpacked) {
  const std::string ref = SkopeoPush("plain");  // nobody indexed it
  const std::vector<Layer> layers = ReadImage(ref);
  StartHandler(/*verify=*/true);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  ExpectUnpacked(req);
  EXPECT_NE(Log().find("no usable index, unpacked"), std::string::npos) << Log();

  // An indexed image too, when lazy_index is off.
  const std::string indexed = SkopeoPush("indexed-but-off");
  Index(indexed);
  const std::vector<Layer> l2 = ReadImage(indexed);
  handler_.reset();
  StartHandler(/*verify=*/true, nullptr, nullptr, /*lazy_index=*/false);
  auto off = Request(indexed, l2[1], 2);
  mounted = handler_->TryMount(off);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ExpectUnpacked(off);
}

TEST_P(ZindexLazy, TamperedSealedIndexIsRefusedAndTheLayerUnpacked) {
  const std::string ref = SkopeoPush("tampered-index");
  nlohmann::json m;
  const std::vector<Layer> layers = ReadImage(ref, &m);
  // A sealed index for the app layer, one byte flipped (as a registry or a tenant without the
  // key could), pushed as the manifest's referrer.
  auto got = client_->GetManifest(Ref(ref));
  ASSERT_TRUE(got.ok());
  auto node = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
  ASSERT_TRUE(node.ok());
  keywrap::KeyRing keys;
  keys.AddKey(std::move(*node));
  image::Descriptor layer;
  layer.media_type = m["layers"][1]["mediaType"].get<std::string>();
  layer.digest = layers[1].digest;
  layer.size = layers[1].size;
  for (auto& [k, v] : m["layers"][1]["annotations"].items()) layer.annotations[k] = v;
  auto cipher = image::UnwrapOcicryptLayer(layer, keys);
  ASSERT_TRUE(cipher.ok()) << cipher.status().ToString();
  MemoryOutputStream blob;
  ASSERT_TRUE(client_->GetBlob(Ref(ref), layer.digest, blob).ok());
  MemoryInputStream in(blob.bytes());
  auto sealed = zindex::BuildSealedIndex(in, layer, *cipher);
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  // A byte of the sealed core (a flipped window only fails its span: see below).
  (*sealed)[zindex::kSealedHeaderBytes + 16] ^= 0x01;
  image::Descriptor subject;
  subject.media_type = got->media_type;
  subject.digest = got->digest;
  subject.size = got->bytes.size();
  image::ArtifactBlob artifact{std::string(zindex::kSealedIndexMediaType), *sealed,
                               {{std::string(zindex::kAnnotationLayerDigest), layer.digest}}};
  auto pushed = image::PushReferrer(*client_, Ref(ref), subject, zindex::kArtifactType, {artifact});
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();

  StartHandler(/*verify=*/true);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  ExpectUnpacked(req);  // refused: unpacked instead
  EXPECT_NE(Log().find("no usable index, unpacked"), std::string::npos) << Log();
  EXPECT_NE(Log().find(pushed.value()), std::string::npos) << "the refusal names the referrer";
}

TEST_P(ZindexLazy, WrongHmacIsRefused) {
  const std::string ref = SkopeoPush("hmac");
  Index(ref);  // for the real blob
  nlohmann::json m;
  const std::vector<Layer> layers = ReadImage(ref, &m);
  // The app layer's ciphertext with one byte flipped, under a manifest that names the altered
  // blob (digest and size consistent; HMAC now wrong, which only a full read sees). The index
  // stays a referrer of the original manifest only; the altered image has none, and its eager
  // unpack checks the HMAC before anything is committed.
  MemoryOutputStream blob;
  ASSERT_TRUE(client_->GetBlob(Ref(ref), layers[1].digest, blob).ok());
  std::vector<uint8_t> bytes = blob.bytes();
  bytes[bytes.size() / 2] ^= 0x40;
  const std::string digest = crypto::OciDigest(crypto::Sha256::Of(bytes));
  MemoryBlobSource altered(std::move(bytes));
  ASSERT_TRUE(client_->PushBlob(Ref(ref), digest, altered).ok());
  m["layers"][1]["digest"] = digest;
  const std::string text = m.dump();
  const std::string altered_ref = registry_->host() + "/app:hmac-altered";
  auto original = client_->GetManifest(Ref(ref));
  ASSERT_TRUE(original.ok());
  ASSERT_TRUE(client_->PutManifest(Ref(altered_ref), AsBytes(text), original->media_type).ok());
  // The real blob's index offered for the altered layer too (annotated with its digest, as a
  // registry could): sealed for the other digest, it does not open (the AAD binds the layer).
  {
    auto original_manifest = client_->GetManifest(Ref(ref));
    ASSERT_TRUE(original_manifest.ok());
    auto listed = image::ListReferrers(*client_, Ref(ref), original_manifest->digest,
                                       zindex::kArtifactType);
    ASSERT_TRUE(listed.ok() && !listed->empty()) << "no index for the original";
    auto artifact = image::FetchReferrerManifest(*client_, Ref(ref), listed->front(),
                                                 original_manifest->digest, zindex::kArtifactType);
    ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
    std::vector<image::ArtifactBlob> blobs;
    for (const image::Descriptor& b : artifact->manifest.layers) {
      if (b.Annotation(zindex::kAnnotationLayerDigest) != layers[1].digest) continue;
      MemoryOutputStream sealed;
      ASSERT_TRUE(client_->GetBlob(Ref(ref), b.digest, sealed).ok());
      blobs.push_back(image::ArtifactBlob{std::string(zindex::kSealedIndexMediaType),
                                          sealed.bytes(),
                                          {{std::string(zindex::kAnnotationLayerDigest), digest}}});
    }
    ASSERT_EQ(blobs.size(), 1u);
    auto altered_manifest = client_->GetManifest(Ref(altered_ref));
    ASSERT_TRUE(altered_manifest.ok());
    image::Descriptor subject;
    subject.media_type = altered_manifest->media_type;
    subject.digest = altered_manifest->digest;
    subject.size = altered_manifest->bytes.size();
    ASSERT_TRUE(
        image::PushReferrer(*client_, Ref(altered_ref), subject, zindex::kArtifactType, blobs)
            .ok());
  }
  Layer t = layers[1];
  t.digest = digest;
  StartHandler(/*verify=*/true);
  auto req = Request(altered_ref, t, 1);
  auto mounted = handler_->TryMount(req);
  EXPECT_FALSE(mounted.ok() && *mounted) << "an altered layer was mounted";
  if (!mounted.ok()) EXPECT_EQ(mounted.status().code(), StatusCode::kAuthFailed)
      << mounted.status().ToString();
  EXPECT_FALSE(StatusOf(1).has_value());
  EXPECT_FALSE(fs::exists(req.target_dir / "srv" / "hello.txt"));
  EXPECT_NE(Log().find("no usable index"), std::string::npos) << Log();
}

TEST_P(ZindexLazy, RestartResumesTheSameMountAndReopensTheIndex) {
  const std::string ref = SkopeoPush("restart");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  auto fd_store = std::make_shared<MemoryFdStore>();
  auto store = cache::ChunkStore::Open(tmp_->path() / "store");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::shared_ptr<cache::ChunkStore> shared_store(std::move(*store));
  StartHandler(/*verify=*/false, fd_store, shared_store);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
  ASSERT_TRUE(StatusOf(1).has_value()) << Log();
  // A file kept open across the restart.
  int fd = ::open((req.target_dir / "srv" / "hello.txt").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char buf[256];
  ASSERT_GT(::pread(fd, buf, sizeof buf, 0), 0);

  // Only the index's header and core are kept beside the snapshot (the windows stay in the
  // registry, and in the chunk store with their spans).
  const IndexBlob index = IndexBlobOf(ref, layers[1].digest);
  const fs::path kept = lazylayer::RestoreRecordPath(req.target_dir).parent_path() /
                        "lazycrypt-zindex";
  ASSERT_TRUE(fs::exists(kept));
  EXPECT_EQ(std::to_string(fs::file_size(kept)),
            index.descriptor.Annotation(zindex::kAnnotationCoreBytes));
  EXPECT_LT(fs::file_size(kept), index.bytes.size());
  // A span with a window read before the restart (kept in the store with its window).
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "text.txt"), text_);

  handler_.reset();  // leaves the mount to the next daemon
  registry_->Stop();
  StartHandler(/*verify=*/false, fd_store, shared_store);
  Status restored = handler_->Restore(RestoreOf(req));
  EXPECT_TRUE(restored.ok()) << restored.ToString() << Log();
  handler_->RestoreFinished();
  EXPECT_EQ(handler_->Restarts().fds_resumed, 1u);
  ASSERT_TRUE(StatusOf(1).has_value()) << Log();
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), kHello);
  ::close(fd);
  // The text again, out of the page cache: its spans and windows from the chunk store, the
  // registry stopped.
  int text_fd = ::open((req.target_dir / "srv" / "text.txt").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(text_fd, 0);
  ::posix_fadvise(text_fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(text_fd);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "text.txt"), text_);
}

// What a registry lists is bounded (FORMAT.md 11.8): the newest artifact names 3 sealed indexes
// for the layer, each twice, an older one 12 more; none opens. At most 4 sealed blobs are
// fetched in all, each digest once, then the layer is unpacked (without the bound: 18 fetches,
// and a registry listing 15,000 blobs of 64 MiB holds a Prepare for hours).
TEST_P(ZindexLazy, ManyListedIndexesCostAtMostFourFetchesEachOnce) {
  const std::string ref = SkopeoPush("many-indexes");
  const std::vector<Layer> layers = ReadImage(ref);
  std::vector<std::string> older, newer;
  for (int i = 0; i < 12; ++i) older.push_back("not a sealed index, older " + std::to_string(i));
  for (int i = 0; i < 3; ++i) {
    const std::string b = "not a sealed index, newer " + std::to_string(i);
    newer.push_back(b);
    newer.push_back(b);
  }
  PushIndexArtifact(ref, layers[1].digest, older);
  PushIndexArtifact(ref, layers[1].digest, newer);
  std::map<std::string, int> fetches;  // by sealed blob digest
  for (const auto* list : {&older, &newer}) {
    for (const std::string& b : *list) fetches[crypto::OciDigest(crypto::Sha256::Of(AsBytes(b)))];
  }
  auto proxy = harness::FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  const std::string proxied = (*proxy)->host() + "/app:many-indexes";

  StartHandler(/*verify=*/true);
  auto req = Request(proxied, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString() << Log();
  ASSERT_TRUE(*mounted);
  ExpectUnpacked(req);
  int total = 0;
  for (const std::string& line : (*proxy)->RequestLines()) {
    for (auto& [digest, n] : fetches) {
      if (line.find("/blobs/" + digest) != std::string::npos) {
        ++n;
        ++total;
      }
    }
  }
  EXPECT_GE(total, 1);
  EXPECT_LE(total, 4) << Log();
  for (const auto& [digest, n] : fetches) EXPECT_LE(n, 1) << digest << " fetched again";
  EXPECT_NE(Log().find("no usable index, unpacked"), std::string::npos) << Log();
}

// An index is only a key holder's claim, served only while the background verification runs
// (FORMAT.md 11.5, 4): a restart with the verification off, or with lazy_index off, does not
// restore an indexed mount (refused, fail closed; a new pull unpacks the layer).
TEST_P(ZindexLazy, RestartWithVerificationOrLazyIndexOffDoesNotRestoreTheIndexedMount) {
  const std::string ref = SkopeoPush("restore-unverified");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  StartHandler(/*verify=*/false);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
  ASSERT_TRUE(StatusOf(1).has_value()) << Log();
  handler_.reset();  // no fd store: unmounted

  StartHandler(/*verify=*/false, nullptr, nullptr, /*lazy_index=*/true, /*layer_verify=*/false);
  Status restored = handler_->Restore(RestoreOf(req));
  EXPECT_FALSE(restored.ok()) << "restored unverified:\n" << Log();
  EXPECT_FALSE(StatusOf(1).has_value());
  EXPECT_FALSE(fs::exists(req.target_dir / "srv" / "hello.txt"));
  handler_.reset();

  StartHandler(/*verify=*/false, nullptr, nullptr, /*lazy_index=*/false);
  restored = handler_->Restore(RestoreOf(req));
  EXPECT_FALSE(restored.ok()) << "restored with lazy_index off:\n" << Log();
  EXPECT_FALSE(StatusOf(1).has_value());
  handler_.reset();

  // Both on again: restored from its record.
  StartHandler(/*verify=*/false);
  restored = handler_->Restore(RestoreOf(req));
  EXPECT_TRUE(restored.ok()) << restored.ToString() << Log();
  EXPECT_TRUE(StatusOf(1).has_value());
}

// After a restart whose kept sealed index is gone, the index comes from the registry by its
// recorded digest: a registry that answers with a body far larger than index_max_bytes is cut
// off at what was asked for, never buffered whole (an endless body would exhaust memory).
TEST_P(ZindexLazy, RestoreFetchOfTheIndexIsBoundedAgainstAnOversizedBody) {
  const std::string ref = SkopeoPush("restore-oversized");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  StartHandler(/*verify=*/false);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
  ASSERT_TRUE(StatusOf(1).has_value()) << Log();
  handler_.reset();
  const fs::path kept = lazylayer::RestoreRecordPath(req.target_dir).parent_path() /
                        "lazycrypt-zindex";
  ASSERT_TRUE(fs::exists(kept));
  const uint64_t sealed_bytes = fs::file_size(kept);
  fs::remove(kept);

  constexpr uint64_t kBodyBytes = uint64_t{64} << 20;
  const std::string body(kBodyBytes, 'x');
  auto server = harness::FakeHttpServer::Start([&](const harness::FakeRequest& r) {
    if (r.Path().find("/blobs/") != std::string::npos) return harness::FakeResponse{200, {}, body};
    if (r.Path() == "/v2/" || r.Path() == "/v2") return harness::FakeResponse{200, {}, "{}"};
    return harness::FakeResponse{404, {}, ""};
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto proxy = harness::FaultProxy::Start((*server)->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  snapshotter::RestoreRequest restore = RestoreOf(req);
  restore.labels[std::string(lazylayer::kLabelStargzReference)] =
      (*proxy)->host() + "/app:restore-oversized";
  StartHandler(/*verify=*/false, nullptr, nullptr, /*lazy_index=*/true, /*layer_verify=*/true,
               /*index_max_bytes=*/std::max<uint64_t>(sealed_bytes, uint64_t{1} << 20));
  Status restored = handler_->Restore(restore);
  EXPECT_FALSE(restored.ok()) << Log();
  EXPECT_FALSE(StatusOf(1).has_value());
  std::printf("sealed index %llu bytes; the restore took %llu body bytes of the hostile answer\n",
              static_cast<unsigned long long>(sealed_bytes),
              static_cast<unsigned long long>((*proxy)->response_body_bytes()));
  EXPECT_LT((*proxy)->response_body_bytes(), kBodyBytes / 4) << restored.ToString();
  bool asked = false;  // the restore did ask for the index (not refused before)
  for (const std::string& line : (*proxy)->RequestLines()) {
    if (line.find("/blobs/sha256:") != std::string::npos) asked = true;
  }
  EXPECT_TRUE(asked) << restored.ToString();
  std::printf("%s\n", restored.ToString().c_str());
}

// The chunk store keeps a span's ciphertext as fetched; what comes back from disk is decoded and
// checked against the index's span digest again: a damaged stored span is dropped and fetched
// again, never served.
TEST_P(ZindexLazy, DamagedStoredSpanIsFetchedAgainNotServed) {
  const std::string ref = SkopeoPush("store");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  auto opened = cache::ChunkStore::Open(tmp_->path() / "store");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::shared_ptr<cache::ChunkStore> store(std::move(*opened));
  StartHandler(/*verify=*/false, nullptr, store);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString();
  ASSERT_TRUE(StatusOf(1).has_value()) << Log();
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_GE(StatusOf(1)->stats.chunks_present, 1u);
  handler_.reset();

  // Every stored byte flipped (the sparse file's holes stay holes).
  size_t damaged = 0;
  for (const auto& f : fs::directory_iterator(tmp_->path() / "store")) {
    if (f.path().extension() != ".data") continue;
    std::string bytes = testing::ReadFileString(f.path());
    for (char& c : bytes) {
      if (c != 0) {
        c = static_cast<char>(c ^ 0x5a);
        ++damaged;
      }
    }
    testing::WriteFileString(f.path(), bytes);
  }
  ASSERT_GT(damaged, 0u);
  StartHandler(/*verify=*/false, nullptr, store);
  auto again = Request(ref, layers[1], 2);
  mounted = handler_->TryMount(again);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString();
  EXPECT_EQ(testing::ReadFileString(again.target_dir / "srv" / "hello.txt"), kHello);
  auto s = StatusOf(2);
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(s->stats.disk_corrupt, 1u);
  EXPECT_GE(s->stats.chunks_fetched, 1u);
  EXPECT_EQ(s->stats.auth_failures, 0u);
}

// zindex v2 through the registry: the mount fetched only the index blob's header and core, in one
// ranged request (its descriptor's kAnnotationCoreBytes); a read of the text fetches each span's
// window from the index blob by range (stats and the registry's requests), and the file is right.
TEST_P(ZindexLazy, LazyReadFetchesItsSpanWindowsFromTheIndexBlobByRange) {
  const std::string ref = SkopeoPush("windows");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  const IndexBlob index = IndexBlobOf(ref, layers[1].digest);
  ASSERT_FALSE(index.bytes.empty());
  const uint64_t core = std::stoull(index.descriptor.Annotation(zindex::kAnnotationCoreBytes));
  ASSERT_LT(core, index.bytes.size());
  auto proxy = harness::FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  StartHandler(/*verify=*/false);
  auto req = Request((*proxy)->host() + "/app:windows", layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
  ASSERT_TRUE(StatusOf(1).has_value()) << "not mounted lazily:\n" << Log();
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "text.txt"), text_);
  auto s = StatusOf(1);
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(s->stats.index_fetch_requests, 1u);
  EXPECT_GT(s->stats.index_bytes_fetched, 0u);
  EXPECT_LT(s->stats.index_bytes_fetched, index.bytes.size() - core);
  EXPECT_EQ(s->stats.auth_failures, 0u);
  std::vector<std::string> ranges;  // asked of the index blob, in completion order
  for (const harness::ProxiedRequest& r : (*proxy)->Requests()) {
    if (r.request_line.find("/blobs/" + index.descriptor.digest) == std::string::npos) continue;
    EXPECT_FALSE(r.range.empty()) << "the index blob asked for whole: " << r.request_line;
    ranges.push_back(r.range);
  }
  ASSERT_GE(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "bytes=0-" + std::to_string(core - 1)) << "the mount's one request";
  size_t windows = 0;
  for (size_t k = 1; k < ranges.size(); ++k) {
    const uint64_t from = std::stoull(ranges[k].substr(ranges[k].find('=') + 1));
    EXPECT_GE(from, core) << ranges[k] << ": not in the windows area";
    ++windows;
  }
  EXPECT_EQ(windows, s->stats.index_fetch_requests);
}

// The core-bytes hint is only a hint: without one, with one too short, or an invalid one (larger
// than the blob, not a number) the snapshotter reads the header first, then the rest of the core:
// one more ranged request, never the whole blob, and the layer mounts.
TEST_P(ZindexLazy, MissingShortOrInvalidCoreHintCostsOneMoreRangedRequest) {
  const std::string ref = SkopeoPush("core-hint");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  const IndexBlob index = IndexBlobOf(ref, layers[1].digest);
  ASSERT_FALSE(index.bytes.empty());
  const uint64_t core = std::stoull(index.descriptor.Annotation(zindex::kAnnotationCoreBytes));
  const std::string header = "bytes=0-" + std::to_string(zindex::kSealedHeaderBytes - 1);
  const std::string rest = "bytes=" + std::to_string(zindex::kSealedHeaderBytes) + "-" +
                           std::to_string(core - 1);
  struct Case {
    std::string hint;
    std::vector<std::string> ranges;  // what the mount asks of the index blob
  };
  const std::vector<Case> cases = {
      {"", {header, rest}},
      {"100", {"bytes=0-99", "bytes=100-" + std::to_string(core - 1)}},
      {std::to_string(index.bytes.size() + 1), {header, rest}},
      {"12 KiB", {header, rest}},
  };
  int64_t id = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE("hint \"" + c.hint + "\"");
    // The same blob, under an artifact of its own whose descriptor carries the hint (or none).
    auto got = client_->GetManifest(Ref(ref));
    ASSERT_TRUE(got.ok());
    image::Descriptor subject;
    subject.media_type = got->media_type;
    subject.digest = got->digest;
    subject.size = got->bytes.size();
    image::ArtifactBlob blob{std::string(zindex::kSealedIndexMediaType), index.bytes,
                             {{std::string(zindex::kAnnotationLayerDigest), layers[1].digest}}};
    if (!c.hint.empty()) blob.annotations[std::string(zindex::kAnnotationCoreBytes)] = c.hint;
    ASSERT_TRUE(
        image::PushReferrer(*client_, Ref(ref), subject, zindex::kArtifactType, {blob}).ok());
    auto proxy = harness::FaultProxy::Start(registry_->port());
    ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
    StartHandler(/*verify=*/false);
    auto req = Request((*proxy)->host() + "/app:core-hint", layers[1], ++id);
    auto mounted = handler_->TryMount(req);
    ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
    ASSERT_TRUE(StatusOf(id).has_value()) << "not mounted lazily:\n" << Log();
    std::vector<std::string> ranges;
    for (const harness::ProxiedRequest& r : (*proxy)->Requests()) {
      if (r.request_line.find("/blobs/" + index.descriptor.digest) != std::string::npos) {
        ranges.push_back(r.range);
      }
    }
    EXPECT_EQ(ranges, c.ranges);
    EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
    handler_.reset();
  }
}

// A window the registry serves altered (the index blob with a byte flipped in a window of a span
// of the text; or that window replaced by one of another seal of the same size, whose plain
// window differs: it decompresses, so without its seal it would inflate the span to other
// bytes) is EIO for the file that needs it, never other bytes; the other files read. The core is
// intact: the index is found and mounted.
TEST_P(ZindexLazy, TamperedWindowInTheRegistryIsEioForItsFileOthersStillRead) {
  const std::string ref = SkopeoPush("tampered-window");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  const IndexBlob index = IndexBlobOf(ref, layers[1].digest);
  ASSERT_FALSE(index.bytes.empty());
  auto [layer, cipher] = LayerKey(ref, 1);
  auto opened = zindex::OpenedIndex::Open(index.bytes, index.bytes.size(), layer, cipher);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  auto unsealed = zindex::internal::UnsealIndex(index.bytes, layer.digest, layer.size,
                                                cipher.key.span());
  ASSERT_TRUE(unsealed.ok()) << unsealed.status().ToString();
  zindex::v2::Index proto;
  ASSERT_TRUE(proto.ParseFromArray(unsealed->serialized.data(),
                                   static_cast<int>(unsealed->serialized.size())));
  // The tar stream is app.tar (its diff_id); a span that starts well inside the text.
  const std::string tar = testing::ReadFileString(tmp_->path() / "app.tar");
  ASSERT_EQ(crypto::OciDigest(crypto::Sha256::Of(AsBytes(tar))), (*opened)->diff_id());
  const size_t text_at = tar.find(text_.substr(0, 4096));
  ASSERT_NE(text_at, std::string::npos);
  int span = -1;
  for (int i = 0; i < proto.spans_size() && span < 0; ++i) {
    const auto& sp = proto.spans(i);
    if (sp.out_offset() >= text_at + 4096 && sp.out_offset() < text_at + text_.size() - 4096 &&
        sp.window_size() > 0) {
      span = i;
    }
  }
  ASSERT_GE(span, 0) << "no span with a window starts inside the text";
  const zindex::OpenedIndex::Range w = (*opened)->span_window(static_cast<size_t>(span));
  ASSERT_EQ(w.size, proto.spans(span).window_sealed_size());

  std::vector<std::pair<std::string, std::vector<uint8_t>>> variants;
  {
    std::vector<uint8_t> flipped = index.bytes;
    flipped[w.offset + w.size / 2] ^= 0x01;
    variants.emplace_back("a byte of its window flipped", std::move(flipped));
  }
  {
    const auto& sp = proto.spans(span);
    const std::vector<uint8_t> plain(tar.begin() + static_cast<ptrdiff_t>(sp.out_offset() -
                                                                          sp.window_size()),
                                     tar.begin() + static_cast<ptrdiff_t>(sp.out_offset()));
    zindex::internal::Salt other = unsealed->salt;
    other[0] ^= 1;
    std::vector<uint8_t> window, changed;
    for (int x = 1; x < 256 && window.size() != w.size; ++x) {  // XOR: same LZ structure
      changed = plain;
      for (uint8_t& b : changed) b ^= static_cast<uint8_t>(x);
      auto sealed = zindex::internal::SealWindow(changed, static_cast<uint32_t>(span), other,
                                                 layer.digest, layer.size, cipher.key.span());
      ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
      window = std::move(sealed).value();
    }
    ASSERT_EQ(window.size(), w.size) << "no other window of the same size";
    {
      // The premise: this plain window inflates the span to other bytes, so a reader that did
      // not authenticate windows would serve them. Sealed for this very seal and pinned by a
      // core of it (as a key holder could), it decodes, and not to the tar's bytes.
      auto same_seal = zindex::internal::SealWindow(changed, static_cast<uint32_t>(span),
                                                    unsealed->salt, layer.digest, layer.size,
                                                    cipher.key.span());
      ASSERT_TRUE(same_seal.ok()) << same_seal.status().ToString();
      ASSERT_EQ(same_seal->size(), w.size);
      zindex::v2::Index pinning = proto;
      const crypto::Sha256Digest pin = crypto::Sha256::Of(*same_seal);
      pinning.mutable_spans(span)->set_window_sha256(std::string(pin.begin(), pin.end()));
      std::vector<uint8_t> area = unsealed->windows_area;
      std::copy(same_seal->begin(), same_seal->end(),
                area.begin() + static_cast<ptrdiff_t>(w.offset - (*opened)->sealed_core_bytes()));
      const std::string serialized = pinning.SerializeAsString();
      auto crafted = zindex::internal::SealIndex(AsBytes(serialized), unsealed->salt, area,
                                                 layer.digest, layer.size, cipher.key.span());
      ASSERT_TRUE(crafted.ok()) << crafted.status().ToString();
      auto other_core = zindex::OpenedIndex::Open(*crafted, crafted->size(), layer, cipher);
      ASSERT_TRUE(other_core.ok()) << other_core.status().ToString();
      const auto r = (*opened)->span_ciphertext(static_cast<size_t>(span));
      auto ciphertext = client_->GetBlobRange(Ref(ref), layer.digest, r.offset, r.size);
      ASSERT_TRUE(ciphertext.ok()) << ciphertext.status().ToString();
      auto decoded =
          (*other_core)->DecodeSpan(static_cast<size_t>(span), *ciphertext, *same_seal);
      ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
      const auto out = (*opened)->span_uncompressed(static_cast<size_t>(span));
      EXPECT_NE(std::string(reinterpret_cast<const char*>(decoded->data()), decoded->size()),
                tar.substr(static_cast<size_t>(out.offset), static_cast<size_t>(out.size)))
          << "the other window changes nothing in the span";
    }
    std::vector<uint8_t> replaced = index.bytes;
    std::copy(window.begin(), window.end(), replaced.begin() + static_cast<ptrdiff_t>(w.offset));
    variants.emplace_back("its window replaced by another seal's", std::move(replaced));
  }
  const std::string core = index.descriptor.Annotation(zindex::kAnnotationCoreBytes);
  int64_t id = 0;
  for (const auto& [what, bytes] : variants) {
    SCOPED_TRACE(what);
    const std::string artifact = PushIndexBlob(ref, layers[1].digest, bytes, core);
    StartHandler(/*verify=*/false);
    auto req = Request(ref, layers[1], ++id);
    auto mounted = handler_->TryMount(req);
    ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
    ASSERT_TRUE(StatusOf(id).has_value()) << "not mounted lazily:\n" << Log();
    EXPECT_NE(Log().find(crypto::OciDigest(crypto::Sha256::Of(bytes))), std::string::npos)
        << "not mounted from the altered index blob:\n" << Log();
    std::string got;
    EXPECT_EQ(testing::ReadErrno(req.target_dir / "srv" / "text.txt", &got), EIO)
        << (got == text_ ? "served the right bytes" : "served OTHER bytes");
    EXPECT_GE(StatusOf(id)->stats.auth_failures, 1u);
    EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
    EXPECT_EQ(testing::FileSha256(req.target_dir / "srv" / "big.bin"), big_sha256_);
    handler_.reset();
  }
}

// [ocicrypt] index_max_bytes bounds the index's core (what a mount fetches and keeps), not the
// whole blob, whose windows area is fetched by range with the spans: with the limit between the
// core's size and the blob's, the layer mounts lazily (fetching no more of the index than the
// core before it serves); below the core's size it is unpacked, the reason logged.
TEST_P(ZindexLazy, IndexMaxBytesBoundsTheCoreNotTheWholeIndexBlob) {
  const std::string ref = SkopeoPush("core-limit");
  Index(ref);
  const std::vector<Layer> layers = ReadImage(ref);
  const IndexBlob index = IndexBlobOf(ref, layers[1].digest);
  ASSERT_FALSE(index.bytes.empty());
  const uint64_t core = std::stoull(index.descriptor.Annotation(zindex::kAnnotationCoreBytes));
  const uint64_t whole = index.bytes.size();
  ASSERT_LT(core, whole);
  StartHandler(/*verify=*/false, nullptr, nullptr, /*lazy_index=*/true, /*layer_verify=*/true,
               /*index_max_bytes=*/core + (whole - core) / 2);
  auto req = Request(ref, layers[1], 1);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << mounted.status().ToString() << Log();
  ASSERT_TRUE(StatusOf(1).has_value()) << "not mounted lazily (core " << core << " of " << whole
                                       << " bytes):\n" << Log();
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "text.txt"), text_);
  EXPECT_EQ(fs::file_size(lazylayer::RestoreRecordPath(req.target_dir).parent_path() /
                          "lazycrypt-zindex"),
            core);
  handler_.reset();

  StartHandler(/*verify=*/false, nullptr, nullptr, /*lazy_index=*/true, /*layer_verify=*/true,
               /*index_max_bytes=*/core - 1);
  auto small = Request(ref, layers[1], 2);
  mounted = handler_->TryMount(small);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString() << Log();
  ASSERT_TRUE(*mounted);
  ExpectUnpacked(small);
  EXPECT_NE(Log().find("no usable index, unpacked"), std::string::npos) << Log();
  EXPECT_NE(Log().find("[ocicrypt] index_max_bytes"), std::string::npos) << Log();
}

class Cri2Zindex : public cri_testing::Cri {
 protected:
  Cri2Zindex() {
    auto port = harness::PickFreePort();
    metrics_address_ = "127.0.0.1:" + std::to_string(port.ok() ? *port : 1);
    snapshotter_extra_toml_ = "[metrics]\naddress = \"" + metrics_address_ +
                              "\"\n[fetch]\nverify_delay_ms = 0\n";
  }

  // skopeo encrypts the app image for both recipients (fresh layer keys: another image each
  // time) straight into the registry as `tag`; returns the proxy's reference (it counts bytes).
  std::string EncryptAndPush(const std::string& tag) {
    MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "--encryption-key",
             "jwe:" + node_key_.pub.string(), "--encryption-key", "jwe:" + other_key_.pub.string(),
             "oci:" + (work_->path() / "image").string() + ":latest",
             "docker://" + registry_->host() + "/lazycrypt/zindex:" + tag},
            300s);
    return proxy_->host() + "/lazycrypt/zindex:" + tag;
  }

  size_t SnapshotterLogCount(const std::string& text) const {
    const std::string log = harness::ReadFileOrEmpty(work_->path() / "snapshotter.log");
    size_t n = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  }

  std::string metrics_address_;
};

TEST_F(Cri2Zindex, IndexedSkopeoImageRunsLazilyThenVerifies) {
  auto binary = testing::Containerd21Binary();
  ASSERT_TRUE(binary.ok()) << binary.status().ToString();
  ImportShippedDropIn();
  ASSERT_FALSE(HasFailure());
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  StartContainerd(*binary, cri);
  ASSERT_FALSE(HasFailure());
  const std::string ref = EncryptAndPush("1");
  MustRun({testing::LazycryptBin(), "-q", "index", "--plain-http", "--hosts-dir", "", "--key",
           node_key_.priv.string(), "--span-size", "1MiB",
           "docker://" + registry_->host() + "/lazycrypt/zindex:1"},
          300s);

  cri_testing::PodRun run =
      RunPod("indexed", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(run.status.ok()) << run.status.ToString() << Logs();
  EXPECT_EQ(run.log, marker_ + "\n");
  EXPECT_EQ(run.snapshotter, "lazycrypt");
  EXPECT_EQ(SnapshotterLogCount("mounted indexed ocicrypt layer"), 2u) << Logs();
  EXPECT_EQ(SnapshotterLogCount("unpacked ocicrypt layer"), 0u) << Logs();
  EXPECT_GE(testing::CountFuseMounts(root_), 2u) << Logs();
  // What the reads fetched (the verification's full read is not counted here): far less than
  // the data layer.
  auto json = MustRun({testing::LazycryptBin(), "status", "--json", "--address", metrics_address_});
  nlohmann::json doc = nlohmann::json::parse(json.stdout_text, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << json.stdout_text;
  ASSERT_TRUE(doc.contains("layers") && doc["layers"].size() == 2u) << json.stdout_text;
  nlohmann::json data = doc["layers"][0];
  for (const auto& l : doc["layers"]) {
    if (l.value("blob_size_bytes", 0ull) > data.value("blob_size_bytes", 0ull)) data = l;
  }
  std::printf("data layer %llu bytes; the container's reads fetched %llu bytes\n",
              static_cast<unsigned long long>(data.value("blob_size_bytes", 0ull)),
              static_cast<unsigned long long>(data.value("bytes_fetched", 0ull)));
  EXPECT_GT(data.value("blob_size_bytes", 0ull), uint64_t{cri_testing::kDataMiB} << 20);
  EXPECT_LT(data.value("bytes_fetched", ~0ull), (uint64_t{cri_testing::kDataMiB} << 20) / 8)
      << json.stdout_text;
  EXPECT_EQ(data.value("auth_failures", 1ull), 0u);
  // Then both layers verify in the background (HMAC, digests, diff_id, entries, spans).
  for (int i = 0; i < 600 && SnapshotterLogCount("verified against its diff_id") < 2; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(SnapshotterLogCount("verified against its diff_id"), 2u) << Logs();
  EXPECT_EQ(SnapshotterLogCount("quarantined"), 0u) << Logs();

  // An image nobody indexed (busybox and another data layer, encrypted the same way): unpacked
  // eagerly by the snapshotter. (The same content again would not be prepared at all: its chain
  // IDs are committed already.)
  const fs::path w = work_->path();
  testing::MakeBusyboxImage(w / "image2");
  ASSERT_FALSE(HasFailure());
  fs::create_directories(w / "data2" / "data");
  testing::WriteFileString(w / "data2" / "data" / "marker.txt", marker_ + "-eager\n");
  MustRun({"tar", "--numeric-owner", "-C", (w / "data2").string(), "-cf",
           (w / "data2.tar").string(), "data"});
  MustRun({"umoci", "raw", "add-layer", "--image", (w / "image2").string() + ":latest",
           (w / "data2.tar").string()});
  MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "--encryption-key",
           "jwe:" + node_key_.pub.string(), "--encryption-key", "jwe:" + other_key_.pub.string(),
           "oci:" + (w / "image2").string() + ":latest",
           "docker://" + registry_->host() + "/lazycrypt/zindex:2"},
          300s);
  cri_testing::PodRun eager = RunPod("eager", proxy_->host() + "/lazycrypt/zindex:2", "lazycrypt",
                                     {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(eager.status.ok()) << eager.status.ToString() << Logs();
  EXPECT_EQ(eager.log, marker_ + "-eager\n");
  EXPECT_GE(SnapshotterLogCount("unpacked ocicrypt layer"), 1u)
      << harness::ReadFileOrEmpty(w / "snapshotter.log");
  EXPECT_EQ(SnapshotterLogCount("no usable index, unpacked"),
            SnapshotterLogCount("unpacked ocicrypt layer"));
  EXPECT_EQ(SnapshotterLogCount("mounted indexed ocicrypt layer"), 2u);
}

}  // namespace
}  // namespace lazycrypt
