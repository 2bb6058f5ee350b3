#include "fdstore/fd_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "fdstore/holder_protocol.h"
#include "fdstore/unix_message.h"

namespace lazycrypt::fdstore {
namespace {

// How long OpenFdStore waits for a holder it started to listen.
constexpr auto kHolderStartTimeout = std::chrono::seconds(5);
// A holder answers at once; this bounds a wedged one (the holder drops clients that stall it).
constexpr int kHolderReplyTimeoutMs = 10000;
// sd_notify_barrier: how long to wait for systemd to have processed a FDSTORE message.
constexpr uint64_t kSystemdBarrierTimeoutUs = 5'000'000;

Result<UniqueFd> Duplicate(int fd) {
  UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!copy.valid()) return ErrnoStatus("fd store: dup");
  return copy;
}

Status SdStatus(std::string_view what, int negative_errno) {
  return ErrnoStatus(what, -negative_errno);
}

// ---------------------------------------------------------------------------------------------
// systemd's store. The fds systemd passed at start are kept here (one copy each) so that List
// answers from memory: systemd passes its store only at exec, never on request.

class SystemdFdStore final : public FdStore {
 public:
  explicit SystemdFdStore(std::map<std::string, UniqueFd> held) : held_(std::move(held)) {}

  Status Put(const std::string& name, int fd) override {
    LC_RETURN_IF_ERROR(ValidateFdName(name));
    LC_ASSIGN_OR_RETURN(UniqueFd copy, Duplicate(fd));
    std::lock_guard<std::mutex> lock(mu_);
    // systemd keeps every fd sent under a name (names need not be unique there): drop the old one
    // first so that the name is replaced, as in the holder. Between the two messages the name is
    // held by this process only.
    const std::string remove = "FDSTOREREMOVE=1\nFDNAME=" + name;
    int r = ::sd_pid_notify(0, 0, remove.c_str());
    if (r <= 0) return NotifyFailure("FDSTOREREMOVE", r);
    held_.erase(name);  // from here on systemd may hold neither; List must not say otherwise
    const std::string store = "FDSTORE=1\nFDNAME=" + name;
    const int fds[1] = {copy.get()};
    r = ::sd_pid_notify_with_fds(0, 0, store.c_str(), fds, 1);
    if (r <= 0) return NotifyFailure("FDSTORE", r);
    // The notification socket is a datagram socket: the sender learns nothing of what systemd
    // did. The barrier returns once systemd has processed every earlier message, so that a crash
    // after Put cannot lose the fd. It cannot tell whether systemd refused it (store full: systemd
    // logs "Too many file descriptors stored" and closes it); FileDescriptorStoreMax= must be
    // sized for every layer.
    r = ::sd_notify_barrier(0, kSystemdBarrierTimeoutUs);
    if (r < 0) return SdStatus("fd store: systemd: waiting for FDSTORE of " + name, r);
    held_[name] = std::move(copy);
    return Status::Ok();
  }

  Status Remove(const std::string& name) override {
    LC_RETURN_IF_ERROR(ValidateFdName(name));
    std::lock_guard<std::mutex> lock(mu_);
    const std::string remove = "FDSTOREREMOVE=1\nFDNAME=" + name;
    const int r = ::sd_pid_notify(0, 0, remove.c_str());
    if (r <= 0) return NotifyFailure("FDSTOREREMOVE", r);
    held_.erase(name);
    return Status::Ok();
  }

  Result<std::vector<NamedFd>> List() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<NamedFd> out;
    for (const auto& [name, fd] : held_) {
      LC_ASSIGN_OR_RETURN(UniqueFd copy, Duplicate(fd.get()));
      out.push_back({name, std::move(copy)});
    }
    return out;
  }

  std::string_view kind() const override { return "systemd"; }

 private:
  static Status NotifyFailure(std::string_view what, int r) {
    if (r == 0) {
      return Status::FailedPrecondition(
          "fd store: systemd: NOTIFY_SOCKET is no longer set (something unset it)");
    }
    return SdStatus(std::string("fd store: systemd: ") + std::string(what), r);
  }

  std::mutex mu_;
  std::map<std::string, UniqueFd> held_;
};

