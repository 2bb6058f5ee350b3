#include "common/spool_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace lazycrypt {

Result<std::unique_ptr<SpoolFile>> SpoolFile::Create(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // No O_TMPFILE on this file system: a name for an instant, in the caller's private directory.
    std::string name = (dir / "lazycrypt-spool-XXXXXX").string();
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) {
      ::unlink(name.c_str());
      ::fchmod(fd, 0600);
    }
  }
  if (fd < 0) {
    return Status::IoError("cannot create an unnamed temporary file in " + dir.string() + ": " +
                           std::strerror(errno));
  }
  return std::unique_ptr<SpoolFile>(new SpoolFile(fd));
}

SpoolFile::~SpoolFile() { ::close(fd_); }

Status SpoolFile::Append(ByteSpan data) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(size_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError(std::string("temporary file: ") + std::strerror(errno));
    size_ += static_cast<uint64_t>(n);
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status SpoolFile::ReadAt(uint64_t offset, MutableByteSpan out) {
  if (offset > size_ || out.size() > size_ - offset) {
    return Status::Corruption("temporary file: read out of range");
  }
  while (!out.empty()) {
    ssize_t n = ::pread(fd_, out.data(), out.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError(std::string("temporary file: ") + std::strerror(errno));
    offset += static_cast<uint64_t>(n);
    out = out.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace lazycrypt
