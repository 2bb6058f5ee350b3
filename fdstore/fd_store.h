// A place where file descriptors live while no process serves them: each lazy layer's /dev/fuse
// fd is kept here, so that a crash, restart or upgrade of the snapshotter does not abort the FUSE
// connection (the kernel aborts it when the last fd of the connection is closed), and the next
// process takes the fds back and resumes serving the same mounts (issue 17).
//
// Two stores, one interface:
//  - "systemd": the service manager's file-descriptor store (FDSTORE=1, FileDescriptorStoreMax=),
//    when the process runs as a systemd service that has one. See fdstore/README.md for what
//    survives what under systemd 252 (Debian 12).
//  - "holder": lazycrypt-fdholder (fdstore/holder_main.cc), a tiny process of our own that only
//    holds fds and hands them back over a unix socket; started detached on first use.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"
#include "common/status.h"

namespace lazycrypt::fdstore {

// Longest name a store accepts. systemd allows 255 bytes in FDNAME=; the holder's messages are
// sized for this.
inline constexpr size_t kMaxFdNameBytes = 200;

// OK when `name` is 1..kMaxFdNameBytes characters of [A-Za-z0-9._-] (a subset of what systemd
// accepts in FDNAME=, so that a name means the same in both stores). InvalidArgument otherwise.
// Note that ':' (as in "sha256:...") is not allowed: callers map digests to names themselves.
Status ValidateFdName(std::string_view name);

struct NamedFd {
  std::string name;
  UniqueFd fd;
};

// Thread-safe.
class FdStore {
 public:
  virtual ~FdStore() = default;

  // Keeps a duplicate of `fd` under `name`, replacing one held under the same name (the caller's
  // `fd` stays open and stays the caller's). When Put returns OK the store holds the duplicate,
  // so the caller may crash. REQUIRES: fd is open.
  virtual Status Put(const std::string& name, int fd) = 0;

  // Forgets (closes the held duplicate of) `name`; OK if absent. For a /dev/fuse fd this drops
  // the store's reference: once the serving process closes its own too, the kernel aborts the
  // connection.
  virtual Status Remove(const std::string& name) = 0;

  // The fds held for this service (e.g. put by a previous process), each a new fd (close-on-exec)
  // owned by the caller. The held copies stay held. Order is unspecified.
  virtual Result<std::vector<NamedFd>> List() = 0;

  virtual std::string_view kind() const = 0;  // "systemd" or "holder"
};

struct FdStoreOptions {
  // The holder's socket (e.g. /run/lazycrypt/fdholder/fdholder.sock). Its directory is created
  // 0700 if missing and must not be accessible to group or others.
  std::filesystem::path holder_socket;
  // lazycrypt-fdholder, started when no holder answers at holder_socket. Empty: never start one
  // (OpenFdStore fails if none answers).
  std::filesystem::path holder_binary;
};

// systemd's store when the process runs as a systemd service with a usable one: NOTIFY_SOCKET is
// set and the unit's FileDescriptorStoreMax is > 0 (read from $FDSTORE, which systemd >= 254 sets,
// else asked over D-Bus: the manager's private socket, then the system bus). The fds systemd passed
// at start (LISTEN_FDS / LISTEN_FDNAMES) are taken here, once, and the environment variables are
// cleared. Otherwise the holder at options.holder_socket, spawning `holder_binary --socket
// holder_socket` detached (double fork + setsid, stdio on /dev/null, no inherited fds, empty
// environment) when none answers there, then waiting up to 5 s for it to listen.
// REQUIRES: called before the process starts threads that read the environment (it unsets
// LISTEN_* variables), and once per process.
Result<std::unique_ptr<FdStore>> OpenFdStore(const FdStoreOptions& options);

}  // namespace lazycrypt::fdstore
