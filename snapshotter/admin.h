// The daemon's operator endpoint: a unix socket (mode 0600, in the containerd socket's 0700
// directory; only the daemon's own user, or root, is served: SO_PEERCRED) next to the containerd
// socket, at AdminSocketPath(address). `lazycrypt-snapshotter purge` asks the running daemon
// through it. The protocol is one request line, one JSON answer, then the server closes:
//   "purge\n" -> {"ok": true, "removed": [{"snapshot", "layer", "reason", "bytes_freed", "note"}],
//                 "kept": [{"snapshot", "reason", "why_kept"}], "bytes_freed": N}
//             or {"ok": false, "error": "..."}.
// The answer names snapshots (chain IDs) and layer digests, never keys or file names.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "snapshotter/log.h"
#include "snapshotter/snapshotter.h"

namespace lazycrypt::snapshotter {

// "<containerd socket>.admin", e.g. /run/lazycrypt/snapshotter.sock.admin.
std::filesystem::path AdminSocketPath(const std::filesystem::path& containerd_socket);

// The purge report as the JSON document above, and as the text `purge` prints.
std::string RenderPurgeReportJson(const PurgeReport& report);
Result<std::string> FormatPurgeReport(std::string_view report_json);

// Serves the admin socket on its own thread until destroyed. `snapshotter` must outlive it.
class AdminServer {
 public:
  // Removes a stale socket at `path` (refusing when something answers there), listens, sets
  // mode 0600.
  static Result<std::unique_ptr<AdminServer>> Start(const std::filesystem::path& path,
                                                    Snapshotter* snapshotter, LogSink log);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sends `command` to the admin socket at `path` and returns the answer (the JSON document).
// Unavailable naming the path when nothing answers there.
Result<std::string> AdminRequest(const std::filesystem::path& path, std::string_view command);

// `lazycrypt-snapshotter purge [--config FILE] [--address PATH] [--json]`: asks the running
// daemon to purge and prints its report. Returns the exit code (0 ok, 1 error, 2 usage).
int PurgeMain(int argc, char** argv);

}  // namespace lazycrypt::snapshotter
