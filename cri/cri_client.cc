#include "cri/cri_client.h"

#include <thread>

#include <grpcpp/grpcpp.h>

#include "ctrdclient/grpc_util.h"
#include "k8s.io/cri-api/pkg/apis/runtime/v1/api.grpc.pb.h"

namespace lazycrypt::cri {
namespace {

namespace v1 = ::runtime::v1;

constexpr std::chrono::seconds kCallTimeout(30);
// Pulls go through the registry and, for lazycrypt layers, mount each layer: allow longer.
constexpr std::chrono::minutes kPullTimeout(3);

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  return context;
}

void FillSandboxConfig(const PodSpec& pod, v1::PodSandboxConfig* config) {
  auto* metadata = config->mutable_metadata();
  metadata->set_name(pod.name);
  metadata->set_uid(pod.uid);
  metadata->set_namespace_(pod.kubernetes_namespace);
  metadata->set_attempt(0);
  // No hostname: with the host's network the pod shares the host's UTS namespace, where runc
  // refuses to set one.
  config->set_log_directory(pod.log_directory.string());
  for (const auto& [k, v] : pod.labels) (*config->mutable_labels())[k] = v;
  for (const auto& [k, v] : pod.annotations) (*config->mutable_annotations())[k] = v;
  if (!pod.runtime_handler.empty() && pod.runtime_handler_annotation) {
    // What a pod annotated for containerd 1.7's per-runtime snapshotter carries.
    (*config->mutable_annotations())[kRuntimeHandlerAnnotation] = pod.runtime_handler;
  }
  // Host network (and host PID/IPC stay per pod): no CNI plugin is needed.
  auto* namespaces =
      config->mutable_linux()->mutable_security_context()->mutable_namespace_options();
  namespaces->set_network(v1::NODE);
  namespaces->set_pid(v1::CONTAINER);
  namespaces->set_ipc(v1::POD);
}

class GrpcCriClient final : public CriClient {
 public:
  explicit GrpcCriClient(std::shared_ptr<grpc::Channel> channel)
      : runtime_(v1::RuntimeService::NewStub(channel)), images_(v1::ImageService::NewStub(channel)) {}

  Result<std::string> Version() override {
    v1::VersionRequest request;
    request.set_version("v1");
    v1::VersionResponse response;
    auto context = Context(kCallTimeout);
    LC_RETURN_IF_ERROR(Check(runtime_->Version(context.get(), request, &response), "Version"));
    return response.runtime_name() + " " + response.runtime_version() + " (runtime API " +
           response.runtime_api_version() + ")";
  }

  Result<std::string> PullImage(const std::string& image, const PodSpec* pod) override {
    v1::PullImageRequest request;
    request.mutable_image()->set_image(image);
    if (pod != nullptr) {
      request.mutable_image()->set_runtime_handler(pod->runtime_handler);
      FillSandboxConfig(*pod, request.mutable_sandbox_config());
    }
    v1::PullImageResponse response;
    auto context = Context(kPullTimeout);
    LC_RETURN_IF_ERROR(
        Check(images_->PullImage(context.get(), request, &response), "PullImage " + image));
    return response.image_ref();
  }

  Result<std::string> RunPodSandbox(const PodSpec& pod) override {
    v1::RunPodSandboxRequest request;
    FillSandboxConfig(pod, request.mutable_config());
    request.set_runtime_handler(pod.runtime_handler);
    v1::RunPodSandboxResponse response;
    auto context = Context(kPullTimeout);
    LC_RETURN_IF_ERROR(Check(runtime_->RunPodSandbox(context.get(), request, &response),
                             "RunPodSandbox " + pod.name));
    return response.pod_sandbox_id();
  }

  Result<std::string> CreateContainer(const std::string& pod_id, const PodSpec& pod,
                                      const ContainerSpec& container) override {
    v1::CreateContainerRequest request;
    request.set_pod_sandbox_id(pod_id);
    FillSandboxConfig(pod, request.mutable_sandbox_config());
    auto* config = request.mutable_config();
    config->mutable_metadata()->set_name(container.name);
    config->mutable_image()->set_image(container.image);
    for (const auto& c : container.command) config->add_command(c);
    for (const auto& a : container.args) config->add_args(a);
    config->set_log_path(container.log_path);
    v1::CreateContainerResponse response;
    auto context = Context(kPullTimeout);
    LC_RETURN_IF_ERROR(Check(runtime_->CreateContainer(context.get(), request, &response),
                             "CreateContainer " + container.name));
    return response.container_id();
  }

