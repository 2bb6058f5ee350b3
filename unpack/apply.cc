#include "unpack/apply.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/file_io.h"
#include "tar/tar_reader.h"

namespace lazycrypt::unpack {
namespace {

using tar::Entry;
using tar::EntryType;

// File data moves in reads this large (TarReader reads them straight into the buffer).
constexpr size_t kCopyBufferBytes = size_t{1} << 20;
// A longer entry name cannot be opened with one path anyway (PATH_MAX); refusing it up front
// also bounds the directory depth, and so the recursion of RemoveTree.
constexpr size_t kMaxNameBytes = 4095;

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kWhiteoutOpaqueDir = ".wh..wh..opq";
constexpr const char* kOverlayOpaqueXattr = "trusted.overlay.opaque";

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string Join(std::span<const std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

// Splits an archive path into its components beneath the layer root: "." and empty components
// are dropped ("./a//b/" is a/b), an absolute path or a ".." component is refused by name, so
// that no path can even be spelled outside the root. An empty result is the root itself.
// `what` is "name" or "hard link target" for the message.
Result<std::vector<std::string_view>> SplitPath(std::string_view path, std::string_view what) {
  if (path.size() > kMaxNameBytes) {
    return Status::Unsupported(std::string(what) + " longer than " +
                               std::to_string(kMaxNameBytes) + " bytes");
  }
  if (!path.empty() && path.front() == '/') {
    return Status::Corruption(std::string(what) + " " + Quote(path) +
                              " is absolute (layer paths are relative to the layer root)");
  }
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    if (part == "..") {
      return Status::Corruption(std::string(what) + " " + Quote(path) +
                                " has a '..' component (it would leave the layer root)");
    }
    if (!part.empty() && part != ".") parts.push_back(part);
    pos = slash + 1;
  }
  return parts;
}

// containerd clamps times it cannot represent (before 1970, after 2262) to the epoch.
struct timespec BoundTime(const Entry& e) {
  constexpr int64_t kMaxSec = std::numeric_limits<int64_t>::max() / 1'000'000'000;
  constexpr uint32_t kMaxNsecAtMaxSec = std::numeric_limits<int64_t>::max() % 1'000'000'000;
  struct timespec ts {};
  if (e.mtime_sec < 0 || e.mtime_sec > kMaxSec ||
      (e.mtime_sec == kMaxSec && e.mtime_nsec > kMaxNsecAtMaxSec)) {
    return ts;
  }
  ts.tv_sec = static_cast<time_t>(e.mtime_sec);
  ts.tv_nsec = static_cast<long>(e.mtime_nsec);
  return ts;
}

// xattr names an image author may not set. trusted.*: containerd never sets them from an archive
// (only overlayfs and the administrator use that namespace; trusted.overlay.* would forge
// whiteouts, opaque dirs, redirects, metacopy and origin records). user.overlay.*: the same
// overlayfs metadata for mounts with the userxattr option (a divergence from containerd, which
// would set them).
bool IsRefusedXattr(std::string_view name) {
  return name.starts_with("trusted.") || name.starts_with("user.overlay.");
}

Status WriteAll(int fd, ByteSpan data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write");
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// openat2 beneath `dirfd` refusing every symlink (and /proc magic link) on the way: a path the
// archive made into a symlink can never be walked through. -1 with errno on failure (ENOSYS on
// kernels before 5.6: the caller then walks component by component).
int OpenBeneath(int dirfd, const std::string& rel, uint64_t flags) {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    long fd = syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how);
    // EAGAIN: a concurrent rename somewhere on the path; nothing else renames in `dir`.
    if (fd < 0 && (errno == EINTR || errno == EAGAIN) && attempt < 8) continue;
    return static_cast<int>(fd);
  }
}

// What a regular file, a directory or another node is, for the metadata calls: an fd when we
// hold one (regular files, directories), else the name in its parent (never followed).
struct Node {
  int fd = -1;
  int parent = -1;
  const char* name = nullptr;
  bool is_symlink = false;
  bool is_regular_or_dir = false;
};

class Applier {
 public:
  Applier(UniqueFd root, const ApplyOptions& options) : root_(std::move(root)), options_(options) {}

