// lazycrypt-bench-noopfs: a do-nothing read-only FUSE filesystem, the ceiling the lazycrypt mount is
// measured against in bench/fuse/run.sh.
//
// It serves a flat directory of files with given names and sizes. Every file's bytes come from one
// pseudo-random pattern generated once at start-up: byte `o` of file NAME is
// pattern[(o + Shift(NAME)) mod kPatternBytes]. A read replies with iovecs pointing into the pattern
// (no crypto, no I/O, no copy in user space), so what is measured is the FUSE round trip alone.
//
// It negotiates what a good read-only FUSE filesystem negotiates, so the comparison is fair:
// large requests (conn->max_read and `-o max_read=`, max_pages follows libfuse's max_write of 1 MiB),
// conn->max_readahead, the backing device's read_ahead_kb raised (root only), keep_cache on every
// open, cache_readdir, long entry/attr timeouts, and a multithreaded session loop.
//
// `--dump NAME` writes the bytes the mount serves for NAME to stdout (the smoke test compares them).
//
// `--backing-dir DIR` makes it a do-nothing *passthrough* filesystem instead: the same tree, but
// each open opens DIR/NAME and each read is forwarded to that file (fuse_reply_data with an fd
// buffer: spliced when the kernel allows, else one pread). Its reads then cost what a FUSE
// filesystem that merely forwards to files on the same disk costs, cold page cache included: the
// fair denominator for a filesystem that must itself read its backing files (bench/fuse/run.sh).
#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/file_io.h"
#include "common/status.h"

namespace lazycrypt::bench {
namespace {

constexpr uint64_t kPatternBytes = 16u << 20;  // 16 MiB; each file starts at its own shift
constexpr double kCacheTimeoutS = 86400.0;     // immutable: the kernel may cache everything
constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;  // files are inodes 2..N+1

struct FileSpec {
  std::string name;
  uint64_t size_bytes = 0;
};

// The fixed pattern: splitmix64 from a fixed seed. Deterministic across runs and machines.
std::vector<uint8_t> MakePattern() {
  std::vector<uint8_t> pattern(kPatternBytes);
  uint64_t state = 0x6c617a7963727970ull;  // "lazycryp"
  for (size_t i = 0; i < pattern.size(); i += 8) {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(pattern.data() + i, &z, 8);
  }
  return pattern;
}

// Where NAME's byte 0 sits in the pattern (FNV-1a of the name): depends on the name only, so
// `--dump NAME` does not depend on the order of --file options.
uint64_t ShiftOf(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h % kPatternBytes;
}

// "123", "4K", "256M", "1G" (binary units) → bytes.
Result<uint64_t> ParseSize(std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("size is empty");
  uint64_t multiplier = 1;
  switch (text.back()) {
    case 'K': case 'k': multiplier = 1ull << 10; break;
    case 'M': case 'm': multiplier = 1ull << 20; break;
    case 'G': case 'g': multiplier = 1ull << 30; break;
    default: break;
  }
  if (multiplier != 1) text.remove_suffix(1);
  if (text.empty() || text.size() > 15 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status::InvalidArgument("size '" + std::string(text) + "' is not a number");
  }
  return std::stoull(std::string(text)) * multiplier;
}

// "NAME:SIZE" (split at the last ':'). NAME is one path component.
Result<FileSpec> ParseFileSpec(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return Status::InvalidArgument("file spec '" + std::string(text) + "': expected NAME:SIZE");
  }
  FileSpec spec;
  spec.name = std::string(text.substr(0, colon));
  if (spec.name.empty() || spec.name == "." || spec.name == ".." ||
      spec.name.find('/') != std::string::npos || spec.name.find('\0') != std::string::npos ||
      spec.name.size() > NAME_MAX) {
    return Status::InvalidArgument("file spec '" + std::string(text) +
                                   "': name must be one non-empty path component");
  }
  auto size = ParseSize(text.substr(colon + 1));
  if (!size.ok()) return size.status().WithContext("file spec '" + std::string(text) + "'");
  spec.size_bytes = *size;
  return spec;
}

// One NAME:SIZE per line; blank lines and lines starting with '#' are skipped.
Status ReadFileSpecs(const std::string& path, std::vector<FileSpec>& out) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus("open " + path);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty() || line[0] == '#') continue;
    auto spec = ParseFileSpec(line);
    if (!spec.ok()) return spec.status().WithContext(path + ":" + std::to_string(line_no));
    out.push_back(std::move(*spec));
  }
  if (in.bad()) return ErrnoStatus("read " + path);
  return Status::Ok();
}

