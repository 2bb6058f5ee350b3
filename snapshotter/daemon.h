// The lazycrypt-snapshotter daemon, shared by the real main and test builds: flags, config,
// logging, Snapshotter + SnapshotServer wiring, serving until SIGINT/SIGTERM, clean shutdown.
// The remote-layer handler is the one thing a caller supplies (see remote.h).
#pragma once

#include <functional>
#include <memory>

#include "common/status.h"
#include "snapshotter/config.h"
#include "snapshotter/log.h"
#include "snapshotter/remote.h"

namespace lazycrypt::snapshotter {

// Builds the remote-layer handler from the loaded config; null = no remote layers.
using RemoteHandlerFactory = std::function<Result<std::shared_ptr<RemoteLayerHandler>>(
    const Config& config, const LogSink& log)>;

// `purge ...` as the first argument runs PurgeMain (admin.h) instead: a client of the running
// daemon's admin socket.
// Parses --config FILE, --address PATH, --root DIR, --log-level LEVEL (flags override the file),
// opens the state dir, restores remote snapshots, serves the Snapshots API and the admin socket
// (admin.h), and returns the
// process exit code: 0 after a clean shutdown on SIGINT/SIGTERM, 1 on a runtime error, 2 on a
// usage/config error. REQUIRES: called from main() before any other thread exists (it blocks
// SIGINT/SIGTERM for all threads and waits for them in the calling thread).
int DaemonMain(int argc, char** argv, const RemoteHandlerFactory& make_remote);

}  // namespace lazycrypt::snapshotter
