// Issue 15, part 3 (first bullet): every lazily read byte is pinned to the manifest, not only to
// the layer key's holders (root, /dev/fuse, docker-registry).
//
// The attacker is a co-recipient of a layer (or its author): it holds the layer key, so it can
// open a chunk record, change the text and seal it again with the right chunk key, nonce and AAD
// for its index (GCM accepts it). It republishes the image in a real registry with the forged blob
// (the manifest's layer digest and size updated, as a registry checks blob digests) but the same
// config, TOC-digest annotation and key envelope. The sealed TOC pins the SHA-256 of every
// record (docs/FORMAT.md §4), so:
//   - `lazycrypt mount` (real FUSE): reading the file is EIO, never the forged text;
//   - `lazycrypt verify` and `lazycrypt decrypt` fail naming the chunk ("does not match the digest
//     pinned in the TOC"), and decrypt writes nothing.
// The untouched image, mounted the same way, reads the author's text (so the test can fail).
//
// LAZYCRYPT_TRUST_PIN_BIN (optional) runs the `lazycrypt` commands with another binary, e.g. one
// built with the pin check disabled, to show what the test catches.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "format/chunk.h"
#include "format/keys.h"
#include "format/layer_index.h"
#include "image/envelope.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "tests/command_util.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/reseal_chunk.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr std::string_view kAuthorText = "the author of this image wrote this text, nobody else";
constexpr std::string_view kForgedText = "A CO-RECIPIENT FORGED THIS TEXT AND RE-SEALED IT!!!!!";
static_assert(kAuthorText.size() == kForgedText.size());

std::string Bin() {
  const char* other = std::getenv("LAZYCRYPT_TRUST_PIN_BIN");
  return other != nullptr && *other != '\0' ? std::string(other) : LazycryptBin();
}

std::string Q(const fs::path& p) { return ShellQuote(p.string()); }

void Sh(const std::string& command) {
  auto r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

// xorshift bytes: incompressible, so the secret's chunk is stored and the forged record keeps the
// original's size (the same record header, as the attack needs).
std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    out[i] = static_cast<char>((x * 2685821657736338717ull) >> 56);
  }
  return out;
}

// A one-layer OCI layout (uncompressed tar layer, tag "latest") of the tree at `tree`.
void MakeLayout(const fs::path& tree, const fs::path& dir) {
  fs::create_directories(dir / "blobs" / "sha256");
  const fs::path tar = dir / "layer.tar";
  Sh("tar --format=pax --numeric-owner -C " + Q(tree) + " -cf " + Q(tar) + " .");
  const std::string layer_digest = FileSha256(tar);
  const uint64_t layer_size = fs::file_size(tar);
  fs::rename(tar, dir / "blobs" / "sha256" / layer_digest.substr(7));
  auto put = [&](const std::string& json) {
    std::string digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(json)));
    WriteFileString(dir / "blobs" / "sha256" / digest.substr(7), json);
    return std::make_pair(digest, json.size());
  };
  auto [config_digest, config_size] =
      put(R"({"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[")" +
          layer_digest + R"("]}})");
  auto [manifest_digest, manifest_size] = put(
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      config_digest + R"(","size":)" + std::to_string(config_size) +
      R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
      layer_digest + R"(","size":)" + std::to_string(layer_size) + "}]}");
  WriteFileString(dir / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  WriteFileString(dir / "index.json",
                  R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                      manifest_digest + R"(","size":)" + std::to_string(manifest_size) +
                      R"(,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]})");
}

// curl against the registry; the whole output on failure.
std::string Curl(const std::string& args) {
  auto r = RunCommand("curl -sS --fail " + args);
  EXPECT_EQ(r.exit_code, 0) << "curl " << args << "\n" << r.output;
  return r.output;
}

// Reads a whole file; errno of the failure (0 = fine).
int ReadWhole(const fs::path& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  std::string data;
  char buf[1 << 16];
  int err = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (out) *out = std::move(data);
  return err;
}

class TrustChunkPin : public ::testing::Test {
 protected:
  static constexpr char kRepo[] = "pin/app";

  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    auto tmp = harness::TempDir::Create("trust-chunk-pin");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    key_ = GenerateKeyPair(root, "rsa2048", "co-recipient");

