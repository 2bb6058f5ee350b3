// `lazycrypt pull`: pulls an image into containerd through its API (ctrdclient::PullImage), so
// a lazycrypt-snapshotter mounts the lazycrypt layers instead of containerd downloading them.
#pragma once

#include <string>

#include "common/status.h"
#include "ctrdclient/pull.h"
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

// The summary line: layers per outcome and the bytes this pull fetched, saying (when layers were
// mounted lazily) that their files are fetched later, as a container reads them:
//   "pulled NAME (sha256:..) in 812 ms: 1 layers mounted lazily by lazycrypt, 1 downloaded and
//    unpacked, 0 already present; 4 KiB fetched now; the files of the lazily mounted layers are
//    fetched as the container reads them (see `lazycrypt status` for the bytes fetched since)"
std::string PullSummary(const ctrdclient::PullReport& report, const std::string& snapshotter);

}  // namespace lazycrypt::tools
