#include "common/io.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include <filesystem>

#include "common/file_io.h"

namespace lazycrypt {
namespace {

TEST(Io, MemoryBlobRejectsReadsPastEnd) {
  MemoryBlobSource blob({1, 2, 3, 4});
  uint8_t buf[2];
  ASSERT_TRUE(blob.ReadAt(2, buf).ok());
  EXPECT_EQ(buf[0], 3);
  EXPECT_EQ(blob.ReadAt(3, buf).code(), StatusCode::kCorruption);
  EXPECT_EQ(blob.ReadAt(UINT64_MAX, buf).code(), StatusCode::kCorruption);
}

TEST(Io, ReadFullReportsTruncation) {
  std::string data = "abc";
  MemoryInputStream in(AsBytes(data));
  uint8_t buf[4];
  Status s = ReadFull(in, buf, "footer");
  EXPECT_EQ(s.ToString(), "corruption: unexpected end of footer");
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/lazycrypt-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(Io, AtomicWriteLeavesNothingOnAbandon) {
  TempDir dir;
  auto dest = dir.path() / "out";
  ASSERT_TRUE(WriteFileAtomically(dest, AsBytes("old")).ok());
  {
    auto out = AtomicFileOutputStream::Create(dest);
    ASSERT_TRUE(out.ok());
    ASSERT_TRUE((*out)->Write(AsBytes("new but unfinished")).ok());
  }  // abandoned: no Close
  auto bytes = ReadFileBytes(dest);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(AsStringView(*bytes), "old");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Io, FileBlobSourceReadsRanges) {
  TempDir dir;
  auto path = dir.path() / "blob";
  ASSERT_TRUE(WriteFileAtomically(path, AsBytes("0123456789")).ok());
  auto blob = FileBlobSource::Open(path);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ((*blob)->size(), 10u);
  uint8_t buf[3];
  ASSERT_TRUE((*blob)->ReadAt(7, buf).ok());
  EXPECT_EQ(std::string(buf, buf + 3), "789");
  EXPECT_FALSE((*blob)->ReadAt(8, buf).ok());
  EXPECT_EQ(FileBlobSource::Open(dir.path() / "missing").status().code(), StatusCode::kNotFound);
}

// A tree a container wrote (its upper directory) may hold links to anywhere: removing the tree
// removes the links, never what they name.
TEST(Io, RemoveTreeAtRemovesLinksNotWhatTheyName) {
  TempDir dir;
  namespace fs = std::filesystem;
  const fs::path outside = dir.path() / "outside";
  fs::create_directories(outside / "keep");
  { std::ofstream(outside / "keep" / "file") << "precious"; }
  const fs::path tree = dir.path() / "tree";
  fs::create_directories(tree / "a" / "b");
  { std::ofstream(tree / "a" / "b" / "f") << "x"; }
  fs::create_directory_symlink(outside, tree / "a" / "dirlink");
  fs::create_symlink(outside / "keep" / "file", tree / "filelink");
  ASSERT_EQ(::mkfifo((tree / "a" / "fifo").c_str(), 0600), 0);

  ASSERT_TRUE(RemoveTreeAt(AT_FDCWD, tree.string()).ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  EXPECT_TRUE(fs::exists(outside / "keep" / "file"));
  // Missing is fine; a plain file is removed too.
  EXPECT_TRUE(RemoveTreeAt(AT_FDCWD, tree.string()).ok());
  { std::ofstream(dir.path() / "plain") << "y"; }
  EXPECT_TRUE(RemoveTreeAt(AT_FDCWD, (dir.path() / "plain").string()).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "plain"));
  // The tree given as a link: the link goes, the directory it names stays.
  fs::create_directory_symlink(outside, dir.path() / "link");
  EXPECT_TRUE(RemoveTreeAt(AT_FDCWD, (dir.path() / "link").string()).ok());
  EXPECT_TRUE(fs::exists(outside / "keep" / "file"));
}

// A mount inside the tree (a layer still mounted) stops the removal; nothing under it is removed.
TEST(Io, RemoveTreeAtStopsAtAMountPoint) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts a tmpfs)";
  TempDir dir;
  namespace fs = std::filesystem;
  const fs::path mnt = dir.path() / "tree" / "mnt";
  fs::create_directories(mnt);
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  { std::ofstream(mnt / "inside") << "z"; }
  Status s = RemoveTreeAt(AT_FDCWD, (dir.path() / "tree").string());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("mount point"), std::string::npos) << s.ToString();
  EXPECT_TRUE(fs::exists(mnt / "inside"));
  // A mount at the tree itself is caught too.
  Status top = RemoveTreeAt(AT_FDCWD, mnt.string());
  EXPECT_EQ(top.code(), StatusCode::kFailedPrecondition) << top.ToString();
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  EXPECT_TRUE(RemoveTreeAt(AT_FDCWD, (dir.path() / "tree").string()).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "tree"));
}

}  // namespace
}  // namespace lazycrypt
