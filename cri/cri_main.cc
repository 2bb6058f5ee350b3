// lazycrypt-cri: drives containerd's CRI plugin like the kubelet, for tests and debugging.
//   lazycrypt-cri --socket S version
//   lazycrypt-cri --socket S pull [--runtime-handler H] IMAGE
//   lazycrypt-cri --socket S run [--runtime-handler H] --log-dir DIR IMAGE [CMD ARGS...]
// `run` pulls IMAGE for a host-network pod, runs CMD in it, prints the container's log (stdout and
// stderr text) on stdout and containerd's container info JSON (snapshotter, ...) on stderr,
// removes the pod and exits with the container's exit code (125 when CRI itself failed).
#include <unistd.h>

#include <chrono>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/file_io.h"
#include "common/version.h"
#include "cri/cri_client.h"

namespace {

using namespace lazycrypt;

int Fail(const Status& status) {
  std::cerr << "lazycrypt-cri: " << status.ToString() << "\n";
  return 125;
}

int RunPod(cri::CriClient& client, const std::string& image, const std::string& handler,
           const std::string& log_dir, const std::vector<std::string>& command) {
  cri::PodSpec pod;
  pod.name = "lazycrypt-cri-" + std::to_string(getpid());
  pod.uid = pod.name;
  pod.runtime_handler = handler;
  pod.log_directory = log_dir;
  auto pulled = client.PullImage(image, &pod);
  if (!pulled.ok()) return Fail(pulled.status());
  auto pod_id = client.RunPodSandbox(pod);
  if (!pod_id.ok()) return Fail(pod_id.status());
  int rc = 125;
  cri::ContainerSpec container{.name = "main", .image = image, .command = command,
                               .args = {}, .log_path = "main.log"};
  auto id = client.CreateContainer(*pod_id, pod, container);
  Status status = id.status();
  if (id.ok()) status = client.StartContainer(*id);
  if (status.ok()) {
    auto state = client.WaitForExit(*id, std::chrono::minutes(2));
    status = state.status();
    if (state.ok()) {
      auto log = ReadFileBytes(state->log_path);
      auto text = log.ok() ? cri::ParseCriLog(std::string(log->begin(), log->end()))
                           : Result<std::string>(log.status());
      if (text.ok()) std::cout << *text;
      else std::cerr << "lazycrypt-cri: " << text.status().ToString() << "\n";
      std::cerr << state->info_json << "\n";
      rc = state->exit_code;
    }
  }
  if (!status.ok()) (void)Fail(status);
  (void)client.StopPodSandbox(*pod_id);
  (void)client.RemovePodSandbox(*pod_id);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lazycrypt-cri: a kubelet-like CRI client for containerd"};
  app.set_version_flag("--version", VersionLine("lazycrypt-cri"));
  std::string socket = "/run/containerd/containerd.sock";
  app.add_option("--socket", socket, "containerd's gRPC socket");
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "print the runtime's name and versions");
  std::string image, handler, log_dir;
  std::vector<std::string> command;
  auto* pull = app.add_subcommand("pull", "pull an image through CRI");
  pull->add_option("--runtime-handler", handler, "the pod's runtime handler (RuntimeClass)");
  pull->add_option("image", image, "image reference")->required();
  auto* run = app.add_subcommand("run", "run a command in a one-container host-network pod");
  run->add_option("--runtime-handler", handler, "the pod's runtime handler (RuntimeClass)");
  run->add_option("--log-dir", log_dir, "the pod's log directory")->required();
  run->add_option("image", image, "image reference")->required();
  run->add_option("command", command, "command and arguments");
  CLI11_PARSE(app, argc, argv);

  auto client = cri::CriClient::Connect(socket);
  if (!client.ok()) return Fail(client.status());
  if (*version) {
    auto v = (*client)->Version();
    if (!v.ok()) return Fail(v.status());
    std::cout << *v << "\n";
    return 0;
  }
  if (*pull) {
    cri::PodSpec pod;
    pod.name = "lazycrypt-cri-pull";
    pod.uid = pod.name;
    pod.runtime_handler = handler;
    auto id = (*client)->PullImage(image, handler.empty() ? nullptr : &pod);
    if (!id.ok()) return Fail(id.status());
    std::cout << *id << "\n";
    return 0;
  }
  return RunPod(**client, image, handler, log_dir, command);
}
