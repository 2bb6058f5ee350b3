// `lazycrypt mount` hygiene (issue 15 part 5), through the real binary and real FUSE mounts:
//  - no allow_other unless --allow-other (the mount's options in /proc/self/mountinfo);
//  - a tampered chunk is logged (EIO) without the file's decrypted name, unless
//    --log-file-names, which warns.
// Needs root and /dev/fuse.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

// A distinctive name: it must never reach a log unless asked for.
constexpr char kSecretName[] = "secret-merger-plan-Q3.txt";

// The super options (after " - fstype source ") of the mount at `mountpoint`; "" if not mounted.
std::string SuperOptionsOf(const fs::path& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point != mountpoint.string()) continue;
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) return "";
    std::istringstream tail(line.substr(dash + 3));
    std::string type, source, options;
    tail >> type >> source >> options;
    return options;
  }
  return "";
}

int ReadWhole(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[1 << 16];
  int err = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) err = errno;
    if (n <= 0) break;
  }
  ::close(fd);
  return err;
}

class MountHygiene : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) return;
    auto tmp = harness::TempDir::Create("mount-hygiene");
    ASSERT_TRUE(tmp.ok());
    dir_ = new harness::TempDir(std::move(tmp).value());
    const fs::path w = dir_->path();
    key_ = new KeyPair(GenerateKeyPair(w, "ec256", "key"));
    // busybox, plus a layer holding one 1 MiB file with the secret name.
    MakeBusyboxImage(w / "plain");
    fs::create_directories(w / "secret-tree");
    MustRun({"sh", "-c", "head -c 1048576 /dev/urandom > '" + (w / "secret-tree" / kSecretName).string() + "'"});
    MustRun({"tar", "--format=pax", "--numeric-owner", "--owner=0", "--group=0", "-C",
             (w / "secret-tree").string(), "-cf", (w / "secret.tar").string(), "."});
    MustRun({"umoci", "raw", "add-layer", "--image", (w / "plain").string() + ":latest",
             (w / "secret.tar").string()});
    MustRun({LazycryptBin(), "-q", "encrypt", "--chunk-size", "256KiB", "-r",
             "jwe:" + key_->pub.string(), "oci:" + (w / "plain").string(),
             "oci:" + (w / "enc").string()},
            300s);
  }
  static void TearDownTestSuite() {
    delete key_;
    delete dir_;
    key_ = nullptr;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    ASSERT_NE(dir_, nullptr) << "the suite's setup failed; see above";
    auto d = harness::TempDir::Create("mount-hygiene-case");
    ASSERT_TRUE(d.ok());
    case_ = std::make_unique<harness::TempDir>(std::move(d).value());
  }
  void TearDown() override {
    for (const auto& m : mounts_) {
      (void)harness::RunCommand(
          {LazycryptBin(), "umount", "--stats-file", m.string() + ".stats", m.string()}, 20s);
      ::umount2(m.c_str(), MNT_DETACH);
    }
    case_.reset();
  }

  // Mounts layer 1 (the secret layer) of `layout` in the background; returns the mountpoint.
  fs::path Mount(const fs::path& layout, const std::string& name,
                 const std::vector<std::string>& extra) {
    const fs::path mnt = case_->path() / name;
    fs::create_directories(mnt);
    mounts_.push_back(mnt);
    std::vector<std::string> argv = {LazycryptBin(), "mount", "--daemon", "--no-verify",
                                     "--layer", "1", "--key", key_->priv.string(),
                                     "--stats-file", mnt.string() + ".stats"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("oci:" + layout.string());
    argv.push_back(mnt.string());
    MustRun(argv, 60s);
    return mnt;
  }
  void Umount(const fs::path& mnt) {
    MustRun({LazycryptBin(), "umount", "--stats-file", mnt.string() + ".stats", mnt.string()}, 30s);
  }

  // A copy of the encrypted layout whose secret file's middle chunk is damaged.
  fs::path TamperedCopy() {
    const fs::path copy = case_->path() / "tampered";
    fs::copy(dir_->path() / "enc", copy, fs::copy_options::recursive);
    auto image = LoadLayoutImage(copy);
    const fs::path blob = BlobPath(copy, image.manifest.layers.at(1).digest);
    FlipBit(blob, fs::file_size(blob) / 2, 0x10);  // inside the 1 MiB file's chunks
    return copy;
  }

  static harness::TempDir* dir_;
  static KeyPair* key_;
  std::unique_ptr<harness::TempDir> case_;
  std::vector<fs::path> mounts_;
};
harness::TempDir* MountHygiene::dir_ = nullptr;
KeyPair* MountHygiene::key_ = nullptr;

TEST_F(MountHygiene, NoAllowOtherUnlessAsked) {
  const fs::path plain = Mount(dir_->path() / "enc", "default", {});
  const std::string options = SuperOptionsOf(plain);
  ASSERT_FALSE(options.empty()) << plain << " is not in /proc/self/mountinfo";
  EXPECT_THAT(options, Not(HasSubstr("allow_other"))) << options;
  EXPECT_EQ(ReadWhole(plain / kSecretName), 0);
  Umount(plain);

  const fs::path shared = Mount(dir_->path() / "enc", "shared", {"--allow-other"});
  EXPECT_THAT(SuperOptionsOf(shared), HasSubstr("allow_other"));
  Umount(shared);
}

TEST_F(MountHygiene, TamperedChunkIsLoggedWithoutTheFileName) {
  const fs::path layout = TamperedCopy();
  const fs::path log = case_->path() / "mount.log";
  const fs::path mnt = Mount(layout, "tampered", {"--log", log.string()});
  EXPECT_EQ(ReadWhole(mnt / kSecretName), EIO);
  Umount(mnt);
  const std::string text = ReadFileString(log);
  EXPECT_THAT(text, HasSubstr("EIO")) << text;
  EXPECT_THAT(text, HasSubstr("inode ")) << text;
  EXPECT_THAT(text, Not(HasSubstr("secret-merger"))) << "a decrypted file name reached the log";
}

TEST_F(MountHygiene, LogFileNamesPutsNamesBackWithAWarning) {
  const fs::path layout = TamperedCopy();
  const fs::path log = case_->path() / "mount-names.log";
  const fs::path mnt = Mount(layout, "named", {"--log", log.string(), "--log-file-names"});
  EXPECT_EQ(ReadWhole(mnt / kSecretName), EIO);
  Umount(mnt);
  const std::string text = ReadFileString(log);
  EXPECT_THAT(text, HasSubstr(kSecretName)) << text;
  EXPECT_THAT(text, HasSubstr("--log-file-names")) << text;
}

}  // namespace
}  // namespace lazycrypt::testing
