#include "snapshotter/admin.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/file_io.h"
#include "snapshotter/config.h"

namespace lazycrypt::snapshotter {
namespace fs = std::filesystem;
namespace {

constexpr size_t kMaxRequestBytes = 256;
constexpr size_t kMaxAnswerBytes = 16u << 20;
constexpr int kIoTimeoutMs = 5000;

Result<sockaddr_un> UnixAddress(const fs::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("socket path too long for a unix socket: " + path.string());
  }
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  return addr;
}

Status SetTimeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    return ErrnoStatus("setsockopt");
  }
  return Status::Ok();
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("admin socket write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Reads until `stop_at_newline` sees '\n', EOF, or `limit` bytes.
Result<std::string> ReadUpTo(int fd, size_t limit, bool stop_at_newline) {
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    const ssize_t n = ::recv(fd, buf, std::min(sizeof buf, limit - out.size()), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("admin socket read");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (stop_at_newline && out.find('\n') != std::string::npos) break;
  }
  return out;
}

std::string ErrorJson(const std::string& message) {
  return nlohmann::json{{"ok", false}, {"error", message}}.dump() + "\n";
}

std::string FormatBytesShort(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1u << 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  }
  return buf;
}

}  // namespace

fs::path AdminSocketPath(const fs::path& containerd_socket) {
  return fs::path(containerd_socket.string() + ".admin");
}

std::string RenderPurgeReportJson(const PurgeReport& report) {
  nlohmann::json removed = nlohmann::json::array();
  for (const auto& r : report.removed) {
    removed.push_back({{"snapshot", r.snapshot},
                       {"layer", r.layer_digest},
                       {"reason", r.reason},
                       {"bytes_freed", r.bytes_freed},
                       {"note", r.note}});
  }
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& k : report.kept) {
    kept.push_back({{"snapshot", k.snapshot}, {"reason", k.reason}, {"why_kept", k.why_kept}});
  }
  nlohmann::json doc = {{"ok", true},
                        {"removed", std::move(removed)},
                        {"kept", std::move(kept)},
                        {"bytes_freed", report.bytes_freed}};
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Result<std::string> FormatPurgeReport(std::string_view report_json) {
  try {
    const nlohmann::json doc = nlohmann::json::parse(report_json);
    if (!doc.value("ok", false)) {
      return Status::FailedPrecondition("the daemon refused the purge: " +
                                        doc.value("error", std::string("(no message)")));
    }
    std::string out;
    const auto& removed = doc.at("removed");
    const auto& kept = doc.at("kept");
    if (removed.empty() && kept.empty()) {
      return std::string("nothing to purge: every remote layer is still usable on this node\n");
    }
    for (const auto& r : removed) {
      out += "removed snapshot " + r.at("snapshot").get<std::string>() + " layer " +
             r.at("layer").get<std::string>() + " (" +
             FormatBytesShort(r.at("bytes_freed").get<uint64_t>()) + " of cache freed): " +
             r.at("reason").get<std::string>() + "\n";
      const std::string note = r.value("note", std::string());
      if (!note.empty()) out += "  note: " + note + "\n";
    }
    for (const auto& k : kept) {
      out += "kept snapshot " + k.at("snapshot").get<std::string>() + ": " +
             k.at("why_kept").get<std::string>() + " (" + k.at("reason").get<std::string>() +
             ")\n";
    }
    out += std::to_string(removed.size()) + " snapshot(s) removed, " +
           std::to_string(kept.size()) + " kept, " +
           FormatBytesShort(doc.at("bytes_freed").get<uint64_t>()) + " of cache freed\n";
    return out;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("purge report from the daemon: ") + e.what());
  }
}

struct AdminServer::Impl {
  UniqueFd listen_fd;
  UniqueFd stop_fd;  // eventfd: written by the destructor
  fs::path path;
  Snapshotter* snapshotter = nullptr;
  LogSink log;
  std::thread thread;

