// Issue 15, parts 2 and 3, played by attackers against a real containerd 1.6 + runc, a real
// docker-registry and the real lazycrypt-snapshotter (FUSE layers), the fixture of
// trust_snapshot_test (tests/trust_fixture.h):
//
//  1. An image author plants content under another image's chain ID. The victim image is busybox
//     + a plain layer V with /victim.txt = "victim". The attacker's image is the same busybox
//     layer + a lazycrypt layer that he sealed himself (he holds its layer key; encrypted to the
//     node's public key, which anyone may use), whose config and sealed TOC both claim V's
//     diff_id, but whose /victim.txt says "PLANTED". Pulled lazily first, it is mounted under
//     V's chain ID; the background verification (FORMAT.md §8.4) hashes it, finds another tar and
//     quarantines it. Then the victim, pulled with `ctr images pull` and with `lazycrypt pull`,
//     prints "victim" or is refused naming the quarantined layer; never "PLANTED". The attacker's
//     own new container is refused.
//  2. A co-recipient re-seals one chunk of a lazycrypt image with the right layer key (GCM accepts
//     it) and republishes blob + manifest (only the layer digest changes). Pulled lazily and run,
//     the container's read of the file fails (EIO, or the use of the quarantined layer is
//     refused): its output never holds the forged text. Another conversion of the same image
//     (its own chain IDs) runs and prints the author's text, so the fixture reads what it should.
//
// LAZYCRYPT_TRUST_ATTACK_EXTRA_CONFIG (optional) is appended to the snapshotter's TOML, e.g.
// "[fetch]\nbackground_rate = 1024\n" keeps the verification pending for minutes (the
// verification fetches at the background rate): what the victim sees when nothing has verified the
// layer yet, i.e. without background verification. LAZYCRYPT_TRUST_ATTACK_SNAPSHOTTER_BIN (optional)
// runs another lazycrypt-snapshotter binary, e.g. one built without the checks, to show what the
// tests catch.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "crypto/digest.h"
#include "format/keys.h"
#include "format/layout.h"
#include "image/envelope.h"
#include "image/oci.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "tar/tar_writer.h"
#include "tests/forged_layer.h"
#include "tests/reseal_chunk.h"
#include "tests/trust_fixture.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using harness::CommandResult;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kPlanted = "PLANTED";
constexpr std::string_view kAuthorText = "the author of this image wrote this text, nobody else";
constexpr std::string_view kForgedText = "A CO-RECIPIENT FORGED THIS TEXT AND RE-SEALED IT!!!!!";
static_assert(kAuthorText.size() == kForgedText.size());

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

std::string Output(const CommandResult& r) { return r.stdout_text + r.stderr_text; }

image::ImageReference MustParseRef(const std::string& ref) {
  auto parsed = image::ImageReference::Parse("docker://" + ref);
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  return parsed.ok() ? *parsed : image::ImageReference{};
}

std::unique_ptr<image::ImageDestination> OpenDestination(const std::string& ref) {
  image::TransportOptions transport;
  transport.plain_http = true;
  auto dst = image::OpenRegistryDestination(MustParseRef(ref), transport);
  EXPECT_TRUE(dst.ok()) << dst.status().ToString();
  return dst.ok() ? std::move(*dst) : nullptr;
}

