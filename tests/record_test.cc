// `lazycrypt record` and `lazycrypt mount --record` end to end (root, /dev/fuse, runc): a busybox
// image plus an application layer whose entrypoint, a shell script, reads some files and leaves
// others unread. record's list holds exactly what the start-up read (the script, busybox, the
// data it cats, and the /etc/passwd and /etc/group runc's init reads to set up the user), first
// access order; `encrypt --prefetch-list` with that list marks those files, as `inspect` shows.
// Also: an image in a real docker-registry; plain (unencrypted) layers are unpacked under the lazy ones; --period stops a container
// that does not exit; a wrong key, a missing runc and a bad period fail clearly; nothing stays
// mounted and no temporary directory is left behind.
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tools/record.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Q(const fs::path& p) { return ShellQuote(p.string()); }

void Sh(const std::string& command) {
  auto r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

std::vector<std::string> ReadLines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The lines of /proc/self/mountinfo naming `needle` (a path or a source name).
std::vector<std::string> MountsMentioning(const std::string& needle) {
  std::vector<std::string> out;
  for (const auto& line : ReadLines("/proc/self/mountinfo")) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

// The list without what runc's init reads to set up the container's user (the image's
// /etc/passwd and /etc/group, as any runc start does).
std::vector<std::string> WithoutRuncUserFiles(std::vector<std::string> list) {
  std::erase_if(list, [](const std::string& p) { return p == "/etc/passwd" || p == "/etc/group"; });
  return list;
}

struct Env {
  std::unique_ptr<TempDir> tmp;
  KeyPair key, wrong_key;
  fs::path plain_image;  // busybox layer + app layer, both plain
  fs::path encrypted;    // both layers lazycrypt
  fs::path mixed;        // busybox plain, app lazycrypt
};
Env* env = nullptr;

class RecordTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) return;
    if (RunCommand("command -v runc && command -v umoci").exit_code != 0) return;
    env = new Env();
    env->tmp = std::make_unique<TempDir>("record-test");
    const fs::path root = env->tmp->path();
    env->key = GenerateKeyPair(root, "rsa2048", "key");
    env->wrong_key = GenerateKeyPair(root, "ec256", "wrong");
    env->plain_image = root / "plain";
    MakeBusyboxImage(env->plain_image);
    // The application layer: /app/start.sh is the entrypoint.
    const fs::path app = root / "app-tree";
    fs::create_directories(app / "app/data");
    WriteFileString(app / "app/data/a", "alpha\n");
    WriteFileString(app / "app/data/b", "beta\n");
    WriteFileString(app / "app/data/unread", "never read\n");
    WriteFileString(app / "app/data/also-unread", "never read either\n");
    WriteFileString(app / "app/start.sh",
                    "#!/bin/sh\ncat /app/data/a > /dev/null\ncat /app/data/b > /dev/null\n"
                    "ls /app/data > /dev/null\necho started\n");
    fs::permissions(app / "app/start.sh", fs::perms(0755));
    // A second name of b: tar stores b's data under "app/data/b" (first in name order) and
    // "app/data/hard" as a hardlink to it.
    fs::create_hard_link(app / "app/data/b", app / "app/data/hard");
    const std::string image = Q(env->plain_image) + ":latest";
    Sh("tar --format=pax --numeric-owner --sort=name -C " + Q(app) + " -cf " +
       Q(root / "app.tar") + " .");
    Sh("umoci raw add-layer --image " + image + " " + Q(root / "app.tar"));
    Sh("umoci config --image " + image + " --config.entrypoint /app/start.sh");
    Sh("umoci gc --layout " + Q(env->plain_image));
    env->encrypted = root / "encrypted";
    env->mixed = root / "mixed";
    const std::string recipient = "-r " + ShellQuote("jwe:" + env->key.pub.string()) + " ";
    auto enc = Lazycrypt("encrypt " + recipient + "oci:" + image + " oci:" + Q(env->encrypted));
    ASSERT_EQ(enc.exit_code, 0) << enc.output;
    auto mixed = Lazycrypt("encrypt " + recipient + "--layers 1 oci:" + image + " oci:" +
                           Q(env->mixed));
    ASSERT_EQ(mixed.exit_code, 0) << mixed.output;
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE and overlayfs mounts, runc)";
    }
    if (RunCommand("command -v runc && command -v umoci").exit_code != 0) {
      GTEST_SKIP() << "needs runc and umoci (scripts/setup.sh installs them)";
    }
    ASSERT_NE(env, nullptr);
    ASSERT_FALSE(HasFatalFailure());
    // record's own temporary directories go here: it must be empty afterwards.
    work_ = std::make_unique<TempDir>("record-case");
    fs::create_directories(work_->path() / "tmp");
  }

  void TearDown() override {
    if (!work_) return;
    // Only this test's own mounts (record's temporary directory is under it, by TMPDIR): other
    // record tests may run at the same time (ctest -j).
    EXPECT_THAT(MountsMentioning(work_->path().string()), ::testing::IsEmpty());
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(work_->path() / "tmp")) left.push_back(e.path());
    EXPECT_THAT(left, ::testing::IsEmpty()) << "record left temporary files";
  }

  // `lazycrypt record` with TMPDIR inside this test's directory.
  CommandResult Record(const std::string& args) {
    return RunCommand("TMPDIR=" + Q(work_->path() / "tmp") + " " + ShellQuote(LazycryptBin()) +
                      " record " + args);
  }

  fs::path List() const { return work_->path() / "list.txt"; }
  std::string KeyFlag(const KeyPair& k) const { return "--key " + Q(k.priv) + " "; }

  std::unique_ptr<TempDir> work_;
};

