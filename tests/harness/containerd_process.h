// A real containerd (1.6, Debian's) for integration tests: its own config, root, state, gRPC/ttrpc
// sockets and log in a mkdtemp directory, the CRI plugin disabled (not needed, and it would want
// CNI), optional [stream_processors]. Clients run as `ctr --address <socket>` (or any ctr-like
// binary, e.g. imgcrypt's ctr-imgcrypt). Stopped by PID on destruction: running tasks are killed
// first, then containerd (SIGTERM, then SIGKILL), then mounts left under its root are detached.
// Needs root (overlayfs snapshots, runc).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::harness {

struct StreamProcessorConfig {
  std::string id;  // the [stream_processors."<id>"] name (containerd keys payloads by it)
  std::vector<std::string> accepts;
  std::string returns;
  std::string path;
  std::vector<std::string> args;
};

// A [proxy_plugins."<name>"] entry: an out-of-process plugin (e.g. lazycrypt-snapshotter,
// type "snapshot") served on a unix socket.
struct ProxyPluginConfig {
  std::string name;
  std::string type;
  std::string address;
};

struct ContainerdOptions {
  std::vector<StreamProcessorConfig> stream_processors;
  std::vector<ProxyPluginConfig> proxy_plugins;
};

// Not thread-safe (start/stop and clients from one thread).
class ContainerdProcess {
 public:
  // Writes the config, starts `containerd --config`, waits (up to 30 s) until `ctr version`
  // reaches the server. Errors include the daemon's log.
  static Result<std::unique_ptr<ContainerdProcess>> Start(const ContainerdOptions& options = {});
  ~ContainerdProcess();
  ContainerdProcess(const ContainerdProcess&) = delete;
  ContainerdProcess& operator=(const ContainerdProcess&) = delete;

  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path socket() const { return dir_ / "containerd.sock"; }
  std::filesystem::path config_path() const { return dir_ / "config.toml"; }

  // Runs `ctr --address <socket> args...` to completion.
  Result<CommandResult> Ctr(const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout = std::chrono::seconds(120));
  // Runs another ctr-compatible client: `<binary> --address <socket> args...`.
  Result<CommandResult> Client(const std::string& binary, const std::vector<std::string>& args,
                               std::chrono::milliseconds timeout = std::chrono::seconds(120));

  // containerd's log (stdout and stderr), for failure messages.
  std::string Log() const;
  // Kills tasks, stops containerd, detaches leftover mounts. Idempotent.
  void Stop();

 private:
  ContainerdProcess(TempDir dir, std::unique_ptr<Subprocess> proc)
      : dir_(std::move(dir)), proc_(std::move(proc)) {}
  void KillTasks();
  void DetachMounts();

  TempDir dir_;
  std::unique_ptr<Subprocess> proc_;
};

// The TOML of a containerd 1.6 config (version 2) rooted in `dir` with these options.
std::string ContainerdConfigToml(const std::filesystem::path& dir, const ContainerdOptions& options);

}  // namespace lazycrypt::harness
