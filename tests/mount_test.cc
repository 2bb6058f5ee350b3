// `lazycrypt mount` / `umount` / `stats` end to end (root, /dev/fuse): the real binary mounting
// busybox from an OCI layout (foreground and --daemon) against GNU tar's extraction; and images in
// a real docker-registry read through a FaultProxy that counts what the registry served: one 4 KiB
// read of a big layer fetches only the footer, the TOC and the covering chunk; a chunk tampered in
// the registry is EIO while every other file reads; 16 concurrent readers make one fetch per
// chunk; resets / 500 / 429 are retried, a stall fails the read with EIO within the deadline and
// the mount keeps serving; a --cache-dir makes a remount read without blob requests and holds no
// plaintext; bad input fails clearly without mounting.
//
// The big layer is LAZYCRYPT_MOUNT_TEST_MIB MiB (default 1024) of mostly random data.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "format/layout.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/tree_compare.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string Q(const fs::path& p) { return ShellQuote(p.string()); }

void Sh(const std::string& command) {
  auto r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

// Deterministic bytes: xorshift64* for random data, or a small-alphabet text (compressible
// about 2:1) when `text`.
void FillBytes(uint64_t seed, bool text, std::vector<uint8_t>& buf) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= buf.size(); i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 2685821657736338717ull;
    if (text) {
      for (int k = 0; k < 8; ++k) buf[i + k] = static_cast<uint8_t>('a' + ((v >> (8 * k)) & 15));
    } else {
      std::memcpy(&buf[i], &v, 8);
    }
  }
  for (; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(seed + i);
}

void WriteGenerated(const fs::path& path, uint64_t size, uint64_t seed, bool text = false,
                    const std::string& marker = "") {
  std::ofstream out(path, std::ios::binary);
  std::vector<uint8_t> buf(1 << 20);
  uint64_t written = 0;
  for (uint64_t block = 0; written < size; ++block) {
    FillBytes(seed * 1000003 + block, text, buf);
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - written));
    if (written == 0 && !marker.empty()) std::memcpy(buf.data() + n / 2, marker.data(), marker.size());
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    written += n;
  }
}

void WriteString(const fs::path& path, const std::string& s) { WriteFileString(path, s); }

// A one-layer OCI layout (uncompressed tar layer, tag "latest") of the tree at `tree`.
void MakeLayout(const fs::path& tree, const fs::path& dir) {
  fs::create_directories(dir / "blobs" / "sha256");
  const fs::path tar = dir / "layer.tar";
  Sh("tar --format=pax --numeric-owner -C " + Q(tree) + " -cf " + Q(tar) + " .");
  // Hash in 8 MiB pieces (the layer may be 1 GiB).
  crypto::Sha256 sha;
  {
    auto in = FdInputStream::Open(tar);
    ASSERT_TRUE(in.ok());
    std::vector<uint8_t> buf(8 << 20);
    for (;;) {
      auto n = (*in)->Read(buf);
      ASSERT_TRUE(n.ok());
      if (*n == 0) break;
      sha.Update(std::span<const uint8_t>(buf.data(), *n));
    }
  }
  const std::string layer_digest = crypto::OciDigest(sha.Finish());
  const uint64_t layer_size = fs::file_size(tar);
  fs::rename(tar, dir / "blobs" / "sha256" / layer_digest.substr(7));
  auto put = [&](const std::string& json) {
    std::string digest = crypto::OciDigest(crypto::Sha256::Of(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()), json.size())));
    WriteString(dir / "blobs" / "sha256" / digest.substr(7), json);
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
  WriteString(dir / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  WriteString(dir / "index.json",
              R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                  manifest_digest + R"(","size":)" + std::to_string(manifest_size) +
                  R"(,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]})");
}

// Shared by every test: keys, busybox layouts, a registry with a counting proxy in front, and
// three images pushed to it.
struct Env {
  std::unique_ptr<harness::TempDir> tmp;
  KeyPair key, wrong_key;
  fs::path bb_src, bb_enc, bb_expected;
  std::unique_ptr<harness::RegistryProcess> registry;
  std::unique_ptr<harness::FaultProxy> proxy;
  // name → (docker:// reference through the proxy, source tree, layer digest)
  struct Image {
    std::string ref;  // docker://PROXY/REPO:1
    fs::path tree;
    std::string digest;
    uint64_t size = 0;
  };
  std::map<std::string, Image> images;
  double big_seconds = 0;
  int mib = 1024;
};
Env* env = nullptr;

