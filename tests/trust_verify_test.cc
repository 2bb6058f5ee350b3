// Issue 15, parts 2 and 3 (content verification), end to end with a real docker-registry, the
// real `lazycrypt` binary (mount over FUSE, stats, verify, decrypt) and the real
// lazycrypt-decoder. Images are built here by a holder of the layer key, with the format
// library's own primitives (tests/forged_layer.h), and pushed to the registry:
//  - a layer whose TOC and image config claim a diff_id that is not its content (e.g. a popular
//    base layer's): a lazy mount serves its files at first, then the background verification
//    fails, every read gives EIO, and `lazycrypt stats` shows the failure;
//  - an honest layer: the verification ends "verified" and reads keep working;
//  - a layer whose TOC disagrees with its tar stream (a file pointed at bytes after the
//    end-of-archive marker): `lazycrypt verify`, `lazycrypt decrypt` and lazycrypt-decoder refuse
//    it, saying so.
// Root and /dev/fuse are needed for the mounts (those tests skip, saying why, without them).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "decoder/decoder.h"
#include "decoder/payload.h"
#include "format/keys.h"
#include "image/envelope.h"
#include "image/oci.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "tar/tar_writer.h"
#include "tests/forged_layer.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kPlanted = "planted by the image's author\n";

// A small layer: etc/motd (`motd`), then a few hundred KiB of other files, so that the layer is
// several 64 KiB chunks and a rate-limited verification takes seconds.
std::vector<uint8_t> LayerTar(std::string_view motd, ByteSpan trailer = {}) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  auto entry = [](std::string name, tar::EntryType type, uint64_t size) {
    tar::Entry e;
    e.name = std::move(name);
    e.type = type;
    e.mode = type == tar::EntryType::kDirectory ? 0755 : 0644;
    e.mtime_sec = 1700000000;
    e.size = size;
    return e;
  };
  EXPECT_TRUE(w.AppendEntry(entry("./", tar::EntryType::kDirectory, 0)).ok());
  EXPECT_TRUE(w.AppendEntry(entry("./etc/", tar::EntryType::kDirectory, 0)).ok());
  EXPECT_TRUE(w.AppendEntry(entry("./etc/motd", tar::EntryType::kRegular, motd.size()),
                            AsBytes(motd)).ok());
  std::mt19937 rng(5);
  for (int i = 0; i < 4; ++i) {
    std::vector<uint8_t> data(100000);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    EXPECT_TRUE(w.AppendEntry(entry("./data/blob" + std::to_string(i), tar::EntryType::kRegular,
                                    data.size()), data).ok());
  }
  EXPECT_TRUE(w.Finish(0).ok());
  std::vector<uint8_t> tar = out.Take();
  tar.insert(tar.end(), trailer.begin(), trailer.end());
  return tar;
}

class TrustVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = harness::TempDir::Create("trust-verify");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    key_ = GenerateKeyPair(tmp_->path(), "ec256", "key");
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
  }
  void TearDown() override {
    for (const fs::path& m : mounts_) {
      (void)harness::RunCommand({LazycryptBin(), "umount", "--stats-file", StatsFile(m), m.string()},
                                20s);
    }
  }

  static bool CanMount() { return ::geteuid() == 0 && ::access("/dev/fuse", R_OK | W_OK) == 0; }
  static std::string StatsFile(const fs::path& m) { return m.string() + ".stats"; }
  std::string Ref(const std::string& name) const {
    return "docker://" + registry_->host() + "/" + name + ":1";
  }

  // Pushes a one-layer image whose layer is `tar` sealed with a TOC listing `entries` and
  // claiming `listed_diff_id` (default: the tar's SHA-256); the config names the same diff_id.
  // Returns the layer descriptor.
  image::Descriptor PushImage(const std::string& name, ByteSpan tar,
                              const std::vector<format::Entry>& entries,
                              std::optional<crypto::Sha256Digest> listed_diff_id = std::nullopt) {
    auto layer_key = format::NewLayerKey();
    EXPECT_TRUE(layer_key.ok());
    ForgeOptions o;
    o.listed_diff_id = listed_diff_id;
    auto forged = ForgeLayer(tar, entries, *layer_key, o);
    EXPECT_TRUE(forged.ok()) << forged.status().ToString();
    auto pub = keywrap::PublicKey::Load(key_.pub);
    EXPECT_TRUE(pub.ok()) << pub.status().ToString();
    std::vector<keywrap::PublicKey> pubs;
    pubs.push_back(std::move(pub).value());
    keywrap::Recipients recipients(std::move(pubs));
    auto ann = image::MakeLazycryptAnnotations(*layer_key, forged->toc_digest, forged->commitment,
                                               recipients);
    EXPECT_TRUE(ann.ok()) << ann.status().ToString();

    auto ref = image::ImageReference::Parse(Ref(name));
    EXPECT_TRUE(ref.ok()) << ref.status().ToString();
    image::TransportOptions transport;
    transport.plain_http = true;
    auto dst = image::OpenRegistryDestination(*ref, transport);
    EXPECT_TRUE(dst.ok()) << dst.status().ToString();
    auto layer = (*dst)->PutBlob(std::string(image::kMediaTypeLazycryptLayer), forged->blob);
    EXPECT_TRUE(layer.ok()) << layer.status().ToString();
    layer->annotations[std::string(image::kAnnotationEncKeysJwe)] = ann->keys_jwe;
    layer->annotations[std::string(image::kAnnotationEncPubopts)] = ann->pubopts;
    layer->annotations[std::string(image::kAnnotationLazycryptTocDigest)] = ann->toc_digest;
    const std::string config =
        R"({"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[")" +
        crypto::OciDigest(forged->listed_diff_id) + R"("]}})";
    auto cfg = (*dst)->PutBlob(std::string(image::kMediaTypeOciConfig), AsBytes(config));
    EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
    image::Manifest m;
    m.media_type = std::string(image::kMediaTypeOciManifest);
    m.config = *cfg;
    m.layers.push_back(*layer);
    const std::string manifest = image::SerializeManifest(m);
    auto root = (*dst)->PutManifest(m.media_type, AsBytes(manifest));
    EXPECT_TRUE(root.ok()) << root.status().ToString();
    EXPECT_TRUE((*dst)->Commit(*root).ok());
    return *layer;
  }

  // `lazycrypt mount --daemon` of the image's layer, verification rate-limited by
  // --background-rate (64 KiB/s: about one chunk a second) so the test sees the window.
  fs::path Mount(const std::string& name) {
    fs::path m = tmp_->path() / ("mnt-" + name);
    fs::create_directories(m);
    mounts_.push_back(m);
    auto r = harness::RunCommand(
        {LazycryptBin(), "mount", "--daemon", "--key", key_.priv.string(), "--plain-http",
         "--hosts-dir", "", "--no-prefetch", "--cache-dir", (tmp_->path() / "cache").string(),
         "--background-rate", "64KiB/s", "--log", (tmp_->path() / (name + ".log")).string(),
         "--stats-file", StatsFile(m), Ref(name), m.string()},
        60s);
    EXPECT_TRUE(r.ok() && r->exit_code == 0)
        << (r.ok() ? r->stdout_text + r->stderr_text : r.status().ToString());
    return m;
  }

  // lazycrypt-decoder as containerd runs it: the blob (from the registry's storage) on stdin,
  // imgcrypt's payload with our private key on fd 3, the media type in the environment.
  harness::CommandResult RunDecoder(const image::Descriptor& layer) {
    std::vector<decoder::PayloadPrivateKey> keys(1);
    const std::string pem = harness::ReadFileOrEmpty(key_.priv);
    keys[0].key_bytes = crypto::SecureBuffer(AsBytes(pem));
    auto payload = decoder::SerializeStreamPayload(layer, keys);
    EXPECT_TRUE(payload.ok()) << payload.status().ToString();
    const fs::path payload_file = tmp_->path() / "payload";
    EXPECT_TRUE(harness::WriteFile(payload_file, payload.ok() ? *payload : "").ok());
    const fs::path blob = RegistryBlobPath(registry_->storage_dir(), layer.digest);
    EXPECT_TRUE(fs::exists(blob)) << blob;
    auto r = harness::RunCommand(
        {"/bin/sh", "-c",
         "exec " + ShellQuote(LAZYCRYPT_DECODER_BIN) + " < " + ShellQuote(blob.string()) + " 3< " +
             ShellQuote(payload_file.string()) + " > /dev/null"},
        60s, {std::string(decoder::kMediaTypeEnvVar) + "=" + layer.media_type});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : harness::CommandResult{};
  }

  static nlohmann::json Stats(const fs::path& m) {
    auto r = harness::RunCommand({LazycryptBin(), "stats", "--json", "--stats-file", StatsFile(m),
                                  m.string()}, 20s);
    if (!r.ok() || r->exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(r->stdout_text, nullptr, false);
  }

  // Polls `lazycrypt stats` until the verification is no longer pending (at most 60 s).
  static nlohmann::json WaitForVerification(const fs::path& m) {
    nlohmann::json s;
    for (int i = 0; i < 600; ++i) {
      s = Stats(m);
      const std::string v = s.is_object() ? s.value("verification", "") : "";
      if (v == "verified" || v == "failed") return s;
      std::this_thread::sleep_for(100ms);
    }
    return s;
  }

  // Reads a file through the mount: its bytes, or the errno of the failed read.
  static std::pair<std::string, int> ReadThroughMount(const fs::path& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {"", errno};
    std::string bytes;
    char buf[65536];
    int err = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) err = errno;
      if (n <= 0) break;
      bytes.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return {bytes, err};
  }

  std::unique_ptr<harness::TempDir> tmp_;
  KeyPair key_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::vector<fs::path> mounts_;
};

