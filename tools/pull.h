// `lazycrypt pull`: pulls an image into containerd through its API (ctrdclient::PullImage), so
// a lazycrypt-snapshotter mounts the lazycrypt layers instead of containerd downloading them.
#pragma once

#include <string>

#include "common/status.h"
#include "tools/commands.h"

namespace lazycrypt::tools {

struct PullFlags {
  std::string address = "/run/containerd/containerd.sock";
  std::string ns = "default";
  std::string snapshotter = "lazycrypt";
  std::string platform = "linux/amd64";
  std::string ref;  // registry reference ("host/repo:tag"; "docker://" accepted)
  TransportFlags transport;
};

// One line per layer (remote / applied / present, size, time) and a summary; the image is then
// ready for `ctr run --snapshotter <snapshotter> <ref>`.
Status RunPull(const PullFlags& flags, const Output& io);

}  // namespace lazycrypt::tools
