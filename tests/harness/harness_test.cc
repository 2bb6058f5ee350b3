#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include "tests/harness/containerd_process.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::harness {
namespace {

using namespace std::chrono_literals;

TEST(TempDir, IsCreatedAndRemoved) {
  std::filesystem::path p;
  {
    auto dir = TempDir::Create("lc-harness-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    p = dir->path();
    EXPECT_TRUE(std::filesystem::is_directory(p));
    ASSERT_TRUE(WriteFile(*dir / "f", "x").ok());
    std::filesystem::create_directory(*dir / "sub");
    ASSERT_TRUE(WriteFile(*dir / "sub" / "g", "y").ok());
  }
  EXPECT_FALSE(std::filesystem::exists(p));
}

TEST(RunCommand, CapturesOutputAndExitCode) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 7"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_EQ(r->stdout_text, "out\n");
  EXPECT_EQ(r->stderr_text, "err\n");
}

TEST(RunCommand, PassesEnvironment) {
  auto r = RunCommand({"sh", "-c", "printf %s \"$LC_HARNESS_X\""}, 10s, {"LC_HARNESS_X=hello"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_text, "hello");
}

TEST(RunCommand, TimesOut) {
  auto start = std::chrono::steady_clock::now();
  auto r = RunCommand({"sleep", "30"}, 300ms);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(RunCommand, MissingProgramFails) {
  auto r = RunCommand({"/nonexistent/lc-no-such-program"});
  EXPECT_FALSE(r.ok() && r->exit_code == 0);
}

TEST(Subprocess, StopKillsProcessGroupIncludingGrandchildren) {
  auto dir = TempDir::Create("lc-harness-test");
  ASSERT_TRUE(dir.ok());
  auto pidfile = *dir / "child.pid";
  // The shell ignores SIGTERM, so Stop must escalate to SIGKILL; the grandchild must die too.
  auto p = Subprocess::Start(
      {"sh", "-c", "trap '' TERM; sleep 60 & echo $! > " + pidfile.string() + "; wait"});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  for (int i = 0; i < 200 && ReadFileOrEmpty(pidfile).empty(); ++i) std::this_thread::sleep_for(10ms);
  pid_t grandchild = std::atoi(ReadFileOrEmpty(pidfile).c_str());
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE((*p)->Running());
  (*p)->Stop(200ms);
  EXPECT_FALSE((*p)->Running());
  // The grandchild is reparented and reaped by init; give it a moment.
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = kill(grandchild, 0) != 0;
    if (!gone) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(gone) << "grandchild " << grandchild << " survived Stop()";
}

TEST(Subprocess, WaitReturnsExitCode) {
  auto p = Subprocess::Start({"sh", "-c", "exit 3"});
  ASSERT_TRUE(p.ok());
  auto code = (*p)->Wait(10s);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 3);
}

TEST(Tcp, PickFreePortAndWaitForTcp) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  EXPECT_GT(*port, 0);
  EXPECT_EQ(WaitForTcp(*port, 100ms).code(), StatusCode::kDeadlineExceeded);
}

TEST(RegistryProcess, ServesV2Anonymously) {
  auto reg = RegistryProcess::Start();
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto code = HttpGetStatus((*reg)->port(), "/v2/");
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 200);
  EXPECT_EQ((*reg)->host(), "127.0.0.1:" + std::to_string((*reg)->port()));
  int port = (*reg)->port();
  reg->reset();
  EXPECT_FALSE(HttpGetStatus(port, "/v2/").ok()) << "registry still answers after destruction";
}

TEST(RegistryProcess, RequiresBasicAuthWhenAsked) {
  auto reg = RegistryProcess::Start({.username = "alice", .password = "s3cret"});
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  int port = (*reg)->port();
  EXPECT_EQ(*HttpGetStatus(port, "/v2/"), 401);
  EXPECT_EQ(*HttpGetStatus(port, "/v2/", "alice:wrong"), 401);
  EXPECT_EQ(*HttpGetStatus(port, "/v2/", "alice:s3cret"), 200);
}

TEST(FaultProxy, ForwardsAndInjectsPerRequestCount) {
  auto reg = RegistryProcess::Start();
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto proxy = FaultProxy::Start((*reg)->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  int port = (*proxy)->port();
  (*proxy)->AddFault({.fault = Fault::kHttp500, .count = 2, .match = "/v2/"});
  (*proxy)->AddFault({.fault = Fault::kHttp429, .count = 1, .match = "/v2/"});
  (*proxy)->AddFault({.fault = Fault::kReset, .count = 1, .match = "/v2/"});
  EXPECT_EQ(*HttpGetStatus(port, "/v2/"), 500);
  EXPECT_EQ(*HttpGetStatus(port, "/v2/"), 500);
  EXPECT_EQ(*HttpGetStatus(port, "/v2/"), 429);
  EXPECT_FALSE(HttpGetStatus(port, "/v2/").ok());  // reset
  EXPECT_EQ(*HttpGetStatus(port, "/v2/"), 200);     // rules spent: forwarded
  EXPECT_EQ((*proxy)->faults_injected(), 4);
  EXPECT_EQ((*proxy)->requests(), 5);
  auto lines = (*proxy)->RequestLines();
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0], "GET /v2/ HTTP/1.1");
}