  Status StartContainer(const std::string& container_id) override {
    v1::StartContainerRequest request;
    request.set_container_id(container_id);
    v1::StartContainerResponse response;
    auto context = Context(kCallTimeout);
    return Check(runtime_->StartContainer(context.get(), request, &response),
                 "StartContainer " + container_id);
  }

  Result<ContainerState> ContainerStatus(const std::string& container_id) override {
    v1::ContainerStatusRequest request;
    request.set_container_id(container_id);
    request.set_verbose(true);
    v1::ContainerStatusResponse response;
    auto context = Context(kCallTimeout);
    LC_RETURN_IF_ERROR(Check(runtime_->ContainerStatus(context.get(), request, &response),
                             "ContainerStatus " + container_id));
    const auto& s = response.status();
    ContainerState state;
    state.id = s.id();
    state.state = v1::ContainerState_Name(s.state());
    state.exit_code = s.exit_code();
    state.reason = s.reason();
    state.message = s.message();
    state.image_ref = s.image_ref();
    state.log_path = s.log_path();
    if (auto it = response.info().find("info"); it != response.info().end()) {
      state.info_json = it->second;
    }
    return state;
  }

  Result<ContainerState> WaitForExit(const std::string& container_id,
                                     std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      LC_ASSIGN_OR_RETURN(ContainerState state, ContainerStatus(container_id));
      if (state.state == "CONTAINER_EXITED") return state;
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::DeadlineExceeded("container " + container_id + " still " + state.state +
                                        " after " + std::to_string(timeout.count()) + " ms");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  Result<std::vector<FilesystemUsage>> ImageFsInfo() override {
    v1::ImageFsInfoRequest request;
    v1::ImageFsInfoResponse response;
    auto context = Context(kCallTimeout);
    LC_RETURN_IF_ERROR(
        Check(images_->ImageFsInfo(context.get(), request, &response), "ImageFsInfo"));
    std::vector<FilesystemUsage> out;
    for (const auto& f : response.image_filesystems()) {
      out.push_back({f.fs_id().mountpoint(), f.used_bytes().value(), f.inodes_used().value()});
    }
    return out;
  }

  Status StopPodSandbox(const std::string& pod_id) override {
    v1::StopPodSandboxRequest request;
    request.set_pod_sandbox_id(pod_id);
    v1::StopPodSandboxResponse response;
    auto context = Context(kCallTimeout);
    return Check(runtime_->StopPodSandbox(context.get(), request, &response),
                 "StopPodSandbox " + pod_id);
  }

  Status RemovePodSandbox(const std::string& pod_id) override {
    v1::RemovePodSandboxRequest request;
    request.set_pod_sandbox_id(pod_id);
    v1::RemovePodSandboxResponse response;
    auto context = Context(kCallTimeout);
    return Check(runtime_->RemovePodSandbox(context.get(), request, &response),
                 "RemovePodSandbox " + pod_id);
  }

 private:
  static Status Check(const grpc::Status& status, const std::string& what) {
    if (status.ok()) return Status::Ok();
    return ctrdclient::FromGrpcStatus(status, what);
  }

  std::unique_ptr<v1::RuntimeService::Stub> runtime_;
  std::unique_ptr<v1::ImageService::Stub> images_;
};

}  // namespace

Result<std::unique_ptr<CriClient>> CriClient::Connect(const std::filesystem::path& socket) {
  if (socket.empty()) return Status::InvalidArgument("CRI socket path is empty");
  auto channel = grpc::CreateChannel("unix://" + socket.string(), grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return Status::Unavailable("cannot connect to the CRI socket " + socket.string());
  }
  return std::unique_ptr<CriClient>(new GrpcCriClient(std::move(channel)));
}

}  // namespace lazycrypt::cri