class TrustContainerdAttack : public TrustContainerdFixture {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    SetUpWork("lc-trust-attack");
    ASSERT_FALSE(HasFailure());
    const char* extra = std::getenv("LAZYCRYPT_TRUST_ATTACK_EXTRA_CONFIG");
    const char* bin = std::getenv("LAZYCRYPT_TRUST_ATTACK_SNAPSHOTTER_BIN");
    if (bin != nullptr && *bin != '\0') snapshotter_bin_ = bin;
    StartDaemons(extra != nullptr ? extra : "");
  }

  // A busybox OCI layout (tag latest) with one more plain layer holding `files` (name → bytes)
  // at the root.
  fs::path MakeImage(const std::string& name,
                     const std::vector<std::pair<std::string, std::string>>& files) {
    const fs::path w = work_->path();
    const fs::path layout = w / name;
    MakeBusyboxImage(layout);
    const fs::path tree = w / (name + "-tree");
    fs::create_directories(tree);
    std::vector<std::string> tar = {"tar", "--format=pax", "--numeric-owner", "-C", tree.string(),
                                    "-cf", (w / (name + ".tar")).string()};
    for (const auto& [file, bytes] : files) {
      EXPECT_TRUE(harness::WriteFile(tree / file, bytes).ok());
      tar.push_back(file);
    }
    MustRun(tar);
    MustRun({"umoci", "raw", "add-layer", "--image", layout.string() + ":latest",
             (w / (name + ".tar")).string()});
    return layout;
  }

  // Polls the snapshotter's log (bounded) for the line of `layer_digest`'s quarantine.
  bool WaitForQuarantine(const std::string& layer_digest, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const std::string log = SnapshotterLog();
      for (size_t at = log.find("layer " + layer_digest + " (snapshot "); at != std::string::npos;
           at = log.find("layer " + layer_digest + " (snapshot ", at + 1)) {
        const std::string line = log.substr(at, log.find('\n', at) - at);
        if (line.find(") quarantined: its content does not match") != std::string::npos) {
          return true;
        }
      }
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(100ms);
    }
  }
};