// Immutable after construction; the FUSE callbacks only read it, from any number of threads.
class NoopFs {
 public:
  // `backing_dir` empty: bytes from the in-memory pattern; else from DIR/NAME (passthrough).
  NoopFs(std::vector<FileSpec> files, unsigned max_read_bytes, std::string backing_dir = {})
      : files_(std::move(files)),
        pattern_(backing_dir.empty() ? MakePattern() : std::vector<uint8_t>{}),
        max_read_bytes_(max_read_bytes),
        backing_dir_(std::move(backing_dir)) {
    for (size_t i = 0; i < files_.size(); ++i) {
      index_.emplace(files_[i].name, i);
      shifts_.push_back(ShiftOf(files_[i].name));
    }
  }
  NoopFs(const NoopFs&) = delete;
  NoopFs& operator=(const NoopFs&) = delete;

  // Duplicate names are a usage error.
  Status Validate() const {
    if (index_.size() != files_.size()) return Status::InvalidArgument("a file name is given twice");
    if (backing_dir_.empty()) return Status::Ok();
    UniqueFd dir(::open(backing_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) return ErrnoStatus("--backing-dir " + backing_dir_);
    for (const FileSpec& f : files_) {
      struct stat st{};
      if (::fstatat(dir.get(), f.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoStatus("--backing-dir: " + backing_dir_ + "/" + f.name);
      }
      if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != f.size_bytes) {
        return Status::InvalidArgument("--backing-dir: " + backing_dir_ + "/" + f.name +
                                       " is not a regular file of " +
                                       std::to_string(f.size_bytes) + " bytes");
      }
    }
    return Status::Ok();
  }

  // Passthrough mode: the backing directory, opened once by Serve before mounting.
  Status OpenBackingDir() {
    if (backing_dir_.empty()) return Status::Ok();
    backing_fd_ = UniqueFd(::open(backing_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (backing_fd_.get() < 0) return ErrnoStatus("--backing-dir " + backing_dir_);
    return Status::Ok();
  }

  const FileSpec* FindFile(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &files_[it->second];
  }

  // Appends iovecs covering [offset, offset+length) of the file at `index` (REQUIRES: in range).
  void AppendPieces(size_t index, uint64_t offset, uint64_t length, std::vector<iovec>& iov) const {
    uint64_t pos = (offset + shifts_[index]) % kPatternBytes;
    while (length > 0) {
      const uint64_t n = std::min(length, kPatternBytes - pos);
      iov.push_back({const_cast<uint8_t*>(pattern_.data() + pos), static_cast<size_t>(n)});
      length -= n;
      pos = 0;
    }
  }

  Status Dump(const std::string& name, std::FILE* out) const {
    auto it = index_.find(name);
    if (it == index_.end()) return Status::NotFound("--dump " + name + ": no such --file");
    if (!backing_dir_.empty()) return Status::InvalidArgument("--dump: not with --backing-dir");
    std::vector<iovec> iov;
    AppendPieces(it->second, 0, files_[it->second].size_bytes, iov);
    for (const iovec& piece : iov) {
      if (std::fwrite(piece.iov_base, 1, piece.iov_len, out) != piece.iov_len) {
        return ErrnoStatus("--dump " + name + ": write");
      }
    }
    if (std::fflush(out) != 0) return ErrnoStatus("--dump " + name + ": flush");
    return Status::Ok();
  }

  // ---- FUSE operations (userdata is a NoopFs*) ----
  static NoopFs& Of(fuse_req_t req) { return *static_cast<NoopFs*>(fuse_req_userdata(req)); }
  static const fuse_lowlevel_ops& Ops();

 private:
  bool IsFile(fuse_ino_t ino) const { return ino >= 2 && ino - 2 < files_.size(); }

  struct stat AttrOf(fuse_ino_t ino) const {
    struct stat st{};
    st.st_ino = ino;
    st.st_uid = 0;
    st.st_gid = 0;
    if (ino == kRootIno) {
      st.st_mode = S_IFDIR | 0555;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0444;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(files_[ino - 2].size_bytes);
      st.st_blocks = (st.st_size + 511) / 512;
    }
    st.st_blksize = 1 << 20;
    return st;
  }

  static void Init(void* userdata, fuse_conn_info* conn) {
    auto& fs = *static_cast<NoopFs*>(userdata);
    // Must equal the `-o max_read=` given to fuse_session_new. max_pages follows max_write,
    // which libfuse 3.14 leaves at its buffer size (1 MiB, 256 pages).
    conn->max_read = fs.max_read_bytes_;
    conn->max_readahead = fs.max_read_bytes_;
    conn->want |= FUSE_CAP_ASYNC_READ;
    conn->want &= ~FUSE_CAP_READDIRPLUS;  // readdir only; lookups are cached for a day anyway
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  }

  static void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    const NoopFs& fs = Of(req);
    if (parent != kRootIno) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    auto it = fs.index_.find(name);
    if (it == fs.index_.end()) {
      fuse_entry_param miss{};  // negative entry, cached like the rest
      miss.entry_timeout = kCacheTimeoutS;
      fuse_reply_entry(req, &miss);
      return;
    }
    fuse_entry_param e{};
    e.ino = it->second + 2;
    e.generation = 1;
    e.attr = fs.AttrOf(e.ino);
    e.attr_timeout = kCacheTimeoutS;
    e.entry_timeout = kCacheTimeoutS;
    fuse_reply_entry(req, &e);
  }

  static void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    const NoopFs& fs = Of(req);
    if (ino != kRootIno && !fs.IsFile(ino)) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    struct stat st = fs.AttrOf(ino);
    fuse_reply_attr(req, &st, kCacheTimeoutS);
  }

  static void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    const NoopFs& fs = Of(req);
    if (ino == kRootIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (!fs.IsFile(ino)) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
      fuse_reply_err(req, EROFS);
      return;
    }
    if (!fs.backing_dir_.empty()) {
      const int fd = ::openat(fs.backing_fd_.get(), fs.files_[ino - 2].name.c_str(),
                              O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) {
        fuse_reply_err(req, errno);
        return;
      }
      fi->fh = static_cast<uint64_t>(fd);
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  }

  static void Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    if (!Of(req).backing_dir_.empty()) ::close(static_cast<int>(fi->fh));
    fuse_reply_err(req, 0);
  }