  Result<ApplyStats> Run(InputStream& in) {
    tar::TarReader reader(in);
    for (;;) {
      LC_ASSIGN_OR_RETURN(std::optional<Entry> entry, reader.Next());
      if (!entry) break;
      if (++stats_.entries > options_.max_entries) {
        return Status::Unsupported("unpack: the layer has more than " +
                                   std::to_string(options_.max_entries) +
                                   " entries (ApplyOptions::max_entries)");
      }
      Status s = ApplyEntry(reader, *entry);
      if (!s.ok() && !options_.names_in_errors) {
        return Status(s.code(), "unpack: entry #" + std::to_string(stats_.entries) + ": " +
                                    std::string(StatusCodeName(s.code())) +
                                    " (its name and the details are withheld)");
      }
      if (!s.ok()) return s.WithContext("unpack: entry " + Quote(entry->name));
      if (options_.max_regular_bytes != 0 && stats_.regular_bytes > options_.max_regular_bytes) {
        return Status::Unsupported("unpack: the layer's files hold more than " +
                                   std::to_string(options_.max_regular_bytes) +
                                   " bytes (ApplyOptions::max_regular_bytes)");
      }
    }
    LC_RETURN_IF_ERROR(SetDirectoryTimes());
    if (options_.drain_to_end) LC_RETURN_IF_ERROR(reader.DrainToEnd().status());
    return stats_;
  }

 private:
  struct DirTime {
    std::string rel;
    struct timespec mtime;
  };

  Status ApplyEntry(tar::TarReader& reader, const Entry& e) {
    LC_ASSIGN_OR_RETURN(std::vector<std::string_view> parts, SplitPath(e.name, "name"));
    if (parts.empty()) {  // "./": containerd leaves the root's own metadata alone
      ++stats_.skipped_entries;
      return Status::Ok();
    }
    const std::string_view base = parts.back();
    const std::span<const std::string_view> parent_parts(parts.data(), parts.size() - 1);
    LC_ASSIGN_OR_RETURN(int parent, ParentFd(parent_parts));

    if (base.starts_with(kWhiteoutPrefix)) return ApplyWhiteout(e, parent, base);

    // A later entry replaces an earlier one, except that a directory entry for an existing
    // directory only updates its metadata (containerd merges them).
    struct stat st {};
    if (fstatat(parent, std::string(base).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!(S_ISDIR(st.st_mode) && e.type == EntryType::kDirectory)) {
        // A hard link's target must exist before the name it replaces goes away.
        if (e.type == EntryType::kHardlink) {
          LC_RETURN_IF_ERROR(CheckHardlinkTarget(e, parts).status());
        }
        LC_RETURN_IF_ERROR(Remove(parent, base, st));
      }
    } else if (errno != ENOENT) {
      return ErrnoStatus("fstatat " + Quote(base));
    }

    const std::string name(base);
    switch (e.type) {
      case EntryType::kRegular:
        return CreateRegular(reader, e, parent, name);
      case EntryType::kDirectory:
        return CreateDirectory(e, parent, name, Join(parts));
      case EntryType::kSymlink:
        if (symlinkat(e.link_name.c_str(), parent, name.c_str()) != 0) {
          return ErrnoStatus("symlinkat");
        }
        return ApplyMetadata(e, Node{.parent = parent, .name = name.c_str(), .is_symlink = true});
      case EntryType::kHardlink:
        return CreateHardlink(e, parent, name, parts);
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
      case EntryType::kFifo: {
        mode_t type = e.type == EntryType::kCharDevice   ? S_IFCHR
                      : e.type == EntryType::kBlockDevice ? S_IFBLK
                                                          : S_IFIFO;
        dev_t dev = e.type == EntryType::kFifo ? 0 : makedev(e.dev_major, e.dev_minor);
        if (mknodat(parent, name.c_str(), type | (e.mode & 07777), dev) != 0) {
          return ErrnoStatus("mknodat (" + std::string(tar::EntryTypeName(e.type)) + ")");
        }
        return ApplyMetadata(e, Node{.parent = parent, .name = name.c_str()});
      }
    }
    return Status::Internal("unpack: unknown entry type");
  }

