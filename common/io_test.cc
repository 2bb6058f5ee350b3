#include "common/io.h"

#include <gtest/gtest.h>
#include <unistd.h>

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

}  // namespace
}  // namespace lazycrypt