TEST_F(RecordTest, ListsExactlyWhatTheEntrypointReadsAndPrefetchMarksThem) {
  auto r = Record(KeyFlag(env->key) + "--period 60s --output " + Q(List()) + " oci:" +
                  Q(env->encrypted));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("exited with status 0"));
  EXPECT_THAT(r.output, HasSubstr("layer 1 (")) << "a summary per layer";
  const auto list = ReadLines(List());
  // First access order: sh (busybox) opens its script, then cat (busybox again) the data.
  EXPECT_THAT(WithoutRuncUserFiles(list),
              ElementsAre("/app/start.sh", "/bin/busybox", "/app/data/a", "/app/data/b"))
      << r.output;
  EXPECT_THAT(list, Not(::testing::Contains(HasSubstr("unread"))));
  struct stat st {};
  ASSERT_EQ(::stat(List().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The list is what `encrypt --prefetch-list` takes: those files, and only those, are marked.
  const fs::path marked = work_->path() / "marked";
  auto enc = Lazycrypt("encrypt -r " + ShellQuote("jwe:" + env->key.pub.string()) +
                       " --prefetch-list " + Q(List()) + " oci:" + Q(env->plain_image) +
                       " oci:" + Q(marked));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto inspect = Lazycrypt("inspect --files --key " + Q(env->key.priv) + " oci:" + Q(marked));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  std::vector<std::string> prefetch;
  std::istringstream lines(inspect.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.ends_with("[prefetch]")) {
      std::istringstream fields(line);
      std::vector<std::string> f;
      for (std::string x; fields >> x;) f.push_back(x);
      ASSERT_GE(f.size(), 2u) << line;
      prefetch.push_back("/" + f[f.size() - 2]);
    }
  }
  std::vector<std::string> want = list;
  std::sort(want.begin(), want.end());
  std::sort(prefetch.begin(), prefetch.end());
  EXPECT_EQ(prefetch, want) << inspect.output;
}

TEST_F(RecordTest, UnpacksPlainLayersAndRecordsOnlyTheLazyOnes) {
  auto r = Record(KeyFlag(env->key) + "--output " + Q(List()) + " oci:" + Q(env->mixed));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("plain, unpacked"));
  // busybox and /etc come from the plain layer: the script ran from it, reading the lazy layer.
  EXPECT_THAT(ReadLines(List()), ElementsAre("/app/start.sh", "/app/data/a", "/app/data/b"))
      << r.output;
}

// docker://: the lazycrypt layer is read with Range requests from a real registry, the plain one
// downloaded (digest checked) and unpacked.
TEST_F(RecordTest, RecordsAnImageInARegistry) {
  auto registry = harness::RegistryProcess::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  const std::string ref = "docker://" + (*registry)->host() + "/record/mixed:1";
  auto push = Lazycrypt("encrypt -r " + ShellQuote("jwe:" + env->key.pub.string()) +
                        " --layers 1 --plain-http --hosts-dir '' oci:" + Q(env->plain_image) + " " +
                        ShellQuote(ref));
  ASSERT_EQ(push.exit_code, 0) << push.output;
  auto r = Record(KeyFlag(env->key) + "--plain-http --hosts-dir '' --output " + Q(List()) + " " +
                  ShellQuote(ref));
  ASSERT_EQ(r.exit_code, 0) << r.output << "\n" << (*registry)->Log();
  EXPECT_THAT(ReadLines(List()), ElementsAre("/app/start.sh", "/app/data/a", "/app/data/b"));
}

TEST_F(RecordTest, PeriodStopsAContainerThatKeepsRunning) {
  auto r = Record(KeyFlag(env->key) + "--period 1s --output " + Q(List()) + " oci:" +
                  Q(env->encrypted) + " -- /bin/sh -c 'cat /app/data/b; exec sleep 600'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stopped the container after the period"));
  EXPECT_THAT(WithoutRuncUserFiles(ReadLines(List())), ElementsAre("/bin/busybox", "/app/data/b"));
  EXPECT_EQ(RunCommand("pgrep -f 'sleep 60[0]'").exit_code, 1) << "the container was killed";
}