  static void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    const NoopFs& fs = Of(req);
    if (!fs.IsFile(ino) || off < 0) {
      fuse_reply_err(req, fs.IsFile(ino) ? EINVAL : EBADF);
      return;
    }
    const uint64_t file_size = fs.files_[ino - 2].size_bytes;
    const uint64_t offset = static_cast<uint64_t>(off);
    if (offset >= file_size || size == 0) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    const uint64_t length = std::min<uint64_t>(size, file_size - offset);
    if (!fs.backing_dir_.empty()) {  // forward the read to the backing file, nothing else
      fuse_bufvec buf = FUSE_BUFVEC_INIT(static_cast<size_t>(length));
      buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      buf.buf[0].fd = static_cast<int>(fi->fh);
      buf.buf[0].pos = off;
      fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
      return;
    }
    std::vector<iovec> iov;
    iov.reserve(2);
    fs.AppendPieces(ino - 2, offset, length, iov);
    fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
  }

  static void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    if (ino != kRootIno) {
      fuse_reply_err(req, Of(req).IsFile(ino) ? ENOTDIR : ENOENT);
      return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
  }

  // Offsets: 0 → ".", 1 → "..", 2+i → file i; an entry's `off` is the offset of the next one.
  static void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    const NoopFs& fs = Of(req);
    if (ino != kRootIno) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    std::vector<char> buf(size);
    size_t used = 0;
    const uint64_t total = fs.files_.size() + 2;
    for (uint64_t i = off < 0 ? 0 : static_cast<uint64_t>(off); i < total; ++i) {
      struct stat st{};
      const char* name;
      if (i < 2) {
        name = i == 0 ? "." : "..";
        st.st_ino = kRootIno;
        st.st_mode = S_IFDIR;
      } else {
        name = fs.files_[i - 2].name.c_str();
        st.st_ino = i;  // file i-2 has inode i
        st.st_mode = S_IFREG;
      }
      const size_t need =
          fuse_add_direntry(req, buf.data() + used, size - used, name, &st, static_cast<off_t>(i + 1));
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  }

  static void StatFs(fuse_req_t req, fuse_ino_t) {
    const NoopFs& fs = Of(req);
    struct statvfs sv{};
    uint64_t bytes = 0;
    for (const FileSpec& f : fs.files_) bytes += f.size_bytes;
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (bytes + 4095) / 4096;
    sv.f_files = fs.files_.size() + 1;
    sv.f_namemax = NAME_MAX;
    fuse_reply_statfs(req, &sv);
  }

  std::vector<FileSpec> files_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<uint64_t> shifts_;
  std::vector<uint8_t> pattern_;
  unsigned max_read_bytes_;
  std::string backing_dir_;  // empty: in-memory pattern
  UniqueFd backing_fd_;
};