  // OCI image-spec whiteouts in overlayfs form, as containerd's OverlayConvertWhiteout.
  Status ApplyWhiteout(const Entry& e, int parent, std::string_view base) {
    if (base == kWhiteoutOpaqueDir) {
      if (fsetxattr(parent, kOverlayOpaqueXattr, "y", 1, 0) != 0) {
        return ErrnoStatus(std::string("opaque directory: fsetxattr ") + kOverlayOpaqueXattr);
      }
      ++stats_.opaque_dirs;
      return Status::Ok();
    }
    if (base.starts_with(kWhiteoutMetaPrefix)) {  // aufs metadata (.wh..wh.plnk, ...)
      ++stats_.skipped_entries;
      return Status::Ok();
    }
    std::string original(base.substr(kWhiteoutPrefix.size()));
    if (original.empty() || original == "." || original == "..") {
      return Status::Corruption("whiteout " + Quote(base) + " does not name a file in its directory");
    }
    // Something of that name created earlier in this layer: the later entry wins.
    struct stat st {};
    if (fstatat(parent, original.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      LC_RETURN_IF_ERROR(Remove(parent, original, st));
    } else if (errno != ENOENT) {
      return ErrnoStatus("whiteout: fstatat " + Quote(original));
    }
    if (mknodat(parent, original.c_str(), S_IFCHR, makedev(0, 0)) != 0) {
      return ErrnoStatus("whiteout: mknodat (0/0 character device)");
    }
    if (options_.preserve_owner) {
      LC_RETURN_IF_ERROR(CheckIds(e));
      if (fchownat(parent, original.c_str(), static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid),
                   AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoStatus("whiteout: fchownat");
      }
    }
    ++stats_.whiteouts;
    return Status::Ok();
  }

  Status CreateRegular(tar::TarReader& reader, const Entry& e, int parent, const std::string& name) {
    // O_EXCL|O_NOFOLLOW: whatever was at this name is gone (Remove), so this creates a new file
    // or fails; it never opens an existing file or a symlink.
    UniqueFd fd(openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600));
    if (!fd.valid()) return ErrnoStatus("create regular file");
    if (e.size > 0) {
      if (buffer_.empty()) buffer_.resize(kCopyBufferBytes);
      for (;;) {
        LC_ASSIGN_OR_RETURN(size_t n, reader.ReadData(buffer_));
        if (n == 0) break;
        LC_RETURN_IF_ERROR(WriteAll(fd.get(), ByteSpan(buffer_.data(), n)));
        stats_.regular_bytes += n;
      }
    }
    LC_RETURN_IF_ERROR(ApplyMetadata(e, Node{.fd = fd.get(), .is_regular_or_dir = true}));
    struct timespec times[2] = {BoundTime(e), BoundTime(e)};
    if (futimens(fd.get(), times) != 0) return ErrnoStatus("futimens");
    if (close(fd.release()) != 0) return ErrnoStatus("close");
    return Status::Ok();
  }