    // The image: "secret.txt" (random bytes with the author's text at offset 0, in a stored
    // chunk of its own) and a small neighbour file.
    tree_ = root / "tree";
    fs::create_directories(tree_);
    std::string secret = RandomBytes(200 * 1024, 7);
    std::memcpy(secret.data(), kAuthorText.data(), kAuthorText.size());
    WriteFileString(tree_ / "secret.txt", secret);
    WriteFileString(tree_ / "hello.txt", "hello\n");
    MakeLayout(tree_, root / "plain");

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(registry).value();
    good_ref_ = "docker://" + registry_->host() + "/" + kRepo + ":good";
    forged_ref_ = "docker://" + registry_->host() + "/" + kRepo + ":forged";
    MustRun({LazycryptBin(), "-q", "encrypt", "--chunk-size", "64KiB", "-r",
             "jwe:" + key_.pub.string(), "--plain-http", "--hosts-dir", "",
             "oci:" + (root / "plain").string(), good_ref_},
            120s);
    ASSERT_FALSE(HasFailure()) << registry_->Log();
    Forge();
  }

  void TearDown() override {
    for (const auto& m : mounts_) {
      (void)harness::RunCommand({Bin(), "umount", m.string()}, 20s);
      ::umount2(m.c_str(), MNT_DETACH);
    }
    registry_.reset();
    tmp_.reset();
  }

  // The attack, with the format library's own functions: unwrap the layer key with the
  // co-recipient's private key, open the record holding the secret's first bytes, put the forged
  // text in, seal it again as the same chunk, upload the blob and a manifest naming it.
  void Forge() {
    const std::string base = "http://" + registry_->host() + "/v2/" + kRepo;
    const std::string accept = "-H 'Accept: application/vnd.oci.image.manifest.v1+json' ";
    const std::string manifest_text = Curl(accept + "'" + base + "/manifests/good'");
    auto manifest = image::ParseManifest(AsBytes(manifest_text));
    ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
    ASSERT_EQ(manifest->layers.size(), 1u);
    const image::Descriptor& layer = manifest->layers[0];
    good_digest_ = layer.digest;
    const std::string blob_text = ReadFileString(RegistryBlobPath(registry_->storage_dir(), layer.digest));
    std::vector<uint8_t> blob(blob_text.begin(), blob_text.end());
    ASSERT_EQ(blob.size(), layer.size);

    auto priv = keywrap::PrivateKey::Load(key_.priv.string());
    ASSERT_TRUE(priv.ok()) << priv.status().ToString();
    std::vector<keywrap::PrivateKey> keys;
    keys.push_back(std::move(priv).value());
    auto resealed = ResealFileChunk(std::move(blob), layer, keywrap::KeyRing(std::move(keys)),
                                    "secret.txt", kAuthorText, kForgedText);
    ASSERT_TRUE(resealed.ok()) << resealed.status().ToString();  // GCM alone accepts it
    blob = std::move(resealed->blob);
    forged_chunk_ = resealed->chunk_index;

    // Republish: the forged blob (the registry checks its digest), then the same manifest with
    // only the layer's digest changed (config, TOC digest annotation and key envelope unchanged).
    const fs::path blob_file = tmp_->path() / "forged.blob";
    ASSERT_TRUE(WriteFileAtomically(blob_file, blob).ok());
    forged_digest_ = crypto::OciDigest(crypto::Sha256::Of(blob));
    ASSERT_NE(forged_digest_, good_digest_);
    const std::string headers = Curl("-X POST -D - -o /dev/null '" + base + "/blobs/uploads/'");
    std::string location;
    for (size_t pos = 0; pos < headers.size();) {
      size_t eol = headers.find('\n', pos);
      std::string line = headers.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
      if (line.size() > 9 && strncasecmp(line.c_str(), "location:", 9) == 0) {
        location = line.substr(9);
        while (!location.empty() && (location.front() == ' ')) location.erase(0, 1);
        while (!location.empty() && (location.back() == '\r' || location.back() == ' ')) location.pop_back();
      }
      if (eol == std::string::npos) break;
      pos = eol + 1;
    }
    ASSERT_FALSE(location.empty()) << headers;
    if (location.starts_with("/")) location = "http://" + registry_->host() + location;
    location += (location.find('?') == std::string::npos ? "?" : "&") + std::string("digest=") +
                forged_digest_;
    Curl("-X PUT -H 'Content-Type: application/octet-stream' --data-binary @" + Q(blob_file) + " '" +
         location + "'");
    nlohmann::ordered_json m = nlohmann::ordered_json::parse(manifest_text);
    ASSERT_EQ(m["layers"][0]["digest"], good_digest_);
    m["layers"][0]["digest"] = forged_digest_;
    const fs::path manifest_file = tmp_->path() / "forged-manifest.json";
    WriteFileString(manifest_file, m.dump());
    Curl("-X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @" +
         Q(manifest_file) + " '" + base + "/manifests/forged'");
    ASSERT_EQ(ReadFileString(RegistryBlobPath(registry_->storage_dir(), forged_digest_)), 
              std::string(blob.begin(), blob.end()));
  }

  fs::path MountImage(const std::string& ref, const std::string& name) {
    const fs::path mnt = tmp_->path() / name;
    fs::create_directories(mnt);
    auto r = harness::RunCommand({Bin(), "mount", "--daemon", "--no-prefetch", "--key",
                                  key_.priv.string(), "--plain-http", "--hosts-dir", "", ref,
                                  mnt.string()},
                                 60s);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) {
      EXPECT_EQ(r->exit_code, 0) << Describe(*r);
      if (r->exit_code == 0) mounts_.push_back(mnt);
    }
    return mnt;
  }

  std::string WantMessage() const {
    return "chunk " + std::to_string(forged_chunk_) +
           ": record does not match the digest pinned in the TOC";
  }

  std::unique_ptr<harness::TempDir> tmp_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  KeyPair key_;
  fs::path tree_;
  std::string good_ref_, forged_ref_, good_digest_, forged_digest_;
  uint64_t forged_chunk_ = 0;
  std::vector<fs::path> mounts_;
};