std::string LayerDigestOf(const std::string& ref_through_registry) {
  auto r = harness::RunCommand({LazycryptBin(), "inspect", "--json", "--plain-http", "--hosts-dir", "",
                                ref_through_registry});
  if (!r.ok() || r->exit_code != 0) return "";
  auto j = nlohmann::json::parse(r->stdout_text, nullptr, false);
  if (j.is_discarded()) return "";
  for (const auto& l : j["layers"]) {
    const std::string digest = l.value("digest", "");
    if (!digest.empty()) return digest;
  }
  return "";
}

class MountTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) return;
    env = new Env();
    auto tmp = harness::TempDir::Create("mount-test");
    ASSERT_TRUE(tmp.ok());
    env->tmp = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = env->tmp->path();
    if (const char* mib = std::getenv("LAZYCRYPT_MOUNT_TEST_MIB")) env->mib = std::atoi(mib);
    env->key = GenerateKeyPair(root, "rsa2048", "key");
    env->wrong_key = GenerateKeyPair(root, "ec256", "wrong");

    // busybox: an OCI layout, encrypted; the reference tree is GNU tar's extraction.
    env->bb_src = root / "bb-src";
    env->bb_enc = root / "bb-enc";
    env->bb_expected = root / "bb-expected";
    MakeBusyboxImage(env->bb_src);
    MustRun({LazycryptBin(), "-q", "encrypt", "-r", "jwe:" + env->key.pub.string(),
             "oci:" + env->bb_src.string(), "oci:" + env->bb_enc.string()});
    auto bb = LoadLayoutImage(env->bb_src);
    ASSERT_EQ(bb.manifest.layers.size(), 1u);
    fs::create_directories(env->bb_expected);
    Sh("tar --xattrs --xattrs-include='*' --same-owner -p --numeric-owner -C " + Q(env->bb_expected) +
       " -xf " + Q(BlobPath(env->bb_src, bb.manifest.layers[0].digest)));

    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    env->registry = std::move(registry).value();
    auto proxy = harness::FaultProxy::Start(env->registry->port());
    ASSERT_TRUE(proxy.ok());
    env->proxy = std::move(proxy).value();

    // Images pushed straight to the registry (not through the proxy).
    auto push = [&](const std::string& name, const fs::path& tree, const std::string& chunk) {
      const fs::path layout = root / (name + "-layout");
      MakeLayout(tree, layout);
      MustRun({LazycryptBin(), "-q", "encrypt", "--chunk-size", chunk, "-r",
               "jwe:" + env->key.pub.string(), "--plain-http", "--hosts-dir", "",
               "oci:" + layout.string(), "docker://" + env->registry->host() + "/" + name + ":1"},
              300s);
      fs::remove_all(layout);
      Env::Image img;
      img.ref = "docker://" + env->proxy->host() + "/" + name + ":1";
      img.tree = tree;
      img.digest = LayerDigestOf("docker://" + env->registry->host() + "/" + name + ":1");
      ASSERT_FALSE(img.digest.empty()) << name;
      img.size = fs::file_size(RegistryBlobPath(env->registry->storage_dir(), img.digest));
      env->images[name] = img;
    };

    // "big": a few large files (random, one compressible) and many small files.
    const auto big_start = Clock::now();
    const fs::path big = root / "big-tree";
    fs::create_directories(big / "small");
    const uint64_t big_bytes = uint64_t(env->mib) << 20;
    for (int f = 0; f < 4; ++f) {
      WriteGenerated(big / ("big-" + std::to_string(f) + ".bin"), big_bytes / 4 - (1 << 20), 100 + f,
                     /*text=*/f == 3);
    }
    for (int i = 0; i < 1000; ++i) {
      WriteGenerated(big / "small" / ("f" + std::to_string(i)), 512 + (i * 7919) % 8192, 5000 + i);
    }
    push("big", big, "1MiB");
    env->big_seconds = std::chrono::duration<double>(Clock::now() - big_start).count();

    // "medium": 6 files of 2 MiB, 200 small files, one file with a marker string; 256 KiB chunks.
    const fs::path medium = root / "medium-tree";
    fs::create_directories(medium / "d");
    for (int f = 0; f < 6; ++f) {
      WriteGenerated(medium / ("m" + std::to_string(f) + ".bin"), (2 << 20) + 1000 * f, 200 + f, f == 5);
    }
    for (int i = 0; i < 200; ++i) {
      WriteGenerated(medium / "d" / ("s" + std::to_string(i)), 100 + (i * 131) % 4000, 7000 + i);
    }
    WriteGenerated(medium / "marker.txt", 64 << 10, 42, false, "LAZYCRYPT-PLAINTEXT-MARKER-7f3a");
    push("medium", medium, "256KiB");

    // "tamper": one 4 MiB file between small files; its middle chunk gets damaged.
    const fs::path tamper = root / "tamper-tree";
    fs::create_directories(tamper / "a");
    fs::create_directories(tamper / "z");
    for (int i = 0; i < 20; ++i) {
      WriteGenerated(tamper / "a" / ("s" + std::to_string(i)), 2000 + i, 9000 + i);
      WriteGenerated(tamper / "z" / ("s" + std::to_string(i)), 3000 + i, 9100 + i);
    }
    WriteGenerated(tamper / "m-big.bin", 4 << 20, 9999);
    push("tamper", tamper, "256KiB");
  }

  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    ASSERT_NE(env, nullptr) << "the suite's setup (images, registry) failed; see above";
    auto dir = harness::TempDir::Create("mount-case");
    ASSERT_TRUE(dir.ok());
    dir_ = std::make_unique<harness::TempDir>(std::move(dir).value());
    env->proxy->ClearFaults();
  }

  void TearDown() override {
    // Anything a failed test left mounted.
    for (const auto& m : mounts_) {
      (void)harness::RunCommand({LazycryptBin(), "umount", "--stats-file", StatsFile(m), m.string()}, 20s);
      ::umount2(m.c_str(), MNT_DETACH);
    }
    for (auto& p : procs_) p->Stop(2s);
    dir_.reset();
  }

  fs::path NewMountpoint(const std::string& name) {
    fs::path m = dir_->path() / name;
    fs::create_directories(m);
    mounts_.push_back(m);
    return m;
  }
  static std::string StatsFile(const fs::path& m) { return m.string() + ".stats"; }

  // `lazycrypt mount --daemon` with a stats file beside the mountpoint; fails the test unless it
  // mounted.
  void MountDaemon(const std::string& ref, const fs::path& mnt, std::vector<std::string> extra = {}) {
    // --no-verify: these tests count what reads fetch; the background verification, which
    // fetches the whole layer, has tests of its own (trust_verify_test).
    std::vector<std::string> argv = {LazycryptBin(), "mount", "--daemon", "--no-verify", "--key",
                                     env->key.priv.string(), "--plain-http", "--hosts-dir", "",
                                     "--stats-file", StatsFile(mnt)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(ref);
    argv.push_back(mnt.string());
    auto r = MustRun(argv, 60s);
    EXPECT_THAT(r.stdout_text, ::testing::HasSubstr("mounted"));
  }

  void Umount(const fs::path& mnt) {
    MustRun({LazycryptBin(), "umount", "--stats-file", StatsFile(mnt), mnt.string()}, 30s);
    EXPECT_TRUE(fs::is_empty(mnt)) << mnt;
  }

  // GET requests of `digest`'s blob the proxy forwarded, from index `from` on.
  static std::vector<harness::ProxiedRequest> BlobGets(const std::string& digest, size_t from = 0) {
    std::vector<harness::ProxiedRequest> out;
    auto all = env->proxy->Requests();
    for (size_t i = from; i < all.size(); ++i) {
      if (all[i].request_line.starts_with("GET ") &&
          all[i].request_line.find("/blobs/" + digest) != std::string::npos) {
        out.push_back(all[i]);
      }
    }
    return out;
  }

  std::unique_ptr<harness::TempDir> dir_;
  std::vector<fs::path> mounts_;
  std::vector<std::unique_ptr<harness::Subprocess>> procs_;
};

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

