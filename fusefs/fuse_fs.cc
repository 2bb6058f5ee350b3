#define FUSE_USE_VERSION 312
#include "fusefs/fuse_fs.h"

#include <fuse_lowlevel.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "fusefs/inode_table.h"

namespace lazycrypt::fusefs {
namespace {

// Status -> errno, once, at the FUSE edge. A failed chunk (authentication, corruption, fetch) is
// EIO: a reader never sees partial or unauthenticated data.
int StatusToErrno(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kNotFound: return ENOENT;
    case StatusCode::kFailedPrecondition: return ENOTDIR;
    case StatusCode::kInvalidArgument: return EINVAL;
    case StatusCode::kPermissionDenied: return EACCES;
    case StatusCode::kUnsupported: return ENOTSUP;
    default: return EIO;
  }
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};
struct ArgsDeleter {
  void operator()(fuse_args* a) const {
    fuse_opt_free_args(a);
    delete a;
  }
};

class FuseMountImpl final : public FuseMount {
 public:
  FuseMountImpl(std::filesystem::path mountpoint, std::shared_ptr<cache::LayerData> layer,
                std::unique_ptr<const InodeTable> table, MountOptions options)
      : mountpoint_(std::move(mountpoint)),
        layer_(std::move(layer)),
        table_(std::move(table)),
        options_(std::move(options)) {}

  ~FuseMountImpl() override {
    Status s = Unmount();
    if (s.ok()) return;
    // Busy (open files, or an overlayfs on top): detach and abort the connection so the session
    // threads end and nothing points at this object any more.
    std::lock_guard<std::mutex> lock(unmount_mu_);
    if (!mounted_) return;
    ::umount2(mountpoint_.c_str(), MNT_DETACH);
    if (!AbortConnection()) {
      std::fprintf(stderr, "lazycrypt: %s: cannot abort the FUSE connection of '%s'; waiting for "
                   "its open files to be closed\n", options_.layer_name.c_str(),
                   mountpoint_.c_str());
    }
    StopSession();
  }

  Status Start() {
    fuse_lowlevel_ops ops{};
    ops.init = &Init;
    ops.lookup = &Lookup;
    ops.forget = &Forget;
    ops.forget_multi = &ForgetMulti;
    ops.getattr = &GetAttr;
    ops.readlink = &ReadLink;
    ops.open = &Open;
    ops.read = &Read;
    ops.release = &Release;
    ops.opendir = &OpenDir;
    ops.readdir = &ReadDir;
    ops.readdirplus = &ReadDirPlus;
    ops.releasedir = &ReleaseDir;
    ops.getxattr = &GetXattr;
    ops.listxattr = &ListXattr;
    ops.statfs = &StatFs;
    ops.access = &Access;

    std::string opts = "ro,fsname=" + options_.fsname + ",subtype=" + options_.subtype;
    if (options_.allow_other) opts += ",allow_other";
    if (options_.default_permissions) opts += ",default_permissions";
    std::unique_ptr<fuse_args, ArgsDeleter> args(new fuse_args FUSE_ARGS_INIT(0, nullptr));
    for (const char* a : {"lazycrypt", "-o", opts.c_str()}) {
      if (fuse_opt_add_arg(args.get(), a) != 0) return Status::Internal("fuse_opt_add_arg failed");
    }
    session_.reset(fuse_session_new(args.get(), &ops, sizeof ops, this));
    if (!session_) {
      return Status::InvalidArgument("fuse_session_new rejected the mount options '" + opts + "'");
    }
    if (fuse_session_mount(session_.get(), mountpoint_.c_str()) != 0) {
      session_.reset();
      return Status::IoError("cannot mount FUSE at '" + mountpoint_.string() +
                             "' (see libfuse's message above; root or fusermount3 needed)");
    }
    {
      std::lock_guard<std::mutex> lock(unmount_mu_);
      mounted_ = true;
    }
    loop_ = std::thread([this] { RunLoop(); });

    // The first request waits for INIT, so this also waits until the session serves.
    struct stat st {};
    if (::stat(mountpoint_.c_str(), &st) != 0) {
      Status s = ErrnoStatus("stat of the new mount '" + mountpoint_.string() + "'");
      (void)Unmount();
      return s;
    }
    dev_ = st.st_dev;
    if (options_.read_ahead_kb != 0) {
      std::string bdi = "/sys/class/bdi/" + std::to_string(major(dev_)) + ":" +
                        std::to_string(minor(dev_)) + "/read_ahead_kb";
      std::ofstream ra(bdi);
      ra << options_.read_ahead_kb;
      ra.flush();
      if (!ra) {
        std::fprintf(stderr, "lazycrypt: %s: cannot raise readahead (%s)\n",
                     options_.layer_name.c_str(), bdi.c_str());
      }
    }
    return Status::Ok();
  }