TEST(FaultProxy, StallEndsWhenProxyStops) {
  auto reg = RegistryProcess::Start();
  ASSERT_TRUE(reg.ok());
  auto proxy = FaultProxy::Start((*reg)->port());
  ASSERT_TRUE(proxy.ok());
  (*proxy)->AddFault({.fault = Fault::kStall, .count = 1, .match = "", .stall = 60s});
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(HttpGetStatus((*proxy)->port(), "/v2/").ok());  // 2 s receive timeout
  proxy->reset();  // must not wait for the 60 s stall
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(ContainerdConfigToml, Version2For1xAndVersion3WithTheSplitCriPluginsFor2x) {
  ContainerdOptions options;
  options.proxy_plugins.push_back(
      {"lazycrypt", "snapshot", "/run/s.sock", {{"root", "/var/lib/lc"}}});
  CriPluginConfig cri;
  cri.snapshotter = "lazycrypt";
  cri.sandbox_image = "127.0.0.1:5000/pause:1";
  cri.use_local_image_pull = true;
  cri.runtimes = {{"runc", ""}, {"lazycrypt", "lazycrypt"}};
  cri.runtime_platforms = {{"lazycrypt", "lazycrypt", ""}};
  options.cri = cri;
  const std::string v2 = ContainerdConfigToml("/d", options, 1);
  EXPECT_NE(v2.find("version = 2\n"), std::string::npos) << v2;
  EXPECT_NE(v2.find("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = "
                    "\"lazycrypt\"\n  disable_snapshot_annotations = false"),
            std::string::npos)
      << v2;
  EXPECT_EQ(v2.find("use_local_image_pull"), std::string::npos) << v2;
  EXPECT_EQ(v2.find("runtime_platforms"), std::string::npos) << v2;

  const std::string v3 = ContainerdConfigToml("/d", options, 2);
  EXPECT_NE(v3.find("version = 3\n"), std::string::npos) << v3;
  EXPECT_NE(v3.find("[proxy_plugins.\"lazycrypt\".exports]\n      \"root\" = \"/var/lib/lc\""),
            std::string::npos)
      << v3;
  EXPECT_NE(v3.find("[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"lazycrypt\"\n"
                    "  use_local_image_pull = true\n"),
            std::string::npos)
      << v3;
  // Unset: 2.x's default (true on Linux), so the transfer-service pull is not forced off.
  EXPECT_EQ(v3.find("disable_snapshot_annotations"), std::string::npos) << v3;
  EXPECT_NE(v3.find("[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = "
                    "\"127.0.0.1:5000/pause:1\""),
            std::string::npos)
      << v3;
  EXPECT_NE(v3.find("[plugins.\"io.containerd.cri.v1.images\".runtime_platforms.\"lazycrypt\"]\n"
                    "  snapshotter = \"lazycrypt\""),
            std::string::npos)
      << v3;
  EXPECT_NE(v3.find("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.\"lazycrypt\"]"
                    "\n  runtime_type = \"io.containerd.runc.v2\"\n  snapshotter = \"lazycrypt\""),
            std::string::npos)
      << v3;
  EXPECT_EQ(v3.find("sandbox_image"), std::string::npos) << v3;
  EXPECT_EQ(v3.find("unpack_config"), std::string::npos) << v3;
  options.transfer_unpack_snapshotters = {"lazycrypt"};
  const std::string unpack = ContainerdConfigToml("/d", options, 2);
  const size_t overlay = unpack.find("unpack_config]]\n  platform = \"linux/");
  const size_t lazy = unpack.find("\n  snapshotter = \"lazycrypt\"\n[");
  EXPECT_NE(overlay, std::string::npos) << unpack;
  EXPECT_NE(unpack.find("\n  snapshotter = \"overlayfs\"\n[[plugins"), std::string::npos) << unpack;
  EXPECT_LT(overlay, lazy) << unpack;
  EXPECT_EQ(v3.find("[plugins.\"io.containerd.grpc.v1.cri\".containerd"), std::string::npos) << v3;
}

}  // namespace
}  // namespace lazycrypt::harness
