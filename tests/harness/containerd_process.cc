#include "tests/harness/containerd_process.h"

#include <sys/mount.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace lazycrypt::harness {
namespace {

namespace fs = std::filesystem;

// A TOML basic string.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string QuoteList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += Quote(items[i]);
  }
  return out + "]";
}

// Mount points at or below `root`, deepest first (from /proc/self/mountinfo; octal escapes kept
// as they are: such paths are not ours).
std::vector<std::string> MountsUnder(const fs::path& root) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  const std::string prefix = root.string();
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, source_root, mount_point;
    if (!(fields >> id >> parent >> devno >> source_root >> mount_point)) continue;
    if (mount_point == prefix || mount_point.rfind(prefix + "/", 0) == 0) {
      out.push_back(mount_point);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

}  // namespace

namespace {

// The sections every config has, whatever its version: sockets, debug, metrics, stream processors
// (still top-level in 2.x: cmd/containerd/server/config/config.go) and proxy plugins.
std::string CommonSections(const fs::path& dir, const ContainerdOptions& options) {
  std::string t;
  t += "[grpc]\n  address = " + Quote((dir / "containerd.sock").string()) + "\n";
  t += "[ttrpc]\n  address = " + Quote((dir / "containerd.sock.ttrpc").string()) + "\n";
  t += "[debug]\n  address = " + Quote((dir / "debug.sock").string()) + "\n  level = \"info\"\n";
  t += "[metrics]\n  address = \"\"\n";
  if (!options.stream_processors.empty()) {
    t += "[stream_processors]\n";
    for (const auto& sp : options.stream_processors) {
      t += "  [stream_processors." + Quote(sp.id) + "]\n";
      t += "    accepts = " + QuoteList(sp.accepts) + "\n";
      t += "    returns = " + Quote(sp.returns) + "\n";
      t += "    path = " + Quote(sp.path) + "\n";
      t += "    args = " + QuoteList(sp.args) + "\n";
    }
  }
  if (!options.proxy_plugins.empty()) {
    t += "[proxy_plugins]\n";
    for (const auto& pp : options.proxy_plugins) {
      t += "  [proxy_plugins." + Quote(pp.name) + "]\n";
      t += "    type = " + Quote(pp.type) + "\n";
      t += "    address = " + Quote(pp.address) + "\n";
      if (!pp.exports.empty()) {
        t += "    [proxy_plugins." + Quote(pp.name) + ".exports]\n";
        for (const auto& [key, value] : pp.exports) {
          t += "      " + Quote(key) + " = " + Quote(value) + "\n";
        }
      }
    }
  }
  return t;
}

// containerd 1.6/1.7: config version 2, everything CRI under io.containerd.grpc.v1.cri.
std::string ConfigV2(const fs::path& dir, const ContainerdOptions& options) {
  std::string t;
  t += "version = 2\n";
  t += "root = " + Quote((dir / "root").string()) + "\n";
  t += "state = " + Quote((dir / "state").string()) + "\n";
  if (!options.imports.empty()) t += "imports = " + QuoteList(options.imports) + "\n";
  // Without options.cri the CRI plugin is off: it is not what most tests drive (clients talk to
  // the gRPC socket directly) and it would look for CNI.
  if (!options.cri) t += "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
  t += CommonSections(dir, options);
  if (options.cri) {
    const CriPluginConfig& cri = *options.cri;
    const std::string plugin = "[plugins.\"io.containerd.grpc.v1.cri\"";
    t += plugin + "]\n";
    if (!cri.sandbox_image.empty()) t += "  sandbox_image = " + Quote(cri.sandbox_image) + "\n";
    // An ephemeral port: several containerds (tests running in parallel) must not collide.
    t += "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n";
    // The sandbox's oom_score_adj (-998) is below what test machines (containers themselves) may
    // set: keep every process at or above containerd's own value.
    t += "  restrict_oom_score_adj = true\n";
    t += plugin + ".cni]\n";
    t += "  bin_dir = " + Quote((dir / "cni" / "bin").string()) + "\n";
    t += "  conf_dir = " + Quote((dir / "cni" / "net.d").string()) + "\n";
    t += plugin + ".containerd]\n";
    t += "  snapshotter = " + Quote(cri.snapshotter) + "\n";
    t += std::string("  disable_snapshot_annotations = ") +
         (cri.disable_snapshot_annotations.value_or(false) ? "true" : "false") + "\n";
    if (!cri.runtimes.empty()) t += "  default_runtime_name = " + Quote(cri.runtimes[0].name) + "\n";
    for (const auto& runtime : cri.runtimes) {
      t += plugin + ".containerd.runtimes." + Quote(runtime.name) + "]\n";
      t += "  runtime_type = \"io.containerd.runc.v2\"\n";
      if (!runtime.snapshotter.empty()) t += "  snapshotter = " + Quote(runtime.snapshotter) + "\n";
    }
    if (!cri.registry_config_path.empty()) {
      t += plugin + ".registry]\n";
      t += "  config_path = " + Quote(cri.registry_config_path.string()) + "\n";
    }
  }
  return t;
}

// This machine's OCI platform ("linux/amd64"), as containerd's default platform names it.
std::string HostPlatform() {
  struct utsname u;
  std::string arch = uname(&u) == 0 ? u.machine : "x86_64";
  if (arch == "x86_64") arch = "amd64";
  if (arch == "aarch64") arch = "arm64";
  return "linux/" + arch;
}

// containerd 2.x: config version 3. The CRI plugin is split into io.containerd.cri.v1.images
// (snapshotter, annotations, pull mode, pinned sandbox image, registry, runtime_platforms),
// io.containerd.cri.v1.runtime (runtimes, CNI, oom) and io.containerd.grpc.v1.cri (the service and
// its streaming server); see docs/cri/config.md and internal/cri/config/config.go at v2.1.9.
std::string ConfigV3(const fs::path& dir, const ContainerdOptions& options) {
  std::string t;
  t += "version = 3\n";
  t += "root = " + Quote((dir / "root").string()) + "\n";
  t += "state = " + Quote((dir / "state").string()) + "\n";
  if (!options.imports.empty()) t += "imports = " + QuoteList(options.imports) + "\n";
  // NRI is on by default in 2.x and listens on the machine-wide /var/run/nri/nri.sock, which
  // parallel test daemons would fight over; the CRI plugin runs without it (plugins/cri/cri.go).
  std::vector<std::string> disabled = {"io.containerd.nri.v1.nri"};
  if (!options.cri) disabled.push_back("io.containerd.grpc.v1.cri");
  t += "disabled_plugins = " + QuoteList(disabled) + "\n";
  t += CommonSections(dir, options);
  // One unpack_config list for the transfer service, whoever asked (ctr pulls, the CRI pull).
  std::vector<std::string> unpack = options.transfer_unpack_snapshotters;
  if (options.cri) {
    unpack.insert(unpack.end(), options.cri->transfer_unpack_snapshotters.begin(),
                  options.cri->transfer_unpack_snapshotters.end());
  }
  if (!unpack.empty()) {
    std::vector<std::string> snapshotters = {"overlayfs"};
    for (const auto& s : unpack) {
      if (std::find(snapshotters.begin(), snapshotters.end(), s) == snapshotters.end()) {
        snapshotters.push_back(s);
      }
    }
    for (const auto& s : snapshotters) {
      t += "[[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n";
      t += "  platform = " + Quote(HostPlatform()) + "\n";
      t += "  snapshotter = " + Quote(s) + "\n";
    }
  }
  if (options.cri) {
    const CriPluginConfig& cri = *options.cri;
    const std::string images = "[plugins.\"io.containerd.cri.v1.images\"";
    t += images + "]\n";
    t += "  snapshotter = " + Quote(cri.snapshotter) + "\n";
    if (cri.disable_snapshot_annotations) {
      t += std::string("  disable_snapshot_annotations = ") +
           (*cri.disable_snapshot_annotations ? "true" : "false") + "\n";
    }
    if (cri.stats_collect_period_s > 0) {
      t += "  stats_collect_period = " + std::to_string(cri.stats_collect_period_s) + "\n";
    }
    if (cri.use_local_image_pull) {
      t += std::string("  use_local_image_pull = ") + (*cri.use_local_image_pull ? "true" : "false") +
           "\n";
    }
    if (!cri.sandbox_image.empty()) {
      t += images + ".pinned_images]\n";
      t += "  sandbox = " + Quote(cri.sandbox_image) + "\n";
    }
    if (!cri.registry_config_path.empty()) {
      t += images + ".registry]\n";
      t += "  config_path = " + Quote(cri.registry_config_path.string()) + "\n";
    }
    for (const auto& rp : cri.runtime_platforms) {
      t += images + ".runtime_platforms." + Quote(rp.runtime) + "]\n";
      if (!rp.snapshotter.empty()) t += "  snapshotter = " + Quote(rp.snapshotter) + "\n";
      if (!rp.platform.empty()) t += "  platform = " + Quote(rp.platform) + "\n";
    }
    const std::string runtime = "[plugins.\"io.containerd.cri.v1.runtime\"";
    t += runtime + "]\n";
    // See ConfigV2: keep every process at or above containerd's own oom_score_adj.
    t += "  restrict_oom_score_adj = true\n";
    t += runtime + ".cni]\n";
    t += "  bin_dirs = " + QuoteList({(dir / "cni" / "bin").string()}) + "\n";
    t += "  conf_dir = " + Quote((dir / "cni" / "net.d").string()) + "\n";
    t += runtime + ".containerd]\n";
    if (!cri.runtimes.empty()) t += "  default_runtime_name = " + Quote(cri.runtimes[0].name) + "\n";
    for (const auto& rt : cri.runtimes) {
      t += runtime + ".containerd.runtimes." + Quote(rt.name) + "]\n";
      t += "  runtime_type = \"io.containerd.runc.v2\"\n";
      if (!rt.snapshotter.empty()) t += "  snapshotter = " + Quote(rt.snapshotter) + "\n";
    }
    t += "[plugins.\"io.containerd.grpc.v1.cri\"]\n";
    // An ephemeral port: several containerds (tests running in parallel) must not collide.
    t += "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n";
  }
  return t;
}

// The first line of `containerd --version`'s third field: "2.1.9+unknown", "1.6.20~ds1", "v1.7.0".
Result<ContainerdVersion> ParseContainerdVersion(const std::string& output) {
  std::istringstream fields(output);
  std::string name, module, text;
  if (!(fields >> name >> module >> text)) {
    return Status::InvalidArgument("unexpected containerd --version output: " + output);
  }
  ContainerdVersion v;
  v.text = text;
  if (!text.empty() && text[0] == 'v') text.erase(0, 1);
  if (sscanf(text.c_str(), "%d.%d", &v.major, &v.minor) != 2) {
    return Status::InvalidArgument("cannot read a version in containerd --version output: " +
                                   output);
  }
  return v;
}

}  // namespace

