// The Kubernetes path end to end, without a kubelet: our CRI client (lc_cri_client, generated from
// the CRI api.proto of Debian 13's golang-github-kubernetes-cri-api-dev) drives containerd's CRI
// plugin the way the kubelet does -- PullImage with the pod's sandbox config and runtime handler,
// RunPodSandbox (host network: no CNI; a busybox-based pause-like sandbox image from the test's
// registry), CreateContainer, StartContainer, ContainerStatus, the CRI log file, StopPodSandbox,
// RemovePodSandbox -- against a real lazycrypt-snapshotter (FUSE layers), a real docker-registry
// behind a byte-counting FaultProxy, and runc.
//   - containerd 1.6 (Debian 12), lazycrypt as the CRI snapshotter with snapshot annotations on: a
//     pod reads a file from an encrypted layer into its log; the layer is mounted lazily.
//   - containerd 1.7 (Debian 13, unpacked into the build tree): runtime handler `lazycrypt` names
//     the lazycrypt snapshotter, the default handler keeps overlayfs, on the same containerd.
//   - a pod whose image needs a key the node lacks fails, naming the layer and the keys tried, and
//     nothing is left mounted.
//
// Needs root (containerd, FUSE, overlayfs, runc).
#include <algorithm>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/cri_fixture.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using cri_testing::Cri;
using cri_testing::PodRun;
using cri_testing::kDataMiB;
using testing::CountFuseMounts;
using testing::Describe;
using testing::MountsUnder;
using ::testing::AnyOf;
using ::testing::HasSubstr;

