// Issue 17 acceptance: running containers survive a crash, a clean restart and an upgrade of the
// snapshotter. Real containerd 1.6 (PATH), real docker-registry, real lazycrypt-snapshotter with
// FUSE layers, real runc.
//
// The image: busybox plus a lazy layer of 200+ files (most small, some several MiB), every one's
// SHA-256 recorded when it is written. A container (`ctr run -d`) reads them round-robin with
// busybox sha256sum, forever, appending "START f", then "OK <sum>  f" or "FAIL f <error>" to a log
// on a host bind mount. Meanwhile the test takes the daemon away three times, each time with a
// read in flight (the container has just started a large file and the layer's FUSE connection has
// a request waiting: /sys/fs/fuse/connections/N/waiting), and starts it again with the same root
// and config; between two takes it waits for new OK lines (progress), never for a fixed time.
// Afterwards: no FAIL line, every checksum the recorded one, the task RUNNING with its first PID,
// a file opened before the first take and read only after the last one reads right (the open file
// handle survived), and exactly one FUSE mount per lazy layer under the snapshotter's root.
//
// "Kill" is a signal to the daemon's PID only (a crash or an OOM kill takes the process, not its
// process group); what the daemon leaves behind (an fd holder) lives on until TearDown.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using harness::CommandResult;
using testing::Describe;
using testing::MustRun;
using ::testing::HasSubstr;

constexpr int kSmallFiles = 200;
constexpr int kBigFiles = 8;
constexpr int kBigFileMiB = 3;
constexpr int kLazyLayers = 2;  // busybox and the data layer, both encrypted (lazy)
// New OK lines the container must log after a restart before the daemon is taken away again.
constexpr int kProgressBetweenTakes = 10;
// The test's own bounds (never asserted as timings; a hang fails the test instead of the run).
constexpr auto kProgressBound = std::chrono::seconds(90);
constexpr auto kExitAfterSigtermBound = std::chrono::seconds(60);

// A FUSE mount from /proc/self/mountinfo: its mount point, type and the connection number under
// /sys/fs/fuse/connections (the minor device number; FUSE mounts have major 0).
struct FuseMount {
  std::string mount_point;
  std::string fstype;
  std::string connection;
};

void PrintTo(const FuseMount& m, std::ostream* os) {
  *os << m.mount_point << " (" << m.fstype << ", connection " << m.connection << ")";
}

std::vector<FuseMount> FuseMountsUnder(const fs::path& dir) {
  std::vector<FuseMount> out;
  std::istringstream info(harness::ReadFileOrEmpty("/proc/self/mountinfo"));
  std::string line;
  const std::string prefix = dir.string() + "/";
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, options, field, fstype;
    fields >> id >> parent >> devno >> root >> mount_point >> options;
    while (fields >> field && field != "-") {
    }
    fields >> fstype;
    if (mount_point.rfind(prefix, 0) != 0 || fstype.rfind("fuse", 0) != 0) continue;
    out.push_back({mount_point, fstype, devno.substr(devno.find(':') + 1)});
  }
  return out;
}

// Requests of the connection not yet answered by the daemon (queued or being served).
int FuseWaiting(const std::string& connection) {
  const std::string text =
      harness::ReadFileOrEmpty("/sys/fs/fuse/connections/" + connection + "/waiting");
  return text.empty() ? 0 : std::atoi(text.c_str());
}

// The fd holders (lazycrypt-fdholder, fdstore/) serving a socket in `dir` (the daemon's default,
// <root>/fdholder/): the peer of a connection to each socket there (SO_PEERCRED), when its command
// is the holder's. The daemon starts a holder with double fork + setsid, so no process group of
// the test holds it. Never walks the snapshotter's root: a FUSE mount whose daemon is gone while
// the holder keeps its fd would block the walk for good.
std::vector<pid_t> FdHoldersIn(const fs::path& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string path = it->path().string();
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_un address{};
    if (path.size() >= sizeof(address.sun_path)) continue;
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.c_str(), path.size());
    for (int type : {SOCK_SEQPACKET, SOCK_STREAM}) {
      const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      ucred cred{};
      socklen_t len = sizeof(cred);
      const bool connected =
          ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0 &&
          ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
      ::close(fd);
      if (!connected) continue;
      const std::string comm = harness::ReadFileOrEmpty("/proc/" + std::to_string(cred.pid) + "/comm");
      if (comm.rfind("lazycrypt-fdhol", 0) == 0) out.push_back(cred.pid);
      break;
    }
  }
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::string Hex(const std::string& oci_digest) { return oci_digest.substr(oci_digest.find(':') + 1); }

