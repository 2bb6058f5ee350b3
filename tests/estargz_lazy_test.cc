// ocicrypt-estargz layers served lazily by the snapshotter (issue 18 part 1, the lazy side):
// an image made by `lazycrypt encrypt --format ocicrypt-estargz` and pushed to a real
// docker-registry is mounted by the snapshotter's layer handler (lazylayer::SnapshotHandler, in
// this process, as containerd's Prepare asks it) with a real FUSE mount:
//   - a small file reads correctly while far fewer bytes than the layer were fetched;
//   - the background verification reads the whole layer once (HMAC, blob digest, diff_id vs the
//     chain ID) and marks the layer verified; under a chain ID its content does not give, the
//     layer is quarantined (reads EIO, Check refuses it, the quarantine is recorded on disk);
//   - a chunk whose ciphertext was altered (in a manifest consistent with the altered blob)
//     reads as EIO, never as other bytes; the background verification then quarantines the
//     whole layer (its HMAC fails);
//   - the lazy view of each layer equals what an eager node unpacks (the layer decrypted and
//     extracted with GNU tar), /stargz.index.json and the landmark included;
//   - files marked with `--prefetch-list` (before eStargz's .prefetch.landmark) are fetched after
//     the mount without being read;
//   - a manifest pinning another TOC digest is refused at mount;
//   - a TOC (pinned, and in the diff_id) whose metadata differs from the tar headers it
//     describes is served until the verification reads the tar, then quarantined;
//   - a restart of the handler (its FUSE fd kept in an fd store) resumes the same mount while the
//     registry is down: a file kept open across the restart reads again, from the new daemon
//     (footer and TOC from the restore record, the chunk from the disk store); a damaged stored
//     chunk is dropped and fetched again, never served.
// Needs root and /dev/fuse.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/chunk_store.h"
#include "common/file_io.h"
#include "common/io.h"
#include "crypto/digest.h"
#include "estargz/reader.h"
#include "estargz/toc.h"
#include "fdstore/fd_store.h"
#include "image/layer.h"
#include "image/oci.h"
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
#include "tests/tree_compare.h"
#include "compress/compress.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::KeyPair;
using testing::MemoryFdStore;
using testing::ReadErrno;
using testing::MustRun;

constexpr char kHello[] = "hello from a lazily served ocicrypt-estargz layer\n";
constexpr char kOther[] = "another small file, in a member of its own\n";

struct Layer {
  std::string digest;
  uint64_t size = 0;
  std::string chain_id;
  std::string parent_chain_id;
};

