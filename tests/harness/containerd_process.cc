#include "tests/harness/containerd_process.h"

#include <sys/mount.h>

#include <algorithm>
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
  // CRI needs CNI and is not what these tests drive; clients talk to the gRPC socket directly.
  t += "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
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
  return t;
}

Result<std::unique_ptr<ContainerdProcess>> ContainerdProcess::Start(
    const ContainerdOptions& options) {
  LC_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("lc-containerd"));
  LC_RETURN_IF_ERROR(WriteFile(dir / "config.toml", ContainerdConfigToml(dir.path(), options)));
  LC_ASSIGN_OR_RETURN(auto proc,
                      Subprocess::Start({"containerd", "--config", (dir / "config.toml").string()},
                                        {}, dir / "containerd.log", dir / "containerd.log"));
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
  auto tasks = Ctr({"tasks", "ls", "-q"}, std::chrono::seconds(10));
  if (!tasks.ok() || tasks->exit_code != 0) return;
  std::istringstream ids(tasks->stdout_text);
  std::string id;
  while (ids >> id) {
    (void)Ctr({"tasks", "kill", "-s", "SIGKILL", id}, std::chrono::seconds(10));
    (void)Ctr({"tasks", "rm", "-f", id}, std::chrono::seconds(20));
    (void)Ctr({"containers", "rm", id}, std::chrono::seconds(10));
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