// The unit's FileDescriptorStoreMax over D-Bus: GetUnitByPID on the manager that runs us (a user
// manager sets $MANAGERPID; its private socket is $XDG_RUNTIME_DIR/systemd/private), then the
// Service property. systemd 252 does not tell the service this value any other way.
Result<uint32_t> QueryFdStoreMaxOverDbus() {
  sd_bus* raw_bus = nullptr;
  int r;
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  const bool user_manager = std::getenv("MANAGERPID") != nullptr;
  if (user_manager && runtime_dir == nullptr) {
    return Status::Unavailable("fd store: systemd user manager without XDG_RUNTIME_DIR");
  }
  const std::string private_socket = user_manager
                                         ? std::string(runtime_dir) + "/systemd/private"
                                         : std::string("/run/systemd/private");
  r = ::sd_bus_new(&raw_bus);
  if (r < 0) return SdStatus("fd store: sd_bus_new", r);
  std::unique_ptr<sd_bus, sd_bus* (*)(sd_bus*)> bus(raw_bus, ::sd_bus_flush_close_unref);
  const std::string address = "unix:path=" + private_socket;
  r = ::sd_bus_set_address(bus.get(), address.c_str());
  if (r >= 0) r = ::sd_bus_start(bus.get());
  if (r < 0) {
    // Not root (the private socket is root's): the system bus, when dbus runs.
    if (user_manager) return SdStatus("fd store: connect to " + private_socket, r);
    bus.reset();
    r = ::sd_bus_open_system(&raw_bus);
    if (r < 0) return SdStatus("fd store: connect to " + private_socket + " or the system bus", r);
    bus.reset(raw_bus);
  }
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  r = ::sd_bus_call_method(bus.get(), "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                           "org.freedesktop.systemd1.Manager", "GetUnitByPID", &error, &reply,
                           "u", static_cast<uint32_t>(::getpid()));
  const char* unit_path = nullptr;
  if (r >= 0) r = ::sd_bus_message_read(reply, "o", &unit_path);
  std::string path = (r >= 0 && unit_path != nullptr) ? unit_path : "";
  ::sd_bus_message_unref(reply);
  if (r < 0) {
    Status status = SdStatus(std::string("fd store: systemd GetUnitByPID: ") +
                                 (error.message != nullptr ? error.message : ""),
                             r);
    ::sd_bus_error_free(&error);
    return status;
  }
  uint32_t max = 0;
  r = ::sd_bus_get_property_trivial(bus.get(), "org.freedesktop.systemd1", path.c_str(),
                                    "org.freedesktop.systemd1.Service", "FileDescriptorStoreMax",
                                    &error, 'u', &max);
  if (r < 0) {
    Status status = SdStatus(std::string("fd store: systemd FileDescriptorStoreMax of ") + path +
                                 ": " + (error.message != nullptr ? error.message : ""),
                             r);
    ::sd_bus_error_free(&error);
    return status;
  }
  return max;
}

// The fds systemd passed at start, taken once; LISTEN_* are unset so that children do not see
// them (and a second call finds none).
Result<std::map<std::string, UniqueFd>> TakeListenFds() {
  char** names = nullptr;
  const int n = ::sd_listen_fds_with_names(1, &names);
  if (n < 0) return SdStatus("fd store: sd_listen_fds_with_names", n);
  std::map<std::string, UniqueFd> fds;
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // passed without it; a key-provider child must not get it
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "stored";
    fds[name].reset(fd);  // a duplicate name (not ours: we replace) keeps the last one
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return fds;
}

// ---------------------------------------------------------------------------------------------
// The holder's client: one connection, one request at a time.

Result<UniqueFd> ConnectHolder(const std::filesystem::path& socket_path) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (socket_path.native().size() >= sizeof(address.sun_path)) {
    return Status::InvalidArgument("fd store: holder socket path too long: " +
                                   socket_path.string());
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.native().size());
  UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoStatus("fd store: socket");
  if (::connect(sock.get(), reinterpret_cast<const struct sockaddr*>(&address),
                sizeof(address)) != 0) {
    return ErrnoStatus("fd store: connect to holder " + socket_path.string());
  }
  // The holder gets every FUSE connection of this daemon: only one run by root or by this
  // daemon's own user is trusted with them.
  struct ucred peer {};
  socklen_t peer_size = sizeof(peer);
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0) {
    return ErrnoStatus("fd store: credentials of holder " + socket_path.string());
  }
  if (peer.uid != 0 && peer.uid != ::getuid()) {
    return Status::PermissionDenied("fd store: the holder at " + socket_path.string() +
                                    " runs as uid " + std::to_string(peer.uid) +
                                    ", neither root nor this daemon's user");
  }
  struct timeval timeout = {kHolderReplyTimeoutMs / 1000, (kHolderReplyTimeoutMs % 1000) * 1000};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  return sock;
}

