// File-backed streams and blobs. errno becomes a Status here, once.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "common/io.h"

namespace lazycrypt {

// Owns a file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Sequential reads from a file descriptor (a file, a pipe, stdin). Does not own the fd unless
// constructed from a UniqueFd.
class FdInputStream final : public InputStream {
 public:
  explicit FdInputStream(int fd) : fd_(fd) {}
  explicit FdInputStream(UniqueFd fd) : owned_(std::move(fd)), fd_(owned_.get()) {}
  static Result<std::unique_ptr<FdInputStream>> Open(const std::filesystem::path& path);
  Result<size_t> Read(MutableByteSpan out) override;

 private:
  UniqueFd owned_;
  int fd_;
};

// Writes to a file descriptor (stdout, a pipe). Close() does not close a borrowed fd.
class FdOutputStream final : public OutputStream {
 public:
  explicit FdOutputStream(int fd) : fd_(fd) {}
  Status Write(ByteSpan data) override;
  Status Close() override { return Status::Ok(); }

 private:
  int fd_;
};

// pread-backed blob. Thread-safe.
class FileBlobSource final : public BlobSource {
 public:
  static Result<std::unique_ptr<FileBlobSource>> Open(const std::filesystem::path& path);
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override;

 private:
  FileBlobSource(UniqueFd fd, uint64_t size, std::string name)
      : fd_(std::move(fd)), size_(size), name_(std::move(name)) {}
  UniqueFd fd_;
  uint64_t size_;
  std::string name_;
};

// Writes a file atomically: bytes go to a hidden temporary file in the destination's directory;
// Close() fsyncs it and renames it over the destination. Destroying it without a successful
// Close() removes the temporary file, so a failure never leaves a half-written destination.
class AtomicFileOutputStream final : public OutputStream {
 public:
  static Result<std::unique_ptr<AtomicFileOutputStream>> Create(
      const std::filesystem::path& destination, mode_t mode = 0644);
  ~AtomicFileOutputStream() override;
  Status Write(ByteSpan data) override;
  Status Close() override;

 private:
  AtomicFileOutputStream(UniqueFd fd, std::filesystem::path tmp, std::filesystem::path dest)
      : fd_(std::move(fd)), tmp_(std::move(tmp)), dest_(std::move(dest)) {}
  UniqueFd fd_;
  std::filesystem::path tmp_;
  std::filesystem::path dest_;
  bool committed_ = false;
};

Result<std::vector<uint8_t>> ReadFileBytes(const std::filesystem::path& path);
// Atomic whole-file write (see AtomicFileOutputStream).
Status WriteFileAtomically(const std::filesystem::path& path, ByteSpan data, mode_t mode = 0644);

struct RemoveTreeOptions {
  // A directory on another device than `parent_fd`'s (a mount point: a layer still mounted, a
  // leftover mount) fails the removal (FailedPrecondition) instead of being emptied.
  bool one_filesystem = true;
  // Renders a path (relative to the tree's parent) for error messages; default: quoted as is.
  // Callers that must not show names (decrypted layer contents) pass their own.
  std::function<std::string(std::string_view)> describe;
};
// Removes `name` in the directory `parent_fd` (AT_FDCWD: relative to the working directory) and
// everything under it, through directory file descriptors: a symlink is removed, never followed,
// and a directory swapped for a symlink while the removal runs (by a container that wrote the
// tree) fails it instead of redirecting it elsewhere. A `name` that does not exist is OK.
Status RemoveTreeAt(int parent_fd, const std::string& name, const RemoveTreeOptions& options = {});

}  // namespace lazycrypt
