// lazycrypt-snapshotter: containerd's remote snapshotter for lazycrypt images. Thin main.
#include "snapshotter/daemon.h"

int main(int argc, char** argv) {
  using namespace lazycrypt::snapshotter;
  // The lazycrypt FUSE layers are wired here: return the RemoteLayerHandler built from
  // config.keys / cache / fetch / registry. Until then, every layer takes containerd's normal
  // download-and-unpack path.
  return DaemonMain(argc, argv, [](const Config&, const LogSink&)
                                    -> lazycrypt::Result<std::shared_ptr<RemoteLayerHandler>> {
    return std::shared_ptr<RemoteLayerHandler>();
  });
}