// Issue 15, part 2: an image whose config and sealed TOC claim another image's diff_id.
TEST_F(TrustContainerdAttack, PlantedChainIdIsQuarantinedAndTheVictimNeverSeesPlantedFiles) {
  // The victim: busybox + V (/victim.txt = "victim"), pushed as it is.
  const fs::path victim_layout = MakeImage("victim", {{"victim.txt", "victim\n"}});
  ASSERT_FALSE(HasFailure());
  const std::string victim_ref = registry_->host() + "/lazycrypt/victim:1";
  MustRun({"skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:" + victim_layout.string() + ":latest",
           "docker://" + victim_ref});
  const image::LoadedImage victim = LoadLayoutImage(victim_layout, "latest");
  ASSERT_EQ(victim.manifest.layers.size(), 2u);
  nlohmann::json config = nlohmann::json::parse(victim.config_bytes.begin(),
                                                victim.config_bytes.end(), nullptr, false);
  ASSERT_FALSE(config.is_discarded());
  const std::string v_diff_id = config["rootfs"]["diff_ids"][1].get<std::string>();
  auto v_digest = crypto::ParseOciDigest(v_diff_id);
  ASSERT_TRUE(v_digest.ok()) << v_digest.status().ToString();

  // The attacker's layer: his files, sealed under a layer key of his own with a TOC claiming
  // tar_sha256 = V's diff_id, the key wrapped to the node's public key.
  MemoryOutputStream tar_out;
  tar::TarWriter writer(tar_out);
  auto entry = [](std::string name, uint64_t size) {
    tar::Entry e;
    e.name = std::move(name);
    e.type = tar::EntryType::kRegular;
    e.mode = 0644;
    e.mtime_sec = 1700000000;
    e.size = size;
    return e;
  };
  const std::string planted = std::string(kPlanted) + "\n";
  const std::string padding = RandomBytes(256 * 1024, 11);  // a few chunks to verify
  ASSERT_TRUE(writer.AppendEntry(entry("victim.txt", planted.size()), AsBytes(planted)).ok());
  ASSERT_TRUE(writer.AppendEntry(entry("pad.bin", padding.size()), AsBytes(padding)).ok());
  ASSERT_TRUE(writer.Finish(0).ok());
  const std::vector<uint8_t> evil_tar = tar_out.Take();
  auto entries = HonestTocEntries(evil_tar);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  auto layer_key = format::NewLayerKey();
  ASSERT_TRUE(layer_key.ok());
  ForgeOptions forge;
  forge.listed_diff_id = *v_digest;
  auto forged = ForgeLayer(evil_tar, *entries, *layer_key, forge);
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  auto pub = keywrap::PublicKey::Load(node_key_.pub);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  std::vector<keywrap::PublicKey> pubs;
  pubs.push_back(std::move(pub).value());
  auto ann = image::MakeLazycryptAnnotations(*layer_key, forged->toc_digest, forged->commitment,
                                             keywrap::Recipients(std::move(pubs)));
  ASSERT_TRUE(ann.ok()) << ann.status().ToString();

  // The attacker's image: the victim's busybox layer, his layer, and the victim's very config
  // (it already claims [busybox, V]).
  const std::string evil_ref = registry_->host() + "/attacker/evil:1";
  auto dst = OpenDestination(evil_ref);
  ASSERT_NE(dst, nullptr);
  const image::Descriptor& base = victim.manifest.layers[0];
  const std::string base_bytes = harness::ReadFileOrEmpty(BlobPath(victim_layout, base.digest));
  auto base_desc = dst->PutBlob(base.media_type, AsBytes(base_bytes));
  ASSERT_TRUE(base_desc.ok()) << base_desc.status().ToString();
  ASSERT_EQ(base_desc->digest, base.digest);
  auto evil = dst->PutBlob(std::string(image::kMediaTypeLazycryptLayer), forged->blob);
  ASSERT_TRUE(evil.ok()) << evil.status().ToString();
  evil->annotations[std::string(image::kAnnotationEncKeysJwe)] = ann->keys_jwe;
  evil->annotations[std::string(image::kAnnotationEncPubopts)] = ann->pubopts;
  evil->annotations[std::string(image::kAnnotationLazycryptTocDigest)] = ann->toc_digest;
  auto cfg = dst->PutBlob(victim.manifest.config.media_type, victim.config_bytes);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  image::Manifest m;
  m.media_type = std::string(image::kMediaTypeOciManifest);
  m.config = *cfg;
  m.layers = {*base_desc, *evil};
  const std::string manifest = image::SerializeManifest(m);
  auto root = dst->PutManifest(m.media_type, AsBytes(manifest));
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  ASSERT_TRUE(dst->Commit(*root).ok());
  const std::string evil_digest = evil->digest;

  // The attacker's image first, lazily: his layer is mounted under V's chain ID (its TOC gives
  // that chain ID), then verified in the background and quarantined.
  auto attacker_pull = RemotePull(evil_ref);
  EXPECT_THAT(Output(attacker_pull), Not(HasSubstr(std::string(kPlanted))));
  if (attacker_pull.exit_code == 0) {
    // Seconds: the layer is 5 chunks on a local registry, plus the snapshotter's verification
    // start delay, if it has one.
    EXPECT_TRUE(WaitForQuarantine(evil_digest, 30s))
        << "no quarantine of layer " << evil_digest << " within 30 s" << Logs();
  } else {
    // Refusing the attacker's pull outright is fine too, when it names his layer.
    EXPECT_THAT(Output(attacker_pull), HasSubstr("layer " + evil_digest)) << Describe(attacker_pull);
  }

  // A victim's container prints its own file, or does not start and names the quarantined layer.
  auto expect_victim_safe = [&](const std::string& how, const CommandResult& pull,
                                const CommandResult& run) {
    SCOPED_TRACE(how);
    EXPECT_THAT(Output(pull) + Output(run), Not(HasSubstr(std::string(kPlanted))))
        << "the victim saw the attacker's file\npull: " << Describe(pull)
        << "\nrun: " << Describe(run) << Logs();
    if (run.exit_code == 0) {
      EXPECT_EQ(run.stdout_text, "victim\n") << Describe(run);
    } else {
      EXPECT_THAT(Output(pull) + Output(run), HasSubstr("layer " + evil_digest))
          << "refused, but without naming the quarantined layer\npull: " << Describe(pull)
          << "\nrun: " << Describe(run);
      EXPECT_THAT(Output(pull) + Output(run), HasSubstr("quarantined"))
          << "pull: " << Describe(pull) << "\nrun: " << Describe(run);
    }
  };

  // `ctr images pull` with the lazycrypt snapshotter (containerd's own unpacker), then `ctr run`.
  auto ctr_pull = ctd_->Ctr({"images", "pull", "--plain-http", "--snapshotter", "lazycrypt",
                             victim_ref}, 180s);
  ASSERT_TRUE(ctr_pull.ok()) << ctr_pull.status().ToString();
  auto ctr_run = Run(victim_ref, Id("victim"), {"/bin/cat", "/victim.txt"});
  expect_victim_safe("ctr images pull", *ctr_pull, ctr_run);

  // `lazycrypt pull` in another containerd namespace (another tenant: containerd has no record
  // of the layers there), then `ctr run` in it.
  const std::string ns = "lc-victim";
  auto lc_pull = harness::RunCommand({LAZYCRYPT_BIN, "pull", "--address", ctd_->socket().string(),
                                      "--namespace", ns, "--snapshotter", "lazycrypt",
                                      "--plain-http", "--hosts-dir", "", victim_ref},
                                     180s);
  ASSERT_TRUE(lc_pull.ok()) << lc_pull.status().ToString();
  auto lc_run = ctd_->Ctr({"--namespace", ns, "run", "--rm", "--snapshotter", "lazycrypt",
                           victim_ref, Id("victim-ns"), "/bin/cat", "/victim.txt"});
  ASSERT_TRUE(lc_run.ok()) << lc_run.status().ToString();
  expect_victim_safe("lazycrypt pull", *lc_pull, *lc_run);

  // The attacker's own image: no new container.
  auto attacker_run = Run(evil_ref, Id("attacker"), {"/bin/cat", "/victim.txt"});
  EXPECT_NE(attacker_run.exit_code, 0)
      << "a container of the quarantined layer started: " << Describe(attacker_run) << Logs();
  EXPECT_THAT(Output(attacker_run), Not(HasSubstr(std::string(kPlanted))));
  EXPECT_THAT(Output(attacker_run), HasSubstr("layer " + evil_digest)) << Describe(attacker_run);
  EXPECT_THAT(Output(attacker_run), HasSubstr("quarantined")) << Describe(attacker_run);
  ExpectNoContainer(Id("attacker"));
}

