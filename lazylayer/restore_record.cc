#include "lazylayer/restore_record.h"

#include <algorithm>
#include <cstring>

#include "common/file_io.h"

namespace lazycrypt::lazylayer {
namespace {

constexpr std::string_view kMagic = "LCRESTORE1\n";
// A descriptor's JSON is small; a TOC is bounded by format::TocLimits (256 MiB).
constexpr uint32_t kMaxDescriptorBytes = 1 << 20;
constexpr uint32_t kMaxRanges = 64;

void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Reads from `bytes` at `*pos`, advancing it; false when the file ends first.
bool GetU32(const std::vector<uint8_t>& bytes, size_t* pos, uint32_t* v) {
  if (bytes.size() - *pos < 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= uint32_t{bytes[*pos + i]} << (8 * i);
  *pos += 4;
  return true;
}
bool GetU64(const std::vector<uint8_t>& bytes, size_t* pos, uint64_t* v) {
  if (bytes.size() - *pos < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= uint64_t{bytes[*pos + i]} << (8 * i);
  *pos += 8;
  return true;
}

// Sorted by offset, overlapping or touching ranges merged (a later read wins nothing: the
// blob is immutable, so overlapping bytes are equal).
std::vector<RecordedRange> Merge(std::vector<RecordedRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const RecordedRange& a, const RecordedRange& b) { return a.offset < b.offset; });
  std::vector<RecordedRange> out;
  for (RecordedRange& r : ranges) {
    if (!out.empty() && r.offset <= out.back().offset + out.back().bytes.size()) {
      RecordedRange& last = out.back();
      const uint64_t last_end = last.offset + last.bytes.size();
      const uint64_t end = r.offset + r.bytes.size();
      if (end > last_end) {
        last.bytes.insert(last.bytes.end(), r.bytes.begin() + (last_end - r.offset),
                          r.bytes.end());
      }
      continue;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

std::filesystem::path RestoreRecordPath(const std::filesystem::path& target_dir) {
  return target_dir.parent_path() / "lazycrypt-restore";
}

Status WriteRestoreRecord(const std::filesystem::path& path, const RestoreRecord& record) {
  const std::string json = image::SerializeDescriptor(record.descriptor);
  std::vector<uint8_t> out(kMagic.begin(), kMagic.end());
  PutU32(out, static_cast<uint32_t>(json.size()));
  out.insert(out.end(), json.begin(), json.end());
  PutU32(out, static_cast<uint32_t>(record.ranges.size()));
  for (const RecordedRange& r : record.ranges) {
    PutU64(out, r.offset);
    PutU64(out, r.bytes.size());
    out.insert(out.end(), r.bytes.begin(), r.bytes.end());
  }
  return WriteFileAtomically(path, out, 0600);
}

Result<RestoreRecord> ReadRestoreRecord(const std::filesystem::path& path) {
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto bad = [&](const std::string& why) {
    return Status::Corruption("restore record " + path.string() + ": " + why);
  };
  if (bytes.size() < kMagic.size() ||
      std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    return bad("not a lazycrypt restore record");
  }
  size_t pos = kMagic.size();
  uint32_t json_size = 0;
  if (!GetU32(bytes, &pos, &json_size) || json_size > kMaxDescriptorBytes ||
      bytes.size() - pos < json_size) {
    return bad("truncated descriptor");
  }
  RestoreRecord record;
  auto descriptor = image::ParseDescriptor(ByteSpan(bytes.data() + pos, json_size));
  if (!descriptor.ok()) return bad(descriptor.status().message());
  record.descriptor = std::move(*descriptor);
  pos += json_size;
  uint32_t count = 0;
  if (!GetU32(bytes, &pos, &count) || count > kMaxRanges) return bad("bad range count");
  uint64_t previous_end = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t offset = 0, size = 0;
    if (!GetU64(bytes, &pos, &offset) || !GetU64(bytes, &pos, &size) ||
        bytes.size() - pos < size || size == 0 || offset < previous_end ||
        offset + size < offset || offset + size > record.descriptor.size) {
      return bad("bad range " + std::to_string(i));
    }
    record.ranges.push_back({offset, std::vector<uint8_t>(bytes.begin() + pos,
                                                          bytes.begin() + pos + size)});
    pos += size;
    previous_end = offset + size;
  }
  if (pos != bytes.size()) return bad("trailing bytes");
  return record;
}

RecordingBlobSource::RecordingBlobSource(std::shared_ptr<cache::MultiRangeBlobSource> inner)
    : inner_(std::move(inner)), owner_(std::this_thread::get_id()) {}

void RecordingBlobSource::Record(uint64_t offset, ByteSpan bytes) {
  if (std::this_thread::get_id() != owner_ || bytes.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!recording_) return;
  recorded_bytes_ += bytes.size();
  if (recorded_bytes_ > kMaxRecordedBytes || ranges_.size() >= kMaxRanges) {
    recording_ = false;  // too much to keep: no record (a restart then asks the registry)
    ranges_.clear();
    return;
  }
  ranges_.push_back({offset, std::vector<uint8_t>(bytes.begin(), bytes.end())});
}

Status RecordingBlobSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  LC_RETURN_IF_ERROR(inner_->ReadAt(offset, out));
  Record(offset, out);
  return Status::Ok();
}

Status RecordingBlobSource::ReadRanges(std::span<const cache::RangeRead> ranges) {
  LC_RETURN_IF_ERROR(inner_->ReadRanges(ranges));
  for (const cache::RangeRead& r : ranges) Record(r.offset, r.out);
  return Status::Ok();
}

std::vector<RecordedRange> RecordingBlobSource::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  const bool kept = recording_;
  recording_ = false;
  if (!kept) return {};
  return Merge(std::move(ranges_));
}

ReplayBlobSource::ReplayBlobSource(std::shared_ptr<cache::MultiRangeBlobSource> inner,
                                   std::vector<RecordedRange> ranges)
    : inner_(std::move(inner)), ranges_(std::move(ranges)) {}

bool ReplayBlobSource::Local(uint64_t offset, MutableByteSpan out) const {
  // The last range starting at or before `offset`.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                             [](uint64_t o, const RecordedRange& r) { return o < r.offset; });
  if (it == ranges_.begin()) return false;
  --it;
  const uint64_t end = it->offset + it->bytes.size();
  if (offset + out.size() > end) return false;
  std::memcpy(out.data(), it->bytes.data() + (offset - it->offset), out.size());
  return true;
}

Status ReplayBlobSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  if (Local(offset, out)) return Status::Ok();
  return inner_->ReadAt(offset, out);
}

Status ReplayBlobSource::ReadRanges(std::span<const cache::RangeRead> ranges) {
  std::vector<cache::RangeRead> remote;
  for (const cache::RangeRead& r : ranges) {
    if (!Local(r.offset, r.out)) remote.push_back(r);
  }
  if (remote.empty()) return Status::Ok();
  return inner_->ReadRanges(remote);
}

namespace {
constexpr std::string_view kUnpackedMagic = "LCUNPACKED1\n";
}  // namespace

std::filesystem::path UnpackedRecordPath(const std::filesystem::path& target_dir) {
  return target_dir.parent_path() / "lazycrypt-unpacked";
}

Status WriteUnpackedRecord(const std::filesystem::path& target_dir, const UnpackedRecord& record) {
  const std::string json = image::SerializeDescriptor(record.descriptor);
  std::vector<uint8_t> out(kUnpackedMagic.begin(), kUnpackedMagic.end());
  PutU64(out, static_cast<uint64_t>(record.size_bytes));
  PutU64(out, static_cast<uint64_t>(record.inodes));
  PutU32(out, static_cast<uint32_t>(json.size()));
  out.insert(out.end(), json.begin(), json.end());
  return WriteFileAtomically(UnpackedRecordPath(target_dir), out, 0600);
}

Result<UnpackedRecord> ReadUnpackedRecord(const std::filesystem::path& target_dir) {
  const std::filesystem::path path = UnpackedRecordPath(target_dir);
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto bad = [&](const std::string& why) {
    return Status::Corruption("unpacked-layer record " + path.string() + ": " + why);
  };
  if (bytes.size() < kUnpackedMagic.size() ||
      std::memcmp(bytes.data(), kUnpackedMagic.data(), kUnpackedMagic.size()) != 0) {
    return bad("not a lazycrypt unpacked-layer record");
  }
  size_t pos = kUnpackedMagic.size();
  uint64_t size = 0, inodes = 0;
  uint32_t json_size = 0;
  if (!GetU64(bytes, &pos, &size) || !GetU64(bytes, &pos, &inodes) ||
      !GetU32(bytes, &pos, &json_size) || json_size > kMaxDescriptorBytes ||
      bytes.size() - pos != json_size || size > INT64_MAX || inodes > INT64_MAX) {
    return bad("truncated or malformed");
  }
  auto descriptor = image::ParseDescriptor(ByteSpan(bytes.data() + pos, json_size));
  if (!descriptor.ok()) return bad(descriptor.status().message());
  UnpackedRecord record;
  record.descriptor = std::move(*descriptor);
  record.size_bytes = static_cast<int64_t>(size);
  record.inodes = static_cast<int64_t>(inodes);
  return record;
}

}  // namespace lazycrypt::lazylayer
