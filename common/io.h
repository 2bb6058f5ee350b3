// The byte-moving interfaces every layer of lazycrypt is written against, with in-memory
// implementations (for tests and small payloads). File-backed ones are in common/file_io.h.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace lazycrypt {

using ByteSpan = std::span<const uint8_t>;
using MutableByteSpan = std::span<uint8_t>;

inline ByteSpan AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsStringView(ByteSpan b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A sequential source of bytes (a tar stream, a decompressor, a pipe).
// Not thread-safe.
class InputStream {
 public:
  virtual ~InputStream() = default;
  // Reads up to out.size() bytes. Returns 0 only at end of stream (or if out is empty).
  virtual Result<size_t> Read(MutableByteSpan out) = 0;
};

// Reads exactly out.size() bytes; Corruption("unexpected end of <what>") if the stream ends first.
Status ReadFull(InputStream& in, MutableByteSpan out, std::string_view what);

// A sequential sink of bytes. Not thread-safe.
class OutputStream {
 public:
  virtual ~OutputStream() = default;
  virtual Status Write(ByteSpan data) = 0;
  // Flushes and finishes the stream (a compressor writes its epilogue, a file is committed).
  // No Write may follow.
  virtual Status Close() = 0;
};

// Random access to an immutable blob (a file, a registry blob through Range requests, memory).
// Thread-safe: ReadAt may be called concurrently from many threads.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly out.size() bytes at offset; OutOfRange is reported as Corruption because a
  // reader only asks for ranges that the blob's own metadata claims exist.
  virtual Status ReadAt(uint64_t offset, MutableByteSpan out) = 0;
};

class MemoryInputStream final : public InputStream {
 public:
  // Does not copy: `data` must outlive the stream. Each Read returns at most max_read_bytes
  // (tests use a small value to exercise short reads).
  explicit MemoryInputStream(ByteSpan data, size_t max_read_bytes = SIZE_MAX)
      : data_(data), max_read_bytes_(max_read_bytes) {}
  Result<size_t> Read(MutableByteSpan out) override;

 private:
  ByteSpan data_;
  size_t max_read_bytes_;
  size_t pos_ = 0;
};

// Collects everything written into a byte vector.
class MemoryOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan data) override;
  Status Close() override;
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }
  bool closed() const { return closed_; }

 private:
  std::vector<uint8_t> bytes_;
  bool closed_ = false;
};

// Owns its bytes.
class MemoryBlobSource final : public BlobSource {
 public:
  explicit MemoryBlobSource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Reads a BlobSource from start to end as a stream.
class BlobInputStream final : public InputStream {
 public:
  explicit BlobInputStream(BlobSource& blob) : blob_(blob) {}
  Result<size_t> Read(MutableByteSpan out) override;

 private:
  BlobSource& blob_;
  uint64_t pos_ = 0;
};

// Copies `in` to `out` until end of stream (does not Close out). Returns the byte count.
Result<uint64_t> CopyStream(InputStream& in, OutputStream& out);

}  // namespace lazycrypt