// Issue 15, part 3, at containerd's level: a chunk re-sealed by a co-recipient.
TEST_F(TrustContainerdAttack, ResealedChunkFailsTheContainerNeverPrintsForgedText) {
  // /secret.txt: the author's text, then incompressible bytes, so its chunk is stored and the
  // forged record keeps the original's size (one record header, as the attack needs).
  std::string secret = RandomBytes(200 * 1024, 7);
  std::memcpy(secret.data(), kAuthorText.data(), kAuthorText.size());
  const fs::path layout = MakeImage("pin", {{"secret.txt", secret}, {"hello.txt", "hello\n"}});
  ASSERT_FALSE(HasFailure());
  // Two conversions of the image: each has its own diff_ids (FORMAT.md §5.1), so its own chain
  // IDs: "control" shows the fixture reads the author's text; "good" is the one forged.
  const std::string control_ref = registry_->host() + "/lazycrypt/pin:control";
  const std::string good_ref = registry_->host() + "/lazycrypt/pin:good";
  const std::string forged_ref = registry_->host() + "/lazycrypt/pin:forged";
  for (const std::string& ref : {control_ref, good_ref}) {
    MustRun({LAZYCRYPT_BIN, "-q", "encrypt", "--plain-http", "--hosts-dir", "", "--chunk-size",
             "64KiB", "-r", "jwe:" + node_key_.pub.string(), "oci:" + layout.string() + ":latest",
             "docker://" + ref},
            120s);
  }
  ASSERT_FALSE(HasFailure());

  // The co-recipient's forgery (it holds a key that unwraps the layer key: here the node's own,
  // the simplest co-recipient) of the last layer of "good", republished as "forged".
  image::TransportOptions transport;
  transport.plain_http = true;
  auto src = image::OpenRegistrySource(MustParseRef(good_ref), transport);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  auto root = (*src)->ResolveRoot();
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  auto manifest_bytes = (*src)->ReadBlob(*root);
  ASSERT_TRUE(manifest_bytes.ok()) << manifest_bytes.status().ToString();
  auto manifest = image::ParseManifest(*manifest_bytes);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  ASSERT_EQ(manifest->layers.size(), 2u);
  const image::Descriptor layer = manifest->layers[1];
  const std::string blob_text =
      harness::ReadFileOrEmpty(RegistryBlobPath(registry_->storage_dir(), layer.digest));
  std::vector<uint8_t> blob(blob_text.begin(), blob_text.end());
  ASSERT_EQ(blob.size(), layer.size);

  auto priv = keywrap::PrivateKey::Load(node_key_.priv.string());
  ASSERT_TRUE(priv.ok()) << priv.status().ToString();
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(std::move(priv).value());
  auto resealed = ResealFileChunk(std::move(blob), layer, keywrap::KeyRing(std::move(keys)),
                                  "secret.txt", kAuthorText, kForgedText);
  ASSERT_TRUE(resealed.ok()) << resealed.status().ToString();
  blob = std::move(resealed->blob);

  // Republished: the forged blob, and the same manifest with only that layer's digest changed
  // (config, TOC digest annotation and key envelope unchanged).
  auto dst = OpenDestination(forged_ref);
  ASSERT_NE(dst, nullptr);
  auto forged_blob = dst->PutBlob(layer.media_type, blob);
  ASSERT_TRUE(forged_blob.ok()) << forged_blob.status().ToString();
  ASSERT_NE(forged_blob->digest, layer.digest);
  nlohmann::ordered_json mj = nlohmann::ordered_json::parse(manifest_bytes->begin(),
                                                            manifest_bytes->end());
  ASSERT_EQ(mj["layers"][1]["digest"], layer.digest);
  mj["layers"][1]["digest"] = forged_blob->digest;
  const std::string forged_manifest = mj.dump();
  auto forged_root = dst->PutManifest(root->media_type, AsBytes(forged_manifest));
  ASSERT_TRUE(forged_root.ok()) << forged_root.status().ToString();
  ASSERT_TRUE(dst->Commit(*forged_root).ok());

  const std::vector<std::string> read_secret = {"/bin/busybox", "head", "-c",
                                                std::to_string(kAuthorText.size()), "/secret.txt"};
  // Control: the other conversion, pulled lazily, prints the author's text.
  auto control_pull = RemotePull(control_ref);
  ASSERT_EQ(control_pull.exit_code, 0) << Describe(control_pull) << Logs();
  auto control = Run(control_ref, Id("control"), read_secret);
  ASSERT_EQ(control.stdout_text, kAuthorText) << Describe(control) << Logs();

  // The forged image, pulled lazily on this node and run.
  auto pull = RemotePull(forged_ref);
  auto run = Run(forged_ref, Id("forged"), read_secret);
  EXPECT_THAT(Output(pull) + Output(run), Not(HasSubstr(std::string(kForgedText))))
      << "the container printed the forged text\npull: " << Describe(pull)
      << "\nrun: " << Describe(run) << Logs();
  EXPECT_NE(run.exit_code, 0) << "the read of the re-sealed chunk did not fail: " << Describe(run)
                              << Logs();
  // The attack reached the pin: the snapshotter mounted the forged blob and refused its chunk
  // (the read: "does not match the digest pinned in the TOC"; or, once the background
  // verification got there first, the layer's quarantine).
  const std::string log = SnapshotterLog();
  EXPECT_THAT(log, HasSubstr("mounted layer " + forged_blob->digest)) << Logs();
  EXPECT_THAT(log + Output(run),
              AnyOf(HasSubstr("chunk " + std::to_string(resealed->chunk_index) +
                              ": record does not match the digest pinned in the TOC"),
                    HasSubstr("layer " + forged_blob->digest + " (snapshot ")))
      << Describe(run) << Logs();
}

