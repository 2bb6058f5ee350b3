// A FUSE mount outliving the process that serves it (root, /dev/fuse; issue 17): a daemon hands
// its /dev/fuse fd over and the next one resumes the same mount (FuseMount::Resume). Files opened
// before the hand-over read right after it; a read that the dying server had taken but not
// answered is answered by the next one (FUSE_NOTIFY_RESEND, Linux >= 6.9); a resumed mount whose
// layer does not come fails its readers with EIO (never an empty directory, never a hang).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>

#include "cache/layer_data.h"
#include "common/file_io.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "fusefs/fuse_fs.h"
#include "fusefs/fuse_resume.h"
#include "tar/tar_writer.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

format::LayerKey Key() {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(0x51 + i * 3);
  return format::LayerKey(k);
}

std::string Content(const std::string& name, size_t size) {
  std::string s;
  s.reserve(size);
  for (size_t i = 0; s.size() < size; ++i) s += name + ":" + std::to_string(i) + "\n";
  s.resize(size);
  return s;
}

// ./a.txt, ./b.txt (small), ./dir/c.bin (300 KiB): three files in separate chunks.
std::vector<uint8_t> SampleTar() {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  auto add = [&](const std::string& name, tar::EntryType type, uint32_t mode,
                 const std::string& data) {
    tar::Entry e;
    e.name = name;
    e.type = type;
    e.mode = mode;
    e.mtime_sec = 1700000000;
    e.size = data.size();
    EXPECT_TRUE(w.AppendEntry(e, ByteSpan(reinterpret_cast<const uint8_t*>(data.data()),
                                          data.size()))
                    .ok());
  };
  add("./", tar::EntryType::kDirectory, 0755, "");
  add("./a.txt", tar::EntryType::kRegular, 0644, Content("a", 70000));
  add("./b.txt", tar::EntryType::kRegular, 0644, Content("b", 70000));
  add("./dir/", tar::EntryType::kDirectory, 0755, "");
  add("./dir/c.bin", tar::EntryType::kRegular, 0644, Content("c", 300 * 1024));
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

// A layer whose file reads can be held (to have a read in flight at a chosen moment).
class HeldLayer final : public cache::LayerData {
 public:
  explicit HeldLayer(std::unique_ptr<cache::LayerData> inner) : inner_(std::move(inner)) {}
  const format::LayerIndex& index() const override { return inner_->index(); }
  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override {
    Wait();
    return inner_->ReadFile(entry, offset, out);
  }
  Result<cache::FileView> ViewFile(format::EntryView entry, uint64_t offset,
                                   size_t size) override {
    Wait();
    return inner_->ViewFile(entry, offset, size);
  }
  cache::LayerStats stats() const override { return inner_->stats(); }
  bool quarantined() const override { return false; }

  void Hold(int notify_fd) {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = true;
    notify_fd_ = notify_fd;
  }

 private:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!held_) return;
    if (notify_fd_ >= 0) {
      const char c = 'r';
      (void)!::write(notify_fd_, &c, 1);  // "a read is in flight"
    }
    cv_.wait(lock, [&] { return !held_; });  // forever: the test kills this process
  }
  std::unique_ptr<cache::LayerData> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  int notify_fd_ = -1;
};

Status SendFd(int sock, int fd) {
  char byte = 'f';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (::sendmsg(sock, &msg, 0) != 1) return ErrnoStatus("sendmsg");
  return Status::Ok();
}

UniqueFd ReceiveFd(int sock) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(sock, &msg, 0) != 1) return UniqueFd();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (c == nullptr || c->cmsg_type != SCM_RIGHTS) return UniqueFd();
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return UniqueFd(fd);
}

std::string ReadAllAt(int fd) {
  std::string out;
  char buf[65536];
  for (off_t off = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0) return "error: " + std::string(std::strerror(errno));
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
}

int FuseMountsAt(const fs::path& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.find(" " + dir.string() + " ") != std::string::npos &&
        line.find(" - fuse.lazycrypt ") != std::string::npos) {
      ++n;
    }
  }
  return n;
}