class EstargzLazy : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    auto tmp = harness::TempDir::Create("estargz-lazy");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    key_ = testing::GenerateKeyPair(root / "keys", "ec256", "node");
    fs::rename(key_.pub, root / "node.pub.pem");  // the key directory holds private keys only
    key_.pub = root / "node.pub.pem";

    // busybox, and an application layer: two small files around 6 MiB that does not compress.
    const fs::path layout = root / "src";
    testing::MakeBusyboxImage(layout);
    const fs::path app = root / "app";
    fs::create_directories(app / "srv");
    testing::WriteFileString(app / "srv" / "hello.txt", kHello);
    MustRun({"dd", "if=/dev/urandom", "of=" + (app / "srv" / "big.bin").string(), "bs=1M",
             "count=6", "status=none"});
    testing::WriteFileString(app / "srv" / "other.txt", kOther);
    fs::create_symlink("hello.txt", app / "srv" / "link");
    big_sha256_ = testing::FileSha256(app / "srv" / "big.bin");
    MustRun({"tar", "--numeric-owner", "--no-recursion", "-C", app.string(), "-cf",
             (root / "app.tar").string(), "srv", "srv/hello.txt", "srv/big.bin", "srv/other.txt",
             "srv/link"});
    MustRun({"umoci", "raw", "add-layer", "--image", layout.string() + ":latest",
             (root / "app.tar").string()});

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    image_ref_ = registry_->host() + "/app:1";
    MustRun({testing::LazycryptBin(), "-q", "encrypt", "--format", "ocicrypt-estargz", "-r",
             "jwe:" + key_.pub.string(), "--plain-http", "--hosts-dir", "",
             "oci:" + layout.string(), "docker://" + image_ref_},
            300s);
    auto client = registry::Client::Create(ClientOptions());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    ReadImage(image_ref_);
    ASSERT_EQ(layers_.size(), 2u);
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

  nlohmann::json ManifestJson(const std::string& ref) {
    auto manifest = client_->GetManifest(Ref(ref));
    EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
    return nlohmann::json::parse(AsStringView(manifest->bytes));
  }

  // The manifest's layers and the chain IDs containerd would prepare them under.
  void ReadImage(const std::string& ref) {
    nlohmann::json m = ManifestJson(ref);
    manifest_ = m;
    MemoryOutputStream config;
    ASSERT_TRUE(client_->GetBlob(Ref(ref), m["config"]["digest"].get<std::string>(), config).ok());
    auto c = nlohmann::json::parse(AsStringView(config.bytes()));
    std::string parent;
    layers_.clear();
    for (size_t i = 0; i < m["layers"].size(); ++i) {
      const auto& l = m["layers"][i];
      ASSERT_TRUE(l["annotations"].contains(std::string(estargz::kAnnotationTocDigest)))
          << "layer " << i << " is not an ocicrypt-estargz layer";
      const std::string chain =
          lazylayer::ChainIdOf(parent, c["rootfs"]["diff_ids"][i].get<std::string>());
      layers_.push_back(Layer{l["digest"].get<std::string>(), l["size"].get<uint64_t>(), chain,
                              parent});
      parent = chain;
    }
  }

  // Pushes `m` as the manifest of `ref` (its blobs must be in the repository).
  void PushManifest(const std::string& ref, const nlohmann::json& m) {
    const std::string bytes = m.dump();
    auto pushed = client_->PutManifest(Ref(ref), AsBytes(bytes), m["mediaType"].get<std::string>());
    ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  }

  void StartHandler(bool verify, std::shared_ptr<fdstore::FdStore> fd_store = nullptr,
                    std::shared_ptr<cache::ChunkStore> store = nullptr, bool prefetch = false,
                    uint64_t whole_layer_bytes = 0) {
    lazylayer::SnapshotHandlerOptions o;
    o.layer.whole_layer_bytes = whole_layer_bytes;
    o.store = std::move(store);
    if (fd_store) {
      o.fd_store = std::move(fd_store);
      o.layer.mount.clone_fd = false;  // a mount that survives its daemon (fusefs/fuse_fs.h)
    }
    o.key_dirs = {tmp_->path() / "keys"};
    o.registry = ClientOptions();
    o.layer.prefetch = prefetch;
    o.layer.verify = true;
    // Without verify: delayed past the test, so that every byte counted is a read's own.
    o.layer.verify_start_delay_ms = verify ? 0 : 3600 * 1000;
    o.keep_mounts_on_exit = o.fd_store != nullptr;
    auto h = lazylayer::SnapshotHandler::Create(std::move(o));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    handler_ = std::move(*h);
  }

  snapshotter::PrepareRequest Request(const std::string& ref, const Layer& l, int64_t id,
                                      const std::string& chain_id) {
    const fs::path target = tmp_->path() / "snapshots" / std::to_string(id) / "fs";
    fs::create_directories(target);
    targets_.push_back(target);
    snapshotter::PrepareRequest req;
    req.key = "prepare-" + std::to_string(id);
    req.parent = l.parent_chain_id;
    req.snapshot_id = id;
    req.target_dir = target;
    req.labels[std::string(snapshotter::kTargetSnapshotLabel)] = chain_id;
    req.labels[std::string(lazylayer::kLabelStargzReference)] = ref;
    req.labels[std::string(lazylayer::kLabelStargzDigest)] = l.digest;
    return req;
  }

  snapshotter::CheckRequest CheckOf(const snapshotter::PrepareRequest& req) {
    snapshotter::CheckRequest c;
    c.name = req.labels.at(std::string(snapshotter::kTargetSnapshotLabel));
    c.parent = req.parent;
    c.labels = req.labels;
    c.target_dir = req.target_dir;
    c.snapshot_id = req.snapshot_id;
    return c;
  }

  std::optional<lazylayer::MountedLayerStatus> StatusOf(int64_t id) {
    for (auto& s : handler_->Layers()) {
      if (s.snapshot_id == id) return s;
    }
    return std::nullopt;
  }

  // Waits (up to 60 s) for the layer's verification to end.
  lazylayer::Verification WaitForVerification(int64_t id) {
    for (int i = 0; i < 600; ++i) {
      auto s = StatusOf(id);
      if (!s) return lazylayer::Verification::kPending;
      if (s->verification != lazylayer::Verification::kPending) return s->verification;
      std::this_thread::sleep_for(100ms);
    }
    return lazylayer::Verification::kPending;
  }

  // The app layer with one ciphertext byte of `file`'s chunk flipped, pushed with a manifest
  // that names the altered blob (digest and size consistent; HMAC and privopts now wrong, which
  // only a full read can see) under `ref`. Returns the new layer.
  Layer PushTamperedLayer(const std::string& ref, const std::string& file) {
    const Layer& l = layers_[1];
    MemoryOutputStream blob;
    EXPECT_TRUE(client_->GetBlob(Ref(image_ref_), l.digest, blob).ok());
    std::vector<uint8_t> bytes = blob.bytes();
    // Where the file's chunk is: the lazy reader's own view, with the node's key.
    image::Descriptor d;
    d.media_type = manifest_["layers"][1]["mediaType"].get<std::string>();
    d.digest = l.digest;
    d.size = l.size;
    for (auto& [k, v] : manifest_["layers"][1]["annotations"].items()) d.annotations[k] = v;
    auto key = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    std::vector<keywrap::PrivateKey> keys;
    keys.push_back(std::move(*key));
    keywrap::KeyRing ring(std::move(keys));
    auto cipher = image::UnwrapOcicryptLayer(d, ring);
    EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
    MemoryBlobSource ciphertext(bytes);
    auto plain = estargz::CtrPlaintextView::Create(ciphertext, cipher->key.span(), cipher->nonce);
    EXPECT_TRUE(plain.ok());
    auto pin = crypto::ParseOciDigest(d.annotations.at(std::string(estargz::kAnnotationTocDigest)));
    auto index = estargz::OpenIndex(**plain, *pin);
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    uint64_t at = 0;
    for (uint32_t i = 0; i < (*index)->entries().size(); ++i) {
      if ((*index)->entries()[i].name == file) at = (*index)->ChunksOf(i)[0].compressed_offset;
    }
    EXPECT_GT(at, 0u) << file << " has no chunk";
    bytes[at + 12] ^= 0x40;  // inside the member's deflate data (after its 10-byte header)

    Layer t = l;
    t.digest = crypto::OciDigest(crypto::Sha256::Of(bytes));
    MemoryBlobSource altered(std::move(bytes));
    EXPECT_TRUE(client_->PushBlob(Ref(ref), t.digest, altered).ok());
    nlohmann::json m = manifest_;
    m["layers"][1]["digest"] = t.digest;
    PushManifest(ref, m);
    return t;
  }

  // The app layer re-made by its author with a TOC that gives srv/hello.txt another mode (setuid)
  // than its tar header (0644): the new TOC pinned, the config's diff_id the new tar stream's,
  // the layer encrypted again; everything consistent but the TOC against the tar. Pushed as
  // `ref` (blobs, config, manifest); returns the new layer with its chain ID.
  Layer PushLayerWhoseTocLiesAboutAMode(const std::string& ref) {
    const Layer& l = layers_[1];
    auto key = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
    EXPECT_TRUE(key.ok());
    std::vector<keywrap::PrivateKey> keys;
    keys.push_back(std::move(*key));
    keywrap::KeyRing ring(std::move(keys));
    image::Descriptor d;
    d.media_type = manifest_["layers"][1]["mediaType"].get<std::string>();
    d.digest = l.digest;
    d.size = l.size;
    for (auto& [k, v] : manifest_["layers"][1]["annotations"].items()) d.annotations[k] = v;
    MemoryOutputStream cipher;
    EXPECT_TRUE(client_->GetBlob(Ref(image_ref_), l.digest, cipher).ok());
    MemoryInputStream in(cipher.bytes());
    MemoryOutputStream plain_out;
    auto decrypted = image::DecryptOcicryptLayer(in, d, plain_out, ring);
    EXPECT_TRUE(decrypted.ok()) << decrypted.status().ToString();
    std::vector<uint8_t> plain = plain_out.bytes();

    // The TOC JSON, edited.
    auto toc_offset = estargz::ParseFooter(ByteSpan(plain).last(estargz::kFooterSize));
    EXPECT_TRUE(toc_offset.ok()) << toc_offset.status().ToString();
    auto json = estargz::ExtractTocJson(
        ByteSpan(plain).subspan(*toc_offset, plain.size() - estargz::kFooterSize - *toc_offset));
    EXPECT_TRUE(json.ok()) << json.status().ToString();
    nlohmann::json toc = nlohmann::json::parse(AsStringView(*json));
    bool edited = false;
    for (auto& e : toc["entries"]) {
      if (e["name"] == "srv/hello.txt") {
        e["mode"] = 04755;
        edited = true;
      }
    }
    EXPECT_TRUE(edited);
    const std::string new_json = toc.dump(1, '	');
    // The TOC member as the writer makes it (FORMAT.md §10.1): a tar of stargz.index.json, mode
    // 0, owner 0, mtime 0, gzip-compressed.
    const fs::path dir = tmp_->path() / "toc-edit";
    fs::create_directories(dir);
    testing::WriteFileString(dir / "stargz.index.json", new_json);
    MustRun({"tar", "--format=ustar", "--numeric-owner", "--owner=0", "--group=0", "--mode=0",
             "--mtime=@0", "-C", dir.string(), "-cf", (dir / "toc.tar").string(),
             "stargz.index.json"});
    MustRun({"gzip", "-n", "-f", (dir / "toc.tar").string()});
    const std::string member = testing::ReadFileString(dir / "toc.tar.gz");
    std::vector<uint8_t> edited_blob(plain.begin(), plain.begin() + *toc_offset);
    edited_blob.insert(edited_blob.end(), member.begin(), member.end());
    const auto footer = estargz::MakeFooter(*toc_offset);
    edited_blob.insert(edited_blob.end(), footer.begin(), footer.end());

    // Its diff_id: the decompressed stream.
    MemoryInputStream gz(edited_blob);
    auto tar_stream = compress::NewDecompressingStream(gz);
    EXPECT_TRUE(tar_stream.ok());
    crypto::Sha256 sha;
    std::vector<uint8_t> buf(1 << 16);
    for (;;) {
      auto n = (*tar_stream)->Read(buf);
      EXPECT_TRUE(n.ok()) << n.status().ToString();
      if (!n.ok() || *n == 0) break;
      sha.Update(ByteSpan(buf).first(*n));
    }
    const std::string diff_id = crypto::OciDigest(sha.Finish());

    // Encrypted again for the node, with the new pin.
    image::Descriptor original;
    original.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    original.digest = crypto::OciDigest(crypto::Sha256::Of(edited_blob));
    original.size = edited_blob.size();
    auto pub = keywrap::PublicKey::Load(key_.pub);
    EXPECT_TRUE(pub.ok()) << pub.status().ToString();
    std::vector<keywrap::PublicKey> pubs;
    pubs.push_back(std::move(*pub));
    keywrap::Recipients recipients(std::move(pubs));
    MemoryInputStream edited_in(edited_blob);
    MemoryOutputStream encrypted;
    auto desc = image::EncryptOcicryptLayer(edited_in, original, encrypted, recipients);
    EXPECT_TRUE(desc.ok()) << desc.status().ToString();
    const std::string digest = crypto::OciDigest(crypto::Sha256::Of(encrypted.bytes()));
    MemoryBlobSource layer_blob(encrypted.bytes());
    EXPECT_TRUE(client_->PushBlob(Ref(ref), digest, layer_blob).ok());

    nlohmann::json m = manifest_;
    nlohmann::json& layer = m["layers"][1];
    layer["digest"] = digest;
    layer["size"] = encrypted.bytes().size();
    for (const auto& [k, v] : desc->annotations) layer["annotations"][k] = v;
    layer["annotations"][std::string(estargz::kAnnotationTocDigest)] =
        crypto::OciDigest(crypto::Sha256::Of(AsBytes(new_json)));
    layer["annotations"][std::string(estargz::kAnnotationTocSize)] = std::to_string(member.size());
    MemoryOutputStream config;
    EXPECT_TRUE(
        client_->GetBlob(Ref(image_ref_), m["config"]["digest"].get<std::string>(), config).ok());
    nlohmann::json c = nlohmann::json::parse(AsStringView(config.bytes()));
    c["rootfs"]["diff_ids"][1] = diff_id;
    const std::string config_text = c.dump();
    const std::string config_digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(config_text)));
    MemoryBlobSource config_blob(std::vector<uint8_t>(config_text.begin(), config_text.end()));
    EXPECT_TRUE(client_->PushBlob(Ref(ref), config_digest, config_blob).ok());
    m["config"]["digest"] = config_digest;
    m["config"]["size"] = config_text.size();
    PushManifest(ref, m);

    Layer out = l;
    out.digest = digest;
    out.size = encrypted.bytes().size();
    out.chain_id = lazylayer::ChainIdOf(l.parent_chain_id, diff_id);
    return out;
  }

  std::unique_ptr<harness::TempDir> tmp_;
  KeyPair key_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
  std::string image_ref_;
  nlohmann::json manifest_;
  std::vector<Layer> layers_;
  std::string big_sha256_;
  std::unique_ptr<lazylayer::SnapshotHandler> handler_;
  std::vector<fs::path> targets_;
};