  Status CreateDirectory(const Entry& e, int parent, const std::string& name, std::string rel) {
    if (mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus("mkdirat");
    }
    // EEXIST here is the directory merged with (ApplyEntry removed anything else).
    UniqueFd fd(openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open directory");
    LC_RETURN_IF_ERROR(ApplyMetadata(e, Node{.fd = fd.get(), .is_regular_or_dir = true}));
    // Its mtime is set after all entries: creating its children would change it again. A
    // directory listed again keeps one record (the last mtime wins, as in containerd).
    const size_t rel_bytes = rel.size();
    auto [it, inserted] = dir_times_.insert_or_assign(std::move(rel), BoundTime(e));
    if (inserted) {
      dir_time_bytes_ += rel_bytes;
      if (dir_time_bytes_ > options_.max_directory_path_bytes) {
        return Status::Unsupported("the layer's directories' paths take more than " +
                                   std::to_string(options_.max_directory_path_bytes) +
                                   " bytes (ApplyOptions::max_directory_path_bytes)");
      }
    }
    return Status::Ok();
  }

  // The target's parent directory (opened without following any symlink) and its last
  // component, which must exist and not be a directory.
  Result<std::pair<UniqueFd, std::string>> CheckHardlinkTarget(
      const Entry& e, std::span<const std::string_view> entry_parts) {
    LC_ASSIGN_OR_RETURN(std::vector<std::string_view> target,
                        SplitPath(e.link_name, "hard link target"));
    if (target.empty()) {
      return Status::Corruption("hard link to the layer root " + Quote(e.link_name));
    }
    if (std::equal(target.begin(), target.end(), entry_parts.begin(), entry_parts.end())) {
      return Status::Corruption("hard link to itself");
    }
    auto parent = OpenDir(std::span<const std::string_view>(target.data(), target.size() - 1),
                          /*create=*/false);
    if (!parent.ok()) {
      return parent.status().WithContext("hard link target " + Quote(e.link_name));
    }
    std::string base(target.back());
    struct stat st {};
    if (fstatat(parent->get(), base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) {
        return Status::NotFound("hard link target " + Quote(e.link_name) +
                                " does not exist (earlier in this layer)");
      }
      return ErrnoStatus("hard link target " + Quote(e.link_name) + ": fstatat");
    }
    if (S_ISDIR(st.st_mode)) {
      return Status::Corruption("hard link target " + Quote(e.link_name) + " is a directory");
    }
    return std::make_pair(std::move(*parent), std::move(base));
  }

  Status CreateHardlink(const Entry& e, int parent, const std::string& name,
                        std::span<const std::string_view> parts) {
    LC_ASSIGN_OR_RETURN(auto target, CheckHardlinkTarget(e, parts));
    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, never what it names.
    if (linkat(target.first.get(), target.second.c_str(), parent, name.c_str(), 0) != 0) {
      return ErrnoStatus("linkat to " + Quote(e.link_name));
    }
    struct stat st {};
    if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("fstatat hard link");
    }
    // As containerd: the link's header metadata applies to the (shared) inode.
    return ApplyMetadata(e, Node{.parent = parent,
                                 .name = name.c_str(),
                                 .is_symlink = S_ISLNK(st.st_mode),
                                 .is_regular_or_dir = S_ISREG(st.st_mode)});
  }

  Status CheckIds(const Entry& e) {
    // (uid_t)-1 means "leave unchanged" to chown; anything above does not fit.
    constexpr uint64_t kMaxId = std::numeric_limits<uint32_t>::max() - 1;
    if (e.uid > kMaxId || e.gid > kMaxId) {
      return Status::Corruption("uid/gid " + std::to_string(e.uid) + "/" + std::to_string(e.gid) +
                                " out of range");
    }
    return Status::Ok();
  }