class FuseResume : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tar = SampleTar();
    MemoryInputStream in(tar);
    MemoryOutputStream out;
    format::WriterOptions o;
    o.chunk_size_bytes = format::kMinChunkSizeBytes;
    auto w = format::WriteLayer(in, Key(), out, o);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    blob_ = out.Take();
    toc_digest_ = w->toc_digest;
    mnt_ = tmp_.path() / "mnt";
    fs::create_directories(mnt_);
    options_.layer_name = "resume-test";
    options_.clone_fd = false;  // what a mount that survives its daemon needs
  }
  void TearDown() override {
    if (mount_) (void)mount_->Unmount();
    mount_.reset();
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }

  std::unique_ptr<cache::LayerData> NewLayer() {
    blobs_.push_back(std::make_unique<MemoryBlobSource>(blob_));
    auto reader = format::LayerReader::Open(*blobs_.back(), Key(), toc_digest_);
    EXPECT_TRUE(reader.ok()) << reader.status().ToString();
    return cache::DirectLayerData(std::move(*reader));
  }

  // Hands the current mount over: a duplicate of its fd is kept (as the fd store keeps it),
  // the mount stops serving without unmounting, the object goes.
  UniqueFd HandOver() {
    UniqueFd held(::fcntl(mount_->fuse_fd(), F_DUPFD_CLOEXEC, 0));
    EXPECT_TRUE(held.valid());
    mount_->LeaveMounted();
    mount_.reset();
    return held;
  }

  std::string P(const std::string& rel) const { return (mnt_ / rel).string(); }

  TempDir tmp_{"lazycrypt-resume"};
  std::vector<uint8_t> blob_;
  crypto::Sha256Digest toc_digest_{};
  std::vector<std::unique_ptr<MemoryBlobSource>> blobs_;
  fs::path mnt_;
  fusefs::MountOptions options_;
  std::unique_ptr<fusefs::FuseMount> mount_;
};