TEST_F(TrustChunkPin, MountedReadOfAResealedChunkIsEioNeverTheForgedText) {
  // The untouched image reads the author's text.
  const fs::path good = MountImage(good_ref_, "good");
  ASSERT_FALSE(HasFailure());
  std::string data;
  ASSERT_EQ(ReadWhole(good / "secret.txt", &data), 0);
  EXPECT_EQ(data.substr(0, kAuthorText.size()), kAuthorText);

  // The republished image mounts (its footer and TOC are the author's), but the forged chunk is
  // refused on every read, before it is decrypted.
  const fs::path forged = MountImage(forged_ref_, "forged");
  ASSERT_FALSE(HasFailure());
  std::string forged_data;
  const int err = ReadWhole(forged / "secret.txt", &forged_data);
  EXPECT_EQ(forged_data.find(kForgedText), std::string::npos)
      << "the mount served the forged text (" << forged_data.size() << " bytes read)";
  EXPECT_EQ(err, EIO) << "read " << forged_data.size() << " bytes";
  forged_data.clear();
  EXPECT_EQ(ReadWhole(forged / "secret.txt", &forged_data), EIO) << "a second read must fail too";
  EXPECT_EQ(forged_data.find(kForgedText), std::string::npos) << "the forged text, second read";
  // Files in other chunks read their own bytes, unless the background verification (on, with
  // no delay, in `lazycrypt mount`) has met the forged record already: then the whole layer is
  // quarantined and they fail with EIO too (FORMAT.md 8.4). Never other bytes.
  data.clear();
  const int other = ReadWhole(forged / "hello.txt", &data);
  if (other == 0) {
    EXPECT_EQ(data, "hello\n");
  } else {
    EXPECT_EQ(other, EIO) << "hello.txt";
  }
  // Counted as an authentication failure (the serving process publishes its stats
  // periodically: wait for them).
  std::string last;
  int auth_failures = 0;
  for (int i = 0; i < 100 && auth_failures == 0; ++i) {
    if (i > 0) std::this_thread::sleep_for(100ms);
    auto stats = harness::RunCommand({Bin(), "stats", "--json", forged.string()}, 20s);
    ASSERT_TRUE(stats.ok());
    last = stats->stdout_text;
    auto j = nlohmann::json::parse(last, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << Describe(*stats);
    auth_failures = j.value("auth_failures", 0);
  }
  EXPECT_GE(auth_failures, 1) << last;
}

TEST_F(TrustChunkPin, VerifyAndDecryptNameTheResealedChunk) {
  auto good = harness::RunCommand({Bin(), "verify", "--plain-http", "--hosts-dir", "", "--key",
                                   key_.priv.string(), good_ref_},
                                  120s);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->exit_code, 0) << Describe(*good);

  auto verify = harness::RunCommand({Bin(), "verify", "--plain-http", "--hosts-dir", "", "--key",
                                     key_.priv.string(), forged_ref_},
                                    120s);
  ASSERT_TRUE(verify.ok());
  EXPECT_NE(verify->exit_code, 0) << Describe(*verify);
  EXPECT_THAT(verify->stdout_text + verify->stderr_text, HasSubstr(WantMessage()));

  const fs::path out = tmp_->path() / "decrypted";
  auto decrypt = harness::RunCommand({Bin(), "decrypt", "--plain-http", "--hosts-dir", "", "--key",
                                      key_.priv.string(), forged_ref_, "oci:" + out.string()},
                                     120s);
  ASSERT_TRUE(decrypt.ok());
  EXPECT_NE(decrypt->exit_code, 0) << Describe(*decrypt);
  EXPECT_THAT(decrypt->stdout_text + decrypt->stderr_text, HasSubstr(WantMessage()));
  // Nothing was written (the destination is aborted on error), so no forged text either.
  if (fs::exists(out)) {
    auto grep = RunCommand("grep -r -l -a " + ShellQuote(std::string(kForgedText)) + " " + Q(out));
    EXPECT_NE(grep.exit_code, 0) << grep.output;
  }
}

}  // namespace
}  // namespace lazycrypt::testing