TEST_F(EstargzLazy, SmallFileReadsWhileLittleOfTheLayerIsFetched) {
  StartHandler(/*verify=*/false);
  auto req = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  // Mounted lazily (FUSE), not unpacked: the handler lists it as a mounted layer.
  auto before = StatusOf(1);
  ASSERT_TRUE(before.has_value()) << "not mounted lazily";

  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_EQ(fs::read_symlink(req.target_dir / "srv" / "link"), "hello.txt");
  EXPECT_EQ(fs::file_size(req.target_dir / "srv" / "big.bin"), 6u << 20);
  auto after = StatusOf(1);
  ASSERT_TRUE(after.has_value());
  std::printf("layer %llu bytes; fetched %llu bytes in %llu requests to read one small file\n",
              static_cast<unsigned long long>(layers_[1].size),
              static_cast<unsigned long long>(after->stats.blob_bytes_fetched),
              static_cast<unsigned long long>(after->stats.fetch_requests));
  EXPECT_GT(after->stats.blob_bytes_fetched, 0u);
  EXPECT_LT(after->stats.blob_bytes_fetched, layers_[1].size / 20);
  EXPECT_EQ(after->stats.auth_failures, 0u);

  // The rest of the layer reads back whole and verified.
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "other.txt"), kOther);
  EXPECT_EQ(testing::FileSha256(req.target_dir / "srv" / "big.bin"), big_sha256_);
  EXPECT_EQ(handler_->Check(CheckOf(req)).code(), StatusCode::kOk);
  auto purged = handler_->Purge(CheckOf(req));
  ASSERT_TRUE(purged.ok()) << purged.status().ToString();
  EXPECT_EQ(purged->layer_digest, layers_[1].digest);
  EXPECT_FALSE(StatusOf(1).has_value());
  EXPECT_FALSE(fs::exists(req.target_dir / "srv")) << "still mounted";
}

