// lazycrypt-snapshotter-fake-remote: TEST ONLY. The real daemon with a RemoteLayerHandler that
// "mounts" every layer Prepare'd with containerd.io/snapshot.ref by bind-mounting (read-only) the
// directory named by $LAZYCRYPT_FAKE_REMOTE_ROOTFS at the snapshot's fs dir. It exercises the
// whole remote flow with real containerd (ALREADY_EXISTS, restore after restart, unmount on
// remove) before the FUSE layers exist. Needs root (mount(2)).
#include <sys/mount.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>

#include "snapshotter/daemon.h"

namespace lazycrypt::snapshotter {
namespace {

class BindMountRemote final : public RemoteLayerHandler {
 public:
  BindMountRemote(std::filesystem::path rootfs, LogSink log)
      : rootfs_(std::move(rootfs)), log_(std::move(log)) {}

  Result<bool> TryMount(const PrepareRequest& info) override {
    LC_RETURN_IF_ERROR(Bind(info.target_dir));
    log_(LogLevel::kInfo, "fake remote: mounted layer " +
                              info.labels.at(std::string(kTargetSnapshotLabel)) + " at " +
                              info.target_dir.string());
    return true;
  }
  Status Unmount(int64_t, const std::filesystem::path& dir) override {
    if (::umount2(dir.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      return ErrnoStatus("umount " + dir.string());
    }
    log_(LogLevel::kInfo, "fake remote: unmounted " + dir.string());
    return Status::Ok();
  }
  Status Restore(const RestoreRequest& info) override {
    // A mount left by a killed daemon is detached first.
    LC_RETURN_IF_ERROR(Unmount(info.snapshot_id, info.target_dir));
    LC_RETURN_IF_ERROR(Bind(info.target_dir));
    log_(LogLevel::kInfo, "fake remote: restored " + info.name);
    return Status::Ok();
  }
  Status Check(const CheckRequest&) override { return Status::Ok(); }

 private:
  Status Bind(const std::filesystem::path& dir) {
    std::lock_guard lock(mu_);
    if (::mount(rootfs_.c_str(), dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      return ErrnoStatus("bind mount " + rootfs_.string() + " at " + dir.string());
    }
    if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      Status s = ErrnoStatus("remount read-only " + dir.string());
      ::umount2(dir.c_str(), MNT_DETACH);
      return s;
    }
    return Status::Ok();
  }

  std::mutex mu_;
  const std::filesystem::path rootfs_;
  const LogSink log_;
};

}  // namespace
}  // namespace lazycrypt::snapshotter

int main(int argc, char** argv) {
  using namespace lazycrypt::snapshotter;
  return DaemonMain(argc, argv, [](const Config&, const LogSink& log)
                                    -> lazycrypt::Result<std::shared_ptr<RemoteLayerHandler>> {
    const char* rootfs = std::getenv("LAZYCRYPT_FAKE_REMOTE_ROOTFS");
    if (!rootfs || !*rootfs) {
      return lazycrypt::Status::InvalidArgument("LAZYCRYPT_FAKE_REMOTE_ROOTFS is not set");
    }
    return std::shared_ptr<RemoteLayerHandler>(std::make_shared<BindMountRemote>(rootfs, log));
  });
}
