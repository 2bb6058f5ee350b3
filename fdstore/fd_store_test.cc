// fdstore/: the holder (a real lazycrypt-fdholder process, started detached by OpenFdStore) and
// systemd's fd store (a real systemd 252 user manager started by the test, confined to a cgroup
// and mount namespace of its own).
#include "fdstore/fd_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fdstore/holder_protocol.h"
#include "fdstore/unix_message.h"

namespace lazycrypt::fdstore {
namespace {

namespace fs = std::filesystem;

UniqueFd MemfdWith(const std::string& content) {
  UniqueFd fd(::memfd_create("fd-store-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::write(fd.get(), content.data(), content.size()),
            static_cast<ssize_t>(content.size()));
  return fd;
}

std::string Content(int fd) {
  char buf[256];
  const ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
  return n >= 0 ? std::string(buf, static_cast<size_t>(n)) : "<error>";
}

std::map<std::string, std::string> Contents(std::vector<NamedFd>& fds) {
  std::map<std::string, std::string> out;
  for (auto& named : fds) out[named.name] = Content(named.fd.get());
  return out;
}

struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

Pipe MakePipe() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reads what is there now (the pipe's write ends may be held elsewhere). "" at EOF.
std::string ReadNow(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) <= 0) return "<timeout>";
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  return n >= 0 ? std::string(buf, static_cast<size_t>(n)) : "<error>";
}

UniqueFd RawConnect(const fs::path& socket_path) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return UniqueFd();
  }
  struct timeval timeout = {5, 0};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return sock;
}

