#include "common/file_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

namespace lazycrypt {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<std::unique_ptr<FdInputStream>> FdInputStream::Open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + path.string());
  return std::make_unique<FdInputStream>(UniqueFd(fd));
}

Result<size_t> FdInputStream::Read(MutableByteSpan out) {
  for (;;) {
    ssize_t n = ::read(fd_, out.data(), out.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return ErrnoStatus("read");
  }
}

static Status WriteAll(int fd, ByteSpan data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write");
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status FdOutputStream::Write(ByteSpan data) { return WriteAll(fd_, data); }

Result<std::unique_ptr<FileBlobSource>> FileBlobSource::Open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + path.string());
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus("stat " + path.string());
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path.string() + " is not a regular file");
  return std::unique_ptr<FileBlobSource>(
      new FileBlobSource(std::move(owned), static_cast<uint64_t>(st.st_size), path.string()));
}

Status FileBlobSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  if (offset > size_ || out.size() > size_ - offset) {
    return Status::Corruption("read of " + std::to_string(out.size()) + " bytes at offset " +
                              std::to_string(offset) + " is past the end of " + name_);
  }
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done,
                        static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + name_);
    }
    if (n == 0) return Status::Corruption(name_ + " shrank while being read");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::unique_ptr<AtomicFileOutputStream>> AtomicFileOutputStream::Create(
    const std::filesystem::path& destination, mode_t mode) {
  std::filesystem::path dir = destination.parent_path();
  if (dir.empty()) dir = ".";
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::filesystem::path tmp =
        dir / ("." + destination.filename().string() + ".tmp" + std::to_string(rd()));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) {
      return std::unique_ptr<AtomicFileOutputStream>(
          new AtomicFileOutputStream(UniqueFd(fd), std::move(tmp), destination));
    }
    if (errno != EEXIST) return ErrnoStatus("create temporary file in " + dir.string());
  }
  return Status::IoError("could not create a temporary file in " + dir.string());
}

AtomicFileOutputStream::~AtomicFileOutputStream() {
  if (!committed_) {
    fd_.reset();
    ::unlink(tmp_.c_str());
  }
}

Status AtomicFileOutputStream::Write(ByteSpan data) {
  if (!fd_.valid()) return Status::FailedPrecondition("write after close of " + dest_.string());
  return WriteAll(fd_.get(), data).WithContext(dest_.string());
}

Status AtomicFileOutputStream::Close() {
  if (!fd_.valid()) return Status::FailedPrecondition("double close of " + dest_.string());
  if (::fsync(fd_.get()) != 0) return ErrnoStatus("fsync " + tmp_.string());
  fd_.reset();
  if (::rename(tmp_.c_str(), dest_.c_str()) != 0) return ErrnoStatus("rename to " + dest_.string());
  committed_ = true;
  // Make the rename durable.
  std::filesystem::path dir = dest_.parent_path();
  if (dir.empty()) dir = ".";
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.valid()) ::fsync(dfd.get());
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadFileBytes(const std::filesystem::path& path) {
  LC_ASSIGN_OR_RETURN(auto in, FdInputStream::Open(path));
  MemoryOutputStream out;
  auto copied = CopyStream(*in, out);
  if (!copied.ok()) return copied.status().WithContext(path.string());
  return out.Take();
}

Status WriteFileAtomically(const std::filesystem::path& path, ByteSpan data, mode_t mode) {
  LC_ASSIGN_OR_RETURN(auto out, AtomicFileOutputStream::Create(path, mode));
  LC_RETURN_IF_ERROR(out->Write(data));
  return out->Close();
}

namespace {

class TreeRemover {
 public:
  explicit TreeRemover(const RemoveTreeOptions& options) : options_(options) {}

  std::string Describe(const std::string& path) const {
    return options_.describe ? options_.describe(path) : "'" + path + "'";
  }