// The container's reader: round-robin sha256sum over /data/f/*, one log line per step. fd 3 holds
// /data/held.bin open from the start; it is read once, when the test creates /log/held-go.
constexpr char kReaderScript[] = R"SH(
echo "BEGIN $$" >> /log/log
exec 3< /data/held.bin
while :; do
  for f in /data/f/*; do
    echo "START $f" >> /log/log
    if s=$(sha256sum "$f" 2>&1); then echo "OK $s" >> /log/log; else echo "FAIL $f $s" >> /log/log; fi
    if [ -e /log/held-go ] && [ ! -e /log/held-done ]; then
      if s=$(sha256sum <&3 2>&1); then echo "HELD OK $s" >> /log/log; else echo "HELD FAIL $s" >> /log/log; fi
      echo done > /log/held-done
    fi
  done
  echo PASS >> /log/log
done
)SH";

// A docker-registry on a fixed port over a fixed storage directory, so that it can be stopped and
// started again at the same address (the harness's RegistryProcess picks a new port each start).
class StoppableRegistry {
 public:
  StoppableRegistry(fs::path dir, int port) : dir_(std::move(dir)), port_(port) {}
  ~StoppableRegistry() { Stop(); }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

  bool running() { return proc_ && proc_->Running(); }
  void Start() {
    fs::create_directories(dir_ / "storage");
    ASSERT_TRUE(harness::WriteFile(dir_ / "config.yml",
                                   "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
                                   "    rootdirectory: " + (dir_ / "storage").string() +
                                   "\nhttp:\n  addr: " + host() + "\n")
                    .ok());
    ++starts_;
    const fs::path log = dir_ / ("registry-" + std::to_string(starts_) + ".log");
    auto proc = harness::Subprocess::Start({"docker-registry", "serve", (dir_ / "config.yml").string()},
                                           {}, log, log);
    ASSERT_TRUE(proc.ok()) << proc.status().ToString();
    proc_ = std::move(*proc);
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    for (;;) {
      auto status = harness::HttpGetStatus(port_, "/v2/");
      if (status.ok() && *status == 200) return;
      ASSERT_TRUE(proc_->Running()) << "docker-registry exited:\n" << harness::ReadFileOrEmpty(log);
      ASSERT_LT(Clock::now(), deadline) << "docker-registry not ready:\n" << harness::ReadFileOrEmpty(log);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  void Stop() {
    if (proc_) proc_->Stop();
    proc_.reset();
  }

 private:
  fs::path dir_;
  int port_;
  int starts_ = 0;
  std::unique_ptr<harness::Subprocess> proc_;
};

enum class Take {
  kKill9,    // SIGKILL to the daemon's PID, start the same binary again
  kSigterm,  // SIGTERM, wait for the exit, start the same binary again
  kUpgrade,  // SIGTERM, wait for the exit, start the other build (alternating)
};

class Survival : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, FUSE, overlayfs and runc";
    auto work = harness::TempDir::Create("lc-survival");
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const fs::path& w = work_->path();
    socket_ = w / "run" / "snapshotter.sock";
    root_ = w / "state";
    fs::create_directories(w / "log");

    node_key_ = testing::GenerateKeyPair(w, "ec256", "node");
    fs::create_directories(w / "keys");
    fs::copy_file(node_key_.priv, w / "keys" / "node.pem");
    fs::permissions(w / "keys" / "node.pem", fs::perms::owner_read | fs::perms::owner_write);

    BuildImage();
    ASSERT_FALSE(HasFailure());

    auto port = harness::PickFreePort();
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    registry_ = std::make_unique<StoppableRegistry>(w / "registry", *port);
    registry_->Start();
    ASSERT_FALSE(HasFailure());
    fs::create_directories(w / "hosts" / registry_->host());
    ASSERT_TRUE(harness::WriteFile(w / "hosts" / registry_->host() / "hosts.toml",
                                   "server = \"http://" + registry_->host() + "\"\n")
                    .ok());
    auto metrics_port = harness::PickFreePort();
    ASSERT_TRUE(metrics_port.ok()) << metrics_port.status().ToString();
    metrics_address_ = "127.0.0.1:" + std::to_string(*metrics_port);
    WriteConfig("");
    StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN);
    ASSERT_FALSE(HasFailure());
    harness::ContainerdOptions options;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string()});
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
  }

  void TearDown() override {
    if (ctd_) ctd_->Stop();  // kills the tasks first
    testing::StopSnapshotterAndDetachMounts(daemon_, fs::path());
    // Earlier daemons' process groups, then the fd holder they started (by PID, from its socket;
    // its SIGTERM aborts the connections it alone still holds, so nothing waits on them).
    previous_daemons_.clear();
    if (work_) {
      for (pid_t holder : FdHoldersIn(root_ / "fdholder")) {
        ::kill(holder, SIGTERM);
        for (int i = 0; i < 500 && ::kill(holder, 0) == 0; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      testing::StopSnapshotterAndDetachMounts(daemon_, work_->path());
    }
    registry_.reset();
  }

  // busybox + one layer: /data/f/ (kSmallFiles files of 4..64 KiB, kBigFiles of kBigFileMiB MiB
  // spread among them in name order) and /data/held.bin (kBigFileMiB MiB).
  void BuildImage() {
    const fs::path& w = work_->path();
    testing::MakeBusyboxImage(w / "image");
    ASSERT_FALSE(HasFailure());
    const fs::path dir = w / "data-root" / "data" / "f";
    fs::create_directories(dir);
    std::mt19937_64 rng(std::random_device{}());
    auto write_random = [&](const fs::path& path, size_t size) {
      std::string bytes(size, '\0');
      for (size_t i = 0; i < size; i += 8) {
        const uint64_t v = rng();
        std::memcpy(bytes.data() + i, &v, std::min<size_t>(8, size - i));
      }
      ASSERT_TRUE(harness::WriteFile(path, bytes).ok());
      expected_[path.string().substr((w / "data-root").string().size())] = Hex(testing::FileSha256(path));
    };
    const int total = kSmallFiles + kBigFiles;
    for (int i = 0; i < total; ++i) {
      char name[32];
      const bool big = i % (total / kBigFiles) == total / kBigFiles / 2;
      std::snprintf(name, sizeof(name), "f%03d%s", i, big ? ".big" : ".small");
      write_random(dir / name, big ? size_t{kBigFileMiB} << 20 : 4096 + rng() % (60 << 10));
      if (HasFailure()) return;
    }
    write_random(w / "data-root" / "data" / "held.bin", size_t{kBigFileMiB} << 20);
    MustRun({"tar", "--numeric-owner", "--sort=name", "-C", (w / "data-root").string(), "-cf",
             (w / "data.tar").string(), "data"});
    MustRun({"umoci", "raw", "add-layer", "--image", (w / "image").string() + ":latest",
             (w / "data.tar").string()});
  }

  // config.toml; `extra` is appended (TOML tables). The background verification (which reads
  // the whole layer) starts an hour after the mount: the files the container reads after a
  // restart must be ones no one fetched before.
  void WriteConfig(const std::string& extra) {
    const fs::path& w = work_->path();
    ASSERT_TRUE(harness::WriteFile(
                    w / "config.toml",
                    "address = \"" + socket_.string() + "\"\nroot = \"" + root_.string() +
                        "\"\nlog_level = \"debug\"\n[keys]\ndirs = [\"" + (w / "keys").string() +
                        "\"]\n[registry]\nhosts_dir = \"" + (w / "hosts").string() +
                        "\"\n[fetch]\nverify_delay_ms = 3600000\n[metrics]\naddress = \"" +
                        metrics_address_ + "\"\n" + extra)
                    .ok());
  }

  // Encrypts the image for the node (both layers lazycrypt's) into the registry.
  std::string Publish(const std::string& tag) {
    const std::string ref = registry_->host() + "/lazycrypt/survival:" + tag;
    MustRun({LAZYCRYPT_BIN, "encrypt", "--plain-http", "-r", "jwe:" + node_key_.pub.string(),
             "oci:" + (work_->path() / "image").string() + ":latest", "docker://" + ref},
            std::chrono::seconds(300));
    return ref;
  }

  void Pull(const std::string& ref) {
    auto pulled = harness::RunCommand({LAZYCRYPT_BIN, "pull", "--address", ctd_->socket().string(),
                                       "--namespace", "default", "--snapshotter", "lazycrypt",
                                       "--plain-http", "--hosts-dir", "", ref},
                                      std::chrono::seconds(180));
    ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
    ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << Logs();
    ASSERT_EQ(FuseMountsUnder(root_).size(), size_t{kLazyLayers}) << Logs();
  }

  // Starts `binary --config config.toml extra...` (log snapshotter-N.log) and waits for "ready";
  // the previous daemon's Subprocess is kept (destroying it would kill its process group).
  void StartDaemon(const std::string& binary, const std::vector<std::string>& extra = {},
                   const std::vector<std::string>& env = {}) {
    if (daemon_) previous_daemons_.push_back(std::move(daemon_));
    ++starts_;
    std::vector<std::string> argv = {binary, "--config", (work_->path() / "config.toml").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const fs::path log = DaemonLogPath();
    auto proc = harness::Subprocess::Start(argv, env, log, log);
    ASSERT_TRUE(proc.ok()) << proc.status().ToString();
    daemon_ = std::move(*proc);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (harness::ReadFileOrEmpty(log).find("lazycrypt-snapshotter ready") == std::string::npos) {
      ASSERT_TRUE(daemon_->Running()) << binary << " exited:\n" << harness::ReadFileOrEmpty(log);
      ASSERT_LT(Clock::now(), deadline) << binary << " not ready after 30 s:\n"
                                        << harness::ReadFileOrEmpty(log);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (ctd_) testing::WaitForContainerdToReachSnapshotter(*ctd_, "lazycrypt");
  }

  fs::path DaemonLogPath() const {
    return work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log");
  }
  std::string Logs() const {
    std::string out = "\ncontainerd log (tail):\n";
    if (ctd_) {
      const std::string log = ctd_->Log();
      out += log.size() > 6000 ? log.substr(log.size() - 6000) : log;
    }
    for (int i = 1; i <= starts_; ++i) {
      const std::string log = harness::ReadFileOrEmpty(work_->path() /
                                                       ("snapshotter-" + std::to_string(i) + ".log"));
      out += "\nsnapshotter log " + std::to_string(i) + " (tail):\n" +
             (log.size() > 6000 ? log.substr(log.size() - 6000) : log);
    }
    return out;
  }

  // Sends `sig` to the daemon's PID (not its group) and waits for its exit within `bound`.
  // False (and a test failure naming the signal) when it is still running then; it is killed.
  bool SignalDaemonAndWait(int sig, std::chrono::milliseconds bound) {
    EXPECT_EQ(::kill(daemon_->pid(), sig), 0) << strerror(errno);
    auto exited = daemon_->Wait(bound);
    if (exited.ok()) return true;
    ADD_FAILURE() << "the snapshotter did not exit within "
                  << std::chrono::duration_cast<std::chrono::seconds>(bound).count()
                  << " s of signal " << sig << " while a container used its lazy layers" << Logs();
    ::kill(daemon_->pid(), SIGKILL);
    (void)daemon_->Wait(std::chrono::seconds(20));
    return false;
  }

  std::string Id(const std::string& suffix) const {
    return "lc-surv-" + std::to_string(getpid()) + "-" + suffix;
  }

  // ctr run -d with the log directory bind-mounted at /log.
  void RunDetached(const std::string& ref, const std::string& id, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {
        "run", "-d", "--snapshotter", "lazycrypt", "--mount",
        "type=bind,src=" + (work_->path() / "log").string() + ",dst=/log,options=rbind:rw", ref, id};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = ctd_->Ctr(argv);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->exit_code, 0) << Describe(*r) << Logs();
  }

  // (PID, STATUS) of the task from `ctr task ls`; ("", "") when it is not listed.
  std::pair<std::string, std::string> TaskState(const std::string& id) {
    auto r = ctd_->Ctr({"task", "ls"}, std::chrono::seconds(30));
    if (!r.ok()) return {"", "ctr task ls: " + r.status().ToString()};
    for (const std::string& line : Lines(r->stdout_text)) {
      std::istringstream fields(line);
      std::string task, pid, status;
      fields >> task >> pid >> status;
      if (task == id) return {pid, status};
    }
    return {"", "not listed"};
  }

  fs::path LogPath() const { return work_->path() / "log" / "log"; }
  std::vector<std::string> ReaderLog() const { return Lines(harness::ReadFileOrEmpty(LogPath())); }
  void Mark(const std::string& text) { std::ofstream(LogPath(), std::ios::app) << text << "\n"; }

  // Lines starting with "FAIL" or "HELD FAIL".
  static std::vector<std::string> FailLines(const std::vector<std::string>& log) {
    std::vector<std::string> out;
    for (const auto& l : log) {
      if (l.rfind("FAIL", 0) == 0 || l.rfind("HELD FAIL", 0) == 0) out.push_back(l);
    }
    return out;
  }
  static std::string Tail(const std::vector<std::string>& log, size_t n = 40) {
    std::string out;
    for (size_t i = log.size() > n ? log.size() - n : 0; i < log.size(); ++i) out += log[i] + "\n";
    return out;
  }

  // Waits until `done(log)` holds; fails the test (false) at the first FAIL line, when the task is
  // no longer RUNNING with `pid`, or after kProgressBound.
  bool WaitForReader(const std::string& id, const std::string& pid, const std::string& what,
                     const std::function<bool(const std::vector<std::string>&)>& done) {
    const auto deadline = Clock::now() + kProgressBound;
    auto next_task_check = Clock::now();
    for (;;) {
      const auto log = ReaderLog();
      if (auto fails = FailLines(log); !fails.empty()) {
        ADD_FAILURE() << "the container's reads failed (" << fails.size() << " FAIL lines) while "
                      << what << "; first: " << fails[0] << "\nlog tail:\n" << Tail(log) << Logs();
        return false;
      }
      if (done(log)) return true;
      if (Clock::now() >= next_task_check) {
        const auto [now_pid, status] = TaskState(id);
        if (now_pid != pid || status != "RUNNING") {
          ADD_FAILURE() << "the container's task is " << status << " (pid " << now_pid << ", was "
                        << pid << ") while " << what << "\nlog tail:\n" << Tail(log) << Logs();
          return false;
        }
        next_task_check = Clock::now() + std::chrono::seconds(1);
      }
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "no progress of the container's reads within "
                      << std::chrono::duration_cast<std::chrono::seconds>(kProgressBound).count()
                      << " s while " << what << "\nlog tail:\n" << Tail(log) << Logs();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // OK lines after the last line equal to `marker` (all when there is none).
  static int OkLinesAfter(const std::vector<std::string>& log, const std::string& marker) {
    int n = 0;
    for (const auto& l : log) {
      if (l == marker) n = 0;
      n += l.rfind("OK ", 0) == 0;
    }
    return n;
  }

  // Waits (bounded) until the container has just started reading a file (the log's last line is
  // its START; a large one for the first 20 s) and a lazy layer's FUSE connection has a request
  // unanswered. False when that was never seen (the take goes ahead anyway).
  bool WaitForReadInFlight() {
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::seconds(40);
    const auto mounts = FuseMountsUnder(root_);
    auto dropped = Clock::time_point();
    while (Clock::now() < deadline) {
      // The mounts keep their page cache across opens (FOPEN_KEEP_CACHE): once the reader has
      // read every file, its reads stop reaching the daemon. Dropping the (clean) page cache now
      // and then sends them to it again, so that a read is in flight when the daemon is taken.
      if (Clock::now() - dropped > std::chrono::milliseconds(250)) {
        (void)harness::WriteFile("/proc/sys/vm/drop_caches", "1\n");
        dropped = Clock::now();
      }
      const auto log = ReaderLog();
      const bool any_file = Clock::now() - start > std::chrono::seconds(20);
      if (!log.empty() && log.back().rfind("START ", 0) == 0 &&
          (any_file || log.back().find(".big") != std::string::npos)) {
        for (const auto& m : mounts) {
          if (FuseWaiting(m.connection) > 0) return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    return false;
  }

  // Takes the daemon away (kill -9, SIGTERM, or SIGTERM + the other build) and starts it again.
  void TakeAndRestart(Take take, int round) {
    switch (take) {
      case Take::kKill9:
        ASSERT_EQ(::kill(daemon_->pid(), SIGKILL), 0);
        ASSERT_TRUE(daemon_->Wait(std::chrono::seconds(20)).ok());
        Mark("TAKEN " + std::to_string(round));
        StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN);
        break;
      case Take::kSigterm:
        SignalDaemonAndWait(SIGTERM, kExitAfterSigtermBound);
        Mark("TAKEN " + std::to_string(round));
        StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN);
        break;
      case Take::kUpgrade:
        SignalDaemonAndWait(SIGTERM, kExitAfterSigtermBound);
        Mark("TAKEN " + std::to_string(round));
        StartDaemon(round % 2 == 1 ? LAZYCRYPT_SNAPSHOTTER_NEXT_BIN : LAZYCRYPT_SNAPSHOTTER_BIN);
        break;
    }
  }

  // The scenario of Kill9ThreeTimes, CleanRestart and UpgradeToAnotherBuild.
  void ReadersSurviveThreeTakes(Take take, const std::string& tag) {
    const std::string ref = Publish(tag);
    ASSERT_FALSE(HasFailure());
    Pull(ref);
    ASSERT_FALSE(HasFailure());
    const std::string id = Id(tag);
    RunDetached(ref, id, {"/bin/sh", "-c", kReaderScript});
    ASSERT_FALSE(HasFailure());
    const auto [pid, status] = TaskState(id);
    ASSERT_EQ(status, "RUNNING") << Logs();

    int in_flight_takes = 0;
    for (int round = 1; round <= 3; ++round) {
      const std::string after = "RESTARTED " + std::to_string(round - 1);
      ASSERT_TRUE(WaitForReader(id, pid, "waiting for reads before take " + std::to_string(round),
                                [&](const auto& log) {
                                  return OkLinesAfter(log, after) >= kProgressBetweenTakes;
                                }));
      const bool in_flight = WaitForReadInFlight();
      in_flight_takes += in_flight;
      EXPECT_TRUE(in_flight) << "take " << round << ": no read was in flight (last log lines:\n"
                             << Tail(ReaderLog(), 5) << ")";
      TakeAndRestart(take, round);
      ASSERT_TRUE(daemon_ && daemon_->Running()) << "the snapshotter did not start again";
      Mark("RESTARTED " + std::to_string(round));
    }
    // Progress after the last restart: every file read again after it (a second pass reads
    // through the page cache, the first one through the restarted daemon), then the held fd.
    ASSERT_TRUE(WaitForReader(id, pid, "reading every file after the last restart", [&](const auto& log) {
      std::set<std::string> read;
      bool after = false;
      for (const auto& l : log) {
        if (l == "RESTARTED 3") after = true;
        if (after && l.rfind("OK ", 0) == 0) read.insert(l.substr(l.rfind(' ') + 1));
      }
      return read.size() >= size_t{kSmallFiles + kBigFiles};
    }));
    Mark("HELD GO");
    ASSERT_TRUE(harness::WriteFile(work_->path() / "log" / "held-go", "go\n").ok());
    ASSERT_TRUE(WaitForReader(id, pid, "reading the fd held open since the start", [&](const auto&) {
      return fs::exists(work_->path() / "log" / "held-done");
    }));

    const auto log = ReaderLog();
    EXPECT_THAT(FailLines(log), ::testing::IsEmpty()) << Tail(log);
    int begins = 0, checked = 0, held = 0;
    for (const auto& l : log) {
      begins += l.rfind("BEGIN ", 0) == 0;
      if (l.rfind("OK ", 0) == 0) {
        std::istringstream fields(l.substr(3));
        std::string sum, file;
        fields >> sum >> file;
        auto it = expected_.find(file);
        ASSERT_NE(it, expected_.end()) << l;
        EXPECT_EQ(sum, it->second) << "wrong bytes read from " << file;
        ++checked;
      }
      if (l.rfind("HELD OK ", 0) == 0) {
        ++held;
        EXPECT_EQ(l.substr(8, 64), expected_["/data/held.bin"]) << "wrong bytes through the held fd";
      }
    }
    EXPECT_EQ(begins, 1) << "the container's shell started again";
    EXPECT_EQ(held, 1) << Tail(log);
    EXPECT_GE(checked, kSmallFiles + kBigFiles + 3 * kProgressBetweenTakes);
    const auto [end_pid, end_status] = TaskState(id);
    EXPECT_EQ(end_status, "RUNNING");
    EXPECT_EQ(end_pid, pid) << "the container's task was restarted";

    // Exactly one FUSE mount per lazy layer: nothing mounted twice, nothing stale left over.
    const auto mounts = FuseMountsUnder(root_);
    std::set<std::string> points;
    for (const auto& m : mounts) {
      EXPECT_EQ(m.fstype, "fuse.lazycrypt") << m.mount_point;
      points.insert(m.mount_point);
    }
    EXPECT_EQ(mounts.size(), size_t{kLazyLayers}) << Logs();
    EXPECT_EQ(points.size(), mounts.size()) << "a layer is mounted twice";
    std::cout << "[ survival ] " << checked << " checksums right, " << in_flight_takes
              << " of 3 takes with a FUSE request in flight\n";
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<StoppableRegistry> registry_;
  std::unique_ptr<harness::Subprocess> daemon_;
  std::vector<std::unique_ptr<harness::Subprocess>> previous_daemons_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  testing::KeyPair node_key_;
  fs::path socket_, root_;
  std::string metrics_address_;
  std::map<std::string, std::string> expected_;  // "/data/f/NAME" -> hex SHA-256
  int starts_ = 0;
};

TEST_F(Survival, Kill9ThreeTimes) { ReadersSurviveThreeTakes(Take::kKill9, "kill9"); }

TEST_F(Survival, CleanRestart) { ReadersSurviveThreeTakes(Take::kSigterm, "sigterm"); }

// "Another build": LAZYCRYPT_SNAPSHOTTER_NEXT_BIN (tests/CMakeLists.txt, lazycrypt-snapshotter-next),
// the same sources compiled and linked again into another executable at another path with another
// --version ("<version>-survival-next"); the code is the same, so this checks the handover between
// two processes of two binaries, not compatibility across a change of the code. Alternating
// current -> next -> current -> next: an upgrade and a downgrade.
TEST_F(Survival, UpgradeToAnotherBuild) {
  auto version = [](const char* binary) {
    auto r = harness::RunCommand({binary, "--version"});
    return r.ok() ? r->stdout_text : r.status().ToString();
  };
  const std::string current = version(LAZYCRYPT_SNAPSHOTTER_BIN);
  const std::string next = version(LAZYCRYPT_SNAPSHOTTER_NEXT_BIN);
  ASSERT_THAT(next, HasSubstr("survival-next"));
  ASSERT_NE(current, next);
  ReadersSurviveThreeTakes(Take::kUpgrade, "upgrade");
}

// kill -9, the registry stopped, the daemon started again: cached files keep reading; an uncached
// one blocks until the registry is back and then reads right; with the registry gone for good an
// uncached read fails with EIO (not an empty directory, not a hang).
TEST_F(Survival, RegistryDownDuringRestart) {
  // The restore's retry bound, shortened from its default (300 s) to keep the test short.
  WriteConfig("[restart]\nrestore_retry_s = 30\n");
  ASSERT_TRUE(SignalDaemonAndWait(SIGTERM, kExitAfterSigtermBound));
  StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN);
  ASSERT_TRUE(daemon_->Running());
  const std::string ref = Publish("regdown");
  ASSERT_FALSE(HasFailure());
  Pull(ref);
  ASSERT_FALSE(HasFailure());
  const std::string id = Id("regdown");
  RunDetached(ref, id, {"/bin/sleep", "100000"});
  ASSERT_FALSE(HasFailure());

  auto exec_sh = [&](const std::string& name, const std::string& script,
                     std::chrono::seconds timeout) -> CommandResult {
    auto r = ctd_->Ctr({"task", "exec", "--exec-id", name, id, "/bin/sh", "-c", script}, timeout);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    return r.ok() ? *r : CommandResult{};
  };
  // The first 20 small files: read (fetched, cached) before the restart.
  std::vector<std::string> cached, big;
  for (const auto& [file, sum] : expected_) {
    if (file.find(".small") != std::string::npos && cached.size() < 20) cached.push_back(file);
    if (file.find(".big") != std::string::npos) big.push_back(file);
  }
  ASSERT_GE(big.size(), 2u);
  std::string sum_cached = "sha256sum";
  for (const auto& f : cached) sum_cached += " " + f;
  auto check_sums = [&](const CommandResult& r, const std::vector<std::string>& files) {
    std::string want;
    for (const auto& f : files) want += expected_[f] + "  " + f + "\n";
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text, want) << Describe(r);
  };
  check_sums(exec_sh("before", sum_cached, std::chrono::seconds(60)), cached);

  ASSERT_EQ(::kill(daemon_->pid(), SIGKILL), 0);
  ASSERT_TRUE(daemon_->Wait(std::chrono::seconds(20)).ok());
  registry_->Stop();
  StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN);
  ASSERT_TRUE(daemon_->Running());

  // Cached files, read through the restarted daemon: their pages are dropped first (GNU dd
  // iflag=nocache count=0, through the host's path into the same FUSE mount, which has the same
  // inodes; bounded, as the mount may not serve).
  for (const auto& m : FuseMountsUnder(root_)) {
    std::string drop = "cd " + m.mount_point + " && test -d data/f || exit 0";
    for (const auto& f : cached) drop += "; dd if=." + f + " iflag=nocache count=0 status=none";
    (void)harness::RunCommand({"sh", "-c", drop}, std::chrono::seconds(60));
  }
  check_sums(exec_sh("cached", sum_cached, std::chrono::seconds(60)), cached);
  auto listed = exec_sh("ls", "ls /data/f | wc -l", std::chrono::seconds(60));
  EXPECT_EQ(listed.stdout_text, std::to_string(kSmallFiles + kBigFiles) + "\n") << Describe(listed);

  // An uncached file while the registry is down: the read blocks...
  const fs::path blocked_out = work_->path() / "blocked.out";
  auto blocked = harness::Subprocess::Start(
      {"ctr", "--address", ctd_->socket().string(), "task", "exec", "--exec-id", "blocked", id,
       "/bin/sh", "-c", "sha256sum " + big[0] + " 2>&1; echo exit=$?"},
      {}, blocked_out, blocked_out);
  ASSERT_TRUE(blocked.ok()) << blocked.status().ToString();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_TRUE((*blocked)->Running()) << "the read did not wait for the registry:\n"
                                     << harness::ReadFileOrEmpty(blocked_out);
  // ... and reads right once the registry is back (same address, same storage).
  registry_->Start();
  ASSERT_TRUE(registry_->running());
  auto done = (*blocked)->Wait(std::chrono::seconds(180));
  ASSERT_TRUE(done.ok()) << "the blocked read did not finish within 180 s of the registry's return"
                         << Logs();
  EXPECT_EQ(harness::ReadFileOrEmpty(blocked_out), expected_[big[0]] + "  " + big[0] + "\nexit=0\n")
      << Logs();

  // The registry gone for good: an uncached read fails with EIO, bounded by the test's timeout.
  registry_->Stop();
  auto gone = exec_sh("gone", "sha256sum " + big[1], std::chrono::seconds(600));
  EXPECT_NE(gone.exit_code, 0) << Describe(gone);
  // sha256sum says "I/O error"; runc's exec of /bin/sh "input/output error".
  EXPECT_THAT(gone.stdout_text + gone.stderr_text,
              ::testing::ContainsRegex("I/O error|[Ii]nput/output error"))
      << Describe(gone) << Logs();
  auto still_listed = exec_sh("ls2", "ls /data/f | wc -l", std::chrono::seconds(60));
  EXPECT_EQ(still_listed.stdout_text, std::to_string(kSmallFiles + kBigFiles) + "\n")
      << Describe(still_listed);
}

// `--unmount-on-exit`: a SIGTERM leaves no FUSE mount behind, even with a container reading.
TEST_F(Survival, UnmountOnExit) {
  ASSERT_TRUE(SignalDaemonAndWait(SIGTERM, kExitAfterSigtermBound));
  StartDaemon(LAZYCRYPT_SNAPSHOTTER_BIN, {"--unmount-on-exit"});
  ASSERT_FALSE(HasFailure());
  const std::string ref = Publish("unmount");
  ASSERT_FALSE(HasFailure());
  Pull(ref);
  ASSERT_FALSE(HasFailure());
  const std::string id = Id("unmount");
  RunDetached(ref, id, {"/bin/sh", "-c", kReaderScript});
  ASSERT_FALSE(HasFailure());
  const auto [pid, status] = TaskState(id);
  ASSERT_TRUE(WaitForReader(id, pid, "waiting for reads", [&](const auto& log) {
    return OkLinesAfter(log, "") >= kProgressBetweenTakes;
  }));
  SignalDaemonAndWait(SIGTERM, kExitAfterSigtermBound);
  EXPECT_THAT(FuseMountsUnder(root_), ::testing::IsEmpty()) << Logs();
}

}  // namespace
}  // namespace lazycrypt
