// The three executables make themselves non-dumpable first thing (crypto::HardenProcess), seen
// from outside: each is started as an unprivileged user (uid 65534) and left blocked in a
// long-running step; the files in a dumpable process's /proc/<pid>/ belong to its user, a
// non-dumpable one's to root (the kernel's task_dump_owner). Without the prctl they stay 65534.
//
// Needs root (to start the programs as another user).
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;
constexpr uid_t kNobody = 65534;

// A temp dir owned by nobody (the programs write sockets and state there).
class NobodyDir {
 public:
  NobodyDir() {
    char tmpl[] = "/tmp/lc-hardening-XXXXXX";
    path_ = mkdtemp(tmpl);
    chown(path_.c_str(), kNobody, kNobody);
    chmod(path_.c_str(), 0755);
  }
  ~NobodyDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A child running `argv` as uid/gid 65534, with fd 3 dup'ed from `fd3` (when >= 0).
class NobodyProcess {
 public:
  NobodyProcess(const std::vector<std::string>& argv, int fd3 = -1) {
    pid_ = fork();
    if (pid_ == 0) {
      if (fd3 >= 0) dup2(fd3, 3);
      int null = open("/dev/null", O_RDWR);
      dup2(null, STDIN_FILENO);
      dup2(null, STDOUT_FILENO);
      if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(120);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(121);
    }
  }
  ~NobodyProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

  // Waits until the program has been exec'ed and is blocked (sleeping) in its long-running step,
  // so main() has long begun. False if it exited or never got there within 20 s.
  bool WaitUntilBlocked(const std::string& comm) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    const fs::path proc = "/proc/" + std::to_string(pid_);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::string name, line, state;
      std::ifstream(proc / "comm") >> name;
      std::ifstream status_file(proc / "status");
      while (std::getline(status_file, line)) {
        if (line.starts_with("State:")) state = line;
      }
      if (comm.starts_with(name) && !name.empty() && state.find("(sleeping)") != std::string::npos) {
        // Sleeping in the step the test arranged (not the exec itself): give the threads a
        // moment and look twice.
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  uid_t ProcOwner() const {
    struct stat st {};
    // The files in /proc/<pid>/ (not the directory itself) follow the dumpable flag.
    if (stat(("/proc/" + std::to_string(pid_) + "/status").c_str(), &st) != 0) return uid_t(-1);
    return st.st_uid;
  }

 private:
  pid_t pid_ = -1;
};

class NonDumpable : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to start the programs as another user";
  }
  // Sanity check of the method: a plain program run the same way is dumpable.
  void ExpectMethodSeesDumpable() {
    NobodyProcess sleeper({"/bin/sleep", "30"});
    ASSERT_TRUE(sleeper.WaitUntilBlocked("sleep"));
    EXPECT_EQ(sleeper.ProcOwner(), kNobody) << "a dumpable process's /proc files are its user's";
  }
};

// A unix socket that is listening but never accepts: a gRPC client connects and then waits for
// the server's HTTP/2 preface until its deadline.
int SilentUnixListener(const fs::path& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 16) != 0) {
    close(fd);
    return -1;
  }
  chmod(path.c_str(), 0777);
  return fd;
}

TEST_F(NonDumpable, MethodSeesAPlainProgramAsDumpable) { ExpectMethodSeesDumpable(); }

TEST_F(NonDumpable, Cli) {
  NobodyDir dir;
  const int listener = SilentUnixListener(dir.path() / "containerd.sock");
  ASSERT_GE(listener, 0);
  NobodyProcess cli({LAZYCRYPT_BIN, "pull", "--address", (dir.path() / "containerd.sock").string(),
                     "registry.invalid/app:1"});
  ASSERT_TRUE(cli.WaitUntilBlocked("lazycrypt")) << "lazycrypt pull did not block on containerd";
  EXPECT_EQ(cli.ProcOwner(), 0u) << "lazycrypt is dumpable";
  close(listener);
}

TEST_F(NonDumpable, Decoder) {
  int payload[2];
  ASSERT_EQ(pipe(payload), 0);  // the write end stays open: the decoder waits for its payload
  NobodyProcess decoder({LAZYCRYPT_DECODER_BIN}, payload[0]);
  close(payload[0]);
  ASSERT_TRUE(decoder.WaitUntilBlocked("lazycrypt-decoder")) << "the decoder did not wait on fd 3";
  EXPECT_EQ(decoder.ProcOwner(), 0u) << "lazycrypt-decoder is dumpable";
  close(payload[1]);
}

TEST_F(NonDumpable, Snapshotter) {
  NobodyDir dir;
  const fs::path config = dir.path() / "config.toml";
  std::ofstream(config) << "[keys]\ndirs = [\"" << (dir.path() / "keys").string() << "\"]\n";
  NobodyProcess daemon({LAZYCRYPT_SNAPSHOTTER_BIN, "--config", config.string(), "--root",
                        (dir.path() / "root").string(), "--address",
                        (dir.path() / "snapshotter.sock").string()});
  const fs::path socket = dir.path() / "snapshotter.sock";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!fs::exists(socket) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(socket)) << "the daemon did not start serving as uid 65534";
  ASSERT_TRUE(daemon.WaitUntilBlocked("lazycrypt-snapshotter"));
  EXPECT_EQ(daemon.ProcOwner(), 0u) << "lazycrypt-snapshotter is dumpable";
}

}  // namespace