TEST_F(Cri, Containerd16PodReadsAnEncryptedFileIntoItsLogFromALazyMount) {
  harness::CriPluginConfig cri;
  cri.snapshotter = "lazycrypt";
  StartContainerd("containerd", cri);
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(version_, HasSubstr("1.6.")) << version_;
  const std::string ref = Publish("1", node_key_.pub);
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("reader", ref, "", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(run.status.ok()) << run.status.ToString() << Logs();
  EXPECT_EQ(run.container.exit_code, 0) << run.container.reason << " " << run.container.message;
  EXPECT_EQ(run.log, marker_ + "\n") << Logs();
  EXPECT_EQ(run.snapshotter, "lazycrypt");
  EXPECT_TRUE(SnapshotExists("lazycrypt", run.snapshot_key)) << run.snapshot_key;
  // Both lazycrypt layers are FUSE mounts; far less than the data layer was fetched.
  EXPECT_EQ(CountFuseMounts(root_), 2u) << Logs();
  const uint64_t fetched = BlobBytesFetched();
  EXPECT_LT(fetched, (uint64_t{kDataMiB} << 20) / 4) << "fetched " << fetched << " bytes";
  EXPECT_GT(fetched, 0u);
  RecordProperty("blob_bytes_fetched", std::to_string(fetched));
}

TEST_F(Cri, Containerd17RuntimeHandlerLazycryptUsesLazycryptAndTheDefaultKeepsOverlayfs) {
  auto fetched = harness::RunCommand(
      {(testing::SourceDir() / "tests/data/fetch-trixie-package.sh").string(),
       LAZYCRYPT_TEST_CACHE "/containerd17", "containerd", "usr/bin/containerd"},
      std::chrono::seconds(300));
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  ASSERT_EQ(fetched->exit_code, 0) << Describe(*fetched);
  const std::string binary = fetched->stdout_text.substr(0, fetched->stdout_text.find('\n'));
  harness::CriPluginConfig cri;
  cri.snapshotter = "overlayfs";
  cri.runtimes = {{"runc", ""}, {"lazycrypt", "lazycrypt"}};
  StartContainerd(binary, cri);
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(version_, HasSubstr("1.7.")) << version_;
  const std::string ref = Publish("rc", node_key_.pub);
  ASSERT_FALSE(HasFailure());

  // containerd 1.7 ignores ImageSpec.runtime_handler: without the sandbox annotation
  // io.containerd.cri.runtime-handler the pull goes to the default snapshotter (overlayfs), which
  // cannot apply a lazycrypt layer. docs/KUBERNETES.md tells operators to set the annotation.
  const std::string ref2 = Publish("rc-no-annotation", node_key_.pub);
  ASSERT_FALSE(HasFailure());
  PodRun unannotated =
      RunPod("unannotated", ref2, "lazycrypt", {"/bin/cat", "/data/marker.txt"}, false);
  ASSERT_FALSE(unannotated.status.ok()) << "containerd 1.7 pulled through the runtime handler";
  EXPECT_THAT(unannotated.status.message(), HasSubstr("failed to extract layer"))
      << unannotated.status.message();
  {
    auto ls = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", "lazycrypt", "ls"});
    ASSERT_TRUE(ls.ok());
    EXPECT_EQ(std::count(ls->stdout_text.begin(), ls->stdout_text.end(), '\n'), 1)
        << "lazycrypt got snapshots from an unannotated pull: " << ls->stdout_text;
  }

  PodRun lazy = RunPod("lazy", ref, "lazycrypt", {"/bin/cat", "/data/marker.txt"});
  ASSERT_TRUE(lazy.status.ok()) << lazy.status.ToString() << Logs();
  EXPECT_EQ(lazy.log, marker_ + "\n") << Logs();
  EXPECT_EQ(lazy.snapshotter, "lazycrypt");
  EXPECT_TRUE(SnapshotExists("lazycrypt", lazy.snapshot_key)) << lazy.snapshot_key;
  EXPECT_EQ(CountFuseMounts(root_), 2u) << Logs();

  PodRun plain = RunPod("plain", plain_image_, "", {"/bin/echo", "plain"});
  ASSERT_TRUE(plain.status.ok()) << plain.status.ToString() << Logs();
  EXPECT_EQ(plain.log, "plain\n");
  EXPECT_EQ(plain.snapshotter, "overlayfs");
  EXPECT_TRUE(SnapshotExists("overlayfs", plain.snapshot_key)) << plain.snapshot_key;
  EXPECT_FALSE(SnapshotExists("lazycrypt", plain.snapshot_key)) << plain.snapshot_key;
}

TEST_F(Cri, PodWhoseImageNeedsAKeyTheNodeLacksFailsNamingItAndLeavesNothingMounted) {
  harness::CriPluginConfig cri;
  cri.snapshotter = "lazycrypt";
  StartContainerd("containerd", cri);
  ASSERT_FALSE(HasFailure());
  const std::string ref = Publish("other", other_key_.pub);
  ASSERT_FALSE(HasFailure());

  PodRun run = RunPod("nokey", ref, "", {"/bin/cat", "/data/marker.txt"});
  ASSERT_FALSE(run.status.ok()) << "a pod ran without the key";
  const std::string message = run.status.message();
  EXPECT_THAT(message, HasSubstr("PullImage")) << message;
  EXPECT_THAT(message, HasSubstr("layer sha256:")) << message;
  EXPECT_THAT(message, HasSubstr("none of the keys")) << message;
  EXPECT_THAT(message, HasSubstr("node.pem")) << message;
  EXPECT_EQ(CountFuseMounts(root_), 0u);
  EXPECT_THAT(MountsUnder(root_), ::testing::IsEmpty());
  auto snapshots = ctd_->Ctr({"-n", "k8s.io", "snapshots", "--snapshotter", "lazycrypt", "ls"});
  ASSERT_TRUE(snapshots.ok());
  // Only the header line: no layer of the image was committed.
  EXPECT_EQ(std::count(snapshots->stdout_text.begin(), snapshots->stdout_text.end(), '\n'), 1)
      << snapshots->stdout_text;
}

}  // namespace
}  // namespace lazycrypt