// Starts `binary --socket socket_path` as a daemon of its own: double fork + setsid, so that it
// is in no process group or session of ours (a kill -9 of us or of our group does not reach it)
// and init reaps it. Between fork and exec only async-signal-safe calls (this process may have
// threads). The holder gets no fd of ours (it would otherwise keep our /dev/fuse fds open
// forever), stdio on /dev/null (a pipe of ours kept open would hang whoever reads it) and an
// empty environment.
Status SpawnDetachedHolder(const std::filesystem::path& binary,
                           const std::filesystem::path& socket_path) {
  const std::string binary_arg = binary.string();
  const std::string socket_arg = socket_path.string();
  char* const argv[] = {const_cast<char*>(binary_arg.c_str()), const_cast<char*>("--socket"),
                        const_cast<char*>(socket_arg.c_str()), nullptr};
  char* const envp[] = {nullptr};
  const pid_t child = ::fork();
  if (child < 0) return ErrnoStatus("fd store: fork for the holder");
  if (child == 0) {
    ::setsid();
    const pid_t grandchild = ::fork();
    if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::chdir("/") != 0) ::_exit(126);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0) ::_exit(126);
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
      for (int fd = 3; fd < 65536; ++fd) ::close(fd);
    }
    ::execve(argv[0], argv, envp);
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoStatus("fd store: waitpid for the holder's launcher");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IoError("fd store: could not start the holder " + binary_arg);
  }
  return Status::Ok();
}

class HolderFdStore final : public FdStore {
 public:
  HolderFdStore(std::filesystem::path socket_path, UniqueFd connection)
      : socket_path_(std::move(socket_path)), connection_(std::move(connection)) {}

  Status Put(const std::string& name, int fd) override {
    LC_RETURN_IF_ERROR(ValidateFdName(name));
    std::lock_guard<std::mutex> lock(mu_);
    LC_RETURN_IF_ERROR(Send(protocol::kOpPut, name, fd));
    return ReceiveOk("PUT " + name);
  }

  Status Remove(const std::string& name) override {
    LC_RETURN_IF_ERROR(ValidateFdName(name));
    std::lock_guard<std::mutex> lock(mu_);
    LC_RETURN_IF_ERROR(Send(protocol::kOpRemove, name, -1));
    return ReceiveOk("REMOVE " + name);
  }

  Result<std::vector<NamedFd>> List() override {
    std::lock_guard<std::mutex> lock(mu_);
    LC_RETURN_IF_ERROR(Send(protocol::kOpList, "", -1));
    std::vector<NamedFd> out;
    for (;;) {
      char reply[protocol::kMaxReplyBytes];
      ReceivedFds fds;
      LC_ASSIGN_OR_RETURN(size_t size, Receive(reply, sizeof(reply), &fds, "LIST"));
      if (reply[0] == protocol::kReplyEnd && fds.count == 0) return out;
      if (reply[0] == protocol::kReplyError) {
        return Status::IoError("fd store: holder refused LIST: " +
                               std::string(reply + 1, size - 1));
      }
      if (reply[0] != protocol::kReplyFd || fds.count != 1) {
        connection_.reset();  // out of step: the next request starts on a new connection
        return Status::Corruption("fd store: holder sent a malformed LIST reply");
      }
      out.push_back({std::string(reply + 1, size - 1), std::move(fds.fds[0])});
    }
  }

  std::string_view kind() const override { return "holder"; }

