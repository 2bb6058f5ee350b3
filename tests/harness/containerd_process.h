// A real containerd (1.6, Debian's, or another binary) for integration tests: its own config, root,
// state, gRPC/ttrpc sockets and log in a mkdtemp directory, the CRI plugin disabled unless asked for
// (host-network pods only, no CNI), optional [stream_processors] and [proxy_plugins]. Clients run as `ctr --address <socket>` (or any ctr-like
// binary, e.g. imgcrypt's ctr-imgcrypt). Stopped by PID on destruction: running tasks are killed
// first, then containerd (SIGTERM, then SIGKILL), then mounts left under its root are detached.
// Needs root (overlayfs snapshots, runc).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
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

// A [plugins."io.containerd.grpc.v1.cri".containerd.runtimes."<name>"] entry (runc v2 shim);
// a non-empty snapshotter is containerd ≥ 1.7's per-runtime-handler snapshotter.
struct CriRuntimeConfig {
  std::string name;
  std::string snapshotter;
};

// The CRI plugin, enabled (tests drive it with lc_cri_client). Pods use the host network, so no
// CNI is configured; the streaming server listens on an ephemeral port on 127.0.0.1.
struct CriPluginConfig {
  std::string snapshotter = "overlayfs";       // the default snapshotter for pulls and containers
  bool disable_snapshot_annotations = false;   // false: cri.* labels reach remote snapshotters
  std::string sandbox_image;                   // the pause-like image pods start with
  std::filesystem::path registry_config_path;  // hosts.toml directory ("" = none)
  std::vector<CriRuntimeConfig> runtimes = {{"runc", ""}};  // the first one is the default
};

struct ContainerdOptions {
  std::vector<StreamProcessorConfig> stream_processors;
  std::vector<ProxyPluginConfig> proxy_plugins;
  // Unset: the CRI plugin is disabled (it is not needed and would want CNI).
  std::optional<CriPluginConfig> cri;
  // The containerd binary: "containerd" from PATH (Debian 12's 1.6), or an absolute path (e.g.
  // Debian 13's 1.7 unpacked into the build tree), whose directory then goes first in containerd's
  // PATH so that its own containerd-shim-runc-v2 is used.
  std::string binary = "containerd";
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

// The TOML of a containerd 1.6/1.7 config (version 2) rooted in `dir` with these options.
std::string ContainerdConfigToml(const std::filesystem::path& dir, const ContainerdOptions& options);

}  // namespace lazycrypt::harness
