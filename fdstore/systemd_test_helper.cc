// Test only (fd_store_test, FdStoreSystemd.*): the main process of a systemd test unit. Opens the
// fd store, appends what it finds to the report file (argv[1]), and on a start that finds the store
// empty fills it: a memfd, a name replaced by a second Put, a name put then removed. Then READY=1
// and waits to be killed or stopped.
#include <sys/mman.h>
#include <systemd/sd-daemon.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
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
      for (const auto& named : *listed) report += "fd " + named.name + " " + Content(named.fd.get()) + "\n";
      if (listed->empty()) {
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