  // Removes directory `name` (its path for messages: `path`) in `parent_fd`, whose device is
  // `dev`.
  Status RemoveDirectory(int parent_fd, const std::string& name, const std::string& path,
                         dev_t dev) {
    UniqueFd fd(::openat(parent_fd, name.c_str(),
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT) return Status::Ok();
      return ErrnoStatus("remove " + Describe(path) + ": open");
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("remove " + Describe(path) + ": fstat");
    if (options_.one_filesystem && st.st_dev != dev) {
      return Status::FailedPrecondition(Describe(path) + " is a mount point; not removing it");
    }
    // fdopendir takes the fd over; a dup keeps ours for the *at calls after closedir.
    UniqueFd listing(::dup(fd.get()));
    if (!listing.valid()) return ErrnoStatus("remove " + Describe(path) + ": dup");
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(listing.get()), ::closedir);
    if (!dir) return ErrnoStatus("remove " + Describe(path) + ": fdopendir");
    listing.release();
    std::vector<std::pair<std::string, bool>> children;  // name, is a directory
    errno = 0;
    while (struct dirent* d = ::readdir(dir.get())) {
      std::string_view child = d->d_name;
      if (child == "." || child == "..") continue;
      bool is_dir = d->d_type == DT_DIR;
      if (d->d_type == DT_UNKNOWN) {
        struct stat cst;
        if (::fstatat(fd.get(), d->d_name, &cst, AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoStatus("remove " + Describe(path + "/" + std::string(child)) + ": stat");
        }
        is_dir = S_ISDIR(cst.st_mode);
      }
      children.emplace_back(child, is_dir);
      errno = 0;
    }
    if (errno != 0) return ErrnoStatus("remove " + Describe(path) + ": readdir");
    dir.reset();
    for (const auto& [child, is_dir] : children) {
      const std::string child_path = path + "/" + child;
      if (is_dir) {
        LC_RETURN_IF_ERROR(RemoveDirectory(fd.get(), child, child_path, st.st_dev));
      } else if (::unlinkat(fd.get(), child.c_str(), 0) != 0 && errno != ENOENT) {
        // EISDIR: a file swapped for a directory meanwhile; it stays, and so does the tree.
        return ErrnoStatus("remove " + Describe(child_path));
      }
    }
    if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return ErrnoStatus("remove " + Describe(path));
    }
    return Status::Ok();
  }

 private:
  const RemoveTreeOptions& options_;
};

}  // namespace

Status RemoveTreeAt(int parent_fd, const std::string& name, const RemoveTreeOptions& options) {
  if (parent_fd == AT_FDCWD) {
    // A path: its parent directory (the caller's, trusted) is opened once, the tree below it is
    // walked by descriptors.
    const std::filesystem::path p(name);
    const std::string base = p.filename().string();
    if (base.empty() || base == "." || base == "..") {
      return Status::InvalidArgument("remove: '" + name + "' does not name a directory entry");
    }
    const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : ".";
    UniqueFd parent(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent.valid()) {
      if (errno == ENOENT) return Status::Ok();
      return ErrnoStatus("open " + dir.string());
    }
    RemoveTreeOptions o = options;
    if (!o.describe) {
      o.describe = [&dir](std::string_view rel) { return "'" + (dir / rel).string() + "'"; };
    }
    return RemoveTreeAt(parent.get(), base, o);
  }
  TreeRemover remover(options);
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("remove " + remover.Describe(name) + ": stat");
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(parent_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return ErrnoStatus("remove " + remover.Describe(name));
    }
    return Status::Ok();
  }
  // The tree's own device is its parent directory's, so a mount at `name` itself is caught.
  struct stat parent;
  if (::fstat(parent_fd, &parent) != 0) {
    return ErrnoStatus("remove " + remover.Describe(name) + ": stat of its parent");
  }
  return remover.RemoveDirectory(parent_fd, name, name, parent.st_dev);
}

}  // namespace lazycrypt
