// lazycrypt-fdholder: holds file descriptors (the /dev/fuse fds of lazycrypt's layers) while no
// snapshotter process serves them, and hands them back; see fdstore/fd_store.h and
// fdstore/holder_protocol.h. Used where systemd's fd store is not (no systemd, or a unit without
// FileDescriptorStoreMax=).
//
// It has nothing that can crash: one thread, one poll loop, fixed-size buffers; the only
// allocations are the map entry of a Put and the poll list. It ignores SIGPIPE, SIGHUP, SIGINT
// and SIGQUIT and exits on SIGTERM (or idle, below) only, removing its socket. Exiting closes
// every fd it holds: a FUSE connection that only the holder still holds (its snapshotter is
// gone) is then aborted by the kernel, and the container reads on that mount fail with ENOTCONN.
// So: never SIGTERM a holder while its snapshotter is down.
// Held fds whose connection ended (POLLERR/POLLHUP: the mount is gone) are dropped, as systemd's
// fd store does; with nothing held and no client connected for --idle-exit seconds (60), it
// exits: a snapshotter keeps its connection open while it runs.
//
// Usage: lazycrypt-fdholder --socket PATH         hold fds on PATH until SIGTERM
//        lazycrypt-fdholder --socket PATH --wait  exit 0 once a holder answers on PATH (for a
//                                                 Kubernetes init container: the snapshotter
//                                                 must find the long-lived holder, not start one
//                                                 in its own pod, which dies with that pod)
//        lazycrypt-fdholder --version | --help
// Exit: 0 on SIGTERM or when idle, or at start when another holder already serves PATH (it
// leaves that one alone); 2 on a usage or setup error (message on stderr).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include <CLI/CLI.hpp>

#include "common/file_io.h"
#include "common/version.h"
#include "crypto/process_hardening.h"
#include "fdstore/fd_store.h"
#include "fdstore/holder_protocol.h"
#include "fdstore/unix_message.h"

namespace lazycrypt::fdstore {
namespace {

constexpr char kProgram[] = "lazycrypt-fdholder";
constexpr size_t kMaxClients = 64;
// fds kept free for the listening socket, the signalfd, the lock, clients and a LIST in flight.
constexpr rlim_t kReservedFds = kMaxClients + 32;
// A client that does not read its LIST replies within this time is dropped, so that one stuck
// client cannot stop the holder from serving the others.
constexpr int kSendTimeoutMs = 2000;

void Fail(const char* what, int err) {
  std::fprintf(stderr, "%s: %s: %s\n", kProgram, what, std::strerror(err));
}

// Creates the socket's directory 0700 when missing; refuses one that others can enter or that
// belongs to another user (a same-named socket there could be someone else's).
bool PrepareDirectory(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    Fail(("mkdir " + dir.string()).c_str(), errno);
    return false;
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    Fail(("stat " + dir.string()).c_str(), errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    std::fprintf(stderr,
                 "%s: %s must be a directory owned by uid %u with mode 0700 (it is mode %04o, "
                 "uid %u)\n",
                 kProgram, dir.c_str(), ::geteuid(), st.st_mode & 07777, st.st_uid);
    return false;
  }
  return true;
}

void RaiseFdLimit() {
  struct rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) Fail("setrlimit(RLIMIT_NOFILE)", errno);
  }
}

size_t MaxHeldFds() {
  struct rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur <= kReservedFds * 2) return 64;
  if (limit.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<size_t>(limit.rlim_cur - kReservedFds);
}

class Holder {
 public:
  // idle_exit_ms > 0: exit once it has held nothing and had no client for that long.
  Holder(UniqueFd listener, UniqueFd signals, size_t max_held, int idle_exit_ms)
      : listener_(std::move(listener)),
        signals_(std::move(signals)),
        max_held_(max_held),
        idle_exit_ms_(idle_exit_ms) {}