std::string ContainerdConfigToml(const fs::path& dir, const ContainerdOptions& options,
                                 int major_version) {
  return major_version >= 2 ? ConfigV3(dir, options) : ConfigV2(dir, options);
}

Result<ContainerdVersion> ProbeContainerdVersion(const std::string& binary) {
  LC_ASSIGN_OR_RETURN(CommandResult r, RunCommand({binary, "--version"}, std::chrono::seconds(30)));
  if (r.exit_code != 0) {
    return Status::Unavailable(binary + " --version failed (exit " + std::to_string(r.exit_code) +
                               "): " + r.stderr_text);
  }
  return ParseContainerdVersion(r.stdout_text);
}

Result<std::unique_ptr<ContainerdProcess>> ContainerdProcess::Start(
    const ContainerdOptions& options) {
  LC_ASSIGN_OR_RETURN(ContainerdVersion version, ProbeContainerdVersion(options.binary));
  std::string ctr = options.ctr;
  if (ctr.empty()) {
    const fs::path sibling = fs::path(options.binary).parent_path() / "ctr";
    ctr = fs::path(options.binary).is_absolute() && fs::exists(sibling) ? sibling.string() : "ctr";
  }
  LC_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("lc-containerd"));
  LC_RETURN_IF_ERROR(
      WriteFile(dir / "config.toml", ContainerdConfigToml(dir.path(), options, version.major)));
  std::vector<std::string> env;
  if (fs::path(options.binary).is_absolute()) {
    const char* path = getenv("PATH");
    env.push_back("PATH=" + fs::path(options.binary).parent_path().string() + ":" +
                  (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"));
  }
  LC_ASSIGN_OR_RETURN(auto proc,
                      Subprocess::Start({options.binary, "--config", (dir / "config.toml").string()},
                                        env, dir / "containerd.log", dir / "containerd.log"));
  std::unique_ptr<ContainerdProcess> daemon(
      new ContainerdProcess(std::move(dir), std::move(proc), std::move(version), std::move(ctr)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string last;
  for (;;) {
    if (!daemon->proc_->Running()) {
      return Status::Unavailable("containerd exited during startup; log:\n" + daemon->Log());
    }
    if (fs::exists(daemon->socket())) {
      auto version = daemon->Ctr({"version"}, std::chrono::seconds(10));
      if (version.ok() && version->exit_code == 0 &&
          version->stdout_text.find("Server:") != std::string::npos) {
        return daemon;
      }
      if (version.ok()) last = version->stderr_text;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::DeadlineExceeded("containerd did not answer within 30 s (" + last +
                                      "); log:\n" + daemon->Log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

ContainerdProcess::~ContainerdProcess() { Stop(); }

Result<CommandResult> ContainerdProcess::Ctr(const std::vector<std::string>& args,
                                             std::chrono::milliseconds timeout) {
  return Client(ctr_, args, timeout);
}

Result<CommandResult> ContainerdProcess::Client(const std::string& binary,
                                                const std::vector<std::string>& args,
                                                std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {binary, "--address", socket().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

std::string ContainerdProcess::Log() const { return ReadFileOrEmpty(dir_ / "containerd.log"); }

void ContainerdProcess::KillTasks() {
  // "default" (ctr) and "k8s.io" (the CRI plugin's pods and containers).
  for (const std::string ns : {"default", "k8s.io"}) {
    auto tasks = Ctr({"-n", ns, "tasks", "ls", "-q"}, std::chrono::seconds(10));
    if (!tasks.ok() || tasks->exit_code != 0) continue;
    std::istringstream ids(tasks->stdout_text);
    std::string id;
    while (ids >> id) {
      (void)Ctr({"-n", ns, "tasks", "kill", "-s", "SIGKILL", id}, std::chrono::seconds(10));
      (void)Ctr({"-n", ns, "tasks", "rm", "-f", id}, std::chrono::seconds(20));
      (void)Ctr({"-n", ns, "containers", "rm", id}, std::chrono::seconds(10));
    }
  }
}

void ContainerdProcess::DetachMounts() {
  for (const auto& mount_point : MountsUnder(dir_.path())) {
    umount2(mount_point.c_str(), MNT_DETACH);
  }
}

void ContainerdProcess::Stop() {
  if (!proc_) return;
  if (proc_->Running()) KillTasks();
  proc_->Stop(std::chrono::seconds(10));
  proc_.reset();
  DetachMounts();
}

}  // namespace lazycrypt::harness
