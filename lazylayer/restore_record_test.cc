#include "lazylayer/restore_record.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/file_io.h"

namespace lazycrypt::lazylayer {
namespace {

// A source that serves `bytes` and counts the reads that reach it.
class CountingSource final : public cache::MultiRangeBlobSource {
 public:
  explicit CountingSource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    ++reads;
    if (offset + out.size() > bytes_.size()) return Status::InvalidArgument("past the end");
    std::copy_n(bytes_.begin() + offset, out.size(), out.begin());
    return Status::Ok();
  }
  Status ReadRanges(std::span<const cache::RangeRead> ranges) override {
    for (const cache::RangeRead& r : ranges) LC_RETURN_IF_ERROR(ReadAt(r.offset, r.out));
    return Status::Ok();
  }
  int reads = 0;

 private:
  std::vector<uint8_t> bytes_;
};

std::vector<uint8_t> Blob() {
  std::vector<uint8_t> b(4096);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7);
  return b;
}

std::filesystem::path TempPath(const std::string& name) {
  char dir[] = "/tmp/lc-restore-record-XXXXXX";
  EXPECT_NE(::mkdtemp(dir), nullptr);
  return std::filesystem::path(dir) / name;
}

TEST(RestoreRecord, RecordsTheOwnThreadsReadsAndReplaysThemWithoutTheSource) {
  auto inner = std::make_shared<CountingSource>(Blob());
  RecordingBlobSource recording(inner);
  std::vector<uint8_t> head(100), tail(200), other(50);
  ASSERT_TRUE(recording.ReadAt(0, head).ok());
  ASSERT_TRUE(recording.ReadAt(3896, tail).ok());
  std::thread([&] { ASSERT_TRUE(recording.ReadAt(1000, other).ok()); }).join();  // not kept
  RestoreRecord record;
  record.descriptor.media_type = "application/vnd.oci.image.layer.v1.tar";
  record.descriptor.digest = "sha256:" + std::string(64, 'a');
  record.descriptor.size = 4096;
  record.descriptor.annotations["org.opencontainers.image.enc.keys.jwe"] = "wrapped";
  record.ranges = recording.Take();
  ASSERT_EQ(record.ranges.size(), 2u);

  const auto path = TempPath("lazycrypt-restore");
  ASSERT_TRUE(WriteRestoreRecord(path, record).ok());
  auto read = ReadRestoreRecord(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->descriptor, record.descriptor);

  auto offline = std::make_shared<CountingSource>(Blob());
  ReplayBlobSource replay(offline, std::move(read->ranges));
  std::vector<uint8_t> again(100);
  ASSERT_TRUE(replay.ReadAt(0, again).ok());
  EXPECT_EQ(again, head);
  std::vector<uint8_t> part(20);
  ASSERT_TRUE(replay.ReadAt(3900, part).ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), tail.begin() + 4));
  EXPECT_EQ(offline->reads, 0) << "recorded ranges must not reach the source";
  ASSERT_TRUE(replay.ReadAt(1000, other).ok());  // not recorded: from the source
  EXPECT_EQ(offline->reads, 1);
  std::filesystem::remove_all(path.parent_path());
}

TEST(RestoreRecord, DamagedRecordIsCorruptionAndAMissingOneNotFound) {
  const auto path = TempPath("lazycrypt-restore");
  EXPECT_EQ(ReadRestoreRecord(path).status().code(), StatusCode::kNotFound);
  RestoreRecord record;
  record.descriptor.media_type = "application/vnd.oci.image.layer.v1.tar";
  record.descriptor.digest = "sha256:" + std::string(64, 'b');
  record.descriptor.size = 10;
  record.ranges.push_back({0, std::vector<uint8_t>(10, 1)});
  ASSERT_TRUE(WriteRestoreRecord(path, record).ok());
  auto bytes = ReadFileBytes(path);
  ASSERT_TRUE(bytes.ok());
  // Truncated, and a range past the blob's size.
  ASSERT_TRUE(WriteFileAtomically(path, ByteSpan(bytes->data(), bytes->size() - 3), 0600).ok());
  EXPECT_EQ(ReadRestoreRecord(path).status().code(), StatusCode::kCorruption);
  record.descriptor.size = 5;
  ASSERT_TRUE(WriteRestoreRecord(path, record).ok());
  EXPECT_EQ(ReadRestoreRecord(path).status().code(), StatusCode::kCorruption);
  std::filesystem::remove_all(path.parent_path());
}

TEST(UnpackedRecord, RoundTripsNextToTheSnapshotAndRefusesGarbage) {
  const auto fs_dir = TempPath("fs");  // snapshots/<id>/fs; the record is its sibling
  EXPECT_EQ(ReadUnpackedRecord(fs_dir).status().code(), StatusCode::kNotFound);
  UnpackedRecord record;
  record.descriptor.media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
  record.descriptor.digest = "sha256:" + std::string(64, 'c');
  record.descriptor.size = 1234;
  record.descriptor.annotations["org.opencontainers.image.enc.keys.jwe"] = "eyJ...";
  record.size_bytes = 25165824;
  record.inodes = 17;
  ASSERT_TRUE(WriteUnpackedRecord(fs_dir, record).ok());
  EXPECT_EQ(UnpackedRecordPath(fs_dir), fs_dir.parent_path() / "lazycrypt-unpacked");
  auto read = ReadUnpackedRecord(fs_dir);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->descriptor.digest, record.descriptor.digest);
  EXPECT_EQ(read->descriptor.Annotation("org.opencontainers.image.enc.keys.jwe"), "eyJ...");
  EXPECT_EQ(read->size_bytes, record.size_bytes);
  EXPECT_EQ(read->inodes, record.inodes);
  auto bytes = ReadFileBytes(UnpackedRecordPath(fs_dir));
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(WriteFileAtomically(UnpackedRecordPath(fs_dir),
                                  ByteSpan(bytes->data(), bytes->size() - 1), 0600)
                  .ok());
  auto truncated = ReadUnpackedRecord(fs_dir);
  EXPECT_EQ(truncated.status().code(), StatusCode::kCorruption);
  EXPECT_NE(truncated.status().message().find("lazycrypt-unpacked"), std::string::npos);
  std::filesystem::remove_all(fs_dir.parent_path());
}

}  // namespace
}  // namespace lazycrypt::lazylayer