  Status Unmount() override {
    std::lock_guard<std::mutex> lock(unmount_mu_);
    if (!mounted_) return Status::Ok();
    if (::umount2(mountpoint_.c_str(), 0) != 0) {
      int err = errno;
      if (err == EBUSY) {
        return Status::FailedPrecondition("cannot unmount '" + mountpoint_.string() +
                                          "': busy (open files or a mount on top)");
      }
      // EINVAL: no longer mounted (someone else unmounted it); the session has ended then.
      if (err != EINVAL) return ErrnoStatus("umount '" + mountpoint_.string() + "'", err);
    }
    StopSession();
    return Status::Ok();
  }

  const std::filesystem::path& mountpoint() const override { return mountpoint_; }
  cache::LayerStats stats() const override { return layer_->stats(); }

 private:
  static FuseMountImpl& Self(fuse_req_t req) {
    return *static_cast<FuseMountImpl*>(fuse_req_userdata(req));
  }

  // Aborts the connection through fusectl (mounting it at its usual place if nothing is mounted
  // there yet): pending and future requests fail with ENOTCONN and the session loop ends.
  bool AbortConnection() {
    if (dev_ == 0 || major(dev_) != 0) return false;
    const std::string dir = "/sys/fs/fuse/connections/" + std::to_string(minor(dev_));
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) {
      ::mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
    }
    std::ofstream abort_file(dir + "/abort");
    abort_file << "1";
    abort_file.flush();
    return static_cast<bool>(abort_file);
  }

  // REQUIRES unmount_mu_ held and the kernel side unmounted or aborted: the loop then ends.
  void StopSession() {
    if (loop_.joinable()) loop_.join();
    fuse_session_unmount(session_.get());  // closes the fd; nothing left to unmount
    session_.reset();
    mounted_ = false;
  }

  void RunLoop() {
    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> cfg(fuse_loop_cfg_create());
    fuse_loop_cfg_set_clone_fd(cfg.get(), options_.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(cfg.get(), std::max(1u, options_.max_threads));
    int rc = fuse_session_loop_mt(session_.get(), cfg.get());
    if (rc != 0 && rc != -ENODEV) {
      std::fprintf(stderr, "lazycrypt: %s: FUSE session loop ended with %d\n",
                   options_.layer_name.c_str(), rc);
    }
  }

  fuse_entry_param EntryFor(uint64_t ino, const struct stat& st) const {
    fuse_entry_param e{};
    e.ino = ino;
    e.generation = 1;
    e.attr = st;
    e.attr_timeout = options_.attr_timeout_sec;
    e.entry_timeout = options_.entry_timeout_sec;
    return e;
  }

  // Logs a failed read once per (inode, chunk). Never logs file data.
  void LogReadFailure(uint64_t ino, const format::Entry& entry, uint64_t offset, size_t size,
                      const Status& s) {
    format::ChunkRange chunks = layer_->index().ChunksForRange(entry, offset, std::max<size_t>(size, 1));
    uint64_t first = chunks.empty() ? 0 : chunks.first;
    uint64_t last = chunks.empty() ? 0 : chunks.first + chunks.count - 1;
    {
      std::lock_guard<std::mutex> lock(log_mu_);
      if (!logged_failures_.emplace(ino, first).second) return;
    }
    std::fprintf(stderr, "lazycrypt: %s: file '%s' offset %llu size %zu (chunks %llu..%llu): EIO: %s\n",
                 options_.layer_name.c_str(), table_->Path(ino).c_str(),
                 static_cast<unsigned long long>(offset), size, static_cast<unsigned long long>(first),
                 static_cast<unsigned long long>(last), s.ToString().c_str());
  }

  // ---- FUSE operations (each replies exactly once; no lock held across a reply) ----

  static void Init(void* userdata, fuse_conn_info* conn) {
    auto& self = *static_cast<FuseMountImpl*>(userdata);
    auto want = [conn](unsigned cap) {
      if (conn->capable & cap) conn->want |= cap;
    };
    want(FUSE_CAP_ASYNC_READ);
    want(FUSE_CAP_PARALLEL_DIROPS);
    want(FUSE_CAP_CACHE_SYMLINKS);
    want(FUSE_CAP_READDIRPLUS);
    // Immutable layer: never drop cached pages because attributes were refreshed.
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    // libfuse derives max_pages from max_write (capped by its 1 MiB buffer); read requests are
    // bounded by max_pages too.
    conn->max_write = self.options_.max_request_bytes;
    conn->max_read = 0;
    conn->max_readahead = self.options_.max_request_bytes;
    conn->max_background = 64;
    conn->congestion_threshold = 48;
  }

  static void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    auto& self = Self(req);
    auto ino = self.table_->Lookup(parent, name);
    if (!ino.ok()) {
      if (ino.status().code() == StatusCode::kNotFound) {
        // Negative entry: the layer never changes, so the kernel may cache the absence.
        fuse_entry_param e{};
        e.entry_timeout = self.options_.entry_timeout_sec;
        fuse_reply_entry(req, &e);
        return;
      }
      fuse_reply_err(req, StatusToErrno(ino.status()));
      return;
    }
    auto st = self.table_->Attr(*ino);
    if (!st.ok()) {
      fuse_reply_err(req, StatusToErrno(st.status()));
      return;
    }
    fuse_entry_param e = self.EntryFor(*ino, *st);
    fuse_reply_entry(req, &e);
  }

