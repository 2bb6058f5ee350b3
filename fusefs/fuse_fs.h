// A read-only FUSE mount (libfuse3 low-level API) serving one lazycrypt layer: the tree of
// fusefs/inode_table.h, file data through cache::LayerData. Works as an overlayfs lowerdir.
// Reads are answered straight from the opened chunks (LayerData::ViewFile, no copy); after a
// small (random) read, the rest of the chunks it opened is handed to the kernel's page cache
// (notify_store, on a thread of its own) so that nearby reads do not open them again.
// Metadata is cached by the kernel for the mount's lifetime, and what it would ask again and
// again is answered once for the connection (fusefs/README.md, "What the kernel is told"): opens
// and opendirs (ENOSYS: the kernel opens by itself, keeping page and readdir caches), and, for a
// layer without any xattr, getxattr/listxattr (ENOSYS: "none here", so overlayfs' per-file
// trusted.overlay.* questions stop reaching the daemon).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cache/layer_data.h"
#include "common/file_io.h"
#include "common/status.h"
#include "fusefs/access_log.h"

namespace lazycrypt::fusefs {

// "As long as the mount lives" for the kernel's caches: ten years (Linux keeps the expiry in
// jiffies; far larger values would only be capped).
inline constexpr double kMountLifetimeSec = 10.0 * 365 * 86400;

// FUSE requests a mount answered, by kind (FuseMount::request_counts). Requests the kernel never
// sends (see "What the kernel is told" in fusefs/README.md) are not here: they cost nothing.
struct RequestCounts {
  uint64_t lookup = 0, getattr = 0, readlink = 0, access = 0, statfs = 0;
  uint64_t open = 0, read = 0, release = 0;
  uint64_t opendir = 0, readdir = 0, readdirplus = 0, releasedir = 0;
  uint64_t getxattr = 0, listxattr = 0;
  uint64_t total() const {
    return lookup + getattr + readlink + access + statfs + open + read + release + opendir +
           readdir + readdirplus + releasedir + getxattr + listxattr;
  }
};

struct MountOptions {
  std::string fsname = "lazycrypt";  // the "source" column of /proc/mounts
  std::string subtype = "lazycrypt";  // type shows as fuse.<subtype>
  // Lets other users (containerd, overlayfs on behalf of containers) read the mount. Needs root
  // or user_allow_other in /etc/fuse.conf.
  bool allow_other = true;
  // The kernel checks permission bits itself (the layer's modes and owners apply).
  bool default_permissions = true;
  // The layer is immutable: the kernel may cache names (and absences) and attributes for as
  // long as the mount lives (kMountLifetimeSec). A quarantine drops them explicitly
  // (InvalidateFileData), not by their expiry.
  double entry_timeout_sec = kMountLifetimeSec;
  double attr_timeout_sec = kMountLifetimeSec;
  // Worker threads of the multithreaded session loop; each gets its own /dev/fuse clone if
  // clone_fd. A mount that must survive its daemon (Resume) needs clone_fd off: the kernel fails
  // the requests a clone had read when the clone is closed (ECONNABORTED), while the requests
  // read from the main fd wait, with it, for the next daemon.
  unsigned max_threads = 16;
  bool clone_fd = true;
  // Small reads hand the rest of the chunks they opened to the page cache (FUSE notify_store,
  // on a thread of its own). A store waits for the page locks of reads in flight; if the daemon is
  // killed then, that thread stays stuck in the kernel until the next daemon answers those reads,
  // so the killed process never finishes exiting, and a supervisor that waits for it before
  // starting the next one (systemd, a test) waits for ever. Mounts that must survive their
  // daemon (an fd store) turn it off.
  bool fill_page_cache = true;
  // A resumed mount (Resume) answers requests only once it has its layer (Provide): until then
  // each request waits this long, then fails with EIO.
  std::chrono::milliseconds pending_wait{std::chrono::seconds(60)};
  // Largest read request negotiated (max_pages) and the mount's readahead (written to
  // /sys/class/bdi/<dev>/read_ahead_kb after mounting; 0 leaves the kernel default).
  uint32_t max_request_bytes = 1 << 20;
  uint32_t read_ahead_kb = 1024;
  // Names the layer in log lines ("layer sha256:...: inode 12 offset 4096: ...").
  std::string layer_name = "layer";
  // Debugging only: log lines name the file by its path in the layer as well as its inode. Off,
  // no decrypted name or path reaches a log (FORMAT.md §4): an operator turns it on knowingly
  // (snapshotter `log_file_names = true`, `lazycrypt mount --log-file-names`), with a warning.
  bool log_file_names = false;
  // Told the path (relative to the root; for hardlinks, the name of the TOC entry holding the
  // data) of each regular file the first time it is opened (once per inode), for `lazycrypt
  // record` (prefetch lists). Null: nothing is recorded and opens cost nothing extra.
  std::shared_ptr<AccessRecorder> access_recorder;
};

// One mounted layer. Thread-safe: Unmount may be called from any thread; the session runs on
// its own threads. Move-free and copy-free (the session's userdata points at it).
class FuseMount {
 public:
  // Builds the tree from layer->index() (Corruption if the entries do not form one), mounts it
  // read-only at `mountpoint` (an existing directory) and starts serving before returning.
  static Result<std::unique_ptr<FuseMount>> Mount(const std::filesystem::path& mountpoint,
                                                  std::shared_ptr<cache::LayerData> layer,
                                                  const MountOptions& options);
  // Serves `fuse_fd`, the /dev/fuse fd of the fuse.<subtype> mount at `mountpoint` that a
  // previous daemon left (e.g. taken back from an fd store), without mounting anything: the same
  // mount, so files open in running containers stay valid. Until Provide gives it the layer,
  // each request waits (options.pending_wait, then EIO). Asks the kernel to resend the requests
  // the previous daemon had read but not answered (Linux >= 6.9; resend_status() says). Needs
  // options.clone_fd off to survive its own daemon again. NotFound when no such mount is there.
  static Result<std::unique_ptr<FuseMount>> Resume(UniqueFd fuse_fd,
                                                   const std::filesystem::path& mountpoint,
                                                   const MountOptions& options);
  // Unmounts and stops the session threads. Idempotent (OK once unmounted). FailedPrecondition
  // ("busy") while files on the mount are open or it is a lower layer of a mounted overlayfs;
  // the mount keeps serving then.
  virtual Status Unmount() = 0;
  // Unmounts; if the mount is busy, detaches it lazily and aborts the FUSE connection (further
  // reads by holders of open files fail with ENOTCONN).
  virtual ~FuseMount() = default;