  // Serves until SIGTERM (or idle, see the constructor).
  void Run() {
    // pollfd slots: 0 = signalfd, 1 = listener, 2.. = clients (fd -1: free), then the held fds
    // (no events asked: poll reports POLLERR/POLLHUP of a connection that ended by itself).
    std::vector<struct pollfd> polls;
    std::vector<std::string_view> held_names;
    for (;;) {
      size_t active = 0;
      polls.assign(2 + kMaxClients, pollfd{});
      polls[0] = {signals_.get(), POLLIN, 0};
      // When every client slot is taken, new connections wait in the listen backlog.
      for (const UniqueFd& client : clients_) active += client.valid() ? 1 : 0;
      polls[1] = {active < kMaxClients ? listener_.get() : -1, POLLIN, 0};
      for (size_t i = 0; i < kMaxClients; ++i) polls[2 + i] = {clients_[i].get(), POLLIN, 0};
      held_names.clear();
      for (const auto& [name, fd] : held_) {
        polls.push_back({fd.get(), 0, 0});
        held_names.push_back(name);
      }
      const bool idle = active == 0 && held_.empty();
      const int rc = ::poll(polls.data(), polls.size(), idle && idle_exit_ms_ > 0 ? idle_exit_ms_ : -1);
      if (rc == 0) return;  // idle for idle_exit_ms_: nothing to hold, nobody to hold it for
      if (rc < 0) {
        if (errno == EINTR) continue;
        Fail("poll", errno);
        continue;  // nothing here is worth dying for
      }
      // A FUSE connection that ended (its mount was unmounted, or it was aborted) serves no
      // one any more: as systemd's fd store, drop it.
      std::vector<std::string> ended;
      for (size_t i = 0; i < held_names.size(); ++i) {
        if (polls[2 + kMaxClients + i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
          ended.emplace_back(held_names[i]);
        }
      }
      for (const std::string& name : ended) {
        auto it = held_.find(name);
        if (it != held_.end()) held_.erase(it);
      }
      if (polls[0].revents != 0) {
        struct signalfd_siginfo info;
        if (::read(signals_.get(), &info, sizeof(info)) == sizeof(info) &&
            info.ssi_signo == SIGTERM) {
          return;
        }
      }
      if (polls[1].revents != 0) Accept();
      for (size_t i = 0; i < kMaxClients; ++i) {
        if (polls[2 + i].fd >= 0 && polls[2 + i].revents != 0) Serve(clients_[i]);
      }
    }
  }

 private:
  void Accept() {
    UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!client.valid()) return;  // EAGAIN, ECONNABORTED, EMFILE: the client sees a closed socket
    struct ucred peer;
    socklen_t peer_size = sizeof(peer);
    if (::getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0 ||
        (peer.uid != ::getuid() && peer.uid != 0)) {
      ReplyError(client.get(), "permission denied: the holder serves its own uid and root only");
      return;
    }
    // Sends block (bounded): a LIST reply is many messages and the client reads them as they come.
    const int flags = ::fcntl(client.get(), F_GETFL);
    if (flags >= 0) ::fcntl(client.get(), F_SETFL, flags & ~O_NONBLOCK);
    struct timeval timeout = {kSendTimeoutMs / 1000, (kSendTimeoutMs % 1000) * 1000};
    ::setsockopt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    for (UniqueFd& slot : clients_) {
      if (!slot.valid()) {
        slot = std::move(client);
        return;
      }
    }
  }

