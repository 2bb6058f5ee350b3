// LoadDecryptionKeysDir and key hygiene: files in transit of key-distribution tools are skipped,
// exposed private keys and symbolic links (a Kubernetes Secret volume's layout) are refused with
// messages naming the file and the reason, and a public certificate may stay world-readable.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "decoder/decoder.h"
#include "keywrap/test_util.h"

namespace lazycrypt::decoder {
namespace {

namespace fs = std::filesystem;
using keywrap::testing::EcKeyFiles;
using keywrap::testing::RsaKeyFiles;
using keywrap::testing::TempDir;
using ::testing::HasSubstr;

constexpr fs::perms kOwnerOnly = fs::perms::owner_read | fs::perms::owner_write;

void CopyKey(const fs::path& from, const fs::path& to, fs::perms perms = kOwnerOnly) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  fs::permissions(to, perms, fs::perm_options::replace);
}

TEST(KeysDirHygiene, SkipsFilesInTransitOfKeyDistributionTools) {
  TempDir dir;
  CopyKey(RsaKeyFiles(2048).private_pem, dir / "k8s-node.pem");
  // What deploy/kubernetes/node-keys.yaml writes before its rename, and other tools' leftovers:
  // none is a usable key (junk, exposed, half-written), and none may fail the directory.
  keywrap::testing::WriteFile(dir / ".k8s-node.pem.tmp", "-----BEGIN PRIVATE KEY-----\nAA");
  keywrap::testing::WriteFile(dir / "node.pem~", "junk");
  keywrap::testing::WriteFile(dir / "node.pem.swp", "junk");
  keywrap::testing::WriteFile(dir / "node.pem.dpkg-new", "junk");
  keywrap::testing::WriteFile(dir / "node.pem.tmp", "junk");
  fs::create_directories(dir / ".hidden");
  fs::create_symlink(dir / "k8s-node.pem", dir / ".hidden" / "link.pem");
  auto keys = LoadDecryptionKeysDir(dir.path());
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ((*keys)[0].name(), (dir / "k8s-node.pem").string());
}

TEST(KeysDirHygiene, RefusesAGroupOrWorldReadableKeyNamingIt) {
  TempDir dir;
  CopyKey(RsaKeyFiles(2048).private_pem, dir / "a.pem");
  CopyKey(EcKeyFiles("P-256").private_pem, dir / "b.pem", kOwnerOnly | fs::perms::group_read);
  auto keys = LoadDecryptionKeysDir(dir.path());
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(keys.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(keys.status().message(), HasSubstr((dir / "b.pem").string() + ": mode 0640"));
  // The same key given as the path itself (a file, not a directory).
  auto single = LoadDecryptionKeysDir(dir / "b.pem");
  ASSERT_FALSE(single.ok());
  EXPECT_THAT(single.status().message(), HasSubstr("mode 0640"));
}

TEST(KeysDirHygiene, AWorldReadableCertificateIsStillSkippedNotRefused) {
  TempDir dir;
  CopyKey(RsaKeyFiles(2048).private_pem, dir / "node.pem");
  ASSERT_TRUE(keywrap::testing::RunOk({"openssl", "req", "-x509", "-key",
                                       RsaKeyFiles(2048).private_pem.string(), "-subj", "/CN=n",
                                       "-days", "1", "-out", (dir / "node.crt").string()}));
  fs::permissions(dir / "node.crt", kOwnerOnly | fs::perms::others_read,
                  fs::perm_options::replace);
  auto keys = LoadDecryptionKeysDir(dir.path());
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->size(), 1u);
}

// A Kubernetes Secret volume mounted as the key directory: node.pem -> ..data/node.pem,
// ..data -> ..2026_12_07_00_00_00.1/, files 0644 by default. Refused with a message that says
// how this project distributes keys instead (a copy, mode 0600).
TEST(KeysDirHygiene, RefusesASecretVolumeLayoutWithAHint) {
  TempDir dir;
  const fs::path timestamped = dir / "..2026_12_07_00_00_00.1";
  fs::create_directories(timestamped);
  CopyKey(RsaKeyFiles(2048).private_pem, timestamped / "node.pem");
  fs::create_directory_symlink(timestamped.filename(), dir / "..data");
  fs::create_symlink(fs::path("..data") / "node.pem", dir / "node.pem");
  auto keys = LoadDecryptionKeysDir(dir.path());
  ASSERT_FALSE(keys.ok());
  EXPECT_THAT(keys.status().message(), HasSubstr((dir / "node.pem").string()));
  EXPECT_THAT(keys.status().message(), HasSubstr("symbolic link"));
  EXPECT_THAT(keys.status().message(), HasSubstr("deploy/kubernetes/node-keys.yaml"));
}

TEST(KeysDirHygiene, TheKeyDirectoryItselfMustNotBeASymbolicLink) {
  TempDir dir;
  fs::create_directories(dir / "real");
  CopyKey(RsaKeyFiles(2048).private_pem, dir / "real" / "node.pem");
  fs::create_directory_symlink(dir / "real", dir / "keys");
  auto keys = LoadDecryptionKeysDir(dir / "keys");
  ASSERT_FALSE(keys.ok());
  EXPECT_THAT(keys.status().message(), HasSubstr("symbolic link"));
}

}  // namespace
}  // namespace lazycrypt::decoder
