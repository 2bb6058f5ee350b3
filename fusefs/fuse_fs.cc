#define FUSE_USE_VERSION 312
#include "fusefs/fuse_fs.h"

#include <fuse_lowlevel.h>
#include <malloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "fusefs/fuse_resume.h"
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

// Building a tree allocates (and frees) several times what the table keeps: per name a node of
// a std::map and its string. glibc keeps freed memory for later allocations; hand it back, so
// that a daemon with many layers does not keep every build's peak (issue 19: RSS per file).
void ReleaseBuildMemory() { ::malloc_trim(0); }

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

// Hands the rest of the chunks that a small read opened to the kernel's page cache (FUSE
// notify_store), so that nearby reads are page-cache hits instead of new requests that open the
// same chunks again. The bytes were authenticated whole before the read was answered; the kernel
// page cache is where decrypted bytes live anyway.
// Runs on its own thread: notify_store waits for the page locks that pending reads hold, so a
// session worker must never call it (it could wait for a read that only it would answer). Best
// effort: when the queue is full, a new job is dropped; errors (an inode the kernel has
// forgotten, an unmounted session) are ignored. Nothing is stored once the layer is quarantined:
// the pages the quarantine invalidated must not come back.
class PageCacheFiller {
 public:
  struct Job {
    uint64_t ino;
    uint64_t file_size;
    uint64_t read_begin, read_end;  // already answered: skipped
    cache::FileView view;           // pins the bytes until stored
  };

  // `quarantined` tells whether the layer is quarantined (evaluated before each job).
  PageCacheFiller(fuse_session* session, std::function<bool()> quarantined)
      : session_(session), quarantined_(std::move(quarantined)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~PageCacheFiller() { Stop(); }

  // Drops the queued jobs, lets the one being stored finish and ends the thread; Add does
  // nothing afterwards. Idempotent; safe while session threads still call Add.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      jobs_.clear();
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> joining(join_mu_);
    if (thread_.joinable()) thread_.join();
  }
  PageCacheFiller(const PageCacheFiller&) = delete;
  PageCacheFiller& operator=(const PageCacheFiller&) = delete;

  void Add(Job job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || jobs_.size() >= kMaxJobs) return;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  // Drops the queued jobs and waits for the one being stored, if any: a job taken after this
  // returns sees quarantined_() (set before the quarantine invalidates the pages).
  void DropQueued() {
    std::deque<Job> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      dropped.swap(jobs_);
    }
    std::lock_guard<std::mutex> storing(store_mu_);
  }

 private:
  static constexpr size_t kMaxJobs = 16;
  static constexpr uint64_t kPage = 4096;

  void Loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      // Held across the check and the stores, so that DropQueued waits for them.
      std::lock_guard<std::mutex> storing(store_mu_);
      if (quarantined_()) continue;
      for (const cache::FileView::Piece& piece : job.view.around) {
        // Whole pages only (a partial page would not become readable), minus what the read got.
        const uint64_t end = piece.file_offset + piece.bytes.size();
        const uint64_t first = (piece.file_offset + kPage - 1) / kPage * kPage;
        const uint64_t last = end == job.file_size ? end : end / kPage * kPage;
        Store(job.ino, piece, first, std::min(last, job.read_begin / kPage * kPage));
        Store(job.ino, piece, std::max(first, (job.read_end + kPage - 1) / kPage * kPage), last);
      }
    }
  }
  void Store(uint64_t ino, const cache::FileView::Piece& piece, uint64_t from, uint64_t to) {
    if (from >= to) return;
    fuse_bufvec buf = FUSE_BUFVEC_INIT(static_cast<size_t>(to - from));
    buf.buf[0].mem = const_cast<uint8_t*>(piece.bytes.data() + (from - piece.file_offset));
    (void)fuse_lowlevel_notify_store(session_, ino, static_cast<off_t>(from), &buf,
                                     static_cast<fuse_buf_copy_flags>(0));
  }

  fuse_session* const session_;
  const std::function<bool()> quarantined_;
  std::mutex store_mu_;  // held while a job is checked and stored
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stop_ = false;
  std::thread thread_;
  std::mutex join_mu_;  // Stop from two threads joins once
};