  // One request from `client`; closes it at end of stream or on a transport error.
  void Serve(UniqueFd& client) {
    char message[protocol::kMaxMessageBytes];
    bool truncated = false;
    const ssize_t size = ReceiveWithFds(client.get(), message, sizeof(message), MSG_DONTWAIT,
                                        &received_, &truncated);
    if (size == -EAGAIN || size == -EWOULDBLOCK) return;
    if (size <= 0) {
      client.reset();
      return;
    }
    bool ok;
    if (truncated) {
      ok = ReplyError(client.get(), "message too long");
    } else if (received_.control_truncated) {
      ok = ReplyError(client.get(), "too many fds in one message");
    } else {
      const std::string_view name(message + 1, static_cast<size_t>(size) - 1);
      switch (message[0]) {
        case protocol::kOpPut: ok = Put(client.get(), name); break;
        case protocol::kOpRemove: ok = Remove(client.get(), name); break;
        case protocol::kOpList: ok = List(client.get(), name); break;
        default: ok = ReplyError(client.get(), "unknown request"); break;
      }
    }
    for (UniqueFd& fd : received_.fds) fd.reset();  // fds of a refused request
    if (!ok) client.reset();
  }

  bool Put(int client, std::string_view name) {
    if (received_.count != 1) return ReplyError(client, "PUT carries exactly one fd");
    if (!ValidateFdName(name).ok()) return ReplyError(client, "invalid name");
    auto it = held_.find(name);
    if (it != held_.end()) {
      it->second = std::move(received_.fds[0]);  // closes the one it replaces
    } else {
      if (held_.size() >= max_held_) return ReplyError(client, "holder is full");
      held_.emplace(std::string(name), std::move(received_.fds[0]));
    }
    return Reply(client, protocol::kReplyOk);
  }

  bool Remove(int client, std::string_view name) {
    if (received_.count != 0) return ReplyError(client, "REMOVE carries no fd");
    if (!ValidateFdName(name).ok()) return ReplyError(client, "invalid name");
    auto it = held_.find(name);
    if (it != held_.end()) held_.erase(it);
    return Reply(client, protocol::kReplyOk);
  }

  bool List(int client, std::string_view rest) {
    if (received_.count != 0 || !rest.empty()) return ReplyError(client, "LIST carries nothing");
    char reply[protocol::kMaxReplyBytes];
    reply[0] = protocol::kReplyFd;
    for (const auto& [name, fd] : held_) {
      std::memcpy(reply + 1, name.data(), name.size());
      // The kernel installs a new fd in the receiver; ours stays held.
      if (SendWithFd(client, reply, 1 + name.size(), fd.get(), 0) < 0) return false;
    }
    return Reply(client, protocol::kReplyEnd);
  }

  static bool Reply(int client, char code) { return SendWithFd(client, &code, 1, -1, 0) == 1; }

  static bool ReplyError(int client, std::string_view reason) {
    char reply[protocol::kMaxReplyBytes];
    reply[0] = protocol::kReplyError;
    const size_t size = std::min(reason.size(), sizeof(reply) - 1);
    std::memcpy(reply + 1, reason.data(), size);
    return SendWithFd(client, reply, 1 + size, -1, 0) >= 0;
  }

  UniqueFd listener_;
  UniqueFd signals_;
  size_t max_held_;
  int idle_exit_ms_;
  UniqueFd clients_[kMaxClients];
  ReceivedFds received_;
  // std::less<> lets REMOVE look a name up without building a std::string.
  std::map<std::string, UniqueFd, std::less<>> held_;
};