  virtual const std::filesystem::path& mountpoint() const = 0;
  virtual cache::LayerStats stats() const = 0;
  // Drops the kernel's cached data of every file (notify_inval_inode, mapped pages included, and
  // the cached attributes), so that every later read comes to the layer again: for a quarantined
  // layer, whose reads fail. Queued page-cache fills are dropped first, and none is stored once
  // the layer is quarantined. A quarantined layer's lookup, getattr (but the root's), readlink,
  // readdir, getxattr and listxattr fail with EIO too; except that on a layer without any xattr,
  // once the kernel was told so (ENOSYS), getxattr and listxattr keep failing with EOPNOTSUPP in
  // the kernel: the layer has nothing there to withhold. No-op once unmounted.
  virtual void InvalidateFileData() = 0;

  // Gives a resumed mount its layer. The tree is built as Mount builds it (same inode numbers,
  // so the kernel's inodes and open files stay valid). Corruption if the entries do not form a
  // tree (the mount keeps waiting); FailedPrecondition when it has a layer already. A failed
  // mount (Fail) serves again once given its layer.
  virtual Status Provide(std::shared_ptr<cache::LayerData> layer) = 0;
  // A resumed mount whose layer cannot be restored (now): every request fails with EIO until a
  // Provide (never an empty directory), the waiting ones at once.
  virtual void Fail() = 0;
  // Stops serving without unmounting, for a daemon that exits and leaves its mounts to the next
  // one: requests being answered are answered, requests waiting for the layer are left to the
  // kernel (resent to the next daemon), new ones wait in the kernel. The connection lives on only
  // if another process holds a duplicate of fuse_fd(). Afterwards Unmount and the destructor
  // leave the mount alone. Idempotent.
  virtual void LeaveMounted() = 0;

  // The connection's /dev/fuse fd, owned by the mount (dup it to keep the connection alive).
  virtual int fuse_fd() const = 0;
  // The mount's device: 0:N, N the connection's number (/sys/fs/fuse/connections/N).
  virtual dev_t device() const = 0;
  // Resume only: OK when the kernel took FUSE_NOTIFY_RESEND, else why not.
  virtual Status resend_status() const = 0;
  // Requests that arrived before the layer did (a resumed mount's restore) and waited for it.
  virtual uint64_t requests_waited() const = 0;
  // The requests this FuseMount answered so far (not those of an earlier daemon of a resumed
  // mount). Relaxed counters: exact once the requests counted have been answered.
  virtual RequestCounts request_counts() const = 0;
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

 protected:
  FuseMount() = default;
};

}  // namespace lazycrypt::fusefs
