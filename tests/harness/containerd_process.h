// A real containerd (1.6, Debian's, or another binary: 1.7, 2.1) for integration tests: its own
// config, root, state, gRPC/ttrpc sockets and log in a mkdtemp directory, the CRI plugin disabled
// unless asked for (host-network pods only, no CNI), optional [stream_processors] and
// [proxy_plugins]. The config is version 2 for containerd 1.x and version 3 for 2.x (the binary's
// `--version` decides; 2.x moved the CRI settings to io.containerd.cri.v1.images/.runtime). Clients
// run as `ctr --address <socket>` (the ctr next to an absolute containerd binary, else PATH's; or
// any ctr-like binary, e.g. imgcrypt's ctr-imgcrypt). Stopped by PID on destruction: running tasks
// are killed first, then containerd (SIGTERM, then SIGKILL), then mounts left under its root are
// detached. Needs root (overlayfs snapshots, runc).
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
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
  // [proxy_plugins."<name>".exports] (containerd 2.x reads them; 1.x ignores them): "root" is the
  // directory whose disk use the CRI image-filesystem stats report for this snapshotter;
  // "enable_remote_snapshot_annotations" = "true" makes 2.x's transfer-service pull pass the
  // containerd.io/snapshot/cri.* labels to it (core/transfer/local/pull.go).
  std::map<std::string, std::string> exports = {};
};

// A CRI runtime handler entry (runc v2 shim): [plugins."io.containerd.grpc.v1.cri".containerd.
// runtimes."<name>"] in config v2, [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.
// "<name>"] in v3. A non-empty snapshotter is containerd ≥ 1.7's per-runtime-handler snapshotter
// (the one its containers' snapshots are prepared with).
struct CriRuntimeConfig {
  std::string name;
  std::string snapshotter;
};

// containerd 2.x only: [plugins."io.containerd.cri.v1.images".runtime_platforms."<runtime>"], the
// snapshotter (and platform) a pull with ImageSpec.runtime_handler = runtime unpacks into.
struct CriRuntimePlatformConfig {
  std::string runtime;
  std::string snapshotter;
  std::string platform;  // "" = containerd's default platform
};

// The CRI plugin, enabled (tests drive it with lc_cri_client). Pods use the host network, so no
// CNI is configured; the streaming server listens on an ephemeral port on 127.0.0.1.
struct CriPluginConfig {
  std::string snapshotter = "overlayfs";  // the default snapshotter for pulls and containers
  // false: the CRI pull labels snapshots with cri.* annotations for remote snapshotters. Unset:
  // false on 1.x (as before), containerd's default on 2.x (true on Linux). On 2.x an explicit
  // false makes the CRI image service fall back to the local pull (internal/cri/config/config.go,
  // CheckLocalImagePullConfigs); the transfer-service pull takes the proxy plugin's export
  // enable_remote_snapshot_annotations instead.
  std::optional<bool> disable_snapshot_annotations;
  std::string sandbox_image;                   // the pause-like image pods start with
  std::filesystem::path registry_config_path;  // hosts.toml directory ("" = none)
  std::vector<CriRuntimeConfig> runtimes = {{"runc", ""}};  // the first one is the default
  // containerd 2.x only (ignored for 1.x configs): unset = containerd's default (2.1: the
  // transfer-service pull, unless a setting forces the local pull).
  std::optional<bool> use_local_image_pull;
  std::vector<CriRuntimePlatformConfig> runtime_platforms;  // containerd 2.x only
  // containerd 2.x only: snapshotters the transfer-service CRI pull may unpack into; merged with
  // ContainerdOptions::transfer_unpack_snapshotters into one unpack_config list (see there).
  // Empty = containerd's default, overlayfs only (plugins/transfer/plugin.go); a CRI pull for
  // another snapshotter then fails "no unpack platforms defined".
  std::vector<std::string> transfer_unpack_snapshotters;
  // containerd 2.x only: how often (s) the CRI image service collects the snapshots' Usage that
  // ImageFsInfo reports (0 = containerd's default, 10).
  int stats_collect_period_s = 0;
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
  // containerd 2.x only: the snapshotters the transfer service (2.x's `ctr images pull`, and the
  // CRI pull unless use_local_image_pull) may unpack into, as [[plugins."io.containerd.transfer.
  // v1.local".unpack_config]] entries for this machine's platform. Empty: containerd's default,
  // the default snapshotter (overlayfs) only; a pull into any other snapshotter then skips the
  // unpack ("Unpack configuration not supported, skipping", core/transfer/local/pull.go) and
  // its layers are unpacked later, without labels. Non-empty: overlayfs is kept first.
  std::vector<std::string> transfer_unpack_snapshotters;
  // The ctr for Ctr(): "" = the ctr beside an absolute `binary` if there is one (the client of the
  // same release), else "ctr" from PATH.
  std::string ctr;
  // Top-level `imports = [...]`: more config files containerd merges over this one (2.x merges
  // plugin tables key by key, so a drop-in such as deploy/kubernetes/containerd/containerd-2.x.toml
  // adds to the harness's CRI settings; 1.x replaces whole plugin tables).
  std::vector<std::string> imports;
};

// What `<binary> --version` says: "containerd github.com/containerd/containerd[/v2] 2.1.9+unknown".
struct ContainerdVersion {
  std::string text;  // "2.1.9+unknown", "1.6.20~ds1"
  int major = 0;
  int minor = 0;
};
Result<ContainerdVersion> ProbeContainerdVersion(const std::string& binary);

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
  const ContainerdVersion& version() const { return version_; }
  const std::string& ctr_binary() const { return ctr_; }

  // Runs `<ctr_binary()> --address <socket> args...` to completion.
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
  ContainerdProcess(TempDir dir, std::unique_ptr<Subprocess> proc, ContainerdVersion version,
                    std::string ctr)
      : dir_(std::move(dir)),
        proc_(std::move(proc)),
        version_(std::move(version)),
        ctr_(std::move(ctr)) {}
  void KillTasks();
  void DetachMounts();

  TempDir dir_;
  std::unique_ptr<Subprocess> proc_;
  ContainerdVersion version_;
  std::string ctr_;
};

// The TOML of a containerd config rooted in `dir` with these options: version 2 for containerd
// 1.6/1.7 (major_version 1), version 3 for 2.x (major_version >= 2).
std::string ContainerdConfigToml(const std::filesystem::path& dir, const ContainerdOptions& options,
                                 int major_version = 1);

}  // namespace lazycrypt::harness