TEST_F(RecordTest, WrongKeyFailsClearlyAndLeavesNothingMounted) {
  auto r = Record(KeyFlag(env->wrong_key) + "--output " + Q(List()) + " oci:" +
                  Q(env->encrypted));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("none of the keys"));
  EXPECT_FALSE(fs::exists(List()));
  // The mixed image mounts nothing before its lazycrypt layer 1 fails: the unpacked plain layer
  // is removed too (TearDown checks).
  auto mixed = Record(KeyFlag(env->wrong_key) + "--output " + Q(List()) + " oci:" +
                      Q(env->mixed));
  EXPECT_NE(mixed.exit_code, 0);
  EXPECT_THAT(mixed.output, HasSubstr("layer 1"));
}

TEST_F(RecordTest, BadSetupFailsClearly) {
  const std::string image = " oci:" + Q(env->encrypted);
  auto no_runc = Record(KeyFlag(env->key) + "--runc /nonexistent/runc --output " + Q(List()) + image);
  EXPECT_NE(no_runc.exit_code, 0);
  EXPECT_THAT(no_runc.output, HasSubstr("runc not found"));
  auto no_key = Record("--output " + Q(List()) + image);
  EXPECT_NE(no_key.exit_code, 0);
  EXPECT_THAT(no_key.output, HasSubstr("--key"));
  auto bad_period = Record(KeyFlag(env->key) + "--period soon --output " + Q(List()) + image);
  EXPECT_NE(bad_period.exit_code, 0);
  EXPECT_THAT(bad_period.output, HasSubstr("--period"));
  auto plain = Record(KeyFlag(env->key) + "--output " + Q(List()) + " oci:" + Q(env->plain_image));
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_THAT(plain.output, HasSubstr("no lazycrypt layer"));
  auto not_root = RunCommand("setpriv --reuid=65534 --regid=65534 --clear-groups " +
                             ShellQuote(LazycryptBin()) + " record --output /tmp/x" + image);
  EXPECT_NE(not_root.exit_code, 0);
  EXPECT_THAT(not_root.output, HasSubstr("must run as root"));
  auto missing_cmd = Record(KeyFlag(env->key) + "--output " + Q(List()) + image + " -- /no/such");
  EXPECT_NE(missing_cmd.exit_code, 0);
  EXPECT_THAT(missing_cmd.output, HasSubstr("runc could not run the container"));
  EXPECT_FALSE(fs::exists(List()));
}

TEST_F(RecordTest, MountRecordListsTheFilesCatReadsInOrder) {
  const fs::path mnt = work_->path() / "mnt";
  fs::create_directories(mnt);
  const fs::path stats = work_->path() / "stats.json";
  auto m = Lazycrypt("mount --daemon --layer 1 " + KeyFlag(env->key) + "--stats-file " +
                     Q(stats) + " --record " + Q(List()) + " oci:" + Q(env->encrypted) + " " +
                     Q(mnt));
  ASSERT_EQ(m.exit_code, 0) << m.output;
  // Through the hardlink: recorded by the name holding the data, the one a prefetch mark takes.
  Sh("cat " + Q(mnt / "app/data/hard") + " " + Q(mnt / "app/start.sh") + " > /dev/null");
  Sh("cat " + Q(mnt / "app/data/b") + " " + Q(mnt / "app/data/a") + " > /dev/null");
  Sh("ls -l " + Q(mnt / "app/data") + " > /dev/null");  // stat only: not a read
  auto u = Lazycrypt("umount --stats-file " + Q(stats) + " " + Q(mnt));
  ASSERT_EQ(u.exit_code, 0) << u.output;
  EXPECT_THAT(ReadLines(List()), ElementsAre("/app/data/b", "/app/start.sh", "/app/data/a"));
}

TEST(RecordFlags, ParsesPeriods) {
  EXPECT_EQ(*tools::ParseDurationMs("10s"), 10000);
  EXPECT_EQ(*tools::ParseDurationMs("1.5s"), 1500);
  EXPECT_EQ(*tools::ParseDurationMs("500ms"), 500);
  EXPECT_EQ(*tools::ParseDurationMs("2m"), 120000);
  EXPECT_EQ(*tools::ParseDurationMs("30"), 30000);
  for (const char* bad : {"", "0", "0s", "-1s", "soon", "10h", "1e9", "nan", "s", "10 s"}) {
    auto d = tools::ParseDurationMs(bad);
    EXPECT_FALSE(d.ok()) << bad;
    if (!d.ok()) {
      EXPECT_THAT(d.status().message(), HasSubstr("duration '" + std::string(bad) + "'"));
    }
  }
}

}  // namespace
}  // namespace lazycrypt::testing