TEST_F(FuseResume, OpenFilesAndInodesStayValidAcrossAHandOver) {
  auto mounted = fusefs::FuseMount::Mount(mnt_, NewLayer(), options_);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  mount_ = std::move(*mounted);
  const dev_t device = mount_->device();

  // Opened (and looked up) under the first server; b.txt and c.bin not read yet.
  UniqueFd a(::open(P("a.txt").c_str(), O_RDONLY));
  UniqueFd b(::open(P("b.txt").c_str(), O_RDONLY));
  ASSERT_TRUE(a.valid() && b.valid());
  EXPECT_EQ(ReadAllAt(a.get()), Content("a", 70000));
  struct stat before {};
  ASSERT_EQ(::stat(P("dir/c.bin").c_str(), &before), 0);

  UniqueFd held = HandOver();
  EXPECT_EQ(FuseMountsAt(mnt_), 1) << "the hand-over must leave the mount in place";

  // A read while no one serves: it waits in the kernel (not ENOTCONN), for the next server.
  auto pending = std::async(std::launch::async, [&] { return ReadAllAt(b.get()); });
  EXPECT_EQ(pending.wait_for(300ms), std::future_status::timeout);

  auto resumed = fusefs::FuseMount::Resume(std::move(held), mnt_, options_);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  mount_ = std::move(*resumed);
  EXPECT_EQ(mount_->device(), device);
  ASSERT_TRUE(mount_->Provide(NewLayer()).ok());
  ASSERT_EQ(pending.wait_for(20s), std::future_status::ready) << "the waiting read was not served";
  EXPECT_EQ(pending.get(), Content("b", 70000));

  // Same inode numbers; new lookups and a file opened before the hand-over read right.
  struct stat after {};
  ASSERT_EQ(::stat(P("dir/c.bin").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  UniqueFd c(::open(P("dir/c.bin").c_str(), O_RDONLY));
  ASSERT_TRUE(c.valid());
  EXPECT_EQ(ReadAllAt(c.get()), Content("c", 300 * 1024));
  EXPECT_EQ(ReadAllAt(a.get()), Content("a", 70000));
  EXPECT_EQ(FuseMountsAt(mnt_), 1);

  a.reset();
  b.reset();
  c.reset();
  EXPECT_TRUE(mount_->Unmount().ok());
  EXPECT_EQ(FuseMountsAt(mnt_), 0);
}

// The server process is killed while it holds a read it has taken from the kernel; the next
// server, given the connection's fd that a third process kept, answers it (the kernel resends it).
TEST_F(FuseResume, ReadInFlightWhenTheServerIsKilledIsAnsweredByTheNextServer) {
  int sock[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock), 0);
  int in_read[2];
  ASSERT_EQ(::pipe2(in_read, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The first daemon: serves, hands its fd to the parent (the fd holder here), and holds the
    // first file read it gets until it is killed.
    ::close(sock[0]);
    auto layer = std::make_shared<HeldLayer>(NewLayer());
    auto m = fusefs::FuseMount::Mount(mnt_, layer, options_);
    if (!m.ok()) ::_exit(3);
    if (!SendFd(sock[1], (*m)->fuse_fd()).ok()) ::_exit(4);
    char go = 0;
    if (::read(sock[1], &go, 1) != 1) ::_exit(5);
    layer->Hold(in_read[1]);
    if (::write(sock[1], "h", 1) != 1) ::_exit(6);
    for (;;) ::pause();
  }
  ::close(sock[1]);
  ::close(in_read[1]);
  UniqueFd held = ReceiveFd(sock[0]);
  ASSERT_TRUE(held.valid()) << "the serving child did not hand its FUSE fd over";
  UniqueFd file(::open(P("dir/c.bin").c_str(), O_RDONLY));
  ASSERT_TRUE(file.valid());
  char c = 0;
  ASSERT_EQ(::write(sock[0], "g", 1), 1);
  ASSERT_EQ(::read(sock[0], &c, 1), 1);

  auto reader = std::async(std::launch::async, [&] { return ReadAllAt(file.get()); });
  ASSERT_EQ(::read(in_read[0], &c, 1), 1) << "the read never reached the server";
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(reader.wait_for(200ms), std::future_status::timeout)
      << "the read ended when its server died: " << reader.get().substr(0, 80);

  auto resumed = fusefs::FuseMount::Resume(std::move(held), mnt_, options_);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  mount_ = std::move(*resumed);
  EXPECT_TRUE(mount_->resend_status().ok()) << mount_->resend_status().ToString();
  ASSERT_TRUE(mount_->Provide(NewLayer()).ok());
  if (reader.wait_for(20s) != std::future_status::ready) {
    // Kernels before 6.9 cannot resend it: end the connection so the reader returns.
    std::ofstream abort_file("/sys/fs/fuse/connections/" + std::to_string(minor(mount_->device())) +
                             "/abort");
    abort_file << "1";
    abort_file.close();
    reader.wait();
    FAIL() << "the read the killed server had taken was never answered";
  }
  EXPECT_EQ(reader.get(), Content("c", 300 * 1024));
  file.reset();
  EXPECT_TRUE(mount_->Unmount().ok());
  ::close(sock[0]);
  ::close(in_read[0]);
}

TEST_F(FuseResume, ResumedMountWhoseLayerDoesNotComeFailsWithEioNotEmptyUntilItComes) {
  auto mounted = fusefs::FuseMount::Mount(mnt_, NewLayer(), options_);
  ASSERT_TRUE(mounted.ok()) << mounted.status().ToString();
  mount_ = std::move(*mounted);
  UniqueFd held = HandOver();

  fusefs::MountOptions waiting = options_;
  waiting.pending_wait = 300ms;
  auto resumed = fusefs::FuseMount::Resume(std::move(held), mnt_, waiting);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  mount_ = std::move(*resumed);

  // Waits pending_wait, then EIO: not ENOENT, not an empty listing.
  struct stat st {};
  errno = 0;
  EXPECT_EQ(::stat(P("never-looked-up").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  DIR* dir = ::opendir(mnt_.c_str());
  if (dir != nullptr) {
    errno = 0;
    EXPECT_EQ(::readdir(dir), nullptr);
    EXPECT_EQ(errno, EIO);
    ::closedir(dir);
  } else {
    EXPECT_EQ(errno, EIO);
  }
  EXPECT_GE(mount_->requests_waited(), 1u);

  // Given up: EIO at once, without waiting ...
  mount_->Fail();
  errno = 0;
  EXPECT_EQ(::stat(P("a.txt").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  // ... until the layer comes after all (a key put back): served again, once.
  ASSERT_TRUE(mount_->Provide(NewLayer()).ok());
  EXPECT_FALSE(mount_->Provide(NewLayer()).ok());
  UniqueFd a(::open(P("a.txt").c_str(), O_RDONLY));
  ASSERT_TRUE(a.valid()) << std::strerror(errno);
  EXPECT_EQ(ReadAllAt(a.get()), Content("a", 70000));
  a.reset();
  EXPECT_TRUE(mount_->Unmount().ok());
}

TEST_F(FuseResume, ResumeNeedsTheFuseMountToBeThere) {
  UniqueFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fuse.valid());
  auto resumed = fusefs::FuseMount::Resume(std::move(fuse), mnt_, options_);
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.status().code(), StatusCode::kNotFound) << resumed.status().ToString();
  auto device = fusefs::FuseMountDevice(mnt_, "lazycrypt");
  EXPECT_FALSE(device.ok());
}

}  // namespace
}  // namespace lazycrypt::testing
