// A small Kubernetes CRI (runtime.v1) client that drives containerd's CRI plugin the way the
// kubelet does: PullImage (with the pod's sandbox config and runtime handler), RunPodSandbox,
// CreateContainer, StartContainer, ContainerStatus, StopPodSandbox, RemovePodSandbox, and
// ImageFsInfo (the kubelet's image-filesystem stats). Test-only:
// the integration tests and `lazycrypt-cri` use it; nodes run the real kubelet.
//
// Errors: gRPC failures become a Status once, here ("PullImage: <containerd's message>").
// Thread-safety: one CriClient may be used from several threads (gRPC stubs are thread-safe).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace lazycrypt::cri {

// containerd ≤ 1.7 reads the runtime handler for PullImage from this pod (sandbox config)
// annotation; the kubelet copies pod annotations into the sandbox config it sends with PullImage.
inline constexpr char kRuntimeHandlerAnnotation[] = "io.containerd.cri.runtime-handler";

// A pod as the kubelet describes it to the runtime. Host network only (no CNI needed).
struct PodSpec {
  std::string name;
  std::string uid;
  std::string kubernetes_namespace = "default";
  std::string runtime_handler;                   // "" = containerd's default runtime
  // Also send runtime_handler as the io.containerd.cri.runtime-handler sandbox annotation (what
  // containerd 1.7 reads for PullImage). false: only ImageSpec.runtime_handler, as a kubelet does
  // for a pod without that annotation.
  bool runtime_handler_annotation = true;
  std::filesystem::path log_directory;           // where CRI writes the containers' logs
  std::map<std::string, std::string> annotations;
  std::map<std::string, std::string> labels;
};

struct ContainerSpec {
  std::string name;
  std::string image;                   // the reference PullImage was given (or the image id)
  std::vector<std::string> command;    // empty = the image's entrypoint
  std::vector<std::string> args;
  std::string log_path;                // relative to the pod's log_directory
};

struct ContainerState {
  std::string id;
  std::string state;        // CONTAINER_CREATED | CONTAINER_RUNNING | CONTAINER_EXITED | ...
  int32_t exit_code = 0;
  std::string reason;
  std::string message;
  std::string image_ref;
  std::string log_path;     // absolute, as CRI reports it
  // containerd's verbose "info" JSON (snapshotter, snapshotKey, runtimeType, ...); "" if absent.
  std::string info_json;
};

// One entry of ImageFsInfo: a filesystem holding images (containerd: one per snapshotter that
// has snapshots, the default snapshotter first), as the kubelet's image-fs stats and image GC
// read it.
struct FilesystemUsage {
  std::string mountpoint;   // containerd: the snapshotter plugin's exports "root"
  uint64_t used_bytes = 0;  // containerd: the sum of the snapshotter's Usage of its snapshots
  uint64_t inodes_used = 0;
};

class CriClient {
 public:
  // Connects to containerd's gRPC socket (the CRI plugin is served there).
  static Result<std::unique_ptr<CriClient>> Connect(const std::filesystem::path& socket);
  virtual ~CriClient() = default;

  // "containerd 1.6.20~ds1 (runtime API v1)".
  virtual Result<std::string> Version() = 0;
  // Pulls `image` like the kubelet: with the pod's sandbox config when `pod` is given, and the
  // runtime handler in ImageSpec.runtime_handler (newer runtimes) and, for containerd 1.7, in the
  // io.containerd.cri.runtime-handler sandbox annotation. Returns the image id (config digest).
  virtual Result<std::string> PullImage(const std::string& image, const PodSpec* pod) = 0;
  virtual Result<std::string> RunPodSandbox(const PodSpec& pod) = 0;
  virtual Result<std::string> CreateContainer(const std::string& pod_id, const PodSpec& pod,
                                              const ContainerSpec& container) = 0;
  virtual Status StartContainer(const std::string& container_id) = 0;
  virtual Result<ContainerState> ContainerStatus(const std::string& container_id) = 0;
  // Polls ContainerStatus until the container has exited (DeadlineExceeded after `timeout`).
  virtual Result<ContainerState> WaitForExit(const std::string& container_id,
                                             std::chrono::milliseconds timeout) = 0;
  // ImageFsInfo's image_filesystems, in containerd's order.
  virtual Result<std::vector<FilesystemUsage>> ImageFsInfo() = 0;
  virtual Status StopPodSandbox(const std::string& pod_id) = 0;
  virtual Status RemovePodSandbox(const std::string& pod_id) = 0;
};

// The text of a CRI container log (lines "<RFC 3339 time> <stdout|stderr> <P|F> <text>"): the
// streams' text with partial (P) lines joined. Corruption naming the line when one is malformed.
Result<std::string> ParseCriLog(const std::string& log_text);

}  // namespace lazycrypt::cri
