// SecureBuffer: contents and moves; through its release observer, that key bytes are wiped before
// their pages are returned; through /proc/self/smaps, that they are locked and never dumped; and,
// in a child without CAP_IPC_LOCK and with RLIMIT_MEMLOCK = 0, that a failed lock degrades to one
// warning instead of failing.
#include "crypto/secure_buffer.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lazycrypt::crypto {
namespace {

const std::vector<uint8_t> kSecret(32, 0xa5);

// What the release observer saw of the watched block (a test-only global: the observer is a plain
// function pointer).
struct Watched {
  const uint8_t* block = nullptr;
  bool released = false;
  std::vector<uint8_t> seen;
};
Watched g_watched;

void Observe(const uint8_t* data, size_t size) {
  if (data != g_watched.block) return;
  g_watched.released = true;
  g_watched.seen.assign(data, data + size);
}

class SecureBufferRelease : public ::testing::Test {
 protected:
  void SetUp() override {
    g_watched = Watched{};
    SecureBuffer::SetReleaseObserverForTesting(&Observe);
  }
  void TearDown() override { SecureBuffer::SetReleaseObserverForTesting(nullptr); }
  static void Watch(const SecureBuffer& b) { g_watched.block = b.data(); }
  static bool SeenAllZero() {
    return !g_watched.seen.empty() &&
           std::all_of(g_watched.seen.begin(), g_watched.seen.end(),
                       [](uint8_t b) { return b == 0; });
  }
};

// The smaps block of the mapping that holds `p`: its "Locked:" size in kB and its VmFlags line.
struct MappingInfo {
  bool found = false;
  long locked_kb = -1;
  std::string vm_flags;
};
MappingInfo InfoOf(const void* p) {
  MappingInfo info;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      if (inside) break;  // the next mapping begins
      inside = addr >= lo && addr < hi;
      info.found = info.found || inside;
      continue;
    }
    if (!inside) continue;
    if (line.starts_with("Locked:")) info.locked_kb = std::stol(line.substr(7));
    if (line.starts_with("VmFlags:")) info.vm_flags = line.substr(8) + " ";
  }
  return info;
}

TEST(SecureBuffer, ConstructsCopiesAndClones) {
  SecureBuffer zero(16);
  EXPECT_EQ(zero.size(), 16u);
  EXPECT_TRUE(std::all_of(zero.data(), zero.data() + 16, [](uint8_t b) { return b == 0; }));
  SecureBuffer a(kSecret);
  ASSERT_EQ(a.size(), kSecret.size());
  EXPECT_TRUE(std::equal(kSecret.begin(), kSecret.end(), a.data()));
  SecureBuffer b = a.Clone();
  EXPECT_NE(a.data(), b.data());
  EXPECT_TRUE(ConstantTimeEquals(a.span(), b.span()));
  EXPECT_TRUE(SecureBuffer().empty());
  EXPECT_TRUE(SecureBuffer(0).span().empty());
  SecureBuffer big(3 * 4096 + 5);  // more than a page
  EXPECT_EQ(big.size(), 3u * 4096 + 5);
  big.data()[big.size() - 1] = 7;
}

TEST(SecureBuffer, KeyPagesAreLockedAndNeverDumped) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_IPC_LOCK) for an unbounded mlock";
  SecureBuffer key(kSecret);
  const MappingInfo info = InfoOf(key.data());
  ASSERT_TRUE(info.found);
  EXPECT_NE(info.vm_flags.find(" dd "), std::string::npos)
      << "no MADV_DONTDUMP (VmFlags:" << info.vm_flags << ")";
  EXPECT_NE(info.vm_flags.find(" lo "), std::string::npos)
      << "not mlocked (VmFlags:" << info.vm_flags << ")";
  EXPECT_GT(info.locked_kb, 0);
}

