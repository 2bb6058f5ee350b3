// An unnamed temporary file: written once (Append, or as an OutputStream), then read at offsets
// (a BlobSource). O_TMPFILE in `dir`: no name ever exists and a crash leaves nothing; where the
// file system cannot, a named file (0600) unlinked at once. Gone when destroyed. ReadAt is
// thread-safe; Append/Write are not and must not run concurrently with reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt {

class SpoolFile final : public BlobSource, public OutputStream {
 public:
  static Result<std::unique_ptr<SpoolFile>> Create(const std::filesystem::path& dir);
  ~SpoolFile() override;
  SpoolFile(const SpoolFile&) = delete;
  SpoolFile& operator=(const SpoolFile&) = delete;

  Status Append(ByteSpan data);
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  // OutputStream: Write appends; Close does nothing (the file stays readable).
  Status Write(ByteSpan data) override { return Append(data); }
  Status Close() override { return Status::Ok(); }

 private:
  explicit SpoolFile(int fd) : fd_(fd) {}
  int fd_;
  uint64_t size_ = 0;
};

}  // namespace lazycrypt
