// Test only (fd_store_test, FdStoreSystemd.*): the main process of a systemd test unit. Opens the
// fd store, appends what it finds to the report file (argv[1]), and on a start that finds the store
// empty fills it: a memfd, a name replaced by a second Put, a name put then removed. Then READY=1
// and waits to be killed or stopped.
// With "fuse MOUNTPOINT" after the report file it stores /dev/fuse fds instead: one whose FUSE
// connection is mounted on MOUNTPOINT (nobody answers it: its FUSE_INIT request stays queued) and
// one never mounted; a later start reports the opcode of the first request it reads from each fd
// it gets back.
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <systemd/sd-daemon.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fdstore/fd_store.h"

namespace {

using lazycrypt::UniqueFd;

UniqueFd MemfdWith(const std::string& content) {
  UniqueFd fd(::memfd_create("fdstore-test", MFD_CLOEXEC));
  if (!fd.valid() || ::write(fd.get(), content.data(), content.size()) !=
                         static_cast<ssize_t>(content.size())) {
    std::abort();
  }
  return fd;
}

std::string Content(int fd) {
  char buf[256];
  const ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("<unreadable>");
}

// The opcode of the first request queued on a /dev/fuse fd (fuse_in_header: len, opcode, ...).
std::string FirstFuseOpcode(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) <= 0 || (p.revents & POLLIN) == 0) return "none";
  char buf[1 << 17];  // a read of /dev/fuse must offer room for the largest request
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n < 8) return "unreadable";
  uint32_t opcode;
  std::memcpy(&opcode, buf + 4, sizeof(opcode));
  return "opcode=" + std::to_string(opcode);
}

lazycrypt::Status StoreFuseFds(lazycrypt::fdstore::FdStore& store, const char* mountpoint) {
  UniqueFd mounted(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  UniqueFd unmounted(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!mounted.valid() || !unmounted.valid()) return lazycrypt::ErrnoStatus("open /dev/fuse");
  const std::string options = "fd=" + std::to_string(mounted.get()) +
                              ",rootmode=40000,user_id=0,group_id=0";
  if (::mount("fdstore-test", mountpoint, "fuse", MS_NODEV | MS_NOSUID, options.c_str()) != 0) {
    return lazycrypt::ErrnoStatus("mount fuse");
  }
  LC_RETURN_IF_ERROR(store.Put("lc-test-fuse", mounted.get()));
  return store.Put("lc-test-fuse-unmounted", unmounted.get());
}

}  // namespace

int main(int argc, char** argv) {
  const bool fuse = argc == 4 && std::string(argv[2]) == "fuse";
  if (argc != 2 && !fuse) return 2;
  const bool had_listen_fds = std::getenv("LISTEN_FDS") != nullptr;
  std::string report;
  auto store = lazycrypt::fdstore::OpenFdStore({"/nonexistent/fdstore-test.sock", ""});
  if (!store.ok()) {
    report += "error " + store.status().ToString() + "\n";
  } else {
    report += "start kind=" + std::string((*store)->kind()) +
              " had_listen_fds=" + (had_listen_fds ? "1" : "0") +
              " listen_env_cleared=" + (std::getenv("LISTEN_FDS") == nullptr ? "1" : "0") + "\n";
    auto listed = (*store)->List();
    if (!listed.ok()) {
      report += "error " + listed.status().ToString() + "\n";
    } else {
      for (const auto& named : *listed) {
        report += "fd " + named.name + " " +
                  (fuse ? FirstFuseOpcode(named.fd.get()) : Content(named.fd.get())) + "\n";
      }
      if (listed->empty() && fuse) {
        const lazycrypt::Status s = StoreFuseFds(**store, argv[3]);
        report += s.ok() ? "stored\n" : "error " + s.ToString() + "\n";
      } else if (listed->empty()) {
        lazycrypt::Status s = (*store)->Put("lc-test-memfd", MemfdWith("first-start").get());
        if (s.ok()) s = (*store)->Put("lc-test-replaced", MemfdWith("old").get());
        if (s.ok()) s = (*store)->Put("lc-test-replaced", MemfdWith("new").get());
        if (s.ok()) s = (*store)->Put("lc-test-removed", MemfdWith("removed").get());
        if (s.ok()) s = (*store)->Remove("lc-test-removed");
        report += s.ok() ? "stored\n" : "error " + s.ToString() + "\n";
      }
    }
  }
  report += "ready\n";
  UniqueFd out(::open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  if (!out.valid() || ::write(out.get(), report.data(), report.size()) < 0) return 3;
  ::sd_notify(0, "READY=1");
  for (;;) ::pause();
}
