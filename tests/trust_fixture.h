// The fixture of the trust tests against containerd (issue 15): a real docker-registry, a real
// lazycrypt-snapshotter (FUSE layers, node key directory), a real containerd 1.6 with the
// snapshotter as proxy plugin "lazycrypt", stargz's `ctr-remote images rpull` for lazy pulls and
// runc for containers. Every daemon runs in the test's temp dir and is stopped by PID in
// TearDown. Header-only; used by trust_snapshot_test and trust_containerd_attack_test.
//
// A test's SetUp calls SetUpWork(prefix) (temp dir, ctr-remote, node and other key pairs),
// builds its images, then StartDaemons() (registry, snapshotter config and process, containerd).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/snapshotter_util.h"

namespace lazycrypt::testing {

class TrustContainerdFixture : public ::testing::Test {
 protected:
  // The temp dir, ctr-remote (from the test cache) and the key pairs "node" (in the snapshotter's
  // key directory, 0600) and "other" (never on the node).
  void SetUpWork(const std::string& prefix) {
    auto work = harness::TempDir::Create(prefix);
    ASSERT_TRUE(work.ok()) << work.status().ToString();
    work_ = std::make_unique<harness::TempDir>(std::move(*work));
    const std::filesystem::path& w = work_->path();
    socket_ = w / "run" / "snapshotter.sock";
    root_ = w / "state";

    auto ctr_remote = harness::RunCommand(
        {(SourceDir() / "tests/data/fetch-trixie-package.sh").string(),
         LAZYCRYPT_TEST_CACHE "/stargz", "stargz-snapshotter", "usr/bin/ctr-remote"},
        std::chrono::seconds(300));
    ASSERT_TRUE(ctr_remote.ok()) << ctr_remote.status().ToString();
    ASSERT_EQ(ctr_remote->exit_code, 0) << Describe(*ctr_remote);
    ctr_remote_ = ctr_remote->stdout_text.substr(0, ctr_remote->stdout_text.find('\n'));

    node_key_ = GenerateKeyPair(w, "ec256", "node");
    other_key_ = GenerateKeyPair(w, "ec256", "other");
    std::filesystem::create_directories(w / "keys");
    std::filesystem::copy_file(node_key_.priv, KeyFile());
    std::filesystem::permissions(KeyFile(), std::filesystem::perms::owner_read |
                                                std::filesystem::perms::owner_write);
  }

  // The registry (plain HTTP, a hosts.toml for it), the snapshotter's config (debug log, the key
  // directory; `extra_config` is appended: TOML tables such as "[fetch]\n...") and process, and
  // containerd with the snapshotter as proxy plugin "lazycrypt".
  void StartDaemons(const std::string& extra_config = "") {
    const std::filesystem::path& w = work_->path();
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    std::filesystem::create_directories(w / "hosts" / registry_->host());
    ASSERT_TRUE(harness::WriteFile(w / "hosts" / registry_->host() / "hosts.toml",
                                   "server = \"http://" + registry_->host() + "\"\n")
                    .ok());
    config_ = w / "config.toml";
    ASSERT_TRUE(harness::WriteFile(config_, "address = \"" + socket_.string() + "\"\nroot = \"" +
                                                root_.string() +
                                                "\"\nlog_level = \"debug\"\n[keys]\ndirs = [\"" +
                                                (w / "keys").string() +
                                                "\"]\n[registry]\nhosts_dir = \"" +
                                                (w / "hosts").string() + "\"\n" + extra_config)
                    .ok());
    StartSnapshotter();
    ASSERT_FALSE(HasFailure());
    harness::ContainerdOptions options;
    options.proxy_plugins.push_back({"lazycrypt", "snapshot", socket_.string()});
    auto containerd = harness::ContainerdProcess::Start(options);
    ASSERT_TRUE(containerd.ok()) << containerd.status().ToString();
    ctd_ = std::move(*containerd);
  }

  void TearDown() override {
    if (ctd_) ctd_->Stop();
    StopSnapshotterAndDetachMounts(snapshotter_, work_ ? work_->path() : std::filesystem::path());
  }

  std::filesystem::path KeyFile() const { return work_->path() / "keys" / "node.pem"; }

  std::string SnapshotterLog() const {
    return harness::ReadFileOrEmpty(work_->path() /
                                    ("snapshotter-" + std::to_string(starts_) + ".log"));
  }
  std::string Logs() const {
    return "\ncontainerd log:\n" + ctd_->Log() + "\nsnapshotter log:\n" + SnapshotterLog();
  }

  void StartSnapshotter() {
    ++starts_;
    snapshotter_ = StartSnapshotterProcess(
        snapshotter_bin_, config_,
        work_->path() / ("snapshotter-" + std::to_string(starts_) + ".log"));
  }
  void StopSnapshotter() {
    ASSERT_TRUE(snapshotter_->Signal(SIGTERM).ok());
    (void)snapshotter_->Wait(std::chrono::seconds(20));
    snapshotter_.reset();
  }

  // `ctr-remote images rpull` in containerd namespace `ns`. In another namespace than the first
  // pull's, containerd has no record of the layers and asks the snapshotter with Prepare(target
  // chain ID), which finds them committed.
  harness::CommandResult RemotePull(const std::string& ref, const std::string& ns = "default") {
    auto r = ctd_->Client(ctr_remote_, {"--namespace", ns, "images", "rpull", "--plain-http",
                                        "--snapshotter", "lazycrypt", ref},
                          std::chrono::seconds(180));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : harness::CommandResult{};
  }

  // `ctr run --rm --snapshotter lazycrypt REF ID args...` (exit status not checked).
  harness::CommandResult Run(const std::string& ref, const std::string& id,
                             const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"run", "--rm", "--snapshotter", "lazycrypt", ref, id};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = ctd_->Ctr(argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : harness::CommandResult{};
  }

  // No task of `id` ever ran: containerd has no container or task by that name.
  void ExpectNoContainer(const std::string& id) {
    auto tasks = ctd_->Ctr({"tasks", "ls"});
    ASSERT_TRUE(tasks.ok());
    EXPECT_THAT(tasks->stdout_text, ::testing::Not(::testing::HasSubstr(id)));
    auto containers = ctd_->Ctr({"containers", "ls", "-q"});
    ASSERT_TRUE(containers.ok());
    EXPECT_THAT(containers->stdout_text, ::testing::Not(::testing::HasSubstr(id)));
  }

  std::string Id(const std::string& suffix) const {
    return "lc-trust-" + std::to_string(getpid()) + "-" + suffix;
  }

  std::unique_ptr<harness::TempDir> work_;
  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<harness::Subprocess> snapshotter_;
  std::unique_ptr<harness::ContainerdProcess> ctd_;
  KeyPair node_key_, other_key_;
  std::filesystem::path socket_, root_, config_;
  std::string ctr_remote_;
  std::string snapshotter_bin_ = LAZYCRYPT_SNAPSHOTTER_BIN;  // a test may run another build
  int starts_ = 0;
};

}  // namespace lazycrypt::testing
