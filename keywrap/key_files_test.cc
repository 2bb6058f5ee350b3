// Private key files (PrivateKey::Load, ReadPrivateKeyFile, the key-directory helpers): what a key
// file must be before its bytes are used — a regular file, not a symbolic link, owned by this
// user or root, readable by its owner only — with messages that name the file and the reason.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "keywrap/keys.h"
#include "keywrap/test_util.h"

namespace lazycrypt::keywrap {
namespace {

namespace fs = std::filesystem;
using testing::EcKeyFiles;
using testing::TempDir;

fs::path CopyKey(const TempDir& dir, const std::string& name, fs::perms perms) {
  const fs::path path = dir / name;
  fs::copy_file(EcKeyFiles("P-256").private_pem, path, fs::copy_options::overwrite_existing);
  fs::permissions(path, perms, fs::perm_options::replace);
  return path;
}

constexpr fs::perms kOwnerOnly = fs::perms::owner_read | fs::perms::owner_write;

TEST(PrivateKeyFile, LoadsAnOwnerOnlyKey) {
  TempDir dir;
  const fs::path key = CopyKey(dir, "node.pem", kOwnerOnly);
  auto loaded = PrivateKey::Load(key.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto bytes = ReadPrivateKeyFile(key);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(bytes->size(), fs::file_size(key));
}

TEST(PrivateKeyFile, RefusesGroupOrWorldReadableKeysNamingFileAndMode) {
  TempDir dir;
  for (auto [perms, mode] : {std::pair{kOwnerOnly | fs::perms::group_read, "0640"},
                             std::pair{kOwnerOnly | fs::perms::others_read, "0604"},
                             std::pair{fs::perms::owner_read | fs::perms::group_write, "0420"}}) {
    const fs::path key = CopyKey(dir, "node.pem", perms);
    auto loaded = PrivateKey::Load(key.string());
    ASSERT_FALSE(loaded.ok()) << mode;
    EXPECT_EQ(loaded.status().code(), StatusCode::kPermissionDenied);
    EXPECT_NE(loaded.status().message().find(key.string()), std::string::npos);
    EXPECT_NE(loaded.status().message().find(std::string("mode ") + mode), std::string::npos)
        << loaded.status().message();
    EXPECT_NE(loaded.status().message().find("chmod 600"), std::string::npos);
  }
}

TEST(PrivateKeyFile, RefusesASymbolicLinkWithoutFollowingIt) {
  TempDir dir;
  const fs::path target = CopyKey(dir, "real.pem", kOwnerOnly);
  const fs::path link = dir / "node.pem";
  fs::create_symlink(target, link);
  auto loaded = PrivateKey::Load(link.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(link.string() + ": is a symbolic link"),
            std::string::npos)
      << loaded.status().message();
  EXPECT_FALSE(ReadPrivateKeyFile(link).ok());
  // A symbolic link to a directory or a dangling one: refused the same way, not "not found".
  fs::create_symlink(dir / "nowhere", dir / "dangling.pem");
  auto dangling = ReadPrivateKeyFile(dir / "dangling.pem");
  ASSERT_FALSE(dangling.ok());
  EXPECT_NE(dangling.status().message().find("symbolic link"), std::string::npos);
}

TEST(PrivateKeyFile, RefusesKeysOwnedByAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown a file to another user";
  TempDir dir;
  const fs::path key = CopyKey(dir, "node.pem", kOwnerOnly);
  ASSERT_EQ(chown(key.c_str(), 65534, 65534), 0);
  auto loaded = PrivateKey::Load(key.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(loaded.status().message().find("owned by uid 65534"), std::string::npos)
      << loaded.status().message();
}

TEST(PrivateKeyFile, RefusesAFifoWithoutBlocking) {
  TempDir dir;
  const fs::path fifo = dir / "node.pem";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto loaded = ReadPrivateKeyFile(fifo);  // O_NONBLOCK: returns at once
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("not a regular file"), std::string::npos);
}

TEST(PrivateKeyFile, AnExposedPublicKeyIsReportedAsAPublicKey) {
  TempDir dir;
  const fs::path pub = dir / "node.pub.pem";
  fs::copy_file(EcKeyFiles("P-256").public_pem, pub);
  fs::permissions(pub, kOwnerOnly | fs::perms::others_read, fs::perm_options::replace);
  auto loaded = PrivateKey::Load(pub.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("is a public key"), std::string::npos)
      << loaded.status().message();
}

TEST(PrivateKeyFile, PasswordFilesMustBeOwnerOnlyToo) {
  TempDir dir;
  const fs::path key = CopyKey(dir, "node.pem", kOwnerOnly);
  const fs::path pw = dir / "pw";
  testing::WriteFile(pw, "secret");
  fs::permissions(pw, kOwnerOnly | fs::perms::group_read, fs::perm_options::replace);
  auto loaded = PrivateKey::Load(key.string() + ":file=" + pw.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(loaded.status().message().find(pw.string()), std::string::npos);
}

TEST(PrivateKeyFile, KeyDirEntriesDeferTheModeCheckToTheCaller) {
  TempDir dir;
  CopyKey(dir, "node.pem", kOwnerOnly | fs::perms::others_read);
  const int dir_fd = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir_fd, 0);
  auto read = ReadKeyDirEntryAt(dir_fd, "node.pem", dir / "node.pem");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_FALSE(CheckPrivateKeyMode(read->mode, dir / "node.pem").ok());
  fs::create_symlink(dir / "node.pem", dir / "link.pem");
  EXPECT_FALSE(ReadKeyDirEntryAt(dir_fd, "link.pem", dir / "link.pem").ok());
  close(dir_fd);
}

TEST(PrivateKeyFile, TemporaryNamesOfKeyDistributionToolsAreRecognized) {
  for (const char* name : {".k8s-node.pem.tmp", "..data", "..2026_12_07_01_00_00.123", "node.pem~",
                           "node.pem.tmp", ".node.pem.swp", "node.pem.swp",
                           "node.pem.dpkg-new", "node.pem.dpkg-old", "node.pem.dpkg-tmp"}) {
    EXPECT_TRUE(IsTemporaryKeyFileName(name)) << name;
  }
  for (const char* name : {"node.pem", "k8s-node.pem", "key", "tmp.pem", "a.der"}) {
    EXPECT_FALSE(IsTemporaryKeyFileName(name)) << name;
  }
}

}  // namespace
}  // namespace lazycrypt::keywrap