// A detached holder is not our child: once it exits it is a zombie until init reaps it.
bool Exited(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool WaitExited(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (Exited(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

pid_t HolderPid(const fs::path& socket_path) {
  UniqueFd sock = RawConnect(socket_path);
  if (!sock.valid()) return -1;
  struct ucred peer;
  socklen_t size = sizeof(peer);
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return -1;
  return peer.pid;
}

// One raw request; returns the reply's bytes ("<closed>" / "<error>").
std::string RawRequest(int sock, const std::string& message, const std::vector<int>& fds) {
  struct iovec iov = {const_cast<char*>(message.data()), message.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) return "<error>";
  char reply[512];
  ReceivedFds received;
  bool truncated = false;
  const ssize_t n = ReceiveWithFds(sock, reply, sizeof(reply), 0, &received, &truncated);
  if (n == 0) return "<closed>";
  if (n < 0) return "<error>";
  return std::string(reply, static_cast<size_t>(n));
}

class FdHolder : public ::testing::Test {
 protected:
  void SetUp() override {
    // A ctest run under a systemd service must still test the holder.
    ::unsetenv("NOTIFY_SOCKET");
    char dir_template[] = "/tmp/lc-fdstore-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    options_.holder_socket = dir_ / "holder" / "fdholder.sock";
    options_.holder_binary = LAZYCRYPT_FDHOLDER_BIN;
  }

  void TearDown() override {
    // The holder is detached from us: find it through its socket and stop it.
    const pid_t holder = HolderPid(options_.holder_socket);
    if (holder > 0) {
      ::kill(holder, SIGTERM);
      WaitExited(holder);
    }
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::unique_ptr<FdStore> Open() {
    auto store = OpenFdStore(options_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return nullptr;
    EXPECT_EQ((*store)->kind(), "holder");
    return std::move(store).value();
  }

  fs::path dir_;
  FdStoreOptions options_;
};

TEST_F(FdHolder, ListFromANewClientGivesWorkingFdsAndRemoveClosesTheHeldCopy) {
  auto store = Open();
  ASSERT_TRUE(store);
  Pipe pipe = MakePipe();
  UniqueFd memfd = MemfdWith("layer state");
  ASSERT_TRUE(store->Put("pipe.w", pipe.write_end.get()).ok());
  ASSERT_TRUE(store->Put("memfd", memfd.get()).ok());
  pipe.write_end.reset();
  memfd.reset();

  auto other = Open();
  ASSERT_TRUE(other);
  auto listed = other->List();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  for (NamedFd& named : *listed) {
    if (named.name == "memfd") {
      EXPECT_EQ(Content(named.fd.get()), "layer state");
    } else {
      ASSERT_EQ(named.name, "pipe.w");
      EXPECT_EQ(::write(named.fd.get(), "through", 7), 7);
      EXPECT_EQ(ReadNow(pipe.read_end.get()), "through");
      EXPECT_NE(::fcntl(named.fd.get(), F_GETFD) & FD_CLOEXEC, 0);
    }
  }
  listed->clear();  // our copies closed: only the holder has the write end now

  ASSERT_TRUE(other->Remove("pipe.w").ok());
  EXPECT_EQ(ReadNow(pipe.read_end.get()), "") << "the holder still holds the removed write end";
  EXPECT_TRUE(other->Remove("pipe.w").ok()) << "removing an absent name is OK";
  auto after = store->List();
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].name, "memfd");
}

TEST_F(FdHolder, FdsSurviveAKill9OfTheClientProcessGroupThatPutThem) {
  Pipe sync = MakePipe();
  Pipe data = MakePipe();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setpgid(0, 0);
    // The child starts the holder itself: it must outlive the child and its process group.
    auto store = OpenFdStore(options_);
    bool ok = store.ok();
    UniqueFd memfd = MemfdWith("from the child");
    ok = ok && (*store)->Put("child.memfd", memfd.get()).ok();
    ok = ok && (*store)->Put("child.pipe-w", data.write_end.get()).ok();
    ok = ok && ::write(sync.write_end.get(), ok ? "y" : "n", 1) == 1;
    for (;;) ::pause();
  }
  data.write_end.reset();
  sync.write_end.reset();
  ASSERT_EQ(ReadNow(sync.read_end.get()), "y");
  ASSERT_EQ(::kill(-child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));

  const pid_t holder = HolderPid(options_.holder_socket);
  ASSERT_GT(holder, 0) << "the holder died with the client's process group";
  EXPECT_NE(::getpgid(holder), child);
  EXPECT_NE(::getsid(holder), ::getsid(0)) << "the holder is in the test's session";

  auto store = Open();
  ASSERT_TRUE(store);
  EXPECT_EQ(HolderPid(options_.holder_socket), holder) << "a second holder was started";
  auto listed = store->List();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  for (NamedFd& named : *listed) {
    if (named.name == "child.memfd") {
      EXPECT_EQ(Content(named.fd.get()), "from the child");
    } else {
      ASSERT_EQ(named.name, "child.pipe-w");
      ASSERT_EQ(::write(named.fd.get(), "after kill", 10), 10);
      EXPECT_EQ(ReadNow(data.read_end.get()), "after kill");
    }
  }
}

TEST_F(FdHolder, TheHolderInheritsNoFdOfTheProcessThatStartsIt) {
  // Not close-on-exec on purpose: a /dev/fuse fd of the snapshotter that leaked into the holder
  // would keep that FUSE connection alive forever, whatever Remove says.
  int raw[2];
  ASSERT_EQ(::pipe(raw), 0);
  UniqueFd leak_r(raw[0]), leak_w(raw[1]);
  auto store = Open();
  ASSERT_TRUE(store);
  const pid_t holder = HolderPid(options_.holder_socket);
  ASSERT_GT(holder, 0);
  struct stat ours;
  ASSERT_EQ(::fstat(leak_w.get(), &ours), 0);
  const fs::path fd_dir = "/proc/" + std::to_string(holder) + "/fd";
  for (const auto& entry : fs::directory_iterator(fd_dir)) {
    struct stat st;
    if (::stat(entry.path().c_str(), &st) != 0) continue;
    EXPECT_FALSE(st.st_dev == ours.st_dev && st.st_ino == ours.st_ino)
        << "the holder holds our pipe as fd " << entry.path().filename();
  }
  for (const char* stdio : {"0", "1", "2"}) {
    EXPECT_EQ(fs::read_symlink(fd_dir / stdio), "/dev/null") << stdio;
  }
}

TEST_F(FdHolder, PutUnderTheSameNameReplacesAndClosesTheOldCopy) {
  auto store = Open();
  ASSERT_TRUE(store);
  Pipe first = MakePipe();
  ASSERT_TRUE(store->Put("layer-1", first.write_end.get()).ok());
  first.write_end.reset();
  UniqueFd second = MemfdWith("second");
  ASSERT_TRUE(store->Put("layer-1", second.get()).ok());
  EXPECT_EQ(ReadNow(first.read_end.get()), "") << "the replaced fd is still held";
  auto listed = store->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(Contents(*listed), (std::map<std::string, std::string>{{"layer-1", "second"}}));
}

TEST_F(FdHolder, RejectsBadNamesAndMalformedRequests) {
  auto store = Open();
  ASSERT_TRUE(store);
  UniqueFd memfd = MemfdWith("x");
  for (const std::string& bad :
       {std::string(), std::string(kMaxFdNameBytes + 1, 'a'), std::string("a/b"),
        std::string("sha256:abc"), std::string("a b"), std::string("a\nFDSTORE=1"),
        std::string("\xc3\xa9")}) {
    Status put = store->Put(bad, memfd.get());
    EXPECT_EQ(put.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store->Remove(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(store->Put(std::string(kMaxFdNameBytes, 'a'), memfd.get()).ok());
  EXPECT_TRUE(store->Put("Layer_0.sha256-ab", memfd.get()).ok());

  // The holder checks too: requests no client of ours would send.
  UniqueFd raw = RawConnect(options_.holder_socket);
  ASSERT_TRUE(raw.valid());
  Pipe pipe = MakePipe();
  EXPECT_EQ(RawRequest(raw.get(), "Pbad/name", {memfd.get()})[0], protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "Pnofd", {})[0], protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "Ptwofds", {memfd.get(), pipe.write_end.get()})[0],
            protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "Rwithfd", {pipe.write_end.get()})[0], protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "Q", {})[0], protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "P" + std::string(kMaxFdNameBytes + 50, 'a'), {memfd.get()})[0],
            protocol::kReplyError);
  // None of the refused fds is held: our write end is the only one left.
  pipe.write_end.reset();
  EXPECT_EQ(ReadNow(pipe.read_end.get()), "");
  // And the connection still serves.
  EXPECT_EQ(RawRequest(raw.get(), "Rbad/name", {})[0], protocol::kReplyError);
  EXPECT_EQ(RawRequest(raw.get(), "Rabsent", {}), "K");
  // A message of 0 bytes reads as end of stream on SOCK_SEQPACKET: the holder closes.
  EXPECT_EQ(RawRequest(raw.get(), "", {}), "<closed>");
  auto listed = store->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
}

TEST_F(FdHolder, SocketIsPrivateAndPeersOfAnotherUidAreRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  auto store = Open();
  ASSERT_TRUE(store);
  struct stat st;
  ASSERT_EQ(::stat(options_.holder_socket.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(options_.holder_socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  UniqueFd memfd = MemfdWith("secret");
  ASSERT_TRUE(store->Put("secret", memfd.get()).ok());

  // Open the filesystem path up, so that only the holder's SO_PEERCRED check stands in the way.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(options_.holder_socket.parent_path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(options_.holder_socket.c_str(), 0666), 0);
  Pipe result = MakePipe();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    UniqueFd raw = RawConnect(options_.holder_socket);
    if (!raw.valid()) ::_exit(11);
    const std::string reply = RawRequest(raw.get(), "L", {});
    // Refused: 'X', or the connection already closed under the request (ECONNRESET / EOF).
    const std::string verdict = reply.empty() ? "?" : reply.substr(0, 1);
    ::_exit(::write(result.write_end.get(), verdict.data(), verdict.size()) == 1 ? 0 : 12);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  result.write_end.reset();
  const std::string verdict = ReadNow(result.read_end.get());
  EXPECT_TRUE(verdict == "X" || verdict == "<") << "a peer of another uid was served: " << verdict;
}

TEST_F(FdHolder, ASecondHolderOnTheSameSocketLeavesTheLiveOneAlone) {
  auto store = Open();
  ASSERT_TRUE(store);
  UniqueFd memfd = MemfdWith("kept");
  ASSERT_TRUE(store->Put("kept", memfd.get()).ok());
  const pid_t holder = HolderPid(options_.holder_socket);
  ASSERT_GT(holder, 0);

  const pid_t second = ::fork();
  ASSERT_GE(second, 0);
  if (second == 0) {
    const std::string socket = options_.holder_socket.string();
    ::execl(LAZYCRYPT_FDHOLDER_BIN, LAZYCRYPT_FDHOLDER_BIN, "--socket", socket.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(second, &status, 0), second);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(HolderPid(options_.holder_socket), holder);
  auto listed = store->List();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(Contents(*listed), (std::map<std::string, std::string>{{"kept", "kept"}}));
}

TEST_F(FdHolder, IgnoresHangupAndInterruptAndStopsOnTerm) {
  auto store = Open();
  ASSERT_TRUE(store);
  const pid_t holder = HolderPid(options_.holder_socket);
  ASSERT_GT(holder, 0);
  ::kill(holder, SIGHUP);
  ::kill(holder, SIGINT);
  ::kill(holder, SIGPIPE);
  UniqueFd memfd = MemfdWith("x");
  EXPECT_TRUE(store->Put("after-signals", memfd.get()).ok());
  EXPECT_EQ(HolderPid(options_.holder_socket), holder);
  ASSERT_EQ(::kill(holder, SIGTERM), 0);
  EXPECT_TRUE(WaitExited(holder)) << "the holder did not exit on SIGTERM";
  EXPECT_FALSE(fs::exists(options_.holder_socket));
  EXPECT_FALSE(store->Put("after-term", memfd.get()).ok());
}

TEST_F(FdHolder, ConcurrentClients) {
  constexpr int kClients = 8;
  constexpr int kFdsPerClient = 20;
  ASSERT_TRUE(Open());  // start the holder once; the clients then race on a live one
  std::vector<std::thread> threads;
  std::vector<std::string> failures(kClients);
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto store = OpenFdStore(options_);
      if (!store.ok()) {
        failures[c] = store.status().ToString();
        return;
      }
      for (int i = 0; i < kFdsPerClient; ++i) {
        const std::string name = "c" + std::to_string(c) + "-" + std::to_string(i);
        UniqueFd memfd = MemfdWith(name);
        Status s = (*store)->Put(name, memfd.get());
        if (s.ok() && i % 2 == 1) s = (*store)->Remove(name);
        if (s.ok() && i % 5 == 0) {
          auto listed = (*store)->List();
          if (!listed.ok()) s = listed.status();
        }
        if (!s.ok()) {
          failures[c] = s.ToString();
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& f : failures) EXPECT_EQ(f, "");
  auto store = Open();
  ASSERT_TRUE(store);
  auto listed = store->List();
  ASSERT_TRUE(listed.ok());
  std::map<std::string, std::string> expected;
  for (int c = 0; c < kClients; ++c) {
    for (int i = 0; i < kFdsPerClient; i += 2) {
      const std::string name = "c" + std::to_string(c) + "-" + std::to_string(i);
      expected[name] = name;
    }
  }
  EXPECT_EQ(Contents(*listed), expected);
}

TEST(FdStoreOpen, WithoutAHolderBinaryAndNoHolderItFails) {
  ::unsetenv("NOTIFY_SOCKET");
  auto store = OpenFdStore({"/nonexistent-lc-fdstore/none.sock", ""});
  EXPECT_FALSE(store.ok());
}

// ---------------------------------------------------------------------------------------------
// systemd: the machine's own systemd 252, run as a user manager (PID 1 here is not systemd).
// It is confined: its own cgroup (name=systemd and unified hierarchies) entered before a new
// cgroup namespace, a private mount namespace where /sys/fs/cgroup shows only that cgroup and a
// tmpfs /run/systemd holds the system/ directory that sd_booted() looks for. Without the
// confinement, a user manager at the root cgroup moves every process of the machine into
// /init.scope.

int RunCommand(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class FdStoreSystemd : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (cgroups, mount namespace)";
    if (!fs::exists("/lib/systemd/systemd")) GTEST_SKIP() << "no /lib/systemd/systemd";
    const bool hybrid = fs::exists("/sys/fs/cgroup/systemd/cgroup.procs") &&
                        fs::exists("/sys/fs/cgroup/unified/cgroup.procs");
    if (!hybrid) {
      GTEST_SKIP() << "this confinement is written for the cgroup v1 hybrid layout "
                      "(/sys/fs/cgroup/systemd + /sys/fs/cgroup/unified)";
    }
    char dir_template[] = "/tmp/lc-fdstore-systemd-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    cgroup_ = "lc-fdstore-test-" + std::to_string(::getpid());
    for (const char* h : {"systemd", "unified"}) {
      ASSERT_EQ(::mkdir(("/sys/fs/cgroup/" + std::string(h) + "/" + cgroup_).c_str(), 0755), 0)
          << std::strerror(errno);
    }
    fs::create_directories(dir_ / "run");
    fs::permissions(dir_ / "run", fs::perms::owner_all);
    fs::create_directories(dir_ / "config/systemd/user");
    report_ = dir_ / "report.txt";
    fuse_report_ = dir_ / "fuse-report.txt";
    {
      std::ofstream unit(dir_ / "config/systemd/user/lc-fdtest.service");
      unit << "[Service]\n"
              "Type=notify\n"
              "NotifyAccess=main\n"
              "FileDescriptorStoreMax=16\n"
              "Restart=always\n"
              "RestartSec=100ms\n"
              "ExecStart=" LAZYCRYPT_FDSTORE_HELPER_BIN " " << report_.string() << "\n";
      fs::create_directories(dir_ / "mnt");
      std::ofstream fuse_unit(dir_ / "config/systemd/user/lc-fdfuse.service");
      fuse_unit << "[Service]\n"
                   "Type=notify\n"
                   "FileDescriptorStoreMax=16\n"
                   "Restart=always\n"
                   "RestartSec=100ms\n"
                   "ExecStart=" LAZYCRYPT_FDSTORE_HELPER_BIN " " << fuse_report_.string() << " fuse "
                << (dir_ / "mnt").string() << "\n";
    }
    {
      // set -e: never exec the manager unless the confinement is in place. The last check:
      // the cgroup2 root it will see holds only this script's processes.
      std::ofstream script(dir_ / "manager.sh");
      script << "set -e\n"
             << "echo $$ > /sys/fs/cgroup/systemd/" << cgroup_ << "/cgroup.procs\n"
             << "echo $$ > /sys/fs/cgroup/unified/" << cgroup_ << "/cgroup.procs\n"
             << "exec unshare --cgroup --mount --propagation private sh " << (dir_ / "ns.sh")
             << "\n";
      std::ofstream ns(dir_ / "ns.sh");
      ns << "set -e\n"
         << "grep -qx '0::/' /proc/self/cgroup\n"
         << "mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup\n"
         << "mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified\n"
         << "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd\n"
         << "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified\n"
         << "test \"$(wc -l < /sys/fs/cgroup/unified/cgroup.procs)\" -le 5\n"
         << "mount -t tmpfs -o mode=755 tmpfs /run/systemd\n"
         << "mkdir /run/systemd/system\n"
         << "export XDG_RUNTIME_DIR=" << (dir_ / "run") << " XDG_CONFIG_HOME=" << (dir_ / "config")
         << "\n"
         << "exec /lib/systemd/systemd --user --log-target=console\n";
    }
    manager_ = ::fork();
    ASSERT_GE(manager_, 0);
    if (manager_ == 0) {
      const std::string log = (dir_ / "manager.log").string();
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const std::string script = (dir_ / "manager.sh").string();
      ::execl("/bin/sh", "sh", script.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 1000; ++i) {
      if (fs::exists(dir_ / "run/systemd/private")) break;
      int status;
      if (::waitpid(manager_, &status, WNOHANG) == manager_) {
        manager_ = -1;
        FAIL() << "the user manager exited at start: " << ReadFile(dir_ / "manager.log");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(fs::exists(dir_ / "run/systemd/private"))
        << "the user manager did not start: " << ReadFile(dir_ / "manager.log");
  }

  void TearDown() override {
    if (manager_ > 0) {
      ::kill(manager_, SIGTERM);  // a user manager stops its units and exits
      int status;
      bool exited = false;
      for (int i = 0; i < 1000 && !exited; ++i) {
        exited = ::waitpid(manager_, &status, WNOHANG) == manager_;
        if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (!exited) {
        ::kill(manager_, SIGKILL);
        ::waitpid(manager_, &status, 0);
      }
    }
    if (!cgroup_.empty()) {
      for (const char* h : {"systemd", "unified"}) {
        const fs::path root = fs::path("/sys/fs/cgroup") / h / cgroup_;
        // Whatever the manager left (it should leave nothing) is killed, then the tree removed.
        std::error_code ec;
        std::vector<fs::path> dirs;
        for (auto it = fs::recursive_directory_iterator(root, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
          if (it->is_directory()) dirs.push_back(it->path());
        }
        dirs.push_back(root);
        for (const fs::path& d : dirs) {
          std::ifstream procs(d / "cgroup.procs");
          for (pid_t pid; procs >> pid;) ::kill(pid, SIGKILL);
        }
        std::sort(dirs.begin(), dirs.end(),
                  [](const fs::path& a, const fs::path& b) { return a.string() > b.string(); });
        for (const fs::path& d : dirs) {
          for (int i = 0; i < 100 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
      }
    }
    if (!dir_.empty()) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    }
  }

  int Systemctl(const std::string& args) {
    return RunCommand("XDG_RUNTIME_DIR=" + (dir_ / "run").string() +
                      " systemctl --user --no-pager " + args + " >>" +
                      (dir_ / "systemctl.log").string() + " 2>&1");
  }

  // The report's blocks, one per start of the helper ("start ..." up to "ready").
  std::vector<std::string> Starts() { return Starts(report_); }
  std::vector<std::string> Starts(const fs::path& report) {
    std::vector<std::string> starts;
    std::istringstream in(ReadFile(report));
    std::string line, block;
    while (std::getline(in, line)) {
      block += line + "\n";
      if (line == "ready") {
        starts.push_back(block);
        block.clear();
      }
    }
    return starts;
  }

  bool WaitForStarts(size_t n) { return WaitForStarts(n, report_); }
  bool WaitForStarts(size_t n, const fs::path& report) {
    for (int i = 0; i < 1500; ++i) {
      if (Starts(report).size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string Diagnostics() {
    return "\nreport:\n" + ReadFile(report_) + "fuse report:\n" + ReadFile(fuse_report_) +
           "systemctl:\n" + ReadFile(dir_ / "systemctl.log") +
           "manager log (tail):\n" + ReadFile(dir_ / "manager.log").substr(0, 4000);
  }

  fs::path dir_;
  fs::path report_;
  fs::path fuse_report_;
  std::string cgroup_;
  pid_t manager_ = -1;
};

TEST_F(FdStoreSystemd, StoreSurvivesKill9AndRestartButNotStop) {
  const std::string kStored =
      "fd lc-test-memfd first-start\n"
      "fd lc-test-replaced new\n";
  ASSERT_EQ(Systemctl("start lc-fdtest.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(1)) << Diagnostics();
  EXPECT_EQ(Starts()[0], "start kind=systemd had_listen_fds=0 listen_env_cleared=1\nstored\nready\n")
      << Diagnostics();

  // A crash: SIGKILL, Restart=always. The store comes back in LISTEN_FDS with its names.
  ASSERT_EQ(Systemctl("kill -s KILL lc-fdtest.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(2)) << Diagnostics();
  EXPECT_EQ(Starts()[1],
            "start kind=systemd had_listen_fds=1 listen_env_cleared=1\n" + kStored + "ready\n")
      << Diagnostics();

  // `systemctl restart`: the restart job keeps the store.
  ASSERT_EQ(Systemctl("restart lc-fdtest.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(3)) << Diagnostics();
  EXPECT_EQ(Starts()[2],
            "start kind=systemd had_listen_fds=1 listen_env_cleared=1\n" + kStored + "ready\n")
      << Diagnostics();

  // `systemctl stop` then `start`: systemd 252 discards the store at stop (fdstore/README.md).
  ASSERT_EQ(Systemctl("stop lc-fdtest.service"), 0) << Diagnostics();
  ASSERT_EQ(Systemctl("start lc-fdtest.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(4)) << Diagnostics();
  EXPECT_EQ(Starts()[3], "start kind=systemd had_listen_fds=0 listen_env_cleared=1\nstored\nready\n")
      << Diagnostics();
}

// The point of it all, with a real /dev/fuse: the process that mounted a FUSE connection dies
// (SIGKILL) and the next one gets the same connection back from systemd, its first request
// (FUSE_INIT, opcode 26, never answered) still queued. A /dev/fuse fd that was never mounted polls
// EPOLLERR, so systemd drops it at once: store an fd only after its mount.
TEST_F(FdStoreSystemd, AFuseConnectionOutlivesTheProcessThatMountedIt) {
  if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
  ASSERT_EQ(Systemctl("start lc-fdfuse.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(1, fuse_report_)) << Diagnostics();
  ASSERT_EQ(Starts(fuse_report_)[0],
            "start kind=systemd had_listen_fds=0 listen_env_cleared=1\nstored\nready\n")
      << Diagnostics();
  ASSERT_EQ(Systemctl("kill -s KILL lc-fdfuse.service"), 0) << Diagnostics();
  ASSERT_TRUE(WaitForStarts(2, fuse_report_)) << Diagnostics();
  EXPECT_EQ(Starts(fuse_report_)[1],
            "start kind=systemd had_listen_fds=1 listen_env_cleared=1\n"
            "fd lc-test-fuse opcode=26\n"
            "ready\n")
      << Diagnostics();
}

// deploy/systemd/lazycrypt-snapshotter.service keeps a store big enough for a node's layers and
// lets the main process use it; the test above shows what such a unit gets from systemd 252.
TEST(FdStoreDeployUnit, TheSnapshotterUnitHasAnFdStore) {
  std::ifstream in(fs::path(LAZYCRYPT_SOURCE_DIR_DEFAULT) / "deploy/systemd/lazycrypt-snapshotter.service");
  std::map<std::string, std::string> settings;
  for (std::string line; std::getline(in, line);) {
    const size_t eq = line.find('=');
    if (!line.empty() && line[0] != '#' && eq != std::string::npos) {
      settings[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  ASSERT_TRUE(settings.count("FileDescriptorStoreMax"));
  EXPECT_GE(std::stoi(settings["FileDescriptorStoreMax"]), 1024);
  EXPECT_TRUE(settings["NotifyAccess"] == "main" || settings["NotifyAccess"] == "all")
      << settings["NotifyAccess"];
  EXPECT_EQ(settings["Restart"], "always");
  // KillMode=process would leave a holder (or anything else) of a stopped unit running; the
  // store is systemd's here.
  EXPECT_NE(settings["KillMode"], "process");
}

}  // namespace
}  // namespace lazycrypt::fdstore