const fuse_lowlevel_ops& NoopFs::Ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = Init;
    o.lookup = Lookup;
    o.getattr = GetAttr;
    o.open = Open;
    o.release = Release;
    o.read = Read;
    o.opendir = OpenDir;
    o.readdir = ReadDir;
    o.statfs = StatFs;
    return o;
  }();
  return ops;
}

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string UnescapeMountInfo(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool octal = i + 3 < s.size() &&
                       std::all_of(s.begin() + i + 1, s.begin() + i + 4,
                                   [](char c) { return c >= '0' && c <= '7'; });
    if (s[i] == '\\' && octal) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 3)), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Raises the read-ahead window of the FUSE mount at `canonical_mountpoint` (the kernel caps FUSE
// readahead at the bdi's read_ahead_kb, 128 KiB by default; conn->max_readahead can only lower it).
// The device is found in /proc/self/mountinfo: nothing here may touch the mount itself (stat,
// realpath), because the session loop that would answer is not running yet. Needs root.
Status RaiseReadAhead(const std::string& canonical_mountpoint, unsigned read_ahead_kb) {
  std::ifstream info("/proc/self/mountinfo");
  if (!info) return ErrnoStatus("open /proc/self/mountinfo");
  std::string line, dev;
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, majmin, root, point;
    fields >> id >> parent >> majmin >> root >> point;
    if (UnescapeMountInfo(point) == canonical_mountpoint) dev = majmin;  // last match: top mount
  }
  if (dev.empty()) {
    return Status::NotFound("mount " + canonical_mountpoint + " is not in /proc/self/mountinfo");
  }
  const std::string knob = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  std::ofstream out(knob);
  out << read_ahead_kb << '\n';
  out.flush();
  if (!out) return ErrnoStatus("write " + knob);
  return Status::Ok();
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};
struct FuseArgsDeleter {
  void operator()(fuse_args* a) const { fuse_opt_free_args(a); }
};