// --wait: polls until a connect to `address` succeeds (a holder listens there). Starts nothing
// and takes no lock, so it never competes with the holder it waits for.
int WaitForHolder(const struct sockaddr_un& address) {
  constexpr auto kPollInterval = std::chrono::milliseconds(200);
  bool told = false;
  for (;;) {
    UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!probe.valid()) {
      Fail("socket", errno);
      return 2;
    }
    if (::connect(probe.get(), reinterpret_cast<const struct sockaddr*>(&address),
                  sizeof(address)) == 0) {
      std::fprintf(stderr, "%s: a holder answers on %s\n", kProgram, address.sun_path);
      return 0;
    }
    if (!told) {
      std::fprintf(stderr, "%s: waiting for a holder on %s (%s)\n", kProgram, address.sun_path,
                   std::strerror(errno));
      told = true;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

int Main(int argc, char** argv) {
  CLI::App app{
      "lazycrypt-fdholder: holds the /dev/fuse fds of lazycrypt-snapshotter's lazy layers while "
      "no snapshotter serves them (a crash, a restart, an upgrade), and hands them back over a "
      "unix socket. Exits on SIGTERM only, closing what it holds: a FUSE connection only the "
      "holder still held is then aborted, so never stop it while its snapshotter is down.",
      kProgram};
  app.set_version_flag("--version", VersionLine(kProgram));
  std::string socket_arg;
  bool wait = false;
  int idle_exit_s = 60;
  app.add_option("--socket", socket_arg,
                 "the holder's unix socket (its directory is created 0700; the snapshotter's "
                 "[restart] holder_socket, default <root>/fdholder/fdholder.sock)")
      ->required();
  app.add_flag("--wait", wait,
               "do not hold anything: exit 0 as soon as a holder answers on --socket (for an "
               "init container that must not start the snapshotter before its holder)");
  app.add_option("--idle-exit", idle_exit_s,
                 "exit after holding nothing, with no client connected, for this many seconds "
                 "(0: never); a snapshotter keeps its connection open while it runs")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (socket_arg.empty()) {
    std::fprintf(stderr, "%s: --socket must name a path\n", kProgram);
    return 2;
  }
  const std::filesystem::path socket_path = socket_arg;
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (socket_path.native().size() >= sizeof(address.sun_path)) {
    std::fprintf(stderr, "%s: socket path longer than %zu bytes: %s\n", kProgram,
                 sizeof(address.sun_path) - 1, socket_path.c_str());
    return 2;
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.native().size());
  if (wait) return WaitForHolder(address);

  crypto::HardenProcess(kProgram);  // no core dump, no ptrace by other users: it holds fds
  ::umask(077);
  // Dispositions: SIGTERM is taken through a signalfd (set to default first: an inherited
  // SIG_IGN would discard it even while blocked); the others a terminal or a dying parent sends
  // are ignored.
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGQUIT, SIG_IGN);
  ::signal(SIGTERM, SIG_DFL);
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  if (::sigprocmask(SIG_SETMASK, &term, nullptr) != 0) {
    Fail("sigprocmask", errno);
    return 2;
  }
  UniqueFd signals(::signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals.valid()) {
    Fail("signalfd", errno);
    return 2;
  }
  RaiseFdLimit();

  if (!PrepareDirectory(socket_path.parent_path())) return 2;
  // One holder per socket: the lock is held for the holder's life, so a second holder started on
  // the same path (two snapshotters racing to start one) leaves the live one's socket alone.
  const std::string lock_path = socket_path.string() + ".lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid()) {
    Fail(("open " + lock_path).c_str(), errno);
    return 2;
  }
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      std::fprintf(stderr, "%s: another holder serves %s; exiting\n", kProgram,
                   socket_path.c_str());
      return 0;
    }
    Fail(("flock " + lock_path).c_str(), errno);
    return 2;
  }
  // A socket file left by a holder that died (SIGKILL) answers nothing: replace it.
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    Fail(("unlink " + socket_path.string()).c_str(), errno);
    return 2;
  }
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener.valid()) {
    Fail("socket", errno);
    return 2;
  }
  if (::bind(listener.get(), reinterpret_cast<const struct sockaddr*>(&address),
             sizeof(address)) != 0 ||
      ::chmod(socket_path.c_str(), 0600) != 0 || ::listen(listener.get(), 128) != 0) {
    Fail(("listen on " + socket_path.string()).c_str(), errno);
    return 2;
  }

  Holder holder(std::move(listener), std::move(signals), MaxHeldFds(),
                idle_exit_s > 0 ? idle_exit_s * 1000 : 0);
  holder.Run();
  ::unlink(socket_path.c_str());  // still ours: the lock is held until exit
  return 0;
}

}  // namespace
}  // namespace lazycrypt::fdstore

int main(int argc, char** argv) { return lazycrypt::fdstore::Main(argc, argv); }
