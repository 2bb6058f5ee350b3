#include "tests/harness/containerd_process.h"

#include <sys/mount.h>

#include <algorithm>
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

std::string ContainerdConfigToml(const fs::path& dir, const ContainerdOptions& options) {
  std::string t;
  t += "version = 2\n";
  t += "root = " + Quote((dir / "root").string()) + "\n";
  t += "state = " + Quote((dir / "state").string()) + "\n";
  // Without options.cri the CRI plugin is off: it is not what most tests drive (clients talk to
  // the gRPC socket directly) and it would look for CNI.
  if (!options.cri) t += "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
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
    }
  }
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
         (cri.disable_snapshot_annotations ? "true" : "false") + "\n";
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

Result<std::unique_ptr<ContainerdProcess>> ContainerdProcess::Start(
    const ContainerdOptions& options) {
  LC_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("lc-containerd"));
  LC_RETURN_IF_ERROR(WriteFile(dir / "config.toml", ContainerdConfigToml(dir.path(), options)));
  std::vector<std::string> env;
  if (fs::path(options.binary).is_absolute()) {
    const char* path = getenv("PATH");
    env.push_back("PATH=" + fs::path(options.binary).parent_path().string() + ":" +
                  (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"));
  }
  LC_ASSIGN_OR_RETURN(auto proc,
                      Subprocess::Start({options.binary, "--config", (dir / "config.toml").string()},
                                        env, dir / "containerd.log", dir / "containerd.log"));
  std::unique_ptr<ContainerdProcess> daemon(new ContainerdProcess(std::move(dir), std::move(proc)));
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
  return Client("ctr", args, timeout);
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