int Serve(NoopFs& fs, const std::string& mountpoint, bool foreground, bool debug,
          unsigned max_read_bytes, unsigned read_ahead_kb, unsigned max_threads, bool passthrough,
          bool clone_fd) {
  const std::string opts = std::string("ro,default_permissions,fsname=lazycrypt-bench-noopfs,") +
                           (passthrough ? "subtype=passthrough" : "subtype=noopfs") +
                           ",max_read=" + std::to_string(max_read_bytes);
  std::vector<std::string> argv_store = {"lazycrypt-bench-noopfs", "-o", opts};
  if (debug) argv_store.push_back("-d");
  std::vector<char*> argv;
  for (std::string& a : argv_store) argv.push_back(a.data());
  fuse_args args_storage = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  std::unique_ptr<fuse_args, FuseArgsDeleter> args(&args_storage);

  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(args.get(), &NoopFs::Ops(), sizeof(fuse_lowlevel_ops), &fs));
  if (!se) {
    std::cerr << "noopfs: fuse_session_new failed\n";
    return 1;
  }
  if (fuse_set_signal_handlers(se.get()) != 0) {
    std::cerr << "noopfs: cannot install signal handlers\n";
    return 1;
  }
  // Resolved before mounting: afterwards, resolving it would ask this very process (deadlock).
  std::error_code ec;
  const std::string canonical = std::filesystem::canonical(mountpoint, ec).string();
  if (ec) {
    std::cerr << "noopfs: mountpoint " << mountpoint << ": " << ec.message() << "\n";
    fuse_remove_signal_handlers(se.get());
    return 1;
  }
  if (fuse_session_mount(se.get(), canonical.c_str()) != 0) {
    std::cerr << "noopfs: cannot mount on " << mountpoint << "\n";
    fuse_remove_signal_handlers(se.get());
    return 1;
  }
  if (read_ahead_kb > 0) {
    Status st = RaiseReadAhead(canonical, read_ahead_kb);
    if (!st.ok()) std::cerr << "noopfs: warning: read-ahead stays at the default: " << st.ToString() << "\n";
  }
  fuse_daemonize(foreground ? 1 : 0);

  std::unique_ptr<fuse_loop_config, LoopConfigDeleter> cfg(fuse_loop_cfg_create());
  fuse_loop_cfg_set_max_threads(cfg.get(), max_threads);
  fuse_loop_cfg_set_idle_threads(cfg.get(), max_threads);
  fuse_loop_cfg_set_clone_fd(cfg.get(), clone_fd ? 1 : 0);
  const int rc = fuse_session_loop_mt(se.get(), cfg.get());

  fuse_session_unmount(se.get());
  fuse_remove_signal_handlers(se.get());
  return rc == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  CLI::App app{"lazycrypt-bench-noopfs: a do-nothing read-only FUSE filesystem serving files of "
               "given sizes from a fixed in-memory pseudo-random pattern (benchmark ceiling)"};
  std::vector<std::string> file_args;
  std::string files_from, dump_name, mountpoint, backing_dir;
  bool foreground = false, debug = false, clone_fd = false;
  unsigned max_read_kb = 1024, read_ahead_kb = 1024, max_threads = 16;
  app.add_option("--file", file_args, "NAME:SIZE (SIZE in bytes, or with K/M/G); repeatable")
      ->allow_extra_args(false);
  app.add_option("--files-from", files_from, "a file of NAME:SIZE lines");
  app.add_flag("-f,--foreground", foreground, "stay in the foreground");
  app.add_flag("-d,--debug", debug, "libfuse debug output (implies nothing else)");
  app.add_option("--max-read-kb", max_read_kb, "largest read request (conn->max_read, -o max_read)")
      ->check(CLI::Range(4u, 1024u));
  app.add_option("--read-ahead-kb", read_ahead_kb,
                 "set the mount's bdi read_ahead_kb (0: leave the kernel default; needs root)")
      ->check(CLI::Range(0u, 65536u));
  app.add_option("--threads", max_threads, "most worker threads of the session loop")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--backing-dir", backing_dir,
                 "passthrough: serve each NAME from DIR/NAME (size must match) instead of the "
                 "in-memory pattern");
  app.add_flag("--clone-fd", clone_fd, "one /dev/fuse clone per worker thread (as lazycrypt mount)");
  app.add_option("--dump", dump_name, "write the bytes served for NAME to stdout and exit");
  app.add_option("mountpoint", mountpoint, "where to mount");
  CLI11_PARSE(app, argc, argv);

  std::vector<FileSpec> files;
  for (const std::string& a : file_args) {
    auto spec = ParseFileSpec(a);
    if (!spec.ok()) {
      std::cerr << "noopfs: " << spec.status().ToString() << "\n";
      return 2;
    }
    files.push_back(std::move(*spec));
  }
  if (!files_from.empty()) {
    Status st = ReadFileSpecs(files_from, files);
    if (!st.ok()) {
      std::cerr << "noopfs: " << st.ToString() << "\n";
      return 2;
    }
  }
  NoopFs fs(std::move(files), max_read_kb * 1024u, backing_dir);
  if (Status st = fs.Validate(); !st.ok()) {
    std::cerr << "noopfs: " << st.ToString() << "\n";
    return 2;
  }
  if (!dump_name.empty()) {
    Status st = fs.Dump(dump_name, stdout);
    if (!st.ok()) {
      std::cerr << "noopfs: " << st.ToString() << "\n";
      return 1;
    }
    return 0;
  }
  if (mountpoint.empty()) {
    std::cerr << "noopfs: a mountpoint is required (or --dump NAME)\n";
    return 2;
  }
  if (Status st = fs.OpenBackingDir(); !st.ok()) {
    std::cerr << "noopfs: " << st.ToString() << "\n";
    return 1;
  }
  return Serve(fs, mountpoint, foreground, debug, max_read_kb * 1024u, read_ahead_kb, max_threads,
               !backing_dir.empty(), clone_fd);
}

}  // namespace
}  // namespace lazycrypt::bench

int main(int argc, char** argv) { return lazycrypt::bench::Main(argc, argv); }
