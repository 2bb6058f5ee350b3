// The gRPC edge: containerd.services.snapshots.v1.Snapshots over a unix socket, translating
// proto <-> domain types and Status -> grpc::Status (once, here; see ToGrpcStatus). The
// `snapshotter` field of requests is ignored (a proxy plugin serves one snapshotter).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>

#include <grpcpp/support/status.h>

#include "common/status.h"
#include "snapshotter/log.h"
#include "snapshotter/snapshotter.h"

namespace lazycrypt::snapshotter {

// NotFound, AlreadyExists, FailedPrecondition, InvalidArgument map to the gRPC codes of the same
// names (containerd's errdefs.FromGRPC turns them back); Unavailable, DeadlineExceeded,
// PermissionDenied, Unsupported (Unimplemented) likewise; everything else is Unknown, as
// containerd reports errors it cannot classify. The message is Status::message().
grpc::Status ToGrpcStatus(const Status& status);

struct ServerOptions {
  std::filesystem::path socket_path;
  mode_t socket_mode = 0600;
  LogSink log = NullLogSink();
  size_t list_batch_size = 100;  // infos per streamed ListSnapshotsResponse
};

// A running gRPC server. Thread-safe.
class SnapshotServer {
 public:
  // Creates the socket's parent directory (0700) if missing, removes a stale socket (refusing
  // when something answers on it or the path is not a socket), starts serving and sets the
  // socket's mode. `snapshotter` must outlive the server.
  static Result<std::unique_ptr<SnapshotServer>> Start(Snapshotter* snapshotter,
                                                       const ServerOptions& options);
  virtual ~SnapshotServer() = default;
  // Stops accepting, finishes in-flight calls (cancelled after a short deadline) and removes the
  // socket. Idempotent.
  virtual void Shutdown() = 0;
};

}  // namespace lazycrypt::snapshotter
