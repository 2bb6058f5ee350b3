// What a restarted snapshotter needs to serve a lazily mounted layer again without its registry
// (README "Restarts and upgrades"): the layer's descriptor from its manifest (digest, size, the
// wrapped keys) and the ciphertext ranges the first mount read to open the layer (blob header,
// sealed TOC). Kept next to the snapshot (snapshots/<id>/lazycrypt-restore, 0600): public data
// of the image (what the registry serves) in the daemon's private state directory; no key and no
// plaintext. With it, a restart while the registry is down still serves every cached chunk; only
// uncached reads wait for the registry.
//
// File: "LCRESTORE1\n", u32 length + the descriptor's JSON, u32 range count, then per range u64
// offset, u64 length and the bytes (little-endian). Written atomically; a file that does not
// parse is Corruption (the caller then asks the registry, as without one).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cache/multi_range_source.h"
#include "common/status.h"
#include "image/oci.h"

namespace lazycrypt::lazylayer {

struct RecordedRange {
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};

struct RestoreRecord {
  image::Descriptor descriptor;
  std::vector<RecordedRange> ranges;  // sorted by offset, not overlapping
};

// snapshots/<id>/lazycrypt-restore for the snapshot whose fs directory is `target_dir`.
std::filesystem::path RestoreRecordPath(const std::filesystem::path& target_dir);
Status WriteRestoreRecord(const std::filesystem::path& path, const RestoreRecord& record);
// NotFound when there is none; Corruption when it does not parse.
Result<RestoreRecord> ReadRestoreRecord(const std::filesystem::path& path);

// A standard ocicrypt layer the snapshotter unpacked itself (lazylayer/ocicrypt_unpack.h), kept
// next to the snapshot (snapshots/<id>/lazycrypt-unpacked, 0600, written before the snapshot is
// committed): its descriptor, whose wrapped keys Check unwraps after a restart, and its disk use.
// Public data only. File: "LCUNPACKED1\n", u64 size_bytes, u64 inodes, u32 length + the
// descriptor's JSON (little-endian). A snapshot with this record is unpacked, not mounted.
struct UnpackedRecord {
  image::Descriptor descriptor;
  int64_t size_bytes = 0;
  int64_t inodes = 0;
};
std::filesystem::path UnpackedRecordPath(const std::filesystem::path& target_dir);
Status WriteUnpackedRecord(const std::filesystem::path& target_dir, const UnpackedRecord& record);
// NotFound when there is none; Corruption when it does not parse.
Result<UnpackedRecord> ReadUnpackedRecord(const std::filesystem::path& target_dir);

// Passes reads through to `inner`; those made on the thread that created it (the mount's own
// reads: header and TOC, not the prefetch or verification threads) are kept until Take, up to
// kMaxRecordedBytes (more: nothing is kept).
class RecordingBlobSource final : public cache::MultiRangeBlobSource {
 public:
  static constexpr uint64_t kMaxRecordedBytes = uint64_t{320} << 20;
  explicit RecordingBlobSource(std::shared_ptr<cache::MultiRangeBlobSource> inner);
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  Status ReadRanges(std::span<const cache::RangeRead> ranges) override;
  // Stops recording; the recorded ranges, sorted and merged (empty when over the bound).
  std::vector<RecordedRange> Take();

 private:
  void Record(uint64_t offset, ByteSpan bytes);
  std::shared_ptr<cache::MultiRangeBlobSource> inner_;
  const std::thread::id owner_;
  std::mutex mu_;
  bool recording_ = true;
  uint64_t recorded_bytes_ = 0;
  std::vector<RecordedRange> ranges_;
};

// Serves reads that fall inside `ranges` from them, everything else from `inner`.
class ReplayBlobSource final : public cache::MultiRangeBlobSource {
 public:
  ReplayBlobSource(std::shared_ptr<cache::MultiRangeBlobSource> inner,
                   std::vector<RecordedRange> ranges);
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  Status ReadRanges(std::span<const cache::RangeRead> ranges) override;

 private:
  bool Local(uint64_t offset, MutableByteSpan out) const;
  std::shared_ptr<cache::MultiRangeBlobSource> inner_;
  const std::vector<RecordedRange> ranges_;
};

}  // namespace lazycrypt::lazylayer
