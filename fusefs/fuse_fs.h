// A read-only FUSE mount (libfuse3 low-level API) serving one lazycrypt layer: the tree of
// fusefs/inode_table.h, file data through cache::LayerData. Works as an overlayfs lowerdir.
// Reads are answered straight from the opened chunks (LayerData::ViewFile, no copy); after a
// small (random) read, the rest of the chunks it opened is handed to the kernel's page cache
// (notify_store, on a thread of its own) so that nearby reads do not open them again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cache/layer_data.h"
#include "common/status.h"
#include "fusefs/access_log.h"

namespace lazycrypt::fusefs {

struct MountOptions {
  std::string fsname = "lazycrypt";  // the "source" column of /proc/mounts
  std::string subtype = "lazycrypt";  // type shows as fuse.<subtype>
  // Lets other users (containerd, overlayfs on behalf of containers) read the mount. Needs root
  // or user_allow_other in /etc/fuse.conf.
  bool allow_other = true;
  // The kernel checks permission bits itself (the layer's modes and owners apply).
  bool default_permissions = true;
  // The layer is immutable: the kernel may cache names and attributes for this long.
  double entry_timeout_sec = 86400;
  double attr_timeout_sec = 86400;
  // Worker threads of the multithreaded session loop; each gets its own /dev/fuse clone if
  // clone_fd.
  unsigned max_threads = 16;
  bool clone_fd = true;
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
  // readdir, getxattr and listxattr fail with EIO too. No-op once unmounted.
  virtual void InvalidateFileData() = 0;

  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

 protected:
  FuseMount() = default;
};

}  // namespace lazycrypt::fusefs