TEST_F(SecureBufferRelease, DestructionWipesBeforeRelease) {
  {
    SecureBuffer key(kSecret);
    Watch(key);
  }
  ASSERT_TRUE(g_watched.released);
  EXPECT_EQ(g_watched.seen.size(), kSecret.size());
  EXPECT_TRUE(SeenAllZero()) << "key bytes were released unwiped";
}

TEST_F(SecureBufferRelease, MoveLeavesNoCopyAndSourceEmpty) {
  SecureBuffer source(kSecret);
  const uint8_t* block = source.data();
  Watch(source);
  SecureBuffer moved(std::move(source));
  EXPECT_TRUE(source.empty());     // NOLINT(bugprone-use-after-move): checking the contract
  EXPECT_EQ(moved.data(), block);  // the pages moved: no second copy of the key exists
  EXPECT_FALSE(g_watched.released);
  EXPECT_TRUE(std::equal(kSecret.begin(), kSecret.end(), moved.data()));

  SecureBuffer assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(moved.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(assigned.data(), block);
  EXPECT_FALSE(g_watched.released);
  assigned.Wipe();
  EXPECT_TRUE(assigned.empty());
  ASSERT_TRUE(g_watched.released);
  EXPECT_TRUE(SeenAllZero());
}

TEST_F(SecureBufferRelease, MoveAssignWipesTheOverwrittenKey) {
  SecureBuffer old_key(kSecret);
  Watch(old_key);
  old_key = SecureBuffer(std::vector<uint8_t>(32, 0x11));
  ASSERT_TRUE(g_watched.released);
  EXPECT_TRUE(SeenAllZero());
  EXPECT_EQ(old_key.size(), 32u);
  EXPECT_EQ(old_key.data()[0], 0x11);
}

TEST(ScopedWipe, WipesThePlaintextWhenTheScopeEndsHoweverItEnds) {
  std::vector<uint8_t> plaintext(1000, 0x5a);
  {
    ScopedWipe wipe(plaintext);
    EXPECT_EQ(plaintext[999], 0x5a);  // usable meanwhile
  }
  EXPECT_TRUE(std::all_of(plaintext.begin(), plaintext.end(), [](uint8_t b) { return b == 0; }));
  std::vector<uint8_t> thrown(64, 0x77);
  try {
    ScopedWipe wipe(thrown);
    throw 1;
  } catch (int) {
  }
  EXPECT_TRUE(std::all_of(thrown.begin(), thrown.end(), [](uint8_t b) { return b == 0; }));
}

// Drops CAP_IPC_LOCK from this (child) process's effective set, so RLIMIT_MEMLOCK applies to it.
bool DropIpcLock() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
  return syscall(SYS_capset, &header, data) == 0;
}

TEST(SecureBuffer, LockFailureWarnsOnceAndStillWorks) {
  int err_pipe[2];
  ASSERT_EQ(pipe(err_pipe), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    close(err_pipe[0]);
    struct rlimit none = {0, 0};
    if (!DropIpcLock() || setrlimit(RLIMIT_MEMLOCK, &none) != 0) _exit(10);
    std::vector<SecureBuffer> keys;
    for (int i = 0; i < 3; ++i) keys.emplace_back(kSecret);
    for (const auto& k : keys) {
      if (!std::equal(kSecret.begin(), kSecret.end(), k.data())) _exit(11);
    }
    if (InfoOf(keys[0].data()).vm_flags.find(" dd ") == std::string::npos) _exit(12);
    _exit(0);
  }
  close(err_pipe[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = read(err_pipe[0], buf, sizeof buf)) > 0;) err.append(buf, size_t(n));
  close(err_pipe[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed (10 = setup, 11 = contents, 12 = dontdump)";
  size_t warnings = 0;
  for (size_t at = err.find("cannot lock key memory"); at != std::string::npos;
       at = err.find("cannot lock key memory", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << err;
}

}  // namespace
}  // namespace lazycrypt::crypto