 private:
  // REQUIRES: mu_ held. A request goes out on the current connection; after a transport error the
  // connection is dropped and the next request connects again (to a holder that may have been
  // restarted, holding nothing: never started again from here, so that a lost holder is seen as
  // an error rather than hidden).
  Status Send(char op, const std::string& name, int fd) {
    if (!connection_.valid()) {
      LC_ASSIGN_OR_RETURN(connection_, ConnectHolder(socket_path_));
    }
    char message[protocol::kMaxMessageBytes];
    message[0] = op;
    std::memcpy(message + 1, name.data(), name.size());
    const ssize_t sent = SendWithFd(connection_.get(), message, 1 + name.size(), fd, 0);
    if (sent < 0) {
      connection_.reset();
      return ErrnoStatus("fd store: send to holder " + socket_path_.string(),
                         static_cast<int>(-sent));
    }
    return Status::Ok();
  }

  Result<size_t> Receive(char* reply, size_t capacity, ReceivedFds* fds, const std::string& what) {
    bool truncated = false;
    const ssize_t size = ReceiveWithFds(connection_.get(), reply, capacity, 0, fds, &truncated);
    if (size <= 0) {
      connection_.reset();
      if (size == 0) return Status::Unavailable("fd store: holder closed the connection (" + what + ")");
      return ErrnoStatus("fd store: reply of holder to " + what, static_cast<int>(-size));
    }
    if (truncated || fds->control_truncated) {
      connection_.reset();
      return Status::Corruption("fd store: oversized reply of holder to " + what);
    }
    return static_cast<size_t>(size);
  }

  Status ReceiveOk(const std::string& what) {
    char reply[protocol::kMaxReplyBytes];
    ReceivedFds fds;
    LC_ASSIGN_OR_RETURN(size_t size, Receive(reply, sizeof(reply), &fds, what));
    if (reply[0] == protocol::kReplyOk && size == 1 && fds.count == 0) return Status::Ok();
    if (reply[0] == protocol::kReplyError) {
      return Status::IoError("fd store: holder refused " + what + ": " +
                             std::string(reply + 1, size - 1));
    }
    connection_.reset();
    return Status::Corruption("fd store: holder sent a malformed reply to " + what);
  }

  const std::filesystem::path socket_path_;
  std::mutex mu_;
  UniqueFd connection_;
};

Result<std::unique_ptr<FdStore>> OpenHolder(const FdStoreOptions& options) {
  if (options.holder_socket.empty()) {
    return Status::InvalidArgument("fd store: no holder socket configured");
  }
  Result<UniqueFd> connection = ConnectHolder(options.holder_socket);
  if (!connection.ok()) {
    if (options.holder_binary.empty()) return std::move(connection).status();
    LC_RETURN_IF_ERROR(SpawnDetachedHolder(options.holder_binary, options.holder_socket));
    const auto deadline = std::chrono::steady_clock::now() + kHolderStartTimeout;
    for (;;) {
      connection = ConnectHolder(options.holder_socket);
      if (connection.ok()) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        return connection.status().WithContext(
            "fd store: started " + options.holder_binary.string() + " but it does not answer");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return std::unique_ptr<FdStore>(
      new HolderFdStore(options.holder_socket, std::move(connection).value()));
}

}  // namespace

Status ValidateFdName(std::string_view name) {
  if (name.empty() || name.size() > kMaxFdNameBytes) {
    return Status::InvalidArgument("fd store: a name has 1.." + std::to_string(kMaxFdNameBytes) +
                                   " characters (got " + std::to_string(name.size()) + ")");
  }
  for (const char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument(
          "fd store: a name has only the characters [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<FdStore>> OpenFdStore(const FdStoreOptions& options) {
  if (std::getenv("NOTIFY_SOCKET") != nullptr) {
    uint32_t max = 0;
    if (const char* fdstore = std::getenv("FDSTORE"); fdstore != nullptr) {
      max = static_cast<uint32_t>(std::strtoul(fdstore, nullptr, 10));  // systemd >= 254
    } else if (Result<uint32_t> queried = QueryFdStoreMaxOverDbus(); queried.ok()) {
      max = *queried;
    }
    if (max > 0) {
      LC_ASSIGN_OR_RETURN(auto held, TakeListenFds());
      return std::unique_ptr<FdStore>(new SystemdFdStore(std::move(held)));
    }
  }
  return OpenHolder(options);
}

}  // namespace lazycrypt::fdstore
