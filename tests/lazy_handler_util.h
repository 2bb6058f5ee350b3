// Helpers of the tests that drive lazylayer::SnapshotHandler (or a lazily served layer) in this
// process with a real FUSE mount: an in-process fd store, reading a file whole with its errno, and
// the requests containerd would send for one layer.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/file_io.h"
#include "common/status.h"
#include "fdstore/fd_store.h"
#include "lazylayer/labels.h"
#include "lazylayer/snapshot_handler.h"
#include "snapshotter/types.h"

namespace lazycrypt::testing {

// An fd store in this process: what systemd's or the holder's would keep for the next daemon.
class MemoryFdStore final : public fdstore::FdStore {
 public:
  Status Put(const std::string& name, int fd) override {
    int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return ErrnoStatus("dup");
    std::lock_guard<std::mutex> lock(mu_);
    held_[name] = UniqueFd(copy);
    return Status::Ok();
  }
  Status Remove(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    held_.erase(name);
    return Status::Ok();
  }
  Result<std::vector<fdstore::NamedFd>> List() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<fdstore::NamedFd> out;
    for (const auto& [name, fd] : held_) {
      int copy = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
      if (copy < 0) return ErrnoStatus("dup");
      out.push_back(fdstore::NamedFd{name, UniqueFd(copy)});
    }
    return out;
  }
  std::string_view kind() const override { return "holder"; }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, UniqueFd> held_;
};

// The errno of reading `path` whole (0 when it reads), and what was read.
inline int ReadErrno(const std::filesystem::path& path, std::string* out = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  std::string data;
  char buf[65536];
  int err = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (out) *out = std::move(data);
  return err;
}

// containerd's Check of the snapshot `req` prepared.
inline snapshotter::CheckRequest CheckOf(const snapshotter::PrepareRequest& req) {
  snapshotter::CheckRequest c;
  c.name = req.labels.at(std::string(snapshotter::kTargetSnapshotLabel));
  c.parent = req.parent;
  c.labels = req.labels;
  c.target_dir = req.target_dir;
  c.snapshot_id = req.snapshot_id;
  return c;
}

// What `handler` reports for snapshot `id`, if it mounted it.
inline std::optional<lazylayer::MountedLayerStatus> StatusOf(
    const lazylayer::SnapshotHandler& handler, int64_t id) {
  for (auto& s : handler.Layers()) {
    if (s.snapshot_id == id) return s;
  }
  return std::nullopt;
}

// Waits (up to 60 s) for the verification of snapshot `id`'s layer to end.
inline lazylayer::Verification WaitForVerification(const lazylayer::SnapshotHandler& handler,
                                                   int64_t id) {
  for (int i = 0; i < 600; ++i) {
    auto s = StatusOf(handler, id);
    if (!s) return lazylayer::Verification::kPending;
    if (s->verification != lazylayer::Verification::kPending) return s->verification;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return lazylayer::Verification::kPending;
}

}  // namespace lazycrypt::testing
