// AccessLog and its recorder: first-access order, de-duplication across sources, concurrency,
// and the prefetch-list text.
#include "fusefs/access_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace lazycrypt::fusefs {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Paths(const AccessLog& log) {
  std::vector<std::string> out;
  for (const auto& a : log.Accesses()) out.push_back(a.path);
  return out;
}

TEST(AccessLog, KeepsFirstAccessOrder) {
  AccessLog log;
  EXPECT_TRUE(log.Add("bin/sh"));
  EXPECT_TRUE(log.Add("etc/passwd"));
  EXPECT_TRUE(log.Add("app/a"));
  EXPECT_THAT(Paths(log), ElementsAre("bin/sh", "etc/passwd", "app/a"));
  EXPECT_EQ(log.size(), 3u);
}

TEST(AccessLog, DropsRepeatsKeepingFirstPositionAndSource) {
  AccessLog log;
  log.Add("a", 1);
  log.Add("b", 0);
  EXPECT_FALSE(log.Add("a", 0));
  EXPECT_FALSE(log.Add("b", 2));
  log.Add("c", 2);
  auto accesses = log.Accesses();
  ASSERT_EQ(accesses.size(), 3u);
  EXPECT_EQ(accesses[0].path, "a");
  EXPECT_EQ(accesses[0].source, 1u);
  EXPECT_EQ(accesses[1].source, 0u);
  EXPECT_EQ(accesses[2].source, 2u);
}

TEST(AccessLog, RecordersOfSeveralMountsShareOneOrder) {
  auto log = std::make_shared<AccessLog>();
  auto lower = NewAccessLogRecorder(log, 0);
  auto upper = NewAccessLogRecorder(log, 1);
  upper->RecordAccess("app/start.sh");
  lower->RecordAccess("bin/busybox");
  lower->RecordAccess("app/start.sh");  // the same path in another layer: already listed
  upper->RecordAccess("app/data");
  auto accesses = log->Accesses();
  ASSERT_EQ(accesses.size(), 3u);
  EXPECT_EQ(accesses[0].source, 1u);
  EXPECT_EQ(accesses[1].source, 0u);
  EXPECT_THAT(Paths(*log), ElementsAre("app/start.sh", "bin/busybox", "app/data"));
}

TEST(AccessLog, RecorderKeepsTheLogAlive) {
  std::shared_ptr<AccessRecorder> recorder;
  std::weak_ptr<AccessLog> weak;
  {
    auto log = std::make_shared<AccessLog>();
    weak = log;
    recorder = NewAccessLogRecorder(log);
  }
  recorder->RecordAccess("x");
  ASSERT_FALSE(weak.expired());
  EXPECT_EQ(weak.lock()->size(), 1u);
}

// 8 threads each add 500 paths, half shared by all: every path appears exactly once, and each
// thread's own paths keep that thread's order.
TEST(AccessLog, ConcurrentAddsKeepEachPathOnceAndPerThreadOrder) {
  auto log = std::make_shared<AccessLog>();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([log, t] {
      auto rec = NewAccessLogRecorder(log, static_cast<size_t>(t));
      for (int i = 0; i < kPerThread; ++i) {
        rec->RecordAccess(i % 2 == 0 ? "shared/" + std::to_string(i)
                                     : "t" + std::to_string(t) + "/" + std::to_string(i));
      }
    });
  }
  for (auto& th : threads) th.join();
  auto accesses = log->Accesses();
  EXPECT_EQ(accesses.size(), static_cast<size_t>(kPerThread / 2 + kThreads * kPerThread / 2));
  std::set<std::string> unique;
  std::vector<int> last(kThreads, -1);
  for (const auto& a : accesses) {
    EXPECT_TRUE(unique.insert(a.path).second) << a.path;
    if (a.path.starts_with("t")) {
      int t = std::stoi(a.path.substr(1));
      int i = std::stoi(a.path.substr(a.path.find('/') + 1));
      EXPECT_EQ(static_cast<size_t>(t), a.source);
      EXPECT_GT(i, last[t]) << a.path;
      last[t] = i;
    }
  }
}

TEST(AccessLog, FormatsOneAbsolutePathPerLineAndSkipsLineBreaks) {
  AccessLog log;
  log.Add("bin/busybox");
  log.Add("bad\nname");
  log.Add("etc/os-release");
  EXPECT_EQ(FormatAccessList(log.Accesses()), "/bin/busybox\n/etc/os-release\n");
  EXPECT_EQ(FormatAccessList({}), "");
}

}  // namespace
}  // namespace lazycrypt::fusefs