nlohmann::json ReadStatsJson(const std::string& mnt, const std::string& stats_file = "") {
  std::vector<std::string> argv = {LazycryptBin(), "stats", "--json"};
  if (!stats_file.empty()) {
    argv.push_back("--stats-file");
    argv.push_back(stats_file);
  }
  argv.push_back(mnt);
  auto r = MustRun(argv, 20s);
  auto j = nlohmann::json::parse(r.stdout_text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.stdout_text;
  return j;
}

TEST_F(MountTest, BusyboxForegroundEqualsGnuTarAndUmountEndsTheProcess) {
  const fs::path mnt = NewMountpoint("bb");
  const fs::path log = dir_->path() / "mount.log";
  // Default stats file: /run/lazycrypt/mounts/<hash>.json.
  auto proc = harness::Subprocess::Start({LazycryptBin(), "mount", "--key", env->key.priv.string(),
                                          "oci:" + env->bb_enc.string(), mnt.string()},
                                         {}, log, log);
  ASSERT_TRUE(proc.ok());
  procs_.push_back(std::move(proc).value());
  auto& p = *procs_.back();
  const auto deadline = Clock::now() + 20s;
  while (fs::is_empty(mnt) && Clock::now() < deadline && p.Running()) std::this_thread::sleep_for(50ms);
  ASSERT_FALSE(fs::is_empty(mnt)) << harness::ReadFileOrEmpty(log);

  TreeCompareOptions options;
  options.compare_root_metadata = false;
  auto diffs = CompareTrees(mnt, env->bb_expected, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, e.g. " << diffs[0];

  // Stats are rewritten every second.
  nlohmann::json stats;
  for (int i = 0; i < 40; ++i) {
    stats = ReadStatsJson(mnt.string());
    if (stats.value("blob_bytes_fetched", 0) > 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GT(stats.value("blob_bytes_fetched", 0), 0) << stats.dump();
  EXPECT_EQ(stats.value("pid", 0), p.pid());
  EXPECT_TRUE(stats.value("running", false));
  EXPECT_EQ(stats.value("mountpoint", ""), fs::canonical(mnt).string());
  auto human = MustRun({LazycryptBin(), "stats", mnt.string()});
  EXPECT_THAT(human.stdout_text, ::testing::HasSubstr("running"));

  MustRun({LazycryptBin(), "umount", mnt.string()}, 30s);
  auto code = p.Wait(10s);
  ASSERT_TRUE(code.ok()) << "mount process still running after umount";
  EXPECT_EQ(*code, 0) << harness::ReadFileOrEmpty(log);
  EXPECT_TRUE(fs::is_empty(mnt));
  auto gone = MustRun({LazycryptBin(), "stats", mnt.string()});
  EXPECT_THAT(gone.stdout_text, ::testing::HasSubstr("gone"));
  // The default stats file: /run/lazycrypt/mounts/<16 hex of sha256(absolute mountpoint)>.json.
  const std::string abs = fs::canonical(mnt).string();
  const fs::path stats_file =
      fs::path("/run/lazycrypt/mounts") /
      (crypto::HexEncode(crypto::Sha256::Of(std::span<const uint8_t>(
                             reinterpret_cast<const uint8_t*>(abs.data()), abs.size())))
           .substr(0, 16) +
       ".json");
  EXPECT_TRUE(fs::exists(stats_file)) << stats_file;
  EXPECT_EQ((fs::status(stats_file.parent_path()).permissions() & fs::perms::all), fs::perms::owner_all);
  fs::remove(stats_file);
}

TEST_F(MountTest, BusyboxDaemonSigtermAndBusyUmount) {
  const fs::path mnt = NewMountpoint("bb-daemon");
  MountDaemon("oci:" + env->bb_enc.string(), mnt);
  TreeCompareOptions options;
  options.compare_root_metadata = false;
  auto diffs = CompareTrees(mnt, env->bb_expected, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, e.g. " << diffs[0];

  // Busy while a file is open: clear error, still mounted.
  int fd = ::open((mnt / "bin" / "busybox").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  auto busy = harness::RunCommand({LazycryptBin(), "umount", "--stats-file", StatsFile(mnt), mnt.string()}, 20s);
  ASSERT_TRUE(busy.ok());
  EXPECT_EQ(busy->exit_code, 1);
  EXPECT_THAT(busy->stderr_text, ::testing::HasSubstr("busy"));
  ::close(fd);
  EXPECT_FALSE(fs::is_empty(mnt));

  auto stats = ReadStatsJson(mnt.string(), StatsFile(mnt));
  const int pid = stats.value("pid", 0);
  ASSERT_GT(pid, 0);
  Umount(mnt);
  // umount returned once the daemon was gone (a zombie until init reaps it).
  std::string stat = ReadFileString("/proc/" + std::to_string(pid) + "/stat");
  EXPECT_TRUE(stat.empty() || stat.find(") Z") != std::string::npos) << "daemon still alive: " << stat;
}

TEST_F(MountTest, OneSmallReadOfABigLayerFetchesOnlyTocAndTheCoveringChunk) {
  const auto& img = env->images.at("big");
  std::printf("big layer: %d MiB of files, blob %llu bytes, built+encrypted+pushed in %.1f s\n", env->mib,
              static_cast<unsigned long long>(img.size), env->big_seconds);
  const fs::path blob = RegistryBlobPath(env->registry->storage_dir(), img.digest);
  // The TOC's size from the blob's footer.
  std::vector<uint8_t> footer(format::kFooterSize);
  {
    std::ifstream in(blob, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(img.size - footer.size()));
    in.read(reinterpret_cast<char*>(footer.data()), static_cast<std::streamsize>(footer.size()));
  }
  auto parsed = format::ParseFooter(footer, img.size);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const uint64_t toc_size = parsed->toc_size;

  const size_t before = env->proxy->Requests().size();
  const fs::path mnt = NewMountpoint("big");
  MountDaemon(img.ref, mnt, {"--no-prefetch"});

  // One 4 KiB range in the middle of a big random file, readahead off.
  const fs::path file = mnt / "big-1.bin";
  const uint64_t offset = (uint64_t(env->mib) << 20) / 8 + 12345;
  int fd = ::open(file.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  std::vector<char> got(4096), want(4096);
  ASSERT_EQ(::pread(fd, got.data(), got.size(), static_cast<off_t>(offset)), 4096);
  ::close(fd);
  {
    std::ifstream in(img.tree / "big-1.bin", std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(want.data(), 4096);
  }
  EXPECT_EQ(got, want);

  auto gets = BlobGets(img.digest, before);
  uint64_t bytes = 0;
  for (const auto& g : gets) {
    EXPECT_FALSE(g.range.empty()) << "whole-blob GET: " << g.request_line;
    bytes += g.response_body_bytes;
  }
  const uint64_t chunk_record = (1 << 20) + 4096;
  const uint64_t bound = toc_size + format::kFooterSize + 2 * chunk_record + (64 << 10);
  std::printf("registry served %llu bytes in %zu blob requests (TOC %llu bytes, bound %llu)\n",
              static_cast<unsigned long long>(bytes), gets.size(),
              static_cast<unsigned long long>(toc_size), static_cast<unsigned long long>(bound));
  EXPECT_LE(bytes, bound);
  EXPECT_GE(bytes, toc_size + 4096);
  EXPECT_LE(gets.size(), 4u);
  EXPECT_LT(bytes * 100, img.size) << "more than 1% of the layer was fetched";
  Umount(mnt);
}

TEST_F(MountTest, ChunkTamperedInTheRegistryIsEioOthersRead) {
  const auto& img = env->images.at("tamper");
  const fs::path blob = RegistryBlobPath(env->registry->storage_dir(), img.digest);
  // The middle of the blob lies inside m-big.bin's chunks (4 MiB of 4.1 MiB).
  FlipBit(blob, img.size / 2, 0x10);
  const fs::path mnt = NewMountpoint("tamper");
  MountDaemon(img.ref, mnt);
  EXPECT_EQ(ReadWhole(mnt / "m-big.bin", nullptr), EIO);
  EXPECT_EQ(ReadWhole(mnt / "m-big.bin", nullptr), EIO) << "a second read must fail too";
  for (const char* d : {"a", "z"}) {
    for (int i = 0; i < 20; ++i) {
      const fs::path rel = fs::path(d) / ("s" + std::to_string(i));
      std::string data;
      ASSERT_EQ(ReadWhole(mnt / rel, &data), 0) << rel;
      EXPECT_EQ(data, ReadFileString(img.tree / rel)) << rel;
    }
  }
  auto stats = ReadStatsJson(mnt.string(), StatsFile(mnt));
  (void)stats;
  Umount(mnt);
  FlipBit(blob, img.size / 2, 0x10);  // restore
}

// [offset, end) of each range in a Range header ("bytes=a-b,c-d").
std::vector<std::pair<uint64_t, uint64_t>> ParseRanges(const std::string& header) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::string spec = header.substr(header.find('=') + 1);
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string one = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto dash = one.find('-');
    uint64_t a = std::stoull(one.substr(0, dash));
    uint64_t b = std::stoull(one.substr(dash + 1));
    out.emplace_back(a, b + 1);
    if (comma == std::string::npos) break;
    pos = comma + 1;
    while (pos < spec.size() && spec[pos] == ' ') ++pos;
  }
  return out;
}

TEST_F(MountTest, SixteenReadersSameBytesOneFetchPerChunk) {
  const auto& img = env->images.at("medium");
  const size_t before = env->proxy->Requests().size();
  const fs::path mnt = NewMountpoint("medium-16");
  MountDaemon(img.ref, mnt, {"--no-prefetch"});
  std::vector<std::string> files;
  for (int f = 0; f < 6; ++f) files.push_back("m" + std::to_string(f) + ".bin");
  for (int i = 0; i < 200; i += 7) files.push_back("d/s" + std::to_string(i));
  std::map<std::string, std::string> want;
  for (const auto& f : files) want[f] = ReadFileString(img.tree / f);

  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < files.size(); ++k) {
        const std::string& f = files[(k + t) % files.size()];
        std::string got;
        if (ReadWhole(mnt / f, &got) != 0 || got != want[f]) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);

  // No byte of the blob was served twice (ranges of all requests are disjoint).
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& g : BlobGets(img.digest, before)) {
    ASSERT_FALSE(g.range.empty());
    for (auto r : ParseRanges(g.range)) ranges.push_back(r);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first)
        << "bytes " << ranges[i].first << ".." << ranges[i - 1].second << " fetched twice";
  }
  auto stats = ReadStatsJson(mnt.string(), StatsFile(mnt));
  EXPECT_EQ(stats.value("auth_failures", 1), 0);
  Umount(mnt);
}

TEST_F(MountTest, RegistryFaultsAreRetriedAndAStallFailsWithinTheDeadline) {
  const auto& img = env->images.at("medium");
  const fs::path mnt = NewMountpoint("medium-faults");
  MountDaemon(img.ref, mnt,
              {"--no-prefetch", "--registry-timeout", "1", "--registry-attempts", "4"});
  const std::string blob_path = "/blobs/" + img.digest;
  env->proxy->AddFault({harness::Fault::kReset, 1, blob_path});
  env->proxy->AddFault({harness::Fault::kHttp500, 1, blob_path});
  env->proxy->AddFault({harness::Fault::kHttp429, 1, blob_path, 1});
  const int faults_before = env->proxy->faults_injected();
  std::string got;
  ASSERT_EQ(ReadWhole(mnt / "m0.bin", &got), 0);
  EXPECT_EQ(got, ReadFileString(img.tree / "m0.bin"));
  EXPECT_EQ(env->proxy->faults_injected() - faults_before, 3);

  // A stall longer than the deadline (4 attempts x 1 s + backoff): EIO, in bounded time.
  env->proxy->ClearFaults();
  harness::FaultRule stall{harness::Fault::kStall, -1, blob_path};
  stall.stall = 60s;
  env->proxy->AddFault(stall);
  const auto start = Clock::now();
  EXPECT_EQ(ReadWhole(mnt / "m1.bin", nullptr), EIO);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("stalled read failed after %.1f s\n", seconds);
  EXPECT_LT(seconds, 15.0);
  EXPECT_GT(seconds, 1.0);
  env->proxy->ClearFaults();
  // Still alive: other files (and the same one) read now.
  ASSERT_EQ(ReadWhole(mnt / "m2.bin", &got), 0);
  EXPECT_EQ(got, ReadFileString(img.tree / "m2.bin"));
  ASSERT_EQ(ReadWhole(mnt / "m1.bin", &got), 0);
  EXPECT_EQ(got, ReadFileString(img.tree / "m1.bin"));
  Umount(mnt);
}

TEST_F(MountTest, CacheDirServesARemountWithoutBlobRequestsAndHoldsNoPlaintext) {
  const auto& img = env->images.at("medium");
  const fs::path cache = dir_->path() / "cache";
  const fs::path mnt = NewMountpoint("medium-cache");
  MountDaemon(img.ref, mnt, {"--cache-dir", cache.string()});
  std::string got;
  ASSERT_EQ(ReadWhole(mnt / "m3.bin", &got), 0);
  ASSERT_EQ(ReadWhole(mnt / "marker.txt", &got), 0);
  EXPECT_NE(got.find("LAZYCRYPT-PLAINTEXT-MARKER-7f3a"), std::string::npos);
  Umount(mnt);

  MountDaemon(img.ref, mnt, {"--cache-dir", cache.string(), "--no-prefetch"});
  const size_t before = env->proxy->Requests().size();
  ASSERT_EQ(ReadWhole(mnt / "m3.bin", &got), 0);
  EXPECT_EQ(got, ReadFileString(img.tree / "m3.bin"));
  ASSERT_EQ(ReadWhole(mnt / "marker.txt", &got), 0);
  EXPECT_EQ(BlobGets(img.digest, before).size(), 0u);
  Umount(mnt);

  auto grep = RunCommand("grep -rl LAZYCRYPT-PLAINTEXT-MARKER " + Q(cache));
  EXPECT_EQ(grep.exit_code, 1) << "plaintext in the cache: " << grep.output;
  auto present = RunCommand("du -sb " + Q(cache));
  EXPECT_EQ(present.exit_code, 0);
  EXPECT_GT(std::stoull(present.output), 2u << 20) << "the cache holds the chunks";
}

TEST_F(MountTest, BadInputFailsClearlyAndMountsNothing) {
  const fs::path mnt = NewMountpoint("bad");
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {LazycryptBin(), "mount"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = harness::RunCommand(argv, 30s);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 1) << Describe(*r);
    EXPECT_TRUE(fs::is_empty(mnt));
    return r->stderr_text;
  };
  const auto bb = LoadLayoutImage(env->bb_enc);
  ASSERT_EQ(bb.manifest.layers.size(), 1u);
  EXPECT_THAT(run({"--key", env->wrong_key.priv.string(), "oci:" + env->bb_enc.string(), mnt.string()}),
              ::testing::AllOf(::testing::HasSubstr("layer"),
                               ::testing::HasSubstr(bb.manifest.layers[0].digest)));
  EXPECT_THAT(run({"--daemon", "--key", env->wrong_key.priv.string(), "oci:" + env->bb_enc.string(),
                   mnt.string()}),
              ::testing::HasSubstr(bb.manifest.layers[0].digest));
  EXPECT_THAT(run({"--key", env->key.priv.string(), "--layer", "0", "oci:" + env->bb_src.string(), mnt.string()}),
              ::testing::HasSubstr("not a lazycrypt layer"));
  EXPECT_THAT(run({"--key", env->key.priv.string(), "oci:" + env->bb_src.string(), mnt.string()}),
              ::testing::HasSubstr("no lazycrypt layer"));
  EXPECT_THAT(run({"--key", env->key.priv.string(), "--layer", "7", "oci:" + env->bb_enc.string(), mnt.string()}),
              ::testing::HasSubstr("--layer 7"));
  EXPECT_THAT(run({"--key", env->key.priv.string(), "oci:" + env->bb_enc.string(),
                   (dir_->path() / "missing").string()}),
              ::testing::HasSubstr("not an existing directory"));
  auto umount = harness::RunCommand({LazycryptBin(), "umount", mnt.string()}, 20s);
  ASSERT_TRUE(umount.ok());
  EXPECT_EQ(umount->exit_code, 1);
}

}  // namespace
}  // namespace lazycrypt::testing