  // Inodes live as long as the mount: lookup counts need no bookkeeping.
  static void Forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
  static void ForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

  static void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    auto& self = Self(req);
    auto st = self.table_->Attr(ino);
    if (!st.ok()) {
      fuse_reply_err(req, StatusToErrno(st.status()));
      return;
    }
    fuse_reply_attr(req, &*st, self.options_.attr_timeout_sec);
  }

  static void ReadLink(fuse_req_t req, fuse_ino_t ino) {
    auto target = Self(req).table_->Readlink(ino);
    if (!target.ok()) {
      fuse_reply_err(req, StatusToErrno(target.status()));
      return;
    }
    std::string t(*target);
    fuse_reply_readlink(req, t.c_str());
  }

  static void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& self = Self(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      fuse_reply_err(req, EROFS);
      return;
    }
    auto entry = self.table_->DataEntry(ino);
    if (!entry.ok()) {
      fuse_reply_err(req, StatusToErrno(entry.status()));
      return;
    }
    fi->fh = reinterpret_cast<uint64_t>(*entry);
    fi->keep_cache = 1;
    if (self.options_.on_open) self.options_.on_open(self.table_->Path(ino));
    fuse_reply_open(req, fi);
  }

  static void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    auto& self = Self(req);
    const auto* entry = reinterpret_cast<const format::Entry*>(fi->fh);
    if (entry == nullptr || off < 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    uint64_t offset = static_cast<uint64_t>(off);
    if (offset >= entry->size || size == 0) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    size_t want = static_cast<size_t>(std::min<uint64_t>(size, entry->size - offset));
    std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[want]);
    if (!buf) {
      fuse_reply_err(req, ENOMEM);
      return;
    }
    size_t done = 0;
    while (done < want) {
      auto n = self.layer_->ReadFile(*entry, offset + done, MutableByteSpan(buf.get() + done, want - done));
      if (!n.ok()) {
        self.LogReadFailure(ino, *entry, offset + done, want - done, n.status());
        fuse_reply_err(req, EIO);
        return;
      }
      if (*n == 0) break;
      done += *n;
    }
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.get()), done);
  }

  static void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

  static void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& self = Self(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
      fuse_reply_err(req, EROFS);
      return;
    }
    auto children = self.table_->ReadDir(ino);
    if (!children.ok()) {
      fuse_reply_err(req, StatusToErrno(children.status()));
      return;
    }
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  }

  // Listing of directory `ino`: ".", "..", then the children in name order. Entry i has offset
  // i + 1 (the offset of the next one).
  static void DoReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
    auto& self = Self(req);
    auto children = self.table_->ReadDir(ino);
    auto parent = self.table_->Parent(ino);
    if (!children.ok() || !parent.ok()) {
      fuse_reply_err(req, StatusToErrno(children.ok() ? parent.status() : children.status()));
      return;
    }
    std::vector<char> buf(size);
    size_t used = 0;
    size_t total = children->size() + 2;
    for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < total; ++i) {
      uint64_t child;
      std::string name;
      if (i == 0) {
        child = ino;
        name = ".";
      } else if (i == 1) {
        child = *parent;
        name = "..";
      } else {
        child = (*children)[i - 2].ino;
        name = (*children)[i - 2].name;
      }
      auto st = self.table_->Attr(child);
      if (!st.ok()) {
        fuse_reply_err(req, EIO);
        return;
      }
      size_t need;
      if (plus) {
        fuse_entry_param e = self.EntryFor(child, *st);
        need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                      static_cast<off_t>(i + 1));
      } else {
        need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &*st,
                                 static_cast<off_t>(i + 1));
      }
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  }

  static void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    DoReadDir(req, ino, size, off, false);
  }
  static void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    DoReadDir(req, ino, size, off, true);
  }
  static void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

  // getxattr(2)'s protocol: size 0 asks for the value's size; a too small buffer is ERANGE.
  static void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    auto xattrs = Self(req).table_->Xattrs(ino);
    if (!xattrs.ok()) {
      fuse_reply_err(req, StatusToErrno(xattrs.status()));
      return;
    }
    auto it = (*xattrs)->find(name);
    if (it == (*xattrs)->end()) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    const std::string& value = it->second;
    if (size == 0) {
      fuse_reply_xattr(req, value.size());
    } else if (size < value.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, value.data(), value.size());
    }
  }

  static void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    auto xattrs = Self(req).table_->Xattrs(ino);
    if (!xattrs.ok()) {
      fuse_reply_err(req, StatusToErrno(xattrs.status()));
      return;
    }
    std::string names;
    for (const auto& [name, value] : **xattrs) {
      names += name;
      names.push_back('\0');
    }
    if (size == 0) {
      fuse_reply_xattr(req, names.size());
    } else if (size < names.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, names.data(), names.size());
    }
  }

  static void StatFs(fuse_req_t req, fuse_ino_t) {
    auto& self = Self(req);
    struct statvfs sv {};
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (self.layer_->index().tar_size() + 4095) / 4096;
    sv.f_files = self.layer_->index().entries().size();
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
    fuse_reply_statfs(req, &sv);
  }

  static void Access(fuse_req_t req, fuse_ino_t ino, int mask) {
    auto st = Self(req).table_->Attr(ino);
    if (!st.ok()) {
      fuse_reply_err(req, StatusToErrno(st.status()));
      return;
    }
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
  }

  const std::filesystem::path mountpoint_;
  const std::shared_ptr<cache::LayerData> layer_;
  const std::unique_ptr<const InodeTable> table_;
  const MountOptions options_;

  std::mutex unmount_mu_;  // guards mounted_, session_ teardown, loop_
  bool mounted_ = false;
  std::unique_ptr<fuse_session, SessionDeleter> session_;
  std::thread loop_;
  dev_t dev_ = 0;

  std::mutex log_mu_;
  std::set<std::pair<uint64_t, uint64_t>> logged_failures_;  // (inode, chunk)
};