// Part 2: an image whose TOC and config claim another layer's diff_id. Mounted lazily, its files
// are served at first (the window); once the background verification has hashed the layer, it
// fails, the layer is quarantined: every read is EIO, pages read before included, and
// `lazycrypt stats` shows it.
TEST_F(TrustVerifyTest, LazyLayerWhoseDiffIdIsNotItsContentIsQuarantinedOnceVerified) {
  if (!CanMount()) GTEST_SKIP() << "needs root and /dev/fuse";
  const auto victim_tar = LayerTar("the victim's real motd\n");
  const crypto::Sha256Digest victim_diff_id = crypto::Sha256::Of(victim_tar);
  const auto evil_tar = LayerTar(kPlanted);
  auto entries = HonestTocEntries(evil_tar);
  ASSERT_TRUE(entries.ok());
  const image::Descriptor layer = PushImage("evil", evil_tar, *entries, victim_diff_id);

  const fs::path m = Mount("evil");
  // The window: served lazily, authenticated chunk by chunk, not yet hashed in full.
  auto [first, first_err] = ReadThroughMount(m / "etc" / "motd");
  EXPECT_EQ(first_err, 0);
  EXPECT_EQ(first, kPlanted);
  // Opened in the window, read after the failure: that read reaches the layer, which refuses it.
  const int open_before = ::open((m / "data" / "blob2").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(open_before, 0);

  nlohmann::json s = WaitForVerification(m);
  ASSERT_EQ(s.value("verification", ""), "failed") << s.dump(2);
  EXPECT_EQ(s.value("verification_failures", 0), 1);
  EXPECT_THAT(s.value("verification_error", ""),
              HasSubstr("layer " + layer.digest + ": the tar stream hashes to sha256:"));
  EXPECT_THAT(s.value("verification_error", ""),
              HasSubstr("the TOC's tar_sha256 (the diff_id) is " + crypto::OciDigest(victim_diff_id)));
  EXPECT_THAT(s.dump(), Not(HasSubstr("motd")));  // no file names

  // Quarantined: the file read before (its pages were cached) and one never read; opening them
  // fails already (the layer's metadata is refused too), a file open before fails its reads.
  for (const fs::path& f : {m / "etc" / "motd", m / "data" / "blob2"}) {
    auto [bytes, err] = ReadThroughMount(f);
    EXPECT_EQ(err, EIO) << f;
    EXPECT_THAT(bytes, Not(HasSubstr("planted"))) << f;
  }
  char byte = 0;
  errno = 0;
  EXPECT_EQ(::pread(open_before, &byte, 1, 0), -1);
  EXPECT_EQ(errno, EIO);
  ::close(open_before);
  // The stats file is rewritten every second.
  for (int i = 0; i < 50 && s.value("quarantined_reads", 0) < 1; ++i) {
    std::this_thread::sleep_for(100ms);
    s = Stats(m);
  }
  EXPECT_GE(s.value("quarantined_reads", 0), 1) << s.dump(2);
  auto text = harness::RunCommand({LazycryptBin(), "stats", "--stats-file", StatsFile(m), m.string()},
                                  20s);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(text->stdout_text, HasSubstr("verification     failed"));
  EXPECT_THAT(text->stdout_text, HasSubstr("quarantined      every read of its files fails"));
  // Logged once, with the layer digest.
  const std::string log = harness::ReadFileOrEmpty(tmp_->path() / "evil.log");
  EXPECT_THAT(log, HasSubstr("layer " + layer.digest + ": verification failed, layer quarantined"));
  EXPECT_THAT(log, Not(HasSubstr("motd")));  // the refused reads are not logged one by one
}

// The same path with an honest layer: verified, still readable.
TEST_F(TrustVerifyTest, HonestLazyLayerIsVerifiedAndStaysReadable) {
  if (!CanMount()) GTEST_SKIP() << "needs root and /dev/fuse";
  const auto tar = LayerTar("hello\n");
  auto entries = HonestTocEntries(tar);
  ASSERT_TRUE(entries.ok());
  PushImage("honest", tar, *entries);
  const fs::path m = Mount("honest");
  nlohmann::json s = WaitForVerification(m);
  ASSERT_EQ(s.value("verification", ""), "verified") << s.dump(2);
  EXPECT_EQ(s.value("verified_chunks", 0), s.value("chunk_count", -1));
  auto [bytes, err] = ReadThroughMount(m / "etc" / "motd");
  EXPECT_EQ(err, 0);
  EXPECT_EQ(bytes, "hello\n");
  EXPECT_EQ(Stats(m).value("quarantined_reads", -1), 0);
}

// Part 3: a TOC that disagrees with its tar stream. The file's bytes are hidden after the
// end-of-archive marker, where tar readers never look, and the TOC points etc/motd at them.
// Every eager consumer refuses the layer and says why.
TEST_F(TrustVerifyTest, VerifyDecryptAndDecoderRefuseATocThatDisagreesWithItsTar) {
  std::vector<uint8_t> trailer(1024, 0);
  std::copy(kPlanted.begin(), kPlanted.end(), trailer.begin() + 512);
  const auto tar = LayerTar("innocent\n", trailer);
  auto entries = HonestTocEntries(tar);
  ASSERT_TRUE(entries.ok());
  format::Entry& motd = (*entries)[2];
  ASSERT_EQ(motd.name, "etc/motd");
  motd.data_offset = tar.size() - 512;
  motd.size = kPlanted.size();
  const image::Descriptor layer = PushImage("mismatch", tar, *entries);
  const std::string want = "TOC does not match the tar stream: entry 2: size differs";

  auto verify = harness::RunCommand({LazycryptBin(), "verify", "-k", key_.priv.string(),
                                     "--plain-http", "--hosts-dir", "", Ref("mismatch")}, 60s);
  ASSERT_TRUE(verify.ok());
  EXPECT_NE(verify->exit_code, 0);
  EXPECT_THAT(verify->stderr_text, HasSubstr(want)) << verify->stdout_text;
  EXPECT_THAT(verify->stdout_text + verify->stderr_text, Not(HasSubstr("motd")));

  const fs::path out = tmp_->path() / "decrypted";
  auto decrypt = harness::RunCommand({LazycryptBin(), "decrypt", "-k", key_.priv.string(),
                                      "--plain-http", "--hosts-dir", "", Ref("mismatch"),
                                      "oci:" + out.string()}, 60s);
  ASSERT_TRUE(decrypt.ok());
  EXPECT_NE(decrypt->exit_code, 0);
  EXPECT_THAT(decrypt->stderr_text, HasSubstr(want)) << decrypt->stdout_text;
  EXPECT_FALSE(fs::exists(out / "index.json"));

  // lazycrypt-decoder as containerd runs it. It reads the TOC last: the tar stream's own fault
  // (data after its end) is found while the chunks stream by, before the TOC can be compared.
  auto decode = RunDecoder(layer);
  EXPECT_NE(decode.exit_code, 0);
  EXPECT_THAT(decode.stderr_text,
              HasSubstr("the layer's tar stream: tar: data after the end-of-archive marker"));
  EXPECT_THAT(decode.stderr_text, Not(HasSubstr("motd")));

  // A TOC that gives a file another mode (setuid), over a clean tar.
  const auto clean = LayerTar("innocent\n");
  auto bent = HonestTocEntries(clean);
  ASSERT_TRUE(bent.ok());
  (*bent)[3].mode = 04755;
  const image::Descriptor mode_layer = PushImage("mode", clean, *bent);
  auto decode_mode = RunDecoder(mode_layer);
  EXPECT_NE(decode_mode.exit_code, 0);
  EXPECT_THAT(decode_mode.stderr_text,
              HasSubstr("TOC does not match the tar stream: entry 3: mode differs"));
  auto verify_mode = harness::RunCommand({LazycryptBin(), "verify", "-k", key_.priv.string(),
                                          "--plain-http", "--hosts-dir", "", Ref("mode")}, 60s);
  ASSERT_TRUE(verify_mode.ok());
  EXPECT_NE(verify_mode->exit_code, 0);
  EXPECT_THAT(verify_mode->stderr_text,
              HasSubstr("TOC does not match the tar stream: entry 3: mode differs"));
}

}  // namespace
}  // namespace lazycrypt::testing