  // containerd's order: owner (chown clears setuid/setgid and file capabilities), xattrs
  // (security.capability survives), mode (setuid/setgid/sticky last), then the mtime for
  // non-directories (regular files: by the caller, after the data).
  Status ApplyMetadata(const Entry& e, const Node& node) {
    const bool by_fd = node.fd >= 0;
    const char* name = node.name;
    if (options_.preserve_owner) {
      LC_RETURN_IF_ERROR(CheckIds(e));
      uid_t uid = static_cast<uid_t>(e.uid);
      gid_t gid = static_cast<gid_t>(e.gid);
      int rc = by_fd ? fchown(node.fd, uid, gid)
                     : fchownat(node.parent, name, uid, gid, AT_SYMLINK_NOFOLLOW);
      if (rc != 0) return ErrnoStatus("chown to " + std::to_string(uid) + ":" + std::to_string(gid));
    }
    for (const auto& [key, value] : e.xattrs) {
      if (IsRefusedXattr(key)) {
        ++stats_.xattrs_skipped;
        continue;
      }
      int rc;
      if (by_fd) {
        rc = fsetxattr(node.fd, key.c_str(), value.data(), value.size(), 0);
      } else {
        // The parent fd was opened without following symlinks and the last component is never
        // followed (lsetxattr), so this names exactly the node just created.
        std::string path = "/proc/self/fd/" + std::to_string(node.parent) + "/" + name;
        rc = lsetxattr(path.c_str(), key.c_str(), value.data(), value.size(), 0);
      }
      if (rc != 0) {
        // Tolerated as containerd does: a filesystem without xattrs of that kind, and user.*
        // on files other than regular files and directories (the kernel refuses those).
        if (errno == ENOTSUP ||
            (errno == EPERM && key.starts_with("user.") && !node.is_regular_or_dir)) {
          ++stats_.xattrs_skipped;
          continue;
        }
        return ErrnoStatus("set xattr " + Quote(key));
      }
    }
    if (!node.is_symlink) {  // a symlink's mode means nothing on Linux
      mode_t mode = e.mode & 07777;
      int rc = by_fd ? fchmod(node.fd, mode)
                     : fchmodat(node.parent, name, mode, AT_SYMLINK_NOFOLLOW);
      if (rc != 0) return ErrnoStatus("chmod");
    }
    if (!by_fd) {
      struct timespec times[2] = {BoundTime(e), BoundTime(e)};
      if (utimensat(node.parent, name, times, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoStatus("utimensat");
      }
    }
    return Status::Ok();
  }

  // The directory for an entry's parent, created (0755, the caller's owner) where missing as
  // containerd does. Cached: archives list a directory's entries together. The one cached fd is
  // always the current entry's parent, and an entry only ever removes things beneath its parent
  // (Remove), so the cached directory is never one that was removed.
  Result<int> ParentFd(std::span<const std::string_view> parts) {
    std::string rel = Join(parts);
    if (cached_parent_.valid() && rel == cached_parent_rel_) return cached_parent_.get();
    LC_ASSIGN_OR_RETURN(UniqueFd fd, OpenDir(parts, /*create=*/true));
    cached_parent_ = std::move(fd);
    cached_parent_rel_ = std::move(rel);
    return cached_parent_.get();
  }

  // Opens the directory `parts` beneath the root, never following a symlink. With `create`,
  // missing directories are made (0755).
  Result<UniqueFd> OpenDir(std::span<const std::string_view> parts, bool create) {
    if (parts.empty()) {
      UniqueFd fd(fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
      if (!fd.valid()) return ErrnoStatus("dup root fd");
      return fd;
    }
    // Fast path: one openat2 for the whole path. On any failure, walk it component by
    // component (creating what is missing, or naming the component that is wrong).
    UniqueFd fast(OpenBeneath(root_.get(), Join(parts), O_RDONLY | O_DIRECTORY));
    if (fast.valid()) return fast;

    UniqueFd cur(fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
    if (!cur.valid()) return ErrnoStatus("dup root fd");
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string part(parts[i]);
      // One component with O_NOFOLLOW: a symlink at this name is refused, not followed.
      constexpr int kFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
      UniqueFd next(openat(cur.get(), part.c_str(), kFlags));
      if (!next.valid() && errno == ENOENT && create) {
        if (mkdirat(cur.get(), part.c_str(), 0755) != 0 && errno != EEXIST) {
          return ErrnoStatus("create parent directory " + Quote(Join(parts.first(i + 1))));
        }
        next.reset(openat(cur.get(), part.c_str(), kFlags));
        // Independent of the umask, as containerd's mkdir + chmod.
        if (next.valid() && fchmod(next.get(), 0755) != 0) {
          return ErrnoStatus("chmod parent directory " + Quote(Join(parts.first(i + 1))));
        }
      }
      if (!next.valid()) {
        int err = errno;
        std::string prefix = Join(parts.first(i + 1));
        struct stat st {};
        if ((err == ELOOP || err == ENOTDIR) &&
            fstatat(cur.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
          if (S_ISLNK(st.st_mode)) {
            return Status::Unsupported(
                "path goes through " + Quote(prefix) +
                ", a symlink (entries are never written through a symlink in the layer)");
          }
          if (!S_ISDIR(st.st_mode)) {
            return Status::Corruption("path goes through " + Quote(prefix) +
                                      ", which is not a directory");
          }
        }
        if (err == ENOENT) return Status::NotFound(Quote(prefix) + " does not exist");
        return ErrnoStatus("open directory " + Quote(prefix), err);
      }
      cur = std::move(next);
    }
    return cur;
  }

  // Removes what `name` is in `parent` (described by `st`); a directory with its whole tree,
  // never following a symlink.
  Status Remove(int parent, std::string_view name, const struct stat& st) {
    std::string n(name);
    if (!S_ISDIR(st.st_mode)) {
      if (unlinkat(parent, n.c_str(), 0) != 0) return ErrnoStatus("remove " + Quote(name));
      return Status::Ok();
    }
    RemoveTreeOptions o;
    o.describe = [](std::string_view path) { return Quote(path); };
    return RemoveTreeAt(parent, n, o);
  }

  // Directory mtimes, last (as containerd). A directory that a later entry replaced or removed
  // keeps what it has: nothing is followed to find it.
  Status SetDirectoryTimes() {
    for (const auto& [rel, mtime] : dir_times_) {
      const DirTime d{rel, mtime};
      std::vector<std::string_view> parts;
      for (size_t pos = 0; pos <= d.rel.size();) {
        size_t slash = d.rel.find('/', pos);
        if (slash == std::string::npos) slash = d.rel.size();
        parts.push_back(std::string_view(d.rel).substr(pos, slash - pos));
        pos = slash + 1;
      }
      Result<UniqueFd> fd = OpenDir(parts, /*create=*/false);
      if (!fd.ok()) {
        StatusCode c = fd.status().code();
        if (c == StatusCode::kNotFound || c == StatusCode::kUnsupported ||
            c == StatusCode::kCorruption) {
          continue;
        }
        return fd.status().WithContext("unpack: directory " + Quote(d.rel) + " mtime");
      }
      struct timespec times[2] = {d.mtime, d.mtime};
      if (futimens(fd->get(), times) != 0) {
        return ErrnoStatus("unpack: directory " + Quote(d.rel) + ": futimens");
      }
    }
    return Status::Ok();
  }

  UniqueFd root_;
  const ApplyOptions& options_;
  ApplyStats stats_;
  std::vector<uint8_t> buffer_;
  std::map<std::string, struct timespec> dir_times_;  // by path below `dir`
  uint64_t dir_time_bytes_ = 0;
  UniqueFd cached_parent_;
  std::string cached_parent_rel_;
};

}  // namespace

Result<ApplyStats> ApplyLayer(InputStream& tar_stream, const std::filesystem::path& dir,
                              const ApplyOptions& options) {
  UniqueFd root(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return ErrnoStatus("unpack: open " + dir.string());
  Applier applier(std::move(root), options);
  return applier.Run(tar_stream);
}

}  // namespace lazycrypt::unpack