TEST_F(EstargzLazy, BackgroundVerificationChecksTheWholeLayerAgainstTheChainId) {
  StartHandler(/*verify=*/true);
  auto good = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(good);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  EXPECT_EQ(WaitForVerification(1), lazylayer::Verification::kVerified);
  EXPECT_TRUE(handler_->Check(CheckOf(good)).ok());
  // busybox (symlinks, hard links, directories) verifies too: its TOC matches its tar.
  auto base = Request(image_ref_, layers_[0], 3, layers_[0].chain_id);
  mounted = handler_->TryMount(base);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  EXPECT_EQ(WaitForVerification(3), lazylayer::Verification::kVerified)
      << handler_->Check(CheckOf(base)).ToString();
  EXPECT_EQ(testing::ReadFileString(good.target_dir / "srv" / "hello.txt"), kHello);

  // The same layer prepared under a chain ID its content does not give (a config claiming
  // another diff_id): served at first, quarantined once the whole layer has been hashed.
  const std::string claimed = lazylayer::ChainIdOf(
      layers_[1].parent_chain_id, crypto::OciDigest(crypto::Sha256::Of(AsBytes("not it"))));
  auto bad = Request(image_ref_, layers_[1], 2, claimed);
  mounted = handler_->TryMount(bad);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  EXPECT_EQ(WaitForVerification(2), lazylayer::Verification::kFailed);
  Status check = handler_->Check(CheckOf(bad));
  EXPECT_EQ(check.code(), StatusCode::kAuthFailed) << check.ToString();
  EXPECT_NE(check.message().find("quarantined"), std::string::npos) << check.ToString();
  EXPECT_EQ(ReadErrno(bad.target_dir / "srv" / "hello.txt"), EIO);
  // Recorded beside the snapshot: a restart refuses it too.
  EXPECT_TRUE(fs::exists(bad.target_dir.parent_path() / "lazycrypt-quarantined"));
  // The good one is unaffected.
  EXPECT_EQ(testing::ReadFileString(good.target_dir / "srv" / "hello.txt"), kHello);
}