bool SafeOptionValue(const std::string& v) {
  return !v.empty() && v.find_first_of(",\\\"= \n") == std::string::npos;
}

}  // namespace

Result<std::unique_ptr<FuseMount>> FuseMount::Mount(const std::filesystem::path& mountpoint,
                                                    std::shared_ptr<cache::LayerData> layer,
                                                    const MountOptions& options) {
  if (!layer) return Status::InvalidArgument("FuseMount: no layer");
  if (!SafeOptionValue(options.fsname) || !SafeOptionValue(options.subtype)) {
    return Status::InvalidArgument("FuseMount: fsname and subtype must be non-empty and free of "
                                   "',', '\\', '\"', '=' and spaces");
  }
  if (options.max_request_bytes < 4096) {
    return Status::InvalidArgument("FuseMount: max_request_bytes must be at least 4096");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(mountpoint, ec)) {
    return Status::InvalidArgument("mount point '" + mountpoint.string() + "' is not a directory");
  }
  auto table = InodeTable::Build(layer->index().entries());
  if (!table.ok()) return table.status().WithContext("layer " + options.layer_name);
  auto mount = std::make_unique<FuseMountImpl>(mountpoint, std::move(layer), std::move(table).value(),
                                               options);
  LC_RETURN_IF_ERROR(mount->Start());
  return std::unique_ptr<FuseMount>(std::move(mount));
}

}  // namespace lazycrypt::fusefs