// An image author's denial of service (review must-fix M1): a TOC of a few KiB of zstd that
// decompresses to millions of empty entries, sealed correctly under his own layer key. Parsing it
// whole builds a heap object per entry (over a GiB at the format's 8 Mi entries) before any count
// or name check: the node's snapshotter, shared by every tenant, would be OOM-killed (a pull
// prepares its layers in parallel). Two bombs: the format's maximum (8 Mi entries, over the
// node's default [limits] toc_max_entries of 1 Mi) must be refused on the wire, before parsing,
// naming the count; one at exactly the node's limit passes that check, is parsed (a bounded
// ~150 MiB) and refused for its nameless entries. The snapshotter stays up, its peak RSS under
// 512 MiB, and serves the next image. (With LAZYCRYPT_TRUST_ATTACK_SNAPSHOTTER_BIN set to a build
// before 92af47b, or before the node's 1 Mi default, its peak passes a GiB and this test fails.)
TEST_F(TrustContainerdAttack, TocBombIsRefusedOnTheWireAndTheSnapshotterServesOn) {
  const fs::path layout = MakeImage("after-bomb", {{"ok.txt", "still serving\n"}});
  ASSERT_FALSE(HasFailure());
  const std::string good_ref = registry_->host() + "/lazycrypt/after-bomb:1";
  MustRun({LAZYCRYPT_BIN, "-q", "encrypt", "--plain-http", "--hosts-dir", "", "-r",
           "jwe:" + node_key_.pub.string(), "oci:" + layout.string() + ":latest",
           "docker://" + good_ref},
          120s);
  const image::LoadedImage plain = LoadLayoutImage(layout, "latest");
  ASSERT_EQ(plain.manifest.layers.size(), 2u);

  // One honest small file, then empty entries appended to the serialized TOC (field 6, length
  // 0: two bytes each) up to `total` entries; pushed as busybox + the bomb layer + a config
  // claiming the bomb's tar. Returns the bomb layer's digest.
  auto push_bomb = [&](const std::string& ref, uint64_t total) -> std::string {
    MemoryOutputStream tar_out;
    tar::TarWriter writer(tar_out);
    tar::Entry e;
    e.name = "bomb.txt";
    e.type = tar::EntryType::kRegular;
    e.mode = 0644;
    e.mtime_sec = 1700000000;
    const std::string text = "the bomb's own file\n";
    e.size = text.size();
    EXPECT_TRUE(writer.AppendEntry(e, AsBytes(text)).ok());
    EXPECT_TRUE(writer.Finish(0).ok());
    const std::vector<uint8_t> tar = tar_out.Take();
    auto entries = HonestTocEntries(tar);
    EXPECT_TRUE(entries.ok()) << entries.status().ToString();
    auto layer_key = format::NewLayerKey();
    EXPECT_TRUE(layer_key.ok());
    if (!entries.ok() || !layer_key.ok()) return "";
    ForgeOptions forge;
    const uint64_t empty = total - entries->size();
    forge.tamper_serialized_toc = [empty](std::string& serialized) {
      serialized.reserve(serialized.size() + 2 * empty);
      for (uint64_t i = 0; i < empty; ++i) serialized.append("\x32\x00", 2);
    };
    auto forged = ForgeLayer(tar, *entries, *layer_key, forge);
    EXPECT_TRUE(forged.ok()) << forged.status().ToString();
    if (!forged.ok()) return "";
    EXPECT_LT(forged->blob.size(), size_t{1} << 20) << "the bomb should be small on the wire";
    auto pub = keywrap::PublicKey::Load(node_key_.pub);
    EXPECT_TRUE(pub.ok()) << pub.status().ToString();
    if (!pub.ok()) return "";
    std::vector<keywrap::PublicKey> pubs;
    pubs.push_back(std::move(pub).value());
    auto ann = image::MakeLazycryptAnnotations(*layer_key, forged->toc_digest, forged->commitment,
                                               keywrap::Recipients(std::move(pubs)));
    EXPECT_TRUE(ann.ok()) << ann.status().ToString();
    auto dst = OpenDestination(ref);
    if (!ann.ok() || dst == nullptr) return "";
    const image::Descriptor& base = plain.manifest.layers[0];
    const std::string base_bytes = harness::ReadFileOrEmpty(BlobPath(layout, base.digest));
    auto base_desc = dst->PutBlob(base.media_type, AsBytes(base_bytes));
    EXPECT_TRUE(base_desc.ok()) << base_desc.status().ToString();
    auto bomb = dst->PutBlob(std::string(image::kMediaTypeLazycryptLayer), forged->blob);
    EXPECT_TRUE(bomb.ok()) << bomb.status().ToString();
    if (!base_desc.ok() || !bomb.ok()) return "";
    bomb->annotations[std::string(image::kAnnotationEncKeysJwe)] = ann->keys_jwe;
    bomb->annotations[std::string(image::kAnnotationEncPubopts)] = ann->pubopts;
    bomb->annotations[std::string(image::kAnnotationLazycryptTocDigest)] = ann->toc_digest;
    nlohmann::json config = nlohmann::json::parse(plain.config_bytes.begin(),
                                                  plain.config_bytes.end(), nullptr, false);
    EXPECT_FALSE(config.is_discarded());
    config["rootfs"]["diff_ids"][1] = crypto::OciDigest(forged->listed_diff_id);
    const std::string config_text = config.dump();
    auto cfg = dst->PutBlob(plain.manifest.config.media_type, AsBytes(config_text));
    EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
    if (!cfg.ok()) return "";
    image::Manifest m;
    m.media_type = std::string(image::kMediaTypeOciManifest);
    m.config = *cfg;
    m.layers = {*base_desc, *bomb};
    const std::string manifest = image::SerializeManifest(m);
    auto root = dst->PutManifest(m.media_type, AsBytes(manifest));
    EXPECT_TRUE(root.ok()) << root.status().ToString();
    if (!root.ok()) return "";
    EXPECT_TRUE(dst->Commit(*root).ok());
    return bomb->digest;
  };
  // Pulled lazily and run: refused, no container.
  auto expect_refused = [&](const std::string& ref, const std::string& layer,
                            const std::string& id) {
    SCOPED_TRACE(ref);
    auto pull = RemotePull(ref);
    auto run = Run(ref, Id(id), {"/bin/cat", "/bomb.txt"});
    EXPECT_NE(run.exit_code, 0) << "a container of the bomb image started: " << Describe(run)
                                << Logs();
    ExpectNoContainer(Id(id));
    EXPECT_THAT(SnapshotterLog(), HasSubstr("layer " + layer)) << Logs();
  };

  const uint64_t node_limit = uint64_t{1} << 20;  // [limits] toc_max_entries' default
  const std::string over_ref = registry_->host() + "/attacker/bomb:format-max";
  const std::string over = push_bomb(over_ref, format::kMaxTocEntries);
  ASSERT_FALSE(over.empty());
  expect_refused(over_ref, over, "bomb-over");
  EXPECT_THAT(SnapshotterLog(), HasSubstr("more than " + std::to_string(node_limit) + " entries"))
      << "not refused on the wire by the node's entry limit" << Logs();

  const std::string at_ref = registry_->host() + "/attacker/bomb:node-limit";
  const std::string at = push_bomb(at_ref, node_limit);
  ASSERT_FALSE(at.empty());
  expect_refused(at_ref, at, "bomb-at");

  // The snapshotter is still up and small.
  ASSERT_TRUE(snapshotter_->Running()) << "the snapshotter died" << Logs();
  const std::string status =
      harness::ReadFileOrEmpty("/proc/" + std::to_string(snapshotter_->pid()) + "/status");
  const size_t at_hwm = status.find("VmHWM:");
  ASSERT_NE(at_hwm, std::string::npos) << status;
  const uint64_t hwm_kib = std::stoull(status.substr(at_hwm + 6));
  std::printf("snapshotter peak RSS after both bombs: %llu MiB\n",
              static_cast<unsigned long long>(hwm_kib / 1024));
  EXPECT_LT(hwm_kib, uint64_t{512} << 10)
      << "the snapshotter's peak RSS reached " << hwm_kib / 1024 << " MiB on a few-KiB TOC";

  // And it serves the next tenant's image.
  auto good_pull = RemotePull(good_ref);
  ASSERT_EQ(good_pull.exit_code, 0) << Describe(good_pull) << Logs();
  auto good = Run(good_ref, Id("after-bomb"), {"/bin/cat", "/ok.txt"});
  EXPECT_EQ(good.stdout_text, "still serving\n") << Describe(good) << Logs();
}

}  // namespace
}  // namespace lazycrypt::testing