TEST_F(EstargzLazy, TamperedChunkReadsAsEioAndTheLayerIsQuarantined) {
  const std::string ref = registry_->host() + "/app:tampered";
  Layer t = PushTamperedLayer(ref, "srv/hello.txt");
  StartHandler(/*verify=*/false);
  auto req = Request(ref, t, 1, t.chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  std::string got;
  EXPECT_EQ(ReadErrno(req.target_dir / "srv" / "hello.txt", &got), EIO);
  EXPECT_TRUE(got.empty()) << "bytes of a chunk that failed verification were served";
  EXPECT_EQ(ReadErrno(req.target_dir / "srv" / "hello.txt"), EIO);  // every time
  // Files in other members are intact and read.
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "other.txt"), kOther);
  auto s = StatusOf(1);
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(s->stats.auth_failures, 1u);
  handler_.reset();

  // With the background verification on, the altered blob fails its HMAC: quarantined whole.
  StartHandler(/*verify=*/true);
  auto req2 = Request(ref, t, 2, t.chain_id);
  mounted = handler_->TryMount(req2);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  EXPECT_EQ(WaitForVerification(2), lazylayer::Verification::kFailed);
  EXPECT_EQ(ReadErrno(req2.target_dir / "srv" / "other.txt"), EIO);
  EXPECT_EQ(handler_->Check(CheckOf(req2)).code(), StatusCode::kAuthFailed);
}

