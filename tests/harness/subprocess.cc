#include "tests/harness/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>
#include <thread>

#include "common/file_io.h"

extern char** environ;

namespace lazycrypt::harness {
namespace {

using Clock = std::chrono::steady_clock;

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// The current environment with `overrides` ("K=V") replacing or adding variables.
std::vector<std::string> MergedEnvironment(const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> vars;
  std::vector<std::string> order;
  auto put = [&](const std::string& kv) {
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (!vars.count(key)) order.push_back(key);
    vars[key] = kv;
  };
  for (char** e = environ; e && *e; ++e) put(*e);
  for (const auto& kv : overrides) put(kv);
  std::vector<std::string> out;
  out.reserve(order.size());
  for (const auto& key : order) out.push_back(vars[key]);
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// RAII for posix_spawn attribute objects.
struct SpawnActions {
  posix_spawn_file_actions_t fa;
  SpawnActions() { posix_spawn_file_actions_init(&fa); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&fa); }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
};
struct SpawnAttr {
  posix_spawnattr_t attr;
  SpawnAttr() { posix_spawnattr_init(&attr); }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
};

}  // namespace

// ---- TempDir ----

Result<TempDir> TempDir::Create(std::string_view prefix) {
  const char* tmp = getenv("TMPDIR");
  std::string base = (tmp && *tmp) ? tmp : "/tmp";
  std::string templ = base + "/" + std::string(prefix) + ".XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) return ErrnoStatus("mkdtemp " + templ);
  return TempDir(std::filesystem::path(templ));
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- Subprocess ----

Result<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                     const std::vector<std::string>& env,
                                                     const std::filesystem::path& stdout_path,
                                                     const std::filesystem::path& stderr_path) {
  if (argv.empty()) return Status::InvalidArgument("Subprocess::Start: empty argv");
  SpawnActions actions;
  posix_spawn_file_actions_addopen(&actions.fa, 0, "/dev/null", O_RDONLY, 0);
  std::string out = stdout_path.empty() ? "/dev/null" : stdout_path.string();
  std::string err = stderr_path.empty() ? "/dev/null" : stderr_path.string();
  posix_spawn_file_actions_addopen(&actions.fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions.fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  // Nothing else of ours leaks into the daemon (e.g. ctest's output pipe): Go daemons such as
  // containerd pass every inherited descriptor on to their own children, where a stray fd 3 would
  // look like a stream processor's payload, and a leaked pipe would keep ctest waiting.
  posix_spawn_file_actions_addclosefrom_np(&actions.fa, 3);

  SpawnAttr attr;
  // Own process group (pgid = child pid) so Stop() can signal the child and its descendants.
  posix_spawnattr_setpgroup(&attr.attr, 0);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr.attr, &defaults);
  sigset_t no_mask;
  sigemptyset(&no_mask);
  posix_spawnattr_setsigmask(&attr.attr, &no_mask);
  posix_spawnattr_setflags(&attr.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<std::string> args = argv;
  std::vector<std::string> envs = MergedEnvironment(env);
  auto cargs = CStrings(args);
  auto cenv = CStrings(envs);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0].c_str(), &actions.fa, &attr.attr, cargs.data(), cenv.data());
  if (rc != 0) return ErrnoStatus("spawn " + argv[0], rc);
  return std::unique_ptr<Subprocess>(new Subprocess(pid));
}

Subprocess::~Subprocess() { Stop(); }

bool Subprocess::TryReap() {
  if (wait_status_) return true;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    wait_status_ = st;
    return true;
  }
  if (r < 0 && errno == ECHILD) {
    wait_status_ = -1;
    return true;
  }
  return false;
}

bool Subprocess::Running() { return !TryReap(); }

Status Subprocess::Signal(int sig) {
  if (TryReap()) return Status::FailedPrecondition("process " + std::to_string(pid_) + " has exited");
  if (kill(-pid_, sig) != 0 && kill(pid_, sig) != 0) {
    return ErrnoStatus("kill " + std::to_string(pid_));
  }
  return Status::Ok();
}

int Subprocess::Stop(std::chrono::milliseconds grace) {
  if (!TryReap()) {
    kill(-pid_, SIGTERM);
    auto deadline = Clock::now() + grace;
    while (!TryReap() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!wait_status_) {
      kill(-pid_, SIGKILL);
      int st = 0;
      if (waitpid(pid_, &st, 0) == pid_) {
        wait_status_ = st;
      } else {
        wait_status_ = -1;
      }
    }
  }
  // Descendants that outlived the leader in its group.
  kill(-pid_, SIGKILL);
  return *wait_status_;
}

Result<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!TryReap()) {
    if (Clock::now() >= deadline) {
      return Status::DeadlineExceeded("process " + std::to_string(pid_) + " still running after " +
                                      std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return ExitCodeOf(*wait_status_);
}

// ---- RunCommand ----

Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout,
                                 const std::vector<std::string>& env) {
  LC_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("lc-cmd"));
  auto out_path = dir / "stdout";
  auto err_path = dir / "stderr";
  LC_ASSIGN_OR_RETURN(auto proc, Subprocess::Start(argv, env, out_path, err_path));
  auto code = proc->Wait(timeout);
  if (!code.ok()) {
    proc->Stop(std::chrono::milliseconds(200));
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return Status::DeadlineExceeded("command '" + cmd + "' did not finish within " +
                                    std::to_string(timeout.count()) + " ms; stderr: " +
                                    ReadFileOrEmpty(err_path));
  }
  proc->Stop();  // kills leftover descendants in the group
  CommandResult result;
  result.exit_code = *code;
  result.stdout_text = ReadFileOrEmpty(out_path);
  result.stderr_text = ReadFileOrEmpty(err_path);
  return result;
}

// ---- TCP ----

Result<int> PickFreePort() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus("bind 127.0.0.1:0");
  }
  socklen_t len = sizeof(addr);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus("getsockname");
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

Status WaitForTcp(int port, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return Status::Ok();
    }
    if (Clock::now() >= deadline) {
      return Status::DeadlineExceeded("nothing listens on 127.0.0.1:" + std::to_string(port) +
                                      " after " + std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string ReadFileOrEmpty(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteFile(const std::filesystem::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return ErrnoStatus("open " + path.string());
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) return Status::IoError("write " + path.string() + " failed");
  return Status::Ok();
}

}  // namespace lazycrypt::harness
