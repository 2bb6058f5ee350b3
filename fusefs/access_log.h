// Recording which regular files of mounted layers are accessed, for `lazycrypt record` and
// `lazycrypt mount --record` (prefetch lists, see `lazycrypt encrypt --prefetch-list`).
//
// FuseMount reports the first open of each regular-file inode to an AccessRecorder
// (MountOptions::access_recorder); AccessLog keeps those paths, from one or more mounts, in
// first-access order without duplicates.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace lazycrypt::fusefs {

// Told about file accesses of one mount. Called from FUSE worker threads, concurrently: every
// implementation must be thread-safe and quick (it runs inside the open request).
class AccessRecorder {
 public:
  virtual ~AccessRecorder() = default;
  // `path`: the file's path relative to the layer's root ("app/start.sh"). FuseMount calls this
  // at most once per inode, at the first open of a regular file.
  virtual void RecordAccess(std::string_view path) = 0;
};

// Paths in first-access order, de-duplicated across everything added (a path reported by two
// mounts, or twice, keeps its first position and source). Thread-safe (one mutex).
class AccessLog {
 public:
  struct Access {
    std::string path;   // as given to Add: relative to the layer root
    size_t source = 0;  // which mount reported it (e.g. the layer index)
  };

  // Appends `path` unless present. Returns whether it was new.
  bool Add(std::string_view path, size_t source = 0);
  std::vector<Access> Accesses() const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_set<std::string> seen_;
  std::vector<Access> order_;
};

// A recorder adding every access to `log` under `source`. Keeps `log` alive.
std::shared_ptr<AccessRecorder> NewAccessLogRecorder(std::shared_ptr<AccessLog> log,
                                                     size_t source = 0);

// The prefetch-list text for `accesses`: one absolute path ("/" + path) per line, in order.
// Paths holding a line break are left out (the list format cannot carry them).
std::string FormatAccessList(const std::vector<AccessLog::Access>& accesses);

}  // namespace lazycrypt::fusefs