TEST_F(EstargzLazy, TocThatIsNotThePinnedOneIsRefusedAtMount) {
  // The same blob, but the manifest pins another TOC digest.
  const std::string ref = registry_->host() + "/app:othertoc";
  nlohmann::json m = manifest_;
  m["layers"][1]["annotations"][std::string(estargz::kAnnotationTocDigest)] =
      crypto::OciDigest(crypto::Sha256::Of(AsBytes("another TOC")));
  PushManifest(ref, m);
  StartHandler(/*verify=*/false);
  auto req = Request(ref, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_FALSE(mounted.ok()) << "mounted a layer whose TOC is not the pinned one";
  EXPECT_EQ(mounted.status().code(), StatusCode::kAuthFailed) << mounted.status().ToString();
  EXPECT_NE(mounted.status().message().find("estargz TOC digest mismatch"), std::string::npos)
      << mounted.status().ToString();
  EXPECT_FALSE(StatusOf(1).has_value());
  EXPECT_TRUE(fs::is_empty(req.target_dir)) << "something was unpacked";
}

}  // namespace
}  // namespace lazycrypt

namespace lazycrypt {
namespace {

TEST_F(EstargzLazy, RestartResumesTheSameMount) {
  auto store = std::make_shared<MemoryFdStore>();
  auto chunks = cache::ChunkStore::Open(tmp_->path() / "store");
  ASSERT_TRUE(chunks.ok()) << chunks.status().ToString();
  std::shared_ptr<cache::ChunkStore> chunk_store(std::move(*chunks));
  StartHandler(/*verify=*/false, store, chunk_store);
  auto req = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  EXPECT_EQ(store->size(), 1u) << "its FUSE fd is not kept for a next daemon";
  // A container's open file, kept across the restart.
  UniqueFd open_file(::open((req.target_dir / "srv" / "hello.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(open_file.valid());
  char buf[256];
  ASSERT_EQ(::pread(open_file.get(), buf, sizeof buf, 0), static_cast<ssize_t>(sizeof kHello - 1));

  handler_.reset();  // leaves the mount to the next daemon
  // The registry is gone: the mount is restored from its record (footer, TOC) and the chunk
  // read before the restart is served from the disk store.
  registry_->Stop();
  StartHandler(/*verify=*/false, store, chunk_store);
  snapshotter::RestoreRequest restore;
  restore.name = layers_[1].chain_id;
  restore.parent = req.parent;
  restore.labels = req.labels;
  restore.target_dir = req.target_dir;
  restore.snapshot_id = 1;
  Status restored = handler_->Restore(restore);
  ASSERT_TRUE(restored.ok()) << restored.ToString();
  handler_->RestoreFinished();
  EXPECT_EQ(handler_->Restarts().fds_resumed, 1u);
  EXPECT_TRUE(StatusOf(1).has_value());
  // The same mount: the open file reads again (with the page cache dropped, from the layer).
  ASSERT_EQ(::posix_fadvise(open_file.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  ssize_t n = ::pread(open_file.get(), buf, sizeof buf, 0);
  ASSERT_EQ(n, static_cast<ssize_t>(sizeof kHello - 1)) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), kHello);
  EXPECT_EQ(fs::read_symlink(req.target_dir / "srv" / "link"), "hello.txt");
  EXPECT_EQ(handler_->Check(CheckOf(req)).code(), StatusCode::kOk);
}

}  // namespace
}  // namespace lazycrypt

namespace lazycrypt {
namespace {

TEST_F(EstargzLazy, LazyViewEqualsTheEagerUnpack) {
  StartHandler(/*verify=*/false);
  auto key = keywrap::PrivateKey::Load((tmp_->path() / "keys" / "node.pem").string());
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(std::move(*key));
  keywrap::KeyRing ring(std::move(keys));
  for (size_t i = 0; i < layers_.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    // What an eager node unpacks: the layer decrypted (HMAC checked) and extracted by GNU tar.
    MemoryOutputStream blob;
    ASSERT_TRUE(client_->GetBlob(Ref(image_ref_), layers_[i].digest, blob).ok());
    image::Descriptor d;
    d.media_type = manifest_["layers"][i]["mediaType"].get<std::string>();
    d.digest = layers_[i].digest;
    d.size = layers_[i].size;
    for (auto& [k, v] : manifest_["layers"][i]["annotations"].items()) d.annotations[k] = v;
    MemoryInputStream in(blob.bytes());
    MemoryOutputStream plain;
    auto decrypted = image::DecryptOcicryptLayer(in, d, plain, ring);
    ASSERT_TRUE(decrypted.ok()) << decrypted.status().ToString();
    const fs::path gz = tmp_->path() / ("layer" + std::to_string(i) + ".tar.gz");
    testing::WriteFileString(gz, std::string(AsStringView(plain.bytes())));
    const fs::path eager = tmp_->path() / ("eager" + std::to_string(i));
    fs::create_directories(eager);
    MustRun({"tar", "--numeric-owner", "-xpzf", gz.string(), "-C", eager.string()});
    ASSERT_TRUE(fs::exists(eager / "stargz.index.json"));

    auto req = Request(image_ref_, layers_[i], static_cast<int64_t>(i + 1), layers_[i].chain_id);
    auto mounted = handler_->TryMount(req);
    ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
    ASSERT_TRUE(*mounted);
    testing::TreeCompareOptions options;
    options.compare_root_metadata = false;
    std::vector<std::string> diffs = testing::CompareTrees(eager, req.target_dir, options);
    EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
    const testing::TreeCensus census = testing::CountTree(req.target_dir);
    EXPECT_GT(census.regular, 0u);
    if (i == 0) {
      EXPECT_GT(census.symlinks + census.hardlinked, 10u);  // busybox's links
    }
  }
}

}  // namespace
}  // namespace lazycrypt


namespace lazycrypt {
namespace {

TEST_F(EstargzLazy, TocMetadataThatIsNotTheTarsIsQuarantinedByTheVerification) {
  const std::string ref = registry_->host() + "/app:toc-lies";
  Layer lying = PushLayerWhoseTocLiesAboutAMode(ref);
  ASSERT_FALSE(HasFailure());
  StartHandler(/*verify=*/true);
  auto req = Request(ref, lying, 1, lying.chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  // The pinned TOC and every chunk are genuine, and the chain ID is the content's: only the
  // comparison of the TOC with the tar it describes can tell.
  EXPECT_EQ(WaitForVerification(1), lazylayer::Verification::kFailed);
  Status check = handler_->Check(CheckOf(req));
  EXPECT_EQ(check.code(), StatusCode::kAuthFailed) << check.ToString();
  EXPECT_NE(check.message().find("mode differs"), std::string::npos) << check.ToString();
  EXPECT_EQ(check.message().find("hello"), std::string::npos)
      << "names a file: " << check.ToString();
  EXPECT_EQ(ReadErrno(req.target_dir / "srv" / "other.txt"), EIO);
}

}  // namespace
}  // namespace lazycrypt

namespace lazycrypt {
namespace {

TEST_F(EstargzLazy, DamagedStoredChunkIsFetchedAgainNotServed) {
  auto opened = cache::ChunkStore::Open(tmp_->path() / "store");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::shared_ptr<cache::ChunkStore> store(std::move(*opened));
  StartHandler(/*verify=*/false, nullptr, store);
  auto req = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
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
  auto again = Request(image_ref_, layers_[1], 2, layers_[1].chain_id);
  mounted = handler_->TryMount(again);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  EXPECT_EQ(testing::ReadFileString(again.target_dir / "srv" / "hello.txt"), kHello);
  auto s = StatusOf(2);
  ASSERT_TRUE(s.has_value());
  EXPECT_GE(s->stats.disk_corrupt, 1u);
  EXPECT_GE(s->stats.chunks_fetched, 1u);
  EXPECT_EQ(s->stats.auth_failures, 0u);
}

}  // namespace
}  // namespace lazycrypt

namespace lazycrypt {
namespace {

TEST_F(EstargzLazy, FilesBeforeThePrefetchLandmarkAreFetchedWithoutBeingRead) {
  const fs::path list = tmp_->path() / "prefetch.txt";
  testing::WriteFileString(list, "/srv/other.txt\n");
  const std::string ref = registry_->host() + "/app:prefetch";
  MustRun({testing::LazycryptBin(), "-q", "encrypt", "--format", "ocicrypt-estargz", "-r",
           "jwe:" + key_.pub.string(), "--prefetch-list", list.string(), "--plain-http",
           "--hosts-dir", "", "oci:" + (tmp_->path() / "src").string(), "docker://" + ref},
          300s);
  ReadImage(ref);
  ASSERT_EQ(layers_.size(), 2u);
  StartHandler(/*verify=*/false, nullptr, nullptr, /*prefetch=*/true);
  auto req = Request(ref, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  ASSERT_TRUE(*mounted);
  // Nothing read yet: the marked file's chunk arrives by itself.
  uint64_t opened = 0;
  for (int i = 0; i < 600 && opened == 0; ++i) {  // up to 30 s
    opened = StatusOf(1)->stats.chunks_opened;
    if (opened == 0) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(opened, 1u) << "the marked file was not prefetched (or more was)";
  const uint64_t fetched = StatusOf(1)->stats.chunks_fetched;
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "other.txt"), kOther);
  EXPECT_EQ(StatusOf(1)->stats.chunks_fetched, fetched) << "the prefetched chunk was fetched again";
  EXPECT_TRUE(fs::exists(req.target_dir / ".prefetch.landmark"));
}

// Several marked files (eStargz puts them all before the landmark) arrive in ONE request, not one
// per chunk, and reading them fetches nothing more.
TEST_F(EstargzLazy, MarkedFilesArePrefetchedInOneRequest) {
  const fs::path list = tmp_->path() / "prefetch-many.txt";
  testing::WriteFileString(list, "/srv/big.bin\n/srv/hello.txt\n/srv/other.txt\n");
  const std::string ref = registry_->host() + "/app:prefetch-many";
  MustRun({testing::LazycryptBin(), "-q", "encrypt", "--format", "ocicrypt-estargz", "-r",
           "jwe:" + key_.pub.string(), "--prefetch-list", list.string(), "--plain-http",
           "--hosts-dir", "", "oci:" + (tmp_->path() / "src").string(), "docker://" + ref},
          300s);
  ReadImage(ref);
  ASSERT_EQ(layers_.size(), 2u);
  StartHandler(/*verify=*/false, nullptr, nullptr, /*prefetch=*/true);
  auto req = Request(ref, layers_[1], 1, layers_[1].chain_id);
  const uint64_t before = [&] {
    auto mounted = handler_->TryMount(req);
    EXPECT_TRUE(mounted.ok() && *mounted) << (mounted.ok() ? "" : mounted.status().ToString());
    return StatusOf(1)->stats.fetch_requests;
  }();
  ASSERT_FALSE(HasFailure());
  // big.bin (6 MiB: more than one chunk), hello.txt and other.txt.
  uint64_t opened = 0;
  for (int i = 0; i < 600 && opened < 3; ++i) {  // up to 30 s
    opened = StatusOf(1)->stats.chunks_opened;
    if (opened < 3) std::this_thread::sleep_for(50ms);
  }
  std::this_thread::sleep_for(200ms);  // a straggling request would show below
  auto after = StatusOf(1);
  ASSERT_GE(after->stats.chunks_opened, 3u) << "the marked files were not prefetched";
  EXPECT_EQ(after->stats.fetch_requests - before, 1u)
      << after->stats.chunks_fetched << " chunks in " << after->stats.fetch_requests - before
      << " requests: the prefetch sent one request per chunk";
  EXPECT_EQ(testing::FileSha256(req.target_dir / "srv" / "big.bin"), big_sha256_);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "other.txt"), kOther);
  EXPECT_EQ(StatusOf(1)->stats.fetch_requests, after->stats.fetch_requests)
      << "reading the prefetched files fetched again";
}

// A layer no larger than [fetch] whole_layer_bytes is read whole by its mount's one request
// (instead of its tail): every chunk is opened from those bytes in the background, so reading
// every file fetches nothing more, and the verification reads the same bytes.
TEST_F(EstargzLazy, SmallLayerIsReadWholeByItsMountsOneRequest) {
  StartHandler(/*verify=*/true, nullptr, nullptr, /*prefetch=*/false,
               /*whole_layer_bytes=*/16 << 20);
  auto req = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << (mounted.ok() ? "" : mounted.status().ToString());
  const auto at_mount = StatusOf(1);
  ASSERT_TRUE(at_mount.has_value());
  EXPECT_EQ(at_mount->stats.fetch_requests, 1u);
  EXPECT_EQ(at_mount->stats.blob_bytes_fetched, layers_[1].size) << "not read whole";
  for (int i = 0; i < 600 && StatusOf(1)->stats.chunks_opened < at_mount->stats.chunk_count;
       ++i) {  // up to 30 s
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(StatusOf(1)->stats.chunks_opened, at_mount->stats.chunk_count)
      << "the chunks were not opened from the bytes read at mount";
  EXPECT_EQ(testing::FileSha256(req.target_dir / "srv" / "big.bin"), big_sha256_);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "other.txt"), kOther);
  EXPECT_EQ(WaitForVerification(1), lazylayer::Verification::kVerified);
  const auto after = StatusOf(1);
  EXPECT_EQ(after->stats.fetch_requests, 1u) << "reading the files fetched again";
  EXPECT_EQ(after->stats.blob_bytes_fetched, layers_[1].size);
}

// Over the bound, the mount reads the tail only (one request), and a read fetches its chunk.
TEST_F(EstargzLazy, LayerOverTheWholeLayerBoundIsNotReadWhole) {
  StartHandler(/*verify=*/false, nullptr, nullptr, /*prefetch=*/false,
               /*whole_layer_bytes=*/layers_[1].size - 1);
  auto req = Request(image_ref_, layers_[1], 1, layers_[1].chain_id);
  auto mounted = handler_->TryMount(req);
  ASSERT_TRUE(mounted.ok() && *mounted) << (mounted.ok() ? "" : mounted.status().ToString());
  const auto at_mount = StatusOf(1);
  ASSERT_TRUE(at_mount.has_value());
  EXPECT_EQ(at_mount->stats.fetch_requests, 1u);
  EXPECT_LT(at_mount->stats.blob_bytes_fetched, layers_[1].size / 2);
  EXPECT_EQ(testing::ReadFileString(req.target_dir / "srv" / "hello.txt"), kHello);
  EXPECT_GT(StatusOf(1)->stats.fetch_requests, 1u);
}

}  // namespace
}  // namespace lazycrypt