  void Serve() {
    for (;;) {
      pollfd fds[2] = {{listen_fd.get(), POLLIN, 0}, {stop_fd.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        log(LogLevel::kError, ErrnoStatus("admin socket poll").ToString());
        return;
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      UniqueFd conn(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      Handle(conn.get());
    }
  }

  // One request; the connection is closed by the caller.
  void Handle(int fd) {
    if (!SetTimeouts(fd, kIoTimeoutMs).ok()) return;
    ucred peer{};
    socklen_t len = sizeof peer;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
        (peer.uid != 0 && peer.uid != ::geteuid())) {
      (void)WriteAll(fd, ErrorJson("permission denied: only root or the daemon's user may ask"));
      return;
    }
    auto request = ReadUpTo(fd, kMaxRequestBytes, /*stop_at_newline=*/true);
    if (!request.ok()) return;
    std::string command = request->substr(0, request->find('\n'));
    if (command == "purge") {
      log(LogLevel::kInfo, "purge requested on the admin socket (pid " + std::to_string(peer.pid) +
                               ")");
      auto report = snapshotter->Purge();
      if (!report.ok()) {
        log(LogLevel::kWarn, "purge: " + report.status().ToString());
        (void)WriteAll(fd, ErrorJson(report.status().message()));
        return;
      }
      (void)WriteAll(fd, RenderPurgeReportJson(*report));
      return;
    }
    (void)WriteAll(fd, ErrorJson("unknown request (known: purge)"));
  }
};

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() {
  if (impl_->thread.joinable()) {
    const uint64_t one = 1;
    (void)!::write(impl_->stop_fd.get(), &one, sizeof one);
    impl_->thread.join();
  }
  ::unlink(impl_->path.c_str());
}

Result<std::unique_ptr<AdminServer>> AdminServer::Start(const fs::path& path,
                                                        Snapshotter* snapshotter, LogSink log) {
  LC_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists(path.string() + " exists and is not a socket");
    }
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() &&
        ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return Status::AlreadyExists("another server is listening on " + path.string());
    }
    if (::unlink(path.c_str()) != 0) return ErrnoStatus("removing stale socket " + path.string());
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->snapshotter = snapshotter;
  impl->log = log ? std::move(log) : NullLogSink();
  impl->listen_fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!impl->listen_fd.valid()) return ErrnoStatus("admin socket");
  // Created with no permissions for anyone else, then 0600: never briefly open to others.
  const mode_t old_umask = ::umask(0177);
  const int bound = ::bind(impl->listen_fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0) return ErrnoStatus("bind " + path.string(), bind_errno);
  if (::chmod(path.c_str(), 0600) != 0) return ErrnoStatus("chmod " + path.string());
  if (::listen(impl->listen_fd.get(), 4) != 0) return ErrnoStatus("listen " + path.string());
  impl->stop_fd.reset(::eventfd(0, EFD_CLOEXEC));
  if (!impl->stop_fd.valid()) return ErrnoStatus("eventfd");
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Serve(); });
  raw->log(LogLevel::kInfo, "admin socket (purge) on " + path.string());
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

Result<std::string> AdminRequest(const fs::path& path, std::string_view command) {
  LC_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::Unavailable("cannot reach lazycrypt-snapshotter's admin socket at " +
                               path.string() + ": " + std::strerror(errno) +
                               " (is the daemon running?)");
  }
  // A purge unmounts and removes layers: allow it time.
  LC_RETURN_IF_ERROR(SetTimeouts(fd.get(), 120000));
  LC_RETURN_IF_ERROR(WriteAll(fd.get(), std::string(command) + "\n"));
  (void)::shutdown(fd.get(), SHUT_WR);
  return ReadUpTo(fd.get(), kMaxAnswerBytes, /*stop_at_newline=*/false);
}

int PurgeMain(int argc, char** argv) {
  CLI::App app{"lazycrypt-snapshotter purge: ask the running daemon to remove the remote layers "
               "this node may no longer use (no node key unwraps them, or quarantined): their "
               "FUSE mounts, snapshots and cached ciphertext; prints what was removed and what "
               "was kept (a running container still uses it)"};
  std::string config_path, address;
  bool json = false;
  app.add_option("--config", config_path, "the daemon's TOML config file (for its address)");
  app.add_option("--address", address,
                 "the daemon's containerd socket (the admin socket is this path + \".admin\")");
  app.add_flag("--json", json, "print the daemon's JSON report");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  Config config;
  if (!config_path.empty()) {
    auto loaded = LoadConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "lazycrypt-snapshotter purge: " << loaded.status().ToString() << "\n";
      return 2;
    }
    config = std::move(*loaded);
  }
  if (!address.empty()) config.address = address;
  auto answer = AdminRequest(AdminSocketPath(config.address), "purge");
  if (!answer.ok()) {
    std::cerr << "lazycrypt-snapshotter purge: " << answer.status().ToString() << "\n";
    return 1;
  }
  if (json) {
    std::cout << *answer;
    const nlohmann::json doc = nlohmann::json::parse(*answer, nullptr, /*allow_exceptions=*/false);
    return !doc.is_discarded() && doc.is_object() && doc.value("ok", false) ? 0 : 1;
  }
  auto text = FormatPurgeReport(*answer);
  if (!text.ok()) {
    std::cerr << "lazycrypt-snapshotter purge: " << text.status().ToString() << "\n";
    return 1;
  }
  std::cout << *text;
  return 0;
}

}  // namespace lazycrypt::snapshotter