// A signal whose only effect is to interrupt a blocking call of the thread it is sent to (no
// SA_RESTART): LeaveMounted wakes libfuse's loop thread with it. Installed once per process.
int WakeSignal() {
  static const int sig = [] {
    const int s = SIGRTMIN + 3;
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

class FuseMountImpl final : public FuseMount {
 public:
  // Without a layer (a resumed mount), requests wait for Provide.
  FuseMountImpl(std::filesystem::path mountpoint, std::shared_ptr<cache::LayerData> layer,
                std::unique_ptr<const InodeTable> table, MountOptions options)
      : mountpoint_(std::move(mountpoint)), options_(std::move(options)) {
    if (layer) SetLayer(std::move(layer), std::move(table));
  }

  ~FuseMountImpl() override {
    Status s = Unmount();
    if (s.ok()) return;
    // Busy (open files, or an overlayfs on top): detach and abort the connection so the session
    // threads end and nothing points at this object any more.
    std::lock_guard<std::mutex> lock(unmount_mu_);
    if (!mounted_) return;
    ::umount2(mountpoint_.c_str(), MNT_DETACH);
    WakeWaiters(Waiting::kFail);
    if (!AbortConnection()) {
      std::fprintf(stderr, "lazycrypt: %s: cannot abort the FUSE connection of '%s'; waiting for "
                   "its open files to be closed\n", options_.layer_name.c_str(),
                   mountpoint_.c_str());
    }
    StopSession();
  }

  // Mounts at mountpoint_, or serves `resume_fd` (the connection of the mount there, `device`).
  Status Start(UniqueFd resume_fd = UniqueFd(), dev_t device = 0) {
    const bool resume = resume_fd.valid();
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
    if (resume) {
      // libfuse serves an open connection given as /dev/fd/N (and then mounts nothing).
      const std::string dev_fd = "/dev/fd/" + std::to_string(resume_fd.get());
      if (fuse_session_mount(session_.get(), dev_fd.c_str()) != 0) {
        session_.reset();
        return Status::InvalidArgument("libfuse does not take the FUSE fd " + dev_fd);
      }
      resume_fd.release();  // fuse_session_destroy closes it
      // The kernel sent INIT to the first daemon only; libfuse serves nothing before one.
      std::vector<uint8_t> init = InitRequestForResume(options_.max_request_bytes);
      fuse_buf buf{};
      buf.size = init.size();
      buf.mem = init.data();
      fuse_session_process_buf(session_.get(), &buf);
      if (fuse_session_exited(session_.get())) {
        session_.reset();
        return Status::Internal("libfuse refused the INIT of the resumed connection of '" +
                                mountpoint_.string() + "'");
      }
      dev_ = device;
    } else if (fuse_session_mount(session_.get(), mountpoint_.c_str()) != 0) {
      session_.reset();
      return Status::IoError("cannot mount FUSE at '" + mountpoint_.string() +
                             "' (see libfuse's message above; root or fusermount3 needed)");
    }
    {
      std::lock_guard<std::mutex> lock(unmount_mu_);
      mounted_ = true;
    }
    try {
      // Jobs come from reads, which have the layer.
      if (options_.fill_page_cache) {
        filler_ = std::make_unique<PageCacheFiller>(
            session_.get(), [this] { return HasLayer() && layer_->quarantined(); });
      }
    } catch (const std::system_error&) {
      filler_.reset();  // no thread: small reads just do not fill the page cache
    }
    if (resume) {
      // The requests the previous daemon read and never answered: queued again, for this one
      // (before the workers start, so that none is taken twice).
      // LAZYCRYPT_TEST_NO_FUSE_RESEND=1 shows what a kernel before 6.9 does (tests, docs).
      const char* no_resend = std::getenv("LAZYCRYPT_TEST_NO_FUSE_RESEND");
      resend_status_ = no_resend != nullptr && std::string_view(no_resend) == "1"
                           ? Status::Unsupported("FUSE_NOTIFY_RESEND not sent "
                                                 "(LAZYCRYPT_TEST_NO_FUSE_RESEND=1)")
                           : NotifyResend(fuse_session_fd(session_.get()));
    }
    loop_ = std::thread([this] { RunLoop(); });
    if (resume) return Status::Ok();  // readahead and the rest were set up when it was mounted

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
    WakeWaiters(Waiting::kFail);
    StopSession();
    return Status::Ok();
  }

  const std::filesystem::path& mountpoint() const override { return mountpoint_; }
  cache::LayerStats stats() const override {
    return HasLayer() ? layer_->stats() : cache::LayerStats{};
  }

  Status Provide(std::shared_ptr<cache::LayerData> layer) override {
    if (!layer) return Status::InvalidArgument("FuseMount::Provide: no layer");
    auto table = InodeTable::Build(layer->index().entries());
    if (!table.ok()) return table.status().WithContext("layer " + options_.layer_name);
    ReleaseBuildMemory();
    std::lock_guard<std::mutex> lock(state_mu_);
    if (state_.load(std::memory_order_relaxed) == LayerState::kReady) {
      return Status::FailedPrecondition("mount '" + mountpoint_.string() +
                                        "' has its layer already");
    }
    SetLayer(std::move(layer), std::move(table).value());
    state_cv_.notify_all();
    return Status::Ok();
  }

  void Fail() override {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (state_.load(std::memory_order_relaxed) != LayerState::kPending) return;
    state_.store(LayerState::kFailed, std::memory_order_release);
    state_cv_.notify_all();
  }

  void LeaveMounted() override {
    std::lock_guard<std::mutex> lock(unmount_mu_);
    if (!mounted_) return;
    // Requests waiting for the layer return unanswered: the kernel resends them to the next
    // daemon (they stay in the connection's processing list, which the held fd keeps).
    WakeWaiters(Waiting::kLeave);
    // The page-cache filler first, while the workers still serve: a store waits for the page
    // locks of reads that only they can answer now (after EndLoop it would wait, in the kernel
    // and unkillable, for the next daemon).
    if (filler_) filler_->Stop();
    EndLoop();
    filler_.reset();
    session_.reset();  // closes this process's fd; the held duplicate keeps the connection
    mounted_ = false;
  }

  int fuse_fd() const override {
    std::lock_guard<std::mutex> lock(unmount_mu_);
    return session_ ? fuse_session_fd(session_.get()) : -1;
  }
  dev_t device() const override { return dev_; }
  Status resend_status() const override { return resend_status_; }
  uint64_t requests_waited() const override {
    return requests_waited_.load(std::memory_order_relaxed);
  }
  RequestCounts request_counts() const override {
    auto n = [this](Op op) {
      return counts_[static_cast<size_t>(op)].load(std::memory_order_relaxed);
    };
    RequestCounts c;
    c.lookup = n(Op::kLookup);
    c.getattr = n(Op::kGetAttr);
    c.readlink = n(Op::kReadLink);
    c.access = n(Op::kAccess);
    c.statfs = n(Op::kStatFs);
    c.open = n(Op::kOpen);
    c.read = n(Op::kRead);
    c.release = n(Op::kRelease);
    c.opendir = n(Op::kOpenDir);
    c.readdir = n(Op::kReadDir);
    c.readdirplus = n(Op::kReadDirPlus);
    c.releasedir = n(Op::kReleaseDir);
    c.getxattr = n(Op::kGetXattr);
    c.listxattr = n(Op::kListXattr);
    return c;
  }

  void InvalidateFileData() override {
    // Under unmount_mu_: the session stays alive meanwhile. Pending reads that hold page locks
    // are served by the session threads, so the kernel's invalidation does not wait on us.
    std::lock_guard<std::mutex> lock(unmount_mu_);
    if (!mounted_ || !session_ || !HasLayer()) return;
    // First the filler: a store after the invalidation would bring pages back.
    if (filler_) filler_->DropQueued();
    for (uint64_t ino = 1; ino <= table_->inode_count(); ++ino) {
      // ENOENT: the kernel has not looked this inode up, so it caches nothing of it.
      (void)fuse_lowlevel_notify_inval_inode(session_.get(), ino, 0, 0);
    }
  }

 private:
  static FuseMountImpl& Self(fuse_req_t req) {
    return *static_cast<FuseMountImpl*>(fuse_req_userdata(req));
  }

  enum class Op : size_t {
    kLookup, kGetAttr, kReadLink, kAccess, kStatFs, kOpen, kRead, kRelease, kOpenDir, kReadDir,
    kReadDirPlus, kReleaseDir, kGetXattr, kListXattr, kCount
  };
  // Counts a request (request_counts) and returns its mount.
  static FuseMountImpl& Counted(fuse_req_t req, Op op) {
    FuseMountImpl& self = Self(req);
    self.counts_[static_cast<size_t>(op)].fetch_add(1, std::memory_order_relaxed);
    return self;
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

  // The layer and its tree, set once: before the mount serves (Mount) or by Provide (Resume).
  // REQUIRES state_mu_ held, or no session yet.
  void SetLayer(std::shared_ptr<cache::LayerData> layer, std::unique_ptr<const InodeTable> table) {
    layer_ = std::move(layer);
    table_ = std::move(table);
    if (options_.access_recorder) {
      opened_ = std::make_unique<std::atomic<bool>[]>(table_->inode_count() + 1);  // from 1
    }
    state_.store(LayerState::kReady, std::memory_order_release);
  }
  bool HasLayer() const { return state_.load(std::memory_order_acquire) == LayerState::kReady; }

  enum class Waiting { kFail, kLeave };
  // Ends the waits for the layer: kFail answers them EIO (unmounting), kLeave returns them
  // unanswered (LeaveMounted).
  void WakeWaiters(Waiting how) {
    std::lock_guard<std::mutex> lock(state_mu_);
    (how == Waiting::kLeave ? leaving_ : stopping_) = true;
    state_cv_.notify_all();
  }

  // Whether a request may use layer_ and table_: at once when the layer is there, else after
  // waiting for it (a resumed mount being restored). Replies EIO when it does not come, and not
  // at all when the daemon is leaving the mount to its successor.
  static bool Ready(fuse_req_t req) {
    auto& self = Self(req);
    if (self.HasLayer()) return true;
    self.requests_waited_.fetch_add(1, std::memory_order_relaxed);
    std::unique_lock<std::mutex> lock(self.state_mu_);
    self.state_cv_.wait_for(lock, self.options_.pending_wait, [&] {
      return self.state_.load(std::memory_order_relaxed) != LayerState::kPending ||
             self.leaving_ || self.stopping_;
    });
    if (self.state_.load(std::memory_order_relaxed) == LayerState::kReady) return true;
    if (self.leaving_) return false;  // unanswered: resent to the next daemon
    lock.unlock();
    fuse_reply_err(req, EIO);
    return false;
  }

  // Ends the session loop whether or not the connection has ended: libfuse's loop thread waits
  // for a worker to end; interrupted by a signal, it sees the session exited and cancels the
  // workers in their read of /dev/fuse (a request one of them had taken stays in the connection,
  // for a next daemon). Sent until the loop has ended: a signal that comes just before its wait
  // begins is lost. No request is sent to the mount (only a next daemon could answer it).
  // REQUIRES unmount_mu_ held.
  void EndLoop() {
    if (!loop_.joinable()) return;
    fuse_session_exit(session_.get());
    const pthread_t loop_thread = loop_.native_handle();
    while (!loop_done_.load()) {
      ::pthread_kill(loop_thread, WakeSignal());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    loop_.join();
  }

  // REQUIRES unmount_mu_ held and the kernel side unmounted or aborted. An unmounted connection
  // can live on: a container's overlayfs (in another mount namespace) may still hold the
  // superblock, or an fd store a duplicate of the fd; so the loop is ended, not awaited.
  void StopSession() {
    if (filler_) filler_->Stop();  // first: see LeaveMounted
    EndLoop();
    filler_.reset();
    fuse_session_unmount(session_.get());  // closes the fd; nothing left to unmount
    session_.reset();
    mounted_ = false;
  }

  void RunLoop() {
    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> cfg(fuse_loop_cfg_create());
    fuse_loop_cfg_set_clone_fd(cfg.get(), options_.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(cfg.get(), std::max(1u, options_.max_threads));
    int rc = fuse_session_loop_mt(session_.get(), cfg.get());
    loop_done_.store(true);  // before this thread ends: LeaveMounted signals it until then
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

  // Reports `ino` to the access recorder unless it was reported before, by the name of the TOC
  // entry holding its data (for a hardlinked file, the name a prefetch mark applies to).
  void RecordFirstOpen(uint64_t ino, format::EntryView data) {
    if (ino > table_->inode_count() || opened_[ino].exchange(true, std::memory_order_relaxed)) {
      return;
    }
    options_.access_recorder->RecordAccess(data.name());
  }

  // Logs a failed read once per (inode, chunk). Never logs file data.
  void LogReadFailure(uint64_t ino, format::EntryView entry, uint64_t offset, size_t size,
                      const Status& s) {
    format::ChunkRange chunks = layer_->index().ChunksForRange(entry, offset, std::max<size_t>(size, 1));
    uint64_t first = chunks.empty() ? 0 : chunks.first;
    uint64_t last = chunks.empty() ? 0 : chunks.first + chunks.count - 1;
    {
      std::lock_guard<std::mutex> lock(log_mu_);
      if (!logged_failures_.emplace(ino, first).second) return;
    }
    // The inode number, not the path: names in the TOC are confidential (FORMAT.md §4).
    const std::string path =
        options_.log_file_names ? " (file '" + table_->Path(ino) + "')" : std::string();
    std::fprintf(stderr,
                 "lazycrypt: %s: inode %llu%s offset %llu size %zu (chunks %llu..%llu): EIO: %s\n",
                 options_.layer_name.c_str(), static_cast<unsigned long long>(ino), path.c_str(),
                 static_cast<unsigned long long>(offset), size, static_cast<unsigned long long>(first),
                 static_cast<unsigned long long>(last), s.ToString().c_str());
  }

  // Replies EIO when the layer is quarantined (docs/FORMAT.md §8.4): its metadata (names,
  // symlink targets, whiteouts, modes, xattrs) is the author's too, and is served no more than
  // its bytes. Checked first by every handler that serves TOC metadata.
  // Also waits for the layer of a resumed mount (Ready): true when the request was answered (or
  // left to the next daemon).
  static bool RefusedAsQuarantined(fuse_req_t req) {
    if (!Ready(req)) return true;
    if (!Self(req).layer_->quarantined()) return false;
    fuse_reply_err(req, EIO);
    return true;
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
    // Zero-message opens (libfuse: answering ENOSYS to the first open means "success, and do not
    // ask again"): see Open and OpenDir.
    self.kernel_opens_files_.store((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0 &&
                                       !self.options_.access_recorder,
                                   std::memory_order_relaxed);
    self.kernel_opens_dirs_.store((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0,
                                  std::memory_order_relaxed);
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
    auto& self = Counted(req, Op::kLookup);
    if (RefusedAsQuarantined(req)) return;
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
    auto& self = Counted(req, Op::kGetAttr);
    // The root keeps answering: unmounting stats it.
    if (ino == FUSE_ROOT_ID ? !Ready(req) : RefusedAsQuarantined(req)) return;
    auto st = self.table_->Attr(ino);
    if (!st.ok()) {
      fuse_reply_err(req, StatusToErrno(st.status()));
      return;
    }
    fuse_reply_attr(req, &*st, self.options_.attr_timeout_sec);
  }

  static void ReadLink(fuse_req_t req, fuse_ino_t ino) {
    auto& self = Counted(req, Op::kReadLink);
    if (RefusedAsQuarantined(req)) return;
    auto target = self.table_->Readlink(ino);
    if (!target.ok()) {
      fuse_reply_err(req, StatusToErrno(target.status()));
      return;
    }
    std::string t(*target);
    fuse_reply_readlink(req, t.c_str());
  }

  // With zero-message opens (kernel_opens_files_), the first open is answered ENOSYS: the kernel
  // takes that as success for this and every later open of the connection (fs/fuse/file.c
  // fuse_file_open: no_open), with FOPEN_KEEP_CACHE, and sends no OPEN or RELEASE again. Nothing
  // is lost: the mount is read-only (the VFS refuses writes before FUSE is asked), and Read finds
  // the data by inode, never by a handle (so files opened under a previous daemon read the same,
  // FuseMount::Resume). A quarantined layer's reads fail with EIO whoever opened the file. Not
  // when recording opens (access_recorder): the recorder needs to see each one.
  static void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& self = Counted(req, Op::kOpen);
    if (self.kernel_opens_files_.load(std::memory_order_relaxed)) {
      fuse_reply_err(req, ENOSYS);
      return;
    }
    if (!Ready(req)) return;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      fuse_reply_err(req, EROFS);
      return;
    }
    auto entry = self.table_->DataEntry(ino);
    if (!entry.ok()) {
      fuse_reply_err(req, StatusToErrno(entry.status()));
      return;
    }
    // No handle: Read finds the data by inode, so that a file opened under the previous daemon
    // (FuseMount::Resume) reads the same.
    fi->fh = 0;
    fi->keep_cache = 1;
    if (self.options_.access_recorder) self.RecordFirstOpen(ino, *entry);
    fuse_reply_open(req, fi);
  }

  static void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    auto& self = Counted(req, Op::kRead);
    if (!Ready(req)) return;
    auto data = self.table_->DataEntry(ino);
    if (!data.ok() || off < 0) {
      fuse_reply_err(req, data.ok() ? EINVAL : StatusToErrno(data.status()));
      return;
    }
    const format::EntryView entry = *data;
    const uint64_t file_size = entry.size();
    uint64_t offset = static_cast<uint64_t>(off);
    if (offset >= file_size || size == 0) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    size_t want = static_cast<size_t>(std::min<uint64_t>(size, file_size - offset));
    // Replies straight from the opened chunks (no copy in user space); the view keeps them
    // alive until the kernel has copied them.
    auto view = self.layer_->ViewFile(entry, offset, want);
    if (!view.ok()) {
      // A quarantined layer's failure was logged once, by layer, without file names.
      if (!self.layer_->quarantined()) {
        self.LogReadFailure(ino, entry, offset, want, view.status());
      }
      fuse_reply_err(req, EIO);
      return;
    }
    std::vector<iovec> iov;
    iov.reserve(view->spans.size());
    for (ByteSpan span : view->spans) {
      iov.push_back({const_cast<uint8_t*>(span.data()), span.size()});
    }
    fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
    // A read smaller than the chunks it opened (a random read; sequential reads are large and
    // the kernel's read-ahead covers them): give the rest of those chunks to the page cache.
    if (self.filler_ && want < kSmallReadBytes) {
      self.filler_->Add({ino, file_size, offset, offset + want, std::move(*view)});
    }
  }
  // Reads below this size count as random for PageCacheFiller (the kernel's read-ahead sends
  // sequential reads in requests of up to max_request_bytes).
  static constexpr size_t kSmallReadBytes = 256 * 1024;

  static void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    Counted(req, Op::kRelease);
    fuse_reply_err(req, 0);
  }

  // With zero-message opendirs, ENOSYS as for Open: the kernel then opens directories by itself
  // with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR (what this handler would answer), so listings stay
  // cached and no OPENDIR/RELEASEDIR is sent again. READDIR still comes here (quarantine: EIO).
  static void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& self = Counted(req, Op::kOpenDir);
    if (self.kernel_opens_dirs_.load(std::memory_order_relaxed)) {
      fuse_reply_err(req, ENOSYS);
      return;
    }
    if (!Ready(req)) return;
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
    if (RefusedAsQuarantined(req)) return;
    auto& self = Self(req);
    auto children = self.table_->ReadDir(ino);
    auto parent = self.table_->Parent(ino);
    if (!children.ok() || !parent.ok()) {
      fuse_reply_err(req, StatusToErrno(children.ok() ? parent.status() : children.status()));
      return;
    }
    std::vector<char> buf(size);
    // The dirents hold decrypted names: wiped however this returns, once the kernel has them.
    struct WipeOnReturn {
      std::vector<char>& bytes;
      ~WipeOnReturn() { explicit_bzero(bytes.data(), bytes.size()); }
    } wipe_names{buf};
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
    Counted(req, Op::kReadDir);
    DoReadDir(req, ino, size, off, false);
  }
  static void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Counted(req, Op::kReadDirPlus);
    DoReadDir(req, ino, size, off, true);
  }
  static void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    Counted(req, Op::kReleaseDir);
    fuse_reply_err(req, 0);
  }

  // FUSE caches no xattr answer, and overlayfs asks its lower layers on every lookup of a new
  // overlay (each container): trusted.overlay.metacopy of each regular file, trusted.overlay.
  // opaque (and .redirect) of each directory above the lowest layer; security.capability on exec.
  // A layer without any xattr answers ENOSYS, once: the kernel then answers EOPNOTSUPP itself
  // for the connection (fs/fuse/xattr.c: no_getxattr, no_listxattr), which overlayfs, exec and
  // listxattr(2) users read as "no xattr", exactly what the layer holds. A layer with xattrs
  // (its TOC's, or the opaque marks of `.wh..wh..opq`) must answer each question itself.
  static bool NoXattrsInLayer(fuse_req_t req) {
    if (Self(req).table_->has_xattrs()) return false;
    fuse_reply_err(req, ENOSYS);
    return true;
  }

  // getxattr(2)'s protocol: size 0 asks for the value's size; a too small buffer is ERANGE.
  static void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    auto& self = Counted(req, Op::kGetXattr);
    if (RefusedAsQuarantined(req) || NoXattrsInLayer(req)) return;
    auto xattrs = self.table_->Xattrs(ino);
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
    auto& self = Counted(req, Op::kListXattr);
    if (RefusedAsQuarantined(req) || NoXattrsInLayer(req)) return;
    auto xattrs = self.table_->Xattrs(ino);
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

  // Answered without waiting for a resumed mount's layer (zero sizes until it is there).
  static void StatFs(fuse_req_t req, fuse_ino_t) {
    auto& self = Counted(req, Op::kStatFs);
    struct statvfs sv {};
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    if (self.HasLayer()) {
      sv.f_blocks = (self.layer_->index().tar_size() + 4095) / 4096;
      sv.f_files = self.layer_->index().entries().size();
    }
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
    fuse_reply_statfs(req, &sv);
  }

  static void Access(fuse_req_t req, fuse_ino_t ino, int mask) {
    auto& self = Counted(req, Op::kAccess);
    if (!Ready(req)) return;
    auto st = self.table_->Attr(ino);
    if (!st.ok()) {
      fuse_reply_err(req, StatusToErrno(st.status()));
      return;
    }
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
  }

  const std::filesystem::path mountpoint_;
  const MountOptions options_;
  // Set once (SetLayer) before state_ becomes kReady; read only after seeing kReady.
  std::shared_ptr<cache::LayerData> layer_;
  std::unique_ptr<const InodeTable> table_;
  enum class LayerState { kPending, kReady, kFailed };
  std::atomic<LayerState> state_{LayerState::kPending};
  std::mutex state_mu_;  // guards the transitions of state_, leaving_, stopping_
  std::condition_variable state_cv_;
  bool leaving_ = false;   // LeaveMounted: waiting requests go unanswered
  bool stopping_ = false;  // unmounting: waiting requests fail
  std::atomic<uint64_t> requests_waited_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Op::kCount)> counts_{};
  // From INIT: whether Open / OpenDir answer ENOSYS (zero-message opens, see Open).
  std::atomic<bool> kernel_opens_files_{false};
  std::atomic<bool> kernel_opens_dirs_{false};
  std::atomic<bool> loop_done_{false};
  Status resend_status_ = Status::Unsupported("not a resumed mount");

  mutable std::mutex unmount_mu_;  // guards mounted_, session_ teardown, loop_
  bool mounted_ = false;
  std::unique_ptr<fuse_session, SessionDeleter> session_;
  std::unique_ptr<PageCacheFiller> filler_;  // created after the mount, destroyed before it ends
  std::thread loop_;
  dev_t dev_ = 0;

  // Per inode: already reported to options_.access_recorder. Only allocated when recording.
  std::unique_ptr<std::atomic<bool>[]> opened_;

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
  ReleaseBuildMemory();
  auto mount = std::make_unique<FuseMountImpl>(mountpoint, std::move(layer), std::move(table).value(),
                                               options);
  LC_RETURN_IF_ERROR(mount->Start());
  return std::unique_ptr<FuseMount>(std::move(mount));
}

Result<std::unique_ptr<FuseMount>> FuseMount::Resume(UniqueFd fuse_fd,
                                                     const std::filesystem::path& mountpoint,
                                                     const MountOptions& options) {
  if (!fuse_fd.valid()) return Status::InvalidArgument("FuseMount::Resume: no FUSE fd");
  if (!SafeOptionValue(options.fsname) || !SafeOptionValue(options.subtype)) {
    return Status::InvalidArgument("FuseMount: fsname and subtype must be non-empty and free of "
                                   "',', '\\', '\"', '=' and spaces");
  }
  if (options.max_request_bytes < 4096) {
    return Status::InvalidArgument("FuseMount: max_request_bytes must be at least 4096");
  }
  LC_ASSIGN_OR_RETURN(dev_t device, FuseMountDevice(mountpoint, options.subtype));
  auto mount = std::make_unique<FuseMountImpl>(mountpoint, nullptr, nullptr, options);
  LC_RETURN_IF_ERROR(mount->Start(std::move(fuse_fd), device));
  return std::unique_ptr<FuseMount>(std::move(mount));
}

}  // namespace lazycrypt::fusefs
